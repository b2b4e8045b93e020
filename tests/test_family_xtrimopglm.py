"""xTrimoPGLM / ProteinGLM -> modeling_plm conversion: parity with an independent ProteinGLM
(tests/reference_proteinglm.py, itself checked against a one-layer model computed by hand), greedy generation token
for token, the way back, the tokenizer and the command line."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_plm import PLMConfig, PLMForCausalLM, PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.hub.converters.xtrimopglm import (
    PROTEINGLM_DEFAULTS,
    PROTEINGLM_VOCAB,
    XTRIMOPGLM_PRESETS,
    convert_plm_to_xtrimopglm,
    convert_xtrimopglm,
    is_causal_checkpoint,
    proteinglm_config_to_plm,
    proteinglm_state_dict_to_plm,
)
from modeling_plm.hub.loading import ModelFolderError

sys.path.insert(0, str(Path(__file__).parent))
import reference_proteinglm as ref  # noqa: E402

TOL = 1e-5
SMALL = dict(num_layers=2, hidden_size=64, ffn_hidden_size=96, kv_channels=16, num_attention_heads=4)
# (config fields, output_layer bias): the published traits (1-D / 2-D RoPE, MLM / CLM, GeGLU, DeepNorm) and the
# other switches the converter takes (multi-query attention, SwiGLU, pre-LN, a bias-free output layer).
VARIANTS = {
    "mlm": (dict(), True),
    "mlm_2d": (dict(rotary_embedding_2d=True), True),
    "clm": (dict(is_causal=True), True),
    "clm_2d": (dict(is_causal=True, rotary_embedding_2d=True), True),
    "mlm_mqa_swiglu_preln": (
        dict(
            multi_query_attention=True,
            multi_query_group_num=2,
            glu_activation="swiglu",
            deepnorm=False,
            apply_residual_connection_post_layernorm=False,
        ),
        False,
    ),
}
TINY_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)
# The published proteinglm-1b-clm shape (hidden 2048, 32 heads of 64, GeGLU 5461) cut to 2 of its 24 layers.
PUBLISHED_1B = dict(num_layers=2, hidden_size=2048, ffn_hidden_size=5461, kv_channels=64, num_attention_heads=32)


def reference(variant: str, seed: int = 0, **overrides) -> ref.ProteinGLMForLM:
    fields, output_bias = VARIANTS[variant]
    return ref.build(ref.ProteinGLMConfig(**{**SMALL, **fields, **overrides}), output_layer_bias=output_bias, seed=seed)


def converted(model: ref.ProteinGLMForLM, folder: Path) -> Path:
    return convert_xtrimopglm(ref.save_checkpoint(model, folder / "proteinglm"), folder / "plm")


def load_plm(folder: Path, causal: bool, backend: str = "eager", kernel: str = "torch"):
    model_class = PLMForCausalLM if causal else PLMForMaskedLM
    return model_class.from_pretrained(folder, attn_implementation=backend, cpu_linear_kernel=kernel).eval()


@pytest.fixture(scope="module")
def protein_batch(swissprot_sequences) -> list[str]:
    """Real sequences of different lengths (so the batch is padded), one of them with a <mask>."""
    chosen = sorted(swissprot_sequences, key=len)
    batch = [chosen[-1][:90], chosen[0][:25], chosen[30][:60]]
    batch[2] = batch[2][:5] + "*" + batch[2][6:]  # "*": a <mask> (family_batch)
    return batch


def family_batch(sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """ProteinGLM's own encoding (residues <eos>), right-padded with <pad>."""
    encoded = []
    for sequence in sequences:
        ids = ref.encode(sequence.replace("*", ""))
        if "*" in sequence:
            ids.insert(sequence.index("*"), PROTEINGLM_VOCAB.index("<mask>"))
        encoded.append(ids)
    width = max(map(len, encoded))
    input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids in encoded])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in encoded])
    return input_ids, mask


def assert_parity(plm, oracle: ref.ProteinGLMForLM, input_ids, mask, kernel: str = "torch") -> float:
    """Logits and every hidden state at the real positions, to 1e-5 absolute with torch's GEMM and to 1e-5 of each
    tensor's largest magnitude with oneDNN's (which rounds differently); returns the largest difference."""
    with torch.no_grad():
        want = oracle(input_ids, attention_mask=mask)
        got = plm(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    assert len(got.hidden_states) == len(want.hidden_states) == oracle.config.num_layers + 1
    # ProteinGLM's hidden states are (seq, batch, hidden).
    hidden_states = [(g, w.transpose(0, 1)) for g, w in zip(got.hidden_states, want.hidden_states)]
    pairs = [(got.logits, want.logits), *hidden_states]
    worst = 0.0
    for actual, expected in pairs:
        scale = 1.0 if kernel == "torch" else max(1.0, expected[real].abs().max().item())
        torch.testing.assert_close(actual[real], expected[real], atol=TOL * scale, rtol=0)
        worst = max(worst, (actual[real] - expected[real]).abs().max().item())
    return worst


# ----------------------------------------------------------------------------------------------------------------------
# The oracle itself, against a one-layer model computed by hand


def _layer_norm(x: list[float], weight: list[float], bias: list[float], eps: float) -> list[float]:
    mean = sum(x) / len(x)
    variance = sum((value - mean) ** 2 for value in x) / len(x)
    return [(value - mean) / math.sqrt(variance + eps) * w + b for value, w, b in zip(x, weight, bias)]


def _linear(x: list[float], weight: list[list[float]], bias: list[float] | None) -> list[float]:
    return [sum(w * value for w, value in zip(row, x)) + (bias[i] if bias else 0.0) for i, row in enumerate(weight)]


def _rotate_pairs(x: list[float], angles: list[float]) -> list[float]:
    """Rotates the pair (x[i], x[i + n/2]) by angles[i]: RoPE in the rotate-half layout."""
    half, out = len(x) // 2, list(x)
    for i, angle in enumerate(angles):
        a, b = x[i], x[i + half]
        out[i], out[i + half] = a * math.cos(angle) - b * math.sin(angle), b * math.cos(angle) + a * math.sin(angle)
    return out


def _position_angles(position: int, width: int) -> list[float]:
    return [position * 10000 ** (-2 * i / width) for i in range(width // 2)]


def _rope(x: list[float], position: int, two_d: bool) -> list[float]:
    if not two_d:
        return _rotate_pairs(x, _position_angles(position, len(x)))
    half = len(x) // 2  # first half by the position, second by the block position (0 for a masked LM)
    return _rotate_pairs(x[:half], _position_angles(position, half)) + _rotate_pairs(x[half:], [0.0] * (half // 2))


def hand_computed(weights: dict, tokens: list[int], two_d: bool, heads: int = 2, d: int = 4) -> dict:
    """One ProteinGLM block (DeepNorm, per-head fused qkv, GeGLU [x0 * gelu(x1)]) and the head, step by step."""
    w = {name.removeprefix("transformer."): tensor.double().tolist() for name, tensor in weights.items()}
    alpha, eps = math.sqrt(2 * 1), 1e-5

    def norm(rows: list, name: str) -> list:
        return [_layer_norm(row, w[f"{name}.weight"], w[f"{name}.bias"], eps) for row in rows]

    def linear(rows: list, name: str) -> list:
        return [_linear(row, w[f"{name}.weight"], w.get(f"{name}.bias")) for row in rows]

    layer = "encoder.layers.0."
    x = [w["embedding.word_embeddings.weight"][token] for token in tokens]
    y = norm(x, layer + "input_layernorm")
    qkv = linear(y, layer + "self_attention.query_key_value")
    context = [[] for _ in tokens]
    for h in range(heads):
        block = [row[h * 3 * d : (h + 1) * 3 * d] for row in qkv]  # [q_h | k_h | v_h]
        q = [_rope(row[:d], t, two_d) for t, row in enumerate(block)]
        k = [_rope(row[d : 2 * d], t, two_d) for t, row in enumerate(block)]
        v = [row[2 * d :] for row in block]
        for t in range(len(tokens)):
            scores = [sum(a * b for a, b in zip(q[t], k[u])) / math.sqrt(d) for u in range(len(tokens))]
            exps = [math.exp(score - max(scores)) for score in scores]
            probs = [e / sum(exps) for e in exps]
            context[t] += [sum(p * v[u][j] for u, p in enumerate(probs)) for j in range(d)]
    attention = linear(context, layer + "self_attention.dense")
    z = norm([[alpha * a + b for a, b in zip(*pair)] for pair in zip(y, attention)], layer + "post_attention_layernorm")
    gated = []
    for up in linear(z, layer + "mlp.dense_h_to_4h"):
        multiplied, activated = up[: len(up) // 2], up[len(up) // 2 :]
        gated.append([m * 0.5 * g * (1 + math.erf(g / math.sqrt(2))) for m, g in zip(multiplied, activated)])
    mlp = linear(gated, layer + "mlp.dense_4h_to_h")
    final = norm([[alpha * a + b for a, b in zip(*pair)] for pair in zip(z, mlp)], "encoder.final_layernorm")
    return {"hidden_states": [x, final], "logits": linear(final, "output_layer")}


def assert_close_to_hand(got: torch.Tensor, want: list[list[float]]) -> None:
    torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), atol=TOL, rtol=0)


@pytest.mark.parametrize("two_d", [False, True], ids=["rope_1d", "rope_2d"])
def test_reference_matches_a_hand_computed_one_layer_model(two_d):
    config = ref.ProteinGLMConfig(
        num_layers=1, hidden_size=8, ffn_hidden_size=4, kv_channels=4, num_attention_heads=2, rotary_embedding_2d=two_d
    )
    model = ref.build(config, seed=3)
    tokens = [17, 12, 8, 34]  # M K T <eos>
    expected = hand_computed(model.state_dict(), tokens, two_d)
    with torch.no_grad():
        for sdpa in (True, False):
            model.config.use_pytorch_sdpa = sdpa
            output = model(torch.tensor([tokens]))
            assert_close_to_hand(output.logits[0], expected["logits"])
            for got, want in zip(output.hidden_states, expected["hidden_states"]):
                assert_close_to_hand(got[:, 0], want)
    # Positions matter: without them the last token could not tell M K T from K M T.
    swapped = hand_computed(model.state_dict(), [12, 17, 8, 34], two_d)["logits"]
    assert max(abs(x - y) for x, y in zip(swapped[2], expected["logits"][2])) > 1e-3


# ----------------------------------------------------------------------------------------------------------------------
# Parity of converted models


@pytest.mark.parametrize(
    "variant, kernel", [(variant, "torch") for variant in VARIANTS] + [("mlm", "onednn")], ids=lambda value: value
)
def test_converted_model_matches_proteinglm(variant, kernel, tmp_path, protein_batch):
    oracle = reference(variant)
    folder = converted(oracle, tmp_path)
    input_ids, mask = family_batch(protein_batch)
    assert (mask == 0).any() and (input_ids == PROTEINGLM_VOCAB.index("<mask>")).any()
    causal = oracle.config.is_causal
    for backend in ("eager", "sdpa"):
        plm = load_plm(folder, causal, backend, kernel)
        oracle.config.use_pytorch_sdpa = backend == "sdpa"  # ProteinGLM's SDPA path, or its Megatron softmax path
        assert_parity(plm, oracle, input_ids, mask, kernel)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["architectures"] == ["PLMForCausalLM" if causal else "PLMForMaskedLM"]
    assert json.loads((folder / "conversion.json").read_text())["converted_from"] == "xtrimopglm"


def test_published_1b_shape_matches_proteinglm(protein_batch):
    """Converted in memory (the folder path is the small models' above): 2 x 400 MB on disk would dominate CI."""
    oracle = ref.build(ref.ProteinGLMConfig(**PUBLISHED_1B, is_causal=True))
    hub_config = {**PROTEINGLM_DEFAULTS, **oracle.config.to_hub_json()}
    config = proteinglm_config_to_plm(hub_config, causal=True, output_bias=True, tied=False)
    config.cpu_linear_kernel = "torch"
    plm = PLMForCausalLM(config).eval()
    plm.load_state_dict(proteinglm_state_dict_to_plm(oracle.state_dict(), config), strict=True)
    input_ids, mask = family_batch([protein_batch[0][:40], protein_batch[1]])
    for backend in ("eager", "sdpa"):
        plm.set_attn_implementation(backend)
        oracle.config.use_pytorch_sdpa = backend == "sdpa"
        assert_parity(plm, oracle, input_ids, mask)


@pytest.mark.parametrize("variant", ["mlm", "mlm_2d"])
def test_packed_rows_equal_padded_rows(variant, tmp_path, protein_batch):
    folder = converted(reference(variant), tmp_path)
    input_ids, mask = family_batch(protein_batch)
    real = mask.bool()
    rows = [ids[keep].tolist() for ids, keep in zip(input_ids, real)]
    packed_ids = torch.tensor([sum(rows, [])])
    positions = torch.tensor([sum((list(range(len(row))) for row in rows), [])])
    for backend in ("eager", "sdpa"):
        plm = load_plm(folder, causal=False, backend=backend)
        with torch.no_grad():
            padded = plm(input_ids=input_ids, attention_mask=mask).logits[real]
            packed = plm(input_ids=packed_ids, position_ids=positions).logits[0]
        torch.testing.assert_close(packed, padded, atol=TOL, rtol=0)


@pytest.mark.parametrize("variant", ["clm", "clm_2d"])
def test_greedy_generate_matches_proteinglm_loop(variant, tmp_path, swissprot_sequences):
    oracle = reference(variant, seed=1)
    with torch.no_grad():  # <eos> made unlikely, so that both loops run their whole length
        oracle.transformer.output_layer.bias[ref.EOS_ID] -= 30.0
    # The default CPU kernels: oneDNN projections and the fused decoding path where the machine has them.
    plm = load_plm(converted(oracle, tmp_path), causal=True, kernel="auto")
    # ProteinGLM's prompt layout, <gmask> <sop> <eos> residues, for two prompts of different lengths.
    prompts = [ref.native_prompt(residues) for residues in (swissprot_sequences[0][:12], swissprot_sequences[5][:5])]
    expected = [
        ref.greedy_generate(oracle, torch.tensor([prompt]), max_new_tokens=30)[0].tolist() for prompt in prompts
    ]
    width = max(map(len, prompts))
    batch = torch.tensor([[0] * (width - len(prompt)) + prompt for prompt in prompts])  # left-padded, one call
    mask = torch.tensor([[0] * (width - len(prompt)) + [1] * len(prompt) for prompt in prompts])
    with torch.no_grad():
        got = plm.generate(
            batch, attention_mask=mask, do_sample=False, max_new_tokens=30, eos_token_id=34, pad_token_id=0
        )
    for row, prompt, want in zip(got.tolist(), prompts, expected):
        assert len(want) == len(prompt) + 30
        assert row[width - len(prompt) :] == want
        # The oracle's cached loop is its uncached forward, argmax by argmax.
        with torch.no_grad():
            uncached = oracle(torch.tensor([want[:-1]])).logits[0, len(prompt) - 1 :].argmax(-1)
        assert uncached.tolist() == want[len(prompt) :]


# ----------------------------------------------------------------------------------------------------------------------
# The way back


@pytest.mark.parametrize("variant", ["mlm", "clm_2d", "mlm_mqa_swiglu_preln"])
def test_round_trip_is_bit_exact(variant, tmp_path):
    oracle = reference(variant)
    first = converted(oracle, tmp_path)
    back = convert_plm_to_xtrimopglm(first, tmp_path / "back")
    # The ProteinGLM we wrote is the original checkpoint: the same tensors under the same names, and its config.
    original = oracle.state_dict()
    written = load_file(back / "model.safetensors")
    assert written.keys() == original.keys()
    assert all(torch.equal(written[name], original[name]) for name in original)
    reloaded = ref.load_checkpoint(back)
    assert reloaded.config == oracle.config
    second = convert_xtrimopglm(back, tmp_path / "plm_again")
    first_weights, second_weights = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[name], second_weights[name]) for name in first_weights)
    first_config, second_config = (json.loads((folder / "config.json").read_text()) for folder in (first, second))
    assert first_config == second_config
    assert (first / "vocab.txt").read_text() == (second / "vocab.txt").read_text()


def test_reverse_conversion_names_what_proteinglm_cannot_express(tmp_path):
    model = PLMForMaskedLM(config_from_preset("tiny"))  # RMSNorm, SwiGLU, no biases, pre-LN
    model.save_pretrained(tmp_path / "tiny")
    PLMTokenizerFast().save_pretrained(tmp_path / "tiny")
    with pytest.raises(ValueError, match="norm_type='rmsnorm'.*attention_bias=False.*mlp_bias=False"):
        convert_plm_to_xtrimopglm(tmp_path / "tiny", tmp_path / "out")
    # GLM-style 2-D RoPE in a causal LM is not ProteinGLM's causal 2-D layout.
    knobs = {**XTRIMOPGLM_PRESETS["xtrimopglm_1b_clm"], **TINY_SHAPE, "position_embedding_type": "rotary_2d"}
    plm = PLMForCausalLM(PLMConfig(**knobs))
    plm.save_pretrained(tmp_path / "glm")
    PLMTokenizerFast.from_pretrained(converted(reference("clm"), tmp_path)).save_pretrained(tmp_path / "glm")
    with pytest.raises(ValueError, match="position_embedding_type='rotary_2d'.*causal"):
        convert_plm_to_xtrimopglm(tmp_path / "glm", tmp_path / "out2")


# ----------------------------------------------------------------------------------------------------------------------
# Tokenizer, presets, refusals


def test_tokenizer_keeps_proteinglm_ids(tmp_path, swissprot_sequences):
    folder = converted(reference("clm"), tmp_path)
    tokenizer = PLMTokenizerFast.from_pretrained(folder)
    assert len(tokenizer) == 128 and tokenizer.convert_ids_to_tokens(127) == "<unused_127>"
    # Ids a ProteinGLM user sees (tokenizer_config.json and a ProteinGLM-7B serving test: ACDE -> 2 20 10 6).
    tokens = ["A", "C", "D", "E", "<mask>", "<gmask>", "<sop>", "<eos>"]
    assert tokenizer.convert_tokens_to_ids(tokens) == [2, 20, 10, 6, 28, 29, 32, 34]
    for sequence in swissprot_sequences[:16]:
        ids = tokenizer(sequence)["input_ids"]
        assert ids == [tokenizer.bos_token_id] + ref.encode(sequence)  # <eos> stands in as <bos> for the pipelines
        native = tokenizer("<gmask><sop><eos>" + sequence, add_special_tokens=False)["input_ids"]
        assert native == ref.native_prompt(sequence)
        assert tokenizer.decode(ids, skip_special_tokens=True) == sequence


def test_presets_match_the_published_parameter_counts():
    # fp32 weight files of the hub repositories (bytes / 4): 1b 4.84 GB, 3b 11.34 GB, 10b 42.74 GB, 7b 29.00 GB.
    published = {"1b": 4.84e9 / 4, "3b": 11.34e9 / 4, "10b": 42.74e9 / 4, "7b": 29.00e9 / 4}
    for name, preset in XTRIMOPGLM_PRESETS.items():
        config = PLMConfig(**preset)
        total = config.num_parameters(include_embeddings=True) + config.vocab_size * (config.hidden_size + 1)
        size = name.split("_")[1]
        assert abs(total / published[size] - 1) < 0.005, (name, total)


def test_wrong_folders_are_refused_with_the_reason(tmp_path):
    folder = ref.save_checkpoint(reference("mlm"), tmp_path / "proteinglm")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "esm"}))
    with pytest.raises(ModelFolderError, match="config.json: model_type 'esm' is not a ProteinGLM"):
        convert_xtrimopglm(folder, tmp_path / "a")
    bad = {**config, "quantization_bit": 4, "untie_head": True, "glu_activation": "relu"}
    (folder / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="untie_head=True.*quantization_bit=4.*glu_activation='relu'"):
        convert_xtrimopglm(folder, tmp_path / "b")
    (folder / "config.json").write_text(json.dumps(config))
    weights = load_file(folder / "model.safetensors")
    save_file({**weights, "transformer.conv_layer.conv3.weight": torch.zeros(1)}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="unexpected weights.*conv_layer"):
        convert_xtrimopglm(folder, tmp_path / "c")
    save_file(weights, folder / "model.safetensors")
    (folder / "tokenizer.model").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.model is missing"):
        convert_xtrimopglm(folder, tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        convert_xtrimopglm(tmp_path / "missing" / "folder" / "x", tmp_path / "e")


def test_masked_or_causal_comes_from_the_config_else_the_name():
    assert is_causal_checkpoint({"is_causal": True}, Path("proteinglm-1b-mlm")) is True
    assert is_causal_checkpoint({}, Path("snapshot"), "biomap-research/proteinglm-7b-clm") is True
    assert is_causal_checkpoint({}, Path("/models/proteinglm-3b-mlm")) is False
    with pytest.raises(ValueError, match="no is_causal, and the name says neither -mlm nor -clm"):
        is_causal_checkpoint({}, Path("/models/proteinglm"))


def test_other_rotary_frequencies_are_refused(tmp_path):
    oracle = reference("mlm")
    with torch.no_grad():
        oracle.transformer.encoder.layers[1].self_attention.rotary_emb.inv_freq.mul_(0.5)
    with pytest.raises(ValueError, match="layers.1.self_attention.rotary_emb.inv_freq: rotary frequencies"):
        converted(oracle, tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# The command line, in subprocesses


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "modeling_plm.cli", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    return stdout


def test_cli_convert_from_the_offline_hub_cache_then_embed_score_generate(tmp_path, swissprot_sequences):
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--biomap-research--proteinglm-tiny-mlm"
    ref.save_checkpoint(reference("mlm"), repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    clm = converted(reference("clm", seed=2), tmp_path / "clm_source")
    # Two at a time (CI has 2 cores): the hub-id conversion beside generation, then embedding beside scoring.
    conversion = _cli("convert", "xtrimopglm", "biomap-research/proteinglm-tiny-mlm", str(tmp_path / "mlm"), env=env)
    generation = _cli("generate", str(clm), "--prompt", "MKT", "--greedy", "--max-length", "20")
    _finish(conversion)
    record = json.loads((tmp_path / "mlm" / "conversion.json").read_text())
    assert record["base_model"] == "biomap-research/proteinglm-tiny-mlm"
    sequences = swissprot_sequences[:2]
    (tmp_path / "in.fasta").write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(sequences)))
    embedding = _cli("embed", str(tmp_path / "mlm"), str(tmp_path / "in.fasta"), str(tmp_path / "emb"), "--no-progress")
    scoring = _cli("score", str(tmp_path / "mlm"), "--sequence", sequences[0], "--score", "pseudo-log-likelihood")
    generated, _, scored = _finish(generation), _finish(embedding), _finish(scoring)

    mlm = PLMForMaskedLM.from_pretrained(tmp_path / "mlm").eval()
    tokenizer = PLMTokenizerFast.from_pretrained(tmp_path / "mlm")
    shard = load_file(tmp_path / "emb" / "embeddings-00000.safetensors")
    ids = tokenizer(sequences[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected_mean = mlm.model(input_ids=ids).last_hidden_state[0, 1:-1].mean(0)
    torch.testing.assert_close(shard["0/mean"], expected_mean, atol=1e-5, rtol=0)
    assert "s1" in (tmp_path / "emb" / "manifest.jsonl").read_text()

    masked = ids.repeat(len(sequences[0]), 1)
    positions = torch.arange(len(sequences[0]))
    masked[positions, positions + 1] = tokenizer.mask_token_id
    with torch.no_grad():
        log_probs = mlm(input_ids=masked).logits.log_softmax(-1)
    expected_pll = log_probs[positions, positions + 1, ids[0, 1:-1]].sum().item()
    header, row = scored.strip().splitlines()[:2]
    pll = float(row.split(",")[header.split(",").index("pseudo_log_likelihood")])
    assert pll == pytest.approx(expected_pll, abs=1e-3)

    name, sequence = generated.strip().splitlines()[:2]
    assert name.startswith(">gen_1 prompt=MKT") and sequence.startswith("MKT") and 3 < len(sequence) <= 20
    assert set(sequence) <= set(PROTEINGLM_VOCAB[1:28])
    shutil.rmtree(tmp_path / "cache")
