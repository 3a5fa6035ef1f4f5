"""Where the time goes: trace rows carry their start, recmas trace summary totals them, plot draws them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import recmas_graph as rg
from recmas_graph.cli import main
from recmas_graph.eval.traces import read_trace, summarise, timeline
from recmas_graph.runtime.agent.decoding import GenerationOptions


def test_passes_start_in_order_and_do_not_overlap_on_one_device(registry) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0)
    result = system.run(["What is 2 + 3?"], rounds=2, latent_steps=2,
                        generation=GenerationOptions(max_new_tokens=3, do_sample=False))
    trace = result.trace
    assert trace[-1].start_s + trace[-1].wall_s <= result.wall_s + 1e-3 and trace[-1].start_s > trace[0].start_s
    for before, after in zip(trace, trace[1:]):
        assert after.start_s >= before.start_s + before.wall_s - 1e-6  # one CPU: one pass after another


def _trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "trace.jsonl"
    assert main(["run", "sequential_light", "--models", "tiny", "-q", "What is 2 + 3?", "-q", "Hi", "-q", "3 * 3?",
                 "--batch-size", "2", "--rounds", "2", "--latent-steps", "2", "--max-new-tokens", "3", "--greedy",
                 "--trace", str(path)]) == 0
    return path


def test_summary_and_timeline_of_a_trace_file(tmp_path: Path, capsys, registry) -> None:
    path = _trace_file(tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    passes = read_trace(path)
    assert len(passes) == len(rows) and {p.batch for p in passes} == {0, 1}
    first_end = max(p.at_s + p.wall_s for p in passes if p.batch == 0)
    assert min(p.at_s for p in passes if p.batch == 1) >= first_end - 1e-9  # batches laid one after another
    totals = summarise(passes)
    assert sum(t.passes for t in totals) == len(rows)
    assert abs(sum(t.wall_s for t in totals) - sum(r["wall_s"] for r in rows)) < 1e-9
    assert abs(sum(t.share for t in totals) - 1.0) < 1e-9
    assert [t.wall_s for t in totals] == sorted((t.wall_s for t in totals), reverse=True)
    decode = next(t for t in totals if t.action == "decode")
    assert decode.agent == "solver" and decode.generated_tokens == sum(r["generated_tokens"] for r in rows
                                                                       if r["action"] == "decode")
    assert [name for name, _ in timeline(passes)] == ["cpu / planner", "cpu / critic", "cpu / solver"]
    capsys.readouterr()
    assert main(["trace", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "planner" in out and "decode" in out and "2 batch(es)" in out and "(reused)" in out
    assert sum(t.reused_tokens for t in totals) == sum(r["reused_tokens"] for r in rows) > 0  # later rounds reuse
    pytest.importorskip("matplotlib")
    assert main(["trace", "plot", str(path), "-o", str(tmp_path / "timeline.png")]) == 0
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_traces_without_start_times_lay_passes_end_to_end(tmp_path: Path, capsys) -> None:
    path = tmp_path / "old.jsonl"
    rows = [{"batch": 0, "agent": "a", "round": 1, "action": "latent", "wall_s": 0.5},
            {"batch": 0, "agent": "b", "round": 1, "action": "decode", "wall_s": 0.25},
            {"batch": 1, "agent": "a", "round": 1, "action": "latent", "wall_s": 0.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [p.at_s for p in read_trace(path)] == [0.0, 0.5, 0.75]
    assert main(["trace", "plot", str(path), "-o", str(tmp_path / "t.gif")]) == 2
    assert "png, .svg or .pdf" in capsys.readouterr().err


def test_a_broken_trace_line_is_named(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"agent": "a", "round": 1, "action": "latent", "wall_s": 0.1}\n{"agent": "b"}\n')
    assert main(["trace", "summary", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 2 of t.jsonl" in err and "round" in err
    path.write_text('{"agent": "a", "round": "one", "action": "latent", "wall_s": 0.1}\n')
    assert main(["trace", "summary", str(path)]) == 2
    assert "line 1 of t.jsonl" in capsys.readouterr().err
    assert main(["trace", "summary", str(tmp_path / "none.jsonl")]) == 2
