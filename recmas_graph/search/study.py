"""The Optuna study of a search: SQLite storage under the output folder, resume, the trial loop.

The study lives in ``DIR/study.db`` (``sqlite:///DIR/study.db``, study name ``recmas-search``), so
a search killed at any point resumes where it stopped and can be inspected with Optuna's own tools
(``optuna-dashboard sqlite:///DIR/study.db``). Its two objectives are accuracy (maximised) and cost
(minimised). The search's configuration is bound to the study: a resumed search with another space,
dataset or run options is refused, naming what changed. Trials that were running when the process
died are marked failed and their parameters queued again (their finished chunks are read back, so
nothing is scored twice).

Each trial grows through the rungs (:mod:`.rungs`): evaluated on the first rung's questions, it
goes on while it ranks in the best ``1/eta`` of the trials that reached the same rung, and is
stopped (Optuna state ``PRUNED``) otherwise. A trial that reaches the last rung is ``COMPLETE`` with
its objectives on every question of the search.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..eval.evaluate import EvalProgress
from ..eval.records import config_changes, config_hash
from .rungs import Chunks, objectives, promote
from .space import ResolvedSpace, SearchError

__all__ = ["STUDY_NAME", "SAMPLERS", "SearchProgress", "storage_url", "open_study", "recover", "run_trials",
           "trial_rows"]

STUDY_NAME = "recmas-search"
#: Optuna samplers by name (each multi-objective).
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class SearchProgress:
    """Where a search stands: ``stage`` (``trial``, ``rung``, ``stopped``, ``complete``, ``resumed``,
    ``exhausted``, ``heldout``, ``eval``), trials ``done`` of ``total``, the trial and a line of text;
    ``eval`` carries an evaluation's own progress."""

    stage: str
    done: int
    total: int | None
    trial: int | None = None
    text: str = ""
    eval: EvalProgress | None = None


def storage_url(folder: Path) -> str:
    """The study's SQLite URL under ``folder``."""
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise SearchError("recmas search needs Optuna", culprit="optuna",
                          hint="pip install 'recmas-graph[search-topologies]'") from None
    if optuna.logging.get_verbosity() < logging.WARNING:
        optuna.logging.set_verbosity(logging.WARNING)  # the library never prints; Optuna logs to stderr
    return optuna


def _sampler(name: str, seed: int, trials: int) -> Any:
    optuna = _optuna()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, trials // 3)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 3)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(f"unknown sampler {name!r}", culprit="--sampler", hint=f"use one of: {', '.join(SAMPLERS)}")


def open_study(folder: Path, config: Mapping[str, Any], *, cost: str, sampler: str, seed: int, trials: int,
               overwrite: bool = False) -> Any:
    """Create or load the study in ``folder`` bound to ``config``; a changed ``config`` is refused
    (``overwrite``: the old study is deleted first)."""
    optuna = _optuna()
    url = storage_url(folder)
    if overwrite:
        try:
            optuna.delete_study(study_name=STUDY_NAME, storage=url)
        except KeyError:
            pass
    study = optuna.create_study(storage=url, study_name=STUDY_NAME, load_if_exists=True,
                                directions=["maximize", "minimize"],
                                sampler=_sampler(sampler, seed + len(_finished_or_any(optuna, url)), trials))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is "experimental"
        study.set_metric_names(["accuracy", f"cost_{cost}"])
    found = study.user_attrs.get("config")
    if found is None:
        study.set_user_attr("config", json.loads(json.dumps(config, default=str)))
        study.set_user_attr("hash", config_hash(config))
    elif config_hash(found) != config_hash(json.loads(json.dumps(config, default=str))):
        changed = config_changes(found, json.loads(json.dumps(config, default=str)))
        raise SearchError(f"the study in this folder was run with another configuration: "
                          f"{', '.join(changed[:8]) or 'its settings'} changed", culprit=str(folder),
                          hint="run it as it was to resume, pass --overwrite to start again, or choose another --out")
    return study


def _finished_or_any(optuna: Any, url: str) -> list[Any]:
    """The trials already stored (to vary a resumed sampler's seed); none for a new study."""
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return []


def recover(study: Any) -> list[int]:
    """Mark trials left running by a process that died as failed and queue their parameters again;
    their numbers."""
    optuna = _optuna()
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number, **(
            {"base": True} if t.user_attrs.get("base") else {})})
    return [t.number for t in stale]


def _finished(study: Any) -> list[Any]:
    optuna = _optuna()
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done]


def _log(folder: Path, entry: Mapping[str, Any]) -> None:
    """Append one line to ``DIR/evaluations.jsonl`` (every chunk an evaluation ran, and how many new questions)."""
    with (folder / "evaluations.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({**entry, "pid": os.getpid(), "time": round(time.time(), 3)}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def run_trials(study: Any, space: ResolvedSpace, chunks: Chunks, *, trials: int, timeout: float | None, eta: int,
               cost: str, folder: Path, progress: Callable[[SearchProgress], None] | None = None) -> int:
    """Run trials until ``trials`` are finished in the study (resumed ones count), ``timeout``
    seconds pass, or every variant of the space has been tried; the number of trials run now."""
    optuna = _optuna()
    start = time.monotonic()
    ran = 0

    def say(stage: str, trial: int | None = None, text: str = "", event: EvalProgress | None = None) -> None:
        if progress is not None:
            progress(SearchProgress(stage, len(_finished(study)), trials, trial, text, event))

    if not any(t.state != optuna.trial.TrialState.FAIL for t in study.get_trials(deepcopy=False)):
        base = space.base_params(chunks.dataset.task, chunks.dataset.name)  # the base first, where the space has it
        study.enqueue_trial(base, user_attrs={"base": True})
    while len(_finished(study)) < trials:
        if timeout is not None and time.monotonic() - start >= timeout:
            say("timeout", text=f"--timeout {timeout:g} s reached")
            break
        size = space.size
        if size is not None and len({t.user_attrs.get("key") for t in _finished(study)}) >= size:
            say("exhausted", text=f"all {size} variants of the space were tried")
            break
        trial = study.ask()
        variant = space.suggest(trial)
        trial.set_user_attr("key", variant.key)
        trial.set_user_attr("variant", variant.name)
        trial.set_user_attr("label", variant.label)
        say("trial", trial.number, f"trial {trial.number}: {variant.label}")
        rungs: list[dict[str, Any]] = []
        peers_at = _rung_points(study, trial.number)
        state = None
        try:
            state = _grow(trial, variant, chunks, rungs, peers_at, eta=eta, cost=cost, folder=folder, say=say)
        except BaseException as err:  # the trial is failed; a Ctrl-C'ed one runs again when the search resumes
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                if isinstance(err, KeyboardInterrupt):
                    study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
            raise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if state is not None:
                study.tell(trial, state=state)
                say("stopped", trial.number, f"trial {trial.number} stopped after {rungs[-1]['n']} questions")
            else:
                study.tell(trial, [rungs[-1]["accuracy"], rungs[-1]["cost"]])
                say("complete", trial.number, f"trial {trial.number} complete")
        ran += 1
    return ran


def _grow(trial: Any, variant: Any, chunks: Chunks, rungs: list[dict[str, Any]],
          peers_at: Callable[[int], list[tuple[float, float]]], *, eta: int, cost: str, folder: Path,
          say: Callable[..., None]) -> Any:
    """Evaluate ``variant`` rung by rung while it ranks among the best; ``PRUNED`` when it stops early,
    else ``None`` (its objectives are the last of ``rungs``)."""
    optuna = _optuna()
    last = len(chunks.sizes) - 1
    for rung, n in enumerate(chunks.sizes):
        def heard(event: EvalProgress) -> None:
            say("eval", trial.number, event=event)

        def scored(chunk: str, new: int) -> None:
            if new:
                _log(folder, {"trial": trial.number, "variant": variant.name, "chunk": chunk, "new": new})

        records = chunks.run(variant, rung, progress=heard, on_chunk=scored)
        accuracy, value = objectives(records, cost)
        rungs.append({"n": n, "accuracy": accuracy, "cost": value})
        trial.set_user_attr("rungs", rungs)
        say("rung", trial.number, f"trial {trial.number}: {n} questions, accuracy {accuracy:.3f}, {cost} {value:.2f}")
        if rung < last and not promote((accuracy, value), peers_at(rung), eta):
            return optuna.trial.TrialState.PRUNED
    return None


def _rung_points(study: Any, current: int) -> Callable[[int], list[tuple[float, float]]]:
    """``peers(rung)``: (accuracy, cost) of the other trials (any state but failed) at that rung, read
    when asked (a resumed study's trials included)."""
    optuna = _optuna()

    def peers(rung: int) -> list[tuple[float, float]]:
        points = []
        for t in study.get_trials(deepcopy=False):
            reached = t.user_attrs.get("rungs") or []
            if t.number != current and t.state != optuna.trial.TrialState.FAIL and len(reached) > rung:
                points.append((float(reached[rung]["accuracy"]), float(reached[rung]["cost"])))
        return points
    return peers


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per stored trial: number, state, variant, parameters, and its objectives (complete:
    on every question; stopped: at its last rung, ``n`` says how many)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        reached = t.user_attrs.get("rungs") or []
        last = reached[-1] if reached else {}
        complete = t.values is not None
        rows.append({
            "trial": t.number, "state": t.state.name, "name": t.user_attrs.get("variant"),
            "variant": t.user_attrs.get("key"), "label": t.user_attrs.get("label"), "params": dict(t.params),
            "accuracy": t.values[0] if complete else last.get("accuracy"),
            "cost": t.values[1] if complete else last.get("cost"), "n": last.get("n"), "rungs": list(reached),
            "base": bool(t.user_attrs.get("base")),
        })
    return rows

