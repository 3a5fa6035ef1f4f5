"""What the two training loops minimise.

- :class:`InnerObjective` (the inner loop): for every agent, its inner link maps the frozen
  model's last hidden state ``h_t`` on that agent's target text to the next token's input
  embedding, scored by :func:`~recmas_graph.train.losses.link_loss`; the agents' losses are
  averaged. Only the inner links get gradients (the model runs under ``no_grad``).
- :class:`AnswerObjective` (the outer loop): the whole system unrolled for its rounds, scored by
  ``system.answer_loss`` (teacher-forced cross-entropy of the output agent's answer), which
  back-propagates through every round into every outer link.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .data import TrainSample
from .losses import MSE_WEIGHT, link_loss

__all__ = ["InnerObjective", "AnswerObjective", "default_targets"]


def default_targets(system: Any, sample: TrainSample | None = None) -> dict[str, str]:
    """Which text each agent's inner link trains on: the output agent's ``answer``; another agent
    its own name's field, else its role's (``plan``, ``refined_plan``, ...), else the answer."""
    spec = system.spec
    out: dict[str, str] = {}
    for agent in spec.agents:
        if agent.name == spec.output:
            out[agent.name] = "answer"
            continue
        fields = sample.targets if sample is not None else {}
        out[agent.name] = agent.name if agent.name in fields else (agent.role if agent.role in fields else "answer")
    return out


class InnerObjective:
    """The inner loop's loss over a batch of samples (see the module docstring)."""

    def __init__(self, system: Any, *, targets: Mapping[str, str] | None = None, max_tokens: int = 256,
                 mse_weight: float = MSE_WEIGHT) -> None:
        self.system, self.max_tokens, self.mse_weight = system, max_tokens, mse_weight
        self.targets = dict(targets) if targets is not None else None

    def _field(self, agent: str, sample: TrainSample) -> str:
        if self.targets is not None and agent in self.targets:
            return self.targets[agent]
        return default_targets(self.system, sample)[agent]

    def __call__(self, batch: Sequence[TrainSample]) -> tuple[torch.Tensor, int]:
        from ..runtime.forward import backbone_of
        from ..runtime.rollout import apply_link

        losses, tokens = [], 0
        for name, agent in self.system.agents.items():
            texts = [s.text(self._field(name, s)) for s in batch]
            tok = agent.tokenizer
            rows = [tok(t, truncation=True, max_length=self.max_tokens).input_ids for t in texts]
            width = max(len(r) for r in rows)
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=agent.device)  # (B, T)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=agent.device)  # (B, T)
            with torch.no_grad():
                hidden = backbone_of(agent.model)(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
                target = agent.model.get_input_embeddings()(ids[:, 1:])  # (B, T-1, H)
            valid = (mask[:, 1:] * mask[:, :-1]).bool()  # (B, T-1): h_t and x_{t+1} both real tokens
            pred = apply_link(self.system.inner_links[name], hidden[:, :-1][valid])  # (N, H)
            losses.append(link_loss(pred, target[valid].to(pred.device), mse_weight=self.mse_weight))
            tokens += int(valid.sum())
        return torch.stack(losses).mean(), tokens


class AnswerObjective:
    """The outer loop's loss over a batch: ``system.answer_loss`` on the samples' answers."""

    def __init__(self, system: Any, *, task: str = "math", rounds: int | None = None,
                 latent_steps: int | None = None, text_message_tokens: int = 256) -> None:
        self.system, self.task, self.rounds, self.latent_steps = system, task, rounds, latent_steps
        self.text_message_tokens = text_message_tokens

    def __call__(self, batch: Sequence[TrainSample]) -> tuple[torch.Tensor, int]:
        answers = [s.answer for s in batch]
        loss = self.system.answer_loss([s.question for s in batch], answers, task=self.task, rounds=self.rounds,
                                       latent_steps=self.latent_steps, text_message_tokens=self.text_message_tokens)
        tok = self.system.agents[self.system.spec.output].tokenizer
        return loss, sum(len(tok(a, add_special_tokens=False).input_ids) + 1 for a in answers)
