"""Placement strategies and memory estimates (no weights loaded), `recmas plan --placement`,
out-of-memory errors and the evaluation's batch back-off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import recmas_graph as rg
from recmas_graph import RunError
from recmas_graph.cli import main
from recmas_graph.runtime.execution.batches import BatchError, run_batches
from recmas_graph.runtime.memory.oom import (
    OOM_HINT,
    OutOfMemory,
    is_out_of_memory,
    out_of_memory,
)
from recmas_graph.runtime.memory.placement import (
    SPLIT,
    STRATEGIES,
    plan_placement,
    resolve_placement,
)
from recmas_graph.runtime.memory.sizing import GiB, estimate_memory, kv_cache_bytes, model_size
from recmas_graph.runtime.sources.loaded import ModelCache
from recmas_graph.topology.catalog import ModelSize
from recmas_graph.topology.spec import parse_topology

MiB = 1024**2
# fake sizes (no real model): big 4 GiB, mid 2 GiB, small 1 GiB of bf16 weights; no KV shape, so no allowance
SIZES = {"big": ModelSize(params=2 * GiB), "mid": ModelSize(params=GiB), "small": ModelSize(params=GiB // 2)}
FAST = dict(generation={"greedy": True, "max_new_tokens": 4}, latent_steps=1, rounds=1, text_message_tokens=4)


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def _spec(devices: dict[str, str] | None = None):
    """Four agents: a (small), b (big), c (mid), d (small again, shares a's copy)."""
    models = {"a": "small", "b": "big", "c": "mid", "d": "small"}
    roles = {"a": "planner", "b": "critic", "c": "critic", "d": "solver"}
    return parse_topology({
        "name": "t", "output": "d",
        "agents": [{"name": n, "role": roles[n], "model": m, **({"device": devices[n]} if devices and n in devices
                                                                 else {})} for n, m in models.items()],
        "edges": [{"source": s, "target": "d"} for s in "abc"]})


def _plan(spec=None, device=None, **options):
    return plan_placement(spec or _spec(), device, sizes=SIZES, **options)


# ------------------------------------------------------------------------------ strategies


def test_round_robin_is_the_default_and_single_uses_one_gpu() -> None:
    spec = _spec()
    expected = {"a": "cuda:0", "b": "cuda:1", "c": "cuda:0", "d": "cuda:0"}  # distinct models in order
    assert resolve_placement(spec, gpus=2) == expected == _plan(gpus=2).devices
    assert resolve_placement(spec, gpus=2, placement="round-robin") == expected
    assert set(resolve_placement(spec, gpus=2, placement="single").values()) == {"cuda:0"}
    for strategy in STRATEGIES:  # no GPU: the CPU, whatever the strategy
        assert set(_plan(gpus=0, placement=strategy).devices.values()) == {"cpu"}


def test_by_size_puts_the_largest_model_first_on_the_emptiest_gpu() -> None:
    found = _plan(gpus=2, placement="by-size")
    # big (4 GiB) -> cuda:0; mid (2 GiB) -> cuda:1; small (1 GiB, a and d) -> cuda:1 (2 GiB left vs 0)
    assert found.devices == {"a": "cuda:1", "b": "cuda:0", "c": "cuda:1", "d": "cuda:1"}
    assert found.device_bytes == {"cuda:0": 4 * GiB, "cuda:1": 3 * GiB}  # small counted once for a and d
    assert found.memory.agents["d"].shared and not found.memory.agents["a"].shared
    assert found.warnings == ()
    # unequal GPUs: the most memory left wins
    uneven = _plan(gpus=2, placement="by-size", gpu_memory=[7 * GiB, 8 * GiB])  # big -> 1 (4 left), mid -> 0 (5 left)
    assert (uneven.devices["b"], uneven.devices["c"], uneven.devices["a"]) == ("cuda:1", "cuda:0", "cuda:0")


def test_auto_fits_the_gpus_memory_and_marks_a_model_larger_than_any_gpu_for_splitting() -> None:
    found = _plan(gpus=2, placement="auto", gpu_memory=3 * GiB)
    assert found.devices["b"] == SPLIT  # 4 GiB on 3 GiB GPUs
    assert found.devices["c"] != SPLIT and found.devices["a"] == found.devices["d"] != SPLIT
    assert found.device_bytes == {"cuda:0": 4 * GiB, "cuda:1": 3 * GiB}  # big spread over both
    assert any("estimated 4.00 GiB on cuda:0 exceeds its 3.00 GiB" == w for w in found.warnings)
    assert any("big is larger than any one GPU" in w and "device_map='auto'" in w for w in found.warnings)
    roomy = _plan(gpus=2, placement="auto", gpu_memory=8 * GiB)
    assert SPLIT not in roomy.devices.values() and roomy.warnings == ()
    assert "GPU memory unknown" in _plan(gpus=2, placement="auto").warnings[-1]  # no CUDA here, no figure


def test_auto_on_this_machine_reads_the_free_memory_cuda_reports(monkeypatch) -> None:
    free = {0: 3 * GiB, 1: 9 * GiB}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (free[i], 80 * GiB))
    found = _plan(placement="auto")
    assert found.capacity == {"cuda:0": 3 * GiB, "cuda:1": 9 * GiB}
    # big -> cuda:1 (5 GiB left), mid -> cuda:1 (3 left), small -> cuda:0 (3 left, fewer models)
    assert found.devices == {"a": "cuda:0", "b": "cuda:1", "c": "cuda:1", "d": "cuda:0"} and found.warnings == ()


def test_a_split_cannot_be_built_and_says_why() -> None:
    spec = parse_topology({"name": "t", "output": "b", "edges": [{"source": "a", "target": "b"}],
                           "agents": [{"name": "a", "role": "planner", "model": "tiny:llama"},
                                      {"name": "b", "role": "solver", "model": "tiny:qwen2"}]})
    with pytest.raises(RunError, match="larger than any one GPU") as caught:
        resolve_placement(spec, placement="auto", gpus=2, gpu_memory=1000)
    assert caught.value.culprit == "--placement auto" and "--device AGENT=DEV" in caught.value.hint


def test_explicit_choices_win_over_every_strategy() -> None:
    spec = _spec({"b": "cuda:1"})  # the spec's own device
    for strategy in STRATEGIES:
        found = _plan(spec, gpus=2, placement=strategy, gpu_memory=3 * GiB)
        assert found.devices["b"] == "cuda:1" and found.explicit == ("b",)
        assert _plan(spec, {"a": "cpu"}, gpus=2, placement=strategy).devices["a"] == "cpu"
        assert set(_plan(spec, "cpu", gpus=2, placement=strategy).devices.values()) == {"cpu"}
    # by-size counts what the explicit agents take: big's 4 GiB on cuda:1 sends mid to cuda:0
    assert _plan(spec, gpus=2, placement="by-size").devices["c"] == "cuda:0"


def test_an_unknown_strategy_names_the_valid_ones() -> None:
    with pytest.raises(RunError, match="unknown placement strategy 'biggest'") as caught:
        resolve_placement(_spec(), placement="biggest")
    assert caught.value.culprit == "--placement" and "single, round-robin, by-size, auto" in caught.value.hint
    with pytest.raises(RunError, match="2 GPU memory figure"):
        _plan(gpus=3, placement="auto", gpu_memory=[GiB, GiB])


# ------------------------------------------------------------------------------ sizes without weights


def test_model_sizes_come_from_the_sources_without_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from recmas_graph.runtime.sources.tiny import load_tiny

    for ref in ("tiny:llama", "tiny:qwen2", "tiny:gemma3"):
        loaded = load_tiny(ref)
        assert model_size(ref).params == sum(p.numel() for p in loaded.model.parameters())
    assert model_size("pkg:gemma3-270m").params == 268_098_176
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 8, "num_hidden_layers": 3,
                                                    "num_attention_heads": 2, "num_key_value_heads": 1}))
    save_file({"w": torch.zeros(4, 8, dtype=torch.bfloat16), "b": torch.zeros(8)}, str(folder / "model.safetensors"))
    size = model_size(str(folder))
    assert (size.params, size.stored_bytes, size.layers, size.kv_heads, size.head_dim) == (40, 96, 3, 1, 4)
    assert kv_cache_bytes(size, tokens=10, batch_size=2, dtype_bytes=2) == 2 * 3 * 1 * 4 * 10 * 2 * 2


def test_agents_sharing_a_model_share_its_weights_on_one_device_only() -> None:
    spec = _spec()
    sizes = {**SIZES, "small": ModelSize(params=MiB, layers=2, kv_heads=2, head_dim=4)}
    one = estimate_memory(spec, dict.fromkeys("abcd", "cuda:0"), sizes=sizes, batch_size=3, tokens=100)
    two = estimate_memory(spec, {"a": "cuda:0", "b": "cuda:0", "c": "cuda:0", "d": "cuda:1"}, sizes=sizes,
                          batch_size=3, tokens=100)
    kv = 2 * 2 * 2 * 4 * 100 * 3 * 2
    assert one.agents["a"].kv_bytes == kv and one.agents["b"].kv_bytes is None
    assert one.devices == {"cuda:0": (4 * GiB + 2 * GiB + 2 * MiB) + 2 * kv}
    assert two.devices == {"cuda:0": 6 * GiB + 2 * MiB + kv, "cuda:1": 2 * MiB + kv}
    cpu = estimate_memory(spec, dict.fromkeys("abcd", "cpu"), sizes=sizes, tokens=100)
    assert cpu.agents["a"].dtype == "float32" and cpu.agents["a"].weight_bytes == 4 * MiB


# ------------------------------------------------------------------------------ recmas plan --placement


def _no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded")

    import recmas_graph.runtime.sources.loaded as loaded
    import recmas_graph.runtime.sources.tiny as tiny

    monkeypatch.setattr(loaded, "load_model", refuse)
    monkeypatch.setattr(loaded, "load_folder", refuse)
    monkeypatch.setattr(tiny, "load_tiny", refuse)
    monkeypatch.setattr(ModelCache, "get", refuse)


def test_plan_shows_the_placement_and_loads_no_weights(capsys, registry, monkeypatch) -> None:
    _no_loading(monkeypatch)
    code = main(["plan", "sequential_light", "--placement", "by-size", "--gpus", "2", "--models", "tiny"])
    out = capsys.readouterr().out
    assert code == 0
    assert "placement (by-size): batch 1" in out and "estimated memory per device" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 6}
    assert "tiny:qwen2" in rows["planner"] and "cuda:0" in rows["planner"] and "cuda:0" in rows["solver"]
    assert "shared" in rows["solver"] and "cuda:1" in rows["critic"] and "bfloat16" in rows["critic"]
    assert "cuda:0" in out and "KiB" in out

    code = main(["plan", "sequential_light", "--placement", "auto", "--gpus", "2", "--gpu-memory", "0.0001",
                 "--models", "tiny", "--device", "critic=cpu", "--batch-size", "4", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and isinstance(data["schedule"], list) and data["schedule"][0]["agent"] == "planner"
    placed = {row["agent"]: row for row in data["placement"]["agents"]}
    assert placed["critic"]["device"] == "cpu" and placed["critic"]["explicit"]
    assert placed["planner"]["device"] == SPLIT and data["placement"]["batch_size"] == 4
    assert any("exceeds" in w for w in data["placement"]["warnings"])


def test_plan_json_stays_a_list_without_placement_options(capsys, registry) -> None:
    assert main(["plan", "sequential_light", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)


def test_plan_placement_errors_exit_2(capsys, registry) -> None:
    assert main(["plan", "sequential_light", "--placement", "biggest"]) == 2
    assert "unknown placement strategy 'biggest'" in capsys.readouterr().err
    assert main(["plan", "sequential_light", "--models", "tiny", "--device", "nobody=cpu"]) == 2
    assert "unknown agent(s) nobody" in capsys.readouterr().err


def test_single_on_cpu_answers_as_the_default_build(registry, cache) -> None:
    compiled = rg.compile("sequential_light")
    questions = ["What is 2 + 3?", "What is 7 * 6?"]
    options = dict(rounds=2, latent_steps=2, greedy=True, max_new_tokens=8)
    default = compiled.build(models="tiny", seed=0, model_cache=cache)
    single = compiled.build(models="tiny", seed=0, model_cache=cache, placement="single")
    assert {str(a.device) for a in single.agents.values()} == {"cuda:0" if torch.cuda.is_available() else "cpu"}
    assert single.run(questions, **options).answers == default.run(questions, **options).answers
    with pytest.raises(RunError, match="unknown placement strategy"):
        compiled.build(models="tiny", model_cache=cache, placement="everywhere")


# ------------------------------------------------------------------------------ out of memory


def test_out_of_memory_errors_name_the_pass_and_the_fix() -> None:
    cuda = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    err = out_of_memory(cuda, agent="solver", round=3, device="cuda:1", batch_size=16)
    assert isinstance(err, OutOfMemory) and isinstance(err, RunError)
    assert str(err) == f"agent 'solver': out of memory on cuda:1 in round 3 with a batch of 16 question(s)\n  fix: {OOM_HINT}"
    assert (err.agent, err.round, err.device, err.batch_size) == ("solver", 3, "cuda:1", 16)
    assert OOM_HINT == "use a smaller --batch-size, or --low-memory (load and free agents stage by stage)"
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:114] . DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 4294967296 bytes")
    assert is_out_of_memory(cpu) and is_out_of_memory(MemoryError()) and out_of_memory(err) is err
    assert out_of_memory(RuntimeError("shape mismatch")) is None and out_of_memory(ValueError("no")) is None


def _oom_above(monkeypatch: pytest.MonkeyPatch, limit: int, *, convert: bool = True) -> list[int]:
    """Passes with more than ``limit`` questions run out of memory (named like the pass runner will)."""
    from recmas_graph.runtime.execution.backends import InProcessRunner

    sizes: list[int] = []
    original = InProcessRunner.run_pass

    def run_pass(self, request):
        n = len(request.settings.questions)
        if n > limit:
            sizes.append(n)
            err = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            if convert:
                raise out_of_memory(err, agent=request.step.agent, round=request.step.round, device="cuda:0",
                                    batch_size=n) from err
            raise err
        return original(self, request)

    monkeypatch.setattr(InProcessRunner, "run_pass", run_pass)
    return sizes


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("wall_s", "peak_mem_bytes")} for r in rows]


def _records(report) -> list[dict]:
    return _strip(report.records)


def test_eval_backs_off_to_smaller_batches_with_the_same_records(tmp_path: Path, registry, cache,
                                                                 monkeypatch) -> None:
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(7)))
    system = rg.compile("sequential_light").build(models="tiny", seed=0, model_cache=cache)
    twos = rg.evaluate(system, data, out=tmp_path / "twos", batch_size=2, registry=registry, **FAST)
    sizes = _oom_above(monkeypatch, 2)
    fours = rg.evaluate(system, data, out=tmp_path / "fours", batch_size=4, registry=registry, **FAST)
    assert sizes == [4, 3]  # [q0..q3] -> [q0, q1] + [q2, q3]; [q4..q6] -> [q4, q5] + [q6]: the batches of two
    assert _records(fours) == _records(twos)

    sizes.clear()
    eights = rg.evaluate(system, data, out=tmp_path / "eights", batch_size=8, registry=registry, **FAST)
    assert sizes == [7, 4, 3]  # 7 -> 4 + 3 -> (2 + 2) + (2 + 1)
    assert _records(eights) == _records(twos)


def test_at_batch_one_the_out_of_memory_error_names_the_agent(tmp_path: Path, registry, cache, monkeypatch) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0, model_cache=cache)
    sizes = _oom_above(monkeypatch, 0)
    with pytest.raises(OutOfMemory, match="agent 'planner': out of memory on cuda:0 in round 1") as caught:
        list(run_batches(system, ["Q1?", "Q2?", "Q3?"], batch_size=3, backoff=True, rounds=1, latent_steps=1,
                         max_new_tokens=2))
    assert sizes == [3, 2, 1] and caught.value.batch_size == 1
    assert "--batch-size" not in caught.value.hint  # at batch 1 a smaller batch cannot help
    assert "--low-memory" in caught.value.hint and "--dtype" in caught.value.hint


def test_raw_out_of_memory_errors_back_off_too_and_only_when_asked(registry, cache, monkeypatch) -> None:
    system = rg.compile("sequential_light").build(models="tiny", seed=0, model_cache=cache)
    options = dict(rounds=1, latent_steps=1, max_new_tokens=2, greedy=True)
    _oom_above(monkeypatch, 1, convert=False)
    done = list(run_batches(system, ["Q1?", "Q2?", "Q3?"], batch_size=3, backoff=True, **options))
    assert [(b.index, b.positions) for b in done] == [(0, range(0, 1)), (0, range(1, 2)), (0, range(2, 3))]
    with pytest.raises(BatchError, match="batch 1 failed: OutOfMemoryError"):
        list(run_batches(system, ["Q1?", "Q2?"], batch_size=2, **options))
    _oom_above(monkeypatch, 0, convert=False)
    with pytest.raises(OutOfMemory, match="out of memory with a batch of 1 question") as caught:
        list(run_batches(system, ["Q1?"], batch_size=1, backoff=True, **options))
    assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)


def test_a_batch_answered_by_parts_still_gives_every_record(tmp_path: Path, registry, cache, monkeypatch) -> None:
    from recmas_graph.eval.datasets import resolve_dataset, select_samples
    from recmas_graph.eval.evaluate import answer_batch
    from recmas_graph.eval.scoring import get_metric

    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(4)))
    dataset = resolve_dataset(f"jsonl:{data}", registry)
    batch = [(s.id, s) for s in select_samples(dataset)]
    system = rg.compile("distillation_mini").build(models="tiny", seed=0, model_cache=cache)
    run = rg.RunOptions(task="math", dataset=dataset.name, seed=0, rounds=1, latent_steps=1, greedy=True,
                        max_new_tokens=3, text_message_tokens=3)
    options = dict(scorer=get_metric(dataset.metric_name, registry), options=run,
                   order={sid: i for i, (sid, _) in enumerate(batch)}, retry=False)
    whole = answer_batch(system, batch, **options)
    sizes = _oom_above(monkeypatch, 2)
    parts = answer_batch(system, batch, **options)
    assert sizes == [4] and [r["id"] for r in parts] == ["q0", "q1", "q2", "q3"]
    assert _strip(parts) == _strip(whole)


@pytest.mark.parametrize("model_type, tied", [("qwen2", True), ("llama", False), ("gemma3_text", True)])
def test_a_config_alone_gives_the_exact_parameter_count(tmp_path: Path, model_type: str, tied: bool) -> None:
    """Without safetensors files the count comes from the model built on the meta device (accelerate),
    exact for architectures the standard-decoder formula misses (qwen2's q/k/v biases, gemma3's q/k norms)."""
    pytest.importorskip("accelerate")
    from transformers import AutoConfig, AutoModelForCausalLM

    from recmas_graph.runtime.sources.sizes import size_from_config

    config = {"model_type": model_type, "vocab_size": 96, "hidden_size": 16, "intermediate_size": 24,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
              "tie_word_embeddings": tied}
    real = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    assert size_from_config(config).params == sum(p.numel() for p in real.parameters())
    folder = tmp_path / model_type  # a folder with config.json and no safetensors: the same count
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    assert model_size(str(folder)).params == sum(p.numel() for p in real.parameters())
