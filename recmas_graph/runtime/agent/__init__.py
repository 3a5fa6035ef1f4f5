"""One model's compute: the agent (a frozen causal LM with a role), its forward calls, prompts and
splicing, prefix KV reuse, the latent rollout, decoding and seeded sampling, decoding with tools,
scoring continuations by likelihood and the teacher-forced answer loss.

Names are imported on first use.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

__all__ = [
    "Agent", "ContinuationScore", "DecodeResult", "END_OF_TURN_TOKENS", "GenerationOptions", "LOGITS_BYTES",
    "MAX_BYTES", "MIN_REUSE", "ModelPrefixes", "OUTPUT_SYSTEM_FIELD", "PLAIN_PROMPT_FORMAT", "PassPrompt",
    "PrefixCache", "PromptBatch", "Prompter", "RAW_PROMPT_TAG", "Sampling", "ScoreResult", "TextCallback",
    "TextStream", "ToolPolicy", "agent_role", "answer_end_id", "answer_nll", "answer_tokens", "apply_link",
    "backbone_forward", "backbone_of", "continuation_ids", "continuation_lists", "continue_text", "decode",
    "decode_with_tools", "eos_token_ids", "gumbel", "latent_rollout", "left_pad", "lm_forward", "pass_prompts",
    "position_ids_from_mask", "prefill", "row_keys", "sample", "score_continuations", "stream_id", "tool_note",
]

_LAZY = {
    "Agent": "agent", "position_ids_from_mask": "forward", "backbone_of": "forward", "backbone_forward":
    "forward", "lm_forward": "forward", "latent_rollout": "rollout", "apply_link": "rollout",
    "GenerationOptions": "decoding", "DecodeResult": "decoding", "Sampling": "decoding", "decode": "decoding",
    "stream_id": "decoding", "eos_token_ids": "decoding", "answer_end_id": "decoding", "END_OF_TURN_TOKENS":
    "decoding", "TextCallback": "decoding", "TextStream": "decoding", "row_keys": "sampling", "gumbel":
    "sampling", "sample": "sampling", "ContinuationScore": "scoring", "ScoreResult": "scoring",
    "continuation_ids": "scoring", "score_continuations": "scoring", "continuation_lists": "scoring",
    "LOGITS_BYTES": "scoring", "answer_nll": "loss", "answer_tokens": "loss", "PLAIN_PROMPT_FORMAT": "prompts",
    "RAW_PROMPT_TAG": "prompts", "OUTPUT_SYSTEM_FIELD": "prompts", "PromptBatch": "prompts", "Prompter":
    "prompts", "left_pad": "prompts", "MIN_REUSE": "prefix", "MAX_BYTES": "prefix", "PrefixCache": "prefix",
    "ModelPrefixes": "prefix", "prefill": "prefix", "PassPrompt": "texts", "agent_role": "texts", "tool_note":
    "texts", "pass_prompts": "texts", "ToolPolicy": "tooluse", "decode_with_tools": "tooluse", "continue_text":
    "tooluse",
}

__getattr__ = lazy_exports(__name__, _LAZY)
