"""The lm-evaluation-harness adapter: ``--model recmas`` on small local generate_until and multiple_choice tasks, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import recmas_graph as rg  # noqa: E402
from recmas_graph.cli.lm_eval import main as lm_eval_main  # noqa: E402
from recmas_graph.errors import RunError  # noqa: E402
from recmas_graph.eval.lmeval import RecmasLM  # noqa: E402

QUESTIONS = [("What is 2 + 3?", "5"), ("What is 4 * 2?", "8"), ("What is 9 - 7?", "2")]


def _task_dir(tmp_path: Path, *, output_type: str = "generate_until") -> Path:
    """A local lm-eval task over a three-line JSONL file (no hub)."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    name = "recmas_tiny_arith" if output_type == "generate_until" else "recmas_tiny_choice"
    body = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": output_type,
        "doc_to_text": "Question: {{question}}\nAnswer:",
    }
    if output_type == "generate_until":
        body |= {"doc_to_target": "{{answer}}",
                 "generation_kwargs": {"until": ["\n\n", "Question:"], "max_gen_toks": 8, "do_sample": False},
                 "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}
    else:
        body |= {"doc_to_target": 0, "doc_to_choice": ["{{answer}}", "0"],
                 "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(json.dumps(body))  # JSON is YAML
    return folder


def test_simple_evaluate_scores_a_system_with_the_answers_system_run_gives(tmp_path, registry):
    tasks = _task_dir(tmp_path)
    out = lm_eval.simple_evaluate(
        model="recmas", model_args="topology=sequential_light,models=tiny,seed=3,rounds=1,latent_steps=4", tasks=["recmas_tiny_arith"],
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False), log_samples=True, batch_size=2, device="cpu")
    samples = out["samples"]["recmas_tiny_arith"]
    assert [s["doc"]["question"] for s in samples] == [q for q, _ in QUESTIONS]
    assert "exact_match,none" in out["results"]["recmas_tiny_arith"]
    assert out["config"]["recmas_topology"] == "sequential_light"
    # the same system run directly on the same contexts answers the same (cut at the task's stops)
    system = rg.compile("sequential_light").build(models="tiny", seed=3)
    contexts = [f"Question: {q}\nAnswer:" for q, _ in QUESTIONS]
    direct = system.run(contexts, task="math", rounds=1, latent_steps=4, greedy=True, max_new_tokens=8, stop=("\n\n", "Question:")).answers
    expected = [a.split("\n\n")[0].split("Question:")[0] for a in direct]
    assert [s["resps"][0][0] for s in samples] == expected


class _EchoSystem:
    """Stands in for a system to pin the adapter's request handling: it answers with its question."""

    def __init__(self):
        self.calls = []
        self.spec = SimpleNamespace(name="echo")

    def run(self, questions, *args, **kwargs):
        self.calls.append((list(questions), kwargs, args[0] if args else None))
        return SimpleNamespace(answers=[f"{q} | STOP tail" for q in questions])


def _request(context, **gen_kwargs):
    return Instance("generate_until", {}, (context, gen_kwargs), 0)


def test_requests_are_grouped_by_options_batched_and_answered_in_order():
    echo = _EchoSystem()
    lm = RecmasLM(system=echo, batch_size=2, seed=10, task="choice")
    requests = [_request("a", until=["STOP"], do_sample=False), _request("b", until="|", max_gen_toks=5),
                _request("c", until=["STOP"], do_sample=False), _request("d", until=["STOP"], do_sample=False),
                _request("e", until="|", max_gen_toks=5, do_sample=True, temperature=0.7, top_p=0.9)]
    answers = lm.generate_until(requests, disable_tqdm=True)
    assert answers == ["a | ", "b ", "c | ", "d | ", "e "]
    batches = [(qs, kw["seeds"], kw.get("greedy"), kw["max_new_tokens"], kw["stop"]) for qs, kw, _ in echo.calls]
    assert batches == [(["a", "c"], [10, 12], True, 256, ("STOP",)), (["d"], [13], True, 256, ("STOP",)),
                       (["b"], [11], True, 5, ("|",)), (["e"], [14], None, 5, ("|",))]
    _, sampled, options = echo.calls[-1]
    assert (sampled["temperature"], sampled["top_p"], options.task) == (0.7, 0.9, "choice")


def test_unsupported_generation_options_and_rolling_loglikelihood_are_refused_by_name(tmp_path, registry):
    lm = RecmasLM(system=_EchoSystem())
    with pytest.raises(RunError, match="num_beams"):
        lm.generate_until([_request("a", until=["x"], num_beams=4)], disable_tqdm=True)
    with pytest.raises(RunError, match="loglikelihood_rolling"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("some text",), 0)])
    with pytest.raises(RunError, match="needs a topology"):
        RecmasLM()
    with pytest.raises(RunError, match="unknown baseline"):
        RecmasLM("sequential_light", models="tiny", baseline="solo")


def test_multiple_choice_tasks_are_scored_by_likelihood(tmp_path, registry):
    tasks = _task_dir(tmp_path, output_type="multiple_choice")
    lm = RecmasLM("sequential_light", models="tiny", rounds=1, latent_steps=1)
    out = lm_eval.simple_evaluate(model=lm, tasks=["recmas_tiny_choice"], log_samples=True,
                                  task_manager=TaskManager(include_path=str(tasks), include_defaults=False))
    samples = out["samples"]["recmas_tiny_choice"]
    assert "acc,none" in out["results"]["recmas_tiny_choice"] and len(samples) == len(QUESTIONS)
    direct = lm.system.score([s["arguments"][0][0] for s in samples],
                             [[continuation for _, continuation in s["arguments"]] for s in samples], rounds=1,
                             latent_steps=1)
    assert [[r[0] for r in s["filtered_resps"]] for s in samples] == [pytest.approx(r, abs=1e-4) for r in direct.logprobs]


def test_baseline_argument_scores_the_single_agent_baseline(registry):
    lm = RecmasLM("sequential_light", models="tiny", baseline="single")
    assert list(lm.system.agents) == [lm.system.spec.output]
    assert len(lm.system.agents) == 1


def test_recmas_lm_eval_command_runs_lm_eval_with_the_model_registered(tmp_path, registry, capsys):
    tasks = _task_dir(tmp_path)
    rc = lm_eval_main(["run", "--model", "recmas", "--model_args", "topology=sequential_light,models=tiny",
                       "--tasks", "recmas_tiny_arith", "--include_path", str(tasks), "--limit", "2",
                       "--output_path", str(tmp_path / "out")])
    assert rc == 0
    results = list((tmp_path / "out").rglob("results_*.json"))
    assert len(results) == 1
    data = json.loads(results[0].read_text())
    assert data["n-samples"]["recmas_tiny_arith"]["effective"] == 2
    rc = lm_eval_main(["run", "--model", "recmas", "--model_args", "topology=no_such_topology,models=tiny",
                       "--tasks", "recmas_tiny_arith", "--include_path", str(tasks)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no_such_topology" in err
