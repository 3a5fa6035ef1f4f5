"""Model sources: tiny test models, HF folders, the model cache, resolution errors, packaged models."""

from __future__ import annotations

import inspect
import json
import time

import pytest
import torch

from recmas_graph.errors import ModelSourceError
from recmas_graph.runtime.sources.loaded import LoadedModel, ModelCache, hidden_size_of, load_model, resolve_dtype
from recmas_graph.runtime.sources.tiny import CHATML_TEMPLATE, TINY_FAMILIES
from recmas_graph.topology.catalog import resolve_model_source

TINY = ["tiny:llama", "tiny:qwen2", "tiny:gemma3"]


def _cache_kw(model) -> str:
    """The forward keyword of the KV cache (``cache`` in recent transformers 5.x, else ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _out_cache(out):
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


# ---------------------------------------------------------------------------------------------- tiny


@pytest.mark.parametrize("ref", TINY)
def test_tiny_loads_fast_and_frozen(ref: str, registry) -> None:
    load_model("tiny:llama", sources=registry.model_sources)  # warm the transformers import
    start = time.perf_counter()
    lm = load_model(ref, sources=registry.model_sources)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"{ref} took {elapsed:.2f} s"
    assert isinstance(lm, LoadedModel) and lm.ref == ref
    assert lm.hidden_size == TINY_FAMILIES[ref.split(":")[1]].hidden_size
    assert lm.model.config.hidden_size == lm.hidden_size
    assert lm.model.get_input_embeddings().weight.shape == (len(lm.tokenizer), lm.hidden_size)
    assert lm.model.config.vocab_size == len(lm.tokenizer)
    assert lm.model.config.num_hidden_layers == 2
    assert not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert lm.device == torch.device("cpu") and lm.dtype == torch.float32
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token is not None
    assert lm.tokenizer.bos_token and lm.tokenizer.eos_token
    assert lm.has_chat_template


def test_tiny_families_differ(registry) -> None:
    loaded = [load_model(ref, sources=registry.model_sources) for ref in TINY]
    assert len({lm.hidden_size for lm in loaded}) == 3
    assert [lm.family for lm in loaded] == ["llama", "qwen2", "gemma3_text"]
    assert [type(lm.model).__name__ for lm in loaded] == ["LlamaForCausalLM", "Qwen2ForCausalLM", "Gemma3ForCausalLM"]


@pytest.mark.parametrize("ref", TINY)
def test_tiny_weights_deterministic_and_rng_untouched(ref: str, registry) -> None:
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    a = load_model(ref, sources=registry.model_sources)
    assert torch.equal(torch.random.get_rng_state(), state), "loading must not consume the global RNG"
    torch.manual_seed(12345)
    b = load_model(ref, sources=registry.model_sources)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.model.get_input_embeddings().weight.std() > 0  # really random, not zeros


@pytest.mark.parametrize("ref", TINY)
def test_tiny_tokenizer_round_trip_and_template(ref: str, registry) -> None:
    tok = load_model(ref, sources=registry.model_sources).tokenizer
    for text in ["Hello, world!", "  two  spaces\tand tab\nnew line", "x = 3 * (4 + 5) // 2; print(x)", "",
                 "ünïcödé ✓ 数学"]:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text
        assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "2+2?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert rendered == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    no_prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert not no_prompt.endswith("assistant\n")
    assert tok.chat_template == CHATML_TEMPLATE
    # the markers are single special tokens
    ids = tok("<|im_start|>user<|im_end|>", add_special_tokens=False).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids[-1] == tok.eos_token_id


@pytest.mark.parametrize("ref", TINY)
def test_tiny_generate_from_inputs_embeds(ref: str, registry) -> None:
    lm = load_model(ref, sources=registry.model_sources)
    tok = lm.tokenizer
    batch = tok(["a longer first prompt", "short"], return_tensors="pt", padding=True)
    assert batch.attention_mask[1, 0] == 0  # left padded
    embeds = lm.model.get_input_embeddings()(batch.input_ids)  # (B, T, H)
    out = lm.model.generate(inputs_embeds=embeds, attention_mask=batch.attention_mask, max_new_tokens=4,
                            min_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (2, 4)  # only the new tokens
    assert isinstance(tok.decode(out[0]), str)


@pytest.mark.parametrize("ref", TINY)
def test_tiny_cached_step_matches_recompute_under_left_padding(ref: str, registry) -> None:
    """A long left-padded prompt (past gemma's sliding window of 64) + one cached embedding step."""
    lm = load_model(ref, sources=registry.model_sources)
    model, tok = lm.model, lm.tokenizer
    texts = ["word " * 30, "other " * 5]
    batch = tok(texts, return_tensors="pt", padding=True)
    mask = batch.attention_mask  # (B, T)
    embeds = model.get_input_embeddings()(batch.input_ids)  # (B, T, H)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    kw = _cache_kw(model)
    out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                output_hidden_states=True)
    h = out.hidden_states[-1][:, -1:, :]  # (B, 1, H)
    step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    step_pos = positions[:, -1:] + 1
    cached = model(inputs_embeds=h, attention_mask=step_mask, position_ids=step_pos, use_cache=True,
                   output_hidden_states=True, **{kw: _out_cache(out)})
    full = model(inputs_embeds=torch.cat([embeds, h], 1), attention_mask=step_mask,
                 position_ids=torch.cat([positions, step_pos], 1), output_hidden_states=True)
    torch.testing.assert_close(cached.hidden_states[-1][:, -1], full.hidden_states[-1][:, -1], rtol=1e-4, atol=1e-5)
    # the short sample alone gives the same last hidden state as inside the padded batch
    alone = tok([texts[1]], return_tensors="pt")
    e1 = model.get_input_embeddings()(alone.input_ids)
    single = model(inputs_embeds=e1, attention_mask=alone.attention_mask, output_hidden_states=True)
    torch.testing.assert_close(single.hidden_states[-1][0, -1], out.hidden_states[-1][1, -1], rtol=1e-4, atol=1e-5)


def test_hidden_size_of_does_not_load(registry, monkeypatch) -> None:
    import recmas_graph.runtime.sources.loaded as loaded
    import recmas_graph.runtime.sources.packaged as packaged
    import recmas_graph.runtime.sources.tiny as tiny

    def boom(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(tiny, "load_tiny", boom)
    monkeypatch.setattr(packaged, "load_packaged", boom)
    monkeypatch.setattr(packaged, "ensure_converted", boom)
    monkeypatch.setattr(loaded, "load_model", boom)
    assert [hidden_size_of(r, registry.model_sources) for r in TINY] == [64, 48, 80]
    assert hidden_size_of("pkg:smollm2-135m-instruct", registry.model_sources) == 576
    assert hidden_size_of("pkg:gemma3-270m", registry.model_sources) == 640


# ------------------------------------------------------------------------------------ local folders


def test_local_folder_round_trip(tmp_path, registry) -> None:
    tiny = load_model("tiny:qwen2", sources=registry.model_sources)
    folder = tmp_path / "my-model"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    assert hidden_size_of(str(folder), registry.model_sources) == 48
    lm = load_model(str(folder), sources=registry.model_sources, dtype="bf16")
    assert lm.family == "qwen2" and lm.hidden_size == 48 and lm.dtype == torch.bfloat16
    assert lm.has_chat_template and lm.tokenizer.padding_side == "left"
    assert not any(p.requires_grad for p in lm.model.parameters())
    ids = lm.tokenizer("same text", return_tensors="pt").input_ids
    torch.testing.assert_close(lm.model(ids).logits.float(), tiny.model(ids).logits, rtol=0.05, atol=0.05)


def test_hidden_size_from_nested_text_config(tmp_path, registry) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": {"hidden_size": 2560}}))
    assert hidden_size_of(str(tmp_path), registry.model_sources) == 2560


# ------------------------------------------------------------------------------------------- cache


def test_model_cache_shares_equal_refs(registry) -> None:
    cache = ModelCache(registry.model_sources)
    a = cache.get("tiny:llama")
    b = cache.get("tiny:llama", device=torch.device("cpu"), dtype=torch.float32)
    c = cache.get(" tiny:llama ", device="cpu", dtype="fp32")
    assert a is b is c and len(cache) == 1
    assert "tiny:llama" in cache and ModelCache.key("tiny:llama") in cache and "tiny:qwen2" not in cache
    d = cache.get("tiny:llama", dtype="bfloat16")
    e = cache.get("tiny:gemma3")
    assert d is not a and d.dtype == torch.bfloat16 and e is not a
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0


# ------------------------------------------------------------------------------------------ errors


def test_unknown_prefix_lists_known_prefixes(registry) -> None:
    with pytest.raises(ModelSourceError) as info:
        load_model("foo:bar", sources=registry.model_sources)
    text = str(info.value)
    assert "foo" in text and "tiny:" in text and "pkg:" in text
    with pytest.raises(ModelSourceError):
        hidden_size_of("foo:bar", registry.model_sources)


def test_paths_and_hf_ids_are_not_prefixes(registry) -> None:
    assert resolve_model_source("Qwen/Qwen3-1.7B", registry.model_sources).prefix == ""
    assert resolve_model_source("C:\\models\\qwen", registry.model_sources).prefix == ""
    assert resolve_model_source("./some/folder", registry.model_sources).prefix == ""
    assert resolve_model_source("tiny:llama", registry.model_sources).prefix == "tiny"


def test_missing_hf_model_is_a_helpful_error(registry) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelSourceError) as info:
        load_model("nobody-here/not-a-real-model-xyz", sources=registry.model_sources)
    text = str(info.value)
    assert "not available locally" in text
    assert "download" in text and "local folder" in text and "pkg:" in text and "tiny:" in text
    with pytest.raises(ModelSourceError, match="not available locally"):
        hidden_size_of("nobody-here/not-a-real-model-xyz", registry.model_sources)
    assert time.perf_counter() - start < 30  # no network retries


def test_other_bad_references(tmp_path, registry) -> None:
    with pytest.raises(ModelSourceError, match="tiny:gemma3"):
        load_model("tiny:mistral", sources=registry.model_sources)
    with pytest.raises(ModelSourceError, match="no such folder"):
        load_model(str(tmp_path / "missing"), sources=registry.model_sources)
    with pytest.raises(ModelSourceError, match="config.json"):
        load_model(str(tmp_path), sources=registry.model_sources)
    with pytest.raises(ModelSourceError, match="pkg:gemma3-270m"):
        load_model("pkg:nope", sources=registry.model_sources)
    with pytest.raises(ModelSourceError, match="unknown dtype"):
        load_model("tiny:llama", dtype="float8", sources=registry.model_sources)
    with pytest.raises(ModelSourceError):
        load_model("", sources=registry.model_sources)
    if not torch.cuda.is_available():
        with pytest.raises(ModelSourceError, match="CUDA"):
            load_model("tiny:llama", device="cuda", sources=registry.model_sources)


def test_resolve_dtype() -> None:
    assert resolve_dtype(None) is torch.float32
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype("auto") == "auto"
    with pytest.raises(ModelSourceError):
        resolve_dtype(torch.int8)


def test_plugin_loader_must_return_loaded_model(registry) -> None:
    from recmas_graph.plugins.hookspecs import hookimpl
    from recmas_graph.plugins.manager import Registry
    from recmas_graph.topology.catalog import ModelSource

    class Plugin:
        @hookimpl
        def recmas_model_sources(self):
            return [ModelSource("bad", lambda ref, **kw: object(), "returns junk")]

    reg = Registry.create([Plugin()], load_entrypoints=False)
    with pytest.raises(ModelSourceError, match="LoadedModel"):
        load_model("bad:thing", sources=reg.model_sources)


# -------------------------------------------------------------------------------------------- real


def _packages_installed(name: str) -> bool:
    from recmas_graph.runtime.sources.assets import get_packaged_model, missing_packages

    return not missing_packages(get_packaged_model(name))


@pytest.mark.real
@pytest.mark.parametrize(
    "ref, hidden, family, chat",
    [("pkg:smollm2-135m-instruct", 576, "llama", True), ("pkg:gemma3-270m", 640, "gemma3_text", False)],
)
def test_packaged_model_loads_and_generates(ref: str, hidden: int, family: str, chat: bool, registry) -> None:
    if not _packages_installed(ref):
        pytest.skip(f"{ref} is not installed (recmas assets install)")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    lm = load_model(ref, sources=registry.model_sources)  # converts once into the cache on first use
    assert lm.hidden_size == hidden and lm.family == family and lm.has_chat_template is chat
    assert lm.dtype == torch.float32 and not lm.model.training
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token is not None
    tok = lm.tokenizer
    if chat:
        prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         tokenize=False, add_generation_prompt=True, enable_thinking=False)
    else:
        prompt = "Question: What is the capital of France?\nAnswer:"
    batch = tok(prompt, return_tensors="pt", add_special_tokens=not chat)
    embeds = lm.model.get_input_embeddings()(batch.input_ids)
    out = lm.model.generate(inputs_embeds=embeds, attention_mask=batch.attention_mask, max_new_tokens=6,
                            do_sample=False)
    text = tok.decode(out[0], skip_special_tokens=True)
    assert text.strip(), f"empty generation from {ref}"


def test_folder_without_tokenizer_is_a_clear_error(tmp_path) -> None:
    from recmas_graph.errors import ModelSourceError
    from recmas_graph.runtime.sources.loaded import load_model
    from recmas_graph.runtime.sources.tiny import load_tiny

    tiny = load_tiny("tiny:llama")
    tiny.model.save_pretrained(tmp_path / "m")  # weights and config, no tokenizer files
    with pytest.raises(ModelSourceError, match="tokenizer"):
        load_model(str(tmp_path / "m"))
