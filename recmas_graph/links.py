"""Links: the small trainable MLPs of RecursiveMAS, building them from a spec, and their checkpoints.

``inner_ln_res`` (H -> H) maps an agent's last hidden state to its next input embedding;
``outer_ln_res`` (H_src -> H_dst) carries latent thoughts from one agent to another (DESIGN.md
section 6). Parameter names are the released checkpoints' state-dict keys, so their ``.pt`` files
load as they are.

Initialisation (both ``ln_res`` links, ``init="zero_branch"``, the default): ``proj1`` ~ N(0, 0.02)
with zero bias, ``proj2`` all zeros, ``residual_proj`` (semi-)orthogonal with zero bias, LayerNorms
weight 1 / bias 0. The MLP branch therefore starts at exactly zero: an untrained inner link is
``post_ln(x)`` and an untrained outer link ``ln_target(residual_proj(x))`` -- the direction of the
hidden state is kept (norm-preserving for ``in_dim <= out_dim``) and the output has the unit
per-vector scale of a LayerNorm, as in the reference. ``init="torch"`` keeps PyTorch's defaults
(what the reference training code used).

Checkpoints: ours are ``<name>.safetensors`` with ``<name>.json`` beside it
(``{"format_version": 1, "type", "in_dim", "out_dim", "options"}``); reference ``.pt`` state dicts
are read with ``torch.load(..., weights_only=True)`` only, never plain pickle.

>>> link = OuterLnRes(8, 4)
>>> link(torch.randn(2, 3, 8)).shape
torch.Size([2, 3, 4])
>>> sorted(link_expected_shapes("outer_ln_res", 8, 4))[:2]
['ln_source.bias', 'ln_source.weight']
"""

from __future__ import annotations

import inspect
import json
import math
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LinkError

if TYPE_CHECKING:
    from .registry import LinkType, Registry
    from .spec import LinkSpec, TopologySpec

__all__ = [
    "InnerLnRes",
    "OuterLnRes",
    "IdentityLink",
    "LINK_FORMAT_VERSION",
    "INIT_SCHEMES",
    "build_link",
    "construct_link",
    "resolve_weights_path",
    "save_link",
    "load_link_weights",
    "read_link_config",
    "read_state_dict",
    "link_weight_shapes",
    "link_expected_shapes",
    "check_link_weights",
]

LINK_FORMAT_VERSION = 1
INIT_SCHEMES: tuple[str, ...] = ("zero_branch", "torch")
_SAFETENSORS_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_Shape = tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# link modules
# ---------------------------------------------------------------------------------------------


def _check_init(init: str, link: str) -> None:
    if init not in INIT_SCHEMES:
        raise LinkError(f"unknown init scheme {init!r}", culprit=link, hint=f"use one of: {', '.join(INIT_SCHEMES)}")


def _width(dim: int, mult: float, link: str) -> int:
    """Intermediate width ``round(dim * mult)``, refusing non-positive results."""
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not math.isfinite(mult) or mult <= 0:
        raise LinkError(f"hidden_mult must be a positive number, got {mult!r}", culprit=link)
    width = int(round(dim * mult))
    if width < 1:
        raise LinkError(f"hidden_mult={mult!r} gives an empty intermediate layer for dim {dim}", culprit=link,
                        hint="use a larger hidden_mult")
    return width


def _check_dim(value: Any, name: str, link: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LinkError(f"{name} must be a positive integer, got {value!r}", culprit=link)
    return value


def _init_branch(proj1: nn.Linear, proj2: nn.Linear) -> None:
    """proj1 ~ N(0, 0.02), zero bias; proj2 all zeros (the MLP branch starts at exactly zero)."""
    nn.init.normal_(proj1.weight, std=0.02)
    nn.init.zeros_(proj1.bias)
    nn.init.zeros_(proj2.weight)
    nn.init.zeros_(proj2.bias)


class InnerLnRes(nn.Module):
    """Reference inner link ``post_ln(x + proj2(GELU(proj1(pre_ln(x)))))``, hidden -> hidden."""

    def __init__(self, in_dim: int, out_dim: int | None = None, *, hidden_mult: float = 1,
                 init: str = "zero_branch") -> None:
        super().__init__()
        _check_dim(in_dim, "in_dim", "inner_ln_res")
        out_dim = in_dim if out_dim is None else _check_dim(out_dim, "out_dim", "inner_ln_res")
        if out_dim != in_dim:
            raise LinkError(
                f"an inner link maps a hidden size to itself, got in_dim={in_dim}, out_dim={out_dim}",
                culprit="inner_ln_res",
                hint="use an outer link type (e.g. outer_ln_res) between different hidden sizes",
            )
        _check_init(init, "inner_ln_res")
        self.in_dim = self.out_dim = in_dim
        width = _width(in_dim, hidden_mult, "inner_ln_res")
        self.pre_ln = nn.LayerNorm(in_dim)
        self.proj1 = nn.Linear(in_dim, width)
        self.proj2 = nn.Linear(width, in_dim)
        self.post_ln = nn.LayerNorm(in_dim)
        if init == "zero_branch":
            _init_branch(self.proj1, self.proj2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map hidden states to input embeddings; computed in the link's dtype, returned in ``x``'s."""
        h = x.to(self.proj1.weight.dtype)  # (B, m, H)
        branch = self.proj2(F.gelu(self.proj1(self.pre_ln(h))))  # (B, m, H) -> (B, m, W) -> (B, m, H)
        return self.post_ln(h + branch).to(x.dtype)  # (B, m, H)

    @torch.no_grad()
    def match_output_rms(self, rms: float) -> None:
        """Scale the output LayerNorm so untrained outputs have the model's token-embedding RMS."""
        self.post_ln.weight.fill_(rms)

    def extra_repr(self) -> str:
        return f"dim={self.in_dim}"


class OuterLnRes(nn.Module):
    """Reference outer link ``ln_target(proj2(GELU(proj1(ln_source(x)))) + residual_proj(x))``, H_in -> H_out."""

    def __init__(self, in_dim: int, out_dim: int, *, hidden_mult: float = 2, init: str = "zero_branch") -> None:
        super().__init__()
        self.in_dim = _check_dim(in_dim, "in_dim", "outer_ln_res")
        self.out_dim = _check_dim(out_dim, "out_dim", "outer_ln_res")
        _check_init(init, "outer_ln_res")
        width = _width(out_dim, hidden_mult, "outer_ln_res")  # reference: 2 * out_dim
        self.ln_source = nn.LayerNorm(in_dim)
        self.proj1 = nn.Linear(in_dim, width)
        self.proj2 = nn.Linear(width, out_dim)
        self.residual_proj = nn.Linear(in_dim, out_dim)
        self.ln_target = nn.LayerNorm(out_dim)
        if init == "zero_branch":
            _init_branch(self.proj1, self.proj2)
            if not self.residual_proj.weight.is_meta:
                nn.init.orthogonal_(self.residual_proj.weight)
            nn.init.zeros_(self.residual_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map source hidden states to target input embeddings; computed in the link's dtype, returned in ``x``'s."""
        h = x.to(self.proj1.weight.dtype)  # (B, m, H_in)
        branch = self.proj2(F.gelu(self.proj1(self.ln_source(h))))  # (B, m, H_in) -> (B, m, W) -> (B, m, H_out)
        return self.ln_target(branch + self.residual_proj(h)).to(x.dtype)  # (B, m, H_out)

    @torch.no_grad()
    def match_output_rms(self, rms: float) -> None:
        """Scale the output LayerNorm so untrained outputs have the target's token-embedding RMS."""
        self.ln_target.weight.fill_(rms)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}"


class IdentityLink(nn.Module):
    """Pass hidden states through unchanged (only between equal hidden sizes); no parameters."""

    def __init__(self, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        _check_dim(in_dim, "in_dim", "identity")
        out_dim = in_dim if out_dim is None else _check_dim(out_dim, "out_dim", "identity")
        if out_dim != in_dim:
            raise LinkError(
                f"the identity link needs equal sizes, got {in_dim} -> {out_dim}",
                culprit="identity",
                hint="use a link type that projects between sizes (e.g. outer_ln_res)",
            )
        self.in_dim = self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` as it is."""
        return x  # (B, m, H) -> (B, m, H)

    def extra_repr(self) -> str:
        return f"dim={self.in_dim}"


# ---------------------------------------------------------------------------------------------
# construction from the registry
# ---------------------------------------------------------------------------------------------


def _lookup(type_name: str, registry: "Registry | None", where: str) -> "LinkType":
    from .registry import get_registry

    registry = registry or get_registry()
    link_type = registry.link_types.get(type_name)
    if link_type is None:
        known = ", ".join(sorted(registry.link_types)) or "none"
        raise LinkError(f"unknown link type {type_name!r}", culprit=where,
                        hint=f"use one of: {known}; or install a plugin that registers it")
    return link_type


def _accepted_options(factory: Any) -> list[str]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY
            or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "in_dim", "out_dim"))]


def construct_link(type_name: str, in_dim: int, out_dim: int, options: Mapping[str, Any] | None = None, *,
                   registry: "Registry | None" = None, where: str = "link") -> nn.Module:
    """Build a registered link type for ``in_dim -> out_dim`` with random init (no weights loaded)."""
    link_type = _lookup(type_name, registry, where)
    options = dict(options or {})
    try:
        factory = link_type.load_factory()
    except Exception as err:
        raise LinkError(f"cannot import link type {type_name!r} ({link_type.factory!r}): {type(err).__name__}: {err}",
                        culprit=where, hint="fix or reinstall the plugin that registers it") from err
    try:
        module = factory(in_dim, out_dim, **options)
    except LinkError as err:
        raise LinkError(f"link type {type_name!r} ({in_dim} -> {out_dim}): {err.message}", culprit=where,
                        hint=err.hint) from None
    except TypeError as err:
        accepted = _accepted_options(factory)
        hint = f"options accepted by {type_name!r}: {', '.join(accepted) or 'none'}"
        raise LinkError(f"link type {type_name!r} rejected options {options}: {err}", culprit=where, hint=hint) from err
    except Exception as err:
        raise LinkError(f"building link type {type_name!r} ({in_dim} -> {out_dim}) failed: {type(err).__name__}: {err}",
                        culprit=where, hint="check the link's options and the agents' hidden sizes") from err
    if not isinstance(module, nn.Module):
        raise LinkError(f"link type {type_name!r} built a {type(module).__name__}, not a torch.nn.Module",
                        culprit=where, hint="fix the plugin that registers it")
    return module


def link_expected_shapes(type_name: str, in_dim: int, out_dim: int, options: Mapping[str, Any] | None = None, *,
                         registry: "Registry | None" = None, where: str = "link") -> dict[str, _Shape]:
    """State-dict key -> shape that a link type has for ``in_dim -> out_dim`` (built on the meta device)."""
    with torch.device("meta"):
        module = construct_link(type_name, in_dim, out_dim, options, registry=registry, where=where)
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def resolve_weights_path(weights: str | Path, base_dir: Path | None = None) -> Path:
    """The weights path of a link spec: ``~`` expanded, relative paths taken from ``base_dir``."""
    path = Path(weights).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def build_link(link_spec: "LinkSpec", in_dim: int, out_dim: int, *, registry: "Registry | None" = None,
               base_dir: Path | None = None, where: str) -> nn.Module:
    """Build the link of ``link_spec`` for ``in_dim -> out_dim`` and load its weights when it names some.

    ``where`` names the link in errors, e.g. ``"edge planner->critic"`` or ``"agent 'planner' inner_link"``.
    """
    module = construct_link(link_spec.type, in_dim, out_dim, link_spec.options, registry=registry, where=where)
    if link_spec.weights:
        path = resolve_weights_path(link_spec.weights, base_dir)
        config = read_link_config(path)
        if config is not None and config.get("type") not in (None, link_spec.type):
            raise LinkError(
                f"weights {path} were saved for link type {config.get('type')!r}, but the spec says {link_spec.type!r}",
                culprit=where, hint=f"set the link type to {config.get('type')!r} or use weights of {link_spec.type!r}")
        load_link_weights(module, path, where, dims=(in_dim, out_dim))
    return module


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


def _config_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_link(module: nn.Module, path: str | Path, link_type: str, in_dim: int, out_dim: int,
              options: Mapping[str, Any] | None = None) -> Path:
    """Save ``module`` as ``<name>.safetensors`` plus ``<name>.json``; return the weights path."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    config = {"format_version": LINK_FORMAT_VERSION, "type": link_type, "in_dim": int(in_dim),
              "out_dim": int(out_dim), "options": dict(options or {})}
    try:
        config_text = json.dumps(config, indent=2) + "\n"
    except TypeError as err:
        raise LinkError(f"link options are not JSON-serialisable: {err}", culprit=str(path),
                        hint="use numbers, strings, booleans, lists and dicts as link options") from None
    state = {key: value.detach().to("cpu").contiguous() for key, value in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", "recmas_link_type": link_type})
    _config_path(path).write_text(config_text, encoding="utf-8")
    return path


def read_link_config(path: str | Path) -> dict[str, Any] | None:
    """The JSON config saved beside our ``.safetensors`` link weights (``None`` when there is none)."""
    path = Path(path)
    if path.suffix not in _SAFETENSORS_SUFFIXES:
        return None
    config_path = _config_path(path)
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise LinkError(f"cannot read link config: {err}", culprit=str(config_path),
                        hint="fix or delete the JSON file beside the weights") from None
    if not isinstance(config, dict):
        raise LinkError("link config must be a JSON object", culprit=str(config_path))
    version = config.get("format_version", LINK_FORMAT_VERSION)
    if version != LINK_FORMAT_VERSION:
        raise LinkError(f"unsupported link config format_version {version!r}", culprit=str(config_path),
                        hint=f"this version of recmas_graph reads format_version {LINK_FORMAT_VERSION}")
    return config


def _check_file(path: Path, where: str) -> None:
    if path.is_dir():
        candidates = sorted(p.name for p in path.iterdir() if p.suffix in _SAFETENSORS_SUFFIXES + _TORCH_SUFFIXES)
        raise LinkError(f"link weights {path} is a folder, not a weights file", culprit=where,
                        hint=f"point at the file inside it ({', '.join(candidates[:8]) or 'no weights files found'})")
    if not path.is_file():
        raise LinkError(f"link weights file not found: {path}", culprit=where,
                        hint="check the path (relative paths are resolved against the topology file's folder), "
                             "or set weights to null for random initialisation")
    if path.suffix not in _SAFETENSORS_SUFFIXES + _TORCH_SUFFIXES:
        raise LinkError(f"unknown link weights format {path.suffix or '(no suffix)'!r}: {path}", culprit=where,
                        hint="use a .safetensors file (recmas_graph) or a .pt state dict (reference checkpoints)")


def _unpickler_reason(err: Exception) -> str:
    """The useful line of a ``weights_only`` refusal (torch wraps it in advice to unpickle anyway)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].split(". ", 1)[0].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _torch_load(path: Path, where: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise LinkError(
            f"refused to load {path}: it holds objects other than tensors and plain containers, and is only "
            f"read with torch.load(weights_only=True), never plain pickle ({_unpickler_reason(err)})",
            culprit=where,
            hint="re-save it as a state dict of tensors (torch.save(module.state_dict(), path)) or as .safetensors",
        ) from None
    except Exception as err:
        raise LinkError(f"cannot read {path}: {type(err).__name__}: {err}", culprit=where,
                        hint="the file is damaged or not a torch state dict") from None


def _unwrap(obj: Any, path: Path, where: str) -> dict[str, Any]:
    """A state dict from a loaded object: a mapping, or one wrapped as ``{"state_dict": ...}``."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise LinkError(f"{path} holds a {type(obj).__name__}, not a state dict", culprit=where,
                        hint="save link weights with torch.save(module.state_dict(), path)")
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise LinkError(f"{path} is not a state dict of tensors (entries {', '.join(bad[:8])} are not tensors)",
                        culprit=where, hint="save link weights with torch.save(module.state_dict(), path)")
    return dict(obj)


def read_state_dict(path: str | Path, where: str = "link") -> dict[str, torch.Tensor]:
    """Read a link state dict on the CPU from ``.safetensors`` or a ``.pt`` (``weights_only``)."""
    path = Path(path)
    _check_file(path, where)
    if path.suffix in _SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:
            raise LinkError(f"cannot read {path}: {type(err).__name__}: {err}", culprit=where,
                            hint="the file is damaged or not a safetensors file") from None
    return _unwrap(_torch_load(path, where), path, where)


def link_weight_shapes(path: str | Path, where: str = "link") -> dict[str, _Shape]:
    """State-dict key -> shape stored in a weights file, read without building a module."""
    path = Path(path)
    _check_file(path, where)
    if path.suffix in _SAFETENSORS_SUFFIXES:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as err:
            raise LinkError(f"cannot read {path}: {type(err).__name__}: {err}", culprit=where,
                            hint="the file is damaged or not a safetensors file") from None
    state = _unwrap(_torch_load(path, where), path, where)
    return {key: tuple(value.shape) for key, value in state.items()}


def _strip_prefix(found: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a common key prefix (``module.``, ``adapter.``...) when that makes the keys match exactly."""
    if set(found) == set(expected) or not expected or not found:
        return dict(found)
    anchor = next(iter(expected))
    for key in found:
        if key.endswith("." + anchor):
            prefix = key[: len(key) - len(anchor)]
            if all(k.startswith(prefix) for k in found) and {k[len(prefix):] for k in found} == set(expected):
                return {k[len(prefix):]: v for k, v in found.items()}
    return dict(found)


def _fmt(shape: _Shape) -> str:
    return str(tuple(shape))


def _shape_problems(expected: Mapping[str, _Shape], found: Mapping[str, _Shape], what: str, path: Path,
                    dims: tuple[int, int] | None) -> str | None:
    """One message describing missing / unexpected keys and shape mismatches, or ``None`` when all match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {', '.join(unexpected)}")
        return f"{what} {path} do not fit the link type: {'; '.join(parts)}"
    wrong = [(k, found[k], expected[k]) for k in expected if tuple(found[k]) != tuple(expected[k])]
    wrong.sort(key=lambda item: -len(item[2]))  # matrices first: they show both sizes
    if not wrong:
        return None
    detail = "; ".join(f"{k} of shape {_fmt(f)}, expected {_fmt(e)}" for k, f, e in wrong[:2])
    if len(wrong) > 2:
        detail += f" (and {len(wrong) - 2} more tensors of other shapes)"
    sizes = f" for hidden sizes {dims[0]} -> {dims[1]}" if dims is not None else ""
    return f"{what} {path} have {detail}{sizes}"


_SHAPE_HINT = ("the weights were made for other hidden sizes or link options: use the models they were trained "
               "for, retrain the link, or set weights to null for random initialisation")


def load_link_weights(module: nn.Module, path: str | Path, where: str, *,
                      dims: tuple[int, int] | None = None) -> nn.Module:
    """Load ``.safetensors`` or reference ``.pt`` weights into ``module`` strictly; return the module.

    ``dims`` (``(in_dim, out_dim)``) only adds the hidden sizes to a shape-mismatch message.
    """
    path = Path(path)
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    state = _strip_prefix(read_state_dict(path, where), expected)
    problem = _shape_problems(expected, {k: tuple(v.shape) for k, v in state.items()}, "link weights", path, dims)
    if problem is not None:
        raise LinkError(problem, culprit=where, hint=_SHAPE_HINT)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise LinkError(f"loading {path} failed: {err}", culprit=where, hint=_SHAPE_HINT) from None
    return module


def check_link_weights(spec: "TopologySpec", hidden_sizes: Mapping[str, int], base_dir: Path | None = None,
                       registry: "Registry | None" = None) -> None:
    """Check that every link's stored weights fit the agents' hidden sizes; raise :class:`LinkError` if not.

    Inner links need ``(H_agent, H_agent)``, latent edges ``(H_source, H_target)``; text edges and
    links without weights are skipped. All problems are reported together, each naming its link.
    """
    jobs: list[tuple[str, str, "LinkSpec", str, str]] = []
    for agent in spec.agents:
        if agent.inner_link.weights:
            jobs.append((f"agent {agent.name!r} inner_link", "inner link weights", agent.inner_link,
                         agent.name, agent.name))
    for edge in spec.edges:
        if edge.medium == "latent" and edge.link.weights:
            jobs.append((f"edge {edge.label}", "outer link weights", edge.link, edge.source, edge.target))
    problems: list[tuple[str, str, str | None]] = []
    for where, what, link, source, target in jobs:
        dims: list[int] = []
        for name in (source, target):
            if name not in hidden_sizes:
                raise LinkError(f"hidden size of agent {name!r} is not known", culprit=where,
                                hint="pass every agent's hidden size in hidden_sizes")
            dims.append(int(hidden_sizes[name]))
        path = resolve_weights_path(link.weights, base_dir)
        try:
            expected = link_expected_shapes(link.type, dims[0], dims[1], link.options, registry=registry, where=where)
            found = _strip_prefix(link_weight_shapes(path, where), expected)
        except LinkError as err:
            problems.append((where, err.message, err.hint))
            continue
        problem = _shape_problems(expected, found, what, path, (dims[0], dims[1]))
        if problem is not None:
            problems.append((where, problem, _SHAPE_HINT))
    if len(problems) == 1:
        where, message, hint = problems[0]
        raise LinkError(message, culprit=where, hint=hint)
    if problems:
        lines = "\n  ".join(f"{where}: {message}" for where, message, _ in problems)
        hints = "; ".join(dict.fromkeys(h for _, _, h in problems if h))
        raise LinkError(f"{len(problems)} links do not fit their weights\n  {lines}", culprit=f"topology {spec.name!r}",
                        hint=hints or None)
