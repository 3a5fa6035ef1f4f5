"""Agents: a frozen Hugging Face causal LM with a role, slot splicing, latent rollout and decoding.

The latent rollout follows DESIGN.md section 5: the last-layer (post final norm) hidden state at
the last position goes through the inner link and is appended as the next input embedding, ``m``
times; the ``m`` hidden states produced are the agent's thoughts. The KV cache is reused across
steps, and position ids come from the attention mask so a left-padded batch gives each sample the
result it gets alone. :meth:`Agent.latent_rollout` with ``use_cache=False`` is the reference
algorithm (full recompute every step), kept for tests and benchmarks.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .errors import RunError
from .roles import DEFAULT_SYSTEM_PROMPT, Role, slot_marker, split_at_markers
from .spec import AgentSpec

__all__ = [
    "Agent",
    "GenerationOptions",
    "PromptBatch",
    "DecodeResult",
    "position_ids_from_mask",
    "apply_link",
    "PLAIN_PROMPT_FORMAT",
]

#: Prompt format for tokenizers without a chat template (e.g. base models such as Gemma-3-270M).
PLAIN_PROMPT_FORMAT = "{system}\n\n### Question\n{user}\n\n### Answer\n"


@dataclass(frozen=True)
class GenerationOptions:
    """How text is decoded. Defaults follow the reference: temperature 0.6, top_p 0.95."""

    max_new_tokens: int = 256
    do_sample: bool = True
    temperature: float = 0.6
    top_p: float = 0.95
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise RunError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}", culprit="max_new_tokens")
        if self.temperature < 0:
            raise RunError(f"temperature must be >= 0, got {self.temperature}", culprit="temperature",
                           hint="use 0 (or greedy decoding) for deterministic answers")
        if not 0 < self.top_p <= 1:
            raise RunError(f"top_p must be in (0, 1], got {self.top_p}", culprit="top_p", hint="the reference uses 0.95")

    def greedy(self) -> "GenerationOptions":
        """The same options with greedy decoding."""
        return GenerationOptions(self.max_new_tokens, False, self.temperature, self.top_p, self.stop)


@dataclass
class PromptBatch:
    """Left-padded prompt embeddings of a batch: ``embeds`` (B, T, H) and ``mask`` (B, T)."""

    embeds: torch.Tensor
    mask: torch.Tensor
    lengths: list[int]

    @property
    def tokens(self) -> int:
        """Real (unpadded) prompt positions summed over the batch."""
        return sum(self.lengths)


@dataclass
class DecodeResult:
    """Decoded texts and how many tokens each sample generated."""

    texts: list[str]
    generated_tokens: list[int]
    tool_calls: list[list[dict[str, Any]]] = field(default_factory=list)


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counting only attended tokens: (B, T) mask -> (B, T) positions (0 at padding).

    >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])).tolist()
    [[0, 0, 0, 1], [0, 1, 2, 3]]
    """
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def apply_link(link: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a link in its own device and dtype: (..., H_in) -> (..., H_out); links are float32 by default."""
    param = next(link.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    return link(x)


def _cache_keyword(module: nn.Module) -> str:
    """The forward keyword for the KV cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out: Any) -> Any:
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else getattr(out, "past_key_values", None)


class Agent:
    """One agent of a system: model, tokenizer, role, inner link, placement.

    ``loaded`` is a :class:`recmas_graph.models.LoadedModel`; several agents may share one.
    """

    def __init__(
        self,
        spec: AgentSpec,
        loaded: Any,
        role: Role,
        inner_link: nn.Module,
        *,
        system_prompt: str | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.role = role
        self.inner_link = inner_link
        self.hidden_size: int = loaded.hidden_size
        self.system_prompt = system_prompt or role.system or DEFAULT_SYSTEM_PROMPT
        self.backbone = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model
        self._cache_kw = _cache_keyword(self.backbone)
        self._lm_cache_kw = _cache_keyword(self.model)
        self.extra_instructions: str = ""
        self._eos = self._find_eos_ids()

    # ------------------------------------------------------------------ placement
    @property
    def device(self) -> torch.device:
        """Device of the model's input embeddings."""
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's input embeddings."""
        return self.model.get_input_embeddings().weight.dtype

    # ------------------------------------------------------------------ prompts
    def render(self, question: str, task: str, filled: Sequence[str], text_slots: Mapping[str, str],
               senders: Mapping[str, str] | None = None) -> str:
        """Render the full prompt text: chat template (or plain format), latent slot markers left in.

        ``filled`` lists the slots that receive a message, in edge order; those in ``text_slots``
        get their text inline, the others keep a marker for :meth:`build_prompts` to splice at.
        """
        user = self.role.render_user(question, task, list(filled), dict(senders or {}))
        if self.extra_instructions:
            user = f"{user}\n\n{self.extra_instructions}"
        for slot, text in text_slots.items():
            user = user.replace(slot_marker(slot), text.strip())
        if self.loaded.has_chat_template:
            messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]
            try:
                return self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
                )
            except Exception:
                # Some templates refuse a system turn (e.g. older Gemma): fold it into the user turn.
                messages = [{"role": "user", "content": f"{self.system_prompt}\n\n{user}"}]
                return self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
                )
        return PLAIN_PROMPT_FORMAT.format(system=self.system_prompt, user=user)

    def _embed_text(self, text: str, *, first: bool) -> torch.Tensor:
        add_special = first and not self.loaded.has_chat_template
        ids = self.tokenizer(text, add_special_tokens=add_special, return_tensors="pt").input_ids[0]
        ids = ids.to(self.device)
        return self.model.get_input_embeddings()(ids)  # (T_seg,) -> (T_seg, H)

    def build_prompts(
        self,
        questions: Sequence[str],
        task: str,
        latent: Mapping[str, torch.Tensor] | None = None,
        text: Mapping[str, Sequence[str]] | None = None,
        senders: Mapping[str, str] | None = None,
        order: Sequence[str] | None = None,
    ) -> PromptBatch:
        """Splice messages into the role prompts of a batch and left-pad.

        ``latent[slot]`` is (B, m, H) already in this agent's hidden space; ``text[slot]`` is one
        string per sample; ``order`` is the slot order (default: latent then text). Slots with no
        message are left out of the prompt.
        """
        latent = dict(latent or {})
        text = dict(text or {})
        filled = list(order) if order is not None else list(latent) + [s for s in text if s not in latent]
        rows: list[torch.Tensor] = []
        for i, question in enumerate(questions):
            rendered = self.render(question, task, filled, {s: t[i] for s, t in text.items()}, senders)
            pieces: list[torch.Tensor] = []
            for j, part in enumerate(split_at_markers(rendered)):
                if isinstance(part, tuple):
                    msg = latent[part[0]][i].to(device=self.device, dtype=self.dtype)  # (m, H)
                    pieces.append(msg)
                elif part:
                    pieces.append(self._embed_text(part, first=(j == 0)))
            rows.append(torch.cat(pieces, dim=0))  # (T_i, H)
        return self._left_pad(rows)

    def _left_pad(self, rows: list[torch.Tensor]) -> PromptBatch:
        lengths = [r.shape[0] for r in rows]
        T = max(lengths)
        B, H = len(rows), rows[0].shape[-1]
        embeds = torch.zeros(B, T, H, device=self.device, dtype=self.dtype)
        mask = torch.zeros(B, T, device=self.device, dtype=torch.long)
        for i, row in enumerate(rows):
            embeds[i, T - row.shape[0]:] = row
            mask[i, T - row.shape[0]:] = 1
        return PromptBatch(embeds, mask, lengths)

    # ------------------------------------------------------------------ latent rollout
    def _backbone(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any = None,
                  use_cache: bool = False) -> tuple[torch.Tensor, Any]:
        kwargs: dict[str, Any] = {
            "inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions, "use_cache": use_cache,
        }
        if cache is not None:
            kwargs[self._cache_kw] = cache
        out = self.backbone(**kwargs)
        return out.last_hidden_state, _output_cache(out) if use_cache else None

    def latent_rollout(self, prompt: PromptBatch, steps: int, *, use_cache: bool = True) -> torch.Tensor:
        """Think for ``steps`` latent steps; return the thoughts H_out of shape (B, steps, H).

        As in the reference: thought t is the last hidden state *before* inner(h) is appended, so
        thought 0 is the prompt's last hidden state and ``steps - 1`` positions are appended (the
        reference's final forward pass, whose output it never uses, is skipped).
        ``use_cache=False`` recomputes the whole sequence every step, as the reference code does.
        """
        embeds, mask = prompt.embeds, prompt.mask
        B, _, H = embeds.shape
        if steps == 0:
            return embeds.new_zeros(B, 0, H)
        with torch.no_grad():
            positions = position_ids_from_mask(mask)
            hidden, cache = self._backbone(embeds, mask, positions, use_cache=use_cache)
            h = hidden[:, -1]  # (B, H)
            del hidden
            thoughts: list[torch.Tensor] = [h]
            next_pos = positions[:, -1:] + 1  # (B, 1)
            for _ in range(steps - 1):
                e = apply_link(self.inner_link, h).to(self.dtype)[:, None]  # (B, H) -> (B, 1, H)
                mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
                if use_cache:
                    hidden, cache = self._backbone(e, mask, next_pos, cache=cache, use_cache=True)
                else:
                    embeds = torch.cat([embeds, e], dim=1)  # (B, T + t, H)
                    hidden, _ = self._backbone(embeds, mask, position_ids_from_mask(mask))
                h = hidden[:, -1]
                del hidden
                next_pos = next_pos + 1
                thoughts.append(h)
        return torch.stack(thoughts, dim=1)  # (B, steps, H)

    # ------------------------------------------------------------------ decoding
    def _lm_step(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        kwargs: dict[str, Any] = {
            "inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions, "use_cache": True,
            "logits_to_keep": 1,
        }
        if cache is not None:
            kwargs[self._lm_cache_kw] = cache
        out = self.model(**kwargs)
        return out.logits[:, -1].float(), _output_cache(out)  # (B, V)

    def _find_eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, (list, tuple)):
                ids.update(int(x) for x in source)
        vocab = self.tokenizer.get_vocab()
        for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
            if token in vocab:
                ids.add(int(vocab[token]))
        return ids

    @staticmethod
    def _sample(logits: torch.Tensor, options: GenerationOptions,
                generator: "torch.Generator | Sequence[torch.Generator] | None") -> torch.Tensor:
        """Pick the next token per row: (B, V) -> (B,). A list of generators gives one per row."""
        if not options.do_sample or options.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / options.temperature, dim=-1)
        if options.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < options.top_p  # always keeps the top token
            sorted_p = sorted_p * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = (probs / probs.sum(-1, keepdim=True)).cpu()
        if isinstance(generator, (list, tuple)):
            picks = [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generator)]
            return torch.cat(picks).to(logits.device)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)

    def decode(self, prompt: PromptBatch, options: GenerationOptions, *,
               generator: "torch.Generator | Sequence[torch.Generator] | None" = None,
               on_token: Callable[[], None] | None = None) -> DecodeResult:
        """Decode text after the prompt embeddings, with a KV cache; stops at EOS or a stop string."""
        embeds, mask = prompt.embeds, prompt.mask
        B = embeds.shape[0]
        eos = self._eos
        out_ids: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        embed_layer = self.model.get_input_embeddings()
        with torch.no_grad():
            positions = position_ids_from_mask(mask)
            logits, cache = self._lm_step(embeds, mask, positions, None)
            next_pos = positions[:, -1:] + 1
            for step in range(options.max_new_tokens):
                tokens = self._sample(logits, options, generator)  # (B,)
                for i in range(B):
                    if done[i]:
                        continue
                    tid = int(tokens[i])
                    if tid in eos:
                        done[i] = True
                        continue
                    out_ids[i].append(tid)
                    if options.stop:
                        tail = self.tokenizer.decode(out_ids[i][-16:], skip_special_tokens=True)
                        if any(s in tail for s in options.stop):
                            done[i] = True
                if on_token is not None:
                    on_token()
                if all(done) or step == options.max_new_tokens - 1:
                    break  # no forward pass for a token nobody will read
                pad = tokens.new_full((B,), self.tokenizer.pad_token_id or 0)
                feed = torch.where(torch.tensor(done, device=tokens.device), pad, tokens)
                e = embed_layer(feed[:, None])  # (B, 1) -> (B, 1, H)
                mask = torch.cat([mask, torch.tensor([[0 if d else 1] for d in done], device=mask.device, dtype=mask.dtype)], 1)
                logits, cache = self._lm_step(e, mask, next_pos, cache)
                next_pos = next_pos + 1
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in out_ids]
        if options.stop:
            texts = [_cut_after_stop(t, options.stop) for t in texts]
        return DecodeResult(texts, [len(ids) for ids in out_ids])

    def continue_text(self, prompt: PromptBatch, continuation: str, options: GenerationOptions,
                      generator: "torch.Generator | Sequence[torch.Generator] | None" = None) -> tuple[str, int]:
        """Decode for one sample after its prompt plus ``continuation`` text; return (new text, tokens)."""
        if continuation:
            ids = self.tokenizer(continuation, add_special_tokens=False, return_tensors="pt").input_ids[0].to(self.device)
            extra = self.model.get_input_embeddings()(ids)[None]  # (1, T_c, H)
            prompt = PromptBatch(torch.cat([prompt.embeds, extra], 1),
                                 torch.cat([prompt.mask, prompt.mask.new_ones(1, extra.shape[1])], 1),
                                 [prompt.lengths[0] + extra.shape[1]])
        result = self.decode(prompt, options, generator=generator)
        return result.texts[0], result.generated_tokens[0]


def _cut_after_stop(text: str, stops: Sequence[str]) -> str:
    """Cut ``text`` right after the first stop string it contains."""
    best = None
    for stop in stops:
        pos = text.find(stop)
        if pos >= 0 and (best is None or pos + len(stop) < best):
            best = pos + len(stop)
    return text if best is None else text[:best]
