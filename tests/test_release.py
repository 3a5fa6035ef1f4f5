"""Published checkpoints: synthetic releases in the exact released layout, imported, run and checked.

Each fixture release mirrors the Hugging Face repos of the ``RecursiveMAS`` organisation: one folder
per agent (base model saved with ``save_pretrained`` + tokenizer, ``adapter(math).pt`` /
``adapter(code).pt`` or ``adapter.pt``, ``adapter_config.json``, ``innerlink_config.json`` for the
task-trained styles) and a ``*-Outerlinks`` folder (``outerlink_config.json`` + one ``.pt`` per legacy
key). Tiny random models of different families stand in for the real ones, so hidden sizes differ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from recmas_graph import compile_topology, read_topology_file
from recmas_graph.cli import main
from recmas_graph.errors import LinkError, RecmasError
from recmas_graph.runtime.agent.decoding import GenerationOptions
from recmas_graph.runtime.links.modules import InnerLnRes, OuterLnRes
from recmas_graph.runtime.sources.loaded import ModelCache, load_model
from recmas_graph.release import (
    STYLES,
    ReleaseError,
    download_commands,
    find_release_folder,
    import_release,
    load_release,
    model_view,
    read_outerlink_config,
    resolve_release,
    same_model_files,
)

GREEDY = GenerationOptions(max_new_tokens=3, do_sample=False)
TASKED = ("math", "code")

# The released layout, written out here on purpose (not taken from recmas_graph.release).
SEQUENTIAL_KEYS = {"outer_12": ("planner", "critic"), "outer_23": ("critic", "solver"),
                   "outer_31": ("solver", "planner")}
RELEASES: dict[str, dict] = {
    "sequential_light": {
        "paradigm": "sequential", "variant": "light", "tasked": True,
        "agents": {"planner": ("Sequential-Light-Planner-Qwen3-1.7B", "tiny:llama", "Planner"),
                   "critic": ("Sequential-Light-Critic-Llama3.2-1B", "tiny:qwen2", "Critic"),
                   "solver": ("Sequential-Light-Solver-Qwen2.5-Math-1.5B", "tiny:gemma3", "Solver")},
        "outer": "Sequential-Light-Outerlinks",
        "keys": SEQUENTIAL_KEYS,
    },
    "sequential_scaled": {
        "paradigm": "sequential", "variant": "scaled", "tasked": True,
        "agents": {"planner": ("Sequential-Scaled-Planner-Gemma3-4B", "tiny:gemma3", "Planner"),
                   "critic": ("Sequential-Scaled-Critic-Llama3.2-3B", "tiny:llama", "Critic"),
                   "solver": ("Sequential-Scaled-Solver-Qwen3.5-4B", "tiny:qwen2", "Solver")},
        "outer": "Sequential-Scaled-Outerlinks",
        "keys": SEQUENTIAL_KEYS,
    },
    "mixture": {
        "paradigm": "mixture", "variant": None, "tasked": False,
        "agents": {"math": ("Mixture-Math-DeepSeek-R1-Distill-Qwen-1.5B", "tiny:qwen2", "Math"),
                   "code": ("Mixture-Code-Qwen2.5-Coder-3B", "tiny:llama", "Code"),
                   "science": ("Mixture-Science-BioMistral-7B", "tiny:gemma3", "Science"),
                   "summarizer": ("Mixture-Summarizer-Qwen3.5-2B", "tiny:Qwen2", "Summarizer")},
        "outer": "Mixture-Outerlinks",
        "keys": {"outer_1s": ("math", "summarizer"), "outer_2s": ("code", "summarizer"),
                 "outer_3s": ("science", "summarizer"), "outer_s1": ("summarizer", "math"),
                 "outer_s2": ("summarizer", "code"), "outer_s3": ("summarizer", "science")},
    },
    "distillation": {
        "paradigm": "distillation", "variant": None, "tasked": True,
        "agents": {"expert": ("Distillation-Expert-Qwen3.5-9B", "tiny:gemma3", "Expert"),
                   "learner": ("Distillation-Learner-Qwen3.5-4B", "tiny:qwen2", "Learner")},
        "outer": "Distillation-Outerlinks",
        "keys": {"outer_el": ("expert", "learner"), "outer_le": ("learner", "expert")},
    },
    "deliberation": {
        "paradigm": "deliberation", "variant": None, "tasked": False,
        "agents": {"reflector": ("Deliberation-Reflector-Qwen3.5-4B", "tiny:qwen2", "Reflector"),
                   "toolcaller": ("Deliberation-Toolcaller-Qwen3.5-4B", "tiny:qwen2", "Toolcaller")},
        "outer": "Deliberation-Outerlinks",
        "keys": {"outer_rt": ("reflector", "toolcaller"), "outer_tr": ("toolcaller", "reflector")},
    },
}
# "tiny:Qwen2" is another random qwen2 model (weights are seeded by the reference string).
HIDDEN = {"tiny:llama": 64, "tiny:qwen2": 48, "tiny:gemma3": 80, "tiny:Qwen2": 48}


def _randomized(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict of known random values (so the zero-initialised branches matter)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        layer_norm_weight = "ln" in key.split(".")[0] and key.endswith(".weight")
        state[key] = torch.randn(value.shape, generator=gen) * 0.2 + (1.0 if layer_norm_weight else 0.0)
    return state


def _outer_file(style: str, key: str, task: str | None) -> str:
    info = RELEASES[style]
    src, dst = info["keys"][key]
    name = f"{info['agents'][src][2]}-{info['agents'][dst][2]}-Outerlink"
    return f"{name}({task}).pt" if task else f"{name}.pt"


def _write_release(root: Path, style: str, models: dict[str, object]) -> Path:
    """Write ``style``'s release under ``root`` in the published layout; return ``root``."""
    info = RELEASES[style]
    seed = sum(map(ord, style))
    for agent, (repo, ref, role) in info["agents"].items():
        folder = root / repo
        lm = models[ref]
        lm.model.save_pretrained(folder)
        lm.tokenizer.save_pretrained(folder)
        (folder / "README.md").write_text(f"The {role} Agent of {style}.\n")
        (folder / "adapter_config.json").write_text(json.dumps({"adapter_type": "ln_res_adapter"}, indent=2))
        h = HIDDEN[ref]
        if info["tasked"]:
            shared = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix != ".md")
            tasks = {}
            for t in TASKED:
                seed += 1
                torch.save(_randomized(InnerLnRes(h), seed), folder / f"adapter({t}).pt")
                tasks[t] = {"adapter.pt": f"adapter({t}).pt", **{n: n for n in shared}}
            config = {"format_version": 1, "paradigm": info["paradigm"], "role": role,
                      "backbone": repo.split("-", 3)[-1], "shared_files": shared, "tasks": tasks}
            if info["variant"]:
                config["variant"] = info["variant"]
            (folder / "innerlink_config.json").write_text(json.dumps(config, indent=2))
        else:
            seed += 1
            torch.save(_randomized(InnerLnRes(h), seed), folder / "adapter.pt")
    outer = root / info["outer"]
    outer.mkdir(parents=True)
    (outer / "README.md").write_text(f"Outerlink of {style}.\n")

    def entries(task: str | None) -> list[dict]:
        nonlocal seed
        rows = []
        for key, (src, dst) in info["keys"].items():
            i, o = HIDDEN[info["agents"][src][1]], HIDDEN[info["agents"][dst][1]]
            seed += 1
            filename = _outer_file(style, key, task)
            torch.save(_randomized(OuterLnRes(i, o), seed), outer / filename)
            rows.append({"legacy_key": key, "legacy_filename": f"{key}.pt", "filename": filename,
                         "source_role": info["agents"][src][2], "target_role": info["agents"][dst][2],
                         "adapter_type": "outer_ln_res_adapter", "in_dim": i, "out_dim": o})
        return rows

    config: dict = {"format_version": 1, "paradigm": info["paradigm"]}
    if info["variant"]:
        config["variant"] = info["variant"]
    if info["tasked"]:
        config["tasks"] = {t: {"legacy_config_filename": f"outer_adapter_config({t}).json", "task": t,
                               "adapters": entries(t)} for t in TASKED}
    else:
        config["legacy_config_filename"] = "outer_adapter_config.json"
        config["adapters"] = entries(None)
    (outer / "outerlink_config.json").write_text(json.dumps(config, indent=2))
    return root


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One synthetic release per style (built once per module; copy before changing one)."""
    base = tmp_path_factory.mktemp("releases")
    models = {ref: load_model(ref) for ref in HIDDEN}
    return {style: _write_release(base / style, style, models) for style in RELEASES}


@pytest.fixture
def views(tmp_path: Path) -> Path:
    return tmp_path / "views"


def _copy(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "release"
    shutil.copytree(root, target, symlinks=True)
    return target


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def _expected_files(style: str, root: Path, task: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """Agent -> inner weights file and edge label -> outer weights file, from the layout alone."""
    info = RELEASES[style]
    inner = {a: root / repo / (f"adapter({task}).pt" if info["tasked"] else "adapter.pt")
             for a, (repo, _, _) in info["agents"].items()}
    outer = {}
    for key, (src, dst) in info["keys"].items():
        recursion = key in ("outer_31", "outer_s1", "outer_s2", "outer_s3", "outer_le", "outer_tr")
        label = f"{src}{'~>' if recursion else '->'}{dst}"
        outer[label] = root / info["outer"] / _outer_file(style, key, task if info["tasked"] else None)
    return inner, outer


# --------------------------------------------------------------------------------------------- running


@pytest.mark.parametrize("style", list(RELEASES))
def test_release_runs_and_messages_apply_the_stored_links(style: str, releases, views, registry) -> None:
    root = releases[style]
    cache = ModelCache(registry.model_sources)
    system = load_release(style, root, views_dir=views, model_cache=cache, registry=registry)
    compile_topology(system.spec, registry)  # valid
    result = system.run(["What is 2 + 3?"], rounds=2, latent_steps=2, generation=GREEDY, keep_messages=True)
    assert len(result.answers) == 1
    inner_files, outer_files = _expected_files(style, root, "math")
    assert {system.compiled.edge(edge_id).label for edge_id, _ in result.messages} == set(outer_files)
    info = RELEASES[style]
    for (edge_id, src_round), msg in result.messages.items():
        edge = system.compiled.edge(edge_id)
        label = edge.label
        h_src, h_dst = HIDDEN[info["agents"][edge.source][1]], HIDDEN[info["agents"][edge.target][1]]
        inner = InnerLnRes(h_src)
        inner.load_state_dict(torch.load(inner_files[edge.source], weights_only=True))
        outer = OuterLnRes(h_src, h_dst)
        outer.load_state_dict(torch.load(outer_files[label], weights_only=True))
        thoughts = result.thoughts[(edge.source, src_round)]
        with torch.no_grad():
            expected = outer(inner(thoughts))
        assert msg.shape == (1, 2, h_dst)
        torch.testing.assert_close(msg, expected, rtol=1e-5, atol=1e-5)
    # the loaded models are the released ones (the tiny models saved in the agent folders)
    for name, agent in system.agents.items():
        assert agent.hidden_size == HIDDEN[info["agents"][name][1]]
    # one load per distinct model: the deliberation agents share theirs
    assert len(cache) == len({ref for _, ref, _ in info["agents"].values()})
    if style == "deliberation":
        assert system.agents["reflector"].model is system.agents["toolcaller"].model


def test_written_topology_is_absolute_runnable_and_renders(releases, views, tmp_path, registry, capsys,
                                                           monkeypatch) -> None:
    root = releases["sequential_light"]
    out = tmp_path / "elsewhere" / "seq.json"
    spec = import_release("sequential_light", root, output=out, views_dir=views, registry=registry)
    written = read_topology_file(out)
    assert written == spec and written.name == "sequential_light_release"
    assert (written.rounds, written.latent_steps) == (3, 48)
    inner, outer = _expected_files("sequential_light", root, "math")
    for agent in written.agents:
        assert Path(agent.model).is_absolute() and Path(agent.model).parent == views.resolve()
        assert Path(agent.inner_link.weights) == inner[agent.name].resolve()
    for edge in written.edges:
        assert Path(edge.link.weights) == outer[edge.label].resolve()
    monkeypatch.chdir(tmp_path)  # runnable from another folder
    assert main(["validate", str(out)]) == 0
    assert main(["render", str(out), "-o", str(tmp_path / "seq.mmd")]) == 0
    assert "planner" in (tmp_path / "seq.mmd").read_text()
    code = main(["run", str(out), "-q", "What is 1 + 1?", "--rounds", "1", "--latent-steps", "2",
                 "--max-new-tokens", "2", "--greedy"])
    out_text, err = capsys.readouterr()
    assert code == 0, err
    assert "answer" in out_text


def test_code_task_picks_code_links_and_code_latent_steps(releases, views, registry) -> None:
    root = releases["distillation"]
    spec = import_release("distillation", root, task="code", views_dir=views, registry=registry)
    inner, outer = _expected_files("distillation", root, "code")
    assert {a.name: Path(a.inner_link.weights) for a in spec.agents} == {k: v.resolve() for k, v in inner.items()}
    assert {e.label: Path(e.link.weights) for e in spec.edges} == {k: v.resolve() for k, v in outer.items()}
    assert spec.latent_steps == 16
    assert import_release("distillation", root, task="code", latent_steps=7, rounds=2, views_dir=views,
                          registry=registry).latent_steps == 7


def test_task_agnostic_release_ignores_task(releases, views, registry) -> None:
    spec = import_release("mixture", releases["mixture"], task="code", views_dir=views, registry=registry)
    assert all(Path(a.inner_link.weights).name == "adapter.pt" for a in spec.agents)


def test_model_view_hides_adapter_config_from_peft_detection(releases, views) -> None:
    from transformers.utils.peft_utils import find_adapter_config_file

    folder = releases["sequential_light"] / "Sequential-Light-Planner-Qwen3-1.7B"
    assert find_adapter_config_file(str(folder), local_files_only=True) is not None
    view = model_view(folder, views)
    assert view != folder and find_adapter_config_file(str(view), local_files_only=True) is None
    names = {p.name for p in view.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not names & {"adapter_config.json", "innerlink_config.json", "adapter(math).pt", "README.md"}
    assert model_view(folder, views) == view  # idempotent
    plain = releases["sequential_light"] / "Sequential-Light-Outerlinks"
    assert model_view(plain, views) == plain.resolve()  # nothing to hide


def test_release_loads_when_peft_is_installed(releases, views, registry) -> None:
    pytest.importorskip("peft")
    raw = releases["distillation"] / "Distillation-Learner-Qwen3.5-4B"
    with pytest.raises(Exception):  # transformers takes the raw folder for a PEFT adapter
        load_model(str(raw), sources=registry.model_sources)
    system = load_release("distillation", releases["distillation"], views_dir=views, registry=registry)
    assert len(system.run(["Q?"], rounds=1, latent_steps=1, generation=GREEDY).answers) == 1


def test_deliberation_agents_share_one_model_unless_asked_not_to(releases, views, registry) -> None:
    root = releases["deliberation"]
    a, b = (root / RELEASES["deliberation"]["agents"][n][0] for n in ("reflector", "toolcaller"))
    assert same_model_files(a, b)
    assert not same_model_files(a, releases["mixture"] / "Mixture-Code-Qwen2.5-Coder-3B")
    spec = import_release("deliberation", root, views_dir=views, registry=registry)
    reflector, toolcaller = spec.agent("reflector"), spec.agent("toolcaller")
    assert reflector.model == toolcaller.model
    assert reflector.inner_link.weights != toolcaller.inner_link.weights  # each keeps its own inner link
    assert toolcaller.tools == ["python", "retrieve"]
    apart = import_release("deliberation", root, views_dir=views, share_models=False, registry=registry)
    assert apart.agent("reflector").model != apart.agent("toolcaller").model


def test_hugging_face_cache_layout_and_explicit_folders(releases, views, tmp_path, registry) -> None:
    src = releases["distillation"]
    hub = tmp_path / "hub"
    for repo in ("Distillation-Expert-Qwen3.5-9B", "Distillation-Learner-Qwen3.5-4B", "Distillation-Outerlinks"):
        entry = hub / f"models--RecursiveMAS--{repo}"
        (entry / "refs").mkdir(parents=True)
        (entry / "refs" / "main").write_text("abc123")
        (entry / "snapshots").mkdir()
        (entry / "snapshots" / "abc123").symlink_to(src / repo, target_is_directory=True)
    resolved = resolve_release("distillation", hub, registry=registry)
    entry = hub / "models--RecursiveMAS--Distillation-Expert-Qwen3.5-9B"
    assert resolved.agents["expert"].folder == entry / "snapshots" / "abc123"
    # explicit folders need no root; short agent-named folders are found too
    short = tmp_path / "short"
    short.mkdir()
    (short / "expert").symlink_to(src / "Distillation-Expert-Qwen3.5-9B", target_is_directory=True)
    spec = import_release("Distillation", short, agents={"learner": src / "Distillation-Learner-Qwen3.5-4B"},
                          outerlinks=src / "Distillation-Outerlinks", views_dir=views, registry=registry)
    assert {a.name for a in spec.agents} == {"expert", "learner"}
    assert find_release_folder(short, "Distillation-Expert-Qwen3.5-9B", aliases=("expert",)) == short / "expert"


@pytest.mark.parametrize("layout", ["top_level_task_keys", "adapters_grouped_by_task"])
def test_outerlink_config_nesting_variants(layout: str, tmp_path) -> None:
    rows = [{"legacy_key": "outer_el", "filename": "a.pt", "adapter_type": "outer_ln_res_adapter", "in_dim": 4,
             "out_dim": 8},
            {"legacy_key": "outer_le", "legacy_filename": "outer_le.pt"}]
    data = ({"format_version": 1, "math": {"adapters": rows}, "code": {"adapters": rows[:1]}}
            if layout == "top_level_task_keys"
            else {"paradigm": "distillation", "adapters": {"math": rows, "code": []}})
    path = tmp_path / "outerlink_config.json"
    path.write_text(json.dumps(data))
    entries = read_outerlink_config(path, "math", "distillation")
    assert [(e.legacy_key, e.filename, e.adapter_type, e.in_dim) for e in entries] == [
        ("outer_el", "a.pt", "outer_ln_res_adapter", 4), ("outer_le", "outer_le.pt", "outer_ln_res_adapter", None)]
    with pytest.raises(ReleaseError, match=r"no links for task 'reasoning'; it has: code, math"):
        read_outerlink_config(path, "reasoning")


def test_download_commands_name_every_repo() -> None:
    lines = download_commands("sequential_light", "rel")
    assert len(lines) == 4 and all(line.startswith("hf download RecursiveMAS/") for line in lines)
    assert set(STYLES) == set(RELEASES)


# ---------------------------------------------------------------------------------------------- errors


def test_outer_link_of_the_wrong_shape_names_the_file_and_the_edge(releases, views, tmp_path, registry) -> None:
    root = _copy(releases["sequential_light"], tmp_path)
    bad = root / "Sequential-Light-Outerlinks" / "Critic-Solver-Outerlink(math).pt"
    torch.save(OuterLnRes(48, 72).state_dict(), bad)  # config says 48 -> 80
    with pytest.raises(LinkError) as info:
        import_release("sequential_light", root, views_dir=views, registry=registry)
    text = str(info.value)
    assert "Critic-Solver-Outerlink(math).pt" in text and "critic->solver" in text
    assert "proj2.weight of shape (72, 144), expected (80, 160)" in text


def test_configured_size_mismatch_names_config_edge_expected_and_found(releases, views, tmp_path, registry) -> None:
    root = _copy(releases["sequential_light"], tmp_path)
    config = root / "Sequential-Light-Outerlinks" / "outerlink_config.json"
    _edit_json(config, lambda d: d["tasks"]["math"]["adapters"][1].update(out_dim=1536))
    with pytest.raises(ReleaseError) as info:
        import_release("sequential_light", root, views_dir=views, registry=registry)
    text = str(info.value)
    assert "outerlink_config.json" in text and "critic->solver" in text and "outer_23" in text
    assert "out_dim=1536" in text and "hidden size 80" in text


def test_missing_outer_file_names_the_file_and_the_edge(releases, views, tmp_path, registry) -> None:
    root = _copy(releases["mixture"], tmp_path)
    (root / "Mixture-Outerlinks" / "Summarizer-Code-Outerlink.pt").unlink()
    with pytest.raises(ReleaseError) as info:
        import_release("mixture", root, views_dir=views, registry=registry)
    text = str(info.value)
    assert "Summarizer-Code-Outerlink.pt" in text and "summarizer~>code" in text and "outer_s2" in text


def test_missing_inner_file_names_the_file_and_the_agent(releases, views, tmp_path, registry) -> None:
    root = _copy(releases["sequential_scaled"], tmp_path)
    (root / "Sequential-Scaled-Critic-Llama3.2-3B" / "adapter(math).pt").unlink()
    with pytest.raises(ReleaseError) as info:
        import_release("sequential_scaled", root, views_dir=views, registry=registry)
    assert "adapter(math).pt" in str(info.value) and "'critic'" in str(info.value)
    root2 = _copy(releases["mixture"], tmp_path / "m")
    (root2 / "Mixture-Science-BioMistral-7B" / "adapter.pt").unlink()
    with pytest.raises(ReleaseError, match=r"adapter\.pt.*'science'"):
        import_release("mixture", root2, views_dir=views, registry=registry)


def test_missing_agent_folder_says_what_to_download(releases, views, tmp_path, registry) -> None:
    root = _copy(releases["distillation"], tmp_path)
    shutil.rmtree(root / "Distillation-Learner-Qwen3.5-4B")
    with pytest.raises(ReleaseError) as info:
        import_release("distillation", root, views_dir=views, registry=registry)
    text = str(info.value)
    assert "'learner'" in text and "RecursiveMAS/Distillation-Learner-Qwen3.5-4B" in text and "hf download" in text


def test_unknown_legacy_key_lists_the_known_ones(releases, views, tmp_path, registry) -> None:
    root = _copy(releases["deliberation"], tmp_path)
    config = root / "Deliberation-Outerlinks" / "outerlink_config.json"
    _edit_json(config, lambda d: d["adapters"].append({"legacy_key": "outer_rx", "filename": "x.pt"}))
    with pytest.raises(ReleaseError) as info:
        import_release("deliberation", root, views_dir=views, registry=registry)
    text = str(info.value)
    assert "'outer_rx'" in text and "outer_rt, outer_tr" in text


def test_task_missing_from_the_release_names_the_config_and_its_tasks(releases, views, tmp_path, registry) -> None:
    root = releases["sequential_light"]
    with pytest.raises(ReleaseError) as info:
        import_release("sequential_light", root, task="reasoning", views_dir=views, registry=registry)
    assert "innerlink_config.json" in str(info.value) and "it has: code, math" in str(info.value)
    root = _copy(root, tmp_path)
    config = root / "Sequential-Light-Outerlinks" / "outerlink_config.json"
    _edit_json(config, lambda d: d["tasks"].pop("code"))
    with pytest.raises(ReleaseError) as info:
        import_release("sequential_light", root, task="code", views_dir=views, registry=registry)
    assert "outerlink_config.json" in str(info.value) and "it has: math" in str(info.value)


def test_folders_of_another_style_are_refused(releases, views, registry) -> None:
    with pytest.raises(ReleaseError, match="belongs to the 'mixture' release"):
        import_release("distillation", releases["distillation"], outerlinks=releases["mixture"] / "Mixture-Outerlinks",
                       views_dir=views, registry=registry)
    swapped = {"planner": releases["sequential_light"] / "Sequential-Light-Critic-Llama3.2-1B"}
    with pytest.raises(ReleaseError, match="belongs to the 'Critic' agent"):
        import_release("sequential_light", releases["sequential_light"], agents=swapped, views_dir=views,
                       registry=registry)
    with pytest.raises(ReleaseError, match="unknown released style"):
        import_release("pipeline", releases["sequential_light"], registry=registry)
    with pytest.raises(ReleaseError, match="unknown agent"):
        import_release("distillation", releases["distillation"], agents={"teacher": "."}, registry=registry)


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_import_release_then_run(releases, tmp_path, capsys) -> None:
    out = tmp_path / "mix.json"
    code = main(["import-release", "mixture", "--root", str(releases["mixture"]), "-o", str(out),
                 "--views-dir", str(tmp_path / "views"), "--rounds", "2", "--latent-steps", "3"])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "wrote" in text and "outer_3s" in text and "Science-Summarizer-Outerlink.pt" in text
    spec = read_topology_file(out)
    assert (spec.rounds, spec.latent_steps) == (2, 3)
    code = main(["run", str(out), "-q", "What is 2 * 2?", "--max-new-tokens", "2", "--greedy", "--rounds", "1"])
    assert code == 0, capsys.readouterr().err


def test_cli_agent_override_and_shared_model_note(releases, tmp_path, capsys) -> None:
    root = releases["deliberation"]
    out = tmp_path / "delib.json"
    code = main(["import-release", "deliberation", "--root", str(root), "-o", str(out), "--views-dir",
                 str(tmp_path / "views"), "--agent", f"toolcaller={root / 'Deliberation-Toolcaller-Qwen3.5-4B'}"])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "share 1 model" in text


@pytest.mark.parametrize("args, needle", [
    (["--task", "reasoning"], "it has: code, math"),
    (["--agent", "planner"], "expected AGENT=VALUE"),
    (["--agent", "boss=/tmp"], "unknown agent(s) boss"),
])
def test_cli_errors_exit_2(args, needle, releases, tmp_path, capsys) -> None:
    code = main(["import-release", "sequential_light", "--root", str(releases["sequential_light"]), "-o",
                 str(tmp_path / "x.json"), "--views-dir", str(tmp_path / "views"), *args])
    _, err = capsys.readouterr()
    assert code == 2 and needle in err
    assert not (tmp_path / "x.json").exists()


def test_cli_missing_root_exits_2(tmp_path, capsys) -> None:
    code = main(["import-release", "deliberation", "--root", str(tmp_path / "nope"), "-o", str(tmp_path / "x.json")])
    assert code == 2 and "no such folder" in capsys.readouterr().err


def test_release_error_is_a_recmas_error() -> None:
    assert issubclass(ReleaseError, RecmasError)
