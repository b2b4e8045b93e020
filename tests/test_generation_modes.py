"""generate() on every architecture, each mode checked exactly against a plain reference: beam search with and
without the cache, assisted decoding against greedy, continuing from a returned cache against one call,
`inputs_embeds` prompts against `input_ids` prompts. The installed transformers names the cache `cache` (>= 5.24)
or `past_key_values`; both work, and generation warns about neither."""

import warnings

import pytest
import torch

from modeling_plm import PLMForCausalLM, PLMTokenizerFast
from modeling_plm.modeling_plm import CACHE_NAME

from .test_modeling import make_model

ARCHITECTURES = ["modern", "esm", "xtrimopglm"]
PROMPTS = ["MKTAYIAKQR", "MSLRSEH", "MGDVEKGKKIFVQKCAQ"]


@pytest.fixture(scope="module")
def tokenizer() -> PLMTokenizerFast:
    return PLMTokenizerFast()


def left_padded(tokenizer: PLMTokenizerFast, prompts: list[str]) -> dict[str, torch.Tensor]:
    """<bos> + residues, left-padded as generation needs."""
    encoded = [[tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, encoded))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(e)) + e for e in encoded])
    attention_mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def generate(model: PLMForCausalLM, tokenizer: PLMTokenizerFast, **kwargs):
    options = dict(do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None, max_new_tokens=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output = model.generate(**{**options, **kwargs})
    deprecated = [str(w.message) for w in caught if "deprecated" in str(w.message)]
    assert not deprecated, deprecated
    return output


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model(request) -> PLMForCausalLM:
    torch.manual_seed(0)
    return make_model(PLMForCausalLM, request.param, "sdpa")


def test_beam_search_with_cache_equals_without(model, tokenizer):
    inputs = left_padded(tokenizer, PROMPTS)
    options = dict(num_beams=3, num_return_sequences=3, return_dict_in_generate=True, output_scores=True)
    cached = generate(model, tokenizer, **inputs, **options, use_cache=True)
    uncached = generate(model, tokenizer, **inputs, **options, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores, atol=1e-5, rtol=0)
    # Three distinct hypotheses per prompt, best first: a real beam search, not greedy three times.
    for group, scores in zip(cached.sequences.view(len(PROMPTS), 3, -1), cached.sequences_scores.view(-1, 3)):
        assert len({tuple(row.tolist()) for row in group}) == 3
        assert torch.all(scores[:-1] >= scores[1:])


def test_assisted_decoding_equals_greedy(model, tokenizer):
    # Greedy assisted decoding accepts only the tokens the target model would pick, whatever the drafts are.
    torch.manual_seed(1)
    assistant = make_model(PLMForCausalLM, "modern", "sdpa")
    inputs = left_padded(tokenizer, PROMPTS[:1])
    expected = generate(model, tokenizer, **inputs, max_new_tokens=12)
    assisted = generate(model, tokenizer, **inputs, max_new_tokens=12, assistant_model=assistant)
    assert torch.equal(assisted, expected)
    itself = generate(model, tokenizer, **inputs, max_new_tokens=12, assistant_model=model)
    assert torch.equal(itself, expected)


def test_continuing_from_a_returned_cache_equals_one_call(model, tokenizer):
    inputs = left_padded(tokenizer, PROMPTS)
    whole = generate(model, tokenizer, **inputs, max_new_tokens=10)
    first = generate(model, tokenizer, **inputs, max_new_tokens=4, return_dict_in_generate=True)
    cache = first[CACHE_NAME]
    assert cache is not None and cache.get_seq_length() == first.sequences.shape[1] - 1
    attention_mask = torch.cat([inputs["attention_mask"], torch.ones(len(PROMPTS), 4, dtype=torch.long)], dim=1)
    rest = generate(
        model,
        tokenizer,
        input_ids=first.sequences,
        attention_mask=attention_mask,
        max_new_tokens=6,
        **{CACHE_NAME: cache},
    )
    assert torch.equal(rest, whole)


def test_inputs_embeds_prompt_equals_input_ids_prompt(model, tokenizer):
    inputs = left_padded(tokenizer, PROMPTS)
    from_ids = generate(model, tokenizer, **inputs)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    from_embeds = generate(model, tokenizer, inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    # As Llama: with only inputs_embeds, generate() returns the new tokens alone.
    assert torch.equal(from_embeds, from_ids[:, inputs["input_ids"].shape[1] :])
    both = generate(model, tokenizer, **inputs, inputs_embeds=embeds)
    assert torch.equal(both, from_ids)


def test_the_cache_is_accepted_under_both_names(model, tokenizer):
    ids = left_padded(tokenizer, PROMPTS[:1])["input_ids"]
    with torch.no_grad():
        prefill = model(input_ids=ids[:, :-1], use_cache=True)
        cache = prefill[CACHE_NAME]
        step = model(input_ids=ids[:, -1:], cache=cache).logits
        full = model(input_ids=ids, use_cache=False).logits
        torch.testing.assert_close(step[:, -1], full[:, -1], atol=1e-5, rtol=0)
        again = model(input_ids=ids[:, :-1], use_cache=True)[CACHE_NAME]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the old name warns on transformers >= 5.24
            old_name = model(input_ids=ids[:, -1:], past_key_values=again).logits
        torch.testing.assert_close(old_name, step, atol=0, rtol=0)
        with pytest.raises(ValueError, match="not both"):
            model(input_ids=ids[:, -1:], cache=cache, past_key_values=again)
