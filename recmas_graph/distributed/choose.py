"""Building a system on the chosen backend: in this process (``local``) or with its agents on Ray."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import RunError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem
    from ..topology.compile import CompiledTopology

__all__ = ["BACKENDS", "build_system"]

#: The backends ``--backend`` takes.
BACKENDS = ("local", "ray")


def build_system(compiled: CompiledTopology, *, backend: str = "local", ray_address: str | None = None,
                 **options: Any) -> RecursiveSystem:
    """``compiled`` built in process (``options`` as :meth:`RecursiveSystem.build`, ``low_memory``
    included) or, with ``backend="ray"``, by :func:`~.ray_backend.build_on_ray` on the cluster at
    ``ray_address``."""
    if backend == "ray":
        from .ray_backend import build_on_ray

        if options.pop("low_memory", None):
            raise RunError("low-memory mode is for one process", culprit="--low-memory",
                           hint="on Ray each model (or each GPU) has its own actor already; drop --low-memory")
        options.pop("model_cache", None)  # models live in the actors
        return build_on_ray(compiled, address=ray_address, **options)
    if backend != "local":
        raise RunError(f"unknown backend {backend!r}", culprit="--backend", hint=f"use one of: {', '.join(BACKENDS)}")
    return compiled.build(**options)
