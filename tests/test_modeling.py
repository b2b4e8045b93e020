"""Exactness tests of the backbone: batched == single, packed == padded, backends == eager, cache == no cache."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from modeling_plm import (
    PLMConfig,
    PLMForCausalLM,
    PLMForMaskedLM,
    PLMForSequenceClassification,
    PLMForTokenClassification,
    PLMModel,
    PLMTokenizerFast,
    config_from_preset,
)

TOL = 1e-5

# Each config exercises a different set of architecture knobs.
CONFIGS = {
    "modern": dict(preset="tiny"),  # RMSNorm, SwiGLU, no biases, rotary
    "esm": dict(  # ESM-2 numerics: LayerNorm, erf-GELU MLP, biases, ESM LM head, token dropout
        preset="tiny",
        norm_type="layernorm",
        mlp_type="mlp",
        hidden_act="gelu",
        attention_bias=True,
        mlp_bias=True,
        token_dropout=True,
    ),
    "xtrimopglm": dict(  # DeepNorm post-LN, GeGLU, 2-D rotary, grouped-query attention
        preset="tiny",
        norm_scheme="deepnorm",
        mlp_type="glu",
        hidden_act="gelu",
        position_embedding_type="rotary_2d",
        num_key_value_heads=2,
    ),
    "absolute": dict(preset="tiny", position_embedding_type="absolute", rope_theta=500.0),
}


def make_config(name: str, **overrides) -> PLMConfig:
    spec = dict(CONFIGS[name])
    return config_from_preset(spec.pop("preset"), **{**spec, **overrides})


def make_model(cls, config_name: str, attn_implementation: str = "eager", **overrides):
    model = cls(make_config(config_name, **overrides)).eval()
    model.set_attn_implementation(attn_implementation)
    return model


@pytest.fixture(scope="module")
def tokenizer() -> PLMTokenizerFast:
    return PLMTokenizerFast()


@pytest.fixture(scope="module")
def sequences(swissprot_sequences) -> list[str]:
    """Four real sequences of clearly different lengths, with a <mask> in one (exercises token dropout)."""
    chosen = sorted(swissprot_sequences, key=len)
    picked = [chosen[0][:20], chosen[-1][:60], chosen[10][:33], chosen[20][:45]]
    picked[2] = picked[2][:5] + "<mask>" + picked[2][6:]
    return picked


def run(model, **inputs):
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True)


def assert_batch_matches_single(model, tokenizer, sequences, padding_side):
    tokenizer.padding_side = padding_side
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    tokenizer.padding_side = "right"
    batched = run(model, **batch)
    for row, sequence in enumerate(sequences):
        single = run(model, **tokenizer([sequence], return_tensors="pt"))
        real = batch["attention_mask"][row].bool()
        torch.testing.assert_close(batched.logits[row][real], single.logits[0], atol=TOL, rtol=0)
        torch.testing.assert_close(batched.hidden_states[-1][row][real], single.hidden_states[-1][0], atol=TOL, rtol=0)


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("cls", [PLMForMaskedLM, PLMForCausalLM])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_ragged_batch_equals_each_sequence_alone(
    config_name, cls, attn_implementation, padding_side, tokenizer, sequences
):
    model = make_model(cls, config_name, attn_implementation)
    assert_batch_matches_single(model, tokenizer, sequences, padding_side)


def pack(tokenizer, sequences):
    """One padding-free row: sequences concatenated, position_ids restarting at 0 at each one."""
    encoded = [tokenizer(s)["input_ids"] for s in sequences]
    input_ids = torch.tensor([sum(encoded, [])])
    position_ids = torch.tensor([sum((list(range(len(e))) for e in encoded), [])])
    return input_ids, position_ids, [len(e) for e in encoded]


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("attention_type", ["bidirectional", "causal"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_row_equals_padded_batch(config_name, attention_type, attn_implementation, tokenizer, sequences):
    model = make_model(PLMForMaskedLM, config_name, attn_implementation)
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    padded = run(model, **batch, attention_type=attention_type)
    input_ids, position_ids, lengths = pack(tokenizer, sequences)
    packed = run(model, input_ids=input_ids, position_ids=position_ids, attention_type=attention_type)
    expected = torch.cat([padded.logits[row, :length] for row, length in enumerate(lengths)])
    torch.testing.assert_close(packed.logits[0], expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("attention_type", ["bidirectional", "causal"])
def test_sdpa_agrees_with_eager(config_name, attention_type, tokenizer, sequences):
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    eager = make_model(PLMForMaskedLM, config_name, "eager")
    sdpa = make_model(PLMForMaskedLM, config_name, "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    real = batch["attention_mask"].bool()
    expected = run(eager, **batch, attention_type=attention_type)
    actual = run(sdpa, **batch, attention_type=attention_type)
    torch.testing.assert_close(actual.logits[real], expected.logits[real], atol=TOL, rtol=0)
    for got, want in zip(actual.hidden_states, expected.hidden_states):
        torch.testing.assert_close(got[real], want[real], atol=TOL, rtol=0)


def test_flex_attention_agrees_with_eager_batched_and_packed(tokenizer, sequences):
    """flex_attention compiles on first use (tens of seconds on CPU), so its checks share one model and few shapes."""
    eager = make_model(PLMForMaskedLM, "modern", "eager")
    flex = make_model(PLMForMaskedLM, "modern", "flex_attention")
    flex.load_state_dict(eager.state_dict())
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    input_ids, position_ids, lengths = pack(tokenizer, sequences)
    for attention_type in ("bidirectional", "causal"):
        expected = run(eager, **batch, attention_type=attention_type).logits
        actual = run(flex, **batch, attention_type=attention_type).logits
        torch.testing.assert_close(actual[real], expected[real], atol=TOL, rtol=0)
        packed = run(flex, input_ids=input_ids, position_ids=position_ids, attention_type=attention_type).logits
        torch.testing.assert_close(packed[0], expected[real], atol=TOL, rtol=0)


@pytest.mark.parametrize("config_name", ["modern", "xtrimopglm"])
def test_causal_ignores_future_tokens_and_bidirectional_does_not(config_name, tokenizer, sequences):
    model = make_model(PLMForCausalLM, config_name, "sdpa")
    ids = tokenizer([sequences[1]], return_tensors="pt")["input_ids"]
    changed = ids.clone()
    t = 20
    changed[0, t + 1 :] = tokenizer.convert_tokens_to_ids("W")
    for attention_type, should_change in (("causal", False), ("bidirectional", True)):
        before = run(model, input_ids=ids, attention_type=attention_type).logits[0, : t + 1]
        after = run(model, input_ids=changed, attention_type=attention_type).logits[0, : t + 1]
        differs = (before - after).abs().amax(-1) > 1e-4
        if should_change:
            assert differs.all(), "bidirectional logits must depend on later tokens"
        else:
            assert not differs.any(), "causal logits must not depend on later tokens"
    # The class default: causal for PLMForCausalLM, bidirectional for PLMForMaskedLM.
    default = run(model, input_ids=changed).logits[0, : t + 1]
    torch.testing.assert_close(default, run(model, input_ids=changed, attention_type="causal").logits[0, : t + 1])


@pytest.mark.parametrize("config_name", ["modern", "xtrimopglm", "esm"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_generate_with_cache_equals_greedy_without(config_name, attn_implementation, tokenizer, sequences):
    model = make_model(PLMForCausalLM, config_name, attn_implementation)
    prompts = [s.replace("<mask>", "")[:n] for s, n in zip(sequences, (3, 11, 6, 1))]
    # Prompts are <bos> + residues (no <eos>), left-padded as generation needs.
    encoded = [[tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, encoded))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(e)) + e for e in encoded])
    attention_mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    options = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    cached = model.generate(input_ids, attention_mask=attention_mask, use_cache=True, **options)
    uncached = model.generate(input_ids, attention_mask=attention_mask, use_cache=False, **options)
    assert torch.equal(cached, uncached)
    for row, prompt_ids in enumerate(encoded):
        single = model.generate(torch.tensor([prompt_ids]), **options)
        assert torch.equal(cached[row, width:], single[0, len(prompt_ids) :])


def glm_example(tokenizer, context: str, span: str):
    """Context with one <smask>, then <sop> + span: positions and block positions as documented."""
    context_ids = tokenizer(context)["input_ids"]
    span_ids = [tokenizer.sop_token_id] + tokenizer(span, add_special_tokens=False)["input_ids"]
    mask_position = context_ids.index(tokenizer.smask_token_id)
    input_ids = torch.tensor([context_ids + span_ids])
    position_ids = torch.tensor([list(range(len(context_ids))) + [mask_position] * len(span_ids)])
    block_position_ids = torch.tensor([[0] * len(context_ids) + list(range(1, len(span_ids) + 1))])
    return input_ids, position_ids, block_position_ids, len(context_ids)


@pytest.mark.parametrize("objective", ["mlm", "clm", "glm"])
def test_packed_sdpa_runs_per_sequence_and_equals_eager_block_mask(objective, tokenizer, swissprot_sequences):
    """SDPA on packed rows attends one sequence at a time (no mask is built); eager uses the block-diagonal mask.
    Several rows, filler at the end of each, GLM spans and grouped-query attention: all equal."""
    from modeling_plm.data.collators import build_collator
    from modeling_plm.kernels import packed_sequence_segments
    from modeling_plm.modeling_plm_layers import find_packed_sequence_ids

    batch = build_collator(objective, tokenizer, pack_length=160)(swissprot_sequences[:12], seed=0)
    batch.pop("labels")
    assert len(batch["input_ids"]) > 1
    attention_type = {"mlm": "bidirectional", "clm": "causal", "glm": "glm"}[objective]
    sequence_ids = find_packed_sequence_ids(batch["position_ids"], batch.get("block_position_ids"))
    # The collator's boundaries (cu_seq_lens_q) and the positions' restarts describe the same sequences.
    from_boundaries = find_packed_sequence_ids(batch["position_ids"], None, batch["cu_seq_lens_q"])
    torch.testing.assert_close(from_boundaries, sequence_ids, atol=0, rtol=0)
    glm_blocks = batch.get("block_position_ids") if attention_type == "glm" else None
    segments = packed_sequence_segments(sequence_ids, glm_blocks)
    assert [sum(lengths) for lengths, _ in segments] == [160] * len(batch["input_ids"])
    assert all(len(lengths) > 1 for lengths, _ in segments)
    eager = make_model(PLMForMaskedLM, "xtrimopglm", "eager")
    sdpa = make_model(PLMForMaskedLM, "xtrimopglm", "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    expected = run(eager, **batch, attention_type=attention_type).logits
    actual = run(sdpa, **batch, attention_type=attention_type).logits
    torch.testing.assert_close(actual, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("config_name", ["xtrimopglm", "modern"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_glm_spans_are_causal_and_see_the_whole_context(config_name, attn_implementation, tokenizer, sequences):
    model = make_model(PLMForCausalLM, config_name, attn_implementation)
    source = sequences[1]
    input_ids, position_ids, block_position_ids, n_context = glm_example(
        tokenizer, source[:15] + "<smask>" + source[25:40], source[15:25]
    )
    inputs = dict(position_ids=position_ids, block_position_ids=block_position_ids)
    base = run(model, input_ids=input_ids, **inputs).logits[0]
    probe = n_context + 4  # a span position with span tokens before and after it
    later_changed = input_ids.clone()
    later_changed[0, probe + 1 :] = tokenizer.convert_tokens_to_ids("W")
    after = run(model, input_ids=later_changed, **inputs).logits[0]
    torch.testing.assert_close(after[: probe + 1], base[: probe + 1], atol=0, rtol=0)
    for context_index in range(n_context):  # every context token, left and right of the span, matters
        changed = input_ids.clone()
        changed[0, context_index] = tokenizer.convert_tokens_to_ids("W" if input_ids[0, context_index] != 23 else "Y")
        after = run(model, input_ids=changed, **inputs).logits[0]
        assert (after[probe] - base[probe]).abs().max() > 1e-6, f"span ignores context token {context_index}"


@pytest.mark.parametrize("config_name", ["xtrimopglm", "modern"])
def test_glm_generation_with_cache_equals_uncached_loop(config_name, tokenizer, sequences):
    model = make_model(PLMForCausalLM, config_name, "sdpa")
    source = sequences[3]
    input_ids, position_ids, block_position_ids, n_context = glm_example(
        tokenizer, source[:10] + "<smask>" + source[20:30], ""
    )
    generated = model.generate(
        input_ids,
        position_ids=position_ids,
        block_position_ids=block_position_ids,
        max_new_tokens=6,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
    )
    ids, positions, blocks = input_ids, position_ids, block_position_ids
    for _ in range(6):
        logits = run(model, input_ids=ids, position_ids=positions, block_position_ids=blocks).logits
        ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
        positions = torch.cat([positions, positions[:, -1:]], dim=1)
        blocks = torch.cat([blocks, blocks[:, -1:] + 1], dim=1)
    assert torch.equal(generated, ids)


def test_output_attentions_are_real_weights_with_any_backend(tokenizer, sequences):
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    eager = make_model(PLMModel, "modern", "eager")
    sdpa = make_model(PLMModel, "modern", "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    with torch.no_grad():
        expected = eager(**batch, output_attentions=True).attentions
        actual = sdpa(**batch, output_attentions=True).attentions
    assert len(actual) == sdpa.config.num_hidden_layers
    for got, want in zip(actual, expected):
        length = batch["input_ids"].shape[1]
        assert got is not None and got.shape == (len(sequences), sdpa.config.num_attention_heads, length, length)
        torch.testing.assert_close(got, want, atol=TOL, rtol=0)
        torch.testing.assert_close(got.sum(-1), torch.ones_like(got.sum(-1)), atol=1e-5, rtol=0)
    assert sdpa.config._attn_implementation == "sdpa"  # the call did not switch the model's backend


def test_unavailable_attention_backend_raises(tmp_path):
    model = make_model(PLMForMaskedLM, "modern")
    model.save_pretrained(tmp_path)
    with pytest.raises((ImportError, ValueError)):
        PLMForMaskedLM.from_pretrained(tmp_path, attn_implementation="flash_attention_2")
    model.config._attn_implementation = "not_a_backend"
    with pytest.raises(ValueError, match="not_a_backend"):
        model(torch.tensor([[1, 10, 11, 2]]))


def test_save_reload_is_identical_and_safetensors_only(tmp_path, tokenizer, sequences):
    model = make_model(PLMForMaskedLM, "esm")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    reloaded = PLMForMaskedLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    assert torch.equal(run(model, **batch).logits, run(reloaded, **batch).logits)


def test_one_checkpoint_layout_for_masked_and_causal_lm(tmp_path):
    for source, target in ((PLMForMaskedLM, PLMForCausalLM), (PLMForCausalLM, PLMForMaskedLM)):
        model = make_model(source, "esm")
        model.save_pretrained(tmp_path / source.__name__)
        loaded, info = target.from_pretrained(
            tmp_path / source.__name__, output_loading_info=True, attn_implementation="eager"
        )
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
        ids = torch.tensor([[1, 10, 11, 12, 2]])
        torch.testing.assert_close(
            run(loaded.eval(), input_ids=ids, attention_type="bidirectional").logits,
            run(model, input_ids=ids, attention_type="bidirectional").logits,
            atol=0,
            rtol=0,
        )
    assert model.lm_head.decoder.weight is model.model.embeddings.word_embeddings.weight  # tied by default


def test_pickled_weights_are_refused_unless_asked(tmp_path):
    model = make_model(PLMForMaskedLM, "modern")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        PLMForMaskedLM.from_pretrained(tmp_path)
    loaded = PLMForMaskedLM.from_pretrained(tmp_path, use_safetensors=False)
    assert torch.equal(loaded.lm_head.bias, model.lm_head.bias)


def test_auto_classes_load_a_saved_folder(tmp_path):
    model = make_model(PLMForMaskedLM, "modern")
    model.save_pretrained(tmp_path)
    PLMTokenizerFast().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "plm"
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForMaskedLM",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
    }
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PLMConfig)
    expected = {
        AutoModel: PLMModel,
        AutoModelForMaskedLM: PLMForMaskedLM,
        AutoModelForCausalLM: PLMForCausalLM,
        AutoModelForSequenceClassification: PLMForSequenceClassification,
        AutoModelForTokenClassification: PLMForTokenClassification,
    }
    for auto_class, cls in expected.items():
        assert type(auto_class.from_pretrained(tmp_path)) is cls
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path), PLMTokenizerFast)


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch

    class BlockModelingPlm:  # simulate an environment where the package is not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "modeling_plm":
                raise ModuleNotFoundError("modeling_plm is not installed here")

    sys.meta_path.insert(0, BlockModelingPlm())
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    folder, sequence = sys.argv[1], sys.argv[2]
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    inputs = tokenizer([sequence], return_tensors="pt")
    result = {"modules": []}
    for auto_class in (AutoModelForMaskedLM, AutoModelForCausalLM):
        model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
        result["modules"].append(type(model).__module__)
        result["projections"] = type(model.model.layers[0].self_attn.q_proj).__name__  # no runtime kernels here
        with torch.no_grad():
            result[auto_class.__name__] = model(**inputs).logits.tolist()
    print(json.dumps(result))
    """
)


def test_remote_code_load_without_the_package(tmp_path, tokenizer, sequences):
    model = make_model(PLMForMaskedLM, "xtrimopglm", "sdpa")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    completed = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(tmp_path), sequences[0]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules.") for module in result["modules"])
    assert result["projections"] == "Linear"
    inputs = tokenizer([sequences[0]], return_tensors="pt")
    expected_mlm = run(model, **inputs).logits
    expected_clm = run(model, **inputs, attention_type="causal").logits
    torch.testing.assert_close(torch.tensor(result["AutoModelForMaskedLM"]), expected_mlm, atol=0, rtol=0)
    torch.testing.assert_close(torch.tensor(result["AutoModelForCausalLM"]), expected_clm, atol=0, rtol=0)


def test_peft_lora_on_attention_projections_trains(tokenizer, sequences):
    from peft import LoraConfig, get_peft_model

    model = make_model(PLMForMaskedLM, "modern", "sdpa")
    model.train()
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    trainable = {name for name, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = lora(**batch, labels=labels).loss
    loss.backward()
    grads = [p.grad for name, p in lora.named_parameters() if "lora_B" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer, sequences):
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = make_model(PLMForCausalLM, "esm", "sdpa").train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(**batch, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


def test_bf16_autocast_trains(tokenizer, sequences):
    model = make_model(PLMForMaskedLM, "modern", "sdpa").train()
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    fp32_loss = model(**batch, labels=labels).loss.detach()
    projection_dtypes = []
    model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, o: projection_dtypes.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch, labels=labels)
    assert projection_dtypes == [torch.bfloat16]  # the matmuls really ran in bf16
    assert torch.isfinite(out.loss) and abs(out.loss.item() - fp32_loss.item()) < 0.05
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_losses_match_their_definitions(tokenizer, sequences):
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    mlm = make_model(PLMForMaskedLM, "modern")
    out = mlm(**batch, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    clm = make_model(PLMForCausalLM, "modern")
    out = clm(**batch, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected)


def test_initialisation_follows_the_config():
    config = make_config("xtrimopglm", num_hidden_layers=8, hidden_size=256, num_attention_heads=4)
    model = PLMModel(config)
    beta = (2 * 8) ** -0.5
    layer = model.layers[0]
    assert abs(layer.self_attn.v_proj.weight.std().item() - 0.02 * beta) < 0.1 * 0.02 * beta
    assert abs(layer.self_attn.q_proj.weight.std().item() - 0.02) < 0.002
    assert torch.all(model.embeddings.word_embeddings.weight[config.pad_token_id] == 0)
    assert torch.all(layer.attention_norm.weight == 1)


@pytest.mark.parametrize("pooling", ["mean", "max", "bos"])
def test_sequence_classification_pools_residues_only(pooling, tokenizer, sequences):
    model = make_model(PLMForSequenceClassification, "modern", "sdpa", num_labels=3, classifier_pooling=pooling)
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    out = model(**batch, labels=torch.tensor([0, 2, 1, 0]), output_hidden_states=True)
    assert out.loss is not None and out.logits.shape == (4, 3)
    for row, sequence in enumerate(sequences):
        single = model(**tokenizer([sequence], return_tensors="pt"), output_hidden_states=True)
        torch.testing.assert_close(out.logits[row], single.logits[0], atol=TOL, rtol=0)
        hidden = single.hidden_states[-1][0]
        residues = hidden[1:-1]  # without <bos> and <eos>
        expected = {"mean": residues.mean(0), "max": residues.amax(0), "bos": hidden[0]}[pooling]
        torch.testing.assert_close(model.classifier(expected[None])[0], single.logits[0], atol=TOL, rtol=0)
    regression = make_model(PLMForSequenceClassification, "modern", num_labels=1)
    loss = regression(**batch, labels=torch.tensor([0.5, -1.0, 2.0, 0.0])).loss
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_token_classification_loss_ignores_special_tokens(tokenizer, sequences):
    model = make_model(PLMForTokenClassification, "modern", num_labels=3)
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    labels = torch.randint(0, 3, batch["input_ids"].shape)
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    labels[special] = -100
    out = model(**batch, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_cache_layer_equals_dynamic_layer_through_growth_crop_and_reorder():
    """PLMCacheLayer (in-place writes into spare capacity) holds exactly what transformers' DynamicLayer holds."""
    from transformers.cache_utils import DynamicLayer

    from modeling_plm.kernels import PLMCacheLayer

    ours, reference = PLMCacheLayer(), DynamicLayer()
    ours.min_capacity = 4  # force several regrowths
    generator = torch.Generator().manual_seed(0)

    def update(new_tokens: int, batch: int = 3) -> None:
        key, value = (torch.randn(batch, 2, new_tokens, 8, generator=generator) for _ in range(2))
        got, expected = ours.update(key, value), reference.update(key, value)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])

    for new_tokens in (3, 1, 1, 5, 1, 9, 1):
        update(new_tokens)
    assert ours.get_seq_length() == reference.get_seq_length() == 21
    for layer in (ours, reference):
        layer.crop(-4)
    update(2)
    for layer in (ours, reference):
        layer.reorder_cache(torch.tensor([2, 0, 1]))
    update(1)
    for layer in (ours, reference):
        layer.batch_select_indices(torch.tensor([0, 2]))
    update(3, batch=2)
    assert torch.equal(ours.keys, reference.keys) and torch.equal(ours.values, reference.values)
