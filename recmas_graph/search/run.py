"""``search``: find the topologies on the accuracy-cost Pareto front of a dataset.

:func:`search` checks everything that needs no weights first (the space against its base, the
dataset and its question count, the options), then runs an Optuna study in ``DIR`` (resumable:
:mod:`.study`) whose trials grow by successive halving on the number of questions (:mod:`.rungs`),
writes the front (:mod:`.front`) and re-evaluates it on held-out questions against the base
(:mod:`.recheck`). The library never prints: ``progress`` receives a :class:`~.study.SearchProgress`.

``DIR`` holds::

    study.db            the Optuna study (SQLite)
    search.json         configuration, trials, front and held-out rows
    trials.csv          one row per trial
    evaluations.jsonl   every chunk of questions an evaluation scored (trial, variant, how many new)
    evals/<variant>/q<a>-<b>/   the evaluation folders of the search questions (records, summary)
    front.csv  front.json  front.png  front/<variant>.json   the front; each member a runnable topology
    heldout/<system>/   heldout.json  heldout.csv           the held-out re-evaluation
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._files import lock_folder, make_output_folder, write_json_atomic
from ..eval.datasets import Dataset, resolve_dataset, select_samples
from ..runtime.options import RunOptions
from ..topology.spec import dump_topology
from .front import pareto_front, plot_front, write_front
from .recheck import recheck
from .rungs import COSTS, Chunks, default_min_questions, rung_sizes
from .space import ResolvedSpace, SearchError, SearchSpace, resolve_space
from .study import SAMPLERS, SearchProgress, open_study, recover, run_trials, trial_rows

__all__ = ["SearchReport", "search", "TRIAL_KEYS"]

#: The columns of trials.csv.
TRIAL_KEYS = ("trial", "state", "name", "label", "accuracy", "cost", "n", "base")
_COST_LABEL = {"tokens": "cost: generated tokens + latent steps per question",
               "seconds": "cost: seconds per question"}


@dataclass
class SearchReport:
    """A search's outcome: every trial, the front, the held-out rows, its folder and files."""

    out: Path
    trials: list[dict[str, Any]]
    front: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    plot: Path | None
    space: ResolvedSpace
    ran: int
    config: dict[str, Any]


def _check(trials: int, limit: int, heldout: int, eta: int, cost: str, sampler: str,
           min_questions: int | None, timeout: float | None) -> None:
    for name, value, low in (("--trials", trials, 1), ("--limit", limit, 1), ("--heldout", heldout, 0),
                             ("--eta", eta, 2), ("--min-questions", min_questions, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise SearchError(f"{name.lstrip('-')} must be an integer >= {low}, got {value!r}", culprit=name)
    if timeout is not None and timeout <= 0:
        raise SearchError(f"timeout must be positive, got {timeout!r}", culprit="--timeout")
    if cost not in COSTS:
        raise SearchError(f"unknown cost {cost!r}", culprit="--cost", hint=f"use one of: {', '.join(COSTS)}")
    if sampler not in SAMPLERS:
        raise SearchError(f"unknown sampler {sampler!r}", culprit="--sampler", hint=f"use one of: {', '.join(SAMPLERS)}")


def search(
    space: SearchSpace | Mapping[str, Any] | str | Path,
    dataset: str | Path | Dataset,
    *,
    out: str | Path,
    registry: Any = None,
    trials: int = 20,
    timeout: float | None = None,
    limit: int = 30,
    heldout: int | None = None,
    min_questions: int | None = None,
    eta: int = 3,
    cost: str = "tokens",
    sampler: str = "tpe",
    seed: int = 0,
    split: str | None = None,
    shuffle: bool = False,
    fields: Mapping[str, str] | None = None,
    task: str | None = None,
    batch_size: int = 8,
    build: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
    scoring: str | None = None,
    metric: str | None = None,
    retry: bool | None = None,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    bucket: bool = True,
    overwrite: bool = False,
    progress: Callable[[SearchProgress], None] | None = None,
    **more: Any,
) -> SearchReport:
    """Search ``space`` (a :class:`SearchSpace`, a dict, or a JSON file) on ``dataset`` and write
    the accuracy-cost front to ``out``; rerun to resume.

    ``trials``: the study's budget (trials already stored count); ``timeout``: seconds after which
    no new trial starts. The search uses the first ``limit`` questions (after a ``shuffle`` seeded
    by ``seed``), growing each trial through rungs of ``min_questions`` times powers of ``eta``;
    the front is re-evaluated on the next ``heldout`` questions (default: ``limit``; 0: none) with
    paired tests against the base. ``cost``: ``"tokens"`` (generated tokens + latent steps per
    question) or ``"seconds"`` (wall seconds per question). ``sampler``: ``tpe``, ``nsga2`` or
    ``random``. ``build`` (``models``, ``model``, ``device``, ``dtype``...), ``options`` /
    ``run_options`` (decoding, ``text_message_tokens``...), ``scoring``, ``metric``, ``retry``,
    ``batch_size``, ``backend``, ``workers`` as for :func:`recmas_graph.eval.evaluate`; the space
    says the rounds and latent steps, so ``rounds`` / ``latent_steps`` options are refused. Other
    keywords are run options (``greedy=True``...) or further keywords of ``evaluate`` (``judge``...).
    """
    from ..plugins.manager import default_registry
    from ..runtime.sources.loaded import ModelCache

    registry = registry or default_registry()
    heldout = limit if heldout is None else heldout
    _check(trials, limit, heldout, eta, cost, sampler, min_questions, timeout)
    resolved = resolve_space(space, registry)  # every problem of the space, before any model loads
    run_options, eval_options = _split(more)
    opts = RunOptions.of(options, **run_options)
    for name in ("rounds", "latent_steps"):
        if getattr(opts, name) is not None:
            raise SearchError(f"the search space says the {name.replace('_', ' ')}", culprit=f"--{name.replace('_', '-')}",
                              hint=f'drop it, and put a value or a range in the space: "{name}": 2')
    data = resolve_dataset(dataset, registry, split=split, task=task, fields=fields)
    samples = select_samples(data, limit=limit + heldout, shuffle=shuffle, seed=seed)
    if len(samples) < limit + heldout:
        raise SearchError(f"{data.name} has {len(samples)} questions; the search needs {limit} plus {heldout} "
                          f"held out", culprit="--limit" if len(samples) < limit else "--heldout",
                          hint=f"lower --limit / --heldout (e.g. --limit {max(1, len(samples) // 2)} "
                               f"--heldout {len(samples) - max(1, len(samples) // 2)}), or --heldout 0")
    sizes = rung_sizes(limit, min_questions=min_questions or default_min_questions(limit, eta), eta=eta)
    folder = make_output_folder(out, error=SearchError)
    how = {k: v for k, v in dict(build or {}).items() if k not in ("model_cache", "low_memory", "on_model")}
    config = {
        "space": resolved.record(), "dataset": {"name": data.name, "split": split, "shuffle": shuffle, "seed": seed,
                                                "task": task, "fields": dict(fields or {}), "limit": limit},
        "rungs": sizes, "eta": eta, "cost": cost, "sampler": sampler, "scoring": scoring, "metric": metric,
        "retry": retry, "run": opts.record(), "build": how,
        **({"evaluation": json.loads(json.dumps(eval_options, default=str))} if eval_options else {}),
    }
    lock = lock_folder(folder, ".search.lock", what="search", error=SearchError)
    try:
        if overwrite:
            for old in ("evals", "heldout", "front", "evaluations.jsonl"):
                path = folder / old
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        study = open_study(folder, config, cost=cost, sampler=sampler, seed=seed, trials=trials, overwrite=overwrite)
        stale = recover(study)
        if stale and progress is not None:
            progress(SearchProgress("resumed", 0, trials, None, f"trial(s) {', '.join(map(str, stale))} were cut "
                                                                 "short; their parameters run again"))
        build_how = dict(build or {})
        build_how.setdefault("model_cache", ModelCache(registry.model_sources))
        evaluation = {"registry": registry, "build": build_how, "options": opts, "batch_size": batch_size,
                      "scoring": scoring, "metric": metric, "retry": retry, "seed": seed, "backend": backend,
                      "workers": workers, "ray_address": ray_address, "bucket": bucket, **eval_options}
        chunks = Chunks(data, tuple(samples[:limit]), tuple(sizes), folder / "evals", evaluation)
        ran = run_trials(study, resolved, chunks, trials=trials, timeout=timeout, eta=eta, cost=cost,
                         folder=folder, progress=progress)
        rows = trial_rows(study)
        front = pareto_front(rows)
        variants = {row["name"]: resolved.variant(row["params"]) for row in front}
        for row in front:
            spec = variants[row["name"]].spec
            row.update(rounds=spec.rounds, latent_steps=spec.latent_steps)
        write_front(front, {name: dump_topology(v.spec) for name, v in variants.items()}, folder)
        base_row = next((r for r in rows if r["base"] and r["accuracy"] is not None), None)
        plot = plot_front(rows, front, folder / "front.png", cost_label=_COST_LABEL[cost], base=base_row)
        checked: list[dict[str, Any]] = []
        if heldout and front:
            def heard(event: Any) -> None:
                if progress is not None:
                    progress(SearchProgress("eval", len(rows), trials, None, "", event))

            def on_system(name: str, i: int, n: int) -> None:
                if progress is not None:
                    progress(SearchProgress("heldout", len(rows), trials, None,
                                            f"held-out questions: {name} ({i + 1}/{n})"))

            members = [(row["name"], row["label"], variants[row["name"]].compiled) for row in front]
            checked = recheck(members, resolved.base, data, samples[limit:], folder=folder / "heldout", cost=cost,
                              evaluation=evaluation, progress=heard, on_system=on_system)
            by_name = {r["system"]: r for r in checked}
            for row in front:
                held = by_name[row["name"]]
                row.update(heldout_accuracy=held["accuracy"], heldout_p=held["p_value"])
            write_json_atomic(folder / "front.json", front)
        _write_trials(rows, folder)
        write_json_atomic(folder / "search.json", {"config": config, "trials": rows, "front": front,
                                                   "heldout": checked})
        return SearchReport(folder, rows, front, checked, plot, resolved, ran, config)
    finally:
        lock.release()


def _split(more: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keywords -> (run options, further keywords of evaluate); unknown ones are refused by name."""
    import inspect
    from dataclasses import fields

    from ..eval.evaluate import evaluate

    run_names = {f.name for f in fields(RunOptions)}
    eval_names = set(inspect.signature(evaluate).parameters) - {"system_or_topology", "dataset", "out", "label",
                                                                 "progress", "run_options", "resume", "limit"}
    unknown = sorted(set(more) - run_names - eval_names)
    if unknown:
        raise SearchError(f"unknown option(s) {', '.join(unknown)}", culprit="search()",
                          hint="run options: " + ", ".join(sorted(run_names)))
    run = {k: v for k, v in more.items() if k in run_names}
    return run, {k: v for k, v in more.items() if k not in run_names and v is not None}


def _write_trials(rows: list[dict[str, Any]], folder: Path) -> None:
    with (folder / "trials.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*TRIAL_KEYS, "params"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: row.get(k) for k in TRIAL_KEYS}, "params": json.dumps(row["params"])})
