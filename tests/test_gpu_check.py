"""benchmarks/gpu_check.py stays runnable between the rare GPU sessions: its CPU check (--quick) runs
every part and records a status and figures for each, in one process and, for one part, the way a
GPU run does it (each part in its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PARTS = ["models", "gpu_tests", "rollout", "decode", "latent_text", "scaling", "memory", "equivalence"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_quick_gpu_check_records_every_part(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    done = _run("--out", str(out), "--work", str(work), "--total", "400")
    tail = done.stdout[-4000:] + done.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    assert list(report["parts"]) == PARTS, tail
    for name, part in report["parts"].items():
        assert part["status"] == "ok", f"{name}: {part.get('error')}\n{part.get('traceback', '')}\n{tail}"
        assert part["figures"] and part["seconds"] >= 0 and part["budget_s"] > 0, name
    assert done.returncode == 0, tail
    env = report["environment"]
    assert report["quick"] is True and env["device"] == "cpu" and env["torch"] and "torch_cuda" in env
    f = {name: part["figures"] for name, part in report["parts"].items()}
    assert set(f["models"]["models"]) == {"qwen3-1.7b", "llama-3.2-1b", "qwen2.5-math-1.5b", "gemma3-270m",
                                          "smollm2-135m"}
    assert f["gpu_tests"]["files"] == ["tests/test_executor.py"]
    assert f["gpu_tests"]["passed"] + f["gpu_tests"]["skipped"] >= 2 and not f["gpu_tests"]["failed"]
    assert [r["m"] for r in f["rollout"]["rows"]] == [16, 48, 80]
    assert all(r["rel_err"] < 1e-4 and r["cached_s"] > 0 for r in f["rollout"]["rows"])
    assert [run["batch"] for run in f["decode"]["runs"]] == [1, 2]
    assert all(run["same_greedy_text"] and run["greedy"]["ratio"] > 0 for run in f["decode"]["runs"])
    assert [r["rounds"] for r in f["latent_text"]["rows"]] == [1, 2, 3]
    assert all(r["text_tokens"] > r["latent_tokens"] for r in f["latent_text"]["rows"])
    assert [r["batch"] for r in f["scaling"]["batch"]] == [1, 2, 4]
    modes = f["memory"]["modes"]
    assert f["memory"]["same_answers"] is True and modes["low-memory"]["loads"] > 0 and modes["normal"]["loads"] is None
    pairs = {c["pair"]: c for c in f["equivalence"]["comparisons"]}
    assert pairs["cpu float32 vs cpu float32"]["identical_answers"] == 1.0
    assert pairs["cpu float32 vs cpu float32"]["max_abs_diff"] == 0.0
    assert 0 < pairs["cpu float32 vs cpu bfloat16"]["max_abs_diff"] < 1.0
    md = (out / "gpu_check.md").read_text(encoding="utf-8")
    assert all(f"## {name}:" in md for name in PARTS) and "| 80 |" in md
    assert "part equivalence: ok" in (out / "gpu_check.log").read_text(encoding="utf-8")

    # the way a GPU run goes: each part in its own process (the models built above are reused through
    # --work, and what the models part found reaches the next part), stopped at its budget
    out2 = tmp_path / "out2"
    done = _run("--out", str(out2), "--work", str(work), "--isolate", "--parts", "memory", "--budget", "memory=0.5")
    parts = json.loads((out2 / "gpu_check.json").read_text(encoding="utf-8"))["parts"]
    assert list(parts) == ["models", "memory"], done.stdout[-3000:]
    assert parts["models"]["status"] == "ok" and parts["models"]["isolated"] is True
    assert parts["models"]["figures"]["models"]["qwen3-1.7b"]["reused"] is True
    assert parts["memory"]["status"] == "timeout" and "budget of 0.5 s" in parts["memory"]["error"]
    assert done.returncode == 1  # not every part was ok
