"""Reading the release's JSON files: ``outerlink_config.json`` and ``innerlink_config.json``, per task."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .folders import norm_name
from .styles import FORMAT_VERSIONS, INNER_ADAPTER_TYPES, ReleaseError, ReleaseStyle, get_style

__all__ = ["OuterLinkEntry", "read_outerlink_config", "read_innerlink_config", "inner_adapter_type"]


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReleaseError(f"missing file {path} ({what})", culprit=str(path),
                           hint="download the complete repo (see docs/published-checkpoints.md)") from None
    except OSError as err:
        raise ReleaseError(f"cannot read {path}: {err.strerror}", culprit=str(path)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ReleaseError(f"{path.name} is not valid JSON: {err.msg} at line {err.lineno}", culprit=str(path),
                           hint="download the file again; it is damaged") from None


def _check_header(data: Mapping[str, Any], path: Path, style: ReleaseStyle | None) -> None:
    """Refuse an unknown ``format_version`` and a config that belongs to another style."""
    version = data.get("format_version", 1)
    if version not in FORMAT_VERSIONS:
        known = ", ".join(map(str, FORMAT_VERSIONS))
        raise ReleaseError(f"unsupported format_version {version!r} in {path.name}", culprit=str(path),
                           hint=f"this version of recmas_graph reads format_version {known}")
    if style is None:
        return
    paradigm, variant = data.get("paradigm"), data.get("variant")
    wrong = (isinstance(paradigm, str) and norm_name(paradigm) != norm_name(style.paradigm)) or (
        isinstance(variant, str) and style.variant is not None and norm_name(variant) != norm_name(style.variant))
    if wrong:
        found = f"{paradigm}/{variant}" if variant else str(paradigm)
        raise ReleaseError(
            f"{path.name} belongs to the {found!r} release, not to {style.name!r}", culprit=str(path),
            hint=f"point at the folders of {style.repo_id()} and its agents, or import style {found!r} instead")


def _task_names(tasks: Mapping[str, Any]) -> str:
    return ", ".join(sorted(map(str, tasks))) or "none"


@dataclass(frozen=True)
class OuterLinkEntry:
    """One outer link listed in ``outerlink_config.json``."""

    legacy_key: str
    filename: str
    adapter_type: str
    in_dim: int | None
    out_dim: int | None
    source_role: str | None = None
    target_role: str | None = None


def _select_task_adapters(data: Mapping[str, Any], path: Path, task: str) -> list[Any]:
    """The adapter list for ``task`` from any of the accepted nestings of ``outerlink_config.json``."""
    missing_task = None
    if isinstance(data.get("tasks"), Mapping):  # the release: {"tasks": {task: {"adapters": [...]}}}
        tasks = data["tasks"]
        if task not in tasks:
            missing_task = tasks
        else:
            entry = tasks[task]
            adapters = entry.get("adapters") if isinstance(entry, Mapping) else entry
            if isinstance(adapters, list):
                return adapters
            raise ReleaseError(f'{path.name}: "tasks.{task}" has no "adapters" list', culprit=str(path),
                               hint="download the file again; it is damaged")
    elif isinstance(data.get("adapters"), Mapping):  # {"adapters": {task: [...]}}
        groups = data["adapters"]
        if task not in groups:
            missing_task = groups
        elif isinstance(groups[task], list):
            return groups[task]
        else:
            raise ReleaseError(f'{path.name}: "adapters.{task}" is not a list', culprit=str(path))
    elif isinstance(data.get("adapters"), list):  # task-agnostic: {"adapters": [...]}
        return data["adapters"]
    else:  # {task: {"adapters": [...]}, ...}
        per_task = {k: v for k, v in data.items() if isinstance(v, Mapping) and isinstance(v.get("adapters"), list)}
        if per_task:
            if task in per_task:
                return per_task[task]["adapters"]
            missing_task = per_task
    if missing_task is not None:
        raise ReleaseError(f"{path.name} has no links for task {task!r}; it has: {_task_names(missing_task)}",
                           culprit=str(path), hint=f"use --task with one of: {_task_names(missing_task)}")
    raise ReleaseError(f'{path.name} lists no outer links (no "adapters" or "tasks")', culprit=str(path),
                       hint="download the file again; it is damaged")


def _opt_int(value: Any, name: str, path: Path, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ReleaseError(f"{path.name}: {name} of {key} must be a positive integer, got {value!r}", culprit=str(path))
    return value


def read_outerlink_config(path: str | Path, task: str, style: str | ReleaseStyle | None = None) -> list[OuterLinkEntry]:
    """The outer links of ``task`` listed in an ``outerlink_config.json``.

    Accepted nestings: ``{"adapters": [...]}`` (task-agnostic: mixture, deliberation),
    ``{"tasks": {task: {"adapters": [...]}}}`` (the sequential and distillation releases),
    ``{task: {"adapters": [...]}}`` and ``{"adapters": {task: [...]}}``. A missing ``filename`` falls
    back to ``legacy_filename``, a missing ``adapter_type`` to ``outer_ln_res_adapter``.
    """
    path = Path(path)
    s = style if isinstance(style, ReleaseStyle) or style is None else get_style(style)
    data = _read_json(path, "outer link config")
    if not isinstance(data, Mapping):
        raise ReleaseError(f"{path.name} must hold a JSON object", culprit=str(path))
    _check_header(data, path, s)
    entries: list[OuterLinkEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(_select_task_adapters(data, path, task)):
        if not isinstance(item, Mapping) or not isinstance(item.get("legacy_key"), str):
            raise ReleaseError(f'{path.name}: adapter #{i + 1} has no "legacy_key"', culprit=str(path),
                               hint="each adapter needs legacy_key and filename")
        key = item["legacy_key"]
        filename = item.get("filename") or item.get("legacy_filename")
        if not isinstance(filename, str) or not filename:
            raise ReleaseError(f'{path.name}: adapter {key!r} has no "filename"', culprit=str(path))
        if key in seen:
            raise ReleaseError(f"{path.name} lists legacy key {key!r} twice for task {task!r}", culprit=str(path))
        seen.add(key)
        entries.append(OuterLinkEntry(
            legacy_key=key, filename=filename, adapter_type=str(item.get("adapter_type") or "outer_ln_res_adapter"),
            in_dim=_opt_int(item.get("in_dim"), "in_dim", path, key),
            out_dim=_opt_int(item.get("out_dim"), "out_dim", path, key),
            source_role=item.get("source_role") if isinstance(item.get("source_role"), str) else None,
            target_role=item.get("target_role") if isinstance(item.get("target_role"), str) else None,
        ))
    return entries


def _task_adapter_name(entry: Any) -> str | None:
    """The inner weights file named by one ``innerlink_config.json`` task entry."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping):
        for key in ("adapter.pt", "adapter", "filename", "weights"):
            if isinstance(entry.get(key), str) and entry[key]:
                return entry[key]
    return None


def read_innerlink_config(folder: str | Path, task: str, *, agent: str = "agent",
                          style: str | ReleaseStyle | None = None) -> tuple[Path, Path | None]:
    """The inner-link weights file of ``task`` in a released agent folder, and the config that named it.

    With an ``innerlink_config.json`` listing ``tasks``: the task's ``"adapter.pt"`` entry (a task it
    does not list is an error naming the tasks it has). Otherwise ``adapter(<task>).pt``, then
    ``adapter.pt`` (the reference resolver's order).
    """
    folder = Path(folder)
    config = folder / "innerlink_config.json"
    if config.is_file():
        data = _read_json(config, f"inner link config of agent {agent!r}")
        if not isinstance(data, Mapping):
            raise ReleaseError("innerlink_config.json must hold a JSON object", culprit=str(config))
        s = style if isinstance(style, ReleaseStyle) or style is None else get_style(style)
        _check_header(data, config, s)
        role = data.get("role")
        if isinstance(role, str) and s is not None and norm_name(role) != norm_name(agent):
            raise ReleaseError(f"{config} belongs to the {role!r} agent, not to {agent!r}", culprit=f"agent {agent!r}",
                               hint=f"point {agent!r} at the folder of {s.repo_id(agent)} (--agent {agent}=PATH)")
        tasks = data.get("tasks")
        if isinstance(tasks, Mapping) and tasks:
            if task not in tasks:
                raise ReleaseError(f"{config} has no inner link for task {task!r}; it has: {_task_names(tasks)}",
                                   culprit=f"agent {agent!r}", hint=f"use --task with one of: {_task_names(tasks)}")
            name = _task_adapter_name(tasks[task])
            if name is None:
                raise ReleaseError(f'{config}: task {task!r} names no "adapter.pt" file', culprit=f"agent {agent!r}",
                                   hint="download the file again; it is damaged")
            path = folder / name
            if not path.is_file():
                raise ReleaseError(f"missing file {path} (inner link weights of agent {agent!r} for task {task!r}, "
                                   f"named in {config.name})", culprit=f"agent {agent!r}",
                                   hint="download the complete agent repo again")
            return path, config
    for name in (f"adapter({task}).pt", "adapter.pt"):
        if (folder / name).is_file():
            return folder / name, None
    found = sorted(p.name for p in folder.glob("adapter*.pt"))
    raise ReleaseError(
        f"missing file {folder / f'adapter({task}).pt'} or {folder / 'adapter.pt'} (inner link weights of agent "
        f"{agent!r}); found: {', '.join(found) or 'no adapter*.pt files'}", culprit=f"agent {agent!r}",
        hint=("use --task with one of the tasks found" if found else "download the complete agent repo"))


def inner_adapter_type(folder: Path, agent: str) -> str:
    """``adapter_type`` of ``adapter_config.json`` (``ln_res_adapter`` when the file is absent) as our link type."""
    config = folder / "adapter_config.json"
    adapter_type = "ln_res_adapter"
    if config.is_file():
        data = _read_json(config, f"inner link config of agent {agent!r}")
        if isinstance(data, Mapping) and isinstance(data.get("adapter_type"), str):
            adapter_type = data["adapter_type"]
    if adapter_type not in INNER_ADAPTER_TYPES:
        raise ReleaseError(f"unsupported inner adapter_type {adapter_type!r} in {config}", culprit=f"agent {agent!r}",
                           hint=f"recmas_graph reads: {', '.join(INNER_ADAPTER_TYPES)}")
    return INNER_ADAPTER_TYPES[adapter_type]
