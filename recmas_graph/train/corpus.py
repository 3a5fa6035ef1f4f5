"""Text corpora for calibrating links: a file of texts or the samples of a dataset.

A corpus is a list of plain texts. From a file: ``.txt`` (one text per non-empty line) or
``.jsonl`` (per line a ``text`` field, or a ``question`` with an optional ``answer`` and per-agent
targets such as ``plan`` and ``refined_plan``, joined by newlines). From a dataset: each sample's
question followed by its worked solution when the dataset has one (GSM8K, MATH-500), else its
answer (for multiple choice, the correct option written out).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import RunError
from .data import answer_text, json_line, utf8_lines

__all__ = ["corpus_from_file", "corpus_from_dataset", "sample_text"]

#: JSONL fields joined (in this order) when a line has no ``text``.
TEXT_FIELDS = ("question", "plan", "refined_plan", "answer")


def corpus_from_file(path: str | Path, *, limit: int | None = None) -> list[str]:
    """The texts of a ``.txt`` or ``.jsonl`` corpus file; a broken line is named with its number."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RunError(f"no corpus file {path}", culprit="--corpus", hint="give a .txt or .jsonl file of texts")
    texts: list[str] = []
    with path.open("rb") as handle:
        for number, line in enumerate(utf8_lines(handle, path), 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                texts.append(_jsonl_text(line, number, path))
            else:
                texts.append(line.rstrip("\r\n"))
            if limit is not None and len(texts) >= limit:
                break
    if not texts:
        raise RunError(f"the corpus {path} holds no text", culprit="--corpus")
    return texts


def _jsonl_text(line: str, number: int, path: Path) -> str:
    record = json_line(line, number, path)
    if not isinstance(record, dict):
        raise RunError(f"line {number} of {path.name} is not a JSON object", culprit=str(path))
    if isinstance(record.get("text"), str):
        return record["text"]
    parts = [str(record[k]) for k in TEXT_FIELDS if record.get(k)]
    if not parts:
        raise RunError(f"line {number} of {path.name} has no text (fields: {', '.join(record) or 'none'})",
                       culprit=str(path), hint=f"give each line a 'text', or a 'question' (and {', '.join(TEXT_FIELDS[1:])})")
    return "\n".join(parts)


def sample_text(sample: Any) -> str:
    """A dataset sample as one text: the question, then its solution or answer (code: the question)."""

    if sample.task == "code":
        return sample.question
    return f"{sample.question}\n{answer_text(sample)}"


def corpus_from_dataset(dataset: str, registry: Any, *, limit: int | None = None,
                        split: str | None = None) -> list[str]:
    """The first ``limit`` samples of ``dataset`` as texts (see :func:`sample_text`)."""
    from ..eval.datasets import resolve_dataset

    samples: Sequence[Any] = resolve_dataset(dataset, registry, split=split).load(limit)
    if not samples:
        raise RunError(f"the dataset {dataset!r} has no samples", culprit="--dataset")
    return [sample_text(s) for s in samples]
