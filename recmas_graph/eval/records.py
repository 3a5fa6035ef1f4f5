"""An evaluation's folder: its configuration, its per-sample records (appended as they finish), resume.

``DIR/config.json`` is the exact configuration (and its hash); ``DIR/results.jsonl`` holds one line
per finished sample, appended, flushed and fsynced as each batch finishes; ``DIR/summary.json`` is
written at the end (atomically). Re-opening the folder resumes: the finished samples are read back
(a line cut short by a crash is dropped), so a sample is never run twice nor lost. A changed
configuration is refused, naming what changed, unless the folder is overwritten. A lock file keeps
two processes from writing the same folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import lock_folder, make_output_folder, write_json_atomic
from ..errors import RecmasError

__all__ = ["EvalError", "RunFolder", "config_hash", "config_changes", "write_json_atomic"]


class EvalError(RecmasError):
    """An evaluation cannot start or resume (a changed configuration, a locked or broken folder)."""


def config_hash(config: Mapping[str, Any]) -> str:
    """A stable short hash of a JSON-ready configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configurations, e.g. ``["generation.top_p"]``.

    >>> config_changes({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 0})
    ['b.c', 'd']
    """
    changes: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        where = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes += config_changes(a, b, f"{where}.")
        elif a != b:
            changes.append(where)
    return changes


def _sync_folder(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class RunFolder:
    """The folder of one evaluation, opened for writing (use as a context manager: it holds a lock)."""

    path: Path
    config: dict[str, Any]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: Any = field(default=None, repr=False)

    @property
    def results_path(self) -> Path:
        """``DIR/results.jsonl``."""
        return self.path / "results.jsonl"

    @property
    def summary_path(self) -> Path:
        """``DIR/summary.json``."""
        return self.path / "summary.json"

    @classmethod
    def open(cls, path: str | Path, config: Mapping[str, Any], *, resume: bool = True,
             overwrite: bool = False) -> "RunFolder":
        """Open (or create) ``path`` for ``config``: read back finished records when resuming.

        Raises :class:`EvalError` when the folder holds another configuration (unless
        ``overwrite``), or when another process is writing it.
        """
        folder = make_output_folder(path, error=EvalError)
        lock = lock_folder(folder, ".lock", what="evaluation", error=EvalError)
        run = cls(folder, {**config, "hash": config_hash(config)}, _lock=lock)
        try:
            run._prepare(resume, overwrite)
        except BaseException:
            lock.release()
            raise
        return run

    def _prepare(self, resume: bool, overwrite: bool) -> None:
        config_path = self.path / "config.json"
        if config_path.exists() and not overwrite:
            try:
                old = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise EvalError(f"cannot read {config_path}: {err}", culprit=str(config_path),
                                hint="delete the folder or pass --overwrite") from None
            if old.get("hash") != self.config["hash"] and resume:
                changed = [c for c in config_changes(old, self.config) if c != "hash"]
                raise EvalError(
                    f"the folder holds an evaluation with another configuration (changed: "
                    f"{', '.join(changed[:8]) or 'unknown'}{' ...' if len(changed) > 8 else ''})",
                    culprit=str(self.path),
                    hint="rerun with the same options to resume, choose another --out folder, or pass --overwrite "
                         "to start again")
        if overwrite or not resume:
            for name in ("results.jsonl", "summary.json"):
                (self.path / name).unlink(missing_ok=True)
        write_json_atomic(config_path, self.config)
        self.records = dict(self._read_records())

    def _read_records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The finished records; a last line cut short by a crash is removed from the file.

        Only the piece after the last newline can be unfinished (records are appended whole lines
        at a time under the lock); a broken line before it is someone's edit, so it is reported,
        not dropped with everything after it.
        """
        if not self.results_path.exists():
            return
        data = self.results_path.read_bytes()
        lines = data.split(b"\n")
        good = 0
        for number, line in enumerate(lines[:-1], 1):
            good += len(line) + 1
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict) or "id" not in record:
                raise EvalError(f"line {number} of {self.results_path.name} is not a record (JSON with an id)",
                                culprit=str(self.results_path),
                                hint="fix or delete that line to resume, or pass --overwrite to start again")
            yield str(record["id"]), record
        if good < len(data):
            with self.results_path.open("r+b") as handle:
                handle.truncate(good)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append finished records (one line each), flushed and fsynced before returning."""
        with self.results_path.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, default=str) + "\n")
                self.records[str(record["id"])] = record
            handle.flush()
            os.fsync(handle.fileno())

    def reorder(self, order: Mapping[str, int]) -> None:
        """Rewrite ``results.jsonl`` with its records sorted by ``order`` (id -> position; others
        last, as they were), atomically; nothing is written when the file is in that order already."""
        current = list(self.records)
        ranked = sorted(current, key=lambda sid: order.get(sid, len(order)))
        if ranked == current:
            return
        tmp = self.results_path.with_name(f".{self.results_path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for sid in ranked:
                handle.write(json.dumps(self.records[sid], default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.results_path)
        _sync_folder(self.path)
        self.records = {sid: self.records[sid] for sid in ranked}

    def close(self) -> None:
        """Release the folder's lock."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
