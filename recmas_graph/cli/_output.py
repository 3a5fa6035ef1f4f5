"""Output helpers of the CLI: files written line by line and opened on first use, terminal-safe text."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path
from typing import Any, TextIO

from ..errors import RunError

__all__ = ["JsonLines", "terminal_text"]


class JsonLines:
    """A JSONL output file: its folder is checked at once (so a bad path fails before models load), but
    the file is created only when the first line is written, so an interrupted run leaves no empty file."""

    def __init__(self, path: Path | None, option: str) -> None:
        self.path = path
        self.lines = 0
        self._handle: TextIO | None = None
        if path is None:
            return
        folder = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise RunError(f"{path} is a folder", culprit=option, hint="give a file name, e.g. answers.jsonl")
        if not folder.is_dir() or not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise RunError(f"cannot write {path}: the folder does not exist or is not writable", culprit=option,
                           hint="check that the folder exists and is writable")

    def write(self, row: dict[str, Any]) -> None:
        """Append one JSON line (and flush it, so a crash loses nothing written)."""
        if self.path is None:
            return
        if self._handle is None:
            try:
                self._handle = self.path.open("w", encoding="utf-8")
            except OSError as err:
                raise RunError(f"cannot write {self.path}: {err.strerror}", culprit=str(self.path)) from None
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()
        self.lines += 1

    def close(self) -> None:
        """Close the file (nothing to do when no line was written)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def terminal_text(text: str) -> str:
    """``text`` with control and other invisible characters escaped (newlines and tabs kept), so a
    model's output cannot move the cursor, clear the screen or hide text on a terminal.

    >>> terminal_text("ok\\x1b[2J\\x07 done\\n")
    'ok\\\\x1b[2J\\\\x07 done\\n'
    """
    out = []
    for ch in text:
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs", "Cn"):
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])
    return "".join(out)
