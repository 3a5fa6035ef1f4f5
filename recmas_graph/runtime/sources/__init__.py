"""Model sources: turn a model reference into a frozen Hugging Face causal LM and its tokenizer.

:data:`BUILTIN_SOURCES` are the records the built-in plugin registers (``tiny:``, ``pkg:`` and the
fallback for Hugging Face ids and local folders); they name their loaders by import path, so this
package imports without torch. The loading machinery is in :mod:`.loaded`.
"""

from __future__ import annotations

from ..._lazy import lazy_exports
from ...topology.catalog import ModelSource

__all__ = ["BUILTIN_SOURCES", "LoadedModel", "ModelCache", "load_model", "hidden_size_of", "resolve_dtype",
           "auto_dtype", "tiny_counterpart"]

_HERE = __name__

#: The built-in model sources, by import path (registered by :mod:`recmas_graph.plugins.builtin`).
BUILTIN_SOURCES: tuple[ModelSource, ...] = (
    ModelSource("tiny", f"{_HERE}.tiny:load_tiny", "tiny random test models: tiny:llama, tiny:qwen2, tiny:gemma3",
                hidden_size=f"{_HERE}.tiny:tiny_hidden_size", check=f"{_HERE}.tiny:check_tiny_ref",
                size=f"{_HERE}.tiny:tiny_size"),
    ModelSource("pkg", f"{_HERE}.packaged:load_packaged", "packaged real models (recmas assets): "
                "pkg:smollm2-135m-instruct, pkg:gemma3-270m", hidden_size=f"{_HERE}.packaged:packaged_hidden_size",
                check=f"{_HERE}.packaged:check_packaged_ref", size=f"{_HERE}.packaged:packaged_size"),
    ModelSource("", f"{_HERE}.hf:load_hf", "Hugging Face ids and local folders (offline when local)",
                hidden_size=f"{_HERE}.hf:hf_hidden_size", check=f"{_HERE}.hf:check_hf_ref", size=f"{_HERE}.hf:hf_size"),
)

_LAZY = {"LoadedModel": "loaded", "ModelCache": "loaded", "load_model": "loaded", "hidden_size_of": "loaded",
         "resolve_dtype": "loaded", "auto_dtype": "loaded", "tiny_counterpart": "tiny"}


__getattr__ = lazy_exports(__name__, _LAZY)
