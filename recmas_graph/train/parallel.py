"""Data-parallel training: a loss split into sums over samples, and one worker's view of the process group.

A data-parallel step gives each of N workers a contiguous share of every global micro-batch.
Averaging the workers' own losses would not be the one-process loss: the losses are means per
token (or per position) over the *whole* batch, and shares hold different numbers of tokens. So
an objective states its loss as :class:`LossTerms`, ``sum_k weight_k * numerator_k /
denominator_k``: each numerator a sum over the samples (it carries the gradient), each
denominator a count or a sum that carries none. A worker all-reduces the denominators first, then
its loss ``sum_k weight_k * (its numerator_k) / (global denominator_k)`` is its exact share of the
global loss: the workers' losses and gradients add up (all_reduce SUM) to the one-process loss
and gradient on the same global batch, whatever the shares' sizes.

:class:`DataParallel` is one worker's handle on the ``torch.distributed`` process group (``gloo``
on CPU, ``nccl`` on CUDA): its rank, its share of a batch, and the collectives the
:class:`~recmas_graph.train.loop.Trainer` needs. The processes themselves are started by
:mod:`recmas_graph.train.workers`.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

__all__ = ["LossTerms", "DataParallel", "shard_bounds"]

T = TypeVar("T")


@dataclass
class LossTerms:
    """A loss written as ``sum_k weights[k] * numerators[k] / denominators[k]``.

    ``numerators`` are sums over the samples of a batch (tensors with the gradient);
    ``denominators`` (counts of tokens or positions, or sums of target values) carry no gradient,
    so the terms of two halves of a batch add up once their denominators are the whole batch's.
    ``tokens`` is how many tokens the batch scored (for tokens/s).
    """

    numerators: list[torch.Tensor] = field(default_factory=list)
    denominators: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    tokens: int = 0

    def add(self, numerator: torch.Tensor, denominator: float, weight: float = 1.0) -> None:
        """Append one term."""
        self.numerators.append(numerator)
        self.denominators.append(float(denominator))
        self.weights.append(float(weight))

    def loss(self, denominators: Sequence[float] | None = None) -> torch.Tensor:
        """The loss with these ``denominators`` (default: this batch's own; a worker passes the global ones)."""
        dens = self.denominators if denominators is None else denominators
        total: torch.Tensor | None = None
        for num, den, weight in zip(self.numerators, dens, self.weights):
            term = num.float() * (weight / (den if den > 0 else 1.0))
            total = term if total is None else total + term
        if total is None:
            raise ValueError("a loss needs at least one term")
        return total


def shard_bounds(size: int, world: int, rank: int) -> tuple[int, int]:
    """``[start, stop)`` of ``rank``'s contiguous share of ``size`` items (the first ``size % world``
    shares hold one more).

    >>> [shard_bounds(5, 2, r) for r in range(2)]
    [(0, 3), (3, 5)]
    """
    base, extra = divmod(size, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass
class DataParallel:
    """One worker of a data-parallel run: ``rank`` of ``world`` processes, its links on ``device``.

    Rank 0 writes the metrics, the checkpoints and the result; every rank computes its share.
    """

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that writes)."""
        return self.rank == 0

    @classmethod
    def start(cls, rank: int, world: int, init_file: str, *, device: torch.device,
              timeout_s: float) -> "DataParallel":
        """Join the process group (rendezvous through ``init_file``); collectives time out after ``timeout_s``."""
        import torch.distributed as dist

        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank, world, device)

    def stop(self) -> None:
        """Leave the process group."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def shard(self, batch: Sequence[T]) -> list[T]:
        """This worker's contiguous share of a global batch."""
        start, stop = shard_bounds(len(batch), self.world, self.rank)
        return list(batch[start:stop])

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the workers (in float64)."""
        import torch.distributed as dist

        if not values:
            return []
        buf = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return [float(x) for x in buf.cpu()]

    def barrier(self) -> None:
        """Wait for every worker (a sum of nothing, so it works on any backend)."""
        self.sum([0.0])

    def reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the workers, in one flat buffer.

        A parameter no worker gave a gradient keeps ``None`` (AdamW then skips it, as in one process).
        """
        import torch.distributed as dist

        present = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], dtype=torch.float32,
                               device=self.device)
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
        chosen = [p for p, has in zip(params, present.tolist()) if has]
        if not chosen:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(self.device,
                                                                                                 torch.float32)
                          for p in chosen])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in chosen:
            n = p.numel()
            p.grad = flat[offset: offset + n].view_as(p).to(p.device, p.dtype).clone()
            offset += n
