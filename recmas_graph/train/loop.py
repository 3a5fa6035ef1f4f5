"""The training loop: AdamW, warm-up + cosine, clipping, accumulation, checkpoints with exact resume.

:class:`Trainer` optimises ``params`` on ``loss_fn(batch)`` for ``config.steps`` optimiser steps.
Batches come in a seeded order per epoch that is a function of the step alone, so a run resumed
from a checkpoint (links, optimiser, scheduler, RNG states, step) sees the same batches and
computes the same losses as one that never stopped. Each logged step appends a line to
``DIR/metrics.jsonl`` (``step``, ``loss``, ``lr``, ``tokens_per_s``; ``val_loss`` at validation
steps); checkpoints go to ``DIR/checkpoints/step_NNNNNN.pt`` (the last ``keep`` are kept), written
to a temporary file and renamed, so a killed run leaves the previous one intact. TensorBoard gets
the same scalars when it is installed. The library never prints: ``progress`` gets a
:class:`StepInfo` after every step.

Data-parallel (``parallel``, a :class:`~recmas_graph.train.parallel.DataParallel`): every worker
runs this loop with the same links, reads the same global batches and computes its share of each
(the objective's :class:`~recmas_graph.train.parallel.LossTerms`, scaled by the global
denominators), the gradients are summed over the workers, and every worker takes the same step.
Rank 0 alone validates (with ``loss_fn``, exactly as one process does), logs and saves.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import RunError
from .parallel import DataParallel, LossTerms

__all__ = ["TrainConfig", "StepInfo", "TrainReport", "Trainer", "lr_factor"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser steps, batch, learning-rate schedule, clipping, logging and saving."""

    steps: int = 100
    batch_size: int = 4
    accumulate: int = 1
    lr: float = 1e-3
    warmup: int = 10
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 25
    save_every: int = 25
    keep: int = 2
    seed: int = 0
    bf16: bool = True  # autocast to bfloat16 when the links are on a CUDA device

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "accumulate", "eval_every", "save_every", "keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RunError(f"{name} must be a positive integer, got {value!r}", culprit=f"--{name.replace('_', '-')}")
        if not self.lr > 0:
            raise RunError(f"lr must be positive, got {self.lr}", culprit="--lr")
        if self.warmup < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise RunError("warmup, grad_clip and weight_decay must be non-negative", culprit="training options")


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then a cosine decay to 0 at ``total``.

    transformers' ``get_cosine_schedule_with_warmup`` is the same cosine, but its warm-up starts at
    0 (a first step that changes nothing); this one starts at ``1 / warmup`` (docs/training.md).

    >>> [round(lr_factor(s, 2, 6), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span))


@dataclass(frozen=True)
class StepInfo:
    """One finished optimiser step: its number (1-based), loss, learning rate, speed, validation loss."""

    step: int
    steps: int
    loss: float
    lr: float
    tokens_per_s: float
    val_loss: float | None = None


@dataclass
class TrainReport:
    """A finished run: its folder, the first and last logged losses, the last validation loss."""

    out: Path
    steps: int
    first_loss: float | None
    last_loss: float | None
    val_loss: float | None
    wall_s: float
    resumed_from: int | None


class Trainer:
    """Optimise ``params`` on ``loss_fn`` over ``data``; see the module docstring.

    ``loss_fn(batch)`` returns ``(loss, tokens)``: the scalar to minimise and how many tokens it
    scored (for tokens/s). ``modules`` (name -> module) are what a checkpoint saves and restores:
    every link of the system (the frozen ones too, so a resumed run cannot pair trained links with
    other frozen ones). ``val_data`` is scored with ``loss_fn`` under ``no_grad`` every
    ``eval_every`` steps and at the end. ``parallel`` makes this process one worker of a
    data-parallel run (see the module docstring); ``loss_fn`` then gives its loss as terms through
    a ``terms(batch) -> LossTerms`` method (without one, ``loss`` is taken as a mean per token).
    """

    def __init__(self, params: Iterable[nn.Parameter], loss_fn: Callable[[Sequence[Any]], tuple[torch.Tensor, int]],
                 data: Sequence[Any], out: str | Path, config: TrainConfig, *, modules: Mapping[str, nn.Module],
                 val_data: Sequence[Any] = (), run_info: Mapping[str, Any] | None = None,
                 progress: Callable[[StepInfo], None] | None = None, parallel: DataParallel | None = None) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise RunError("nothing to train: no link has trainable parameters", culprit="recmas train")
        if not data:
            raise RunError("no training samples", culprit="--data")
        self.loss_fn, self.data, self.val_data = loss_fn, list(data), list(val_data)
        self.out, self.config, self.modules = Path(out), config, dict(modules)
        self.run_info = dict(run_info or {})
        self.progress = progress
        self.parallel = parallel
        self.writes = parallel is None or parallel.main  # the one process that logs and saves
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.warmup, config.steps))
        self.step = 0
        self._writer: Any = None
        self._epoch_order: tuple[int, list[int]] = (-1, [])

    # ------------------------------------------------------------------ data order
    def batch(self, step: int, micro: int) -> list[Any]:
        """The samples of micro-batch ``micro`` of optimiser step ``step`` (0-based): a function of both alone."""
        size = self.config.batch_size
        start = (step * self.config.accumulate + micro) * size
        n = len(self.data)
        out = []
        for k in range(start, start + size):
            epoch, pos = divmod(k, n)
            out.append(self.data[self._order(epoch)[pos]])
        return out

    def _order(self, epoch: int) -> list[int]:
        """The seeded order of the samples in ``epoch`` (kept for the epoch being read)."""
        if self._epoch_order[0] != epoch:
            order = list(range(len(self.data)))
            random.Random(self.config.seed * 1_000_003 + epoch).shuffle(order)
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints(self) -> Path:
        """``DIR/checkpoints``."""
        return self.out / "checkpoints"

    def save(self) -> Path:
        """Write the checkpoint of the current step (atomically) and prune old ones."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        path = self.checkpoints / f"step_{self.step:06d}.pt"
        state = {
            "step": self.step, "config": asdict(self.config), "run": self.run_info,
            "modules": {name: m.state_dict() for name, m in self.modules.items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in sorted(self.checkpoints.glob("step_*.pt"))[: -self.config.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint in ``DIR/checkpoints``, if any."""
        found = sorted(self.checkpoints.glob("step_*.pt")) if self.checkpoints.is_dir() else []
        return found[-1] if found else None

    def load(self, path: Path) -> None:
        """Restore links, optimiser, scheduler, RNG states and step from ``path``."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise RunError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}", culprit=str(path),
                           hint="delete the broken checkpoint to resume from the one before it") from None
        keys = set(state.get("run", {})) | set(self.run_info)
        changed = sorted(k for k in keys if state.get("run", {}).get(k) != self.run_info.get(k))
        free = {"steps", "save_every", "eval_every", "keep"}  # they do not change the losses
        config_changed = sorted(k for k, v in state.get("config", {}).items()
                                if k not in free and getattr(self.config, k, None) != v)
        if changed or config_changed:
            raise RunError(f"the checkpoint was made by another run (changed: {', '.join(changed + config_changed)})",
                           culprit=str(path), hint="resume with the same options (only --steps may grow), or "
                                                   "train into another folder")
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        py = random.getstate()
        random.setstate((py[0], tuple(int(x) for x in state["rng"]["python"]), py[2]))
        if state["rng"].get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = int(state["step"])
        if self.step > self.config.steps:
            raise RunError(f"the run in {self.out} is already at step {self.step}, past --steps {self.config.steps}",
                           culprit="--steps", hint=f"resume with --steps above {self.step}")
        # the learning rate of the next step follows this run's schedule (--steps may have grown)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * lr_factor(self.step, self.config.warmup, self.config.steps)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ------------------------------------------------------------------ metrics
    def _log(self, record: Mapping[str, Any]) -> None:
        with (self.out / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(record)) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and value is not None:
                    self._writer.add_scalar(key, value, record["step"])

    def _trim_metrics(self) -> None:
        """Drop logged steps after the resumed checkpoint (they are run again)."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                break  # a torn last line
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
        os.replace(tmp, path)  # a kill during the rewrite leaves the old file

    def _open_writer(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            return
        self._writer = SummaryWriter(str(self.out / "tensorboard"))

    # ------------------------------------------------------------------ running
    def _autocast(self) -> Any:
        device = self.params[0].device
        if self.config.bf16 and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def validate(self) -> float | None:
        """Mean ``loss_fn`` over the held-out samples, weighted by tokens (None without any)."""
        if not self.val_data:
            return None
        total, tokens = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(self.val_data), self.config.batch_size):
                with self._autocast():
                    loss, n = self.loss_fn(self.val_data[i : i + self.config.batch_size])
                total += float(loss) * max(n, 1)
                tokens += max(n, 1)
        return total / tokens

    def _micro_loss(self, micro: int) -> tuple[torch.Tensor, float, int]:
        """Micro-batch ``micro`` of this step: the loss to back-propagate, the global loss's value and
        the global number of tokens. One process: ``loss_fn`` on the whole micro-batch. A worker:
        its share's terms over the global denominators, so the workers' losses add up to the global one."""
        batch = self.batch(self.step, micro)
        if self.parallel is None:
            with self._autocast():
                loss, n = self.loss_fn(batch)
            return loss, float(loss.detach()), n
        with self._autocast():
            terms = self._terms(self.parallel.shard(batch))
        loss = terms.loss(self.parallel.sum(terms.denominators))
        value, tokens = self.parallel.sum([float(loss.detach()), float(terms.tokens)])
        return loss, value, int(tokens)

    def _terms(self, batch: Sequence[Any]) -> LossTerms:
        split = getattr(self.loss_fn, "terms", None)
        if split is not None:
            terms: LossTerms = split(batch)
            return terms
        loss, n = self.loss_fn(batch)  # a plain loss: taken as a mean per token
        out = LossTerms(tokens=n)
        out.add(loss * max(n, 1), max(n, 1))
        return out

    def run(self, *, resume: bool = False) -> TrainReport:
        """Train up to ``config.steps`` (from the last checkpoint when ``resume``); return the report.

        Without ``resume`` a folder holding a checkpoint is refused; one that holds only the metrics
        of a run stopped before its first checkpoint starts again.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        resumed_from = None
        if resume:
            path = self.latest_checkpoint()
            if path is None:
                raise RunError(f"nothing to resume in {self.out}", culprit="--resume",
                               hint="start without --resume (the folder has no checkpoints/)")
            self.load(path)
            resumed_from = self.step
            if self.writes:
                self._trim_metrics()
        elif self.latest_checkpoint() is not None:
            raise RunError(f"{self.out} holds another training run", culprit="--out",
                           hint="pass --resume to continue it, or choose another folder")
        elif self.writes:  # a run that stopped before its first checkpoint left only metrics: start again
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
        if self.writes:
            for stale in self.checkpoints.glob("*.tmp") if self.checkpoints.is_dir() else ():
                stale.unlink(missing_ok=True)  # a checkpoint cut short by a kill
            self._open_writer()
        if self.parallel is not None:
            self.parallel.barrier()  # every worker has read the folder before rank 0 writes to it
        start, first, last, val = time.perf_counter(), None, None, None
        try:
            while self.step < self.config.steps:
                t0 = time.perf_counter()
                self.optimizer.zero_grad(set_to_none=True)
                total, tokens = 0.0, 0
                for micro in range(self.config.accumulate):
                    loss, value, n = self._micro_loss(micro)
                    if not loss.requires_grad:
                        raise RunError("the loss does not depend on any trained link", culprit="training",
                                       hint="the outer loop needs latent edges whose messages reach the answer (text "
                                            "edges carry no gradient); train the inner loop instead")
                    if not math.isfinite(value):
                        raise RunError(f"the loss is {value} at step {self.step + 1}", culprit="training",
                                       hint="lower --lr, or check the data")
                    (loss / self.config.accumulate).backward()
                    total += value / self.config.accumulate
                    tokens += n
                if self.parallel is not None:
                    self.parallel.reduce_gradients(self.params)
                if self.config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                first = total if first is None else first
                last = total
                due = self.step % self.config.eval_every == 0 or self.step == self.config.steps
                val = self.validate() if due and self.writes else None
                info = StepInfo(self.step, self.config.steps, total, lr, tokens / max(time.perf_counter() - t0, 1e-9),
                                val)
                if self.writes:
                    self._log({"step": info.step, "loss": info.loss, "lr": info.lr,
                               "tokens_per_s": round(info.tokens_per_s, 2),
                               **({"val_loss": val} if val is not None else {})})
                if self.writes and (self.step % self.config.save_every == 0 or self.step == self.config.steps):
                    self.save()
                if self.progress is not None:
                    self.progress(info)
        finally:
            if self._writer is not None:
                self._writer.close()
        return TrainReport(self.out, self.step, first, last, val, time.perf_counter() - start, resumed_from)
