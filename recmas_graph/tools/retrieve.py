"""The ``retrieve`` tool: offline BM25 search over a local document collection.

A collection is a folder of ``.txt`` / ``.md`` files (searched recursively, one document per file)
or a ``.jsonl`` file with one document per line (``text``, optional ``id`` / ``title``). It is
given to :class:`RetrieveTool` or through the environment variable ``RECMAS_RETRIEVE_COLLECTION``.

>>> bm = BM25([["red", "apple"], ["green", "pear"], ["red", "car"]])
>>> [i for i, _ in bm.search(["apple"], k=1)]
[0]
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .base import Tool, ToolResult

__all__ = ["BM25", "Document", "RetrieveTool", "load_collection", "tokenize", "COLLECTION_ENV"]

#: Environment variable naming the default collection.
COLLECTION_ENV = "RECMAS_RETRIEVE_COLLECTION"
_TOKEN_RE = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return _TOKEN_RE.findall(text.lower())


class BM25:
    """Okapi BM25 over tokenised documents (``k1`` term saturation, ``b`` length normalisation)."""

    def __init__(self, docs: list[list[str]], *, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tf = [Counter(d) for d in docs]
        self.len = [len(d) for d in docs]
        self.avg_len = (sum(self.len) / len(docs)) if docs else 0.0
        df: Counter[str] = Counter(term for d in self.tf for term in d)
        n = len(docs)
        self.idf = {t: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def score(self, query: list[str], i: int) -> float:
        """BM25 score of document ``i`` for the query tokens."""
        tf, norm = self.tf[i], self.k1 * (1 - self.b + self.b * self.len[i] / (self.avg_len or 1.0))
        return sum(self.idf.get(t, 0.0) * tf[t] * (self.k1 + 1) / (tf[t] + norm) for t in query if t in tf)

    def search(self, query: list[str], k: int = 3) -> list[tuple[int, float]]:
        """The ``k`` best ``(index, score)`` pairs with a positive score, best first."""
        scored = [(i, self.score(query, i)) for i in range(len(self.tf))]
        scored = [(i, s) for i, s in scored if s > 0]
        scored.sort(key=lambda x: (-x[1], x[0]))
        return scored[:k]


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
            self._index = (str(source), docs, BM25([tokenize(d.title + " " + d.text) for d in docs]))
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
        if not hits:
            return ToolResult(True, "no matching documents")
        parts = []
        for rank, (i, score) in enumerate(hits, 1):
            doc = docs[i]
            text = doc.text.strip()
            if len(text) > self.max_chars:
                text = text[: self.max_chars].rstrip() + " ..."
            title = f" {doc.title}" if doc.title else ""
            parts.append(f"[{rank}]{title} ({doc.id})\n{text}")
        return ToolResult(True, "\n\n".join(parts))
