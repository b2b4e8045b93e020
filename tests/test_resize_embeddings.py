"""Adding tokens (species or family tags, as ProGen2 does): resize, train a step, save, reload."""

import pytest
import torch

from modeling_plm import PLMForCausalLM, PLMForMaskedLM, PLMTokenizerFast, config_from_preset

TAGS = ["<human>", "<ecoli>", "<yeast>"]


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("head_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("cls", [PLMForMaskedLM, PLMForCausalLM])
def test_added_tokens_train_save_and_reload(cls, tied, head_bias, tmp_path):
    tokenizer = PLMTokenizerFast()
    old_size = len(tokenizer)
    model = cls(config_from_preset("tiny", tie_word_embeddings=tied, lm_head_bias=head_bias))
    assert model.config.vocab_size == old_size
    before = model.lm_head.bias.detach().clone() if head_bias else None
    assert tokenizer.add_tokens(TAGS, special_tokens=True) == len(TAGS)
    model.resize_token_embeddings(len(tokenizer))

    new_size = old_size + len(TAGS)
    assert model.config.vocab_size == new_size
    assert model.get_input_embeddings().weight.shape[0] == new_size
    assert model.get_output_embeddings().weight.shape[0] == new_size
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    if head_bias:
        assert model.lm_head.bias.shape == (new_size,)
        assert torch.equal(model.lm_head.bias[:old_size], before)  # old entries kept, new ones start at 0
        assert not model.lm_head.bias[old_size:].any()

    batch = tokenizer(["<human>MKTAYIAKQR", "<yeast>MSLRSEHIW"], padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert model.get_input_embeddings().weight.grad[old_size:].abs().sum() > 0  # the new rows learn
    optimizer.step()

    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = cls.from_pretrained(tmp_path).eval()
    reloaded_tokenizer = PLMTokenizerFast.from_pretrained(tmp_path)
    assert len(reloaded_tokenizer) == new_size
    assert reloaded_tokenizer.convert_tokens_to_ids("<yeast>") == old_size + 2
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    assert reloaded(**batch).logits.shape[-1] == new_size
