"""One GPU check: every GPU figure the project lacks, in one command, in under 8 minutes.

On whatever CUDA device is present it runs, each part with its own time budget (a part that runs
over is stopped and recorded as ``timeout``, one that fails records its error; the rest still run):

1. ``gpu_tests``    the GPU-marked tests (``pytest -m gpu`` on the test files that carry the marker);
2. ``rollout``      KV-cached latent rollout against the reference recompute, m = 16 / 48 / 80
                    (``bench_rollout.py``, Qwen3-1.7B's shape, bf16);
3. ``decode``       ``system.run`` against ``model.generate``, batch 1 and 8 (``bench_decode.py``);
4. ``latent_text``  latent against text edges at R = 1-3 on the ``sequential_light_mini`` shapes
                    (``bench_latent_text.py``);
5. ``scaling``      batch size 1-32 with the CUDA peak of a pass (``bench_scaling.py``,
                    ``sequential_light``'s shapes);
6. ``memory``       low-memory mode against normal mode: CUDA peak, build and run times, loads;
7. ``equivalence``  the same greedy run on CPU fp32, CUDA fp32 and CUDA bf16: identical answers,
                    largest difference of the latent messages.

Before them, ``models`` builds random-weight models of the published systems' shapes
(``gpu_shapes.json``: Qwen3-1.7B, Llama-3.2-1B, Qwen2.5-Math-1.5B, and the ``_mini`` systems'
Gemma-3-270M and SmolLM2-135M) into a work folder, each with a byte-level BPE tokenizer trained on
the project's docs and the questions, padded to the model's vocabulary, and topologies that point at
them (the packaged checkpoints cannot travel to the GPU machine; random weights time the same shapes).
The questions are ``gsm8k_questions.json``'s (the packaged datasets are not installed there).

It writes ``gpu_check.json`` (device, driver, CUDA, torch and transformers versions; per part: status,
seconds, budget, figures, error) after every part, ``gpu_check.md`` (the same as tables) and
``gpu_check.log`` (everything printed) to ``--out DIR``. On a GPU each part runs in its own process
(a clean CUDA context and peak, a hard stop at its budget); ``--no-isolate`` runs them in this one.

Without a GPU it runs the same parts on the CPU in ``--quick`` mode (the shapes shrunk to 2 layers,
few steps, float32 where the GPU run uses bf16, one torch thread) in about 30 s;
tests/test_gpu_check.py does that.

On the GPU machine (no package registry; its image lacks pydantic and graphviz), with the wheels
that ``scripts/prepare_gpu_wheels.sh`` put in ``.whl/`` here (device call: carry [".whl"],
timeout_s 560; the results come back in $OUT/gpu):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \\
      && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && python3 benchmarks/gpu_check.py --out $OUT/gpu

Here: ``.venv/bin/python benchmarks/gpu_check.py --quick --out out/gpu_check``. Other options:
``--parts rollout,decode`` (the models part is added when needed), ``--budget rollout=90``,
``--total 470``, ``--work DIR`` (keep and reuse the built models).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import hashlib
import importlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

SHAPES_FILE = HERE / "gpu_shapes.json"
QUESTIONS_FILE = HERE / "gsm8k_questions.json"
#: The topologies whose shapes are built: the published sequential style and its _mini version.
SYSTEMS = ("sequential_light", "sequential_light_mini")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>", "<|bos|>")

# (full budget s, quick budget s) per part. The full ones add up to 460 s; the whole run is held to
# 470 s (a part gets what is left of that when it is less than its own), inside the 8 minutes.
BUDGETS = {"models": (70, 40), "gpu_tests": (40, 45), "rollout": (40, 25), "decode": (55, 25),
           "latent_text": (55, 25), "scaling": (65, 25), "memory": (80, 30), "equivalence": (55, 30)}
TOTAL = (470, 200)


def _setup_environment() -> None:
    """Offline, the built-in plugins only (the same registry on every machine), and child processes
    (pytest, isolated parts) that find the package in this checkout."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RECMAS_DISABLE_PLUGINS", "1")
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------


class _Tee:
    """Writes to the console and the log file, flushing every write (progress shows in pipes too)."""

    def __init__(self, stream: Any, log: Any) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.stream.flush()
        try:
            self.log.write(text)
            self.log.flush()
        except ValueError:  # the log was closed at exit
            pass
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.stream.fileno()


def say(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------------
# parts: definitions, budgets, running in this process or in a child
# --------------------------------------------------------------------------------------------------


class PartTimeout(BaseException):
    """Raised in a part when its budget is spent (a BaseException: no ``except Exception`` eats it)."""


class Terminated(BaseException):
    """Raised on SIGTERM (a device call's time limit, say): the run records what it has and stops."""


@dataclass
class Part:
    """What one part does and records; ``figures`` fill as it goes (kept when it stops early)."""

    name: str
    opts: dict[str, Any]
    state: dict[str, Any]
    save: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        self.figures: dict[str, Any] = {}

    def put(self, **figures: Any) -> None:
        self.figures.update(figures)
        self.save()

    def log(self, message: str) -> None:
        say(f"{self.name}: {message}")

    # -------------------------------------------------------------- shared helpers
    @property
    def quick(self) -> bool:
        return bool(self.opts["quick"])

    @property
    def device(self) -> str:
        return str(self.opts["device"])

    @property
    def work(self) -> Path:
        return Path(self.opts["work"])

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def topology(self, name: str) -> str:
        return self.state["topologies"][name]

    def folder(self, shape: str) -> str:
        return self.state["folders"][shape]


def _cleanup() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - a broken CUDA context is reported by the next part
        pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise PartTimeout()


def run_part_here(name: str, opts: dict[str, Any], state: dict[str, Any], budget: float,
                  save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run one part in this process, stopped by SIGALRM at its budget; returns its record."""
    part = Part(name, opts, state)
    record: dict[str, Any] = {"status": "running", "figures": part.figures}
    part.save = lambda: save(record)
    t0 = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(budget, 0.1))
    try:
        PARTS[name](part)
        record["status"] = "ok"
    except PartTimeout:
        record.update(status="timeout", error=f"stopped at its budget of {_secs(budget)} s")
    except BaseException as err:  # noqa: BLE001 - every failure is recorded, the rest still run
        if isinstance(err, (KeyboardInterrupt, Terminated)):
            signal.setitimer(signal.ITIMER_REAL, 0)
            record.update(status="interrupted", error=type(err).__name__, seconds=round(time.perf_counter() - t0, 2))
            raise
        record.update(status="failed", error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc()[-4000:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    with contextlib.suppress(PartTimeout):
        _cleanup()
    return record


def run_part_child(name: str, opts: dict[str, Any], state: dict[str, Any], budget: float,
                   save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run one part in a child process (``--child``), killed with its process group past its budget;
    what the child records so far is passed to ``save`` as it comes."""
    work = Path(opts["work"])
    spec, result = work / f"child_{name}.json", work / f"child_{name}.result.json"
    result.unlink(missing_ok=True)
    spec.write_text(json.dumps({"name": name, "opts": opts, "state": state, "budget": budget}), encoding="utf-8")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-u", str(Path(__file__).resolve()), "--child", str(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True, cwd=str(ROOT))
    tail: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line)
            del tail[:-60]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    killed = False
    seen = 0.0
    deadline = time.monotonic() + budget + 10  # the child stops itself at its budget; this is the backstop
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                killed = True
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
            with contextlib.suppress(OSError, ValueError):
                if result.is_file() and result.stat().st_mtime != seen:
                    seen = result.stat().st_mtime
                    save(json.loads(result.read_text(encoding="utf-8")))
    except BaseException:  # Ctrl-C, SIGTERM: the child is in its own session, so stop it here
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    if killed:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    reader.join(timeout=5)
    record: dict[str, Any] = {"status": "failed", "figures": {}}
    if result.is_file():
        with contextlib.suppress(ValueError):
            record = json.loads(result.read_text(encoding="utf-8"))
    if killed:
        record.update(status="timeout",
                      error=f"killed {_secs(budget + 10)} s after its start (budget {_secs(budget)} s)")
    elif record.get("status") in (None, "running"):
        record.update(status="failed", error=f"the part's process ended with code {proc.returncode}",
                      output_tail="".join(tail)[-4000:])
    elif record.get("status") == "failed":
        record.setdefault("output_tail", "".join(tail)[-2000:])
    record["seconds"] = round(time.perf_counter() - t0, 2)
    record["isolated"] = True
    return record


def child_main(spec_file: str) -> int:
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    result = Path(spec_file).with_suffix(".result.json")

    def save(record: dict[str, Any]) -> None:
        _write_json(result, record)

    if spec["opts"].get("threads"):
        import torch

        torch.set_num_threads(spec["opts"]["threads"])
    budget = float(spec["budget"])
    record = run_part_here(spec["name"], spec["opts"], spec["state"], max(budget - 2, 0.8 * budget), save)
    if record["status"] == "timeout":
        record["error"] = f"stopped at its budget of {_secs(budget)} s"
    save(record)
    return 0


def _secs(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _bench(module: str, argv: list[str]) -> None:
    """Run ``benchmarks/<module>.py``'s ``main()`` in this process with ``argv``."""
    bench = importlib.import_module(module)
    saved = sys.argv
    sys.argv = [f"{module}.py", *map(str, argv)]
    try:
        bench.main()
    finally:
        sys.argv = saved


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _auto_dtype(device: str) -> str:
    from recmas_graph.runtime.sources.loaded import resolve_dtype

    dt = resolve_dtype(None, device)
    return str(dt).removeprefix("torch.")


# --------------------------------------------------------------------------------------------------
# part: models (random weights of the published shapes, a tokenizer, topologies pointing at them)
# --------------------------------------------------------------------------------------------------


def _corpus() -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    texts.append((ROOT / "README.md").read_text(encoding="utf-8"))
    texts.extend(_read(QUESTIONS_FILE)["questions"])
    return texts


def train_tokenizer(vocab: int) -> dict[str, Any]:
    """A byte-level BPE (GPT-2 style) of up to ``vocab`` entries trained on the docs and the questions:
    the prompts get about as many tokens as a real tokenizer gives them (4.4 characters per token on
    the questions at 8192). Returned as tokenizer.json data."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_corpus(), trainer)
    return json.loads(backend.to_str())


def padded_tokenizer(base: dict[str, Any], vocab_size: int, *, add_bos: bool, name: str) -> Any:
    """The trained tokenizer padded with filler tokens to exactly ``vocab_size`` ids, specials last, so
    every id a random model emits decodes to text (short printable strings that re-encode to 1-3
    tokens); ChatML chat template, left padding."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    from recmas_graph.runtime.sources.tiny import CHATML_TEMPLATE

    data = copy.deepcopy(base)
    vocab: dict[str, int] = data["model"]["vocab"]
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise RuntimeError("the trained tokenizer's ids are not contiguous")
    wanted = vocab_size - len(SPECIALS)
    if wanted < len(vocab):
        raise RuntimeError(f"vocabulary {vocab_size} is smaller than the trained tokenizer ({len(vocab)} + specials)")
    alphabet = [chr(c) for c in range(33, 127) if chr(c) not in "<>|"]
    fillers = ("".join(p) for k in (2, 3, 4) for p in itertools.product(alphabet, repeat=k))
    while len(vocab) < wanted:
        token = next(fillers)
        if token not in vocab:
            vocab[token] = len(vocab)
    backend = Tokenizer.from_str(json.dumps(data))
    backend.add_special_tokens(list(SPECIALS))
    if add_bos:
        bos = backend.token_to_id("<|bos|>")
        backend.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", bos)])
    if backend.get_vocab_size() != vocab_size:
        raise RuntimeError(f"padded tokenizer has {backend.get_vocab_size()} ids, wanted {vocab_size}")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|bos|>", eos_token="<|im_end|>", pad_token="<|pad|>",
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"], chat_template=CHATML_TEMPLATE,
        padding_side="left", model_max_length=32768, clean_up_tokenization_spaces=False, name_or_path=name)


def shape_config(shape: dict[str, Any], quick: bool) -> dict[str, Any]:
    config = dict(shape["config"])
    if quick:
        config.update(shape["quick"])
    return config


def build_model(name: str, shape: dict[str, Any], tok_base: dict[str, Any], folder: Path, *, quick: bool,
                device: str, seed: int) -> dict[str, Any]:
    """Save a random-weight model of ``shape`` (bf16) and its tokenizer to ``folder``; returns facts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from recmas_graph.runtime.sources.loaded import quiet_transformers

    config_kw = shape_config(shape, quick)
    tokenizer = padded_tokenizer(tok_base, config_kw["vocab_size"], add_bos=bool(shape.get("add_bos")), name=name)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = AutoConfig.for_model(shape["model_type"], **config_kw, **ids)
    config.architectures = None
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    try:
        with torch.device(device):  # random init on the GPU takes a second where the CPU takes a minute
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    except Exception as err:  # noqa: BLE001 - the CPU always works
        if device == "cpu":
            raise
        say(f"models: {name}: building on {device} failed ({type(err).__name__}: {err}); building on the CPU")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    gen = model.generation_config
    gen.bos_token_id, gen.pad_token_id = tokenizer.bos_token_id, tokenizer.pad_token_id
    gen.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    built = time.perf_counter() - t0
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    params = sum(p.numel() for p in model.parameters())
    del model
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    size = sum(f.stat().st_size for f in folder.iterdir())
    return {"params_m": round(params / 1e6, 1), "layers": config_kw["num_hidden_layers"],
            "hidden": config_kw["hidden_size"], "vocab": config_kw["vocab_size"], "disk_mb": round(size / 2**20),
            "build_s": round(built, 2), "save_s": round(time.perf_counter() - t0 - built, 2),
            "mirrors": shape["mirrors"]}


def part_models(part: Part) -> None:
    import recmas_graph as rg

    shapes = _read(SHAPES_FILE)["shapes"]
    by_ref = {ref: name for name, shape in shapes.items() for ref in shape["mirrors"]}
    specs = {name: rg.compile(name).spec.model_dump(mode="json") for name in SYSTEMS}
    needed = sorted({by_ref[a["model"]] for spec in specs.values() for a in spec["agents"]})
    tok_vocab = part.pick(8192, 1536)
    t0 = time.perf_counter()
    tok_base = train_tokenizer(tok_vocab)
    questions = _read(QUESTIONS_FILE)["questions"]
    from tokenizers import Tokenizer

    probe = Tokenizer.from_str(json.dumps(tok_base))
    chars = sum(len(q) for q in questions)
    tokens = sum(len(probe.encode(q).ids) for q in questions)
    part.put(tokenizer={"trained_vocab": tok_vocab, "train_s": round(time.perf_counter() - t0, 2),
                        "chars_per_token_gsm8k": round(chars / tokens, 2)})
    create_on = "cuda" if part.device.startswith("cuda") else "cpu"
    folders, facts = {}, {}
    models_dir = part.work / ("models_quick" if part.quick else "models")
    models_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(needed):
        folder = models_dir / name
        key = hashlib.sha256(json.dumps([shapes[name], tok_base["model"]["merges"], part.quick],
                                        sort_keys=True, default=str).encode()).hexdigest()[:16]
        stamp = folder / "gpu_check_shape.txt"
        if stamp.is_file() and stamp.read_text().strip() == key:
            facts[name] = {"reused": True, "mirrors": shapes[name]["mirrors"]}
        else:
            facts[name] = build_model(name, shapes[name], tok_base, folder, quick=part.quick, device=create_on,
                                      seed=1000 + i)
            stamp.write_text(key + "\n")
        folders[name] = str(folder)
        part.log(f"{name}: {facts[name]}")
        part.put(models=facts)
        _cleanup()
    topologies = {}
    for system, spec in specs.items():
        spec = copy.deepcopy(spec)
        spec["name"] = f"{system}_shapes"
        spec["description"] = f"{system} with random-weight models of its models' shapes (benchmarks/gpu_check.py)"
        for agent in spec["agents"]:
            agent["model"] = folders[by_ref[agent["model"]]]
        path = part.work / f"{system}_shapes{'_quick' if part.quick else ''}.json"
        path.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        rg.compile(str(path))  # valid before any part relies on it
        topologies[system] = str(path)
    part.state.update(folders=folders, topologies=topologies)
    part.put(state={"folders": folders, "topologies": topologies})


# --------------------------------------------------------------------------------------------------
# part: the GPU-marked tests
# --------------------------------------------------------------------------------------------------

_GPU_MARK = re.compile(r"^\s*(@pytest\.mark\.gpu\b|pytestmark\s*=.*\bpytest\.mark\.gpu\b)", re.M)


def gpu_test_files() -> list[str]:
    files = []
    for path in sorted([*(ROOT / "tests").glob("test_*.py"), *(ROOT / "plugins").glob("*/tests/test_*.py")]):
        if _GPU_MARK.search(path.read_text(encoding="utf-8")):
            files.append(str(path.relative_to(ROOT)))
    return files


def part_gpu_tests(part: Part) -> None:
    import xml.etree.ElementTree as ET

    files = gpu_test_files()
    part.put(files=files)
    if not files:
        raise RuntimeError("no test file carries @pytest.mark.gpu")
    junit = part.work / "gpu_tests.xml"
    junit.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider",
               f"--junitxml={junit}", *files]
    part.log(" ".join(command[1:]))
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, _ = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    print(out[-3000:], flush=True)
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    cases = []
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = {"failure": "failed", "error": "errors", "skipped": "skipped"}[child.tag]
                    message = (child.get("message") or "")[:300]
                    break
            else:
                message = ""
            counts[outcome] += 1
            cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                          "seconds": float(case.get("time") or 0), **({"message": message} if message else {})})
    part.put(exit_code=proc.returncode, **counts, cases=cases, output_tail=out[-1500:])
    if proc.returncode not in (0, 5) or counts["failed"] or counts["errors"]:
        raise RuntimeError(f"pytest -m gpu: {counts['failed']} failed, {counts['errors']} errors "
                           f"(exit code {proc.returncode})")


# --------------------------------------------------------------------------------------------------
# parts reusing the benchmark scripts
# --------------------------------------------------------------------------------------------------


def part_rollout(part: Part) -> None:
    out = part.work / "rollout.json"
    out.unlink(missing_ok=True)
    shape = "qwen3-1.7b"
    part.put(shape=shape, dtype=_auto_dtype(part.device))
    _bench("bench_rollout", ["--model", part.folder(shape), "--device", part.device, "--steps", "16", "48", "80",
                             "--repeat", part.pick(2, 1), "--json", out])
    part.put(**_read(out), shape=shape)


def part_decode(part: Part) -> None:
    shape = "qwen3-1.7b"
    runs = []
    part.put(shape=shape, dtype=_auto_dtype(part.device), runs=runs)
    for batch, tokens in part.pick([(1, 64), (8, 48)], [(1, 8), (2, 8)]):
        out = part.work / f"decode_{batch}.json"
        out.unlink(missing_ok=True)
        _bench("bench_decode", ["--model", part.folder(shape), "--device", part.device, "--batch", batch,
                                "--tokens", tokens, "--repeat", part.pick(2, 1), "--json", out])
        runs.append(_read(out))
        part.put(runs=runs)


def part_latent_text(part: Part) -> None:
    out = part.work / "latent_text.json"
    out.unlink(missing_ok=True)
    part.put(system="sequential_light_mini (shapes)", dtype=_auto_dtype(part.device))
    _bench("bench_latent_text", ["--topology", part.topology("sequential_light_mini"), "--device", part.device,
                                 "--questions-file", QUESTIONS_FILE, "--questions", 4, "--rounds", "1,2,3",
                                 "--latent-steps", part.pick(8, 2), "--text-tokens", part.pick(64, 4),
                                 "--answer-tokens", part.pick(64, 4), "--json", out])
    part.put(**_read(out), system="sequential_light_mini (shapes)")


def part_scaling(part: Part) -> None:
    out = part.work / "scaling.json"
    out.unlink(missing_ok=True)
    part.put(system="sequential_light (shapes)", dtype=_auto_dtype(part.device))
    _bench("bench_scaling", ["--topology", part.topology("sequential_light"), "--device", part.device,
                             "--questions-file", QUESTIONS_FILE, "--sweeps", "batch",
                             "--batches", part.pick("1,2,4,8,16,32", "1,2,4"), "--answer-tokens", part.pick(16, 4),
                             "--json", out])
    part.put(**_read(out), system="sequential_light (shapes)")


# --------------------------------------------------------------------------------------------------
# part: low-memory mode against normal mode
# --------------------------------------------------------------------------------------------------


def _attn(system: Any) -> dict[str, str]:
    return {name: str(getattr(agent.model.config, "_attn_implementation", "?"))
            for name, agent in system.agents.items()}


def part_memory(part: Part) -> None:
    import torch

    import recmas_graph as rg
    from recmas_graph.runtime.memory.peak import resident_bytes

    cuda = part.device.startswith("cuda")
    questions = _read(QUESTIONS_FILE)["questions"][:4]
    settings = dict(rounds=2, latent_steps=part.pick(8, 2), max_new_tokens=part.pick(32, 4), greedy=True)
    part.put(system="sequential_light (shapes)", dtype=_auto_dtype(part.device), batch=len(questions), **settings)
    modes: dict[str, Any] = {}
    answers = {}
    for mode in ("normal", "low-memory"):
        _cleanup()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else (resident_bytes() or 0)
        t0 = time.perf_counter()
        system = rg.compile(part.topology("sequential_light")).build(low_memory=mode == "low-memory",
                                                                      device=part.device)
        built = time.perf_counter()
        held = (torch.cuda.memory_allocated() if cuda else (resident_bytes() or 0)) - base
        result = system.run(questions, **settings)
        if cuda:
            torch.cuda.synchronize()
        done = time.perf_counter()
        modes[mode] = {
            "build_s": round(built - t0, 2), "run_s": round(done - built, 2),
            "held_after_build_mb": round(held / 2**20), "loads": system.residency.loads if system.residency else None,
            "cuda_peak_mb": round((torch.cuda.max_memory_allocated() - base) / 2**20) if cuda else None,
            "largest_pass_peak_mb": round(max(r.peak_mem_bytes for r in result.trace) / 2**20),
            "attn_implementation": _attn(system) if system.residency is None else None,
        }
        answers[mode] = result.answers
        del system, result
        part.put(modes=modes)
    part.put(modes=modes, same_answers=answers["normal"] == answers["low-memory"])


# --------------------------------------------------------------------------------------------------
# part: the same greedy run on CPU fp32, CUDA fp32 and CUDA bf16
# --------------------------------------------------------------------------------------------------


def part_equivalence(part: Part) -> None:
    import torch

    import recmas_graph as rg

    questions = _read(QUESTIONS_FILE)["questions"][:4]
    settings = dict(rounds=2, latent_steps=part.pick(8, 2), max_new_tokens=part.pick(24, 6), greedy=True)
    part.put(system="sequential_light_mini (shapes)", batch=len(questions), **settings)
    if torch.cuda.is_available() and part.device.startswith("cuda"):
        runs = [("cpu", "float32"), (part.device, "float32"), (part.device, "bfloat16")]
    else:  # without CUDA: what bf16 does on the CPU, and that a rerun is bitwise the same
        runs = [("cpu", "float32"), ("cpu", "float32"), ("cpu", "bfloat16")]
        part.put(note="no CUDA device: CPU runs only (fp32 twice, then bf16)")
    results: list[dict[str, Any]] = []
    for device, dtype in runs:
        t0 = time.perf_counter()
        system = rg.compile(part.topology("sequential_light_mini")).build(device=device, dtype=dtype, seed=0)
        result = system.run(questions, keep_messages=True, **settings)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        results.append({"label": f"{device.split(':')[0]} {dtype}", "answers": result.answers,
                        "messages": {k: v.float().cpu() for k, v in result.messages.items()},
                        "seconds": round(time.perf_counter() - t0, 2), "attn": _attn(system)})
        del system, result
        _cleanup()
        part.put(runs=[{k: r[k] for k in ("label", "seconds", "attn")} for r in results])
    ref = results[0]
    comparisons = []
    for other in results[1:]:
        same = [a == b for a, b in zip(ref["answers"], other["answers"], strict=True)]
        prefix = [_common_prefix(a, b) / max(len(a), len(b), 1) for a, b in zip(ref["answers"], other["answers"],
                                                                                strict=True)]
        diffs, rels, scale = [], [], []
        for key, msg in ref["messages"].items():
            theirs = other["messages"][key]
            diffs.append(float((msg - theirs).abs().max()))
            rels.append(float((msg - theirs).norm() / msg.norm().clamp_min(1e-30)))
            scale.append(float(msg.abs().max()))
        comparisons.append({
            "pair": f"{ref['label']} vs {other['label']}", "identical_answers": sum(same) / len(same),
            "mean_common_prefix": round(sum(prefix) / len(prefix), 3), "messages": len(diffs),
            "max_abs_diff": max(diffs, default=0.0), "max_rel_diff": max(rels, default=0.0),
            "max_abs_message": max(scale, default=0.0)})
        part.put(comparisons=comparisons)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


PARTS: dict[str, Callable[[Part], None]] = {
    "models": part_models, "gpu_tests": part_gpu_tests, "rollout": part_rollout, "decode": part_decode,
    "latent_text": part_latent_text, "scaling": part_scaling, "memory": part_memory,
    "equivalence": part_equivalence,
}
NEEDS_MODELS = {"rollout", "decode", "latent_text", "scaling", "memory", "equivalence"}
TITLES = {
    "models": "random-weight models of the published shapes",
    "gpu_tests": "pytest -m gpu",
    "rollout": "KV-cached latent rollout vs recompute",
    "decode": "system.run vs model.generate",
    "latent_text": "latent vs text edges, R = 1-3",
    "scaling": "batch scaling with the peak of a pass",
    "memory": "low-memory mode vs normal mode",
    "equivalence": "CPU fp32 vs CUDA fp32 vs bf16",
}


# --------------------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------------------


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {
        "device": device, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
    }
    with contextlib.suppress(Exception):
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
    if torch.cuda.is_available():
        index = torch.device(device).index if device.startswith("cuda") and ":" in device else 0
        facts: dict[str, Callable[[], Any]] = {
            "gpu": lambda: torch.cuda.get_device_name(index),
            "gpu_count": torch.cuda.device_count,
            "gpu_memory_gb": lambda: round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1),
            "capability": lambda: "{}.{}".format(*torch.cuda.get_device_capability(index)),
            "multiprocessors": lambda: torch.cuda.get_device_properties(index).multi_processor_count,
            "bf16_supported": torch.cuda.is_bf16_supported,
            "cudnn": torch.backends.cudnn.version,
            "sdp_flash": torch.backends.cuda.flash_sdp_enabled,
            "sdp_mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled,
            "tf32_matmul": lambda: torch.backends.cuda.matmul.allow_tf32,
        }
        for key, read in facts.items():  # one unreadable fact must not stop the check
            try:
                env[key] = read()
            except Exception as err:  # noqa: BLE001
                env[key] = f"unreadable: {type(err).__name__}: {err}"
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(Exception):
            out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
            if out:
                name, driver, memory = (x.strip() for x in out[0].split(",")[:3])
                env.update(driver=driver, nvidia_smi_gpu=name, nvidia_smi_memory=memory)
    return env


# --------------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------------


def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 10 ** -digits or abs(x) >= 1e6):
            return f"{x:.1e}"
        return f"{x:.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines


def _md_part(name: str, f: dict[str, Any]) -> list[str]:
    if name == "models":
        rows = [[k, _f(v.get("params_m")), _f(v.get("layers")), _f(v.get("hidden")), _f(v.get("vocab")),
                 _f(v.get("disk_mb")), _f(v.get("build_s")), _f(v.get("save_s")), ", ".join(v.get("mirrors", []))]
                for k, v in f.get("models", {}).items()]
        tok = f.get("tokenizer", {})
        return [f"Tokenizer: byte-level BPE, {tok.get('trained_vocab')} trained entries, "
                f"{tok.get('chars_per_token_gsm8k')} characters per token on the GSM8K questions.", ""] + _table(
            ["shape", "params M", "layers", "hidden", "vocab", "disk MB", "build s", "save s", "stands for"], rows)
    if name == "gpu_tests":
        rows = [[c["test"], c["outcome"], f"{c['seconds']:.2f}", c.get("message", "")[:120]]
                for c in f.get("cases", [])]
        return _table(["test", "outcome", "s", "message"], rows)
    if name == "rollout":
        rows = [[r["m"], _f(r["cached_s"], 3), _f(r["recompute_s"], 3), f"{r['speedup']:.1f}x",
                 _f(r["ms_per_step_cached"]), f"{r['rel_err']:.1e}"] for r in f.get("rows", [])]
        return [f"{f.get('shape')}, {f.get('dtype')}, prompt {f.get('prompt_tokens')} tokens, best of "
                f"{f.get('repeat')}; plain cached decode {_f(f.get('decode_ms_per_token'))} ms/token.", ""] + _table(
            ["m", "cached s", "recompute s", "speed-up", "ms / step (cached)", "relative error"], rows)
    if name == "decode":
        rows = []
        for run in f.get("runs", []):
            for mode in ("greedy", "sample"):
                if mode in run:
                    m = run[mode]
                    rows.append([run["batch"], run["new_tokens"], mode, _f(m["system_run_tok_s"], 1),
                                 _f(m["generate_tok_s"], 1), _f(m["ratio"], 3),
                                 _f(run.get("same_greedy_text")) if mode == "greedy" else "-"])
        return [f"{f.get('shape')}, {f.get('dtype')}.", ""] + _table(
            ["batch", "new tokens", "mode", "system.run tok/s", "generate tok/s", "ratio (time/token)",
             "same greedy text"], rows)
    if name == "latent_text":
        rows = [[r["rounds"], _f(r["latent_s"]), _f(r["text_s"]), f"{r['speedup']:.2f}x", r["latent_tokens"],
                 r["text_tokens"], f"{100 * r['token_reduction']:.1f}%"] for r in f.get("rows", [])]
        return [f"{f.get('system')}, {f.get('dtype')}, {f.get('questions')} questions, m = {f.get('latent_steps')}, "
                f"text messages <= {f.get('text_tokens')}, answers <= {f.get('answer_tokens')}.", ""] + _table(
            ["R", "latent s", "text s", "speed-up", "tokens latent", "tokens text", "fewer"], rows)
    if name == "scaling":
        rows = [[r["batch"], _f(r["wall_s"]), _f(r["questions_per_s"], 3), f"{r['peak_mb']:.0f}", r["passes"]]
                for r in f.get("batch", [])]
        return [f"{f.get('system')}, {f.get('dtype')}, R = 3, m = 8, answers <= {f.get('answer_tokens')}; peak MB "
                "is the largest pass's (CUDA: allocated, weights included; CPU: resident increase).", ""] + _table(
            ["batch", "wall s", "questions/s", "peak MB", "passes"], rows)
    if name == "memory":
        rows = [[mode, _f(m["build_s"]), _f(m["run_s"]), _f(m["held_after_build_mb"]), _f(m["cuda_peak_mb"]),
                 _f(m["largest_pass_peak_mb"]), _f(m["loads"])] for mode, m in f.get("modes", {}).items()]
        return [f"{f.get('system')}, {f.get('dtype')}, batch {f.get('batch')}, R = {f.get('rounds')}, "
                f"m = {f.get('latent_steps')}, answers <= {f.get('max_new_tokens')}; same answers: "
                f"{_f(f.get('same_answers'))}.", ""] + _table(
            ["mode", "build s", "run s", "held after build MB", "CUDA peak MB", "largest pass MB", "loads"], rows)
    if name == "equivalence":
        attn = sorted({impl for run in f.get("runs", []) for impl in (run.get("attn") or {}).values()})
        rows = [[c["pair"], f"{100 * c['identical_answers']:.0f}%", _f(c["mean_common_prefix"], 3),
                 f"{c['max_abs_diff']:.1e}", f"{c['max_rel_diff']:.1e}", f"{c['max_abs_message']:.2f}"]
                for c in f.get("comparisons", [])]
        return [f"{f.get('system')}, batch {f.get('batch')}, R = {f.get('rounds')}, m = {f.get('latent_steps')}, "
                f"greedy answers <= {f.get('max_new_tokens')} tokens; attention: {', '.join(attn) or '-'}."
                + (f" {f['note']}." if f.get("note") else ""),
                ""] + _table(["pair", "identical answers", "common prefix", "max abs diff (messages)",
                              "max rel diff", "max abs message"], rows)
    return ["```", json.dumps(f, indent=1, default=str)[:3000], "```"]


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    where = env.get("gpu") or f"CPU ({env.get('cpu_count')} cores)"
    lines = ["# gpu_check", "",
             f"{where}; driver {env.get('driver', '-')}, CUDA {env.get('torch_cuda') or '-'}, torch {env['torch']}, "
             f"transformers {env['transformers']}, Python {env['python']}; "
             f"{'quick (shrunk shapes)' if report['quick'] else 'full shapes'}; started {report['started']}; "
             f"commit {env.get('commit') or '-'}.", ""]
    if env.get("gpu"):
        lines += [f"GPU: {env['gpu']} ({env.get('gpu_memory_gb')} GiB, capability {env.get('capability')}, "
                  f"{env.get('multiprocessors')} SMs, {env.get('gpu_count')} device(s)); bf16 supported: "
                  f"{_f(env.get('bf16_supported'))}; SDPA flash / memory-efficient enabled: "
                  f"{_f(env.get('sdp_flash'))} / {_f(env.get('sdp_mem_efficient'))}; "
                  f"TF32 matmul: {_f(env.get('tf32_matmul'))}; cuDNN {env.get('cudnn')}.", ""]
    lines += _table(["part", "what", "status", "s", "budget s"],
                    [[n, TITLES.get(n, n), p["status"], _f(p.get("seconds")), _f(p.get("budget_s"), 0)]
                     for n, p in report["parts"].items()]) + [""]
    for name, part in report["parts"].items():
        lines += [f"## {name}: {TITLES.get(name, name)} ({part['status']})", ""]
        if part.get("error"):
            lines += [f"Error: `{part['error'][:500]}`", ""]
        figures = part.get("figures") or {}
        try:
            lines += _md_part(name, figures) + [""]
        except Exception:  # noqa: BLE001 - partial figures of a stopped part: show them as they are
            lines += ["```", json.dumps(figures, indent=1, default=str)[:3000], "```", ""]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="See the module docstring for the command on the GPU machine.")
    parser.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md and gpu_check.log")
    parser.add_argument("--quick", action="store_true", help="shrunk shapes and few steps (the CPU check)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS",
                        help="a part's own time budget (repeatable)")
    parser.add_argument("--total", type=float, default=None, help="seconds for everything (default 470, quick 200)")
    parser.add_argument("--work", default=None, help="work folder (models, topologies); default: a temporary one")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="each part in its own process (default: on a GPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 for --quick on the CPU, where the shrunk models gain "
                             "nothing from more and a busy machine costs a lot; else torch's default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    _setup_environment()
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--child":
        return child_main(sys.argv[2])
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "gpu_check.log", "w", encoding="utf-8")  # noqa: SIM115 - open for the whole run
    sys.stdout, sys.stderr = _Tee(sys.__stdout__, log), _Tee(sys.__stderr__, log)
    started = time.perf_counter()

    def terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, terminated)
    say(f"starting: {' '.join(sys.argv)}")
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        say("error: --device cuda but torch sees no CUDA device")
        return 2
    quick = args.quick
    if not quick and not device.startswith("cuda"):
        say("no CUDA device: running the CPU check (--quick)")
        quick = True
    names = [n.strip() for n in args.parts.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        say(f"error: unknown part(s) {', '.join(unknown)}; use some of: {', '.join(PARTS)}")
        return 2
    if any(n in NEEDS_MODELS for n in names) and "models" not in names:
        names.insert(0, "models")
    names = [n for n in PARTS if n in names]  # the documented order
    budgets = {n: float(BUDGETS[n][1 if quick else 0]) for n in PARTS}
    for item in args.budget:
        key, _, value = item.partition("=")
        if key not in budgets or not value:
            say(f"error: --budget {item!r}: use PART=SECONDS with one of {', '.join(PARTS)}")
            return 2
        budgets[key] = float(value)
    total = args.total if args.total is not None else float(TOTAL[1 if quick else 0])
    isolate = device.startswith("cuda") if args.isolate is None else args.isolate
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="recmas_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    threads = args.threads if args.threads else (1 if quick and not device.startswith("cuda") else None)
    if threads:
        torch.set_num_threads(threads)
    opts = {"quick": quick, "device": device, "work": str(work), "threads": threads}
    report: dict[str, Any] = {
        "tool": "benchmarks/gpu_check.py", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": quick,
        "isolated": isolate, "total_budget_s": total, "argv": sys.argv[1:], "environment": environment(device),
        "parts": {n: {"status": "pending", "budget_s": budgets[n]} for n in names},
    }

    def write() -> None:
        report["elapsed_s"] = round(time.perf_counter() - started, 1)
        _write_json(out / "gpu_check.json", report)
        (out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")

    env = report["environment"]
    say(f"device {device} ({env.get('gpu') or 'CPU'}), driver {env.get('driver', '-')}, CUDA {env.get('torch_cuda')}, "
        f"torch {env['torch']}, transformers {env['transformers']}; {'quick' if quick else 'full'} shapes, "
        f"{'each part in its own process' if isolate else 'one process'}, {total:.0f} s in all; work {work}")
    write()

    def run_one(name: str, state: dict[str, Any]) -> None:
        left = total - (time.perf_counter() - started)
        budget = min(budgets[name], left)
        record: dict[str, Any]
        if name in NEEDS_MODELS and not state.get("topologies"):
            record = {"status": "skipped", "error": "the models part did not finish"}
        elif left < 5:
            record = {"status": "skipped", "error": f"only {_secs(max(left, 0))} s of the total {_secs(total)} s left"}
        else:
            say(f"part {name} ({TITLES[name]}): budget {_secs(budget)} s")

            def save(partial: dict[str, Any]) -> None:
                report["parts"][name].update(partial)
                write()

            try:
                if isolate:
                    record = run_part_child(name, opts, state, budget, save)
                else:
                    record = run_part_here(name, opts, state, budget, save)
            except (KeyboardInterrupt, Terminated) as err:
                report["parts"][name].update(status="interrupted", error=type(err).__name__)
                write()
                raise
            if name == "models" and record.get("status") == "ok":
                state.update(record.get("figures", {}).get("state", {}))
            say(f"part {name}: {record['status']} in {record.get('seconds', 0):.1f} s"
                + (f" ({record['error']})" if record.get("error") else ""))
        record["budget_s"] = round(budget, 1)
        report["parts"][name] = {"status": record.get("status"), **{k: v for k, v in record.items() if k != "status"}}
        write()

    state: dict[str, Any] = {}
    try:
        for name in names:
            run_one(name, state)
        say(f"done in {time.perf_counter() - started:.0f} s: "
            + ", ".join(f"{n} {p['status']}" for n, p in report["parts"].items())
            + f"; wrote {out}/gpu_check.json, .md")
        code = 0 if all(p["status"] == "ok" for p in report["parts"].values()) else 1
    except (KeyboardInterrupt, Terminated) as err:
        say(f"interrupted ({type(err).__name__}); wrote {out}/gpu_check.json with what finished")
        code = 130 if isinstance(err, KeyboardInterrupt) else 143
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        log.close()
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    return code

if __name__ == "__main__":
    sys.exit(main())
