"""Fair comparisons of styles: an experiment file run as content-addressed stages (``recmas experiment``).

An experiment file (:mod:`.spec`: systems, training data, one recipe with per-system overrides,
the evaluation, the seeds) is resolved before any model loads (:mod:`.plan`), then every system
and seed goes through ``calibrate -> inner -> outer -> eval``; each stage's folder is named by the
sha256 of its inputs (:mod:`.stages`), so a rerun after a kill, after adding a system or after
changing one runs only what is missing (:mod:`.execute`, :mod:`.run`). The report gives each
system's mean and spread over seeds, paired tests against a reference, cost, the recipe and its
overrides (:mod:`.report`, :mod:`.plots`)::

    import recmas_graph as rg
    result = rg.experiment("experiments/mini_styles.json", out="runs/mini_styles", models="tiny")
    for row in result.rows:
        print(row["label"], row["accuracy_mean"], row["accuracy_std"], (row["paired"] or {}).get("p_value"))
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .plan import Plan, Row, estimate_seconds, plan_experiment
from .run import BACKENDS, ExperimentProgress, ExperimentReport, run_experiment
from .spec import (EvalSection, ExperimentSpec, Recipe, SystemEntry, TrainData, experiment_json_schema,
                   parse_experiment, read_experiment)
from .stages import STAGE_KINDS, STAGE_VERSIONS, Stage, stage_key

__all__ = [
    "run_experiment", "plan_experiment", "ExperimentReport", "ExperimentProgress", "Plan", "Row", "Stage",
    "ExperimentSpec", "Recipe", "TrainData", "EvalSection", "SystemEntry", "parse_experiment", "read_experiment",
    "experiment_json_schema", "estimate_seconds", "stage_key", "STAGE_KINDS", "STAGE_VERSIONS", "BACKENDS",
]


class _CallableModule(types.ModuleType):
    """Importing this package sets ``recmas_graph.experiment`` to it, over the function
    ``rg.experiment``: calling the package is calling ``rg.experiment`` (:func:`run_experiment` with
    the installed plugins' registry unless ``registry`` is given)."""

    def __call__(self, *args: Any, **kwargs: Any) -> ExperimentReport:
        from ..plugins.manager import default_registry

        kwargs["registry"] = kwargs.get("registry") or default_registry()
        return run_experiment(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
