"""Decoding text after prompt embeddings, batched and on the device.

The loop uses transformers' own logits processors (repetition penalty, temperature, top-k, top-p,
min-p) and stop-string criterion, with the model's ``generation_config`` filling every option the
caller leaves unset, then transformers' global defaults: the priority ``model.generate`` uses, so
``top_k=None`` means the model's ``top_k`` (50 when it sets none). Tokens, masks and the stop test
stay on the device; the loop syncs with the host once per step (to stop when every row is done).

Sampling is per question (see :mod:`.sampling`): a question's answer depends on its seed, never on
the batch it sits in, and needs no per-row generator or host round trip. Options the model's
generation config can set and that are honoured: ``temperature``, ``top_k``, ``top_p``, ``min_p``,
``repetition_penalty`` and ``eos_token_id``; ``do_sample`` and the length come from the options.

>>> GenerationOptions(max_new_tokens=8).greedy().do_sample
False
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ...errors import RunError
from .forward import lm_forward
from .prefix import prefill
from .prompts import PromptBatch
from .sampling import row_keys, sample, stream_id

__all__ = ["GenerationOptions", "DecodeResult", "Sampling", "decode", "stream_id", "eos_token_ids", "answer_end_id",
           "END_OF_TURN_TOKENS", "TextCallback", "TextStream"]

#: End-of-turn tokens of common chat templates: decoding also stops at these.
END_OF_TURN_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>")


@dataclass(frozen=True)
class GenerationOptions:
    """How text is decoded. ``None`` fields take the model's ``generation_config`` value.

    Defaults follow the reference: sampling at temperature 0.6 with top_p 0.95 (``top_k``,
    ``min_p`` and ``repetition_penalty`` then come from the model, as with ``model.generate``).
    """

    max_new_tokens: int = 256
    do_sample: bool = True
    temperature: float | None = 0.6
    top_p: float | None = 0.95
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise RunError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}",
                           culprit="max_new_tokens")
        if self.temperature is not None and not self.temperature >= 0:
            raise RunError(f"temperature must be >= 0, got {self.temperature}", culprit="temperature",
                           hint="use 0 (or greedy decoding) for deterministic answers")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise RunError(f"top_p must be in (0, 1], got {self.top_p}", culprit="top_p", hint="the reference uses 0.95")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0):
            raise RunError(f"top_k must be a non-negative integer, got {self.top_k!r}", culprit="top_k",
                           hint="0 turns top-k filtering off")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise RunError(f"min_p must be in [0, 1], got {self.min_p}", culprit="min_p")
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise RunError(f"repetition_penalty must be > 0, got {self.repetition_penalty}", culprit="repetition_penalty",
                           hint="1.0 means no penalty")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))

    def greedy(self) -> "GenerationOptions":
        """The same options with greedy decoding."""
        return replace(self, do_sample=False)

    def replace(self, **changes: Any) -> "GenerationOptions":
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Sampling:
    """The effective settings of one decode: options merged with the model's generation config."""

    greedy: bool
    temperature: float
    top_k: int
    top_p: float
    min_p: float | None
    repetition_penalty: float

    @classmethod
    def resolve(cls, options: GenerationOptions, generation_config: Any = None) -> "Sampling":
        """Caller's options > the model's ``generation_config`` > transformers' global defaults."""
        model = generation_config.to_dict() if generation_config is not None else {}

        def pick(name: str, default: Any) -> Any:
            value = getattr(options, name)
            if value is None:
                value = model.get(name)
            return default if value is None else value

        temperature = float(pick("temperature", 1.0))
        return cls(greedy=not options.do_sample or temperature == 0, temperature=temperature,
                   top_k=int(pick("top_k", 50)), top_p=float(pick("top_p", 1.0)), min_p=pick("min_p", None),
                   repetition_penalty=float(pick("repetition_penalty", 1.0)))

    def processors(self) -> Any:
        """transformers' logits processors for these settings, in the order ``generate`` applies them."""
        from transformers.generation.logits_process import (LogitsProcessorList, MinPLogitsWarper,
                                                            RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                            TopKLogitsWarper, TopPLogitsWarper)

        found = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            found.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.greedy:
            return found
        if self.temperature != 1.0:
            found.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k:
            found.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            found.append(TopPLogitsWarper(self.top_p))
        if self.min_p is not None:
            found.append(MinPLogitsWarper(self.min_p))
        return found


@dataclass
class DecodeResult:
    """Decoded texts, how many tokens each sample generated (end-of-sequence not counted), and the
    tool calls made (each a dict with its ``sample`` index)."""

    texts: list[str]
    generated_tokens: list[int]
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------ the loop


def eos_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """End-of-sequence ids: the model's generation config, the tokenizer's eos, common end-of-turn tokens."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for source in (tokenizer.eos_token_id, getattr(gen, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(x) for x in source)
    vocab = tokenizer.get_vocab()
    ids.update(int(vocab[t]) for t in END_OF_TURN_TOKENS if t in vocab)
    return sorted(ids)


def answer_end_id(tokenizer: Any) -> int | None:
    """The token that ends an answer: the chat template's end-of-turn token when the tokenizer has a
    chat template and one of :data:`END_OF_TURN_TOKENS`, else its end-of-sequence token."""
    if getattr(tokenizer, "chat_template", None):
        vocab = tokenizer.get_vocab()
        for token in END_OF_TURN_TOKENS[:3]:  # <|im_end|>, <|eot_id|>, <end_of_turn>
            if token in vocab:
                return int(vocab[token])
    return tokenizer.eos_token_id


_STOP_CACHE: "weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]]" = weakref.WeakKeyDictionary()


def _stop_criteria(tokenizer: Any, stops: tuple[str, ...]) -> Any:
    """transformers' ``StopStringCriteria`` for ``stops``, built once per tokenizer (it preprocesses
    the whole vocabulary)."""
    from transformers.generation.stopping_criteria import StopStringCriteria

    try:
        table = _STOP_CACHE.setdefault(tokenizer, {})
    except TypeError:  # pragma: no cover - a tokenizer that cannot be weakly referenced
        return StopStringCriteria(tokenizer, list(stops))
    if stops not in table:
        table[stops] = StopStringCriteria(tokenizer, list(stops))
    return table[stops]


def _cut_after_stop(text: str, stops: Sequence[str]) -> str:
    """Cut ``text`` right after the first stop string it contains."""
    best = None
    for stop in stops:
        pos = text.find(stop)
        if pos >= 0 and (best is None or pos + len(stop) < best):
            best = pos + len(stop)
    return text if best is None else text[:best]


#: A streaming callback: ``on_text(row, delta)`` with the next piece of row ``row``'s answer text.
TextCallback = Callable[[int, str], None]


class TextStream:
    """Turns the tokens a decode produces, step by step, into text pieces per row (``on_text(row, delta)``).

    A row's pieces joined are exactly its final text (:meth:`finish` sends what was held back). While
    decoding, text the next token may still change is held back: an incomplete UTF-8 sequence (a
    trailing replacement character) and, for tokenizers that clean up spaces before punctuation, the
    last word; anything past the first stop string is never sent (the answer is cut after it).
    """

    def __init__(self, tokenizer: Any, rows: int, on_text: TextCallback, stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.stops = tuple(stops)
        self.words = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.sent: list[str] = [""] * rows

    def push(self, tokens: Sequence[int], kept: Sequence[bool]) -> None:
        """One decoding step: ``tokens[i]`` is row ``i``'s new token, counted in its answer when ``kept[i]``."""
        for row, (token, keep) in enumerate(zip(tokens, kept)):
            if not keep:
                continue
            self.ids[row].append(int(token))
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            if self.stops:
                text = _cut_after_stop(text, self.stops)
            if self.words:
                text = text[:max(text.rfind(" "), text.rfind("\n")) + 1]
            self._send(row, text.rstrip("\ufffd"))

    def finish(self, texts: Sequence[str]) -> None:
        """The decode ended with ``texts``: send every row's remainder."""
        for row, text in enumerate(texts):
            self._send(row, text)

    def _send(self, row: int, text: str) -> None:
        sent = self.sent[row]
        if len(text) > len(sent) and text.startswith(sent):
            self.sent[row] = text
            self.on_text(row, text[len(sent):])


@torch.no_grad()
def decode(
    model: nn.Module,
    tokenizer: Any,
    prompt: PromptBatch,
    options: GenerationOptions,
    *,
    seeds: Sequence[int] | None = None,
    stream: int = 0,
    eos_ids: Sequence[int] | None = None,
    on_token: Callable[[], None] | None = None,
    on_text: TextCallback | None = None,
) -> DecodeResult:
    """Decode after ``prompt`` with a KV cache, until end-of-sequence, a stop string or the length limit.

    ``seeds`` (one per row, default ``0, 1, ...``) and ``stream`` fix the sampling noise per row.
    ``on_token()`` is called after every step; ``on_text(row, delta)`` receives each row's answer
    text piece by piece as it is decoded (:class:`TextStream`: the pieces join to the row's text).
    Text is never differentiated: this runs without autograd.
    """
    embeds, mask = prompt.embeds, prompt.mask
    B, device = embeds.shape[0], embeds.device
    settings = Sampling.resolve(options, getattr(model, "generation_config", None))
    processors = settings.processors()
    eos = torch.tensor(list(eos_ids if eos_ids is not None else eos_token_ids(model, tokenizer)), device=device)
    stop = _stop_criteria(tokenizer, tuple(options.stop)) if options.stop else None
    keys = None if settings.greedy else row_keys(list(seeds) if seeds is not None else range(B), stream, device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    embed = model.get_input_embeddings()
    N = options.max_new_tokens
    out = torch.full((B, N), pad, dtype=torch.long, device=device)  # (B, N) generated ids
    unfinished = torch.ones(B, dtype=torch.bool, device=device)
    counts = torch.zeros(B, dtype=torch.long, device=device)
    streamer = TextStream(tokenizer, B, on_text, options.stop) if on_text is not None else None

    def forward(e: torch.Tensor, m: torch.Tensor, p: torch.Tensor, c: Any) -> tuple[torch.Tensor, Any]:
        return lm_forward(model, e, m, p, c)

    logits, cache, mask, positions = prefill(forward, prompt, model.config)  # (B, 1, V), ...
    next_pos = positions[:, -1:] + 1  # (B, 1)
    steps = 0
    for t in range(N):
        scores = processors(out[:, :t], logits[:, -1].float())  # (B, V)
        token = scores.argmax(-1) if keys is None else sample(scores, keys, t, settings.top_k)
        token = torch.where(unfinished, token, pad)  # (B,)
        out[:, t] = token
        ended = torch.isin(token, eos) & unfinished
        counts += (unfinished & ~ended).long()
        if streamer is not None:
            streamer.push(token.tolist(), (unfinished & ~ended).tolist())
        if stop is not None:
            ended |= stop(out[:, : t + 1], scores) & unfinished
        unfinished &= ~ended
        steps = t + 1
        if on_token is not None:
            on_token()
        if t == N - 1 or not bool(unfinished.any()):  # the one host sync per step
            break  # no forward pass for a token nobody will read
        mask = torch.cat([mask, unfinished[:, None].to(mask.dtype)], dim=1)  # (B, T + t + 1)
        logits, cache = lm_forward(model, embed(token[:, None]), mask, next_pos, cache)  # (B, 1) -> (B, 1, V)
        next_pos = next_pos + 1
    rows, n = out[:, :steps].tolist(), counts.tolist()
    texts = [tokenizer.decode(row[:k], skip_special_tokens=True) for row, k in zip(rows, n)]
    if options.stop:
        texts = [_cut_after_stop(t, options.stop) for t in texts]
    if streamer is not None:
        streamer.finish(texts)
    return DecodeResult(texts, n)
