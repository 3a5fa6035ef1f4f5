"""Published checkpoints: turn local copies of the released RecursiveMAS repos into a runnable topology.

The Hugging Face organisation ``RecursiveMAS`` publishes, per style, one repo per agent and one
``*-Outerlinks`` repo (DESIGN.md section 1):

- an agent repo (e.g. ``Sequential-Light-Planner-Qwen3-1.7B``) holds the full base model
  (``config.json``, ``model*.safetensors``, tokenizer files), the inner-link state dict(s)
  ``adapter(math).pt`` / ``adapter(code).pt`` (task-trained styles) or ``adapter.pt``,
  ``adapter_config.json`` (``{"adapter_type": "ln_res_adapter"}``) and, for task-trained styles,
  ``innerlink_config.json`` (``{"format_version", "paradigm", "role", "tasks": {task: {"adapter.pt":
  "adapter(<task>).pt", ...}}}``);
- the outer-links repo (e.g. ``Sequential-Light-Outerlinks``) holds ``outerlink_config.json``
  (``{"format_version", "paradigm", "adapters": [{"legacy_key", "filename", "adapter_type", "in_dim",
  "out_dim", ...}]}``, or the same per task under ``"tasks": {task: {"adapters": [...]}}``) and one
  state dict per edge, named by a legacy key (``outer_12`` = planner -> critic, ...).

:func:`import_release` finds those folders, picks the task's weights, maps legacy keys onto the edges
of the built-in topology of the style, checks every size against the agents' ``config.json`` and the
state dicts, and returns a :class:`~recmas_graph.spec.TopologySpec` whose agents point at the local
model folders and whose links point at the released files (absolute paths: the written JSON runs from
anywhere). :func:`load_release` builds it into a ready :class:`~recmas_graph.executor.RecursiveSystem`.

The released agent folders carry an ``adapter_config.json`` next to the model. transformers treats any
folder holding that file as a PEFT adapter when ``peft`` is installed (and then fails on it), so the
model is loaded through a *view*: a folder of links to every file but the link files, kept under
``cache_root() / "release-views"`` (or ``views_dir``). Nothing is ever downloaded here.

>>> sorted(STYLES)
['deliberation', 'distillation', 'mixture', 'sequential_light', 'sequential_scaled']
>>> STYLES["sequential_light"].legacy_keys["outer_31"]
('solver', 'planner')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RecmasError

if TYPE_CHECKING:  # pragma: no cover
    from .executor import RecursiveSystem
    from .registry import Registry
    from .spec import TopologySpec

__all__ = [
    "ReleaseError",
    "ReleaseStyle",
    "ResolvedAgent",
    "ResolvedEdge",
    "ResolvedRelease",
    "OuterLinkEntry",
    "HF_ORG",
    "STYLES",
    "RELEASE_TASKS",
    "INNER_ADAPTER_TYPES",
    "OUTER_ADAPTER_TYPES",
    "get_style",
    "find_release_folder",
    "read_innerlink_config",
    "read_outerlink_config",
    "resolve_release",
    "model_view",
    "same_model_files",
    "release_topology",
    "import_release",
    "load_release",
    "download_commands",
    "ensure_output_path",
]

HF_ORG = "RecursiveMAS"
#: Tasks the released links were trained for (other prompt tasks use the math links, as the reference does).
RELEASE_TASKS: tuple[str, ...] = ("math", "code")
#: Released ``adapter_type`` strings (and the reference's aliases) -> our link types.
INNER_ADAPTER_TYPES: dict[str, str] = {"ln_res_adapter": "inner_ln_res", "2layer_ln_res": "inner_ln_res"}
OUTER_ADAPTER_TYPES: dict[str, str] = {"outer_ln_res_adapter": "outer_ln_res", "2layer_ln_res": "outer_ln_res"}
_FORMAT_VERSIONS = (1,)
_CODE_LATENT_STEPS = 16  # reference: code tasks run with m = 16


class ReleaseError(RecmasError):
    """Local copies of the released checkpoints are missing, incomplete or do not fit the style."""


# --------------------------------------------------------------------------------------------------
# The released styles
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseStyle:
    """One released system: its repos, the built-in topology it runs as and its legacy outer-link keys."""

    name: str
    title: str  # repo-name prefix, e.g. "Sequential-Light"
    paradigm: str  # outerlink_config.json "paradigm"
    variant: str | None  # outerlink_config.json "variant" (sequential styles)
    agent_repos: dict[str, str]  # agent -> repo name (under HF_ORG)
    outer_repo: str
    legacy_keys: dict[str, tuple[str, str]]  # legacy key -> (source agent, target agent)

    @property
    def topology(self) -> str:
        """The built-in topology this release runs as."""
        return self.name

    @property
    def agents(self) -> list[str]:
        """Agent names in the built-in topology's order."""
        return list(self.agent_repos)

    def repo_id(self, agent: str | None = None) -> str:
        """``RecursiveMAS/<repo>`` of an agent, or of the outer links when ``agent`` is None."""
        return f"{HF_ORG}/{self.agent_repos[agent] if agent else self.outer_repo}"

    def key_of(self, source: str, target: str) -> str | None:
        """The legacy key of the edge ``source -> target`` (None when the release has none)."""
        for key, pair in self.legacy_keys.items():
            if pair == (source, target):
                return key
        return None


def _style(name: str, title: str, paradigm: str, variant: str | None, agents: dict[str, str],
           keys: dict[str, tuple[str, str]]) -> ReleaseStyle:
    return ReleaseStyle(name, title, paradigm, variant, agents, f"{title}-Outerlinks", keys)


_SEQUENTIAL_KEYS = {"outer_12": ("planner", "critic"), "outer_23": ("critic", "solver"),
                    "outer_31": ("solver", "planner")}

#: The five released styles (repo names as published under https://huggingface.co/RecursiveMAS).
STYLES: dict[str, ReleaseStyle] = {
    s.name: s
    for s in (
        _style("sequential_light", "Sequential-Light", "sequential", "light",
               {"planner": "Sequential-Light-Planner-Qwen3-1.7B", "critic": "Sequential-Light-Critic-Llama3.2-1B",
                "solver": "Sequential-Light-Solver-Qwen2.5-Math-1.5B"}, _SEQUENTIAL_KEYS),
        _style("sequential_scaled", "Sequential-Scaled", "sequential", "scaled",
               {"planner": "Sequential-Scaled-Planner-Gemma3-4B", "critic": "Sequential-Scaled-Critic-Llama3.2-3B",
                "solver": "Sequential-Scaled-Solver-Qwen3.5-4B"}, _SEQUENTIAL_KEYS),
        _style("mixture", "Mixture", "mixture", None,
               {"math": "Mixture-Math-DeepSeek-R1-Distill-Qwen-1.5B", "code": "Mixture-Code-Qwen2.5-Coder-3B",
                "science": "Mixture-Science-BioMistral-7B", "summarizer": "Mixture-Summarizer-Qwen3.5-2B"},
               {"outer_1s": ("math", "summarizer"), "outer_2s": ("code", "summarizer"),
                "outer_3s": ("science", "summarizer"), "outer_s1": ("summarizer", "math"),
                "outer_s2": ("summarizer", "code"), "outer_s3": ("summarizer", "science")}),
        _style("distillation", "Distillation", "distillation", None,
               {"expert": "Distillation-Expert-Qwen3.5-9B", "learner": "Distillation-Learner-Qwen3.5-4B"},
               {"outer_el": ("expert", "learner"), "outer_le": ("learner", "expert")}),
        _style("deliberation", "Deliberation", "deliberation", None,
               {"reflector": "Deliberation-Reflector-Qwen3.5-4B", "toolcaller": "Deliberation-Toolcaller-Qwen3.5-4B"},
               {"outer_rt": ("reflector", "toolcaller"), "outer_tr": ("toolcaller", "reflector")}),
    )
}


def get_style(name: str) -> ReleaseStyle:
    """The released style called ``name`` (``-`` and case are forgiven: ``Sequential-Light`` works)."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in STYLES:
        raise ReleaseError(f"unknown released style {name!r}", culprit="style",
                           hint=f"use one of: {', '.join(STYLES)}")
    return STYLES[key]


def download_commands(style: str | ReleaseStyle, root: str | Path = "releases") -> list[str]:
    """``hf download`` commands that put a style's repos where :func:`import_release` finds them.

    >>> download_commands("distillation", "rel")[-1]
    'hf download RecursiveMAS/Distillation-Outerlinks --local-dir rel/Distillation-Outerlinks'
    """
    s = style if isinstance(style, ReleaseStyle) else get_style(style)
    repos = [*s.agent_repos.values(), s.outer_repo]
    return [f"hf download {HF_ORG}/{repo} --local-dir {Path(root) / repo}" for repo in repos]


# --------------------------------------------------------------------------------------------------
# Finding the folders
# --------------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    """Lower-case alphanumerics only: ``Tool-Caller`` and ``toolcaller`` compare equal."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _hf_cache_snapshot(repo_dir: Path) -> Path | None:
    """The snapshot folder of a Hugging Face cache entry ``models--<org>--<name>`` (refs/main, else newest)."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snap = snapshots / ref.read_text(encoding="utf-8").strip()
        if snap.is_dir():
            return snap
    candidates = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def find_release_folder(root: str | Path, repo: str, *, prefix: str | None = None,
                        aliases: tuple[str, ...] = ()) -> Path | None:
    """Find the local copy of repo ``repo`` under ``root``; ``None`` when there is none.

    Accepted, in this order: ``root/<repo>``, ``root/RecursiveMAS/<repo>``, a Hugging Face cache
    entry ``root/models--RecursiveMAS--<repo>`` (its ``refs/main`` snapshot), any sub-folder whose
    name starts with ``prefix`` (case-insensitive, e.g. a different base-model suffix), then the
    ``aliases`` (e.g. the agent name ``planner``). Several prefix matches are an error.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for base in (root, root / HF_ORG):
        direct = base / repo
        if direct.is_dir():
            return direct
    if repo.lower() in children:
        return children[repo.lower()]
    cache_entry = root / f"models--{HF_ORG}--{repo}"
    if cache_entry.is_dir():
        snap = _hf_cache_snapshot(cache_entry)
        if snap is not None:
            return snap
    if prefix:
        low = prefix.lower()
        matches = sorted(p for name, p in children.items() if name.startswith(low))
        if len(matches) > 1:
            raise ReleaseError(
                f"several folders under {root} could hold {HF_ORG}/{repo}: {', '.join(m.name for m in matches)}",
                culprit=str(root),
                hint="keep one of them, or name the folder explicitly (--agent NAME=PATH / --outerlinks PATH)")
        if matches:
            return matches[0]
    for alias in aliases:
        if alias.lower() in children:
            return children[alias.lower()]
    return None


def _subfolders_hint(root: Path) -> str:
    try:
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return ""
    if not names:
        return f"{root} has no sub-folders"
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"sub-folders of {root}: {shown}"


# --------------------------------------------------------------------------------------------------
# Reading the release's JSON files
# --------------------------------------------------------------------------------------------------


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
    if version not in _FORMAT_VERSIONS:
        known = ", ".join(map(str, _FORMAT_VERSIONS))
        raise ReleaseError(f"unsupported format_version {version!r} in {path.name}", culprit=str(path),
                           hint=f"this version of recmas_graph reads format_version {known}")
    if style is None:
        return
    paradigm, variant = data.get("paradigm"), data.get("variant")
    wrong = (isinstance(paradigm, str) and _norm(paradigm) != _norm(style.paradigm)) or (
        isinstance(variant, str) and style.variant is not None and _norm(variant) != _norm(style.variant))
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
        if isinstance(role, str) and s is not None and _norm(role) != _norm(agent):
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


def _inner_adapter_type(folder: Path, agent: str) -> str:
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


# --------------------------------------------------------------------------------------------------
# Resolution: folders, files, sizes (no weights are read)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedAgent:
    """An agent of a release: its folder, its inner weights for the task and its hidden size."""

    name: str
    folder: Path
    inner_weights: Path
    inner_type: str
    hidden_size: int
    inner_config: Path | None = None


@dataclass(frozen=True)
class ResolvedEdge:
    """An edge of the style's topology with its released outer link."""

    index: int
    label: str
    source: str
    target: str
    legacy_key: str
    weights: Path
    link_type: str
    in_dim: int
    out_dim: int


@dataclass
class ResolvedRelease:
    """Everything :func:`release_topology` needs: the style, the task, agents and edges with their files."""

    style: ReleaseStyle
    task: str
    agents: dict[str, ResolvedAgent]
    outer_folder: Path
    outer_config: Path
    edges: list[ResolvedEdge] = field(default_factory=list)

    @property
    def hidden_sizes(self) -> dict[str, int]:
        """Agent -> hidden size (from each folder's config.json)."""
        return {name: a.hidden_size for name, a in self.agents.items()}


_MODEL_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def _check_model_folder(folder: Path, agent: str, repo_id: str) -> None:
    """A released agent folder needs config.json, weights and a tokenizer."""
    if not (folder / "config.json").is_file():
        raise ReleaseError(f"missing file {folder / 'config.json'} (model of agent {agent!r})",
                           culprit=f"agent {agent!r}", hint=f"download the complete repo {repo_id} into {folder}")
    weights = [p for pattern in _MODEL_WEIGHT_PATTERNS for p in folder.glob(pattern)
               if not p.name.startswith("adapter")]
    if not weights:
        raise ReleaseError(f"no model weights (*.safetensors) in {folder} (model of agent {agent!r})",
                           culprit=f"agent {agent!r}",
                           hint=f"download the complete repo {repo_id}; with git, run `git lfs pull` in it")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ReleaseError(f"no tokenizer files in {folder} (model of agent {agent!r})", culprit=f"agent {agent!r}",
                           hint=f"download the complete repo {repo_id}")


def _override_paths(style: ReleaseStyle, agents: Mapping[str, str | Path] | None) -> dict[str, Path]:
    overrides = {str(k): Path(v).expanduser() for k, v in dict(agents or {}).items()}
    unknown = sorted(set(overrides) - set(style.agents))
    if unknown:
        raise ReleaseError(f"unknown agent(s) {', '.join(unknown)} for style {style.name!r}", culprit="--agent",
                           hint=f"use AGENT=PATH with one of: {', '.join(style.agents)}")
    for name, path in overrides.items():
        if not path.is_dir():
            raise ReleaseError(f"no such folder: {path}", culprit=f"agent {name!r}",
                               hint=f"give the folder of {style.repo_id(name)}")
    return overrides


def _locate(style: ReleaseStyle, root: Path | None, agent: str | None, override: Path | None) -> Path:
    """The folder of an agent (or of the outer links when ``agent`` is None)."""
    if override is not None:
        return override
    repo = style.agent_repos[agent] if agent else style.outer_repo
    what = f"agent {agent!r}" if agent else "outer links"
    option = f"--agent {agent}=PATH" if agent else "--outerlinks PATH"
    if root is None:
        raise ReleaseError(f"no folder given for {what} ({HF_ORG}/{repo})", culprit=what,
                           hint=f"pass --root DIR holding the downloaded repos, or {option}")
    if not root.is_dir():
        raise ReleaseError(f"no such folder: {root}", culprit="--root",
                           hint="give the folder holding the downloaded repos (see docs/published-checkpoints.md)")
    prefix = f"{style.title}-{agent.capitalize()}" if agent else None
    aliases = (agent,) if agent else ("outerlinks", "outer_links", "outer")
    found = find_release_folder(root, repo, prefix=prefix, aliases=aliases)
    if found is None:
        raise ReleaseError(
            f"cannot find the folder of {what} ({HF_ORG}/{repo}) under {root}; {_subfolders_hint(root)}",
            culprit=what,
            hint=f"download it: `hf download {HF_ORG}/{repo} --local-dir {root / repo}`, or pass {option}")
    return found


def resolve_release(
    style: str | ReleaseStyle,
    root: str | Path | None = None,
    task: str = "math",
    *,
    agents: Mapping[str, str | Path] | None = None,
    outerlinks: str | Path | None = None,
    registry: "Registry | None" = None,
) -> ResolvedRelease:
    """Find a style's folders under ``root`` (or the explicit ``agents`` / ``outerlinks`` folders), pick
    the ``task``'s weights, map legacy keys onto the style's edges and check the configured sizes.

    Reads only JSON files and each agent's ``config.json``; raises :class:`ReleaseError` naming the
    missing file, the unknown legacy key, the missing task or the size that does not fit.
    """
    from .models import hidden_size_of
    from .registry import get_registry

    s = style if isinstance(style, ReleaseStyle) else get_style(style)
    if not isinstance(task, str) or not task.strip():
        raise ReleaseError(f"task must be a non-empty string, got {task!r}", culprit="--task",
                           hint=f"use one of: {', '.join(RELEASE_TASKS)}")
    task = task.strip().lower()
    registry = registry or get_registry()
    base = Path(root).expanduser() if root is not None else None
    overrides = _override_paths(s, agents)
    outer_override = Path(outerlinks).expanduser() if outerlinks is not None else None
    if outer_override is not None and not outer_override.is_dir():
        raise ReleaseError(f"no such folder: {outer_override}", culprit="--outerlinks",
                           hint=f"give the folder of {s.repo_id()}")

    resolved_agents: dict[str, ResolvedAgent] = {}
    for name in s.agents:
        folder = _locate(s, base, name, overrides.get(name))
        _check_model_folder(folder, name, s.repo_id(name))
        inner, inner_config = read_innerlink_config(folder, task, agent=name, style=s)
        resolved_agents[name] = ResolvedAgent(
            name=name, folder=folder, inner_weights=inner, inner_type=_inner_adapter_type(folder, name),
            hidden_size=hidden_size_of(str(folder), registry=registry), inner_config=inner_config)

    outer_folder = _locate(s, base, None, outer_override)
    outer_config = outer_folder / "outerlink_config.json"
    if not outer_config.is_file():
        raise ReleaseError(f"missing file {outer_config} (the outer links' config)", culprit="outer links",
                           hint=f"download the complete repo {s.repo_id()} into {outer_folder}")
    entries = {e.legacy_key: e for e in read_outerlink_config(outer_config, task, s)}
    unknown = [k for k in entries if k not in s.legacy_keys]
    if unknown:
        raise ReleaseError(
            f"unknown legacy key(s) {', '.join(map(repr, unknown))} in {outer_config}; the {s.name} release uses: "
            f"{', '.join(s.legacy_keys)}", culprit=str(outer_config),
            hint=f"is this the config of {s.repo_id()}? Remove the unknown entries or import the matching style")

    spec = registry.topologies[s.topology].spec
    hidden = {n: a.hidden_size for n, a in resolved_agents.items()}
    edges: list[ResolvedEdge] = []
    for index, edge in enumerate(spec.edges):
        key = s.key_of(edge.source, edge.target)
        if key is None or edge.medium != "latent":
            continue
        where = f"edge {edge.label} (legacy key {key})"
        entry = entries.get(key)
        if entry is None:
            raise ReleaseError(f"{outer_config} has no outer link {key!r} for task {task!r}, needed by edge "
                               f"{edge.label}", culprit=where, hint=f"download the complete repo {s.repo_id()} again")
        for role, agent_name, side in ((entry.source_role, edge.source, "source"),
                                       (entry.target_role, edge.target, "target")):
            if role is not None and _norm(role) != _norm(agent_name):
                raise ReleaseError(f"{outer_config}: {key} has {side}_role {role!r}, but edge {edge.label} has "
                                   f"{side} {agent_name!r}", culprit=where,
                                   hint="the config does not belong to this style; import the matching style")
        if entry.adapter_type not in OUTER_ADAPTER_TYPES:
            raise ReleaseError(f"unsupported outer adapter_type {entry.adapter_type!r} for {key} in {outer_config}",
                               culprit=where, hint=f"recmas_graph reads: {', '.join(OUTER_ADAPTER_TYPES)}")
        weights = outer_folder / entry.filename
        if not weights.is_file():
            raise ReleaseError(f"missing file {weights}, needed by edge {edge.label} (legacy key {key})",
                               culprit=where, hint=f"download the complete repo {s.repo_id()} into {outer_folder}")
        sides = (("in_dim", entry.in_dim, edge.source), ("out_dim", entry.out_dim, edge.target))
        for dim_name, found, agent_name in sides:
            expected = hidden[agent_name]
            if found is not None and found != expected:
                raise ReleaseError(
                    f"{outer_config.name} gives {dim_name}={found} for {weights.name} ({key}), but agent "
                    f"{agent_name!r} has hidden size {expected} (config.json of {resolved_agents[agent_name].folder})",
                    culprit=where,
                    hint=f"the link was trained for another model: point {agent_name!r} at {s.repo_id(agent_name)}")
        edges.append(ResolvedEdge(index=index, label=edge.label, source=edge.source, target=edge.target,
                                  legacy_key=key, weights=weights, link_type=OUTER_ADAPTER_TYPES[entry.adapter_type],
                                  in_dim=hidden[edge.source], out_dim=hidden[edge.target]))
    return ResolvedRelease(style=s, task=task, agents=resolved_agents, outer_folder=outer_folder,
                           outer_config=outer_config, edges=edges)


# --------------------------------------------------------------------------------------------------
# Model views (PEFT-proof) and shared models
# --------------------------------------------------------------------------------------------------

#: Files that make transformers (with peft installed) treat a folder as an adapter, plus the link files.
_VIEW_EXCLUDED = {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "innerlink_config.json",
                  "README.md", "_plain_model_view"}


def _in_view(path: Path) -> bool:
    name = path.name
    return not (name in _VIEW_EXCLUDED or name.startswith(".") or path.suffix == ".pt")


def _link(target: Path, link: Path) -> None:
    """Symlink ``link`` -> ``target``; hard link or copy where symlinks are not allowed."""
    try:
        link.symlink_to(target, target_is_directory=target.is_dir())
        return
    except OSError:
        pass
    if target.is_dir():
        shutil.copytree(target, link)
        return
    try:
        os.link(target, link)
    except OSError:
        shutil.copy2(target, link)


def _view_is_current(view: Path, entries: list[Path]) -> bool:
    if not view.is_dir():
        return False
    names = {p.name for p in view.iterdir()}
    if names != {p.name for p in entries}:
        return False
    for entry in entries:
        item = view / entry.name
        if not item.is_symlink() or Path(os.readlink(item)) != entry.resolve():
            return False
    return True


def _default_views_dir() -> Path:
    from .assets import cache_root

    return cache_root() / "release-views"


def model_view(folder: str | Path, views_dir: str | Path | None = None) -> Path:
    """A folder transformers loads as a plain model, whatever else ``folder`` holds.

    When ``folder`` has an ``adapter_config.json`` (every released agent repo), returns
    ``<views_dir>/<name>-<hash>``: links to all of ``folder``'s files but ``adapter_config.json``,
    ``innerlink_config.json``, ``*.pt`` and hidden files, so transformers' PEFT detection cannot
    trigger. Otherwise returns ``folder`` itself. Idempotent; a stale view is rebuilt atomically.
    ``views_dir`` defaults to ``cache_root() / "release-views"``.
    """
    folder = Path(folder).expanduser().resolve()
    if not (folder / "adapter_config.json").exists():
        return folder
    root = Path(views_dir).expanduser().resolve() if views_dir is not None else _default_views_dir()
    digest = hashlib.sha256(str(folder).encode("utf-8")).hexdigest()[:12]
    view = root / f"{folder.name}-{digest}"
    entries = sorted((p for p in folder.iterdir() if _in_view(p)), key=lambda p: p.name)
    if _view_is_current(view, entries):
        return view
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{view.name}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir()
        for entry in entries:
            _link(entry.resolve(), tmp / entry.name)
        if view.exists() or view.is_symlink():
            if view.is_symlink() or view.is_file():
                view.unlink()
            else:
                shutil.rmtree(view)  # a view holds links only (copies where links are not allowed)
        os.replace(tmp, view)
    except OSError as err:
        raise ReleaseError(f"cannot create the model view {view}: {err.strerror or err}", culprit=str(folder),
                           hint="pass a writable --views-dir (or set RECMAS_CACHE)") from None
    return view


def _model_files(folder: Path) -> dict[str, Path]:
    files = {"config.json": folder / "config.json"} if (folder / "config.json").is_file() else {}
    for pattern in ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json"):
        for p in folder.glob(pattern):
            if not p.name.startswith("adapter"):
                files[p.name] = p
    return files


def _hf_etag(path: Path) -> str | None:
    """The etag (sha256 for LFS files) that ``hf download --local-dir`` records beside a file."""
    meta = path.parent / ".cache" / "huggingface" / "download" / f"{path.name}.metadata"
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return lines[1].strip() if len(lines) > 1 and lines[1].strip() else None


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 23) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


def _same_file(a: Path, b: Path) -> bool:
    ra, rb = a.resolve(), b.resolve()
    if ra == rb:
        return True
    sa, sb = ra.stat(), rb.stat()
    if sa.st_size != sb.st_size:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    if ra.parent.name == "blobs" and rb.parent.name == "blobs":  # HF cache blobs are named by their hash
        return ra.name == rb.name
    ea, eb = _hf_etag(a), _hf_etag(b)
    if ea and eb:
        return ea == eb
    return _same_bytes(ra, rb)


def same_model_files(a: str | Path, b: str | Path) -> bool:
    """Whether two folders hold the same model (config.json and weight files identical).

    Cheap where it can be (same file, HF cache blob names, ``hf download`` metadata), else compares
    the bytes. The released deliberation agents are two repos with the same frozen Qwen3.5-4B.
    """
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    fa, fb = _model_files(a), _model_files(b)
    if not fa or set(fa) != set(fb):
        return False
    return all(_same_file(fa[name], fb[name]) for name in sorted(fa))


def _shared_folders(resolved: ResolvedRelease, share_models: bool) -> dict[str, Path]:
    """Agent -> model folder, agents holding an identical model mapped to the first such agent's folder."""
    chosen: dict[str, Path] = {}
    for name, agent in resolved.agents.items():
        folder = agent.folder
        if share_models:
            for other in chosen.values():
                if same_model_files(other, folder):
                    folder = other
                    break
        chosen[name] = folder
    return chosen


# --------------------------------------------------------------------------------------------------
# The topology and the system
# --------------------------------------------------------------------------------------------------


def release_topology(
    resolved: ResolvedRelease,
    *,
    views_dir: str | Path | None = None,
    share_models: bool = True,
    rounds: int | None = None,
    latent_steps: int | None = None,
    check_weights: bool = True,
    registry: "Registry | None" = None,
) -> "TopologySpec":
    """The style's built-in topology with the release's local models and link weights filled in.

    Model references are absolute paths of PEFT-proof views (:func:`model_view`); agents holding
    the same model share one reference (loaded once). Link weights are absolute paths.
    ``check_weights`` reads every state dict and checks its shapes (:func:`~recmas_graph.links.check_link_weights`).
    """
    from .links import check_link_weights
    from .registry import get_registry
    from .spec import parse_topology

    registry = registry or get_registry()
    s = resolved.style
    data = registry.topologies[s.topology].spec.model_dump(mode="json")
    folders = _shared_folders(resolved, share_models)
    views: dict[Path, Path] = {}
    for agent in data["agents"]:
        ra = resolved.agents[agent["name"]]
        folder = folders[ra.name]
        if folder not in views:
            views[folder] = model_view(folder, views_dir)
        agent["model"] = str(views[folder])
        agent["inner_link"] = {**agent["inner_link"], "type": ra.inner_type, "weights": str(ra.inner_weights.resolve())}
    for edge in resolved.edges:
        entry = data["edges"][edge.index]
        entry["link"] = {**entry["link"], "type": edge.link_type, "weights": str(edge.weights.resolve())}
    data["name"] = f"{s.name}_release"
    data["description"] = (f"{s.title} RecursiveMAS release ({HF_ORG}), task {resolved.task!r} links, imported from "
                           f"local copies: " + ", ".join(f"{n} <- {a.folder.name}" for n, a in resolved.agents.items())
                           + f"; outer links <- {resolved.outer_folder.name}.")
    if resolved.task == "code":
        data["latent_steps"] = _CODE_LATENT_STEPS
    if rounds is not None:
        data["rounds"] = rounds
    if latent_steps is not None:
        data["latent_steps"] = latent_steps
    spec = parse_topology(data, source=f"release {s.name}")
    if check_weights:
        check_link_weights(spec, resolved.hidden_sizes, registry=registry)
    return spec


def import_release(
    style: str,
    root: str | Path | None = None,
    task: str = "math",
    *,
    output: str | Path | None = None,
    agents: Mapping[str, str | Path] | None = None,
    outerlinks: str | Path | None = None,
    views_dir: str | Path | None = None,
    share_models: bool = True,
    rounds: int | None = None,
    latent_steps: int | None = None,
    check_weights: bool = True,
    registry: "Registry | None" = None,
) -> "TopologySpec":
    """A runnable topology of released style ``style`` from local copies of its repos under ``root``.

    ``task`` picks the links trained for ``"math"`` or ``"code"`` (task-agnostic releases ignore it);
    ``agents`` / ``outerlinks`` name folders explicitly (``{"planner": "/models/planner"}``);
    ``output`` also writes the topology JSON there. See :func:`resolve_release` and
    :func:`release_topology` for the checks and the paths written.
    """
    from .spec import dump_topology

    resolved = resolve_release(style, root, task, agents=agents, outerlinks=outerlinks, registry=registry)
    spec = release_topology(resolved, views_dir=views_dir, share_models=share_models, rounds=rounds,
                            latent_steps=latent_steps, check_weights=check_weights, registry=registry)
    if output is not None:
        dump_topology(spec, ensure_output_path(output))
    return spec


def ensure_output_path(output: str | Path) -> Path:
    """The topology file to write (its folder created); a folder is refused."""
    path = Path(output).expanduser()
    if path.is_dir():
        raise ReleaseError(f"{path} is a folder", culprit="--output", hint="give a file name, e.g. release.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def load_release(
    style: str,
    root: str | Path | None = None,
    task: str = "math",
    *,
    agents: Mapping[str, str | Path] | None = None,
    outerlinks: str | Path | None = None,
    views_dir: str | Path | None = None,
    share_models: bool = True,
    rounds: int | None = None,
    latent_steps: int | None = None,
    registry: "Registry | None" = None,
    **build_kwargs: Any,
) -> "RecursiveSystem":
    """Import a released style (see :func:`import_release`) and build it into a ready system.

    ``build_kwargs`` go to :meth:`~recmas_graph.executor.RecursiveSystem.build` (``device``, ``dtype``,
    ``model_cache``, ...). The weights are checked once, when the system is built.
    """
    from .executor import RecursiveSystem

    spec = import_release(style, root, task, agents=agents, outerlinks=outerlinks, views_dir=views_dir,
                          share_models=share_models, rounds=rounds, latent_steps=latent_steps, check_weights=False,
                          registry=registry)
    return RecursiveSystem.build(spec, registry=registry, **build_kwargs)
