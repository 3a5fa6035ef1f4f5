"""Links marked "calibrated:<dataset>" are fitted when first built and loaded from the cache after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import recmas_graph as rg
from recmas_graph.topology.spec import TopologySpec
from recmas_graph.train.cached import cache_folder, calibration_key, marked_links


def _spec(mark_outer: bool = True, corpus: str = "gsm8k") -> TopologySpec:
    data = json.loads((Path(__file__).parent.parent / "topologies" / "sequential_light_mini.json").read_text())
    for agent in data["agents"]:
        agent["inner_link"]["weights"] = f"calibrated:{corpus}"
    for edge in data["edges"]:
        edge["link"]["weights"] = f"calibrated:{corpus}" if mark_outer else None
    return TopologySpec.model_validate(data)


def _states(system) -> dict[str, torch.Tensor]:
    links = {**{f"inner/{k}": v for k, v in system.inner_links.items()},
             **{f"outer/{k}": v for k, v in system.outer_links.items()}}
    return {f"{n}.{k}": t.clone() for n, m in links.items() for k, t in m.state_dict().items()}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("RECMAS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_marked_links_are_fitted_once_then_loaded_from_the_cache(cache: Path, registry) -> None:
    told: list[tuple[str, str]] = []
    first = rg.compile(_spec()).build(models="tiny", seed=0, on_model=lambda a, r: told.append((a, r)))
    fits = [m for a, m in told if a == "links"]
    assert len(fits) == 1 and "calibrating 6 links on gsm8k" in fits[0]
    entries = [p for p in cache_folder().iterdir() if p.is_dir()]
    assert len(entries) == 1
    info = json.loads((entries[0] / "info.json").read_text())
    assert len(info["links"]) == 6 and all(f["loss_calibrated"] < f["loss_random"] for f in info["links"])
    told.clear()
    again = rg.compile(_spec()).build(models="tiny", seed=7, on_model=lambda a, r: told.append((a, r)))
    assert not [a for a, _ in told if a == "links"]  # from the cache
    want, got = _states(first), _states(again)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    random = _states(rg.compile("sequential_light_mini").build(models="tiny", seed=0))
    assert not torch.equal(random["inner/planner.proj2.weight"], want["inner/planner.proj2.weight"])
    answer = again.run(["What is 2 + 3?"], rounds=1, latent_steps=2, greedy=True, max_new_tokens=3).answers
    assert answer == first.run(["What is 2 + 3?"], rounds=1, latent_steps=2, greedy=True, max_new_tokens=3).answers


def test_the_key_follows_what_the_fit_builds_on(cache: Path, registry) -> None:
    # the outer links are not marked here: their (seeded random) values are part of the key
    a = rg.compile(_spec(mark_outer=False)).build(models="tiny", seed=0)
    b = rg.compile(_spec(mark_outer=False)).build(models="tiny", seed=1)
    assert marked_links(a) == {"gsm8k": [("inner", "planner"), ("inner", "critic"), ("inner", "solver")]}
    links = marked_links(a)["gsm8k"]
    assert calibration_key(a, "gsm8k", links) != calibration_key(b, "gsm8k", links)
    assert calibration_key(a, "gsm8k", links) != calibration_key(a, "math500", links)
    assert len([p for p in cache_folder().iterdir() if p.is_dir()]) == 2


def test_a_half_written_entry_is_not_used(cache: Path, registry) -> None:
    system = rg.compile(_spec()).build(models="tiny", seed=0)
    entry = next(p for p in cache_folder().iterdir() if p.is_dir())
    (entry / "info.json").unlink()  # as if killed before the entry was complete
    assert (entry / "links" / "inner_planner.safetensors").is_file()
    (entry / "links" / "inner_planner.safetensors").write_bytes(b"broken")
    told: list[str] = []
    again = rg.compile(_spec()).build(models="tiny", seed=0, on_model=lambda a, r: told.append(a))
    assert "links" in told and (entry / "info.json").is_file()
    assert torch.equal(again.inner_links["planner"].proj2.weight, system.inner_links["planner"].proj2.weight)


def test_bad_calibration_marks_are_named(cache: Path, registry) -> None:
    data = _spec().model_dump(mode="json")
    data["agents"][0]["inner_link"]["weights"] = "calibrated:"
    with pytest.raises(rg.TopologyError, match="name no dataset to calibrate on"):
        rg.compile(TopologySpec.model_validate(data))
    with pytest.raises(rg.RecmasError, match="gsm8kk"):
        rg.compile(_spec(corpus="gsm8kk")).build(models="tiny", seed=0)


def test_baselines_whose_agents_do_not_think_fit_nothing(cache: Path, registry) -> None:
    from recmas_graph.eval.baselines import all_text, single

    told: list[str] = []
    for spec in (single(_spec()), all_text(_spec())):
        rg.compile(spec).build(models="tiny", seed=0, on_model=lambda a, r: told.append(a))
    assert "links" not in told and not cache_folder().exists()


def test_parameterless_links_and_clashing_file_names_are_handled(cache: Path, registry) -> None:
    from recmas_graph.runtime.links.export import link_files

    data = _spec().model_dump(mode="json")
    data["agents"][1]["inner_link"] = {"type": "identity", "weights": "calibrated:gsm8k", "options": {}}
    system = rg.compile(TopologySpec.model_validate(data)).build(models="tiny", seed=0)  # identity: nothing to fit
    assert ("inner", "critic") not in marked_links(system)["gsm8k"]
    again = rg.compile(TopologySpec.model_validate(data)).build(models="tiny", seed=0)  # from the cache
    assert torch.equal(again.inner_links["planner"].proj2.weight, system.inner_links["planner"].proj2.weight)
    files = link_files([("outer", "a->b:c"), ("outer", "a->b-c"), ("inner", "a")])
    assert len(set(files.values())) == 3
