"""Experiments (recmas experiment): an experiment file's systems trained by one recipe and evaluated
over seeds as content-addressed stages; a report with means and spreads over seeds and paired tests;
reruns that reuse every finished stage (after SIGKILL, after adding or changing a system); errors
that name the field before any model loads. Tiny random models, a handful of steps and questions."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import recmas_graph as rg
from recmas_graph.cli import main
from recmas_graph.experiment import plan_experiment, run_experiment
from recmas_graph.experiment.report import TIMING_KEYS
from recmas_graph.plugins import Registry

ROOT = Path(__file__).resolve().parent.parent


def _experiment(**changes: Any) -> dict[str, Any]:
    """Two tiny-buildable styles, two seeds, a few steps, four questions."""
    data: dict[str, Any] = {
        "name": "tiny",
        "systems": ["sequential_light", {"topology": "distillation", "label": "distill", "recipe": {"outer_steps": 3}}],
        "train": {"dataset": "arc_easy_val", "limit": 12, "heldout": 0.25, "answers": "cloze"},
        "recipe": {"calibrate": True, "calibrate_texts": 6, "inner_steps": 1, "outer_steps": 2, "batch_size": 2,
                   "lr": 0.01, "warmup": 0, "rounds": 1, "latent_steps": 2},
        "eval": {"dataset": "arc_easy", "limit": 4, "baselines": ["sequential_light:single"]},
        "seeds": [0, 1],
    }
    data.update(changes)
    return data


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def _events(into: list[Any]) -> Any:
    return into.append


def _started(events: list[Any]) -> list[Any]:
    return [e.stage for e in events if e.event == "start"]


def _strip(value: Any) -> Any:
    """A report without its seconds, floats rounded (a resumed training matches to float rounding)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.5g}")
    return value


def test_two_systems_two_seeds_report_means_and_spreads(tmp_path: Path, registry: Registry) -> None:
    events: list[Any] = []
    result = run_experiment(_experiment(), out=tmp_path / "x", registry=registry, models="tiny",
                            progress=_events(events))
    out = tmp_path / "x"
    assert [r["label"] for r in result.rows] == ["sequential_light", "distill", "sequential_light:single"]
    for row in result.rows:
        assert set(row["seeds"]) == {"0", "1"}
        accs = [row["seeds"][s]["accuracy"] for s in ("0", "1")]
        assert row["accuracy_mean"] == pytest.approx(sum(accs) / 2)
        assert row["accuracy_std"] is not None and row["acc_norm_mean"] is not None
        assert row["answer_nll_mean"] > 0 and row["answer_nll_std"] is not None  # likelihood scoring: the NLL
        assert row["n"] == 4 and row["tokens_per_question"] >= 0 and row["seconds_per_question"] > 0
    seq, distill, single = result.rows
    assert seq["paired"] is None  # the reference (the first system)
    assert distill["paired"]["n"] == 8 and set(distill["paired"]["per_seed"]) == {"0", "1"}  # pooled over seeds
    assert {"norm", "nll"} <= set(distill["paired"])
    assert distill["overrides"] == {"outer_steps": 3} and distill["recipe"]["outer_steps"] == 3
    assert seq["overrides"] == {} and seq["seeds"]["0"]["train"]["outer"]["steps"] == 2
    assert single["kind"] == "baseline" and single["of"] == "sequential_light"
    # the files: the report in three forms and the two figures
    for name in ("report.md", "report.csv", "report.json", "training.png", "accuracy_cost.png", "experiment.json"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "| distill | " in md and "± " in md and "`outer_steps` = `3`" in md
    with (out / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == ["sequential_light", "distill", "sequential_light:single"]
    assert json.loads((out / "report.json").read_text())["rows"] == json.loads(json.dumps(result.rows))
    # one stage folder per stage, all finished; every stage ran once, and progress said so
    stages = result.plan.stages
    assert len(stages) == 1 + 2 * 2 * 4 + 2  # data; 2 systems x 2 seeds x 4 stages; the baseline's evals
    assert sorted(p.name for p in (out / "stages").iterdir()) == sorted(s.name for s in stages)
    assert len(_started(events)) == len(stages) == len(result.ran)
    # the baseline of a system is made from that system's trained links of the same seed
    single_eval = result.plan.stage(result.plan.row("sequential_light:single").evals[0])
    assert single_eval.deps == (result.plan.row("sequential_light").trains[0][-1],)
    # a rerun reuses everything and writes the same report
    again: list[Any] = []
    second = run_experiment(_experiment(), out=out, registry=registry, models="tiny", progress=_events(again))
    assert _started(again) == [] and second.ran == []
    assert _strip(second.report) == _strip(result.report)


def test_changing_or_adding_a_system_runs_only_its_stages(tmp_path: Path, registry: Registry) -> None:
    spec = json.loads(rg.dump_topology(rg.compile("distillation").spec))
    topology = _write(tmp_path / "distill.json", spec)
    experiment = _experiment(systems=["sequential_light", {"topology": "distill.json", "label": "distill"}],
                             seeds=[0], eval={"dataset": "arc_easy", "limit": 3})
    path = _write(tmp_path / "exp.json", experiment)  # the topology file is relative to the experiment file
    first = run_experiment(path, out=tmp_path / "x", registry=registry, models="tiny")
    assert len(first.ran) == 1 + 2 * 4
    # change the second system's topology: only its stages run again
    spec["edges"][1]["medium"] = "text"
    _write(topology, spec)
    events: list[Any] = []
    changed = run_experiment(path, out=tmp_path / "x", registry=registry, models="tiny", progress=_events(events))
    assert [(s.kind, s.label) for s in _started(events)] == [(k, "distill") for k in ("calibrate", "inner", "outer",
                                                                                       "eval")]
    assert changed.row("sequential_light") == first.row("sequential_light") | {
        "seconds_per_question": changed.row("sequential_light")["seconds_per_question"]}
    # a description is not the system: nothing runs
    spec["description"] = "the same system, described"
    _write(topology, spec)
    events.clear()
    run_experiment(path, out=tmp_path / "x", registry=registry, models="tiny", progress=_events(events))
    assert _started(events) == []
    # add a system that differs from the first only in its outer steps: its calibration and inner loop
    # are the first system's (same inputs, same keys), so only its outer loop and evaluation run
    experiment["systems"].append({"topology": "sequential_light", "label": "longer", "recipe": {"outer_steps": 3}})
    _write(path, experiment)
    events.clear()
    added = run_experiment(path, out=tmp_path / "x", registry=registry, models="tiny", progress=_events(events))
    assert [(s.kind, s.label) for s in _started(events)] == [("outer", "longer"), ("eval", "longer")]
    assert added.row("longer")["overrides"] == {"outer_steps": 3}
    plan = added.plan
    assert plan.row("longer").trains[0][:2] == plan.row("sequential_light").trains[0][:2]


def _finished(out: Path) -> set[str]:
    stages = out / "stages"
    return {p.name for p in stages.iterdir() if not p.name.endswith(".partial")} if stages.is_dir() else set()


def test_a_run_killed_with_sigkill_in_training_resumes_and_reports_the_same(tmp_path: Path,
                                                                             registry: Registry) -> None:
    path = _write(tmp_path / "exp.json", _experiment(
        seeds=[0], recipe={"calibrate": True, "calibrate_texts": 6, "inner_steps": 0, "outer_steps": 16,
                           "batch_size": 2, "lr": 0.01, "warmup": 0, "rounds": 1, "latent_steps": 2,
                           "save_every": 2}))
    env = {**os.environ, "RECMAS_DISABLE_PLUGINS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "recmas_graph", "experiment", "run", str(path), "--models", "tiny", "--out",
                str(out)]

    out = tmp_path / "killed"
    first = subprocess.Popen(command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120

    def training() -> bool:  # the first outer stage has logged a few steps
        runs = sorted((out / "stages").glob("outer-*.partial/metrics.jsonl")) if (out / "stages").is_dir() else []
        return any(len(p.read_text().splitlines()) >= 5 for p in runs)

    while not training() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL  # killed mid-experiment, not finished
    killed_output = first.stdout.read() if first.stdout else ""
    before = _finished(out)
    partial = [p for p in (out / "stages").iterdir() if p.name.endswith(".partial")]
    assert any(p.name.startswith("outer-") for p in partial)  # cut short inside a training stage
    assert {m.group(1) for m in re.finditer(r"done .*\((\S+)\) in", killed_output)} <= before

    second = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    started = re.findall(r"start .*\((\S+)\)$", second.stdout, re.M)
    plan = plan_experiment(path, out=out, registry=registry, models="tiny")
    every = {s.name for s in plan.stages}
    assert not set(started) & before  # every finished stage was reused
    assert set(started) | before == every and len(started) == len(set(started))
    assert f"{len(before)} finished (reused)" in second.stdout
    # progress inside the stages, also with stdout a pipe: the training steps and the questions answered
    assert re.search(r"outer .*: step 16/16: loss \d", second.stdout)
    assert re.search(r"eval .*: \d+/\d+ questions, \d+ right", second.stdout)
    resumed = [json.loads((out / "stages" / p.name.removesuffix(".partial") / "done.json").read_text())
               for p in partial if p.name.startswith("outer-")]
    assert any(r["result"]["resumed_from"] for r in resumed)  # from its checkpoint, not from step 0

    # an uninterrupted run (here, in this process) writes the same report over the same stages
    whole = tmp_path / "whole"
    run_experiment(path, out=whole, registry=registry, models="tiny")
    killed_report = json.loads((out / "report.json").read_text())
    whole_report = json.loads((whole / "report.json").read_text())
    assert _strip(killed_report) == _strip(whole_report)
    assert _finished(whole) == _finished(out) == every  # the same stages, by key


@pytest.mark.parametrize("change, field", [
    ({"recipe": {"lr": "fast"}}, "recipe.lr"),
    ({"recipe": {"learning_rate": 0.1}}, "recipe.learning_rate: unknown field"),
    ({"seeds": []}, "seeds"),
    ({"systems": ["sequential_light", {"topology": "distillation", "recipe": {"batch_size": 0}}]},
     "systems[1].recipe.batch_size"),
    ({"systems": ["sequential_light", "no_such_style"]}, "systems[1].topology"),
    ({"eval": {"dataset": "arc_easy", "baselines": ["sequential_light:twin"]}}, "eval.baselines[0]"),
    ({"eval": {"dataset": "arc_easy", "reference": "nobody"}}, "eval.reference"),
    ({"eval": {"dataset": "no_such_dataset"}}, "eval.dataset"),
    ({"eval": {"dataset": "arc_easy", "options": {"rounds": 2}}}, "eval.options.rounds"),
    ({"recipe": {"target_weights": {"nobody": 0.5}}}, "recipe.target_weights"),
    ({"train": None}, "train"),
])
def test_a_bad_experiment_fails_before_any_model_loads_naming_the_field(
        tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        change: dict[str, Any], field: str) -> None:
    import recmas_graph.runtime.build as build

    def no_build(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(build, "build_system", no_build)
    path = _write(tmp_path / "bad.json", _experiment(**change))
    assert main(["experiment", "run", str(path), "--models", "tiny", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert field in " ".join(err.split()), err
    assert not (tmp_path / "x").exists()
    with pytest.raises(rg.RecmasError, match=re.escape(field.split(":")[0])):
        run_experiment(path, out=tmp_path / "x", registry=registry, models="tiny")


def test_a_file_that_is_not_json_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"systems": [', encoding="utf-8")
    assert main(["experiment", "run", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_a_dry_run_prints_the_plan_and_a_cost_and_runs_nothing(tmp_path: Path, registry: Registry,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "exp.json", _experiment(seeds=[0]))
    assert main(["experiment", "run", str(path), "--models", "tiny", "--out", str(tmp_path / "x"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "10 stages: 0 finished (reused), 10 to run" in out
    assert len(re.findall(r"^\s+to run\s", out, re.M)) == 10 and "estimated" in out
    assert not (tmp_path / "x").exists()
    run_experiment(path, out=tmp_path / "x", registry=registry, models="tiny")
    assert main(["experiment", "run", str(path), "--models", "tiny", "--out", str(tmp_path / "x"), "--dry-run"]) == 0
    assert len(re.findall(r"^\s+cached\s", capsys.readouterr().out, re.M)) == 10
    # without --models tiny the stages are other stages (the build is part of every key)
    plan = plan_experiment(path, out=tmp_path / "x", registry=registry)
    statuses = plan.statuses()
    assert {statuses[s.key] for s in plan.stages if s.kind != "data"} == {"todo"}
    assert [statuses[s.key] for s in plan.stages if s.kind == "data"] == ["done"]  # the same samples


def test_the_ray_backend_without_ray_names_the_extra(tmp_path: Path, registry: Registry,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(rg.RunError, match=re.escape("recmas-graph[ray]")):
        run_experiment(_experiment(seeds=[0]), out=tmp_path / "x", registry=registry, models="tiny", backend="ray")
    assert not (tmp_path / "x").exists()
    with pytest.raises(rg.RunError, match="unknown backend"):
        run_experiment(_experiment(seeds=[0]), out=tmp_path / "x", registry=registry, backend="dask")


def _docs_experiment() -> dict[str, Any]:
    text = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    return json.loads(re.findall(r"```json\n(.*?)```", text, re.S)[0])


def test_the_docs_experiment_runs_as_it_is_on_tiny_models(tmp_path: Path, registry: Registry,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "two_styles.json", _docs_experiment())
    out = tmp_path / "runs" / "two-styles-tiny"
    assert main(["experiment", "run", str(path), "--models", "tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^\[1/\d+\] start  data", printed, re.M) and "wrote" in printed
    for name in ("report.md", "report.csv", "report.json", "training.png", "accuracy_cost.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in report["rows"]] == ["sequential_light_mini", "distillation",
                                                    "sequential_light_mini:single"]
    # the Python example of the docs runs as written (on the folder above: every stage is reused)
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8"), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/experiments.md", "exec"), {"__name__": "docs_experiments"})
    assert "[]" in capsys.readouterr().out  # nothing ran again
    # the schema validates the docs' file
    jsonschema = pytest.importorskip("jsonschema")
    assert main(["experiment", "schema", "-o", str(tmp_path / "schema.json")]) == 0
    jsonschema.validate(_docs_experiment(), json.loads((tmp_path / "schema.json").read_text()))


def test_the_worked_example_plans_to_about_an_hour(tmp_path: Path, registry: Registry) -> None:
    from recmas_graph.experiment import estimate_seconds

    plan = plan_experiment(ROOT / "experiments" / "mini_styles.json", out=tmp_path / "x", registry=registry)
    assert [r.label for r in plan.rows] == ["sequential_light_mini", "distillation_mini",
                                            "sequential_light_mini:single"]
    assert plan.spec.train is not None and plan.spec.train.dataset == "arc_easy_val"
    assert plan.spec.train.answers == "cloze" and plan.eval_questions == 100 and plan.scoring == "likelihood"
    assert plan.spec.seeds == [0, 1]
    minutes = sum(estimate_seconds(s) for s in plan.stages) / 60
    assert 35 < minutes < 75, minutes


def test_the_ray_backend_runs_independent_stages_as_tasks_with_the_same_report(tmp_path: Path,
                                                                                registry: Registry) -> None:
    ray = pytest.importorskip("ray", reason="the Ray backend is the optional extra 'ray'")
    from recmas_graph.distributed import connect

    experiment = _experiment(seeds=[0])
    local = run_experiment(experiment, out=tmp_path / "local", registry=registry, models="tiny")
    connect(num_cpus=2)
    try:
        events: list[Any] = []
        on_ray = run_experiment(experiment, out=tmp_path / "ray", registry=registry, models="tiny", backend="ray",
                                progress=_events(events))
    finally:
        ray.shutdown()
    assert sorted(on_ray.ran) == sorted(local.ran)
    order = [(e.event, e.stage.key) for e in events if e.stage is not None]
    for stage in on_ray.plan.stages:  # each stage started after the stages it reads had finished
        assert all(order.index(("finish", d)) < order.index(("start", stage.key)) for d in stage.deps)
    assert _strip(on_ray.report) == _strip(local.report)


def test_rg_experiment_and_rg_search_stay_callable_after_their_subpackages_are_imported(tmp_path: Path) -> None:
    import importlib

    importlib.import_module("recmas_graph.experiment")  # sets the package attribute to the subpackage
    importlib.import_module("recmas_graph.search")
    result = rg.experiment(_experiment(), out=tmp_path / "exp", models="tiny", dry_run=True)
    assert result.dry_run and len(result.plan.stages) > 0 and not (tmp_path / "exp").exists()
    with pytest.raises(rg.RecmasError, match="rounds"):  # routed to the search, which checks the space first
        rg.search({"base": "sequential_light", "rounds": {"min": 0, "max": "x"}}, "arc_easy", out=tmp_path / "s")


def test_a_recipe_with_two_workers_trains_the_same_stages_as_one(tmp_path: Path, registry: Registry) -> None:
    """recipe.workers trains data-parallel (recmas train --workers): the same keys, the same losses."""
    recipe = {"calibrate": False, "inner_steps": 0, "outer_steps": 3, "batch_size": 2, "lr": 0.01, "warmup": 0,
              "rounds": 1, "latent_steps": 2}
    runs = {}
    for workers in (1, 2):
        spec = _experiment(systems=["sequential_light"], seeds=[0], recipe={**recipe, "workers": workers},
                           eval={"dataset": "arc_easy", "limit": 2})
        out = tmp_path / f"w{workers}"
        run_experiment(spec, out=out, registry=registry, models="tiny")
        (outer,) = (out / "stages").glob("outer-*")
        losses = [json.loads(line)["loss"] for line in (outer / "metrics.jsonl").read_text().splitlines()]
        runs[workers] = (outer.name, losses, json.loads((outer / "report.json").read_text()).get("workers"))
    assert runs[1][0] == runs[2][0]  # one key: workers do not change the result
    assert runs[2][2] == 2 and len(runs[1][1]) == len(runs[2][1]) == 3
    assert runs[2][1] == pytest.approx(runs[1][1], rel=1e-5)
    with pytest.raises(rg.SpecError, match="workers"):
        run_experiment(_experiment(recipe={**recipe, "workers": 3}), out=tmp_path / "bad", registry=registry,
                       models="tiny", dry_run=True)
