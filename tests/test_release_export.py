"""Exporting links in the published layout: what export-release writes, import-release and the
reference file readers load back, and the system they build answers as the exported one did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import recmas_graph as rg
from recmas_graph.cli import main
from recmas_graph.release import ReleaseError, STYLES, export_release, load_release, matching_style, read_outerlink_config
from recmas_graph.runtime.agent.decoding import GenerationOptions
from recmas_graph.runtime.sources.loaded import ModelCache

GREEDY = GenerationOptions(max_new_tokens=4, do_sample=False)
Q = ["What is 2 + 3?"]


def _perturbed(system, seed: int = 1) -> None:
    """Links unlike their initialisation (the zero-initialised branches too), as trained ones are."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for link in [*system.inner_links.values(), *system.outer_links.values()]:
            for p in link.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("name,style,tasked", [("sequential_light", "sequential_light", True),
                                               ("mixture", "mixture", False)])
def test_exported_links_import_back_and_answer_the_same(name: str, style: str, tasked: bool, tmp_path: Path,
                                                        registry) -> None:
    system = rg.compile(name).build(models="tiny", seed=0)
    _perturbed(system)
    assert matching_style(system.spec).name == style
    root = export_release(system, tmp_path / "release", task="math")
    s = STYLES[style]
    for agent, repo in s.agent_repos.items():
        folder = root / repo
        assert (folder / "config.json").is_file() and (folder / ("adapter(math).pt" if tasked else "adapter.pt")).is_file()
        assert (folder / "innerlink_config.json").is_file() == tasked
    entries = read_outerlink_config(root / s.outer_repo / "outerlink_config.json", "math", style)
    assert {e.legacy_key for e in entries} == set(s.legacy_keys)
    back = load_release(style, root, views_dir=tmp_path / "views", model_cache=ModelCache(registry.model_sources),
                        registry=registry)
    for agent in system.agents:
        for key, value in system.inner_links[agent].state_dict().items():
            torch.testing.assert_close(back.inner_links[agent].state_dict()[key], value)
    for edge_id, link in system.outer_links.items():
        torch.testing.assert_close(back.outer_links[edge_id].residual_proj.weight, link.residual_proj.weight)
    want = system.run(Q, rounds=2, latent_steps=2, generation=GREEDY, keep_messages=True)
    got = back.run(Q, rounds=2, latent_steps=2, generation=GREEDY, keep_messages=True)
    assert got.answers == want.answers
    for key, message in want.messages.items():
        torch.testing.assert_close(got.messages[key], message, rtol=1e-5, atol=1e-6)


def test_topologies_of_no_released_style_or_other_link_types_are_refused(tmp_path: Path, registry) -> None:
    spec = (rg.TopologyBuilder("pair", rounds=1).agent("a", role="planner", model="tiny:llama")
            .agent("b", role="solver", model="tiny:qwen2").edge("a", "b", slot="plan").output("b").build())
    system = rg.compile(spec).build(seed=0)
    with pytest.raises(ReleaseError, match="no released style"):
        export_release(system, tmp_path / "x")
    with pytest.raises(ReleaseError, match="does not have the agents"):
        export_release(system, tmp_path / "x", style="distillation")


def test_cli_export_then_import_then_run(tmp_path: Path, capsys, registry) -> None:
    out = tmp_path / "release"
    assert main(["export-release", "distillation", "--models", "tiny", "-o", str(out), "--task", "code"]) == 0
    assert "recmas import-release distillation" in capsys.readouterr().out
    config = json.loads((out / STYLES["distillation"].outer_repo / "outerlink_config.json").read_text())
    assert set(config["tasks"]) == {"code"}
    topo = tmp_path / "imported.json"
    assert main(["import-release", "distillation", "--root", str(out), "--task", "code", "-o", str(topo),
                 "--views-dir", str(tmp_path / "views")]) == 0
    assert main(["run", str(topo), "-q", "What is 2 + 3?", "--rounds", "1", "--latent-steps", "1",
                 "--max-new-tokens", "2", "--greedy"]) == 0
    assert main(["export-release", "sequential_light", "--models", "tiny", "-o", str(tmp_path / "y"),
                 "--style", "mixture"]) == 2


def test_exports_of_two_tasks_into_one_folder_keep_both(tmp_path: Path, registry) -> None:
    system = rg.compile("distillation").build(models="tiny", seed=0)
    root = tmp_path / "release"
    export_release(system, root, task="math")
    export_release(system, root, task="code")
    s = STYLES["distillation"]
    for task in ("math", "code"):
        assert {e.legacy_key for e in read_outerlink_config(root / s.outer_repo / "outerlink_config.json", task,
                                                            "distillation")} == set(s.legacy_keys)
        inner = json.loads((root / s.agent_repos["expert"] / "innerlink_config.json").read_text())
        assert inner["tasks"][task] == {"adapter.pt": f"adapter({task}).pt"}
