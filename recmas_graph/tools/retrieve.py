"""The ``retrieve`` tool: offline BM25 search over a local document collection.

A collection is a folder of ``.txt`` / ``.md`` files (searched recursively, one document per file)
or a ``.jsonl`` file with one document per line (``text``, optional ``id`` / ``title``). It is
given to :class:`RetrieveTool` or through the environment variable ``RECMAS_RETRIEVE_COLLECTION``.
Ranking is BM25 from the ``bm25s`` library (the optional extra ``recmas-graph[search]``); without
it, a call fails with an error that says how to install it. The official deliberation style's
``<search>`` calls run this tool.

>>> index = BM25([["red", "apple"], ["green", "pear"], ["red", "car"]])
>>> [i for i, _ in index.search(["apple"], k=1)]
[0]
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import Tool, ToolResult

__all__ = ["BM25", "Document", "RetrieveTool", "load_collection", "tokenize", "COLLECTION_ENV", "SEARCH_EXTRA"]

#: Environment variable naming the default collection.
COLLECTION_ENV = "RECMAS_RETRIEVE_COLLECTION"
#: What to install for BM25 ranking.
SEARCH_EXTRA = "pip install 'recmas-graph[search]' (or: pip install bm25s)"
_TOKEN_RE = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return _TOKEN_RE.findall(text.lower())


class BM25:
    """BM25 ranking of tokenised documents, by the ``bm25s`` library (``k1`` term saturation, ``b``
    length normalisation). Raises ``ImportError`` naming the extra when ``bm25s`` is missing."""

    def __init__(self, docs: list[list[str]], *, k1: float = 1.5, b: float = 0.75) -> None:
        try:
            import bm25s
        except ImportError as err:  # pragma: no cover - exercised when the extra is absent
            raise ImportError(f"BM25 search needs the bm25s package: {SEARCH_EXTRA}") from err
        self.size = len(docs)
        self._index: Any = bm25s.BM25(k1=k1, b=b)
        if docs:
            self._index.index([list(d) or [""] for d in docs], show_progress=False)

    def search(self, query: list[str], k: int = 3) -> list[tuple[int, float]]:
        """The ``k`` best ``(index, score)`` pairs with a positive score, best first."""
        if not self.size or not query:
            return []
        ids, scores = self._index.retrieve([list(query)], k=min(k, self.size), show_progress=False)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]
        return sorted(hits, key=lambda x: (-x[1], x[0]))


@dataclass(frozen=True)
class Document:
    """A document of the collection."""

    id: str
    title: str
    text: str


def load_collection(path: str | Path) -> list[Document]:
    """Read a folder of .txt/.md files or a .jsonl file into documents (errors name the file and line)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file())
        return [Document(str(p.relative_to(path)), p.stem, p.read_text(encoding="utf-8", errors="replace"))
                for p in files]
    if path.is_file() and path.suffix.lower() == ".jsonl":
        docs = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text = record["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise ValueError(f"{path}, line {n}: expected a JSON object with a 'text' field ({err})") from None
                docs.append(Document(str(record.get("id", n)), str(record.get("title", "")), str(text)))
        return docs
    raise ValueError(f"{path}: not a folder of .txt/.md files nor a .jsonl file")


class RetrieveTool(Tool):
    """Search a local collection; the argument is the query, the output the best passages.

    ``collection`` (or ``$RECMAS_RETRIEVE_COLLECTION``, read at the first call) is a folder or a
    ``.jsonl`` file. Without one every call fails with an error saying how to configure it.
    """

    name = "retrieve"
    description = "Search the local document collection and return the most relevant passages."
    argument_hint = "search query"

    def __init__(self, collection: str | Path | None = None, *, k: int = 3, max_chars: int = 800) -> None:
        self.collection = collection
        self.k = k
        self.max_chars = max_chars
        self._index: tuple[str, list[Document], BM25] | None = None

    def _load(self) -> tuple[list[Document], BM25] | str:
        source = self.collection or os.environ.get(COLLECTION_ENV)
        if not source:
            return (f"no document collection configured: set {COLLECTION_ENV} to a folder of .txt/.md files "
                    f"or a .jsonl file, or pass collection= to RetrieveTool")
        if self._index is None or self._index[0] != str(source):
            try:
                docs = load_collection(source)
            except (OSError, ValueError) as err:
                return f"cannot read the document collection: {err}"
            try:
                index = BM25([tokenize(d.title + " " + d.text) for d in docs])
            except ImportError as err:
                return str(err)
            self._index = (str(source), docs, index)
        return self._index[1], self._index[2]

    def _run(self, arguments: str) -> ToolResult:
        loaded = self._load()
        if isinstance(loaded, str):
            return ToolResult(False, "", loaded)
        docs, index = loaded
        query = tokenize(arguments)
        if not query:
            return ToolResult(False, "", "empty query: write some search words")
        hits = index.search(query, self.k)
        details = {"query": arguments.strip(),
                   "hits": [{"id": docs[i].id, "title": docs[i].title, "text": docs[i].text, "score": score}
                            for i, score in hits]}
        if not hits:
            return ToolResult(True, "no matching documents", details=details)
        parts = []
        for rank, (i, _) in enumerate(hits, 1):
            doc = docs[i]
            text = doc.text.strip()
            if len(text) > self.max_chars:
                text = text[: self.max_chars].rstrip() + " ..."
            title = f" {doc.title}" if doc.title else ""
            parts.append(f"[{rank}]{title} ({doc.id})\n{text}")
        return ToolResult(True, "\n\n".join(parts), details=details)
