"""(input, target) pairs for fitting links, read off frozen models running on a text corpus.

Inner link of an agent: the last hidden state ``h_t`` (what the latent rollout feeds the link)
against the input embedding of the next token, ``E[x_{t+1}]``.

Outer link of an edge: the source's inner-link output at ``t`` (a message is
``outer(inner_source(H))``) against the *target* model's input embedding of the text the source
would write next. The two tokenizers cut the same text differently, so tokens are aligned by
character offsets: source position ``t`` predicts source token ``t+1``, which starts at character
``c``; its partner is the target token covering ``c`` (else the next target token after ``c``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import RunError

__all__ = ["TokenStates", "encode_corpus", "inner_pairs", "outer_pairs"]


@dataclass
class TokenStates:
    """One model on one text: token ids (T,), character offsets (T, 2), last hidden states (T, H)."""

    ids: torch.Tensor
    offsets: list[tuple[int, int]]
    hidden: torch.Tensor


def _tokenize(tokenizer: Any, text: str, max_tokens: int) -> tuple[list[int], list[tuple[int, int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise RunError(f"calibration aligns tokens by character offsets, which {type(tokenizer).__name__} "
                       "cannot give", culprit="tokenizer", hint="use a model with a fast (Rust) tokenizer")
    enc = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=max_tokens)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


@torch.no_grad()
def encode_corpus(loaded: Any, texts: Sequence[str], *, max_tokens: int = 256, batch_size: int = 8,
                  progress: Callable[[int], None] | None = None) -> list[TokenStates]:
    """Run the frozen model of ``loaded`` on every text (right-padded batches): its tokens and states.

    ``progress`` receives the number of texts finished after each batch.
    """
    from ..runtime.agent.forward import backbone_of

    backbone = backbone_of(loaded.model)
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    out: list[TokenStates] = []
    for start in range(0, len(texts), batch_size):
        encoded = [_tokenize(loaded.tokenizer, t, max_tokens) for t in texts[start:start + batch_size]]
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)  # (B, T); right padding keeps positions
        for row, (tokens, _) in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        device = loaded.device
        hidden = backbone(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (B, T, H)
        for row, (tokens, offsets) in enumerate(encoded):
            out.append(TokenStates(ids[row, : len(tokens)], offsets, hidden[row, : len(tokens)].float().cpu()))
        if progress is not None:
            progress(min(start + batch_size, len(texts)))
    return out


@torch.no_grad()
def _embed(loaded: Any, ids: torch.Tensor) -> torch.Tensor:
    """Input embeddings as the model takes them (Gemma's scaling included): (T,) -> (T, H) float32 CPU."""
    embed = loaded.model.get_input_embeddings()
    return embed(ids.to(embed.weight.device)).float().cpu()


def inner_pairs(loaded: Any, states: Sequence[TokenStates]) -> tuple[torch.Tensor, torch.Tensor]:
    """``h_t`` and ``E[x_{t+1}]`` over every text: (N, H), (N, H)."""
    hs, es = [], []
    for s in states:
        if len(s.ids) < 2:
            continue
        hs.append(s.hidden[:-1])  # (T-1, H)
        es.append(_embed(loaded, s.ids[1:]))  # (T-1, H)
    if not hs:
        raise RunError("the corpus gave no token pairs", culprit="calibration corpus", hint="give longer texts")
    return torch.cat(hs), torch.cat(es)


def _partner(starts: list[int], ends: list[int], c: int) -> int | None:
    """Index of the target token covering character ``c``, else the first one starting after it."""
    j = bisect.bisect_right(starts, c) - 1
    while j > 0 and starts[j - 1] == starts[j]:
        j -= 1  # byte pieces of one character share its offsets: take the first
    if j >= 0 and starts[j] <= c < ends[j]:
        return j
    j += 1
    return j if j < len(starts) else None


@torch.no_grad()
def outer_pairs(source_inner: nn.Module, source: Sequence[TokenStates], target_loaded: Any,
                target: Sequence[TokenStates]) -> tuple[torch.Tensor, torch.Tensor]:
    """``inner_source(h_t)`` and the target's embedding of the aligned next token: (N, H_src), (N, H_dst)."""
    from ..runtime.agent.rollout import apply_link

    xs, es = [], []
    for src, dst in zip(source, target, strict=True):
        real = [j for j, (a, b) in enumerate(dst.offsets) if b > a]  # target tokens with text (no BOS)
        starts = [dst.offsets[j][0] for j in real]
        ends = [dst.offsets[j][1] for j in real]
        rows, partners = [], []
        for t in range(len(src.ids) - 1):
            a, b = src.offsets[t + 1]
            if b <= a:
                continue  # a special token has no text to align
            k = _partner(starts, ends, a)
            if k is not None:
                rows.append(t)
                partners.append(real[k])
        if not rows:
            continue
        h = src.hidden[rows]  # (n, H_src)
        link_device = next(iter(source_inner.parameters()), torch.empty(0)).device
        xs.append(apply_link(source_inner, h.to(link_device)).float().cpu())  # (n, H_src)
        es.append(_embed(target_loaded, dst.ids[partners]))  # (n, H_dst)
    if not xs:
        raise RunError("the corpus gave no aligned token pairs", culprit="calibration corpus", hint="give longer texts")
    return torch.cat(xs), torch.cat(es)
