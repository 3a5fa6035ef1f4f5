"""One forward call of a frozen model: the backbone (hidden states) or the LM head (logits), with a KV cache.

Position ids always come from the attention mask, so a left-padded sample gets the positions it
would get alone. transformers 5.x names the cache keyword ``cache`` (older releases:
``past_key_values``); both are handled.

>>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])).tolist()
[[0, 0, 0, 1], [0, 1, 2, 3]]
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch
from torch import nn

__all__ = ["position_ids_from_mask", "backbone_of", "backbone_forward", "lm_forward"]


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counting only attended tokens: (B, T) mask -> (B, T) positions (0 at padding)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@lru_cache(maxsize=None)
def _cache_keyword(forward_type: type) -> str:
    params = inspect.signature(forward_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out: Any) -> Any:
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else getattr(out, "past_key_values", None)


def backbone_of(model: nn.Module) -> nn.Module:
    """The decoder stack of a causal LM (its last hidden state is post final norm)."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.base_model


def backbone_forward(backbone: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                     cache: Any = None, use_cache: bool = False) -> tuple[torch.Tensor, Any]:
    """(B, T, H) embeddings -> (B, T, H) last hidden states, and the cache when ``use_cache``."""
    kwargs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions,
                              "use_cache": use_cache}
    if cache is not None:
        kwargs[_cache_keyword(type(backbone))] = cache
    out = backbone(**kwargs)
    return out.last_hidden_state, (_output_cache(out) if use_cache else None)


def lm_forward(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
               cache: Any = None, *, use_cache: bool = True, logits_to_keep: int = 1) -> tuple[torch.Tensor, Any]:
    """(B, T, H) embeddings -> (B, logits_to_keep, V) logits of the last positions, and the cache."""
    kwargs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions,
                              "use_cache": use_cache, "logits_to_keep": logits_to_keep}
    if cache is not None:
        kwargs[_cache_keyword(type(model))] = cache
    out = model(**kwargs)
    return out.logits, (_output_cache(out) if use_cache else None)
