"""Link checkpoints: ours (safetensors + a JSON config) and the reference's ``.pt`` state dicts.

Ours are ``<name>.safetensors`` with ``<name>.json`` beside it
(``{"format_version": 1, "type", "in_dim", "out_dim", "options"}``); reference ``.pt`` state dicts
are read with ``torch.load(..., weights_only=True)`` only, never plain pickle. Shape problems name
the link, the expected and the found shapes.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import LinkError

__all__ = [
    "LINK_FORMAT_VERSION",
    "resolve_weights_path",
    "Shape",
    "save_link",
    "read_link_config",
    "STORAGE_DTYPES",
    "recast_link",
    "read_state_dict",
    "link_weight_shapes",
    "load_link_weights",
    "strip_prefix",
    "shape_problems",
    "SHAPE_HINT",
]

LINK_FORMAT_VERSION = 1
_SAFETENSORS_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")
Shape = tuple[int, ...]

def resolve_weights_path(weights: str | Path, base_dir: Path | None = None) -> Path:
    """The weights path of a link spec: ``~`` expanded, relative paths taken from ``base_dir``."""
    path = Path(weights).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def _config_path(path: Path) -> Path:
    return path.with_suffix(".json")


#: Storage dtypes a link file may be written in (``save_link(storage_dtype=...)``).
STORAGE_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")


def save_link(module: nn.Module, path: str | Path, link_type: str, in_dim: int, out_dim: int,
              options: Mapping[str, Any] | None = None, *, storage_dtype: str | None = None) -> Path:
    """Save ``module`` as ``<name>.safetensors`` plus ``<name>.json``; return the weights path.

    ``storage_dtype`` (``float16``, ...) writes the floating tensors in that dtype (half the size
    of float32); the config then records the module's own dtype as ``dtype``, and loading casts
    back to it, so a link trained in float32 still runs in float32."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    config: dict[str, Any] = {"format_version": LINK_FORMAT_VERSION, "type": link_type, "in_dim": int(in_dim),
                              "out_dim": int(out_dim), "options": dict(options or {})}
    state = {key: value.detach().to("cpu").contiguous() for key, value in module.state_dict().items()}
    return _write_link(state, path, config, storage_dtype)


def recast_link(source: str | Path, target: str | Path, storage_dtype: str) -> Path:
    """Copy the link file ``source`` (ours: with its JSON config) to ``target`` with its tensors
    stored in ``storage_dtype``, keeping the dtype it runs in (see :func:`save_link`)."""
    source = Path(source)
    config = read_link_config(source)
    if config is None:
        raise LinkError(f"{source} has no link config beside it (not a recmas_graph link file)", culprit=str(source),
                        hint="recast the links written by recmas calibrate, recmas train or save_pretrained")
    state = read_state_dict(source, str(source))
    return _write_link(state, Path(target), dict(config), storage_dtype)


def _write_link(state: dict[str, torch.Tensor], path: Path, config: dict[str, Any], storage_dtype: str | None) -> Path:
    """Write ``state`` (cast to ``storage_dtype`` when given) and ``config`` as a link file pair."""
    from safetensors.torch import save_file

    if storage_dtype is not None:
        if storage_dtype not in STORAGE_DTYPES:
            raise LinkError(f"unknown storage dtype {storage_dtype!r}", culprit=str(path),
                            hint=f"use one of: {', '.join(STORAGE_DTYPES)}")
        floating = {v.dtype for v in state.values() if v.is_floating_point()}
        if "dtype" not in config and len(floating) == 1:
            config["dtype"] = str(floating.pop()).removeprefix("torch.")
        stored = getattr(torch, storage_dtype)
        state = {k: v.to(stored).contiguous() if v.is_floating_point() else v for k, v in state.items()}
    try:
        config_text = json.dumps(config, indent=2) + "\n"
    except TypeError as err:
        raise LinkError(f"link options are not JSON-serialisable: {err}", culprit=str(path),
                        hint="use numbers, strings, booleans, lists and dicts as link options") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", "recmas_link_type": str(config.get("type"))})
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


def link_weight_shapes(path: str | Path, where: str = "link") -> dict[str, Shape]:
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


def strip_prefix(found: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
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


def _fmt(shape: Shape) -> str:
    return str(tuple(shape))


def shape_problems(expected: Mapping[str, Shape], found: Mapping[str, Shape], what: str, path: Path,
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


SHAPE_HINT = ("the weights were made for other hidden sizes or link options: use the models they were trained "
               "for, retrain the link, or set weights to null for random initialisation")


def load_link_weights(module: nn.Module, path: str | Path, where: str, *,
                      dims: tuple[int, int] | None = None) -> nn.Module:
    """Load ``.safetensors`` or reference ``.pt`` weights into ``module`` strictly; return the module.

    The module then runs in the ``dtype`` its config records (a link stored at half precision to
    save space, see :func:`save_link`), else in the dtype of the stored weights (a bf16 checkpoint
    gives a bf16 link, as the reference code runs its adapters) when they share one. ``dims``
    (``(in_dim, out_dim)``) only adds the hidden sizes to a shape-mismatch message.
    """
    path = Path(path)
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    state = strip_prefix(read_state_dict(path, where), expected)
    problem = shape_problems(expected, {k: tuple(v.shape) for k, v in state.items()}, "link weights", path, dims)
    if problem is not None:
        raise LinkError(problem, culprit=where, hint=SHAPE_HINT)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise LinkError(f"loading {path} failed: {err}", culprit=where, hint=SHAPE_HINT) from None
    config = read_link_config(path)
    compute = config.get("dtype") if config is not None else None
    if compute is not None:
        if compute not in STORAGE_DTYPES:
            raise LinkError(f"the link config beside {path} names an unknown dtype {compute!r}", culprit=where,
                            hint=f"use one of: {', '.join(STORAGE_DTYPES)} (or drop the field)")
        module.to(dtype=getattr(torch, compute))
        return module
    stored = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(stored) == 1:
        module.to(dtype=stored.pop())
    return module
