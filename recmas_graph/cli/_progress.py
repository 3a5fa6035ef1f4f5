"""Progress of long commands, on a terminal and off it.

On a terminal, :func:`progress` is rich's live bar. When the output is redirected (a log file, CI,
``nohup``) a live bar shows nothing until the end, so :class:`PlainProgress` prints plain lines
instead: one when a task starts and whenever its description or stage changes, and its count at
most every ``every_s`` seconds and when it finishes. Both take the calls the commands make:
``add_task``, ``update`` and ``advance``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

__all__ = ["PlainProgress", "progress"]


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0
    fields: dict[str, Any] = field(default_factory=dict)
    printed_at: float = 0.0
    printed_count: float = -1


class PlainProgress:
    """Progress as plain lines (for output that is not a terminal); rich ``Progress``'s calls."""

    def __init__(self, console: Console, *, every_s: float = 30.0, note: str = "note") -> None:
        self.console = console
        self.every_s = every_s
        self.note = note
        self.start = time.monotonic()
        self.tasks: dict[int, _Task] = {}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            for task_id, task in self.tasks.items():
                if task.completed and task.completed != task.printed_count:
                    self._count(task_id)

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = _Task(description, total, fields=dict(fields))
        if description:
            self._line(description)
        return task_id

    def update(self, task_id: int, *, description: str | None = None, total: float | None = None,
               completed: float | None = None, advance: float | None = None, **fields: Any) -> None:
        task = self.tasks[task_id]
        if description is not None and description != task.description:
            task.description = description
            task.printed_at, task.printed_count = 0.0, -1  # a new stage of work: its first count shows at once
            self._line(description)
        if total is not None:
            task.total = total
        stage = fields.get(self.note)
        counting = completed is not None or advance is not None
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if stage is not None and stage != task.fields.get(self.note) and not counting and stage:
            self._line(f"{task.description}: {stage}" if task.description else str(stage))
        task.fields.update(fields)
        if counting and task.completed and (time.monotonic() - task.printed_at >= self.every_s
                                            or (task.total is not None and task.completed >= task.total)):
            self._count(task_id)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _count(self, task_id: int) -> None:
        task = self.tasks[task_id]
        of = f"/{task.total:g}" if task.total is not None else ""
        note = task.fields.get(self.note)
        self._line(f"{task.description or 'progress'}: {task.completed:g}{of} done" + (f", {note}" if note else ""))
        task.printed_at, task.printed_count = time.monotonic(), task.completed

    def _line(self, text: str) -> None:
        elapsed = time.monotonic() - self.start
        self.console.print(Text(f"[{elapsed:7.1f} s] {text}"), highlight=False, soft_wrap=True)


def progress(console: Console, *, note: bool = False, transient: bool = True, disable: bool = False,
             every_s: float = 30.0) -> Progress | PlainProgress:
    """A live bar on a terminal, plain lines elsewhere. ``note``: a ``{task.fields[note]}`` column
    (``update(task, note=...)``); ``disable`` shows nothing at all."""
    if not console.is_terminal and not disable:
        return PlainProgress(console, every_s=every_s)
    columns: list[Any] = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if note:
        columns.append(TextColumn("{task.fields[note]}"))
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=console, transient=transient, disable=disable)
