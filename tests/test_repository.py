"""The repository's contract with newcomers and CI: the README's commands and .ci/run agree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```\n(.+?)\n```", text)
    assert match, f"README.md has no {marker} block"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert _readme_command("test-command") in ci_lines


def test_readme_has_exactly_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count("bash scripts/setup.sh") == 2
    main = _readme_command("main-command")
    # the main job compares the shipped trained _mini system with random links and its baselines on
    # packaged ARC-Easy, offline
    assert ("recmas compare sequential_light_mini_trained sequential_light_mini sequential_light_mini_trained:single "
            "sequential_light_mini_trained:text --dataset arc_easy") in main
    assert "--models" not in main and "hf:" not in main


def test_readme_main_command_parses_and_runs(tmp_path: Path, registry, capsys) -> None:
    """The main job's own arguments, shrunk to a tiny run (later options win): every flag exists."""
    from recmas_graph.cli import main

    import json

    words = _readme_command("main-command").split("&&")[1].split()
    assert words[0].endswith("recmas")
    # the shipped links fit the packaged models only: the tiny run takes the same topology on random links
    trained = "sequential_light_mini_trained"
    data = json.loads((ROOT / "topologies" / f"{trained}.json").read_text(encoding="utf-8"))
    for link in [a["inner_link"] for a in data["agents"]] + [e["link"] for e in data["edges"]]:
        assert link["weights"], "every link of the shipped system is trained"
        link["weights"] = None
    copy = tmp_path / f"{trained}.json"
    copy.write_text(json.dumps(data), encoding="utf-8")
    args = [w.replace(trained, str(copy)) for w in words[1:]] + ["--models", "tiny", "--limit", "2", "--rounds", "1", "--latent-steps", "1",
                        "--max-new-tokens", "2", "--text-message-tokens", "2", "--out", str(tmp_path / "demo")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "compare.png" in out
    rows = json.loads((tmp_path / "demo" / "compare.json").read_text(encoding="utf-8"))
    assert [r["system"] for r in rows] == [trained, "sequential_light_mini", f"{copy}:single", f"{copy}:text"]


def test_the_package_layers_hold() -> None:
    # import-linter's contract in pyproject.toml: each layer imports only those below it
    import shutil
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("lint-imports")
    command = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_tables_fit_80_columns_with_every_name_whole(tmp_path: Path, capsys, monkeypatch) -> None:
    from recmas_graph.cli import console, main

    monkeypatch.setattr(console, "_width", 80)
    trace = tmp_path / "t.jsonl"
    assert main(["run", "sequential_light", "--models", "tiny", "-q", "hi", "--rounds", "1", "--latent-steps", "1",
                 "--max-new-tokens", "2", "--trace", str(trace)]) == 0
    capsys.readouterr()
    for args, names in ((["trace", "summary", str(trace)], ["planner", "critic", "solver", "(reused)", "latent"]),
                        (["plugins"], ["recmas_graph.plugins.builtin", "recmas_graph.eval.plugin", "model_sources"]),
                        (["assets", "list", "--no-verify"], ["pkg:smollm2-135m-instruct", "pkg:gemma3-270m"])):
        assert main(args) == 0
        out = capsys.readouterr().out
        assert max(len(line) for line in out.splitlines()) <= 80, args
        assert "…" not in out and all(name in out for name in names), (args, out)


def test_the_public_api_type_checks() -> None:
    # mypy on the files listed in pyproject.toml ([tool.mypy]): entry points, spec, compiled topology,
    # options, system, results, registry
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
