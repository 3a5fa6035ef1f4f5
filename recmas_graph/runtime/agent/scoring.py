"""Scoring continuations by likelihood: the rounds run once, then each candidate is teacher-forced.

:meth:`RecursiveSystem.score <recmas_graph.runtime.RecursiveSystem.score>` runs the schedule as
:meth:`~recmas_graph.runtime.RecursiveSystem.run` does (every pass before the output agent's decode
pass, text messages decoded greedily), but the decode pass decodes nothing: each of a question's
continuations is teacher-forced after the output agent's final prompt (every message spliced in),
and scored by the sum of its tokens' log-probabilities, as lm-evaluation-harness scores a
``loglikelihood`` request.

Tokenisation follows lm-eval's ``_encode_pair``: trailing whitespace of the context moves onto the
continuation, and the continuation's tokens are those of ``tokenizer(context + continuation)``
beyond ``len(tokenizer(context))``. The context that merges with a continuation is the prompt's last
text part (a latent message before it is not text), so the prompt is built with that part's
trailing whitespace trimmed (:meth:`~.prompts.Prompter.build` ``trim_end``).

The prompt is prefilled once per question (reusing cached prefixes of earlier rounds like the
decode pass, :mod:`.prefix`); its KV cache is then expanded over the question's continuations
(``reorder_cache`` with each continuation's question index) and every continuation runs in one
forward call, right-padded. Position ids come from the mask, so a question's scores do not depend
on its batch-mates or on padding (up to float rounding, as for :meth:`run`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import RunError
from .forward import lm_forward
from .prefix import prefill
from .prompts import PromptBatch
from ..execution.results import TraceRecord

__all__ = ["ContinuationScore", "ScoreResult", "continuation_ids", "score_continuations", "continuation_lists",
           "LOGITS_BYTES"]

#: The continuations of a batch run in chunks whose float32 log-probabilities stay under this size.
LOGITS_BYTES = 1 << 28


@dataclass(frozen=True)
class ContinuationScore:
    """One continuation's score: the sum of its tokens' log-probabilities (``logprob``), how many
    tokens it has (``tokens``), and whether every token is the greedy (argmax) one (``greedy``:
    lm-eval's ``is_greedy``)."""

    logprob: float
    tokens: int
    greedy: bool


@dataclass
class ScoreResult:
    """What :meth:`RecursiveSystem.score` returns: per question, one :class:`ContinuationScore` per
    continuation (in the order given), the trace of the run and its text messages."""

    questions: list[str]
    continuations: list[list[str]]
    scores: list[list[ContinuationScore]]
    trace: list[TraceRecord]
    wall_s: float
    texts: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    question_tokens: list[int] = field(default_factory=list)  # tokens generated for each question (text messages)

    @property
    def logprobs(self) -> list[list[float]]:
        """The summed log-probabilities, per question and continuation."""
        return [[s.logprob for s in row] for row in self.scores]

    @property
    def latent_steps(self) -> int:
        """Latent steps run for each question (all passes together)."""
        return sum(r.latent_steps for r in self.trace)


def continuation_ids(tokenizer: Any, end: tuple[str, str, bool], continuation: str) -> list[int]:
    """The token ids of ``continuation`` after a prompt whose last text part is ``end`` (a
    :attr:`PromptBatch.ends` entry: that part as tokenised, the whitespace trimmed off it, whether it
    was tokenised with the special tokens), split as lm-eval's ``_encode_pair`` splits them.

    >>> from recmas_graph.runtime.sources.tiny import build_tiny_tokenizer
    >>> tok = build_tiny_tokenizer()
    >>> continuation_ids(tok, ("Answer:", "", False), " yes") == tok(" yes").input_ids
    True
    """
    context, moved, special = end
    text = moved + continuation
    if not context:  # the prompt ends with a message: nothing to merge with
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    whole = tokenizer(context + text, add_special_tokens=special).input_ids
    return list(whole[len(tokenizer(context, add_special_tokens=special).input_ids):])


@torch.no_grad()
def score_continuations(model: nn.Module, tokenizer: Any, prompt: PromptBatch,
                        continuations: Sequence[Sequence[str]]) -> list[list[ContinuationScore]]:
    """Teacher-force each row's ``continuations`` after ``prompt`` (built with ``trim_end=True``).

    The prompt is prefilled once; its cache is expanded over the continuations (each row's copied
    for each of its continuations) and the continuations run right-padded in one forward call per
    chunk (chunks keep the float32 log-probabilities under :data:`LOGITS_BYTES`).
    """
    if prompt.ends is None:
        raise RunError("the prompt was built without trim_end=True", culprit="score_continuations()",
                       hint="build it with Prompter.build(..., trim_end=True)")
    if len(continuations) != len(prompt.lengths):
        raise RunError(f"{len(continuations)} continuation lists for {len(prompt.lengths)} prompts",
                       culprit="continuations", hint="give one list of continuations per question")
    ids = [[continuation_ids(tokenizer, prompt.ends[i], c) for c in row] for i, row in enumerate(continuations)]
    flat = [c for row in ids for c in row]  # N continuations, question by question
    if not flat:
        return [[] for _ in continuations]
    device = prompt.embeds.device

    def forward(e: torch.Tensor, m: torch.Tensor, p: torch.Tensor, c: Any) -> tuple[torch.Tensor, Any]:
        return lm_forward(model, e, m, p, c)

    last, cache, mask, positions = prefill(forward, prompt, model.config)  # (B, 1, V): predicts each first token
    N, C, V = len(flat), max(len(c) for c in flat), last.shape[-1]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    target = torch.tensor([c + [pad] * (C - len(c)) for c in flat], dtype=torch.long, device=device)  # (N, C)
    known = torch.tensor([[True] * len(c) + [False] * (C - len(c)) for c in flat], device=device)  # (N, C)
    rows = torch.tensor([i for i, row in enumerate(ids) for _ in row], dtype=torch.long, device=device)  # (N,)
    embed = model.get_input_embeddings()
    chunk = max(1, LOGITS_BYTES // (2 * max(C, 1) * V * 4))
    logprob, greedy = [], []
    for a in range(0, N, chunk):
        b = min(N, a + chunk)
        sel = rows[a:b]  # (n,) the question of each continuation of the chunk
        logits = last[sel]  # (n, 1, V)
        if C > 1:  # the continuations' tokens but the last, after each one's copy of its prompt's cache
            part = cache if b - a == N else copy.deepcopy(cache)
            part.reorder_cache(sel)  # (B, heads, T', d) -> (n, heads, T', d) per layer
            fed = target[a:b, :-1]  # (n, C - 1)
            tail_mask = torch.cat([mask[sel], known[a:b, :-1].to(mask.dtype)], dim=1)  # (n, T' + C - 1)
            tail_pos = positions[sel, -1:] + 1 + torch.arange(C - 1, device=device)  # (n, C - 1)
            out, _ = lm_forward(model, embed(fed), tail_mask, tail_pos, part, logits_to_keep=C - 1)  # (n, C - 1, V)
            logits = torch.cat([logits, out], dim=1)  # (n, C, V): position j predicts token j
        lp = torch.log_softmax(logits.float(), dim=-1)  # (n, C, V)
        tokens = lp.gather(-1, target[a:b, :, None]).squeeze(-1)  # (n, C)
        logprob.append(torch.where(known[a:b], tokens, 0.0).sum(-1))  # (n,)
        greedy.append(((lp.argmax(-1) == target[a:b]) | ~known[a:b]).all(-1))  # (n,)
    sums, hits = torch.cat(logprob).tolist(), torch.cat(greedy).tolist()
    out_rows: list[list[ContinuationScore]] = []
    k = 0
    for row in ids:
        out_rows.append([ContinuationScore(float(sums[k + j]), len(c), bool(hits[k + j])) for j, c in enumerate(row)])
        k += len(row)
    return out_rows


def continuation_lists(questions: Sequence[Any], continuations: Sequence[Any]) -> tuple[tuple[str, ...], ...]:
    """One tuple of continuations per question (a string alone is one continuation)."""
    if isinstance(continuations, str) or not isinstance(continuations, Sequence):
        raise RunError("continuations must be a list with one entry per question", culprit="continuations",
                       hint='e.g. score(["Q1?", "Q2?"], [[" yes", " no"], [" 4"]])')
    if len(continuations) != len(questions):
        raise RunError(f"{len(continuations)} continuation lists for {len(questions)} questions",
                       culprit="continuations", hint="give one list of continuations per question")
    found = []
    for i, row in enumerate(continuations):
        items = [row] if isinstance(row, str) else row
        if not isinstance(items, Sequence) or not all(isinstance(c, str) for c in items):
            raise RunError(f"continuations[{i}] must be a string or a list of strings, got {type(row).__name__}",
                           culprit="continuations", hint="give each question's candidate texts as a list of strings")
        found.append(tuple(items))
    return tuple(found)
