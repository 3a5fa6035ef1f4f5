"""save_pretrained / from_pretrained: a saved folder rebuilds the same system."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import recmas_graph as rg
from recmas_graph import RunError
from recmas_graph.runtime.pretrained import CONFIG_NAME
from recmas_graph.runtime.sources.loaded import ModelCache
from recmas_graph.runtime.system import RecursiveSystem

STYLES = ["sequential_light", "sequential_scaled", "mixture", "distillation", "deliberation"]
OPTIONS = rg.RunOptions(rounds=2, latent_steps=2, greedy=True, max_new_tokens=6, text_message_tokens=4)


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


@pytest.mark.parametrize("name", STYLES)
def test_a_saved_system_gives_the_same_links_and_greedy_answers(name: str, tmp_path: Path, cache, registry) -> None:
    # seed 3: links that differ from a fresh build's default seed, so the weights must come from the files
    system = registry.compile(name).build(models="tiny", seed=3, model_cache=cache)
    folder = system.save_pretrained(tmp_path / "saved")
    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    assert config["format_version"] == 1 and config["versions"]["torch"] == torch.__version__
    back = RecursiveSystem.from_pretrained(folder, registry=registry, model_cache=cache)
    fresh = registry.compile(name).build(models="tiny", seed=0, model_cache=cache)
    want, got = system.state_dict(), back.state_dict()
    assert want.keys() == got.keys() and want
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert any(not torch.equal(want[k], fresh.state_dict()[k]) for k in want)  # the files, not the seed
    questions = ["What is 2 + 3?", "Is 7 prime?"]
    assert back.run(questions, OPTIONS).answers == system.run(questions, OPTIONS).answers


def test_links_stored_at_half_precision_load_back_in_float32(tmp_path: Path, cache, registry) -> None:
    from recmas_graph.runtime.links.checkpoints import read_link_config, recast_link

    system = registry.compile("sequential_light").build(models="tiny", seed=3, model_cache=cache)
    full = system.save_pretrained(tmp_path / "full")
    half = system.save_pretrained(tmp_path / "half", link_dtype="float16")
    files = sorted(p.name for p in (full / "links").glob("*.safetensors"))
    assert files and files == sorted(p.name for p in (half / "links").glob("*.safetensors"))
    for name in files:  # half the bytes (a small header aside), and the config says what it runs in
        assert (half / "links" / name).stat().st_size < 0.55 * (full / "links" / name).stat().st_size
        assert read_link_config(half / "links" / name)["dtype"] == "float32"
    back = RecursiveSystem.from_pretrained(half, registry=registry, model_cache=cache)
    want = system.state_dict()
    for key, value in back.state_dict().items():
        assert value.dtype == want[key].dtype == torch.float32
        assert torch.allclose(value, want[key].half().float())  # exactly the float16 rounding of the trained value
    recast = recast_link(full / "links" / files[0], tmp_path / "r" / files[0], "float16")
    from safetensors.torch import load_file

    made, saved = load_file(str(recast)), load_file(str(half / "links" / files[0]))
    assert made.keys() == saved.keys() and all(torch.equal(made[k], saved[k]) for k in made)
    assert read_link_config(recast) == read_link_config(half / "links" / files[0])
    with pytest.raises(rg.RecmasError, match="unknown storage dtype"):
        recast_link(full / "links" / files[0], tmp_path / "r2" / files[0], "int8")


def test_top_level_from_pretrained_and_recmas_run_read_the_folder(tmp_path: Path, cache, registry) -> None:
    system = registry.compile("distillation").build(models="tiny", seed=5, model_cache=cache)
    folder = system.save_pretrained(tmp_path / "d")
    back = rg.from_pretrained(folder, registry=registry, model_cache=cache)
    assert back.run(["Q?"], OPTIONS).answers == system.run(["Q?"], OPTIONS).answers
    from recmas_graph.cli import main

    out = tmp_path / "answers.jsonl"
    assert main(["run", str(folder / "topology.json"), "-q", "Q?", "--rounds", "2", "--latent-steps", "2",
                 "--greedy", "--max-new-tokens", "6", "--text-message-tokens", "4", "-o", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["answer"] == system.run(["Q?"], OPTIONS).answers[0]


def test_a_folder_that_is_not_a_saved_system_is_named(tmp_path: Path, registry) -> None:
    with pytest.raises(RunError, match=CONFIG_NAME):
        rg.from_pretrained(tmp_path, registry=registry)
    (tmp_path / CONFIG_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(RunError, match="not valid JSON"):
        rg.from_pretrained(tmp_path, registry=registry)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"format": "recmas_graph.system", "format_version": 99,
                                                    "topology": "topology.json"}), encoding="utf-8")
    with pytest.raises(RunError, match="newer"):
        rg.from_pretrained(tmp_path, registry=registry)


def test_saving_a_low_memory_system_loads_no_model(tmp_path: Path, registry) -> None:
    system = registry.compile("sequential_light").build(models="tiny", low_memory=True)
    loads = system.residency.loads
    system.save_pretrained(tmp_path / "lm")
    assert system.residency.loads == loads  # widths come from the build's records, not from reloaded models
    back = rg.from_pretrained(tmp_path / "lm", registry=registry, low_memory=True)
    assert all(torch.equal(a, b) for a, b in zip(system.state_dict().values(), back.state_dict().values()))


def test_a_system_assembled_by_hand_saves_and_loads(tmp_path: Path, cache, registry) -> None:
    built = registry.compile("distillation").build(models="tiny", seed=4, model_cache=cache)
    system = RecursiveSystem(built.compiled, built.agents, dict(built.inner_links), dict(built.outer_links))
    assert not system.model_facts  # only the builders record them: widths come from the agents
    back = RecursiveSystem.from_pretrained(system.save_pretrained(tmp_path / "h"), registry=registry, model_cache=cache)
    assert all(torch.equal(a, b) for a, b in zip(system.state_dict().values(), back.state_dict().values()))
