"""Finding Ray and joining (or starting) a Ray instance."""

from __future__ import annotations

import os
from typing import Any

from ..errors import RunError

__all__ = ["require_ray", "connect", "worker_setup", "task_resources"]


def task_resources(cpus: float, gpus: float) -> dict[str, Any]:
    """The ``.options(...)`` of a Ray task or actor reserving ``cpus`` CPUs and ``gpus`` GPUs; one
    that reserves no GPU sees none (``CUDA_VISIBLE_DEVICES=""``), so it cannot take a GPU that
    another task reserved.

    >>> task_resources(1, 0)
    {'num_cpus': 1, 'num_gpus': 0, 'runtime_env': {'env_vars': {'CUDA_VISIBLE_DEVICES': ''}}}
    """
    options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus}
    if not gpus:
        options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
    return options


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`RunError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RunError("the Ray backend needs Ray, which is not installed", culprit="--backend ray",
                       hint="pip install 'recmas-graph[ray]' (or pip install ray), or use --backend local") from None
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Join the Ray cluster at ``address`` (``"auto"``: the one ``ray start`` runs here; ``None``:
    ``$RAY_ADDRESS`` if set, else a new local instance with ``num_cpus`` CPUs). Returns ``ray``."""
    ray = require_ray()
    if ray.is_initialized():  # this process already joined a cluster (or started one): keep it
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
    if address is None:
        options["num_cpus"] = num_cpus or os.cpu_count() or 1
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as err:
        if address is None:
            raise RunError(f"cannot start a local Ray instance: {err}", culprit="--backend ray",
                           hint="see /tmp/ray/session_latest/logs; or start one with 'ray start --head' and "
                                "pass --ray-address auto") from None
        raise RunError(f"cannot join the Ray cluster at {address!r}: {err}", culprit="--ray-address",
                       hint="start one with 'ray start --head' (then --ray-address auto or HOST:6379), "
                            "or leave --ray-address out for a local instance") from None
    return ray


def worker_setup(threads: int) -> None:
    """In a Ray worker: torch's intra-op threads (Ray sets ``OMP_NUM_THREADS=1`` by default)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
