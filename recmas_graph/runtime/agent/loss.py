"""The teacher-forced answer loss: cross-entropy of answer tokens given prompt embeddings.

The answer (its tokens, then the end-of-sequence token) is appended to the left-padded prompt and
right-padded; one forward pass scores every answer token. Gradients flow back into the prompt
embeddings, and so into whatever latent messages were spliced into them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .forward import lm_forward, position_ids_from_mask
from .prompts import PromptBatch

__all__ = ["answer_nll", "answer_tokens"]


def _answer_ids(tokenizer: Any, answers: Sequence[str], eos_id: int | None) -> list[list[int]]:
    return [tokenizer(a, add_special_tokens=False).input_ids + ([eos_id] if eos_id is not None else []) for a in answers]


def answer_tokens(tokenizer: Any, answers: Sequence[str], eos_id: int | None) -> int:
    """How many answer tokens :func:`answer_nll` scores (the end token included)."""
    return sum(len(x) for x in _answer_ids(tokenizer, answers, eos_id))


def answer_nll(model: nn.Module, tokenizer: Any, prompt: PromptBatch, answers: Sequence[str], *,
               eos_id: int | None) -> tuple[torch.Tensor, int]:
    """Mean negative log-likelihood per answer token, and the number of answer tokens scored."""
    embed = model.get_input_embeddings()
    device = prompt.embeds.device
    ids = _answer_ids(tokenizer, answers, eos_id)
    A = max(1, max(len(x) for x in ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    target = torch.tensor([x + [pad] * (A - len(x)) for x in ids], device=device)  # (B, A)
    target_mask = torch.tensor([[1] * len(x) + [0] * (A - len(x)) for x in ids], device=device)  # (B, A)
    with torch.no_grad():
        answer_embeds = embed(target)  # (B, A, H): frozen token embeddings
    embeds = torch.cat([prompt.embeds, answer_embeds.to(prompt.embeds.dtype)], dim=1)  # (B, T + A, H)
    mask = torch.cat([prompt.mask, target_mask.to(prompt.mask.dtype)], dim=1)  # (B, T + A)
    logits, _ = lm_forward(model, embeds, mask, position_ids_from_mask(mask), use_cache=False,
                           logits_to_keep=A + 1)  # (B, A + 1, V): the last prompt position onwards
    pred = logits[:, :-1].float()  # (B, A, V): position T - 1 + j predicts answer token j
    labels = target.masked_fill(target_mask == 0, -100)  # (B, A)
    n = int(target_mask.sum())
    loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")
    return loss / max(n, 1), n
