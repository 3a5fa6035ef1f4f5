"""The training built-ins as a plugin: links marked ``"calibrated:<dataset>"`` are fitted (or loaded
from the cache) when a system is built.

Registered by :class:`recmas_graph.plugins.Registry` as one of its default plugins, through the same
hooks a third-party plugin uses, so the registry itself only registers and resolves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..plugins.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__: list[str] = []


def _corpora(compiled: Any) -> set[str]:
    found = {a.inner_link.calibration_corpus for a in compiled.spec.agents}
    found |= {e.link.calibration_corpus for e in compiled.spec.edges}
    found.discard(None)
    return found  # type: ignore[return-value]


@hookimpl
def recmas_check_build(compiled: Any, registry: Any) -> None:
    corpora = _corpora(compiled)
    if corpora:  # an unknown dataset is named before minutes of model loading
        from ..eval.datasets import resolve_dataset

        for corpus in sorted(corpora):
            resolve_dataset(corpus, registry)


@hookimpl(tryfirst=True)  # the links are fitted before other plugins finish the system
def recmas_system_built(system: RecursiveSystem, registry: Any, on_stage: Callable[[str], None] | None) -> None:
    if _corpora(system.compiled):
        from .cached import apply_cached_calibration

        apply_cached_calibration(system, registry, on_stage=on_stage)
