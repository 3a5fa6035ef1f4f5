"""The ``tiny:`` model source: tiny random test models and their offline byte-level tokenizer.

``tiny:llama``, ``tiny:qwen2`` and ``tiny:gemma3`` are 2-layer models of three families with hidden
sizes 64 / 48 / 80, built offline in well under a second, with weights seeded from the reference
(the same reference always gives the same weights). They make every style runnable anywhere and
heterogeneous systems testable. This module imports torch only when a model is built.

>>> tiny_hidden_size("tiny:gemma3"), tiny_counterpart("Qwen/Qwen3-1.7B")
(80, 'tiny:qwen2')
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import ModelSourceError
from ...topology.catalog import ModelSize, split_model_ref

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase

    from .loaded import LoadedModel

__all__ = [
    "TINY_FAMILIES",
    "CHATML_TEMPLATE",
    "build_tiny_tokenizer",
    "load_tiny",
    "tiny_hidden_size",
    "tiny_size",
    "check_tiny_ref",
    "tiny_counterpart",
]


#: ChatML-style chat template of the tiny tokenizers (``enable_thinking`` and other extras are ignored).
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

_TINY_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>", "<|bos|>")


@dataclass(frozen=True)
class _TinyFamily:
    config_class: str
    model_class: str
    hidden_size: int
    options: dict[str, Any]
    add_bos: bool


#: The tiny families: ``tiny:<name>``. Distinct hidden sizes make heterogeneous systems testable.
TINY_FAMILIES: dict[str, _TinyFamily] = {
    "llama": _TinyFamily("LlamaConfig", "LlamaForCausalLM", 64,
                         dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False), False),
    "qwen2": _TinyFamily("Qwen2Config", "Qwen2ForCausalLM", 48,
                         dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False), False),
    "gemma3": _TinyFamily("Gemma3TextConfig", "Gemma3ForCausalLM", 80,
                          dict(num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                               sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                               tie_word_embeddings=True), True),
}


def _tiny_family(ref: str) -> tuple[str, _TinyFamily]:
    split = split_model_ref(ref)
    name = (split[1] if split else ref).strip().lower()
    if name not in TINY_FAMILIES:
        raise ModelSourceError(
            f"unknown tiny model family {name!r}", culprit=ref,
            hint="use one of: " + ", ".join(f"tiny:{n}" for n in TINY_FAMILIES),
        )
    return name, TINY_FAMILIES[name]


def _byte_level_vocab() -> dict[str, int]:
    """GPT-2's byte -> printable-unicode map, as a vocab ``{char: byte}`` (256 entries)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def build_tiny_tokenizer(add_bos: bool = False, name: str = "tiny") -> "PreTrainedTokenizerBase":
    """An offline byte-level tokenizer: 256 byte tokens + 5 specials (vocab 261), ChatML template.

    Round-trips any UTF-8 text (``decode(encode(s)) == s``). bos ``<|bos|>``, eos ``<|im_end|>``,
    pad ``<|pad|>``. With ``add_bos`` (tiny:gemma3, like real Gemma) encoding prepends bos.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab=_byte_level_vocab(), merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(_TINY_SPECIALS))
    if add_bos:
        bos_id = backend.token_to_id("<|bos|>")
        backend.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", bos_id)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|bos|>", eos_token="<|im_end|>", pad_token="<|pad|>",
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
        chat_template=CHATML_TEMPLATE, padding_side="left", model_max_length=2048,
        clean_up_tokenization_spaces=False, name_or_path=name,
    )
    return tokenizer


def _seed_of(ref: str) -> int:
    return int.from_bytes(hashlib.sha256(f"recmas_graph/tiny/{ref}".encode()).digest()[:8], "little") & (2**63 - 1)


def tiny_hidden_size(ref: str) -> int:
    """Hidden size of a tiny model (no weights built)."""
    return _tiny_family(ref)[1].hidden_size


def _tiny_config(fam: _TinyFamily, vocab_size: int, **special: Any) -> Any:
    """The transformers config of a tiny family (2 layers, intermediate size twice the hidden size)."""
    import transformers

    return getattr(transformers, fam.config_class)(
        vocab_size=vocab_size, hidden_size=fam.hidden_size, intermediate_size=2 * fam.hidden_size,
        num_hidden_layers=2, max_position_embeddings=2048, **special, **fam.options,
    )


@functools.lru_cache(maxsize=None)
def tiny_size(ref: str) -> ModelSize:
    """Parameter count and KV cache shape of a tiny model, counted on the meta device (no weights)."""
    import torch
    import transformers

    _, fam = _tiny_family(ref)
    config = _tiny_config(fam, 256 + len(_TINY_SPECIALS))  # the byte-level tokenizer's vocab
    with torch.device("meta"):
        model = getattr(transformers, fam.model_class)(config)
    params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or fam.hidden_size // heads)
    return ModelSize(params=params, stored_bytes=None, layers=int(config.num_hidden_layers),
                     kv_heads=int(config.num_key_value_heads or heads), head_dim=head_dim)


def check_tiny_ref(ref: str) -> None:
    """Raise :class:`~recmas_graph.errors.ModelSourceError` unless ``ref`` names a tiny family."""
    _tiny_family(ref)


def load_tiny(ref: str, *, device: "torch.device | str" = "cpu", dtype: "torch.dtype | str | None" = None) -> "LoadedModel":
    """Build a tiny random model (2 layers) of the family ``ref`` names, e.g. ``tiny:gemma3``.

    Weights are drawn from a generator seeded by ``ref``: the same reference gives the same weights
    every time, whatever the global RNG state (which is left untouched).
    """
    import torch
    import transformers

    from .loaded import LoadedModel, freeze, resolve_device, resolve_dtype

    name, fam = _tiny_family(ref)
    tokenizer = build_tiny_tokenizer(add_bos=fam.add_bos, name=ref)
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    config = _tiny_config(fam, len(tokenizer), **special)
    config._name_or_path = ref
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_of(ref))
        model = getattr(transformers, fam.model_class)(config)
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    model.to(device=dev, dtype=torch.float32 if dt == "auto" else dt)
    freeze(model)
    return LoadedModel(ref=ref, model=model, tokenizer=tokenizer, hidden_size=fam.hidden_size,
                       family=config.model_type)


_TINY_OF_FAMILY = (("gemma", "tiny:gemma3"), ("qwen", "tiny:qwen2"), ("deepseek", "tiny:qwen2"),
                   ("smollm", "tiny:llama"), ("llama", "tiny:llama"), ("mistral", "tiny:llama"))


def tiny_counterpart(ref: str) -> str:
    """The tiny random model of the same family as ``ref`` (llama for unknown families).

    >>> tiny_counterpart("meta-llama/Llama-3.2-1B-Instruct"), tiny_counterpart("pkg:gemma3-270m")
    ('tiny:llama', 'tiny:gemma3')
    """
    if ref.startswith("tiny:"):
        return ref
    low = ref.lower()
    for key, tiny in _TINY_OF_FAMILY:
        if key in low:
            return tiny
    return "tiny:llama"
