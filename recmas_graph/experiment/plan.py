"""From an experiment file to its stages: every check that needs no weights, then the keyed stages.

:func:`plan_experiment` resolves the experiment against the registry before any model loads:
each system's topology compiles (an unknown name is named with its field), the training data is
made in memory and fingerprinted, the evaluation dataset and its questions are selected and
fingerprinted, the baselines and the reference are found, the run options validate. Then, per
system and seed, the chain ``calibrate -> inner -> outer -> eval`` (stages whose recipe says 0 steps
are left out), one ``eval`` per baseline row, and one shared ``data`` stage, each with its key
(:func:`~.stages.stage_key`) over exactly what it depends on:

- the **source** of a system (not a stage: what its first stage starts from): its topology spec
  JSON (description left out), the sha256 of each link-weights file it names, the build override
  (``models``, ``device``, ``dtype``) and the seed;
- ``data``: the dataset, split, limit, skip and answer format (a JSONL file: its sha256);
- ``calibrate``: the source, the data fingerprint (sha256 of the samples), the number of texts, the
  tokens per text, the seed;
- ``inner`` / ``outer``: the key of the stage before it (or the source), the data fingerprint, the
  steps and the optimiser fields of the recipe, the held-out share, the seed; the outer loop also the
  task, rounds, latent steps, intermediate target weights and gradient checkpointing; the inner loop
  its tokens per target text;
- ``eval``: the key of the last training stage (or the source), the baseline made from it, the
  dataset, split, limit, task, scoring and a fingerprint of the selected questions, the run options,
  rounds, latent steps and the seed.

A changed system therefore changes its own keys only; another system's stages are reused.
:func:`estimate_seconds` is the rough cost of a stage (below), for ``--dry-run``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RecmasError, RunError, SpecError
from ..topology.compile import CompiledTopology
from ..topology.spec import TopologySpec, dump_topology
from .spec import ExperimentSpec, Recipe, effective_recipe, parse_experiment, read_experiment
from .stages import Stage, StageStore, canonical_json, file_sha256, stage_key

__all__ = ["Row", "Plan", "plan_experiment", "estimate_seconds", "BASELINE_NAMES", "COST_MODEL"]

#: The baselines a row ``T:NAME`` may name (those of ``recmas compare``).
BASELINE_NAMES: tuple[str, ...] = ("single", "text")

#: The rough cost model of ``--dry-run`` (seconds on 2 CPU cores with the packaged ~135-270M models;
#: measured figures in docs/training.md and docs/evaluation.md): an agent's pass over one question
#: when evaluating (``pass_s``), the same pass in the outer loop with its backward (``train_pass_s``),
#: one text through one model when calibrating (``text_s``), loading the models of a stage (``load_s``).
COST_MODEL: dict[str, float] = {"pass_s": 0.4, "train_pass_s": 1.2, "text_s": 0.12, "load_s": 10.0}


@dataclass(frozen=True)
class Row:
    """A row of the report: a system of the experiment or a baseline; its stages per seed."""

    label: str
    kind: str  # "system" or "baseline"
    topology: str  # the topology's name
    ref: str  # what the experiment file gave (a name, a file, "inline"; a baseline: "T:NAME")
    recipe: dict[str, Any] | None
    overrides: dict[str, Any]
    baseline: str | None = None
    of: str | None = None  # a baseline's system label, or its topology reference
    trains: dict[int, tuple[str, ...]] = field(default_factory=dict)  # seed -> its training stages' keys
    evals: dict[int, str] = field(default_factory=dict)  # seed -> its eval stage's key


@dataclass
class Plan:
    """An experiment resolved: its rows, its stages (in an order that runs each after its deps), the
    build override, the reference row, the folder."""

    spec: ExperimentSpec
    out: Path
    rows: list[Row]
    stages: list[Stage]
    build: dict[str, Any]
    reference: str
    eval_questions: int
    scoring: str

    @property
    def store(self) -> StageStore:
        """The stage folders of ``out``."""
        return StageStore(self.out)

    def stage(self, key: str) -> Stage:
        """The stage with ``key``."""
        return next(s for s in self.stages if s.key == key)

    def statuses(self) -> dict[str, str]:
        """Stage key -> ``done`` / ``partial`` / ``todo`` (see :meth:`StageStore.status`)."""
        store = self.store
        return {s.key: store.status(s) for s in self.stages}

    def row(self, label: str) -> Row:
        """The row called ``label``."""
        return next(r for r in self.rows if r.label == label)


# ---------------------------------------------------------------------------------------- helpers


def _source(compiled: CompiledTopology, build: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the source's key hashes, what a runner needs to compile it again)."""
    spec = compiled.spec
    text = dump_topology(spec)
    plain = spec.model_copy(update={"description": ""}).model_dump(mode="json")
    weights: dict[str, str] = {}
    links = [a.inner_link for a in spec.agents] + [e.link for e in spec.edges]
    for link in links:
        ref = link.weights_file
        if ref is None:
            continue
        path = Path(ref) if Path(ref).is_absolute() or compiled.base_dir is None else compiled.base_dir / ref
        weights[ref] = _weights_hash(path)
    inputs = {"topology": plain, "weights": weights, "build": dict(build), "seed": seed}
    params = {"spec": text, "base_dir": str(compiled.base_dir) if compiled.base_dir is not None else None}
    return inputs, params


def _weights_hash(path: Path) -> str:
    """The sha256 of a weights file, or of every file of a weights folder (by relative name)."""
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{item.relative_to(path)}\0{file_sha256(item)}\0".encode())
        return digest.hexdigest()
    return "missing"  # the build names it; a key cannot say more


def _shape(spec: TopologySpec, recipe: Recipe | None, baseline: str | None) -> dict[str, int]:
    rounds = (recipe.rounds if recipe and recipe.rounds else None) or spec.rounds
    agents = len(spec.agents)
    if baseline == "single":
        rounds, agents = 1, 1
    return {"agents": agents, "models": len({a.model for a in spec.agents}), "rounds": rounds,
            "passes": rounds * agents}


def _compile(ref: str | dict[str, Any], registry: Any, where: str) -> CompiledTopology:
    try:
        return registry.compile(ref)
    except RecmasError as err:
        name = ref if isinstance(ref, str) else "the inline topology"
        raise SpecError(f"{name!r}: {err.message}" if isinstance(ref, str) else f"{name}: {err.message}",
                        culprit=where, hint=err.hint or "give a registered topology name (recmas topologies) or a "
                                                        "topology JSON file") from None


def _train_samples(spec: ExperimentSpec, registry: Any) -> tuple[list[Any], dict[str, Any], str]:
    """The training samples, what the data stage's key hashes, and the data fingerprint."""
    from ..train.data import make_train_data, read_train_data

    train = spec.train
    assert train is not None
    path = Path(train.dataset)
    try:
        if path.suffix == ".jsonl":
            samples = read_train_data(path, limit=train.skip + train.limit)[train.skip:]
            if len(samples) < train.limit:
                raise RunError(f"{path} has {len(samples) + train.skip} samples, fewer than the "
                               f"{train.skip + train.limit} asked for", culprit="train.limit",
                               hint="ask for fewer samples")
            inputs: dict[str, Any] = {"file": file_sha256(path), "limit": train.limit, "skip": train.skip}
        else:
            samples, _ = make_train_data(train.dataset, registry, train=train.limit, skip=train.skip,
                                         split=train.split, answers=train.answers)
            inputs = {"dataset": train.dataset, "split": train.split, "limit": train.limit, "skip": train.skip,
                      "answers": train.answers}
    except RecmasError as err:
        culprit = err.culprit if (err.culprit or "").startswith("train.") else "train.dataset"
        raise SpecError(f"{train.dataset!r}: {err.message}", culprit=culprit, hint=err.hint) from None
    rows = [[s.id, s.question, s.answer, sorted(s.targets.items())] for s in samples]
    fingerprint = hashlib.sha256(canonical_json(rows).encode("utf-8")).hexdigest()
    return samples, inputs, fingerprint


def _train_task(spec: ExperimentSpec, registry: Any) -> str:
    from ..eval.datasets import resolve_dataset

    train = spec.train
    assert train is not None
    if train.task is not None:
        return train.task
    if Path(train.dataset).suffix == ".jsonl":
        return "math"
    return resolve_dataset(train.dataset, registry, split=train.split).task


def _eval_setup(spec: ExperimentSpec, registry: Any) -> tuple[dict[str, Any], str, dict[str, Any], int]:
    """(the dataset's part of an eval key, the scoring, the run options record, the question count)."""
    from ..eval.datasets import resolve_dataset, select_samples
    from ..eval.likelihood import resolve_scoring
    from ..runtime.options import RunOptions

    section = spec.eval
    try:
        data = resolve_dataset(section.dataset, registry, split=section.split, task=section.task)
        chosen = select_samples(data, limit=section.limit)
    except RecmasError as err:
        raise SpecError(f"{section.dataset!r}: {err.message}", culprit="eval.dataset", hint=err.hint) from None
    if not chosen:
        raise SpecError(f"{section.dataset!r} has no questions", culprit="eval.dataset")
    try:
        scoring = resolve_scoring(section.scoring, data)
    except RecmasError as err:
        raise SpecError(err.message, culprit="eval.scoring", hint=err.hint) from None
    ruled = sorted(set(section.options) & {"task", "seed", "rounds", "latent_steps", "dataset"})
    if ruled:
        raise SpecError(f"{ruled[0]} is not an evaluation option here", culprit=f"eval.options.{ruled[0]}",
                        hint="the recipe says rounds and latent_steps, the dataset its task, seeds the seed")
    try:
        options = RunOptions.of(**section.options)
    except RecmasError as err:
        raise SpecError(err.message, culprit=f"eval.options.{err.culprit}" if err.culprit in section.options
                        else "eval.options", hint=err.hint) from None
    digest = hashlib.sha256(canonical_json([[s.id, s.question, s.gold, s.task] for s in chosen]).encode())
    dataset = {"name": data.name, "split": section.split, "limit": section.limit, "task": section.task,
               "questions": digest.hexdigest()}
    record = {k: v for k, v in options.record().items() if k not in ("task", "dataset", "seed")}
    return dataset, scoring, record, len(chosen)


def _check_recipe(compiled: CompiledTopology, recipe: Recipe, where: str) -> None:
    spec = compiled.spec
    agents = {a.name for a in spec.agents}
    for agent in recipe.target_weights:
        if agent not in agents:
            raise SpecError(f"the topology {spec.name!r} has no agent {agent!r}", culprit=f"{where}.target_weights",
                            hint=f"its agents: {', '.join(sorted(agents))}")
    if recipe.outer_steps and not any(e.medium == "latent" for e in spec.edges):
        raise SpecError(f"the topology {spec.name!r} has no latent edge: no outer link to train",
                        culprit=f"{where}.outer_steps", hint="set outer_steps to 0 for this system (its recipe)")


# ------------------------------------------------------------------------------------------ plan


def plan_experiment(experiment: ExperimentSpec | Mapping[str, Any] | str | Path, *, out: str | Path,
                    registry: Any, models: str | None = None, device: Any = None,
                    dtype: str | None = None) -> Plan:
    """Resolve ``experiment`` (a spec, a dict or a JSON file) against ``registry`` and key its stages
    for the folder ``out``; see the module docstring. Loads no weights."""
    from ..runtime.system import check_models

    if isinstance(experiment, (str, Path)):
        spec = read_experiment(experiment)
    else:
        spec = parse_experiment(experiment)
    check_models(models)
    build = {"models": models, "device": device, "dtype": dtype}
    # the systems, their labels and recipes
    systems: list[tuple[str, CompiledTopology, Recipe, dict[str, Any], str]] = []
    labels: dict[str, str] = {}
    for i, entry in enumerate(spec.systems):
        compiled = _compile(entry.topology, registry, f"systems[{i}].topology")
        label = entry.label or compiled.spec.name
        if label in labels:
            raise SpecError(f"two systems are called {label!r} ({labels[label]} and systems[{i}])",
                            culprit=f"systems[{i}].label", hint="give each system its own label")
        if ":" in label and label.rpartition(":")[2] in BASELINE_NAMES:
            raise SpecError(f"the label {label!r} reads as a baseline", culprit=f"systems[{i}].label",
                            hint="choose a label without ':single' / ':text'")
        labels[label] = f"systems[{i}]"
        recipe, changed = effective_recipe(spec, entry)
        _check_recipe(compiled, recipe, f"systems[{i}].recipe" if changed else "recipe")
        ref = entry.topology if isinstance(entry.topology, str) else "inline"
        systems.append((label, compiled, recipe, changed, ref))
    # training data (in memory: its fingerprint is part of the keys)
    needs_data = [label for label, _, r, _, _ in systems if r.calibrate or r.inner_steps or r.outer_steps]
    data_stage: Stage | None = None
    fingerprint = ""
    task = "math"
    n_samples = 0
    if needs_data:
        if spec.train is None:
            raise SpecError(f"the recipe of {needs_data[0]!r} calibrates or trains, and no training data is given",
                            culprit="train", hint='add "train": {"dataset": "arc_easy_val", "limit": 256, ...}, or '
                                                  'set calibrate false and the steps to 0')
        samples, data_inputs, fingerprint = _train_samples(spec, registry)
        n_samples = len(samples)
        task = _train_task(spec, registry)
        key = stage_key("data", data_inputs)
        data_stage = Stage("data", key, None, None, (), data_inputs,
                           {"samples": [[s.id, s.question, s.answer, s.targets] for s in samples]})
    dataset, scoring, run_record, questions = _eval_setup(spec, registry)
    heldout = spec.train.heldout if spec.train is not None else 0.0
    stages: dict[str, Stage] = {}
    if data_stage is not None:
        stages[data_stage.key] = data_stage
    rows: list[Row] = []
    last: dict[tuple[str, int], tuple[str | None, dict[str, Any], dict[str, Any]]] = {}

    def add(stage: Stage) -> Stage:
        stages.setdefault(stage.key, stage)
        return stage

    def eval_stage(label: str, seed: int, after: str | None, src: tuple[dict[str, Any], dict[str, Any]] | None,
                   recipe: Recipe | None, baseline: str | None, shape: dict[str, int]) -> Stage:
        rounds = None if baseline == "single" or recipe is None else recipe.rounds
        latent = None if recipe is None else recipe.latent_steps
        inputs = {"after": after, "source": src[0] if after is None and src else None, "baseline": baseline,
                  "dataset": dataset, "scoring": scoring, "options": run_record, "rounds": rounds,
                  "latent_steps": latent, "seed": seed}
        params = {"input": {"stage": stages[after].name} if after else {"source": src[1] if src else None},
                  "build": build, "baseline": baseline, "dataset": spec.eval.dataset, "split": spec.eval.split,
                  "limit": spec.eval.limit, "task": spec.eval.task, "scoring": scoring,
                  "batch_size": spec.eval.batch_size, "options": dict(spec.eval.options), "rounds": rounds,
                  "latent_steps": latent, "seed": seed, "shape": shape, "questions": questions}
        return add(Stage("eval", stage_key("eval", inputs), label, seed, (after,) if after else (), inputs, params))

    for label, compiled, recipe, changed, ref in systems:
        row = Row(label, "system", compiled.spec.name, ref, recipe.model_dump(), changed)
        shape = _shape(compiled.spec, recipe, None)
        for seed in spec.seeds:
            src = _source(compiled, build, seed)
            after: str | None = None
            chain: list[str] = []
            optim = {k: getattr(recipe, k) for k in ("batch_size", "accumulate", "lr", "warmup", "weight_decay",
                                                       "grad_clip")}
            if recipe.calibrate:
                assert data_stage is not None
                inputs = {"source": src[0], "data": fingerprint, "texts": recipe.calibrate_texts,
                          "max_tokens": recipe.max_tokens, "seed": seed}
                params = {"input": {"source": src[1]}, "build": build, "data": data_stage.name,
                          "texts": recipe.calibrate_texts, "max_tokens": recipe.max_tokens, "seed": seed, "shape": shape}
                stage = add(Stage("calibrate", stage_key("calibrate", inputs), label, seed, (data_stage.key,), inputs,
                                  params))
                after = stage.key
                chain.append(stage.key)
            for kind, steps in (("inner", recipe.inner_steps), ("outer", recipe.outer_steps)):
                if not steps:
                    continue
                assert data_stage is not None
                every = recipe.eval_every or steps
                inputs = {"after": after, "source": None if after else src[0], "data": fingerprint, "steps": steps,
                          "optimizer": optim, "eval_every": every, "heldout": heldout, "seed": seed}
                if kind == "inner":
                    inputs["max_tokens"] = recipe.max_tokens
                else:
                    inputs.update(task=task, rounds=recipe.rounds, latent_steps=recipe.latent_steps,
                                  target_weights=dict(sorted(recipe.target_weights.items())),
                                  gradient_checkpointing=recipe.gradient_checkpointing)
                params = {"input": {"stage": stages[after].name} if after else {"source": src[1]}, "build": build,
                          "data": data_stage.name, "steps": steps, "optimizer": optim, "eval_every": every,
                          "save_every": recipe.save_every, "heldout": heldout, "seed": seed, "task": task,
                          "rounds": recipe.rounds, "latent_steps": recipe.latent_steps,
                          "max_tokens": recipe.max_tokens, "target_weights": dict(recipe.target_weights),
                          "gradient_checkpointing": recipe.gradient_checkpointing, "shape": shape,
                          "train_samples": n_samples, "workers": recipe.workers}
                deps = tuple(k for k in (after, data_stage.key) if k)
                stage = add(Stage(kind, stage_key(kind, inputs), label, seed, deps, inputs, params))
                after = stage.key
                chain.append(stage.key)
            row.trains[seed] = tuple(chain)
            row.evals[seed] = eval_stage(label, seed, after, src, recipe, None, shape).key
            last[(label, seed)] = (after, *src)
        rows.append(row)
    # baselines
    recipes = {label: recipe for label, _, recipe, _, _ in systems}
    compiled_of = {label: compiled for label, compiled, _, _, _ in systems}
    for i, item in enumerate(spec.eval.baselines):
        base, _, name = item.rpartition(":")
        where = f"eval.baselines[{i}]"
        if not base or name not in BASELINE_NAMES:
            raise SpecError(f"{item!r} is not a baseline", culprit=where,
                            hint="write 'T:single' or 'T:text' with T a system label or a topology")
        if item in labels or any(r.label == item for r in rows):
            raise SpecError(f"{item!r} is listed twice", culprit=where)
        if base in compiled_of:
            of_compiled, recipe_b = compiled_of[base], recipes[base]
        else:
            of_compiled, recipe_b = _compile(base, registry, where), spec.recipe
        row = Row(item, "baseline", of_compiled.spec.name, item, None, {}, baseline=name, of=base)
        shape = _shape(of_compiled.spec, recipe_b, name)
        for seed in spec.seeds:
            if base in compiled_of:
                after, src_inputs, src_params = last[(base, seed)]
                src = (src_inputs, src_params)
            else:
                after, src = None, _source(of_compiled, build, seed)
            row.evals[seed] = eval_stage(item, seed, after, src, recipe_b, name, shape).key
        rows.append(row)
    labels_all = [r.label for r in rows]
    reference = spec.eval.reference or rows[0].label
    if reference not in labels_all:
        raise SpecError(f"no row is called {reference!r}", culprit="eval.reference",
                        hint=f"use one of: {', '.join(labels_all)}")
    return Plan(spec, Path(out), rows, list(stages.values()), build, reference, questions, scoring)


def estimate_seconds(stage: Stage, model: Mapping[str, float] = COST_MODEL) -> float:
    """A rough cost of ``stage`` in seconds (:data:`COST_MODEL`): calibration texts x models, training
    steps x batch x agent passes (rounds x agents; inner: agents), validation passes, evaluation
    questions x passes (generation: x3), plus loading the models."""
    p = stage.params
    shape = p.get("shape") or {}
    passes = float(shape.get("passes", 1))
    if stage.kind == "data":
        return 0.0
    if stage.kind == "calibrate":
        return model["load_s"] + p["texts"] * shape.get("models", 1) * model["text_s"]
    if stage.kind in ("inner", "outer"):
        opt = p["optimizer"]
        samples = opt["batch_size"] * opt["accumulate"]
        n = int(p.get("train_samples") or 0)
        per = passes if stage.kind == "outer" else float(shape.get("agents", 1))
        cost = p["steps"] * samples * per * (model["train_pass_s"] if stage.kind == "outer" else model["pass_s"])
        validations = max(1, p["steps"] // max(p["eval_every"], 1))
        held = n * p["heldout"] if n else samples  # validation: roughly a batch when the size is unknown here
        return model["load_s"] + cost + validations * held * per * model["pass_s"]
    factor = 1.0 if p["scoring"] == "likelihood" else 3.0
    return model["load_s"] + p["questions"] * passes * model["pass_s"] * factor
