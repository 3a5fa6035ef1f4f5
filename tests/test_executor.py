"""The system: compile -> build -> run, schedules executed as planned, messages between rounds, the
differentiable path, decoding against HF generate, placement, backends and the run CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import recmas_graph as rg
from recmas_graph import RunError, TopologyBuilder
from recmas_graph.cli import main
from recmas_graph.plugins import Registry, hookimpl, resolve_topology
from recmas_graph.runtime.execution.backends import InProcessRunner, PassRequest, RunSettings
from recmas_graph.runtime.agent.decoding import GenerationOptions
from recmas_graph.runtime.links.build import embedding_rms
from recmas_graph.runtime.links.modules import InnerLnRes, OuterLnRes
from recmas_graph.runtime.execution.messages import MessageStore
from recmas_graph.runtime.memory.placement import resolve_placement
from recmas_graph.runtime.sources.loaded import ModelCache
from recmas_graph.runtime.sources.tiny import tiny_counterpart
from recmas_graph.runtime.system import RecursiveSystem
from recmas_graph.topology.roles import slot_marker
from recmas_graph.topology.spec import parse_topology
from _builtin import TINY_BUILDABLE

GREEDY = GenerationOptions(max_new_tokens=6, do_sample=False)
BUILTIN = TINY_BUILDABLE
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def _build(name_or_spec, registry: Registry, cache: ModelCache | None = None, **kwargs) -> RecursiveSystem:
    return registry.compile(name_or_spec).build(models="tiny", model_cache=cache, **kwargs)


# ------------------------------------------------------------------------------ compile -> build -> run


def test_the_three_stage_api_snippet_runs(registry: Registry) -> None:
    compiled = rg.compile("sequential_light")
    system = compiled.build(models="tiny", seed=0)
    result = system.run(["What is 2 + 3?"], greedy=True, max_new_tokens=32)
    assert isinstance(system, torch.nn.Module) and isinstance(system, rg.RecursiveSystem)
    assert len(result.answers) == 1 and isinstance(result.answers[0], str)
    assert [(r.agent, r.round, r.action) for r in result.trace][-1] == ("solver", 3, "decode")
    assert system.compiled.spec.agents[0].model == "tiny:qwen2"  # the compiled topology that runs
    assert compiled.spec.agents[0].model == "Qwen/Qwen3-1.7B"  # ... derived, the original untouched


def test_compiling_builtins_imports_no_torch() -> None:
    code = ("import sys, recmas_graph as rg\n"
            "for name in rg.default_registry().topologies: rg.compile(name).schedule()\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_compiled_topology_does_not_follow_later_spec_changes(registry: Registry) -> None:
    spec = resolve_topology("distillation", registry)
    compiled = rg.compile(spec, registry=registry)
    spec.rounds = 7
    assert compiled.spec.rounds == 3 and compiled.schedule().rounds == 3


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_style_runs_tiny_and_executes_its_plan(name: str, cache: ModelCache, registry) -> None:
    system = _build(name, registry, cache)
    result = system.run(["What is 3 + 4?", "Is 9 prime?"], rounds=2, latent_steps=3, generation=GREEDY)
    planned = [(p.agent, p.round, p.action) for p in system.plan(2).passes]
    executed = [(r.agent, r.round, r.action) for r in result.trace]
    assert executed == planned
    assert len(result.answers) == 2
    assert all(r.latent_steps == (3 if "latent" in r.action else 0) for r in result.trace)
    decode = [r for r in result.trace if r.action == "decode"]
    assert len(decode) == 1 and decode[0].generated_tokens == sum(result.generated_tokens)


def test_system_is_a_module_whose_parameters_are_the_links(cache: ModelCache, registry) -> None:
    system = _build("mixture", registry, cache)
    assert set(system.inner_links) == {"math", "code", "science", "summarizer"}
    assert set(system.outer_links) == {"math->summarizer", "code->summarizer", "science->summarizer",
                                       "summarizer->math", "summarizer->code", "summarizer->science"}
    link_params = {id(p) for links in (system.inner_links, system.outer_links) for p in links.parameters()}
    trainable = [p for p in system.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == link_params and trainable
    assert all(k.startswith(("inner_links.", "outer_links.")) for k in system.state_dict())
    assert all(not p.requires_grad for a in system.agents.values() for p in a.model.parameters())


def test_edge_ids_name_the_slot_only_where_two_edges_join_the_same_pair(registry: Registry) -> None:
    spec = (TopologyBuilder("pair", rounds=2, latent_steps=2)
            .agent("a", role="planner", model="tiny:llama").agent("b", role="solver", model="tiny:qwen2")
            .edge("a", "b", slot="plan").edge("a", "b", slot="hint").recursion("b", "a", slot="feedback")
            .output("b").build())
    compiled = rg.compile(spec, registry=registry)
    assert compiled.edge_ids == ("a->b:plan", "a->b:hint", "b->a")
    system = compiled.build()
    assert set(system.outer_links) == {"a->b:plan", "a->b:hint", "b->a"}
    assert len(system.run(["Q?"], greedy=True, max_new_tokens=2).answers) == 1


def test_models_shared_between_agents_naming_the_same_model(registry) -> None:
    local = ModelCache()
    system = _build("deliberation_mini", registry, local)
    assert len(local) == 1
    assert system.agents["reflector"].model is system.agents["toolcaller"].model


def test_inference_runs_without_autograd(cache: ModelCache, registry) -> None:
    modes: list[tuple[bool, bool]] = []

    class Probe:
        @hookimpl
        def recmas_before_pass(self):
            modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))

    reg = Registry.create(plugins=[Probe()], load_entrypoints=False)
    system = _build("distillation", reg, cache)
    system.run(["Q?"], rounds=2, latent_steps=2, generation=GREEDY)
    assert modes and all(inference for inference, _ in modes)
    modes.clear()
    system.answer_loss(["Q?"], ["A."], rounds=2, latent_steps=2)
    assert modes == []  # the loss is not a run: no run hooks


# ------------------------------------------------------------------------------ messages and rounds


def test_latent_message_is_outer_of_inner_of_thoughts(cache: ModelCache, registry) -> None:
    system = _build("sequential_light", registry, cache, seed=5)
    result = system.run(["What is 6 * 7?"], rounds=2, latent_steps=4, generation=GREEDY, keep_messages=True)
    assert {edge for edge, _ in result.messages} == {"planner->critic", "critic->solver", "solver->planner"}
    for (edge_id, src_round), msg in result.messages.items():
        edge = system.compiled.edge(edge_id)
        thoughts = result.thoughts[(edge.source, src_round)]
        src, dst = system.agents[edge.source], system.agents[edge.target]
        inner = InnerLnRes(src.hidden_size)
        inner.load_state_dict(system.inner_links[edge.source].state_dict())
        outer = OuterLnRes(src.hidden_size, dst.hidden_size)
        outer.load_state_dict(system.outer_links[edge_id].state_dict())
        with torch.no_grad():
            expected = outer(inner(thoughts))
        assert msg.shape == (1, 4, dst.hidden_size)
        torch.testing.assert_close(msg, expected, rtol=1e-5, atol=1e-5)


def _pass_request(system: RecursiveSystem, agent: str, round_: int, messages: dict) -> PassRequest:
    step = next(p for p in system.plan(2).passes if (p.agent, p.round) == (agent, round_))
    settings = RunSettings(questions=("What is 6 * 7?",), latent_steps=4, generation=GREEDY, seeds=(0,), keep_thoughts=True)
    return PassRequest(step, settings, messages)


def test_round_two_pass_receives_the_round_one_message(cache: ModelCache, registry) -> None:
    """Perturbing the round-1 feedback changes the round-2 planner; its prompt is the hand-built one."""
    system = _build("sequential_light", registry, cache, seed=3)
    result = system.run(["What is 6 * 7?"], rounds=2, latent_steps=4, generation=GREEDY, keep_messages=True)
    feedback = result.messages[("solver->planner", 1)]  # (1, 4, H_planner)
    runner = InProcessRunner(system)
    with torch.inference_mode():
        same = runner.run_pass(_pass_request(system, "planner", 2, {("solver->planner", 1): feedback}))
        moved = runner.run_pass(_pass_request(system, "planner", 2, {("solver->planner", 1): feedback + 0.5}))
    torch.testing.assert_close(same.thoughts, result.thoughts[("planner", 2)].to(same.thoughts.device))
    assert (same.thoughts - moved.thoughts).abs().max() > 1e-3
    # the prompt the pass was given: the role text with the feedback section, the message spliced in
    planner = system.agents["planner"]
    rendered = planner.render("What is 6 * 7?", "math", ["feedback"], {}, {"feedback": "solver"}, round=2)
    before, after = rendered.split(slot_marker("feedback"))
    assert "This is round 2." in before and "Feedback signal from the previous solver round:" in before
    tok, embed = planner.tokenizer, planner.model.get_input_embeddings()
    by_hand = torch.cat([embed(tok(before, add_special_tokens=False, return_tensors="pt").input_ids[0]), feedback[0],
                         embed(tok(after, add_special_tokens=False, return_tensors="pt").input_ids[0])])
    with torch.inference_mode():
        thoughts = planner.think(_prompt_of(by_hand), 4, system.inner_links["planner"])
    torch.testing.assert_close(thoughts[0], same.thoughts[0], rtol=1e-5, atol=1e-5)


def _prompt_of(embeds: torch.Tensor):
    from recmas_graph.runtime.agent.prompts import left_pad

    return left_pad([embeds])


def test_round_one_has_no_feedback_section(cache: ModelCache, registry) -> None:
    system = _build("sequential_light", registry, cache)
    step = system.plan(2).passes[0]
    assert (step.agent, step.round, step.inputs) == ("planner", 1, ())


def test_message_store_is_plain_data(tmp_path: Path) -> None:
    from recmas_graph.topology import Input

    store = MessageStore({("a->b", 1): 1, ("b->a", 1): 2})
    store.put("a->b", 1, torch.randn(2, 3, 4))
    store.put("b->a", 1, ["text one", "text two"])
    torch.save(store.state(), tmp_path / "store.pt")
    back = MessageStore.from_state(torch.load(tmp_path / "store.pt", weights_only=True))
    torch.testing.assert_close(back.get("a->b", 1), store.get("a->b", 1))
    assert back.get("b->a", 1) == ["text one", "text two"]
    store.release([Input("a->b", "a", 1, "x", "latent")])
    assert ("a->b", 1) not in store and ("b->a", 1) in store


def test_same_seed_same_links_and_answers(cache: ModelCache, registry) -> None:
    runs = []
    for _ in range(2):
        system = _build("distillation", registry, cache, seed=11)
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
    system = registry.compile(spec).build(model_cache=cache)
    assert len(system.outer_links) == 0  # text edges carry no link
    result = system.run(["What is 1 + 1?"], generation=GREEDY, text_message_tokens=5)
    actions = [(r.agent, r.round, r.action) for r in result.trace]
    assert actions == [("planner", 1, "text"), ("solver", 1, "text"), ("planner", 2, "text"), ("solver", 2, "decode")]
    assert all(r.latent_steps == 0 for r in result.trace)
    assert result.trace[0].generated_tokens > 0
    assert set(result.texts) == {("planner->solver", 1), ("solver->planner", 1), ("planner->solver", 2)}


def test_mixed_media_pass_does_both(cache: ModelCache, registry) -> None:
    spec = (TopologyBuilder("mixed", rounds=1, latent_steps=2)
            .agent("a", role="planner", model="tiny:llama")
            .agent("b", role="critic", model="tiny:llama")
            .agent("c", role="solver", model="tiny:gemma3")
            .edge("a", "b", slot="plan").edge("a", "c", slot="plan", medium="text")
            .edge("b", "c", slot="critique").output("c").build())
    system = registry.compile(spec).build(model_cache=cache)
    result = system.run(["Q?"], generation=GREEDY, text_message_tokens=3)
    assert result.trace[0].action == "latent+text"
    assert result.trace[0].latent_steps == 2 and result.trace[0].generated_tokens > 0


# ------------------------------------------------------------------------------ the differentiable path


def test_answer_loss_reaches_every_link_of_a_looped_topology_round_one_included(registry) -> None:
    system = _build("sequential_light", registry)
    loss = system.answer_loss(["What is 2 + 3?", "Name a prime."], ["5", "7 is prime."], rounds=3, latent_steps=3)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    for name, link in {**system.outer_links, **system.inner_links}.items():
        grads = [p.grad for p in link.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert all(p.grad is None for a in system.agents.values() for p in a.model.parameters())


def test_answer_loss_reaches_round_one_through_the_recursion(registry) -> None:
    """Only the round-1 planner pass can change the solver's loss through solver->planner... when R = 2,
    the planner's round-1 inner link still gets a gradient: its thoughts feed everything after."""
    system = _build("sequential_light", registry)
    system.answer_loss(["Q?"], ["A."], rounds=2, latent_steps=2).backward()
    assert system.inner_links["planner"].post_ln.weight.grad.abs().sum() > 0
    assert system.outer_links["solver->planner"].ln_target.weight.grad.abs().sum() > 0


def test_answer_loss_is_the_teacher_forced_cross_entropy(cache: ModelCache, registry) -> None:
    spec = (TopologyBuilder("solo", rounds=1, latent_steps=0).agent("s", role="assistant", model="tiny:llama")
            .output("s").build())
    system = registry.compile(spec).build(model_cache=cache)
    loss = system.answer_loss(["Say hi."], ["hi"])
    agent = system.agents["s"]
    prompt = agent.build_prompts(["Say hi."], "math")
    ids = agent.tokenizer("hi", add_special_tokens=False).input_ids + [agent.tokenizer.eos_token_id]
    with torch.no_grad():
        embeds = torch.cat([prompt.embeds[0], agent.model.get_input_embeddings()(torch.tensor(ids))])[None]
        logits = agent.model(inputs_embeds=embeds).logits[0, prompt.embeds.shape[1] - 1 : -1]
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(ids))
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize("family", ["tiny:llama", "tiny:qwen2", "tiny:gemma3"])
def test_greedy_run_equals_hf_generate(family: str, cache: ModelCache, registry) -> None:
    spec = (TopologyBuilder("solo", rounds=1, latent_steps=0).agent("s", role="assistant", model=family)
            .output("s").build())
    system = registry.compile(spec).build(model_cache=cache)
    questions = ["What is 2 + 3?", "Name a prime number larger than ten, please."]
    result = system.run(questions, greedy=True, max_new_tokens=20)
    agent = system.agents["s"]
    prompt = agent.build_prompts(questions, "math")
    with torch.inference_mode():
        hf = agent.model.generate(inputs_embeds=prompt.embeds, attention_mask=prompt.mask, max_new_tokens=20,
                                  do_sample=False)
    assert result.answers == [agent.tokenizer.decode(row, skip_special_tokens=True) for row in hf.tolist()]


def test_sampled_answer_does_not_depend_on_the_batch(cache: ModelCache, registry) -> None:
    system = _build("distillation", registry, cache)
    options = dict(rounds=1, latent_steps=2, max_new_tokens=10, temperature=1.0, top_p=1.0, top_k=0)
    both = system.run(["first?", "second?"], seeds=[4, 9], **options)
    alone = system.run(["second?"], seeds=[9], **options)
    assert both.answers[1] == alone.answers[0]


def test_run_options_are_checked(cache: ModelCache, registry) -> None:
    system = _build("distillation", registry, cache)
    with pytest.raises(RunError, match="tool_choice"):
        system.run(["Q?"], tool_choice="always")
    with pytest.raises(RunError, match="unknown run option"):
        system.run(["Q?"], max_tokens=3)
    with pytest.raises(RunError, match="list of strings"):
        system.run("Q?")
    with pytest.raises(RunError, match="answers for"):
        system.answer_loss(["Q?"], ["a", "b"])


# ------------------------------------------------------------------------------ placement and dtypes


def test_placement_rules() -> None:
    spec = parse_topology({
        "name": "t", "output": "b", "edges": [{"source": "a", "target": "b"}, {"source": "c", "target": "b"}],
        "agents": [{"name": "a", "role": "planner", "model": "m1"}, {"name": "b", "role": "solver", "model": "m2"},
                   {"name": "c", "role": "critic", "model": "m1"}]})
    assert resolve_placement(spec, None, gpus=0) == {"a": "cpu", "b": "cpu", "c": "cpu"}
    assert resolve_placement(spec, None, gpus=2) == {"a": "cuda:0", "b": "cuda:1", "c": "cuda:0"}
    assert resolve_placement(spec, None, gpus=1) == {"a": "cuda:0", "b": "cuda:0", "c": "cuda:0"}
    assert resolve_placement(spec, {"b": "cuda:1"}, gpus=2)["b"] == "cuda:1"
    assert resolve_placement(spec, "cpu", gpus=2) == {"a": "cpu", "b": "cpu", "c": "cpu"}
    with pytest.raises(RunError, match="unknown agent"):
        resolve_placement(spec, {"nobody": "cpu"})
    with pytest.raises(RunError, match="CUDA is not available"):
        resolve_placement(spec, "cuda:0", gpus=0)


def test_global_device_overrides_the_spec_device(registry) -> None:
    data = resolve_topology("sequential_light", registry).model_dump(mode="json")
    data["agents"][0]["device"] = "cuda:3"
    assert set(resolve_placement(parse_topology(data), "cpu").values()) == {"cpu"}


def test_null_dtype_is_automatic(cache: ModelCache, registry) -> None:
    from recmas_graph.runtime.sources.loaded import auto_dtype, resolve_dtype

    assert resolve_dtype(None, "cpu") == torch.float32
    assert auto_dtype(torch.device("cuda", 0), bf16_supported=True) == torch.bfloat16
    assert auto_dtype(torch.device("cuda", 0), bf16_supported=False) == "auto"
    system = _build("distillation", registry, ModelCache())
    assert {a.dtype for a in system.agents.values()} == {torch.float32}
    data = resolve_topology("distillation", registry).model_dump(mode="json")
    data["agents"][1]["dtype"] = "bfloat16"
    mixed = registry.compile(data).build(models="tiny", model_cache=ModelCache())
    assert mixed.agents["learner"].dtype == torch.bfloat16 and mixed.agents["expert"].dtype == torch.float32
    assert len(mixed.run(["Q?"], rounds=1, latent_steps=2, generation=GREEDY).answers) == 1


def test_tiny_counterparts_follow_the_family() -> None:
    assert tiny_counterpart("meta-llama/Llama-3.2-1B-Instruct") == "tiny:llama"
    assert tiny_counterpart("Qwen/Qwen3.5-4B") == "tiny:qwen2"
    assert tiny_counterpart("google/gemma-3-4b-it") == "tiny:gemma3"
    assert tiny_counterpart("pkg:smollm2-135m-instruct") == "tiny:llama"


def test_unknown_model_override_names_the_agent(registry) -> None:
    with pytest.raises(RunError, match="ghost"):
        registry.compile("sequential_light").build(model={"ghost": "tiny:llama"})
    with pytest.raises(RunError, match="--models"):
        registry.compile("sequential_light").build(models="huge")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_run_matches_the_cpu_answers(registry) -> None:
    cpu = _build("sequential_light", registry, ModelCache(), device="cpu", dtype="float32")
    gpu = _build("sequential_light", registry, ModelCache(), device="cuda", dtype="float32")
    a = cpu.run(["What is 3 + 4?"], rounds=2, latent_steps=3, generation=GREEDY)
    b = gpu.run(["What is 3 + 4?"], rounds=2, latent_steps=3, generation=GREEDY)
    assert all(r.device.startswith("cuda") for r in b.trace) and all(r.peak_mem_bytes > 0 for r in b.trace)
    assert a.answers == b.answers


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_automatic_dtype_is_bf16_where_supported(registry) -> None:
    system = _build("distillation", registry, ModelCache(), device="cuda")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert {a.dtype for a in system.agents.values()} == {expected}


# ------------------------------------------------------------------------------ links without weights


def test_untrained_links_match_the_token_embedding_scale(registry) -> None:
    system = _build("sequential_light_mini", registry)
    agent = system.agents["critic"]
    rms = embedding_rms(agent.loaded)
    x = torch.randn(2, 5, agent.hidden_size) * 3
    with torch.no_grad():
        out = system.inner_links["critic"](x)
        msg = system.latent_message("planner->critic", torch.randn(1, 4, system.agents["planner"].hidden_size))
    assert abs(float(out.pow(2).mean().sqrt()) / rms - 1) < 0.05
    assert abs(float(msg.pow(2).mean().sqrt()) / rms - 1) < 0.05


def test_training_free_outer_link_is_calibrated_on_its_source_and_target(registry) -> None:
    calls: list[tuple[str, str]] = []

    class Recorded(torch.nn.Module):
        def __init__(self, in_dim: int, out_dim: int) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(in_dim, out_dim)

        def forward(self, x):
            return self.proj(x)

        def calibrate(self, source, target=None):
            calls.append((source.ref, target.ref if target is not None else "-"))

    class Links:
        @hookimpl
        def recmas_link_types(self):
            return [rg.LinkType("recorded", "outer", Recorded, "test link")]

    reg = Registry.create(plugins=[Links()], load_entrypoints=False)
    spec = (TopologyBuilder("pair", rounds=1, latent_steps=2).agent("a", role="planner", model="tiny:llama")
            .agent("b", role="solver", model="tiny:gemma3").edge("a", "b", slot="plan", link="recorded")
            .output("b").build())
    reg.compile(spec).build()
    assert calls == [("tiny:llama", "tiny:gemma3")]  # the source model, then the target (not the target twice)


def test_missing_weights_file_fails_before_models_load(tmp_path: Path, registry, monkeypatch) -> None:
    data = resolve_topology("sequential_light", registry).model_dump(mode="json")
    data["edges"][0]["link"]["weights"] = "links/outer_12.safetensors"
    monkeypatch.setattr(ModelCache, "get", lambda *a, **k: pytest.fail("a model was loaded"))
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RunError, match=r"edge planner->critic: .*outer_12\.safetensors"):
        registry.compile(str(path)).build(models="tiny")


def test_wrong_weight_shapes_fail_before_models_load(tmp_path: Path, registry, monkeypatch) -> None:
    from recmas_graph.errors import LinkError
    from recmas_graph.runtime.links.checkpoints import save_link

    save_link(OuterLnRes(10, 12), tmp_path / "links" / "outer.safetensors", "outer_ln_res", 10, 12)
    data = resolve_topology("sequential_light", registry).model_dump(mode="json")
    data["edges"][0]["link"]["weights"] = "links/outer.safetensors"
    (tmp_path / "t.json").write_text(json.dumps(data))
    monkeypatch.setattr(ModelCache, "get", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(LinkError, match="planner->critic"):
        registry.compile(str(tmp_path / "t.json")).build(models="tiny")


# ------------------------------------------------------------------------------ run hooks


def test_run_hooks_receive_the_run_result(cache: ModelCache) -> None:
    seen: dict[str, object] = {}

    class Observer:
        @hookimpl
        def recmas_run_end(self, system, result):
            seen["result"], seen["system"] = result, system

        @hookimpl
        def recmas_agent_built(self, agent):
            seen.setdefault("agents", []).append(agent.name)

    reg = Registry.create(plugins=[Observer()], load_entrypoints=False)
    system = _build("distillation", reg, cache)
    result = system.run(["Q?"], rounds=1, latent_steps=1, generation=GREEDY)
    assert seen["result"] is result and isinstance(result, rg.RunResult) and seen["system"] is system
    assert seen["agents"] == ["expert", "learner"]


# ------------------------------------------------------------------------------ tools


def test_toolcaller_decodes_through_the_tool_loop(registry, monkeypatch) -> None:
    """The toolcaller's answer goes through the tool loop; its calls land in the trace."""
    import recmas_graph.runtime.agent.tooluse as tooluse

    system = _build("deliberation_mini", registry)  # our roles: our tool protocol
    assert system.agents["toolcaller"].tools is not None and system.agents["reflector"].tools is None
    replies = iter(["```python\nprint(6 * 7)\n```\n", "so \\boxed{42}"])
    seen: list[str] = []

    def fake_continue(model, prompter, prompt, continuation, options, **kwargs):
        seen.append(continuation)
        return next(replies), 3

    monkeypatch.setattr(tooluse, "continue_text", fake_continue)
    result = system.run(["What is 6 * 7?"], rounds=1, latent_steps=2, generation=GREEDY)
    decode = result.trace[-1]
    assert decode.tool_calls and decode.tool_calls[0]["name"] == "python"
    assert decode.tool_calls[0]["output"].strip() == "42"
    assert "```output\n42" in result.answers[0] and result.answers[0].endswith("\\boxed{42}")
    assert seen[1].endswith("```output\n42\n```\n")  # the model continued after seeing the result
    assert result.generated_tokens == [6]
    assert "You can call tools" in system.agents["toolcaller"].render("Q", "math", [], {})


def test_reference_deliberation_uses_the_official_tool_protocol(registry, monkeypatch, tmp_path) -> None:
    """<python> / <search> calls, answered in <result> tags; the tool notes are the system prompt."""
    import recmas_graph.runtime.agent.tooluse as tooluse
    from recmas_graph.plugins.reference_roles import DELIBERATION_SYSTEM_PROMPT
    from recmas_graph.tools.retrieve import COLLECTION_ENV

    pytest.importorskip("bm25s")
    corpus = tmp_path / "wiki.jsonl"
    corpus.write_text(json.dumps({"id": "w1", "title": "Paris", "text": "Paris is the capital of France."}) + "\n"
                      + json.dumps({"id": "w2", "title": "Rome", "text": "Rome is the capital of Italy."}) + "\n")
    monkeypatch.setenv(COLLECTION_ENV, str(corpus))
    system = _build("deliberation", registry)
    toolcaller = system.agents["toolcaller"]
    assert toolcaller.prompter.system_prompt == DELIBERATION_SYSTEM_PROMPT
    assert "You can call tools" not in toolcaller.render("Q", "math", [], {})  # no note of ours
    replies = iter(["I compute <python>print(6 * 7)</python>", "then search <search>capital of France</search>",
                    "so \\boxed{42}"])
    seen: list[tuple[str, tuple]] = []

    def fake_continue(model, prompter, prompt, continuation, options, **kwargs):
        seen.append((continuation, options.stop))
        return next(replies), 2

    monkeypatch.setattr(tooluse, "continue_text", fake_continue)
    result = system.run(["What is 6 * 7?"], rounds=1, latent_steps=2, generation=GREEDY)
    answer = result.answers[0]
    assert "<python>print(6 * 7)</python> <result> 42 </result>" in answer
    assert "<search>capital of France</search> <result> Query: capital of France\nResults:\n[1] Paris\nURL: w1\n" \
           "Paris is the capital of France." in answer
    assert answer.endswith("\\boxed{42}") and "</python>" in seen[0][1] and "</search>" in seen[0][1]
    calls = result.trace[-1].tool_calls
    assert [c["name"] for c in calls] == ["python", "retrieve"]


def test_reference_protocol_stops_after_five_calls() -> None:
    from recmas_graph.tools import PythonTool, run_tool_loop
    from recmas_graph.tools.protocols import REFERENCE

    transcript = run_tool_loop(lambda text, stop: "<python>print(1)</python>", [PythonTool()], protocol=REFERENCE)
    assert len(transcript.calls) == 5 and transcript.stopped == "max_calls"
    assert transcript.text.endswith(" <result> [tool limit reached after 5 calls] </result>")
    long = REFERENCE.format_result(REFERENCE.find_call("<python>x</python>", 0, {"python"}),
                                   rg_tool_result("a" * 7000 + "</result>"))
    assert long.startswith(" <result> " + "a" * 6000 + "\n... [truncated 1010 chars]") and "</result>" not in long[:-10]


def rg_tool_result(stdout: str):
    from recmas_graph.tools import ToolResult

    return ToolResult(True, stdout, details={"stdout": stdout, "stderr": "", "exit_code": 0})


@pytest.mark.real
def test_mini_topology_runs_on_packaged_models(registry) -> None:
    system = registry.compile("sequential_light_mini").build()
    hidden = {a.name: a.hidden_size for a in system.agents.values()}
    assert hidden == {"planner": 640, "critic": 576, "solver": 576}
    result = system.run(["What is 12 * 7?"], rounds=2, latent_steps=4, greedy=True, max_new_tokens=16)
    assert result.answers[0].strip()
    assert result.generated_tokens[0] > 0


@pytest.mark.real
def test_deliberation_mini_answers_with_its_python_tool(registry) -> None:
    """On the packaged SmolLM2, the toolcaller writes code, the sandbox runs it, the result is traced."""
    system = registry.compile("deliberation_mini").build(seed=0)
    result = system.run(["Use Python to compute 123456789 * 987654321."], rounds=1, latent_steps=4,
                        generation=GenerationOptions(max_new_tokens=160, do_sample=False), tool_choice="required")
    calls = result.trace[-1].tool_calls
    assert calls, result.answers[0]
    assert calls[0]["name"] == "python" and calls[0]["ok"], calls[0]
    assert str(123456789 * 987654321) in calls[0]["output"]
    assert calls[0]["output"].strip() in result.answers[0]


# ------------------------------------------------------------------------------ CLI


def test_cli_run_tiny_writes_trace_and_answers(tmp_path: Path, capsys, registry) -> None:
    trace, out = tmp_path / "trace.jsonl", tmp_path / "answers.jsonl"
    code = main(["run", "mixture", "--models", "tiny", "-q", "What is 2+2?", "-q", "Is 7 odd?", "--rounds", "2",
                 "--latent-steps", "2", "--max-new-tokens", "4", "--greedy", "--batch-size", "1",
                 "--trace", str(trace), "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "per-stage timing" in printed and "summarizer" in printed
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    plan = registry.compile("mixture").schedule(2).passes
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


def test_batch_failure_keeps_finished_answers_and_names_the_batch(tmp_path: Path, capsys, monkeypatch) -> None:
    calls = {"n": 0}
    original = RecursiveSystem.run

    def flaky(self, questions, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(self, questions, *args, **kwargs)

    monkeypatch.setattr(RecursiveSystem, "run", flaky)
    out = tmp_path / "answers.jsonl"
    code = main(["run", "distillation", "--models", "tiny", "-q", "first?", "-q", "second?", "--batch-size", "1",
                 "--rounds", "1", "--latent-steps", "1", "--max-new-tokens", "2", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert "batch 2 failed" in captured.err and "questions 2" in captured.err and "Traceback" not in captured.err
    assert "first?" in captured.out  # batch 1's answer was printed as it finished
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["1"]


def test_ctrl_c_keeps_the_answers_and_leaves_no_empty_files(tmp_path: Path, capsys, interrupt_run) -> None:
    interrupt_run(at=2)
    out, trace = tmp_path / "answers.jsonl", tmp_path / "trace.jsonl"
    args = ["run", "distillation", "--models", "tiny", "-q", "first?", "-q", "second?", "--batch-size", "1",
            "--rounds", "1", "--latent-steps", "1", "--max-new-tokens", "2"]
    assert main(args + ["-o", str(out), "--trace", str(trace)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "kept 1 of 2" in err and "Traceback" not in err
    assert len(out.read_text().splitlines()) == 1
    interrupt_run(at=1)  # interrupted at the first batch: nothing to keep, no file written
    out2 = tmp_path / "none.jsonl"
    assert main(args + ["-o", str(out2)]) == 130
    assert not out2.exists() and "kept 0 of 2" in capsys.readouterr().err


def test_sigint_in_a_real_process_exits_cleanly(tmp_path: Path) -> None:
    out, questions = tmp_path / "answers.jsonl", tmp_path / "questions.jsonl"
    n = 60  # far more than finish before the interrupt, whatever the machine's speed
    questions.write_text("".join(json.dumps({"question": f"q{i}?"}) + "\n" for i in range(n)))
    proc = subprocess.Popen([sys.executable, "-m", "recmas_graph", "run", "sequential_light", "--models", "tiny",
                             "--questions", str(questions), "--batch-size", "1", "--latent-steps", "50",
                             "--max-new-tokens", "50", "-o", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a test runner started in the background ignores SIGINT, and so would the child
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (out.exists() and out.read_text().strip()):
        time.sleep(0.2)  # interrupt once the first answer is written: mid-run, with finished work to keep
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    kept = out.read_text().splitlines()
    assert 1 <= len(kept) < n and all(json.loads(line)["answer"] is not None for line in kept)


def test_control_characters_in_answers_are_escaped(capsys, monkeypatch) -> None:
    original = RecursiveSystem.run

    def noisy(self, questions, *args, **kwargs):
        result = original(self, questions, *args, **kwargs)
        result.answers = ["bad \x1b[2J clear\x07 and\ttab"]
        return result

    monkeypatch.setattr(RecursiveSystem, "run", noisy)
    assert main(["run", "distillation", "--models", "tiny", "-q", "Q?", "--rounds", "1", "--latent-steps", "1",
                 "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[2J" not in out and "\x07" not in out and "\\x1b[2J" in out and "\\x07" in out
    assert "\\t" not in out and "tab" in out  # tabs are layout, not escaped


def test_unwritable_output_fails_before_loading_models(tmp_path: Path, capsys) -> None:
    assert main(["run", "sequential_light", "--models", "tiny", "-q", "hi", "-o", str(tmp_path / "no" / "dir" / "a.jsonl")]) == 2
    assert "--output" in capsys.readouterr().err


def test_question_ids_are_unique_across_options_and_file(tmp_path: Path) -> None:
    from recmas_graph.cli.runtime import read_questions

    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "a"}\n{"question": "b", "id": "x"}\n')
    assert [it["id"] for it in read_questions(f)] == ["", "x"]


# ------------------------------------------------------------------------------ review regressions


def test_a_forward_cycle_is_reported_with_the_other_problems(registry) -> None:
    from recmas_graph.errors import TopologyError

    data = resolve_topology("sequential_light", registry).model_dump(mode="json")
    data["edges"][2]["recursion"] = False  # planner -> critic -> solver -> planner, all forward
    data["agents"][0]["model"] = "tiny:llamma"
    data["edges"][0]["link"]["options"] = {"hidden_mul": 2}
    with pytest.raises(TopologyError) as err:
        registry.compile(data)
    messages = [p.message for p in err.value.problems]
    assert len(messages) == 3 and any("forward edges form a cycle" in m for m in messages)


def test_slot_names_are_names(registry) -> None:
    from recmas_graph.errors import SpecError

    data = resolve_topology("sequential_light", registry).model_dump(mode="json")
    data["edges"][0]["slot"] = "plan.v1"
    with pytest.raises(SpecError, match="not a valid name"):
        registry.compile(data)


def test_automatic_placement_is_round_robin_over_models() -> None:
    spec = parse_topology({
        "name": "t", "output": "d", "agents": [
            {"name": n, "role": "planner", "model": m, **({"device": "cpu"} if n == "p" else {})}
            for n, m in (("a", "m1"), ("p", "m9"), ("b", "m2"), ("c", "m3"), ("d", "m4"), ("e", "m1"))],
        "edges": [{"source": s, "target": "d"} for s in ("a", "p", "b", "c", "e")]})
    assert resolve_placement(spec, gpus=2) == {"a": "cuda:0", "p": "cpu", "b": "cuda:1", "c": "cuda:0",
                                               "d": "cuda:1", "e": "cuda:0"}


def test_systems_built_or_run_in_inference_mode_still_train(registry) -> None:
    with torch.inference_mode():
        system = _build("distillation", registry, ModelCache())
        loss = system.answer_loss(["Q?"], ["A."], rounds=2, latent_steps=2)
    kept = system.run(["Q?"], rounds=2, latent_steps=2, generation=GREEDY, keep_messages=True)
    assert loss.requires_grad
    loss.backward()
    assert all(p.grad is not None for p in system.outer_links.parameters())
    message = kept.messages[("expert->learner", 1)]
    message.add_(1.0)  # a normal tensor: in-place changes and autograd work
    (message.requires_grad_() * 2).sum().backward()


def test_cached_and_recomputed_rollouts_give_the_same_gradients(registry) -> None:
    grads = []
    for use_cache in (True, False):
        system = _build("sequential_light", registry, ModelCache(), seed=2)
        system.answer_loss(["What is 2 + 3?"], ["5"], rounds=2, latent_steps=3, use_cache=use_cache).backward()
        grads.append(torch.cat([p.grad.flatten() for p in system.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_concurrent_wave_path_matches_the_sequential_one(registry, monkeypatch) -> None:
    """The thread path (passes of one wave on different GPUs) runs here on CPU threads."""
    system = _build("mixture", registry, ModelCache())
    sequential = system.run(["What is 2 + 3?"], rounds=2, latent_steps=2, generation=GREEDY, keep_messages=True)
    monkeypatch.setattr(InProcessRunner, "concurrent", lambda self, requests: len(requests) > 1)
    threaded = system.run(["What is 2 + 3?"], rounds=2, latent_steps=2, generation=GREEDY, keep_messages=True)
    assert threaded.answers == sequential.answers
    for key, msg in sequential.messages.items():
        torch.testing.assert_close(threaded.messages[key], msg)
    loss = system.answer_loss(["Q?"], ["A."], rounds=2, latent_steps=2)  # grad mode reaches the threads
    loss.backward()
    assert all(p.grad is not None for p in system.outer_links.parameters())


def test_null_dtype_resolves_per_device(monkeypatch) -> None:
    from recmas_graph.runtime.sources import loaded

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert loaded.resolve_dtype(None, "cuda:0") == torch.bfloat16
    assert loaded.resolve_dtype(None, "cpu") == torch.float32
    assert loaded.ModelCache.key("tiny:llama", "cuda:0", None) == ("tiny:llama", "cuda:0", "torch.bfloat16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert loaded.resolve_dtype(None, "cuda:0") == "auto"


@pytest.mark.parametrize("name", ["mixture", "mixture_mini"])
def test_latent_passes_sharing_a_model_run_as_one_batch_with_the_same_results(name: str, monkeypatch) -> None:
    import recmas_graph as rg
    from recmas_graph.runtime.execution.backends import InProcessRunner

    system = rg.compile(name).build(models="tiny")
    questions = ["What is 2 + 3?", "Name a prime number.", "Why is the sky blue?"]
    merged_calls: list[list[str]] = []
    run_merged = InProcessRunner.run_merged

    def watch(self, requests):
        merged_calls.append([r.step.agent for r in requests])
        return run_merged(self, requests)

    monkeypatch.setattr(InProcessRunner, "run_merged", watch)
    system.runner.merge = False
    separate = system.run(questions, greedy=True, max_new_tokens=10, latent_steps=4, keep_messages=True)
    assert not merged_calls
    system.runner.merge = True
    merged = system.run(questions, greedy=True, max_new_tokens=10, latent_steps=4, keep_messages=True)
    shared = {}
    for agent in system.agents.values():
        shared.setdefault(id(agent.loaded), []).append(agent.name)
    assert merged_calls and all(len(call) > 1 for call in merged_calls)
    assert all(len({id(system.agents[a].loaded) for a in call}) == 1 for call in merged_calls)  # one model each
    assert merged.answers == separate.answers
    assert [(r.agent, r.round, r.action, r.batch_size) for r in merged.trace] == \
        [(r.agent, r.round, r.action, r.batch_size) for r in separate.trace]
    for key, message in separate.messages.items():
        assert torch.allclose(merged.messages[key], message, atol=1e-5), key
    # the loss (and its gradient through every inner link of the merged passes) is the same
    losses = []
    for merge in (False, True):
        system.runner.merge = merge
        system.zero_grad()
        loss = system.answer_loss(questions, ["5", "2", "light"], latent_steps=2)
        loss.backward()
        losses.append((loss.item(), {n: p.grad.clone() for n, p in system.inner_links.named_parameters()
                                     if p.grad is not None}))
    assert abs(losses[0][0] - losses[1][0]) < 1e-5
    assert losses[0][1].keys() == losses[1][1].keys() and losses[0][1]
    assert all(torch.allclose(losses[0][1][k], losses[1][1][k], atol=1e-5) for k in losses[0][1])
