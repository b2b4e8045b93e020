"""Bad calls to the Python API get a clear error naming the argument (and the shape, value or position) at the entry of
the tokenizer and of the models, never an error from deep inside torch nor a silent acceptance; the valid edge cases
next to them (left padding, a shared position row, cached decoding, packed rows) still work."""

import re

import pytest
import torch

from modeling_plm import (
    PLMForCausalLM,
    PLMForMaskedLM,
    PLMForSequenceClassification,
    PLMForTokenClassification,
    PLMModel,
    PLMTokenizerFast,
    config_from_preset,
)
from modeling_plm.modeling_plm import CACHE_NAME

VOCAB = 34  # the default tokenizer's and the tiny preset's vocabulary
HIDDEN = 64  # the tiny preset's hidden size


@pytest.fixture(scope="module")
def tokenizer() -> PLMTokenizerFast:
    return PLMTokenizerFast()


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    three = config_from_preset("tiny", num_labels=3)
    built = {
        "model": PLMModel(config_from_preset("tiny")),
        "mlm": PLMForMaskedLM(config_from_preset("tiny")),
        "clm": PLMForCausalLM(config_from_preset("tiny")),
        "sequence": PLMForSequenceClassification(three),
        "token": PLMForTokenClassification(three),
        "regression": PLMForSequenceClassification(config_from_preset("tiny", num_labels=1)),
        "multilabel": PLMForSequenceClassification(
            config_from_preset("tiny", num_labels=3, problem_type="multi_label_classification")
        ),
    }
    assert built["model"].config.vocab_size == VOCAB and built["model"].config.hidden_size == HIDDEN
    return {name: model.eval() for name, model in built.items()}


def ids(batch: int = 2, length: int = 6) -> torch.Tensor:
    return torch.randint(5, 29, (batch, length))


def with_id(value: int, row: int, position: int) -> torch.Tensor:
    tokens = ids()
    tokens[row, position] = value
    return tokens


def ignored_but(value: int, row: int, position: int) -> torch.Tensor:
    """Labels that ignore every position (-100) but one."""
    labels = torch.full((2, 6), -100)
    labels[row, position] = value
    return labels


def cached_step(models, attention_mask: torch.Tensor):
    """One decoding step after a 6-token prefill of 2 rows, with the given mask."""
    model = models["clm"]
    cache = model(input_ids=ids(), use_cache=True)[CACHE_NAME]
    return model(input_ids=ids(2, 1), attention_mask=attention_mask, use_cache=True, **{CACHE_NAME: cache})


# (head, keyword arguments as a function, exception, the message's expected text: a regex)
MODEL_CASES = {
    "both input_ids and inputs_embeds": (
        "model",
        lambda: dict(input_ids=ids(), inputs_embeds=torch.zeros(2, 6, HIDDEN)),
        ValueError,
        r"exactly one of input_ids or inputs_embeds \(got both\)",
    ),
    "neither input_ids nor inputs_embeds": ("model", dict, ValueError, r"exactly one of input_ids or inputs_embeds"),
    "float input_ids": ("mlm", lambda: dict(input_ids=ids().float()), TypeError, r"input_ids .*torch\.float32"),
    "bool input_ids": ("mlm", lambda: dict(input_ids=ids() > 9), TypeError, r"input_ids .*torch\.bool"),
    "list input_ids": ("mlm", lambda: dict(input_ids=[[1, 9, 2]]), TypeError, r"input_ids must be a torch\.Tensor"),
    "1-D input_ids": ("mlm", lambda: dict(input_ids=ids()[0]), ValueError, r"input_ids must be 2-D .*\(6,\)"),
    "3-D input_ids": ("mlm", lambda: dict(input_ids=ids()[None]), ValueError, r"input_ids must be 2-D .*\(1, 2, 6\)"),
    "input_ids of length 0": (
        "mlm",
        lambda: dict(input_ids=ids(2, 0)),
        ValueError,
        r"input_ids has sequence length 0 \(shape \(2, 0\)\)",
    ),
    "inputs_embeds of length 0": (
        "model",
        lambda: dict(inputs_embeds=torch.zeros(2, 0, HIDDEN)),
        ValueError,
        r"inputs_embeds has sequence length 0",
    ),
    "id above the vocabulary": (
        "mlm",
        lambda: dict(input_ids=with_id(40, 0, 3)),
        ValueError,
        re.escape("input_ids holds id 40 at (row 0, position 3); the vocabulary has 34 tokens"),
    ),
    "id equal to the vocabulary size": (
        "clm",
        lambda: dict(input_ids=with_id(VOCAB, 1, 5)),
        ValueError,
        re.escape("input_ids holds id 34 at (row 1, position 5)"),
    ),
    "negative id": (
        "model",
        lambda: dict(input_ids=with_id(-1, 1, 2)),
        ValueError,
        re.escape("input_ids holds id -1 at (row 1, position 2)"),
    ),
    "id out of range in sequence classification": (
        "sequence",
        lambda: dict(input_ids=with_id(99, 0, 0)),
        ValueError,
        re.escape("input_ids holds id 99 at (row 0, position 0)"),
    ),
    "id out of range in token classification": (
        "token",
        lambda: dict(input_ids=with_id(99, 1, 1)),
        ValueError,
        re.escape("input_ids holds id 99 at (row 1, position 1)"),
    ),
    "inputs_embeds of the wrong width": (
        "model",
        lambda: dict(inputs_embeds=torch.zeros(2, 6, 7)),
        ValueError,
        re.escape("inputs_embeds must be 3-D (batch, seq, hidden_size=64), got shape (2, 6, 7)"),
    ),
    "2-D inputs_embeds": (
        "mlm",
        lambda: dict(inputs_embeds=torch.zeros(6, HIDDEN)),
        ValueError,
        r"inputs_embeds must be 3-D .*\(6, 64\)",
    ),
    "integer inputs_embeds": (
        "model",
        lambda: dict(inputs_embeds=torch.zeros(2, 6, HIDDEN, dtype=torch.long)),
        TypeError,
        r"inputs_embeds must be a floating-point tensor",
    ),
    "3-D attention_mask": (
        "mlm",
        lambda: dict(input_ids=ids(), attention_mask=torch.ones(2, 1, 6)),
        ValueError,
        re.escape("attention_mask must have shape (batch, past + seq) = (2, 6)") + r".*got \(2, 1, 6\)",
    ),
    "attention_mask too short": (
        "mlm",
        lambda: dict(input_ids=ids(), attention_mask=torch.ones(2, 5)),
        ValueError,
        r"attention_mask must have shape .*\(2, 6\).*got \(2, 5\)",
    ),
    "attention_mask of another batch": (
        "model",
        lambda: dict(input_ids=ids(), attention_mask=torch.ones(3, 6)),
        ValueError,
        r"attention_mask must have shape .*\(2, 6\).*got \(3, 6\)",
    ),
    "attention_mask as a list": (
        "model",
        lambda: dict(input_ids=ids(1, 3), attention_mask=[[1, 1, 1]]),
        TypeError,
        r"attention_mask must be a torch\.Tensor, got list",
    ),
    "attention_mask that forgets the cached tokens": (
        None,
        lambda models: cached_step(models, torch.ones(2, 1)),
        ValueError,
        re.escape("attention_mask must have shape (batch, past + seq) = (2, 7) (6 cached + 1 new tokens)"),
    ),
    "position_ids too short": (
        "mlm",
        lambda: dict(input_ids=ids(), position_ids=torch.arange(5)[None]),
        ValueError,
        re.escape("position_ids must have shape (batch, seq) = (2, 6) like input_ids, or (1, 6)") + r".*got \(1, 5\)",
    ),
    "position_ids of another batch": (
        "model",
        lambda: dict(input_ids=ids(), position_ids=torch.arange(6).repeat(3, 1)),
        ValueError,
        r"position_ids must have shape .*got \(3, 6\)",
    ),
    "1-D position_ids": (
        "model",
        lambda: dict(input_ids=ids(), position_ids=torch.arange(6)),
        ValueError,
        r"position_ids must have shape .*got \(6,\)",
    ),
    "float position_ids": (
        "model",
        lambda: dict(input_ids=ids(), position_ids=torch.arange(6.0)[None]),
        TypeError,
        r"position_ids must be an integer tensor .*torch\.float32",
    ),
    "block_position_ids too short": (
        "mlm",
        lambda: dict(input_ids=ids(), block_position_ids=torch.zeros(2, 5, dtype=torch.long)),
        ValueError,
        r"block_position_ids must have shape \(batch, seq\) = \(2, 6\) .*got \(2, 5\)",
    ),
    "float block_position_ids": (
        "clm",
        lambda: dict(input_ids=ids(), block_position_ids=torch.zeros(2, 6)),
        TypeError,
        r"block_position_ids must be an integer tensor",
    ),
    "unknown attention_type": (
        "mlm",
        lambda: dict(input_ids=ids(), attention_type="sliding"),
        ValueError,
        r"attention_type must be one of \('bidirectional', 'causal', 'glm'\), got 'sliding'",
    ),
    "glm attention_type without block_position_ids": (
        "mlm",
        lambda: dict(input_ids=ids(), attention_type="glm"),
        ValueError,
        r"attention_type='glm' needs block_position_ids",
    ),
    "masked-LM labels of another length": (
        "mlm",
        lambda: dict(input_ids=ids(), labels=ids(2, 5)),
        ValueError,
        re.escape("labels must have shape (2, 6) to fit the logits, got (2, 5)"),
    ),
    "float masked-LM labels": (
        "mlm",
        lambda: dict(input_ids=ids(), labels=ids().float()),
        TypeError,
        r"labels must be a tensor of class ids \(torch\.long\), got dtype torch\.float32",
    ),
    "masked-LM label outside the vocabulary": (
        "mlm",
        lambda: dict(input_ids=ids(), labels=ignored_but(40, 1, 4)),
        ValueError,
        re.escape("labels holds 40 at index [1, 4]; expected class ids 0 to 33 or -100 (ignored)"),
    ),
    "causal-LM labels of another batch": (
        "clm",
        lambda: dict(input_ids=ids(), labels=ids(3, 6)),
        ValueError,
        re.escape("labels must have shape (2, 6) to fit the logits, got (3, 6)"),
    ),
    "causal-LM labels with logits_to_keep": (
        "clm",
        lambda: dict(input_ids=ids(), labels=ids(), logits_to_keep=1),
        ValueError,
        re.escape("labels must have shape (2, 1) to fit the logits, got (2, 6)"),
    ),
    "sequence labels of another batch": (
        "sequence",
        lambda: dict(input_ids=ids(), labels=torch.tensor([0, 1, 2])),
        ValueError,
        re.escape("labels must have shape (2,) or (2, 1) to fit the logits, got (3,)"),
    ),
    "sequence label outside the classes": (
        "sequence",
        lambda: dict(input_ids=ids(), labels=torch.tensor([0, 5])),
        ValueError,
        re.escape("labels holds 5 at index [1]; expected class ids 0 to 2"),
    ),
    "int32 sequence labels": (
        "sequence",
        lambda: dict(input_ids=ids(), labels=torch.tensor([0, 1], dtype=torch.int32)),
        TypeError,
        r"labels must be a tensor of class ids \(torch\.long\), got dtype torch\.int32",
    ),
    "regression labels with one value too many": (
        "regression",
        lambda: dict(input_ids=ids(), labels=torch.zeros(2, 2)),
        ValueError,
        re.escape("labels must have shape (2,) or (2, 1) to fit the logits, got (2, 2)"),
    ),
    "multi-label labels of the wrong width": (
        "multilabel",
        lambda: dict(input_ids=ids(), labels=torch.zeros(2, 2)),
        ValueError,
        re.escape("labels must have shape (2, 3) to fit the logits, got (2, 2)"),
    ),
    "integer multi-label labels": (
        "multilabel",
        lambda: dict(input_ids=ids(), labels=torch.zeros(2, 3, dtype=torch.long)),
        TypeError,
        r"multi-label classification labels must be floats",
    ),
    "token labels of another length": (
        "token",
        lambda: dict(input_ids=ids(), labels=torch.zeros(2, 5, dtype=torch.long)),
        ValueError,
        re.escape("labels must have shape (2, 6) to fit the logits, got (2, 5)"),
    ),
    "token label outside the classes": (
        "token",
        lambda: dict(input_ids=ids(), labels=torch.full((2, 6), 3)),
        ValueError,
        re.escape("labels holds 3 at index [0, 0]; expected class ids 0 to 2 or -100 (ignored)"),
    ),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_call_names_the_argument(models, case: str) -> None:
    head, arguments, error, message = MODEL_CASES[case]
    with pytest.raises(error, match=message), torch.no_grad():
        if head is None:
            arguments(models)
        else:
            models[head](**arguments())


# (positional arguments, keyword arguments, exception, the message's expected text: a regex)
TOKENIZER_CASES = {
    "None in a batch": (
        (["MKT", None],),
        {},
        TypeError,
        re.escape("text: item 1 of the batch is None (NoneType), not a string"),
    ),
    "a number": ((5,), {}, TypeError, re.escape("text must be a protein sequence (str) or a list of them")),
    "bytes": ((b"MKT",), {}, TypeError, r"text must be a protein sequence .*\(bytes\)"),
    "an empty batch": (([],), {}, ValueError, r"text is an empty list"),
    "a number in a batch": ((["MKT", "AC", 7],), {}, TypeError, r"text: item 2 of the batch is 7 \(int\)"),
    "a word list without is_split_into_words": (
        (["MKT", ["M", "K", "T"]],),
        {},
        TypeError,
        r"text: item 1 of the batch is \['M', 'K', 'T'\] \(list\).*is_split_into_words=True",
    ),
    "None in text_pair": (
        (["MKT", "AC"], ["MK", None]),
        {},
        TypeError,
        re.escape("text_pair: item 1 of the batch is None"),
    ),
    "a number as text_pair": (("MKT", 5), {}, TypeError, r"text_pair must be a protein sequence"),
    "None among split words": (
        ([["M", "K"], ["A", None]],),
        {"is_split_into_words": True},
        TypeError,
        re.escape("text: word 1 of sequence 1 is None (NoneType), not a string"),
    ),
    "a string among split rows": (
        ([["M", "K"], "A"],),
        {"is_split_into_words": True},
        TypeError,
        r"text: item 1 of the batch is 'A' \(str\), not a list of strings",
    ),
    "a special token with split_special_tokens": (
        ("MK<mask>T",),
        {"split_special_tokens": True},
        ValueError,
        re.escape("Special token '<mask>' at position 3 of text: with split_special_tokens=True"),
    ),
    "a special token in a batch with split_special_tokens": (
        (["MKT", "AC<eos>"],),
        {"split_special_tokens": True},
        ValueError,
        re.escape("Special token '<eos>' at position 3 of sequence 1 of text"),
    ),
}


@pytest.mark.parametrize("case", list(TOKENIZER_CASES))
def test_bad_tokenizer_call_names_the_argument(tokenizer, case: str) -> None:
    arguments, keywords, error, message = TOKENIZER_CASES[case]
    with pytest.raises(error, match=message):
        tokenizer(*arguments, **keywords)


def test_tokenizer_entry_points_check_their_input(tokenizer) -> None:
    with pytest.raises(TypeError, match=r"text must be a protein sequence .*None \(NoneType\)"):
        tokenizer.encode(None)
    with pytest.raises(TypeError, match=r"text: item 1 of the batch is 3 \(int\)"):
        tokenizer.tokenize(["MK", 3])


def test_tokenizer_documented_edge_cases(tokenizer) -> None:
    bos, eos, mask = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.mask_token_id
    # An empty (or whitespace-only) sequence is <bos> <eos>, as transformers' tokenizers encode "".
    assert tokenizer("")["input_ids"] == [bos, eos]
    assert tokenizer(" \n")["input_ids"] == [bos, eos]
    # Special tokens typed into a sequence are single tokens (masking for scoring and infilling).
    assert tokenizer("MK<mask>T")["input_ids"] == [bos, 19, 17, mask, 25, eos]
    # Without special tokens in the text, split_special_tokens=True changes nothing.
    assert tokenizer("MKT", split_special_tokens=True)["input_ids"] == tokenizer("MKT")["input_ids"]
    # Pairs given as (text, text_pair) tuples, and pre-split words, still encode.
    assert tokenizer([("MK", "T")])["input_ids"] == [[bos, 19, 17, eos, 25, eos]]
    assert tokenizer(["M", "K"], is_split_into_words=True)["input_ids"] == [bos, 19, 17, eos]
    assert "empty" in type(tokenizer).__doc__ and "split_special_tokens" in type(tokenizer).__doc__


@torch.no_grad()
def test_left_padding_matches_unpadded(models, tokenizer) -> None:
    model = models["mlm"]
    short, long = tokenizer(["MKTAY", "MKTAYIAKQR"])["input_ids"]
    padded = torch.tensor([[tokenizer.pad_token_id] * (len(long) - len(short)) + short, long])
    mask = (torch.arange(len(long)) >= torch.tensor([[len(long) - len(short)], [0]])).long()
    logits = model(input_ids=padded, attention_mask=mask).logits
    alone = model(input_ids=torch.tensor([short])).logits
    torch.testing.assert_close(logits[0, -len(short) :], alone[0], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_shared_position_row_is_broadcast(models) -> None:
    model, tokens = models["model"], ids(3, 7)
    default = model(input_ids=tokens).last_hidden_state
    row = model(input_ids=tokens, position_ids=torch.arange(7)[None]).last_hidden_state
    full = model(input_ids=tokens, position_ids=torch.arange(7).repeat(3, 1)).last_hidden_state
    torch.testing.assert_close(row, default)
    torch.testing.assert_close(full, default)
    # GLM: one (1, seq) block-position row shared by the batch too.
    blocks = torch.tensor([[0, 0, 0, 0, 1, 2, 3]])
    shared = model(input_ids=tokens, block_position_ids=blocks).last_hidden_state
    each = model(input_ids=tokens, block_position_ids=blocks.repeat(3, 1)).last_hidden_state
    torch.testing.assert_close(shared, each)


@torch.no_grad()
def test_cached_generation_equals_uncached(models, tokenizer) -> None:
    model = models["clm"]
    prompts = [[tokenizer.bos_token_id, 19, 17, 25, 9], [tokenizer.bos_token_id, 15, 11]]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    attention_mask = (input_ids != tokenizer.pad_token_id).long()
    options = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        do_sample=False,
        max_new_tokens=6,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
    )
    cached = model.generate(**options, use_cache=True)
    uncached = model.generate(**options, use_cache=False)
    assert cached.shape == (2, width + 6)
    assert torch.equal(cached, uncached)


@torch.no_grad()
def test_packed_rows_without_mask_match_separate_sequences(models) -> None:
    model = models["model"]
    first, second = ids(1, 5), ids(1, 4)
    packed = torch.cat([first, second], dim=1)
    positions = torch.cat([torch.arange(5), torch.arange(4)])[None]  # a restart at 0 starts the second sequence
    hidden = model(input_ids=packed, position_ids=positions).last_hidden_state
    torch.testing.assert_close(hidden[:, :5], model(input_ids=first).last_hidden_state, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(hidden[:, 5:], model(input_ids=second).last_hidden_state, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_valid_labels_and_embeddings_are_accepted(models) -> None:
    tokens = ids()
    assert torch.isfinite(models["mlm"](input_ids=tokens, labels=ignored_but(9, 0, 2)).loss)
    assert torch.isfinite(models["clm"](input_ids=tokens, labels=tokens).loss)
    assert torch.isfinite(models["sequence"](input_ids=tokens, labels=torch.tensor([[2], [0]])).loss)
    assert torch.isfinite(models["regression"](input_ids=tokens, labels=torch.tensor([0.5, -1.0])).loss)
    assert torch.isfinite(models["multilabel"](input_ids=tokens, labels=torch.tensor([[1.0, 0, 1], [0, 0, 0]])).loss)
    assert torch.isfinite(models["token"](input_ids=tokens, labels=ignored_but(2, 1, 3)).loss)
    embeds = models["model"].get_input_embeddings()(tokens)
    torch.testing.assert_close(
        models["model"](inputs_embeds=embeds).last_hidden_state, models["model"](input_ids=tokens).last_hidden_state
    )


@torch.no_grad()
def test_checks_do_not_break_torch_compile(models) -> None:
    model, tokens = models["mlm"], ids()
    compiled = torch.compile(model, backend="eager")  # traced by dynamo, where the value checks stand aside
    try:
        torch.testing.assert_close(compiled(input_ids=tokens).logits, model(input_ids=tokens).logits)
    finally:
        torch._dynamo.reset()
