"""The evaluation layer: datasets (packaged and local), answer extraction and scoring.

Plugins register datasets and metrics with the records defined here::

    from recmas_graph.eval import Dataset, Sample, Metric, Score
"""

from __future__ import annotations

from .datasets import BUILTIN_DATASETS, Dataset, DatasetError, Sample, jsonl_dataset, load_samples, resolve_dataset
from .scoring import CHOICE_LETTERS, METRICS, Metric, Score, extract_choice, extract_code, get_metric, last_boxed

__all__ = [
    "Dataset", "Sample", "DatasetError", "BUILTIN_DATASETS", "jsonl_dataset", "resolve_dataset", "load_samples",
    "Metric", "Score", "METRICS", "CHOICE_LETTERS", "get_metric", "extract_choice", "extract_code", "last_boxed",
]
