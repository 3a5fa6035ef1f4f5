"""The topology commands of ``recmas``: topologies, validate, plan, render, schema, errors and --help."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from recmas_graph.cli import main
from recmas_graph.errors import RecmasError, SpecError, TopologyError
from recmas_graph.plugins.manager import Registry

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_FILES = sorted((ROOT / "topologies").glob("*.json"))
HAS_DOT = shutil.which("dot") is not None
COMMANDS = ["topologies", "validate", "plan", "render", "schema"]


@pytest.fixture(autouse=True)
def _fresh_registry(registry: Registry) -> Registry:
    """Every CLI test runs on a fresh built-in registry."""
    return registry


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``recmas ARGS`` in-process; return (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _sequential() -> dict[str, Any]:
    return json.loads((ROOT / "topologies" / "sequential_light.json").read_text())


def _write(tmp_path: Path, data: Any, name: str = "topo.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


# --- topologies ------------------------------------------------------------------------------------


def test_topologies_lists_every_shipped_topology(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "topologies")
    assert code == 0 and err == ""
    for path in TOPOLOGY_FILES:
        assert path.stem in out
    assert "Registered topologies" in out and "description" in out


def test_topologies_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "topologies", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["name"] for r in rows] == sorted(p.stem for p in TOPOLOGY_FILES)
    mixture = next(r for r in rows if r["name"] == "mixture")
    assert mixture["agents"] == 4 and mixture["output"] == "summarizer" and mixture["description"]


# --- validate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: p.stem)
def test_validate_shipped_by_name_and_path(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for ref in (path.stem, str(path)):
        code, out, err = _run(capsys, "validate", ref)
        assert code == 0, err
        assert out.startswith(f"OK {path.stem}:")


def test_validate_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "validate", "sequential_light")
    summary = " ".join(out.split())
    assert code == 0
    assert "3 agents (planner, critic, solver)" in summary
    assert "3 edges (2 forward, 1 recursion" in summary
    assert "3 rounds" in summary and "output solver" in summary


# --- plan -------------------------------------------------------------------------------------------


def test_plan_sequential_light_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "plan", "sequential_light", "--json")
    records = json.loads(out)
    assert code == 0
    latent = [f"{r['agent']}{r['round']}" for r in records if r["action"] == "latent"]
    decode = [f"{r['agent']}{r['round']}" for r in records if r["action"] == "decode"]
    assert latent == ["planner1", "critic1", "solver1", "planner2", "critic2", "solver2", "planner3", "critic3"]
    assert decode == ["solver3"]
    assert [r["wave"] for r in records] == list(range(1, 10))
    assert set(records[0]) == {"wave", "agent", "round", "action", "inputs", "outputs"}
    planner2 = next(r for r in records if (r["agent"], r["round"]) == ("planner", 2))
    assert planner2["inputs"] == [{"edge": "solver->planner", "slot": "feedback", "source": "solver", "round": 1,
                                   "medium": "latent"}]
    assert planner2["outputs"] == ["planner->critic"]


def test_plan_mixture_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "plan", "mixture", "--json")
    records = json.loads(out)
    assert code == 0
    experts = ["math", "code", "science"]
    for r in (1, 2):
        assert [x["agent"] for x in records if x["round"] == r and x["action"] == "latent"] == experts + ["summarizer"]
    assert [x["agent"] for x in records if x["round"] == 3 and x["action"] == "latent"] == experts
    assert [(x["agent"], x["round"]) for x in records if x["action"] == "decode"] == [("summarizer", 3)]
    assert len(records) == 12
    assert len({x["wave"] for x in records if x["round"] == 1 and x["agent"] in experts}) == 1  # one wave


def test_plan_rounds_override(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "plan", "sequential_light", "--rounds", "1", "--json")
    assert code == 0
    assert [(r["agent"], r["action"]) for r in json.loads(out)] == [
        ("planner", "latent"), ("critic", "latent"), ("solver", "decode")]
    code, out, _ = _run(capsys, "plan", "sequential_light", "-r", "4", "--json")
    assert code == 0 and len(json.loads(out)) == 12


def test_plan_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "plan", "mixture")
    assert code == 0
    for word in ("wave", "agent", "round", "action", "inputs", "summarizer", "decode", "feedback<-summarizer1"):
        assert word in out
    assert "11 latent, 1 decode" in out


@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: p.stem)
def test_plan_every_shipped_topology(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "plan", path.stem, "--json")
    records = json.loads(out)
    assert code == 0
    assert [r["action"] for r in records].count("decode") == 1 and records[-1]["action"] == "decode"


# --- render ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("ext", [".dot", ".mmd", ".svg"])
def test_render_every_shipped_topology(path: Path, ext: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    if ext == ".svg" and not HAS_DOT:
        pytest.skip("Graphviz 'dot' is not installed")
    target = tmp_path / f"{path.stem}{ext}"
    code, out, err = _run(capsys, "render", path.stem, "-o", str(target))
    assert code == 0, err
    assert target.stat().st_size > 0 and "wrote" in out


def test_render_unknown_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "render", "mixture", "--output", str(tmp_path / "m.txt"))
    assert code == 2
    assert "m.txt" in err and ".dot, .svg, .png, .mmd" in err and "Traceback" not in err


def test_render_without_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = _run(capsys, "render", "mixture", "-o", str(tmp_path / "m.svg"))
    assert code == 2 and "apt-get install graphviz" in err and "brew install graphviz" in err
    code, _, _ = _run(capsys, "render", "mixture", "-o", str(tmp_path / "m.dot"))
    assert code == 0


# --- custom topology -----------------------------------------------------------------------------------


def test_custom_diamond_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = {
        "name": "diamond", "rounds": 2,
        "agents": [{"name": n, "role": r, "model": "tiny:llama"}
                   for n, r in [("a", "planner"), ("b", "critic"), ("c", "critic"), ("d", "solver")]],
        "edges": [
            {"source": "a", "target": "b", "slot": "plan"}, {"source": "a", "target": "c", "slot": "plan"},
            {"source": "b", "target": "d", "slot": "left"}, {"source": "c", "target": "d", "slot": "right"},
            {"source": "d", "target": "a", "slot": "feedback", "recursion": True},
            {"source": "d", "target": "b", "slot": "feedback", "recursion": True},
        ],
        "output": "d",
    }
    path = _write(tmp_path, data, "diamond.json")
    assert _run(capsys, "validate", str(path))[0] == 0
    code, out, _ = _run(capsys, "plan", str(path), "--json")
    assert code == 0
    waves: dict[int, list[str]] = {}
    for r in json.loads(out):
        waves.setdefault(r["wave"], []).append(f"{r['agent']}{r['round']}")
    assert list(waves.values()) == [["a1"], ["b1", "c1"], ["d1"], ["a2"], ["b2", "c2"], ["d2"]]
    assert _run(capsys, "render", str(path), "-o", str(tmp_path / "d.mmd"))[0] == 0


# --- schema -----------------------------------------------------------------------------------------


def test_schema_validates_shipped_topologies(capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    code, out, _ = _run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in TOPOLOGY_FILES:
        jsonschema.validate(json.loads(path.read_text()), schema)
    bad = _sequential()
    bad["agents"][0]["modle"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_schema_to_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "topology.schema.json"
    code, out, _ = _run(capsys, "schema", "-o", str(target))
    assert code == 0 and "wrote" in out
    assert json.loads(target.read_text())["title"] == "recmas_graph topology"


def test_schema_unwritable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "schema", "-o", str(tmp_path / "missing" / "s.json"))
    assert code == 2 and "cannot write the schema" in err and "Traceback" not in err


# --- errors -----------------------------------------------------------------------------------------


def _malformed(tmp_path: Path) -> Path:
    data = _sequential()
    data["agents"][1]["modle"] = data["agents"][1].pop("model")
    return _write(tmp_path, data, "typo.json")


@pytest.mark.parametrize("command", ["validate", "plan", "render"])
def test_malformed_file_exits_2_naming_culprit(command: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = _malformed(tmp_path)
    extra = ["-o", str(tmp_path / "x.dot")] if command == "render" else []
    code, out, err = _run(capsys, command, str(path), *extra)
    assert code == 2 and out == ""
    assert "typo.json" in err and "agents[1] (critic).modle: unknown field" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["edges"][0].update(target="judge"), "target 'judge' is not an agent"),
        (lambda d: d.update(output="judge"), "output: 'judge' is not an agent"),
        (lambda d: d["agents"].append(copy.deepcopy(d["agents"][0])), "agent 'planner': duplicate agent name"),
        (lambda d: d["edges"][2].update(recursion=False), "planner -> critic -> solver -> planner"),
        (lambda d: d["agents"][0].update(role="wizard"), "unknown role 'wizard'"),
        (lambda d: d["edges"][0].update(link={"type": "magic"}), "unknown link type 'magic'"),
        (lambda d: d["edges"][0].update(medium="pigeon"), "unknown medium 'pigeon'"),
        (lambda d: d["agents"][0].update(dtype="float8"), "unknown dtype 'float8'"),
        (lambda d: d.update(rounds=0), "rounds"),
    ],
    ids=["edge-agent", "output", "duplicate", "cycle", "role", "link", "medium", "dtype", "rounds"],
)
def test_invalid_topologies_exit_2(change: Any, expected: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = _sequential()
    change(data)
    code, _, err = _run(capsys, "validate", str(_write(tmp_path, data)))
    assert code == 2
    assert expected in " ".join(err.split()) and "Traceback" not in err


def test_bad_json_syntax_exits_2_with_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, '{\n  "name": "x",\n}\n', "broken.json")
    code, _, err = _run(capsys, "plan", str(path))
    assert code == 2 and "broken.json" in err and "line 3, column 1" in err


def test_unknown_topology_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "plan", "no_such_topology")
    assert code == 2 and "no_such_topology" in err and "sequential_light" in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "validate", str(tmp_path / "nope.json"))
    assert code == 2 and "nope.json" in err and "file not found" in err


def test_traceback_flag_reraises(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="modle"):
        main(["--traceback", "validate", str(_malformed(tmp_path))])
    data = _sequential()
    data["edges"][2]["recursion"] = False
    with pytest.raises(TopologyError, match="cycle"):
        main(["--traceback", "plan", str(_write(tmp_path, data, "cycle.json"))])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan"], "Missing argument 'TOPOLOGY'"),
        (["plan", "mixture", "--rounds", "0"], "--rounds"),
        (["plan", "mixture", "--rounds", "many"], "--rounds"),
        (["plan", "mixture", "--bogus"], "No such option: --bogus"),
        (["render", "mixture"], "Missing option '--output'"),
        (["no-such-command"], "No such command"),
        (["--traceback", "plan"], "Missing argument 'TOPOLOGY'"),
    ],
)
def test_usage_errors_exit_2(args: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, *args)
    assert code == 2 and expected in err and "Traceback" not in err


# --- help ---------------------------------------------------------------------------------------------


def test_root_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out
    assert "--traceback" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, command, "--help")
    assert code == 0
    assert f"recmas {command}" in out and "Traceback" not in out


# --- end to end through the console script -------------------------------------------------------------


def _subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECMAS_DISABLE_PLUGINS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "recmas_graph", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_end_to_end_exit_codes(tmp_path: Path) -> None:
    path = _malformed(tmp_path)
    result = _subprocess("validate", str(path))
    assert result.returncode == 2
    assert "typo.json" in result.stderr and "modle" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    result = _subprocess("--traceback", "validate", str(path))
    assert result.returncode != 0 and "Traceback" in result.stderr and "SpecError" in result.stderr
    result = _subprocess("plan")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = _subprocess("plan", "sequential_light", "--json")
    assert result.returncode == 0 and len(json.loads(result.stdout)) == 9


# --- CLI polish ---------------------------------------------------------------------------------------


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    import recmas_graph

    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.strip() == f"recmas_graph {recmas_graph.__version__}"


def test_traceback_is_accepted_after_the_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = _write(tmp_path, {"name": "x"})
    code, _, err = _run(capsys, "validate", str(bad))
    assert code == 2 and "Traceback" not in err
    for args in (("validate", str(bad), "--traceback"), ("--traceback", "validate", str(bad))):
        with pytest.raises(RecmasError):  # --traceback re-raises, wherever it is given
            main(list(args))


def test_on_off_flags_are_shown_as_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ([], ["run"], ["plan"], ["plugins"], ["topologies"]):
        code, out, _ = _run(capsys, *command, "--help")
        assert code == 0 and "<bool>" not in out, command
    _, out, _ = _run(capsys, "run", "--help")
    assert "--greedy" in out and "<int>" in out  # value options keep their type


def _long_names_topology(tmp_path: Path) -> Path:
    data = {"name": "long_names_here", "rounds": 2, "latent_steps": 1, "output": "final_answer_writer",
            "agents": [{"name": "the_careful_planner", "role": "planner", "model": "tiny:llama"},
                       {"name": "final_answer_writer", "role": "solver", "model": "tiny:qwen2"}],
            "edges": [{"source": "the_careful_planner", "target": "final_answer_writer", "slot": "plan"},
                      {"source": "final_answer_writer", "target": "the_careful_planner", "slot": "feedback",
                       "recursion": True}]}
    return _write(tmp_path, data)


def test_tables_fit_80_columns_without_cutting_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from recmas_graph.cli import console

    assert console.width == 80  # captured output: rich's default width
    path = _long_names_topology(tmp_path)
    outputs = {
        "topologies": _run(capsys, "topologies")[1],
        "plan": _run(capsys, "plan", str(path))[1],
        "plan mixture": _run(capsys, "plan", "mixture")[1],
        "plugins": _run(capsys, "plugins")[1],
        "run": _run(capsys, "run", str(path), "--models", "tiny", "-q", "Q?", "--max-new-tokens", "2", "--greedy")[1],
    }
    for what, out in outputs.items():
        assert max(len(line) for line in out.splitlines()) <= 80, what
    names = {"topologies": ["sequential_scaled_mini", "deliberation_mini"], "plan": ["the_careful_planner",
             "final_answer_writer"], "plan mixture": ["summarizer"], "plugins": ["recmas_graph.plugins.builtin"],
             "run": ["the_careful_planner", "final_answer_writer"]}
    for what, expected in names.items():
        for name in expected:
            assert name in outputs[what], (what, name)


def test_validate_reports_every_problem_at_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _sequential()
    data["agents"][0]["model"] = "tiny:llamma"
    data["agents"][1]["model"] = "pkg:smollm3"
    data["edges"][0]["link"] = {"type": "outer_ln_res", "options": {"hiden_mult": 2}}
    data["agents"][2]["role"] = "solverr"
    code, _, err = _run(capsys, "validate", str(_write(tmp_path, data)))
    assert code == 2 and "4 problems" in err
    for needle in ("agent 'planner' model", "unknown tiny model family 'llamma'", "agent 'critic' model", "smollm3",
                   "unknown option 'hiden_mult'", "did you mean 'hidden_mult'", "unknown role 'solverr'"):
        assert needle in err, needle


def test_validate_checks_link_weight_shapes_without_loading(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from recmas_graph.runtime.links.checkpoints import save_link
    from recmas_graph.runtime.links.modules import OuterLnRes
    from recmas_graph.runtime.sources.loaded import ModelCache

    monkeypatch.setattr(ModelCache, "get", lambda *a, **k: pytest.fail("a model was loaded"))
    data = _sequential()
    for agent in data["agents"]:
        agent["model"] = "tiny:llama"  # hidden size 64
    save_link(OuterLnRes(64, 64), tmp_path / "ok.safetensors", "outer_ln_res", 64, 64)
    save_link(OuterLnRes(64, 32), tmp_path / "bad.safetensors", "outer_ln_res", 64, 32)
    data["edges"][0]["link"] = {"type": "outer_ln_res", "weights": "ok.safetensors"}
    assert _run(capsys, "validate", str(_write(tmp_path, data)))[0] == 0
    data["edges"][0]["link"]["weights"] = "bad.safetensors"
    code, _, err = _run(capsys, "validate", str(_write(tmp_path, data)))
    assert code == 2 and "edge planner->critic" in err and "(32" in err
