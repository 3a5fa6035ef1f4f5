"""Agent runtime: KV-cached rollout vs the reference recompute, padding invariance, splicing, decoding on device."""

from __future__ import annotations

import pytest
import torch

from recmas_graph.errors import RunError
from recmas_graph.plugins.builtin_roles import BUILTIN_ROLES
from recmas_graph.runtime.agent.agent import Agent
from recmas_graph.runtime.agent.decoding import GenerationOptions, Sampling, answer_end_id, decode
from recmas_graph.runtime.agent.forward import position_ids_from_mask
from recmas_graph.runtime.links.modules import InnerLnRes
from recmas_graph.runtime.agent.prompts import PromptBatch
from recmas_graph.runtime.sources.loaded import ModelCache
from recmas_graph.topology.roles import slot_marker
from recmas_graph.topology.spec import AgentSpec

FAMILIES = ["tiny:llama", "tiny:qwen2", "tiny:gemma3"]
QUESTIONS = [
    "What is 2 + 3?",
    "A train travels 60 km in 45 minutes. How far does it travel in two hours at the same speed?",
    "Name a prime number larger than 10.",
]
GREEDY = GenerationOptions(max_new_tokens=12, do_sample=False)


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def make_agent(cache: ModelCache, ref: str, role: str = "solver") -> tuple[Agent, InnerLnRes]:
    lm = cache.get(ref)
    torch.manual_seed(1)
    inner = InnerLnRes(lm.hidden_size, init="torch")  # a non-trivial inner link
    return Agent(AgentSpec(name="a", role=role, model=ref), lm, BUILTIN_ROLES[role]), inner


@pytest.mark.parametrize("ref", FAMILIES)
def test_cached_rollout_equals_full_recompute(cache: ModelCache, ref: str) -> None:
    agent, inner = make_agent(cache, ref)
    prompt = agent.build_prompts(QUESTIONS[:2], "math")
    assert prompt.embeds.shape[1] > 64  # longer than tiny Gemma's sliding window
    with torch.inference_mode():
        cached = agent.think(prompt, 12, inner, use_cache=True)
        recompute = agent.think(prompt, 12, inner, use_cache=False)
    assert cached.shape == (2, 12, agent.hidden_size)
    torch.testing.assert_close(cached, recompute, rtol=1e-4, atol=1e-4)
    # the thoughts are not trivially constant: successive steps differ
    assert (cached[:, 1:] - cached[:, :-1]).abs().max() > 1e-3


@pytest.mark.parametrize("ref", FAMILIES)
def test_rollout_matches_the_reference_loop_literally(cache: ModelCache, ref: str) -> None:
    """The reference records h, then appends inner(h) and recomputes with the full LM (m passes)."""
    agent, inner = make_agent(cache, ref)
    prompt = agent.build_prompts([QUESTIONS[1]], "math")  # one sample, no padding
    embeds, mask, recorded = prompt.embeds, prompt.mask, []
    with torch.no_grad():
        for _ in range(6):
            out = agent.model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True, use_cache=False)
            h = out.hidden_states[-1][:, -1, :]
            recorded.append(h)
            embeds = torch.cat([embeds, inner(h)[:, None]], dim=1)
            mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
        reference = torch.stack(recorded, dim=1)
        torch.testing.assert_close(agent.think(prompt, 6, inner), reference, rtol=1e-4, atol=1e-4)


def test_generation_options_are_checked() -> None:
    for bad in ({"top_p": 0.0}, {"temperature": -1.0}, {"max_new_tokens": 0}, {"top_k": -1}, {"min_p": 1.5},
                {"repetition_penalty": 0.0}):
        with pytest.raises(RunError):
            GenerationOptions(**bad)


@pytest.mark.parametrize("ref", FAMILIES)
def test_sample_alone_equals_sample_in_padded_batch(cache: ModelCache, ref: str) -> None:
    agent, inner = make_agent(cache, ref)
    batch = agent.build_prompts(QUESTIONS, "math")
    assert len(set(batch.lengths)) == 3  # different lengths, so real left padding
    with torch.inference_mode():
        batch_thoughts = agent.think(batch, 8, inner)
        batch_text = agent.decode(batch, GREEDY, seeds=[0, 1, 2])
        for i, question in enumerate(QUESTIONS):
            alone = agent.build_prompts([question], "math")
            torch.testing.assert_close(agent.think(alone, 8, inner)[0], batch_thoughts[i], rtol=1e-4, atol=1e-4)
            result = agent.decode(alone, GREEDY, seeds=[i])
            assert result.texts[0] == batch_text.texts[i]
            assert result.generated_tokens[0] == batch_text.generated_tokens[i]


@pytest.mark.parametrize("ref", FAMILIES)
def test_greedy_decode_equals_hf_generate(cache: ModelCache, ref: str) -> None:
    agent, _ = make_agent(cache, ref)
    batch = agent.build_prompts(QUESTIONS, "math")
    options = GenerationOptions(max_new_tokens=24, do_sample=False)
    with torch.inference_mode():
        ours = agent.decode(batch, options, seeds=[0, 1, 2])
        hf = agent.model.generate(inputs_embeds=batch.embeds, attention_mask=batch.mask, max_new_tokens=24,
                                  do_sample=False)
        assert ours.texts == [agent.tokenizer.decode(row, skip_special_tokens=True) for row in hf.tolist()]
        # rows that finish early: make a token the first row writes at step 5 the end of sequence
        stop_id = hf[0, 5].item()
        early = decode(agent.model, agent.tokenizer, batch, options, eos_ids=[stop_id])
        hf_early = agent.model.generate(inputs_embeds=batch.embeds, attention_mask=batch.mask, max_new_tokens=24,
                                        do_sample=False, eos_token_id=stop_id, pad_token_id=agent.tokenizer.pad_token_id)
    expected = []
    for row in hf_early.tolist():
        cut = row.index(stop_id) if stop_id in row else len(row)
        expected.append(agent.tokenizer.decode(row[:cut], skip_special_tokens=True))
    assert early.texts == expected and early.generated_tokens[0] <= 5
    assert max(early.generated_tokens) > early.generated_tokens[0] or len(set(early.generated_tokens)) == 1


def test_sampling_depends_on_the_seed_not_on_the_batch(cache: ModelCache) -> None:
    agent, _ = make_agent(cache, "tiny:qwen2")
    options = GenerationOptions(max_new_tokens=16, temperature=1.0, top_p=0.95, top_k=0)
    with torch.inference_mode():
        batch = agent.decode(agent.build_prompts(QUESTIONS, "math"), options, seeds=[10, 11, 12])
        again = agent.decode(agent.build_prompts(QUESTIONS, "math"), options, seeds=[10, 11, 12])
        middle = agent.decode(agent.build_prompts(QUESTIONS[1:2], "math"), options, seeds=[11])
        other = agent.decode(agent.build_prompts(QUESTIONS, "math"), options, seeds=[20, 21, 22])
    assert batch.texts == again.texts
    assert middle.texts[0] == batch.texts[1]
    assert other.texts != batch.texts  # another seed, other samples (random tiny models: near-uniform)
    assert all(n <= 16 for n in batch.generated_tokens)


def test_sampled_tokens_follow_the_distribution() -> None:
    """The seeded Gumbel-max sampler draws each token with its softmax probability."""
    from recmas_graph.runtime.agent.sampling import row_keys, sample

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    keys = row_keys([7], 0, torch.device("cpu"))
    draws = torch.stack([sample(logits, keys, t) for t in range(20000)]).flatten()
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015, rtol=0)


def test_sampler_never_draws_filtered_or_near_impossible_tokens_whatever_the_batch() -> None:
    """A large vocabulary: a row left with two tokens after top-p never draws another one, alone or
    next to a flat row, and a token of probability ~1e-13 is never drawn (finite noise only)."""
    from recmas_graph.runtime.agent.sampling import gumbel, row_keys, sample

    V, steps = 152_000, 1500
    peaked = torch.full((V,), float("-inf"))
    peaked[[11, 12]] = torch.tensor([0.0, -1.0])
    tiny = torch.full((V,), -30.0)
    tiny[5] = 0.0  # every other token has probability ~ e^-30 / V ... vanishingly small
    flat = torch.zeros(V)
    keys_alone, keys_pair = row_keys([3], 0, torch.device("cpu")), row_keys([3, 4], 0, torch.device("cpu"))
    alone = torch.stack([sample(peaked[None], keys_alone, t) for t in range(steps)]).flatten()
    paired = torch.stack([sample(torch.stack([peaked, flat]), keys_pair, t) for t in range(steps)])[:, 0]
    assert set(alone.tolist()) <= {11, 12} and torch.equal(alone, paired)
    drawn = torch.stack([sample(tiny[None], keys_alone, t) for t in range(300)]).flatten()
    assert set(drawn.tolist()) == {5}
    noise = gumbel(keys_pair, 0, torch.arange(V).expand(2, V))
    assert torch.isfinite(noise).all()


def test_top_k_one_is_greedy_and_the_model_generation_config_is_honoured(cache: ModelCache) -> None:
    agent, _ = make_agent(cache, "tiny:llama")
    batch = agent.build_prompts(QUESTIONS[:2], "math")
    with torch.inference_mode():
        greedy = agent.decode(batch, GREEDY, seeds=[0, 1]).texts
        assert agent.decode(batch, GREEDY.replace(do_sample=True, top_k=1), seeds=[5, 6]).texts == greedy
        config = agent.model.generation_config
        old = config.top_k
        try:
            config.top_k = 1  # options leave top_k unset: the model's generation config decides
            sampled = agent.decode(batch, GREEDY.replace(do_sample=True, temperature=1.5, top_p=None), seeds=[5, 6])
        finally:
            config.top_k = old
    assert sampled.texts == greedy
    settings = Sampling.resolve(GenerationOptions(top_k=None, top_p=None, temperature=None), config)
    assert (settings.top_k, settings.top_p, settings.temperature) == (50, 1.0, 1.0)  # transformers' defaults


def test_stop_strings_end_decoding_on_device(cache: ModelCache) -> None:
    agent, _ = make_agent(cache, "tiny:llama")
    lm = agent.loaded
    prompt = agent.build_prompts(["Q"], "math")
    with torch.inference_mode():
        free = decode(lm.model, lm.tokenizer, prompt, GenerationOptions(max_new_tokens=30, do_sample=False))
        text = free.texts[0]
        stop = next(c for c in text[3:] if c.isascii() and c.isprintable())  # a character the answer contains
        cut = decode(lm.model, lm.tokenizer, prompt, GenerationOptions(max_new_tokens=30, do_sample=False, stop=(stop,)))
    assert cut.texts[0].endswith(stop) and text.startswith(cut.texts[0])
    assert cut.generated_tokens[0] < free.generated_tokens[0]


def test_a_stop_string_spanning_several_tokens_stops_only_its_row(cache: ModelCache) -> None:
    agent, _ = make_agent(cache, "tiny:llama")
    lm = agent.loaded
    batch = agent.build_prompts(QUESTIONS[:2], "math")
    options = GenerationOptions(max_new_tokens=30, do_sample=False)
    with torch.inference_mode():
        free = decode(lm.model, lm.tokenizer, batch, options)

        def window(a: int, b: int) -> str | None:  # 3 printable ASCII characters only row a writes
            text = free.texts[a]
            return next((text[i:i + 3] for i in range(len(text) - 3) if text[i:i + 3].isascii()
                         and text[i:i + 3].isprintable() and text[i:i + 3] not in free.texts[b]), None)

        a, stop = next((a, w) for a, b in ((0, 1), (1, 0)) if (w := window(a, b)) is not None)
        cut = decode(lm.model, lm.tokenizer, batch, options.replace(stop=(stop,)))
    other = 1 - a
    assert len(lm.tokenizer(stop, add_special_tokens=False).input_ids) == 3  # it spans three tokens
    assert cut.texts[a].endswith(stop) and len(cut.texts[a]) < len(free.texts[a])
    assert cut.texts[other] == free.texts[other] and cut.generated_tokens[other] == free.generated_tokens[other]


def test_position_ids_follow_the_mask() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_latent_message_is_spliced_at_its_slot(cache: ModelCache) -> None:
    agent, _ = make_agent(cache, "tiny:llama")
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


def test_spliced_prompt_is_differentiable_in_the_message(cache: ModelCache) -> None:
    agent, _ = make_agent(cache, "tiny:qwen2")
    msg = torch.randn(2, 3, agent.hidden_size, requires_grad=True)
    prompt = agent.build_prompts(QUESTIONS[:2], "math", latent={"plan": msg})
    prompt.embeds.sum().backward()
    assert msg.grad is not None and torch.equal(msg.grad, torch.ones_like(msg))


def test_unknown_slot_gets_a_generic_section_named_after_the_sender(cache: ModelCache) -> None:
    agent, _ = make_agent(cache, "tiny:llama")
    text = agent.render("Q?", "math", ["hints"], {"hints": "try small cases"}, {"hints": "helper"})
    assert "Message from helper:\ntry small cases" in text


def test_plain_prompt_format_without_chat_template(cache: ModelCache) -> None:
    agent, _ = make_agent(cache, "tiny:llama")
    template = agent.tokenizer.chat_template
    try:
        agent.tokenizer.chat_template = None
        text = agent.render("What is 1+1?", "math", [], {})
        assert "### Question" in text and "<|im_start|>" not in text
        assert agent.build_prompts(["What is 1+1?"], "math").lengths[0] > 0
    finally:
        agent.tokenizer.chat_template = template


def test_zero_latent_steps_give_empty_thoughts(cache: ModelCache) -> None:
    agent, inner = make_agent(cache, "tiny:llama")
    prompt = agent.build_prompts(["Q"], "math")
    assert agent.think(prompt, 0, inner).shape == (1, 0, agent.hidden_size)


def test_left_padded_batch_layout(cache: ModelCache) -> None:
    agent, _ = make_agent(cache, "tiny:gemma3")
    batch: PromptBatch = agent.build_prompts(QUESTIONS, "choice")
    T = batch.embeds.shape[1]
    for i, n in enumerate(batch.lengths):
        assert batch.mask[i].tolist() == [0] * (T - n) + [1] * n


def test_the_answer_loss_ends_answers_with_the_end_of_turn_token(cache: ModelCache) -> None:
    lm = cache.get("tiny:llama")
    assert answer_end_id(lm.tokenizer) == lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    template = lm.tokenizer.chat_template
    try:
        lm.tokenizer.chat_template = None  # a base model: its end-of-sequence token
        assert answer_end_id(lm.tokenizer) == lm.tokenizer.eos_token_id
    finally:
        lm.tokenizer.chat_template = template
