"""Placement: a plain map agent -> device, from explicit choices, the spec, a strategy and what the machine has.

Explicit choices always win: ``--device AGENT=DEV`` entries, then one device for all, then each
agent's ``device`` in the spec. The other agents (``device`` unset or ``"auto"``) are placed by a
strategy (:data:`STRATEGIES`), always keeping agents that share a model reference together:

- ``"round-robin"`` (the default): the distinct models over the GPUs in declaration order;
- ``"single"``: every one on one device (``cuda:0``, the CPU without CUDA);
- ``"by-size"``: the distinct models, largest first (weights + KV allowance, :mod:`.sizing`), each
  to the GPU with the most estimated memory left (``gpu_memory`` per GPU; equal GPUs without it);
- ``"auto"``: by size against the GPUs' free memory (``torch.cuda.mem_get_info``, or ``gpu_memory``
  to plan another machine); a model larger than any one GPU is marked :data:`SPLIT`, to be split
  across the GPUs with accelerate's ``device_map="auto"``.

Without CUDA (and no ``gpus``) every automatically placed agent is on the CPU.
:func:`plan_placement` returns a :class:`PlacementPlan` with the memory estimate and warnings
(``recmas plan --placement``); :func:`resolve_placement` the plain map a build uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import RunError
from ...topology.catalog import ModelSize, ModelSource
from ...topology.spec import TopologySpec
from .sizing import MemoryEstimate, estimate_memory, format_bytes, model_sizes

__all__ = ["STRATEGIES", "SPLIT", "PlacementPlan", "plan_placement", "resolve_placement"]

#: The placement strategies of automatically placed agents.
STRATEGIES = ("single", "round-robin", "by-size", "auto")

#: The device marker of a model to split across the GPUs (accelerate's ``device_map="auto"``).
SPLIT = "split"


@dataclass(frozen=True)
class PlacementPlan:
    """Where each agent goes and what it is estimated to cost, before anything loads.

    ``devices`` is agent -> device (:data:`SPLIT` for a model split across the GPUs); ``explicit``
    names the agents placed by ``--device`` or the spec; ``device_bytes`` the estimated bytes per
    device (a split model's share spread evenly over the GPUs); ``capacity`` the known memory per
    GPU; ``warnings`` what may not fit or was not counted.
    """

    strategy: str
    devices: dict[str, str]
    explicit: tuple[str, ...]
    memory: MemoryEstimate
    device_bytes: dict[str, int]
    capacity: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: strategy, agents (model, device, dtype bytes, weight and KV bytes), devices, warnings."""
        agents = [{"agent": r.agent, "model": r.model, "device": r.device, "explicit": r.agent in self.explicit,
                   "dtype": r.dtype, "dtype_bytes": r.dtype_bytes, "weight_bytes": r.weight_bytes, "kv_bytes": r.kv_bytes,
                   "shared": r.shared} for r in self.memory.agents.values()]
        devices = [{"device": d, "estimated_bytes": b, "capacity_bytes": self.capacity.get(d)}
                   for d, b in self.device_bytes.items()]
        return {"strategy": self.strategy, "batch_size": self.memory.batch_size, "tokens": self.memory.tokens,
                "agents": agents, "devices": devices, "models": self.memory.model_bytes(),
                "unknown": list(self.memory.unknown), "warnings": list(self.warnings)}


def _strategy(placement: str | None) -> str:
    name = "round-robin" if placement is None else str(placement).strip().lower()
    if name not in STRATEGIES:
        raise RunError(f"unknown placement strategy {placement!r}", culprit="--placement",
                       hint=f"use one of: {', '.join(STRATEGIES)}")
    return name


def _capacity(n_gpu: int, gpus: int | None, gpu_memory: int | Sequence[int] | None, strategy: str) -> list[int] | None:
    """Memory per GPU: ``gpu_memory`` (one figure for all, or one per GPU); for ``auto`` on this
    machine, the free memory CUDA reports; else ``None`` (unknown)."""
    if gpu_memory is not None:
        figures = [int(gpu_memory)] * n_gpu if isinstance(gpu_memory, (int, float)) else [int(m) for m in gpu_memory]
        if len(figures) != n_gpu:
            raise RunError(f"{len(figures)} GPU memory figure(s) for {n_gpu} GPU(s)", culprit="--gpu-memory",
                           hint="give one figure for all GPUs, or one per GPU")
        return figures
    if strategy == "auto" and gpus is None and n_gpu and torch.cuda.is_available():
        return [int(torch.cuda.mem_get_info(i)[0]) for i in range(n_gpu)]
    return None


def _choices(spec: TopologySpec, device: str | Mapping[str, str] | None, n_gpu: int) -> dict[str, str | None]:
    """Each agent's explicit device (``None``: placed by the strategy), checked."""
    overrides = dict(device) if isinstance(device, Mapping) else {}
    unknown = set(overrides) - set(spec.agent_names)
    if unknown:
        raise RunError(f"unknown agent(s) {', '.join(sorted(unknown))} in the device map",
                       culprit="--device", hint=f"use agent names: {', '.join(spec.agent_names)}")
    default = device if isinstance(device, str) else None
    out: dict[str, str | None] = {}
    for agent in spec.agents:
        chosen = overrides.get(agent.name) or default or agent.device
        if chosen == "auto":
            chosen = None
        if chosen is not None and chosen.startswith("cuda") and n_gpu == 0:
            raise RunError(f"device {chosen!r} requested but CUDA is not available", culprit=f"agent {agent.name!r}",
                           hint=f"use --device cpu (all agents) or --device {agent.name}=cpu, or run on a machine with a GPU")
        out[agent.name] = chosen
    return out


def _groups(spec: TopologySpec, choices: Mapping[str, str | None]) -> dict[str, list[str]]:
    """The automatically placed agents by model reference, in declaration order."""
    groups: dict[str, list[str]] = {}
    for agent in spec.agents:
        if choices[agent.name] is None:
            groups.setdefault(agent.model, []).append(agent.name)
    return groups


def _simple(strategy: str, groups: Mapping[str, list[str]], n_gpu: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, names in enumerate(groups.values()):
        dev = "cpu" if n_gpu == 0 else ("cuda:0" if strategy == "single" else f"cuda:{i % n_gpu}")
        out.update(dict.fromkeys(names, dev))
    return out


def _by_size(spec: TopologySpec, groups: Mapping[str, list[str]], placed: Mapping[str, str], n_gpu: int,
             capacity: list[int] | None, split: bool, sizes: Mapping[str, ModelSize | None], dtype: str | None,
             batch_size: int, tokens: int | None) -> dict[str, str]:
    """Largest group first, each to the GPU with the most estimated memory left (or :data:`SPLIT`)."""
    gpus = [f"cuda:{i}" for i in range(n_gpu)]
    # every automatically placed agent on a stand-in GPU: its dtype and KV as on a GPU, not on a real one
    trial = estimate_memory(spec, {a.name: placed.get(a.name, "unplaced") for a in spec.agents}, sizes=sizes,
                            dtype=dtype, batch_size=batch_size, tokens=tokens)
    used = [trial.devices.get(g, 0) for g in gpus]  # what the explicitly placed agents take
    cost: dict[str, int] = {}
    for ref, names in groups.items():  # weights once per dtype + each agent's KV allowance
        rows = [trial.agents[n] for n in names]
        copies = {r.dtype_bytes: r.weight_bytes or 0 for r in rows}
        cost[ref] = sum(copies.values()) + sum(r.kv_bytes or 0 for r in rows)
    out: dict[str, str] = {}
    count = [0] * n_gpu  # models per GPU: equal (e.g. unknown) sizes spread round-robin
    for ref in sorted(groups, key=lambda r: -cost[r]):  # stable: equal sizes keep declaration order
        if split and capacity and n_gpu > 1 and cost[ref] > max(capacity):
            out.update(dict.fromkeys(groups[ref], SPLIT))
            for i in range(n_gpu):
                used[i] += cost[ref] // n_gpu
            continue
        free = [(capacity[i] if capacity else 0) - used[i] for i in range(n_gpu)]
        best = max(range(n_gpu), key=lambda i: (free[i], -count[i], -i))
        used[best] += cost[ref]
        count[best] += 1
        out.update(dict.fromkeys(groups[ref], gpus[best]))
    return out


def _warnings(plan_devices: Mapping[str, str], memory: MemoryEstimate, device_bytes: Mapping[str, int],
              capacity: Mapping[str, int], strategy: str, n_gpu: int, planned_capacity: bool) -> list[str]:
    out: list[str] = []
    for dev, total in device_bytes.items():
        if dev in capacity and total > capacity[dev]:
            out.append(f"estimated {format_bytes(total)} on {dev} exceeds its {format_bytes(capacity[dev])}")
    for ref in memory.unknown:
        out.append(f"the size of {ref} is unknown (not available locally, or its model source cannot tell "
                   "without loading): not counted")
    split = sorted({memory.agents[a].model for a, d in plan_devices.items() if d == SPLIT})
    for ref in split:
        out.append(f"{ref} is larger than any one GPU: marked for splitting across cuda:0-{n_gpu - 1} "
                   "(device_map='auto'); building such a system is not supported yet")
    if strategy == "auto" and n_gpu and not planned_capacity:
        out.append("GPU memory unknown (planning other GPUs, or no CUDA here, and no gpu_memory given): "
                   "placed by size only")
    return out


def plan_placement(spec: TopologySpec, device: str | Mapping[str, str] | None = None, *,
                   placement: str | None = None, gpus: int | None = None,
                   gpu_memory: int | Sequence[int] | None = None,
                   sources: Mapping[str, ModelSource] | None = None,
                   sizes: Mapping[str, ModelSize | None] | None = None, dtype: str | None = None,
                   batch_size: int = 1, tokens: int | None = None) -> PlacementPlan:
    """Place every agent and estimate the memory per device, loading no weights.

    ``device`` is one device for all or a map agent -> device (explicit choices win over the
    strategy); ``placement`` one of :data:`STRATEGIES` (default ``"round-robin"``); ``gpus`` the
    number of GPUs and ``gpu_memory`` the bytes per GPU (one figure, or one per GPU), to plan for
    another machine; ``sizes`` (ref -> :class:`~recmas_graph.topology.catalog.ModelSize`) default
    to what the model ``sources`` tell; ``dtype``, ``batch_size`` and ``tokens`` as in
    :func:`~recmas_graph.runtime.memory.sizing.estimate_memory`.

    >>> from recmas_graph.topology.spec import TopologyBuilder
    >>> spec = (TopologyBuilder("t").agent("a", role="planner", model="tiny:llama")
    ...         .agent("b", role="solver", model="tiny:qwen2").agent("c", role="critic", model="tiny:gemma3")
    ...         .edge("a", "b").edge("c", "b").output("b").build())
    >>> plan_placement(spec, placement="by-size", gpus=2).devices
    {'a': 'cuda:0', 'b': 'cuda:1', 'c': 'cuda:1'}
    """
    strategy = _strategy(placement)
    if batch_size < 1:
        raise RunError(f"batch_size must be at least 1, got {batch_size}", culprit="--batch-size")
    if gpus is None and gpu_memory is not None and not isinstance(gpu_memory, (int, float)):
        gpus = len(gpu_memory)
    n_gpu = torch.cuda.device_count() if gpus is None else gpus
    choices = _choices(spec, device, n_gpu)
    capacity = _capacity(n_gpu, gpus, gpu_memory, strategy) if n_gpu else None
    sizes = dict(sizes) if sizes is not None else model_sizes(spec, sources)
    placed = {name: dev for name, dev in choices.items() if dev is not None}
    groups = _groups(spec, choices)
    if strategy in ("by-size", "auto") and n_gpu:
        auto = _by_size(spec, groups, placed, n_gpu, capacity, strategy == "auto", sizes, dtype, batch_size, tokens)
    else:
        auto = _simple(strategy, groups, n_gpu)
    devices = {a.name: placed.get(a.name) or auto[a.name] for a in spec.agents}
    memory = estimate_memory(spec, devices, sizes=sizes, dtype=dtype, batch_size=batch_size, tokens=tokens)
    device_bytes = {d: b for d, b in memory.devices.items() if d != SPLIT}
    if strategy != "single":
        device_bytes.update({f"cuda:{i}": device_bytes.get(f"cuda:{i}", 0) for i in range(n_gpu)})  # empty ones too
    if SPLIT in memory.devices:
        for i in range(n_gpu):
            key = f"cuda:{i}"
            device_bytes[key] = device_bytes.get(key, 0) + memory.devices[SPLIT] // n_gpu
    order = {d: i for i, d in enumerate(["cpu", *(f"cuda:{i}" for i in range(n_gpu))])}
    device_bytes = dict(sorted(device_bytes.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    known = {f"cuda:{i}": c for i, c in enumerate(capacity or [])}
    warnings = _warnings(devices, memory, device_bytes, known, strategy, n_gpu, capacity is not None)
    explicit = tuple(name for name in devices if name in placed)
    return PlacementPlan(strategy, devices, explicit, memory, device_bytes, known, tuple(warnings))


def resolve_placement(spec: TopologySpec, device: str | Mapping[str, str] | None = None, *,
                      gpus: int | None = None, placement: str | None = None,
                      gpu_memory: int | Sequence[int] | None = None,
                      sources: Mapping[str, ModelSource] | None = None, dtype: str | None = None) -> dict[str, str]:
    """Map every agent to a device: explicit map > ``device`` for all > spec ``device`` > ``placement``.

    The strategies are those of :func:`plan_placement` (default ``"round-robin"``: CPU without
    CUDA; with CUDA, the distinct models of the automatically placed agents spread round-robin over
    the visible GPUs in declaration order, agents sharing a model reference kept together; agents
    placed explicitly do not shift the others). ``gpus`` overrides the number of visible GPUs (for
    planning on another machine). A model the ``"auto"`` strategy marks for splitting across GPUs
    raises :class:`~recmas_graph.errors.RunError`: the loaders place each model on one device.

    >>> from recmas_graph.topology.spec import TopologyBuilder
    >>> spec = (TopologyBuilder("t").agent("a", role="planner", model="m1").agent("b", role="solver", model="m2")
    ...         .agent("c", role="critic", model="m1").edge("a", "b").edge("c", "b").output("b").build())
    >>> resolve_placement(spec, gpus=2)
    {'a': 'cuda:0', 'b': 'cuda:1', 'c': 'cuda:0'}
    >>> resolve_placement(spec, gpus=2, placement="single")
    {'a': 'cuda:0', 'b': 'cuda:0', 'c': 'cuda:0'}
    """
    strategy = _strategy(placement)
    if strategy in ("round-robin", "single"):  # no sizes needed
        n_gpu = torch.cuda.device_count() if gpus is None else gpus
        choices = _choices(spec, device, n_gpu)
        auto = _simple(strategy, _groups(spec, choices), n_gpu)
        return {name: dev if dev is not None else auto[name] for name, dev in choices.items()}
    plan = plan_placement(spec, device, placement=strategy, gpus=gpus, gpu_memory=gpu_memory, sources=sources,
                          dtype=dtype)
    split = sorted({plan.memory.agents[a].model for a, d in plan.devices.items() if d == SPLIT})
    if split:
        raise RunError(f"{', '.join(split)} is estimated larger than any one GPU and would need splitting across "
                       "GPUs (device_map='auto'), which building a system does not support yet",
                       culprit="--placement auto",
                       hint="use a smaller --dtype (bfloat16), place the agents yourself with --device AGENT=DEV, "
                            "or run on GPUs with more memory; `recmas plan TOPOLOGY --placement auto` shows the estimate")
    return plan.devices
