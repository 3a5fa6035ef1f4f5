"""Output helpers of the CLI: files written line by line and opened on first use, terminal-safe text."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import RunError

__all__ = ["JsonLines", "terminal_text", "whole_names", "FittingConsole", "write_schema"]


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


#: A name column keeps names whole up to this width; longer ones fold onto the next line.
NAME_WIDTH = 40

#: The width of output that is not a terminal (a pipe, a file, CI logs) unless COLUMNS says otherwise:
#: rich's default of 80 cut the names of wide tables there.
PIPE_WIDTH = 120


def whole_names(table: Table) -> Table:
    """``table`` with its first column (the names: systems, agents, assets, plugins) as wide as its
    longest name (up to :data:`NAME_WIDTH`; a longer one folds onto the next line instead of being
    cut with an ellipsis): the other columns give way first."""
    if table.columns:
        column = table.columns[0]
        column.overflow = "fold"
        longest = max((len(c.plain) if isinstance(c, Text) else len(str(c)) for c in column.cells), default=0)
        column.min_width = max(column.min_width or 0, min(longest, NAME_WIDTH))
    return table


class FittingConsole(Console):
    """The CLI's console: every table it prints keeps its names whole (:func:`whole_names`), and output
    that is not a terminal is :data:`PIPE_WIDTH` wide (or ``COLUMNS``), so piped or logged tables are
    not cut at 80 columns (``sequential_light_mini:sing…``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.is_terminal and not os.environ.get("COLUMNS") and "width" not in kwargs:
            self.width = PIPE_WIDTH

    def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: A003 - rich's name
        for item in objects:
            if isinstance(item, Table):
                whole_names(item)
        super().print(*objects, **kwargs)


def write_schema(console: Console, schema: dict[str, Any], output: Path | None) -> None:
    """A JSON Schema (the ``*-schema`` commands) on ``console``, or into the file ``output``."""
    text = json.dumps(schema, indent=2) + "\n"
    if output is None:
        console.print(text, highlight=False, soft_wrap=True, markup=False, end="")
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as err:
        raise RunError(f"cannot write the schema: {err.strerror or err}", culprit=str(output),
                       hint="choose a writable path") from None
    console.print(Text(f"wrote {output}"), highlight=False)
