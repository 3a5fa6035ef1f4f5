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
and for models whose cache layers keep every position (a sliding-window layer qualifies while the
whole sequence fits in its window; otherwise the full prefill runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .forward import position_ids_from_mask

__all__ = ["MIN_REUSE", "PrefixCache", "ModelPrefixes", "prefill"]

#: Rows sharing fewer leading tokens with a cached prefix are prefilled in full.
MIN_REUSE = 16

#: (embeds, mask, positions, cache) -> (last-position outputs, cache): one forward call of the model.
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, Any]]


@dataclass
class _Entry:
    """One cached prefix: its token ids (P,) and, per layer, keys and values (heads, P, d)."""

    ids: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class ModelPrefixes:
    """The cached prefixes of one model in one run, and what reuse has saved."""

    entries: list[_Entry] = field(default_factory=list)
    reused_tokens: int = 0  # prompt positions not recomputed
    usable: bool = True  # False once the model's cache was seen not to keep every position

    def match(self, ids: torch.Tensor) -> tuple[int, _Entry | None]:
        """The cached entry sharing the longest leading run of tokens with ``ids``, and that length."""
        best, found = 0, None
        for entry in self.entries:
            n = min(len(ids), len(entry.ids))
            if n <= best:
                continue
            same = int(torch.cumprod(ids[:n] == entry.ids[:n], 0).sum())
            if same > best:
                best, found = same, entry
        return best, found

    def add(self, ids: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep a prefix (unless a cached one already covers it)."""
        if len(ids) and self.match(ids)[0] < len(ids):
            self.entries.append(_Entry(ids, kv))


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
        self._models.clear()


def _window(cache: Any) -> int | None:
    """The smallest number of positions a layer of ``cache`` keeps (None: all of them; 0: unknown layout)."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    limit: int | None = None
    for layer in getattr(cache, "layers", None) or [None]:
        if isinstance(layer, DynamicSlidingWindowLayer):
            keep = int(layer.sliding_window) - 1
            limit = keep if limit is None else min(limit, keep)
        elif type(layer) is not DynamicLayer:
            return 0
    return limit


def _fits(cache: Any, length: int) -> bool:
    window = _window(cache)
    return window is None or length <= window


def _keep(prefixes: ModelPrefixes, prefix_ids: Sequence[torch.Tensor], cache: Any, mask: torch.Tensor) -> None:
    """Copy each row's leading-text keys and values out of a prefilled (B, heads, T, d) cache."""
    if not prefixes.usable:
        return
    if not _fits(cache, mask.shape[1]):
        prefixes.usable = _window(cache) != 0  # a sliding window may fit a shorter run; other layouts never
        return
    layers = cache.layers
    for i, ids in enumerate(prefix_ids):
        if not len(ids) or prefixes.match(ids)[0] >= len(ids):
            continue
        where = mask[i].nonzero()[: len(ids), 0]  # (P,) cache positions of the row's first P real tokens
        prefixes.add(ids, [(layer.keys[i, :, where], layer.values[i, :, where]) for layer in layers])  # copies


def _full(forward: Forward, prompt: Any) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    positions = position_ids_from_mask(prompt.mask)  # (B, T)
    out, cache = forward(prompt.embeds, prompt.mask, positions, None)
    return out, cache, prompt.mask, positions


def prefill(forward: Forward, prompt: Any, config: Any) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """Prefill ``prompt`` (a :class:`~recmas_graph.runtime.prompts.PromptBatch`) with ``forward``,
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
    reuse = [min(n, t - 1) if n >= MIN_REUSE else 0 for (n, _), t in zip(found, prompt.lengths)]
    if not any(reuse):
        out, cache, mask, positions = _full(forward, prompt)
        _keep(prefixes, prompt.prefix_ids, cache, mask)
        return out, cache, mask, positions
    L = max(reuse)
    rest = [t - n for t, n in zip(prompt.lengths, reuse)]
    R = max(rest)
    probe = _layout_cache(config)
    if not _fits(probe, L + R):
        return _full(forward, prompt)
    # the rows' remaining embeddings, right-aligned in R positions
    tail = embeds.new_zeros(B, R, embeds.shape[-1])  # (B, R, H)
    full_mask = mask.new_zeros(B, L + R)  # (B, L + R)
    for i, (n, r) in enumerate(zip(reuse, rest)):
        tail[i, R - r:] = embeds[i, T - r:]
        full_mask[i, L - n:L] = 1
        full_mask[i, L + R - r:] = 1
    depth = len(next(entry for _, entry in found if entry is not None).kv)
    layers = []
    for j in range(depth):
        k_ref, v_ref = next(entry for _, entry in found if entry is not None).kv[j]  # (heads, P, d) each
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
    _keep(prefixes, prompt.prefix_ids, cache, full_mask)
    return out, cache, full_mask, positions


def _layout_cache(config: Any) -> Any:
    """An empty cache with the model's layer layout (what its forward would create)."""
    from transformers import DynamicCache

    return DynamicCache(config=config)


def _cache_from(layers: list[tuple[torch.Tensor, torch.Tensor]], config: Any) -> Any:
    """A cache holding (B, heads, L, d) keys and values per layer, in the model's layout."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=layers, config=config)
