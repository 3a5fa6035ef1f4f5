"""Shared test set-up: offline, no installed plugins unless a test asks, fresh registries."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["RECMAS_DISABLE_PLUGINS"] = "1"
# pytest-xdist workers share the cores: one worker per core with torch's default threads each
# oversubscribes them (measured: a file under load took 40-54 s instead of 14 s). Each worker, and
# the processes tests start, get their share unless the caller set OMP_NUM_THREADS.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_share)
    import torch

    torch.set_num_threads(_share)

import pytest  # noqa: E402

from recmas_graph.plugins import Registry, set_default_registry  # noqa: E402


@pytest.fixture
def registry() -> Registry:
    """A fresh registry with only the built-ins (installed entry points not loaded), also the default one."""
    reg = Registry.create(load_entrypoints=False)
    set_default_registry(reg)
    yield reg
    set_default_registry(None)


@pytest.fixture
def interrupt_run(monkeypatch: pytest.MonkeyPatch):
    """``interrupt_run(at=N)``: the N-th ``RecursiveSystem.run`` call raises KeyboardInterrupt (Ctrl-C)."""
    from recmas_graph.runtime.system import RecursiveSystem

    def install(at: int = 2) -> None:
        calls = {"n": 0}
        original = RecursiveSystem.run

        def interrupted(self, questions, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == at:
                raise KeyboardInterrupt
            return original(self, questions, *args, **kwargs)

        monkeypatch.setattr(RecursiveSystem, "run", interrupted)

    return install
