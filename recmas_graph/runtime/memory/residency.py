"""Low-memory mode: one model in memory at a time, loaded for the passes that need it and then freed.

A system built with ``low_memory=True`` keeps no model loaded between passes of different models:
when an agent's model is needed (its pass, a retry, a loss), :class:`Residency` frees the model in
memory and loads that one (agents sharing a model share the copy). This is what the reference
always does (each agent loaded, run over the whole batch and freed, stage by stage); it trades
loading time for memory: the peak is the largest single model, not the sum. Reloading is
deterministic, so the answers are those of a normal build.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from .oom import loading_out_of_memory, raise_out_of_memory
from ..sources.loaded import ModelCache, load_model

if TYPE_CHECKING:  # pragma: no cover
    from ..agent.agent import Agent

__all__ = ["Residency"]


class Residency:
    """Keeps at most one model loaded for a set of agents.

    ``models[agent] = (ref, device, dtype)`` says what each agent loads; ``sources`` are the model
    sources (default: the built-in ones). :attr:`loads` counts the loads so far.
    """

    def __init__(self, models: Mapping[str, tuple[str, Any, Any]], sources: Mapping[str, Any] | None = None) -> None:
        self.models = dict(models)
        self.sources = sources
        self.keys = {name: ModelCache.key(*spec) for name, spec in self.models.items()}
        self.agents: dict[str, "Agent"] = {}
        self.current: tuple[str, str, str] | None = None
        self._loaded: Any = None
        self.loads = 0

    def register(self, agent: "Agent") -> None:
        """Manage ``agent``: its model is loaded through :meth:`reload` when it is needed."""
        self.agents[agent.name] = agent
        agent.reload = self.reload
        if self.current == self.keys[agent.name]:
            agent.attach(self._loaded)

    def get(self, name: str) -> Any:
        """The loaded model of agent ``name``, freeing any other model first."""
        key = self.keys[name]
        if self.current != key:
            self.free()
            ref, device, dtype = self.models[name]
            with raise_out_of_memory(loading_out_of_memory, agent=name, ref=ref, device=str(device), low_memory=True):
                with torch.inference_mode(False):  # weights loaded during a run must serve autograd later
                    self._loaded = load_model(ref, device=device, dtype=dtype, sources=self.sources)
            self.current = key
            self.loads += 1
            for other, agent in self.agents.items():
                if self.keys[other] == key:
                    agent.attach(self._loaded)
        return self._loaded

    def reload(self, agent: "Agent") -> None:
        """Load ``agent``'s model (the :attr:`Agent.reload` hook)."""
        self.get(agent.name)

    def free(self) -> None:
        """Free the model in memory (every agent forgets it)."""
        if self.current is None:
            return
        device = torch.device(self.current[1])
        for agent in self.agents.values():
            agent.detach()
        self._loaded = None
        self.current = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

