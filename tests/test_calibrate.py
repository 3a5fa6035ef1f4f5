"""Closed-form link calibration: ridge fits, token alignment, corpora, the written topology, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import recmas_graph as rg
from recmas_graph.cli import main
from recmas_graph.runtime.links.modules import InnerLnRes, OuterLnRes
from recmas_graph.runtime.sources.loaded import ModelCache
from recmas_graph.train import calibrate, corpus_from_dataset, corpus_from_file, fit_link, link_loss, ridge
from recmas_graph.train.pairs import _partner

TEXTS = [f"Question {i}: what is {i} plus {i + 3}? The sum of {i} and {i + 3} is {2 * i + 3}." for i in range(24)]


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def test_ridge_recovers_a_linear_map_and_picks_a_small_strength_for_clean_data() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g)
    w_true, b_true = torch.randn(16, 5, generator=g), torch.randn(5, generator=g)
    w, b, alpha = ridge(x, x @ w_true + b_true, generator=g)
    assert torch.allclose(w, w_true, atol=1e-2) and torch.allclose(b, b_true, atol=1e-2) and alpha <= 1e-3
    few = torch.randn(120, 60, generator=g)  # few rows, many features, mostly noise: a stronger ridge wins
    noisy = few @ torch.randn(60, 5, generator=g) * 0.1 + 3 * torch.randn(120, 5, generator=g)
    assert ridge(few, noisy, generator=g)[2] > alpha


@pytest.mark.parametrize("kind", ["inner", "outer"])
def test_fit_link_matches_targets_a_link_can_express(kind: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 12, generator=g) * 3 + 1
    a = torch.randn(12, 12 if kind == "inner" else 8, generator=g)
    target = torch.nn.functional.layer_norm(x @ a, (a.shape[1],)) * 2.0 + 0.5  # a LayerNorm of a linear map
    link = InnerLnRes(12) if kind == "inner" else OuterLnRes(12, 8)
    with torch.no_grad():
        before = float(link_loss(link(x), target))
    fit_link(link, x, target, generator=g)
    with torch.no_grad():
        after = float(link_loss(link(x), target))
    assert before > 0.5 and after < (0.1 if kind == "outer" else 0.25)


def test_partner_tokens_are_aligned_by_character() -> None:
    # target tokens "ab|cde|f" -> starts 0, 2, 5
    starts, ends = [0, 2, 5], [2, 5, 6]
    assert [_partner(starts, ends, c) for c in (0, 1, 2, 4, 5, 6)] == [0, 0, 1, 1, 2, None]
    assert _partner([3], [4], 1) == 0  # a gap (e.g. a space the target merged elsewhere): the next token


def test_calibration_lowers_every_link_loss_and_writes_a_runnable_topology(tmp_path: Path, registry, cache) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0, model_cache=cache)
    report = calibrate(system, TEXTS, out=tmp_path / "cal", seed=0)
    kinds = {(f.kind, f.name) for f in report.links}
    assert kinds == {("inner", a) for a in system.inner_links} | {("outer", e) for e in system.outer_links}
    for fit in report.links:
        assert fit.loss_after < 0.85 * fit.loss_before, fit
    spec = json.loads((tmp_path / "cal" / "topology.json").read_text())
    assert all(a["inner_link"]["weights"].startswith("links/") for a in spec["agents"])
    assert all(a["model"].startswith("tiny:") for a in spec["agents"])  # the models it was calibrated on
    again = rg.compile(str(tmp_path / "cal" / "topology.json")).build(model_cache=cache)
    for name, link in system.inner_links.items():
        for key, value in link.state_dict().items():
            assert torch.equal(value, again.inner_links[name].state_dict()[key]), (name, key)
    for edge_id, link in system.outer_links.items():
        assert torch.equal(link.residual_proj.weight, again.outer_links[edge_id].residual_proj.weight)
    out = again.run(["What is 2 + 3?"], rounds=1, latent_steps=2, greedy=True, max_new_tokens=3)
    assert len(out.answers) == 1


def test_skip_trained_leaves_loaded_links_alone(tmp_path: Path, registry, cache) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0, model_cache=cache)
    calibrate(system, TEXTS, out=tmp_path / "first")
    trained = rg.compile(str(tmp_path / "first" / "topology.json")).build(model_cache=cache)
    before = {k: v.clone() for k, v in trained.inner_links["planner"].state_dict().items()}
    report = calibrate(trained, TEXTS[:6], skip_trained=True)
    assert report.links == [] and report.topology is None
    assert all(torch.equal(v, trained.inner_links["planner"].state_dict()[k]) for k, v in before.items())


def test_a_subset_of_links_runs_only_the_models_it_needs(registry, cache) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0, model_cache=cache)
    stages: list[str] = []
    report = calibrate(system, TEXTS, links=[("inner", "planner")], progress=lambda s, d, n: stages.append(s))
    assert [(f.kind, f.name) for f in report.links] == [("inner", "planner")]
    ran = {s for s in stages if s.startswith("running ")}
    assert ran == {f"running {system.agents['planner'].loaded.ref}"}


def test_corpora_from_files_and_datasets(tmp_path: Path, registry) -> None:
    txt = tmp_path / "c.txt"
    txt.write_text("first text\n\nsecond text\n")
    assert corpus_from_file(txt) == ["first text", "second text"]
    jl = tmp_path / "c.jsonl"
    jl.write_text(json.dumps({"question": "Q?", "plan": "P", "answer": "A"}) + "\n" + json.dumps({"text": "T"}) + "\n")
    assert corpus_from_file(jl) == ["Q?\nP\nA", "T"]
    jl.write_text(json.dumps({"text": "ok"}) + "\n{broken\n")
    with pytest.raises(rg.RecmasError, match="line 2 of c.jsonl"):
        corpus_from_file(jl)
    jl.write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(rg.RecmasError, match="fields: prompt"):
        corpus_from_file(jl)
    gsm = corpus_from_dataset("gsm8k", registry, limit=2)
    assert len(gsm) == 2 and "<<" in gsm[0]  # the worked solution follows the question
    arc = corpus_from_dataset("arc_easy", registry, limit=1)
    assert "The answer is" in arc[0]


def test_cli_calibrate(tmp_path: Path, capsys, registry) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS[:10]) + "\n")
    assert main(["calibrate", "distillation", "--models", "tiny", "--corpus", str(corpus), "-o", str(tmp_path / "o"),
                 "--max-tokens", "32"]) == 0
    out = capsys.readouterr().out
    assert "inner expert" in out and "calibrated" in out and (tmp_path / "o" / "topology.json").exists()
    assert main(["calibrate", "distillation", "--models", "tiny", "-o", str(tmp_path / "p")]) == 2
    assert "--corpus FILE or --dataset NAME" in capsys.readouterr().err
