"""Likelihood scoring: ``system.score`` (the rounds once, every option teacher-forced after the final
prompt), pinned to lm-eval's ``hf`` model, and multiple choice by likelihood in evaluate / compare / CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import recmas_graph as rg  # noqa: E402
from recmas_graph.cli import main  # noqa: E402
from recmas_graph.errors import RunError  # noqa: E402
from recmas_graph.eval import EvalError, Sample, resolve_dataset  # noqa: E402
from recmas_graph.eval.datasets import arc_documents  # noqa: E402
from recmas_graph.eval.likelihood import best, choice_question  # noqa: E402
from recmas_graph.plugins import Registry, hookimpl  # noqa: E402
from recmas_graph.runtime.agent.forward import lm_forward, position_ids_from_mask  # noqa: E402
from recmas_graph.runtime.agent.prompts import RAW_PROMPT_TAG  # noqa: E402
from recmas_graph.runtime.agent.scoring import continuation_ids  # noqa: E402
from recmas_graph.runtime.sources.loaded import ModelCache  # noqa: E402
from recmas_graph.topology.roles import Role  # noqa: E402

QUESTIONS = ["What is 2 + 3?", "Name a primary colour, please.", "Which planet is the largest?"]
OPTIONS = [[" 5", " six", " five hundred and one"], [" red", " blue"], [" Jupiter", " Mars", " Venus", " Pluto"]]
THINK = dict(rounds=2, latent_steps=3)


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


@pytest.fixture(scope="module")
def system(cache):
    reg = Registry.create(load_entrypoints=False)
    return reg.compile("sequential_light").build(models="tiny", seed=0, model_cache=cache)


class BareRole:
    """A plugin with a role rendered bare: the prompt is the question itself (lm-eval's context)."""

    @hookimpl
    def recmas_roles(self):
        return [Role("bare", "The question as it is.", templates={"default": "{{ question }}"}, tags=(RAW_PROMPT_TAG,),
                     answers=True)]


def _saved_tiny(ref: str, folder: Path) -> Path:
    from recmas_graph.runtime.sources.tiny import load_tiny

    loaded = load_tiny(ref)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def _bare_system(model: str):
    registry = Registry.create([BareRole()], load_entrypoints=False)
    spec = rg.TopologyBuilder("bare", rounds=1, latent_steps=1).agent("a", role="bare", model=model).output("a").build()
    return registry.compile(spec).build(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def bare():
    return _bare_system("tiny:llama")


# ------------------------------------------------------------------------------ system.score


def _by_hand(system, question: str, continuations: list[str], **run) -> list[float]:
    """The log-likelihoods of ``continuations`` computed the plain way: the messages of a greedy run,
    the output agent's final prompt built from them, each continuation appended, one full forward
    pass without a cache per continuation."""
    result = system.run([question], keep_messages=True, greedy=True, max_new_tokens=1, **run)
    step = system.plan(run["rounds"]).waves[-1][0]
    agent = system.agents[step.agent]
    latent = {i.slot: result.messages[i.key].to(agent.dtype) for i in step.inputs}
    senders = {i.slot: i.source for i in step.inputs}
    prompt = agent.prompter.build([question], "math", latent, {}, senders, [i.slot for i in step.inputs],
                                  round=step.round, rounds=run["rounds"], trim_end=True)
    embed = agent.model.get_input_embeddings()
    out = []
    for text in continuations:
        ids = torch.tensor(continuation_ids(agent.tokenizer, prompt.ends[0], text))  # (C,)
        embeds = torch.cat([prompt.embeds, embed(ids)[None]], dim=1)  # (1, T + C, H)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        with torch.inference_mode():
            logits, _ = lm_forward(agent.model, embeds, mask, position_ids_from_mask(mask), use_cache=False,
                                   logits_to_keep=len(ids) + 1)  # (1, C + 1, V)
        logp = torch.log_softmax(logits[0, :-1].float(), -1)  # (C, V): position T - 1 + j predicts token j
        out.append(float(logp.gather(-1, ids[:, None]).sum()))
    return out


def test_score_is_the_plain_teacher_forced_likelihood_after_the_final_prompt_with_its_messages(system) -> None:
    scored = system.score(QUESTIONS[:1], OPTIONS[:1], **THINK)
    assert scored.logprobs[0] == pytest.approx(_by_hand(system, QUESTIONS[0], OPTIONS[0], **THINK), rel=1e-4)
    # byte-level tokens; the chat template's trailing "\n" moves onto each continuation (lm-eval's split)
    assert [s.tokens for s in scored.scores[0]] == [len(o) + 1 for o in OPTIONS[0]]
    assert all(lp < 0 for lp in scored.logprobs[0])


def test_the_options_of_a_question_run_the_rounds_once(system) -> None:
    passes: list[tuple[str, int, str]] = []

    class Count:
        @hookimpl
        def recmas_before_pass(self, system, step):
            passes.append((step.agent, step.round, step.action))

    hooks = system.hooks
    system.hooks = Registry.create([Count()], load_entrypoints=False).hooks
    try:
        scored = system.score(QUESTIONS, OPTIONS, **THINK)
    finally:
        system.hooks = hooks
    schedule = [(s.agent, s.round, s.action) for wave in system.plan(2).waves for s in wave]
    assert passes == schedule  # one pass per scheduled (agent, round): not one per option
    assert [(r.agent, r.round, r.action) for r in scored.trace] == schedule
    assert {r.batch_size for r in scored.trace} == {len(QUESTIONS)}  # 3 questions a pass, not 9 options
    assert [len(row) for row in scored.scores] == [3, 2, 4]


def test_scores_do_not_depend_on_batch_mates_padding_or_prefix_reuse(system) -> None:
    together = system.score(QUESTIONS, OPTIONS, **THINK)
    for i, question in enumerate(QUESTIONS):
        alone = system.score([question], [OPTIONS[i]], **THINK)
        assert alone.logprobs[0] == pytest.approx(together.logprobs[i], abs=1e-4)
        assert [s.greedy for s in alone.scores[0]] == [s.greedy for s in together.scores[i]]
    again = system.score(QUESTIONS, OPTIONS, **THINK, reuse_prefix=False)
    assert again.logprobs == [pytest.approx(row, abs=1e-4) for row in together.logprobs]
    assert system.score(QUESTIONS, OPTIONS, **THINK).logprobs == together.logprobs  # deterministic


def test_score_chunks_the_options_without_changing_them(system, monkeypatch) -> None:
    whole = system.score(QUESTIONS, OPTIONS, **THINK)
    monkeypatch.setattr("recmas_graph.runtime.agent.scoring.LOGITS_BYTES", 1)  # one continuation per chunk
    chunked = system.score(QUESTIONS, OPTIONS, **THINK)
    assert chunked.logprobs == [pytest.approx(row, abs=1e-5) for row in whole.logprobs]


def test_greedy_flags_the_greedy_continuation(bare) -> None:
    agent = bare.agents["a"]
    printable = [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;!?"]
    for i in range(300):  # a question whose two greedy next tokens are printable characters
        question = f"Question {i}:"
        ids = agent.tokenizer(question).input_ids
        with torch.inference_mode():
            for _ in range(2):
                ids = ids + [int(agent.model(torch.tensor([ids])).logits[0, -1].argmax())]
        text = agent.tokenizer.decode(ids[-2:])
        if len(text) == 2 and all(c in printable for c in text):
            break
    else:
        pytest.fail("no question with a printable greedy continuation")
    other = text[0] + ("b" if text[1] != "b" else "c")
    scored = bare.score([question], [[text, other, text[0]]])
    assert [s.greedy for s in scored.scores[0]] == [True, False, True]
    assert [s.tokens for s in scored.scores[0]] == [2, 2, 1]


def test_score_errors_name_the_culprit(system) -> None:
    with pytest.raises(RunError, match="2 continuation lists for 1 questions"):
        system.score(["Q?"], [[" a"], [" b"]])
    with pytest.raises(RunError, match=r"continuations\[0\] must be a string or a list of strings"):
        system.score(["Q?"], [[1, 2]])
    with pytest.raises(RunError, match="one entry per question"):
        system.score(["Q?"], " a")
    one = system.score(["Q?"], [" a"], rounds=1, latent_steps=1)  # one string: one continuation
    assert len(one.scores[0]) == 1


# ------------------------------------------------------------------------------ pinned to lm-eval's hf model


def _per_option(out: dict, task: str) -> list[list[float]]:
    return [[float(r[0]) for r in s["filtered_resps"]] for s in sorted(out["samples"][task], key=lambda s: s["doc_id"])]


def _pin(ours_model, theirs_args: str, limit: int) -> tuple[dict, dict]:
    import lm_eval

    from recmas_graph.eval.lmeval import task_manager

    common = dict(tasks=["recmas_arc_easy"], task_manager=task_manager(), limit=limit, log_samples=True,
                  device="cpu", batch_size=4)
    ours = lm_eval.simple_evaluate(model=ours_model, **common)
    theirs = lm_eval.simple_evaluate(model="hf", model_args=theirs_args, **common)
    return ours, theirs


@pytest.mark.parametrize("ref", ["tiny:llama", "tiny:gemma3"])  # gemma3: a bos and a 64-token sliding window
def test_a_bare_one_agent_system_scores_recmas_arc_easy_as_lm_evals_hf_model(ref, tmp_path, registry) -> None:
    from recmas_graph.eval.lmeval import RecmasLM

    folder = _saved_tiny(ref, tmp_path / "model")
    ours, theirs = _pin(RecmasLM(system=_bare_system(str(folder)), batch_size=4), f"pretrained={folder},dtype=float32",
                        limit=20)
    mine, hf = _per_option(ours, "recmas_arc_easy"), _per_option(theirs, "recmas_arc_easy")
    assert len(mine) == 20 and [len(r) for r in mine] == [len(r) for r in hf]
    for a, b in zip(mine, hf):
        assert a == pytest.approx(b, rel=1e-4)
    greedy = [[[bool(r[1]) for r in s["filtered_resps"]] for s in sorted(out["samples"]["recmas_arc_easy"],
                                                                         key=lambda s: s["doc_id"])]
              for out in (ours, theirs)]
    assert greedy[0] == greedy[1]
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"]["recmas_arc_easy"][metric] == theirs["results"]["recmas_arc_easy"][metric]


@pytest.mark.real
def test_the_packaged_smollm2_scores_recmas_arc_easy_as_lm_evals_hf_model(registry) -> None:
    """A real BPE tokenizer (merges across the context/continuation boundary, leading spaces)."""
    from recmas_graph.eval.lmeval import RecmasLM
    from recmas_graph.runtime.sources.assets import ensure_converted

    folder = ensure_converted("smollm2-135m-instruct")
    ours, theirs = _pin(RecmasLM(system=_bare_system("pkg:smollm2-135m-instruct"), batch_size=4),
                        f"pretrained={folder},dtype=float32", limit=10)
    for a, b in zip(_per_option(ours, "recmas_arc_easy"), _per_option(theirs, "recmas_arc_easy"), strict=True):
        assert a == pytest.approx(b, rel=1e-4)


# ------------------------------------------------------------------------------ multiple choice in evaluate


def test_a_choice_sample_is_asked_without_its_options_and_scored_on_their_texts(registry) -> None:
    sample = resolve_dataset("arc_easy", registry).load(1)[0]
    asked = choice_question(sample)
    assert asked.question == "Which statement best explains why photosynthesis is the foundation of most food webs?"
    assert asked.continuations[0] == " Sunlight is the source of energy for nearly all ecosystems."
    assert (asked.letters, asked.gold) == ("ABCD", 0)
    doc = arc_documents("arc_easy")[0]  # what the lm-eval task recmas_arc_easy reads: the same question
    assert (doc["question"], doc["choices"]["text"], doc["answerKey"]) == (asked.question, list(asked.options), "A")
    mine = Sample("m1", "Sky?\nA. red\nB. blue", "blue", "choice", {"choices": ["red", "blue"]})
    assert (choice_question(mine).question, choice_question(mine).gold) == ("Sky?", 1)
    with pytest.raises(RunError, match="has no options"):
        choice_question(Sample("m2", "Sky?", "B", "choice", {}))
    with pytest.raises(RunError, match="neither an option letter"):
        choice_question(Sample("m3", "Sky?", "Z", "choice", {"choices": ["red", "blue"]}))
    assert best([-4.0, -4.0], ["ab", "abcd"]) == (0, 1)  # ties: the first; norm: per character


def test_evaluate_scores_multiple_choice_by_likelihood_with_acc_norm_and_resumes(tmp_path: Path, registry,
                                                                                 cache) -> None:
    kw = dict(registry=registry, limit=3, build={"models": "tiny", "model_cache": cache}, rounds=1, latent_steps=2)
    report = rg.evaluate("sequential_light", "arc_easy", out=tmp_path / "e", **kw)
    assert report.summary["scoring"] == "likelihood" and report.acc_norm is not None
    assert report.summary["acc_norm_ci_low"] <= report.acc_norm <= report.summary["acc_norm_ci_high"]
    system = rg.compile("sequential_light").build(models="tiny", model_cache=cache)
    for record in report.records:
        asked = choice_question(next(s for s in resolve_dataset("arc_easy", registry).load(3)
                                     if s.id == record["id"]))
        direct = system.score([asked.question], [asked.continuations], task="choice", rounds=1, latent_steps=2)
        assert record["loglikelihoods"] == pytest.approx(direct.logprobs[0], abs=1e-4)
        pick, pick_norm = best(direct.logprobs[0], asked.options)
        assert (record["acc"], record["acc_norm"]) == (pick == asked.gold, pick_norm == asked.gold)
        assert record["correct"] == record["acc"] and record["prediction"] == asked.letters[pick]
        assert record["question"] == asked.question and len(record["option_tokens"]) == len(asked.options)
    lines = (tmp_path / "e" / "results.jsonl").read_text().splitlines()
    again = rg.evaluate("sequential_light", "arc_easy", out=tmp_path / "e", **kw)  # resumes: nothing runs again
    assert again.records == report.records and (tmp_path / "e" / "results.jsonl").read_text().splitlines() == lines
    with pytest.raises(EvalError, match="run.scoring"):  # the scoring is part of the configuration
        rg.evaluate("sequential_light", "arc_easy", out=tmp_path / "e", scoring="generate",
                    generation={"greedy": True, "max_new_tokens": 2}, **kw)
    generated = rg.evaluate("sequential_light", "arc_easy", out=tmp_path / "g", scoring="generate",
                            generation={"greedy": True, "max_new_tokens": 2}, retry=False, **kw)
    assert generated.summary["scoring"] == "generate" and generated.acc_norm is None
    assert "acc_norm" not in generated.records[0] and generated.records[0]["extraction"] != "likelihood"


def test_likelihood_on_a_dataset_that_is_not_multiple_choice_is_refused(tmp_path: Path, registry) -> None:
    with pytest.raises(RunError, match="needs a multiple-choice dataset; gsm8k is a math dataset") as err:
        rg.evaluate("sequential_light", "gsm8k", out=tmp_path / "x", registry=registry, scoring="likelihood",
                    build={"models": "tiny"})
    assert err.value.culprit == "--scoring"
    with pytest.raises(RunError, match="unknown scoring"):
        rg.evaluate("sequential_light", "arc_easy", out=tmp_path / "x", registry=registry, scoring="logits",
                    build={"models": "tiny"})
    with pytest.raises(RunError, match="--metric applies to generated answers"):
        rg.evaluate("sequential_light", "arc_easy", out=tmp_path / "x", registry=registry, metric="choice_letter",
                    build={"models": "tiny"})


def test_compare_reports_acc_norm_with_its_paired_test(tmp_path: Path, registry, cache) -> None:
    report = rg.compare(["distillation_mini"], "arc_easy", out=tmp_path / "cmp", registry=registry, limit=4,
                        build={"models": "tiny", "model_cache": cache}, rounds=1, latent_steps=1, text_message_tokens=3)
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["scoring"] for r in rows] == ["likelihood"] * 3
    assert all(r["acc_norm"] is not None for r in rows)
    norm = rows[0]["paired"]["distillation_mini:single"]["norm"]
    assert norm["n"] == 4 and 0 <= norm["p_value"] <= 1
    header = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()[0]
    assert "acc_norm" in header.split(",")
    assert report.row("distillation_mini:text")["generated_tokens"] > 0  # text messages still decoded


def test_cli_scoring_flag(tmp_path: Path, capsys, registry) -> None:
    args = ["--models", "tiny", "--latent-steps", "1", "--rounds", "1", "--limit", "2"]
    assert main(["eval", "sequential_light", "-d", "arc_easy", "--out", str(tmp_path / "e"), *args]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(likelihood)" in out and "norm %" in out and "acc_norm" in out
    data = tmp_path / "m.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    assert main(["eval", "sequential_light", "-d", f"jsonl:{data}", "--scoring", "likelihood", "--out",
                 str(tmp_path / "m"), *args]) == 2
    assert "--scoring" in capsys.readouterr().err
    assert main(["compare", "sequential_light", "-d", "arc_easy", "--out", str(tmp_path / "c"), *args]) == 0
    out = capsys.readouterr().out
    assert "norm %" in out and "p norm" in out


def test_the_shipped_lm_eval_tasks_are_found_and_read_the_packaged_arc() -> None:
    from recmas_graph.eval.datasets import lm_eval_arc
    from recmas_graph.eval.lmeval import task_manager

    assert {"recmas_arc_easy", "recmas_arc_challenge"} <= set(task_manager().all_tasks)
    easy = lm_eval_arc("arc_easy")
    assert (len(easy["test"]), len(easy["validation"])) == (2376, 570)
    challenge = arc_documents("arc_challenge", "validation")
    assert len(challenge) == 299 and len({d["id"] for d in challenge}) == 299
    assert all(d["answerKey"] in d["choices"]["label"] for d in challenge)


def test_lm_eval_loglikelihood_groups_requests_by_context(system) -> None:
    from lm_eval.api.instance import Instance

    from recmas_graph.eval.lmeval import RecmasLM

    calls = []
    original = system.score

    def counting(questions, continuations, *args, **kwargs):
        calls.append((list(questions), [list(c) for c in continuations]))
        return original(questions, continuations, *args, **kwargs)

    lm = RecmasLM(system=system, batch_size=2, rounds=1, latent_steps=1)
    system.score = counting
    try:
        requests = [Instance("loglikelihood", {}, (c, o), i) for i, (c, o) in
                    enumerate([("Q1?", " a"), ("Q2?", " x"), ("Q1?", " b"), ("Q3?", " z"), ("Q2?", " y")])]
        out = lm.loglikelihood(requests, disable_tqdm=True)
    finally:
        del system.score
    assert calls == [(["Q1?", "Q2?"], [[" a", " b"], [" x", " y"]]), (["Q3?"], [[" z"]])]
    direct = system.score(["Q1?", "Q2?"], [[" a", " b"], [" x", " y"]], rounds=1, latent_steps=1, task="math")
    assert [lp for lp, _ in out] == pytest.approx([direct.logprobs[0][0], direct.logprobs[1][0], direct.logprobs[0][1],
                                                   out[3][0], direct.logprobs[1][1]], abs=1e-5)
    with pytest.raises(RunError, match="no question"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("text",), 0)])


def test_recmas_lm_eval_runs_recmas_arc_easy_offline_without_include_path(tmp_path: Path, registry) -> None:
    from recmas_graph.cli.lm_eval import main as lm_eval_main

    rc = lm_eval_main(["--model", "recmas", "--model_args", "topology=sequential_light,models=tiny,rounds=1,latent_steps=2",
                       "--tasks", "recmas_arc_easy", "--limit", "10", "--output_path", str(tmp_path / "out")])
    assert rc == 0
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    scores = results["results"]["recmas_arc_easy"]
    assert 0 <= scores["acc,none"] <= 1 and 0 <= scores["acc_norm,none"] <= 1
    assert results["n-samples"]["recmas_arc_easy"]["effective"] == 10
