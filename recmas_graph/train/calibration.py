"""Training-free links: fit every inner and outer link of a system in closed form on a text corpus.

:func:`calibrate` runs each distinct model of the system once over the corpus, fits every agent's
inner link (``h_t -> E[x_{t+1}]``), then every latent edge's outer link (the source's calibrated
inner output -> the target's embedding of the aligned next token; see :mod:`.pairs` and
:mod:`.closed_form`), and reports each link's loss on held-out texts before and after. With ``out``, it
writes the links and a ``topology.json`` that runs them (:mod:`.export`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import RunError
from ..runtime.pretrained import save_pretrained
from .losses import link_loss
from .pairs import TokenStates, encode_corpus, inner_pairs, outer_pairs
from .closed_form import fit_link

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["LinkFit", "CalibrationReport", "calibrate", "fittable"]

#: Share of the corpus (whole texts) kept out of the fit to measure it.
HOLDOUT = 0.2


@dataclass(frozen=True)
class LinkFit:
    """One fitted link: which (``inner`` of an agent, ``outer`` of an edge id), its pairs, its loss
    on held-out texts before and after, and the chosen ridge strength."""

    kind: str
    name: str
    pairs: int
    loss_before: float
    loss_after: float
    ridge: float


@dataclass
class CalibrationReport:
    """What :func:`calibrate` fitted, and where it wrote the result (``topology`` is None without ``out``)."""

    links: list[LinkFit] = field(default_factory=list)
    texts: int = 0
    topology: Path | None = None

    def fit(self, kind: str, name: str) -> LinkFit:
        """The fit of the ``kind`` link called ``name``."""
        return next(f for f in self.links if f.kind == kind and f.name == name)


def _split(n: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
    order = torch.randperm(n, generator=generator).tolist()
    cut = max(1, int(round(n * HOLDOUT))) if n >= 2 else 0
    return sorted(order[cut:]), sorted(order[:cut])


def fittable(link: Any) -> bool:
    """Whether a link has anything to fit (an ``identity`` link has no parameters)."""
    return next(link.parameters(), None) is not None


def _loss(link: Any, x: torch.Tensor, e: torch.Tensor) -> float:
    from ..runtime.agent.rollout import apply_link

    with torch.no_grad():
        return float(link_loss(apply_link(link, x).float().cpu(), e))


def calibrate(system: RecursiveSystem, texts: Sequence[str], *, out: str | Path | None = None, seed: int = 0,
              max_tokens: int = 256, batch_size: int = 8, skip_trained: bool = False,
              links: Iterable[tuple[str, str]] | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> CalibrationReport:
    """Fit the links of ``system`` (a built :class:`~recmas_graph.runtime.RecursiveSystem`) in place.

    ``texts`` is the corpus (see :mod:`.corpus`); each is cut to ``max_tokens`` tokens. A fifth of
    the texts (at least one) is held out to measure each link. ``skip_trained`` leaves links that
    were loaded from weights as they are; ``links`` (``("inner", agent)`` / ``("outer", edge id)``
    pairs) fits only those. ``progress(stage, done, total)`` is called as models run
    and links are fitted. With ``out``, the links and ``out/topology.json`` are written.
    """
    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        raise RunError(f"calibration needs at least 2 texts, got {len(texts)}", culprit="calibration corpus",
                       hint="give more texts (--limit, or a longer --corpus)")
    generator = torch.Generator().manual_seed(seed)
    fit_idx, val_idx = _split(len(texts), generator)
    spec = system.compiled.spec
    weighted = {a.name for a in spec.agents if a.inner_link.weights_file} if skip_trained else set()
    weighted_edges = ({i for i, e in system.compiled.edges.items() if e.link.weights_file} if skip_trained else set())
    jobs = [("inner", n) for n, link in system.inner_links.items() if n not in weighted and fittable(link)]
    jobs += [("outer", e) for e, link in system.outer_links.items() if e not in weighted_edges and fittable(link)]
    if links is not None:
        chosen = set(links)
        jobs = [job for job in jobs if job in chosen]
    # one pass over the corpus of each distinct model the fits need (agents may share a model)
    def agents_of(kind: str, name: str) -> tuple[str, ...]:
        edge = system.compiled.edge(name) if kind == "outer" else None
        return (name,) if edge is None else (edge.source, edge.target)

    # each agent's model once, kept here for the whole fit (in low-memory mode a later load() would be
    # another object, and the states are keyed by model)
    loaded_of = {a: system.agents[a].load() for job in jobs for a in agents_of(*job)}
    models = {id(loaded.model): loaded for loaded in loaded_of.values()}
    states: dict[int, list[TokenStates]] = {}
    for key, loaded in models.items():
        def report(done: int, _ref: str = loaded.ref) -> None:
            if progress is not None:
                progress(f"running {_ref}", done, len(texts))
        states[key] = encode_corpus(loaded, texts, max_tokens=max_tokens, batch_size=batch_size, progress=report)
    result = CalibrationReport(texts=len(texts))
    for done, (kind, name) in enumerate(jobs):
        if progress is not None:
            progress(f"fitting {kind} link {name}", done, len(jobs))
        if kind == "inner":
            lm = loaded_of[name]
            s = states[id(lm.model)]
            x_fit, e_fit = inner_pairs(lm, [s[i] for i in fit_idx])
            x_val, e_val = inner_pairs(lm, [s[i] for i in val_idx])
            link = system.inner_links[name]
        else:
            edge = system.compiled.edge(name)
            src, dst = loaded_of[edge.source], loaded_of[edge.target]
            s_src, s_dst = states[id(src.model)], states[id(dst.model)]
            inner = system.inner_links[edge.source]  # already calibrated (inner links come first)
            x_fit, e_fit = outer_pairs(inner, [s_src[i] for i in fit_idx], dst, [s_dst[i] for i in fit_idx])
            x_val, e_val = outer_pairs(inner, [s_src[i] for i in val_idx], dst, [s_dst[i] for i in val_idx])
            link = system.outer_links[name]
        before = _loss(link, x_val, e_val)
        device = next(iter(link.parameters())).device
        link.cpu()
        alpha = fit_link(link, x_fit, e_fit, generator=generator, where=f"{kind} link {name}")
        link.to(device)
        result.links.append(LinkFit(kind, name, int(x_fit.shape[0]), before, _loss(link, x_val, e_val), alpha))
    if progress is not None:
        progress("done", len(jobs), len(jobs))
    if out is not None:
        folder = save_pretrained(system, out, description=f"{spec.description} Links calibrated on {len(texts)} "
                                                          "texts.".strip())
        result.topology = folder / "topology.json"
    return result
