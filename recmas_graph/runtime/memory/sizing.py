"""Memory estimates without loading weights: model sizes from their sources, per-device totals.

A model's weights cost ``params * bytes per element`` of the dtype it loads in (``dtype: null``:
float32 on CPU, bfloat16 on a GPU). Agents sharing a model on one device (same reference and
dtype) share one copy, so each distinct ``(model, device, dtype)`` is counted once. Each agent adds
an allowance for its activations, the KV cache of one pass::

    KV cache bytes = 2 * layers * kv_heads * head_dim * tokens * batch_size * dtype bytes

with ``tokens`` the sequence length of a pass (:func:`estimate_tokens`: a 512-token prompt
allowance + the latent steps + the answer length). Everything else (logits, transient buffers,
the CUDA context, the links) is not counted: leave some headroom.

>>> from recmas_graph.topology.catalog import ModelSize
>>> size = ModelSize(params=1_000_000, layers=2, kv_heads=2, head_dim=16)
>>> weight_bytes(size, 2), kv_cache_bytes(size, tokens=100, batch_size=4, dtype_bytes=2)
(2000000, 102400)
>>> format_bytes(3 * GiB // 2), format_bytes(None)
('1.50 GiB', 'unknown')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...topology.catalog import ModelSize, ModelSource, resolve_model_source
from ...topology.spec import TopologySpec

__all__ = [
    "available_bytes",
    "memory_shortfall",
    "GiB",
    "PROMPT_TOKENS",
    "AgentMemory",
    "MemoryEstimate",
    "dtype_bytes",
    "model_size",
    "model_sizes",
    "weight_bytes",
    "kv_cache_bytes",
    "estimate_tokens",
    "estimate_memory",
    "format_bytes",
]

GiB = 1024**3

#: The prompt length allowance (tokens) of :func:`estimate_tokens`.
PROMPT_TOKENS = 512

_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2}


def dtype_bytes(dtype: str | None, device: str, size: ModelSize | None = None) -> int:
    """Bytes per weight of ``dtype`` on ``device``: ``None`` is automatic (4 on the CPU, 2 elsewhere:
    bfloat16 on a GPU); ``"auto"`` is the checkpoint's own dtype (from ``size.stored_bytes``, else 2).

    >>> dtype_bytes(None, "cpu"), dtype_bytes(None, "cuda:1"), dtype_bytes("float32", "cuda:0")
    (4, 2, 4)
    """
    if dtype is None:
        return 4 if device == "cpu" else 2
    name = str(dtype).strip().lower().removeprefix("torch.")
    if name == "auto":
        if size is not None and size.stored_bytes and size.params:
            return max(1, round(size.stored_bytes / size.params))
        return 2
    return _DTYPE_BYTES.get(name, 4)


def _default_sources() -> Mapping[str, ModelSource]:
    from ..sources import BUILTIN_SOURCES

    return {s.prefix: s for s in BUILTIN_SOURCES}


def model_size(ref: str, sources: Mapping[str, ModelSource] | None = None) -> ModelSize | None:
    """The size of the model ``ref`` names, from its model source, without loading weights
    (``None``: the source cannot tell; ``sources`` default to the built-in ones)."""
    source = resolve_model_source(ref, sources if sources is not None else _default_sources())
    found = source.size_of(ref)
    if found is None or isinstance(found, ModelSize):
        return found
    if isinstance(found, Mapping):  # a plugin may answer with a plain mapping
        return ModelSize(**dict(found))
    return None


def model_sizes(spec: TopologySpec, sources: Mapping[str, ModelSource] | None = None) -> dict[str, ModelSize | None]:
    """:func:`model_size` of each distinct model reference of ``spec``."""
    return {ref: model_size(ref, sources) for ref in dict.fromkeys(a.model for a in spec.agents)}


def weight_bytes(size: ModelSize | None, nbytes: int) -> int | None:
    """Bytes of the weights at ``nbytes`` per parameter (``None`` when the size is unknown)."""
    return None if size is None else size.params * nbytes


def kv_cache_bytes(size: ModelSize | None, *, tokens: int, batch_size: int, dtype_bytes: int) -> int | None:
    """KV cache bytes of a pass: ``2 * layers * kv_heads * head_dim * tokens * batch_size * dtype_bytes``."""
    per_token = None if size is None else size.kv_bytes_per_token(dtype_bytes)
    return None if per_token is None else per_token * tokens * batch_size


def estimate_tokens(spec: TopologySpec, task: str = "math") -> int:
    """The sequence length a pass is allowed: :data:`PROMPT_TOKENS` + the latent steps + the answer
    length (the topology's settings for ``task``, else 256)."""
    found = spec.settings_for(task)
    steps = found.latent_steps if found.latent_steps is not None else spec.latent_steps
    return PROMPT_TOKENS + steps + (found.max_new_tokens or 256)


@dataclass(frozen=True)
class AgentMemory:
    """One agent's share of an estimate: its weights (``shared``: already counted for an earlier agent
    on the same device) and its KV cache allowance (``None``: unknown)."""

    agent: str
    model: str
    device: str
    dtype: str
    dtype_bytes: int
    weight_bytes: int | None
    kv_bytes: int | None
    shared: bool = False


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes per device: each distinct (model, device, dtype) once, plus each agent's KV
    allowance. ``unknown`` lists the models whose size nobody could tell (not counted)."""

    agents: dict[str, AgentMemory]
    devices: dict[str, int]
    batch_size: int
    tokens: int
    unknown: tuple[str, ...] = field(default_factory=tuple)

    def model_bytes(self) -> dict[str, int | None]:
        """Weight bytes of each model reference (as its first agent loads it)."""
        out: dict[str, int | None] = {}
        for row in self.agents.values():
            out.setdefault(row.model, row.weight_bytes)
        return out


def estimate_memory(spec: TopologySpec, devices: Mapping[str, str], *,
                    sizes: Mapping[str, ModelSize | None] | None = None,
                    sources: Mapping[str, ModelSource] | None = None, dtype: str | None = None,
                    batch_size: int = 1, tokens: int | None = None) -> MemoryEstimate:
    """Estimate the memory of ``spec`` placed as ``devices`` (agent -> device), loading nothing.

    ``sizes`` (ref -> :class:`ModelSize`) default to :func:`model_sizes` from ``sources``; ``dtype``
    applies to agents whose spec sets none; ``tokens`` defaults to :func:`estimate_tokens`.
    """
    sizes = dict(sizes) if sizes is not None else model_sizes(spec, sources)
    tokens = estimate_tokens(spec) if tokens is None else tokens
    rows: dict[str, AgentMemory] = {}
    totals: dict[str, int] = {}
    seen: set[tuple[str, str, int]] = set()
    for agent in spec.agents:
        device = devices[agent.name]
        size = sizes.get(agent.model)
        chosen = agent.dtype or dtype
        nbytes = dtype_bytes(chosen, device, size)
        name = chosen or ("float32" if device == "cpu" else "bfloat16")  # what dtype: null loads in
        weights = weight_bytes(size, nbytes)
        kv = kv_cache_bytes(size, tokens=tokens, batch_size=batch_size, dtype_bytes=nbytes)
        key = (agent.model, device, nbytes)
        shared = key in seen
        seen.add(key)
        totals[device] = totals.get(device, 0) + (0 if shared else weights or 0) + (kv or 0)
        rows[agent.name] = AgentMemory(agent.name, agent.model, device, str(name), nbytes, weights, kv, shared)
    unknown = tuple(ref for ref, size in sizes.items() if size is None and any(a.model == ref for a in spec.agents))
    return MemoryEstimate(rows, totals, batch_size, tokens, unknown)


def format_bytes(n: int | None) -> str:
    """``n`` bytes as text in KiB / MiB / GiB (``"unknown"`` for ``None``)."""
    if n is None:
        return "unknown"
    value: Any = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def available_bytes(device: str) -> int | None:
    """Memory free for a system on ``device``: CUDA's free memory, or the CPU's ``MemAvailable``
    (``None`` where it cannot be read)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_shortfall(spec: Any, placement: Mapping[str, str], *, sources: Mapping[str, Any] | None = None,
                     dtype: str | None = None) -> str | None:
    """Why ``spec`` placed as ``placement`` would not fit at once (the estimate of
    :func:`~recmas_graph.runtime.memory.sizing.estimate_memory` against :func:`available_bytes`), or
    ``None`` when it fits or nothing can be told."""
    try:
        estimate = estimate_memory(spec, placement, sources=sources, dtype=dtype)
    except Exception:  # noqa: BLE001 - an estimate that cannot be made changes nothing
        return None
    for device, need in estimate.devices.items():
        have = available_bytes(device)
        if have is not None and need > have:
            return f"estimated {format_bytes(need)} on {device}, {format_bytes(have)} available"
    return None
