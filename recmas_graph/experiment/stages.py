"""The content-addressed stage cache of an experiment folder.

A stage (make the training data, calibrate, train the inner loop, train the outer loop, evaluate)
is named by a key: the sha256 of everything its result depends on (:func:`stage_key`: its kind, a
per-kind code version from :data:`STAGE_VERSIONS`, its inputs, and the keys of the stages it reads).
Its folder is ``DIR/stages/<kind>-<key16>/`` once finished; while it runs it works in
``<kind>-<key16>.partial/`` (training checkpoints and evaluation records there let a killed stage
resume), writes ``done.json`` last and is renamed. A finished folder is reused as it is, so a rerun
after a kill, or after adding a system, runs only what is missing.

>>> k = stage_key("eval", {"seed": 0})
>>> len(k), k == stage_key("eval", {"seed": 0}), k == stage_key("eval", {"seed": 1})
(64, True, False)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import write_json_atomic

__all__ = ["STAGE_KINDS", "STAGE_VERSIONS", "Stage", "StageStore", "stage_key", "canonical_json", "file_sha256"]

#: The kinds of stage, in the order a system's chain runs them.
STAGE_KINDS: tuple[str, ...] = ("data", "calibrate", "inner", "outer", "eval")

#: Bumped when a kind's code changes what it produces: every stage of that kind runs again.
STAGE_VERSIONS: dict[str, int] = {"data": 1, "calibrate": 1, "inner": 1, "outer": 1, "eval": 1}

#: The file a finished stage writes last.
DONE = "done.json"


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no spaces: the same data always hashes the same."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stage_key(kind: str, inputs: Mapping[str, Any]) -> str:
    """The sha256 (hex) of a stage of ``kind`` with ``inputs`` (JSON values; the keys of the stages it
    reads among them) and its kind's code version."""
    payload = {"kind": kind, "version": STAGE_VERSIONS[kind], "inputs": dict(inputs)}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Stage:
    """One stage of the plan: its kind, key, the row (system label) and seed it belongs to (the data
    stage: neither), the keys of the stages it reads (``deps``), what its key hashes (``inputs``) and
    what its runner needs (``params``: JSON values, so it can run in another process)."""

    kind: str
    key: str
    label: str | None
    seed: int | None
    deps: tuple[str, ...]
    inputs: dict[str, Any] = field(repr=False)
    params: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        """The folder name: ``<kind>-<key16>``."""
        return f"{self.kind}-{self.key[:16]}"

    def describe(self) -> str:
        """``outer seq seed 1`` / ``data``."""
        parts = [self.kind] + ([self.label] if self.label else []) + ([f"seed {self.seed}"] if self.seed is not None
                                                                      else [])
        return " ".join(parts)


class StageStore:
    """The stage folders under ``DIR/stages``: finished, partial (a killed run's), or absent."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "stages"

    def final(self, stage: Stage | str) -> Path:
        """Where a finished stage lives."""
        return self.root / (stage if isinstance(stage, str) else stage.name)

    def partial(self, stage: Stage) -> Path:
        """Where the stage works until it finishes."""
        return self.root / f"{stage.name}.partial"

    def status(self, stage: Stage) -> str:
        """``done`` (a finished folder), ``partial`` (work of a stopped run that resumes) or ``todo``."""
        if (self.final(stage) / DONE).is_file():
            return "done"
        if self.partial(stage).is_dir():
            return "partial"
        return "todo"

    def record(self, stage: Stage | str) -> dict[str, Any]:
        """The ``done.json`` of a finished stage."""
        return json.loads((self.final(stage) / DONE).read_text(encoding="utf-8"))

    def begin(self, stage: Stage) -> Path:
        """The stage's work folder (created; a partial one is kept, to resume)."""
        folder = self.partial(stage)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def finish(self, stage: Stage, result: Mapping[str, Any], *, drop: tuple[str, ...] = ()) -> Path:
        """Write ``done.json`` (kind, key, inputs, result) last into the work folder, drop the named
        scratch paths (checkpoints) and rename it to its final name; returns the final folder."""
        work = self.partial(stage)
        write_json_atomic(work / DONE, {"kind": stage.kind, "key": stage.key, "label": stage.label,
                                        "seed": stage.seed, "deps": list(stage.deps), "inputs": stage.inputs,
                                        "result": dict(result)})
        return self.settle(stage, drop=drop)

    def settle(self, stage: Stage, *, drop: tuple[str, ...] = ()) -> Path:
        """A work folder holding ``done.json`` (finished, not yet renamed when a run stopped) -> final."""
        work, final = self.partial(stage), self.final(stage)
        for name in drop:
            path = work / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if final.exists():  # a finished folder without its marker (never written by us): replaced
            shutil.rmtree(final)
        os.replace(work, final)
        return final

    def finished_in_partial(self, stage: Stage) -> bool:
        """Whether the work folder holds ``done.json`` (the run stopped between the marker and the rename)."""
        return (self.partial(stage) / DONE).is_file()
