"""Running one stage of an experiment into its folder (in this process or a Ray worker).

:func:`run_stage` reuses a finished stage, else works in ``<kind>-<key16>.partial/`` and finishes it
atomically (:class:`~.stages.StageStore`). Each kind calls the library as its command does:

- ``data``: the training samples, written as ``train.jsonl`` (``recmas data make``);
- ``calibrate``: :func:`~recmas_graph.train.calibration.calibrate` on the first texts of the data
  (``recmas calibrate --corpus``; a killed calibration starts again, it takes a minute or two);
- ``inner`` / ``outer``: :func:`~recmas_graph.train.run.train_links` (``recmas train``), resumed from
  the last checkpoint of a killed run; the checkpoints are dropped once the stage is finished;
- ``eval``: :func:`~recmas_graph.eval.evaluate` into ``eval/`` (resumed record by record), and
  ``questions.jsonl``: per question whether it is right (``acc``, ``acc_norm``) and the gold
  option's negative log-likelihood per token when scored by likelihood.

Every stage seeds Python's and torch's generators with its seed first, so its result does not
depend on what ran before it in the process.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..topology.compile import CompiledTopology, compile_topology
from ..topology.spec import parse_topology
from .stages import Stage, StageStore

__all__ = ["run_stage", "question_rows"]

#: Where a stage reports how it goes: one line of text at a time.
Note = Callable[[str], None]


def _quiet(text: str) -> None:
    """No one listens."""


def _seed(seed: int | None) -> None:
    import torch

    random.seed(seed or 0)
    torch.manual_seed(seed or 0)


def _input(stage: Stage, store: StageStore, registry: Any) -> tuple[CompiledTopology, dict[str, Any]]:
    """The topology a stage starts from (the stage before it, or the system's source) and its build keywords."""
    from ..runtime.pretrained import read_config

    params = stage.params
    build = dict(params["build"])
    given = params["input"]
    if given.get("stage"):
        folder = store.final(given["stage"])
        compiled = registry.compile(folder / "topology.json")
        how = {"device": build.get("device"), "dtype": build.get("dtype") or read_config(folder).get("dtype")}
    else:
        source = given["source"]
        compiled = compile_topology(parse_topology(json.loads(source["spec"])), registry, base_dir=source["base_dir"])
        how = {k: build.get(k) for k in ("models", "device", "dtype")}
    how["seed"] = int(params["seed"])
    return compiled, how


def _data(stage: Stage, work: Path, store: StageStore, registry: Any, cache: Any, note: Note) -> dict[str, Any]:
    from ..train.data import TrainSample, write_train_data

    samples = [TrainSample(str(i), q, a, dict(t)) for i, q, a, t in stage.params["samples"]]
    write_train_data(samples, work / "train.jsonl")
    return {"samples": len(samples)}


def _calibrate(stage: Stage, work: Path, store: StageStore, registry: Any, cache: Any, note: Note) -> dict[str, Any]:
    from ..train.calibration import calibrate
    from ..train.corpus import corpus_from_file

    p = stage.params
    compiled, how = _input(stage, store, registry)
    for old in work.iterdir():  # a calibration cut short starts again
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    system = compiled.build(**how, model_cache=cache)
    texts = corpus_from_file(store.final(p["data"]) / "train.jsonl", limit=int(p["texts"]))
    report = calibrate(system, texts, out=work, seed=int(p["seed"]), max_tokens=int(p["max_tokens"]))
    return {"texts": report.texts, "links": [{"kind": f.kind, "name": f.name, "pairs": f.pairs,
                                              "loss_before": f.loss_before, "loss_after": f.loss_after}
                                             for f in report.links]}


def _train(stage: Stage, work: Path, store: StageStore, registry: Any, cache: Any, note: Note) -> dict[str, Any]:
    from ..train.data import read_train_data
    from ..train.loop import TrainConfig
    from ..train.run import train_links

    p = stage.params
    compiled, how = _input(stage, store, registry)
    system = compiled.build(**how, model_cache=cache)
    samples = read_train_data(store.final(p["data"]) / "train.jsonl")
    opt = p["optimizer"]
    config = TrainConfig(steps=int(p["steps"]), batch_size=opt["batch_size"], accumulate=opt["accumulate"],
                         lr=opt["lr"], warmup=opt["warmup"], weight_decay=opt["weight_decay"],
                         grad_clip=opt["grad_clip"], eval_every=int(p["eval_every"]), save_every=int(p["save_every"]),
                         seed=int(p["seed"]))
    checkpoints = work / "checkpoints"
    resume = checkpoints.is_dir() and any(checkpoints.glob("step_*.pt"))
    outer = stage.kind == "outer"
    report = train_links(system, stage.kind, samples, work, config, heldout=float(p["heldout"]), resume=resume,
                         task=p["task"], rounds=p["rounds"] if outer else None,
                         latent_steps=p["latent_steps"] if outer else None, max_tokens=int(p["max_tokens"]),
                         target_weights=p["target_weights"] if outer else None,
                         gradient_checkpointing=bool(p["gradient_checkpointing"]) and outer,
                         workers=int(p.get("workers", 1)),
                         progress=lambda i: note(f"step {i.step}/{i.steps}: loss {i.loss:.4f}"
                                                 + ("" if i.val_loss is None else f", validation {i.val_loss:.4f}")))
    return {"steps": report.steps, "first_loss": report.first_loss, "last_loss": report.last_loss,
            "val_loss": report.val_loss, "resumed_from": report.resumed_from}


def question_rows(records: Sequence[Mapping[str, Any]], gold: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per record: its id, whether it is right (and by ``acc_norm``), its tokens and, when the options
    were scored, the gold option's negative log-likelihood per token (``gold``: id -> gold option)."""
    rows = []
    for r in records:
        row: dict[str, Any] = {"id": str(r["id"]), "correct": bool(r["correct"]),
                               "generated_tokens": int(r.get("generated_tokens", 0)),
                               "latent_steps": int(r.get("latent_steps", 0)), "wall_s": float(r.get("wall_s", 0.0))}
        if "acc_norm" in r:
            row["acc_norm"] = bool(r["acc_norm"])
        index = gold.get(str(r["id"]).split("#")[0])
        if r.get("loglikelihoods") and index is not None:
            tokens = max(int(r["option_tokens"][index]), 1)
            row["answer_nll"] = -float(r["loglikelihoods"][index]) / tokens
        rows.append(row)
    return rows


def _eval(stage: Stage, work: Path, store: StageStore, registry: Any, cache: Any, note: Note) -> dict[str, Any]:
    from ..eval.baselines import baseline
    from ..eval.datasets import resolve_dataset, select_samples
    from ..eval.evaluate import evaluate
    from ..eval.likelihood import choice_question
    from ..runtime.options import RunOptions

    p = stage.params
    compiled, how = _input(stage, store, registry)
    if p["baseline"]:
        compiled = compile_topology(baseline(compiled.spec, p["baseline"]), registry, base_dir=compiled.base_dir)
    build = {**how, **({"model_cache": cache} if cache is not None else {})}
    report = evaluate(compiled, p["dataset"], out=work / "eval", registry=registry, limit=p["limit"], split=p["split"],
                      task=p["task"], seed=int(p["seed"]), batch_size=int(p["batch_size"]), scoring=p["scoring"],
                      build=build, options=RunOptions.of(**p["options"]), rounds=p["rounds"],
                      latent_steps=p["latent_steps"],
                      progress=lambda e: note(e.stage or f"{e.done}/{e.total} questions, {e.correct} right"))
    gold: dict[str, int] = {}
    if p["scoring"] == "likelihood":
        data = resolve_dataset(p["dataset"], registry, split=p["split"], task=p["task"])
        gold = {s.id: choice_question(s).gold for s in select_samples(data, limit=p["limit"])}
    rows = question_rows(report.records, gold)
    with (work / "questions.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    s = report.summary
    nll = [r["answer_nll"] for r in rows if "answer_nll" in r]
    return {"accuracy": s["accuracy"], "acc_norm": s.get("acc_norm"), "answer_nll": sum(nll) / len(nll) if nll else None,
            "n": s["n"], "scoring": s.get("scoring"), "generated_tokens": s["generated_tokens"],
            "latent_steps": s["latent_steps"], "eval_wall_s": s["wall_s"], "per_sample_s": s["per_sample_s"]}


_RUNNERS: dict[str, Callable[[Stage, Path, StageStore, Any, Any, Note], dict[str, Any]]] = {
    "data": _data, "calibrate": _calibrate, "inner": _train, "outer": _train, "eval": _eval}

#: What a finished stage drops from its folder (only a killed run needs it).
_SCRATCH: dict[str, tuple[str, ...]] = {"inner": ("checkpoints",), "outer": ("checkpoints",)}


def run_stage(stage: Stage, root: str | Path, registry: Any, *, model_cache: Any = None,
              progress: Note | None = None) -> dict[str, Any]:
    """Run ``stage`` into ``root/stages/`` (a finished one is reused) and return its result (what its
    ``done.json`` holds under ``result``). ``model_cache`` shares loaded models between stages;
    ``progress`` receives a line of text as the stage goes (a training step, a batch of questions)."""
    store = StageStore(root)
    if store.status(stage) == "done":
        return dict(store.record(stage)["result"])
    if store.finished_in_partial(stage):  # stopped between its marker and the rename
        store.settle(stage, drop=_SCRATCH.get(stage.kind, ()))
        return dict(store.record(stage)["result"])
    work = store.begin(stage)
    _seed(stage.seed)
    start = time.perf_counter()
    result = _RUNNERS[stage.kind](stage, work, store, registry, model_cache, progress or _quiet)
    result["wall_s"] = round(time.perf_counter() - start, 3)
    store.finish(stage, result, drop=_SCRATCH.get(stage.kind, ()))
    return result
