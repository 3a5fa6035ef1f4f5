"""Multiple choice by likelihood: which option the system finds most likely, as lm-eval scores it.

A multiple-choice sample is asked without its option lines (its stem: the cloze formulation of
lm-eval's ``arc_easy`` and OLMES's "RC" format; listing the options would make it a letter
choice, which small models answer at chance), and each option's text, after one space (lm-eval's
``target_delimiter``), is a continuation scored by :meth:`RecursiveSystem.score
<recmas_graph.runtime.RecursiveSystem.score>` after the output agent's final prompt. Then, exactly
as lm-eval's ``multiple_choice`` tasks:

- ``acc``: the option with the largest summed log-likelihood is the gold one;
- ``acc_norm``: the same with each log-likelihood divided by the length in characters of the
  option's text (lm-eval's ``completion_len``, the delimiter not counted).

Ties go to the first option (``numpy.argmax``).

>>> best([-3.0, -2.0, -2.5], ["a", "bbbbbbbb", "cc"])
(1, 1)
>>> best([-3.0, -6.0], ["a", "bbbbbbbb"])
(0, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RunError
from .datasets import Dataset, Sample
from .scoring import CHOICE_LETTERS

__all__ = ["SCORINGS", "ChoiceQuestion", "choice_question", "resolve_scoring", "best", "TARGET_DELIMITER"]

#: How an evaluation scores: by the options' likelihood, or by reading a generated answer.
SCORINGS: tuple[str, ...] = ("likelihood", "generate")

#: What separates the prompt from an option's text in a continuation (lm-eval's default).
TARGET_DELIMITER = " "


@dataclass(frozen=True)
class ChoiceQuestion:
    """A multiple-choice sample as likelihood scoring asks it: the ``question`` without its option
    lines, the ``options``' texts, their ``letters`` and the index of the ``gold`` option."""

    question: str
    options: tuple[str, ...]
    letters: str
    gold: int

    @property
    def continuations(self) -> list[str]:
        """The continuations scored: each option's text after :data:`TARGET_DELIMITER`."""
        return [TARGET_DELIMITER + text for text in self.options]


def _without_options(question: str, options: Sequence[str], letters: str) -> str:
    """``question`` without trailing option lines ``A. text`` (as the packaged sets list them)."""
    listed = "\n" + "\n".join(f"{letter}. {text}" for letter, text in zip(letters, options))
    return question[: -len(listed)] if question.endswith(listed) else question


def choice_question(sample: Sample) -> ChoiceQuestion:
    """The :class:`ChoiceQuestion` of a multiple-choice ``sample``: its ``meta`` must hold the
    options' texts (``choices``), with optional ``letters`` (default ``A``, ``B``, ...) and ``stem``
    (the question without its option lines; default: the question with trailing ``A. text`` lines
    removed); its gold answer is a letter or an option's text."""
    where = f"sample {sample.id!r}"
    if sample.task != "choice":
        raise RunError(f"{where} is a {sample.task} question: likelihood scoring needs multiple-choice questions",
                       culprit=where, hint="use --scoring generate, or a multiple-choice dataset")
    options = sample.meta.get("choices")
    if not isinstance(options, Sequence) or isinstance(options, str) or not options:
        raise RunError(f"{where} has no options (a list 'choices' of option texts)", culprit=where,
                       hint='give each line a "choices" list (e.g. ["red", "blue"]), or use --scoring generate')
    options = tuple(str(o) for o in options)
    letters = str(sample.meta.get("letters") or CHOICE_LETTERS[: len(options)])
    if len(letters) != len(options):
        raise RunError(f"{where} has {len(options)} options but {len(letters)} letters", culprit=where,
                       hint="give one letter per option (or none: A, B, ...)")
    gold = sample.gold.strip()
    if gold in letters and len(gold) == 1:
        index = letters.index(gold)
    elif gold in options:
        index = options.index(gold)
    else:
        raise RunError(f"the gold answer {sample.gold!r} of {where} is neither an option letter ({letters}) nor an "
                       "option's text", culprit=where, hint="give the gold answer as the letter of an option")
    stem = sample.meta.get("stem")
    question = str(stem) if stem else _without_options(sample.question, options, letters)
    return ChoiceQuestion(question, options, letters, index)


def resolve_scoring(scoring: str | None, dataset: Dataset) -> str:
    """The scoring an evaluation of ``dataset`` uses: ``scoring`` when given (``likelihood`` only
    for a multiple-choice dataset), else ``likelihood`` for multiple-choice datasets and
    ``generate`` for the others."""
    if scoring is None:
        return "likelihood" if dataset.task == "choice" else "generate"
    if scoring not in SCORINGS:
        raise RunError(f"unknown scoring {scoring!r}", culprit="--scoring", hint=f"use one of: {', '.join(SCORINGS)}")
    if scoring == "likelihood" and dataset.task != "choice":
        raise RunError(f"likelihood scoring needs a multiple-choice dataset; {dataset.name} is a {dataset.task} dataset",
                       culprit="--scoring", hint="use --scoring generate (the default for it), or a multiple-choice "
                                                 "dataset (arc_easy, arc_challenge, mmlu, medqa, ...)")
    return scoring


def best(logprobs: Sequence[float], options: Sequence[str]) -> tuple[int, int]:
    """The options ``acc`` and ``acc_norm`` pick: the largest log-likelihood, and the largest per
    character of the option's text (lm-eval's definitions; the first on a tie)."""
    if not logprobs or len(logprobs) != len(options):
        raise ValueError("one log-likelihood per option is needed")
    norm = [lp / max(len(text), 1) for lp, text in zip(logprobs, options)]
    return _argmax(logprobs), _argmax(norm)


def _argmax(values: Sequence[Any]) -> int:
    top = 0
    for i, v in enumerate(values):
        if v > values[top]:
            top = i
    return top
