"""Backends: what runs one scheduled pass. The executor walks the waves; a :class:`PassRunner` runs passes.

A pass is fully described by a :class:`PassRequest` (the pass, the run's settings and the messages
it reads, plain tensors and strings) and answered by a :class:`PassResult` (the messages it sends,
keyed by edge id, its trace row and, for the decode pass, the answers or the loss). Both are plain
data, so a runner may execute passes in other processes or on other hosts.
:class:`InProcessRunner` runs them here, with a system's own agents and links.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ..topology.schedule import Pass
from .decoding import GenerationOptions, decode, stream_id
from .memory import PeakMemory
from .messages import Message
from .oom import out_of_memory
from .prompts import left_pad
from .results import TraceRecord

if TYPE_CHECKING:  # pragma: no cover
    from .system import RecursiveSystem

__all__ = ["RunSettings", "PassRequest", "PassResult", "PassRunner", "InProcessRunner"]


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class PassRequest:
    """One pass to run: the scheduled ``step``, the run's ``settings`` and the ``messages`` it reads
    (by ``(edge id, source round)``)."""

    step: Pass
    settings: RunSettings
    messages: dict[tuple[str, int], Message]


@dataclass
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


def _in_mode(fn: Any, inference: bool, grad: bool) -> Any:
    """Run ``fn`` in a worker thread with the caller's autograd mode (it is thread-local)."""
    def call(*args: Any) -> Any:
        if inference:
            with torch.inference_mode():
                return fn(*args)
        with torch.set_grad_enabled(grad):
            return fn(*args)
    return call


class InProcessRunner:
    """Runs passes in this process with ``system``'s agents and links.

    Passes of one wave that sit on different CUDA devices run at the same time, in threads.
    """

    def __init__(self, system: "RecursiveSystem") -> None:
        self.system = system

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
        return [self.run_pass(r) for r in requests]

    def continue_texts(self, agent: str, texts: Sequence[str], options: GenerationOptions, *,
                       seeds: Sequence[int], stream: int) -> list[str]:
        """Decode after each of ``texts`` with ``agent``'s model alone (tokenized as plain text)."""
        model = self.system.agents[agent]
        embed = model.model.get_input_embeddings()
        with torch.inference_mode():
            rows = [embed(torch.tensor(model.tokenizer(t).input_ids, device=embed.weight.device)) for t in texts]
            return decode(model.model, model.tokenizer, left_pad(rows), options, seeds=seeds, stream=stream,
                          eos_ids=model.eos_ids).texts

    def run_pass(self, request: PassRequest) -> PassResult:
        """Build the agent's prompt from its inputs, then think, decode or score as the pass requires."""
        agent = self.system.agents[request.step.agent]
        try:
            with PeakMemory(agent.device) as peak:
                result = self._run_pass(request, agent)
        except Exception as err:
            oom = out_of_memory(err, agent=request.step.agent, round=request.step.round, device=str(agent.device),
                                batch_size=len(request.settings.questions))
            if oom is None or oom is err:
                raise
            raise oom from err
        result.record.peak_mem_bytes = peak.bytes  # CUDA: the device's peak; CPU: the increase during the pass
        return result

    def _run_pass(self, request: PassRequest, agent: Any) -> PassResult:
        step, s = request.step, request.settings
        system = self.system
        device = agent.device
        t0 = time.perf_counter()
        latent: dict[str, torch.Tensor] = {}
        text: dict[str, list[str]] = {}
        senders: dict[str, str] = {}
        order: list[str] = []
        for item in step.inputs:
            value = request.messages[item.key]
            senders[item.slot] = item.source
            order.append(item.slot)
            if item.medium == "latent":
                latent[item.slot] = value  # (B, m, H_agent)
            else:
                text[item.slot] = list(value)
        prompt = agent.build_prompts(s.questions, s.task, latent, text, senders, order, round=step.round,
                                     rounds=s.rounds, fields=s.fields or None)
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
                                   tool_choice=s.tool_choice, use_tools=True)
            answers, counts, tool_calls = decoded.texts, decoded.generated_tokens, decoded.tool_calls
            generated = sum(counts)
            rows = [a + b for a, b in zip(rows, counts)]
        if step.latent:
            thoughts = agent.think(prompt, s.latent_steps, system.inner_links[step.agent], use_cache=s.use_cache,
                                   checkpoint=s.checkpoint)
            for edge_id in step.outputs:
                if system.compiled.edge(edge_id).medium == "latent":
                    messages[edge_id] = system.latent_message(edge_id, thoughts)  # (B, m, H_target)
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
        )
        return PassResult(messages, record, answers, counts, thoughts if s.keep_thoughts else None, loss, loss_tokens,
                          rows, target_loss)
