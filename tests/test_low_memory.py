"""Low-memory mode: one model in memory at a time, the same answers, losses and records."""

from __future__ import annotations

import pytest
import torch

import recmas_graph as rg
from recmas_graph.cli import main
from recmas_graph.errors import RunError
from recmas_graph.runtime.execution.backends import InProcessRunner
from _builtin import TINY_BUILDABLE

QUESTIONS = ["What is 2 + 3?", "Name a prime number."]
RUN = dict(greedy=True, max_new_tokens=10, latent_steps=3, rounds=2)


@pytest.mark.parametrize("name", TINY_BUILDABLE)
def test_low_memory_gives_the_same_answers_with_one_model_loaded(name: str, monkeypatch) -> None:
    compiled = rg.compile(name)
    normal = compiled.build(models="tiny").run(QUESTIONS, keep_messages=True, **RUN)
    system = compiled.build(models="tiny", low_memory=True)
    assert not any(agent.resident for agent in system.agents.values())  # the build freed every model
    seen: list[set[str]] = []
    run_pass = InProcessRunner._run_pass

    def watch(self, request, agent):
        result = run_pass(self, request, agent)
        seen.append({a.ref for a in system.agents.values() if a.resident})
        return result

    monkeypatch.setattr(InProcessRunner, "_run_pass", watch)
    low = system.run(QUESTIONS, keep_messages=True, **RUN)
    assert low.answers == normal.answers
    assert low.generated_tokens == normal.generated_tokens
    for key, message in normal.messages.items():
        assert torch.allclose(low.messages[key], message, atol=1e-5), key  # normal builds merge shared-model passes
    assert seen and all(len(models) == 1 for models in seen)  # one model in memory during every pass
    distinct = {a.model for a in compiled.with_overrides(
        models={a.name: system.agents[a.name].ref for a in compiled.spec.agents}).spec.agents}
    if len(distinct) > 1:
        assert system.residency.loads > len(distinct)  # models were freed and loaded again


def test_low_memory_trains_the_same() -> None:
    compiled = rg.compile("sequential_light")
    losses, grads = [], []
    for low in (False, True):
        system = compiled.build(models="tiny", low_memory=low)
        loss = system.answer_loss(QUESTIONS, ["5", "7"], latent_steps=2)
        loss.backward()
        losses.append(loss.item())
        grads.append({k: p.grad.clone() for k, p in system.named_parameters() if p.grad is not None})
    assert losses[0] == losses[1]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    assert all(torch.allclose(grads[0][k], grads[1][k]) for k in grads[0])


def test_low_memory_eval_writes_the_same_records_and_resumes_either_way(tmp_path) -> None:
    options = dict(limit=4, batch_size=2, latent_steps=2, generation={"greedy": True, "max_new_tokens": 8})
    normal = rg.evaluate("sequential_light", "gsm8k", out=tmp_path / "a", build={"models": "tiny"}, **options)
    low = rg.evaluate("sequential_light", "gsm8k", out=tmp_path / "b", build={"models": "tiny", "low_memory": True},
                      **options)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("wall_s", "peak_mem_bytes")} for r in rs]  # noqa: E731
    assert strip(low.records) == strip(normal.records)
    again = rg.evaluate("sequential_light", "gsm8k", out=tmp_path / "a", build={"models": "tiny", "low_memory": True},
                        **options)  # same configuration: nothing to do
    assert strip(again.records) == strip(normal.records)


def test_cli_run_low_memory(tmp_path, capsys) -> None:
    args = ["run", "sequential_light", "--models", "tiny", "-q", "What is 2 + 3?", "--greedy", "--max-new-tokens", "6",
            "--latent-steps", "2"]
    assert main(args + ["-o", str(tmp_path / "a.jsonl")]) == 0
    assert main(args + ["--low-memory", "-o", str(tmp_path / "b.jsonl")]) == 0
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    capsys.readouterr()
    assert main(args + ["--low-memory", "--backend", "ray"]) == 2
    assert "one process" in capsys.readouterr().err


def test_out_of_memory_in_a_pass_names_the_agent_and_the_fix(monkeypatch) -> None:
    from recmas_graph.runtime.agent.agent import Agent
    from recmas_graph.runtime.memory.oom import OutOfMemory

    system = rg.compile("sequential_light").build(models="tiny")

    def exhausted(self, *args, **kwargs):
        if self.name == "critic":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return think(self, *args, **kwargs)

    think = Agent.think
    monkeypatch.setattr(Agent, "think", exhausted)
    with pytest.raises(OutOfMemory) as err:
        system.run(QUESTIONS, **RUN)
    assert err.value.agent == "critic" and err.value.round == 1 and err.value.batch_size == 2
    assert "--low-memory" in err.value.hint and "--batch-size" in err.value.hint
    assert isinstance(err.value.__cause__, torch.OutOfMemoryError)


def test_low_memory_is_chosen_when_the_estimate_does_not_fit(monkeypatch) -> None:
    from recmas_graph.runtime.memory import sizing

    compiled = rg.compile("sequential_light")
    assert compiled.build(models="tiny").residency is None  # tiny models fit
    monkeypatch.setattr(sizing, "available_bytes", lambda device: 1024)
    stages: list[str] = []
    system = compiled.build(models="tiny", on_model=lambda agent, text: stages.append(text))
    assert system.residency is not None
    assert any(text.startswith("low-memory mode: estimated") and "available" in text for text in stages)
    assert compiled.build(models="tiny", low_memory=False).residency is None  # an explicit choice wins


def test_low_memory_training_keeps_one_copy_of_the_weights() -> None:
    import gc
    import weakref

    from recmas_graph.runtime.memory.residency import Residency

    system = rg.compile("sequential_light").build(models="tiny", low_memory=True)
    copies: list[weakref.ref] = []
    get = Residency.get

    def remember(self, name):
        loaded = get(self, name)
        if not copies or copies[-1]() is not loaded.model:
            copies.append(weakref.ref(loaded.model))
        return loaded

    Residency.get = remember
    try:
        loss = system.answer_loss(QUESTIONS, ["5", "7"], latent_steps=2, rounds=2)
        gc.collect()
        alive = sum(ref() is not None for ref in copies)
        loss.backward()
    finally:
        Residency.get = get
    assert len(copies) > 2  # models were reloaded pass after pass
    assert alive <= 1  # the graph holds no pass's weights (each pass is recomputed in backward)
    assert all(p.grad is not None for p in system.outer_links.parameters())


def test_low_memory_refuses_links_that_fit_themselves_and_is_not_chosen_for_them(monkeypatch) -> None:
    from recmas_graph.errors import RunError
    from recmas_graph.runtime.memory import sizing
    from recmas_graph.runtime.links import modules

    monkeypatch.setattr(modules.OuterLnRes, "calibrate", lambda self, source, target=None: None, raising=False)
    compiled = rg.compile("sequential_light")
    with pytest.raises(RunError, match="fits itself from the loaded models") as err:
        compiled.build(models="tiny", low_memory=True)
    assert "recmas calibrate" in err.value.hint
    monkeypatch.setattr(sizing, "available_bytes", lambda device: 1024)
    assert compiled.build(models="tiny").residency is None  # not chosen automatically either


def test_every_recmas_error_survives_pickling() -> None:
    """Errors cross process boundaries (Ray workers); one that cannot be unpickled arrives as Ray's own."""
    import pickle

    from recmas_graph.errors import RecmasError
    from recmas_graph.runtime.execution.batches import BatchError
    from recmas_graph.runtime.memory.oom import OutOfMemory

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    assert BatchError in set(subclasses(RecmasError)) and OutOfMemory in set(subclasses(RecmasError))
    for cls in subclasses(RecmasError):
        if cls is BatchError:
            err = BatchError("went wrong", index=3, ids=["a", "b"], hint="do this")
        elif cls is OutOfMemory:
            err = OutOfMemory("went wrong", agent="x", hint="do this")
        else:
            try:
                err = cls("went wrong", culprit="agent 'x'", hint="do this")
            except TypeError:  # a subclass with its own signature
                err = cls("went wrong")
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls and str(back) == str(err), cls
    oom = pickle.loads(pickle.dumps(OutOfMemory("out", agent="s", round=2, device="cuda:1", batch_size=4, loading=True)))
    assert (oom.agent, oom.round, oom.device, oom.batch_size, oom.loading) == ("s", 2, "cuda:1", 4, True)


def test_a_merged_pass_that_runs_out_of_memory_runs_its_passes_one_by_one(monkeypatch) -> None:
    from recmas_graph.runtime.execution.backends import InProcessRunner
    from recmas_graph.runtime.memory.oom import OutOfMemory

    system = rg.compile("mixture").build(models="tiny")
    system.runner.merge = False
    separate = system.run(QUESTIONS, **RUN)
    system.runner.merge = True
    calls = []

    def exhausted(self, requests):
        calls.append(len(requests))
        raise OutOfMemory("out of memory", agent="math", batch_size=4)

    monkeypatch.setattr(InProcessRunner, "run_merged", exhausted)
    fallback = system.run(QUESTIONS, **RUN)
    assert calls and fallback.answers == separate.answers


def test_reading_an_agent_never_loads_its_model() -> None:
    system = rg.compile("sequential_light").build(models="tiny", low_memory=True)
    agent = next(a for a in system.agents.values() if not a.resident)
    loads = system.residency.loads
    assert agent.hidden_size > 0 and agent.ref and agent.dtype is not None  # known without the model
    with pytest.raises(RunError, match="not loaded") as err:
        agent.loaded  # noqa: B018 - a property: it must not load from disk
    assert "agent.load()" in err.value.hint and system.residency.loads == loads
    assert agent.load() is agent.loaded and system.residency.loads == loads + 1  # loading is explicit
