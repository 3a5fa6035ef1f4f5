"""Backends: what runs one scheduled pass. The executor walks the waves; a :class:`PassRunner` runs passes.

A pass is fully described by a :class:`PassRequest` (the pass, the run's settings and the messages
it reads, plain tensors and strings) and answered by a :class:`PassResult` (the messages it sends,
keyed by edge id, its trace row and, for the decode pass, the answers or the loss). Both are plain
data, so a runner may execute passes in other processes or on other hosts.
:class:`InProcessRunner` runs them here, with a system's own agents and links.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from ...topology.schedule import Pass
from ..agent.decoding import GenerationOptions, decode, stream_id
from ..memory.peak import PeakMemory
from .messages import Message
from ..memory.oom import OutOfMemory, free_cached_memory, raise_out_of_memory
from ..agent.prefix import PrefixCache
from ..agent.prompts import OUTPUT_SYSTEM_FIELD, PromptBatch, left_pad
from .results import TraceRecord
from ..agent.scoring import ContinuationScore, score_continuations

if TYPE_CHECKING:  # pragma: no cover
    from ..system import RecursiveSystem

__all__ = ["RunSettings", "PassRequest", "PassResult", "PassRunner", "Streams", "InProcessRunner", "RowLinks", "stack_prompts"]


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What every pass of one run shares: the questions and how to think and decode."""

    questions: tuple[str, ...]
    task: str = "math"
    latent_steps: int = 32
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    seeds: tuple[int, ...] = ()
    text_message_tokens: int = 256
    tool_choice: str = "auto"
    use_cache: bool = True
    targets: tuple[str, ...] | None = None  # answer_loss: the answers the decode pass is scored on
    keep_thoughts: bool = False
    rounds: int = 1
    fields: tuple[dict[str, str], ...] = ()  # each question's own template fields (fn_name)
    # target_losses: (agent, round) -> texts that pass is scored on besides thinking (intermediate targets)
    agent_targets: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)
    checkpoint: bool = False  # training: recompute each rollout and scored pass in backward (less memory)
    reuse_prefix: bool = True  # start a prefill from the KV of a prefix an earlier pass of the run computed
    # score: each question's continuations, teacher-forced after the decode pass's prompt instead of decoding
    continuations: tuple[tuple[str, ...], ...] | None = None


@dataclass(frozen=True)
class PassRequest:
    """One pass to run: the scheduled ``step``, the run's ``settings`` and the ``messages`` it reads
    (by ``(edge id, source round)``)."""

    step: Pass
    settings: RunSettings
    messages: dict[tuple[str, int], Message]


@dataclass(kw_only=True)
class PassResult:
    """What a pass produced: ``messages`` by edge id, its trace ``record``; the decode pass adds
    ``answers`` and ``generated_tokens`` (or ``loss`` when scoring targets)."""

    messages: dict[str, Message]
    record: TraceRecord
    answers: list[str] | None = None
    generated_tokens: list[int] | None = None
    thoughts: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    loss_tokens: int = 0
    row_tokens: list[int] | None = None  # tokens generated for each question in this pass (text and answer)
    target_loss: tuple[torch.Tensor, int] | None = None  # an intermediate agent's target loss and its tokens
    scores: list[list[ContinuationScore]] | None = None  # the decode pass of a score: per question, per continuation


class PassRunner(Protocol):
    """A backend: runs one pass (``run_pass``), and the independent passes of a wave (``run_wave``,
    possibly at the same time), returning their results in order."""

    def run_pass(self, request: PassRequest) -> PassResult:
        """Run one pass."""

    def run_wave(self, requests: Sequence[PassRequest]) -> list[PassResult]:
        """Run independent passes; the results are in the order of ``requests``."""

    def continue_texts(self, agent: str, texts: Sequence[str], options: GenerationOptions, *,
                       seeds: Sequence[int], stream: int) -> list[str]:
        """What ``agent``'s model writes after each plain text (no template, no messages): the retry."""

    # Optional: ``begin_run(settings)`` before a run's first wave and ``end_run()`` after its last
    # (the executor calls them when a runner has them), for state that lives for one run.


@runtime_checkable
class Streams(Protocol):
    """A runner that can stream the answer text: ``RecursiveSystem.run(on_text=...)`` sets
    :attr:`on_text` for one run. It is runner state, not a :class:`RunSettings` field, because the
    settings are plain data sent to other processes and a callback is not."""

    on_text: Callable[[int, str], None] | None


def _in_mode(fn: Any, inference: bool, grad: bool) -> Any:
    """Run ``fn`` in a worker thread with the caller's autograd mode (it is thread-local)."""
    def call(*args: Any) -> Any:
        if inference:
            with torch.inference_mode():
                return fn(*args)
        with torch.set_grad_enabled(grad):
            return fn(*args)
    return call


def stack_prompts(prompts: Sequence[PromptBatch]) -> PromptBatch:
    """Prompt batches of one model stacked into one, left-padded to the longest: (sum B_i, T, H)."""
    T = max(p.embeds.shape[1] for p in prompts)
    embeds, masks, lengths = [], [], []
    for p in prompts:
        pad = T - p.embeds.shape[1]
        embeds.append(torch.nn.functional.pad(p.embeds, (0, 0, pad, 0)))  # (B_i, T, H), zeros on the left
        masks.append(torch.nn.functional.pad(p.mask, (pad, 0)))  # (B_i, T)
        lengths += p.lengths
    known = all(p.prefix_ids is not None for p in prompts)
    prefix_ids = [ids for p in prompts for ids in (p.prefix_ids or [])] if known else None
    return PromptBatch(torch.cat(embeds), torch.cat(masks), lengths, prefix_ids, prompts[0].reuse)


class RowLinks(nn.Module):
    """Several links side by side: rows ``sizes[0]`` of a batch through ``links[0]``, the next
    ``sizes[1]`` through ``links[1]``, ... (B, ..., H) -> (B, ..., H')."""

    def __init__(self, links: Sequence[nn.Module], sizes: Sequence[int]) -> None:
        super().__init__()
        self.links = nn.ModuleList(links)
        self.sizes = list(sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each block of rows through its own link."""
        return torch.cat([link(part) for link, part in zip(self.links, torch.split(x, self.sizes))])


class InProcessRunner:
    """Runs passes in this process with ``system``'s agents and links.

    Passes of one wave that sit on different CUDA devices run at the same time, in threads.
    """

    def __init__(self, system: "RecursiveSystem", *, merge: bool = True) -> None:
        self.system = system
        #: Run the latent passes of a wave whose agents share one model as one batched pass
        #: (:meth:`mergeable`); their results are those of separate passes up to float rounding.
        self.merge = merge
        #: The current run's prompt prefixes per model (:mod:`.prefix`); None outside a run or when off.
        self.prefixes: PrefixCache | None = None
        #: Prompt positions the last run did not recompute thanks to :attr:`prefixes`.
        self.reused_tokens = 0
        #: Streaming: ``on_text(row, delta)`` receives the answer text of each question as the output
        #: agent decodes it (set for one run by ``RecursiveSystem.run(on_text=...)``).
        self.on_text: Callable[[int, str], None] | None = None

    def begin_run(self, settings: RunSettings) -> None:
        """Start a run: keep its prompt prefixes (unless turned off, recomputing, or in low-memory
        mode, where a model's reload would make its cached prefixes unreachable)."""
        keep = settings.reuse_prefix and settings.use_cache and self.system.residency is None
        self.prefixes = PrefixCache() if keep else None
        self.reused_tokens = 0

    def end_run(self) -> None:
        """End a run: free its prefixes."""
        if self.prefixes is not None:
            self.reused_tokens = self.prefixes.reused_tokens
            self.prefixes.clear()
        self.prefixes = None

    def mergeable(self, requests: Sequence[PassRequest]) -> list[list[int]]:
        """The wave's passes in groups run as one: latent-only passes (no text, decode or scored
        target, no checkpointing) of agents sharing one loaded model; every other pass alone."""
        groups: dict[int, list[int]] = {}
        alone: list[list[int]] = []
        for i, r in enumerate(requests):
            step, s = r.step, r.settings
            agent = self.system.agents[r.step.agent]
            plain = (step.latent and not step.text and not step.decode and not s.checkpoint
                     and (step.agent, step.round) not in s.agent_targets)
            if self.merge and plain and self.system.residency is None:
                groups.setdefault(id(agent.loaded), []).append(i)
            else:
                alone.append([i])
        return sorted(alone + list(groups.values()))

    def concurrent(self, requests: Sequence[PassRequest]) -> bool:
        """Whether to run ``requests`` at the same time: more than one, each on its own CUDA device."""
        if self.system.residency is not None:  # low-memory mode: one model at a time
            return False
        devices = [str(self.system.agents[r.step.agent].device) for r in requests]
        return len(devices) > 1 and len(set(devices)) == len(devices) and all(d.startswith("cuda") for d in devices)

    def run_wave(self, requests: Sequence[PassRequest]) -> list[PassResult]:
        """Run the passes of one wave (concurrently when they sit on different GPUs)."""
        if self.concurrent(requests):
            work = _in_mode(self.run_pass, torch.is_inference_mode_enabled(), torch.is_grad_enabled())
            with ThreadPoolExecutor(max_workers=len(requests)) as pool:
                return list(pool.map(work, requests))
        results: list[PassResult | None] = [None] * len(requests)
        for group in self.mergeable(requests):
            if len(group) == 1:
                results[group[0]] = self.run_pass(requests[group[0]])
            else:
                try:
                    merged = self.run_merged([requests[i] for i in group])
                except OutOfMemory:  # the stacked batch is larger than any one pass: run them one by one
                    free_cached_memory()
                    merged = [self.run_pass(requests[i]) for i in group]
                for i, result in zip(group, merged):
                    results[i] = result
        return [r for r in results if r is not None]

    def run_merged(self, requests: Sequence[PassRequest]) -> list[PassResult]:
        """Latent passes of agents sharing one model as one forward batch: the prompts stacked
        (left-padded to the longest), each row thinking with its own agent's inner link; one
        result per pass, in order (each trace row gets the share of the wall time of its prompt
        positions)."""
        system = self.system
        agents = [system.agents[r.step.agent] for r in requests]
        device = agents[0].device
        t0 = time.perf_counter()
        s = requests[0].settings
        with raise_out_of_memory(agent=", ".join(r.step.agent for r in requests), round=requests[0].step.round,
                                 device=str(device), batch_size=sum(len(r.settings.questions) for r in requests)):
            with PeakMemory(device) as peak:
                prompts = [self._prompt(r, a) for r, a in zip(requests, agents)]
                merged = stack_prompts(prompts)  # (sum B_i, T_max, H)
                links = RowLinks([system.inner_links[r.step.agent] for r in requests], [len(p.lengths) for p in prompts])
                if merged.reuse is not None:
                    merged.reuse.last = []
                thoughts = agents[0].think(merged, s.latent_steps, links, use_cache=s.use_cache)  # (sum B_i, m, H)
                reused = list(merged.reuse.last) if merged.reuse is not None else []
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
        total = sum(p.tokens for p in prompts) or 1
        results, start = [], 0
        for r, prompt in zip(requests, prompts):
            rows = len(prompt.lengths)
            mine = thoughts[start:start + rows]  # (B_i, m, H)
            start += rows
            messages: dict[str, Message] = self._latent_messages(r.step, mine)
            record = TraceRecord(
                agent=r.step.agent, round=r.step.round, action=r.step.action, device=str(device),
                wall_s=wall * prompt.tokens / total, batch_size=rows, prompt_tokens=prompt.tokens,
                latent_steps=s.latent_steps, generated_tokens=0, peak_mem_bytes=peak.bytes, start_s=t0,
                reused_tokens=sum(reused[start - rows:start]),
            )
            results.append(PassResult(messages=messages, record=record, thoughts=mine if s.keep_thoughts else None,
                                      row_tokens=[0] * rows))
        return results

    def continue_texts(self, agent: str, texts: Sequence[str], options: GenerationOptions, *,
                       seeds: Sequence[int], stream: int) -> list[str]:
        """Decode after each of ``texts`` with ``agent``'s model alone (tokenized as plain text)."""
        model = self.system.agents[agent]
        with raise_out_of_memory(agent=agent, device=str(model.device), batch_size=len(texts),
                                 low_memory=self.system.residency is not None):
            embed = model.model.get_input_embeddings()
            with torch.inference_mode():
                rows = [embed(torch.tensor(model.tokenizer(t).input_ids, device=embed.weight.device)) for t in texts]
                return decode(model.model, model.tokenizer, left_pad(rows), options, seeds=seeds, stream=stream,
                              eos_ids=model.eos_ids).texts

    def run_pass(self, request: PassRequest) -> PassResult:
        """Build the agent's prompt from its inputs, then think, decode or score as the pass requires."""
        agent = self.system.agents[request.step.agent]
        with raise_out_of_memory(agent=request.step.agent, round=request.step.round, device=str(agent.device),
                                 batch_size=len(request.settings.questions),
                                 low_memory=self.system.residency is not None):
            with PeakMemory(agent.device) as peak:
                result = self._run_pass(request, agent)
        result.record.peak_mem_bytes = peak.bytes  # CUDA: the device's peak; CPU: the increase during the pass
        return result

    def _latent_messages(self, step: Pass, thoughts: torch.Tensor) -> dict[str, Message]:
        """The messages of ``step``'s latent out-edges from its thoughts (B, m, H) -> (B, m, H_target) each."""
        system = self.system
        return {edge_id: system.latent_message(edge_id, thoughts) for edge_id in step.outputs
                if system.compiled.edge(edge_id).medium == "latent"}

    def _prompt(self, request: PassRequest, agent: Any, *, trim_end: bool = False) -> Any:
        """The agent's prompt batch for this pass, its messages spliced in (``trim_end``: as
        :meth:`~.prompts.Prompter.build`, for scoring continuations)."""
        step, s = request.step, request.settings
        latent: dict[str, torch.Tensor] = {}
        text: dict[str, list[str]] = {}
        senders: dict[str, str] = {}
        order: list[str] = []
        for item in step.inputs:
            value = request.messages[item.key]
            senders[item.slot] = item.source
            order.append(item.slot)
            if item.medium == "latent":
                assert isinstance(value, torch.Tensor), item.key  # the store holds what the edge's medium sends
                latent[item.slot] = value  # (B, m, H_agent)
            else:
                text[item.slot] = list(value)
        fields = s.fields
        if not step.decode and any(OUTPUT_SYSTEM_FIELD in f for f in fields):  # the output agent's alone
            fields = tuple({k: v for k, v in f.items() if k != OUTPUT_SYSTEM_FIELD} for f in fields)
        if trim_end:
            prompt = agent.prompter.build(s.questions, s.task, latent, text, senders, order, round=step.round,
                                          rounds=s.rounds, fields=fields or None, trim_end=True)
        else:
            prompt = agent.build_prompts(s.questions, s.task, latent, text, senders, order, round=step.round,
                                         rounds=s.rounds, fields=fields or None)
        if self.prefixes is not None:
            prompt.reuse = self.prefixes.of(agent.model)
        return prompt

    def _score_pass(self, request: PassRequest, agent: Any) -> PassResult:
        """The decode pass of a score: each question's continuations teacher-forced after its prompt
        (:func:`~.scoring.score_continuations`), nothing decoded."""
        step, s = request.step, request.settings
        t0 = time.perf_counter()
        prompt = self._prompt(request, agent, trim_end=True)
        reused_before = prompt.reuse.reused_tokens if prompt.reuse is not None else 0
        scores = score_continuations(agent.model, agent.tokenizer, prompt, s.continuations or ())
        if agent.device.type == "cuda":
            torch.cuda.synchronize(agent.device)
        record = TraceRecord(
            agent=step.agent, round=step.round, action=step.action, device=str(agent.device),
            wall_s=time.perf_counter() - t0, batch_size=len(s.questions), prompt_tokens=prompt.tokens,
            latent_steps=0, generated_tokens=0, peak_mem_bytes=0, start_s=t0,
            reused_tokens=prompt.reuse.reused_tokens - reused_before if prompt.reuse is not None else 0,
        )
        return PassResult(messages={}, record=record, scores=scores, row_tokens=[0] * len(s.questions))

    def _run_pass(self, request: PassRequest, agent: Any) -> PassResult:
        step, s = request.step, request.settings
        if step.decode and s.continuations is not None:
            return self._score_pass(request, agent)
        system = self.system
        device = agent.device
        t0 = time.perf_counter()
        prompt = self._prompt(request, agent)
        reused_before = prompt.reuse.reused_tokens if prompt.reuse is not None else 0
        messages: dict[str, Message] = {}
        answers = counts = thoughts = loss = None
        loss_tokens = generated = 0
        rows = [0] * len(s.questions)
        tool_calls: list[dict[str, Any]] = []
        target_loss = None
        if step.decode and s.targets is not None:
            loss, loss_tokens = agent.answer_loss(prompt, s.targets, checkpoint=s.checkpoint)
        elif (step.agent, step.round) in s.agent_targets:
            target_loss = agent.answer_loss(prompt, s.agent_targets[step.agent, step.round], checkpoint=s.checkpoint)
        elif step.decode:
            decoded = agent.decode(prompt, s.generation, seeds=s.seeds, stream=stream_id(step.agent, step.round, "decode"),
                                   tool_choice=s.tool_choice, use_tools=True, on_text=self.on_text)
            answers, counts, tool_calls = decoded.texts, decoded.generated_tokens, decoded.tool_calls
            generated = sum(counts)
            rows = [a + b for a, b in zip(rows, counts)]
        if step.latent:
            thoughts = agent.think(prompt, s.latent_steps, system.inner_links[step.agent], use_cache=s.use_cache,
                                   checkpoint=s.checkpoint)
            messages.update(self._latent_messages(step, thoughts))
        if step.text:
            options = replace(s.generation, max_new_tokens=s.text_message_tokens, stop=())
            decoded = agent.decode(prompt, options, seeds=s.seeds, stream=stream_id(step.agent, step.round, "text"))
            for edge_id in step.outputs:
                if system.compiled.edge(edge_id).medium == "text":
                    messages[edge_id] = decoded.texts
            generated += sum(decoded.generated_tokens)
            rows = [a + b for a, b in zip(rows, decoded.generated_tokens)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        record = TraceRecord(
            agent=step.agent, round=step.round, action=step.action, device=str(device),
            wall_s=time.perf_counter() - t0, batch_size=len(s.questions), prompt_tokens=prompt.tokens,
            latent_steps=s.latent_steps if step.latent else 0, generated_tokens=generated,
            peak_mem_bytes=0, tool_calls=tool_calls, start_s=t0,
            reused_tokens=prompt.reuse.reused_tokens - reused_before if prompt.reuse is not None else 0,
        )
        return PassResult(messages=messages, record=record, answers=answers, generated_tokens=counts,
                          thoughts=thoughts if s.keep_thoughts else None, loss=loss, loss_tokens=loss_tokens,
                          row_tokens=rows, target_loss=target_loss)
