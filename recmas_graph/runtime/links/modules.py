"""Link modules: the small trainable MLPs of RecursiveMAS.

``inner_ln_res`` (H -> H) maps an agent's last hidden state to its next input embedding;
``outer_ln_res`` (H_src -> H_dst) carries latent thoughts from one agent to another (docs/spec.md,
"Links"). Parameter names are the released checkpoints' state-dict keys, so their ``.pt`` files
load as they are.

Initialisation (both ``ln_res`` links, ``init="zero_branch"``, the default): ``proj1`` ~ N(0, 0.02)
with zero bias, ``proj2`` all zeros, ``residual_proj`` (semi-)orthogonal with zero bias, LayerNorms
weight 1 / bias 0. The MLP branch therefore starts at exactly zero: an untrained inner link is
``post_ln(x)`` and an untrained outer link ``ln_target(residual_proj(x))`` -- the direction of the
hidden state is kept (norm-preserving for ``in_dim <= out_dim``) and the output has the unit
per-vector scale of a LayerNorm, as in the reference. ``init="torch"`` keeps PyTorch's defaults
(what the reference training code used).

>>> link = OuterLnRes(8, 4)
>>> link(torch.randn(2, 3, 8)).shape
torch.Size([2, 3, 4])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import LinkError

__all__ = ["InnerLnRes", "OuterLnRes", "IdentityLink", "INIT_SCHEMES"]

INIT_SCHEMES: tuple[str, ...] = ("zero_branch", "torch")


def _check_init(init: str, link: str) -> None:
    if init not in INIT_SCHEMES:
        raise LinkError(f"unknown init scheme {init!r}", culprit=link, hint=f"use one of: {', '.join(INIT_SCHEMES)}")


def _width(dim: int, mult: float, link: str) -> int:
    """Intermediate width ``round(dim * mult)``, refusing non-positive results."""
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not math.isfinite(mult) or mult <= 0:
        raise LinkError(f"hidden_mult must be a positive number, got {mult!r}", culprit=link)
    width = int(round(dim * mult))
    if width < 1:
        raise LinkError(f"hidden_mult={mult!r} gives an empty intermediate layer for dim {dim}", culprit=link,
                        hint="use a larger hidden_mult")
    return width


def _check_dim(value: Any, name: str, link: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LinkError(f"{name} must be a positive integer, got {value!r}", culprit=link)
    return value


def _init_branch(proj1: nn.Linear, proj2: nn.Linear) -> None:
    """proj1 ~ N(0, 0.02), zero bias; proj2 all zeros (the MLP branch starts at exactly zero)."""
    nn.init.normal_(proj1.weight, std=0.02)
    nn.init.zeros_(proj1.bias)
    nn.init.zeros_(proj2.weight)
    nn.init.zeros_(proj2.bias)


class InnerLnRes(nn.Module):
    """Reference inner link ``post_ln(x + proj2(GELU(proj1(pre_ln(x)))))``, hidden -> hidden."""

    def __init__(self, in_dim: int, out_dim: int | None = None, *, hidden_mult: float = 1,
                 init: str = "zero_branch") -> None:
        super().__init__()
        _check_dim(in_dim, "in_dim", "inner_ln_res")
        out_dim = in_dim if out_dim is None else _check_dim(out_dim, "out_dim", "inner_ln_res")
        if out_dim != in_dim:
            raise LinkError(
                f"an inner link maps a hidden size to itself, got in_dim={in_dim}, out_dim={out_dim}",
                culprit="inner_ln_res",
                hint="use an outer link type (e.g. outer_ln_res) between different hidden sizes",
            )
        _check_init(init, "inner_ln_res")
        self.in_dim = self.out_dim = in_dim
        width = _width(in_dim, hidden_mult, "inner_ln_res")
        self.pre_ln = nn.LayerNorm(in_dim)
        self.proj1 = nn.Linear(in_dim, width)
        self.proj2 = nn.Linear(width, in_dim)
        self.post_ln = nn.LayerNorm(in_dim)
        if init == "zero_branch":
            _init_branch(self.proj1, self.proj2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map hidden states to input embeddings; computed in the link's dtype, returned in ``x``'s."""
        h = x.to(self.proj1.weight.dtype)  # (B, m, H)
        branch = self.proj2(F.gelu(self.proj1(self.pre_ln(h))))  # (B, m, H) -> (B, m, W) -> (B, m, H)
        return self.post_ln(h + branch).to(x.dtype)  # (B, m, H)

    @torch.no_grad()
    def match_output_rms(self, rms: float) -> None:
        """Scale the output LayerNorm so untrained outputs have the model's token-embedding RMS."""
        self.post_ln.weight.fill_(rms)

    def extra_repr(self) -> str:
        return f"dim={self.in_dim}"


class OuterLnRes(nn.Module):
    """Reference outer link ``ln_target(proj2(GELU(proj1(ln_source(x)))) + residual_proj(x))``, H_in -> H_out."""

    def __init__(self, in_dim: int, out_dim: int, *, hidden_mult: float = 2, init: str = "zero_branch") -> None:
        super().__init__()
        self.in_dim = _check_dim(in_dim, "in_dim", "outer_ln_res")
        self.out_dim = _check_dim(out_dim, "out_dim", "outer_ln_res")
        _check_init(init, "outer_ln_res")
        width = _width(out_dim, hidden_mult, "outer_ln_res")  # reference: 2 * out_dim
        self.ln_source = nn.LayerNorm(in_dim)
        self.proj1 = nn.Linear(in_dim, width)
        self.proj2 = nn.Linear(width, out_dim)
        self.residual_proj = nn.Linear(in_dim, out_dim)
        self.ln_target = nn.LayerNorm(out_dim)
        if init == "zero_branch":
            _init_branch(self.proj1, self.proj2)
            if not self.residual_proj.weight.is_meta:
                nn.init.orthogonal_(self.residual_proj.weight)
            nn.init.zeros_(self.residual_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map source hidden states to target input embeddings; computed in the link's dtype, returned in ``x``'s."""
        h = x.to(self.proj1.weight.dtype)  # (B, m, H_in)
        branch = self.proj2(F.gelu(self.proj1(self.ln_source(h))))  # (B, m, H_in) -> (B, m, W) -> (B, m, H_out)
        return self.ln_target(branch + self.residual_proj(h)).to(x.dtype)  # (B, m, H_out)

    @torch.no_grad()
    def match_output_rms(self, rms: float) -> None:
        """Scale the output LayerNorm so untrained outputs have the target's token-embedding RMS."""
        self.ln_target.weight.fill_(rms)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}"


class IdentityLink(nn.Module):
    """Pass hidden states through unchanged (only between equal hidden sizes); no parameters."""

    def __init__(self, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        _check_dim(in_dim, "in_dim", "identity")
        out_dim = in_dim if out_dim is None else _check_dim(out_dim, "out_dim", "identity")
        if out_dim != in_dim:
            raise LinkError(
                f"the identity link needs equal sizes, got {in_dim} -> {out_dim}",
                culprit="identity",
                hint="use a link type that projects between sizes (e.g. outer_ln_res)",
            )
        self.in_dim = self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` as it is."""
        return x  # (B, m, H) -> (B, m, H)

    def extra_repr(self) -> str:
        return f"dim={self.in_dim}"
