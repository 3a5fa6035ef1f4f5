"""`recmas search`: the space (validation before any model loads, only valid variants), the study
(finds a known optimum, a truly non-dominated front, resume after SIGKILL), the outputs and the
held-out check. Tiny random models, a few questions, a few trials."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("optuna")

from recmas_graph import TopologyBuilder, dump_topology, read_topology_file  # noqa: E402
from recmas_graph.eval.scoring import Metric, Score  # noqa: E402
from recmas_graph.plugins import Registry, hookimpl, set_default_registry  # noqa: E402
from recmas_graph.search import SearchError, pareto_front, resolve_space, search  # noqa: E402
from recmas_graph.topology.compile import compile_topology  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _pair(path: Path) -> Path:
    """A two-agent loop on one tiny model: a -> b (plan), b ~> a (feedback); far from the optimum."""
    spec = (TopologyBuilder("pair", rounds=3, latent_steps=2)
            .agent("a", role="planner", model="tiny:llama").agent("b", role="solver", model="tiny:llama")
            .edge("a", "b", slot="plan").recursion("b", "a", slot="feedback").output("b").build())
    dump_topology(spec, path)
    return path


def _questions(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(json.dumps({"question": f"What is {i} + 1?", "answer": str(i % 4)}) + "\n")
    return path


class Oracle:
    """A metric whose optimum is known: it rewards rounds 2, latent steps 4 and a text a->b edge.

    The run hook sees which topology answers; question ``i`` (gold ``i % 4``) is correct when
    ``(i % 4) / 4`` is below the variant's score: the optimum answers all, every other variant at
    most 3 of each 4 questions, fewer the further it is."""

    def __init__(self) -> None:
        self.spec: Any = None

    @hookimpl
    def recmas_run_start(self, system: Any, questions: list[Any]) -> None:
        self.spec = system.spec

    def quality(self) -> float:
        spec = self.spec
        text = next(e.medium for e in spec.edges if e.source == "a") == "text"
        if spec.rounds == 2 and spec.latent_steps == 4 and text:
            return 1.0
        return max(0.0, 0.7 - 0.2 * abs(spec.rounds - 2) - 0.2 * abs(math.log2(max(spec.latent_steps, 1)) - 2)
                   - (0.0 if text else 0.2))

    def score(self, output: str, gold: str, meta: Any) -> Score:
        return Score(int(gold) / 4 < self.quality(), gold)

    @hookimpl
    def recmas_metrics(self) -> list[Metric]:
        return [Metric("oracle", "rewards R2 m4 a->b text", self.score, ("math",))]


RUN = {"greedy": True, "max_new_tokens": 1, "text_message_tokens": 2}


def test_search_finds_the_known_optimum_and_reports_a_true_front(tmp_path: Path) -> None:
    oracle = Oracle()
    registry = Registry.create([oracle], load_entrypoints=False)
    space = {"base": str(_pair(tmp_path / "pair.json")), "rounds": {"min": 1, "max": 3},
             "latent_steps": [1, 2, 4], "edges": {"a->b": {"medium": ["latent", "text"]}}}
    data = _questions(tmp_path / "q.jsonl", 10)
    report = search(space, data, out=tmp_path / "s", registry=registry, trials=10, limit=8, min_questions=4, eta=2,
                    heldout=2, metric="oracle", build={"models": "tiny"}, **RUN)
    rows = report.trials
    assert report.trials[0]["base"] and report.trials[0]["params"]["rounds"] == 3  # the base runs first
    best = max(report.front, key=lambda r: r["accuracy"])
    assert best["accuracy"] == 1.0
    assert best["params"] == {"rounds": 2, "latent_steps": 4, "medium:a->b": "text"}
    assert sum(1 for r in rows if r["state"] == "PRUNED") >= 1  # successive halving stopped some

    # the front, recomputed by brute force from every complete trial (a variant counts once)
    done = {}
    for r in sorted(rows, key=lambda r: r["trial"]):
        if r["state"] == "COMPLETE":
            done.setdefault(r["variant"], (r["accuracy"], r["cost"]))
    front = {k for k, p in done.items()
             if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in done.values())}
    assert {r["variant"] for r in report.front} == front
    # ... and as Optuna's own study says
    import optuna

    study = optuna.load_study(study_name="recmas-search", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert {tuple(t.values) for t in study.best_trials} == {done[k] for k in front}

    # every trial's variant validates, and each front member is a runnable topology file
    for r in rows:
        variant = report.space.variant(r["params"])
        assert variant.key == r["variant"]
    for r in report.front:
        compile_topology(read_topology_file(r["topology"]), registry)
    # the held-out check: the base first, then every member with its paired test
    assert report.heldout[0]["label"] == "base" and len(report.heldout) == len(report.front) + 1
    assert all(h["p_value"] is not None and h["n"] == 2 for h in report.heldout[1:])
    assert json.loads((tmp_path / "s" / "front.json").read_text())[0]["heldout_p"] is not None


def test_every_proposed_variant_validates(registry: Registry) -> None:
    space = {"base": "mixture", "rounds": {"min": 1, "max": 3}, "latent_steps": {"min": 0, "max": 32, "step": 4},
             "edges": {e: {"medium": ["latent", "text"], "drop": True}
                       for e in ("math->summarizer", "code->summarizer", "summarizer->math", "summarizer->code")},
             "agents": {"math": {"drop": True}, "science": {"drop": True}}}
    resolved = resolve_space(space, registry)
    # dropping an expert's only way to the summarizer while keeping it never validates: never offered
    assert "drop:math->summarizer" not in resolved.structures
    assert "drop:math" in resolved.structures and "drop:math,math->summarizer" in resolved.structures

    class Random:
        def __init__(self, seed: int) -> None:
            self.rng = random.Random(seed)

        def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
            return self.rng.randrange(low, high + 1, step)

        def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
            return self.rng.choice(list(choices))

    keys = set()
    for seed in range(80):
        variant = resolved.suggest(Random(seed))
        compile_topology(variant.spec, registry)  # validates (it was compiled when proposed, too)
        assert variant.spec.latent_steps == variant.params["latent_steps"]
        keys.add(variant.key)
    assert len(keys) > 40


@pytest.mark.parametrize("change, culprit, words", [
    ({"rounds": {"min": 0, "max": 2}}, "rounds.min", "cannot validate"),
    ({"latent_steps": {"min": 8, "max": 4}}, "latent_steps", "max below min"),
    ({"rounds": [1, 0]}, "rounds", "cannot validate"),
    ({"edges": {"planner->judge": {"medium": ["text"]}}}, "edges['planner->judge']", "planner->critic"),
    ({"agents": {"solver": {"drop": True}}}, "agents['solver'].drop", "output agent"),
    ({"agents": {"wizard": {"drop": True}}}, "agents['wizard']", "no agent"),
    ({"roundz": 3}, "roundz", "unknown field"),
    ({"weights": {"mine": "no/such/folder"}}, "weights.mine", "topology.json"),
])
def test_an_invalid_space_fails_before_any_model_loads(change: dict[str, Any], culprit: str, words: str,
                                                       tmp_path: Path, registry: Registry,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import recmas_graph.runtime.build as build

    monkeypatch.setattr(build, "build_system", lambda *a, **k: pytest.fail("a model was loaded"))
    space = {"base": "sequential_light", "rounds": {"min": 1, "max": 2}, **change}
    with pytest.raises(SearchError) as err:
        search(space, _questions(tmp_path / "q.jsonl", 8), out=tmp_path / "s", registry=registry, trials=2, limit=4,
               build={"models": "tiny"})
    assert culprit in str(err.value) and words in str(err.value)
    assert not (tmp_path / "s" / "study.db").exists()


def test_the_cli_names_the_culprit(tmp_path: Path, registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    from recmas_graph.cli import main

    space = tmp_path / "space.json"
    space.write_text(json.dumps({"base": "sequential_light", "edges": {"solver->judge": {"drop": True}}}))
    code = main(["search", str(space), "--dataset", str(_questions(tmp_path / "q.jsonl", 4)), "--out",
                 str(tmp_path / "s"), "--models", "tiny"])
    assert code == 2
    assert "edges['solver->judge']" in capsys.readouterr().err
    assert main(["search", "sequential_light", "--dataset", "q.jsonl", "--out", str(tmp_path / "t")]) == 2
    assert "--vary-rounds" in capsys.readouterr().err


def _docs_space() -> dict[str, Any]:
    text = (ROOT / "docs" / "search.md").read_text(encoding="utf-8")
    return json.loads(re.findall(r"```json\n(.*?)```", text, re.S)[0])


def test_the_docs_space_runs_as_it_is_and_writes_every_output(tmp_path: Path, registry: Registry,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    space = _docs_space()
    assert space["base"] == "sequential_light_mini"  # the worked example's space
    report = search(space, _questions(tmp_path / "q.jsonl", 4), out=tmp_path / "s", registry=registry, trials=1,
                    limit=2, heldout=0, build={"models": "tiny"}, **RUN)
    out = tmp_path / "s"
    for name in ("study.db", "front.csv", "front.json", "front.png", "trials.csv", "search.json", "evaluations.jsonl"):
        assert (out / name).is_file(), name
    with (out / "front.csv").open() as handle:
        assert [r["name"] for r in csv.DictReader(handle)] == [r["name"] for r in report.front]
    for row in report.front:
        assert (out / "front" / f"{row['name']}.json").is_file()
    # the evaluations are ordinary eval folders (records + summary)
    records = list((out / "evals").glob("*/q*/results.jsonl"))
    assert records and all((p.parent / "summary.json").is_file() for p in records)

    # the Python example of docs/search.md runs as written
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "search.md").read_text(encoding="utf-8"), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/search.md", "exec"), {"__name__": "docs_search"})
    for name in ("front.png", "heldout.json", "heldout.csv"):
        assert (tmp_path / "runs" / "search" / name).is_file(), name


def _finished(db: Path) -> list[int]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return [n for (n,) in con.execute("select number from trials where state in ('COMPLETE', 'PRUNED')")]
    except sqlite3.Error:
        return []


def test_a_search_killed_with_sigkill_resumes_its_study(tmp_path: Path) -> None:
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"base": str(_pair(tmp_path / "pair.json")), "rounds": {"min": 1, "max": 3},
                                 "latent_steps": [1, 2, 4], "edges": {"a->b": {"medium": ["latent", "text"]},
                                                                      "b->a": {"drop": True}}}))
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "recmas_graph", "search", str(space), "--dataset",
           str(_questions(tmp_path / "q.jsonl", 4)), "--out", str(out), "--models", "tiny", "--trials", "5",
           "--limit", "2", "--min-questions", "1", "--eta", "2", "--heldout", "2", "--greedy",
           "--max-new-tokens", "1", "--text-message-tokens", "2"]
    env = {**os.environ, "RECMAS_DISABLE_PLUGINS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while len(_finished(out / "study.db")) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL  # killed mid-search, not finished
    before = set(_finished(out / "study.db"))
    assert 2 <= len(before) < 5
    log = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert {e["pid"] for e in log} == {first.pid}
    killed = {first.pid}

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert second.returncode == 0, second.stderr
    assert "Pareto front" in second.stdout
    assert len(_finished(out / "study.db")) == 5
    log = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    again = [e for e in log if e["pid"] not in killed]
    assert not [e for e in again if e["trial"] in before]  # trials before the kill are not rerun
    scored: dict[tuple[str, str], int] = {}
    for e in log:  # and no question is scored twice, whichever process scored it
        scored[(e["variant"], e["chunk"])] = scored.get((e["variant"], e["chunk"]), 0) + e["new"]
    assert all(n <= int(chunk[1:].split("-")[1]) - int(chunk[1:].split("-")[0]) for (_, chunk), n in scored.items())
    assert json.loads((out / "front.json").read_text())


def test_pareto_front_keeps_ties_and_ignores_stopped_trials() -> None:
    rows = [{"trial": 0, "variant": "a", "accuracy": 0.5, "cost": 10.0, "state": "COMPLETE"},
            {"trial": 1, "variant": "b", "accuracy": 0.5, "cost": 10.0, "state": "COMPLETE"},
            {"trial": 2, "variant": "a", "accuracy": 0.5, "cost": 10.0, "state": "COMPLETE"},
            {"trial": 3, "variant": "c", "accuracy": 0.9, "cost": 5.0, "state": "PRUNED"},
            {"trial": 4, "variant": "d", "accuracy": 0.4, "cost": 10.0, "state": "COMPLETE"}]
    assert [r["trial"] for r in pareto_front(rows)] == [0, 1]


@pytest.fixture(autouse=True)
def _one_thread_no_default_registry() -> Any:
    """One torch thread (tiny models on a busy 2-core machine run 3x faster than oversubscribed);
    and no process-wide registry left behind."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    set_default_registry(None)


def test_shortcuts_and_a_timeout_that_leaves_no_trial(tmp_path: Path, registry: Registry) -> None:
    from recmas_graph.search.space import shortcut_space

    space = shortcut_space("sequential_light", registry, rounds="1-3", latent_steps="4,8", media=True)
    assert space["rounds"] == {"min": 1, "max": 3} and space["latent_steps"] == {"choices": [4, 8]}
    assert resolve_space(space, registry).size == 3 * 2 * 2 ** 3
    with pytest.raises(SearchError, match="--vary-rounds"):
        shortcut_space("sequential_light", registry, rounds="one")
    report = search(space, _questions(tmp_path / "q.jsonl", 4), out=tmp_path / "s", registry=registry, trials=3,
                    limit=2, heldout=2, timeout=1e-9, build={"models": "tiny"})
    assert report.ran == 0 and report.front == [] and report.heldout == []
    assert (tmp_path / "s" / "front.csv").is_file()


def test_weights_choices_random_calibrated_and_a_trained_folder(tmp_path: Path, registry: Registry) -> None:
    trained = tmp_path / "trained"
    trained.mkdir()
    spec = json.loads(_pair(trained / "topology.json").read_text())
    spec["edges"][0]["link"]["weights"] = "links/a-b.safetensors"  # relative to the folder
    spec["agents"][0]["inner_link"]["weights"] = "links/a.safetensors"
    (trained / "topology.json").write_text(json.dumps(spec))
    space = {"base": str(_pair(tmp_path / "pair.json")),
             "weights": {"random": None, "calibrated": "calibrated:gsm8k", "trained": str(trained)}}
    resolved = resolve_space(space, registry)
    links = lambda v: [a.inner_link.weights for a in v.spec.agents] + [e.link.weights for e in v.spec.edges]  # noqa: E731
    assert links(resolved.variant({"weights": "random"})) == [None] * 4
    assert links(resolved.variant({"weights": "calibrated"})) == ["calibrated:gsm8k"] * 4
    assert links(resolved.variant({"weights": "trained"})) == [str(trained / "links" / "a.safetensors"), None,
                                                             str(trained / "links" / "a-b.safetensors"), None]
    with pytest.raises(SearchError, match="weights.bad"):
        resolve_space({**space, "weights": {"bad": "calibrated:"}}, registry)
