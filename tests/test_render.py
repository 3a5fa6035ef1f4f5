"""Diagrams: DOT and Mermaid for every topology, snapshots, image output and missing-Graphviz errors.

Regenerate the DOT snapshots after an intended change with::

    UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest -q tests/test_render.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recmas_graph.topology import render as render_module
from recmas_graph.errors import RecmasError
from recmas_graph.topology.render import FORMATS, RenderError, render, to_dot, to_mermaid
from recmas_graph.topology.spec import TopologyBuilder, TopologySpec, read_topology_file

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_FILES = sorted((ROOT / "topologies").glob("*.json"))
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed (bash scripts/setup.sh --dev)")


def _diamond() -> TopologySpec:
    """A custom topology: a -> b, a -> c, b -> d, c -> d, recursion d ~> a and d ~> b."""
    return (TopologyBuilder("diamond", rounds=2, latent_steps=4)
            .agent("a", role="planner", model="tiny:llama")
            .agent("b", role="critic", model="tiny:qwen2")
            .agent("c", role="critic", model="tiny:gemma3")
            .agent("d", role="solver", model="tiny:llama")
            .edge("a", "b", slot="plan").edge("a", "c", slot="plan")
            .edge("b", "d", slot="left").edge("c", "d", slot="right", medium="text")
            .recursion("d", "a", slot="feedback").recursion("d", "b", slot="feedback")
            .output("d")
            .build())


def _dot_lines(dot: str, prefix: str) -> list[str]:
    """DOT statement lines starting with ``prefix`` (after the indentation)."""
    return [line.strip() for line in dot.splitlines() if line.strip().startswith(prefix)]


# --- every shipped topology ----------------------------------------------------------------------


@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: p.stem)
def test_shipped_topology_renders_dot_and_mermaid(path: Path, tmp_path: Path) -> None:
    spec = read_topology_file(path)
    dot_file = render(spec, tmp_path / f"{spec.name}.dot")
    mmd_file = render(spec, tmp_path / f"{spec.name}.mmd")
    assert dot_file.read_text() == to_dot(spec)
    assert mmd_file.read_text() == to_mermaid(spec)
    for agent in spec.agents:
        assert agent.model in dot_file.read_text() and agent.model in mmd_file.read_text()


@needs_dot
@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: p.stem)
def test_shipped_topology_renders_svg(path: Path, tmp_path: Path) -> None:
    spec = read_topology_file(path)
    svg = render(spec, tmp_path / "out" / f"{spec.name}.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "next round" in svg and spec.output in svg


@needs_dot
def test_png_output(tmp_path: Path) -> None:
    data = render(read_topology_file(ROOT / "topologies" / "mixture.json"), tmp_path / "m.PNG").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")


# --- snapshots -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sequential_light", "mixture"])
def test_dot_snapshot(name: str) -> None:
    dot = to_dot(read_topology_file(ROOT / "topologies" / f"{name}.json"))
    snapshot = SNAPSHOTS / f"{name}.dot"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(dot, encoding="utf-8")
    assert snapshot.exists(), f"missing snapshot {snapshot}; run with UPDATE_SNAPSHOTS=1 to create it"
    assert dot == snapshot.read_text(encoding="utf-8"), (
        f"DOT output of {name} changed; if intended, regenerate with UPDATE_SNAPSHOTS=1"
    )


def test_output_is_deterministic() -> None:
    spec = _diamond()
    assert to_dot(spec) == to_dot(_diamond())
    assert to_mermaid(spec) == to_mermaid(_diamond())


# --- what the diagram shows --------------------------------------------------------------------------


def test_dot_nodes_show_name_role_model_and_highlight_output() -> None:
    dot = to_dot(read_topology_file(ROOT / "topologies" / "sequential_light.json"))
    (planner,) = _dot_lines(dot, "planner [")
    assert r'label="planner\nrole: reference:planner\nmodel: Qwen/Qwen3-1.7B"' in planner
    assert "peripheries" not in planner
    (solver,) = _dot_lines(dot, "solver [")
    assert "solver (output)" in solver
    assert "peripheries=2" in solver and "bold" in solver and "fillcolor" in solver


def test_dot_edges_forward_solid_recursion_dashed() -> None:
    dot = to_dot(read_topology_file(ROOT / "topologies" / "sequential_light.json"))
    (forward,) = _dot_lines(dot, "planner -> critic")
    assert r'label="plan\nouter_ln_res, latent"' in forward and "dashed" not in forward
    (recursion,) = _dot_lines(dot, "solver -> planner")
    assert "style=dashed" in recursion
    assert r'label="feedback (next round)\nouter_ln_res, latent"' in recursion
    assert "constraint=false" in recursion  # the loop back does not distort the forward layout


def test_custom_topology_renders_without_code_change(tmp_path: Path) -> None:
    spec = _diamond()
    dot = to_dot(spec)
    assert len(_dot_lines(dot, "d -> ")) == 2
    assert all("dashed" in line for line in _dot_lines(dot, "d -> "))
    (text_edge,) = _dot_lines(dot, "c -> d")
    assert "right" in text_edge and "text" in text_edge
    mmd = to_mermaid(spec)
    assert mmd.count(" -.->|") == 2 and mmd.count(" -->|") == 4
    assert "class d output" in mmd
    assert render(spec, tmp_path / "d.mmd").exists()


def test_default_slot_and_extras_in_labels() -> None:
    spec = (TopologyBuilder("extras", rounds=1)
            .agent("a", role="planner", model="tiny:llama", inner_link="identity", device="cpu", dtype="float32")
            .agent("b", role="toolcaller", model="tiny:qwen2", tools=["python"])
            .edge("a", "b")
            .output("b")
            .build())
    dot = to_dot(spec)
    assert r'label="a\nouter_ln_res, latent"' in dot  # slot null: the source's name
    assert "inner link: identity" in dot and "device: cpu" in dot and "dtype: float32" in dot
    assert "tools: python" in dot


def test_mermaid_structure() -> None:
    mmd = to_mermaid(read_topology_file(ROOT / "topologies" / "mixture.json"))
    lines = mmd.splitlines()
    assert lines[:4] == ["---", 'title: "mixture (rounds=3, latent steps=32)"', "---", "flowchart LR"]
    assert '    math -->|"math<br/>outer_ln_res, latent"| summarizer' in lines
    assert '    summarizer -.->|"feedback (next round)<br/>outer_ln_res, latent"| code' in lines
    assert "    class summarizer output" in lines
    assert "    linkStyle 3,4,5 stroke:#c0504d,stroke-dasharray:6 4" in lines


def test_mermaid_ids_are_safe_and_unique() -> None:
    spec = (TopologyBuilder("ids", rounds=1)
            .agent("end", role="planner", model='a "quoted" <model>')
            .agent("my-agent", role="critic", model="tiny:llama")
            .agent("my_agent", role="solver", model="tiny:llama")
            .edge("end", "my_agent", slot="plan").edge("my-agent", "my_agent", slot="critique")
            .edge("end", "my-agent", slot="plan")
            .output("my_agent")
            .build())
    mmd = to_mermaid(spec)
    ids = re.findall(r"^    (\S+)\[", mmd, flags=re.M)
    assert len(ids) == len(set(ids)) == 3
    assert "end" not in ids and all(re.fullmatch(r"[A-Za-z0-9_]+", i) for i in ids)
    assert "#quot;quoted#quot; #lt;model#gt;" in mmd and '"quoted"' not in mmd


def test_dot_escapes_quotes_and_backslashes() -> None:
    spec = (TopologyBuilder("esc", rounds=1)
            .agent("a", role="planner", model='C:\\models\\"x"').agent("b", role="solver", model="tiny:llama")
            .edge("a", "b").output("b").build())
    (node,) = _dot_lines(to_dot(spec), "a [")
    assert r'model: C:\\models\\\"x\""' in node


@needs_dot
def test_dot_accepts_escaped_labels(tmp_path: Path) -> None:
    spec = (TopologyBuilder("esc-name", rounds=1)
            .agent("a-1", role="planner", model='C:\\models\\"x"').agent("b", role="solver", model="tiny:llama")
            .edge("a-1", "b").output("b").build())
    assert "<svg" in render(spec, tmp_path / "esc.svg").read_text()


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["diagram.txt", "diagram", "diagram.jpeg"])
def test_unknown_extension_lists_supported(name: str, tmp_path: Path) -> None:
    with pytest.raises(RenderError) as info:
        render(_diamond(), tmp_path / name)
    message = str(info.value)
    assert name in message and ".dot, .svg, .png, .mmd" in message
    assert not (tmp_path / name).exists()


def test_render_error_is_a_recmas_error() -> None:
    assert issubclass(RenderError, RecmasError)
    assert set(FORMATS) == {".dot", ".svg", ".png", ".mmd"}


@pytest.mark.parametrize("ext", [".svg", ".png"])
def test_missing_dot_for_images(ext: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_module.shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(RenderError) as info:
        render(_diamond(), tmp_path / f"d{ext}")
    message = str(info.value)
    assert "Graphviz 'dot'" in message
    assert "apt-get install graphviz" in message and "brew install graphviz" in message
    assert not (tmp_path / f"d{ext}").exists()


def test_missing_dot_on_path_still_writes_dot_and_mermaid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert render(_diamond(), tmp_path / "d.dot").read_text().startswith("digraph diamond {")
    assert render(_diamond(), tmp_path / "d.mmd").read_text().startswith("---\n")
    with pytest.raises(RenderError, match="apt-get install graphviz"):
        render(_diamond(), tmp_path / "d.svg")


def test_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RenderError, match="cannot write the diagram"):
        render(_diamond(), blocker / "d.dot")


def test_creates_parent_folders(tmp_path: Path) -> None:
    path = render(_diamond(), tmp_path / "a" / "b" / "d.dot")
    assert path.is_file()


def test_imports_without_torch() -> None:
    code = ("import sys; import recmas_graph.topology.render, recmas_graph.topology, recmas_graph.plugins; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
