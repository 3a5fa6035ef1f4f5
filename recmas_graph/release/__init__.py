"""Published checkpoints: the released RecursiveMAS styles, their local copies, and a topology that runs them.

See :mod:`.topology` (:func:`import_release`, :func:`load_release`) and docs/published-checkpoints.md.
"""

from __future__ import annotations

from .configs import OuterLinkEntry, inner_adapter_type, read_innerlink_config, read_outerlink_config
from .export import TASKED_PARADIGMS, export_release, matching_style
from .folders import find_release_folder, norm_name, subfolders_hint
from .resolve import ResolvedAgent, ResolvedEdge, ResolvedRelease, resolve_release
from .styles import (
    CODE_LATENT_STEPS,
    FORMAT_VERSIONS,
    HF_ORG,
    INNER_ADAPTER_TYPES,
    OUTER_ADAPTER_TYPES,
    RELEASE_TASKS,
    STYLES,
    ReleaseError,
    ReleaseStyle,
    download_commands,
    get_style,
)
from .topology import ensure_output_path, import_release, load_release, release_topology
from .views import model_view, same_model_files, shared_folders

__all__ = [
    "HF_ORG",
    "RELEASE_TASKS",
    "INNER_ADAPTER_TYPES",
    "OUTER_ADAPTER_TYPES",
    "FORMAT_VERSIONS",
    "CODE_LATENT_STEPS",
    "ReleaseError",
    "ReleaseStyle",
    "STYLES",
    "get_style",
    "download_commands",
    "norm_name",
    "find_release_folder",
    "subfolders_hint",
    "OuterLinkEntry",
    "read_outerlink_config",
    "read_innerlink_config",
    "inner_adapter_type",
    "ResolvedAgent",
    "ResolvedEdge",
    "ResolvedRelease",
    "resolve_release",
    "model_view",
    "same_model_files",
    "shared_folders",
    "release_topology",
    "import_release",
    "ensure_output_path",
    "load_release",
    "TASKED_PARADIGMS",
    "matching_style",
    "export_release",
]
