"""The LLM judge as a metric: verdicts and the judge's raw text are stored in the records, answers are
judged in batches, once: a resumed evaluation never judges again (the test counts judge calls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import recmas_graph as rg
from recmas_graph.errors import RecmasError
from recmas_graph.eval.judge import JUDGE_PROMPT, Judge, JudgeSpec, judge_prompt, parse_verdict

FAST = dict(generation={"greedy": True, "max_new_tokens": 4}, latent_steps=1, rounds=1, text_message_tokens=4,
            retry=False)


def _qa(tmp_path: Path, n: int = 3) -> Path:
    rows = [{"id": "paris", "question": "What is the capital of France?", "answer": ["Paris", "Paris, France"]},
            {"id": "jupiter", "question": "Which is the largest planet?", "answer": "Jupiter"},
            {"id": "water", "question": "What is H2O commonly called?", "answer": "water"}][:n]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({**r, "task": "reasoning"}) + "\n" for r in rows))
    return path


@pytest.fixture
def judge_calls(monkeypatch) -> list[int]:
    """How many answers each judge generation got."""
    calls: list[int] = []
    original = Judge.generate

    def counted(self, prompts):
        calls.append(len(prompts))
        return original(self, prompts)

    monkeypatch.setattr(Judge, "generate", counted)
    return calls


def test_verdicts_parse_and_the_prompt_names_question_golds_and_prediction() -> None:
    assert [parse_verdict(t) for t in ("Correct", "INCORRECT.", "The answer is not correct", "yes", "hmm")] == \
        [True, False, False, True, None]
    text = judge_prompt("Q?", ["Paris", "Paris, France"], " paris ")
    assert "Question: Q?" in text and "Paris | Paris, France" in text and "Predicted answer: paris" in text
    assert "Correct or Incorrect" in JUDGE_PROMPT
    with pytest.raises(RecmasError, match="judge"):
        JudgeSpec.of("tiny:llama", {"temperature": 1.0})
    with pytest.raises(RecmasError):
        JudgeSpec.of("")


def _judged_eval(tmp_path: Path, registry, judge: str, out: str = "run", **extra):
    return rg.evaluate("distillation", f"jsonl:{_qa(tmp_path)}", out=tmp_path / out, registry=registry,
                       metric="open_qa", build={"models": "tiny"}, batch_size=2, judge=judge,
                       judge_options={"batch_size": 2, "max_new_tokens": 4}, **FAST, **extra)


def test_a_judged_eval_stores_verdicts_and_is_not_judged_again_on_resume(tmp_path: Path, registry,
                                                                         judge_calls) -> None:
    report = _judged_eval(tmp_path, registry, "tiny:llama")
    assert judge_calls == [2, 1]  # batched: the system's batches of 2 and 1 answers
    for record in report.records:
        verdict = record["judge"]
        assert verdict["model"] == "tiny:llama" and isinstance(verdict["text"], str)
        assert verdict["correct"] == bool(verdict["verdict"])
    assert report.summary["judge_accuracy"] is not None and "judge_unparsed" in report.summary
    assert report.summary["config"]["run"]["judge"]["model"] == "tiny:llama"
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert all("judge" in r for r in lines)
    again = _judged_eval(tmp_path, registry, "tiny:llama")
    assert judge_calls == [2, 1]  # resumed: nothing run, nothing judged
    assert [r["judge"] for r in again.records] == [r["judge"] for r in report.records]
    with pytest.raises(RecmasError, match="judge"):  # another judge is another configuration
        _judged_eval(tmp_path, registry, "tiny:qwen2")


def test_an_interrupted_judged_eval_judges_only_what_is_left(tmp_path: Path, registry, judge_calls,
                                                             monkeypatch) -> None:
    from recmas_graph.runtime.system import RecursiveSystem

    original, calls = RecursiveSystem.run, {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RecursiveSystem, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _judged_eval(tmp_path, registry, "tiny:llama")
    assert judge_calls == [2]  # the first batch was judged and written
    monkeypatch.setattr(RecursiveSystem, "run", original)
    report = _judged_eval(tmp_path, registry, "tiny:llama")
    assert judge_calls == [2, 1]  # only the answer left was judged
    assert all("judge" in r for r in report.records) and len(report.records) == 3


def test_an_unknown_judge_fails_before_any_model_loads(tmp_path: Path, registry) -> None:
    with pytest.raises(RecmasError, match="nosuch"):
        _judged_eval(tmp_path, registry, "nosuch:model")
    assert not (tmp_path / "run").exists()


@pytest.mark.real
def test_smollm2_judges_a_tiny_system_once(tmp_path: Path, registry, judge_calls) -> None:
    report = _judged_eval(tmp_path, registry, "pkg:smollm2-135m-instruct")
    assert len(judge_calls) == 2 and all(r["judge"]["model"] == "pkg:smollm2-135m-instruct" for r in report.records)
    assert all(r["judge"]["text"] for r in report.records)
    _judged_eval(tmp_path, registry, "pkg:smollm2-135m-instruct")
    assert len(judge_calls) == 2


def test_cli_eval_with_samples_and_a_judge(tmp_path: Path, capsys, registry) -> None:
    from recmas_graph.cli import main

    args = ["--models", "tiny", "--max-new-tokens", "3", "--latent-steps", "1", "--rounds", "1",
            "--text-message-tokens", "3", "--no-retry", "--metric", "open_qa"]
    assert main(["eval", "distillation", "-d", str(_qa(tmp_path, 2)), "--out", str(tmp_path / "e"), "--samples", "2",
                 "--judge", "tiny:llama", *args]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "pass@1" in out and "pass@2" in out and "majority vote" in out and "judge" in out and "em " in out
    records = [json.loads(x) for x in (tmp_path / "e" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all("judge" in r and "draw" in r for r in records)
    assert main(["compare", "distillation", "-d", str(_qa(tmp_path, 2)), "--out", str(tmp_path / "c"),
                 "--samples", "2", "--judge", "tiny:llama", *args]) == 0
    out = capsys.readouterr().out
    assert "pass@2" in out and "judge %" in out
