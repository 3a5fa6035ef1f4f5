"""The system: a compiled topology built into agents and links, as a ``torch.nn.Module``.

Its parameters are exactly the links: ``inner_links`` (an ``nn.ModuleDict`` by agent name) and
``outer_links`` (by edge id, latent edges only). The frozen LLMs are shared between agents that
name the same model, never copied, and are not submodules, so ``state_dict()`` holds the links only.

- :meth:`RecursiveSystem.run` answers questions under ``torch.inference_mode()``;
- :meth:`RecursiveSystem.score` scores candidate continuations of each question by likelihood
  (the rounds once, then every candidate teacher-forced after the output agent's final prompt);
- :meth:`RecursiveSystem.answer_loss` is the differentiable path: the teacher-forced
  cross-entropy of the output agent's answer given the latent messages of every round, which
  back-propagates into every link the schedule uses, round 1 included.

Both walk the same unrolled schedule with the same pass runner (:mod:`.backends`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import RunError
from ..tools.protocols import get_protocol
from ..topology.compile import CompiledTopology
from ..topology.schedule import Schedule
from ..topology.spec import SettingsSpec, TopologySpec
from .agent.agent import Agent
from .execution.backends import InProcessRunner, PassRunner, RunSettings, Streams
from .agent.decoding import GenerationOptions
from .execution.executor import NO_HOOKS, execute
from .links.assemble import ModelFacts, build_system_links, self_fitting_links
from .links.build import check_link_weights
from .links.checkpoints import resolve_weights_path
from .memory.oom import loading_out_of_memory, raise_out_of_memory
from .options import RunOptions
from .memory.placement import resolve_placement
from .memory.residency import Residency
from .execution.results import RunResult
from .agent.rollout import apply_link
from .agent.scoring import ScoreResult, continuation_lists
from .memory.sizing import memory_shortfall
from .sources.loaded import ModelCache
from .sources.tiny import tiny_counterpart
from .agent.texts import agent_role
from .agent.tooluse import ToolPolicy

__all__ = ["RecursiveSystem", "check_models", "with_models", "make_agent"]

def check_models(models: str | None) -> None:
    """Refuse a ``models`` value (``--models``) other than ``None`` and ``"tiny"``, before any work."""
    if models not in (None, "tiny"):
        raise RunError(f"unknown models value {models!r}", culprit="--models",
                       hint="use models='tiny' (--models tiny), or model={AGENT: REF} (--model AGENT=REF)")


def with_models(compiled: CompiledTopology, models: str | None, model: Mapping[str, str] | None) -> CompiledTopology:
    """``compiled`` with the models of ``build(models=..., model=...)`` in its spec."""
    check_models(models)
    overrides = dict(model or {})
    unknown = sorted(set(overrides) - set(compiled.spec.agent_names))
    if unknown:
        raise RunError(f"unknown agent(s) {', '.join(map(repr, unknown))} in model overrides", culprit="--model",
                       hint=f"use AGENT=REF with one of: {', '.join(compiled.spec.agent_names)}")
    if models == "tiny":
        overrides = {a.name: overrides.get(a.name) or tiny_counterpart(a.model) for a in compiled.spec.agents}
    return compiled.with_overrides(models=overrides)


class RecursiveSystem(nn.Module):
    """A built RecursiveMAS system: agents, their inner links, the outer links of latent edges, a schedule.

    Build one with :meth:`build` (or ``compiled.build(...)``). ``runner`` runs the passes (the
    in-process backend by default).
    """

    def __init__(self, compiled: CompiledTopology, agents: Mapping[str, Agent], inner_links: Mapping[str, nn.Module],
                 outer_links: Mapping[str, nn.Module], *, hooks: Any = None) -> None:
        super().__init__()
        self.compiled = compiled
        self.agents: dict[str, Agent] = dict(agents)  # plain objects: the frozen LLMs are not submodules
        self.inner_links = nn.ModuleDict(dict(inner_links))
        self.outer_links = nn.ModuleDict(dict(outer_links))
        self.hooks = hooks if hooks is not None else NO_HOOKS
        self.runner: PassRunner = InProcessRunner(self)
        #: How :meth:`build` was called (models, model, device, dtype, seed), for records of the run.
        self.build_options: dict[str, Any] = {}
        #: Low-memory mode's model manager (``None``: every model stays loaded).
        self.residency: Residency | None = None
        #: What is known of every agent's model (a partial system, e.g. on a Ray actor, reads the
        #: dtype of agents it does not hold here).
        self.model_facts: dict[str, ModelFacts] = {}

    @property
    def spec(self) -> TopologySpec:
        """The topology this system runs."""
        return self.compiled.spec

    def extra_repr(self) -> str:
        models = ", ".join(f"{n}={a.ref}" for n, a in self.agents.items())
        return f"name={self.spec.name!r}, agents: {models}"

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        compiled: CompiledTopology,
        *,
        models: str | None = None,
        model: Mapping[str, str] | None = None,
        device: str | Mapping[str, str] | None = None,
        dtype: str | None = None,
        seed: int = 0,
        model_cache: ModelCache | None = None,
        on_model: Callable[[str, str], None] | None = None,
        low_memory: bool | None = None,
        placement: str | None = None,
    ) -> "RecursiveSystem":
        """Load the models of ``compiled`` (each distinct one once) and build its links.

        ``models="tiny"`` gives every agent the tiny random model of its own family; ``model``
        maps agent -> model reference (it wins over ``models``); ``device`` is one device for all
        or a map agent -> device; ``dtype`` applies to agents whose spec sets none (``None``:
        automatic, float32 on CPU); ``seed`` fixes the random initialisation of links without
        weights; ``on_model(agent, ref)`` reports progress; ``placement`` is the strategy for agents
        placed automatically (:data:`~recmas_graph.runtime.memory.placement.STRATEGIES`). Link weight files
        and their shapes are checked before any model loads (when the model sources can tell the
        hidden sizes). Building always runs outside inference mode, so the links can be trained
        afterwards. ``low_memory=True`` keeps one model in memory at a time, loaded when a pass
        needs it (:mod:`.residency`), with the same answers; ``None`` (the default) turns it on
        only when the estimated memory (:mod:`.sizing`) exceeds what a device has free.
        """
        with torch.inference_mode(False):
            return cls._build(compiled, models=models, model=model, device=device, dtype=dtype, seed=seed,
                              model_cache=model_cache, on_model=on_model, low_memory=low_memory, placement=placement)

    @classmethod
    def _build(cls, compiled: CompiledTopology, *, models: str | None, model: Mapping[str, str] | None,
               device: str | Mapping[str, str] | None, dtype: str | None, seed: int, model_cache: ModelCache | None,
               on_model: Callable[[str, str], None] | None, low_memory: bool | None = None,
               placement: str | None = None) -> "RecursiveSystem":
        compiled = with_models(compiled, models, model)
        spec, catalog, base = compiled.spec, compiled.catalog, compiled.base_dir
        strategy = placement
        where = resolve_placement(spec, device, placement=strategy, sources=catalog.model_sources, dtype=dtype)
        _check_weight_files(spec, base)  # before minutes of model loading
        hidden = _known_hidden_sizes(spec, catalog)
        if hidden is not None:
            check_link_weights(spec, hidden, base, link_types=catalog.link_types)
        hooks = getattr(catalog, "hooks", None) or NO_HOOKS
        cache = model_cache if model_cache is not None else ModelCache(catalog.model_sources)
        low_memory = _choose_low_memory(compiled, where, low_memory, dtype=dtype, cache=cache, on_model=on_model)
        residency = None
        if low_memory:
            residency = Residency({a.name: (a.model, where[a.name], a.dtype or dtype) for a in spec.agents},
                                  catalog.model_sources)
        loaded: dict[str, Any] = {}  # the models kept loaded (none in low-memory mode)
        facts: dict[str, ModelFacts] = {}
        agents: dict[str, Agent] = {}
        for a in spec.agents:
            if on_model is not None:
                on_model(a.name, a.model)
            if residency is not None:
                lm = residency.get(a.name)  # frees the model before it
            else:
                with raise_out_of_memory(loading_out_of_memory, agent=a.name, ref=a.model, device=where[a.name]):
                    lm = loaded[a.name] = cache.get(a.model, device=where[a.name], dtype=a.dtype or dtype,
                                                    sources=catalog.model_sources)
            facts[a.name] = ModelFacts.of(lm)
            agents[a.name] = make_agent(a, lm, catalog)
            if residency is not None:  # plugins see the agent while its model is loaded
                residency.register(agents[a.name])
                hooks.recmas_agent_built(agent=agents[a.name])
        if residency is not None:
            residency.free()
        if hidden is None:
            check_link_weights(spec, {n: f.hidden_size for n, f in facts.items()}, base, link_types=catalog.link_types)
        inner, outer = build_system_links(compiled, facts, seed=seed, models=loaded,
                                          devices={name: agent.device for name, agent in agents.items()})
        system = cls(compiled, agents, inner, outer, hooks=getattr(catalog, "hooks", None))
        system.residency = residency
        system.model_facts = facts
        system.build_options = {"models": models, "model": dict(model or {}), "device": device, "dtype": dtype,
                                "seed": seed, **({"low_memory": True} if low_memory else {}),
                                **({"placement": strategy} if strategy else {})}
        if residency is None:
            for agent in agents.values():
                system.hooks.recmas_agent_built(agent=agent)
        return system

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, folder: str | Path, *, description: str | None = None,
                        link_dtype: str | None = None) -> Path:
        """Write this system to ``folder`` (topology, links as safetensors, a configuration with
        versions; :mod:`.pretrained`), rebuilt by :meth:`from_pretrained`. No model is loaded.
        ``link_dtype="float16"`` stores the links at half the size; they load back as they were."""
        from .pretrained import save_pretrained

        return save_pretrained(self, folder, description=description, link_dtype=link_dtype)

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, registry: Any = None, **build: Any) -> "RecursiveSystem":
        """The system saved in ``folder`` by :meth:`save_pretrained`, built with ``build``'s keywords
        (as :meth:`build`: ``device``, ``dtype``, ``low_memory``...). ``registry`` resolves its
        roles and link types (default: the installed plugins, as ``recmas_graph.from_pretrained``)."""
        from .pretrained import load_pretrained

        if registry is None:  # the default registry is the plugins layer's, above this one: bound late
            registry = importlib.import_module("recmas_graph.plugins").default_registry()
        return load_pretrained(folder, registry.compile, **build)

    # ------------------------------------------------------------------ messages
    def plan(self, rounds: int | None = None) -> Schedule:
        """The pruned unrolled schedule (same as ``recmas plan``)."""
        return self.compiled.schedule(rounds)

    def latent_message(self, edge_id: str, thoughts: torch.Tensor) -> torch.Tensor:
        """Message on a latent edge: outer(inner_source(H)), cast to the target's device and dtype.

        (B, m, H_src) -> (B, m, H_dst).
        """
        edge = self.compiled.edge(edge_id)
        inner = apply_link(self.inner_links[edge.source], thoughts)  # (B, m, H_src) -> (B, m, H_src)
        msg = apply_link(self.outer_links[edge_id], inner)  # (B, m, H_src) -> (B, m, H_dst)
        target = self.agents.get(edge.target)
        if target is None:  # held by another process: the message travels on the CPU
            return msg.to(device="cpu", dtype=self.model_facts[edge.target].torch_dtype)
        return msg.to(device=target.device, dtype=target.dtype)

    # ------------------------------------------------------------------ running
    def settings_for(self, task: str, dataset: str | None = None) -> SettingsSpec:
        """The topology's run settings for ``task`` (and ``dataset``), latent steps filled in."""
        found = self.spec.settings_for(task, dataset)
        if found.latent_steps is None:
            found = found.model_copy(update={"latent_steps": self.spec.latent_steps})
        return found

    def _settings(self, questions: Sequence[Any], options: RunOptions, *, generation: GenerationOptions,
                  rounds: int, seeds: Sequence[int] | None = None, targets: Sequence[str] | None = None,
                  keep: bool = False) -> RunSettings:
        if isinstance(questions, str):
            raise RunError("questions must be a list of strings, got one string", culprit="questions",
                           hint='wrap it in a list: run(["What is 2 + 3?"])')
        if not questions:
            raise RunError("no questions given", culprit="questions", hint="pass at least one question")
        m = options.latent_steps
        if m is None:
            m = int(self.settings_for(options.task, options.dataset).latent_steps or 0)  # filled by settings_for
        if seeds is None:
            seeds = [(options.seed or 0) + i for i in range(len(questions))]
        if len(seeds) != len(questions):
            raise RunError(f"{len(seeds)} seeds for {len(questions)} questions", culprit="seeds",
                           hint="give one seed per question")
        if targets is not None and len(targets) != len(questions):
            raise RunError(f"{len(targets)} answers for {len(questions)} questions", culprit="answers",
                           hint="give one answer per question")
        texts, fields = _split_questions(questions)
        return RunSettings(questions=texts, task=options.task, latent_steps=m, generation=generation,
                           seeds=tuple(int(s) for s in seeds), text_message_tokens=options.text_message_tokens,
                           tool_choice=options.tool_choice, use_cache=options.use_cache,
                           targets=tuple(str(t) for t in targets) if targets is not None else None,
                           keep_thoughts=keep, rounds=rounds, fields=fields, reuse_prefix=options.reuse_prefix)

    def run(
        self,
        questions: Sequence[str | Mapping[str, str]],
        options: RunOptions | None = None,
        *,
        seeds: Sequence[int] | None = None,
        keep_messages: bool = False,
        on_text: Callable[[int, str], None] | None = None,
        **overrides: Any,
    ) -> RunResult:
        """Answer a batch of questions by running the schedule wave by wave (no autograd).

        A question is a string, or a mapping with ``question`` and the question's own template
        fields (``fn_name``). ``options`` (a :class:`~.options.RunOptions`) say how to think and
        decode; keyword ``overrides`` (any of its fields: ``task``, ``rounds``, ``latent_steps``,
        ``greedy``, ``max_new_tokens``, ``generation``, ``tool_choice``, ``reuse_prefix``, ...) go on
        top. The topology's settings for the task (and dataset) set the latent steps and the decoding
        that are not given. Question ``i`` samples with seed ``seeds[i]`` (default ``seed + i``), so
        an answer does not depend on its batch-mates. ``keep_messages`` keeps every latent message
        and the thoughts in the result. ``on_text(i, delta)`` receives question ``i``'s answer piece by
        piece as the output agent decodes it (the pieces join to the answer; a runner that cannot stream,
        such as the Ray backend's, sends nothing: the caller has the answers when ``run`` returns).
        """
        opts = RunOptions.of(options, **overrides)
        generation = opts.resolve_generation(self.spec.settings_for(opts.task, opts.dataset))
        schedule = self.plan(opts.rounds)
        settings = self._settings(questions, opts, generation=generation, rounds=schedule.rounds, seeds=seeds,
                                  keep=keep_messages)
        runner = self.runner
        streamer = runner if on_text is not None and isinstance(runner, Streams) else None
        if streamer is not None:
            streamer.on_text = on_text
        try:
            with torch.inference_mode():
                result = execute(schedule, runner, settings, hooks=self.hooks, system=self, keep=keep_messages)
        finally:
            if streamer is not None:
                streamer.on_text = None
        # kept tensors leave inference mode as normal tensors (usable with autograd and in place)
        result.messages = {k: v.clone() for k, v in result.messages.items()}
        result.thoughts = {k: v.clone() for k, v in result.thoughts.items()}
        return result

    def score(
        self,
        questions: Sequence[str | Mapping[str, str]],
        continuations: Sequence[str | Sequence[str]],
        options: RunOptions | None = None,
        **overrides: Any,
    ) -> ScoreResult:
        """Score each question's candidate ``continuations`` by likelihood (no autograd, nothing sampled).

        The rounds run once per question, as for :meth:`run` with greedy decoding of text messages;
        then every continuation of question ``i`` (``continuations[i]``: a string or a list of them,
        e.g. the options of a multiple-choice question) is teacher-forced after the output agent's
        final prompt, all of them from one prefill of that prompt. Returns a
        :class:`~.scoring.ScoreResult`: per continuation the sum of its tokens' log-probabilities, its
        token count and whether it is the greedy continuation (lm-eval's ``loglikelihood``; see
        :mod:`.scoring` for the tokenisation). ``options`` and ``overrides`` are as for :meth:`run`.
        """
        opts = RunOptions.of(options, **overrides)
        conts = continuation_lists(questions, continuations)
        generation = opts.resolve_generation(self.spec.settings_for(opts.task, opts.dataset)).greedy()
        schedule = self.plan(opts.rounds)
        settings = self._settings(questions, opts.replace(tool_choice="auto"), generation=generation,
                                  rounds=schedule.rounds)
        settings = replace(settings, continuations=conts)
        with torch.inference_mode():
            result = execute(schedule, self.runner, settings, hooks=self.hooks, system=self)
        if result.scores is None:  # pragma: no cover - a runner that ignores the continuations
            raise RunError("the pass runner returned no scores for the decode pass", culprit=type(self.runner).__name__,
                           hint="a backend must score settings.continuations in the decode pass")
        return ScoreResult(list(settings.questions), [list(c) for c in conts], result.scores, result.trace,
                           result.wall_s, texts=dict(result.texts), question_tokens=list(result.question_tokens))

    def answer_loss(
        self,
        questions: Sequence[str | Mapping[str, str]],
        answers: Sequence[str],
        options: RunOptions | None = None,
        *,
        checkpoint: bool = False,
        grad: bool = True,
        **overrides: Any,
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy (mean per answer token) of the output agent's ``answers``.

        The schedule runs with autograd (even when called inside ``torch.inference_mode()``): every
        latent message of every round is computed from the links, so ``loss.backward()`` reaches every
        link whose message influences the answer through latent edges, in every round it is used.
        Text messages (text edges) are decoded greedily and carry no gradient, so a link whose
        messages only reach the answer through a text edge gets none. ``options`` and ``overrides``
        are as for :meth:`run` (decoding fields aside: nothing is sampled). ``checkpoint`` recomputes
        each pass of the frozen models during the backward pass instead of keeping its activations;
        ``grad=False`` only scores (validation: no autograd graph is kept).
        """
        losses = self.target_losses(questions, answers, options=options, checkpoint=checkpoint, grad=grad, **overrides)
        return losses[self.spec.output][0]

    def target_losses(
        self,
        questions: Sequence[str | Mapping[str, str]],
        answers: Sequence[str],
        targets: Mapping[str, Sequence[str]] | None = None,
        options: RunOptions | None = None,
        *,
        checkpoint: bool = False,
        grad: bool = True,
        **overrides: Any,
    ) -> dict[str, tuple[torch.Tensor, int]]:
        """One unrolled run scoring the output agent's ``answers`` and other agents' ``targets``.

        ``targets[agent]`` (one text per question) is teacher-forced after that agent's prompt in
        the last round it runs, with the messages it received (the paper's intermediate losses on
        the plan and refined plan). Returns ``{agent: (mean NLL per token, tokens)}`` for the output
        agent and every agent in ``targets``; see :meth:`answer_loss` for how gradients flow
        (and ``options``, ``checkpoint``, ``grad``).
        """
        opts = RunOptions.of(options, **overrides)
        rounds = opts.rounds
        schedule = self.plan(rounds)
        last_round: dict[str, int] = {}
        for wave in schedule.waves:
            for step in wave:
                last_round[step.agent] = max(step.round, last_round.get(step.agent, 0))
        agent_targets: dict[tuple[str, int], tuple[str, ...]] = {}
        for name, texts in (targets or {}).items():
            if name == self.spec.output:
                raise RunError(f"{name!r} is the output agent: its target is the answer", culprit=f"targets[{name!r}]",
                               hint="give the output agent's text as the answers")
            if name not in last_round:
                known = ", ".join(a for a in last_round if a != self.spec.output) or "none"
                raise RunError(f"agent {name!r} does not run in this schedule", culprit=f"targets[{name!r}]",
                               hint=f"agents with a target loss: {known}")
            if isinstance(texts, str) or len(texts) != len(questions):
                raise RunError(f"targets for {name!r}: one text per question is needed ({len(questions)})",
                               culprit=f"targets[{name!r}]")
            agent_targets[(name, last_round[name])] = tuple(str(t) for t in texts)
        settings = self._settings(questions, opts.replace(tool_choice="auto"),
                                  generation=GenerationOptions(do_sample=False), rounds=schedule.rounds,
                                  targets=answers)
        # low-memory mode keeps one model loaded: an autograd graph holding every pass's weights would keep
        # every reloaded copy alive, so each pass is recomputed (and its model reloaded) in backward instead
        checkpoint = checkpoint or (grad and self.residency is not None)
        settings = replace(settings, agent_targets=agent_targets, checkpoint=checkpoint)
        with torch.inference_mode(False), torch.set_grad_enabled(grad):
            result = execute(schedule, self.runner, settings, system=self)
        if self.spec.output not in result.target_losses:  # pragma: no cover - a runner that ignores the targets
            raise RunError("the pass runner returned no loss for the decode pass", culprit=type(self.runner).__name__,
                           hint="a backend must score settings.targets in the decode pass")
        return dict(result.target_losses)


def _choose_low_memory(compiled: CompiledTopology, placement: Mapping[str, str], low_memory: bool | None, *,
                       dtype: str | None, cache: ModelCache, on_model: Callable[[str, str], None] | None) -> bool:
    """Whether to build in low-memory mode: as asked, else when the estimate does not fit (models
    already in ``cache`` cost nothing more). Links that fit themselves from the models rule it out."""
    fitting = self_fitting_links(compiled)
    if low_memory and fitting:
        raise RunError(f"{fitting[0][0]} fits itself from the loaded models, which low-memory mode does not hold "
                       "together", culprit="--low-memory", hint="give the link weights (recmas calibrate), or build "
                                                                "without low-memory mode")
    if low_memory is not None:
        return bool(low_memory)
    spec = compiled.spec
    if fitting or all(ModelCache.key(a.model, placement[a.name], a.dtype or dtype) in cache for a in spec.agents):
        return False
    shortfall = memory_shortfall(spec, placement, sources=compiled.catalog.model_sources, dtype=dtype)
    if shortfall is not None and on_model is not None:
        on_model("links", f"low-memory mode: {shortfall}")
    return shortfall is not None


def make_agent(spec: Any, loaded: Any, catalog: Any) -> Agent:
    """The :class:`Agent` of agent spec ``spec`` on its ``loaded`` model, with its role and tools from ``catalog``."""
    role = agent_role(spec, catalog.roles)
    tools = ToolPolicy({n: catalog.tools[n] for n in spec.tools}, _protocol(role)) if spec.tools else None
    return Agent(spec, loaded, role, tools=tools)


def _protocol(role: Any) -> Any:
    try:
        return get_protocol(role.tool_protocol)
    except ValueError as err:
        raise RunError(str(err), culprit=f"role {role.name!r}", hint="fix the role's tool_protocol") from None


def _split_questions(questions: Sequence[Any]) -> tuple[tuple[str, ...], tuple[dict[str, str], ...]]:
    """Question texts and each question's template fields (from ``{"question": ..., "fn_name": ...}`` items)."""
    texts, fields = [], []
    for i, item in enumerate(questions):
        if isinstance(item, Mapping):
            if not isinstance(item.get("question"), str):
                raise RunError(f"question {i + 1} has no string field 'question'", culprit="questions",
                               hint='give a string, or a mapping like {"question": "...", "fn_name": "f"}')
            texts.append(item["question"])
            fields.append({str(k): str(v) for k, v in item.items() if k != "question"})
        else:
            texts.append(str(item))
            fields.append({})
    return tuple(texts), tuple(fields)


def _check_weight_files(spec: TopologySpec, base: Any) -> None:
    """Every weights file named by the spec exists (checked before any model loads)."""
    missing = []
    for agent in spec.agents:
        if agent.inner_link.weights_file is not None:
            path = resolve_weights_path(agent.inner_link.weights_file, base)
            if not path.exists():
                missing.append(f"agent {agent.name!r} inner_link: {path}")
    for edge in spec.edges:
        if edge.medium == "latent" and edge.link.weights_file is not None:
            path = resolve_weights_path(edge.link.weights_file, base)
            if not path.exists():
                missing.append(f"edge {edge.label}: {path}")
    if missing:
        raise RunError("link weights file(s) not found:\n  " + "\n  ".join(missing), culprit=spec.name,
                       hint="fix the \"weights\" paths (relative paths are relative to the topology file), "
                            "or set them to null for random initialisation")


def _known_hidden_sizes(spec: TopologySpec, catalog: Any) -> dict[str, int] | None:
    """Every agent's hidden size from its model source without loading weights, or ``None`` when a
    source cannot tell (then the sizes are read from the loaded models). Only asked when some link
    has weights to check."""
    if not any(a.inner_link.weights_file for a in spec.agents) and not any(
            e.link.weights_file and e.medium == "latent" for e in spec.edges):
        return {}
    from ..topology.catalog import resolve_model_source

    sizes: dict[str, int] = {}
    for agent in spec.agents:
        size = resolve_model_source(agent.model, catalog.model_sources).hidden_size_of(agent.model)
        if size is None:
            return None
        sizes[agent.name] = int(size)
    return sizes
