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

import contextlib
import gc
import sys
from collections.abc import Callable, Iterator

from ...errors import RunError

__all__ = ["OOM_HINT", "PLACE_HINT", "OutOfMemory", "is_out_of_memory", "out_of_memory", "loading_out_of_memory",
           "free_cached_memory", "raise_out_of_memory"]

#: What an :class:`OutOfMemory` error suggests.
OOM_HINT = "use a smaller --batch-size, or --low-memory (load and free agents stage by stage)"

_CPU_MARKERS = ("can't allocate memory", "defaultcpuallocator", "cannot allocate memory")


#: What an :class:`OutOfMemory` error suggests when the batch and the mode are not the problem.
PLACE_HINT = ("load in a smaller dtype (--dtype bfloat16), place agents on other devices (--device AGENT=DEV, "
              "--placement by-size), or free memory on the device")


class OutOfMemory(RunError):
    """A pass ran out of memory: ``agent``, ``round``, ``device`` and ``batch_size`` say which (``None``
    where unknown); ``loading``: it happened while a model loaded (a smaller batch will not help).
    The original error is the ``__cause__``."""

    def __init__(self, message: str, *, agent: str | None = None, round: int | None = None,
                 device: str | None = None, batch_size: int | None = None, hint: str | None = OOM_HINT,
                 loading: bool = False) -> None:
        super().__init__(message, culprit=f"agent {agent!r}" if agent is not None else None, hint=hint)
        self.agent = agent
        self.round = round
        self.device = device
        self.batch_size = batch_size
        self.loading = loading


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
                  device: str | None = None, batch_size: int | None = None,
                  low_memory: bool = False) -> OutOfMemory | None:
    """``err`` as an :class:`OutOfMemory` naming the pass (``err`` itself when it already is one),
    or ``None`` when it is not an out-of-memory error. The hint leaves out what would not help (a
    smaller batch at batch 1, low-memory mode when it is on)."""
    if isinstance(err, OutOfMemory):
        return err
    if not is_out_of_memory(err):
        return None
    where = f" on {device}" if device else ""
    when = f" in round {round}" if round is not None else ""
    batch = f" with a batch of {batch_size} question(s)" if batch_size is not None else ""
    if batch_size == 1 or low_memory:
        hint = ("use a smaller --batch-size, or " + PLACE_HINT) if batch_size != 1 else (
            PLACE_HINT + ("" if low_memory else ", or use --low-memory (load and free agents stage by stage)"))
    else:
        hint = OOM_HINT
    return OutOfMemory(f"out of memory{where}{when}{batch}", agent=agent, round=round, device=device,
                       batch_size=batch_size, hint=hint)


def loading_out_of_memory(err: BaseException, *, agent: str, ref: str, device: str,
                          low_memory: bool = False) -> OutOfMemory | None:
    """``err`` raised while loading ``ref`` for ``agent`` as an :class:`OutOfMemory` (``loading``
    set, so the batch back-off does not retry it), or ``None`` when it is not out of memory."""
    if isinstance(err, OutOfMemory) or not is_out_of_memory(err):
        return err if isinstance(err, OutOfMemory) else None
    hint = PLACE_HINT if low_memory else "use --low-memory (one model in memory at a time), or " + PLACE_HINT
    return OutOfMemory(f"out of memory on {device} while loading {ref}", agent=agent, device=device, hint=hint,
                       loading=True)


def free_cached_memory() -> None:
    """Collect what the failed attempt left (its tensors sit in reference cycles through the
    error's traceback) and give the CUDA caching allocator's unused blocks back, before retrying
    after an out-of-memory error."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def raise_out_of_memory(convert: Callable[..., OutOfMemory | None] = out_of_memory, **where: object) -> Iterator[None]:
    """Run a block; an out-of-memory error in it is raised as ``convert(err, **where)`` (default
    :func:`out_of_memory`; :func:`loading_out_of_memory` while a model loads), the original error
    as its ``__cause__``. Every other error passes unchanged."""
    try:
        yield
    except Exception as err:
        oom = convert(err, **where)
        if oom is None or oom is err:
            raise
        raise oom from err
