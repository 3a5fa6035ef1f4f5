"""Building links: a registered link type for given sizes, with its weights or an untrained start.

>>> sorted(link_expected_shapes("outer_ln_res", 8, 4))[:2]
['ln_source.bias', 'ln_source.weight']
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import LinkError
from ...topology.catalog import LinkType
from ...topology.spec import LinkSpec, TopologySpec
from .checkpoints import (SHAPE_HINT, Shape, link_weight_shapes, load_link_weights, read_link_config,
                          resolve_weights_path, shape_problems, strip_prefix)

__all__ = [
    "construct_link",
    "link_expected_shapes",
    "check_link_weights",
    "build_link",
    "prepare_untrained",
    "embedding_rms",
]


def _table(link_types: Mapping[str, LinkType] | None) -> Mapping[str, LinkType]:
    if link_types is not None:
        return link_types
    from . import BUILTIN_LINK_TYPES

    return {t.name: t for t in BUILTIN_LINK_TYPES}


def _lookup(type_name: str, link_types: Mapping[str, LinkType] | None, where: str) -> LinkType:
    table = _table(link_types)
    link_type = table.get(type_name)
    if link_type is None:
        known = ", ".join(sorted(table)) or "none"
        raise LinkError(f"unknown link type {type_name!r}", culprit=where,
                        hint=f"use one of: {known}; or install a plugin that registers it")
    return link_type


def construct_link(type_name: str, in_dim: int, out_dim: int, options: Mapping[str, Any] | None = None, *,
                   link_types: Mapping[str, LinkType] | None = None, where: str = "link") -> nn.Module:
    """Build a registered link type for ``in_dim -> out_dim`` with random init (no weights loaded).

    ``link_types`` is the table of registered link types (default: the built-in ones).
    """
    link_type = _lookup(type_name, link_types, where)
    options = dict(options or {})
    try:
        factory = link_type.load_factory()
    except Exception as err:
        raise LinkError(f"cannot import link type {type_name!r} ({link_type.factory!r}): {type(err).__name__}: {err}",
                        culprit=where, hint="fix or reinstall the plugin that registers it") from err
    try:
        module = factory(in_dim, out_dim, **options)
    except LinkError as err:
        raise LinkError(f"link type {type_name!r} ({in_dim} -> {out_dim}): {err.message}", culprit=where,
                        hint=err.hint) from None
    except TypeError as err:
        accepted = link_type.accepted_options()
        hint = f"options accepted by {type_name!r}: {', '.join(accepted) or 'none'}"
        raise LinkError(f"link type {type_name!r} rejected options {options}: {err}", culprit=where, hint=hint) from err
    except Exception as err:
        raise LinkError(f"building link type {type_name!r} ({in_dim} -> {out_dim}) failed: {type(err).__name__}: {err}",
                        culprit=where, hint="check the link's options and the agents' hidden sizes") from err
    if not isinstance(module, nn.Module):
        raise LinkError(f"link type {type_name!r} built a {type(module).__name__}, not a torch.nn.Module",
                        culprit=where, hint="fix the plugin that registers it")
    return module


def link_expected_shapes(type_name: str, in_dim: int, out_dim: int, options: Mapping[str, Any] | None = None, *,
                         link_types: Mapping[str, LinkType] | None = None, where: str = "link") -> dict[str, Shape]:
    """State-dict key -> shape that a link type has for ``in_dim -> out_dim`` (built on the meta device)."""
    with torch.device("meta"):
        module = construct_link(type_name, in_dim, out_dim, options, link_types=link_types, where=where)
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def build_link(link_spec: LinkSpec, in_dim: int, out_dim: int, *, link_types: Mapping[str, LinkType] | None = None,
               base_dir: Path | None = None, where: str) -> nn.Module:
    """Build the link of ``link_spec`` for ``in_dim -> out_dim`` and load its weights when it names some.

    ``where`` names the link in errors, e.g. ``"edge planner->critic"`` or ``"agent 'planner' inner_link"``.
    """
    module = construct_link(link_spec.type, in_dim, out_dim, link_spec.options, link_types=link_types, where=where)
    if link_spec.weights_file:  # "calibrated:<dataset>" links are fitted after the build
        path = resolve_weights_path(link_spec.weights_file, base_dir)
        config = read_link_config(path)
        if config is not None and config.get("type") not in (None, link_spec.type):
            raise LinkError(
                f"weights {path} were saved for link type {config.get('type')!r}, but the spec says {link_spec.type!r}",
                culprit=where, hint=f"set the link type to {config.get('type')!r} or use weights of {link_spec.type!r}")
        load_link_weights(module, path, where, dims=(in_dim, out_dim))
    return module


def embedding_rms(loaded: Any, sample: int = 4096) -> float:
    """RMS per element of the model's input embeddings (as its embedding module outputs them)."""
    embed = loaded.model.get_input_embeddings()
    n = min(sample, embed.weight.shape[0])
    ids = torch.linspace(0, embed.weight.shape[0] - 1, n, device=embed.weight.device).long()
    with torch.no_grad():
        vectors = embed(ids).float()  # (n, H); Gemma's module includes its sqrt(H) scaling
    return float(vectors.pow(2).mean().sqrt())


def prepare_untrained(link: nn.Module, source: Any, target: Any, *, outer: bool, target_rms: float | None = None,
                      where: str = "link") -> None:
    """Prepare a link that has no weights: fit a training-free link, or set a random link's output scale.

    A link with a ``calibrate`` method is fitted: ``calibrate(source)`` for an inner link (source
    and target are the agent's model), ``calibrate(source, target=target)`` for an outer link; it
    needs the loaded models (``None`` where they live elsewhere raises :class:`LinkError`). A link
    with ``match_output_rms`` gets the target model's token-embedding RMS (``target_rms`` when
    known, else measured on ``target``), so untrained messages sit on the scale of real input
    embeddings.
    """
    if hasattr(link, "calibrate"):
        if source is None or target is None:
            raise LinkError("this link type fits itself from the loaded models, which live in another process here",
                            culprit=where, hint="place the agents this link joins in one process (the same "
                                                "model or device), or give the link weights")
        if outer:
            link.calibrate(source, target=target)
        else:
            link.calibrate(source)
    elif hasattr(link, "match_output_rms"):
        link.match_output_rms(embedding_rms(target) if target_rms is None else target_rms)


def check_link_weights(spec: TopologySpec, hidden_sizes: Mapping[str, int], base_dir: Path | None = None,
                       link_types: Mapping[str, LinkType] | None = None) -> None:
    """Check that every link's stored weights fit the agents' hidden sizes; raise :class:`LinkError` if not.

    Inner links need ``(H_agent, H_agent)``, latent edges ``(H_source, H_target)``; text edges and
    links without weights are skipped. All problems are reported together, each naming its link.
    """
    jobs: list[tuple[str, str, LinkSpec, str, str]] = []
    for agent in spec.agents:
        if agent.inner_link.weights_file:
            jobs.append((f"agent {agent.name!r} inner_link", "inner link weights", agent.inner_link,
                         agent.name, agent.name))
    for edge in spec.edges:
        if edge.medium == "latent" and edge.link.weights_file:
            jobs.append((f"edge {edge.label}", "outer link weights", edge.link, edge.source, edge.target))
    problems: list[tuple[str, str, str | None]] = []
    for where, what, link, source, target in jobs:
        dims: list[int] = []
        for name in (source, target):
            if name not in hidden_sizes:
                raise LinkError(f"hidden size of agent {name!r} is not known", culprit=where,
                                hint="pass every agent's hidden size in hidden_sizes")
            dims.append(int(hidden_sizes[name]))
        path = resolve_weights_path(link.weights_file, base_dir)
        try:
            expected = link_expected_shapes(link.type, dims[0], dims[1], link.options, link_types=link_types, where=where)
            found = strip_prefix(link_weight_shapes(path, where), expected)
        except LinkError as err:
            problems.append((where, err.message, err.hint))
            continue
        problem = shape_problems(expected, found, what, path, (dims[0], dims[1]))
        if problem is not None:
            problems.append((where, problem, SHAPE_HINT))
    if len(problems) == 1:
        where, message, hint = problems[0]
        raise LinkError(message, culprit=where, hint=hint)
    if problems:
        lines = "\n  ".join(f"{where}: {message}" for where, message, _ in problems)
        hints = "; ".join(dict.fromkeys(h for _, _, h in problems if h))
        raise LinkError(f"{len(problems)} links do not fit their weights\n  {lines}", culprit=f"topology {spec.name!r}",
                        hint=hints or None)
