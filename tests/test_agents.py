"""Agent runtime: KV-cached rollout vs the reference recompute, padding invariance, splicing, decoding."""

from __future__ import annotations

import pytest
import torch

from recmas_graph.agents import Agent, GenerationOptions, PromptBatch, position_ids_from_mask
from recmas_graph.links import InnerLnRes
from recmas_graph.models import ModelCache
from recmas_graph.roles import slot_marker
from recmas_graph.spec import AgentSpec

FAMILIES = ["tiny:llama", "tiny:qwen2", "tiny:gemma3"]
QUESTIONS = [
    "What is 2 + 3?",
    "A train travels 60 km in 45 minutes. How far does it travel in two hours at the same speed?",
    "Name a prime number larger than 10.",
]


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def make_agent(cache: ModelCache, ref: str, role: str = "solver", registry=None) -> Agent:
    from recmas_graph.registry import Registry

    reg = registry or Registry.create(load_entrypoints=False)
    lm = cache.get(ref)
    torch.manual_seed(1)
    inner = InnerLnRes(lm.hidden_size, init="torch")  # a non-trivial inner link
    return Agent(AgentSpec(name="a", role=role, model=ref), lm, reg.roles[role], inner)


@pytest.mark.parametrize("ref", FAMILIES)
def test_cached_rollout_equals_full_recompute(cache: ModelCache, ref: str) -> None:
    agent = make_agent(cache, ref)
    prompt = agent.build_prompts(QUESTIONS[:2], "math")
    assert prompt.embeds.shape[1] > 64  # longer than tiny Gemma's sliding window
    cached = agent.latent_rollout(prompt, 12, use_cache=True)
    recompute = agent.latent_rollout(prompt, 12, use_cache=False)
    assert cached.shape == (2, 12, agent.hidden_size)
    torch.testing.assert_close(cached, recompute, rtol=1e-4, atol=1e-4)
    # the thoughts are not trivially constant: successive steps differ
    assert (cached[:, 1:] - cached[:, :-1]).abs().max() > 1e-3


@pytest.mark.parametrize("ref", FAMILIES)
def test_rollout_matches_the_reference_loop_literally(cache: ModelCache, ref: str) -> None:
    """The reference records h, then appends inner(h) and recomputes with the full LM (m passes)."""
    agent = make_agent(cache, ref)
    prompt = agent.build_prompts([QUESTIONS[1]], "math")  # one sample, no padding
    embeds, mask, recorded = prompt.embeds, prompt.mask, []
    with torch.no_grad():
        for _ in range(6):
            out = agent.model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True, use_cache=False)
            h = out.hidden_states[-1][:, -1, :]
            recorded.append(h)
            embeds = torch.cat([embeds, agent.inner_link(h)[:, None]], dim=1)
            mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
    reference = torch.stack(recorded, dim=1)
    torch.testing.assert_close(agent.latent_rollout(prompt, 6), reference, rtol=1e-4, atol=1e-4)


def test_generation_options_are_checked() -> None:
    from recmas_graph.errors import RunError

    for bad in ({"top_p": 0.0}, {"temperature": -1.0}, {"max_new_tokens": 0}):
        with pytest.raises(RunError):
            GenerationOptions(**bad)


@pytest.mark.parametrize("ref", FAMILIES)
def test_sample_alone_equals_sample_in_padded_batch(cache: ModelCache, ref: str) -> None:
    agent = make_agent(cache, ref)
    batch = agent.build_prompts(QUESTIONS, "math")
    assert len(set(batch.lengths)) == 3  # different lengths, so real left padding
    batch_thoughts = agent.latent_rollout(batch, 8)
    greedy = GenerationOptions(max_new_tokens=12, do_sample=False)
    batch_text = agent.decode(batch, greedy)
    for i, question in enumerate(QUESTIONS):
        alone = agent.build_prompts([question], "math")
        torch.testing.assert_close(agent.latent_rollout(alone, 8)[0], batch_thoughts[i], rtol=1e-4, atol=1e-4)
        result = agent.decode(alone, greedy)
        assert result.texts[0] == batch_text.texts[i]
        assert result.generated_tokens[0] == batch_text.generated_tokens[i]


def test_position_ids_follow_the_mask() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_latent_message_is_spliced_at_its_slot(cache: ModelCache) -> None:
    agent = make_agent(cache, "tiny:llama")
    msg = torch.randn(1, 5, agent.hidden_size)
    with_msg = agent.build_prompts([QUESTIONS[0]], "math", latent={"plan": msg})
    without = agent.build_prompts([QUESTIONS[0]], "math")
    rendered = agent.render(QUESTIONS[0], "math", ["plan"], {})
    assert slot_marker("plan") in rendered
    before, after = rendered.split(slot_marker("plan"))
    n_before = len(agent.tokenizer(before, add_special_tokens=False).input_ids)
    torch.testing.assert_close(with_msg.embeds[0, n_before : n_before + 5], msg[0])
    # the slot's section (header + message) is left out when there is no message
    assert with_msg.lengths[0] > without.lengths[0] + 5
    assert "Plan from the Planner" not in agent.render(QUESTIONS[0], "math", [], {})


def test_unknown_slot_gets_a_generic_section_named_after_the_sender(cache: ModelCache) -> None:
    agent = make_agent(cache, "tiny:llama")
    text = agent.render("Q?", "math", ["hints"], {"hints": "try small cases"}, {"hints": "helper"})
    assert "Message from helper:\ntry small cases" in text


def test_plain_prompt_format_without_chat_template(cache: ModelCache) -> None:
    agent = make_agent(cache, "tiny:llama")
    template = agent.tokenizer.chat_template
    try:
        agent.tokenizer.chat_template = None
        text = agent.render("What is 1+1?", "math", [], {})
        assert "### Question" in text and "<|im_start|>" not in text
        assert agent.build_prompts(["What is 1+1?"], "math").lengths[0] > 0
    finally:
        agent.tokenizer.chat_template = template


def test_sampling_is_seeded_and_respects_max_tokens(cache: ModelCache) -> None:
    agent = make_agent(cache, "tiny:qwen2")
    prompt = agent.build_prompts(QUESTIONS[:2], "math")
    opts = GenerationOptions(max_new_tokens=7, do_sample=True, temperature=1.0, top_p=0.9)
    a = agent.decode(prompt, opts, generator=torch.Generator().manual_seed(3))
    b = agent.decode(prompt, opts, generator=torch.Generator().manual_seed(3))
    assert a.texts == b.texts
    assert all(n <= 7 for n in a.generated_tokens)


def test_zero_latent_steps_give_empty_thoughts(cache: ModelCache) -> None:
    agent = make_agent(cache, "tiny:llama")
    prompt = agent.build_prompts(["Q"], "math")
    assert agent.latent_rollout(prompt, 0).shape == (1, 0, agent.hidden_size)


def test_left_padded_batch_layout(cache: ModelCache) -> None:
    agent = make_agent(cache, "tiny:gemma3")
    batch: PromptBatch = agent.build_prompts(QUESTIONS, "choice")
    T = batch.embeds.shape[1]
    for i, n in enumerate(batch.lengths):
        assert batch.mask[i].tolist() == [0] * (T - n) + [1] * n
