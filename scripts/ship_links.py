"""Ship a trained system's links with the package: topologies/NAME.json + topologies/links/NAME/.

Reads the folder `recmas train` wrote (its topology.json, links/ and report.json), stores every link
at half precision (float16: half the size; the links load back in float32, the dtype they were
trained in) under topologies/links/NAME/, writes topologies/NAME.json pointing at them by relative
path, and records the recipe in topologies/links/NAME/recipe.json: the training report (config,
data fingerprint, losses), the sha256 of the training data and of every shipped file, and the
largest rounding the half precision made. tests/test_shipped_links.py checks the files against it.

Usage: python scripts/ship_links.py TRAINED_DIR NAME --recipe scripts/train_mini_links.sh --data TRAIN.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from safetensors.torch import load_file

from recmas_graph.runtime.links.checkpoints import recast_link
from recmas_graph.topology.spec import TopologySpec, dump_topology, read_topology_file

ROOT = Path(__file__).resolve().parent.parent
STORAGE = "float16"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trained", type=Path, help="the folder recmas train wrote")
    parser.add_argument("name", help="the shipped topology's name")
    parser.add_argument("--recipe", type=Path, required=True, help="the script that trained it")
    parser.add_argument("--data", type=Path, required=True, help="the training JSONL it was trained on")
    parser.add_argument("--description", default=None)
    args = parser.parse_args()

    spec = read_topology_file(args.trained / "topology.json")
    report_path = args.trained / "report.json"  # absent for a calibrated-only folder
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    folder = ROOT / "topologies" / "links" / args.name
    folder.mkdir(parents=True, exist_ok=True)
    data = spec.model_dump(mode="json")
    links = [a["inner_link"] for a in data["agents"]] + [e["link"] for e in data["edges"] if e.get("link")]
    files: dict[str, str] = {}
    rounding = 0.0
    for link in links:
        if not link.get("weights"):
            continue
        source = args.trained / link["weights"]
        target = folder / Path(link["weights"]).name
        recast_link(source, target, STORAGE)
        full, half = load_file(str(source)), load_file(str(target))
        rounding = max([rounding] + [float((full[k] - half[k].float()).abs().max()) for k in full])
        link["weights"] = f"links/{args.name}/{target.name}"
        files[target.name] = sha256(target)
        files[target.with_suffix(".json").name] = sha256(target.with_suffix(".json"))
    steps = report.get("steps", 0)
    data["name"] = args.name
    data["description"] = args.description or (
        f"{spec.description.split(' Links:')[0]} Links trained on ARC-Easy/ARC-Challenge validation "
        f"(closed-form calibration, then {steps} outer-loop steps; recipe: {args.recipe.as_posix()}).")
    shipped = TopologySpec.model_validate(data)
    dump_topology(shipped, ROOT / "topologies" / f"{args.name}.json")
    recipe = {
        "name": args.name, "recipe": args.recipe.as_posix(), "storage_dtype": STORAGE,
        "max_abs_rounding": rounding, "files": files,
        "data": {"sha256": sha256(args.data), "lines": sum(1 for _ in args.data.open(encoding="utf-8"))},
        "training": report,
    }
    (folder / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    total = sum((folder / f).stat().st_size for f in files)
    print(f"wrote topologies/{args.name}.json and {len(files)} files in {folder} ({total / 1e6:.1f} MB); "
          f"largest float16 rounding {rounding:.2e}")


if __name__ == "__main__":
    main()
