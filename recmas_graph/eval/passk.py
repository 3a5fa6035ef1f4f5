"""Repeated sampling: draw seeds, pass@k (the unbiased estimator of Chen et al., 2021), majority vote.

An evaluation with ``samples=N`` draws ``N`` answers per question. Draw ``d`` of question ``q``
samples with :func:`draw_seed` ``(seed, q, d)``, a hash of the three, so a resumed, resharded or
reordered run draws the same answers. Each draw is one record, its id :func:`draw_id` ``(q, d)``,
with ``question_id`` and ``draw`` keys.

pass@k is the probability that at least one of ``k`` draws, taken without replacement from the
``n`` a question has, is correct: ``1 - C(n - c, k) / C(n, k)`` with ``c`` correct draws, averaged
over questions (the estimator of "Evaluating Large Language Models Trained on Code", Chen et al.,
2021, computed as its numerically stable product).

>>> pass_at_k(10, 0, 1), pass_at_k(10, 10, 1), pass_at_k(4, 1, 1), pass_at_k(4, 1, 2)
(0.0, 1.0, 0.25, 0.5)
>>> round(pass_at_k(5, 2, 3), 6)  # 1 - C(3,3)/C(5,3) = 1 - 1/10
0.9
>>> draw_seed(0, "q1", 0) == draw_seed(0, "q1", 0) != draw_seed(0, "q1", 1)
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import RecmasError

__all__ = ["pass_at_k", "draw_seed", "draw_id", "group_draws", "pass_at_k_by_question", "majority_vote",
           "summarize_draws", "check_samples", "same_answer"]


def check_samples(samples: Any) -> int:
    """``samples`` as a draw count (an integer >= 1), else a :class:`RecmasError` naming ``--samples``."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise RecmasError(f"samples must be an integer >= 1, got {samples!r}", culprit="--samples",
                          hint="give the number of answers to draw per question, e.g. --samples 10")
    return samples


def same_answer(metric: str) -> Callable[[str, str], bool]:
    """Whether two predictions of ``metric`` are the same answer (a majority vote's grouping): math by
    ``math-verify``, open answers after the SQuAD normalisation, others after collapsing whitespace."""
    if metric in ("boxed_math", "gsm8k_number"):
        from .scoring import math_equal

        return math_equal
    if metric in ("open_qa", "drop_em_f1"):
        from .openqa import normalize_answer

        return lambda a, b: normalize_answer(a) == normalize_answer(b)
    return lambda a, b: " ".join(a.split()) == " ".join(b.split())


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one question with ``n`` draws of which ``c`` are correct (``k <= n``)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):  # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
        miss *= 1.0 - k / i
    return 1.0 - miss


def draw_seed(seed: int, question_id: str, draw: int) -> int:
    """The sampling seed of draw ``draw`` of question ``question_id`` (a 31-bit hash of all three)."""
    digest = hashlib.sha256(f"{seed}\x00{question_id}\x00{draw}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def draw_id(question_id: str, draw: int) -> str:
    """The record id of draw ``draw`` of ``question_id``: ``"<question_id>@<draw>"``."""
    return f"{question_id}@{draw}"


def group_draws(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records by question (``question_id``, else ``id``), each question's draws in draw order."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        grouped.setdefault(str(record.get("question_id", record["id"])), []).append(record)
    for draws in grouped.values():
        draws.sort(key=lambda r: int(r.get("draw", 0)))
    return grouped


def pass_at_k_by_question(records: Sequence[Mapping[str, Any]], k: int) -> dict[str, float]:
    """Question id -> its pass@k (questions with fewer than ``k`` draws are left out)."""
    out = {}
    for qid, draws in group_draws(records).items():
        if len(draws) >= k:
            out[qid] = pass_at_k(len(draws), sum(1 for r in draws if r["correct"]), k)
    return out


def majority_vote(draws: Sequence[Mapping[str, Any]], same: Callable[[str, str], bool] | None = None) -> bool | None:
    """Whether the most frequent prediction of ``draws`` is correct (ties: the one drawn first).

    Draws without a prediction do not vote; ``None`` when none has one. ``same`` says whether two
    predictions are the same answer (default: equal after stripping and collapsing whitespace).
    """
    same = same or (lambda a, b: " ".join(a.split()) == " ".join(b.split()))
    groups: list[tuple[str, int, bool]] = []  # representative, votes, correct
    for record in draws:
        prediction = record.get("prediction")
        if prediction is None:
            continue
        for i, (rep, votes, correct) in enumerate(groups):
            if same(rep, str(prediction)):
                groups[i] = (rep, votes + 1, correct or bool(record["correct"]))
                break
        else:
            groups.append((str(prediction), 1, bool(record["correct"])))
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda i: (groups[i][1], -i))
    return groups[best][2]


def summarize_draws(records: Sequence[Mapping[str, Any]], samples: int, *,
                    same: Callable[[str, str], bool] | None = None, vote: bool = True) -> dict[str, Any]:
    """The repeated-sampling part of a summary: ``pass_at_k`` (``{"1": ..., ..., "N": ...}``, over the
    questions with all ``samples`` draws), ``majority_accuracy`` (``None`` when ``vote`` is off,
    e.g. for code, or nothing was predicted), ``questions`` and ``complete_questions``."""
    grouped = group_draws(records)
    complete = {q: d for q, d in grouped.items() if len(d) >= samples}
    passes: dict[str, float | None] = {}
    for k in range(1, samples + 1):
        values = [pass_at_k(len(d), sum(1 for r in d if r["correct"]), k) for d in complete.values()]
        passes[str(k)] = sum(values) / len(values) if values else None
    majority = None
    if vote and complete:
        votes = [majority_vote(d, same) for d in complete.values()]
        majority = sum(1 for v in votes if v) / len(votes)
    return {"samples": samples, "questions": len(grouped), "complete_questions": len(complete), "pass_at_k": passes,
            "majority_accuracy": majority}
