"""ESM C -> modeling_plm conversion: layer-wise parity with transformers' EsmcForMaskedLM, and the way back."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("transformers.models.esmc", reason="ESM C is in transformers >= 5.24")
from transformers import EsmcConfig, EsmcForMaskedLM, EsmcTokenizer  # noqa: E402

from modeling_plm import PLMConfig, PLMForMaskedLM, PLMTokenizerFast, config_from_preset  # noqa: E402
from modeling_plm.cli import main  # noqa: E402
from modeling_plm.hub.converters.esmc import (  # noqa: E402
    ESMC_PRESETS,
    build_esmc_tokenizer,
    convert_esmc,
    convert_plm_to_esmc,
    esmc_residual_multiplier,
    plm_config_to_esmc,
)
from modeling_plm.inference.embedding import load_embeddings  # noqa: E402

TOL = 1e-5
BACKENDS = ("eager", "sdpa")
CPU_LINEAR_KERNELS = ("torch", "onednn")
_300M = ESMC_PRESETS["esmc_300m"]
# A small ESM C; one with the knobs EsmcConfig allows beyond the released models (biases, GELU MLP, another RoPE
# base); and the 300M model's full width, heads and FFN with its depth cut from 30 to 2 layers to fit CI.
ESMC_SHAPES = {
    "small": dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, intermediate_size=256),
    "small_biases_gelu": dict(
        num_hidden_layers=2,
        hidden_size=48,
        num_attention_heads=3,
        intermediate_size=128,
        attention_bias=True,
        mlp_bias=True,
        hidden_act="gelu",
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    ),
    "esmc_300m_2_layers": dict(
        num_hidden_layers=2,
        hidden_size=_300M["hidden_size"],
        num_attention_heads=_300M["num_attention_heads"],
        intermediate_size=_300M["intermediate_size"],
    ),
}


def build_esmc(shape: str, seed: int = 0) -> EsmcForMaskedLM:
    """A random ESM C whose every weight (norms and biases included) is perturbed, so no mix-up can hide."""
    torch.manual_seed(seed)
    model = EsmcForMaskedLM(EsmcConfig(**ESMC_SHAPES[shape])).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def save_esmc(model: EsmcForMaskedLM, folder):
    model.save_pretrained(folder)
    EsmcTokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """shape -> (oracle, converted folder), built once per shape."""
    cache = {}

    def get(shape: str):
        if shape not in cache:
            oracle = build_esmc(shape)
            root = tmp_path_factory.mktemp(shape)
            cache[shape] = oracle, convert_esmc(save_esmc(oracle, root / "esmc"), root / "plm")
        return cache[shape]

    return get


@pytest.fixture(scope="module")
def protein_batch(swissprot_sequences) -> list[str]:
    """Real sequences of different lengths (so the batch is padded), two of them with <mask> tokens."""
    chosen = sorted(swissprot_sequences, key=len)
    batch = [chosen[-1][:90], chosen[0][:25], chosen[30][:60]]
    batch[1] = batch[1][:10] + "<mask>" + batch[1][11:]
    batch[2] = batch[2][:5] + "<mask>" + batch[2][6:40] + "<mask>" + batch[2][41:]
    return batch


def assert_close_at(got: torch.Tensor, want: torch.Tensor, real: torch.Tensor, kernel: str = "torch") -> None:
    """Equal at the real (non-padding) positions: within TOL with transformers' own GEMM ("torch"); oneDNN (the
    default on AMD CPUs) rounds differently, so there within TOL of the tensor's largest magnitude (as for ESM-2)."""
    scale = 1.0 if kernel == "torch" else max(1.0, want[real].abs().max().item())
    torch.testing.assert_close(got[real], want[real], atol=TOL * scale, rtol=0)


@pytest.mark.parametrize("kernel", CPU_LINEAR_KERNELS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", ESMC_SHAPES)
def test_converted_model_matches_transformers_esmc(shape, backend, kernel, converted, protein_batch):
    oracle, folder = converted(shape)
    oracle.set_attn_implementation(backend)
    plm = PLMForMaskedLM.from_pretrained(folder, attn_implementation=backend, cpu_linear_kernel=kernel).eval()
    batch = PLMTokenizerFast.from_pretrained(folder)(protein_batch, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    assert not real.all() and (batch["input_ids"] == 32).any()  # padded, with <mask> tokens
    with torch.no_grad():
        want = oracle(**batch, output_hidden_states=True, output_attentions=backend == "eager")
        got = plm(**batch, output_hidden_states=True, output_attentions=backend == "eager")
    assert_close_at(got.logits, want.logits, real, kernel)
    # Both conventions: the embeddings, the outputs of layers 1..N-1, then the last layer after the final norm.
    assert len(got.hidden_states) == len(want.hidden_states) == oracle.config.num_hidden_layers + 1
    for ours, theirs in zip(got.hidden_states, want.hidden_states):
        assert_close_at(ours, theirs, real, kernel)
    if backend == "eager":  # attention maps: rows of real queries, padded keys included (weight 0 in both)
        assert len(got.attentions) == len(want.attentions) == oracle.config.num_hidden_layers
        for ours, theirs in zip(got.attentions, want.attentions):
            assert_close_at(ours.transpose(1, 2), theirs.transpose(1, 2), real, kernel)


def test_converted_config_carries_esmc_knobs(converted):
    oracle, folder = converted("small")
    config = PLMConfig.from_pretrained(folder)
    assert config.qk_norm and config.mlp_type == "glu" and config.hidden_act == "silu"
    assert config.lm_head_hidden_act == "gelu" and config.lm_head_bias and not config.tie_word_embeddings
    assert config.residual_multiplier == pytest.approx(1 / math.sqrt(3 / 36), rel=1e-15)
    weights = load_file(folder / "model.safetensors")
    assert torch.count_nonzero(weights["model.norm.bias"]) == 0  # ESM C's final norm has no bias
    torch.testing.assert_close(weights["lm_head.bias"], oracle.lm_head.decoder.bias.detach(), atol=0, rtol=0)
    assert json.loads((folder / "conversion.json").read_text())["converted_from"] == "esmc"


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_equals_padded_on_the_converted_model(backend, converted, protein_batch):
    _, folder = converted("small")
    model = PLMForMaskedLM.from_pretrained(folder, attn_implementation=backend).eval()
    tokenizer = PLMTokenizerFast.from_pretrained(folder)
    batch = tokenizer(protein_batch, padding=True, return_tensors="pt")
    encoded = [tokenizer(sequence)["input_ids"] for sequence in protein_batch]
    packed_ids = torch.tensor([sum(encoded, [])])
    positions = torch.tensor([sum((list(range(len(ids))) for ids in encoded), [])])
    with torch.no_grad():
        padded = model(**batch).logits[batch["attention_mask"].bool()]
        packed = model(input_ids=packed_ids, position_ids=positions).logits[0]
    torch.testing.assert_close(packed, padded, atol=TOL, rtol=0)


def test_tokenizer_reproduces_esmc_ids(converted, protein_batch):
    _, folder = converted("small")
    tokenizer, esmc_tokenizer = PLMTokenizerFast.from_pretrained(folder), EsmcTokenizer()
    texts = [*protein_batch, protein_batch[0][:12] + "|" + protein_batch[2][:20], "XBUZO.-"]
    ours = tokenizer(texts, padding=True, return_tensors="pt")
    theirs = esmc_tokenizer(texts, padding=True, return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    assert len(tokenizer) == 64 and tokenizer.convert_ids_to_tokens(63) == "<unused_63>"
    special = ("bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id", "unk_token_id")
    assert [getattr(tokenizer, name) for name in special] == [0, 2, 1, 32, 3]


def test_round_trip_is_bit_exact(tmp_path, converted, protein_batch):
    oracle, first = converted("small_biases_gelu")
    esmc_again = convert_plm_to_esmc(first, tmp_path / "esmc_again")
    second = convert_esmc(esmc_again, tmp_path / "plm_again")
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    assert json.loads((first / "config.json").read_text()) == json.loads((second / "config.json").read_text())
    assert (first / "vocab.txt").read_text() == (second / "vocab.txt").read_text()
    # The ESM C checkpoint we wrote holds the original weights and is a working transformers model.
    original = oracle.state_dict()
    written = load_file(esmc_again / "model.safetensors")
    assert written.keys() == original.keys() and all(torch.equal(written[k], original[k]) for k in original)
    reloaded = EsmcForMaskedLM.from_pretrained(esmc_again).eval()
    batch = EsmcTokenizer.from_pretrained(esmc_again)(protein_batch, padding=True, return_tensors="pt")
    oracle.set_attn_implementation(reloaded.config._attn_implementation)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, oracle(**batch).logits, atol=0, rtol=0)


def test_bf16_checkpoints_stay_bf16(tmp_path):
    oracle = build_esmc("small").to(torch.bfloat16)
    folder = convert_esmc(save_esmc(oracle, tmp_path / "esmc"), tmp_path / "plm")
    weights = load_file(folder / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.bfloat16}
    assert torch.equal(weights["model.layers.0.self_attn.q_norm.weight"], oracle.esmc.layers[0].self_attn.q_norm.weight)


def test_a_native_plm_model_with_esmc_knobs_exports_with_its_outputs(tmp_path, protein_batch):
    """A PLM model built from the ESM C knobs (tied embeddings, trained norm biases) becomes an EsmcForMaskedLM with
    the same logits; ESM C's decoder is a weight of its own, so the tied one is copied."""
    small = {**ESMC_SHAPES["small"], "residual_multiplier": esmc_residual_multiplier(3), "tie_word_embeddings": True}
    config = PLMConfig(**{**ESMC_PRESETS["esmc_300m"], **small})
    model = PLMForMaskedLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name != "model.norm.bias":  # the one bias ESM C lacks stays zero
                parameter.add_(torch.randn_like(parameter) * 0.02)
    model.save_pretrained(tmp_path / "plm")
    build_esmc_tokenizer(tmp_path / "plm", config.vocab_size).save_pretrained(tmp_path / "plm")
    esmc = EsmcForMaskedLM.from_pretrained(convert_plm_to_esmc(tmp_path / "plm", tmp_path / "esmc")).eval()
    assert torch.equal(esmc.lm_head.decoder.weight, model.model.embeddings.word_embeddings.weight)
    batch = PLMTokenizerFast.from_pretrained(tmp_path / "plm")(protein_batch, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert_close_at(model(**batch).logits, esmc(**batch).logits, batch["attention_mask"].bool())


def test_reverse_conversion_names_what_esmc_cannot_express(tmp_path):
    model = PLMForMaskedLM(config_from_preset("tiny"))  # RMSNorm, no QK norm, default vocabulary
    model.save_pretrained(tmp_path / "plm")
    PLMTokenizerFast().save_pretrained(tmp_path / "plm")
    with pytest.raises(ValueError, match="norm_type='rmsnorm'.*qk_norm=False.*residual_multiplier"):
        convert_plm_to_esmc(tmp_path / "plm", tmp_path / "esmc")


def test_reverse_conversion_refuses_a_nonzero_final_norm_bias(tmp_path, converted):
    _, folder = converted("small")
    model = PLMForMaskedLM.from_pretrained(folder)
    with torch.no_grad():
        model.model.norm.bias.fill_(0.1)  # trained after conversion: ESM C has nowhere to put it
    model.save_pretrained(tmp_path / "plm")
    shutil.copy(folder / "vocab.txt", tmp_path / "plm")
    PLMTokenizerFast.from_pretrained(folder).save_pretrained(tmp_path / "plm")
    with pytest.raises(ValueError, match="model.norm.bias is not zero"):
        convert_plm_to_esmc(tmp_path / "plm", tmp_path / "esmc")


def test_wrong_folders_are_rejected_with_the_file_and_the_reason(tmp_path, converted):
    _, plm_folder = converted("small")
    with pytest.raises(ValueError, match="config.json: model_type 'plm' is not 'esmc'"):
        convert_esmc(plm_folder, tmp_path / "out")
    source = save_esmc(build_esmc("small"), tmp_path / "esmc")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(
        json.dumps({"model_type": "esmc", "d_model": 960, "n_layers": 30, "n_heads": 15})
    )
    with pytest.raises(ValueError, match="legacy/config.json: an `esm`-package ESM C config"):
        convert_esmc(legacy, tmp_path / "out")
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["L"], tokenizer["model"]["vocab"]["A"] = 5, 4
    (source / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ValueError, match="tokenizer.json: not ESM C's vocabulary.*'L'=5"):
        convert_esmc(source, tmp_path / "out")
    (source / "tokenizer.json").unlink()  # EsmcTokenizer needs no file: the ids are ESM C's own
    weights = load_file(source / "model.safetensors")
    weights["classifier.weight"] = torch.zeros(2, 64)
    from safetensors.torch import save_file

    save_file(weights, source / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected weights \['classifier.weight'\]"):
        convert_esmc(source, tmp_path / "out")


def test_presets_match_the_published_shapes():
    # The 6B model is EsmcConfig's default; 300M/600M follow ESM C's SwiGLU rule (8/3 d rounded up to 256).
    assert plm_config_to_esmc(PLMConfig(**ESMC_PRESETS["esmc_6b"])).to_dict() == EsmcConfig().to_dict()
    shapes = {
        name: (p["num_hidden_layers"], p["hidden_size"], p["num_attention_heads"]) for name, p in ESMC_PRESETS.items()
    }
    assert shapes == {"esmc_300m": (30, 960, 15), "esmc_600m": (36, 1152, 18), "esmc_6b": (80, 2560, 40)}
    assert [p["intermediate_size"] for p in ESMC_PRESETS.values()] == [2560, 3072, 6912]
    for name, low, high in (("esmc_300m", 0.3e9, 0.36e9), ("esmc_600m", 0.55e9, 0.65e9), ("esmc_6b", 5.9e9, 6.6e9)):
        with torch.device("meta"):
            count = sum(p.numel() for p in PLMForMaskedLM(PLMConfig(**ESMC_PRESETS[name])).parameters())
        assert low < count < high, (name, count)
        assert ESMC_PRESETS[name]["residual_multiplier"] == esmc_residual_multiplier(shapes[name][0])


def oracle_pseudo_log_likelihood(oracle: EsmcForMaskedLM, sequence: str) -> float:
    """Each residue masked in turn, log-softmax over the whole vocabulary, computed with EsmcForMaskedLM."""
    ids = EsmcTokenizer()(sequence, return_tensors="pt")["input_ids"][0]
    rows = ids.repeat(len(sequence), 1)
    positions = torch.arange(1, len(sequence) + 1)
    rows[torch.arange(len(sequence)), positions] = 32
    with torch.no_grad():
        log_probs = oracle(input_ids=rows).logits.log_softmax(-1)
    return log_probs[torch.arange(len(sequence)), positions, ids[1:-1]].sum().item()


def run_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "modeling_plm", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    return stdout


def test_cli_end_to_end_from_a_hub_id_in_the_offline_cache(tmp_path, converted, swissprot_sequences):
    """`convert` of a hub id resolved through the offline hub cache, with `embed` and `score` (each checked against
    EsmcForMaskedLM) run at the same time on the same model converted in-process; then `to-esmc`."""
    oracle, converted_here = converted("small")
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--biohub--ESMC-tiny-test"
    save_esmc(oracle, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    sequences = swissprot_sequences[:2]
    (tmp_path / "in.fasta").write_text("".join(f">p{n}\n{s}\n" for n, s in enumerate(sequences)))
    plm = tmp_path / "plm"
    convert = run_cli("convert", "esmc", "biohub/ESMC-tiny-test", str(plm), env=env)
    embed = run_cli("embed", str(converted_here), str(tmp_path / "in.fasta"), str(tmp_path / "emb"), "--no-progress")
    score = run_cli("score", str(converted_here), "--sequence", sequences[1][:30], "--score", "pseudo-log-likelihood")

    finish(convert)
    assert json.loads((plm / "conversion.json").read_text())["base_model"] == "biohub/ESMC-tiny-test"
    ours, reference = load_file(plm / "model.safetensors"), load_file(converted_here / "model.safetensors")
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)
    rows = finish(score).strip().splitlines()
    assert rows[0].startswith("id,length,pseudo_log_likelihood")
    pll = oracle_pseudo_log_likelihood(oracle, sequences[1][:30])
    assert float(rows[1].split(",")[2]) == pytest.approx(pll, abs=1e-4)
    finish(embed)
    tokenizer = EsmcTokenizer()
    for (_, _, arrays), sequence in zip(load_embeddings(tmp_path / "emb"), sequences, strict=True):
        with torch.no_grad():
            last = oracle(**tokenizer(sequence, return_tensors="pt"), output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(torch.as_tensor(arrays["mean"]), last[0, 1:-1].mean(0), atol=TOL, rtol=0)

    assert main(["convert", "to-esmc", str(plm), str(tmp_path / "back")]) == 0
    written = load_file(tmp_path / "back" / "model.safetensors")
    assert all(torch.equal(written[name], tensor) for name, tensor in oracle.state_dict().items())
