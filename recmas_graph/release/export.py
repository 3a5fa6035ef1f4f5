"""Writing a system's links in the published layout, so that the official code and :func:`import_release` load them.

For a system whose agents and latent edges are those of a released style (``sequential_light``
and its ``_mini`` variant, ``mixture``, ...), :func:`export_release` writes under ``out``:

- one folder per agent, named as the style's Hub repo: the agent's model and tokenizer
  (``save_pretrained``), ``adapter_config.json`` and its inner link as a reference state dict,
  ``adapter(<task>).pt`` with an ``innerlink_config.json`` for the task-trained styles (sequential,
  distillation), ``adapter.pt`` for the others;
- ``<Title>-Outerlinks/``: ``outerlink_config.json`` listing every outer link by its legacy key
  (``outer_12``, ...) with its file, type and sizes, and one ``<Source>-<Target>-Outerlink(<task>).pt``
  per edge.

Only the reference link types (``inner_ln_res``, ``outer_ln_res`` with default options) exist in
that layout. Imported back, the folders run as the style's built-in topology (its reference
prompts), which is what the released checkpoints are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .styles import STYLES, ReleaseError, ReleaseStyle, get_style

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["TASKED_PARADIGMS", "matching_style", "export_release"]

#: Paradigms whose releases keep one set of links per task (``adapter(math).pt``, ``tasks`` nesting).
TASKED_PARADIGMS: tuple[str, ...] = ("sequential", "distillation")


def _latent_pairs(spec: Any) -> list[tuple[str, str]]:
    return [(e.source, e.target) for e in spec.edges if e.medium == "latent"]


def _fits(style: ReleaseStyle, spec: Any) -> bool:
    pairs = _latent_pairs(spec)
    return ({a.name for a in spec.agents} == set(style.agents) and len(set(pairs)) == len(pairs)
            and set(pairs) == set(style.legacy_keys.values()))


def matching_style(spec: Any) -> ReleaseStyle | None:
    """The released style with the same agents and latent edges as ``spec`` (None when none fits)."""
    fits = [s for s in STYLES.values() if _fits(s, spec)]
    return fits[0] if fits else None


def _role(agent: str) -> str:
    return agent[:1].upper() + agent[1:]


def _state(module: Any) -> dict[str, Any]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _tasks(config: Path) -> dict[str, Any]:
    """The ``tasks`` of a config an earlier export wrote (empty when there is none or it is unreadable)."""
    try:
        tasks = json.loads(config.read_text(encoding="utf-8")).get("tasks")
    except (OSError, ValueError, AttributeError):
        return {}
    return dict(tasks) if isinstance(tasks, dict) else {}


def _check_link(kind: str, link_spec: Any, expected: str, where: str) -> None:
    if link_spec.type != expected or link_spec.options:
        raise ReleaseError(f"{where} is a {link_spec.type!r} link with options {dict(link_spec.options)}; the published "
                           f"layout holds only {expected!r} links with their default options", culprit=where,
                           hint="export it in our own format instead (the folder recmas train / calibrate wrote)")


def export_release(system: RecursiveSystem, out: str | Path, *, style: str | None = None, task: str = "math") -> Path:
    """Write ``system``'s models and links under ``out`` in the published layout; returns ``out``.

    ``style`` defaults to the released style whose agents and latent edges ``system`` has. ``task``
    names the links in the task-trained styles' files (``adapter(math).pt``).
    """
    import torch

    spec = system.spec
    s = get_style(style) if style is not None else matching_style(spec)
    if s is None:
        names = ", ".join(STYLES)
        raise ReleaseError(f"topology {spec.name!r} has the agents and edges of no released style", culprit="--style",
                           hint=f"the published layout exists for: {names}; keep our own format for other topologies")
    if not _fits(s, spec):
        raise ReleaseError(f"topology {spec.name!r} does not have the agents and latent edges of {s.name!r} "
                           f"({', '.join(s.agents)})", culprit="--style",
                           hint="pick the style the topology follows, or leave --style out to find it")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    tasked = s.paradigm in TASKED_PARADIGMS
    header = {"format_version": 1, "paradigm": s.paradigm, **({"variant": s.variant} if s.variant else {})}
    for agent in spec.agents:
        _check_link("inner", agent.inner_link, "inner_ln_res", f"the inner link of agent {agent.name!r}")
    for edge_id, edge in zip(system.compiled.edge_ids, spec.edges, strict=True):
        if edge.medium == "latent":
            _check_link("outer", edge.link, "outer_ln_res", f"the outer link of edge {edge_id!r}")
    for agent in spec.agents:
        target = folder / s.agent_repos[agent.name]
        target.mkdir(parents=True, exist_ok=True)
        loaded = system.agents[agent.name].load()
        loaded.model.save_pretrained(target)
        loaded.tokenizer.save_pretrained(target)
        (target / "adapter_config.json").write_text(json.dumps({"adapter_type": "ln_res_adapter"}, indent=2) + "\n")
        name = f"adapter({task}).pt" if tasked else "adapter.pt"
        torch.save(_state(system.inner_links[agent.name]), target / name)
        if tasked:  # links of other tasks exported into this folder before are kept
            tasks = {**_tasks(target / "innerlink_config.json"), task: {"adapter.pt": name}}
            config = {**header, "role": _role(agent.name), "tasks": tasks}
            (target / "innerlink_config.json").write_text(json.dumps(config, indent=2) + "\n")
    outer = folder / s.outer_repo
    outer.mkdir(parents=True, exist_ok=True)
    entries = []
    for edge_id, edge in zip(system.compiled.edge_ids, spec.edges, strict=True):
        if edge.medium != "latent":
            continue
        key = s.key_of(edge.source, edge.target)
        stem = f"{_role(edge.source)}-{_role(edge.target)}-Outerlink"
        filename = f"{stem}({task}).pt" if tasked else f"{stem}.pt"
        torch.save(_state(system.outer_links[edge_id]), outer / filename)
        entries.append({"legacy_key": key, "legacy_filename": f"{key}.pt", "filename": filename,
                        "source_role": _role(edge.source), "target_role": _role(edge.target),
                        "adapter_type": "outer_ln_res_adapter",
                        "in_dim": system.agents[edge.source].hidden_size,
                        "out_dim": system.agents[edge.target].hidden_size})
    entries.sort(key=lambda e: list(s.legacy_keys).index(e["legacy_key"]))
    if tasked:
        tasks = {**_tasks(outer / "outerlink_config.json"), task: {"task": task, "adapters": entries}}
        config = {**header, "tasks": tasks}
    else:
        config = {**header, "adapters": entries}
    (outer / "outerlink_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder
