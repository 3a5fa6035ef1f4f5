"""The search space of ``recmas search``: a base topology and what may change in it.

A space is a JSON file (or a dict) read into :class:`SearchSpace`, with a JSON Schema for editors
(:func:`search_space_json_schema`)::

    {"base": "sequential_light_mini",
     "rounds": {"min": 1, "max": 3},
     "latent_steps": {"choices": [4, 8, 16, 32]},
     "edges": {"planner->critic": {"medium": ["latent", "text"]},
               "solver->planner": {"medium": ["latent", "text"], "drop": true}},
     "agents": {"critic": {"drop": true}},
     "weights": {"random": null, "calibrated": "calibrated:gsm8k"}}

:func:`resolve_space` checks it against its base (compiled, no weights, no torch) and reports
every problem at once, naming the field: a range that cannot validate (``rounds`` below 1, a
minimum above its maximum), an edge or agent the base does not have, the output agent dropped, a
weights choice that names no folder. The result, a :class:`ResolvedSpace`, proposes only variants
that validate: the ways of dropping agents and edges are enumerated once and only the structures
that compile (every agent still reaches the output) are offered, as one categorical choice.

>>> space = parse_search_space({"base": "b", "rounds": {"min": 1, "max": 3}, "latent_steps": [4, 8]})
>>> space.rounds, space.latent_steps
(IntRange(min=1, max=3, step=1, log=False), IntChoices(choices=[4, 8]))
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .._validation import problem_lines
from ..errors import RecmasError
from ..topology.compile import CompiledTopology, Problem, compile_topology, edge_ids
from ..topology.spec import CALIBRATED_PREFIX, TopologySpec, parse_topology, read_topology_file

__all__ = [
    "SearchError", "IntRange", "IntChoices", "EdgeSpace", "AgentSpace", "SearchSpace", "Variant", "ResolvedSpace",
    "Suggester", "parse_search_space", "read_search_space", "search_space_json_schema", "resolve_space",
    "MAX_STRUCTURES", "parse_int_domain", "shortcut_space", "describe",
]

#: The most ways of dropping agents and edges a space may offer (each is compiled once, up front).
MAX_STRUCTURES = 4096
_KEEP = "keep"


class SearchError(RecmasError):
    """A search cannot start or resume: a bad search space, too few questions, a changed study."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntRange(_Strict):
    """Integers from ``min`` to ``max`` (inclusive) in steps of ``step`` (``log``: sampled on a log scale)."""

    min: int
    max: int
    step: int = 1
    log: bool = False


class IntChoices(_Strict):
    """Some integers to choose from."""

    choices: list[int] = Field(min_length=1)


IntDomain = int | IntRange | IntChoices


class EdgeSpace(_Strict):
    """What may change on one edge: its medium (a list of ``latent`` / ``text``) and whether it may go."""

    medium: list[Literal["latent", "text"]] | None = Field(
        default=None, description="Media to choose from (null: the base's).")
    drop: bool = Field(default=False, description="The edge may be dropped (only variants that still validate).")


class AgentSpace(_Strict):
    """Whether an agent may be dropped (with its edges; only variants that still validate)."""

    drop: bool = False


class SearchSpace(_Strict):
    """A search space: a base topology and the ranges or choices of what may change in it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema", description="The JSON Schema, for editors.")
    base: str | dict[str, Any] = Field(
        description="The base topology: a registered name, a topology JSON file (relative to this file) or a "
        "topology object.")
    description: str = ""
    rounds: IntDomain | None = Field(
        default=None, description="Rounds: an integer, {min, max, step, log} or {choices: [...]}. null: the base's.")
    latent_steps: IntDomain | None = Field(
        default=None, description="Latent steps m of every agent: an integer, {min, max, step, log} or "
        "{choices: [...]}. null: the base's (its settings for the task included).")
    edges: dict[str, EdgeSpace] = Field(
        default_factory=dict, description="Per edge id of the base (e.g. 'planner->critic'): media and dropping.")
    agents: dict[str, AgentSpace] = Field(default_factory=dict, description="Per agent of the base: dropping.")
    weights: dict[str, str | None] = Field(
        default_factory=dict, description="Named choices of the links' weights: null (random), "
        "'calibrated:DATASET', or a folder (or topology JSON file) whose topology's link weights are used "
        "for the agents and edges it has. Empty: the base's weights.")

    @model_validator(mode="before")
    @classmethod
    def _lists_as_choices(cls, data: Any) -> Any:
        """``"latent_steps": [4, 8]`` is short for ``{"choices": [4, 8]}``."""
        if isinstance(data, dict):
            data = dict(data)
            for key in ("rounds", "latent_steps"):
                if isinstance(data.get(key), list):
                    data[key] = {"choices": data[key]}
        return data


def parse_search_space(data: Any, *, source: str = "search space") -> SearchSpace:
    """Parse a JSON-like object into a :class:`SearchSpace`; a :class:`SearchError` names every bad field."""
    if isinstance(data, SearchSpace):
        return data
    if not isinstance(data, dict):
        raise SearchError(f"a search space must be a JSON object, got {type(data).__name__}", culprit=source,
                          hint="see docs/search.md for the format")
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as err:
        lines, unknown = problem_lines(err.errors(), branches=("int", "IntRange", "IntChoices"))
        raise SearchError("invalid search space\n  " + "\n  ".join(lines), culprit=source,
                          hint="see docs/search.md (or recmas search-schema) for the fields" if unknown else None) from None


def read_search_space(path: str | Path) -> SearchSpace:
    """Read and parse a search-space JSON file (a relative ``base`` path is relative to the file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SearchError("file not found", culprit=str(path), hint="check the path of the search space") from None
    except json.JSONDecodeError as err:
        raise SearchError(f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}", culprit=str(path),
                          hint="fix the JSON syntax") from None
    space = parse_search_space(data, source=str(path))
    if isinstance(space.base, str) and (space.base.endswith(".json") or "/" in space.base):
        base = Path(space.base)
        if not base.is_absolute():
            space = space.model_copy(update={"base": str((path.parent / base).resolve())})
    return space


def search_space_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the search-space format."""
    schema = SearchSpace.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "recmas_graph search space"
    return schema


class Suggester(Protocol):
    """What a space asks of a trial (an Optuna trial fits)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Variant:
    """One point of a space: its parameters, its topology (validated) and a key naming its content."""

    params: dict[str, Any]
    compiled: CompiledTopology = field(repr=False)
    key: str

    @property
    def spec(self) -> TopologySpec:
        """The variant's topology."""
        return self.compiled.spec

    @property
    def name(self) -> str:
        """The variant's topology name (``BASE-v<key>``)."""
        return self.compiled.spec.name

    @property
    def label(self) -> str:
        """A short description: rounds, latent steps, media, what was dropped, weights."""
        return describe(self.params)


def describe(params: Mapping[str, Any]) -> str:
    """A short text of a variant's parameters, e.g. ``R2 m8 planner->critic:text``."""
    parts = []
    if "rounds" in params:
        parts.append(f"R{params['rounds']}")
    if "latent_steps" in params:
        parts.append(f"m{params['latent_steps']}")
    if params.get("structure", _KEEP) != _KEEP:
        parts.append(str(params["structure"]))
    parts += [f"{k.split(':', 1)[1]}:{v}" for k, v in params.items() if k.startswith("medium:")]
    if "weights" in params:
        parts.append(f"weights={params['weights']}")
    return " ".join(parts) or "base"


def _domain_values(domain: IntDomain) -> list[int]:
    if isinstance(domain, int):
        return [domain]
    if isinstance(domain, IntChoices):
        return list(domain.choices)
    return list(range(domain.min, domain.max + 1, max(domain.step, 1)))


def _domain_problems(name: str, domain: IntDomain | None, low: int, why: str) -> list[Problem]:
    if domain is None:
        return []
    problems = []
    if isinstance(domain, IntRange):
        if domain.step < 1:
            problems.append(Problem(f"{name}.step", f"step {domain.step} must be at least 1", "use step 1 or more"))
        if domain.max < domain.min:
            problems.append(Problem(name, f"the range {domain.min}-{domain.max} is empty (max below min)",
                                    f'write {{"min": {domain.max}, "max": {domain.min}}}'))
        if domain.min < low:
            problems.append(Problem(f"{name}.min", f"{name} {domain.min} cannot validate: {why}",
                                    f"start the range at {low} or more"))
        if domain.log and domain.min < 1:
            problems.append(Problem(f"{name}.log", "a log-scale range must start at 1 or more",
                                    "raise min, or drop \"log\""))
        if domain.log and domain.step != 1:
            problems.append(Problem(f"{name}.log", "a log-scale range takes no step", "drop \"step\" or \"log\""))
    else:
        bad = [v for v in _domain_values(domain) if v < low]
        if bad:
            problems.append(Problem(name, f"{name} {bad[0]} cannot validate: {why}", f"use values of {low} or more"))
    return problems


def _weights_problems(space: SearchSpace) -> list[Problem]:
    problems = []
    for name, value in space.weights.items():
        where = f"weights.{name}"
        if value is None:
            continue
        if value.startswith(CALIBRATED_PREFIX):
            if not value[len(CALIBRATED_PREFIX):].strip():
                problems.append(Problem(where, f"{value!r} names no dataset to calibrate on",
                                        f"write '{CALIBRATED_PREFIX}gsm8k' (a packaged dataset)"))
            continue
        path = Path(value)
        topology = path / "topology.json" if path.is_dir() else path
        if not topology.is_file():
            problems.append(Problem(where, f"{value!r} is neither a folder with a topology.json nor a topology file",
                                    "give null (random), 'calibrated:DATASET', or a folder written by recmas "
                                    "calibrate / recmas train"))
    return problems


def _absolute_weights(data: dict[str, Any], base_dir: Path | None) -> None:
    """Make relative link-weight paths absolute, so a variant's JSON runs from any folder."""
    if base_dir is None:
        return
    links = [a["inner_link"] for a in data["agents"]] + [e["link"] for e in data["edges"]]
    for link in links:
        weights = link.get("weights")
        if weights and not weights.startswith(CALIBRATED_PREFIX) and not Path(weights).is_absolute():
            link["weights"] = str((base_dir / weights).resolve())


def _weights_from(value: str) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """A trained folder's (or topology file's) link weights: by agent name, and by edge id."""
    path = Path(value)
    file = path / "topology.json" if path.is_dir() else path
    spec = read_topology_file(file)
    data = spec.model_dump(mode="json")
    _absolute_weights(data, file.parent)
    inner = {a["name"]: a["inner_link"]["weights"] for a in data["agents"]}
    outer = dict(zip(edge_ids(spec), (e["link"]["weights"] for e in data["edges"]), strict=True))
    return inner, outer


@dataclass(frozen=True, eq=False)
class ResolvedSpace:
    """A space checked against its compiled base: what each parameter may take, and the valid structures."""

    space: SearchSpace
    base: CompiledTopology = field(repr=False)
    structures: dict[str, tuple[frozenset[str], frozenset[str]]]  # label -> (dropped agents, dropped edge ids)
    media: dict[str, tuple[str, ...]]  # edge id -> media to choose from

    @property
    def size(self) -> int | None:
        """How many variants the space holds (``None`` for a log range: counted as its integers)."""
        count = len(_domain_values(self.space.rounds)) if self.space.rounds is not None else 1
        count *= len(_domain_values(self.space.latent_steps)) if self.space.latent_steps is not None else 1
        count *= max(len(self.space.weights), 1)
        total = 0
        for _, dropped in self.structures.values():
            kept = 1
            for edge, media in self.media.items():
                kept *= 1 if edge in dropped else len(media)
            total += kept
        return count * total

    def record(self) -> dict[str, Any]:
        """The space as plain JSON (with the base topology in full): what a study is bound to."""
        data = self.space.model_dump(mode="json", exclude={"schema_"}, exclude_none=True)
        data["base"] = json.loads(json.dumps(self.base.spec.model_dump(mode="json")))
        return data

    def suggest(self, trial: Suggester) -> Variant:
        """The variant ``trial`` picks (an Optuna trial: define-by-run, media only for the kept edges)."""
        params: dict[str, Any] = {}
        for name in ("rounds", "latent_steps"):
            domain = getattr(self.space, name)
            if isinstance(domain, IntRange):
                params[name] = trial.suggest_int(name, domain.min, domain.max, step=domain.step, log=domain.log)
            elif isinstance(domain, IntChoices):
                params[name] = trial.suggest_categorical(name, list(dict.fromkeys(domain.choices)))
            elif isinstance(domain, int):
                params[name] = domain
        if len(self.structures) > 1:
            params["structure"] = trial.suggest_categorical("structure", list(self.structures))
        dropped = self.structures[params.get("structure", _KEEP)][1]
        for edge, media in self.media.items():
            if edge not in dropped and len(media) > 1:
                params[f"medium:{edge}"] = trial.suggest_categorical(f"medium:{edge}", list(media))
            elif edge not in dropped:
                params[f"medium:{edge}"] = media[0]
        if self.space.weights:
            params["weights"] = trial.suggest_categorical("weights", list(self.space.weights))
        return self.variant(params)

    def base_params(self, task: str | None = None, dataset: str | None = None) -> dict[str, Any]:
        """The parameters of the base itself, where the space holds them (to evaluate it first); its
        latent steps are those its settings give ``task`` (and ``dataset``) when they say."""
        spec = self.base.spec
        params: dict[str, Any] = {}
        steps = spec.settings_for(task, dataset).latent_steps if task else None
        for name in ("rounds", "latent_steps"):
            domain = getattr(self.space, name)
            value = steps if name == "latent_steps" and steps is not None else getattr(spec, name)
            if isinstance(domain, (IntRange, IntChoices)) and value in _domain_values(domain):
                params[name] = value
        if len(self.structures) > 1:
            params["structure"] = _KEEP
        for edge, media in self.media.items():
            medium = self.base.edge(edge).medium
            if len(media) > 1 and medium in media:
                params[f"medium:{edge}"] = medium
        return params

    def variant(self, params: Mapping[str, Any]) -> Variant:
        """The variant with these parameters (missing ones: the base's), validated."""
        base = self.base.spec
        data = base.model_dump(mode="json")
        _absolute_weights(data, self.base.base_dir)
        if "rounds" in params:
            data["rounds"] = int(params["rounds"])
        if "latent_steps" in params:
            data["latent_steps"] = int(params["latent_steps"])
            for settings in data["settings"].values():  # the variant's m is the one that runs
                settings["latent_steps"] = None
        drop_agents, drop_edges = self.structures[params.get("structure", _KEEP)]
        ids = edge_ids(base)
        weights = self.space.weights.get(params["weights"]) if "weights" in params else _KEEP
        inner: dict[str, str | None] = {}
        outer: dict[str, str | None] = {}
        if weights not in (None, _KEEP) and not str(weights).startswith(CALIBRATED_PREFIX):
            inner, outer = _weights_from(str(weights))
        for agent in data["agents"]:
            if weights is None or str(weights).startswith(CALIBRATED_PREFIX):
                agent["inner_link"]["weights"] = weights
            elif agent["name"] in inner:
                agent["inner_link"]["weights"] = inner[agent["name"]]
        edges = []
        for edge_id, edge in zip(ids, data["edges"], strict=True):
            if edge_id in drop_edges or edge["source"] in drop_agents or edge["target"] in drop_agents:
                continue
            edge["medium"] = params.get(f"medium:{edge_id}", edge["medium"])
            if weights is None or str(weights).startswith(CALIBRATED_PREFIX):
                edge["link"]["weights"] = weights
            elif edge_id in outer:
                edge["link"]["weights"] = outer[edge_id]
            edges.append(edge)
        data["edges"] = edges
        data["agents"] = [a for a in data["agents"] if a["name"] not in drop_agents]
        key = _content_key(data)
        data["name"] = f"{base.name}-v{key[:8]}"
        data["description"] = f"A variant of {base.name} found by recmas search: {describe(params)}."
        spec = parse_topology(data, source=data["name"])
        return Variant(dict(params), compile_topology(spec, self.base.catalog, base_dir=self.base.base_dir), key)


def _content_key(data: Mapping[str, Any]) -> str:
    """A hash of what a variant runs (its name and description left out)."""
    content = {k: v for k, v in data.items() if k not in ("name", "description")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _structures(base: CompiledTopology, space: SearchSpace) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Every way of dropping the droppable agents and edges whose topology compiles, by label."""
    agents = [a for a, s in space.agents.items() if s.drop]
    edges = [e for e, s in space.edges.items() if s.drop]
    items = [("agent", a) for a in agents] + [("edge", e) for e in edges]
    if 2 ** len(items) > MAX_STRUCTURES:
        raise SearchError(f"{len(items)} droppable agents and edges make {2 ** len(items)} structures (at most "
                          f"{MAX_STRUCTURES})", culprit="drop", hint="let fewer agents and edges be dropped")
    ids = edge_ids(base.spec)
    found: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    for size in range(len(items) + 1):
        for combo in itertools.combinations(items, size):
            drop_agents = frozenset(name for kind, name in combo if kind == "agent")
            drop_edges = frozenset(name for kind, name in combo if kind == "edge")
            data = base.spec.model_dump(mode="json")
            data["agents"] = [a for a in data["agents"] if a["name"] not in drop_agents]
            data["edges"] = [e for i, e in zip(ids, data["edges"], strict=True)
                             if i not in drop_edges and e["source"] not in drop_agents
                             and e["target"] not in drop_agents]
            try:
                compile_topology(parse_topology(data), base.catalog, base_dir=base.base_dir)
            except RecmasError:
                continue  # e.g. an agent no longer reaches the output: never proposed
            label = _KEEP if not combo else "drop:" + ",".join(name for _, name in combo)
            found[label] = (drop_agents, drop_edges)
    return found


def resolve_space(space: SearchSpace | Mapping[str, Any] | str | Path, registry: Any) -> ResolvedSpace:
    """Check ``space`` (a :class:`SearchSpace`, a dict or a JSON file) against its base compiled with
    ``registry`` (no weights load); raise one :class:`SearchError` listing every problem."""
    if isinstance(space, (str, Path)):
        space = read_search_space(space)
    space = parse_search_space(space)
    try:
        base = registry.compile(space.base)
    except RecmasError as err:
        raise SearchError(f"the base topology does not validate: {err.message}",
                          culprit=f"base ({err.culprit})" if err.culprit else "base",
                          hint=err.hint or "fix the base topology (recmas validate) or name another one") from None
    problems = _domain_problems("rounds", space.rounds, 1, "a topology runs at least one round")
    problems += _domain_problems("latent_steps", space.latent_steps, 0, "latent steps are 0 or more")
    ids = edge_ids(base.spec)
    for edge, choice in space.edges.items():
        if edge not in ids:
            problems.append(Problem(f"edges[{edge!r}]", f"the base {base.name!r} has no edge {edge!r}",
                                    f"use one of its edge ids: {', '.join(ids) or 'none (it has no edges)'}"))
        elif choice.medium is not None and not choice.medium:
            problems.append(Problem(f"edges[{edge!r}].medium", "no medium to choose from",
                                    'give ["latent", "text"], one of them, or leave "medium" out'))
    names = base.spec.agent_names
    for agent, dropping in space.agents.items():
        if agent not in names:
            problems.append(Problem(f"agents[{agent!r}]", f"the base {base.name!r} has no agent {agent!r}",
                                    f"use one of its agents: {', '.join(names)}"))
        elif dropping.drop and agent == base.spec.output:
            problems.append(Problem(f"agents[{agent!r}].drop", "the output agent cannot be dropped",
                                    "drop other agents, or leave this one out"))
    problems += _weights_problems(space)
    if problems:
        lines = "\n  ".join(str(p) for p in problems)
        error = SearchError(f"{len(problems)} problem(s)\n  {lines}" if len(problems) > 1 else str(problems[0]),
                            culprit="search space")
        error.problems = list(problems)
        raise error
    media: dict[str, tuple[str, ...]] = {e: tuple(dict.fromkeys(s.medium)) for e, s in space.edges.items() if s.medium}
    resolved = ResolvedSpace(space, base, _structures(base, space), media)
    for name in space.weights:  # every weights choice with the base's structure must build its links
        try:
            resolved.variant({"weights": name})
        except RecmasError as err:
            raise SearchError(f"the weights choice does not validate: {err}", culprit=f"weights.{name}",
                              hint="check the folder or the calibration dataset") from None
    return resolved


def parse_int_domain(text: str, option: str) -> dict[str, Any] | int:
    """A command-line range: ``"1-3"`` (a range), ``"4,8,16"`` (choices) or ``"2"`` (fixed).

    >>> parse_int_domain("1-3", "--vary-rounds"), parse_int_domain("4,8", "--vary-latent-steps")
    ({'min': 1, 'max': 3}, {'choices': [4, 8]})
    """
    try:
        if "," in text:
            return {"choices": [int(v) for v in text.split(",") if v.strip()]}
        low, sep, high = text.partition("-")
        if sep:
            return {"min": int(low), "max": int(high)}
        return int(text)
    except ValueError:
        raise SearchError(f"expected a range A-B, choices A,B,C or a number, got {text!r}", culprit=option,
                          hint=f"e.g. {option} 1-3 or {option} 4,8,16") from None


def shortcut_space(base: str, registry: Any, *, rounds: str | None = None, latent_steps: str | None = None,
                   media: bool = False) -> dict[str, Any]:
    """The search space of the command-line shortcuts: ``base`` (a topology) with ``rounds`` and
    ``latent_steps`` ranges (:func:`parse_int_domain`) and, with ``media``, every edge latent or text."""
    space: dict[str, Any] = {"base": str(Path(base).resolve()) if Path(base).is_file() else base}
    if rounds is not None:
        space["rounds"] = parse_int_domain(rounds, "--vary-rounds")
    if latent_steps is not None:
        space["latent_steps"] = parse_int_domain(latent_steps, "--vary-latent-steps")
    if media:
        try:
            ids = edge_ids(registry.compile(base).spec)
        except RecmasError as err:
            raise SearchError(f"the base topology does not validate: {err}", culprit="base") from None
        space["edges"] = {edge: {"medium": ["latent", "text"]} for edge in ids}
    return space
