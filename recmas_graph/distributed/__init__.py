"""Past one process: the Ray backend (agents as Ray actors) and data-parallel evaluation on Ray workers.

Ray is an optional extra (``pip install 'recmas-graph[ray]'``); nothing here imports it until used.

- :func:`build_on_ray` builds a system whose agents live in Ray actors (one per model and device);
  its passes run there through the same pass-runner interface and unrolled schedule, and latent
  messages travel between actors as CPU tensors;
- :class:`ShardedAnswerer` answers an evaluation's batches on Ray workers, each running a whole
  system, while the caller alone writes the records (so resuming works as in one process).
"""

from __future__ import annotations

from .._lazy import lazy_exports

__all__ = ["build_on_ray", "RayRunner", "AgentHost", "host_groups", "connect", "require_ray", "ShardedAnswerer",
           "EvalWorker", "build_system", "BACKENDS"]

_LAZY = {"build_on_ray": "ray_backend", "RayRunner": "ray_backend", "AgentHost": "ray_backend",
         "host_groups": "ray_backend", "connect": "cluster", "require_ray": "cluster", "ShardedAnswerer": "sharded",
         "EvalWorker": "sharded", "build_system": "choose", "BACKENDS": "choose"}

__getattr__ = lazy_exports(__name__, _LAZY)
