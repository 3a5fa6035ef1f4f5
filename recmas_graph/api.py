"""The public entry points that fall back to the process-wide registry of installed plugins.

Library functions take the registry (the catalog) as an argument; these are the only ones that
default to :func:`recmas_graph.plugins.default_registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .plugins.manager import Registry, default_registry
from .topology.compile import CompiledTopology
from .topology.spec import TopologySpec

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .experiment.run import ExperimentReport
    from .runtime.system import RecursiveSystem
    from .search.run import SearchReport

__all__ = ["compile", "from_pretrained", "search", "experiment"]


def compile(topology: str | Path | TopologySpec | Mapping[str, Any], *,  # noqa: A001 - the LangGraph verb
            registry: Registry | None = None) -> CompiledTopology:
    """Validate and schedule a topology: a registered name, a JSON file path, a dict or a spec.

    Loads no weights and imports no torch. Every problem is reported at once in one
    :class:`~recmas_graph.errors.TopologyError` (or :class:`~recmas_graph.errors.SpecError` for a
    malformed file). ``registry`` defaults to the installed plugins.

    >>> compiled = compile("sequential_light")
    >>> [str(p) for p in compiled.schedule(2).passes]
    ['planner1:latent', 'critic1:latent', 'solver1:latent', 'planner2:latent', 'critic2:latent', 'solver2:decode']
    """
    return (registry or default_registry()).compile(topology)


def from_pretrained(folder: str | Path, *, registry: Registry | None = None, **build: Any) -> RecursiveSystem:
    """The system saved in ``folder`` by ``system.save_pretrained(folder)`` (or written by
    ``recmas calibrate`` / ``recmas train``), built with ``build``'s keywords (``device``, ``dtype``,
    ``low_memory``...); ``registry`` defaults to the installed plugins. Returns a
    :class:`~recmas_graph.runtime.RecursiveSystem`."""
    from .runtime.pretrained import load_pretrained

    return load_pretrained(folder, (registry or default_registry()).compile, **build)


def search(space: Any, dataset: Any, *, out: str | Path, registry: Registry | None = None,
           **options: Any) -> SearchReport:
    """Search ``space`` (a search-space file or dict: a base topology and what may change) on
    ``dataset`` for the accuracy-cost Pareto front, in the resumable folder ``out``; ``registry``
    defaults to the installed plugins. Returns a :class:`~recmas_graph.search.SearchReport`; the
    options are :func:`recmas_graph.search.search`'s (``trials``, ``limit``, ``heldout``, ``cost``,
    ``build``...). Needs the extra ``search-topologies`` (Optuna); docs/search.md."""
    from .search.run import search as run_search

    return run_search(space, dataset, out=out, registry=registry or default_registry(), **options)


def experiment(file: Any, *, out: str | Path, registry: Registry | None = None,
               **options: Any) -> ExperimentReport:
    """Run the experiment ``file`` (an experiment JSON file, a dict or an ``ExperimentSpec``: systems,
    training data, one recipe, the evaluation, the seeds) in the folder ``out``, reusing every stage
    already finished there, and write its report; ``registry`` defaults to the installed plugins.
    Returns an :class:`~recmas_graph.experiment.ExperimentReport`; the options are
    :func:`recmas_graph.experiment.run_experiment`'s (``models="tiny"``, ``dry_run``, ``backend``,
    ``progress``...). docs/experiments.md."""
    from .experiment.run import run_experiment

    return run_experiment(file, out=out, registry=registry or default_registry(), **options)
