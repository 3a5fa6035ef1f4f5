"""How a system thinks and decodes: one frozen :class:`RunOptions`, from the caller to the pass runner.

Every layer that runs a system takes the same object: :meth:`RecursiveSystem.run
<recmas_graph.runtime.RecursiveSystem.run>`, ``answer_loss`` / ``target_losses``,
:func:`recmas_graph.evaluate`, :func:`recmas_graph.compare`, the lm-eval adapter, training
objectives and the CLI (whose ``run``, ``eval`` and ``compare`` options are generated from
:data:`RUN_OPTION_FIELDS`). Each also takes the same names as keywords, merged on top with
:meth:`RunOptions.of`, so ``system.run(qs, greedy=True, max_new_tokens=32)`` keeps working.

Decoding fields left ``None`` take the topology's settings for the task (and dataset), then the
reference's defaults (:func:`resolve_generation`); ``generation`` gives a whole
:class:`~.decoding.GenerationOptions` instead, with the flat fields still on top.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from ..errors import RunError
from ..topology.spec import TASK_TYPES, SettingsSpec

if TYPE_CHECKING:  # pragma: no cover - decoding imports torch; options are built before any model loads
    from .agent.decoding import GenerationOptions

__all__ = ["RunOptions", "RUN_OPTION_FIELDS", "DECODING_FIELDS", "TOOL_CHOICES", "resolve_generation"]

#: The decoding fields: :class:`~.decoding.GenerationOptions`' own, plus ``greedy`` (``do_sample=False``).
DECODING_FIELDS: tuple[str, ...] = ("greedy", "max_new_tokens", "temperature", "top_p", "top_k", "min_p",
                                    "repetition_penalty", "stop")
_GENERATION_FIELDS = tuple(f for f in DECODING_FIELDS if f != "greedy")

#: ``tool_choice`` values: the model decides, or the output agent's answer opens with a tool call.
TOOL_CHOICES: tuple[str, ...] = ("auto", "required")


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How one run of a system thinks and decodes (frozen; build a changed copy with :meth:`replace`).

    ``task`` picks the prompts and, with ``dataset``, the topology's settings; ``rounds`` and
    ``latent_steps`` default to the topology's. ``seed`` seeds question ``i``'s sampling with
    ``seed + i``. ``text_message_tokens`` bounds each text message (text edges); ``tool_choice``
    ``"required"`` opens the answer with a call of the output agent's first tool; ``reuse_prefix``
    starts a prefill from the KV cache of a prefix an earlier pass computed; ``use_cache`` keeps a
    KV cache across latent steps (``False`` recomputes, for checks).
    """

    task: str = "math"
    dataset: str | None = None
    rounds: int | None = None
    latent_steps: int | None = None
    generation: GenerationOptions | None = None
    greedy: bool | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = 0
    text_message_tokens: int = 256
    tool_choice: str = "auto"
    reuse_prefix: bool = True
    use_cache: bool = True
    #: Decoding fields given explicitly as ``None``: the model's ``generation_config`` decides them
    #: (as ``GenerationOptions(top_p=None)`` says), not the topology's settings or the reference's.
    model_default: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TASK_TYPES:
            raise RunError(f"unknown task type {self.task!r}", culprit="task", hint=f"use one of {', '.join(TASK_TYPES)}")
        if self.tool_choice not in TOOL_CHOICES:
            raise RunError(f"unknown tool_choice {self.tool_choice!r}", culprit="tool_choice",
                           hint=f"use one of {', '.join(map(repr, TOOL_CHOICES))}")
        for name, low in (("rounds", 1), ("latent_steps", 0), ("text_message_tokens", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise RunError(f"{name} must be an integer >= {low}, got {value!r}", culprit=name)
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif self.stop is not None:
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.generation is not None and type(self.generation).__name__ != "GenerationOptions":
            raise RunError(f"generation must be a GenerationOptions, got {type(self.generation).__name__}",
                           culprit="generation", hint="or give the decoding fields (greedy=..., max_new_tokens=...)")
        self._check_decoding()

    @classmethod
    def of(cls, options: "RunOptions | None" = None, /, **overrides: Any) -> "RunOptions":
        """``options`` (default: the defaults) with ``overrides`` on top. ``None`` means "not given",
        except for a decoding field (``top_p=None``): the model's generation config decides it
        (:attr:`model_default`), as ``GenerationOptions`` says; ``do_sample`` is read as ``greedy``.

        A mapping given as ``generation`` (``{"greedy": True, "max_new_tokens": 8}``) is read as
        those decoding fields. An unknown name is refused with the list of known ones.
        """
        base = options if options is not None else cls()
        if not isinstance(base, RunOptions):
            raise RunError(f"options must be a RunOptions, got {type(base).__name__}", culprit="options",
                           hint="build one with recmas_graph.RunOptions(...)")
        changes = dict(overrides)
        generation = changes.get("generation")
        if isinstance(generation, Mapping):
            del changes["generation"]
            changes = {**dict(generation), **changes}
        if "do_sample" in changes:  # GenerationOptions' own spelling of greedy
            sample = changes.pop("do_sample")
            changes.setdefault("greedy", None if sample is None else not sample)
        known = {f.name for f in fields(cls)} - {"model_default"}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise RunError(f"unknown run option(s) {', '.join(unknown)}", culprit="run options",
                           hint=f"run options: {', '.join(sorted(known))}")
        # an explicit None for a decoding field means the model's generation config decides it (as in
        # GenerationOptions); other None values mean "not given"; a value given now wins over an earlier None
        cleared = {k for k in _GENERATION_FIELDS if k != "stop" and k in changes and changes[k] is None}
        changes = {k: v for k, v in changes.items() if v is not None}
        model_default = (set(base.model_default) - set(changes)) | cleared
        if model_default != set(base.model_default):
            changes["model_default"] = tuple(sorted(model_default))
        return replace(base, **changes) if changes else base

    def replace(self, **changes: Any) -> "RunOptions":
        """A copy with some fields changed (validated; ``None`` resets a field to unset)."""
        return replace(self, **changes)

    def decoding_overrides(self) -> dict[str, Any]:
        """The decoding fields that were set, as keywords (``greedy`` included; a field in
        :attr:`model_default` as ``None``: the model's generation config)."""
        found = {name: getattr(self, name) for name in DECODING_FIELDS if getattr(self, name) is not None}
        return {**{name: None for name in self.model_default}, **found}

    def _check_decoding(self) -> None:
        from .agent.decoding import GenerationOptions

        given = {k: v for k, v in self.decoding_overrides().items() if k != "greedy" and v is not None}
        if given:
            GenerationOptions(**given)

    def resolve_generation(self, settings: SettingsSpec | None = None) -> GenerationOptions:
        """The decoding this run uses: ``generation`` (default: ``settings`` over the reference's),
        with the decoding fields that were set on top."""
        return resolve_generation(self.generation, self.decoding_overrides(), settings)

    def record(self) -> dict[str, Any]:
        """The options as plain JSON values (for records and configurations)."""
        out = asdict(self)
        if self.generation is not None:
            out["generation"] = asdict(self.generation)
            out["generation"]["stop"] = list(self.generation.stop)
        if self.stop is not None:
            out["stop"] = list(self.stop)
        return out


#: The fields of :class:`RunOptions` a command line sets (``generation``, ``dataset`` and
#: ``model_default`` come otherwise).
RUN_OPTION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RunOptions)
                                           if f.name not in ("generation", "dataset", "model_default"))


def resolve_generation(generation: GenerationOptions | None, overrides: Mapping[str, Any],
                       settings: SettingsSpec | None = None) -> GenerationOptions:
    """``generation`` (default: the reference's, with the topology's ``settings`` for the task on top)
    with keyword overrides; ``greedy=True`` turns sampling off."""
    from .agent.decoding import GenerationOptions

    if generation is None:
        chosen = {k: v for k, v in (settings.model_dump(exclude_none=True) if settings else {}).items()
                  if k in _GENERATION_FIELDS}
        generation = GenerationOptions(**chosen)
    changes = dict(overrides)
    if "greedy" in changes:
        changes["do_sample"] = not changes.pop("greedy")
    unknown = sorted(set(changes) - set(_GENERATION_FIELDS) - {"do_sample"})
    if unknown:
        raise RunError(f"unknown option(s) {', '.join(unknown)}", culprit="run()",
                       hint=f"generation options: {', '.join(DECODING_FIELDS)}")
    return generation.replace(**changes) if changes else generation
