"""Model sizes without weights: safetensors headers and config.json, for memory estimates.

A safetensors file starts with an 8-byte little-endian header length and a JSON header giving
every tensor's dtype and shape, so a checkpoint's parameter count and bytes are read without
touching the weights. Without safetensors files the count is exact from the config when
transformers knows its ``model_type`` and accelerate is installed (the model built on the meta
device by ``accelerate.init_empty_weights``: no memory, no weights), else computed for a standard
decoder (embeddings, attention, gated MLP, norms; an estimate for other architectures).

>>> size_from_config({"vocab_size": 100, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
...                   "num_attention_heads": 2, "tie_word_embeddings": True}).params
2120
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ...topology.catalog import ModelSize

__all__ = ["SAFETENSORS_DTYPE_BYTES", "safetensors_totals", "params_from_config", "size_from_config", "folder_size"]

#: Bytes per element of the safetensors dtype names.
SAFETENSORS_DTYPE_BYTES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}


def safetensors_totals(files: Iterable[Path]) -> tuple[int, int] | None:
    """``(parameters, bytes)`` summed over the tensors of ``files``, from their headers only
    (``None`` when a header cannot be read)."""
    params = size = 0
    for path in files:
        try:
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > 100_000_000:
                    return None
                header = json.loads(handle.read(length))
        except (OSError, struct.error, ValueError):
            return None
        for name, entry in header.items():
            if name == "__metadata__" or not isinstance(entry, Mapping):
                continue
            count = math.prod(int(d) for d in entry.get("shape", []))
            params += count
            size += count * SAFETENSORS_DTYPE_BYTES.get(str(entry.get("dtype")), 4)
    return params, size


def _text(config: Mapping[str, Any]) -> Mapping[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, Mapping) else config


def _kv_shape(text: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    layers, hidden, heads = text.get("num_hidden_layers"), text.get("hidden_size"), text.get("num_attention_heads")
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or (hidden // heads if hidden and heads else None)
    return (int(layers) if layers else None, int(kv_heads) if kv_heads else None,
            int(head_dim) if head_dim else None)


def params_from_config(config: Mapping[str, Any]) -> int | None:
    """The exact parameter count of the causal LM ``config`` describes, from the model built on the
    meta device (``accelerate.init_empty_weights`` + ``from_config``); ``None`` without accelerate,
    without a ``model_type`` transformers knows, or when it cannot be built."""
    if not isinstance(config.get("model_type"), str):
        return None
    return _meta_params(json.dumps(dict(config), sort_keys=True, default=str))


@functools.lru_cache(maxsize=32)
def _meta_params(config_json: str) -> int | None:
    try:
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        return None
    config = json.loads(config_json)
    try:
        built = AutoConfig.for_model(**config)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(built)
        model.tie_weights()  # on the meta device the output embedding is not tied by itself
    except Exception:  # noqa: BLE001 - an unknown or malformed architecture: the estimate below instead
        return None
    return int(sum(p.numel() for p in model.parameters()))  # tied weights once


def size_from_config(config: Mapping[str, Any], *, params: int | None = None,
                     stored_bytes: int | None = None) -> ModelSize | None:
    """A :class:`ModelSize` from a config dict: ``params`` when given, else exact from the config
    (:func:`params_from_config`), else computed for a standard decoder (``None`` when the config
    lacks the sizes)."""
    text = _text(config)
    layers, kv_heads, head_dim = _kv_shape(text)
    if params is None:
        params = params_from_config(config)
    if params is None:
        vocab, hidden = text.get("vocab_size"), text.get("hidden_size")
        inter, heads = text.get("intermediate_size"), text.get("num_attention_heads")
        if not (vocab and hidden and inter and heads and layers and kv_heads and head_dim):
            return None
        attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
        per_layer = attention + 3 * hidden * inter + 2 * hidden  # gated MLP, two norms
        tied = text.get("tie_word_embeddings", config.get("tie_word_embeddings", True))
        params = vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden
    return ModelSize(params=int(params), stored_bytes=stored_bytes, layers=layers, kv_heads=kv_heads,
                     head_dim=head_dim)


def folder_size(folder: Path) -> ModelSize | None:
    """The size of the model in a folder holding config.json: its safetensors headers (the shards
    of ``model.safetensors.index.json`` when there is one), else computed from the config."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    index = folder / "model.safetensors.index.json"
    files: list[Path] = []
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            files = [folder / name for name in sorted(set(weight_map.values()))]
        except (OSError, ValueError, AttributeError):
            files = []
    else:
        files = sorted(folder.glob("*.safetensors"))
    totals = safetensors_totals(files) if files and all(f.is_file() for f in files) else None
    if totals is not None:
        return size_from_config(config, params=totals[0], stored_bytes=totals[1])
    return size_from_config(config)
