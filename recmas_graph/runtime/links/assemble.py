"""A system's links from what is known of its models: the same links wherever the models live.

:func:`build_system_links` builds every inner link and every latent edge's outer link of a
compiled topology, in one fixed order under one seed, from each agent's :class:`ModelFacts`
(hidden size, token-embedding RMS). It needs the loaded models only for link types that fit
themselves from them (``calibrate``). So a process holding a few of the models (a Ray actor, a
low-memory build that loads one model at a time) builds exactly the links an in-process build
does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .build import build_link, embedding_rms, prepare_untrained

__all__ = ["ModelFacts", "build_system_links", "self_fitting_links"]


@dataclass(frozen=True)
class ModelFacts:
    """What building links needs to know of an agent's model: widths, embedding scale, dtype."""

    hidden_size: int
    embedding_rms: float
    dtype: str = "float32"

    @classmethod
    def of(cls, loaded: Any) -> "ModelFacts":
        """The facts of a :class:`~recmas_graph.runtime.sources.LoadedModel`."""
        return cls(int(loaded.hidden_size), embedding_rms(loaded), str(loaded.dtype).removeprefix("torch."))

    @property
    def torch_dtype(self) -> torch.dtype:
        """:attr:`dtype` as a ``torch.dtype``."""
        return getattr(torch, self.dtype)


def build_system_links(compiled: Any, facts: Mapping[str, ModelFacts], *, seed: int,
                       devices: Mapping[str, Any] | None = None,
                       models: Mapping[str, Any] | None = None,
                       own: Collection[str] | None = None) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """``(inner links by agent, outer links by latent edge id)`` of ``compiled``.

    Links are built in agent order, then edge order, from one generator state seeded by ``seed``
    (the global one is left as it was), so the random ones are the same for every caller.
    ``devices[agent]`` is where an agent's inner link and its incoming outer links go (default: the
    CPU); ``models[agent]`` are the loaded models at hand (only ``calibrate`` link types need them).
    ``own`` (default: every agent) names the agents whose links this caller prepares: a link of
    another agent (inner) or into another agent (outer) that fits itself from the models is left
    as built, for the process holding them to fit.
    """
    spec, catalog, base = compiled.spec, compiled.catalog, compiled.base_dir
    devices = devices or {}
    models = models or {}
    inner: dict[str, nn.Module] = {}
    outer: dict[str, nn.Module] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for a in spec.agents:
            where = f"agent {a.name!r} inner_link"
            size = facts[a.name].hidden_size
            link = build_link(a.inner_link, size, size, link_types=catalog.link_types, base_dir=base, where=where)
            if a.inner_link.weights_file is None and _prepares(link, a.name, own):
                lm = models.get(a.name)
                prepare_untrained(link, lm, lm, outer=False, target_rms=facts[a.name].embedding_rms, where=where)
            inner[a.name] = link.to(devices.get(a.name, "cpu"))
        for edge_id, edge in compiled.edges.items():
            if edge.medium != "latent":
                continue
            where = f"edge {edge.label}"
            src, dst = facts[edge.source], facts[edge.target]
            link = build_link(edge.link, src.hidden_size, dst.hidden_size, link_types=catalog.link_types,
                              base_dir=base, where=where)
            if edge.link.weights_file is None and _prepares(link, edge.target, own):
                prepare_untrained(link, models.get(edge.source), models.get(edge.target), outer=True,
                                  target_rms=dst.embedding_rms, where=where)
            outer[edge_id] = link.to(devices.get(edge.target, "cpu"))
    return inner, outer


def _prepares(link: nn.Module, agent: str, own: Collection[str] | None) -> bool:
    """Whether this caller prepares ``link`` (of or into ``agent``): scale matching needs only facts."""
    return own is None or agent in own or not hasattr(link, "calibrate")


def self_fitting_links(compiled: Any) -> list[tuple[str, tuple[str, ...]]]:
    """The links without weights whose type fits itself from the loaded models (a ``calibrate``
    method): ``(where, the agents whose models it needs)`` each, in build order."""
    catalog = compiled.catalog
    found: list[tuple[str, tuple[str, ...]]] = []

    def fits_itself(type_name: str) -> bool:
        link_type = catalog.link_types.get(type_name)
        try:
            return link_type is not None and hasattr(link_type.load_factory(), "calibrate")
        except Exception:  # noqa: BLE001 - a broken plugin is reported when the link is built
            return False

    for a in compiled.spec.agents:
        if a.inner_link.weights_file is None and fits_itself(a.inner_link.type):
            found.append((f"agent {a.name!r} inner_link", (a.name,)))
    for edge in compiled.edges.values():
        if edge.medium == "latent" and edge.link.weights_file is None and fits_itself(edge.link.type):
            found.append((f"edge {edge.label}", (edge.source, edge.target)))
    return found
