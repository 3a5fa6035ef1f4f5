"""Links calibrated on first use: ``"weights": "calibrated:<dataset>"`` in a topology.

A link marked so is built like an untrained one, then fitted by :func:`~.calibration.calibrate` on
the first :data:`CORPUS_SAMPLES` samples of the packaged dataset (question + worked solution) and
written to recmas_graph's cache; later builds of the same system load it from there in a blink.
The cache entry's key covers everything the fit depends on: the marked links (type, options), the
agents' models (reference, hidden size, dtype), the corpus and the fit's settings, and the exact
values of the links that are not marked (loaded or seeded random ones that the fit builds on). An
entry is written to a temporary folder and renamed under a file lock, so parallel builds compute it
once and a killed build leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["CALIBRATION_VERSION", "CORPUS_SAMPLES", "marked_links", "calibration_key", "cache_folder",
           "apply_cached_calibration"]

#: Bump when the fit changes, so old cache entries are not reused.
CALIBRATION_VERSION = 2  # 2: links under <entry>/links/
#: Samples of the dataset the links are fitted on (about 1.5 minutes on 2 CPU cores for the packaged models).
CORPUS_SAMPLES = 64
MAX_TOKENS = 256


def marked_links(system: RecursiveSystem) -> dict[str, list[tuple[str, str]]]:
    """``{dataset: [("inner", agent) | ("outer", edge id), ...]}`` of the links marked ``calibrated:``
    that the topology's schedule uses (an agent that never thinks, such as a ``single`` baseline's
    answerer, leaves its inner link as it is)."""
    from .calibration import fittable

    thinking = {p.agent for wave in system.plan().waves for p in wave if p.latent}
    out: dict[str, list[tuple[str, str]]] = {}
    for agent in system.spec.agents:
        corpus = agent.inner_link.calibration_corpus
        if corpus is not None and agent.name in thinking and fittable(system.inner_links[agent.name]):
            out.setdefault(corpus, []).append(("inner", agent.name))
    for edge_id, edge in system.compiled.edges.items():
        corpus = edge.link.calibration_corpus
        if corpus is not None and edge_id in system.outer_links and fittable(system.outer_links[edge_id]):
            out.setdefault(corpus, []).append(("outer", edge_id))
    return out


def _tensor_digest(module: Any) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def calibration_key(system: RecursiveSystem, corpus: str, links: list[tuple[str, str]]) -> str:
    """The cache key of fitting ``links`` of ``system`` on ``corpus`` (see the module docstring)."""
    chosen = set(links)
    agents = [[a.name, system.agents[a.name].ref, system.agents[a.name].hidden_size,
               str(system.agents[a.name].dtype), a.inner_link.type, a.inner_link.options,
               ("inner", a.name) in chosen or _tensor_digest(system.inner_links[a.name])]
              for a in system.spec.agents]
    edges = [[e.label, e.link.type, e.link.options, ("outer", i) in chosen or _tensor_digest(system.outer_links[i])]
             for i, e in system.compiled.edges.items() if i in system.outer_links]
    blob = json.dumps({"version": CALIBRATION_VERSION, "corpus": corpus, "samples": CORPUS_SAMPLES,
                       "max_tokens": MAX_TOKENS, "seed": 0, "agents": agents, "edges": edges},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_folder() -> Path:
    """Where calibrated links are kept: ``<recmas cache>/calibrated``."""
    from ..runtime.sources.assets import cache_root

    return cache_root() / "calibrated"


def _load(system: RecursiveSystem, folder: Path, links: list[tuple[str, str]]) -> None:
    from ..runtime.links.checkpoints import load_link_weights
    from ..runtime.links.export import link_files

    for (kind, name), rel in link_files(links).items():  # the paths save_links gave them
        module = system.inner_links[name] if kind == "inner" else system.outer_links[name]
        device = next(module.parameters()).device
        load_link_weights(module, folder / rel, f"{kind} link {name} (cached calibration)")
        module.to(device)


def _save(system: RecursiveSystem, folder: Path, links: list[tuple[str, str]], info: dict[str, Any]) -> None:
    from ..runtime.links.export import save_links

    paths = save_links(system, folder, links)
    info = {**info, "files": {f"{kind} {name}": rel for (kind, name), rel in paths.items()}}
    (folder / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _apply(system: RecursiveSystem, registry: Any, corpus: str, links: list[tuple[str, str]],
           on_stage: Callable[[str], None] | None) -> Path:
    """Fit ``links`` on ``corpus`` into a new cache entry unless one exists; load them from it."""
    from filelock import FileLock

    from .calibration import calibrate
    from .corpus import corpus_from_dataset

    key = calibration_key(system, corpus, links)
    folder = cache_folder() / key
    cache_folder().mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_folder() / f"{key}.lock")):
        if not (folder / "info.json").is_file():
            if on_stage is not None:
                on_stage(f"calibrating {len(links)} links on {corpus} (first use; cached in {folder})")
            texts = corpus_from_dataset(corpus, registry, limit=CORPUS_SAMPLES)
            report = calibrate(system, texts, links=links, max_tokens=MAX_TOKENS, seed=0)
            tmp = folder.with_name(f"{key}.tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                _save(system, tmp, links, {
                    "topology": system.spec.name, "corpus": corpus, "texts": report.texts,
                    "links": [{"kind": f.kind, "name": f.name, "pairs": f.pairs, "loss_random": f.loss_before,
                               "loss_calibrated": f.loss_after} for f in report.links]})
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # a failed write leaves nothing behind
    _load(system, folder, links)  # a fresh fit is loaded too: the same values either way
    return folder


def apply_cached_calibration(system: RecursiveSystem, registry: Any = None,
                             on_stage: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Fit (or load from the cache) every link of ``system`` marked ``calibrated:<dataset>``, in place.

    Returns ``{dataset: cache entry}``. ``on_stage(message)`` is told when a fit starts (minutes
    for real models, once per system and machine).
    """
    import torch

    with torch.inference_mode(False):  # links fitted or loaded here stay trainable
        return {corpus: _apply(system, registry, corpus, links, on_stage)
                for corpus, links in marked_links(system).items()}
