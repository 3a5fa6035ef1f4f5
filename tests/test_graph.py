"""Graph compilation: every structural validation rule, and the unrolled, pruned schedule of waves."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from recmas_graph.errors import TopologyError
from recmas_graph.topology import Schedule, compile_topology, validate_topology
from recmas_graph.plugins.manager import Registry, resolve_topology
from recmas_graph.topology.spec import TopologyBuilder, TopologySpec, parse_topology, read_topology_file

TOPOLOGIES_DIR = Path(__file__).resolve().parent.parent / "topologies"
TOPOLOGY_FILES = sorted(TOPOLOGIES_DIR.glob("*.json"))


def _sequential() -> dict[str, Any]:
    """sequential_light as plain JSON data (planner -> critic -> solver ~> planner)."""
    return json.loads((TOPOLOGIES_DIR / "sequential_light.json").read_text())


def _topology_error(change: Callable[[dict[str, Any]], None], registry: Registry) -> str:
    """Apply ``change`` to sequential_light and return the TopologyError message."""
    data = copy.deepcopy(_sequential())
    change(data)
    with pytest.raises(TopologyError) as info:
        compile_topology(parse_topology(data), registry)
    return str(info.value)


def _diamond(rounds: int = 3) -> TopologySpec:
    """a -> b, a -> c, b -> d, c -> d, with recursion edges d ~> a and d ~> b."""
    return (TopologyBuilder("diamond", rounds=rounds, latent_steps=4)
            .agent("a", role="planner", model="tiny:llama")
            .agent("b", role="critic", model="tiny:qwen2")
            .agent("c", role="critic", model="tiny:gemma3")
            .agent("d", role="solver", model="tiny:llama")
            .edge("a", "b", slot="plan")
            .edge("a", "c", slot="plan")
            .edge("b", "d", slot="left")
            .edge("c", "d", slot="right")
            .recursion("d", "a", slot="feedback")
            .recursion("d", "b", slot="feedback")
            .output("d")
            .build())


def _names(schedule: Schedule) -> list[list[str]]:
    """Waves as lists of ``agent+round:action`` strings."""
    return [[str(p) for p in wave] for wave in schedule.waves]


def _assert_every_message_is_consumed(schedule: Schedule) -> None:
    """Every non-decode pass feeds some later pass; every input comes from an earlier wave."""
    wave_of = {(p.agent, p.round): i for i, wave in enumerate(schedule.waves) for p in wave}
    consumed: set[tuple[str, int]] = set()
    for i, wave in enumerate(schedule.waves):
        for p in wave:
            for item in p.inputs:
                assert item.edge.split("->")[1].split(":")[0] == p.agent
                source = (item.source, item.round)
                assert source in wave_of, f"{p} reads {source} which is not scheduled"
                assert wave_of[source] < i, f"{p} reads {source} from a later wave"
                consumed.add(source)
    decodes = [p for p in schedule.passes if p.action == "decode"]
    assert len(decodes) == 1 and decodes[0].round == schedule.rounds and schedule.final == decodes[0]
    for p in schedule.passes:
        if p.action != "decode":
            assert (p.agent, p.round) in consumed, f"{p} produces a message nobody consumes"
            readers = {i.edge for q in schedule.passes for i in q.inputs if (i.source, i.round) == (p.agent, p.round)}
            assert set(p.outputs) == readers, f"{p} sends on {p.outputs}, read on {readers}"


# --- shipped topologies -----------------------------------------------------------------------


@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: p.stem)
def test_shipped_topology_validates_and_plans(path: Path, registry: Registry) -> None:
    spec = read_topology_file(path)
    compiled = compile_topology(spec, registry)
    for rounds in (1, 2, spec.rounds, 5):
        _assert_every_message_is_consumed(compiled.schedule(rounds))


def test_validate_topology_checks_against_the_given_registry(registry: Registry) -> None:
    validate_topology(resolve_topology("sequential_light", registry), registry)


# --- schedules ----------------------------------------------------------------------------------


def test_sequential_light_schedule(registry: Registry) -> None:
    schedule = compile_topology(resolve_topology("sequential_light", registry), registry).schedule()
    assert _names(schedule) == [
        ["planner1:latent"], ["critic1:latent"], ["solver1:latent"],
        ["planner2:latent"], ["critic2:latent"], ["solver2:latent"],
        ["planner3:latent"], ["critic3:latent"], ["solver3:decode"],
    ]
    latent = [f"{p.agent}{p.round}" for p in schedule.passes if p.action == "latent"]
    assert latent == ["planner1", "critic1", "solver1", "planner2", "critic2", "solver2", "planner3", "critic3"]
    assert [f"{p.agent}{p.round}" for p in schedule.passes if p.action == "decode"] == ["solver3"]


def test_sequential_inputs_follow_round_semantics(registry: Registry) -> None:
    passes = {(p.agent, p.round): p for p in compile_topology(resolve_topology("sequential_light", registry),
                                                               registry).schedule().passes}
    assert passes[("planner", 1)].inputs == ()  # no feedback in round 1: the slot is left out
    (item,) = passes[("planner", 2)].inputs
    assert (item.edge, item.source, item.slot, item.round) == ("solver->planner", "solver", "feedback", 1)
    (item,) = passes[("critic", 3)].inputs
    assert (item.source, item.round) == ("planner", 3)
    assert passes[("planner", 2)].outputs == ("planner->critic",)


def test_mixture_schedule(registry: Registry) -> None:
    schedule = compile_topology(resolve_topology("mixture", registry), registry).schedule()
    experts = ["math", "code", "science"]
    expected: list[list[str]] = []
    for r in (1, 2):
        expected += [[f"{e}{r}:latent" for e in experts], [f"summarizer{r}:latent"]]
    expected += [[f"{e}3:latent" for e in experts], ["summarizer3:decode"]]
    assert _names(schedule) == expected
    summarizer = [p for p in schedule.passes if p.agent == "summarizer"]
    assert [p.action for p in summarizer] == ["latent", "latent", "decode"]  # no decoding every round
    summary_inputs = {i.slot for i in summarizer[-1].inputs}
    assert summary_inputs == {"math", "code", "science"}


def test_rounds_override_and_single_round(registry: Registry) -> None:
    compiled = compile_topology(resolve_topology("sequential_light", registry), registry)
    assert _names(compiled.schedule(1)) == [["planner1:latent"], ["critic1:latent"], ["solver1:decode"]]
    assert compiled.schedule(5).rounds == 5
    assert len(compiled.schedule(5).passes) == 3 * 5


def test_rounds_below_one_in_schedule(registry: Registry) -> None:
    compiled = compile_topology(resolve_topology("sequential_light", registry), registry)
    with pytest.raises(TopologyError, match="rounds must be at least 1"):
        compiled.schedule(0)


def test_pruning_drops_passes_whose_consumer_is_pruned(registry: Registry) -> None:
    # a ~> b ~> out: out3 needs b2, which needs a1. b1 feeds only out2, which nobody needs.
    spec = (TopologyBuilder("chain", rounds=3)
            .agent("a", role="planner", model="tiny:llama")
            .agent("b", role="critic", model="tiny:llama")
            .agent("out", role="solver", model="tiny:llama")
            .recursion("a", "b", slot="plan")
            .recursion("b", "out", slot="critique")
            .output("out")
            .build())
    schedule = compile_topology(spec, registry).schedule()
    assert _names(schedule) == [["a1:latent"], ["b2:latent"], ["out3:decode"]]
    _assert_every_message_is_consumed(schedule)


def test_pruning_in_last_round(registry: Registry) -> None:
    # helper feeds the solver only through a recursion edge: its last-round pass would be wasted.
    spec = (TopologyBuilder("late", rounds=2)
            .agent("helper", role="critic", model="tiny:llama")
            .agent("solver", role="solver", model="tiny:llama")
            .recursion("helper", "solver", slot="critique")
            .output("solver")
            .build())
    assert _names(compile_topology(spec, registry).schedule()) == [["helper1:latent"], ["solver2:decode"]]


def test_reviewer_skips_the_last_round(registry: Registry) -> None:
    # the reviewer's notes only reach the planner in the next round: nothing needs them after round R - 1.
    spec = (TopologyBuilder("review", rounds=3)
            .agent("planner", role="planner", model="tiny:llama")
            .agent("solver", role="solver", model="tiny:llama")
            .agent("reviewer", role="critic", model="tiny:llama")
            .edge("planner", "solver", slot="plan")
            .recursion("solver", "planner", slot="feedback")
            .edge("solver", "reviewer", slot="attempt")
            .recursion("reviewer", "planner", slot="notes")
            .output("solver")
            .build())
    schedule = compile_topology(spec, registry).schedule()
    assert [f"{p.agent}{p.round}" for p in schedule.passes] == [
        "planner1", "solver1", "reviewer1", "planner2", "solver2", "reviewer2", "planner3", "solver3"]
    _assert_every_message_is_consumed(schedule)


def test_single_agent_topology(registry: Registry) -> None:
    spec = TopologyBuilder("solo", rounds=3).agent("x", role="assistant", model="tiny:llama").output("x").build()
    assert _names(compile_topology(spec, registry).schedule()) == [["x3:decode"]]


def test_text_and_mixed_media_actions(registry: Registry) -> None:
    spec = (TopologyBuilder("media", rounds=1)
            .agent("p", role="planner", model="tiny:llama")
            .agent("c", role="critic", model="tiny:llama")
            .agent("s", role="solver", model="tiny:llama")
            .edge("p", "c", slot="plan")
            .edge("p", "s", slot="plan", medium="text")
            .edge("c", "s", slot="critique", medium="text")
            .output("s")
            .build())
    actions = {p.agent: p.action for p in compile_topology(spec, registry).schedule().passes}
    assert actions == {"p": "latent+text", "c": "text", "s": "decode"}


def test_all_text_baseline(registry: Registry) -> None:
    data = _sequential()
    for edge in data["edges"]:
        edge["medium"] = "text"
    passes = compile_topology(parse_topology(data), registry).schedule().passes
    assert [p.action for p in passes] == ["text"] * 8 + ["decode"]
    assert not any(p.latent for p in passes) and passes[0].text


def test_records_for_json(registry: Registry) -> None:
    records = compile_topology(resolve_topology("sequential_light", registry), registry).schedule(1).as_records()
    assert [{k: r[k] for k in ("wave", "agent", "round", "action")} for r in records] == [
        {"wave": 1, "agent": "planner", "round": 1, "action": "latent"},
        {"wave": 2, "agent": "critic", "round": 1, "action": "latent"},
        {"wave": 3, "agent": "solver", "round": 1, "action": "decode"},
    ]
    assert records[0]["inputs"] == [] and records[0]["outputs"] == ["planner->critic"]
    assert records[1]["inputs"] == [{"edge": "planner->critic", "slot": "plan", "source": "planner", "round": 1,
                                     "medium": "latent"}]
    json.dumps(records)


# --- a custom topology needs no code change ------------------------------------------------------


def test_custom_diamond_from_builder(registry: Registry) -> None:
    compiled = compile_topology(_diamond(), registry)
    assert compiled.agent_order() == ["a", "b", "c", "d"]
    schedule = compiled.schedule()
    expected: list[list[str]] = []
    for r in (1, 2, 3):
        last = "decode" if r == 3 else "latent"
        expected += [[f"a{r}:latent"], [f"b{r}:latent", f"c{r}:latent"], [f"d{r}:{last}"]]
    assert _names(schedule) == expected
    _assert_every_message_is_consumed(schedule)
    b2 = next(p for p in schedule.passes if (p.agent, p.round) == ("b", 2))
    assert sorted((i.source, i.round) for i in b2.inputs) == [("a", 2), ("d", 1)]


def test_custom_diamond_from_json_file(tmp_path: Path, registry: Registry) -> None:
    data = {
        "name": "diamond",
        "rounds": 3,
        "latent_steps": 4,
        "agents": [
            {"name": "a", "role": "planner", "model": "tiny:llama"},
            {"name": "b", "role": "critic", "model": "tiny:qwen2"},
            {"name": "c", "role": "critic", "model": "tiny:gemma3"},
            {"name": "d", "role": "solver", "model": "tiny:llama"},
        ],
        "edges": [
            {"source": "a", "target": "b", "slot": "plan"},
            {"source": "a", "target": "c", "slot": "plan"},
            {"source": "b", "target": "d", "slot": "left"},
            {"source": "c", "target": "d", "slot": "right"},
            {"source": "d", "target": "a", "slot": "feedback", "recursion": True},
            {"source": "d", "target": "b", "slot": "feedback", "recursion": True},
        ],
        "output": "d",
    }
    path = tmp_path / "diamond.json"
    path.write_text(json.dumps(data, indent=2))
    spec = resolve_topology(str(path), registry)
    assert spec == _diamond()
    assert compile_topology(spec, registry).schedule() == compile_topology(_diamond(), registry).schedule()


def test_forward_and_incoming_helpers(registry: Registry) -> None:
    compiled = compile_topology(_diamond(), registry)
    assert [e.label for e in compiled.incoming("b")] == ["a->b", "d~>b"]
    assert [e.label for e in compiled.outgoing("d")] == ["d~>a", "d~>b"]
    assert compiled.forward_graph.number_of_edges() == 4
    assert compiled.graph.number_of_edges() == 6


def test_parallel_edges_between_the_same_agents(registry: Registry) -> None:
    spec = (TopologyBuilder("twice", rounds=1)
            .agent("a", role="planner", model="tiny:llama")
            .agent("b", role="solver", model="tiny:llama")
            .edge("a", "b", slot="plan")
            .edge("a", "b", slot="extra", medium="text")
            .output("b")
            .build())
    passes = compile_topology(spec, registry).schedule().passes
    assert passes[0].action == "latent+text" and len(passes[1].inputs) == 2


# --- validation rules -------------------------------------------------------------------------


def test_unknown_agent_in_edge_target(registry: Registry) -> None:
    message = _topology_error(lambda d: d["edges"][0].update(target="judge"), registry)
    assert "edge 0 (planner->judge)" in message and "target 'judge' is not an agent" in message
    assert "planner, critic, solver" in message


def test_unknown_agent_in_edge_source(registry: Registry) -> None:
    message = _topology_error(lambda d: d["edges"][2].update(source="oracle"), registry)
    assert "edge 2 (oracle~>planner)" in message and "source 'oracle' is not an agent" in message


def test_unknown_output(registry: Registry) -> None:
    message = _topology_error(lambda d: d.update(output="judge"), registry)
    assert message.startswith("output: 'judge' is not an agent")
    assert "use one of the agents" in message


def test_duplicate_agent_names(registry: Registry) -> None:
    message = _topology_error(lambda d: d["agents"].append(copy.deepcopy(d["agents"][1])), registry)
    assert "agent 'critic': duplicate agent name" in message and "unique" in message


def test_forward_cycle_names_cycle_and_suggests_recursion(registry: Registry) -> None:
    message = _topology_error(lambda d: d["edges"][2].update(recursion=False), registry)
    assert "forward edges form a cycle" in message
    assert "planner -> critic -> solver -> planner" in message
    assert '"recursion": true' in message


def test_forward_self_loop(registry: Registry) -> None:
    def change(d: dict[str, Any]) -> None:
        d["edges"].append({"source": "critic", "target": "critic", "slot": "self"})

    message = _topology_error(change, registry)
    assert "cycle: critic -> critic" in message and '"recursion": true' in message


def test_recursion_self_loop_is_fine(registry: Registry) -> None:
    data = _sequential()
    data["edges"].append({"source": "critic", "target": "critic", "slot": "memory", "recursion": True})
    schedule = compile_topology(parse_topology(data), registry).schedule()
    _assert_every_message_is_consumed(schedule)


def test_agent_that_cannot_influence_output(registry: Registry) -> None:
    def change(d: dict[str, Any]) -> None:
        d["agents"].append({"name": "lonely", "role": "critic", "model": "tiny:llama"})
        d["edges"].append({"source": "solver", "target": "lonely", "slot": "plan"})

    message = _topology_error(change, registry)
    assert "agent 'lonely': cannot influence the output agent 'solver'" in message
    assert "add an edge from it towards 'solver'" in message


def test_two_edges_into_same_slot(registry: Registry) -> None:
    def change(d: dict[str, Any]) -> None:
        d["edges"].append({"source": "planner", "target": "solver", "slot": "critique"})

    message = _topology_error(change, registry)
    assert "two edges deliver into slot 'critique' of agent 'solver'" in message
    assert "critic->solver and planner->solver" in message
    assert '"slot"' in message


def test_default_slots_collide_on_parallel_edges(registry: Registry) -> None:
    def change(d: dict[str, Any]) -> None:
        d["edges"].append({"source": "planner", "target": "critic"})
        d["edges"].append({"source": "planner", "target": "critic", "medium": "text"})

    assert "slot 'planner' of agent 'critic'" in _topology_error(change, registry)


def test_unknown_role(registry: Registry) -> None:
    message = _topology_error(lambda d: d["agents"][0].update(role="wizard"), registry)
    assert "agent 'planner': unknown role 'wizard'" in message
    assert "summarizer" in message and "plugin" in message


def test_unknown_link_type_on_edge(registry: Registry) -> None:
    message = _topology_error(lambda d: d["edges"][0].update(link={"type": "magic"}), registry)
    assert "edge 0 (planner->critic) link: unknown link type 'magic'" in message
    assert "outer_ln_res" in message


def test_unknown_inner_link_type(registry: Registry) -> None:
    message = _topology_error(lambda d: d["agents"][2].update(inner_link={"type": "magic"}), registry)
    assert "agent 'solver' inner_link: unknown link type 'magic'" in message
    assert "inner_ln_res" in message


def test_inner_link_given_outer_only_type(registry: Registry) -> None:
    message = _topology_error(lambda d: d["agents"][0].update(inner_link={"type": "outer_ln_res"}), registry)
    assert "agent 'planner' inner_link" in message
    assert "'outer_ln_res' is an outer link, not an inner link" in message


def test_edge_link_given_inner_only_type(registry: Registry) -> None:
    message = _topology_error(lambda d: d["edges"][1].update(link={"type": "inner_ln_res"}), registry)
    assert "edge 1 (critic->solver) link" in message and "is an inner link, not an outer link" in message


def test_any_kind_link_fits_both_places(registry: Registry) -> None:
    data = _sequential()
    data["agents"][0]["inner_link"] = {"type": "identity"}
    data["edges"][0]["link"] = {"type": "identity"}
    compile_topology(parse_topology(data), registry)


def test_unknown_medium_is_caught_even_without_pydantic(registry: Registry) -> None:
    spec = parse_topology(_sequential())
    edges = [e.model_copy(update={"medium": "telepathy"}) if i == 0 else e for i, e in enumerate(spec.edges)]
    broken = spec.model_copy(update={"edges": edges})
    with pytest.raises(TopologyError, match="unknown medium 'telepathy'"):
        compile_topology(broken, registry)


# --- everything that needs no weights, reported at once -------------------------------------------------


def test_every_problem_is_reported_at_once(registry: Registry) -> None:
    data = _sequential()
    data["agents"][0]["role"] = "plannr"
    data["agents"][1]["model"] = "tiny:mamba"
    data["agents"][2]["inner_link"] = {"type": "inner_ln_res", "options": {"hidden_mul": 2}}
    data["edges"][1]["link"] = {"type": "outer_linear"}
    with pytest.raises(TopologyError) as err:
        compile_topology(parse_topology(data), registry)
    problems = err.value.problems
    assert len(problems) == 4
    assert [p.culprit for p in problems] == ["agent 'planner'", "agent 'critic' model", "agent 'solver' inner_link",
                                             "edge 1 (critic->solver) link"]
    text = str(err.value)
    assert "4 problems" in text and "did you mean 'planner'" in text and "tiny:llama" in text
    assert "unknown option 'hidden_mul'" in text and "did you mean 'hidden_mult'" in text


def test_a_single_problem_keeps_its_own_culprit_and_hint(registry: Registry) -> None:
    data = _sequential()
    data["edges"][0]["link"] = {"type": "outer_ln_res", "options": {"init": "zero_branch", "widht": 3}}
    with pytest.raises(TopologyError) as err:
        compile_topology(parse_topology(data), registry)
    assert err.value.culprit == "edge 0 (planner->critic) link"
    assert "unknown option 'widht'" in err.value.message and "hidden_mult, init" in (err.value.hint or "")


@pytest.mark.parametrize("model,needle", [
    ("tiny:llamma", "unknown tiny model family 'llamma'"),
    ("pkg:smollm3-135m", "smollm3-135m"),
    ("./no/such/folder", "no such folder"),
    ("foo:bar", "unknown model source prefix 'foo'"),
])
def test_unknown_model_references_of_known_sources_are_caught(model: str, needle: str, registry: Registry) -> None:
    data = _sequential()
    data["agents"][1]["model"] = model
    with pytest.raises(TopologyError, match="agent 'critic' model") as err:
        compile_topology(parse_topology(data), registry)
    assert needle in str(err.value)


def test_hub_ids_are_left_to_the_loader(registry: Registry) -> None:
    data = _sequential()
    data["agents"][1]["model"] = "someone/Some-Model-1B"  # may be in the local HF cache: checked when it loads
    compile_topology(parse_topology(data), registry)


def test_link_options_of_a_plugin_link_type_come_from_its_signature() -> None:
    from recmas_graph.plugins.hookspecs import hookimpl
    from recmas_graph.topology.catalog import LinkType

    def make(in_dim: int, out_dim: int, *, scale: float = 1.0):  # pragma: no cover - never built here
        raise AssertionError

    class Links:
        @hookimpl
        def recmas_link_types(self):
            return [LinkType("scaled", "outer", make, "test")]

    reg = Registry.create(plugins=[Links()], load_entrypoints=False)
    data = _sequential()
    data["edges"][0]["link"] = {"type": "scaled", "options": {"scale": 2.0}}
    compile_topology(parse_topology(data), reg)
    data["edges"][0]["link"]["options"] = {"scael": 2.0}
    with pytest.raises(TopologyError, match="unknown option 'scael'"):
        compile_topology(parse_topology(data), reg)
