"""Published checkpoints: turn local copies of the released RecursiveMAS repos into a runnable topology.

The Hugging Face organisation ``RecursiveMAS`` publishes, per style, one repo per agent and one
``*-Outerlinks`` repo (docs/published-checkpoints.md, "What is read, and how"):

- an agent repo (e.g. ``Sequential-Light-Planner-Qwen3-1.7B``) holds the full base model
  (``config.json``, ``model*.safetensors``, tokenizer files), the inner-link state dict(s)
  ``adapter(math).pt`` / ``adapter(code).pt`` (task-trained styles) or ``adapter.pt``,
  ``adapter_config.json`` (``{"adapter_type": "ln_res_adapter"}``) and, for task-trained styles,
  ``innerlink_config.json`` (``{"format_version", "paradigm", "role", "tasks": {task: {"adapter.pt":
  "adapter(<task>).pt", ...}}}``);
- the outer-links repo (e.g. ``Sequential-Light-Outerlinks``) holds ``outerlink_config.json``
  (``{"format_version", "paradigm", "adapters": [{"legacy_key", "filename", "adapter_type", "in_dim",
  "out_dim", ...}]}``, or the same per task under ``"tasks": {task: {"adapters": [...]}}``) and one
  state dict per edge, named by a legacy key (``outer_12`` = planner -> critic, ...).

:func:`import_release` finds those folders, picks the task's weights, maps legacy keys onto the edges
of the built-in topology of the style, checks every size against the agents' ``config.json`` and the
state dicts, and returns a :class:`~recmas_graph.topology.TopologySpec` whose agents point at the local
model folders and whose links point at the released files (absolute paths: the written JSON runs from
anywhere). :func:`load_release` builds it into a ready :class:`~recmas_graph.runtime.RecursiveSystem`.

The released agent folders carry an ``adapter_config.json`` next to the model. transformers treats any
folder holding that file as a PEFT adapter when ``peft`` is installed (and then fails on it), so the
model is loaded through a *view*: a folder of links to every file but the link files, kept under
``cache_root() / "release-views"`` (or ``views_dir``). Nothing is ever downloaded here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..plugins.manager import Registry, default_registry
from ..topology.compile import compile_topology
from ..topology.spec import TopologySpec, dump_topology, parse_topology
from .resolve import ResolvedRelease, resolve_release
from .styles import CODE_LATENT_STEPS, HF_ORG, ReleaseError
from .views import model_view, shared_folders

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime.system import RecursiveSystem

__all__ = ["release_topology", "import_release", "ensure_output_path", "load_release"]


def release_topology(
    resolved: ResolvedRelease,
    *,
    views_dir: str | Path | None = None,
    share_models: bool = True,
    rounds: int | None = None,
    latent_steps: int | None = None,
    check_weights: bool = True,
    registry: Registry | None = None,
) -> TopologySpec:
    """The style's built-in topology with the release's local models and link weights filled in.

    Model references are absolute paths of PEFT-proof views (:func:`model_view`); agents holding
    the same model share one reference (loaded once). Link weights are absolute paths.
    ``check_weights`` reads every state dict and checks its shapes
    (:func:`~recmas_graph.runtime.links.check_link_weights`).
    """
    from ..runtime.links.build import check_link_weights

    registry = registry or default_registry()
    s = resolved.style
    data = registry.topologies[s.topology].spec.model_dump(mode="json")
    folders = shared_folders(resolved, share_models)
    views: dict[Path, Path] = {}
    for agent in data["agents"]:
        ra = resolved.agents[agent["name"]]
        folder = folders[ra.name]
        if folder not in views:
            views[folder] = model_view(folder, views_dir)
        agent["model"] = str(views[folder])
        agent["inner_link"] = {**agent["inner_link"], "type": ra.inner_type, "weights": str(ra.inner_weights.resolve())}
    for edge in resolved.edges:
        entry = data["edges"][edge.index]
        entry["link"] = {**entry["link"], "type": edge.link_type, "weights": str(edge.weights.resolve())}
    data["name"] = f"{s.name}_release"
    data["description"] = (f"{s.title} RecursiveMAS release ({HF_ORG}), task {resolved.task!r} links, imported from "
                           f"local copies: " + ", ".join(f"{n} <- {a.folder.name}" for n, a in resolved.agents.items())
                           + f"; outer links <- {resolved.outer_folder.name}.")
    if resolved.task == "code":
        data["latent_steps"] = CODE_LATENT_STEPS
    if rounds is not None:
        data["rounds"] = rounds
    if latent_steps is not None:
        data["latent_steps"] = latent_steps
    spec = parse_topology(data, source=f"release {s.name}")
    if check_weights:
        check_link_weights(spec, resolved.hidden_sizes, link_types=registry.link_types)
    return spec


def import_release(
    style: str,
    root: str | Path | None = None,
    task: str = "math",
    *,
    output: str | Path | None = None,
    agents: Mapping[str, str | Path] | None = None,
    outerlinks: str | Path | None = None,
    views_dir: str | Path | None = None,
    share_models: bool = True,
    rounds: int | None = None,
    latent_steps: int | None = None,
    check_weights: bool = True,
    registry: Registry | None = None,
) -> TopologySpec:
    """A runnable topology of released style ``style`` from local copies of its repos under ``root``.

    ``task`` picks the links trained for ``"math"`` or ``"code"`` (task-agnostic releases ignore it);
    ``agents`` / ``outerlinks`` name folders explicitly (``{"planner": "/models/planner"}``);
    ``output`` also writes the topology JSON there. See :func:`resolve_release` and
    :func:`release_topology` for the checks and the paths written.
    """
    resolved = resolve_release(style, root, task, agents=agents, outerlinks=outerlinks, registry=registry)
    spec = release_topology(resolved, views_dir=views_dir, share_models=share_models, rounds=rounds,
                            latent_steps=latent_steps, check_weights=check_weights, registry=registry)
    if output is not None:
        dump_topology(spec, ensure_output_path(output))
    return spec


def ensure_output_path(output: str | Path) -> Path:
    """The topology file to write (its folder created); a folder is refused."""
    path = Path(output).expanduser()
    if path.is_dir():
        raise ReleaseError(f"{path} is a folder", culprit="--output", hint="give a file name, e.g. release.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def load_release(
    style: str,
    root: str | Path | None = None,
    task: str = "math",
    *,
    agents: Mapping[str, str | Path] | None = None,
    outerlinks: str | Path | None = None,
    views_dir: str | Path | None = None,
    share_models: bool = True,
    rounds: int | None = None,
    latent_steps: int | None = None,
    registry: Registry | None = None,
    **build_kwargs: Any,
) -> "RecursiveSystem":
    """Import a released style (see :func:`import_release`) and build it into a ready system.

    ``build_kwargs`` go to :meth:`~recmas_graph.runtime.RecursiveSystem.build` (``device``, ``dtype``,
    ``model_cache``, ...). The weights are checked once, when the system is built.
    """
    spec = import_release(style, root, task, agents=agents, outerlinks=outerlinks, views_dir=views_dir,
                          share_models=share_models, rounds=rounds, latent_steps=latent_steps, check_weights=False,
                          registry=registry)
    return compile_topology(spec, registry or default_registry()).build(**build_kwargs)
