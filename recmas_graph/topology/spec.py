"""Topology spec: pydantic models of a RecursiveMAS system, JSON load/dump, builder and JSON Schema.

The field names are the contract documented in docs/spec.md. Unknown fields are refused. This module
imports without torch.

>>> spec = (TopologyBuilder("pair", rounds=2, latent_steps=4)
...         .agent("a", role="planner", model="tiny:llama")
...         .agent("b", role="solver", model="tiny:qwen2")
...         .edge("a", "b", slot="plan")
...         .recursion("b", "a", slot="feedback")
...         .output("b")
...         .build())
>>> parse_topology(json.loads(dump_topology(spec))) == spec
True
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import SpecError

__all__ = [
    "CALIBRATED_PREFIX",
    "LinkSpec",
    "TemplateSpec",
    "SettingsSpec",
    "AgentSpec",
    "EdgeSpec",
    "TopologySpec",
    "TopologyBuilder",
    "Medium",
    "TaskType",
    "TASK_TYPES",
    "DTYPES",
    "parse_topology",
    "read_topology_file",
    "dump_topology",
    "topology_json_schema",
]

Medium = Literal["latent", "text"]
TaskType = Literal["math", "choice", "code", "reasoning"]
TASK_TYPES: tuple[str, ...] = ("math", "choice", "code", "reasoning")
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


#: ``weights`` of a link calibrated on first use: ``"calibrated:<dataset>"`` (cached afterwards).
CALIBRATED_PREFIX = "calibrated:"


class LinkSpec(_Strict):
    """A RecursiveLink: a registered link type and optional weights (a file or folder)."""

    type: str = Field(description="Registered link type, e.g. 'inner_ln_res' or 'outer_ln_res'.")
    weights: str | None = Field(
        default=None,
        description="Path to the link's weights: a .safetensors file (ours) or a reference .pt state "
        "dict. Relative paths are relative to the topology file. null: random initialisation. "
        "'calibrated:<dataset>' (e.g. 'calibrated:gsm8k'): fitted in closed form on that packaged "
        "dataset when first built, cached afterwards.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword options for the link type's constructor."
    )

    @property
    def calibration_corpus(self) -> str | None:
        """The dataset of ``weights: "calibrated:<dataset>"``, else None."""
        if self.weights is not None and self.weights.startswith(CALIBRATED_PREFIX):
            return self.weights[len(CALIBRATED_PREFIX):].strip() or None
        return None

    @property
    def weights_file(self) -> str | None:
        """``weights`` when it names a file (not a calibration), else None."""
        return None if self.weights is None or self.weights.startswith(CALIBRATED_PREFIX) else self.weights


def _default_inner() -> LinkSpec:
    return LinkSpec(type="inner_ln_res")


def _default_outer() -> LinkSpec:
    return LinkSpec(type="outer_ln_res")


class TemplateSpec(_Strict):
    """A prompt template whose text differs between round 1 (``first``) and later rounds (``later``)."""

    first: str = Field(description="Jinja2 template text for round 1.")
    later: str | None = Field(default=None, description="Template text for rounds 2 and later (null: first).")


class AgentSpec(_Strict):
    """One agent: a model reference, a role and its inner link."""

    name: str = Field(pattern=_NAME_PATTERN, description="Unique agent name.")
    role: str = Field(description="Registered role name (prompt templates), e.g. 'planner'.")
    model: str = Field(
        description="Model reference: a Hugging Face id or local folder, 'pkg:<name>' for a packaged "
        "model, or 'tiny:<family>' for a tiny random test model."
    )
    inner_link: LinkSpec = Field(default_factory=_default_inner)
    device: str | None = Field(default=None, description="Placement, e.g. 'cpu' or 'cuda:1'. null: automatic.")
    dtype: str | None = Field(
        default=None,
        description="One of float32, float16, bfloat16. null: automatic (float32 on CPU, bfloat16 on a GPU "
        "that supports it, the checkpoint's own dtype on other GPUs).",
    )
    tools: list[str] = Field(default_factory=list, description="Registered tools this agent may call while decoding.")
    templates: dict[str, str | TemplateSpec] = Field(
        default_factory=dict,
        description="This agent's own prompt templates, per task type (math, choice, code, reasoning) or "
        "'default': Jinja2 text using {{ question }} and the agent's slots, or {first, later} for text that "
        "differs after round 1. They replace the role's templates for those tasks (docs/prompts.md).",
    )
    system: str | None = Field(default=None, description="This agent's system prompt (null: the role's).")

    @field_validator("templates")
    @classmethod
    def _check_template_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(TASK_TYPES) - {"default"})
        if unknown:
            raise ValueError(f"unknown task type(s) {', '.join(map(repr, unknown))}; use {', '.join(TASK_TYPES)} or "
                             "'default'")
        return value

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in DTYPES:
            raise ValueError(f"unknown dtype {value!r}; use one of {', '.join(DTYPES)} or null")
        return value


class EdgeSpec(_Strict):
    """A directed edge: the source's message is delivered into a slot of the target's prompt."""

    source: str
    target: str
    slot: str | None = Field(
        default=None,
        pattern=_NAME_PATTERN,
        description="Slot of the target's role template that receives the message (a name: letters, digits, '_', "
        "'-'). null: the source's name.",
    )
    recursion: bool = Field(default=False, description="true: delivers into the next round.")
    medium: Medium = Field(default="latent", description="'latent' (outer(inner(H))) or 'text'.")
    link: LinkSpec = Field(default_factory=_default_outer)

    @property
    def slot_name(self) -> str:
        """The slot this edge fills (the source's name when ``slot`` is null)."""
        return self.slot if self.slot is not None else self.source

    @property
    def label(self) -> str:
        """Short human name, e.g. ``planner->critic`` or ``solver~>planner`` for recursion."""
        arrow = "~>" if self.recursion else "->"
        return f"{self.source}{arrow}{self.target}"


class SettingsSpec(_Strict):
    """Run settings for one task type or dataset (every field optional: unset ones fall back)."""

    latent_steps: int | None = Field(default=None, ge=0, description="Latent steps m.")
    max_new_tokens: int | None = Field(default=None, ge=1, description="Answer length limit in tokens.")
    temperature: float | None = Field(default=None, ge=0, description="Sampling temperature.")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling threshold.")
    top_k: int | None = Field(default=None, ge=0, description="Top-k filtering (0: off).")
    min_p: float | None = Field(default=None, ge=0, le=1, description="Min-p filtering.")
    repetition_penalty: float | None = Field(default=None, gt=0, description="Repetition penalty (1.0: none).")

    def merged(self, other: "SettingsSpec | None") -> "SettingsSpec":
        """These settings with ``other``'s set fields on top."""
        if other is None:
            return self
        return SettingsSpec(**{**self.model_dump(exclude_none=True), **other.model_dump(exclude_none=True)})


class TopologySpec(_Strict):
    """A whole system: agents, edges, rounds, latent steps and the output agent."""

    name: str = Field(pattern=_NAME_PATTERN)
    description: str = ""
    rounds: int = Field(default=3, ge=1, description="Recursion rounds R.")
    latent_steps: int = Field(default=32, ge=0, description="Latent steps m per latent pass.")
    agents: list[AgentSpec] = Field(min_length=1)
    edges: list[EdgeSpec] = Field(default_factory=list)
    output: str = Field(description="Name of the agent that decodes the answer in the last round.")
    settings: dict[str, SettingsSpec] = Field(
        default_factory=dict,
        description="Run settings per task type (math, choice, code, reasoning) or dataset name (e.g. math500, "
        "mbpp): latent steps and decoding. A dataset's entry wins over its task type's; explicit options win "
        "over both. The full-size built-in styles carry the reference's settings.",
    )

    def agent(self, name: str) -> AgentSpec:
        """Return the agent called ``name`` (KeyError when absent)."""
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)

    @property
    def agent_names(self) -> list[str]:
        """Agent names in declaration order."""
        return [a.name for a in self.agents]

    def settings_for(self, task: str, dataset: str | None = None) -> SettingsSpec:
        """The settings of ``task`` with those of ``dataset`` on top (empty when the spec has none)."""
        found = self.settings.get(task, SettingsSpec())
        return found.merged(self.settings.get(dataset)) if dataset else found

    def with_overrides(self, *, rounds: int | None = None, latent_steps: int | None = None,
                       models: Mapping[str, str] | None = None) -> "TopologySpec":
        """A copy with ``rounds`` / ``latent_steps`` and the named agents' ``models`` replaced where given."""
        data = self.model_dump(mode="json")
        if rounds is not None:
            data["rounds"] = rounds
        if latent_steps is not None:
            data["latent_steps"] = latent_steps
        for agent in data["agents"]:
            if models and agent["name"] in models:
                agent["model"] = models[agent["name"]]
        return parse_topology(data, source=self.name)


def _describe_location(loc: tuple[Any, ...], data: Any) -> str:
    """Turn a pydantic error location into 'agents[1] (critic).model' style text."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict):
                    ident = node.get("name") or (
                        f"{node.get('source')}->{node.get('target')}" if "source" in node else None
                    )
                    if ident:
                        label += f" ({ident})"
            else:
                node = None
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "topology"


_FIELDS_OF = {
    "agents": AgentSpec,
    "templates": TemplateSpec,
    "settings": SettingsSpec,
    "edges": EdgeSpec,
    "inner_link": LinkSpec,
    "link": LinkSpec,
}


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model: Any = TopologySpec
    for item in loc[:-1]:
        if isinstance(item, str) and item in _FIELDS_OF:
            model = _FIELDS_OF[item]
    return list(model.model_fields)


def _spec_error(err: ValidationError, data: Any, source: str) -> SpecError:
    lines: list[str] = []
    hints: list[str] = []
    for e in err.errors():
        loc = tuple(e["loc"])
        where = _describe_location(loc, data)
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown field")
            hints.append(f"remove it or use one of: {', '.join(_allowed_fields(loc))}")
        elif e["type"] == "missing":
            lines.append(f"{where}: required field is missing")
        elif e["type"] == "literal_error" and loc and loc[-1] == "medium":
            lines.append(f"{where}: unknown medium {e.get('input')!r}")
            hints.append("use \"latent\" or \"text\"")
        elif e["type"] == "string_pattern_mismatch":
            lines.append(f"{where}: {e.get('input')!r} is not a valid name")
            hints.append("names start with a letter or '_' and contain letters, digits, '_' or '-'")
        else:
            lines.append(f"{where}: {e['msg']}")
    message = "invalid topology\n  " + "\n  ".join(lines)
    return SpecError(message, culprit=source, hint="; ".join(dict.fromkeys(hints)) or None)


def parse_topology(data: Any, *, source: str = "topology") -> TopologySpec:
    """Parse a JSON-like object into a :class:`TopologySpec`; raise :class:`SpecError` naming the field."""
    if isinstance(data, TopologySpec):
        return data
    if not isinstance(data, dict):
        raise SpecError(
            f"a topology must be a JSON object, got {type(data).__name__}",
            culprit=source,
            hint="see docs/spec.md for the format",
        )
    try:
        return TopologySpec.model_validate(data)
    except ValidationError as err:
        raise _spec_error(err, data, source) from None


def read_topology_file(path: str | Path) -> TopologySpec:
    """Read and parse a topology JSON file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", culprit=str(path), hint="check the path, or give a built-in name (recmas topologies)") from None
    except OSError as err:
        raise SpecError(f"cannot read file: {err.strerror}", culprit=str(path)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(
            f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}",
            culprit=str(path),
            hint="fix the JSON syntax (a trailing comma or a missing quote is the usual cause)",
        ) from None
    return parse_topology(data, source=str(path))


def dump_topology(spec: TopologySpec, path: str | Path | None = None) -> str:
    """Serialise ``spec`` to indented JSON (and write it to ``path`` when given)."""
    text = json.dumps(spec.model_dump(mode="json"), indent=2) + "\n"
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def topology_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the topology format, for editors and validators."""
    schema = TopologySpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "recmas_graph topology"
    return schema


class TopologyBuilder:
    """Fluent Python builder for a :class:`TopologySpec` (each method returns the builder)."""

    def __init__(self, name: str, *, description: str = "", rounds: int = 3, latent_steps: int = 32) -> None:
        self._data: dict[str, Any] = {
            "name": name,
            "description": description,
            "rounds": rounds,
            "latent_steps": latent_steps,
            "agents": [],
            "edges": [],
        }

    def agent(
        self,
        name: str,
        *,
        role: str,
        model: str,
        inner_link: str | dict[str, Any] = "inner_ln_res",
        device: str | None = None,
        dtype: str | None = None,
        tools: list[str] | None = None,
        templates: dict[str, Any] | None = None,
        system: str | None = None,
    ) -> "TopologyBuilder":
        """Add an agent (``templates``: its own prompt templates per task type, see :class:`AgentSpec`)."""
        link = {"type": inner_link} if isinstance(inner_link, str) else dict(inner_link)
        self._data["agents"].append(
            {"name": name, "role": role, "model": model, "inner_link": link, "device": device,
             "dtype": dtype, "tools": list(tools or []), "templates": dict(templates or {}), "system": system}
        )
        return self

    def edge(
        self,
        source: str,
        target: str,
        *,
        slot: str | None = None,
        medium: str = "latent",
        link: str | dict[str, Any] = "outer_ln_res",
        recursion: bool = False,
    ) -> "TopologyBuilder":
        """Add a forward edge (or a recursion edge with ``recursion=True``)."""
        link_data = {"type": link} if isinstance(link, str) else dict(link)
        self._data["edges"].append(
            {"source": source, "target": target, "slot": slot, "recursion": recursion,
             "medium": medium, "link": link_data}
        )
        return self

    def recursion(self, source: str, target: str, **kwargs: Any) -> "TopologyBuilder":
        """Add a recursion edge (delivers into the next round)."""
        return self.edge(source, target, recursion=True, **kwargs)

    def output(self, name: str) -> "TopologyBuilder":
        """Set the output agent."""
        self._data["output"] = name
        return self

    def build(self) -> TopologySpec:
        """Parse into a :class:`TopologySpec` (field errors raise :class:`SpecError`)."""
        return parse_topology(self._data, source=self._data["name"])
