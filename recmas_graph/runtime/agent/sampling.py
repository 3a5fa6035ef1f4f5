"""Seeded sampling: draw one token per row with noise from a counter-based hash, batch-independent.

Row ``i`` draws its Gumbel noise from a hash of ``(seeds[i], stream, step, token id)`` (murmur3's
32-bit finaliser, computed on int64 tensors without overflow), so the token it draws depends on its
seed and the processed scores of its own row only, never on the batch it sits in, and the draw
needs no per-row ``torch.Generator`` and no host round trip. ``argmax(scores + Gumbel)`` draws a
token with probability ``softmax(scores)`` (the Gumbel-max trick).

>>> keys = row_keys([7], stream_id("solver", 3, "decode"), torch.device("cpu"))
>>> int(sample(torch.tensor([[0.0, float("-inf"), float("-inf")]]), keys, 0))
0
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["stream_id", "row_keys", "gumbel", "sample"]

_M32 = 0xFFFFFFFF


def _mul32(x: Any, c: int) -> Any:
    """``(x * c) mod 2**32`` for 32-bit ``x`` (an int or an int64 tensor) without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def _fmix32(x: Any) -> Any:
    """murmur3's 32-bit finaliser: a bijective mixer of 32-bit values (ints or int64 tensors)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def stream_id(*parts: object) -> int:
    """A 32-bit id of a random stream, e.g. ``stream_id("solver", 3, "decode")``."""
    return zlib.crc32(":".join(map(str, parts)).encode())


def row_keys(seeds: Sequence[int], stream: int, device: torch.device) -> torch.Tensor:
    keys = [_fmix32(_fmix32(int(s) & _M32) ^ (stream & _M32)) for s in seeds]
    return torch.tensor(keys, dtype=torch.long, device=device)  # (B,)


def gumbel(keys: torch.Tensor, step: int, ids: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise for (B, k) token ids from each row's key and the step: (B, k) float32.

    The uniform draw takes 23 bits, so ``u`` is exact in float32 and lies strictly inside (0, 1):
    the noise is always finite.
    """
    base = _fmix32(keys ^ _fmix32((step * 0x9E3779B9 + 1) & _M32))  # (B,)
    h = _fmix32(_fmix32((base[:, None] + _mul32(ids, 0x27D4EB2F)) & _M32))  # (B, k)
    u = ((h >> 9).to(torch.float32) + 0.5) * (1.0 / (1 << 23))  # (B, k) in (2^-24, 1 - 2^-24)
    return -torch.log(-torch.log(u))


def sample(scores: torch.Tensor, keys: torch.Tensor, step: int, top_k: int = 0) -> torch.Tensor:
    """One token per row from processed scores (B, V) by the Gumbel-max trick: (B,).

    Only finite scores are candidates (filtered tokens stay at -inf), so a row draws the same token
    whatever its batch-mates. With ``top_k`` the candidates are the ``top_k`` best scores; without,
    the most candidates any row has (one host sync to count them).
    """
    V = scores.shape[-1]
    k = min(top_k, V) if top_k else int(torch.isfinite(scores).sum(-1).max())
    if k < V:
        vals, ids = scores.topk(max(k, 1), dim=-1)  # (B, k)
    else:
        vals, ids = scores, torch.arange(V, device=scores.device).expand_as(scores)
    noisy = torch.where(torch.isfinite(vals), vals + gumbel(keys, step, ids), vals)  # (B, k); -inf stays
    pick = noisy.argmax(-1, keepdim=True)  # (B, 1)
    return ids.gather(-1, pick).squeeze(-1)  # (B,)
