"""Prompts and splicing: render an agent's prompt with slot markers, embed it, splice messages in.

A prompt is the role's user text (instruction, question, one section per slot that has a message),
wrapped in the tokenizer's chat template (thinking disabled) or, for tokenizers without one, in
:data:`PLAIN_PROMPT_FORMAT`. Latent slots stay as literal markers; the rendered text is split at
them, each text segment is embedded, and the message embeddings are concatenated in between
(docs/semantics.md). A batch is left-padded; everything stays differentiable with respect to the
messages, so a loss can reach the links that produced them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ...errors import RunError
from ...topology.roles import DEFAULT_SYSTEM_PROMPT, Role, slot_marker, split_at_markers

if TYPE_CHECKING:  # pragma: no cover
    from .prefix import ModelPrefixes

__all__ = ["PLAIN_PROMPT_FORMAT", "RAW_PROMPT_TAG", "OUTPUT_SYSTEM_FIELD", "PromptBatch", "Prompter", "left_pad"]

#: Prompt format for tokenizers without a chat template (e.g. base models such as Gemma-3-270M).
PLAIN_PROMPT_FORMAT = "{system}\n\n### Question\n{user}\n\n### Answer\n"

#: A role with this tag is rendered bare: its user text is the whole prompt (no system prompt, no chat
#: template or plain format), tokenised with the tokenizer's special tokens (a bos) as lm-eval's ``hf``
#: model tokenises a context. A one-agent system of such a role scores as lm-eval's ``hf`` model does.
RAW_PROMPT_TAG = "raw"

#: A question's field (``run([{"question": ..., "output_system_prompt": ...}])``) that replaces the output
#: agent's system prompt for that question (the other agents keep theirs; a bare role has none).
OUTPUT_SYSTEM_FIELD = "output_system_prompt"


@dataclass
class PromptBatch:
    """Left-padded prompt embeddings of a batch: ``embeds`` (B, T, H), ``mask`` (B, T), real ``lengths``.

    ``prefix_ids`` are each row's leading text tokens (those before its first message), and
    ``reuse`` the run's cached prefixes of this model: together they let a prefill start from the
    KV of an earlier pass's identical prefix (:mod:`.prefix`). Both are optional.
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    lengths: list[int]
    prefix_ids: list[torch.Tensor] | None = None  # per row: (P_i,) token ids, P_i <= lengths[i]
    reuse: "ModelPrefixes | None" = field(default=None, repr=False)
    # build(trim_end=True), per row: its last text part as tokenised (trailing whitespace trimmed off),
    # the whitespace trimmed off, and whether that part was tokenised with the special tokens
    ends: list[tuple[str, str, bool]] | None = None

    @property
    def tokens(self) -> int:
        """Real (unpadded) prompt positions summed over the batch."""
        return sum(self.lengths)

    def row(self, i: int) -> "PromptBatch":
        """Sample ``i`` alone (its padding kept; the mask hides it)."""
        ids = [self.prefix_ids[i]] if self.prefix_ids is not None else None
        return PromptBatch(self.embeds[i : i + 1], self.mask[i : i + 1], [self.lengths[i]], ids, self.reuse)

    def extend(self, extra: torch.Tensor) -> "PromptBatch":
        """Append (B, T_x, H) embeddings that every sample attends to."""
        mask = torch.cat([self.mask, self.mask.new_ones(extra.shape[0], extra.shape[1])], dim=1)
        return PromptBatch(torch.cat([self.embeds, extra.to(self.embeds.dtype)], dim=1), mask,
                           [n + extra.shape[1] for n in self.lengths], self.prefix_ids, self.reuse)


def left_pad(rows: Sequence[torch.Tensor]) -> PromptBatch:
    """Stack (T_i, H) rows into a left-padded (B, T, H) batch with its (B, T) mask."""
    lengths = [r.shape[0] for r in rows]
    T = max(lengths)
    padded, masks = [], []
    for row in rows:
        pad = T - row.shape[0]
        padded.append(torch.cat([row.new_zeros(pad, row.shape[-1]), row], dim=0))  # (T, H)
        masks.append(torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(row.shape[0], dtype=torch.long)]))
    return PromptBatch(torch.stack(padded), torch.stack(masks).to(rows[0].device), lengths)


class Prompter:
    """Builds one agent's prompts: its model's tokenizer and embeddings, its role, system prompt and note.

    ``note`` is appended to the user text (e.g. the tool instructions of an agent that may call tools).
    """

    def __init__(self, loaded: Any, role: Role, *, system_prompt: str | None = None, note: str = "") -> None:
        self.loaded = loaded
        self.role = role
        self.system_prompt = system_prompt or role.system or DEFAULT_SYSTEM_PROMPT
        self.note = note

    @property
    def raw(self) -> bool:
        """Whether the role is rendered bare (tagged :data:`RAW_PROMPT_TAG`)."""
        return RAW_PROMPT_TAG in self.role.tags

    def user_text(self, question: str, task: str, filled: Sequence[str], senders: Mapping[str, str] | None = None,
                  *, round: int = 1, rounds: int | None = None,  # noqa: A002
                  fields: Mapping[str, str] | None = None) -> str:
        """The user message with a marker per filled slot (before the chat template)."""
        user = self.role.render_user(question, task, list(filled), dict(senders or {}), round=round, rounds=rounds,
                                     fields=fields)
        return f"{user}\n\n{self.note}" if self.note else user

    def render(self, question: str, task: str, filled: Sequence[str], text_slots: Mapping[str, str],
               senders: Mapping[str, str] | None = None, *, round: int = 1, rounds: int | None = None,  # noqa: A002
               fields: Mapping[str, str] | None = None) -> str:
        """The full prompt text: chat template (or the plain format), latent slot markers left in.

        ``filled`` lists the slots that receive a message, in edge order; those in ``text_slots``
        get their text inline, the others keep a marker to splice at.
        """
        user = self.user_text(question, task, filled, senders, round=round, rounds=rounds, fields=fields)
        for slot, text in text_slots.items():
            user = user.replace(slot_marker(slot), text.strip())
        tokenizer = self.loaded.tokenizer
        if self.raw:
            return user
        system = (fields or {}).get(OUTPUT_SYSTEM_FIELD) or self.system_prompt
        if not self.loaded.has_chat_template:
            return PLAIN_PROMPT_FORMAT.format(system=system, user=user)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 enable_thinking=False)
        except Exception:
            # Some templates refuse a system turn (e.g. older Gemma): fold it into the user turn.
            messages = [{"role": "user", "content": f"{system}\n\n{user}"}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 enable_thinking=False)

    def embed_text(self, text: str, *, first: bool = False) -> torch.Tensor:
        """Token embeddings of ``text``: (T_seg, H). ``first`` adds the tokenizer's special tokens
        (a bos) for models without a chat template, whose template would otherwise supply them."""
        return self._embed_ids(self.text_ids(text, first=first))

    def text_ids(self, text: str, *, first: bool = False) -> torch.Tensor:
        """Token ids of ``text``: (T_seg,) on the CPU (``first`` as in :meth:`embed_text`)."""
        add_special = first and (self.raw or not self.loaded.has_chat_template)
        return self.loaded.tokenizer(text, add_special_tokens=add_special, return_tensors="pt").input_ids[0]

    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        embed = self.loaded.model.get_input_embeddings()
        return embed(ids.to(embed.weight.device))  # (T_seg,) -> (T_seg, H)

    def build(
        self,
        questions: Sequence[str],
        task: str,
        latent: Mapping[str, torch.Tensor] | None = None,
        text: Mapping[str, Sequence[str]] | None = None,
        senders: Mapping[str, str] | None = None,
        order: Sequence[str] | None = None,
        *,
        round: int = 1,  # noqa: A002 - the semantics' word
        rounds: int | None = None,
        fields: Sequence[Mapping[str, str]] | None = None,
        trim_end: bool = False,
    ) -> PromptBatch:
        """Splice messages into the prompts of a batch (for ``round``) and left-pad.

        ``latent[slot]`` is (B, m, H) already in this agent's hidden space; ``text[slot]`` is one
        string per sample; ``order`` is the slot order (default: latent then text). Slots with no
        message are left out of the prompt. ``trim_end`` leaves the trailing whitespace of each
        prompt's last text part out (lm-eval moves it onto a scored continuation) and records that
        part in the batch's ``ends``.
        """
        latent = dict(latent or {})
        text = dict(text or {})
        filled = list(order) if order is not None else list(latent) + [s for s in text if s not in latent]
        embed = self.loaded.model.get_input_embeddings()
        device, dtype = embed.weight.device, embed.weight.dtype
        rows: list[torch.Tensor] = []
        prefix_ids: list[torch.Tensor] = []
        ends: list[tuple[str, str, bool]] = []
        for i, question in enumerate(questions):
            rendered = self.render(question, task, filled, {s: t[i] for s, t in text.items()}, senders,
                                   round=round, rounds=rounds, fields=fields[i] if fields else None)
            pieces: list[torch.Tensor] = []
            leading = torch.zeros(0, dtype=torch.long)
            parts = split_at_markers(rendered)
            if trim_end:  # the last part is text (possibly empty): split_at_markers ends with one
                tail = str(parts[-1])
                parts[-1] = kept = tail.rstrip()
                if len(parts) == 1 and not kept:
                    raise RunError(f"question {i + 1} renders to an empty prompt: nothing to score a continuation "
                                   "after", culprit="questions", hint="give a question (or a role with some text)")
                special = len(parts) == 1 and (self.raw or not self.loaded.has_chat_template)
                ends.append((kept, tail[len(kept):], special))
            for j, part in enumerate(parts):
                if isinstance(part, tuple):
                    pieces.append(latent[part[0]][i].to(device=device, dtype=dtype))  # (m, H)
                elif part:
                    ids = self.text_ids(part, first=(j == 0))  # (T_seg,)
                    if j == 0:
                        leading = ids
                    pieces.append(self._embed_ids(ids))  # (T_seg, H)
            rows.append(torch.cat(pieces, dim=0))  # (T_i, H)
            prefix_ids.append(leading)
        batch = left_pad(rows)
        batch.prefix_ids = prefix_ids
        batch.ends = ends if trim_end else None
        return batch
