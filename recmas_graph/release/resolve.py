"""Resolving a release: its folders, the task's weight files and the sizes, checked without reading weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..plugins.manager import Registry, default_registry
from ..topology.catalog import resolve_model_source
from .configs import inner_adapter_type, read_innerlink_config, read_outerlink_config
from .folders import find_release_folder, norm_name, subfolders_hint
from .styles import HF_ORG, OUTER_ADAPTER_TYPES, RELEASE_TASKS, ReleaseError, ReleaseStyle, get_style

__all__ = ["ResolvedAgent", "ResolvedEdge", "ResolvedRelease", "resolve_release"]


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
            f"cannot find the folder of {what} ({HF_ORG}/{repo}) under {root}; {subfolders_hint(root)}",
            culprit=what,
            hint=f"download it: `hf download {HF_ORG}/{repo} --local-dir {root / repo}`, or pass {option}")
    return found


def _hidden_size(folder: Path, registry: Registry) -> int:
    size = resolve_model_source(str(folder), registry.model_sources).hidden_size_of(str(folder))
    if size is None:
        raise ReleaseError(f"cannot read the hidden size of {folder}", culprit=str(folder / "config.json"),
                           hint="the folder needs the model's config.json with a hidden_size")
    return int(size)


def resolve_release(
    style: str | ReleaseStyle,
    root: str | Path | None = None,
    task: str = "math",
    *,
    agents: Mapping[str, str | Path] | None = None,
    outerlinks: str | Path | None = None,
    registry: Registry | None = None,
) -> ResolvedRelease:
    """Find a style's folders under ``root`` (or the explicit ``agents`` / ``outerlinks`` folders), pick
    the ``task``'s weights, map legacy keys onto the style's edges and check the configured sizes.

    Reads only JSON files and each agent's ``config.json``; raises :class:`ReleaseError` naming the
    missing file, the unknown legacy key, the missing task or the size that does not fit.
    """

    s = style if isinstance(style, ReleaseStyle) else get_style(style)
    if not isinstance(task, str) or not task.strip():
        raise ReleaseError(f"task must be a non-empty string, got {task!r}", culprit="--task",
                           hint=f"use one of: {', '.join(RELEASE_TASKS)}")
    task = task.strip().lower()
    registry = registry or default_registry()
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
            name=name, folder=folder, inner_weights=inner, inner_type=inner_adapter_type(folder, name),
            hidden_size=_hidden_size(folder, registry), inner_config=inner_config)

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
            if role is not None and norm_name(role) != norm_name(agent_name):
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
