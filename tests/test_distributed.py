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
from _builtin import TINY_BUILDABLE

QUESTIONS = ["What is 2 + 3?", "Name a prime number."]
RUN = dict(greedy=True, max_new_tokens=10, latent_steps=3, rounds=2)


@pytest.fixture(scope="module")
def local_ray():
    yield connect(num_cpus=2)
    ray.shutdown()


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("wall_s", "peak_mem_bytes")} for r in records]


STYLES = [n for n in sorted(default_registry().topologies) if n in TINY_BUILDABLE]


def test_the_styles_are_the_builtin_ones() -> None:
    assert {"sequential_light", "sequential_scaled", "mixture", "distillation", "deliberation"} <= set(STYLES)


@pytest.mark.parametrize("name", STYLES)
def test_every_builtin_style_answers_the_same_on_ray(local_ray, name: str) -> None:
    compiled = rg.compile(name)
    here = compiled.build(models="tiny")
    local = here.run(QUESTIONS, keep_messages=True, **RUN)
    system = build_on_ray(compiled, models="tiny")
    try:
        remote = system.run(QUESTIONS, keep_messages=True, **RUN)
        assert (system.runner.reused_tokens > 0) == (here.runner.reused_tokens > 0), name  # prefix reuse in actors
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


def test_sharded_eval_matches_one_process_when_workers_die_and_after_resuming(local_ray, tmp_path,
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

    def killer(which: list[int]):
        done = []

        def kill(event) -> None:
            if event.done >= 2 and not done:
                done.append(event.done)
                for w in which:
                    ray.kill(made[-1].workers[w])
        return kill

    # one worker killed mid-run: the other answers its batches, nothing is lost or written twice
    out = tmp_path / "one_killed"
    survived = rg.evaluate("sequential_light", "gsm8k", out=out, workers=2, progress=killer([1]), **options)
    assert _strip(survived.records) == _strip(single.records)
    ids = [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(r["id"] for r in single.records)  # each record once

    # every worker killed: the finished batches are kept, and the same call resumes
    out = tmp_path / "all_killed"
    with pytest.raises(RunError, match="every worker is gone") as err:
        rg.evaluate("sequential_light", "gsm8k", out=out, workers=2, progress=killer([0, 1]), **options)
    assert "run the same command again to resume" in err.value.hint
    kept = (out / "results.jsonl").read_text().splitlines()
    assert 2 <= len(kept) < 10
    resumed = rg.evaluate("sequential_light", "gsm8k", out=out, workers=2, **options)
    assert _strip(resumed.records) == _strip(single.records)
    assert resumed.summary["accuracy"] == single.summary["accuracy"]
    ids = [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(r["id"] for r in single.records)

    on_actors = rg.evaluate("sequential_light", "gsm8k", out=tmp_path / "actors", backend="ray", **options)
    assert _strip(on_actors.records) == _strip(single.records)


def test_a_worker_that_cannot_build_raises_the_real_error(local_ray, tmp_path) -> None:
    from recmas_graph.errors import RecmasError

    with pytest.raises(RecmasError, match="nope") as err:
        rg.evaluate("sequential_light", "gsm8k", out=tmp_path / "e", workers=1, limit=2,
                    build={"models": "tiny", "model": {"planner": "tiny:nope"}})
    assert type(err.value).__module__ == "recmas_graph.errors"  # the worker's own error, not Ray's wrapper
    assert "ray::" not in str(err.value)
    assert not (tmp_path / "e" / "results.jsonl").exists() or not (tmp_path / "e" / "results.jsonl").read_text()


def test_errors_raised_in_actors_come_back_as_themselves(local_ray) -> None:
    from recmas_graph.distributed.ray_backend import _all, _get

    @ray.remote
    class Failing:
        def fail(self):
            raise RunError("inner trouble", culprit="agent 'x'", hint="do this")

    actor = Failing.remote()
    try:
        with pytest.raises(RunError) as err:
            _get(ray, actor.fail.remote(), "x")
        assert type(err.value) is RunError and err.value.message == "inner trouble" and err.value.hint == "do this"
        with pytest.raises(RunError, match="inner trouble"):
            _all(ray, [actor.fail.remote()])
    finally:
        ray.kill(actor)


def test_one_actor_per_gpu_and_one_per_cpu_model() -> None:
    from recmas_graph.distributed.ray_backend import host_groups

    compiled = rg.compile("mixture")
    names = compiled.spec.agent_names
    on_gpus = {n: f"cuda:{i % 2}" for i, n in enumerate(names)}
    groups = host_groups(compiled, on_gpus, None)
    assert sorted(dev for _, dev, _ in groups) == ["cuda:0", "cuda:1"]  # never more actors than GPUs
    assert sorted(n for agents, _, _ in groups for n in agents) == sorted(names)
    on_cpu = host_groups(compiled, {n: "cpu" for n in names}, None)
    assert len(on_cpu) == len({a.model for a in compiled.spec.agents})
    plain = host_groups(compiled, {n: ("cuda" if i % 2 else "cuda:0") for i, n in enumerate(names)}, None)
    assert [dev for _, dev, _ in plain] == ["cuda:0"]  # "cuda" is cuda:0: one actor, not two
    same = host_groups(compiled, {n: "cpu" for n in names}, "float32")  # float32 is what null means on CPU
    assert [agents for agents, _, _ in same] == [agents for agents, _, _ in on_cpu]


def test_more_workers_than_cpus_is_refused(local_ray, tmp_path) -> None:
    with pytest.raises(RunError, match="3 workers need 3 CPUs"):
        rg.evaluate("sequential_light", "gsm8k", out=tmp_path / "e", workers=3, limit=2, build={"models": "tiny"})


def test_a_built_system_is_not_sent_to_workers(tmp_path) -> None:
    system = rg.compile("sequential_light").build(models="tiny")
    with pytest.raises(RunError, match="runs where it was built"):
        rg.evaluate(system, "gsm8k", out=tmp_path / "e", workers=2, limit=2)


def test_cli_run_backend_ray_answers_as_in_process(local_ray, tmp_path, capsys) -> None:
    from recmas_graph.cli import main

    args = ["run", "mixture", "--models", "tiny", "-q", "What is 2 + 3?", "-q", "Is 7 odd?", "--greedy",
            "--max-new-tokens", "6", "--latent-steps", "2", "--rounds", "2"]
    assert main(args + ["-o", str(tmp_path / "local.jsonl")]) == 0
    assert main(args + ["--backend", "ray", "-o", str(tmp_path / "ray.jsonl")]) == 0
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
    capsys.readouterr()
    assert main(args + ["--backend", "nope"]) == 2
    assert "use one of: local, ray" in capsys.readouterr().err
    assert main(args + ["--ray-address", "auto"]) == 2
    assert "--backend ray" in capsys.readouterr().err


def test_more_gpu_actors_than_the_cluster_has_gpus_are_refused_and_workers_see_partial_maps() -> None:
    from recmas_graph.distributed.ray_backend import check_gpus, host_groups
    from recmas_graph.distributed.sharded import _wants_gpu

    compiled = rg.compile("mixture")
    names = compiled.spec.agent_names
    groups = host_groups(compiled, {n: f"cuda:{i % 2}" for i, n in enumerate(names)}, None)
    check_gpus(groups, 2)  # fits
    with pytest.raises(RunError, match="2 GPU\\(s\\) asked for .* the Ray cluster has 1") as err:
        check_gpus(groups, 1)
    assert err.value.culprit == "--device"
    with pytest.raises(RunError, match="cluster has 3"):
        check_gpus(host_groups(compiled, {n: "cuda:3" for n in names}, None), 3)  # index beyond the GPUs
    assert _wants_gpu({names[0]: "cpu"}, compiled)  # the other agents are placed automatically
    assert not _wants_gpu({n: "cpu" for n in names}, compiled)
    assert not _wants_gpu("cpu", compiled) and _wants_gpu(None, compiled) and _wants_gpu("cuda:1", compiled)


def _registry_with_a_role_of_its_own():
    """A registry with a role only this process registered (a plugin defined here travels by value)."""
    from recmas_graph.plugins import Registry, hookimpl
    from recmas_graph.topology.roles import Role

    class OwnRoles:
        @hookimpl
        def recmas_roles(self):
            return [Role("terse_solver", "answers tersely", {"default": "Answer tersely.\n{question}"}, answers=True)]

    registry = Registry.create([OwnRoles()], load_entrypoints=False)
    spec = (rg.TopologyBuilder("own_role", rounds=1, latent_steps=2)
            .agent("planner", role="planner", model="tiny:llama")
            .agent("solver", role="terse_solver", model="tiny:qwen2")
            .edge("planner", "solver", slot="plan").output("solver").build())
    return registry, spec


def test_a_plugin_of_the_callers_registry_works_in_actors_and_workers(local_ray, tmp_path) -> None:
    registry, spec = _registry_with_a_role_of_its_own()
    with pytest.raises(Exception, match="terse_solver"):
        rg.compile(spec)  # the installed plugins alone do not know the role
    compiled = registry.compile(spec)
    local = compiled.build(models="tiny").run(QUESTIONS, **{**RUN, "rounds": 1})
    system = build_on_ray(compiled, models="tiny")
    try:
        assert system.run(QUESTIONS, **{**RUN, "rounds": 1}).answers == local.answers
    finally:
        system.runner.shutdown()
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "5"}) + "\n" for q in QUESTIONS), encoding="utf-8")
    options = dict(registry=registry, build={"models": "tiny"}, greedy=True, max_new_tokens=4, latent_steps=2)
    on_workers = rg.evaluate(spec, f"jsonl:{data}", out=tmp_path / "w", workers=1, **options)
    here = rg.evaluate(spec, f"jsonl:{data}", out=tmp_path / "h", **options)
    assert len(on_workers.records) == 2 and _strip(on_workers.records) == _strip(here.records)


def test_a_plugin_that_cannot_travel_is_named(local_ray) -> None:
    import threading

    from recmas_graph.errors import PluginError
    from recmas_graph.plugins import Registry, hookimpl

    class Locked:
        lock = None

        def __init__(self):
            self.lock = threading.Lock()  # cannot be pickled

        @hookimpl
        def recmas_roles(self):
            return []

    registry = Registry.create([("locked", Locked())], load_entrypoints=False)
    with pytest.raises(PluginError, match="'locked'") as err:
        build_on_ray(registry.compile("sequential_light"), models="tiny")
    assert "unpicklable" in err.value.hint
