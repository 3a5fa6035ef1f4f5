"""The trained links shipped with the package are the ones its recipe made (CI does not retrain).

topologies/links/NAME/recipe.json (written by scripts/ship_links.py) records the sha256 of every
shipped file, of the training data and the training run's report; these tests check the files
against it, rebuild the training data with the recipe's own `data make` lines, and check that the
data stays off every test split and that the recipe's training line is the run that was shipped.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

from safetensors.torch import load_file

from recmas_graph.cli import main
from recmas_graph.eval.datasets import resolve_dataset
from recmas_graph.runtime.links.build import check_link_weights
from recmas_graph.runtime.links.checkpoints import read_link_config
from recmas_graph.runtime.sources.packaged import packaged_hidden_size
from recmas_graph.topology.spec import read_topology_file

ROOT = Path(__file__).resolve().parent.parent
NAME = "sequential_light_mini_trained"
TOPOLOGY = ROOT / "topologies" / f"{NAME}.json"
FOLDER = ROOT / "topologies" / "links" / NAME
RECIPE = json.loads((FOLDER / "recipe.json").read_text(encoding="utf-8"))
SCRIPT = ROOT / RECIPE["recipe"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _script_lines(command: str) -> list[list[str]]:
    """The recipe script's `"$RECMAS" COMMAND ...` lines (continuations joined), as argument lists."""
    text = SCRIPT.read_text(encoding="utf-8").replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in text.splitlines() if line.startswith(f'"$RECMAS" {command}')]


def test_every_shipped_file_is_the_recorded_one_and_fits_the_packaged_models() -> None:
    spec = read_topology_file(TOPOLOGY)
    weights = [a.inner_link.weights for a in spec.agents] + [e.link.weights for e in spec.edges]
    assert all(w and w.startswith(f"links/{NAME}/") for w in weights)  # every link trained, shipped beside
    assert sorted(RECIPE["files"]) == sorted(p.name for p in FOLDER.iterdir() if p.name != "recipe.json")
    for name, digest in RECIPE["files"].items():
        assert _sha(FOLDER / name) == digest, f"{name} is not the file the recipe shipped"
    for weight in weights:
        path = TOPOLOGY.parent / weight
        assert read_link_config(path)["dtype"] == "float32"  # stored at half precision, runs as trained
        assert {t.dtype for t in load_file(str(path)).values()} == {__import__("torch").float16}
    sizes = {a.name: packaged_hidden_size(a.model) for a in spec.agents}
    assert sorted(set(sizes.values())) == [576, 640]  # Gemma-3-270M and SmolLM2-135M
    check_link_weights(spec, sizes, TOPOLOGY.parent)  # raises when a shape does not fit


def test_the_recipe_rebuilds_the_training_data_off_every_test_split(tmp_path: Path, registry) -> None:
    parts = []
    for args in _script_lines("data make"):
        out = tmp_path / Path(args[args.index("-o") + 1]).name
        args[args.index("-o") + 1] = str(out)
        assert main(args) == 0
        parts.append(out)
    data = tmp_path / "train.jsonl"
    data.write_bytes(b"".join(p.read_bytes() for p in parts))
    assert _sha(data) == RECIPE["data"]["sha256"]
    lines = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    native = {line["id"].split("/", 1)[1] for line in lines}
    questions = {line["question"] for line in lines}
    from recmas_graph.eval.likelihood import choice_question

    for test_set in ("arc_easy", "arc_challenge"):  # the test splits the README and docs evaluate on
        samples = resolve_dataset(test_set, registry).load(None)
        assert not native & {s.id.split("/", 1)[1] for s in samples}, f"training questions found in {test_set} test"
        shared = questions & {choice_question(s).question for s in samples}
        # ARC itself repeats two stems (other questions: other options and answers) between
        # ARC-Challenge validation and test; none with ARC-Easy test, the README's evaluation
        assert len(shared) <= (2 if test_set == "arc_challenge" else 0), shared


def test_the_recipe_trains_as_the_shipped_run_was_trained() -> None:
    (train,) = _script_lines("train outer")
    flags = {train[i]: train[i + 1] for i in range(len(train) - 1) if train[i].startswith("--")}
    config, run = RECIPE["training"]["config"], RECIPE["training"]["run"]
    assert RECIPE["training"]["steps"] == config["steps"] == int(flags["--steps"])
    assert config["batch_size"] == int(flags["--batch-size"]) and config["lr"] == float(flags["--lr"])
    assert config["warmup"] == int(flags["--warmup"]) and config["seed"] == int(flags["--seed"])
    assert run["task"] == flags["--task"] and run["heldout"] == float(flags["--heldout"])
    assert RECIPE["training"]["val_loss"] < RECIPE["training"]["first_loss"]
    assert re.search(rf"ship_links\.py .* {NAME} ", SCRIPT.read_text(encoding="utf-8"))
