"""The fallback model source (no prefix): a local folder, or a Hugging Face id already in the local cache.

Nothing is ever downloaded (``local_files_only=True``): a missing model gets an error that says how
to fetch it once on a machine with network access.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ModelSourceError
from ...topology.catalog import ModelSize
from .sizes import folder_size

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .loaded import LoadedModel

__all__ = ["load_hf", "hf_hidden_size", "hf_size", "check_hf_ref"]

_OFFLINE_FIX = (
    "download it once on a machine with network access (e.g. `hf download {ref}`, which fills the "
    "Hugging Face cache), or pass a local folder holding config.json, the weights and the tokenizer, "
    "or use a packaged model (pkg:smollm2-135m-instruct, pkg:gemma3-270m; see `recmas assets list`) "
    "or a tiny test model (tiny:llama, tiny:qwen2, tiny:gemma3)"
)



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

    from .loaded import text_config

    try:
        config = AutoConfig.from_pretrained(ref, local_files_only=True)
    except (OSError, ValueError) as err:
        raise _not_local(ref, err) from err
    return int(text_config(config).hidden_size)


def hf_size(ref: str) -> ModelSize | None:
    """Parameters and KV shape of a folder or a cached HF id from its safetensors headers or config
    (no weights loaded; ``None`` when the model is not available locally)."""
    folder = _local_folder(ref)
    if folder is None:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - a transformers dependency
            return None
        found = try_to_load_from_cache(ref, "config.json")
        if not isinstance(found, str):
            return None
        folder = Path(found).parent
    return folder_size(folder)


def check_hf_ref(ref: str) -> None:
    """Raise :class:`~recmas_graph.errors.ModelSourceError` when ``ref`` looks like a path but is not a
    model folder (a Hugging Face id is checked when it loads: the local HF cache decides)."""
    _local_folder(ref)


def load_hf(ref: str, *, device: "torch.device | str" = "cpu", dtype: "torch.dtype | str | None" = None) -> "LoadedModel":
    """Load a local folder, or a Hugging Face id that is already in the local HF cache (offline)."""
    from .loaded import load_folder

    folder = _local_folder(ref)
    try:
        return load_folder(ref, folder if folder is not None else ref, device, dtype)
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
