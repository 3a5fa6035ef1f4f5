"""What a run returns: the answers, one trace row per (agent, round) pass, and (when kept) the messages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["TraceRecord", "RunResult"]


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
    start_s: float = 0.0  # when the pass started, in seconds from the start of its run
    reused_tokens: int = 0  # prompt positions taken from an earlier pass's cached prefix, not computed

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


@dataclass
class RunResult:
    """Answers of a run over a batch, the trace, and what ``keep_messages`` kept.

    ``messages[(edge_id, source_round)]`` is a latent message (B, m, H_target) on the CPU,
    ``texts[(edge_id, source_round)]`` a text message (one string per question) and
    ``thoughts[(agent, round)]`` an agent's latent thoughts (B, m, H) on the CPU. Text messages
    are always kept (they are small and tell what the agents said). ``generated_tokens`` counts each
    answer's tokens; ``question_tokens`` every token generated for the question (text messages too).
    """

    questions: list[str]
    answers: list[str]
    generated_tokens: list[int]
    trace: list[TraceRecord]
    wall_s: float
    messages: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    texts: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    thoughts: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    loss: torch.Tensor | None = None
    target_losses: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict)  # agent -> (loss, tokens)
    question_tokens: list[int] = field(default_factory=list)  # every token generated for each question
    scores: list[list[Any]] | None = None  # a score's ContinuationScore per question and continuation

    @property
    def latent_steps(self) -> int:
        """Latent steps run for each question (all passes together)."""
        return sum(r.latent_steps for r in self.trace)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """Every tool call of the run (each with its ``sample`` index), in pass order."""
        return [call for record in self.trace for call in record.tool_calls]
