"""The ``ridge_realign`` link: hidden states -> input embeddings by ridge regression (training-free).

LatentMAS feeds a model's last-layer hidden state back as its next input embedding after a linear
"realignment" ``W = argmin_W ||H W - E||^2 + lam ||W||^2 = (H^T H + lam I)^{-1} H^T E``, where the
rows of ``H`` are the model's output embeddings (``lm_head`` rows: the hidden state that predicts
token ``v``) and the rows of ``E`` its input embeddings (what token ``v`` looks like as an input).
With ``match_norm`` the result is rescaled to the mean norm of the input embeddings.

:meth:`RidgeRealign.calibrate` fits ``W`` from a loaded model (the executor calls it when the
topology gives the link no weights); :meth:`RidgeRealign.fit` fits it from any ``(H, E)`` sample,
e.g. token hidden states and the embeddings of the tokens that follow them (``texts=`` in
:meth:`~RidgeRealign.calibrate`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from recmas_graph.errors import LinkError

__all__ = ["RidgeRealign", "ridge_solve", "ridge_solve_stats"]


def ridge_solve_stats(hth: torch.Tensor, hte: torch.Tensor, lam: float) -> torch.Tensor:
    """``W = (H^T H + lam I)^{-1} H^T E`` from the sufficient statistics ``H^T H`` and ``H^T E``.

    Solved in float64; returns float32 of shape ``(d_in, d_out)``.
    """
    d = hth.shape[0]
    gram = hth.double() + lam * torch.eye(d, dtype=torch.float64, device=hth.device)  # (d_in, d_in)
    return torch.linalg.solve(gram, hte.double()).float()  # (d_in, d_out)


def ridge_solve(h: torch.Tensor, e: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression ``argmin_W ||h W - e||^2 + lam ||W||^2``; ``h`` (N, d_in), ``e`` (N, d_out)."""
    if h.ndim != 2 or e.ndim != 2 or h.shape[0] != e.shape[0]:
        raise ValueError(f"expected h (N, d_in) and e (N, d_out), got {tuple(h.shape)} and {tuple(e.shape)}")
    h64, e64 = h.double(), e.double()
    return ridge_solve_stats(h64.T @ h64, h64.T @ e64, lam)


def _row_chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class RidgeRealign(nn.Module):
    """``y = x W`` (then rescaled to the embeddings' mean norm when ``match_norm``); (..., d_in) -> (..., d_out).

    Before calibration ``W`` is the identity (square) and ``target_norm`` is 0 (no rescaling), so an
    uncalibrated link passes hidden states through. ``lam`` is the ridge penalty relative to the
    mean diagonal of ``H^T H`` (scale-free).
    """

    def __init__(self, in_dim: int, out_dim: int, *, lam: float = 1e-3, match_norm: bool = True,
                 chunk_rows: int = 8192) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise LinkError(f"dimensions must be positive, got {in_dim} -> {out_dim}", culprit="ridge_realign")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.lam, self.match_norm, self.chunk_rows = float(lam), bool(match_norm), int(chunk_rows)
        init = torch.eye(in_dim, out_dim) if in_dim == out_dim else torch.zeros(in_dim, out_dim)
        self.weight = nn.Parameter(init)  # (d_in, d_out)
        self.register_buffer("target_norm", torch.zeros(()))

    @property
    def calibrated(self) -> bool:
        """Whether ``W`` was fitted (a fitted link has a positive ``target_norm``)."""
        return bool(self.target_norm > 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(self.weight.dtype) @ self.weight  # (..., d_in) -> (..., d_out)
        if self.match_norm and self.target_norm > 0:
            y = y * (self.target_norm / y.norm(dim=-1, keepdim=True).clamp_min(1e-6))
        return y.to(x.dtype)

    # ------------------------------------------------------------------ fitting

    @torch.no_grad()
    def fit_stats(self, hth: torch.Tensor, hte: torch.Tensor, target_norm: float) -> "RidgeRealign":
        """Set ``W`` from ``H^T H`` (d_in, d_in) and ``H^T E`` (d_in, d_out); ``lam`` is relative."""
        if hth.shape != (self.in_dim, self.in_dim) or hte.shape != (self.in_dim, self.out_dim):
            raise LinkError(
                f"statistics of shapes {tuple(hth.shape)} and {tuple(hte.shape)} do not fit a "
                f"{self.in_dim} -> {self.out_dim} link", culprit="ridge_realign",
                hint="calibrate on a model whose hidden size is the link's size")
        scale = float(hth.diagonal().double().mean().clamp_min(1e-12))
        w = ridge_solve_stats(hth, hte, self.lam * scale)
        self.weight.copy_(w.to(self.weight.device, self.weight.dtype))
        self.target_norm.fill_(float(target_norm))
        return self

    @torch.no_grad()
    def fit(self, h: torch.Tensor, e: torch.Tensor) -> "RidgeRealign":
        """Fit ``W`` so that ``h W ~ e``; ``h`` (N, d_in) hidden states, ``e`` (N, d_out) embeddings."""
        h64, e64 = h.double(), e.double()
        return self.fit_stats(h64.T @ h64, h64.T @ e64, float(e64.norm(dim=-1).mean()))

    @torch.no_grad()
    def calibrate(self, loaded_model: Any, *, texts: Iterable[str] | None = None, max_length: int = 256) -> "RidgeRealign":
        """Fit ``W`` to a loaded model (``.model``, ``.tokenizer``, ``.hidden_size``).

        Without ``texts``: ``H`` = the output-embedding (``lm_head``) rows, ``E`` = the input
        embeddings of the same tokens, as ``model.get_input_embeddings()`` produces them (scaled
        for Gemma). With ``texts``: ``H`` = last-layer hidden states at each position, ``E`` = the
        input embedding of the next token.
        """
        model = loaded_model.model
        hidden = int(getattr(loaded_model, "hidden_size", self.in_dim))
        if hidden != self.in_dim or self.in_dim != self.out_dim:
            raise LinkError(
                f"a {self.in_dim} -> {self.out_dim} ridge link cannot be calibrated on a model of hidden size {hidden}",
                culprit="ridge_realign", hint="use ridge_realign as an inner link (hidden -> hidden of one model)")
        embed = model.get_input_embeddings()
        device = embed.weight.device
        d = self.in_dim
        hth = torch.zeros(d, d, dtype=torch.float64, device=device)  # (d, d)
        hte = torch.zeros(d, d, dtype=torch.float64, device=device)  # (d, d)
        norm_sum, count = 0.0, 0
        for h, e in (self._vocab_pairs(model, embed) if texts is None
                     else self._text_pairs(loaded_model, embed, list(texts), max_length)):
            h, e = h.float(), e.float()  # (n, d) each
            hth += (h.T @ h).double()
            hte += (h.T @ e).double()
            norm_sum += float(e.norm(dim=-1).double().sum())
            count += e.shape[0]
        if count == 0:
            raise LinkError("no calibration data (empty texts?)", culprit="ridge_realign",
                            hint="pass some texts, or none to calibrate on the embedding matrices")
        return self.fit_stats(hth, hte, norm_sum / count)

    def _vocab_pairs(self, model: nn.Module, embed: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        out_weight = out.weight if out is not None else embed.weight  # (V, d)
        vocab = min(out_weight.shape[0], embed.weight.shape[0])
        for rows in _row_chunks(vocab, self.chunk_rows):
            ids = torch.arange(rows.start, rows.stop, device=embed.weight.device)
            yield out_weight[rows], embed(ids)  # (n, d), (n, d)

    def _text_pairs(self, loaded: Any, embed: nn.Module, texts: list[str],
                    max_length: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        tok, model = loaded.tokenizer, loaded.model
        device = embed.weight.device
        for text in texts:
            ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(device)
            if ids.shape[1] < 2:
                continue
            out = model(input_ids=ids, output_hidden_states=True)
            h = out.hidden_states[-1][0, :-1]  # (T-1, d): post-norm hidden state at t
            yield h, embed(ids[:, 1:])[0]  # (T-1, d): embedding of token t+1
