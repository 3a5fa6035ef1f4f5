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
    from .official import official_datasets
    from .qa_datasets import OPEN_QA_DATASETS

    official = {d.name: d for d in official_datasets(BUILTIN_DATASETS)}  # math500 and medqa read NAME:FILE too
    return ([official.get(d.name, d) for d in BUILTIN_DATASETS.values()] + list(OPEN_QA_DATASETS.values())
            + [d for name, d in official.items() if name not in BUILTIN_DATASETS])


@hookimpl
def recmas_metrics() -> list[Metric]:
    from .codetests import CODE_METRICS
    from .openqa import OPEN_QA_METRICS

    return list(METRICS.values()) + list(OPEN_QA_METRICS.values()) + list(CODE_METRICS.values())
