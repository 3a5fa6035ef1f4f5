"""Open-answer QA: exact match and token F1 with the SQuAD v1.1 answer normalisation, several golds.

The normalisation and both scores are those of the official SQuAD v1.1 evaluation script
(``evaluate-v1.1.py``): lower case, drop punctuation, drop the articles *a*, *an*, *the*, collapse
whitespace; EM is equality of the normalised strings; F1 is the harmonic mean of token precision
and recall over the normalised tokens (0 when no token is shared); a prediction gets the best
score over the gold answers (``metric_max_over_ground_truths``).

The answer is read from the output as the ``reasoning`` prompts ask for it: the last complete
``\\boxed{}`` (``\\text{}`` unwrapped), else the last "answer is X" / "Answer: X", else the
output's first non-empty line. A sample's gold answers are ``meta["answers"]`` (else its
``gold``). DROP keeps its own metric (lm-eval's port of the official DROP evaluation: numbers must
match, multi-span answers are aligned span by span): ``drop_em_f1``.

>>> normalize_answer("The  Eiffel-Tower!"), exact_match("an apple", ["Apple"]), round(token_f1("the red car", ["red"]), 3)
('eiffeltower', 1.0, 0.667)
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .scoring import Score, last_boxed

__all__ = ["normalize_answer", "exact_match", "token_f1", "extract_open_answer", "gold_answers", "score_open_qa",
           "score_drop", "OPEN_QA_METRICS"]

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's ``normalize_answer``: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer, else 0.0."""
    return max((float(normalize_answer(prediction) == normalize_answer(g)) for g in golds), default=0.0)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """The best token F1 of the prediction over the gold answers (SQuAD v1.1)."""
    return max((_f1(prediction, g) for g in golds), default=0.0)


_ANSWER_LINE = re.compile(r"(?i)(?:final\s+answer|answer)(?:\s+is)?\s*[:：]?\s*(.+)")


def _unwrap(text: str) -> str:
    for macro in ("text", "textbf", "mathrm"):
        text = re.sub(r"\\" + macro + r"\{([^{}]*)\}", r"\1", text)
    return text.strip().strip("$").strip()


def extract_open_answer(output: str) -> tuple[str | None, str]:
    """The answer of ``output`` and how it was found (``boxed``, ``answer is``, ``first line``).

    >>> extract_open_answer(r"so it is \\boxed{\\text{Paris}}."), extract_open_answer("Thinking.\\nThe answer is Rome.")
    (('Paris', 'boxed'), ('Rome', 'answer is'))
    """
    boxed = last_boxed(output)
    if boxed is not None:
        return _unwrap(boxed), "boxed"
    found = [m.group(1) for m in _ANSWER_LINE.finditer(output)]
    if found:
        answer = found[-1].strip().strip("*").strip()
        answer = re.sub(r"\.\s*$", "", answer)
        if answer:
            return answer, "answer is"
    for line in output.splitlines():
        if line.strip():
            return line.strip(), "first line"
    return None, "empty output"


def gold_answers(gold: str, meta: Mapping[str, Any]) -> list[str]:
    """The accepted answers: ``meta["answers"]`` (a list; DROP's spans joined) else ``[gold]``."""
    answers = meta.get("answers")
    if isinstance(answers, (list, tuple)) and answers:
        return [" ".join(a) if isinstance(a, (list, tuple)) else str(a) for a in answers]
    return [gold]


def score_open_qa(output: str, gold: str, meta: Mapping[str, Any]) -> Score:
    """``open_qa``: EM (``correct``) and token F1 of the extracted answer over the gold answers."""
    answer, how = extract_open_answer(output)
    if answer is None:
        return Score(False, None, how, {"em": 0.0, "f1": 0.0})
    golds = gold_answers(gold, meta)
    em, f1 = exact_match(answer, golds), token_f1(answer, golds)
    return Score(em == 1.0, answer, how, {"em": em, "f1": f1})


def score_drop(output: str, gold: str, meta: Mapping[str, Any]) -> Score:
    """``drop_em_f1``: DROP's EM and F1 (lm-eval's port of the official script) over the gold answers
    (each a list of spans), the best over them; needs the ``lmeval`` extra."""
    try:
        from lm_eval.tasks.drop.utils import get_metrics
    except ImportError:  # pragma: no cover - exercised without the extra
        from ..errors import RunError

        raise RunError("the DROP metric is lm-eval's", culprit="drop_em_f1",
                       hint="pip install 'recmas-graph[lmeval]', or score with --metric open_qa") from None
    answer, how = extract_open_answer(output)
    if answer is None:
        return Score(False, None, how, {"em": 0.0, "f1": 0.0})
    golds = meta.get("answers") or [[gold]]
    em = f1 = 0.0
    for spans in golds:
        spans = list(spans) if isinstance(spans, (list, tuple)) else [str(spans)]
        if not spans or not str(spans[0]).strip():
            continue
        e, f = get_metrics(answer, spans if len(spans) > 1 else spans[0])
        em, f1 = max(em, float(e)), max(f1, float(f))
    return Score(em == 1.0, answer, how, {"em": em, "f1": f1})


def _metrics() -> list[Any]:
    from .scoring import Metric

    return [Metric("open_qa", "EM and token F1 (SQuAD v1.1 normalisation) of the boxed or stated answer over "
                   "every gold answer; correct: EM", score_open_qa, ("reasoning",)),
            Metric("drop_em_f1", "DROP's EM and F1 (numbers must match; spans aligned), lm-eval's port of the "
                   "official script; correct: EM", score_drop, ("reasoning",))]


#: The open-QA metrics, registered with the built-ins.
OPEN_QA_METRICS = {m.name: m for m in _metrics()}
