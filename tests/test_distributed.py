"""The Ray backend (agents in Ray actors) and data-parallel evaluation on Ray workers, on a local
Ray instance with 2 CPUs and tiny models: the same greedy answers and the same records as in process."""

from __future__ import annotations

import json

import pytest

import recmas_graph as rg
from recmas_graph.errors import RunError
from recmas_graph.plugins.manager import default_registry

ray = pytest.importorskip("ray", reason="the Ray backend is the optional extra 'ray'")

from recmas_graph.distributed import build_on_ray, connect  # noqa: E402
from recmas_graph.distributed import sharded as sharded_module  # noqa: E402

QUESTIONS = ["What is 2 + 3?", "Name a prime number."]
RUN = dict(greedy=True, max_new_tokens=10, latent_steps=3, rounds=2)


@pytest.fixture(scope="module")
def local_ray():
    yield connect(num_cpus=2)
    ray.shutdown()


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("wall_s", "peak_mem_bytes")} for r in records]


STYLES = sorted(default_registry().topologies)


def test_the_styles_are_the_builtin_ones() -> None:
    assert {"sequential_light", "sequential_scaled", "mixture", "distillation", "deliberation"} <= set(STYLES)


@pytest.mark.parametrize("name", STYLES)
def test_every_builtin_style_answers_the_same_on_ray(local_ray, name: str) -> None:
    compiled = rg.compile(name)
    local = compiled.build(models="tiny").run(QUESTIONS, keep_messages=True, **RUN)
    system = build_on_ray(compiled, models="tiny")
    try:
        remote = system.run(QUESTIONS, keep_messages=True, **RUN)
        assert remote.answers == local.answers, name
        assert remote.generated_tokens == local.generated_tokens, name
        assert [(r.agent, r.round, r.action) for r in remote.trace] == \
            [(r.agent, r.round, r.action) for r in local.trace], name
        assert remote.messages.keys() == local.messages.keys(), name
        for key, message in local.messages.items():  # latent messages crossed processes intact
            assert remote.messages[key].dtype == message.dtype
            assert (remote.messages[key] - message).abs().max() < 1e-5, (name, key)
        # the links are the ones an in-process build makes, here and in every actor
        local_state = compiled.build(models="tiny").state_dict()
        assert system.state_dict().keys() == local_state.keys()
        assert all((system.state_dict()[k] - v).abs().max() == 0 for k, v in local_state.items()), name
    finally:
        system.runner.shutdown()


def test_training_on_ray_is_refused_with_a_fix(local_ray) -> None:
    system = build_on_ray(rg.compile("sequential_light"), models="tiny")
    try:
        with pytest.raises(RunError, match="one process") as err:
            system.answer_loss(QUESTIONS, ["5", "7"], latent_steps=2)
        assert "--backend local" in err.value.hint
    finally:
        system.runner.shutdown()


def test_sharded_eval_matches_one_process_and_resumes_after_a_worker_dies(local_ray, tmp_path,
                                                                          monkeypatch) -> None:
    options = dict(limit=10, batch_size=2, build={"models": "tiny"}, latent_steps=2,
                   generation={"greedy": True, "max_new_tokens": 8})
    single = rg.evaluate("sequential_light", "gsm8k", out=tmp_path / "single", **options)

    made = []
    original = sharded_module.ShardedAnswerer.__init__

    def remember(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(sharded_module.ShardedAnswerer, "__init__", remember)
    killed = []

    def kill_second_worker(event) -> None:
        if event.done >= 2 and not killed:
            killed.append(event.done)
            ray.kill(made[0].workers[1])

    out = tmp_path / "sharded"
    with pytest.raises(RunError, match="Ray worker 2 died") as err:
        rg.evaluate("sequential_light", "gsm8k", out=out, workers=2, progress=kill_second_worker, **options)
    assert "run the same command again to resume" in err.value.hint
    kept = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert 2 <= len(kept) < 10  # the finished batches were written, the dead worker's were not

    resumed = rg.evaluate("sequential_light", "gsm8k", out=out, workers=2, **options)
    assert _strip(resumed.records) == _strip(single.records)
    assert resumed.summary["accuracy"] == single.summary["accuracy"]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(r["id"] for r in single.records)

    on_actors = rg.evaluate("sequential_light", "gsm8k", out=tmp_path / "actors", backend="ray", **options)
    assert _strip(on_actors.records) == _strip(single.records)


def test_more_workers_than_cpus_is_refused(local_ray, tmp_path) -> None:
    with pytest.raises(RunError, match="3 workers need 3 CPUs"):
        rg.evaluate("sequential_light", "gsm8k", out=tmp_path / "e", workers=3, limit=2, build={"models": "tiny"})
