"""Small file helpers every layer may use."""

from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

__all__ = ["write_json_atomic", "make_output_folder", "lock_folder"]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def make_output_folder(path: str | Path, *, error: Callable[..., Exception]) -> Path:
    """Create the output folder ``path`` (and its parents); ``error`` names it and the fix when it
    cannot be created (the layer's own :class:`~recmas_graph.errors.RecmasError` class: an
    evaluation's, a search's..., called with the message, ``culprit`` and ``hint``)."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise error(f"cannot create the output folder: {err.strerror}", culprit=str(folder),
                    hint="choose a writable --out folder") from None
    return folder


def lock_folder(folder: Path, name: str, *, what: str, error: Callable[..., Exception]) -> Any:
    """Take the lock file ``folder/name`` (filelock) so that one process at a time writes ``folder``;
    ``error`` (the layer's own error class) says ``another {what} is running in this folder`` when
    another process holds it. Returns the acquired lock: release it when done."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(folder / name))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        raise error(f"another {what} is running in this folder", culprit=str(folder),
                    hint="wait for it to finish, or choose another --out folder") from None
    return lock
