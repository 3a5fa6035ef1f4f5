"""Pydantic validation errors as lines that name the field: what the experiment file and the search
space report (the topology spec has its own, richer, descriptions of where a field is)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["field_path", "problem_lines"]


def field_path(loc: Sequence[Any], *, branches: tuple[str, ...] = ()) -> str:
    """A pydantic error location as a path (``systems[1].recipe.lr``); parts that start with one of
    ``branches`` (the names pydantic gives the members of a union) are left out.

    >>> field_path(("systems", 1, "dict[str,any]", "recipe", "lr"), branches=("dict[",))
    'systems[1].recipe.lr'
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(branches) or not branches:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def problem_lines(errors: Sequence[Any], *, branches: tuple[str, ...] = (), prefix: str = "") -> tuple[list[str], bool]:
    """One line per problem of pydantic's ``err.errors()`` (duplicates dropped): ``path: unknown
    field``, ``path: required field is missing`` or ``path: message``; and whether a field was unknown."""
    lines: list[str] = []
    unknown = False
    for e in errors:
        where = prefix + field_path(tuple(e["loc"]), branches=branches)
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown field")
            unknown = True
        elif e["type"] == "missing":
            lines.append(f"{where}: required field is missing")
        else:
            lines.append(f"{where}: {e['msg']}")
    return list(dict.fromkeys(lines)), unknown
