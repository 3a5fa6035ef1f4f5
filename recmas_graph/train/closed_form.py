"""Closed-form (ridge regression) fits of the built-in links to (input, target embedding) pairs.

Both reference links end in a LayerNorm, which keeps only a vector's direction and then applies a
per-dimension scale and shift. So each fit has two linear steps, each solved exactly:

1. the pre-norm part is fitted to the *standardised* targets ``z = (e - mean(e)) / std(e)`` (per
   vector); a LayerNorm of a vector close to ``z`` is close to ``z``;
2. the LayerNorm's scale and shift are fitted per dimension, ``e_d ~ gamma_d * LN(.)_d + beta_d``.

``outer_ln_res`` (``ln_target(residual_proj(x) + branch(x))``): ``residual_proj`` is the ridge
solution ``x -> z``; the MLP branch stays exactly zero (``proj1`` redrawn from the fit's generator). ``inner_ln_res``
(``post_ln(h + proj2(GELU(proj1(pre_ln(h)))))``) has an identity residual, so the branch carries the
map: ``proj1`` is a random orthogonal projection (unit-variance features; its bias, 0 for
non-linear features or 3 for GELU's nearly linear region, is chosen on held-out pairs) and
``proj2`` the ridge solution from those GELU features to ``T - h``, where ``T`` is ``z`` with ``h``'s own mean and
scale (LayerNorm cannot tell them apart, and the branch stays small). The ridge strength is picked
from a grid on held-out pairs. This generalises LatentMAS's realignment (a ridge map from output
to input embeddings of one model) to data and to pairs of models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LinkError

__all__ = ["RIDGE_GRID", "ridge", "standardise", "fit_link"]

#: Ridge strengths tried, relative to the mean eigenvalue of the features' covariance.
RIDGE_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def standardise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-vector zero mean, unit variance (a LayerNorm without its affine part): (N, D) -> (N, D)."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def _solve(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge ``y ~ x @ w + b`` (float64): (N, D), (N, K) -> w (D, K), b (K,)."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean  # (N, D), (N, K)
    gram = xc.T @ xc  # (D, D)
    lam = alpha * float(gram.diagonal().mean().clamp_min(1e-12))
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    w = torch.linalg.solve(gram + lam * eye, xc.T @ yc)  # (D, K)
    return w, y_mean - x_mean @ w


def ridge(x: torch.Tensor, y: torch.Tensor, *, grid: Sequence[float] = RIDGE_GRID,
          holdout: float = 0.1, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Ridge regression ``y ~ x @ w + b`` with its strength chosen on a held-out share of the rows.

    (N, D), (N, K) -> ``w`` (D, K), ``b`` (K,) refitted on every row (float32), and the strength.
    """
    x, y = x.double(), y.double()
    n = x.shape[0]
    if n < 4:
        raise LinkError(f"calibration needs more pairs than {n}", culprit="calibration corpus",
                        hint="give a longer corpus (--limit, or more texts)")
    order = torch.randperm(n, generator=generator).to(x.device)
    cut = max(1, int(n * holdout))
    val, fit = order[:cut], order[cut:]
    best, best_err = grid[0], float("inf")
    for alpha in grid:
        w, b = _solve(x[fit], y[fit], alpha)
        err = float((x[val] @ w + b - y[val]).pow(2).mean())
        if err < best_err:
            best, best_err = alpha, err
    w, b = _solve(x, y, best)
    return w.float(), b.float(), best


def _norm_affine(normalised: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension least squares ``target_d ~ weight_d * normalised_d + bias_d``: (N, D), (N, D) -> (D,), (D,)."""
    n_mean, t_mean = normalised.mean(0), target.mean(0)  # (D,)
    cov = ((normalised - n_mean) * (target - t_mean)).mean(0)  # (D,)
    var = (normalised - n_mean).pow(2).mean(0).clamp_min(1e-8)  # (D,)
    weight = cov / var
    return weight, t_mean - weight * n_mean


def _fit_norm(norm: nn.LayerNorm, normalised: torch.Tensor, target: torch.Tensor) -> None:
    """Set a LayerNorm's scale and shift to :func:`_norm_affine`."""
    weight, bias = _norm_affine(normalised, target)
    norm.weight.copy_(weight.to(norm.weight.dtype))
    norm.bias.copy_(bias.to(norm.bias.dtype))


@torch.no_grad()
def _fit_outer(link: nn.Module, x: torch.Tensor, e: torch.Tensor, generator: torch.Generator | None) -> float:
    dtype = link.residual_proj.weight.dtype
    w, b, alpha = ridge(x, standardise(e), generator=generator)  # (H_in, H_out), (H_out,)
    link.residual_proj.weight.copy_(w.T.to(dtype))
    link.residual_proj.bias.copy_(b.to(dtype))
    # the branch stays exactly zero; proj1 is drawn from the calibration's generator (as the
    # zero_branch init draws it), so a calibrated link does not depend on the seed it was built with
    link.proj1.weight.copy_(torch.randn(link.proj1.weight.shape, generator=generator).mul_(0.02).to(dtype))
    link.proj1.bias.zero_()
    link.proj2.weight.zero_()
    link.proj2.bias.zero_()
    _fit_norm(link.ln_target, standardise(x @ w + b), e)
    return alpha


#: Biases of ``proj1`` tried for the inner link: 0 (GELU's curved region: non-linear features) and 3
#: (GELU is nearly the identity there: features linear in the normalised hidden state).
INNER_OFFSETS: tuple[float, ...] = (0.0, 3.0)


def _inner_branch(link: nn.Module, h: torch.Tensor, e: torch.Tensor, q: torch.Tensor, offset: float,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Fit ``proj2`` for one ``proj1`` bias: its weights, bias, the GELU features and the ridge strength."""
    features = F.gelu(standardise(h) @ q.T + offset)  # (N, W)
    target = standardise(e) * h.std(-1, keepdim=True) + h.mean(-1, keepdim=True)  # (N, H): what h + branch aims at
    w, b, alpha = ridge(features, target - h, generator=generator)  # (W, H), (H,)
    return w, b, features, alpha


@torch.no_grad()
def _fit_inner(link: nn.Module, h: torch.Tensor, e: torch.Tensor, generator: torch.Generator | None) -> float:
    from .losses import link_loss

    dtype = link.proj1.weight.dtype
    width, dim = link.proj1.weight.shape
    q = torch.empty(width, dim)
    nn.init.orthogonal_(q, generator=generator)  # (W, H): unit-variance pre-activations of standardised h
    q = (q * (width / dim) ** 0.5 if width > dim else q).to(h.device)
    # choose proj1's bias on held-out rows by the link loss of the whole fitted link
    order = torch.randperm(h.shape[0], generator=generator).to(h.device)
    cut = max(1, h.shape[0] // 10)
    val, fit = order[:cut], order[cut:]
    best, best_loss = INNER_OFFSETS[0], float("inf")
    for offset in INNER_OFFSETS:
        w, b, feats, _ = _inner_branch(link, h[fit], e[fit], q, offset, generator)
        pre = h[fit] + feats @ w + b
        scale = _norm_affine(standardise(pre), e[fit])
        val_pre = h[val] + F.gelu(standardise(h[val]) @ q.T + offset) @ w + b
        loss = float(link_loss(standardise(val_pre) * scale[0] + scale[1], e[val]))
        if loss < best_loss:
            best, best_loss = offset, loss
    w, b, features, alpha = _inner_branch(link, h, e, q, best, generator)
    link.pre_ln.weight.fill_(1.0)
    link.pre_ln.bias.zero_()
    link.proj1.weight.copy_(q.to(dtype))
    link.proj1.bias.fill_(best)
    link.proj2.weight.copy_(w.T.to(dtype))
    link.proj2.bias.copy_(b.to(dtype))
    _fit_norm(link.post_ln, standardise(h + features @ w + b), e)
    return alpha


def fit_link(link: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
             generator: torch.Generator | None = None, where: str = "link") -> float:
    """Fit ``link`` in place so that ``link(inputs) ~ targets``; returns the chosen ridge strength.

    ``inputs`` (N, H_in) and ``targets`` (N, H_out) are float32 rows. The built-in ``inner_ln_res``
    and ``outer_ln_res`` are fitted as described above; a plugin's link type can take part by
    defining ``fit_closed_form(inputs, targets, generator=...)`` (returning a float).
    """
    from ..runtime.links.modules import InnerLnRes, OuterLnRes

    inputs, targets = inputs.float(), targets.float()
    if hasattr(link, "fit_closed_form"):
        return float(link.fit_closed_form(inputs, targets, generator=generator))
    if isinstance(link, InnerLnRes):
        return _fit_inner(link, inputs, targets, generator)
    if isinstance(link, OuterLnRes):
        return _fit_outer(link, inputs, targets, generator)
    raise LinkError(f"link type {type(link).__name__} has no closed-form calibration", culprit=where,
                    hint="train it instead (recmas train), or give its module a fit_closed_form(inputs, targets) method")
