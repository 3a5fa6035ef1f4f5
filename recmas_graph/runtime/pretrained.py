"""Hugging Face-style folders of a built system: :func:`save_pretrained` and :func:`load_pretrained`.

A folder holds everything needed to rebuild the same system (the frozen LLMs are referenced, not
copied)::

    DIR/topology.json          the topology, with the models it was built with and links naming the files below
    DIR/links/*.safetensors    every link's weights (each with its JSON config beside it)
    DIR/recmas_config.json     the format version, the build's dtype, the versions that wrote it

``recmas run DIR/topology.json`` runs the folder as it is; :func:`load_pretrained` (and
``RecursiveSystem.from_pretrained`` / ``recmas_graph.from_pretrained``) rebuilds it, with the same
greedy answers and the same link tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import write_json_atomic
from ..errors import RunError
from .links.export import save_system_links

if TYPE_CHECKING:  # pragma: no cover
    from ..topology.compile import CompiledTopology
    from .system import RecursiveSystem

__all__ = ["CONFIG_NAME", "FORMAT", "FORMAT_VERSION", "save_pretrained", "load_pretrained", "read_config"]

#: The configuration file of a saved system.
CONFIG_NAME = "recmas_config.json"
FORMAT = "recmas_graph.system"
#: Bumped when a folder written now could not be read by the previous reader.
FORMAT_VERSION = 1


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from .._version import __version__

    return {"recmas_graph": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def save_pretrained(system: "RecursiveSystem", folder: str | Path, *, description: str | None = None,
                    link_dtype: str | None = None) -> Path:
    """Write ``system``'s topology, links and configuration to ``folder``; returns the folder.

    ``link_dtype`` (e.g. ``"float16"``) stores the link tensors at that precision (half the
    size); they load back into the dtype the links had (:func:`~.links.checkpoints.save_link`).

    Files of an earlier save in ``folder`` are overwritten; the configuration is written last, so
    a folder with a configuration is complete.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    topology = save_system_links(system, out, description=description, storage_dtype=link_dtype)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": system.spec.name,
        "topology": topology.name,
        "dtype": system.build_options.get("dtype"),
        "versions": _versions(),
    }
    write_json_atomic(out / CONFIG_NAME, config)
    return out


def read_config(folder: str | Path) -> dict[str, Any]:
    """The configuration of a saved system, checked (a clear error names what is wrong and the fix)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise RunError(f"{folder} holds no saved system ({CONFIG_NAME} not found)", culprit=str(folder),
                       hint="give a folder written by system.save_pretrained(...), recmas calibrate or recmas train")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunError(f"{CONFIG_NAME} is not valid JSON: {err.msg} (line {err.lineno})", culprit=str(path),
                       hint="save the system again") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise RunError(f"{CONFIG_NAME} is not a recmas_graph system configuration", culprit=str(path),
                       hint=f'its "format" must be "{FORMAT}"')
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunError(f"format version {version!r} is newer than this recmas_graph reads ({FORMAT_VERSION})",
                       culprit=str(path), hint="upgrade recmas-graph (pip install -U recmas-graph)")
    if not (Path(folder) / str(config.get("topology", ""))).is_file():
        raise RunError(f"the topology file {config.get('topology')!r} is missing", culprit=str(folder),
                       hint="save the system again; the folder must be moved as a whole")
    return config


def load_pretrained(folder: str | Path, compile: "Any", **build: Any) -> "RecursiveSystem":
    """Rebuild the system saved in ``folder``: ``compile(topology path) -> CompiledTopology`` (a
    registry's ``compile``, so the caller's plugins resolve its roles and link types), then
    ``build(**build)`` with the saved dtype unless ``build`` gives one."""
    config = read_config(folder)
    compiled: CompiledTopology = compile(Path(folder) / config["topology"])
    if config.get("dtype") is not None:
        build.setdefault("dtype", config["dtype"])
    return compiled.build(**build)
