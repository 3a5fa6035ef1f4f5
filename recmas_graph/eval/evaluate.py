"""Evaluate a system on a dataset: per-sample records, a summary, resume after any interruption.

:func:`evaluate` runs a system (or a topology it builds) on the samples of a dataset batch by batch
and scores it: by generation (each answer read by the dataset's metric, retrying answers that lack
their final format, as the reference does, when asked) or, for multiple-choice datasets by default,
by likelihood (each option's log-likelihood after the output agent's final prompt, ``acc`` and
``acc_norm`` as lm-eval defines them: :mod:`.likelihood`). It writes ``DIR/results.jsonl`` (one record per sample, appended and
synced as each batch finishes) and ``DIR/summary.json``. Running it again on the same folder
resumes; a changed configuration is refused. The library never prints: ``progress`` receives an
:class:`EvalProgress` after each batch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..errors import RunError
from ..plugins.manager import Registry, default_registry
from ..runtime.execution.batches import Batch, run_batches
from ..runtime.options import RunOptions
from ..topology.catalog import resolve_model_source
from ..topology.spec import TopologySpec, dump_topology
from .datasets import Dataset, Sample, resolve_dataset, select_samples
from .likelihood import ChoiceQuestion, best, choice_question, resolve_scoring
from .passk import (check_samples, draw_id, draw_seed, group_draws, pass_at_k_by_question, same_answer,
                    summarize_draws)
from .records import RunFolder, write_json_atomic
from .retry import needs_retry, retry_answers
from .scoring import Metric, get_metric
from .stats import bootstrap_ci, bootstrap_mean_ci

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.execution.results import RunResult
    from ..runtime.agent.scoring import ScoreResult
    from ..runtime.system import RecursiveSystem

__all__ = ["EvalProgress", "EvalReport", "evaluate", "summarize", "reference_style"]

#: Record keys, in order (every line of results.jsonl has them).
RECORD_KEYS = ("id", "question", "gold", "prediction", "correct", "output", "generated_tokens", "latent_steps",
               "wall_s", "messages", "retried", "extraction", "task", "answer_tokens")


@dataclass(frozen=True)
class EvalProgress:
    """Where an evaluation stands after a batch: samples ``done`` of ``total``, how many ``correct``."""

    system: str
    done: int
    total: int
    correct: int
    wall_s: float
    stage: str | None = None  # while the system is built: "loading AGENT (REF)", "calibrating ..."


@dataclass
class EvalReport:
    """An evaluation's outcome: its folder, every record (in dataset order) and the summary."""

    system: str
    dataset: str
    out: Path
    records: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def accuracy(self) -> float | None:
        """Fraction of correct samples (``None`` when there are none)."""
        return self.summary["accuracy"]

    @property
    def acc_norm(self) -> float | None:
        """Likelihood scoring: the fraction of samples whose length-normalised pick is right (``None``
        when generated answers were scored)."""
        return self.summary.get("acc_norm")

    @property
    def samples(self) -> int:
        """Answers drawn per question (1 unless the evaluation sampled repeatedly)."""
        return int(self.summary.get("samples") or 1)

    @property
    def correct_by_id(self) -> dict[str, bool]:
        """Sample id -> correct (for paired tests; with repeated sampling the ids are draws')."""
        return {str(r["id"]): bool(r["correct"]) for r in self.records}

    def pass_at_k_by_question(self, k: int = 1) -> dict[str, float]:
        """Question id -> its pass@k (unbiased estimator; one draw: 1.0 or 0.0), for paired tests."""
        return pass_at_k_by_question(self.records, k)

    @property
    def judged_by_id(self) -> dict[str, bool]:
        """Record id -> the judge's verdict (evaluations with ``judge=``; empty otherwise)."""
        return {str(r["id"]): bool(r["judge"]["correct"]) for r in self.records if isinstance(r.get("judge"), dict)}

    @property
    def correct_norm_by_id(self) -> dict[str, bool]:
        """Sample id -> ``acc_norm`` (likelihood scoring; empty otherwise), for paired tests."""
        return {str(r["id"]): bool(r["acc_norm"]) for r in self.records if "acc_norm" in r}


def reference_style(spec: TopologySpec) -> bool:
    """Whether the output agent uses a ``reference:*`` role (the official evaluation's retry applies)."""
    return spec.agent(spec.output).role.startswith("reference:")


def _versions() -> dict[str, str]:
    found = {}
    for package in ("recmas-graph", "torch", "transformers", "math-verify"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "-"
    return found


def _unique_ids(samples: Sequence[Sample]) -> list[tuple[str, Sample]]:
    """Each sample with an id no other sample has: a repeated id gets ``#2``, ``#3``, ... (unused ones)."""
    taken = {sample.id for sample in samples}
    seen: set[str] = set()
    out = []
    for sample in samples:
        sid, n = sample.id, 1
        while sid in seen or (n > 1 and sid in taken):
            n += 1
            sid = f"{sample.id}#{n}"
        seen.add(sid)
        out.append((sid, sample))
    return out


def _fingerprint(samples: Sequence[tuple[str, Sample]]) -> str:
    """A hash of the selected samples' ids, questions, gold answers and task types."""
    digest = hashlib.sha256()
    for sid, sample in samples:
        digest.update(json.dumps([sid, sample.question, sample.gold, sample.task], ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def summarize(records: Sequence[Mapping[str, Any]], config: Mapping[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """The summary of ``records``: accuracy with a 95% bootstrap interval (likelihood scoring:
    ``acc_norm`` with its own), counts, time, tokens, memory. With repeated sampling
    (``config["run"]["samples"]`` > 1) accuracy is the mean over draws (= pass@1), its interval
    resamples questions, and ``pass_at_k`` and ``majority_accuracy`` come along (:mod:`.passk`);
    graded metrics (records' ``scores``: EM, F1, pass rate) are averaged in ``metrics``; a judge's
    verdicts give ``judge_accuracy``."""
    n = len(records)
    correct = [bool(r["correct"]) for r in records]
    run = dict(config.get("run") or {})
    samples = int(run.get("samples") or 1)
    if samples > 1:
        lo, hi = bootstrap_mean_ci([sum(bool(r["correct"]) for r in d) / len(d)
                                    for d in group_draws(records).values()], seed=seed)
    else:
        lo, hi = bootstrap_ci(correct, seed=seed)
    wall = sum(float(r["wall_s"]) for r in records)
    scoring = str(dict(config.get("run") or {}).get("scoring", "generate"))
    norm = [bool(r["acc_norm"]) for r in records if "acc_norm" in r]
    norm_lo, norm_hi = bootstrap_ci(norm, seed=seed) if norm else (None, None)
    return {
        "accuracy": (sum(correct) / n) if n else None, "n": n, "ci_low": lo, "ci_high": hi, "scoring": scoring,
        "acc_norm": (sum(norm) / len(norm)) if norm else None, "acc_norm_ci_low": norm_lo,
        "acc_norm_ci_high": norm_hi,
        "correct": sum(correct), "incorrect": n - sum(correct),
        "no_prediction": sum(1 for r in records if r["prediction"] is None),
        "retried": sum(1 for r in records if r.get("retried")),
        "wall_s": round(wall, 4), "per_sample_s": round(wall / n, 4) if n else None,
        "generated_tokens": sum(int(r["generated_tokens"]) for r in records),
        "answer_tokens": sum(int(r.get("answer_tokens", 0)) for r in records),
        "latent_steps": sum(int(r["latent_steps"]) for r in records),
        "peak_mem_bytes": max((int(r.get("peak_mem_bytes", 0)) for r in records), default=0),
        "config": dict(config), "hash": config.get("hash"), "seed": seed, "versions": _versions(),
        **_graded(records), **_judged(records, seed), **(_drawn(records, samples, run) if samples > 1 else {}),
    }


def _graded(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``metrics``: the mean of each graded value of the records' ``scores`` (absent when none has any)."""
    sums: dict[str, list[float]] = {}
    for record in records:
        for key, value in dict(record.get("scores") or {}).items():
            sums.setdefault(key, []).append(float(value))
    return {"metrics": {k: sum(v) / len(v) for k, v in sums.items()}} if sums else {}


def _judged(records: Sequence[Mapping[str, Any]], seed: int) -> dict[str, Any]:
    """``judge_accuracy`` (with its interval) and ``judge_unparsed`` for records a judge saw."""
    verdicts = [r["judge"] for r in records if isinstance(r.get("judge"), dict)]
    if not verdicts:
        return {}
    right = [bool(v["correct"]) for v in verdicts]
    lo, hi = bootstrap_ci(right, seed=seed)
    return {"judge_accuracy": sum(right) / len(right), "judge_ci_low": lo, "judge_ci_high": hi,
            "judge_unparsed": sum(1 for v in verdicts if v.get("verdict") is None)}


def _drawn(records: Sequence[Mapping[str, Any]], samples: int, run: Mapping[str, Any]) -> dict[str, Any]:
    """The repeated-sampling summary (pass@k, majority vote) of ``records``."""
    metric = str(run.get("metric", ""))
    return summarize_draws(records, samples, same=same_answer(metric), vote=metric not in _NO_VOTE)


#: Metrics whose predictions are not answers a vote can compare (programs).
_NO_VOTE = frozenset({"code_tests", "code_test_list", "code_io_tests"})


def evaluate(
    system_or_topology: Any,
    dataset: str | Path | Dataset,
    *,
    out: str | Path,
    registry: Registry | None = None,
    limit: int | None = None,
    split: str | None = None,
    shuffle: bool = False,
    seed: int = 0,
    fields: Mapping[str, str] | None = None,
    task: str | None = None,
    batch_size: int = 8,
    resume: bool = True,
    overwrite: bool = False,
    retry: bool | None = None,
    metric: str | None = None,
    build: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
    label: str | None = None,
    progress: Callable[[EvalProgress], None] | None = None,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    bucket: bool = True,
    scoring: str | None = None,
    samples: int | None = None,
    judge: str | None = None,
    judge_options: Mapping[str, Any] | None = None,
    **run_options: Any,
) -> EvalReport:
    """Run ``system_or_topology`` on ``dataset`` and score it; write and return the records and summary.

    ``system_or_topology`` is a built :class:`~recmas_graph.runtime.RecursiveSystem` or anything
    :func:`recmas_graph.compile` takes (then built with ``build``: ``models``, ``model``,
    ``device``, ``dtype``, ``seed``, ``model_cache``). ``dataset`` is a name, ``jsonl:PATH``,
    ``hf:NAME`` or ``mmlu:SUBJECT`` (``split``, ``fields``, ``task`` as in
    :func:`~recmas_graph.eval.datasets.resolve_dataset`); ``limit`` samples after a ``shuffle``
    seeded by ``seed``. Sample ``i`` decodes with seed ``seed + i``. ``retry`` (default: on for the
    reference styles) applies the reference's answer retry. ``options`` (a
    :class:`~recmas_graph.runtime.options.RunOptions`, with ``run_options`` keywords on top: ``rounds``,
    ``latent_steps``, ``greedy``, ``max_new_tokens``, ``text_message_tokens``, ``tool_choice``, ...)
    say how the system thinks and decodes, on top of the topology's settings for the dataset; their
    ``task`` and ``dataset`` come from each sample and ``seed`` from ``seed``.
    ``backend="ray"`` builds the system with its agents in Ray actors (:mod:`recmas_graph.distributed`);
    ``workers=N`` (Ray whatever ``backend`` says) instead answers the batches on ``N`` Ray workers,
    each with a whole system, while this process writes the records (``ray_address``: the cluster
    to join). Neither changes the
    records, so an evaluation may be resumed with another backend. ``bucket`` (default) answers
    the samples longest question first, so that a batch holds questions of similar length and
    pads little; ``results.jsonl`` is put back in dataset order when the evaluation finishes.
    ``scoring`` is ``"likelihood"`` (the default for multiple-choice datasets: each option's
    log-likelihood after the output agent's final prompt, :mod:`.likelihood`; records get ``acc``
    (= ``correct``), ``acc_norm`` and the options' log-likelihoods) or ``"generate"`` (the default
    otherwise: the generated answer, read by the metric).
    ``samples=N`` draws ``N`` answers per question (default: the dataset's, else 1), each with a seed
    derived from ``(seed, question id, draw)`` (:func:`~.passk.draw_seed`), each a record (id
    ``QUESTION@DRAW``); the summary adds ``pass_at_k`` for k = 1..N and ``majority_accuracy``.
    ``judge`` (a model reference) has that model judge every generated answer against the gold
    answer(s) (:mod:`.judge`; ``judge_options``: ``batch_size``, ``max_new_tokens``, ``device``,
    ``dtype``); verdicts are stored in the records, so a resumed evaluation never judges twice.
    """
    from ..runtime.system import RecursiveSystem

    registry = registry or default_registry()
    if "task" in run_options or "dataset" in run_options or "seed" in run_options:
        raise RunError("evaluate() takes task and seed as its own arguments, and the dataset as its second",
                       culprit="evaluate()", hint="task= sets the dataset's task type; seed= seeds everything")
    opts = RunOptions.of(options, **run_options).replace(seed=seed)
    if isinstance(system_or_topology, RecursiveSystem) and (workers is not None or backend != "local"):
        raise RunError("a built system runs where it was built", culprit="workers=" if workers else "backend=",
                       hint="give the topology (and build=...) to evaluate on Ray workers or Ray actors")
    if batch_size < 1:
        raise RunError(f"batch_size must be at least 1, got {batch_size}", culprit="--batch-size")
    data = resolve_dataset(dataset, registry, split=split, task=task, fields=fields)
    draws = check_samples(samples if samples is not None else (data.samples or 1))
    mode = resolve_scoring(scoring, data)
    if mode == "likelihood" and (draws > 1 or judge is not None):
        what = "--samples" if draws > 1 else "--judge"
        raise RunError(f"{what} applies to generated answers; likelihood scoring samples nothing and reads no "
                       "answer", culprit=what, hint=f"drop {what}, or pass --scoring generate")
    if mode == "likelihood" and (metric is not None or retry):
        raise RunError(f"{'--metric' if metric is not None else '--retry'} applies to generated answers; likelihood "
                       "scoring picks the option with the largest log-likelihood", culprit="--scoring likelihood",
                       hint=f"drop {'--metric' if metric is not None else '--retry'}, or pass --scoring generate")
    scorer: Metric = get_metric(metric or data.metric_name, registry)
    chosen = _unique_ids(select_samples(data, limit=limit, shuffle=shuffle, seed=seed))
    judge_spec = None
    if judge is not None:
        from .judge import JudgeSpec

        judge_spec = JudgeSpec.of(judge, judge_options)
        resolve_model_source(judge_spec.model, registry.model_sources)  # an unknown prefix fails before any load
    asked = {sid: choice_question(sample) for sid, sample in chosen} if mode == "likelihood" else {}
    built: RecursiveSystem | None = system_or_topology if isinstance(system_or_topology, RecursiveSystem) else None
    compiled = built.compiled if built is not None else registry.compile(system_or_topology)  # names, specs, ...
    spec = compiled.spec
    name = label or spec.name
    # where and how the models run does not change the records: not part of the configuration
    build_options = {k: v for k, v in dict(build or {}).items() if k not in ("model_cache", "low_memory")}
    use_retry = (reference_style(spec) if retry is None else retry) and mode == "generate"
    config = {
        "system": name, "topology": json.loads(dump_topology(spec)),
        "build": build_options if built is None else {k: v for k, v in getattr(built, "build_options", {}).items()
                                                      if k not in ("low_memory", "backend")},
        "dataset": {"name": data.name, "split": split, "limit": limit, "shuffle": shuffle, "seed": seed,
                    "fields": dict(fields or {}), "task": task, "n": len(chosen),
                    "samples": _fingerprint(chosen)},
        "run": {**_run_config(opts), "retry": use_retry, "metric": scorer.name},
    }
    if mode == "likelihood":  # (absent for generation: folders of earlier versions resume)
        config["run"].update(scoring=mode, metric="likelihood")
    if draws > 1:  # (absent for one draw: folders of earlier versions resume)
        config["run"]["samples"] = draws
    if judge_spec is not None:
        config["run"]["judge"] = judge_spec.record()
    # what runs: one item per (question, draw); one draw keeps the question's id and seed + position
    work = [(draw_id(sid, d), s) if draws > 1 else (sid, s) for sid, s in chosen for d in range(draws)]
    drawn = {draw_id(sid, d): (sid, d) for sid, _ in chosen for d in range(draws)} if draws > 1 else {}
    seeds = ({iid: draw_seed(seed, *drawn[iid]) for iid, _ in work} if draws > 1
             else {sid: seed + i for i, (sid, _) in enumerate(chosen)})
    with RunFolder.open(out, config, resume=resume, overwrite=overwrite) as folder:
        order = {iid: i for i, (iid, _) in enumerate(work)}
        pending = [(iid, s) for iid, s in work if iid not in folder.records]
        by_id = dict(work)
        judging = None  # the judge, loaded when a batch first needs it
        start = time.perf_counter()
        sharded = None
        owned = None  # a Ray-built system this evaluation started (its actors are stopped at the end)

        def report() -> None:
            if progress is not None:
                done = [r for sid, r in folder.records.items() if sid in order]
                progress(EvalProgress(name, len(done), len(work), sum(1 for r in done if r["correct"]),
                                      time.perf_counter() - start))

        def finish(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            """Tag draws and judge a finished batch's records (before they are written: judged once)."""
            nonlocal judging
            for record in records:
                if record["id"] in drawn:
                    record["question_id"], record["draw"] = drawn[record["id"]]
            if judge_spec is not None and records:
                if judging is None:
                    from .judge import Judge

                    judging = Judge.load(judge_spec, registry=registry,
                                         cache=dict(build or {}).get("model_cache"))
                judging.judge_records(records, [by_id[r["id"]] for r in records])
            return records

        by_task: dict[str, list[tuple[str, Sample]]] = {}
        for item in pending:
            by_task.setdefault(item[1].task, []).append(item)
        if bucket:  # longest first: similar lengths share a batch, and the largest batch runs (or fails) first
            for items in by_task.values():
                items.sort(key=lambda item: -len(item[1].question))
        try:
            if pending and built is None:
                how = dict(build or {})  # the build keywords (the run options are opts)
                if workers is not None:
                    from ..distributed.sharded import ShardedAnswerer

                    sharded = ShardedAnswerer(compiled, how, workers=workers, address=ray_address)
                else:
                    if progress is not None and "on_model" not in how:
                        def stage(agent: str, ref: str) -> None:
                            text = ref if agent == "links" else f"loading {agent} ({ref})"
                            progress(EvalProgress(name, 0, len(work), 0, time.perf_counter() - start, stage=text))
                        how["on_model"] = stage
                    from ..distributed.choose import build_system

                    built = build_system(compiled, backend=backend, ray_address=ray_address, **how)
                    owned = built if backend == "ray" else None
            report()  # where a resumed run starts
            for sample_task, items in by_task.items():
                if sharded is not None:
                    cut = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
                    how = {"options": opts.replace(task=sample_task, dataset=data.name), "retry": use_retry,
                           "metric": scorer.name, "order": order, "scoring": mode,
                           "seeds": seeds}
                    for records in sharded.answer(cut, how, answer_batch):
                        folder.append(finish(records))
                        report()
                    continue
                here = opts.replace(task=sample_task, dataset=data.name)
                if built is None:  # pragma: no cover - built above when not sharded
                    raise RunError("no system to evaluate", culprit="evaluate()")
                if mode == "likelihood":
                    batches = run_batches(built, [_likelihood_question(s, asked[sid]) for sid, s in items], here,
                                          batch_size=batch_size, ids=[sid for sid, _ in items], backoff=True,
                                          continuations=[asked[sid].continuations for sid, _ in items])
                else:
                    batches = run_batches(built, [s.as_question() for _, s in items], here, batch_size=batch_size,
                                          ids=[sid for sid, _ in items], seeds=[seeds[sid] for sid, _ in items],
                                          backoff=True)
                for done in batches:
                    batch = [items[i] for i in done.positions]
                    if mode == "likelihood":
                        folder.append(_likelihood_records(batch, done, here, [asked[sid] for sid, _ in batch]))
                    else:
                        folder.append(finish(_records(built, batch, done, here, scorer, seeds=seeds,
                                                      retry=use_retry)))
                    report()
        finally:
            if sharded is not None:
                sharded.shutdown()
            if owned is not None:
                cast(Any, owned.runner).shutdown()  # the RayRunner's: the actors this evaluation started
        folder.reorder(order)  # dataset order, whatever order the batches ran in
        records = [r for sid, r in folder.records.items() if sid in order]
        summary = summarize(records, folder.config, seed=seed)
        write_json_atomic(folder.summary_path, summary)
        return EvalReport(name, data.name, folder.path, records, summary)


def answer_batch(system: RecursiveSystem, batch: Sequence[tuple[str, Sample]], *, scorer: Metric, options: RunOptions,
                 order: Mapping[str, int], retry: bool, scoring: str = "generate",
                 seeds: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Run, retry (when asked) and score one batch of ``(id, sample)`` with ``options`` (their task,
    dataset and seed set); its records (what an evaluation writes; a Ray worker of a sharded one calls this).
    Item ``id`` samples with ``seeds[id]`` (default: ``options.seed + order[id]``).
    ``scoring="likelihood"`` scores the options of multiple-choice samples instead (``scorer`` unused)."""
    records: list[dict[str, Any]] = []
    if scoring == "likelihood":
        asked = [choice_question(s) for _, s in batch]
        for done in run_batches(system, [_likelihood_question(s, q) for (_, s), q in zip(batch, asked)], options,
                                batch_size=len(batch), ids=[sid for sid, _ in batch], backoff=True,
                                continuations=[q.continuations for q in asked]):
            records += _likelihood_records([batch[i] for i in done.positions], done, options,
                                           [asked[i] for i in done.positions])
        return records
    seed = options.seed or 0
    seeds = seeds if seeds is not None else {sid: seed + order[sid] for sid, _ in batch}
    for done in run_batches(system, [s.as_question() for _, s in batch], options, batch_size=len(batch),
                            ids=[sid for sid, _ in batch], seeds=[seeds[sid] for sid, _ in batch], backoff=True):
        part = [batch[i] for i in done.positions]  # the back-off may answer the batch in smaller parts
        records += _records(system, part, done, options, scorer, seeds=seeds, retry=retry)
    return records


def _records(system: RecursiveSystem, batch: Sequence[tuple[str, Sample]], done: Batch, options: RunOptions, scorer: Metric, *,
             seeds: Mapping[str, int], retry: bool) -> list[dict[str, Any]]:
    """Retry (when asked) and score one finished batch of samples (item ``id`` sampled with
    ``seeds[id]``); their records."""
    task = options.task
    seeds_of = [seeds[sid] for sid, _ in batch]
    t0 = time.perf_counter()
    result = cast("RunResult", done.result)  # run, not scored
    outputs = list(result.answers)
    retried = [False] * len(batch)
    if retry:
        pending = [j for j, (_, s) in enumerate(batch)
                   if needs_retry(outputs[j], task, str(s.meta.get("letters") or "") or None)]
        if pending:
            generation = options.resolve_generation(system.spec.settings_for(task, options.dataset))
            again = retry_answers(system, [outputs[j] for j in pending], task, generation=generation,
                                  seeds=[seeds_of[j] for j in pending])
            for j, text in zip(pending, again):
                outputs[j], retried[j] = text, True
    wall = (done.wall_s + time.perf_counter() - t0) / len(batch)
    peak = max((r.peak_mem_bytes for r in result.trace), default=0)
    records = []
    for j, (sid, sample) in enumerate(batch):
        score = scorer.score(outputs[j], sample.gold, sample.meta)
        records.append({
            "id": sid, "question": sample.question, "gold": sample.gold, "prediction": score.prediction,
            "correct": bool(score.correct), "output": outputs[j],
            "generated_tokens": result.question_tokens[j] if result.question_tokens else result.generated_tokens[j],
            "latent_steps": result.latent_steps, "wall_s": round(wall, 4),
            "messages": {f"{edge}@{r}": texts[j] for (edge, r), texts in result.texts.items()},
            "retried": retried[j], "extraction": score.detail, "task": task,
            "answer_tokens": result.generated_tokens[j], "peak_mem_bytes": peak,
            **({"scores": dict(score.values)} if score.values else {}),
        })
    return records


def _likelihood_question(sample: Sample, asked: ChoiceQuestion) -> dict[str, str]:
    """What the system is asked when the options are scored: the question without its option lines."""
    return {**sample.as_question(), "question": asked.question}


def _likelihood_records(batch: Sequence[tuple[str, Sample]], done: Batch, options: RunOptions,
                        asked: Sequence[ChoiceQuestion]) -> list[dict[str, Any]]:
    """The records of one scored batch: the picks of ``acc`` and ``acc_norm``, every option's score."""
    result = cast("ScoreResult", done.result)
    wall = done.wall_s / len(batch)
    peak = max((r.peak_mem_bytes for r in result.trace), default=0)
    records = []
    for j, ((sid, sample), question) in enumerate(zip(batch, asked)):
        scores = result.scores[j]
        logprobs = [s.logprob for s in scores]
        pick, pick_norm = best(logprobs, question.options)
        records.append({
            "id": sid, "question": question.question, "gold": sample.gold, "prediction": question.letters[pick],
            "correct": pick == question.gold, "output": question.options[pick],
            "generated_tokens": result.question_tokens[j] if result.question_tokens else 0,
            "latent_steps": result.latent_steps, "wall_s": round(wall, 4),
            "messages": {f"{edge}@{r}": texts[j] for (edge, r), texts in result.texts.items()},
            "retried": False, "extraction": "likelihood", "task": options.task, "answer_tokens": 0,
            "peak_mem_bytes": peak, "scoring": "likelihood", "acc": pick == question.gold,
            "acc_norm": pick_norm == question.gold, "prediction_norm": question.letters[pick_norm],
            "loglikelihoods": [round(lp, 6) for lp in logprobs], "option_tokens": [s.tokens for s in scores],
            "greedy": [s.greedy for s in scores],
        })
    return records


def _run_config(options: RunOptions) -> dict[str, Any]:
    """What of ``options`` changes the records (the configuration a resumed evaluation must match):
    the keys of earlier versions, and ``tool_choice`` / a whole ``generation`` only when set."""
    decoding = options.decoding_overrides()
    if "stop" in decoding:
        decoding["stop"] = list(decoding["stop"])
    config: dict[str, Any] = {"rounds": options.rounds, "latent_steps": options.latent_steps, "generation": decoding,
                              "text_message_tokens": options.text_message_tokens}
    if options.generation is not None:
        config["generation_options"] = options.record()["generation"]
    if options.tool_choice != "auto":
        config["tool_choice"] = options.tool_choice
    return config
