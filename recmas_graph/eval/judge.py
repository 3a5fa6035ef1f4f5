"""An LLM judge as a metric: a model decides whether each answer means the same as the gold answer.

``evaluate(..., judge="pkg:smollm2-135m-instruct")`` (``recmas eval --judge MODEL``) loads the judge
model once (any reference the project can load: a packaged model offline, a Hugging Face id on a
machine that has it), and after each batch of answers asks it, in one batched greedy generation,
about every answer of the batch with :data:`JUDGE_PROMPT` (chat-templated when the model has a
template). The verdict is the first of the words ``correct`` / ``incorrect`` in its reply
(``None``: neither, counted as incorrect and reported as ``judge_unparsed``). Each record gets
``judge``: ``{"model", "correct", "verdict", "text"}`` (the raw reply in ``text``) before it is
written, so a resumed evaluation never judges a record twice. The summary adds ``judge_accuracy``.

The prompt is written here (the official pipeline's ``llm_judge.py`` was not available to compare
with): it asks the usual question of such judges, whether the predicted answer is equivalent to a
reference answer, answered in one word; ``docs/evaluation.md`` shows it in full.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RecmasError

__all__ = ["JUDGE_PROMPT", "JudgeSpec", "Judge", "parse_verdict", "judge_prompt"]

#: What the judge is asked, per answer (``{question}``, ``{gold}``: every accepted answer, ``{prediction}``).
JUDGE_PROMPT = (
    "You are grading an answer to a question. Decide whether the predicted answer is correct: it must "
    "mean the same as one of the reference answers (a different wording, an alias, an equivalent number or "
    "date, or extra explanation that does not contradict it is fine; a different, incomplete or hedged "
    "answer between several options is not).\n\n"
    "Question: {question}\n"
    "Reference answer(s): {gold}\n"
    "Predicted answer: {prediction}\n\n"
    "Reply with one word: Correct or Incorrect."
)

_VERDICT = re.compile(r"\b(not\s+correct|incorrect|correct|wrong|right|yes|no)\b", re.I)
_MEANING = {"correct": True, "right": True, "yes": True, "incorrect": False, "wrong": False, "no": False,
            "not correct": False}


def parse_verdict(text: str) -> bool | None:
    """The judge's verdict: the first of correct/incorrect (also right/wrong, yes/no) in ``text``.

    >>> parse_verdict("Correct."), parse_verdict(" incorrect"), parse_verdict("Not correct"), parse_verdict("maybe")
    (True, False, False, None)
    """
    match = _VERDICT.search(text)
    return None if match is None else _MEANING[" ".join(match.group(1).lower().split())]


def judge_prompt(question: str, golds: Sequence[str], prediction: str) -> str:
    """:data:`JUDGE_PROMPT` filled in for one answer."""
    return JUDGE_PROMPT.format(question=question.strip(), gold=" | ".join(g.strip() for g in golds),
                               prediction=prediction.strip())


@dataclass(frozen=True)
class JudgeSpec:
    """Which model judges and how: ``batch_size`` answers per generation, ``max_new_tokens`` per reply."""

    model: str
    batch_size: int = 8
    max_new_tokens: int = 8
    device: str | None = None
    dtype: str | None = None

    @classmethod
    def of(cls, model: str, options: Mapping[str, Any] | None = None) -> "JudgeSpec":
        """A spec from ``--judge MODEL`` and ``judge_options`` (checked now, before any model loads)."""
        if not isinstance(model, str) or not model.strip():
            raise RecmasError(f"the judge must be a model reference, got {model!r}", culprit="--judge",
                              hint="e.g. --judge pkg:smollm2-135m-instruct")
        given = dict(options or {})
        unknown = sorted(set(given) - {"batch_size", "max_new_tokens", "device", "dtype"})
        if unknown:
            raise RecmasError(f"unknown judge option(s) {', '.join(unknown)}", culprit="judge_options",
                              hint="judge options: batch_size, max_new_tokens, device, dtype")
        spec = cls(model.strip(), **given)
        for name in ("batch_size", "max_new_tokens"):
            value = getattr(spec, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RecmasError(f"judge {name} must be an integer >= 1, got {value!r}", culprit="judge_options")
        return spec

    def record(self) -> dict[str, Any]:
        """What of the judge changes the verdicts (part of an evaluation's configuration)."""
        return {"model": self.model, "max_new_tokens": self.max_new_tokens, "prompt": JUDGE_PROMPT}


class Judge:
    """A loaded judge model; :meth:`judge_records` adds verdicts to records, a batch at a time."""

    def __init__(self, spec: JudgeSpec, loaded: Any) -> None:
        self.spec = spec
        self.loaded = loaded
        self.calls = 0  # generations run (each judges up to spec.batch_size answers)

    @classmethod
    def load(cls, spec: JudgeSpec, *, registry: Any = None, cache: Any = None) -> "Judge":
        """Load the judge model (through ``cache`` when given: a model the system uses loads once) on
        ``spec.device`` (default: the first CUDA device when there is one, else the CPU)."""
        import torch

        from ..runtime.sources.loaded import ModelCache

        sources = getattr(registry, "model_sources", None) or None
        cache = cache if cache is not None else ModelCache(sources)
        device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(spec, cache.get(spec.model, device=device, dtype=spec.dtype, sources=sources))

    def _render(self, text: str) -> str:
        tokenizer = self.loaded.tokenizer
        if self.loaded.has_chat_template:
            return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return text + "\nVerdict:"

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """The judge's greedy replies to ``prompts`` (one batched generation)."""
        import torch

        self.calls += 1
        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        rendered = [self._render(p) for p in prompts]
        batch = tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=not self.loaded.has_chat_template)
        batch = {k: v.to(self.loaded.device) for k, v in batch.items()}
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=self.spec.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        return [tokenizer.decode(row, skip_special_tokens=True) for row in new]

    def judge(self, questions: Sequence[str], golds: Sequence[Sequence[str]],
              predictions: Sequence[str]) -> list[tuple[bool | None, str]]:
        """Verdict and raw reply for each answer, ``spec.batch_size`` per generation."""
        prompts = [judge_prompt(q, g, p) for q, g, p in zip(questions, golds, predictions)]
        out: list[tuple[bool | None, str]] = []
        for start in range(0, len(prompts), self.spec.batch_size):
            for text in self.generate(prompts[start:start + self.spec.batch_size]):
                out.append((parse_verdict(text), text))
        return out

    def judge_records(self, records: list[dict[str, Any]], samples: Sequence[Any]) -> None:
        """Add ``judge`` to each record that has none (its sample gives the question and gold answers)."""
        from .openqa import gold_answers

        todo = [(r, s) for r, s in zip(records, samples) if not isinstance(r.get("judge"), dict)]
        if not todo:
            return
        answers = [str(r["prediction"]) if r.get("prediction") is not None else str(r.get("output", ""))[-1000:]
                   for r, _ in todo]
        verdicts = self.judge([s.question for _, s in todo], [gold_answers(s.gold, s.meta) for _, s in todo], answers)
        for (record, _), (verdict, text) in zip(todo, verdicts):
            record["judge"] = {"model": self.spec.model, "correct": bool(verdict), "verdict": verdict, "text": text}
