"""The built-in plugin: registers recmas_graph's own roles, link types, topologies and model sources.

It uses exactly the hooks a third-party plugin uses.
"""

from __future__ import annotations

from pathlib import Path

from .hookspecs import hookimpl
from .registry import LinkType, ModelSource
from .roles import BUILTIN_ROLES, Role

__all__ = ["topologies_dir"]


def topologies_dir() -> Path:
    """Folder of the built-in topology JSON files (inside the wheel, or the source checkout)."""
    packaged = Path(__file__).parent / "_topologies"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "topologies"


@hookimpl
def recmas_roles() -> list[Role]:
    return list(BUILTIN_ROLES.values())


@hookimpl
def recmas_link_types() -> list[LinkType]:
    return [
        LinkType("inner_ln_res", "inner", "recmas_graph.links:InnerLnRes",
                 "post_ln(x + proj2(GELU(proj1(pre_ln(x))))), hidden -> hidden (reference inner link)"),
        LinkType("outer_ln_res", "outer", "recmas_graph.links:OuterLnRes",
                 "ln_target(proj2(GELU(proj1(ln_source(x)))) + residual_proj(x)), H_src -> H_dst (reference outer link)"),
        LinkType("identity", "any", "recmas_graph.links:IdentityLink",
                 "passes hidden states through unchanged (only where the sizes are equal)"),
    ]


@hookimpl
def recmas_model_sources() -> list[ModelSource]:
    return [
        ModelSource("tiny", "recmas_graph.models:load_tiny", "tiny random test models: tiny:llama, tiny:qwen2, tiny:gemma3",
                    hidden_size="recmas_graph.models:tiny_hidden_size"),
        ModelSource("pkg", "recmas_graph.models:load_packaged", "packaged real models (recmas assets): "
                    "pkg:smollm2-135m-instruct, pkg:gemma3-270m", hidden_size="recmas_graph.models:packaged_hidden_size"),
        ModelSource("", "recmas_graph.models:load_hf", "Hugging Face ids and local folders (offline when local)",
                    hidden_size="recmas_graph.models:hf_hidden_size"),
    ]


@hookimpl
def recmas_topologies() -> list[Path]:
    return sorted(topologies_dir().glob("*.json"))
