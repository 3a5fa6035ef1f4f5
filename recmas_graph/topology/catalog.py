"""What a topology may name: the records plugins register, and the catalog a topology compiles against.

A topology names roles, link types, model sources (through the prefix of each model reference)
and tools. Plugins register them (:mod:`recmas_graph.plugins`); compiling checks a topology
against a :class:`Catalog`, an object with those tables. Nothing here imports torch: factories and
loaders are import paths (``"package.module:attr"``) imported only when a system is built.

Model references are ``"<prefix>:<rest>"`` (``tiny:llama``, ``pkg:gemma3-270m``) or, without a
registered prefix, a Hugging Face id or a local folder (the source with prefix ``""``).

>>> split_model_ref("tiny:llama"), split_model_ref("Qwen/Qwen3-1.7B"), split_model_ref("C:\\\\models\\\\x")
(('tiny', 'llama'), None, None)
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ModelSourceError

if TYPE_CHECKING:  # pragma: no cover - annotations only: the topology layer never imports the runtime
    from ..runtime.system import RecursiveSystem
    from .compile import CompiledTopology
    from .roles import Role
    from .spec import TopologySpec

__all__ = [
    "LinkType",
    "ModelSize",
    "ModelSource",
    "Catalog",
    "import_object",
    "split_model_ref",
    "resolve_model_source",
]


def import_object(path: str) -> Any:
    """Import ``"package.module:attr"`` (or a module ``"package.module"``) on demand."""
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def _load(value: str | Callable[..., Any]) -> Callable[..., Any]:
    return import_object(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class LinkType:
    """A registered link type.

    ``kind`` is ``"inner"`` (hidden -> hidden of one agent), ``"outer"`` (source hidden -> target
    hidden) or ``"any"``. ``factory`` is a callable ``(in_dim, out_dim, **options) -> nn.Module`` or
    an import path ``"module:attr"`` to one, imported only when a link is built. ``options`` names
    the keyword options the factory accepts, so a misspelled option is caught when the topology
    compiles (``None``: read them from the factory's signature, which imports it).
    """

    name: str
    kind: str
    factory: str | Callable[..., Any]
    description: str = ""
    options: tuple[str, ...] | None = None

    def load_factory(self) -> Callable[..., Any]:
        """The constructor, importing it when given as a path."""
        return _load(self.factory)

    def accepted_options(self) -> tuple[str, ...]:
        """The keyword options the factory accepts (declared, or read from its signature)."""
        if self.options is not None:
            return tuple(self.options)
        try:
            params = inspect.signature(self.load_factory()).parameters.values()
        except (TypeError, ValueError):
            return ()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return ("**",)  # takes anything
        return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY
                     or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "in_dim", "out_dim")))


@dataclass(frozen=True)
class ModelSize:
    """How big a model is, read without loading its weights (what memory estimates need).

    ``params`` counts the parameters (tied embeddings once); ``stored_bytes`` is the size of the
    weights in the checkpoint's own dtype (``None`` when unknown); ``layers``, ``kv_heads`` and
    ``head_dim`` give the KV cache per token (``None`` when unknown).

    >>> ModelSize(params=1000, layers=2, kv_heads=2, head_dim=8).kv_bytes_per_token(2)
    128
    """

    params: int
    stored_bytes: int | None = None
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None

    def kv_bytes_per_token(self, dtype_bytes: int) -> int | None:
        """KV cache bytes of one token of one sequence: ``2 * layers * kv_heads * head_dim * dtype_bytes``."""
        if self.layers is None or self.kv_heads is None or self.head_dim is None:
            return None
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


@dataclass(frozen=True)
class ModelSource:
    """A registered model source: references ``"<prefix>:<rest>"`` are resolved by ``loader``.

    ``loader`` (a callable or import path) is called as ``loader(ref, *, device, dtype)`` and returns
    a :class:`recmas_graph.runtime.sources.LoadedModel`. ``hidden_size(ref) -> int | None`` answers
    without loading weights; ``check(ref)`` raises :class:`~recmas_graph.errors.ModelSourceError`
    when ``ref`` names no model of this source, without loading weights or importing torch (it runs
    when a topology compiles). ``size(ref) -> ModelSize | None`` (optional) tells the parameter
    count and KV cache shape without loading weights, for memory estimates and placement
    (``None``: unknown). The prefix ``""`` is the fallback for references without a registered
    prefix (Hugging Face ids and local folders).
    """

    prefix: str
    loader: str | Callable[..., Any]
    description: str = ""
    hidden_size: str | Callable[..., Any] | None = None
    check: str | Callable[..., Any] | None = None
    size: str | Callable[..., Any] | None = None

    def load_loader(self) -> Callable[..., Any]:
        """The loader callable."""
        return _load(self.loader)

    def hidden_size_of(self, ref: str) -> int | None:
        """The hidden size of ``ref`` from its config (``None`` when the source cannot tell)."""
        return None if self.hidden_size is None else _load(self.hidden_size)(ref)

    def size_of(self, ref: str) -> ModelSize | None:
        """The size of ``ref`` without loading weights (``None`` when the source cannot tell)."""
        return None if self.size is None else _load(self.size)(ref)

    def check_ref(self, ref: str) -> None:
        """Raise :class:`~recmas_graph.errors.ModelSourceError` when ``ref`` names no model here."""
        if self.check is not None:
            _load(self.check)(ref)


class Catalog(Protocol):
    """What compiling and building a topology needs: the registered tables and two services.

    :class:`recmas_graph.plugins.Registry` is the catalog of the installed plugins.
    """

    @property
    def roles(self) -> Mapping[str, "Role"]:
        """Roles by name."""

    @property
    def link_types(self) -> Mapping[str, LinkType]:
        """Link types by name."""

    @property
    def model_sources(self) -> Mapping[str, ModelSource]:
        """Model sources by prefix."""

    @property
    def tools(self) -> Mapping[str, Any]:
        """Tools by name."""

    def validate_topology(self, spec: "TopologySpec") -> None:
        """Run the plugins' extra checks (hook ``recmas_validate_topology``)."""

    def build_system(self, compiled: "CompiledTopology", **options: Any) -> "RecursiveSystem":
        """Load the weights of ``compiled`` and return its runtime system."""


_PREFIX_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.+-]*):(.*)$", re.DOTALL)


def split_model_ref(ref: str) -> tuple[str, str] | None:
    """``"tiny:llama"`` -> ``("tiny", "llama")``; ``None`` for HF ids, paths and drive letters."""
    match = _PREFIX_RE.match(ref)
    if match is None:
        return None
    prefix = match.group(1)
    if len(prefix) == 1 and match.group(2)[:1] in ("\\", "/"):  # Windows drive, e.g. C:\models
        return None
    return prefix, match.group(2)


def resolve_model_source(ref: str, sources: Mapping[str, ModelSource]) -> ModelSource:
    """The model source of ``sources`` that handles ``ref`` (its prefix, or the ``""`` fallback).

    Raises :class:`~recmas_graph.errors.ModelSourceError` for an unregistered prefix, listing the
    known ones.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ModelSourceError("a model reference must be a non-empty string", culprit=repr(ref),
                               hint="give a Hugging Face id, a local folder, pkg:<name> or tiny:<family>")
    split = split_model_ref(ref)
    if split is not None and not Path(ref).exists():
        prefix = split[0]
        if prefix in sources and prefix != "":
            return sources[prefix]
        known = ", ".join(f"{p}:" for p in sorted(sources) if p) or "none"
        raise ModelSourceError(
            f"unknown model source prefix {prefix!r}",
            culprit=ref,
            hint=f"use one of the registered prefixes ({known}), a Hugging Face id such as "
                 f"'HuggingFaceTB/SmolLM2-135M-Instruct' (no ':'), or a local folder; a plugin can "
                 f"register more with the recmas_model_sources hook",
        )
    if "" not in sources:
        known = ", ".join(f"{p}:" for p in sorted(sources) if p) or "none"
        raise ModelSourceError("no model source handles references without a prefix", culprit=ref,
                               hint=f"use one of the registered prefixes: {known}")
    return sources[""]
