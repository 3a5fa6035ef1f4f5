"""Training links: the inner and outer loops lower their losses, gradients reach every outer link
through the rounds, a run resumed from a checkpoint continues exactly, and the folder runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import recmas_graph as rg
from recmas_graph.cli import main
from recmas_graph.train.data import TrainSample, read_train_data, split_heldout
from recmas_graph.train.loop import TrainConfig
from recmas_graph.train.objectives import AnswerObjective
from recmas_graph.train.run import train_links

DATA = [TrainSample(str(i), f"What is {i} + {i}?", f"{i} + {i} = {2 * i}. The answer is {2 * i}.") for i in range(12)]


def _sensitive(system, std: float = 0.3) -> None:
    """Give the tiny random models weights large enough that their outputs depend on their inputs
    (at the default init of 0.02 every answer token is near-uniform, whatever the prompt)."""
    g = torch.Generator().manual_seed(0)
    seen: set[int] = set()
    for agent in system.agents.values():
        if id(agent.model) in seen:
            continue
        seen.add(id(agent.model))
        with torch.no_grad():
            for p in agent.model.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * std)


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_inner_loop_lowers_the_link_loss(tmp_path: Path, registry) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0)
    report = train_links(system, "inner", DATA, tmp_path / "inner",
                         TrainConfig(steps=30, lr=1e-2, warmup=3, eval_every=10, save_every=10))
    assert report.last_loss < 0.7 * report.first_loss and report.val_loss < 0.7 * report.first_loss
    rows = _metrics(tmp_path / "inner")
    assert [r["step"] for r in rows] == list(range(1, 31)) and [r["step"] for r in rows if "val_loss" in r] == [10, 20, 30]
    assert rows[0]["lr"] < rows[5]["lr"] and rows[-1]["lr"] < rows[5]["lr"]  # warm-up, then cosine decay


def test_outer_loop_lowers_the_answer_loss(tmp_path: Path, registry) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0)
    _sensitive(system)
    report = train_links(system, "outer", DATA[:4], tmp_path / "outer",
                         TrainConfig(steps=30, lr=1e-2, warmup=2, save_every=30, eval_every=30), heldout=0,
                         rounds=1, latent_steps=2)
    assert report.last_loss < 0.85 * report.first_loss


def test_every_outer_link_of_a_loop_gets_a_gradient_through_the_rounds(registry) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0)
    _sensitive(system)
    for link in system.inner_links.values():
        link.requires_grad_(False)
    loss, _ = AnswerObjective(system, rounds=2, latent_steps=2)(DATA[:2])
    loss.backward()
    for edge_id, link in system.outer_links.items():
        grad = link.residual_proj.weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0, edge_id  # solver->planner only acts in round 2


def test_a_resumed_run_continues_with_the_same_losses(tmp_path: Path, registry) -> None:
    config = TrainConfig(steps=6, lr=1e-2, warmup=1, save_every=3, eval_every=3, batch_size=3)
    whole = rg.compile("sequential_light").build(models="tiny", seed=0)
    train_links(whole, "inner", DATA, tmp_path / "whole", config)

    class Stop(Exception):
        pass

    def stop_after_4(info):
        if info.step == 4:
            raise Stop  # killed after step 4: the checkpoint of step 3 survives

    cut = rg.compile("sequential_light").build(models="tiny", seed=0)
    with pytest.raises(Stop):
        train_links(cut, "inner", DATA, tmp_path / "cut", config, progress=stop_after_4)
    again = rg.compile("sequential_light").build(models="tiny", seed=1)  # other random links: the checkpoint wins
    report = train_links(again, "inner", DATA, tmp_path / "cut", config, resume=True)
    assert report.resumed_from == 3
    expected, got = _metrics(tmp_path / "whole"), _metrics(tmp_path / "cut")
    assert [r["step"] for r in got] == list(range(1, 7))
    for a, b in zip(expected, got):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7) and a["lr"] == pytest.approx(b["lr"])
    for name, link in whole.inner_links.items():
        assert torch.allclose(link.proj2.weight, again.inner_links[name].proj2.weight, atol=1e-6)


def test_training_folders_refuse_mixing_runs(tmp_path: Path, registry) -> None:
    config = TrainConfig(steps=2, lr=1e-2, warmup=0, save_every=1, eval_every=2)
    system = rg.compile("distillation").build(models="tiny", seed=0)
    train_links(system, "inner", DATA, tmp_path / "r", config)
    with pytest.raises(rg.RecmasError, match="holds another training run"):
        train_links(system, "inner", DATA, tmp_path / "r", config)
    with pytest.raises(rg.RecmasError, match="changed: lr"):
        train_links(system, "inner", DATA, tmp_path / "r", TrainConfig(steps=4, lr=5e-3, warmup=0, save_every=1,
                                                                        eval_every=2), resume=True)
    with pytest.raises(rg.RecmasError, match="nothing to resume"):
        train_links(system, "inner", DATA, tmp_path / "empty", config, resume=True)
    (tmp_path / "r" / "checkpoints" / "step_000002.pt").write_bytes(b"garbage")
    with pytest.raises(rg.RecmasError, match="delete the broken checkpoint"):
        train_links(system, "inner", DATA, tmp_path / "r", config, resume=True)


def test_the_trained_folder_runs_with_the_trained_links(tmp_path: Path, registry) -> None:
    system = rg.compile("distillation").build(models="tiny", seed=0)
    train_links(system, "outer", DATA[:4], tmp_path / "t", TrainConfig(steps=2, lr=1e-2, warmup=0, save_every=2,
                                                                      eval_every=2), rounds=1, latent_steps=1)
    again = rg.compile(str(tmp_path / "t" / "topology.json")).build()
    for edge_id, link in system.outer_links.items():
        assert torch.equal(link.proj2.weight, again.outer_links[edge_id].proj2.weight)
    assert float(again.outer_links[next(iter(again.outer_links))].proj2.weight.detach().abs().sum()) > 0  # trained
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["kind"] == "outer" and report["steps"] == 2
    assert len(again.run(["2 + 2?"], rounds=1, latent_steps=1, greedy=True, max_new_tokens=2).answers) == 1


def test_training_data_is_checked_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a", "plan": "p"}) + "\n" + json.dumps({"question": "q2"}) + "\n")
    with pytest.raises(rg.RecmasError, match="line 2 of d.jsonl has no string answer"):
        read_train_data(path)
    path.write_text(json.dumps({"question": "q", "answer": "a", "plan": "p"}) + "\n")
    (sample,) = read_train_data(path)
    assert sample.text("plan") == "p" and sample.text("refined_plan") == "a" and sample.text(None) == "a"
    train, held = split_heldout(DATA, 0.25, seed=0)
    assert len(held) == 3 and not {s.id for s in train} & {s.id for s in held}


def test_cli_train(tmp_path: Path, capsys, registry) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": s.question, "answer": s.answer}) + "\n" for s in DATA[:4]))
    args = ["train", "inner", "distillation", "--models", "tiny", "--data", str(data), "-o", str(tmp_path / "o"),
            "--steps", "3", "--save-every", "3", "--lr", "0.01"]
    assert main(args) == 0
    assert "inner loop: 3 steps" in capsys.readouterr().out
    assert main(args) == 2 and "--resume" in capsys.readouterr().err
    assert main(args[:-6] + ["--steps", "4", "--save-every", "3", "--lr", "0.01", "--resume"]) == 0
    assert "resumed at step 3" in " ".join(capsys.readouterr().out.split())


def test_data_make_writes_disjoint_training_and_heldout_files(tmp_path: Path, capsys, registry) -> None:
    out = tmp_path / "g.jsonl"
    assert main(["data", "make", "gsm8k", "--train", "3", "--heldout", "2", "--skip", "1", "-o", str(out)]) == 0
    train, held = read_train_data(out), read_train_data(tmp_path / "g.heldout.jsonl")
    assert [s.id for s in train] == ["gsm8k/1", "gsm8k/2", "gsm8k/3"] and [s.id for s in held] == ["gsm8k/4", "gsm8k/5"]
    assert "<<" in train[0].answer  # GSM8K's worked solution, calculator notes and all
    assert main(["data", "make", "arc_easy", "--train", "1", "-o", str(tmp_path / "a.jsonl")]) == 0
    assert read_train_data(tmp_path / "a.jsonl")[0].answer.startswith("The answer is ")


def test_data_make_cloze_asks_as_likelihood_scoring_does(tmp_path: Path, registry) -> None:
    from recmas_graph.eval.datasets import resolve_dataset
    from recmas_graph.eval.likelihood import choice_question

    out = tmp_path / "c.jsonl"
    assert main(["data", "make", "arc_easy_val", "--answers", "cloze", "--train", "3", "-o", str(out)]) == 0
    asked = [choice_question(s) for s in resolve_dataset("arc_easy_val", registry).load(3)]
    items = read_train_data(out)
    assert [s.question for s in items] == [a.question for a in asked]  # the stem: no option lines
    assert [s.answer for s in items] == [a.continuations[a.gold] for a in asked]  # " " + the gold option's text
    assert all("\nA. " not in s.question for s in items)
    assert main(["data", "make", "gsm8k", "--answers", "cloze", "--train", "1", "-o", str(out)]) == 2


def test_resuming_with_more_steps_follows_the_new_schedule_and_frozen_links_come_back(tmp_path: Path, registry) -> None:
    from recmas_graph.train.loop import lr_factor

    system = rg.compile("distillation").build(models="tiny", seed=0)
    train_links(system, "inner", DATA, tmp_path / "r", TrainConfig(steps=4, lr=1e-2, warmup=1, save_every=2))
    other = rg.compile("distillation").build(models="tiny", seed=3)  # other random links everywhere
    train_links(other, "inner", DATA, tmp_path / "r", TrainConfig(steps=8, lr=1e-2, warmup=1, save_every=2), resume=True)
    rows = _metrics(tmp_path / "r")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[4]["lr"] == pytest.approx(1e-2 * lr_factor(4, 1, 8))  # not the old schedule's 0
    for edge_id, link in system.outer_links.items():  # frozen in this loop, restored from the checkpoint
        assert torch.equal(link.residual_proj.weight, other.outer_links[edge_id].residual_proj.weight)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["first_loss"] == rows[0]["loss"] and report["last_loss"] == rows[-1]["loss"]
    with pytest.raises(rg.RecmasError, match="past --steps"):
        train_links(other, "inner", DATA, tmp_path / "r", TrainConfig(steps=6, lr=1e-2, warmup=1, save_every=2),
                    resume=True)


def test_an_outer_loop_without_latent_paths_is_refused_and_an_early_stop_can_start_again(tmp_path: Path,
                                                                                          registry) -> None:
    spec = rg.compile("distillation").spec.model_dump()
    for edge in spec["edges"]:
        if edge["source"] == "expert":
            edge["medium"] = "text"  # the learner answers; its only input now comes as text
    system = rg.compile(spec).build(models="tiny", seed=0)
    with pytest.raises(rg.RecmasError, match="does not depend on any trained link"):
        train_links(system, "outer", DATA[:2], tmp_path / "t", TrainConfig(steps=1, warmup=0), rounds=1,
                    latent_steps=1, heldout=0)
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0, "lr": 0.1}\n')  # no checkpoint
    plain = rg.compile("distillation").build(models="tiny", seed=0)
    report = train_links(plain, "inner", DATA, tmp_path / "early", TrainConfig(steps=2, warmup=0, save_every=2))
    assert report.steps == 2 and len(_metrics(tmp_path / "early")) == 2


def test_files_that_are_not_utf8_are_named(tmp_path: Path) -> None:
    from recmas_graph.train import corpus_from_file

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"question": "q", "answer": "a"}\n{"question": "caf\xe9", "answer": "a"}\n')
    with pytest.raises(rg.RecmasError, match="line 2 of bad.jsonl is not UTF-8"):
        read_train_data(bad)
    with pytest.raises(rg.RecmasError, match="not UTF-8"):
        corpus_from_file(bad)


def _outer_grads(system) -> dict[str, torch.Tensor]:
    return {e: link.residual_proj.weight.grad.clone() for e, link in system.outer_links.items()}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(registry) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0)
    _sensitive(system)
    for link in system.inner_links.values():
        link.requires_grad_(False)
    results, saved = [], []
    for checkpoint in (False, True):
        system.zero_grad(set_to_none=True)
        kept = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            kept[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss, _ = AnswerObjective(system, rounds=2, latent_steps=3, checkpoint=checkpoint)(DATA[:2])
        loss.backward()
        results.append((float(loss.detach()), _outer_grads(system)))
        saved.append(kept[0])
    (plain, g_plain), (ckpt, g_ckpt) = results
    assert abs(plain - ckpt) < 1e-6
    assert saved[1] < 0.2 * saved[0]  # the frozen models' activations are not kept for backward
    for edge_id in g_plain:
        assert float(g_plain[edge_id].abs().sum()) > 0, edge_id
        torch.testing.assert_close(g_ckpt[edge_id], g_plain[edge_id], rtol=1e-4, atol=1e-7)


PLANNED = [TrainSample(s.id, s.question, s.answer, {"plan": f"Add {s.id} to itself.", "refined_plan": f"{s.id} twice."})
           for s in DATA]


def test_intermediate_target_losses_add_the_weighted_agents_losses(registry) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0)
    _sensitive(system)
    q, a = [s.question for s in PLANNED[:2]], [s.answer for s in PLANNED[:2]]
    plans = [s.targets["plan"] for s in PLANNED[:2]]
    losses = system.target_losses(q, a, {"planner": plans}, rounds=2, latent_steps=2)
    assert set(losses) == {"planner", "solver"} and losses["planner"][1] > 0
    # the planner's target loss is its teacher-forced NLL of the plan after its round-2 prompt
    value = {k: float(v[0].detach()) for k, v in losses.items()}
    assert abs(value["solver"] - float(system.answer_loss(q, a, rounds=2, latent_steps=2).detach())) < 1e-5
    assert abs(value["planner"] - value["solver"]) > 1e-3  # a different text, a different loss
    # the objective adds weight x the planner's loss (the role field 'plan' of the data is used)
    total, _ = AnswerObjective(system, rounds=2, latent_steps=2, weights={"planner": 0.5})(PLANNED[:2])
    assert abs(float(total.detach()) - (value["solver"] + 0.5 * value["planner"])) < 1e-4
    # the planner's own loss reaches the outer link into it (solver -> planner, from round 1)
    system.zero_grad(set_to_none=True)
    losses["planner"][0].backward()
    feedback = next(e for e, edge in system.compiled.edges.items() if edge.target == "planner")
    assert float(system.outer_links[feedback].residual_proj.weight.grad.abs().sum()) > 0


def test_target_weights_are_checked_before_training(tmp_path: Path, registry) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0)
    config = TrainConfig(steps=1, save_every=1, eval_every=1)
    with pytest.raises(rg.RunError, match="no intermediate agent 'solver'"):
        train_links(system, "outer", PLANNED, tmp_path / "a", config, target_weights={"solver": 1.0})
    with pytest.raises(rg.RunError, match="no target text for agent 'critic'"):
        train_links(system, "outer", DATA, tmp_path / "b", config, target_weights={"critic": 1.0})
    with pytest.raises(rg.RunError, match="outer loop"):
        train_links(system, "inner", PLANNED, tmp_path / "c", config, target_weights={"planner": 1.0})
    assert not (tmp_path / "b" / "metrics.jsonl").exists()
    data = tmp_path / "planned.jsonl"
    data.write_text("".join(json.dumps({"question": s.question, "answer": s.answer, **s.targets}) + "\n" for s in PLANNED))
    assert main(["train", "outer", "sequential_light", "--models", "tiny", "--data", str(data), "-o",
                 str(tmp_path / "cli"), "--steps", "1", "--rounds", "1", "--latent-steps", "2",
                 "--target-weight", "planner=zero"]) == 2
    assert main(["train", "outer", "sequential_light", "--models", "tiny", "--data", str(data), "-o",
                 str(tmp_path / "cli"), "--steps", "2", "--rounds", "1", "--latent-steps", "2", "--batch-size", "2",
                 "--target-weight", "planner=0.5", "--target-weight", "critic=0.5", "--gradient-checkpointing"]) == 0
    report = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert report["run"]["target_weights"] == {"critic": 0.5, "planner": 0.5} and report["steps"] == 2


def test_validation_scores_without_an_autograd_graph(registry) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0)
    objective = AnswerObjective(system, rounds=1, latent_steps=2)
    with torch.no_grad():
        scored, _ = objective(DATA[:2])
    trained, _ = objective(DATA[:2])
    assert scored.grad_fn is None and trained.grad_fn is not None
    assert abs(float(scored) - float(trained.detach())) < 1e-6


def test_training_puts_back_which_links_were_trainable(tmp_path: Path, registry) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0)
    assert all(p.requires_grad for p in system.inner_links.parameters())
    train_links(system, "outer", DATA[:2], tmp_path / "o", TrainConfig(steps=1, save_every=1, eval_every=1),
                heldout=0, rounds=1, latent_steps=2)
    assert all(p.requires_grad for p in system.inner_links.parameters())
    assert all(p.requires_grad for p in system.outer_links.parameters())
