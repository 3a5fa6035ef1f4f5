"""Data-parallel training (``workers=N``): two gloo workers give the losses, validation losses and
trained links of one process on the same global batches (even and uneven shares), a two-worker run
interrupted and resumed continues exactly, and a worker that fails or is killed ends the run with
an error naming it, no hang, and the last checkpoint intact."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from pathlib import Path

import pytest
import torch

import recmas_graph as rg
from recmas_graph.plugins import Registry, set_default_registry
from recmas_graph.plugins.hookspecs import hookimpl
from recmas_graph.train.data import TrainSample
from recmas_graph.train.loop import TrainConfig
from recmas_graph.train.parallel import shard_bounds
from recmas_graph.train.run import train_links

DATA = [TrainSample(str(i), f"What is {i} + {i}?", f"{i} + {i} = {2 * i}. The answer is {2 * i}.",
                    {"plan": f"Add {i} to itself."}) for i in range(12)]
CONFIG = TrainConfig(steps=10, batch_size=4, lr=1e-2, warmup=2, save_every=2, eval_every=5)


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _close(a: list[dict], b: list[dict], rel: float = 1e-5) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        assert math.isclose(x["loss"], y["loss"], rel_tol=rel), (x, y)
        assert x["lr"] == y["lr"]
        assert ("val_loss" in x) == ("val_loss" in y)
        if "val_loss" in x:
            assert math.isclose(x["val_loss"], y["val_loss"], rel_tol=rel), (x, y)


def _links(system) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in system.state_dict().items()}


def _system(registry=None):
    return (registry or rg).compile("sequential_light").build(models="tiny", seed=0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The inner loop in one process: its metrics and trained links."""
    set_default_registry(Registry.create(load_entrypoints=False))
    try:
        system = _system()
        out = tmp_path_factory.mktemp("one")
        train_links(system, "inner", DATA, out, CONFIG, heldout=0.25)
        return _metrics(out), _links(system)
    finally:
        set_default_registry(None)


def test_shares_cover_the_batch() -> None:
    for size in range(1, 9):
        for world in range(1, size + 1):
            bounds = [shard_bounds(size, world, r) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == size
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_two_workers_train_as_one_process(tmp_path: Path, registry, reference) -> None:
    system = _system()
    report = train_links(system, "inner", DATA, tmp_path / "two", CONFIG, heldout=0.25, workers=2)
    rows, links = reference
    _close(_metrics(tmp_path / "two"), rows)
    assert report.steps == 10 and math.isclose(report.last_loss, rows[-1]["loss"], rel_tol=1e-5)
    trained = _links(system)  # the caller's system holds the trained links
    for name, value in links.items():
        torch.testing.assert_close(trained[name], value, rtol=1e-4, atol=1e-5)
    again = rg.compile(str(tmp_path / "two" / "topology.json")).build()  # and so does the folder
    torch.testing.assert_close(_links(again), trained)
    saved = json.loads((tmp_path / "two" / "report.json").read_text())
    assert saved["workers"] == 2 and saved["steps"] == 10
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").glob("*.pt")) == ["step_000008.pt",
                                                                                      "step_000010.pt"]


def test_uneven_shares_and_intermediate_losses_of_the_outer_loop(tmp_path: Path, registry) -> None:
    """A batch of 3 over 2 workers (2 + 1 samples): the answer and plan losses are per token over
    the whole batch, so the shares are weighted by their tokens, not averaged."""
    config = TrainConfig(steps=4, batch_size=3, accumulate=2, lr=5e-2, warmup=1, save_every=2, eval_every=2)
    options = dict(rounds=1, latent_steps=2, heldout=0.25, target_weights={"planner": 0.5})
    runs = {}
    for workers in (1, 2):
        system = _system()
        train_links(system, "outer", DATA, tmp_path / str(workers), config, workers=workers, **options)
        runs[workers] = (_metrics(tmp_path / str(workers)), _links(system))
    _close(runs[2][0], runs[1][0])
    for name, value in runs[1][1].items():
        torch.testing.assert_close(runs[2][1][name], value, rtol=1e-4, atol=1e-5)


def test_an_interrupted_two_worker_run_resumes_exactly(tmp_path: Path, registry, reference) -> None:
    def stop_after_3(info):
        if info.step == 3:
            raise KeyboardInterrupt

    config = dataclasses.replace(CONFIG, keep=10)  # every checkpoint kept (keep does not change the losses)
    with pytest.raises(KeyboardInterrupt):
        train_links(_system(), "inner", DATA, tmp_path / "cut", config, heldout=0.25, workers=2,
                    progress=stop_after_3)
    checkpoints = tmp_path / "cut" / "checkpoints"
    assert checkpoints.is_dir() and not (tmp_path / "cut" / "topology.json").exists()
    # Progress reaches this process after the workers ran the step, so on a fast machine they may
    # have gone on (even to the end) before the interrupt stopped them. Leave the folder as a kill
    # right after step 2's checkpoint would (written before step 3 ran, so it is there): later
    # checkpoints gone; the metrics of later steps stay, and the resume must trim them.
    assert (checkpoints / "step_000002.pt").is_file()
    for later in checkpoints.glob("step_*.pt"):
        if int(later.stem.split("_")[1]) > 2:
            later.unlink()
    other = rg.compile("sequential_light").build(models="tiny", seed=1)  # other random links: the checkpoint wins
    report = train_links(other, "inner", DATA, tmp_path / "cut", config, heldout=0.25, workers=2, resume=True)
    rows, links = reference
    assert report.resumed_from == 2
    _close(_metrics(tmp_path / "cut"), rows)
    for name, value in links.items():
        torch.testing.assert_close(_links(other)[name], value, rtol=1e-4, atol=1e-5)


def test_refusals_before_any_worker_starts(tmp_path: Path, registry) -> None:
    system = _system()
    with pytest.raises(rg.RecmasError, match="a batch of 4 samples cannot be shared by 5 workers"):
        train_links(system, "inner", DATA, tmp_path / "a", CONFIG, workers=5)
    with pytest.raises(rg.RecmasError, match="workers must be a positive integer"):
        train_links(system, "inner", DATA, tmp_path / "a", CONFIG, workers=0)

    class Locked:  # a plugin that cannot be pickled
        lock = threading.Lock()

        def __init__(self) -> None:
            self.held = threading.Lock()

    reg = Registry.create([Locked()], load_entrypoints=False)
    with pytest.raises(rg.RecmasError, match="plugin 'Locked'.*cannot be sent to the training workers") as err:
        train_links(_system(reg), "inner", DATA, tmp_path / "b", CONFIG, workers=2)
    assert err.value.culprit == "plugin 'Locked'"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _failing(action: str, after: int):
    """A plugin (travelling by value) that makes worker 1 fail at its ``after``-th model call."""

    class FailInWorker1:
        @hookimpl
        def recmas_system_built(self, system, registry, on_stage):
            import os
            import signal

            from recmas_graph.runtime.agent.forward import backbone_of

            if os.environ.get("RANK") != "1":
                return
            calls = {"n": 0}

            def hook(module, args, kwargs):
                calls["n"] += 1
                if calls["n"] >= after:
                    if action == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    raise ValueError(f"boom at call {calls['n']}")

            seen = set()
            for agent in system.agents.values():
                backbone = backbone_of(agent.model)
                if id(backbone) not in seen:
                    seen.add(id(backbone))
                    backbone.register_forward_pre_hook(hook, with_kwargs=True)

    return Registry.create([("fail-in-worker-1", FailInWorker1())], load_entrypoints=False)


@pytest.mark.parametrize("action", ["raise", "kill"])
def test_a_failing_worker_is_named_and_the_checkpoint_survives(tmp_path: Path, registry, reference,
                                                               action: str) -> None:
    config = TrainConfig(steps=10, batch_size=4, lr=1e-2, warmup=2, save_every=1, eval_every=5)
    out = tmp_path / "run"
    start = time.monotonic()
    # sequential_light's three agents call a model three times a step: worker 1 fails as step 4 starts
    with pytest.raises(rg.RecmasError) as err:
        train_links(_system(_failing(action, after=10)), "inner", DATA, out, config, heldout=0.25, workers=2)
    assert time.monotonic() - start < 120  # no hang
    text = str(err.value)
    if action == "kill":
        assert "training worker 1 of 2 was killed by signal SIGKILL" in text
    else:
        assert "training worker 1 of 2 failed: ValueError: boom at call 10" in text
    assert err.value.culprit == "worker 1" and "--resume" in text
    saved = sorted((out / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in saved] == ["step_000002.pt", "step_000003.pt"]
    assert not list((out / "checkpoints").glob("*.tmp")) and not (out / "topology.json").exists()
    # the checkpoint is whole: one process resumes from it with the uninterrupted run's losses
    rows, _ = reference
    train_links(_system(), "inner", DATA, out, config, heldout=0.25, resume=True)
    _close(_metrics(out), rows)


def test_cli_train_with_workers(tmp_path: Path, capsys, registry) -> None:
    from recmas_graph.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": s.question, "answer": s.answer}) + "\n" for s in DATA[:4]))
    args = ["train", "inner", "distillation", "--models", "tiny", "--data", str(data), "-o", str(tmp_path / "o"),
            "--steps", "2", "--save-every", "2", "--batch-size", "2", "--heldout", "0", "--workers", "2"]
    assert main(args) == 0
    assert "inner loop: 2 steps" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "report.json").read_text())["workers"] == 2
    assert main(args[:-1] + ["3"]) == 2 and "cannot be shared by 3 workers" in capsys.readouterr().err
