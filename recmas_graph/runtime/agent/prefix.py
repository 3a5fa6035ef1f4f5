"""Prefix KV reuse: a later pass prefills only what changed since an earlier pass of the same model.

Every prompt of an agent starts with the same text (system prompt, role text, question) up to its
first message; only the messages and what follows them change from round to round. The KV cache
of a run's prompt prefixes is kept per model (a :class:`PrefixCache`, alive for one run); a later
prefill of the same model finds, for each row, the longest cached token prefix of its leading text,
starts from those keys and values and runs the model on the rest only. Agents that share a model
share the cache, so what their prompts have in common (the chat template's head, a shared system
prompt) is computed once too.

Layout of a reused prefill, for each row: its cached prefix right-aligned in ``L_max`` positions,
then its remaining positions right-aligned in ``R_max``; the gaps are masked padding, and position
ids come from the mask, so each row sees exactly the positions it would alone. The result equals a
full prefill up to float rounding.

It is used only where it is exact and pays: without autograd (the frozen prefix has no gradient to
give, but training recomputes its passes), for rows that share at least :data:`MIN_REUSE` tokens,
and for models whose cache layers keep every position. Sliding-window (and chunked) layers count
cache slots, not positions, so a gap between a row's prefix and its rest would shift their window
as the sequence grows: for such a model a prefill is reused only when no row has a gap and the
prompt fits in the window. A model keeps at most :data:`MAX_BYTES` of prefixes per run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .forward import position_ids_from_mask

__all__ = ["MIN_REUSE", "MAX_BYTES", "PrefixCache", "ModelPrefixes", "prefill"]

#: Rows sharing fewer leading tokens with a cached prefix are prefilled in full.
MIN_REUSE = 16

#: At most this many bytes of cached prefix keys and values per model and run (later prefixes are not kept).
MAX_BYTES = 1 << 30

#: (embeds, mask, positions, cache) -> (last-position outputs, cache): one forward call of the model.
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, Any]]


@dataclass
class _Entry:
    """One cached prefix: its token ids (P,) and, per layer, keys and values (heads, P, d)."""

    ids: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]


def _key(ids: torch.Tensor) -> bytes:
    return ids.numpy().tobytes()


@dataclass
class ModelPrefixes:
    """The cached prefixes of one model in one run, and what reuse has saved."""

    entries: list[_Entry] = field(default_factory=list)
    reused_tokens: int = 0  # prompt positions not recomputed
    usable: bool = True  # False once the model's cache was seen not to keep every position
    bytes: int = 0  # held by the entries
    last: list[int] = field(default_factory=list)  # per row: positions the last prefill reused
    layout: Any = None  # the model's cache layout (a _Layout), found at its first reused prefill
    _exact: dict[bytes, _Entry] = field(default_factory=dict, repr=False)

    def match(self, ids: torch.Tensor) -> tuple[int, _Entry | None]:
        """The cached entry sharing the longest leading run of tokens with ``ids``, and that length."""
        found = self._exact.get(_key(ids))
        if found is not None:  # a prefix seen before (a later round's): the usual case, no scan
            return len(ids), found
        best = 0
        for entry in self.entries:
            n = min(len(ids), len(entry.ids))
            if n <= best:
                continue
            same = int(torch.cumprod(ids[:n] == entry.ids[:n], 0).sum())
            if same > best:
                best, found = same, entry
        return best, found

    def add(self, ids: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep a prefix that no cached one covers (the caller checked), within :data:`MAX_BYTES`."""
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        key = _key(ids)
        if not len(ids) or key in self._exact or self.bytes + size > MAX_BYTES:
            return
        entry = _Entry(ids, kv)
        self.entries.append(entry)
        self._exact[key] = entry
        self.bytes += size

    def clear(self) -> None:
        """Drop every entry (their tensors are freed unless something else holds them)."""
        self.entries.clear()
        self._exact.clear()
        self.bytes = 0


class PrefixCache:
    """The prefixes of one run, per model (keyed by the model object; clear it when the run ends)."""

    def __init__(self) -> None:
        self._models: dict[int, tuple[Any, ModelPrefixes]] = {}

    def of(self, model: Any) -> ModelPrefixes:
        """The prefixes of ``model`` (created empty)."""
        key = id(model)
        if key not in self._models:
            self._models[key] = (model, ModelPrefixes())  # the model is held, so its id stays its own
        return self._models[key][1]

    @property
    def reused_tokens(self) -> int:
        """Prompt positions not recomputed, over every model."""
        return sum(p.reused_tokens for _, p in self._models.values())

    def clear(self) -> None:
        """Drop every cached prefix."""
        for _, prefixes in self._models.values():
            prefixes.clear()
        self._models.clear()


@dataclass(frozen=True)
class _Layout:
    """What a model's cache layers keep: every position (``window`` None), at most ``window``
    positions in slots (sliding or chunked layers), or something reuse cannot rebuild (``known`` False)."""

    known: bool
    window: int | None = None

    def fits(self, length: int) -> bool:
        return self.known and (self.window is None or length <= self.window)


def _layout(cache: Any) -> _Layout:
    """The layout of ``cache``'s layers (exact layer types only: a subclass may hold other state)."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    window: int | None = None
    layers = getattr(cache, "layers", None)
    if not layers:
        return _Layout(False)
    for layer in layers:
        if type(layer) is DynamicSlidingWindowLayer:
            keep = int(layer.sliding_window) - 1
            window = keep if window is None else min(window, keep)
        elif type(layer) is not DynamicLayer:
            return _Layout(False)
    return _Layout(True, window)


def _spans(n: int, r: int, L: int, R: int, P: int) -> list[tuple[int, int]]:
    """Cache slots of a row's first ``P`` real positions, as (start, stop) spans: ``n`` reused
    positions ending at slot ``L``, then ``r`` computed ones ending at slot ``L + R``."""
    head = min(P, n)
    spans = [(L - n, L - n + head)] if head else []
    if P > head:
        start = L + R - r
        spans.append((start, start + P - head))
    return spans


def _keep(prefixes: ModelPrefixes, prefix_ids: Sequence[torch.Tensor], covered: Sequence[int], cache: Any,
          reuse: Sequence[int], rest: Sequence[int], L: int, R: int) -> None:
    """Copy each row's leading-text keys and values out of a prefilled (B, heads, L + R, d) cache
    (rows whose leading text a cached prefix ``covered`` already are skipped)."""
    layout = _layout(cache)
    if not layout.fits(L + R):
        prefixes.usable = layout.known  # a sliding window may fit a shorter run; other layouts never
        return
    for i, ids in enumerate(prefix_ids):
        if not len(ids) or covered[i] >= len(ids):
            continue
        spans = _spans(reuse[i], rest[i], L, R, len(ids))
        kv = []
        for layer in cache.layers:
            parts = [(layer.keys[i, :, a:b], layer.values[i, :, a:b]) for a, b in spans]  # (heads, span, d) each
            # cat copies (one span too): the entry holds its own memory, not a view of the batch's cache
            kv.append((torch.cat([k for k, _ in parts], dim=1), torch.cat([v for _, v in parts], dim=1)))
        prefixes.add(ids, kv)


def _full(forward: Forward, prompt: Any) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    positions = position_ids_from_mask(prompt.mask)  # (B, T)
    out, cache = forward(prompt.embeds, prompt.mask, positions, None)
    return out, cache, prompt.mask, positions


def prefill(forward: Forward, prompt: Any, config: Any) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """Prefill ``prompt`` (a :class:`~recmas_graph.runtime.agent.prompts.PromptBatch`) with ``forward``,
    reusing cached prefix KV where it can; return the last-position outputs, the cache, the (B, T')
    mask it covers and the (B, T'') position ids of the positions computed (the last is the prompt's end).

    ``config`` is the model's config (the cache's layer layout). Without a prefix cache on the
    prompt, or with autograd on, this is one plain forward call.
    """
    prefixes: ModelPrefixes | None = prompt.reuse
    if prefixes is None or prompt.prefix_ids is None or torch.is_grad_enabled():
        return _full(forward, prompt)
    embeds, mask = prompt.embeds, prompt.mask
    B, T, _ = embeds.shape
    found = [prefixes.match(ids) if prefixes.usable else (0, None) for ids in prompt.prefix_ids]
    covered = [n for n, _ in found]
    reuse = [min(n, t - 1) if n >= MIN_REUSE else 0 for n, t in zip(covered, prompt.lengths)]
    if prefixes.layout is None:  # once per model and run, not per prefill
        prefixes.layout = _layout(_cache_from([], config))
    layout = prefixes.layout
    L = max(reuse)
    rest = [t - n for t, n in zip(prompt.lengths, reuse)]
    R = max(rest)
    gap = any(n and r < R for n, r in zip(reuse, rest))  # a masked gap between a row's prefix and its rest
    if not any(reuse) or not layout.fits(L + R) or (gap and layout.window is not None):
        prefixes.last = [0] * B
        out, cache, mask, positions = _full(forward, prompt)
        _keep(prefixes, prompt.prefix_ids, covered, cache, [0] * B, list(prompt.lengths), 0, T)
        return out, cache, mask, positions
    # the rows' remaining embeddings, right-aligned in R positions
    tail = embeds.new_zeros(B, R, embeds.shape[-1])  # (B, R, H)
    full_mask = mask.new_zeros(B, L + R)  # (B, L + R)
    for i, (n, r) in enumerate(zip(reuse, rest)):
        tail[i, R - r:] = embeds[i, T - r:]
        full_mask[i, L - n:L] = 1
        full_mask[i, L + R - r:] = 1
    some = next(entry for (_, entry), n in zip(found, reuse) if n)
    layers = []
    for j, (k_ref, v_ref) in enumerate(some.kv):  # (heads, P, d) each
        keys = k_ref.new_zeros(B, k_ref.shape[0], L, k_ref.shape[-1])  # (B, heads, L, d), zeros where masked
        values = v_ref.new_zeros(B, v_ref.shape[0], L, v_ref.shape[-1])
        for i, (n, (_, entry)) in enumerate(zip(reuse, found)):
            if n:
                keys[i, :, L - n:] = entry.kv[j][0][:, :n]
                values[i, :, L - n:] = entry.kv[j][1][:, :n]
        layers.append((keys, values))
    cache = _cache_from(layers, config)
    positions = position_ids_from_mask(full_mask)[:, L:]  # (B, R)
    out, cache = forward(tail, full_mask, positions, cache)
    prefixes.reused_tokens += sum(reuse)
    prefixes.last = list(reuse)
    _keep(prefixes, prompt.prefix_ids, covered, cache, reuse, rest, L, R)
    return out, cache, full_mask, positions


def _cache_from(layers: list[tuple[torch.Tensor, torch.Tensor]], config: Any) -> Any:
    """A cache in the model's layer layout (what its forward would create), holding (B, heads, L, d)
    keys and values per layer when ``layers`` are given."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=layers or None, config=config)
