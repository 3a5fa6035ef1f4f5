"""Repeated sampling: the unbiased pass@k on hand-computed cases, draw seeds, majority vote, and an
evaluation with ``samples=4`` interrupted midway that resumes to exactly the draws of an
uninterrupted run; compare's pass@k columns and per-question sign tests."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import recmas_graph as rg
from recmas_graph.errors import RecmasError
from recmas_graph.eval.passk import (draw_id, draw_seed, majority_vote, pass_at_k, pass_at_k_by_question,
                                     summarize_draws)
from recmas_graph.eval.stats import paired_sign_counts
from recmas_graph.runtime.sources.loaded import ModelCache

SAMPLED = dict(generation={"greedy": False, "temperature": 1.0, "max_new_tokens": 4}, latent_steps=1, rounds=1,
               text_message_tokens=4)


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def _math_set(tmp_path: Path, n: int = 3) -> Path:
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(n)))
    return path


# ------------------------------------------------------------------------------ the estimator


@pytest.mark.parametrize("n, c, k, expected", [
    (5, 2, 1, 2 / 5),            # pass@1 = c / n
    (5, 2, 2, 1 - 3 / 10),       # 1 - C(3,2)/C(5,2)
    (5, 2, 3, 1 - 1 / 10),       # 1 - C(3,3)/C(5,3)
    (5, 2, 4, 1.0),              # n - c < k: some correct draw is always among k
    (10, 0, 10, 0.0),
    (10, 1, 10, 1.0),
    (10, 3, 5, 1 - 21 / 252),    # 1 - C(7,5)/C(10,5)
    (4, 1, 2, 0.5),              # 1 - C(3,2)/C(4,2) = 1 - 3/6
])
def test_pass_at_k_is_the_unbiased_estimator_on_hand_computed_cases(n, c, k, expected) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_binomial_formula_everywhere_and_refuses_impossible_counts() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_summary_of_draws_pass_at_k_and_majority_vote() -> None:
    def rec(q: str, d: int, pred: str | None, ok: bool) -> dict:
        return {"id": draw_id(q, d), "question_id": q, "draw": d, "prediction": pred, "correct": ok}

    records = [rec("a", 0, "1", False), rec("a", 1, "2", True), rec("a", 2, "1", False),   # 1 of 3, vote "1": wrong
               rec("b", 2, "7", True), rec("b", 0, " 7", True), rec("b", 1, "8", False),    # 2 of 3, vote "7": right
               rec("c", 0, None, False), rec("c", 1, None, False), rec("c", 2, None, False)]  # nothing predicted
    summary = summarize_draws(records, 3)
    assert summary["questions"] == summary["complete_questions"] == 3
    assert summary["pass_at_k"]["1"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert summary["pass_at_k"]["2"] == pytest.approx(((1 - 1 / 3) + 1 + 0) / 3)  # C(2,2)/C(3,2) = 1/3
    assert summary["pass_at_k"]["3"] == pytest.approx(2 / 3)
    assert summary["majority_accuracy"] == pytest.approx(1 / 3)
    assert majority_vote([rec("t", 0, "x", False), rec("t", 1, "y", True)]) is False  # a tie: the first drawn
    assert majority_vote([rec("t", 0, None, False)]) is None
    assert pass_at_k_by_question(records, 2) == pytest.approx({"a": 2 / 3, "b": 1.0, "c": 0.0})
    assert summarize_draws(records, 3, vote=False)["majority_accuracy"] is None
    assert paired_sign_counts({"a": 0.5, "b": 1.0}, {"a": 0.25, "b": 1.0}) == (2, 1, 0)


def test_draw_seeds_depend_on_seed_question_and_draw_only() -> None:
    seeds = {(s, q, d): draw_seed(s, q, d) for s in (0, 1) for q in ("q1", "q2") for d in range(4)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2**31 for v in seeds.values())
    assert draw_seed(0, "q1", 3) == seeds[(0, "q1", 3)]  # no hidden state


# ------------------------------------------------------------------------------ evaluations


def test_an_interrupted_sampled_eval_resumes_to_every_draw_once_with_the_same_answers(
        tmp_path: Path, registry, cache, monkeypatch) -> None:
    from recmas_graph.runtime.system import RecursiveSystem

    data = _math_set(tmp_path, n=3)
    kwargs = dict(registry=registry, batch_size=2, samples=4, build={"models": "tiny", "model_cache": cache},
                  **SAMPLED)
    whole = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "whole", **kwargs)
    assert len(whole.records) == 12
    assert [r["id"] for r in whole.records] == [f"q{i}@{d}" for i in range(3) for d in range(4)]
    assert {(r["question_id"], r["draw"]) for r in whole.records} == {(f"q{i}", d) for i in range(3) for d in range(4)}
    outputs = {r["id"]: r["output"] for r in whole.records}
    assert len(set(outputs.values())) > 1, "sampled draws should differ"
    summary = whole.summary
    assert summary["samples"] == 4 and set(summary["pass_at_k"]) == {"1", "2", "3", "4"}
    assert summary["pass_at_k"]["1"] == pytest.approx(summary["accuracy"])
    assert "majority_accuracy" in summary and summary["config"]["run"]["samples"] == 4

    original, calls = RecursiveSystem.run, {"n": 0}

    def failing(self, questions, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # two batches (4 draws) are written, then the process "dies"
            raise RuntimeError("injected failure")
        return original(self, questions, *args, **kw)

    monkeypatch.setattr(RecursiveSystem, "run", failing)
    with pytest.raises(RecmasError, match="injected failure"):
        rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "cut", **kwargs)
    written = (tmp_path / "cut" / "results.jsonl").read_text().splitlines()
    assert len(written) == 4
    monkeypatch.setattr(RecursiveSystem, "run", original)
    seen = []
    resumed = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "cut", progress=seen.append, **kwargs)
    counts = [e.done for e in seen if e.stage is None]
    assert counts[0] == 4 and counts[-1] == seen[-1].total == 12
    ids = [json.loads(x)["id"] for x in (tmp_path / "cut" / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(outputs) and len(ids) == len(set(ids)) == 12
    assert {r["id"]: r["output"] for r in resumed.records} == outputs
    keys = ("accuracy", "pass_at_k", "majority_accuracy", "n", "hash")
    assert {k: resumed.summary[k] for k in keys} == {k: summary[k] for k in keys}


_KILLED_RUN = """
import sys, recmas_graph as rg
from recmas_graph.plugins import Registry
rg.evaluate("distillation", "jsonl:" + sys.argv[1], out=sys.argv[2], registry=Registry.create(load_entrypoints=False),
            batch_size=1, samples=4, build={"models": "tiny"},
            generation={"greedy": False, "temperature": 1.0, "max_new_tokens": 4}, latent_steps=1, rounds=1,
            text_message_tokens=4)
"""


def test_a_sampled_eval_killed_with_sigkill_resumes_to_the_same_draws(tmp_path: Path, registry) -> None:
    data = _math_set(tmp_path, n=3)
    out = tmp_path / "killed"
    env = {**os.environ, "RECMAS_DISABLE_PLUGINS": "1"}
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(data), str(out)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = len(results.read_text().splitlines())
    assert 3 <= done_before < 12, "the kill came too late to test a resume"
    kwargs = dict(registry=registry, batch_size=1, samples=4, build={"models": "tiny"}, **SAMPLED)
    resumed = rg.evaluate("distillation", f"jsonl:{data}", out=out, **kwargs)
    ids = [json.loads(x)["id"] for x in results.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 12
    whole = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "whole", **kwargs)
    assert [(r["id"], r["output"]) for r in resumed.records] == [(r["id"], r["output"]) for r in whole.records]
    assert resumed.summary["pass_at_k"] == whole.summary["pass_at_k"]


def test_draws_do_not_depend_on_batch_order_or_size(tmp_path: Path, registry, cache) -> None:
    data = _math_set(tmp_path, n=2)
    common = dict(registry=registry, samples=2, build={"models": "tiny", "model_cache": cache}, **SAMPLED)
    one = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "a", batch_size=1, bucket=False, **common)
    four = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "b", batch_size=4, **common)
    assert {r["id"]: r["output"] for r in one.records} == {r["id"]: r["output"] for r in four.records}


def test_samples_are_refused_when_not_a_count_or_with_likelihood_scoring(tmp_path: Path, registry) -> None:
    data = _math_set(tmp_path, n=1)
    with pytest.raises(RecmasError, match="samples"):
        rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "x", registry=registry, samples=0,
                    build={"models": "tiny"})
    with pytest.raises(RecmasError, match="--samples"):
        rg.evaluate("distillation", "arc_easy", out=tmp_path / "y", registry=registry, samples=2, limit=1,
                    build={"models": "tiny"})


def test_compare_shows_pass_at_k_and_sign_tests_per_question(tmp_path: Path, registry, cache) -> None:
    from recmas_graph.cli.evaluate import compare_tables

    data = _math_set(tmp_path, n=2)
    cmp = rg.compare(["distillation"], f"jsonl:{data}", out=tmp_path / "cmp", registry=registry, baselines=True,
                     samples=2, batch_size=4, build={"models": "tiny", "model_cache": cache}, **SAMPLED)
    row = cmp.row("distillation")
    assert row["samples"] == 2 and set(row["pass_at_k"]) == {"1", "2"}
    paired = row["paired"]["distillation:single"]
    assert paired["test"] == "sign" and paired["n"] == 2 and set(paired["pass_at_k"]) == {"1", "2"}
    header = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()[0]
    assert "pass@1" in header and "pass@2" in header
    from rich.console import Console

    console = Console(width=120, record=True)
    for table in compare_tables(cmp.rows):
        console.print(table)
    text = console.export_text()
    assert "pass@2" in text and "maj %" in text
