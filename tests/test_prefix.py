"""Prefix KV reuse: later passes start from the cached KV of an earlier pass's prompt prefix, with
the same answers and messages as full prefills, and only where that is exact."""

from __future__ import annotations

import pytest
import torch

from recmas_graph.runtime.agent.decoding import GenerationOptions, decode
from recmas_graph.runtime.agent.forward import backbone_of
from recmas_graph.runtime.agent.prefix import MIN_REUSE, ModelPrefixes, PrefixCache, prefill
from recmas_graph.runtime.agent.prompts import left_pad
from recmas_graph.runtime.agent.rollout import latent_rollout
from recmas_graph.runtime.sources.loaded import ModelCache
from _builtin import TINY_BUILDABLE

BUILTIN = TINY_BUILDABLE
QUESTIONS = ["What is 2 + 3?", "A farmer has 17 sheep and buys 5 more. How many sheep are there now?"]
RUN = dict(greedy=True, max_new_tokens=10, latent_steps=3, rounds=2, keep_messages=True)


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


@pytest.mark.parametrize("name", BUILTIN)
def test_reuse_gives_the_same_answers_and_messages_as_full_prefills(name: str, cache: ModelCache, registry) -> None:
    system = registry.compile(name).build(models="tiny", model_cache=cache)
    full = system.run(QUESTIONS, reuse_prefix=False, **RUN)
    assert system.runner.reused_tokens == 0
    reused = system.run(QUESTIONS, **RUN)
    assert reused.answers == full.answers
    assert reused.generated_tokens == full.generated_tokens
    assert reused.texts == full.texts
    assert full.messages.keys() == reused.messages.keys()
    for key, message in full.messages.items():
        assert torch.allclose(reused.messages[key], message, atol=1e-5), key
    assert system.runner.prefixes is None  # freed when the run ended
    # each pass's trace row says what it reused (merged passes split it by their rows)
    assert sum(r.reused_tokens for r in reused.trace) == system.runner.reused_tokens
    assert all(r.reused_tokens == 0 for r in full.trace)


def test_a_later_round_prefills_only_what_changed(cache: ModelCache, registry, monkeypatch) -> None:
    import recmas_graph.runtime.agent.decoding as decoding
    import recmas_graph.runtime.agent.rollout as rollout

    calls: list[tuple[int, int]] = []  # per prefill: (leading-text tokens, tokens reused)

    def spy(forward, prompt, config):
        before = prompt.reuse.reused_tokens
        out = prefill(forward, prompt, config)
        calls.append((sum(len(ids) for ids in prompt.prefix_ids), prompt.reuse.reused_tokens - before))
        return out

    monkeypatch.setattr(rollout, "prefill", spy)
    monkeypatch.setattr(decoding, "prefill", spy)
    system = registry.compile("sequential_light").build(models="tiny", model_cache=cache)
    result = system.run(QUESTIONS, **RUN)
    assert [(r.agent, r.round) for r in result.trace] == [("planner", 1), ("critic", 1), ("solver", 1),
                                                          ("planner", 2), ("critic", 2), ("solver", 2)]
    assert calls[0][1] == calls[1][1] == 0  # nothing cached yet for either model
    assert calls[2][1] > 0  # the solver shares the planner's model: the chat head of its prompt is cached
    assert 0 < calls[3][1] < calls[3][0]  # the planner's round-one prompt had no feedback section after the question
    # the critic's and the solver's round-two prompts start with exactly their round-one leading text
    assert calls[4][1] == calls[4][0] and calls[5][1] == calls[5][0]
    assert system.runner.reused_tokens == sum(reused for _, reused in calls)
    assert [r.reused_tokens for r in result.trace] == [reused for _, reused in calls]  # one prefill per pass


def _rows(loaded, texts: list[str]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    embed = loaded.model.get_input_embeddings()
    ids = [torch.tensor(loaded.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    with torch.no_grad():
        return ids, [embed(i) for i in ids]


def _batch(loaded, texts: list[str], prefixes: ModelPrefixes | None, lead: int | None = None):
    ids, rows = _rows(loaded, texts)
    batch = left_pad(rows)
    batch.prefix_ids = [i[:lead] if lead is not None else i for i in ids]
    batch.reuse = prefixes
    return batch


@pytest.mark.parametrize("family", ["tiny:llama", "tiny:qwen2"])
def test_prefill_with_mixed_rows_equals_the_full_prefill(family: str, cache: ModelCache) -> None:
    loaded = cache.get(family)
    backbone = backbone_of(loaded.model)
    shared = "You are a careful assistant. Question: how many legs do three spiders have in total?"
    prefixes = ModelPrefixes()
    with torch.inference_mode():
        first = _batch(loaded, [shared + " Think.", "Something else entirely, of another length."], prefixes)
        latent_rollout(backbone, torch.nn.Identity(), first, 2)  # fills the cache
        assert len(prefixes.entries) == 2 and prefixes.reused_tokens == 0
        # row 0 shares a long prefix, row 1 nothing: one row reuses, the other is prefilled in full
        texts = [shared + " Now answer with one number, please.", "A brand new question with no history."]
        plain = latent_rollout(backbone, torch.nn.Identity(), _batch(loaded, texts, None), 4)
        again = latent_rollout(backbone, torch.nn.Identity(), _batch(loaded, texts, prefixes), 4)
    assert prefixes.reused_tokens >= MIN_REUSE
    assert torch.allclose(again, plain, atol=1e-5)
    options = GenerationOptions(max_new_tokens=12, do_sample=False)
    with torch.inference_mode():
        want = decode(loaded.model, loaded.tokenizer, _batch(loaded, texts, None), options)
        before = prefixes.reused_tokens
        got = decode(loaded.model, loaded.tokenizer, _batch(loaded, texts, prefixes), options)
    assert prefixes.reused_tokens > before
    assert got.texts == want.texts and got.generated_tokens == want.generated_tokens


def test_short_prefixes_and_autograd_prefill_in_full(cache: ModelCache) -> None:
    loaded = cache.get("tiny:llama")
    backbone = backbone_of(loaded.model)
    prefixes = ModelPrefixes()
    text = ["Short one, then more text that differs between the two passes."]
    with torch.inference_mode():
        latent_rollout(backbone, torch.nn.Identity(), _batch(loaded, text, prefixes, lead=MIN_REUSE - 1), 2)
        latent_rollout(backbone, torch.nn.Identity(), _batch(loaded, text, prefixes, lead=MIN_REUSE - 1), 2)
    assert prefixes.entries and prefixes.reused_tokens == 0  # fewer shared tokens than MIN_REUSE
    with torch.inference_mode():
        latent_rollout(backbone, torch.nn.Identity(), _batch(loaded, text, prefixes), 2)
    with torch.enable_grad():
        embeds = _batch(loaded, text, prefixes)
        embeds.embeds = embeds.embeds.clone().requires_grad_(True)
        out = latent_rollout(backbone, torch.nn.Identity(), embeds, 2)
        out.sum().backward()
    assert embeds.embeds.grad is not None and prefixes.reused_tokens == 0  # training recomputes the prefix


def test_sliding_window_layers_reuse_only_where_the_window_sees_the_same_tokens(cache: ModelCache) -> None:
    loaded = cache.get("tiny:gemma3")  # sliding window 64: a layer keeps its last 63 slots
    backbone = backbone_of(loaded.model)

    def run(texts: list[str], prefixes: ModelPrefixes | None, steps: int = 3) -> torch.Tensor:
        with torch.inference_mode():
            return latent_rollout(backbone, torch.nn.Identity(), _batch(loaded, texts, prefixes, lead=30), steps)

    a, b = "abcdefghij" * 3, "zyxwvutsrq" * 3  # 30 byte tokens each: the leading text
    prefixes = ModelPrefixes()
    run([a + "0123456789", b + "0123456789"], prefixes)
    assert torch.allclose(run([a + "9876543210"], prefixes), run([a + "9876543210"], None), atol=1e-5)
    assert prefixes.reused_tokens == 30
    long = a + "x" * 60  # 90 positions: past the window, so the full prefill runs
    assert torch.allclose(run([long], prefixes), run([long], None), atol=1e-5)
    assert prefixes.reused_tokens == 30
    # rests of equal length: no gap in the cache, so reuse stays exact while 40 steps slide the window
    same = [a + "56789", b + "01234"]
    assert torch.allclose(run(same, prefixes, 40), run(same, None, 40), atol=1e-5)
    assert prefixes.reused_tokens == 90
    # rests of 5 and 20 tokens: the short one would have a 15-slot gap that the window counts
    uneven = [a + "56789", b + "0123456789" * 2]
    assert torch.allclose(run(uneven, prefixes, 40), run(uneven, None, 40), atol=1e-5)
    assert prefixes.reused_tokens == 90  # prefilled in full


def test_reuse_is_off_when_recomputing_in_low_memory_mode_or_when_asked(cache: ModelCache, registry) -> None:
    compiled = registry.compile("sequential_light")
    system = compiled.build(models="tiny", model_cache=cache)
    system.run(QUESTIONS, use_cache=False, **RUN)
    assert system.runner.reused_tokens == 0
    system.run(QUESTIONS, reuse_prefix=False, **RUN)
    assert system.runner.reused_tokens == 0
    low = compiled.build(models="tiny", low_memory=True)
    low.run(QUESTIONS, **RUN)
    assert low.runner.reused_tokens == 0


def test_prefix_cache_keeps_one_entry_per_distinct_prefix_within_its_budget(monkeypatch) -> None:
    import recmas_graph.runtime.agent.prefix as prefix_module

    cache = PrefixCache()
    model = object()
    prefixes = cache.of(model)
    assert cache.of(model) is prefixes and cache.of(object()) is not prefixes
    kv = [(torch.zeros(1, 4, 2), torch.zeros(1, 4, 2))]
    prefixes.add(torch.tensor([1, 2, 3, 4]), kv)
    prefixes.add(torch.tensor([1, 2, 3, 4]), kv)  # the same prefix again
    assert len(prefixes.entries) == 1 and prefixes.bytes == 64
    assert prefixes.match(torch.tensor([1, 2, 3, 4])) == (4, prefixes.entries[0])
    assert prefixes.match(torch.tensor([1, 2, 3]))[0] == 3
    assert prefixes.match(torch.tensor([1, 2, 9, 9, 9]))[0] == 2
    assert prefixes.match(torch.tensor([5]))[0] == 0
    monkeypatch.setattr(prefix_module, "MAX_BYTES", 100)
    prefixes.add(torch.tensor([7, 7]), kv)  # 64 more bytes would pass the budget: not kept
    assert len(prefixes.entries) == 1
    prefixes.reused_tokens = 7
    assert cache.reused_tokens == 7
    cache.clear()
    assert cache.of(model) is not prefixes and not prefixes.entries and prefixes.bytes == 0
