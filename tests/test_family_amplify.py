"""AMPLIFY -> modeling_plm conversion: layer-wise parity with an independent AMPLIFY (tests/reference_amplify.py),
tokenizer ids, the way back, and the CLI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from modeling_plm import PLMConfig, PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.cli import main
from modeling_plm.hub.converters.amplify import (
    AMPLIFY_PRESETS,
    AMPLIFY_TOKENS,
    convert_amplify,
    convert_plm_to_amplify,
    swiglu_width,
)
from modeling_plm.hub.loading import ModelFolderError
from modeling_plm.inference.embedding import load_embeddings

from .reference_amplify import (
    AMPLIFY_SPECIAL_IDS,
    AMPLIFY_VOCAB,
    AmplifyConfig,
    AmplifyReference,
    additive_pad_mask,
    amplify_encode,
)

TOL = 1e-5
SMALL = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256)
# The published 120M width, heads and FFN (conf/model/120M.yaml; 350M has the same head_dim), cut to 2 layers for CI;
# small ones with biases (SwiGLU) and with AMPLIFY's GELU + LayerNorm FFN (its own test model's choices).
SHAPES = {
    "small": SMALL,
    "small_biases": {**SMALL, "att_bias": True, "ffn_bias": True, "norm_eps": 1e-6},
    "small_gelu_layernorm": {**SMALL, "hidden_act": "GELU", "rms_norm": False, "att_bias": True, "ffn_bias": True},
    "amplify_120m_2_layers": dict(hidden_size=640, num_hidden_layers=2, num_attention_heads=10, intermediate_size=2560),
}


def build_amplify(shape: str) -> AmplifyReference:
    """A random AMPLIFY whose every weight (norms and biases included) is perturbed, so no mix-up can hide."""
    torch.manual_seed(0)
    model = AmplifyReference(AmplifyConfig(**SHAPES[shape])).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def hub_tokenizer_json() -> str:
    """A character-level tokenizer.json with AMPLIFY's vocabulary and <bos> ... <eos> framing."""
    vocab = {token: index for index, token in enumerate(AMPLIFY_VOCAB)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.add_special_tokens([token for token in AMPLIFY_VOCAB if token.startswith("<")])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 3), ("<eos>", 4)]
    )
    return tokenizer.to_str()


def save_amplify(model: AmplifyReference, folder: Path, tokenizer_files: str = "hub") -> Path:
    """The hub's layout (config.json, model.safetensors, tokenizer.json + its config) or the GitHub repo's
    vocab.txt in place of the tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: t.contiguous() for name, t in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(model.config.to_hub_json(), indent=2))
    if tokenizer_files == "hub":
        (folder / "tokenizer.json").write_text(hub_tokenizer_json())
        special = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
        special["mask_token"] = "<mask>"
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **special}
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        (folder / "vocab.txt").write_text("\n".join(AMPLIFY_VOCAB) + "\n")
    return folder


def reference_from_hub_json(config: dict, weights: dict[str, torch.Tensor]) -> AmplifyReference:
    """The oracle built from an AMPLIFY config.json (every AMPLIFYConfig field read) and loaded strictly."""
    fields = AmplifyConfig.__dataclass_fields__
    model = AmplifyReference(AmplifyConfig(**{key: config[key] for key in fields})).eval()
    model.load_state_dict(weights)
    return model


@pytest.fixture(scope="module")
def protein_batch(swissprot_sequences) -> list[str]:
    """Real sequences of different lengths, so the batch is padded."""
    chosen = sorted(swissprot_sequences, key=len)
    return [chosen[-1][:90], chosen[0][:25], chosen[30][:60]]


def amplify_batch(sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """AMPLIFY's ids, right-padded with <pad>, a few residues replaced by <mask>; and the 1/0 mask."""
    encoded = [amplify_encode(sequence) for sequence in sequences]
    length = max(map(len, encoded))
    input_ids = torch.tensor([ids + [AMPLIFY_SPECIAL_IDS["pad_token_id"]] * (length - len(ids)) for ids in encoded])
    attention_mask = (torch.arange(length)[None] < torch.tensor([len(ids) for ids in encoded])[:, None]).long()
    input_ids[0, 7] = input_ids[1, 3] = input_ids[2, 20] = AMPLIFY_SPECIAL_IDS["mask_token_id"]
    return input_ids, attention_mask


def check_layerwise_parity(reference, ours, input_ids, attention_mask, backend: str) -> float:
    """Logits and every hidden state at real positions. AMPLIFY returns the block outputs (no embedding entry, the
    last before `layer_norm_2`); ours are the embeddings, the blocks, and the last one after the final norm."""
    real = attention_mask.bool()
    with torch.no_grad():
        logits, blocks = reference(input_ids, additive_pad_mask(attention_mask), backend=backend)
        expected = [reference.encoder(input_ids), *blocks[:-1], reference.layer_norm_2(blocks[-1])]
        output = ours(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    assert len(output.hidden_states) == len(expected) == reference.config.num_hidden_layers + 1
    worst = 0.0
    for got, want in [(output.logits, logits), *zip(output.hidden_states, expected)]:
        torch.testing.assert_close(got[real], want[real], atol=TOL, rtol=0)
        worst = max(worst, (got[real] - want[real]).abs().max().item())
    return worst


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """AMPLIFY oracle and its conversion, once per shape."""
    cache: dict[str, tuple[AmplifyReference, Path]] = {}

    def get(shape: str) -> tuple[AmplifyReference, Path]:
        if shape not in cache:
            reference = build_amplify(shape)
            folder = tmp_path_factory.mktemp(shape)
            cache[shape] = reference, convert_amplify(save_amplify(reference, folder / "amplify"), folder / "plm")
        return cache[shape]

    return get


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("shape", SHAPES)
def test_converted_model_matches_amplify_layer_by_layer(shape, backend, converted, protein_batch):
    reference, folder = converted(shape)
    ours = PLMForMaskedLM.from_pretrained(folder, attn_implementation=backend, cpu_linear_kernel="torch").eval()
    assert ours.config._attn_implementation == backend
    input_ids, attention_mask = amplify_batch(protein_batch)
    assert (attention_mask == 0).any()
    worst = check_layerwise_parity(reference, ours, input_ids, attention_mask, backend)
    print(f"{shape} {backend}: max abs difference {worst:.2e}")


def test_onednn_kernel_matches_amplify(converted, protein_batch):
    """The default CPU GEMM on AMD (oneDNN) rounds differently from torch's; parity still holds to 1e-5."""
    reference, folder = converted("amplify_120m_2_layers")
    ours = PLMForMaskedLM.from_pretrained(folder, attn_implementation="sdpa", cpu_linear_kernel="onednn").eval()
    check_layerwise_parity(reference, ours, *amplify_batch(protein_batch), backend="sdpa")


def test_converted_config_is_amplify_120m_preset(converted):
    _, folder = converted("amplify_120m_2_layers")
    config = PLMConfig.from_pretrained(folder)
    preset = {**AMPLIFY_PRESETS["amplify_120m"], "num_hidden_layers": 2}
    assert {key: getattr(config, key) for key in preset} == preset
    assert {key: getattr(config, key) for key in AMPLIFY_TOKENS} == AMPLIFY_TOKENS
    assert config.intermediate_size == swiglu_width(2560) == 1712
    assert AMPLIFY_PRESETS["amplify_350m"]["intermediate_size"] == swiglu_width(3840) == 2560


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_packed_row_equals_padded_batch(backend, converted, protein_batch):
    _, folder = converted("small_biases")
    model = PLMForMaskedLM.from_pretrained(folder, attn_implementation=backend, cpu_linear_kernel="torch").eval()
    input_ids, attention_mask = amplify_batch(protein_batch)
    real = attention_mask.bool()
    packed_ids = input_ids[real][None]
    positions = torch.cat([torch.arange(int(length)) for length in attention_mask.sum(-1)])[None]
    with torch.no_grad():
        padded = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        packed = model(input_ids=packed_ids, position_ids=positions, output_hidden_states=True)
    torch.testing.assert_close(packed.logits[0], padded.logits[real], atol=TOL, rtol=0)
    for got, want in zip(packed.hidden_states, padded.hidden_states):
        torch.testing.assert_close(got[0], want[real], atol=TOL, rtol=0)


def test_tokenizer_reproduces_amplify_ids(converted, swissprot_sequences, tmp_path):
    _, folder = converted("small")
    tokenizer = PLMTokenizerFast.from_pretrained(folder)
    assert [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])] == AMPLIFY_VOCAB
    hub_tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder.parent / "amplify" / "tokenizer.json"))
    sequences = [*swissprot_sequences, "MKT|LVAGB"]  # `|` (AMPLIFY's chain separator) and B are tokens
    for sequence in sequences:
        expected = amplify_encode(sequence)
        assert tokenizer(sequence)["input_ids"] == expected == hub_tokenizer(sequence)["input_ids"]
    named = {"pad": 0, "unk": 1, "mask": 2, "bos": 3, "eos": 4}
    assert {name: getattr(tokenizer, f"{name}_token_id") for name in named} == named
    # The GitHub repo's layout (vocab.txt, no tokenizer files) gives the same tokenizer.
    reference = build_amplify("small")
    again = convert_amplify(save_amplify(reference, tmp_path / "repo", tokenizer_files="vocab"), tmp_path / "plm")
    assert (again / "tokenizer.json").read_text() == (folder / "tokenizer.json").read_text()


@pytest.mark.parametrize("shape", ["small_biases", "small_gelu_layernorm"])
def test_round_trips_are_bit_exact(shape, converted, protein_batch, tmp_path):
    reference, first = converted(shape)
    amplify_again = convert_plm_to_amplify(first, tmp_path / "amplify_again")
    # AMPLIFY -> PLM -> AMPLIFY: the original weights, config and vocabulary.
    original = reference.state_dict()
    written = load_file(amplify_again / "model.safetensors")
    assert written.keys() == original.keys()
    assert all(torch.equal(written[name], original[name]) for name in original)
    config = json.loads((amplify_again / "config.json").read_text())
    assert {key: config[key] for key in reference.config.to_hub_json()} == reference.config.to_hub_json()
    assert (amplify_again / "vocab.txt").read_text().split() == AMPLIFY_VOCAB
    reloaded = reference_from_hub_json(config, written)
    input_ids, attention_mask = amplify_batch(protein_batch)
    with torch.no_grad():
        mask = additive_pad_mask(attention_mask)
        torch.testing.assert_close(reloaded(input_ids, mask)[0], reference(input_ids, mask)[0], atol=0, rtol=0)
    # PLM -> AMPLIFY -> PLM: the same checkpoint.
    second = convert_amplify(amplify_again, tmp_path / "plm_again")
    first_weights, second_weights = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[name], second_weights[name]) for name in first_weights)
    assert json.loads((first / "config.json").read_text()) == json.loads((second / "config.json").read_text())
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()


def test_reverse_conversion_expresses_tied_and_bias_free_decoders(tmp_path, protein_batch):
    """A tied decoder is written out in full; a missing decoder bias becomes zeros (the same maths)."""
    shape = dict(num_hidden_layers=1, hidden_size=64, num_attention_heads=4, intermediate_size=176)
    tied = dict(tie_word_embeddings=True, lm_head_bias=False)
    config = PLMConfig(**{**AMPLIFY_PRESETS["amplify_120m"], **AMPLIFY_TOKENS, **shape, **tied})
    model = PLMForMaskedLM(config).eval()
    model.save_pretrained(tmp_path / "plm")
    PLMTokenizerFast(vocab_file=None, tokenizer_object=_plm_amplify_tokenizer()).save_pretrained(tmp_path / "plm")
    folder = convert_plm_to_amplify(tmp_path / "plm", tmp_path / "amplify")
    amplify = json.loads((folder / "config.json").read_text())
    assert amplify["intermediate_size"] == 256 and swiglu_width(256) == 176
    weights = load_file(folder / "model.safetensors")
    assert torch.equal(weights["decoder.weight"], weights["encoder.weight"])
    assert not weights["decoder.bias"].any()
    reference = reference_from_hub_json(amplify, weights)
    input_ids, attention_mask = amplify_batch(protein_batch)
    with torch.no_grad():
        want = reference(input_ids, additive_pad_mask(attention_mask))[0]
        got = model(input_ids=input_ids, attention_mask=attention_mask).logits
    real = attention_mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=TOL, rtol=0)


def _plm_amplify_tokenizer() -> Tokenizer:
    from modeling_plm.tokenization_plm import build_backend_tokenizer

    specials = [token for token in AMPLIFY_VOCAB if token.startswith("<")]
    return build_backend_tokenizer(AMPLIFY_VOCAB, "<bos>", "<eos>", "<pad>", "<unk>", specials)


def test_reverse_conversion_names_what_amplify_cannot_express(tmp_path):
    config = config_from_preset("tiny", token_dropout=True, qk_norm=True, num_key_value_heads=2)
    model = PLMForMaskedLM(config)  # ESM's LM-head transform, grouped-query attention, ...
    model.save_pretrained(tmp_path / "plm")
    PLMTokenizerFast().save_pretrained(tmp_path / "plm")
    with pytest.raises(ValueError, match="cannot be expressed as AMPLIFY") as error:
        convert_plm_to_amplify(tmp_path / "plm", tmp_path / "amplify")
    for knob in ("num_key_value_heads=2", "qk_norm=True", "lm_head_transform=True", "token_dropout=True"):
        assert knob in str(error.value)


def test_unsupported_amplify_settings_are_refused(tmp_path):
    reference = build_amplify("small")
    folder = save_amplify(reference, tmp_path / "amplify")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps({**config, "layer_norm_after_embedding": True, "layer_norm_before_last_layer": False})
    )
    with pytest.raises(ValueError, match="config.json: .*layer_norm_after_embedding=True.*layer_norm_before_last"):
        convert_amplify(folder, tmp_path / "plm")


def test_wrong_folders_are_rejected_with_the_file_named(tmp_path):
    reference = build_amplify("small")
    folder = save_amplify(reference, tmp_path / "amplify")
    weights = load_file(folder / "model.safetensors")
    save_file({**weights, "transformer_encoder.0.extra.weight": torch.zeros(2)}, folder / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"not an AMPLIFY checkpoint: unexpected weights \['transformer_encoder.0.extra"
    ):
        convert_amplify(folder, tmp_path / "out")
    del weights["transformer_encoder.1.ffn.w3.weight"]
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ValueError, match="missing.*layers.1.mlp.down_proj.weight"):
        convert_amplify(folder, tmp_path / "out")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.txt"):
        convert_amplify(folder, tmp_path / "out")
    (folder / "config.json").write_text(json.dumps({"model_type": "esm"}))
    with pytest.raises(ModelFolderError, match="config.json: model_type 'esm' is not 'AMPLIFY'"):
        convert_amplify(folder, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        convert_amplify(tmp_path / "missing" / "folder" / "x", tmp_path / "out")


def test_tokenizer_files_must_agree_with_config_ids(tmp_path):
    folder = save_amplify(build_amplify("small"), tmp_path / "amplify")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "bos_token_id": 0}))
    with pytest.raises(ValueError, match="bos_token_id=0 but '<bos>' has id 3"):
        convert_amplify(folder, tmp_path / "plm")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-m", "modeling_plm.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed


def test_cli_convert_from_hub_cache_then_embed_and_score(tmp_path, protein_batch):
    """`plm convert amplify OWNER/NAME` through the offline hub cache, then `plm embed` and `plm score` on the result,
    each in a subprocess, against the oracle."""
    reference = build_amplify("small")
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--chandar-lab--AMPLIFY_test"
    save_amplify(reference, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    run_cli("convert", "amplify", "chandar-lab/AMPLIFY_test", str(tmp_path / "plm"), env=env)
    assert json.loads((tmp_path / "plm" / "conversion.json").read_text())["base_model"] == "chandar-lab/AMPLIFY_test"

    fasta = tmp_path / "proteins.fasta"
    fasta.write_text("".join(f">p{i}\n{sequence}\n" for i, sequence in enumerate(protein_batch)))
    run_cli("embed", str(tmp_path / "plm"), str(fasta), str(tmp_path / "emb"), "--per-residue", "--no-progress")
    embedded = {record: arrays for _, record, arrays in load_embeddings(tmp_path / "emb")}
    for index, sequence in enumerate(protein_batch):
        ids = torch.tensor([amplify_encode(sequence)])
        with torch.no_grad():
            last = reference.layer_norm_2(reference(ids)[1][-1])[0, 1:-1]  # residues, after the final norm
        torch.testing.assert_close(torch.as_tensor(embedded[f"p{index}"]["residues"]), last, atol=TOL, rtol=0)
        torch.testing.assert_close(torch.as_tensor(embedded[f"p{index}"]["mean"]), last.mean(0), atol=TOL, rtol=0)

    sequence = protein_batch[1]
    scored = run_cli("score", str(tmp_path / "plm"), "--sequence", sequence, "--score", "pseudo-log-likelihood")
    header, row = scored.stdout.strip().splitlines()[-2:]
    pll = float(dict(zip(header.split(","), row.split(",")))["pseudo_log_likelihood"])
    assert pll == pytest.approx(reference_pseudo_log_likelihood(reference, sequence), abs=1e-4)


def reference_pseudo_log_likelihood(reference: AmplifyReference, sequence: str) -> float:
    """Each residue masked in turn, log p(residue) from AMPLIFY's logits, summed."""
    ids = torch.tensor(amplify_encode(sequence))
    masked = ids.repeat(len(sequence), 1)
    positions = torch.arange(1, len(sequence) + 1)
    masked[torch.arange(len(sequence)), positions] = AMPLIFY_SPECIAL_IDS["mask_token_id"]
    with torch.no_grad():
        log_probs = reference(masked)[0].log_softmax(-1)
    return log_probs[torch.arange(len(sequence)), positions, ids[positions]].sum().item()


def test_cli_reverse_conversion(converted, tmp_path):
    _, folder = converted("small")
    assert main(["convert", "to-amplify", str(folder), str(tmp_path / "amplify")]) == 0
    written = load_file(tmp_path / "amplify" / "model.safetensors")
    original = load_file(folder.parent / "amplify" / "model.safetensors")
    assert written.keys() == original.keys() and all(torch.equal(written[n], original[n]) for n in original)
    shutil.rmtree(tmp_path / "amplify")
