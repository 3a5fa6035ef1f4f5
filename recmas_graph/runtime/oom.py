"""Out-of-memory errors: recognise them (CUDA and CPU) and say which pass ran out and what to do.

:func:`out_of_memory` turns ``torch.OutOfMemoryError`` (CUDA), a CPU allocator failure
(``RuntimeError: ... DefaultCPUAllocator: can't allocate memory``) or a ``MemoryError`` into an
:class:`OutOfMemory` naming the agent, the round, the device and the batch size; other errors give
``None``. A pass runner calls it where it knows the pass::

    except Exception as err:
        oom = out_of_memory(err, agent=step.agent, round=step.round, device=str(device), batch_size=len(questions))
        if oom is None:
            raise
        raise oom from err

>>> err = out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"),
...                     agent="solver", round=2, device="cpu", batch_size=8)
>>> print(err)
agent 'solver': out of memory on cpu in round 2 with a batch of 8 question(s)
  fix: use a smaller --batch-size, or --low-memory (load and free agents stage by stage)
>>> out_of_memory(ValueError("boom"), agent="solver", round=1, device="cpu", batch_size=1) is None
True
"""

from __future__ import annotations

import sys

from ..errors import RunError

__all__ = ["OOM_HINT", "OutOfMemory", "is_out_of_memory", "out_of_memory", "free_cached_memory"]

#: What an :class:`OutOfMemory` error suggests.
OOM_HINT = "use a smaller --batch-size, or --low-memory (load and free agents stage by stage)"

_CPU_MARKERS = ("can't allocate memory", "defaultcpuallocator", "cannot allocate memory")


class OutOfMemory(RunError):
    """A pass ran out of memory: ``agent``, ``round``, ``device`` and ``batch_size`` say which (``None``
    where unknown); the original error is the ``__cause__``."""

    def __init__(self, message: str, *, agent: str | None = None, round: int | None = None,
                 device: str | None = None, batch_size: int | None = None, hint: str | None = OOM_HINT) -> None:
        super().__init__(message, culprit=f"agent {agent!r}" if agent is not None else None, hint=hint)
        self.agent = agent
        self.round = round
        self.device = device
        self.batch_size = batch_size


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an out-of-memory error: CUDA's ``torch.OutOfMemoryError``, a CPU allocator
    ``RuntimeError`` ("can't allocate memory", "DefaultCPUAllocator"), a ``MemoryError``, or
    an :class:`OutOfMemory`."""
    if isinstance(err, (OutOfMemory, MemoryError)):
        return True
    torch = sys.modules.get("torch")  # an error from torch means torch is imported
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(err, oom_type):
        return True
    if isinstance(err, RuntimeError):
        text = str(err).lower()
        return any(marker in text for marker in _CPU_MARKERS) or "cuda out of memory" in text
    return False


def out_of_memory(err: BaseException, *, agent: str | None = None, round: int | None = None,
                  device: str | None = None, batch_size: int | None = None) -> OutOfMemory | None:
    """``err`` as an :class:`OutOfMemory` naming the pass (``err`` itself when it already is one),
    or ``None`` when it is not an out-of-memory error."""
    if isinstance(err, OutOfMemory):
        return err
    if not is_out_of_memory(err):
        return None
    where = f" on {device}" if device else ""
    when = f" in round {round}" if round is not None else ""
    batch = f" with a batch of {batch_size} question(s)" if batch_size is not None else ""
    return OutOfMemory(f"out of memory{where}{when}{batch}", agent=agent, round=round, device=device,
                       batch_size=batch_size)


def free_cached_memory() -> None:
    """Give the CUDA caching allocator's unused blocks back (before retrying after an out-of-memory error)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
