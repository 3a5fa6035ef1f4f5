"""``recmas calibrate``: fit a topology's links in closed form on a corpus and write a runnable topology."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..errors import RunError
from . import app, console, err_console
from ._progress import progress as progress_for
from .options import device_option, parse_assignments
from .runtime import build_status

__all__ = ["calibrate_command", "train_app"]


@app.command("calibrate")
def calibrate_command(
    topology: Annotated[str, typer.Argument(metavar="TOPOLOGY", help="A registered topology name or a topology JSON file.",
                                            show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the links and topology.json.", show_default=False)],
    corpus: Annotated[Optional[Path], typer.Option("--corpus", help="Texts: a .txt file (one per line) or .jsonl "
                                                   "(text, or question/plan/refined_plan/answer).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Or a dataset's samples (question and "
                                                   "solution), e.g. gsm8k.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Another split of --dataset.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=2, help="Use at most this many texts.")] = 64,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=2, help="Tokens per text.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts per forward pass.")] = 8,
    skip_trained: Annotated[bool, typer.Option("--skip-trained", help="Leave links that already have weights as "
                                               "they are.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the held-out split and random projections.")] = 0,
    models: Annotated[Optional[str], typer.Option("--models", help="'tiny': every agent gets the tiny random model "
                                                  "of its family.")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="AGENT=REF (repeatable).")] = None,
    device: Annotated[Optional[list[str]], typer.Option("--device", help="'cpu', 'cuda', ... or AGENT=DEVICE.")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32, float16 or bfloat16.")] = None,
) -> None:
    """Fit every link in closed form (ridge regression) on a corpus; write the links and a runnable topology."""
    from ..plugins.manager import default_registry
    from ..train.calibration import calibrate
    from ..runtime.system import check_models
    from ..train.corpus import corpus_from_dataset, corpus_from_file

    if (corpus is None) == (dataset is None):
        raise RunError("give the texts to calibrate on: --corpus FILE or --dataset NAME (one of them)",
                       culprit="recmas calibrate", hint="e.g. --dataset gsm8k")
    check_models(models)
    registry = default_registry()
    texts = (corpus_from_file(corpus, limit=limit) if corpus is not None
             else corpus_from_dataset(str(dataset), registry, limit=limit, split=split))
    compiled = registry.compile(topology)
    with console.status("loading models...") as status:
        system = compiled.build(models=models, model=parse_assignments(model or [], "--model"),
                                device=device_option(device or []), dtype=dtype, seed=seed,
                                on_model=build_status(status))
    with progress_for(err_console) as progress:
        bar = progress.add_task("", total=None)

        def report(stage: str, done: int, total: int) -> None:
            progress.update(bar, description=stage, completed=done, total=total)

        try:
            result = calibrate(system, texts, out=out, seed=seed, max_tokens=max_tokens, batch_size=batch_size,
                               skip_trained=skip_trained, progress=report)
        except KeyboardInterrupt:
            err_console.print(Text("interrupted: nothing was written", style="bold yellow"))
            raise typer.Exit(130) from None
    console.print(_table(result))
    console.print(Text(f"wrote {result.topology} (run it: recmas run {result.topology} -q ...)"), soft_wrap=True)


def _table(result: Any) -> Table:
    table = Table(title=f"links calibrated on {result.texts} texts (held-out link loss)", title_justify="left")
    for col, justify in (("link", "left"), ("pairs", "right"), ("before", "right"), ("calibrated", "right"),
                         ("ridge", "right")):
        table.add_column(col, justify=justify)
    for fit in result.links:
        name = f"{fit.kind} {fit.name}"
        table.add_row(name, str(fit.pairs), f"{fit.loss_before:.3f}", f"{fit.loss_after:.3f}", f"{fit.ridge:g}")
    return table


train_app = typer.Typer(name="train", no_args_is_help=True,
                        help="Train links with the LLMs frozen: the inner loop or the outer loop (resumable).")
app.add_typer(train_app, name="train")


def _train(kind: str, topology: str, data: Path, out: Path, *, steps: int, batch_size: int, accumulate: int, lr: float,
           warmup: int, weight_decay: float, grad_clip: float, eval_every: int, save_every: int, heldout: float,
           resume: bool, seed: int, task: str, rounds: Optional[int], latent_steps: Optional[int], max_tokens: int,
           models: Optional[str], model: Optional[list[str]], device: Optional[list[str]], dtype: Optional[str],
           target_weight: Optional[list[str]] = None, gradient_checkpointing: bool = False, workers: int = 1) -> None:
    from ..plugins.manager import default_registry
    from ..train.data import read_train_data
    from ..train.loop import TrainConfig
    from ..runtime.system import check_models
    from ..train.run import train_links

    check_models(models)
    weights: dict[str, float] = {}
    for agent, value in parse_assignments(target_weight or [], "--target-weight").items():
        try:
            weights[agent] = float(value)
        except ValueError:
            raise RunError(f"--target-weight {agent}={value}: the weight is not a number", culprit="--target-weight",
                           hint="e.g. --target-weight planner=0.5") from None
    config = TrainConfig(steps=steps, batch_size=batch_size, accumulate=accumulate, lr=lr, warmup=warmup,
                         weight_decay=weight_decay, grad_clip=grad_clip, eval_every=eval_every, save_every=save_every,
                         seed=seed)
    samples = read_train_data(data)
    compiled = default_registry().compile(topology)
    with console.status("loading models...") as status:
        system = compiled.build(models=models, model=parse_assignments(model or [], "--model"),
                                device=device_option(device or []), dtype=dtype, seed=seed,
                                on_model=build_status(status))
    last: dict[str, Any] = {}
    with progress_for(err_console, note=True) as progress:
        bar = progress.add_task(f"{kind} loop", total=steps, note="")

        def report(info: Any) -> None:
            last["step"] = info.step
            val = f" val {info.val_loss:.4f}" if info.val_loss is not None else ""
            progress.update(bar, completed=info.step, note=f"loss {info.loss:.4f}{val} lr {info.lr:.2e} "
                                                            f"{info.tokens_per_s:.0f} tok/s")

        try:
            result = train_links(system, kind, samples, out, config, heldout=heldout, resume=resume, task=task,
                                 rounds=rounds, latent_steps=latent_steps, max_tokens=max_tokens,
                                 target_weights=weights, gradient_checkpointing=gradient_checkpointing,
                                 workers=workers, progress=report)
        except KeyboardInterrupt:
            saved = sorted((out / "checkpoints").glob("step_*.pt")) if (out / "checkpoints").is_dir() else []
            where = (f"the last checkpoint is {saved[-1].name}; add --resume to continue from it" if saved else
                     f"no checkpoint yet (one every {save_every} steps); run the same command to start again")
            err_console.print(Text(f"interrupted after step {last.get('step', 0)}: {where}", style="bold yellow"),
                              soft_wrap=True)
            raise typer.Exit(130) from None
    table = Table(title=f"{kind} loop: {result.steps} steps in {result.wall_s:.1f} s"
                        + (f" (resumed at step {result.resumed_from})" if result.resumed_from else ""), title_justify="left")
    for col in ("first loss", "last loss", "held-out loss"):
        table.add_column(col, justify="right")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    table.add_row(fmt(result.first_loss), fmt(result.last_loss), fmt(result.val_loss))
    console.print(table)
    console.print(Text(f"wrote {out / 'topology.json'}, {out / 'metrics.jsonl'}, {out / 'report.json'}"), soft_wrap=True)


def _train_command(kind: str, summary: str) -> None:
    @train_app.command(kind, help=summary)
    def command(
        topology: Annotated[str, typer.Argument(metavar="TOPOLOGY", help="A registered topology name or a topology "
                                                "JSON file (e.g. a calibrated one).", show_default=False)],
        data: Annotated[Path, typer.Option("--data", help="JSONL: question, answer (and per-agent targets such as "
                                           "plan, refined_plan).", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for checkpoints, metrics and topology.json.",
                                          show_default=False)],
        steps: Annotated[int, typer.Option("--steps", min=1, help="Optimiser steps.")] = 100,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples per micro-batch.")] = 4,
        accumulate: Annotated[int, typer.Option("--accumulate", min=1, help="Micro-batches per step.")] = 1,
        lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = 1e-3,
        warmup: Annotated[int, typer.Option("--warmup", min=0, help="Warm-up steps before the cosine decay.")] = 10,
        weight_decay: Annotated[float, typer.Option("--weight-decay", min=0)] = 0.01,
        grad_clip: Annotated[float, typer.Option("--grad-clip", min=0, help="Gradient norm clip (0: off).")] = 1.0,
        eval_every: Annotated[int, typer.Option("--eval-every", min=1, help="Validation every N steps.")] = 25,
        save_every: Annotated[int, typer.Option("--save-every", min=1, help="Checkpoint every N steps.")] = 25,
        heldout: Annotated[float, typer.Option("--heldout", min=0, max=0.9, help="Share of --data held out.")] = 0.1,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the data order, split and link initialisation.")] = 0,
        task: Annotated[str, typer.Option("--task", help="Prompt set of the questions (outer loop).")] = "math",
        rounds: Annotated[Optional[int], typer.Option("--rounds", min=1, help="Recursion rounds (outer loop).")] = None,
        latent_steps: Annotated[Optional[int], typer.Option("--latent-steps", min=0, help="Latent steps (outer loop).")] = None,
        max_tokens: Annotated[int, typer.Option("--max-tokens", min=2, help="Tokens per target text (inner loop).")] = 256,
        models: Annotated[Optional[str], typer.Option("--models", help="'tiny': every agent gets the tiny random "
                                                      "model of its family.")] = None,
        model: Annotated[Optional[list[str]], typer.Option("--model", help="AGENT=REF (repeatable).")] = None,
        device: Annotated[Optional[list[str]], typer.Option("--device", help="'cpu', 'cuda', ... or AGENT=DEVICE.")] = None,
        dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32, float16 or bfloat16.")] = None,
        target_weight: Annotated[Optional[list[str]], typer.Option(
            "--target-weight", help="AGENT=W (outer loop, repeatable): add W x that intermediate agent's loss on its "
                                    "own target text (its name's or role's field in --data, e.g. plan).")] = None,
        gradient_checkpointing: Annotated[bool, typer.Option(
            "--gradient-checkpointing", help="Outer loop: keep no activations of the frozen models; recompute them "
                                             "in the backward pass (less memory, about one more forward).")] = False,
        workers: Annotated[int, typer.Option(
            "--workers", min=1, help="Data-parallel worker processes on this machine (each with its own copy of the "
                                     "models; one GPU each on CUDA): every --batch-size batch is shared between "
                                     "them, with the same updates as one process.")] = 1,
    ) -> None:
        _train(kind, topology, data, out, steps=steps, batch_size=batch_size, accumulate=accumulate, lr=lr,
               warmup=warmup, weight_decay=weight_decay, grad_clip=grad_clip, eval_every=eval_every,
               save_every=save_every, heldout=heldout, resume=resume, seed=seed, task=task, rounds=rounds,
               latent_steps=latent_steps, max_tokens=max_tokens, models=models, model=model, device=device, dtype=dtype,
               target_weight=target_weight, gradient_checkpointing=gradient_checkpointing, workers=workers)


_train_command("inner", "The inner loop: every agent's inner link learns h_t -> E[x_t+1] (1 - cos + MSE) on its "
                        "target text.")
_train_command("outer", "The outer loop: the system unrolled for its rounds; the answer's cross-entropy trains "
                        "every outer link.")


data_app = typer.Typer(name="data", no_args_is_help=True, help="Build training data files from packaged datasets.")
app.add_typer(data_app, name="data")


@data_app.command("make")
def data_make(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="A packaged dataset, e.g. gsm8k.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Training JSONL to write.", show_default=False)],
    train: Annotated[int, typer.Option("--train", min=1, help="Training samples.")] = 256,
    heldout: Annotated[int, typer.Option("--heldout", min=0, help="Held-out samples after them.")] = 0,
    heldout_out: Annotated[Optional[Path], typer.Option("--heldout-out", help="Where the held-out JSONL goes "
                                                        "(default: OUT with .heldout before .jsonl).")] = None,
    skip: Annotated[int, typer.Option("--skip", min=0, help="Leave out this many samples first.")] = 0,
    split: Annotated[Optional[str], typer.Option("--split", help="Another split of the dataset.")] = None,
    answers: Annotated[str, typer.Option("--answers", help="Multiple choice: 'written' (question with its options, "
                                         "'The answer is B. text') or 'cloze' (the question without its options, "
                                         "answered by the option's text: what likelihood scoring compares).")] = "written",
) -> None:
    """Write question/answer JSONL for `recmas train` from a dataset (answers: worked solutions where there are)."""
    from ..plugins.manager import default_registry
    from ..train.data import make_train_data, write_train_data

    train_items, held_items = make_train_data(dataset, default_registry(), train=train, heldout=heldout, skip=skip,
                                              split=split, answers=answers)
    written = [write_train_data(train_items, out)]
    if held_items:
        target = heldout_out or out.with_name(out.stem + ".heldout" + (out.suffix or ".jsonl"))
        written.append(write_train_data(held_items, target))
    counts = [len(train_items)] + ([len(held_items)] if held_items else [])
    console.print(Text("wrote " + ", ".join(f"{p} ({n} samples)" for p, n in zip(written, counts))), soft_wrap=True)
