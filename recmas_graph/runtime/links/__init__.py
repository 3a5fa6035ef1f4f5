"""Links: the RecursiveLink modules, building them for given sizes, and their checkpoints.

:data:`BUILTIN_LINK_TYPES` are the records the built-in plugin registers; they name their modules
by import path, so this package imports without torch.
"""

from __future__ import annotations

from ..._lazy import lazy_exports
from ...topology.catalog import LinkType

__all__ = ["BUILTIN_LINK_TYPES", "InnerLnRes", "OuterLnRes", "IdentityLink", "build_link", "construct_link",
           "save_link", "load_link_weights", "check_link_weights", "ModelFacts", "build_system_links"]

_MODULES = f"{__name__}.modules"

#: The built-in link types (registered by :mod:`recmas_graph.plugins.builtin`).
BUILTIN_LINK_TYPES: tuple[LinkType, ...] = (
    LinkType("inner_ln_res", "inner", f"{_MODULES}:InnerLnRes",
             "post_ln(x + proj2(GELU(proj1(pre_ln(x))))), hidden -> hidden (reference inner link)",
             options=("hidden_mult", "init")),
    LinkType("outer_ln_res", "outer", f"{_MODULES}:OuterLnRes",
             "ln_target(proj2(GELU(proj1(ln_source(x)))) + residual_proj(x)), H_src -> H_dst (reference outer link)",
             options=("hidden_mult", "init")),
    LinkType("identity", "any", f"{_MODULES}:IdentityLink",
             "passes hidden states through unchanged (only where the sizes are equal)", options=()),
)

_LAZY = {"InnerLnRes": "modules", "OuterLnRes": "modules", "IdentityLink": "modules", "build_link": "build",
         "construct_link": "build", "check_link_weights": "build", "save_link": "checkpoints",
         "load_link_weights": "checkpoints", "ModelFacts": "assemble", "build_system_links": "assemble"}


__getattr__ = lazy_exports(__name__, _LAZY)
