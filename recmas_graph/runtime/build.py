"""The one build path: a compiled topology -> a :class:`~.system.RecursiveSystem`, with the plugins' build hooks.

``compiled.build(...)``, ``Registry.build_system`` and the Ray backend's workers all come here. The
catalog ``compiled`` was compiled against (a :class:`~recmas_graph.plugins.Registry`) is the one
whose plugins check the build first (hook ``recmas_check_build``, before any model loads) and finish
the system after (``recmas_system_built``: links calibrated on first use); the registry itself only
registers and resolves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..topology.compile import CompiledTopology
    from .system import RecursiveSystem

__all__ = ["build_system"]


def build_system(compiled: "CompiledTopology", **options: Any) -> "RecursiveSystem":
    """Build ``compiled`` (options as :meth:`~.system.RecursiveSystem.build`), with its catalog's hooks;
    ``on_model("links", message)`` is told when a plugin starts a long step."""
    from .system import RecursiveSystem

    registry = compiled.catalog
    hooks = getattr(registry, "hooks", None)
    if hooks is not None:
        hooks.recmas_check_build(compiled=compiled, registry=registry)
    system = RecursiveSystem.build(compiled, **options)
    if hooks is not None:
        on_model = options.get("on_model")
        hooks.recmas_system_built(system=system, registry=registry,
                                  on_stage=(lambda m: on_model("links", m)) if on_model else None)
    return system
