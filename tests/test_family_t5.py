"""T5 protein encoders (Ankh, ProtT5) -> modeling_plm: layer-wise parity with transformers' T5EncoderModel, the
source's token ids, and the way back (`to-t5`)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5Tokenizer,
)
from transformers.convert_slow_tokenizer import import_protobuf

from modeling_plm import PLMConfig, PLMForMaskedLM, PLMModel, PLMTokenizerFast, config_from_preset
from modeling_plm.cli import main
from modeling_plm.hub.converters.t5 import (
    T5_PRESETS,
    convert_plm_to_t5,
    convert_t5,
    t5_config_to_plm,
)
from modeling_plm.hub.loading import ModelFolderError
from modeling_plm.inference.embedding import load_embeddings
from modeling_plm.kernels import OneDNNLinear

TOL = 1e-5
# Residue order of both families' vocabularies (ids 3, 4, ...). ProtT5's 25 pieces "▁A" ... "▁Z" are Rostlab's
# published listing; for Ankh, ids 3-22 (A ... C) are checked against FastPLMs' golden inputs of ElnaggarLab/ankh-base
# (test_ankh_ids_match_the_published_golden_inputs), X B O U Z at 23-27 are assumed to follow ProtT5's order.
RESIDUES = "A L G V S R E D T I P K F Q N Y M H W C X B O U Z".split()
SPECIALS = ["<pad>", "</s>", "<unk>"]
EXTRA_IDS = [f"<extra_id_{i}>" for i in range(99, -1, -1)]  # T5 numbers its sentinels backwards from the end
# FastPLMs' golden inputs for ElnaggarLab/ankh-base (tests/goldens/ankh_base.safetensors, its tokenizer.json).
ANKH_GOLDEN = {
    "MCADPSKCIYMYV": [19, 22, 3, 10, 13, 7, 14, 22, 12, 18, 19, 18, 6, 1],
    "MYPNQTSFAHGFWVHQIWLGFNGNVIFYM": [19, 18, 13, 17, 16, 11, 7, 15, 3, 20, 5, 15, 21, 6, 20, 16, 12, 21, 4]
    + [5, 15, 17, 5, 17, 6, 12, 15, 18, 19, 1],
}

# Small shapes (head_dim != hidden / heads, few buckets with a short max distance so that the logarithmic and the
# saturated buckets both occur) and the published widths of the smallest sizes, cut to 2 layers for CI.
SHAPES = {
    "prott5_small": dict(d_model=64, d_kv=32, num_heads=4, d_ff=256, num_layers=3, feed_forward_proj="relu")
    | dict(relative_attention_num_buckets=32, relative_attention_max_distance=40),
    "ankh_small": dict(d_model=48, d_kv=16, num_heads=6, d_ff=96, num_layers=3, feed_forward_proj="gated-gelu")
    | dict(relative_attention_num_buckets=64, relative_attention_max_distance=24),
    "ankh2_small": dict(d_model=32, d_kv=8, num_heads=2, d_ff=64, num_layers=2, feed_forward_proj="gated-silu")
    | dict(relative_attention_num_buckets=16, relative_attention_max_distance=20),
    "ankh_base_2_layers": dict(d_model=768, d_kv=64, num_heads=12, d_ff=3072, num_layers=2)
    | dict(feed_forward_proj="gated-gelu", relative_attention_num_buckets=64, relative_attention_max_distance=128),
    "prott5_xl_2_layers": dict(d_model=1024, d_kv=128, num_heads=32, d_ff=16384, num_layers=2)
    | dict(feed_forward_proj="relu", relative_attention_num_buckets=32, relative_attention_max_distance=128),
}
# Published configs (hub config.json), for the presets.
PUBLISHED = {
    "ankh_base": dict(d_model=768, d_kv=64, d_ff=3072, num_heads=12, num_layers=48, feed_forward_proj="gated-gelu")
    | dict(relative_attention_num_buckets=64, relative_attention_max_distance=128, vocab_size=144, dropout_rate=0.0),
    "prott5_xl": dict(d_model=1024, d_kv=128, d_ff=16384, num_heads=32, num_layers=24, feed_forward_proj="relu")
    | dict(relative_attention_num_buckets=32, relative_attention_max_distance=128, vocab_size=128, n_positions=512),
}


def family(shape: str) -> str:
    return "prott5" if shape.startswith("prott5") else "ankh"


def prott5_tokenizer() -> T5Tokenizer:
    """ProtT5's tokenizer: sentencepiece pieces "▁A" ... then 100 sentinels; residues are given space-separated."""
    pieces = [(token, 0.0) for token in SPECIALS] + [("▁" + residue, -1.0) for residue in RESIDUES]
    return T5Tokenizer(vocab=pieces + [(t, 0.0) for t in EXTRA_IDS], extra_ids=0, additional_special_tokens=EXTRA_IDS)


def ankh_tokenizer() -> PreTrainedTokenizerFast:
    """Ankh's character-level T5 tokenizer: bare residue pieces (no "▁"), raw sequences in, `</s>` appended. 128
    tokens for a 144-row embedding, so the converter must fill ids 128-143."""
    vocab = [(token, 0.0) for token in SPECIALS] + [(r, -1.0) for r in RESIDUES] + [(t, 0.0) for t in EXTRA_IDS]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    backend.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=EXTRA_IDS,
    )


def source_tokenizer(shape: str):
    return prott5_tokenizer() if family(shape) == "prott5" else ankh_tokenizer()


def source_inputs(shape: str, sequences: list[str]) -> dict:
    """The oracle's batch, as each family is used: ProtT5 takes residues separated by spaces."""
    texts = [" ".join(s) for s in sequences] if family(shape) == "prott5" else sequences
    return source_tokenizer(shape)(texts, padding=True, return_tensors="pt")


def build_t5(shape: str, encoder_decoder: bool = False) -> T5EncoderModel:
    """A random T5 whose every weight (norms and the bias table included) is perturbed, so no mix-up can hide."""
    vocab_size = 128 if family(shape) == "prott5" else 144
    config = T5Config(vocab_size=vocab_size, dropout_rate=0.0, is_encoder_decoder=encoder_decoder, **SHAPES[shape])
    model = (T5ForConditionalGeneration if encoder_decoder else T5EncoderModel)(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def save_t5(model, folder, shape: str):
    model.save_pretrained(folder)
    source_tokenizer(shape).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def protein_batch(swissprot_sequences) -> list[str]:
    """Real sequences of different lengths (so the batch is padded)."""
    chosen = sorted(swissprot_sequences, key=len)
    return [chosen[-1][:90], chosen[0][:25], chosen[30][:60]]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """shape -> (source T5, converted folder), each converted once for the module."""
    cache = {}

    def get(shape: str):
        if shape not in cache:
            torch.manual_seed(0)
            folder = tmp_path_factory.mktemp(shape)
            model = build_t5(shape)
            cache[shape] = model, convert_t5(save_t5(model, folder / "t5", shape), folder / "plm")
        return cache[shape]

    return get


def masked_max_diff(got: torch.Tensor, want: torch.Tensor, real: torch.Tensor) -> float:
    return (got[real] - want[real]).abs().max().item()


# Both GEMMs on the small shapes; the published widths (100M weights for ProtT5-XL's two layers) run torch's, with
# which parity is to 1e-5 absolute (oneDNN, the default on AMD CPUs, rounds differently: 1e-5 of the largest value).
PARITY_CASES = [(shape, kernel) for shape in SHAPES if "small" in shape for kernel in ("torch", "onednn")] + [
    (shape, "torch") for shape in SHAPES if "small" not in shape
]


@pytest.mark.parametrize(("shape", "kernel"), PARITY_CASES)
def test_converted_encoder_matches_transformers_t5(shape, kernel, converted, protein_batch):
    t5, folder = converted(shape)
    sequences = protein_batch if "small" in shape else [s[:48] for s in protein_batch]  # CI time
    tokenizer = PLMTokenizerFast.from_pretrained(folder)
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    expected_batch = source_inputs(shape, sequences)
    assert torch.equal(batch["input_ids"], expected_batch["input_ids"])  # the family's ids, kept
    real = batch["attention_mask"].bool()
    assert not real.all()
    plm = PLMModel.from_pretrained(folder, cpu_linear_kernel=kernel).eval()
    assert isinstance(plm.layers[0].self_attn.q_proj, OneDNNLinear) == (kernel == "onednn")
    for backend in ("eager", "sdpa"):
        t5.set_attn_implementation(backend)
        plm.set_attn_implementation(backend)
        with torch.no_grad():
            want = t5(**expected_batch, output_hidden_states=True, output_attentions=backend == "eager")
            got = plm(**batch, output_hidden_states=True, output_attentions=backend == "eager")
        # Both stacks report the embeddings, each layer's output, and the last one after the final norm.
        assert len(got.hidden_states) == len(want.hidden_states) == t5.config.num_layers + 1
        scale = 1.0 if kernel == "torch" else max(1.0, want.last_hidden_state.abs().max().item())
        for index, (g, w) in enumerate(zip(got.hidden_states, want.hidden_states)):
            assert masked_max_diff(g, w, real) <= TOL * scale, f"{backend}: hidden state {index}"
        assert masked_max_diff(got.last_hidden_state, want.last_hidden_state, real) <= TOL * scale
        if backend == "eager":  # attention maps (queries at real positions), bias and padding mask included
            for g, w in zip(got.attentions, want.attentions):
                assert masked_max_diff(g.transpose(1, 2), w.transpose(1, 2), real) <= TOL * scale


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_packed_equals_padded(backend, converted, protein_batch):
    _, folder = converted("ankh_small")
    model = PLMModel.from_pretrained(folder, attn_implementation=backend).eval()
    tokenizer = PLMTokenizerFast.from_pretrained(folder)
    batch = tokenizer(protein_batch, padding=True, return_tensors="pt")
    encoded = [tokenizer(s)["input_ids"] for s in protein_batch]
    packed_ids = torch.tensor([sum(encoded, [])])
    positions = torch.tensor([sum((list(range(len(e))) for e in encoded), [])])
    with torch.no_grad():
        padded = model(**batch).last_hidden_state
        packed = model(input_ids=packed_ids, position_ids=positions).last_hidden_state[0]
        # Without the restarts the row is one long sequence: the relative bias would differ.
        unrestarted = model(input_ids=packed_ids).last_hidden_state[0]
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(packed, padded[real], atol=TOL, rtol=0)
    assert (unrestarted - padded[real]).abs().max() > 1e-3


@pytest.mark.parametrize("shape", ["prott5_small", "ankh_small"])
def test_round_trip_t5_plm_t5_plm_is_identical(shape, converted, tmp_path, protein_batch):
    t5, first = converted(shape)
    back = convert_plm_to_t5(first, tmp_path / "t5_again")
    second = convert_t5(back, tmp_path / "plm_again")
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    configs = [json.loads((folder / "config.json").read_text()) for folder in (first, second)]
    assert configs[0] == configs[1]
    assert (first / "vocab.txt").read_text() == (second / "vocab.txt").read_text()
    # The T5 checkpoint we wrote is a working transformers encoder with the original outputs and ids.
    reloaded = T5EncoderModel.from_pretrained(back).eval()
    assert set(load_file(back / "model.safetensors")) == set(
        load_file(save_t5(t5, tmp_path / "ref", shape) / "model.safetensors")
    )
    expected_batch = source_inputs(shape, protein_batch)
    t5_batch = T5Tokenizer.from_pretrained(back)(
        [" ".join(s) for s in protein_batch], padding=True, return_tensors="pt"
    )
    assert torch.equal(t5_batch["input_ids"], expected_batch["input_ids"])
    with torch.no_grad():
        t5.set_attn_implementation("sdpa")
        torch.testing.assert_close(
            reloaded(**t5_batch).last_hidden_state, t5(**t5_batch).last_hidden_state, atol=0, rtol=0
        )


def write_spiece_model(folder) -> None:
    """ProtT5's tokenizer files: spiece.model (sentencepiece protobuf), special_tokens_map.json, no tokenizer.json."""
    proto = import_protobuf().ModelProto()
    for token, kind in [("<pad>", 3), ("</s>", 3), ("<unk>", 2)] + [("▁" + r, 1) for r in RESIDUES]:
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = token, 0.0 if kind != 1 else -1.0, kind
    (folder / "spiece.model").write_bytes(proto.SerializeToString())
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    specials = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "additional_special_tokens": EXTRA_IDS}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))


def test_prott5_spiece_model_gives_the_ids_of_its_t5_tokenizer(converted, tmp_path, swissprot_sequences):
    _, from_json = converted("prott5_small")
    folder = tmp_path / "spiece"
    shutil.copytree(from_json.parent / "t5", folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    write_spiece_model(folder)
    from_spiece = convert_t5(folder, tmp_path / "plm")
    assert (from_spiece / "vocab.txt").read_text() == (from_json / "vocab.txt").read_text()
    tokenizer = PLMTokenizerFast.from_pretrained(from_spiece)
    ours = tokenizer(swissprot_sequences)["input_ids"]
    theirs = prott5_tokenizer()([" ".join(s) for s in swissprot_sequences])["input_ids"]
    assert ours == theirs and all(ids[-1] == 1 for ids in ours)  # </s> appended, no <bos>
    assert tokenizer.bos_token is None
    assert tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [127, 28]  # T5's numbering


def test_ankh_ids_match_the_published_golden_inputs(converted, swissprot_sequences):
    _, folder = converted("ankh_small")
    tokenizer = PLMTokenizerFast.from_pretrained(folder)
    for sequence, ids in ANKH_GOLDEN.items():
        assert tokenizer(sequence)["input_ids"] == ids
    assert tokenizer(swissprot_sequences)["input_ids"] == ankh_tokenizer()(swissprot_sequences)["input_ids"]
    vocab = (folder / "vocab.txt").read_text().split()
    assert len(vocab) == 144 and vocab[128:] == [f"<unused_{i}>" for i in range(128, 144)]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "modeling_plm", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_cli_convert_score_refusal_and_reverse(converted, tmp_path):
    """`plm convert` in a subprocess is test_conversion_from_a_hub_id_in_the_offline_cache's; here the aliases."""
    source = converted("prott5_small")[1].parent / "t5"
    assert main(["convert", "t5", str(source), str(tmp_path / "plm")]) == 0
    assert main(["convert", "ankh", str(source), str(tmp_path / "plm_ankh")]) == 0
    weights, alias_weights = (load_file(tmp_path / name / "model.safetensors") for name in ("plm", "plm_ankh"))
    assert weights.keys() == alias_weights.keys() and all(torch.equal(weights[k], alias_weights[k]) for k in weights)
    assert type(AutoModel.from_pretrained(tmp_path / "plm")) is PLMModel
    assert json.loads((tmp_path / "plm" / "conversion.json").read_text())["converted_from"] == "t5"
    # An encoder has no LM head: `plm score` refuses it, saying so, instead of scoring with noise.
    completed = run_cli("score", str(tmp_path / "plm"), "--sequence", "MKTAYIAKQR", "--no-progress")
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "has no language-model head" in completed.stderr and "Traceback" not in completed.stderr
    assert main(["convert", "to-t5", str(tmp_path / "plm"), str(tmp_path / "back")]) == 0
    assert json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == ["T5EncoderModel"]
    assert type(T5EncoderModel.from_pretrained(tmp_path / "back")) is T5EncoderModel


def test_cli_embed_matches_the_t5_encoder(converted, tmp_path, protein_batch):
    t5, folder = converted("ankh_small")
    fasta = tmp_path / "proteins.fasta"
    fasta.write_text("".join(f">p{index}\n{s}\n" for index, s in enumerate(protein_batch)))
    completed = run_cli("embed", str(folder), str(fasta), str(tmp_path / "emb"), "--no-progress", "--per-residue")
    assert completed.returncode == 0, completed.stderr[-2000:]
    stored = {record_id: arrays for _, record_id, arrays in load_embeddings(tmp_path / "emb")}
    with torch.no_grad():
        for index, sequence in enumerate(protein_batch):
            states = t5(**ankh_tokenizer()([sequence], return_tensors="pt")).last_hidden_state[0, :-1]  # no </s>
            residues = torch.as_tensor(stored[f"p{index}"]["residues"])
            torch.testing.assert_close(residues, states, atol=TOL, rtol=0)
            torch.testing.assert_close(torch.as_tensor(stored[f"p{index}"]["mean"]), states.mean(0), atol=TOL, rtol=0)


def test_conversion_from_a_hub_id_in_the_offline_cache(tmp_path, protein_batch):
    """ProtT5's hub layout: an encoder-decoder pytorch_model.bin, spiece.model; the decoder is left out by rule."""
    torch.manual_seed(0)
    t5 = build_t5("prott5_small", encoder_decoder=True)
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "cache" / "models--Rostlab--prot_t5_tiny_test" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    t5.config.save_pretrained(snapshot)
    torch.save(t5.state_dict(), snapshot / "pytorch_model.bin")
    write_spiece_model(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    completed = run_cli("convert", "prott5", "Rostlab/prot_t5_tiny_test", str(tmp_path / "out"), env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert record["base_model"] == "Rostlab/prot_t5_tiny_test"
    decoder = sum(name.startswith("decoder.") for name in t5.state_dict())
    assert record["dropped"] == [f"decoder.* ({decoder} tensors)", "lm_head.weight"]
    plm = PLMModel.from_pretrained(tmp_path / "out").eval()
    batch = PLMTokenizerFast.from_pretrained(tmp_path / "out")(protein_batch, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        got = plm(**batch).last_hidden_state
        want = t5.get_encoder()(**batch).last_hidden_state
    assert masked_max_diff(got, want, real) <= TOL


def test_wrong_sources_are_rejected_naming_the_problem(converted, tmp_path):
    source = converted("ankh_small")[1].parent / "t5"
    folder = shutil.copytree(source, tmp_path / "t5")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelFolderError, match=r"config.json: model_type 'bert' is not 't5'"):
        convert_t5(folder, tmp_path / "out")
    (folder / "config.json").write_text(json.dumps({**config, "is_decoder": True}))
    with pytest.raises(ValueError, match="Not a T5 encoder checkpoint: is_decoder=True"):
        convert_t5(folder, tmp_path / "out")
    (folder / "config.json").write_text(json.dumps(config))
    weights = load_file(folder / "model.safetensors")
    save_file(
        {**weights, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": torch.zeros(64, 6)},
        folder / "model.safetensors",
    )
    with pytest.raises(ValueError, match="unexpected weights.*block.1.*relative_attention_bias"):
        convert_t5(folder, tmp_path / "out")
    save_file(weights, folder / "model.safetensors")
    tokens = json.loads((folder / "tokenizer.json").read_text())
    tokens["model"]["vocab"][5] = ["▁LG", -1.0]
    (folder / "tokenizer.json").write_text(json.dumps(tokens))
    with pytest.raises(ValueError, match=r"not a residue-level T5 tokenizer: token '▁LG' \(id 5\)"):
        convert_t5(folder, tmp_path / "out")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or spiece.model"):
        convert_t5(folder, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        convert_t5(tmp_path / "missing" / "folder" / "x", tmp_path / "out")


def test_reverse_conversion_names_what_t5_cannot_express(converted, tmp_path):
    model = PLMForMaskedLM(config_from_preset("tiny"))
    model.save_pretrained(tmp_path / "tiny")
    PLMTokenizerFast().save_pretrained(tmp_path / "tiny")
    with pytest.raises(ValueError, match="position_embedding_type='rotary'.*attention_scale=None.*bos_token_id=1"):
        convert_plm_to_t5(tmp_path / "tiny", tmp_path / "t5")
    # A masked LM of a T5 shape: T5EncoderModel has nowhere to put the LM head.
    folder = converted("ankh_small")[1]
    PLMForMaskedLM(PLMConfig.from_pretrained(folder)).save_pretrained(tmp_path / "mlm")
    PLMTokenizerFast.from_pretrained(folder).save_pretrained(tmp_path / "mlm")
    with pytest.raises(ValueError, match="'lm_head.decoder.weight' has no T5 encoder counterpart"):
        convert_plm_to_t5(tmp_path / "mlm", tmp_path / "t5")


@pytest.mark.parametrize("name", PUBLISHED)
def test_presets_are_what_the_converter_makes_of_the_published_configs(name):
    assert PLMConfig(**T5_PRESETS[name]).to_dict() == t5_config_to_plm(T5Config(**PUBLISHED[name])).to_dict()


def test_preset_sizes_match_the_published_checkpoints():
    count = {name: PLMConfig(**preset).num_parameters(include_embeddings=True) for name, preset in T5_PRESETS.items()}
    # lhallee/ankh_base_encoder's model.safetensors (float32 encoder of ElnaggarLab/ankh-base) is 1,812,735,384
    # bytes: our count in float32 plus a header of some 50 kB.
    assert 0 < 1_812_735_384 - 4 * count["ankh_base"] < 100_000
    # Rostlab/prot_t5_xl_half_uniref50-enc's float16 pytorch_model.bin is 2.42 GB; FastPLMs lists Ankh large at 1.15B.
    assert round(2 * count["prott5_xl"] / 1e9, 2) == 2.42
    assert round(count["ankh_large"] / 1e9, 2) == 1.15
