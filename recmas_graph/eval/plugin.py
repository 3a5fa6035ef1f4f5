"""The evaluation built-ins as a plugin: the packaged datasets and the built-in metrics.

Registered by :class:`recmas_graph.plugins.Registry` as one of its default plugins, through the same
hooks a third-party plugin uses.
"""

from __future__ import annotations

from ..plugins.hookspecs import hookimpl
from .datasets import BUILTIN_DATASETS, Dataset
from .scoring import METRICS, Metric

__all__: list[str] = []


@hookimpl
def recmas_datasets() -> list[Dataset]:
    return list(BUILTIN_DATASETS.values())


@hookimpl
def recmas_metrics() -> list[Metric]:
    return list(METRICS.values())
