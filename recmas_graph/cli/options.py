"""The options every command that runs a system shares, declared once.

:func:`with_run_options` adds the :class:`~recmas_graph.runtime.options.RunOptions` flags
(``--task``, ``--rounds``, ``--latent-steps``, decoding, ``--text-message-tokens``,
``--tool-choice``, ``--reuse-prefix``, ``--seed``) to a command and hands it one ``options``
object; :func:`with_build_options` adds where and how the system is built (``--models``,
``--model``, ``--device``, ``--dtype``, ``--low-memory``, ``--placement``, ``--backend``,
``--ray-address``) and hands it one :class:`BuildArgs`. ``run``, ``eval`` and ``compare`` (and
any command that runs a system) take both, so their flags cannot drift apart.

A command declares the names it receives (``options``, ``build``; ``task`` for the raw
``--task``, ``None`` when not given) as parameters; typer sees the generated flags instead.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional, TypeVar

import typer

from ..errors import RunError
from ..runtime.options import RunOptions
from ..topology.spec import TASK_TYPES

__all__ = ["BuildArgs", "with_flags", "with_run_options", "with_build_options", "RUN_FLAGS", "BUILD_FLAGS", "parse_assignments",
           "device_option"]

F = TypeVar("F", bound=Callable[..., Any])


def _flag(annotation: Any, *names: str, help: str, **kwargs: Any) -> Any:
    return Annotated[annotation, typer.Option(*names, help=help, **kwargs)]


#: The run flags: parameter name -> (annotation, default). Their names are :class:`RunOptions` fields.
RUN_FLAGS: dict[str, tuple[Any, Any]] = {
    "task": (_flag(Optional[str], "--task", help=f"Task type ({', '.join(TASK_TYPES)}): picks the prompts and the "
                   "topology's settings; for eval, the task of a local or HF dataset's samples (default: the "
                   "dataset's, else math)."), None),
    "rounds": (_flag(Optional[int], "--rounds", min=1, help="Recursion rounds (default: the topology's)."), None),
    "latent_steps": (_flag(Optional[int], "--latent-steps", min=0, help="Latent steps per pass (default: the "
                           "topology's settings for the task, else its latent_steps)."), None),
    "seed": (_flag(int, "--seed", help="Seed of the sampling (question i: seed + i), the link initialisation and, "
                   "for eval, the shuffle."), 0),
    "greedy": (_flag(bool, "--greedy", help="Greedy decoding instead of sampling."), False),
    "temperature": (_flag(Optional[float], "--temperature", min=0, help="Sampling temperature (default: the "
                          "topology's settings, else 0.6)."), None),
    "top_p": (_flag(Optional[float], "--top-p", help="Nucleus sampling threshold (default: the topology's settings, "
                    "else 0.95)."), None),
    "top_k": (_flag(Optional[int], "--top-k", min=0, help="Top-k filtering (default: the model's generation config; "
                    "0: off)."), None),
    "min_p": (_flag(Optional[float], "--min-p", help="Min-p filtering (default: the model's generation config)."), None),
    "repetition_penalty": (_flag(Optional[float], "--repetition-penalty", help="Repetition penalty (1.0: none; "
                                 "default: the model's generation config)."), None),
    "max_new_tokens": (_flag(Optional[int], "--max-new-tokens", min=1, help="Answer length limit in tokens (default: "
                             "the topology's settings, else 256)."), None),
    "stop": (_flag(Optional[list[str]], "--stop", help="Stop the answer at this text (repeatable)."), None),
    "text_message_tokens": (_flag(int, "--text-message-tokens", min=1, help="Length limit of text messages (text "
                                  "edges), in tokens."), 256),
    "tool_choice": (_flag(str, "--tool-choice", help="'auto': the model decides; 'required': the output agent's "
                          "answer opens with a call of its first tool."), "auto"),
    "reuse_prefix": (_flag(bool, "--reuse-prefix/--no-reuse-prefix", help="Start a prefill from the KV cache of a "
                           "prompt prefix an earlier pass computed (the same answers up to float rounding)."), True),
}

#: The build flags: parameter name -> (annotation, default).
BUILD_FLAGS: dict[str, tuple[Any, Any]] = {
    "models": (_flag(Optional[str], "--models", help="'tiny': every agent gets the tiny random model of its own "
                     "family."), None),
    "model": (_flag(Optional[list[str]], "--model", help="Override one agent's model: AGENT=REF (repeatable)."), None),
    "device": (_flag(Optional[list[str]], "--device", help="'cpu', 'cuda', 'cuda:1', 'auto', or AGENT=DEVICE "
                     "(repeatable)."), None),
    "dtype": (_flag(Optional[str], "--dtype", help="float32, float16 or bfloat16 (default: each agent's spec dtype, "
                    "else automatic: float32 on CPU, bfloat16 on a GPU that has it)."), None),
    "low_memory": (_flag(Optional[bool], "--low-memory/--no-low-memory", show_default=False,
                         help="Keep one model in memory at a time, loaded for the passes that need it (same answers, "
                              "more loading). Default: only when the estimated memory does not fit."), None),
    "placement": (_flag(Optional[str], "--placement", help="Where agents without a device go: single, round-robin "
                        "(default), by-size or auto (see recmas plan)."), None),
    "backend": (_flag(str, "--backend", help="'local': every agent in this process; 'ray': each model in a Ray actor "
                      "(pip install 'recmas-graph\\[ray]')."), "local"),
    "ray_address": (_flag(Optional[str], "--ray-address", help="Join this Ray cluster ('auto', HOST:6379); default: "
                          "$RAY_ADDRESS, else a local Ray instance."), None),
}


@dataclass(frozen=True)
class BuildArgs:
    """Where and how a command builds its system (the build flags, parsed)."""

    models: str | None = None
    model: dict[str, str] = field(default_factory=dict)
    device: str | dict[str, str] | None = None
    dtype: str | None = None
    low_memory: bool | None = None
    placement: str | None = None
    backend: str = "local"
    ray_address: str | None = None

    def build_kwargs(self, seed: int) -> dict[str, Any]:
        """Keywords of ``CompiledTopology.build`` (and ``evaluate(build=...)``) for these flags."""
        return {"models": self.models, "model": dict(self.model), "device": self.device, "dtype": self.dtype,
                "seed": seed, **({"low_memory": self.low_memory} if self.low_memory is not None else {}),
                **({"placement": self.placement} if self.placement else {})}


def parse_assignments(values: list[str], option: str) -> dict[str, str]:
    """Parse ``AGENT=VALUE`` options into a dict, naming the option on a malformed item."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise RunError(f"expected AGENT=VALUE, got {value!r}", culprit=option,
                           hint=f"e.g. {option} planner=tiny:llama")
        out[name.strip()] = rest.strip()
    return out


def device_option(values: list[str]) -> str | dict[str, str] | None:
    """``--device`` values: one device for every agent, or ``AGENT=DEVICE`` items."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    return parse_assignments(values, "--device")


def _run_options(values: dict[str, Any]) -> RunOptions:
    given = {**values, "greedy": True if values["greedy"] else None, "stop": tuple(values["stop"] or ()) or None}
    try:
        return RunOptions.of(**{k: v for k, v in given.items() if v is not None})  # unset flags: not given
    except RunError as err:  # RunOptions checks every field; the error names the flag a user typed
        flag = f"--{err.culprit.replace('_', '-')}" if err.culprit in RUN_FLAGS else err.culprit
        raise RunError(err.message, culprit=flag, hint=err.hint) from None


def _build_args(values: dict[str, Any]) -> BuildArgs:
    from ..distributed.choose import BACKENDS
    from ..runtime.system import check_models

    check_models(values["models"])  # before any work, as every flag here
    if values["backend"] not in BACKENDS:
        raise RunError(f"unknown backend {values['backend']!r}", culprit="--backend",
                       hint=f"use one of: {', '.join(BACKENDS)}")
    return BuildArgs(models=values["models"], model=parse_assignments(values["model"] or [], "--model"),
                     device=device_option(values["device"] or []), dtype=values["dtype"],
                     low_memory=values["low_memory"], placement=values["placement"], backend=values["backend"],
                     ray_address=values["ray_address"])


def with_flags(flags: dict[str, tuple[Any, Any]], make: Callable[[dict[str, Any]], Any], into: str,
                raw: tuple[str, ...] = ()) -> Callable[[F], F]:
    """A decorator: the command gets ``flags`` as typer parameters instead of ``into`` (and ``raw``),
    and receives ``into=make(values)`` (and each ``raw`` flag's value as it was given)."""
    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        if into not in signature.parameters:
            raise TypeError(f"{func.__name__} must take a parameter {into!r}")
        wanted = [name for name in raw if name in signature.parameters]
        kept = [p for name, p in signature.parameters.items() if name != into and name not in wanted]
        clash = sorted(set(flags) & {p.name for p in kept})
        if clash:
            raise TypeError(f"{func.__name__} declares {', '.join(clash)} itself")
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
                 for name, (annotation, default) in flags.items()]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in flags}
            kwargs[into] = make(values)
            for name in wanted:
                kwargs[name] = values[name]
            return func(**kwargs)

        command.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in kept + added}
        return command  # type: ignore[return-value]
    return decorate


#: Adds the run flags; the command receives ``options`` (a RunOptions) and, if it asks, the raw ``task``.
with_run_options = with_flags(RUN_FLAGS, _run_options, "options", raw=("task", "seed"))
#: Adds the build flags; the command receives ``build`` (a :class:`BuildArgs`).
with_build_options = with_flags(BUILD_FLAGS, _build_args, "build")
