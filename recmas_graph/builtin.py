"""The built-in plugin: registers recmas_graph's own roles, link types, topologies, model sources,
datasets, metrics and tools, and checks the agents' tools when a topology compiles.

It uses exactly the hooks a third-party plugin uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TopologyError
from .hookspecs import hookimpl
from .registry import LinkType, ModelSource
from .roles import BUILTIN_ROLES, Role

if TYPE_CHECKING:
    from .registry import Registry
    from .spec import TopologySpec

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


@hookimpl
def recmas_datasets() -> list[Any]:
    from .datasets import BUILTIN_DATASETS

    return list(BUILTIN_DATASETS.values())


@hookimpl
def recmas_metrics() -> list[Any]:
    from .metrics import METRICS

    return list(METRICS.values())


@hookimpl
def recmas_tools() -> list[Any]:
    from .tools import builtin_tools

    return builtin_tools()


@hookimpl
def recmas_validate_topology(spec: "TopologySpec", registry: "Registry") -> None:
    """Every tool an agent lists must be registered."""
    for agent in spec.agents:
        for tool in agent.tools:
            if tool not in registry.tools:
                known = ", ".join(sorted(registry.tools)) or "none"
                raise TopologyError(
                    f"unknown tool {tool!r}",
                    culprit=f"agent {agent.name!r}",
                    hint=f"use a registered tool ({known}) or install a plugin that adds it",
                )
