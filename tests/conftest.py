"""Shared test set-up: offline, no installed plugins unless a test asks, fresh registries."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["RECMAS_DISABLE_PLUGINS"] = "1"

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
