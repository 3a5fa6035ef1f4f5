"""Training data: JSONL with a ``question``, an ``answer`` and optional per-agent target texts.

The official training data has ``{question, plan, refined_plan, answer}`` per line; any other
string field is kept as a target text an agent can be trained on (``targets``). A broken line is
reported with its number and the fields it has.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunError

__all__ = ["TrainSample", "read_train_data", "split_heldout", "make_train_data", "write_train_data", "answer_text", "ANSWER_FORMATS", "cloze_sample", "json_line", "utf8_lines"]


@dataclass(frozen=True)
class TrainSample:
    """One training item: the question, the output agent's answer, other agents' target texts."""

    id: str
    question: str
    answer: str
    targets: dict[str, str] = field(default_factory=dict)

    def text(self, name: str | None) -> str:
        """The target text called ``name`` (``answer``, ``question``, ``plan``, ...); unknown: the answer."""
        if name in (None, "answer"):
            return self.answer
        if name == "question":
            return self.question
        return self.targets.get(str(name), self.answer)


def read_train_data(path: str | Path, *, limit: int | None = None) -> list[TrainSample]:
    """The samples of a training JSONL file (``question`` and ``answer`` required on every line)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RunError(f"no training data file {path}", culprit="--data",
                       hint="a JSONL file with question and answer per line (recmas data make builds one)")
    samples: list[TrainSample] = []
    with path.open("rb") as handle:
        for number, line in enumerate(utf8_lines(handle, path), 1):
            if not line.strip():
                continue
            record = json_line(line, number, path)
            missing = [k for k in ("question", "answer") if not isinstance(record, dict) or not isinstance(record.get(k), str)]
            if missing:
                fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise RunError(f"line {number} of {path.name} has no string {' or '.join(missing)} (fields: {fields})",
                               culprit=str(path), hint="every line needs question and answer strings")
            extra = {k: v for k, v in record.items() if k not in ("question", "answer", "id") and isinstance(v, str)}
            samples.append(TrainSample(str(record.get("id", number)), record["question"], record["answer"], extra))
            if limit is not None and len(samples) >= limit:
                break
    if not samples:
        raise RunError(f"{path} holds no samples", culprit="--data")
    return samples


def split_heldout(samples: Sequence[TrainSample], fraction: float, seed: int) -> tuple[list[TrainSample], list[TrainSample]]:
    """A seeded split into (train, held-out); ``fraction`` of the samples (at least one when > 0) is held out."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    cut = 0 if fraction <= 0 or len(samples) < 2 else max(1, int(round(len(samples) * fraction)))
    held = sorted(order[:cut])
    train = sorted(order[cut:])
    return [samples[i] for i in train], [samples[i] for i in held]


def answer_text(sample: Any) -> str:
    """What a dataset sample's answer looks like as training text: its worked solution, or the option written out."""
    meta = dict(sample.meta or {})
    if meta.get("solution"):
        return str(meta["solution"])
    letters = str(meta.get("letters") or "")
    if sample.task == "choice" and meta.get("choices") and sample.gold in letters:
        return f"The answer is {sample.gold}. {meta['choices'][letters.index(sample.gold)]}"
    return str(sample.gold)


#: How a multiple-choice sample becomes training text: ``written`` (the question with its option
#: lines, answered "The answer is B. text") or ``cloze`` (the question without its option lines,
#: answered by the gold option's text after one space: exactly the continuation that likelihood
#: scoring compares, so training lowers what ``acc`` reads).
ANSWER_FORMATS: tuple[str, ...] = ("written", "cloze")


def cloze_sample(sample: Any) -> TrainSample:
    """A multiple-choice ``sample`` as likelihood scoring asks it: its stem, answered by the gold option's text."""
    from ..eval.likelihood import choice_question

    asked = choice_question(sample)
    return TrainSample(sample.id, asked.question, asked.continuations[asked.gold])


def make_train_data(dataset: str, registry: Any, *, train: int, heldout: int = 0, skip: int = 0,
                    split: str | None = None, answers: str = "written") -> tuple[list[TrainSample], list[TrainSample]]:
    """Training and held-out samples from a dataset: samples ``skip .. skip+train`` and the ``heldout``
    after them (disjoint by construction). The answer is the worked solution where the dataset has
    one (GSM8K, MATH-500), the correct option written out for multiple choice, else the gold answer;
    ``answers="cloze"`` asks a multiple-choice dataset as likelihood scoring does (:data:`ANSWER_FORMATS`)."""
    from ..eval.datasets import resolve_dataset

    if answers not in ANSWER_FORMATS:
        raise RunError(f"unknown answer format {answers!r}", culprit="--answers",
                       hint=f"use one of: {', '.join(ANSWER_FORMATS)}")
    data = resolve_dataset(dataset, registry, split=split)
    if answers == "cloze" and data.task != "choice":
        raise RunError(f"--answers cloze needs a multiple-choice dataset; {data.name} is a {data.task} dataset",
                       culprit="--answers", hint="use --answers written, or a multiple-choice dataset (arc_easy_val, ...)")
    samples = data.load(skip + train + heldout)[skip:]
    if len(samples) < train + heldout:
        raise RunError(f"{dataset} has {len(samples) + skip} samples, fewer than the {skip + train + heldout} asked for",
                       culprit="--train/--heldout", hint="ask for fewer samples")
    if answers == "cloze":
        items = [cloze_sample(s) for s in samples]
    else:
        items = [TrainSample(s.id, s.question, answer_text(s)) for s in samples]
    return items[:train], items[train:]


def write_train_data(samples: Sequence[TrainSample], path: str | Path) -> Path:
    """Write samples as training JSONL (``id``, ``question``, ``answer`` and the per-agent targets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for s in samples:
            handle.write(json.dumps({"id": s.id, "question": s.question, "answer": s.answer, **s.targets},
                                    ensure_ascii=False) + "\n")
    return path


def json_line(line: str, number: int, path: Path) -> Any:
    """Line ``number`` of ``path`` parsed as JSON; one that is not JSON is named by its number."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise RunError(f"line {number} of {path.name} is not JSON: {err.msg}", culprit=str(path),
                       hint="one JSON object per line") from None


def utf8_lines(handle: Any, path: Path) -> Any:
    """The lines of a file opened in binary mode, decoded; a line that is not UTF-8 is named by its number."""
    for number, raw in enumerate(handle, 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RunError(f"line {number} of {path.name} is not UTF-8 text", culprit=str(path),
                           hint="save the file as UTF-8") from None
