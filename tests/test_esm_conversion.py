"""ESM-2 -> modeling_plm conversion: exact parity with transformers' EsmForMaskedLM, and the way back."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, EsmConfig, EsmForMaskedLM, EsmTokenizer

from modeling_plm import PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.cli import main
from modeling_plm.hub.convert import ESM2_VOCAB, convert_esm2, convert_plm_to_esm2
from modeling_plm.kernels import OneDNNLinear

TOL = 1e-5
# The GEMM of our projections: with "torch" (transformers' own) parity is to 1e-5 absolute; oneDNN (the default on
# CPU) rounds differently, so there it is 1e-5 of each tensor's largest magnitude (ESM-2's hidden states reach ~30).
CPU_LINEAR_KERNELS = ("torch", "onednn")


def assert_parity(got: torch.Tensor, want: torch.Tensor, kernel: str) -> None:
    scale = 1.0 if kernel == "torch" else max(1.0, want.abs().max().item())
    torch.testing.assert_close(got, want, atol=TOL * scale, rtol=0)


# The real ESM-2 8M and 35M shapes, and a small one with token dropout off and ESM's default epsilon.
ESM_SHAPES = {
    "esm2_8m": dict(num_hidden_layers=6, hidden_size=320, num_attention_heads=20, intermediate_size=1280),
    "esm2_35m": dict(num_hidden_layers=12, hidden_size=480, num_attention_heads=20, intermediate_size=1920),
    "small_no_token_dropout": dict(
        num_hidden_layers=3,
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=256,
        token_dropout=False,
        layer_norm_eps=1e-12,
    ),
}


def build_esm(shape: str) -> EsmForMaskedLM:
    """A random ESM-2 whose every weight (norms and biases included) is perturbed, so no mix-up can hide."""
    options = dict(
        vocab_size=33,
        position_embedding_type="rotary",
        token_dropout=True,
        mask_token_id=32,
        pad_token_id=1,
        max_position_embeddings=1026,
        emb_layer_norm_before=False,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        hidden_act="gelu",
    )
    model = EsmForMaskedLM(EsmConfig(**{**options, **ESM_SHAPES[shape]})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.set_attn_implementation("eager")  # transformers' ESM returns attention maps only with eager
    return model


def save_esm(model: EsmForMaskedLM, folder, legacy_bin: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    if legacy_bin:
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(ESM2_VOCAB) + "\n")
    return folder


@pytest.fixture(scope="module")
def protein_batch(swissprot_sequences) -> list[str]:
    """Real sequences of different lengths (so the batch is padded), two of them with <mask> tokens."""
    chosen = sorted(swissprot_sequences, key=len)
    batch = [chosen[-1][:90], chosen[0][:25], chosen[30][:60]]
    batch[1] = batch[1][:10] + "<mask>" + batch[1][11:]
    batch[2] = batch[2][:5] + "<mask>" + batch[2][6:40] + "<mask>" + batch[2][41:]
    return batch


@pytest.mark.parametrize("kernel", CPU_LINEAR_KERNELS)
@pytest.mark.parametrize("shape", ESM_SHAPES)
def test_converted_model_matches_transformers_esm(shape, kernel, tmp_path, protein_batch):
    esm = build_esm(shape)
    converted = convert_esm2(save_esm(esm, tmp_path / "esm"), tmp_path / "plm")
    plm = PLMForMaskedLM.from_pretrained(converted, attn_implementation="eager", cpu_linear_kernel=kernel).eval()
    assert (type(plm.model.layers[0].self_attn.q_proj) is OneDNNLinear) == (kernel == "onednn")
    tokenizer = PLMTokenizerFast.from_pretrained(converted)
    esm_tokenizer = EsmTokenizer(str(tmp_path / "esm" / "vocab.txt"))
    batch = tokenizer(protein_batch, padding=True, return_tensors="pt")
    esm_batch = esm_tokenizer(protein_batch, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], esm_batch["input_ids"])  # ESM's token ids, kept
    assert torch.equal(batch["attention_mask"], esm_batch["attention_mask"])
    assert (batch["attention_mask"] == 0).any() and (batch["input_ids"] == tokenizer.mask_token_id).any()

    with torch.no_grad():
        expected = esm(**batch, output_hidden_states=True, output_attentions=True)
        actual = plm(**batch, output_hidden_states=True, output_attentions=True)
        expected_contacts = esm.predict_contacts(batch["input_ids"], batch["attention_mask"])
        actual_contacts = plm.predict_contacts(batch["input_ids"], batch["attention_mask"])
    # Whole tensors, padded positions included.
    assert_parity(actual.logits, expected.logits, kernel)
    assert len(actual.hidden_states) == len(expected.hidden_states) == esm.config.num_hidden_layers + 1
    for got, want in zip(actual.hidden_states, expected.hidden_states):
        assert_parity(got, want, kernel)
    for got, want in zip(actual.attentions, expected.attentions):
        assert_parity(got, want, kernel)
    assert_parity(actual_contacts, expected_contacts, kernel)


def test_predict_contacts_works_with_any_backend(tmp_path, protein_batch):
    converted = convert_esm2(save_esm(build_esm("small_no_token_dropout"), tmp_path / "esm"), tmp_path / "plm")
    tokenizer = PLMTokenizerFast.from_pretrained(converted)
    batch = tokenizer(protein_batch, padding=True, return_tensors="pt")
    contacts = {}
    for backend in ("eager", "sdpa"):
        model = PLMForMaskedLM.from_pretrained(converted, attn_implementation=backend).eval()
        contacts[backend] = model.predict_contacts(batch["input_ids"], batch["attention_mask"])
        assert model.config._attn_implementation == backend
    torch.testing.assert_close(contacts["sdpa"], contacts["eager"], atol=0, rtol=0)


def test_round_trip_plm_to_esm_to_plm_is_identical(tmp_path, protein_batch):
    esm = build_esm("small_no_token_dropout")
    first = convert_esm2(save_esm(esm, tmp_path / "esm"), tmp_path / "plm")
    esm_again = convert_plm_to_esm2(first, tmp_path / "esm_again")
    second = convert_esm2(esm_again, tmp_path / "plm_again")
    first_weights, second_weights = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[name], second_weights[name]) for name in first_weights)
    first_config, second_config = (json.loads((folder / "config.json").read_text()) for folder in (first, second))
    assert first_config == second_config
    assert (first / "vocab.txt").read_text() == (second / "vocab.txt").read_text()
    # The ESM checkpoint we wrote is a working transformers model with the original outputs.
    reloaded = EsmForMaskedLM.from_pretrained(esm_again, attn_implementation="eager").eval()
    batch = EsmTokenizer.from_pretrained(esm_again)(protein_batch, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, esm(**batch).logits, atol=0, rtol=0)


def test_conversion_reads_legacy_bin_checkpoints(tmp_path):
    esm = build_esm("small_no_token_dropout")
    from_safetensors = convert_esm2(save_esm(esm, tmp_path / "st"), tmp_path / "plm_st")
    from_bin = convert_esm2(save_esm(esm, tmp_path / "bin", legacy_bin=True), tmp_path / "plm_bin")
    assert not list(from_bin.glob("*.bin"))  # output is safetensors only
    a, b = load_file(from_safetensors / "model.safetensors"), load_file(from_bin / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_bin_reading_refuses_arbitrary_pickles(tmp_path):
    folder = save_esm(build_esm("small_no_token_dropout"), tmp_path / "bin", legacy_bin=True)
    torch.save({"payload": object()}, folder / "pytorch_model.bin")  # not a plain tensor state dict
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        convert_esm2(folder, tmp_path / "plm")


def test_converted_model_backends_agree_and_packed_equals_padded(tmp_path, protein_batch):
    converted = convert_esm2(save_esm(build_esm("esm2_8m"), tmp_path / "esm"), tmp_path / "plm")
    tokenizer = PLMTokenizerFast.from_pretrained(converted)
    batch = tokenizer(protein_batch, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    models = {
        backend: AutoModelForMaskedLM.from_pretrained(converted, attn_implementation=backend).eval()
        for backend in ("eager", "sdpa", "flex_attention")
    }
    with torch.no_grad():
        expected = models["eager"](**batch).logits
        for backend in ("sdpa", "flex_attention"):
            torch.testing.assert_close(models[backend](**batch).logits[real], expected[real], atol=TOL, rtol=0)
        encoded = [tokenizer(s)["input_ids"] for s in protein_batch]
        packed_ids = torch.tensor([sum(encoded, [])])
        positions = torch.tensor([sum((list(range(len(e))) for e in encoded), [])])
        for backend in ("sdpa", "flex_attention"):
            packed = models[backend](input_ids=packed_ids, position_ids=positions).logits[0]
            torch.testing.assert_close(packed, expected[real], atol=TOL, rtol=0)


def test_token_dropout_counts_real_tokens_without_attention_mask(tmp_path, protein_batch):
    """transformers #44162: without attention_mask, ESM divided by the padded length. We count non-pad tokens."""
    converted = convert_esm2(save_esm(build_esm("esm2_8m"), tmp_path / "esm"), tmp_path / "plm")
    model = PLMForMaskedLM.from_pretrained(converted, attn_implementation="eager").eval()
    tokenizer = PLMTokenizerFast.from_pretrained(converted)
    batch = tokenizer(protein_batch, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        with_mask = model(**batch, output_hidden_states=True).hidden_states[0]
        without_mask = model(input_ids=batch["input_ids"], output_hidden_states=True).hidden_states[0]
        single = model(**tokenizer([protein_batch[1]], return_tensors="pt"), output_hidden_states=True)
    torch.testing.assert_close(without_mask[real], with_mask[real], atol=0, rtol=0)
    torch.testing.assert_close(with_mask[1][real[1]], single.hidden_states[0][0], atol=0, rtol=0)


def test_cli_convert_and_reverse(tmp_path):
    source = save_esm(build_esm("small_no_token_dropout"), tmp_path / "esm")
    assert main(["convert", "esm2", str(source), str(tmp_path / "plm")]) == 0
    assert type(AutoModelForMaskedLM.from_pretrained(tmp_path / "plm")) is PLMForMaskedLM
    assert json.loads((tmp_path / "plm" / "conversion.json").read_text())["converted_from"] == "esm2"
    assert main(["convert", "to-esm2", str(tmp_path / "plm"), str(tmp_path / "back")]) == 0
    assert type(AutoModelForMaskedLM.from_pretrained(tmp_path / "back")) is EsmForMaskedLM


def test_reverse_conversion_names_what_esm_cannot_express(tmp_path):
    model = PLMForMaskedLM(config_from_preset("tiny"))  # RMSNorm, SwiGLU, no biases
    model.save_pretrained(tmp_path / "plm")
    PLMTokenizerFast().save_pretrained(tmp_path / "plm")
    with pytest.raises(ValueError, match="norm_type='rmsnorm'.*mlp_type|mlp_type='glu'"):
        convert_plm_to_esm2(tmp_path / "plm", tmp_path / "esm")


def test_non_esm2_checkpoints_are_rejected(tmp_path):
    esm = build_esm("small_no_token_dropout")
    folder = save_esm(esm, tmp_path / "esm")
    config = json.loads((folder / "config.json").read_text())
    config["position_embedding_type"] = "absolute"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="Not an ESM-2 checkpoint: position_embedding_type='absolute'"):
        convert_esm2(folder, tmp_path / "plm")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        convert_esm2(tmp_path / "missing" / "folder" / "x", tmp_path / "out")


def test_conversion_from_a_hub_id_in_the_offline_cache(tmp_path):
    """A hub id resolves through the standard hub cache layout; run offline in a subprocess (HF env vars are read
    at import time)."""
    import os
    import shutil
    import subprocess
    import sys

    source = save_esm(build_esm("small_no_token_dropout"), tmp_path / "esm")
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--facebook--esm2_tiny_test"
    shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    completed = subprocess.run(
        [sys.executable, "-m", "modeling_plm.cli", "convert", "esm2", "facebook/esm2_tiny_test", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert record["base_model"] == "facebook/esm2_tiny_test"
    assert type(AutoModelForMaskedLM.from_pretrained(tmp_path / "out")) is PLMForMaskedLM
