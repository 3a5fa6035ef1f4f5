"""Topology search: the accuracy-cost Pareto front of the variants of a topology (extra ``search-topologies``).

A search space (:mod:`.space`: a base topology; ranges or choices of rounds and latent steps;
per edge the medium or dropping it; dropping agents; named link weights) is explored by a
multi-objective Optuna study stored in SQLite under the output folder (:mod:`.study`), each trial
grown by successive halving on the number of questions with every evaluation in the records
format of :func:`recmas_graph.eval.evaluate` (:mod:`.rungs`). The result is the Pareto front as a
table, CSV, JSON, a plot and runnable topologies (:mod:`.front`), re-evaluated on held-out
questions with paired tests against the base (:mod:`.recheck`)::

    import recmas_graph as rg
    report = rg.search("space.json", "arc_easy", out="runs/search", trials=30, limit=60, heldout=100)
    for row in report.front:
        print(row["label"], row["accuracy"], row["cost"], row["heldout_p"])
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .front import pareto_front
from .run import SearchReport, search
from .space import (ResolvedSpace, SearchError, SearchSpace, Variant, parse_search_space, read_search_space,
                    resolve_space, search_space_json_schema)
from .study import SearchProgress

__all__ = [
    "search", "SearchReport", "SearchProgress", "SearchError", "SearchSpace", "ResolvedSpace", "Variant",
    "parse_search_space", "read_search_space", "resolve_space", "search_space_json_schema", "pareto_front",
]


class _CallableModule(types.ModuleType):
    """Importing this package sets ``recmas_graph.search`` to it, over the function ``rg.search``:
    calling the package is calling :func:`search`, so ``rg.search(...)`` works either way."""

    def __call__(self, *args: Any, **kwargs: Any) -> SearchReport:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
