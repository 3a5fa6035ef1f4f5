"""Link losses: how close a link's outputs are to the input embeddings they stand for.

The inner-link loss of the paper's inner loop is ``1 - cos(inner(h_t), E[x_{t+1}])`` plus a small
MSE term; we make the MSE term scale-free (divided by the targets' mean square) so one weight
suits every model (Gemma's embeddings are scaled by sqrt(H), SmolLM2's are not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MSE_WEIGHT", "link_loss"]

#: Weight of the relative MSE term next to the cosine term.
MSE_WEIGHT = 0.1


def link_loss(pred: torch.Tensor, target: torch.Tensor, *, mse_weight: float = MSE_WEIGHT) -> torch.Tensor:
    """``mean(1 - cos(pred, target)) + mse_weight * mean((pred - target)^2) / mean(target^2)``.

    ``pred`` and ``target`` are ``(..., H)``; the result is a scalar (float32).

    >>> x = torch.randn(4, 8)
    >>> float(link_loss(x, x)) < 1e-6, float(link_loss(-x, x)) > 2
    (True, True)
    """
    pred, target = pred.float(), target.float()  # (..., H)
    cos = F.cosine_similarity(pred, target, dim=-1)  # (...)
    mse = (pred - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)
    return (1 - cos).mean() + mse_weight * mse
