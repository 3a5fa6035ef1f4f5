"""Tests of the recmas-debate plugin: registration, topology validation and rendering, ridge link maths."""

from __future__ import annotations

import pytest
import torch

import recmas_debate
from recmas_debate.ridge import RidgeRealign, ridge_solve
from recmas_graph.errors import PluginError, TopologyError
from recmas_graph.topology import compile_topology
from recmas_graph.plugins.manager import Registry
from recmas_graph.topology.spec import parse_topology


@pytest.fixture
def reg() -> Registry:
    return Registry.create(plugins=[recmas_debate], load_entrypoints=False)


def test_registers_roles_topology_and_link(reg: Registry) -> None:
    assert {"debater", "judge"} <= set(reg.roles)
    assert "debate" in reg.topologies and "ridge_realign" in reg.link_types
    assert reg.link_types["ridge_realign"].kind == "inner"
    assert reg.origin[("role", "judge")] == "recmas_debate"
    assert reg.origin[("topology", "debate")] == "recmas_debate"
    assert set(reg.hooks_of("recmas_debate")) == {"recmas_roles", "recmas_topologies", "recmas_link_types"}


def test_not_registered_without_the_plugin() -> None:
    plain = Registry.create(load_entrypoints=False)
    assert "debate" not in plain.topologies and "judge" not in plain.roles


def test_registering_twice_names_both_plugins(reg: Registry) -> None:
    class Copycat:
        from recmas_graph.plugins.hookspecs import hookimpl

        @hookimpl
        def recmas_roles(self):
            return [recmas_debate.JUDGE]

    with pytest.raises(PluginError) as err:
        Registry.create(plugins=[recmas_debate, Copycat()], load_entrypoints=False)
    assert "recmas_debate" in str(err.value) and "Copycat" in str(err.value)


def test_debate_topology_compiles_and_schedules(reg: Registry) -> None:
    spec = reg.topologies["debate"].spec
    compiled = compile_topology(spec, reg)
    assert spec.output == "judge"
    recursion = {(e.source, e.target, e.slot) for e in spec.edges if e.recursion}
    assert recursion == {("judge", "debater_a", "verdict"), ("judge", "debater_b", "verdict"),
                         ("debater_a", "debater_b", "opponent"), ("debater_b", "debater_a", "opponent")}
    forward = {(e.source, e.target, e.slot) for e in spec.edges if not e.recursion}
    assert forward == {("debater_a", "judge", "argument_a"), ("debater_b", "judge", "argument_b")}
    waves = [[str(p) for p in wave] for wave in compiled.schedule().waves]
    assert waves == [["debater_a1:latent", "debater_b1:latent"], ["judge1:latent"],
                     ["debater_a2:latent", "debater_b2:latent"], ["judge2:decode"]]
    # every slot the topology fills is one the roles know (no generic sections needed)
    for edge in spec.edges:
        assert edge.slot in reg.roles[spec.agent(edge.target).role].slot_names


def test_debate_roles_render_their_slots(reg: Registry) -> None:
    from recmas_graph.topology.roles import slot_marker

    text = reg.roles["judge"].render_user("What is 2+2?", "math", ["argument_a", "argument_b"])
    assert slot_marker("argument_a") in text and "\\boxed" in text
    first_round = reg.roles["debater"].render_user("What is 2+2?", "math", [])
    assert "previous argument:" not in first_round and "verdict on the previous round" not in first_round
    later = reg.roles["debater"].render_user("What is 2+2?", "math", ["opponent", "verdict"])
    assert later.index(slot_marker("opponent")) < later.index(slot_marker("verdict"))


def test_debate_topology_needs_the_plugin_roles() -> None:
    spec = Registry.create(plugins=[recmas_debate], load_entrypoints=False).topologies["debate"].spec
    with pytest.raises(TopologyError, match="unknown role 'debater'"):
        compile_topology(spec, Registry.create(load_entrypoints=False))


def test_ridge_link_refused_as_outer_link(reg: Registry) -> None:
    data = reg.topologies["debate"].spec.model_dump(mode="json")
    data["edges"][0]["link"] = {"type": "ridge_realign"}
    with pytest.raises(TopologyError, match="inner link"):
        compile_topology(parse_topology(data), reg)


def test_debate_topology_renders(reg: Registry) -> None:
    from recmas_graph.topology import render
    spec = reg.topologies["debate"].spec
    dot, mermaid = render.to_dot(spec), render.to_mermaid(spec)
    for name in ("debater_a", "debater_b", "judge"):
        assert name in dot and name in mermaid
    assert "verdict" in dot and "argument_a" in mermaid


# ---------------------------------------------------------------------------------- ridge maths


def test_ridge_solve_matches_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    h, e, lam = torch.randn(200, 16, generator=g), torch.randn(200, 12, generator=g), 0.7
    w = ridge_solve(h, e, lam)
    h64, e64 = h.double(), e.double()
    expected = torch.linalg.solve(h64.T @ h64 + lam * torch.eye(16, dtype=torch.float64), h64.T @ e64)
    torch.testing.assert_close(w.double(), expected, rtol=1e-5, atol=1e-6)
    # optimality: the gradient of the ridge objective vanishes
    grad = h64.T @ (h64 @ w.double() - e64) + lam * w.double()
    assert grad.abs().max() < 1e-3


def test_ridge_recovers_an_exact_linear_map() -> None:
    g = torch.Generator().manual_seed(1)
    h, a = torch.randn(500, 8, generator=g), torch.randn(8, 8, generator=g)
    w = ridge_solve(h, h @ a, 1e-8)
    torch.testing.assert_close(w, a, rtol=1e-4, atol=1e-4)


def test_module_fit_uses_relative_lambda_and_matches_norm() -> None:
    g = torch.Generator().manual_seed(2)
    h, e = torch.randn(300, 10, generator=g), 3.0 * torch.randn(300, 10, generator=g)
    link = RidgeRealign(10, 10, lam=0.1).fit(h, e)
    h64 = h.double()
    lam = 0.1 * float((h64.T @ h64).diagonal().mean())
    expected = torch.linalg.solve(h64.T @ h64 + lam * torch.eye(10, dtype=torch.float64), h64.T @ e.double())
    torch.testing.assert_close(link.weight.data.double(), expected, rtol=1e-5, atol=1e-6)
    y = link(torch.randn(4, 5, 10, generator=g))  # (B, m, H) -> (B, m, H)
    assert y.shape == (4, 5, 10)
    torch.testing.assert_close(y.norm(dim=-1), torch.full((4, 5), float(e.norm(dim=-1).mean())), rtol=1e-4, atol=1e-4)
    assert link.calibrated


def test_uncalibrated_link_is_identity_and_keeps_dtype() -> None:
    link = RidgeRealign(6, 6)
    x = torch.randn(2, 3, 6, dtype=torch.bfloat16)
    y = link(x)
    assert y.dtype == torch.bfloat16 and torch.equal(y, x) and not link.calibrated


class _FakeLoaded:
    """The parts of recmas_graph.runtime.LoadedModel that calibrate uses, on a tiny untied LM."""

    def __init__(self, vocab: int = 50, d: int = 8, scale: float = 2.0) -> None:
        g = torch.Generator().manual_seed(3)

        class Scaled(torch.nn.Embedding):  # like Gemma: the module scales its output
            def forward(self, ids):
                return super().forward(ids) * scale

        class LM(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = Scaled(vocab, d)
                self.lm_head = torch.nn.Linear(d, vocab, bias=False)
                with torch.no_grad():
                    self.embed.weight.copy_(torch.randn(vocab, d, generator=g))
                    self.lm_head.weight.copy_(torch.randn(vocab, d, generator=g))

            def get_input_embeddings(self):
                return self.embed

            def get_output_embeddings(self):
                return self.lm_head

        self.model, self.tokenizer, self.hidden_size = LM(), None, d


def test_calibrate_on_embedding_matrices_matches_direct_fit() -> None:
    loaded = _FakeLoaded()
    link = RidgeRealign(8, 8, lam=1e-3, chunk_rows=7).calibrate(loaded)  # chunks: statistics accumulate
    h = loaded.model.lm_head.weight.detach()
    e = loaded.model.embed(torch.arange(50)).detach()  # scaled embeddings, as inputs_embeds expects
    direct = RidgeRealign(8, 8, lam=1e-3).fit(h, e)
    torch.testing.assert_close(link.weight.data, direct.weight.data, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(link.target_norm, direct.target_norm)


def test_calibrate_refuses_a_mismatched_model() -> None:
    from recmas_graph.errors import LinkError

    with pytest.raises(LinkError, match="inner link"):
        RidgeRealign(4, 4).calibrate(_FakeLoaded(d=8))


def test_calibrate_on_a_tiny_hf_model_from_embeddings_and_from_texts() -> None:
    from recmas_graph.runtime.sources.tiny import load_tiny

    loaded = load_tiny("tiny:llama")
    d = loaded.hidden_size
    link = RidgeRealign(d, d).calibrate(loaded)
    assert link.calibrated and torch.isfinite(link.weight).all()
    h = torch.randn(2, 3, d)
    assert link(h).shape == (2, 3, d)
    from_texts = RidgeRealign(d, d).calibrate(loaded, texts=["the cat sat on the mat", "two plus two is four"])
    assert from_texts.calibrated and not torch.allclose(from_texts.weight, link.weight)
