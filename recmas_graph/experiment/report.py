"""The report of an experiment: per system, means and spreads over seeds, paired tests, cost.

:func:`build_report` reads the finished stages of a :class:`~.plan.Plan` (each eval stage's
``done.json`` and ``questions.jsonl``, each training stage's ``done.json``) into one row per system
and baseline:

- ``accuracy``, ``acc_norm`` and ``answer_nll`` (the gold option's negative log-likelihood per token,
  when scored by likelihood): the mean over seeds (``*_mean``) and the sample standard deviation
  (``*_std``; ``None`` with one seed), and each seed's value under ``seeds``;
- ``paired``: against the reference row, on the same questions: McNemar's exact test on ``acc``
  (and on ``acc_norm`` under ``norm``) pooled over seeds (each seed-question pair counts once: the
  pairs are matched by seed and question), each seed's own test under ``per_seed``, and an exact
  sign test on the per-question answer NLL under ``nll`` (``lower``: questions where this row's NLL
  is lower than the reference's);
- cost: generated tokens and latent steps per question, seconds per question (evaluation) and the
  seconds its training stages took (means over seeds);
- ``recipe`` and the ``overrides`` of the experiment's recipe that apply to it.

:func:`write_report` writes ``report.json``, ``report.csv``, ``report.md`` and the two plots
(:mod:`.plots`). Seconds are the only values that differ between two runs of one experiment.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._files import write_json_atomic
from ..eval.stats import mcnemar_exact, paired_counts, paired_sign_counts
from .plan import Plan, Row
from .stages import StageStore

__all__ = ["build_report", "write_report", "TIMING_KEYS", "CSV_KEYS"]

#: The keys whose values are seconds (they differ between two runs of the same experiment).
TIMING_KEYS: tuple[str, ...] = ("seconds_per_question", "train_s")

#: The columns of report.csv (then ``accuracy@SEED`` per seed).
CSV_KEYS: tuple[str, ...] = (
    "label", "kind", "topology", "accuracy_mean", "accuracy_std", "acc_norm_mean", "acc_norm_std", "answer_nll_mean",
    "answer_nll_std", "n", "p_value", "p_norm", "p_nll", "only_this", "only_reference", "tokens_per_question",
    "latent_steps_per_question", "seconds_per_question", "train_s", "overrides")


def _mean(values: Sequence[float | None]) -> float | None:
    got = [float(v) for v in values if v is not None]
    return sum(got) / len(got) if got else None


def _std(values: Sequence[float | None]) -> float | None:
    got = [float(v) for v in values if v is not None]
    return statistics.stdev(got) if len(got) >= 2 else None


def _questions(store: StageStore, key_name: str) -> list[dict[str, Any]]:
    path = store.final(key_name) / "questions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _test(n: int, b: int, c: int) -> dict[str, Any]:
    return {"n": n, "only_this": b, "only_reference": c, "p_value": mcnemar_exact(b, c)}


def _paired(mine: Mapping[int, list[dict[str, Any]]], ref: Mapping[int, list[dict[str, Any]]]) -> dict[str, Any]:
    def flat(rows: Mapping[int, list[dict[str, Any]]], key: str) -> dict[str, Any]:
        return {f"{seed}/{q['id']}": q[key] for seed, qs in rows.items() for q in qs if key in q}

    out = _test(*paired_counts(flat(mine, "correct"), flat(ref, "correct")))
    norm_a, norm_b = flat(mine, "acc_norm"), flat(ref, "acc_norm")
    if norm_a and norm_b:
        out["norm"] = _test(*paired_counts(norm_a, norm_b))
    nll_a, nll_b = flat(mine, "answer_nll"), flat(ref, "answer_nll")
    if nll_a and nll_b:
        n, higher, lower = paired_sign_counts(nll_a, nll_b)  # (n, this higher, reference higher)
        out["nll"] = {"n": n, "lower": lower, "higher": higher, "p_value": mcnemar_exact(lower, higher)}
    out["per_seed"] = {str(seed): _test(*paired_counts({q["id"]: q["correct"] for q in mine[seed]},
                                                       {q["id"]: q["correct"] for q in ref[seed]}))
                       for seed in mine if seed in ref}
    return out


def _row(plan: Plan, row: Row, store: StageStore) -> tuple[dict[str, Any], dict[int, list[dict[str, Any]]]]:
    seeds: dict[str, Any] = {}
    questions: dict[int, list[dict[str, Any]]] = {}
    for seed in plan.spec.seeds:
        ev = plan.stage(row.evals[seed])
        result = store.record(ev)["result"]
        qs = _questions(store, ev.name)
        questions[seed] = qs
        n = max(int(result["n"]), 1)
        train: dict[str, Any] = {}
        train_s = 0.0
        for key in row.trains.get(seed, ()):
            stage = plan.stage(key)
            done = store.record(stage)["result"]
            train_s += float(done.get("wall_s") or 0.0)
            if stage.kind in ("inner", "outer"):
                train[stage.kind] = {k: done.get(k) for k in ("steps", "first_loss", "last_loss", "val_loss")}
            else:
                train[stage.kind] = {"links": len(done.get("links", ())), "texts": done.get("texts")}
        seeds[str(seed)] = {
            "accuracy": result["accuracy"], "acc_norm": result.get("acc_norm"), "answer_nll": result.get("answer_nll"),
            "n": result["n"], "tokens_per_question": result["generated_tokens"] / n,
            "latent_steps_per_question": result["latent_steps"] / n,
            "seconds_per_question": result.get("per_sample_s"), "train_s": round(train_s, 3), "train": train,
            "stages": [plan.stage(k).name for k in (*row.trains.get(seed, ()), row.evals[seed])]}
    per = list(seeds.values())
    out: dict[str, Any] = {"label": row.label, "kind": row.kind, "topology": row.topology, "ref": row.ref,
                           "baseline": row.baseline, "of": row.of, "recipe": row.recipe, "overrides": row.overrides}
    for metric in ("accuracy", "acc_norm", "answer_nll"):
        values = [s[metric] for s in per]
        out[f"{metric}_mean"], out[f"{metric}_std"] = _mean(values), _std(values)
    out["n"] = per[0]["n"] if per else 0
    for metric in ("tokens_per_question", "latent_steps_per_question", "seconds_per_question", "train_s"):
        out[metric] = _mean([s[metric] for s in per])
    out["seeds"] = seeds
    return out, questions


def build_report(plan: Plan) -> dict[str, Any]:
    """The report of a finished experiment (every stage of ``plan`` done); see the module docstring."""
    store = plan.store
    rows, questions = [], {}
    for row in plan.rows:
        data, qs = _row(plan, row, store)
        rows.append(data)
        questions[row.label] = qs
    for data in rows:
        data["paired"] = (None if data["label"] == plan.reference
                          else _paired(questions[data["label"]], questions[plan.reference]))
    spec = plan.spec
    return {"name": spec.name, "description": spec.description, "build": plan.build, "seeds": list(spec.seeds),
            "reference": plan.reference,
            "train": spec.train.model_dump() if spec.train is not None else None,
            "recipe": spec.recipe.model_dump(),
            "eval": {**spec.eval.model_dump(), "scoring": plan.scoring, "questions": plan.eval_questions},
            "rows": rows}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _pm(mean: float | None, std: float | None, pct: bool = True) -> str:
    if mean is None:
        return "-"
    scale = 100 if pct else 1
    text = f"{scale * mean:.1f}" if pct else f"{mean:.4f}"
    if std is not None:
        text += f" ± {scale * std:.1f}" if pct else f" ± {std:.4f}"
    return text


def _p(test: Mapping[str, Any] | None) -> str:
    return "-" if not test else f"{test['p_value']:.3g}"


def _markdown(report: Mapping[str, Any]) -> str:
    ref = report["reference"]
    rows = report["rows"]
    seeds = report["seeds"]
    ev = report["eval"]
    lines = [f"# Experiment: {report['name']}", ""]
    if report["description"]:
        lines += [report["description"], ""]
    models = report["build"].get("models")
    lines += [f"{len(rows)} rows, seeds {', '.join(map(str, seeds))}; evaluated on {ev['questions']} questions of "
              f"`{ev['dataset']}`" + (f" ({ev['split']})" if ev.get("split") else "")
              + f" by {ev['scoring']}"
              + (f"; models: `{models}`" if models else "") + f". Reference of the paired tests: `{ref}`.", ""]
    lines += ["| system | acc % (mean ± sd) | p vs ref | acc_norm % | p norm | answer NLL/token | NLL lower/higher "
              "than ref (p) | tokens/q | latent/q | s/q | train s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        paired = r.get("paired") or {}
        nll = paired.get("nll")
        lines.append(
            f"| {r['label']} | {_pm(r['accuracy_mean'], r['accuracy_std'])} | {_p(paired or None)} | "
            f"{_pm(r['acc_norm_mean'], r['acc_norm_std'])} | {_p(paired.get('norm'))} | "
            f"{_pm(r['answer_nll_mean'], r['answer_nll_std'], pct=False)} | "
            + (f"{nll['lower']}/{nll['higher']} ({nll['p_value']:.3g})" if nll else "-")
            + f" | {r['tokens_per_question']:.1f} | {r['latent_steps_per_question']:.1f} | "
            f"{(r['seconds_per_question'] or 0):.2f} | {(r['train_s'] or 0):.0f} |")
    lines += ["", "p: McNemar's exact test against the reference, pooled over seeds (each seed and question "
                  "once); NLL: an exact sign test over the same pairs; sd: over seeds.", ""]
    lines += ["## Per seed", "", "| system | " + " | ".join(f"acc % seed {s}" for s in seeds) + " | "
              + " | ".join(f"p seed {s}" for s in seeds) + " |",
              "|---|" + "---:|" * (2 * len(seeds))]
    for r in rows:
        per_seed = (r.get("paired") or {}).get("per_seed", {})
        lines.append(f"| {r['label']} | " + " | ".join(_pct(r["seeds"][str(s)]["accuracy"]) for s in seeds) + " | "
                     + " | ".join(_p(per_seed.get(str(s))) for s in seeds) + " |")
    lines += ["", "## Recipe", "", "```json", json.dumps(report["recipe"], indent=2), "```", ""]
    over = [r for r in rows if r["overrides"]]
    if over:
        lines += ["Overrides of the recipe:", ""]
        lines += [f"- `{r['label']}`: " + ", ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in r["overrides"].items())
                  for r in over]
    else:
        lines += ["Every system follows this recipe (no overrides)."]
    baselines = [r for r in rows if r["kind"] == "baseline"]
    if baselines:
        lines += ["", "Baselines: " + "; ".join(
            f"`{r['label']}` ({'the ' + r['baseline'] + ' baseline of'} "
            f"{'system' if r['of'] in {x['label'] for x in rows} else 'topology'} `{r['of']}`)" for r in baselines)
            + ". A system's baseline uses that system's links of the same seed."]
    if report["train"]:
        t = report["train"]
        lines += ["", f"Training data: `{t['dataset']}`" + (f" ({t['split']})" if t.get("split") else "")
                  + f", {t['limit']} samples (skip {t['skip']}), answers `{t['answers']}`, {t['heldout']:.0%} held "
                    "out for the validation loss."]
    lines += ["", "![training](training.png)", "", "![accuracy against cost](accuracy_cost.png)", ""]
    return "\n".join(lines)


def _csv(report: Mapping[str, Any], path: Path) -> None:
    seeds = report["seeds"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_KEYS) + [f"accuracy@{s}" for s in seeds])
        writer.writeheader()
        for r in report["rows"]:
            paired = r.get("paired") or {}
            flat = {k: r.get(k) for k in CSV_KEYS if k in r}
            flat.update(p_value=paired.get("p_value"), p_norm=(paired.get("norm") or {}).get("p_value"),
                        p_nll=(paired.get("nll") or {}).get("p_value"), only_this=paired.get("only_this"),
                        only_reference=paired.get("only_reference"), overrides=json.dumps(r["overrides"]))
            flat.update({f"accuracy@{s}": r["seeds"][str(s)]["accuracy"] for s in seeds})
            writer.writerow(flat)


def write_report(plan: Plan) -> tuple[dict[str, Any], list[Path]]:
    """Build the report and write ``report.json``, ``report.csv``, ``report.md``, ``training.png`` and
    ``accuracy_cost.png`` into the experiment folder; returns the report and the files written."""
    from .plots import plot_accuracy_cost, plot_training

    report = build_report(plan)
    out = plan.out
    write_json_atomic(out / "report.json", report)
    _csv(report, out / "report.csv")
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    files = [out / "report.md", out / "report.csv", out / "report.json"]
    for made in (plot_training(plan, out / "training.png"), plot_accuracy_cost(report, out / "accuracy_cost.png")):
        if made is not None:
            files.append(made)
    return report, files
