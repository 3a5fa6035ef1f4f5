"""The training layer: closed-form link calibration, the inner and outer training loops, saving links.

    import recmas_graph as rg
    from recmas_graph.train import calibrate, corpus_from_dataset

    system = rg.compile("sequential_light_mini").build()
    report = calibrate(system, corpus_from_dataset("gsm8k", rg.default_registry(), limit=64), out="links/seq")
    # links/seq/topology.json runs the calibrated system: recmas run links/seq/topology.json -q ...

Torch is imported on first use of a torch-dependent name.
"""

from __future__ import annotations

from .._lazy import lazy_exports
from .corpus import corpus_from_dataset, corpus_from_file, sample_text

__all__ = ["calibrate", "CalibrationReport", "LinkFit", "corpus_from_file", "corpus_from_dataset", "sample_text",
           "link_loss", "fit_link", "ridge", "save_system_links", "spec_with_weights", "TrainSample", "read_train_data",
           "make_train_data", "TrainConfig", "Trainer", "TrainReport", "train_links", "InnerObjective",
           "AnswerObjective"]

_LAZY = {"calibrate": "calibration", "CalibrationReport": "calibration", "LinkFit": "calibration", "link_loss": "losses",
         "fit_link": "closed_form", "ridge": "closed_form", "save_system_links": ".runtime.links.export", "spec_with_weights": ".runtime.links.export",
         "TrainSample": "data", "read_train_data": "data", "make_train_data": "data", "TrainConfig": "loop",
         "Trainer": "loop", "TrainReport": "loop", "train_links": "run", "InnerObjective": "objectives",
         "AnswerObjective": "objectives"}

__getattr__ = lazy_exports(__name__, _LAZY)
