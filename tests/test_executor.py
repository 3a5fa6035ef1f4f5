"""Executor: schedules executed as planned, latent messages, text edges, placement, the run CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recmas_graph import RunError, TopologyBuilder, compile_topology, resolve_topology
from recmas_graph.agents import GenerationOptions
from recmas_graph.builtin import topologies_dir
from recmas_graph.cli import main
from recmas_graph.executor import RecursiveSystem, resolve_placement, tiny_counterpart
from recmas_graph.links import InnerLnRes, OuterLnRes
from recmas_graph.models import ModelCache

GREEDY = GenerationOptions(max_new_tokens=6, do_sample=False)
BUILTIN = sorted(p.stem for p in topologies_dir().glob("*.json"))


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_style_runs_tiny_and_executes_its_plan(name: str, cache: ModelCache, registry) -> None:
    spec = resolve_topology(name)
    system = RecursiveSystem.build(spec, tiny=True, model_cache=cache, registry=registry)
    result = system.run(["What is 3 + 4?", "Is 9 prime?"], rounds=2, latent_steps=3, generation=GREEDY)
    planned = [(p.agent, p.round, p.action) for p in compile_topology(spec, registry).schedule(2).passes]
    executed = [(r.agent, r.round, r.action) for r in result.trace]
    assert executed == planned
    assert len(result.answers) == 2
    assert all(r.latent_steps == (3 if "latent" in r.action else 0) for r in result.trace)
    decode = [r for r in result.trace if r.action == "decode"]
    assert len(decode) == 1 and decode[0].generated_tokens == sum(result.generated_tokens)


def test_models_shared_between_agents_naming_the_same_model(cache: ModelCache, registry) -> None:
    spec = resolve_topology("deliberation_mini")
    local = ModelCache()
    system = RecursiveSystem.build(spec, tiny=True, model_cache=local, registry=registry)
    assert len(local) == 1
    assert system.agents["reflector"].model is system.agents["toolcaller"].model


def test_latent_message_is_outer_of_inner_of_thoughts(cache: ModelCache, registry) -> None:
    spec = resolve_topology("sequential_light")
    system = RecursiveSystem.build(spec, tiny=True, model_cache=cache, registry=registry, seed=5)
    result = system.run(["What is 6 * 7?"], rounds=2, latent_steps=4, generation=GREEDY, keep_messages=True)
    for index, edge in enumerate(spec.edges):
        for (label, src_round), msg in result.messages.items():
            if label != edge.label:
                continue
            thoughts = result.thoughts[(edge.source, src_round)]
            src, dst = system.agents[edge.source], system.agents[edge.target]
            inner = InnerLnRes(src.hidden_size)
            inner.load_state_dict(src.inner_link.state_dict())
            outer = OuterLnRes(src.hidden_size, dst.hidden_size)
            outer.load_state_dict(system.outer_links[index].state_dict())
            expected = outer(inner(thoughts))
            assert msg.shape == (1, 4, dst.hidden_size)
            torch.testing.assert_close(msg, expected, rtol=1e-5, atol=1e-5)
    labels = {label for label, _ in result.messages}
    assert labels == {"planner->critic", "critic->solver", "solver~>planner"}


def test_same_seed_same_links_and_answers(cache: ModelCache, registry) -> None:
    spec = resolve_topology("distillation")
    runs = []
    for _ in range(2):
        system = RecursiveSystem.build(spec, tiny=True, model_cache=cache, registry=registry, seed=11)
        runs.append(system.run(["Q?"], rounds=2, latent_steps=3, generation=GREEDY, keep_messages=True))
    assert runs[0].answers == runs[1].answers
    for key, msg in runs[0].messages.items():
        torch.testing.assert_close(msg, runs[1].messages[key])


def test_text_medium_edges_run(cache: ModelCache, registry) -> None:
    spec = (TopologyBuilder("textmas", rounds=2, latent_steps=3)
            .agent("planner", role="planner", model="tiny:llama")
            .agent("solver", role="solver", model="tiny:qwen2")
            .edge("planner", "solver", slot="plan", medium="text")
            .recursion("solver", "planner", slot="feedback", medium="text")
            .output("solver").build())
    system = RecursiveSystem.build(spec, model_cache=cache, registry=registry)
    assert system.outer_links == {}  # text edges carry no link
    result = system.run(["What is 1 + 1?"], generation=GREEDY, text_message_tokens=5)
    actions = [(r.agent, r.round, r.action) for r in result.trace]
    assert actions == [("planner", 1, "text"), ("solver", 1, "text"), ("planner", 2, "text"), ("solver", 2, "decode")]
    assert all(r.latent_steps == 0 for r in result.trace)
    assert result.trace[0].generated_tokens > 0


def test_mixed_media_pass_does_both(cache: ModelCache, registry) -> None:
    spec = (TopologyBuilder("mixed", rounds=1, latent_steps=2)
            .agent("a", role="planner", model="tiny:llama")
            .agent("b", role="critic", model="tiny:llama")
            .agent("c", role="solver", model="tiny:gemma3")
            .edge("a", "b", slot="plan").edge("a", "c", slot="plan", medium="text")
            .edge("b", "c", slot="critique").output("c").build())
    system = RecursiveSystem.build(spec, model_cache=cache, registry=registry)
    result = system.run(["Q?"], generation=GREEDY, text_message_tokens=3)
    assert result.trace[0].action == "latent+text"
    assert result.trace[0].latent_steps == 2 and result.trace[0].generated_tokens > 0


def test_placement_rules() -> None:
    spec = resolve_topology("sequential_light")
    assert set(resolve_placement(spec, None).values()) == ({"cpu"} if not torch.cuda.is_available() else set(resolve_placement(spec, None).values()))
    assert resolve_placement(spec, {"planner": "cpu"})["planner"] == "cpu"
    with pytest.raises(RunError, match="unknown agent"):
        resolve_placement(spec, {"nobody": "cpu"})
    if not torch.cuda.is_available():
        with pytest.raises(RunError, match="CUDA is not available"):
            resolve_placement(spec, "cuda:0")


def test_tiny_counterparts_follow_the_family() -> None:
    assert tiny_counterpart("meta-llama/Llama-3.2-1B-Instruct") == "tiny:llama"
    assert tiny_counterpart("Qwen/Qwen3.5-4B") == "tiny:qwen2"
    assert tiny_counterpart("google/gemma-3-4b-it") == "tiny:gemma3"
    assert tiny_counterpart("pkg:smollm2-135m-instruct") == "tiny:llama"


def test_unknown_model_override_names_the_agent(registry) -> None:
    with pytest.raises(RunError, match="ghost"):
        RecursiveSystem.build(resolve_topology("sequential_light"), model_overrides={"ghost": "tiny:llama"},
                              registry=registry)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_run_matches_cpu_plan(registry) -> None:
    spec = resolve_topology("sequential_light")
    system = RecursiveSystem.build(spec, tiny=True, device="cuda", registry=registry)
    result = system.run(["What is 3 + 4?"], rounds=2, latent_steps=3, generation=GREEDY)
    assert all(r.device.startswith("cuda") for r in result.trace)
    assert all(r.peak_mem_bytes > 0 for r in result.trace)


# ---------------------------------------------------------------------------------------- CLI
def test_cli_run_tiny_writes_trace_and_answers(tmp_path: Path, capsys) -> None:
    trace, out = tmp_path / "trace.jsonl", tmp_path / "answers.jsonl"
    code = main(["run", "mixture", "--models", "tiny", "-q", "What is 2+2?", "-q", "Is 7 odd?", "--rounds", "2",
                 "--latent-steps", "2", "--max-new-tokens", "4", "--greedy", "--batch-size", "1",
                 "--trace", str(trace), "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "per-stage timing" in printed and "summarizer" in printed
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    plan = compile_topology(resolve_topology("mixture")).schedule(2).passes
    assert len(rows) == 2 * len(plan)  # two batches of one question
    assert {"agent", "round", "action", "device", "wall_s", "prompt_tokens", "latent_steps", "generated_tokens",
            "peak_mem_bytes"} <= set(rows[0])
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["id"] for a in answers] == ["1", "2"]


def test_cli_run_questions_file_and_bad_line(tmp_path: Path, capsys) -> None:
    good = tmp_path / "q.jsonl"
    good.write_text('{"id": "a", "question": "What is 1+1?"}\n\n{"question": "And 2+2?"}\n')
    assert main(["run", "distillation", "--models", "tiny", "--questions", str(good), "--rounds", "1",
                 "--latent-steps", "1", "--max-new-tokens", "2"]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\n{"question": oops}\n')
    capsys.readouterr()
    assert main(["run", "distillation", "--models", "tiny", "--questions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "line 2" in err and "Traceback" not in err


@pytest.mark.parametrize("args,needle", [
    (["--model", "planner"], "AGENT=VALUE"),
    (["--task", "poetry"], "unknown task type"),
    (["--models", "huge"], "--models"),
    ([], "no question"),
])
def test_cli_run_bad_options_exit_2(args: list[str], needle: str, capsys) -> None:
    base = ["run", "sequential_light", "--models", "tiny"] if "--models" not in args else ["run", "sequential_light"]
    q = [] if args == [] else ["-q", "hi"]
    assert main(base + args + q) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.real
def test_mini_topology_runs_on_packaged_models(registry) -> None:
    spec = resolve_topology("sequential_light_mini")
    system = RecursiveSystem.build(spec, registry=registry)
    hidden = {a.name: a.hidden_size for a in system.agents.values()}
    assert hidden == {"planner": 640, "critic": 576, "solver": 576}
    result = system.run(["What is 12 * 7?"], rounds=2, latent_steps=4,
                        generation=GenerationOptions(max_new_tokens=16, do_sample=False))
    assert result.answers[0].strip()
    assert result.generated_tokens[0] > 0


def test_tool_choice_is_checked(registry) -> None:
    system = RecursiveSystem.build(resolve_topology("deliberation"), tiny=True, registry=registry)
    with pytest.raises(RunError, match="tool_choice"):
        system.run(["Q?"], tool_choice="always")


def test_toolcaller_decodes_through_the_tool_loop(registry, monkeypatch) -> None:
    """The toolcaller's answer goes through run_tool_loop; its calls land in the trace."""
    system = RecursiveSystem.build(resolve_topology("deliberation"), tiny=True, registry=registry)
    agent = system.agents["toolcaller"]
    replies = iter(["```python\nprint(6 * 7)\n```\n", "so \\boxed{42}"])
    seen: list[str] = []

    def fake_continue(prompt, continuation, options, generator=None):
        seen.append(continuation)
        return next(replies), 3

    monkeypatch.setattr(agent, "continue_text", fake_continue)
    result = system.run(["What is 6 * 7?"], rounds=1, latent_steps=2, generation=GREEDY)
    decode = result.trace[-1]
    assert decode.tool_calls and decode.tool_calls[0]["name"] == "python"
    assert decode.tool_calls[0]["output"].strip() == "42"
    assert "```output\n42" in result.answers[0] and result.answers[0].endswith("\\boxed{42}")
    assert seen[1].endswith("```output\n42\n```\n")  # the model continued after seeing the result
    assert result.generated_tokens == [6]


@pytest.mark.real
def test_deliberation_mini_answers_with_its_python_tool(registry) -> None:
    """On the packaged SmolLM2, the toolcaller writes code, the sandbox runs it, the result is traced."""
    system = RecursiveSystem.build(resolve_topology("deliberation_mini"), registry=registry, seed=0)
    result = system.run(["Use Python to compute 123456789 * 987654321."], rounds=1, latent_steps=4,
                        generation=GenerationOptions(max_new_tokens=160, do_sample=False), tool_choice="required")
    calls = result.trace[-1].tool_calls
    assert calls, result.answers[0]
    assert calls[0]["name"] == "python" and calls[0]["ok"], calls[0]
    assert str(123456789 * 987654321) in calls[0]["output"]
    assert calls[0]["output"].strip() in result.answers[0]


def test_batch_failure_keeps_finished_answers_and_names_the_batch(tmp_path: Path, capsys, monkeypatch) -> None:
    calls = {"n": 0}
    original = RecursiveSystem.run

    def flaky(self, questions, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(self, questions, **kwargs)

    monkeypatch.setattr(RecursiveSystem, "run", flaky)
    out = tmp_path / "answers.jsonl"
    code = main(["run", "distillation", "--models", "tiny", "-q", "first?", "-q", "second?", "--batch-size", "1",
                 "--rounds", "1", "--latent-steps", "1", "--max-new-tokens", "2", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert "batch 2 failed" in captured.err and "questions 2" in captured.err and "Traceback" not in captured.err
    assert "first?" in captured.out  # batch 1's answer was printed as it finished
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["1"]


def test_unwritable_output_fails_before_loading_models(tmp_path: Path, capsys) -> None:
    assert main(["run", "sequential_light", "--models", "tiny", "-q", "hi", "-o", str(tmp_path / "no" / "dir" / "a.jsonl")]) == 2
    assert "--output" in capsys.readouterr().err


def test_question_ids_are_unique_across_options_and_file(tmp_path: Path) -> None:
    from recmas_graph.cli.runtime import read_questions

    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "a"}\n{"question": "b", "id": "x"}\n')
    assert [it["id"] for it in read_questions(f)] == ["", "x"]


def test_missing_weights_file_fails_before_models_load(tmp_path: Path, registry, monkeypatch) -> None:
    import recmas_graph.models as models

    spec = resolve_topology("sequential_light").model_dump(mode="json")
    spec["edges"][0]["link"]["weights"] = "links/outer_12.safetensors"
    monkeypatch.setattr(models.ModelCache, "get", lambda *a, **k: pytest.fail("a model was loaded"))
    from recmas_graph.spec import parse_topology

    with pytest.raises(RunError, match=r"edge planner->critic: .*outer_12\.safetensors"):
        RecursiveSystem.build(parse_topology(spec), tiny=True, base_dir=tmp_path, registry=registry)


def test_global_device_overrides_the_spec_device() -> None:
    spec = resolve_topology("sequential_light").model_dump(mode="json")
    spec["agents"][0]["device"] = "cuda:3"
    from recmas_graph.spec import parse_topology

    placement = resolve_placement(parse_topology(spec), "cpu")
    assert set(placement.values()) == {"cpu"}


def test_untrained_links_match_the_token_embedding_scale(registry) -> None:
    from recmas_graph.executor import embedding_rms

    system = RecursiveSystem.build(resolve_topology("sequential_light_mini"), tiny=True, registry=registry)
    agent = system.agents["critic"]
    rms = embedding_rms(agent.loaded)
    x = torch.randn(2, 5, agent.hidden_size) * 3
    out = agent.inner_link(x)
    assert abs(float(out.pow(2).mean().sqrt()) / rms - 1) < 0.05
    msg = system.latent_message(0, torch.randn(1, 4, system.agents["planner"].hidden_size))
    assert abs(float(msg.pow(2).mean().sqrt()) / rms - 1) < 0.05
