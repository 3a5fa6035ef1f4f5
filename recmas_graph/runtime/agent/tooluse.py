"""Decoding with tools: each sample of a batch decodes through the tool loop of :mod:`recmas_graph.tools`.

The model writes a call, decoding pauses right after it (a stop string), the tool runs, its result is
appended and decoding continues from the prompt plus everything so far. One token budget
(``max_new_tokens``) covers the whole answer of a sample. Tool calls are per sample, so samples
decode one by one here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ...tools import run_tool_loop
from ...tools.protocols import RECMAS, ToolProtocol
from .decoding import DecodeResult, GenerationOptions, decode
from .prompts import PromptBatch, Prompter

__all__ = ["ToolPolicy", "decode_with_tools", "continue_text"]


@dataclass(frozen=True)
class ToolPolicy:
    """How an agent may call tools: the tools by name, the protocol (call syntax, result format,
    call and result-size limits) and the time bound on tool calls."""

    tools: Mapping[str, Any]
    protocol: ToolProtocol = RECMAS
    max_seconds: float = 60.0

    @property
    def max_calls(self) -> int:
        """At most this many calls per answer (the protocol's)."""
        return self.protocol.max_calls


def continue_text(model: nn.Module, prompter: Prompter, prompt: PromptBatch, continuation: str,
                  options: GenerationOptions, *, seeds: Sequence[int], stream: int,
                  eos_ids: Sequence[int]) -> tuple[str, int]:
    """Decode for one sample after its prompt plus ``continuation`` text; return (new text, tokens)."""
    if continuation:
        extra = prompter.embed_text(continuation)[None]  # (1, T_c, H)
        prompt = prompt.extend(extra)
    result = decode(model, prompter.loaded.tokenizer, prompt, options, seeds=seeds, stream=stream, eos_ids=eos_ids)
    return result.texts[0], result.generated_tokens[0]


def decode_with_tools(model: nn.Module, prompter: Prompter, prompt: PromptBatch, options: GenerationOptions,
                      policy: ToolPolicy, *, seeds: Sequence[int], stream: int, eos_ids: Sequence[int],
                      tool_choice: str = "auto", continue_fn: Any = None) -> DecodeResult:
    """Decode every sample of ``prompt`` through the tool loop; the calls are in ``tool_calls``.

    ``tool_choice="required"`` opens a call of the first tool at the start of each answer.
    ``continue_fn`` replaces :func:`continue_text` (same signature; tests use it to script replies).
    """
    step = continue_fn or continue_text
    texts, counts, calls = [], [], []
    for i in range(prompt.embeds.shape[0]):
        single = prompt.row(i)
        used = [0]
        segment = [0]

        def generate(continuation: str, stop: list[str], _single: PromptBatch = single, _i: int = i) -> str:
            remaining = options.max_new_tokens - used[0]  # one token budget for the whole answer
            if remaining <= 0:
                return ""
            segment[0] += 1
            opts = options.replace(max_new_tokens=remaining, stop=tuple(stop))
            new, n = step(model, prompter, _single, continuation, opts, seeds=[seeds[_i]],
                          stream=stream + segment[0], eos_ids=eos_ids)
            used[0] += n
            return new

        prefix = policy.protocol.opening(next(iter(policy.tools))) if tool_choice == "required" else ""
        transcript = run_tool_loop(generate, policy.tools, protocol=policy.protocol, max_seconds=policy.max_seconds,
                                   prefix=prefix)
        texts.append(transcript.text)
        counts.append(used[0])
        for call in transcript.calls:
            calls.append({"sample": i, "name": call.name, "arguments": call.arguments, "ok": call.result.ok,
                          "output": call.result.output, "error": call.result.error, "elapsed_s": call.elapsed_s})
    return DecodeResult(texts, counts, calls)
