"""Placement: a plain map agent -> device, from explicit choices, the spec and what the machine has."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import RunError
from ..topology.spec import TopologySpec

__all__ = ["resolve_placement"]


def resolve_placement(spec: TopologySpec, device: str | Mapping[str, str] | None = None, *,
                      gpus: int | None = None) -> dict[str, str]:
    """Map every agent to a device: explicit map > ``device`` for all > spec ``device`` > automatic.

    Automatic: CPU without CUDA; with CUDA, the distinct models of the automatically placed agents
    are spread round-robin over the visible GPUs in declaration order, agents sharing a model
    reference kept together (agents placed explicitly do not shift the others). ``gpus`` overrides
    the number of visible GPUs (for planning on another machine).

    >>> from recmas_graph.topology.spec import TopologyBuilder
    >>> spec = (TopologyBuilder("t").agent("a", role="planner", model="m1").agent("b", role="solver", model="m2")
    ...         .agent("c", role="critic", model="m1").edge("a", "b").edge("c", "b").output("b").build())
    >>> resolve_placement(spec, gpus=2)
    {'a': 'cuda:0', 'b': 'cuda:1', 'c': 'cuda:0'}
    """
    overrides = dict(device) if isinstance(device, Mapping) else {}
    unknown = set(overrides) - set(spec.agent_names)
    if unknown:
        raise RunError(f"unknown agent(s) {', '.join(sorted(unknown))} in the device map",
                       culprit="--device", hint=f"use agent names: {', '.join(spec.agent_names)}")
    default = device if isinstance(device, str) else None
    n_gpu = torch.cuda.device_count() if gpus is None else gpus
    auto: dict[str, str] = {}  # model -> device, for automatically placed agents
    placement: dict[str, str] = {}
    for agent in spec.agents:
        chosen = overrides.get(agent.name) or default or agent.device
        if chosen in (None, "auto"):
            if n_gpu == 0:
                chosen = "cpu"
            else:
                chosen = auto.setdefault(agent.model, f"cuda:{len(auto) % n_gpu}")
        if chosen.startswith("cuda") and n_gpu == 0:
            raise RunError(f"device {chosen!r} requested but CUDA is not available", culprit=f"agent {agent.name!r}",
                           hint=f"use --device cpu (all agents) or --device {agent.name}=cpu, or run on a machine with a GPU")
        placement[agent.name] = chosen
    return placement
