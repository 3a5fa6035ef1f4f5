"""Executor: build a system from a topology and run its unrolled schedule wave by wave.

Placement is a plain map agent -> device. Passes of one wave are independent; when they sit on
different CUDA devices they run concurrently in threads. Every (agent, round) pass leaves a trace
row: action, device, wall time, prompt tokens, latent steps, generated tokens, peak memory.
"""

from __future__ import annotations

import contextlib
import re
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .agents import Agent, GenerationOptions, PromptBatch, apply_link
from .errors import RunError
from .graph import CompiledTopology, Pass, Schedule, compile_topology
from .registry import Registry, get_registry
from .spec import TopologySpec, parse_topology

__all__ = [
    "RecursiveSystem",
    "RunResult",
    "TraceRecord",
    "resolve_placement",
    "tiny_counterpart",
    "apply_link",
]


@dataclass
class TraceRecord:
    """What one (agent, round) pass did, for one batch of questions."""

    agent: str
    round: int
    action: str
    device: str
    wall_s: float
    batch_size: int
    prompt_tokens: int
    latent_steps: int
    generated_tokens: int
    peak_mem_bytes: int
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


@dataclass
class RunResult:
    """Answers of a run, the trace, and (when asked) the latent messages per edge and round."""

    questions: list[str]
    answers: list[str]
    generated_tokens: list[int]
    trace: list[TraceRecord]
    wall_s: float
    messages: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    thoughts: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)


_TINY_FAMILIES = (("gemma", "tiny:gemma3"), ("qwen", "tiny:qwen2"), ("deepseek", "tiny:qwen2"),
                  ("smollm", "tiny:llama"), ("llama", "tiny:llama"), ("mistral", "tiny:llama"))


def tiny_counterpart(ref: str) -> str:
    """The tiny random model of the same family as ``ref`` (llama for unknown families).

    >>> tiny_counterpart("Qwen/Qwen3-1.7B"), tiny_counterpart("pkg:gemma3-270m")
    ('tiny:qwen2', 'tiny:gemma3')
    """
    if ref.startswith("tiny:"):
        return ref
    low = ref.lower()
    for key, tiny in _TINY_FAMILIES:
        if key in low:
            return tiny
    return "tiny:llama"


def resolve_placement(spec: TopologySpec, device: str | Mapping[str, str] | None = None) -> dict[str, str]:
    """Map every agent to a device: explicit map > ``device`` for all > spec ``device`` > automatic.

    Automatic: CPU without CUDA; with CUDA, agents are spread round-robin over the visible GPUs in
    declaration order, agents sharing a model reference kept together.
    """
    overrides = dict(device) if isinstance(device, Mapping) else {}
    unknown = set(overrides) - set(spec.agent_names)
    if unknown:
        raise RunError(f"unknown agent(s) {', '.join(sorted(unknown))} in the device map",
                       culprit="--device", hint=f"use agent names: {', '.join(spec.agent_names)}")
    default = device if isinstance(device, str) else None
    n_gpu = torch.cuda.device_count()
    by_model: dict[str, str] = {}
    placement: dict[str, str] = {}
    for agent in spec.agents:
        chosen = overrides.get(agent.name) or default or agent.device
        if chosen in (None, "auto"):
            if n_gpu == 0:
                chosen = "cpu"
            else:
                chosen = by_model.get(agent.model) or f"cuda:{len(set(by_model.values())) % n_gpu}"
        by_model.setdefault(agent.model, chosen)
        if chosen.startswith("cuda") and n_gpu == 0:
            raise RunError(f"device {chosen!r} requested but CUDA is not available", culprit=f"agent {agent.name!r}",
                           hint=f"use --device cpu (all agents) or --device {agent.name}=cpu, or run on a machine with a GPU")
        placement[agent.name] = chosen
    return placement


def _peak_mem(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # CPU: the process's peak resident set size (Linux reports KiB).
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class RecursiveSystem:
    """A built RecursiveMAS system: agents with inner links, outer links per latent edge, a schedule."""

    def __init__(self, compiled: CompiledTopology, agents: dict[str, Agent], outer_links: dict[int, nn.Module],
                 registry: Registry) -> None:
        self.compiled = compiled
        self.spec = compiled.spec
        self.agents = agents
        self.outer_links = outer_links
        self.registry = registry
        self._edge_index = {id(edge): i for i, edge in enumerate(self.spec.edges)}

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        topology: TopologySpec,
        *,
        registry: Registry | None = None,
        device: str | Mapping[str, str] | None = None,
        dtype: str | None = None,
        model_overrides: Mapping[str, str] | None = None,
        tiny: bool = False,
        model_cache: Any = None,
        base_dir: str | Path | None = None,
        seed: int = 0,
        on_model: Callable[[str, str], None] | None = None,
    ) -> "RecursiveSystem":
        """Validate ``topology``, load its models (shared when equal) and build its links.

        ``model_overrides`` maps agent -> model reference; ``tiny=True`` gives every agent the tiny
        model of its own family; ``base_dir`` resolves relative weight paths; ``seed`` fixes the
        random initialisation of links without weights. ``on_model(agent, ref)`` reports progress.
        """
        from .links import build_link, check_link_weights
        from .models import ModelCache

        registry = registry or get_registry()
        overrides = dict(model_overrides or {})
        unknown = set(overrides) - set(topology.agent_names)
        if unknown:
            raise RunError(f"unknown agent(s) {', '.join(sorted(unknown))} in model overrides", culprit="--model",
                           hint=f"use AGENT=REF with one of: {', '.join(topology.agent_names)}")
        data = topology.model_dump(mode="json")
        for agent in data["agents"]:
            ref = overrides.get(agent["name"], agent["model"])
            agent["model"] = tiny_counterpart(ref) if tiny and agent["name"] not in overrides else ref
        spec = parse_topology(data, source=topology.name)
        compiled = compile_topology(spec, registry)
        placement = resolve_placement(spec, device)
        base = Path(base_dir) if base_dir is not None else None
        _check_weight_files(spec, base)  # before minutes of model loading
        cache = model_cache if model_cache is not None else ModelCache()
        loaded: dict[str, Any] = {}
        for agent in spec.agents:
            if on_model is not None:
                on_model(agent.name, agent.model)
            loaded[agent.name] = cache.get(agent.model, device=placement[agent.name], dtype=agent.dtype or dtype)
        hidden = {name: lm.hidden_size for name, lm in loaded.items()}
        check_link_weights(spec, hidden, base_dir=base, registry=registry)
        agents: dict[str, Agent] = {}
        outer: dict[int, nn.Module] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for agent_spec in spec.agents:
                lm = loaded[agent_spec.name]
                h = lm.hidden_size
                inner = build_link(agent_spec.inner_link, h, h, registry=registry, base_dir=base,
                                   where=f"agent {agent_spec.name!r} inner_link")
                _calibrate(inner, agent_spec.inner_link.weights, lm, lm)
                inner = inner.to(lm.device).eval().requires_grad_(False)
                role = registry.roles[agent_spec.role]
                agent = Agent(agent_spec, lm, role, inner)
                agents[agent_spec.name] = agent
            for i, edge in enumerate(spec.edges):
                if edge.medium != "latent":
                    continue
                src, dst = loaded[edge.source], loaded[edge.target]
                link = build_link(edge.link, src.hidden_size, dst.hidden_size, registry=registry, base_dir=base,
                                  where=f"edge {edge.label}")
                _calibrate(link, edge.link.weights, dst, dst)
                outer[i] = link.to(dst.device).eval().requires_grad_(False)
        system = cls(compiled, agents, outer, registry)
        _attach_tools(system)
        for agent in agents.values():
            registry.call_hook("recmas_agent_built", agent=agent)
        return system

    # ------------------------------------------------------------------ running
    def plan(self, rounds: int | None = None) -> Schedule:
        """The pruned unrolled schedule (same as ``recmas plan``)."""
        return self.compiled.schedule(rounds)

    def latent_message(self, edge_index: int, thoughts: torch.Tensor) -> torch.Tensor:
        """Message on a latent edge: outer(inner_source(H)), cast to the target's device and dtype.

        (B, m, H_src) -> (B, m, H_dst).
        """
        edge = self.spec.edges[edge_index]
        source, target = self.agents[edge.source], self.agents[edge.target]
        with torch.no_grad():
            inner = apply_link(source.inner_link, thoughts)  # (B, m, H_src) -> (B, m, H_src)
            msg = apply_link(self.outer_links[edge_index], inner)  # (B, m, H_src) -> (B, m, H_dst)
        return msg.to(device=target.device, dtype=target.dtype)

    def run(
        self,
        questions: Sequence[str],
        *,
        task: str = "math",
        rounds: int | None = None,
        latent_steps: int | None = None,
        generation: GenerationOptions | None = None,
        text_message_tokens: int = 256,
        seed: int | None = 0,
        seeds: Sequence[int] | None = None,
        keep_messages: bool = False,
        use_cache: bool = True,
        tool_choice: str = "auto",
    ) -> RunResult:
        """Answer a batch of questions by running the schedule wave by wave.

        ``keep_messages`` keeps every latent message (per edge label and source round) and the
        thoughts per (agent, round) in the result, for inspection and tests. ``tool_choice``
        ``"required"`` opens a call of the output agent's first tool at the start of its answer
        (``"auto"``: the model decides). Sampling uses one generator per question, seeded with
        ``seeds[i]`` (default ``seed + i``), so an answer does not depend on its batch-mates.
        """
        if tool_choice not in ("auto", "required"):
            raise RunError(f"unknown tool_choice {tool_choice!r}", culprit="tool_choice", hint='use "auto" or "required"')
        if not questions:
            raise RunError("no questions given", culprit="questions", hint="pass at least one question")
        questions = [str(q) for q in questions]
        generation = generation or GenerationOptions()
        m = self.spec.latent_steps if latent_steps is None else latent_steps
        schedule = self.plan(rounds)
        if seeds is None and seed is not None:
            seeds = [seed + i for i in range(len(questions))]
        if seeds is not None and len(seeds) != len(questions):
            raise RunError(f"{len(seeds)} seeds for {len(questions)} questions", culprit="seeds",
                           hint="give one seed per question")
        generator = [torch.Generator().manual_seed(int(s)) for s in seeds] if seeds is not None else None
        start = time.perf_counter()
        self.registry.call_hook("recmas_run_start", system=self, questions=questions)
        thoughts: dict[tuple[str, int], torch.Tensor] = {}
        texts: dict[tuple[str, int], list[str]] = {}
        result = RunResult(questions, [], [], [], 0.0)
        remaining = self._consumer_counts(schedule)
        for wave in schedule.waves:
            devices = {str(self.agents[p.agent].device) for p in wave}
            if len(wave) > 1 and len(devices) > 1 and all(d.startswith("cuda") for d in devices):
                with ThreadPoolExecutor(max_workers=len(wave)) as pool:
                    records = list(pool.map(lambda p: self._run_pass(p, questions, task, m, generation,
                                                                     text_message_tokens, generator, thoughts, texts,
                                                                     result, keep_messages, use_cache, tool_choice), wave))
            else:
                records = [self._run_pass(p, questions, task, m, generation, text_message_tokens, generator, thoughts,
                                          texts, result, keep_messages, use_cache, tool_choice) for p in wave]
            result.trace.extend(records)
            for p in wave:
                for edge, sr in p.inputs:
                    key = (edge.source, sr)
                    remaining[key] -= 1
                    if remaining[key] == 0 and not keep_messages:
                        thoughts.pop(key, None)
        result.wall_s = time.perf_counter() - start
        if keep_messages:
            result.thoughts = thoughts
        self.registry.call_hook("recmas_run_end", system=self, results=result)
        return result

    def _consumer_counts(self, schedule: Schedule) -> dict[tuple[str, int], int]:
        counts: dict[tuple[str, int], int] = {}
        for p in schedule.passes:
            for edge, sr in p.inputs:
                counts[(edge.source, sr)] = counts.get((edge.source, sr), 0) + 1
        return counts

    def _run_pass(self, step: Pass, questions: list[str], task: str, m: int, generation: GenerationOptions,
                  text_tokens: int, generator: list[torch.Generator] | None, thoughts: dict, texts: dict,
                  result: RunResult, keep: bool, use_cache: bool, tool_choice: str) -> TraceRecord:
        agent = self.agents[step.agent]
        self.registry.call_hook("recmas_before_pass", system=self, step=step)
        device = agent.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        latent: dict[str, torch.Tensor] = {}
        text: dict[str, list[str]] = {}
        senders: dict[str, str] = {}
        order: list[str] = []
        for edge, sr in step.inputs:
            slot = edge.slot_name
            senders[slot] = edge.source
            order.append(slot)
            if edge.medium == "latent":
                index = self._edge_index[id(edge)]
                msg = self.latent_message(index, thoughts[(edge.source, sr)])
                latent[slot] = msg
                if keep:
                    result.messages[(edge.label, sr)] = msg.detach().cpu()
            else:
                text[slot] = texts[(edge.source, sr)]
        prompt = agent.build_prompts(questions, task, latent, text, senders, order)
        generated = 0
        tool_calls: list[dict[str, Any]] = []
        if step.action == "decode":
            answers, counts, tool_calls = self._decode_answer(agent, prompt, generation, generator, tool_choice)
            result.answers, result.generated_tokens = answers, counts
            generated = sum(counts)
        if step.latent:
            thoughts[(step.agent, step.round)] = agent.latent_rollout(prompt, m, use_cache=use_cache)
        if step.text:
            opts = GenerationOptions(text_tokens, generation.do_sample, generation.temperature, generation.top_p)
            decoded = agent.decode(prompt, opts, generator=generator)
            texts[(step.agent, step.round)] = decoded.texts
            generated += sum(decoded.generated_tokens)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        record = TraceRecord(
            agent=step.agent, round=step.round, action=step.action, device=str(device),
            wall_s=time.perf_counter() - t0, batch_size=len(questions), prompt_tokens=prompt.tokens,
            latent_steps=m if step.latent else 0, generated_tokens=generated, peak_mem_bytes=_peak_mem(device),
            tool_calls=tool_calls,
        )
        self.registry.call_hook("recmas_after_pass", system=self, step=step, record=record.as_dict())
        return record

    def _decode_answer(self, agent: Agent, prompt: PromptBatch, generation: GenerationOptions,
                       generator: list[torch.Generator] | None,
                       tool_choice: str) -> tuple[list[str], list[int], list[dict[str, Any]]]:
        tools = getattr(agent, "tools", None)
        if not tools:
            decoded = agent.decode(prompt, generation, generator=generator)
            return decoded.texts, decoded.generated_tokens, []
        from .tools import run_tool_loop

        answers, counts, calls = [], [], []
        for i in range(prompt.embeds.shape[0]):
            single = PromptBatch(prompt.embeds[i : i + 1], prompt.mask[i : i + 1], [prompt.lengths[i]])
            used = [0]

            gen_i = [generator[i]] if generator is not None else None

            def generate(continuation: str, stop: list[str], _single: PromptBatch = single,
                         _gen: list[torch.Generator] | None = gen_i) -> str:
                remaining = generation.max_new_tokens - used[0]  # one token budget for the whole answer
                if remaining <= 0:
                    return ""
                opts = GenerationOptions(remaining, generation.do_sample, generation.temperature,
                                         generation.top_p, tuple(stop))
                new, n = agent.continue_text(_single, continuation, opts, _gen)
                used[0] += n
                return new

            prefix = ""
            if tool_choice == "required":
                first = next(iter(tools))
                prefix = "```python\n" if first == "python" else f'<tool name="{first}">'
            transcript = run_tool_loop(generate, tools, max_calls=agent.max_tool_calls,
                                       max_seconds=agent.max_tool_seconds, prefix=prefix)
            answers.append(transcript.text)
            counts.append(used[0])
            for call in transcript.calls:
                calls.append({"sample": i, "name": call.name, "arguments": call.arguments,
                              "ok": call.result.ok, "output": call.result.output, "error": call.result.error,
                              "elapsed_s": call.elapsed_s})
        return answers, counts, calls


def _calibrate(link: nn.Module, weights: str | None, loaded: Any, target: Any) -> None:
    """Prepare a link without weights: fit a training-free link (``calibrate``), or match the
    output scale of a random one to the target model's token embeddings (``match_output_rms``)."""
    if weights is not None:
        return
    if hasattr(link, "calibrate"):
        link.calibrate(loaded)
    elif hasattr(link, "match_output_rms"):
        link.match_output_rms(embedding_rms(target))


def embedding_rms(loaded: Any, sample: int = 4096) -> float:
    """RMS per element of the model's input embeddings (as its embedding module outputs them)."""
    embed = loaded.model.get_input_embeddings()
    n = min(sample, embed.weight.shape[0])
    ids = torch.linspace(0, embed.weight.shape[0] - 1, n, device=embed.weight.device).long()
    with torch.no_grad():
        vectors = embed(ids).float()  # (n, H); Gemma's module includes its sqrt(H) scaling
    return float(vectors.pow(2).mean().sqrt())


def _check_weight_files(spec: TopologySpec, base: Path | None) -> None:
    """Every weights file named by the spec exists (checked before any model loads)."""
    from .links import resolve_weights_path

    missing = []
    for agent in spec.agents:
        if agent.inner_link.weights is not None:
            path = resolve_weights_path(agent.inner_link.weights, base)
            if not path.exists():
                missing.append(f"agent {agent.name!r} inner_link: {path}")
    for edge in spec.edges:
        if edge.medium == "latent" and edge.link.weights is not None:
            path = resolve_weights_path(edge.link.weights, base)
            if not path.exists():
                missing.append(f"edge {edge.label}: {path}")
    if missing:
        raise RunError("link weights file(s) not found:\n  " + "\n  ".join(missing), culprit=spec.name,
                       hint="fix the \"weights\" paths (relative paths are relative to the topology file), "
                            "or set them to null for random initialisation")


def _attach_tools(system: RecursiveSystem) -> None:
    """Give agents that list tools their registered tool objects and the tool prompt."""
    tools_table = system.registry.tools
    for agent in system.agents.values():
        names = agent.spec.tools
        agent.tools = {}
        agent.max_tool_calls = 4
        agent.max_tool_seconds = 60.0
        if not names:
            continue  # unknown names were refused by validation (builtin recmas_validate_topology)
        agent.tools = {n: tools_table[n] for n in names}
        from .tools import TOOL_PROMPT

        agent.extra_instructions = TOOL_PROMPT(list(agent.tools.values()))
