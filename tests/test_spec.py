"""The topology spec: fields, defaults, JSON round trips, field-level errors and the JSON Schema."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from recmas_graph.errors import SpecError
from recmas_graph.topology import compile_topology
from recmas_graph.plugins.manager import Registry
from recmas_graph.topology.spec import (
    AgentSpec,
    EdgeSpec,
    LinkSpec,
    TopologyBuilder,
    TopologySpec,
    dump_topology,
    parse_topology,
    read_topology_file,
    topology_json_schema,
)

TOPOLOGY_FILES = sorted((Path(__file__).resolve().parent.parent / "topologies").glob("*.json"))


def _pair() -> dict[str, Any]:
    """A small valid topology as plain JSON data."""
    return {
        "name": "pair",
        "rounds": 2,
        "latent_steps": 4,
        "agents": [
            {"name": "a", "role": "planner", "model": "tiny:llama"},
            {"name": "b", "role": "solver", "model": "tiny:qwen2"},
        ],
        "edges": [
            {"source": "a", "target": "b", "slot": "plan"},
            {"source": "b", "target": "a", "slot": "feedback", "recursion": True},
        ],
        "output": "b",
    }


def _spec_error(change: Callable[[dict[str, Any]], None]) -> str:
    """Apply ``change`` to a valid topology and return the SpecError message."""
    data = copy.deepcopy(_pair())
    change(data)
    with pytest.raises(SpecError) as info:
        parse_topology(data, source="pair.json")
    return str(info.value)


def test_shipped_topologies_exist() -> None:
    names = {p.stem for p in TOPOLOGY_FILES}
    assert {"sequential_light", "sequential_scaled", "mixture", "distillation", "deliberation"} <= names


@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: p.stem)
def test_shipped_topology_round_trips(path: Path) -> None:
    spec = read_topology_file(path)
    assert spec.name == path.stem
    assert parse_topology(json.loads(dump_topology(spec))) == spec
    assert json.loads(dump_topology(spec)) == json.loads(path.read_text())  # files are in canonical form


def test_defaults_are_filled_in() -> None:
    spec = parse_topology({"name": "solo", "agents": [{"name": "x", "role": "assistant", "model": "tiny:llama"}],
                           "output": "x"})
    assert (spec.rounds, spec.latent_steps, spec.description, spec.edges) == (3, 32, "", [])
    agent = spec.agents[0]
    assert agent.inner_link == LinkSpec(type="inner_ln_res", weights=None, options={})
    assert (agent.device, agent.dtype, agent.tools) == (None, None, [])


def test_edge_defaults_and_slot_name() -> None:
    edge = EdgeSpec(source="a", target="b")
    assert edge.slot is None and edge.slot_name == "a"
    assert (edge.recursion, edge.medium, edge.link.type) == (False, "latent", "outer_ln_res")
    assert edge.label == "a->b"
    assert EdgeSpec(source="b", target="a", recursion=True).label == "b~>a"


def test_builder_matches_json() -> None:
    built = (TopologyBuilder("pair", rounds=2, latent_steps=4)
             .agent("a", role="planner", model="tiny:llama")
             .agent("b", role="solver", model="tiny:qwen2")
             .edge("a", "b", slot="plan")
             .recursion("b", "a", slot="feedback")
             .output("b")
             .build())
    assert built == parse_topology(_pair())
    assert parse_topology(json.loads(dump_topology(built))) == built


def test_builder_link_options_round_trip(tmp_path: Path) -> None:
    built = (TopologyBuilder("opts", description="with options")
             .agent("a", role="planner", model="tiny:llama", device="cpu", dtype="bfloat16",
                    inner_link={"type": "inner_ln_res", "weights": "a.safetensors", "options": {"hidden": 2}})
             .agent("b", role="solver", model="tiny:qwen2", tools=["python"])
             .edge("a", "b", medium="text", link={"type": "identity", "options": {"scale": 0.5}})
             .output("b")
             .build())
    path = tmp_path / "opts.json"
    dump_topology(built, path)
    again = read_topology_file(path)
    assert again == built
    assert again.agents[0].inner_link.options == {"hidden": 2}
    assert again.edges[0].link.options == {"scale": 0.5}


def test_agent_lookup_and_names() -> None:
    spec = parse_topology(_pair())
    assert spec.agent_names == ["a", "b"]
    assert spec.agent("b").model == "tiny:qwen2"
    with pytest.raises(KeyError):
        spec.agent("zzz")


def test_with_overrides() -> None:
    spec = parse_topology(_pair())
    changed = spec.with_overrides(rounds=5, latent_steps=0)
    assert (changed.rounds, changed.latent_steps) == (5, 0)
    assert spec.rounds == 2  # the original is untouched
    assert spec.with_overrides() == spec


def test_unknown_field_names_field_and_alternatives() -> None:
    message = _spec_error(lambda d: d["agents"][0].update(modle="tiny:llama"))
    assert "agents[0] (a).modle: unknown field" in message
    assert "model" in message.split("fix:")[1]


def test_unknown_top_level_field() -> None:
    message = _spec_error(lambda d: d.update(round=3))
    assert "round: unknown field" in message and "rounds" in message


def test_unknown_field_in_link() -> None:
    message = _spec_error(lambda d: d["edges"][0].update(link={"type": "outer_ln_res", "weight": "x.pt"}))
    assert "edges[0] (a->b).link.weight: unknown field" in message
    assert "weights" in message


def test_missing_field() -> None:
    message = _spec_error(lambda d: d["agents"][1].pop("model"))
    assert "agents[1] (b).model: required field is missing" in message
    assert message.startswith("pair.json:")


def test_missing_output() -> None:
    assert "output: required field is missing" in _spec_error(lambda d: d.pop("output"))


def test_no_agents() -> None:
    assert "agents" in _spec_error(lambda d: d.update(agents=[], edges=[]))


def test_bad_dtype() -> None:
    message = _spec_error(lambda d: d["agents"][0].update(dtype="float8"))
    assert "agents[0] (a).dtype" in message
    assert "unknown dtype 'float8'" in message and "bfloat16" in message


def test_rounds_below_one() -> None:
    message = _spec_error(lambda d: d.update(rounds=0))
    assert "rounds:" in message and "greater than or equal to 1" in message


def test_negative_latent_steps() -> None:
    assert "latent_steps" in _spec_error(lambda d: d.update(latent_steps=-1))


def test_unknown_medium() -> None:
    message = _spec_error(lambda d: d["edges"][0].update(medium="telepathy"))
    assert "edges[0] (a->b).medium: unknown medium 'telepathy'" in message
    assert '"latent" or "text"' in message


def test_bad_agent_name() -> None:
    message = _spec_error(lambda d: d["agents"][0].update(name="my agent"))
    assert "'my agent' is not a valid name" in message


def test_wrong_type() -> None:
    message = _spec_error(lambda d: d["edges"][1].update(recursion="sometimes"))
    assert "edges[1] (b->a).recursion" in message


def test_several_errors_reported_together() -> None:
    message = _spec_error(lambda d: (d["agents"][0].update(modle="x"), d.update(rounds=0)))
    assert "modle" in message and "rounds" in message


def test_not_an_object() -> None:
    with pytest.raises(SpecError, match="must be a JSON object, got list"):
        parse_topology([1, 2], source="x.json")


def test_bad_json_syntax_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "x",\n  "rounds": 3,\n}\n')
    with pytest.raises(SpecError) as info:
        read_topology_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "not valid JSON" in message and "line 4, column 1" in message
    assert "trailing comma" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        read_topology_file(tmp_path / "nope.json")


def test_field_error_in_file_names_the_file(tmp_path: Path) -> None:
    data = _pair()
    data["agents"][0]["modle"] = "x"
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError, match=r"typo\.json: invalid topology"):
        read_topology_file(path)


def test_validate_assignment() -> None:
    agent = AgentSpec(name="a", role="planner", model="tiny:llama")
    with pytest.raises(Exception):
        agent.dtype = "float8"


def test_json_schema_describes_fields() -> None:
    schema = topology_json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert {"name", "agents", "edges", "output", "rounds", "latent_steps"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    json.dumps(schema)  # serialisable


@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: p.stem)
def test_json_schema_accepts_shipped_topologies(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = topology_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(path.read_text()), schema)


def test_json_schema_rejects_unknown_field() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    data = _pair()
    data["agents"][0]["modle"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, topology_json_schema())


def test_spec_is_a_pydantic_model() -> None:
    spec = parse_topology(_pair())
    assert isinstance(spec, TopologySpec)
    assert parse_topology(spec) is spec


def _doc_topologies() -> list[tuple[str, str]]:
    """(doc name, JSON text) of every ```json block in docs/ that holds a topology."""
    found = []
    for doc in sorted((Path(__file__).resolve().parent.parent / "docs").glob("*.md")):
        for i, block in enumerate(re.findall(r"```json\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)):
            if '"agents"' in block:
                found.append((f"{doc.stem}-{i}", block))
    return found


@pytest.mark.parametrize(("doc", "text"), _doc_topologies(), ids=[d for d, _ in _doc_topologies()])
def test_topologies_in_docs_are_valid(doc: str, text: str, registry: Registry) -> None:
    compile_topology(parse_topology(json.loads(text), source=doc), registry)
