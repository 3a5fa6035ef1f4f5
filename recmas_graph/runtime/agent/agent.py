"""An agent: a frozen causal LM with a role, its prompts, its latent rollout and its decoding.

The agent holds no trainable state: its inner link lives in the system's ``inner_links`` and is
passed in. Several agents may share one :class:`~recmas_graph.runtime.sources.LoadedModel`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from ...errors import RunError
from ...topology.roles import Role
from ...topology.spec import AgentSpec
from .decoding import DecodeResult, GenerationOptions, answer_end_id, decode, eos_token_ids
from .forward import backbone_of
from .loss import answer_nll, answer_tokens
from .prompts import PromptBatch, Prompter
from .rollout import latent_rollout
from .texts import tool_note
from .tooluse import ToolPolicy, decode_with_tools

__all__ = ["Agent"]


class Agent:
    """One agent of a system: its spec, model, role, prompts and tools (``tools``: a :class:`ToolPolicy`)."""

    def __init__(self, spec: AgentSpec, loaded: Any, role: Role, *, tools: ToolPolicy | None = None,
                 system_prompt: str | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.role = role
        self.tools = tools
        self._system_prompt = system_prompt
        self._note = tool_note(role, tools.tools, tools.max_calls) if tools else ""
        #: Low-memory mode: called with this agent when its model is needed while it is not loaded.
        self.reload: Callable[["Agent"], None] | None = None
        self.ref: str = loaded.ref
        self.tokenizer = loaded.tokenizer
        self.hidden_size: int = loaded.hidden_size
        self.eos_ids = eos_token_ids(loaded.model, self.tokenizer)
        self._device, self._dtype = loaded.device, loaded.dtype
        self._loaded: Any = None
        self.attach(loaded)

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, role={self.role.name!r}, model={self.ref!r})"

    # ------------------------------------------------------------------ the model, loaded or not
    def attach(self, loaded: Any) -> None:
        """Give the agent its loaded model (again, in low-memory mode)."""
        self._loaded = loaded
        self._device, self._dtype = loaded.device, loaded.dtype
        self._prompter = Prompter(loaded, self.role, system_prompt=self._system_prompt, note=self._note)
        self._backbone = backbone_of(loaded.model)

    def detach(self) -> None:
        """Drop the agent's references to its model (low-memory mode frees it; :meth:`load` reloads it)."""
        self._loaded = self._prompter = self._backbone = None

    @property
    def resident(self) -> bool:
        """Whether the agent's model is loaded."""
        return self._loaded is not None

    def load(self) -> Any:
        """The agent's :class:`~recmas_graph.runtime.sources.LoadedModel`, loaded again from its
        source when low-memory mode freed it (seconds to minutes: call it where a pass needs the model)."""
        if self._loaded is None:
            if self.reload is None:
                raise RunError("this agent's model was freed and nothing reloads it", culprit=f"agent {self.name!r}",
                               hint="attach() a loaded model, or build the system with low_memory=True")
            self.reload(self)
        return self._loaded

    @property
    def loaded(self) -> Any:
        """The agent's loaded model, while it is resident (no loading: see :meth:`load`). What is
        known without the model (``hidden_size``, ``device``, ``dtype``, ``ref``) is on the agent."""
        if self._loaded is None:
            raise RunError("this agent's model is not loaded (low-memory mode freed it)", culprit=f"agent {self.name!r}",
                           hint="call agent.load() where the model is needed; agent.hidden_size, .device and .dtype "
                                "are known without it")
        return self._loaded

    # the compute parts of a pass: low-memory mode loads the model when a pass asks for them
    @property
    def model(self) -> Any:
        """The frozen causal LM (loaded when it was freed)."""
        return self.load().model

    @property
    def prompter(self) -> Prompter:
        """Builds this agent's prompts (the model is loaded when it was freed)."""
        self.load()
        return self._prompter

    @property
    def backbone(self) -> Any:
        """The model's transformer body (hidden states, no LM head; loaded when it was freed)."""
        self.load()
        return self._backbone

    @property
    def device(self) -> torch.device:
        """Device of the model's input embeddings (known while the model is freed)."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's input embeddings (known while the model is freed)."""
        return self._dtype

    # ------------------------------------------------------------------ prompts
    def render(self, question: str, task: str, filled: Sequence[str], text_slots: Mapping[str, str],
               senders: Mapping[str, str] | None = None, *, round: int = 1, rounds: int | None = None) -> str:  # noqa: A002
        """The full prompt text with latent slot markers (see :meth:`Prompter.render`)."""
        return self.prompter.render(question, task, filled, text_slots, senders, round=round, rounds=rounds)

    def build_prompts(self, questions: Sequence[str], task: str, latent: Mapping[str, torch.Tensor] | None = None,
                      text: Mapping[str, Sequence[str]] | None = None, senders: Mapping[str, str] | None = None,
                      order: Sequence[str] | None = None, *, round: int = 1,  # noqa: A002
                      rounds: int | None = None, fields: Sequence[Mapping[str, str]] | None = None) -> PromptBatch:
        """Left-padded prompt embeddings with the messages spliced in (see :meth:`Prompter.build`)."""
        return self.prompter.build(questions, task, latent, text, senders, order, round=round, rounds=rounds,
                                   fields=fields)

    # ------------------------------------------------------------------ thinking and answering
    def think(self, prompt: PromptBatch, steps: int, inner: nn.Module, *, use_cache: bool = True,
              checkpoint: bool = False) -> torch.Tensor:
        """Latent thoughts (B, steps, H) after ``prompt`` (see :func:`~recmas_graph.runtime.agent.rollout.latent_rollout`).

        ``checkpoint`` (with autograd on): keep no activations of the frozen model; the rollout is
        run again during the backward pass (gradient checkpointing, about one more forward).
        """
        if checkpoint and torch.is_grad_enabled():
            def rollout(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                return latent_rollout(self.backbone, inner, PromptBatch(embeds, mask, prompt.lengths), steps,
                                      use_cache=use_cache)
            return torch_checkpoint(rollout, prompt.embeds, prompt.mask, use_reentrant=False)
        return latent_rollout(self.backbone, inner, prompt, steps, use_cache=use_cache)

    def decode(self, prompt: PromptBatch, options: GenerationOptions, *, seeds: Sequence[int], stream: int = 0,
               tool_choice: str = "auto", use_tools: bool = False,
               on_text: Callable[[int, str], None] | None = None) -> DecodeResult:
        """Decode text after ``prompt``; with ``use_tools`` (and tools) through the tool loop.

        ``on_text(row, delta)`` receives each row's text as it is decoded (not through the tool
        loop, whose transcript holds tool output: there it gets each row's whole text at the end).
        """
        if use_tools and self.tools:
            result = decode_with_tools(self.model, self.prompter, prompt, options, self.tools, seeds=seeds,
                                       stream=stream, eos_ids=self.eos_ids, tool_choice=tool_choice)
            if on_text is not None:
                for row, text in enumerate(result.texts):
                    if text:
                        on_text(row, text)
            return result
        return decode(self.model, self.tokenizer, prompt, options, seeds=seeds, stream=stream, eos_ids=self.eos_ids,
                      on_text=on_text)

    def answer_loss(self, prompt: PromptBatch, answers: Sequence[str], *,
                    checkpoint: bool = False) -> tuple[torch.Tensor, int]:
        """Teacher-forced mean NLL of ``answers`` (each ended by the chat template's end-of-turn token,
        else the end-of-sequence token) after ``prompt``, and the number of answer tokens.
        ``checkpoint``: recompute the scoring forward pass in backward instead of keeping it."""
        eos = answer_end_id(self.tokenizer)
        if checkpoint and torch.is_grad_enabled():
            def score(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                return answer_nll(self.model, self.tokenizer, PromptBatch(embeds, mask, prompt.lengths), answers,
                                  eos_id=eos)[0]
            loss = torch_checkpoint(score, prompt.embeds, prompt.mask, use_reentrant=False)
            return loss, answer_tokens(self.tokenizer, answers, eos)
        return answer_nll(self.model, self.tokenizer, prompt, answers, eos_id=eos)
