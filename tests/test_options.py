"""One RunOptions object from the command line to the pass runner, and the flags declared once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main

from recmas_graph import RunError, TopologyBuilder
from recmas_graph.cli import app, main
from recmas_graph.cli.options import BUILD_FLAGS, RUN_FLAGS
from recmas_graph.runtime.agent.decoding import GenerationOptions
from recmas_graph.runtime.options import RUN_OPTION_FIELDS, RunOptions


def _flags(command: str) -> set[str]:
    import recmas_graph.cli.evaluate  # noqa: F401  (commands add themselves to the app when imported)
    import recmas_graph.cli.runtime  # noqa: F401

    click_app = typer.main.get_command(app)
    found = click_app.commands[command]  # type: ignore[attr-defined]
    return {name for param in found.params for name in [*param.opts, *param.secondary_opts] if name.startswith("--")}


def _declared(flags: dict) -> set[str]:
    # typer.Option("--a/--no-a", ...) inside Annotated keeps its first declaration as ``default``
    infos = [annotation.__metadata__[0] for annotation, _ in flags.values()]
    return {name for info in infos for decl in (info.default, *info.param_decls) for name in decl.split("/")
            if name.startswith("--")}


def test_run_eval_and_compare_take_the_same_run_and_build_flags() -> None:
    shared = _declared(RUN_FLAGS) | _declared(BUILD_FLAGS)
    assert {"--text-message-tokens", "--tool-choice", "--min-p", "--reuse-prefix", "--no-reuse-prefix",
            "--placement", "--low-memory"} <= shared
    run, evaluate, compare = _flags("run"), _flags("eval"), _flags("compare")
    for name, flags in (("run", run), ("eval", evaluate), ("compare", compare)):
        assert shared <= flags, f"recmas {name} lacks {sorted(shared - flags)}"
    # every run option eval accepts, run accepts too (eval's own are about datasets and records)
    own = {"--dataset", "--out", "--limit", "--split", "--shuffle", "--field", "--overwrite", "--retry", "--no-retry",
           "--metric", "--workers", "--bucket", "--no-bucket", "--baselines", "--scoring",
           "--samples", "--judge"}  # draws per question and the judge: how the records are made and scored
    assert evaluate - own <= run


def test_every_run_option_a_user_sets_has_one_flag() -> None:
    assert set(RUN_FLAGS) == set(RUN_OPTION_FIELDS) - {"use_cache"}  # use_cache: a check of the cache, not a knob


def test_run_options_merge_validate_and_name_the_culprit() -> None:
    base = RunOptions(task="choice", latent_steps=4)
    merged = RunOptions.of(base, generation={"greedy": True, "max_new_tokens": 8}, rounds=None, text_message_tokens=16)
    assert (merged.task, merged.latent_steps, merged.greedy, merged.max_new_tokens, merged.rounds,
            merged.text_message_tokens) == ("choice", 4, True, 8, None, 16)
    assert merged.resolve_generation() == GenerationOptions(max_new_tokens=8, do_sample=False)
    with pytest.raises(RunError, match="unknown run option.*max_tokens"):
        RunOptions.of(max_tokens=3)
    with pytest.raises(RunError, match="tool_choice"):
        RunOptions(tool_choice="always")
    with pytest.raises(RunError, match="latent_steps"):
        RunOptions(latent_steps=-1)
    with pytest.raises(RunError, match="top_p"):
        RunOptions(top_p=2.0)
    with pytest.raises(RunError, match="unknown task"):
        RunOptions(task="poetry")
    with pytest.raises(Exception):
        base.task = "math"  # type: ignore[misc]  # frozen
    assert RunOptions(stop="###").stop == ("###",)
    whole = RunOptions(generation=GenerationOptions(max_new_tokens=5, do_sample=False), max_new_tokens=7)
    assert whole.resolve_generation().max_new_tokens == 7  # the flat fields go on top of a whole GenerationOptions


def test_one_options_object_gives_what_the_keywords_give(registry) -> None:
    system = registry.compile("distillation").build(models="tiny")
    options = RunOptions(rounds=1, latent_steps=2, greedy=True, max_new_tokens=4)
    assert (system.run(["What is 2 + 3?"], options).answers
            == system.run(["What is 2 + 3?"], rounds=1, latent_steps=2, greedy=True, max_new_tokens=4).answers)
    loss = system.answer_loss(["What is 2 + 3?"], ["5"], options, grad=False)
    assert float(loss) == pytest.approx(float(system.answer_loss(["What is 2 + 3?"], ["5"], rounds=1, latent_steps=2,
                                                                 grad=False)))


def test_recmas_run_shortens_text_messages(tmp_path: Path, capsys) -> None:
    # a topology with text edges: recmas run had no --text-message-tokens, so every message took 256 tokens
    spec = (TopologyBuilder("textmas", rounds=1, latent_steps=1)
            .agent("planner", role="planner", model="tiny:llama")
            .agent("solver", role="solver", model="tiny:qwen2")
            .edge("planner", "solver", slot="plan", medium="text")
            .output("solver").build())
    path = tmp_path / "textmas.json"
    path.write_text(spec.model_dump_json(), encoding="utf-8")
    trace = tmp_path / "trace.jsonl"
    assert main(["run", str(path), "-q", "What is 1 + 1?", "--greedy", "--max-new-tokens", "2",
                 "--text-message-tokens", "3", "--trace", str(trace)]) == 0
    rows = [json.loads(line) for line in trace.read_text(encoding="utf-8").splitlines()]
    text_pass = next(r for r in rows if r["agent"] == "planner")
    assert 0 < text_pass["generated_tokens"] <= 3
    assert "question 1" in capsys.readouterr().out


def test_bad_run_flags_are_refused_before_any_model_loads(capsys) -> None:
    assert main(["run", "distillation", "--models", "tiny", "-q", "hi", "--tool-choice", "always"]) == 2
    assert "--tool-choice" in capsys.readouterr().err
    assert main(["eval", "distillation", "--models", "tiny", "-d", "gsm8k", "--out", "x", "--backend", "mpi"]) == 2
    assert "--backend" in capsys.readouterr().err


def test_progress_shows_as_lines_when_the_output_is_not_a_terminal(capsys) -> None:
    # a demo with output redirected printed nothing for minutes: a live bar draws only on a terminal
    assert main(["run", "distillation", "--models", "tiny", "-q", "a", "-q", "b", "-q", "c", "--batch-size", "1",
                 "--rounds", "1", "--latent-steps", "1", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "loading" in err and "questions: 3/3 done" in err


def test_plain_progress_prints_stages_and_counts_at_most_every_interval() -> None:
    from rich.console import Console

    from recmas_graph.cli._progress import PlainProgress

    console = Console(record=True, width=200, force_terminal=False)
    with PlainProgress(console, every_s=3600) as progress:
        task = progress.add_task("system A", total=4, note="")
        progress.update(task, note="loading planner")
        for _ in range(4):
            progress.advance(task)
    lines = [line.split("] ", 1)[1] for line in console.export_text().splitlines()]
    assert lines == ["system A", "system A: loading planner", "system A: 1/4 done, loading planner",
                     "system A: 4/4 done, loading planner"]  # the last note rides along with the counts


def test_a_resumed_eval_says_how_many_samples_were_already_done(tmp_path: Path, capsys) -> None:
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(2)), encoding="utf-8")
    args = ["eval", "distillation", "--models", "tiny", "-d", f"jsonl:{data}", "--out", str(tmp_path / "e"),
            "--rounds", "1", "--latent-steps", "1", "--greedy", "--max-new-tokens", "2", "--text-message-tokens", "2"]
    assert main(args) == 0
    first = capsys.readouterr().err
    assert "resumed" not in first and "2/2 done" in first  # plain progress lines: stderr is not a terminal
    assert main(args) == 0
    assert "2 of 2 samples already done (nothing left to run)" in capsys.readouterr().err


def test_an_explicit_none_leaves_a_decoding_field_to_the_model_and_do_sample_still_works() -> None:
    # GenerationOptions(top_p=None) means "the model's generation config": run(top_p=None) kept that meaning
    assert RunOptions.of(top_p=None).resolve_generation().top_p is None
    assert RunOptions.of(RunOptions.of(top_p=None), top_p=0.5).resolve_generation().top_p == 0.5
    assert RunOptions.of().resolve_generation().top_p == 0.95  # not given: the reference's
    assert RunOptions.of(seed=None).seed == 0
    assert RunOptions.of(do_sample=False).greedy is True
    assert RunOptions.of(generation={"do_sample": False, "max_new_tokens": 4}).resolve_generation() == \
        GenerationOptions(max_new_tokens=4, do_sample=False)
