"""Peak memory of a block of work: per device on CUDA, the increase over the start on CPU.

On CUDA it is the peak memory allocated on the device during the block (the weights included). On
CPU the process's lifetime maximum (``ru_maxrss``) says nothing about one pass or one evaluation,
so a background thread samples the resident set (psutil, on every platform) and the figure is the
highest sample minus the resident set at the start: what the block added on top of the loaded
models.

>>> with PeakMemory("cpu") as peak:
...     block = bytearray(64 * 2**20)
>>> peak.bytes >= 0
True
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

import psutil
import torch

__all__ = ["PeakMemory", "resident_bytes"]

_PROCESS: psutil.Process | None = None


def resident_bytes() -> int | None:
    """The process's current resident set size in bytes (``None`` where the platform cannot tell)."""
    global _PROCESS
    try:
        if _PROCESS is None or _PROCESS.pid != os.getpid():  # a forked child reads its own
            _PROCESS = psutil.Process()
        return int(_PROCESS.memory_info().rss)
    except (psutil.Error, OSError):
        return None


class PeakMemory:
    """Context manager measuring a block's peak memory on ``device`` (see the module docs)."""

    def __init__(self, device: str | torch.device, *, interval_s: float = 0.01) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.bytes = 0
        self._base = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = resident_bytes()
            if now is not None and now > self._peak:
                self._peak = now

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        base = resident_bytes()
        if base is not None:
            self._base = self._peak = base
            self._thread = threading.Thread(target=self._sample, name="recmas-peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            now = resident_bytes() or 0
            self.bytes = max(0, max(self._peak, now) - self._base)
