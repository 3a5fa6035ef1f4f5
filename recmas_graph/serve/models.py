"""The served systems: each built system under a model name, with its batcher and what requests check.

A :class:`ServedModel` turns an API request's fields into the system's
:class:`~recmas_graph.runtime.options.RunOptions` (the server's defaults with the request's fields on
top), its questions (the output agent's system prompt as a question field), token counts and the
context-window check. :class:`ServeState` holds every served model and whether they are all built.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import RecmasError
from ..runtime.options import RunOptions
from ..runtime.agent.prompts import OUTPUT_SYSTEM_FIELD
from .batcher import Batcher
from .errors import APIError, from_recmas
from .metrics import ServeMetrics

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["ServeSettings", "ServedModel", "ServeState", "REQUEST_PARAMS"]

#: Request field for each run option (errors name the field the client sent).
REQUEST_PARAMS = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "stop": "stop",
                  "rounds": "rounds", "latent_steps": "latent_steps", "task": "task"}


@dataclass(frozen=True)
class ServeSettings:
    """How a server batches and bounds requests, and the run options requests start from.

    ``max_batch_size``: rows (questions x choices) per batch; ``batch_wait_ms``: how long the first
    request of a batch waits for others; ``max_queue``: waiting requests before 429; ``timeout_s``: a
    request still unanswered after this gets 504; ``api_key``: required as ``Authorization: Bearer KEY``
    when set; ``defaults``: the run options of a request that sets none (``recmas serve``'s run flags).
    """

    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_queue: int = 256
    timeout_s: float = 600.0
    api_key: str | None = None
    defaults: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.batch_wait_ms < 0 or self.timeout_s <= 0:
            raise ValueError("batch_wait_ms must be >= 0 and timeout_s > 0")


class ServedModel:
    """One built system served under ``name``."""

    def __init__(self, name: str, system: RecursiveSystem, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.name = name
        self.system = system
        self.settings = settings
        self.metrics = metrics
        self.created = int(time.time())
        self.batcher = Batcher(system.run, name=name, metrics=metrics, max_batch_size=settings.max_batch_size,
                               batch_wait_s=settings.batch_wait_ms / 1000, max_queue=settings.max_queue)
        output = system.agents.get(system.spec.output) if hasattr(system, "agents") else None
        #: The output agent's tokenizer (``None`` when its model lives in another process).
        self.tokenizer = getattr(output, "tokenizer", None)
        #: The output agent's context window in tokens (``None``: unknown).
        self.context_window = _context_window(output)

    def options(self, body: Any) -> RunOptions:
        """The run options of a request: the server's defaults, the request's fields on top (400 naming
        the field when one is refused)."""
        given = {"max_new_tokens": getattr(body, "max_completion_tokens", None) or body.max_tokens,
                 "temperature": body.temperature, "top_p": body.top_p, "stop": body.stops(), "rounds": body.rounds,
                 "latent_steps": body.latent_steps, "task": body.task}
        try:
            options = RunOptions.of(self.settings.defaults, **{k: v for k, v in given.items() if v is not None})
            self.generation(options)  # the topology's settings for the task, checked now
        except RecmasError as err:
            raise from_recmas(err, param=REQUEST_PARAMS.get(err.culprit or "", err.culprit)) from None
        return options.replace(seed=0)  # each row gets its own seed: the batch key is the rest

    def generation(self, options: RunOptions) -> Any:
        """The decoding the system uses for ``options``."""
        return options.resolve_generation(self.system.spec.settings_for(options.task, options.dataset))

    def question(self, text: str, system_prompt: str | None) -> str | dict[str, str]:
        """A question for ``system.run`` (with the output agent's system prompt as a field when given)."""
        if system_prompt:
            return {"question": text, OUTPUT_SYSTEM_FIELD: system_prompt}
        return text

    def count_tokens(self, *texts: str) -> int:
        """Tokens of ``texts`` by the output agent's tokenizer (0 when it is not here)."""
        if self.tokenizer is None:
            return 0
        return sum(len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts if t)

    def check_context(self, prompt_tokens: int, max_new_tokens: int, param: str) -> None:
        """Refuse a prompt that, with the answer, cannot fit the output agent's context window."""
        window = self.context_window
        if window is not None and prompt_tokens + max_new_tokens > window:
            raise APIError(400, f"this model's context window is {window} tokens; the request asks for "
                                f"{prompt_tokens} in the prompt and up to {max_new_tokens} in the answer (fix: shorten "
                                "the prompt or lower max_tokens)", param=param, code="context_length_exceeded")


def _context_window(agent: Any) -> int | None:
    loaded = getattr(agent, "_loaded", None) if agent is not None else None
    config = getattr(getattr(loaded, "model", None), "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    text_config = getattr(config, "text_config", None)
    value = getattr(text_config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


class ServeState:
    """The served models by name, and whether they are ready (all built)."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.ready = False
        #: The names being built (listed by ``/health`` while loading).
        self.expected: list[str] = []

    def add(self, name: str, system: RecursiveSystem) -> ServedModel:
        """Serve ``system`` as ``name``."""
        if name in self.models:
            raise ValueError(f"two systems named {name!r}: give each its own --name")
        served = self.models[name] = ServedModel(name, system, self.settings, self.metrics)
        return served

    def add_all(self, systems: Mapping[str, Any]) -> None:
        """Serve every system of ``systems`` and mark the server ready."""
        for name, system in systems.items():
            self.add(name, system)
        self.ready = True

    def get(self, name: str) -> ServedModel:
        """The model ``name`` (404 listing the served ones; 503 while loading)."""
        served = self.models.get(name)
        if served is not None:
            return served
        if not self.ready:
            raise APIError(503, "the server is still building its systems; retry shortly (GET /health says when "
                                "it is ready)", code="model_loading", headers={"Retry-After": "5"})
        names = ", ".join(sorted(self.models)) or "none"
        raise APIError(404, f"the model {name!r} does not exist; served models: {names}", param="model",
                       code="model_not_found")

    def open(self) -> None:
        """Take requests (the app's startup)."""
        for served in self.models.values():
            served.batcher.open()

    async def close(self) -> None:
        """Finish every batcher's work."""
        for served in self.models.values():
            await served.batcher.close()
