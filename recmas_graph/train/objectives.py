"""What the two training loops minimise.

- :class:`InnerObjective` (the inner loop): for every agent, its inner link maps the frozen
  model's last hidden state ``h_t`` on that agent's target text to the next token's input
  embedding, scored by :func:`~recmas_graph.train.losses.link_loss`; the agents' losses are
  averaged. Only the inner links get gradients (the model runs under ``no_grad``).
- :class:`AnswerObjective` (the outer loop): the whole system unrolled for its rounds, scored by
  ``system.answer_loss`` (teacher-forced cross-entropy of the output agent's answer), which
  back-propagates through every round into every outer link; optionally plus weighted losses of
  intermediate agents on their own target texts (``plan``, ``refined_plan``), as the paper does.

Each also states its loss as :class:`~recmas_graph.train.parallel.LossTerms` (``terms(batch)``:
sums over the samples over denominators without gradient), which data-parallel workers add up
into the one-process loss of the whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import RunError
from ..runtime.options import RunOptions
from .data import TrainSample
from .losses import MSE_WEIGHT, link_loss
from .parallel import LossTerms

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["ROLE_FIELDS", "InnerObjective", "AnswerObjective", "default_targets", "target_field"]


#: The official training data's field of each role's target text (``{question, plan, refined_plan, answer}``).
ROLE_FIELDS: dict[str, str] = {"planner": "plan", "refiner": "refined_plan", "critic": "refined_plan"}


def _fields(agent: Any) -> tuple[str, ...]:
    """Where an agent's target text may be, in order: its name, its role (without a ``set:`` prefix), the
    official field of that role."""
    role = agent.role.rsplit(":", 1)[-1]
    return tuple(dict.fromkeys(f for f in (agent.name, role, ROLE_FIELDS.get(role)) if f))


def default_targets(system: RecursiveSystem, sample: TrainSample | None = None) -> dict[str, str]:
    """Which text each agent's inner link trains on: the output agent's ``answer``; another agent
    the first field of its name, its role or its role's official field (``plan``, ``refined_plan``)
    that ``sample`` has, else the answer."""
    spec = system.spec
    out: dict[str, str] = {}
    fields = sample.targets if sample is not None else {}
    for agent in spec.agents:
        found = [f for f in _fields(agent) if f in fields] if agent.name != spec.output else []
        out[agent.name] = found[0] if found else "answer"
    return out


class InnerObjective:
    """The inner loop's loss over a batch of samples (see the module docstring)."""

    def __init__(self, system: RecursiveSystem, *, targets: Mapping[str, str] | None = None, max_tokens: int = 256,
                 mse_weight: float = MSE_WEIGHT) -> None:
        self.system, self.max_tokens, self.mse_weight = system, max_tokens, mse_weight
        self.targets = dict(targets) if targets is not None else None

    def _field(self, agent: str, sample: TrainSample) -> str:
        if self.targets is not None and agent in self.targets:
            return self.targets[agent]
        return default_targets(self.system, sample)[agent]

    def __call__(self, batch: Sequence[TrainSample]) -> tuple[torch.Tensor, int]:
        losses, tokens = [], 0
        for pred, target in self._pairs(batch):
            losses.append(link_loss(pred, target, mse_weight=self.mse_weight))
            tokens += pred.shape[0]
        return torch.stack(losses).mean(), tokens

    def terms(self, batch: Sequence[TrainSample]) -> LossTerms:
        """The loss of :meth:`__call__` as sums over positions: per agent, ``sum(1 - cos) / positions``
        and ``mse_weight * sum((pred - target)^2) / sum(target^2)``, each weighted by 1 / agents."""
        pairs = self._pairs(batch)
        out = LossTerms()
        for pred, target in pairs:
            pred, target = pred.float(), target.float()  # (N, H)
            cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1)  # (N,)
            out.add((1 - cos).sum(), pred.shape[0], 1 / len(pairs))
            out.add((pred - target).pow(2).sum(), float(target.pow(2).sum()), self.mse_weight / len(pairs))
            out.tokens += pred.shape[0]
        return out

    def _pairs(self, batch: Sequence[TrainSample]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per agent: its inner link's outputs ``(N, H)`` at every real position and their targets ``(N, H)``."""
        from ..runtime.agent.forward import backbone_of
        from ..runtime.agent.rollout import apply_link

        pairs = []
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
            pairs.append((pred, target[valid].to(pred.device)))
        return pairs


def target_field(system: RecursiveSystem, agent: str, sample: TrainSample) -> str:
    """The field of ``sample`` that holds ``agent``'s target text (see :func:`default_targets`)."""
    names = _fields(next(a for a in system.spec.agents if a.name == agent))
    for name in names:
        if name in sample.targets:
            return name
    fields = ", ".join(sorted(sample.targets)) or "none besides question and answer"
    raise RunError(f"sample {sample.id!r} has no target text for agent {agent!r} (a field "
                   f"{' or '.join(map(repr, names))})", culprit=f"--target-weight {agent}",
                   hint=f"its extra fields: {fields}; or drop the weight")


class AnswerObjective:
    """The outer loop's loss over a batch: ``system.answer_loss`` on the samples' answers, plus
    ``weights[agent]`` times each weighted agent's teacher-forced loss on its own target text (its
    name's or its role's field: ``plan``, ``refined_plan``) in the last round it runs.

    ``checkpoint`` recomputes the frozen models' passes in backward (gradient checkpointing).
    """

    def __init__(self, system: RecursiveSystem, options: RunOptions | None = None, *, weights: Mapping[str, float] | None = None,
                 checkpoint: bool = False, **run_options: Any) -> None:
        self.system, self.checkpoint = system, checkpoint
        self.options = RunOptions.of(options, **run_options)  # task, rounds, latent_steps, text_message_tokens
        self.weights = {k: float(v) for k, v in (weights or {}).items() if float(v) != 0.0}
        names = {a.name for a in system.spec.agents}
        for agent, weight in self.weights.items():
            if agent not in names or agent == system.spec.output:
                others = ", ".join(sorted(names - {system.spec.output})) or "none"
                raise RunError(f"no intermediate agent {agent!r} to weight", culprit=f"--target-weight {agent}",
                               hint=f"intermediate agents: {others} (the output agent's loss is the answer's)")
            if weight < 0:
                raise RunError(f"the target weight of {agent!r} must not be negative, got {weight}",
                               culprit=f"--target-weight {agent}")

    def __call__(self, batch: Sequence[TrainSample]) -> tuple[torch.Tensor, int]:
        losses = self._losses(batch)
        output = self.system.spec.output
        loss, tokens = losses[output]
        for agent, weight in self.weights.items():
            loss = loss + weight * losses[agent][0]
        return loss, tokens

    def terms(self, batch: Sequence[TrainSample]) -> LossTerms:
        """The loss of :meth:`__call__` as sums over tokens: the answer's summed NLL over its tokens,
        plus each weighted agent's summed NLL over its own tokens, times its weight."""
        losses = self._losses(batch)
        loss, tokens = losses[self.system.spec.output]
        out = LossTerms(tokens=tokens)
        out.add(loss * tokens, tokens)
        for agent, weight in self.weights.items():
            mean, n = losses[agent]
            out.add(mean * n, n, weight)
        return out

    def _losses(self, batch: Sequence[TrainSample]) -> dict[str, tuple[torch.Tensor, int]]:
        answers = [s.answer for s in batch]
        targets = {agent: [s.text(target_field(self.system, agent, s)) for s in batch] for agent in self.weights}
        losses = self.system.target_losses([s.question for s in batch], answers, targets, self.options,
                                           checkpoint=self.checkpoint,
                                           grad=torch.is_grad_enabled())  # validation runs under no_grad
        return losses
