"""Links: reference parameter names, forward shapes, init, checkpoints (ours and reference .pt), shape checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from recmas_graph.errors import LinkError
from recmas_graph.runtime.links.build import build_link, check_link_weights, link_expected_shapes
from recmas_graph.runtime.links.checkpoints import link_weight_shapes, load_link_weights, read_link_config, save_link
from recmas_graph.runtime.links.modules import IdentityLink, InnerLnRes, OuterLnRes
from recmas_graph.plugins.manager import Registry
from recmas_graph.topology.catalog import LinkType
from recmas_graph.topology.spec import LinkSpec, TopologyBuilder

INNER_KEYS = {
    "pre_ln.weight": lambda h: (h,), "pre_ln.bias": lambda h: (h,),
    "proj1.weight": lambda h: (h, h), "proj1.bias": lambda h: (h,),
    "proj2.weight": lambda h: (h, h), "proj2.bias": lambda h: (h,),
    "post_ln.weight": lambda h: (h,), "post_ln.bias": lambda h: (h,),
}


def outer_shapes(i: int, o: int) -> dict[str, tuple[int, ...]]:
    """The reference outer link's state-dict shapes for ``i -> o``."""
    return {
        "ln_source.weight": (i,), "ln_source.bias": (i,),
        "proj1.weight": (2 * o, i), "proj1.bias": (2 * o,),
        "proj2.weight": (o, 2 * o), "proj2.bias": (o,),
        "residual_proj.weight": (o, i), "residual_proj.bias": (o,),
        "ln_target.weight": (o,), "ln_target.bias": (o,),
    }


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with random values (so zero-initialised branches matter in comparisons)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return module


class Evil:
    """A pickled object that must never be unpickled by the link loader."""

    def __reduce__(self):  # pragma: no cover - only runs if the loader is unsafe
        return (exec, ("raise SystemExit('executed')",))


# --- modules -------------------------------------------------------------------------------


def test_inner_parameter_names_and_shapes() -> None:
    shapes = {k: tuple(v.shape) for k, v in InnerLnRes(16).state_dict().items()}
    assert shapes == {k: f(16) for k, f in INNER_KEYS.items()}


def test_outer_parameter_names_and_shapes() -> None:
    shapes = {k: tuple(v.shape) for k, v in OuterLnRes(12, 8).state_dict().items()}
    assert shapes == outer_shapes(12, 8)


@pytest.mark.parametrize("in_dim,out_dim", [(16, 16), (12, 8), (8, 20)])
def test_forward_shapes(in_dim: int, out_dim: int) -> None:
    x = torch.randn(2, 5, in_dim)
    assert OuterLnRes(in_dim, out_dim)(x).shape == (2, 5, out_dim)
    assert InnerLnRes(in_dim)(x).shape == (2, 5, in_dim)
    assert IdentityLink(in_dim, in_dim)(x) is x


def test_inner_formula_and_residual() -> None:
    link = randomize(InnerLnRes(16)).eval()
    x = torch.randn(3, 4, 16)
    manual = link.post_ln(x + link.proj2(torch.nn.functional.gelu(link.proj1(link.pre_ln(x)))))
    torch.testing.assert_close(link(x), manual)
    with torch.no_grad():
        link.proj2.weight.zero_()
        link.proj2.bias.zero_()
    torch.testing.assert_close(link(x), link.post_ln(x))


def test_outer_formula() -> None:
    link = randomize(OuterLnRes(12, 8)).eval()
    x = torch.randn(2, 3, 12)
    branch = link.proj2(torch.nn.functional.gelu(link.proj1(link.ln_source(x))))
    torch.testing.assert_close(link(x), link.ln_target(branch + link.residual_proj(x)))


def test_default_init_starts_from_normalised_input() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32) * 7.0
    inner = InnerLnRes(32)
    torch.testing.assert_close(inner(x), torch.nn.functional.layer_norm(x, (32,)))
    outer = OuterLnRes(16, 32)  # in <= out: residual_proj is an isometry
    y = torch.randn(4, 16)
    torch.testing.assert_close(outer.residual_proj(y).norm(dim=-1), y.norm(dim=-1))
    out = outer(y)
    assert torch.allclose(out.pow(2).mean(-1), torch.ones(4), atol=1e-3)  # unit per-vector scale
    # the reference init is available too and differs
    ref = OuterLnRes(16, 32, init="torch")
    assert ref.proj2.weight.abs().sum() > 0


def test_forward_casts_to_link_dtype_and_back() -> None:
    link = OuterLnRes(8, 4)
    x = torch.randn(1, 2, 8, dtype=torch.bfloat16)
    out = link(x)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 2, 4)


def test_hidden_mult_option() -> None:
    assert InnerLnRes(8, hidden_mult=4).proj1.weight.shape == (32, 8)
    assert OuterLnRes(8, 4, hidden_mult=1).proj1.weight.shape == (4, 8)


@pytest.mark.parametrize(
    "make,fragment",
    [
        (lambda: InnerLnRes(8, 16), "inner link maps a hidden size to itself"),
        (lambda: IdentityLink(8, 16), "needs equal sizes"),
        (lambda: OuterLnRes(8, 0), "out_dim must be a positive integer"),
        (lambda: InnerLnRes(8, hidden_mult=0), "hidden_mult"),
        (lambda: OuterLnRes(8, 4, init="xavier"), "unknown init scheme"),
    ],
)
def test_bad_construction(make, fragment: str) -> None:
    with pytest.raises(LinkError, match=fragment):
        make()


# --- build_link ----------------------------------------------------------------------------


def test_build_link_random_init(registry: Registry) -> None:
    link = build_link(LinkSpec(type="outer_ln_res"), 12, 8, where="edge a->b")
    assert isinstance(link, OuterLnRes) and link.proj1.weight.shape == (16, 12)
    inner = build_link(LinkSpec(type="inner_ln_res", options={"hidden_mult": 2}), 8, 8, link_types=registry.link_types,
                       where="agent 'a' inner_link")
    assert inner.proj1.weight.shape == (16, 8)


def test_build_link_unknown_type_names_it(registry: Registry) -> None:
    with pytest.raises(LinkError) as info:
        build_link(LinkSpec(type="warp_drive"), 8, 8, link_types=registry.link_types, where="edge a->b")
    text = str(info.value)
    assert "warp_drive" in text and "edge a->b" in text and "outer_ln_res" in text


def test_build_link_bad_option_and_bad_dims(registry: Registry) -> None:
    with pytest.raises(LinkError) as info:
        build_link(LinkSpec(type="inner_ln_res", options={"widht": 3}), 8, 8, link_types=registry.link_types,
                   where="agent 'a' inner_link")
    assert "agent 'a' inner_link" in str(info.value) and "hidden_mult" in str(info.value)
    with pytest.raises(LinkError, match="edge a->b.*identity"):
        build_link(LinkSpec(type="identity"), 8, 16, link_types=registry.link_types, where="edge a->b")


def test_build_link_plugin_link_type() -> None:
    class Scale(torch.nn.Module):
        def __init__(self, in_dim: int, out_dim: int, factor: float = 2.0) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.full((out_dim, in_dim), factor))

    class Plugin:
        from recmas_graph.plugins.hookspecs import hookimpl

        @hookimpl
        def recmas_link_types(self) -> list[LinkType]:
            return [LinkType("scale", "outer", Scale)]

    reg = Registry.create([Plugin()], load_entrypoints=False)
    link = build_link(LinkSpec(type="scale", options={"factor": 3.0}), 4, 2, link_types=reg.link_types, where="edge a->b")
    assert link.weight.shape == (2, 4) and float(link.weight[0, 0].detach()) == 3.0
    assert link_expected_shapes("scale", 4, 2, link_types=reg.link_types) == {"weight": (2, 4)}


# --- checkpoints ---------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path: Path, registry: Registry) -> None:
    link = randomize(OuterLnRes(12, 8, hidden_mult=2))
    path = save_link(link, tmp_path / "links" / "outer_ab", "outer_ln_res", 12, 8, {"hidden_mult": 2})
    assert path == tmp_path / "links" / "outer_ab.safetensors" and path.is_file()
    config = json.loads((tmp_path / "links" / "outer_ab.json").read_text())
    assert config == {"format_version": 1, "type": "outer_ln_res", "in_dim": 12, "out_dim": 8,
                      "options": {"hidden_mult": 2}}
    assert read_link_config(path) == config
    assert link_weight_shapes(path) == outer_shapes(12, 8)
    # relative path resolved against base_dir
    loaded = build_link(LinkSpec(type="outer_ln_res", weights="links/outer_ab.safetensors"), 12, 8,
                        link_types=registry.link_types, base_dir=tmp_path, where="edge a->b")
    x = torch.randn(2, 3, 12)
    torch.testing.assert_close(loaded(x), link(x), rtol=0, atol=0)


def test_config_type_mismatch_is_named(tmp_path: Path, registry: Registry) -> None:
    path = save_link(randomize(InnerLnRes(8)), tmp_path / "inner.safetensors", "inner_ln_res", 8, 8)
    with pytest.raises(LinkError, match="saved for link type 'inner_ln_res'"):
        build_link(LinkSpec(type="outer_ln_res", weights=str(path)), 8, 8, link_types=registry.link_types, where="edge a->b")


def test_reference_pt_loads(tmp_path: Path, registry: Registry) -> None:
    gen = torch.Generator().manual_seed(1)
    state = {k: torch.randn(f(8), generator=gen) for k, f in INNER_KEYS.items()}
    path = tmp_path / "adapter(math).pt"
    torch.save(state, path)
    link = build_link(LinkSpec(type="inner_ln_res", weights=str(path)), 8, 8, link_types=registry.link_types,
                      where="agent 'a' inner_link")
    for key, value in link.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    reference = InnerLnRes(8)
    reference.load_state_dict(state)
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(link(x), reference(x), rtol=0, atol=0)
    assert link_weight_shapes(path) == {k: f(8) for k, f in INNER_KEYS.items()}


def test_reference_pt_wrapped_and_prefixed(tmp_path: Path) -> None:
    state = randomize(OuterLnRes(6, 4)).state_dict()
    path = tmp_path / "outer_12.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    link = load_link_weights(OuterLnRes(6, 4), path, "edge a->b")
    for key, value in link.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_pickled_object_is_refused_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"proj1.weight": torch.zeros(8, 8), "payload": Evil()}, path)
    with pytest.raises(LinkError) as info:
        load_link_weights(InnerLnRes(8), path, "agent 'a' inner_link")
    text = str(info.value)
    assert "agent 'a' inner_link" in text and "weights_only" in text and str(path) in text
    with pytest.raises(LinkError, match="weights_only"):
        link_weight_shapes(path)


def test_non_state_dict_pt_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(LinkError, match="not a state dict"):
        load_link_weights(InnerLnRes(8), path, "agent 'a' inner_link")


def test_wrong_shape_names_edge_and_shapes(tmp_path: Path, registry: Registry) -> None:
    path = save_link(OuterLnRes(10, 6), tmp_path / "outer.safetensors", "outer_ln_res", 10, 6)
    with pytest.raises(LinkError) as info:
        build_link(LinkSpec(type="outer_ln_res", weights=str(path)), 10, 8, link_types=registry.link_types,
                   where="edge planner->critic")
    text = str(info.value)
    assert text.startswith("edge planner->critic:")
    assert "proj1.weight of shape (12, 10), expected (16, 10)" in text
    assert "for hidden sizes 10 -> 8" in text and str(path) in text and "fix:" in text


def test_missing_and_unexpected_keys_listed(tmp_path: Path) -> None:
    state = dict(InnerLnRes(8).state_dict())
    del state["post_ln.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(LinkError) as info:
        load_link_weights(InnerLnRes(8), path, "agent 'a' inner_link")
    assert "missing keys post_ln.bias" in str(info.value) and "unexpected keys extra.weight" in str(info.value)


def test_missing_file_names_path(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(LinkError) as info:
        build_link(LinkSpec(type="inner_ln_res", weights="nope/adapter.pt"), 8, 8, link_types=registry.link_types,
                   base_dir=tmp_path, where="agent 'a' inner_link")
    assert str(tmp_path / "nope" / "adapter.pt") in str(info.value)
    assert "agent 'a' inner_link" in str(info.value)


def test_folder_and_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(LinkError, match="is a folder"):
        load_link_weights(InnerLnRes(8), tmp_path, "agent 'a' inner_link")
    with pytest.raises(LinkError, match="unknown link weights format"):
        load_link_weights(InnerLnRes(8), tmp_path / "w.npz", "agent 'a' inner_link")


# --- check_link_weights --------------------------------------------------------------------


def _spec(tmp_path: Path, outer_file: str, inner_file: str):
    return (TopologyBuilder("pair", rounds=2, latent_steps=4)
            .agent("planner", role="planner", model="tiny:llama",
                   inner_link={"type": "inner_ln_res", "weights": inner_file})
            .agent("critic", role="critic", model="tiny:qwen2")
            .edge("planner", "critic", slot="plan", link={"type": "outer_ln_res", "weights": outer_file})
            .recursion("critic", "planner", slot="feedback", medium="text",
                       link={"type": "outer_ln_res", "weights": "not/checked.pt"})
            .output("critic")
            .build())


def test_check_link_weights(tmp_path: Path, registry: Registry) -> None:
    torch.save(OuterLnRes(10, 6).state_dict(), tmp_path / "outer_12.pt")
    save_link(InnerLnRes(10), tmp_path / "inner_p", "inner_ln_res", 10, 10)
    spec = _spec(tmp_path, "outer_12.pt", "inner_p.safetensors")
    check_link_weights(spec, {"planner": 10, "critic": 6}, base_dir=tmp_path, link_types=registry.link_types)

    with pytest.raises(LinkError) as info:
        check_link_weights(spec, {"planner": 10, "critic": 8}, base_dir=tmp_path, link_types=registry.link_types)
    text = str(info.value)
    assert text.startswith("edge planner->critic:")
    assert "outer link weights" in text and str(tmp_path / "outer_12.pt") in text
    assert "proj1.weight of shape (12, 10), expected (16, 10)" in text and "10 -> 8" in text

    with pytest.raises(LinkError) as info:
        check_link_weights(spec, {"planner": 12, "critic": 6}, base_dir=tmp_path, link_types=registry.link_types)
    text = str(info.value)
    assert "agent 'planner' inner_link" in text and "edge planner->critic" in text  # both reported
    assert "proj1.weight of shape (10, 10), expected (12, 12)" in text
    assert "residual_proj.weight of shape (6, 10), expected (6, 12)" in text
    assert "more tensors of other shapes" in text


def test_check_link_weights_missing_file_and_size(tmp_path: Path, registry: Registry) -> None:
    spec = _spec(tmp_path, "outer_12.pt", "inner_p.safetensors")
    torch.save(OuterLnRes(10, 6).state_dict(), tmp_path / "outer_12.pt")
    with pytest.raises(LinkError) as info:
        check_link_weights(spec, {"planner": 10, "critic": 6}, base_dir=tmp_path, link_types=registry.link_types)
    assert str(info.value).startswith("agent 'planner' inner_link:")
    assert str(tmp_path / "inner_p.safetensors") in str(info.value)
    with pytest.raises(LinkError, match="hidden size of agent 'critic'"):
        check_link_weights(spec, {"planner": 10}, base_dir=tmp_path, link_types=registry.link_types)
