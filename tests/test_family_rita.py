"""RITA -> modeling_plm conversion: exact parity with transformers' GPTNeoXForCausalLM (sequential residual, the RITA
block), greedy generation token for token, the tokenizer's ids, the CLI end to end, and the way back to GPT-NeoX.

RITA's own modeling code is remote code on the hub, so the oracle is GPT-NeoX: `gpt_neox_to_rita` renames a random
GPT-NeoX's weights to RITA's names to build a RITA-layout source (RITA config.json, weights, tokenizer.json).
"""

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
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from modeling_plm import PLMConfig, PLMForCausalLM, PLMTokenizerFast, config_from_preset
from modeling_plm.hub.converters.rita import (
    RITA_PRESETS,
    convert_plm_to_gpt_neox,
    convert_rita,
    merge_query_key_value,
    split_query_key_value,
)
from modeling_plm.hub.loading import ModelFolderError
from modeling_plm.inference.embedding import load_embeddings

TOL = 1e-5
BACKENDS = ("eager", "sdpa")
# RITA's published tokenizer: <PAD> = 1, <EOS> = 2, the amino acids at 3..22 by UniProt frequency. Ids 0 and 23..25
# are our reconstruction (an unknown token and three ambiguity letters); the converter reads the real tokenizer.json.
RITA_VOCAB = ["<UNK>", "<PAD>", "<EOS>", *"LAGVESIKRDTPNQFYMHCW", "X", "B", "Z"]
PAD, EOS = 1, 2
SHAPES = {
    "small": dict(hidden_size=64, num_attention_heads=4, intermediate_size=256, num_hidden_layers=2),
    # RITA_s at full width, heads and MLP; 2 of its 12 layers to fit CI.
    "rita_s_2_layers": dict(
        hidden_size=RITA_PRESETS["rita_s"]["hidden_size"],
        num_attention_heads=RITA_PRESETS["rita_s"]["num_attention_heads"],
        intermediate_size=RITA_PRESETS["rita_s"]["intermediate_size"],
        num_hidden_layers=2,
    ),
}


def build_oracle(shape: str = "small", **overrides) -> GPTNeoXForCausalLM:
    """A random GPT-NeoX in RITA's configuration whose every weight (norms and biases included) is perturbed."""
    options = dict(
        vocab_size=len(RITA_VOCAB),
        hidden_act="gelu_fast",
        use_parallel_residual=False,
        rotary_pct=1.0,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=EOS,
        eos_token_id=EOS,
    )
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**(options | SHAPES[shape] | overrides))).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def gpt_neox_to_rita(model: GPTNeoXForCausalLM) -> dict[str, torch.Tensor]:
    """The GPT-NeoX's weights under RITAModelForCausalLM's names (rotary frequencies included, as RITA saves them)."""
    config, neox = model.config, model.gpt_neox
    head_dim = config.hidden_size // config.num_attention_heads
    state = {
        "transformer.embedding.weight": neox.embed_in.weight,
        "transformer.final_norm.weight": neox.final_layer_norm.weight,
        "transformer.final_norm.bias": neox.final_layer_norm.bias,
        "lm_head.weight": model.get_output_embeddings().weight,
    }
    for index, layer in enumerate(neox.layers):
        fused = layer.attention.query_key_value
        q, k, v = zip(*(split_query_key_value(p, config.num_attention_heads) for p in (fused.weight, fused.bias)))
        modules = {
            "self_attention.query": q,
            "self_attention.key": k,
            "self_attention.value": v,
            "self_attention.proj": (layer.attention.dense.weight, layer.attention.dense.bias),
            "attn_norm": (layer.input_layernorm.weight, layer.input_layernorm.bias),
            "mlp.0": (layer.mlp.dense_h_to_4h.weight, layer.mlp.dense_h_to_4h.bias),
            "mlp.2": (layer.mlp.dense_4h_to_h.weight, layer.mlp.dense_4h_to_h.bias),
            "mlp_norm": (layer.post_attention_layernorm.weight, layer.post_attention_layernorm.bias),
        }
        prefix = f"transformer.layers.{index}"
        for module, (weight, bias) in modules.items():
            state |= {f"{prefix}.{module}.weight": weight, f"{prefix}.{module}.bias": bias}
        inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
        state[f"{prefix}.self_attention.rotary_embedding.inv_freq"] = inv_freq
    return {name: tensor.detach().clone().contiguous() for name, tensor in state.items()}


def write_rita_tokenizer(folder: Path) -> None:
    """A tokenizer.json like RITA's: one token per residue, `<EOS>` appended, nothing prepended, no special map."""
    backend = Tokenizer(models.WordLevel({token: i for i, token in enumerate(RITA_VOCAB)}, unk_token="<UNK>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.add_special_tokens(RITA_VOCAB[:3])
    backend.post_processor = processors.TemplateProcessing(single="$A <EOS>", special_tokens=[("<EOS>", EOS)])
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    (folder / "special_tokens_map.json").write_text("{}")


def save_rita(model: GPTNeoXForCausalLM, folder: Path) -> Path:
    """A folder laid out like lightonai/RITA_*: RITA's config.json, RITA-named weights and tokenizer."""
    config = model.config
    folder.mkdir(parents=True, exist_ok=True)
    rita_config = {
        "architectures": ["RITAModelForCausalLM"],
        "auto_map": {"AutoModelForCausalLM": "rita_modeling.RITAModelForCausalLM"},
        "model_type": "rita",
        "d_model": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "d_feedforward": config.intermediate_size,
        "ff_ratio": config.intermediate_size // config.hidden_size,
        "max_seq_len": 1024,
        "vocab_size": config.vocab_size,
        "dropout": 0.0,
        "eos_token_id": 50256,  # as RITA_xl's config.json: outside the vocabulary, so never used
        "initializer_range": 0.02,
    }
    (folder / "config.json").write_text(json.dumps(rita_config, indent=2))
    save_file(gpt_neox_to_rita(model), folder / "model.safetensors")
    write_rita_tokenizer(folder)
    return folder


def save_gpt_neox(model: GPTNeoXForCausalLM, folder: Path) -> Path:
    model.save_pretrained(folder)
    write_rita_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def protein_batch(swissprot_sequences) -> list[str]:
    """Real sequences of different lengths (so the batch is padded)."""
    chosen = sorted(swissprot_sequences, key=len)
    return [chosen[-1][:90], chosen[0][:25], chosen[30][:60]]


def load_plm(folder: Path, backend: str = "eager") -> PLMForCausalLM:
    # transformers' own GEMM (the oracle's): parity to 1e-5 absolute; oneDNN rounds differently.
    return PLMForCausalLM.from_pretrained(folder, attn_implementation=backend, cpu_linear_kernel="torch").eval()


def assert_layerwise_parity(
    plm: PLMForCausalLM, oracle: GPTNeoXForCausalLM, batch: dict, scaled: bool = False
) -> float:
    """Logits and every hidden state (both models: embeddings, each layer, the last after the final norm) agree at the
    real positions, to 1e-5 absolute (`scaled`: of each tensor's largest magnitude, for oneDNN's GEMM); returns the
    largest difference."""
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = oracle(**batch, output_hidden_states=True)
        actual = plm(**batch, output_hidden_states=True)
    assert len(actual.hidden_states) == len(expected.hidden_states) == oracle.config.num_hidden_layers + 1
    pairs = [(actual.logits, expected.logits), *zip(actual.hidden_states, expected.hidden_states)]
    for got, want in pairs:
        scale = max(1.0, want[real].abs().max().item()) if scaled else 1.0
        torch.testing.assert_close(got[real], want[real], atol=TOL * scale, rtol=0)
    return max((got[real] - want[real]).abs().max().item() for got, want in pairs)


@pytest.mark.parametrize("shape", SHAPES)
def test_converted_rita_matches_gpt_neox_layer_by_layer(shape, tmp_path, protein_batch):
    oracle = build_oracle(shape)
    converted = convert_rita(save_rita(oracle, tmp_path / "rita"), tmp_path / "plm")
    sequences = protein_batch if shape == "small" else [sequence[:40] for sequence in protein_batch]  # CI time
    batch = PLMTokenizerFast.from_pretrained(converted)(sequences, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()
    for backend in BACKENDS:
        oracle.set_attn_implementation(backend)
        plm = load_plm(converted, backend)
        assert plm.config._attn_implementation == backend
        assert assert_layerwise_parity(plm, oracle, batch) < TOL
    assert plm.config.tie_word_embeddings and plm.config.hidden_act == "gelu_fast"
    default_kernels = PLMForCausalLM.from_pretrained(converted, attn_implementation="sdpa").eval()
    assert_layerwise_parity(default_kernels, oracle, batch, scaled=True)


NEOX_VARIANTS = {
    "partial_rotary_untied_head": dict(rotary_pct=0.25, tie_word_embeddings=False),
    "parallel_residual_one_norm": dict(use_parallel_residual=True, hidden_act="gelu"),
}


@pytest.mark.parametrize("variant", NEOX_VARIANTS)
def test_gpt_neox_checkpoints_convert_directly(variant, tmp_path, protein_batch):
    oracle = build_oracle(**NEOX_VARIANTS[variant])
    if oracle.config.use_parallel_residual:  # the backbone's parallel block has one norm: GPT-NeoX's two must agree
        for layer in oracle.gpt_neox.layers:
            layer.post_attention_layernorm.load_state_dict(layer.input_layernorm.state_dict())
    converted = convert_rita(save_gpt_neox(oracle, tmp_path / "neox"), tmp_path / "plm")
    config = PLMConfig.from_pretrained(converted)
    if variant == "partial_rotary_untied_head":
        assert config.rotary_dim == 4 and not config.tie_word_embeddings
    else:
        assert config.parallel_residual and config.rotary_dim is None
    batch = PLMTokenizerFast.from_pretrained(converted)(protein_batch, padding=True, return_tensors="pt")
    for backend in BACKENDS:
        oracle.set_attn_implementation(backend)
        assert assert_layerwise_parity(load_plm(converted, backend), oracle, batch) < TOL
    assert json.loads((converted / "conversion.json").read_text())["converted_from"] == "gpt_neox"


def test_float16_pickled_checkpoints_of_the_older_layout_convert_exactly(tmp_path):
    """As published: float16 weights in pytorch_model.bin. The older RITAModel layout (no "transformer." prefix and no
    LM head: it is tied) gives the same model as RITAModelForCausalLM's."""
    oracle = build_oracle()
    reference = load_file(convert_rita(save_rita(oracle, tmp_path / "rita"), tmp_path / "plm") / "model.safetensors")
    folder = save_rita(oracle, tmp_path / "legacy")
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(
        {name.removeprefix("transformer."): w.half() for name, w in weights.items() if name != "lm_head.weight"},
        folder / "pytorch_model.bin",
    )
    converted = load_file(convert_rita(folder, tmp_path / "plm_half") / "model.safetensors")
    assert converted.keys() == reference.keys()
    assert all(torch.equal(converted[name], reference[name].half().float()) for name in reference)


def test_fused_query_key_value_is_split_per_head():
    heads, head_dim, hidden = 3, 2, 5
    fused = torch.arange(heads * 3 * head_dim * hidden, dtype=torch.float32).view(-1, hidden)
    parts = split_query_key_value(fused, heads)
    # GPT-NeoX's rows: head 0's q, k, v, then head 1's, ... each head_dim rows.
    blocks = fused.split(head_dim)
    for index, part in enumerate(parts):
        assert torch.equal(part, torch.cat([blocks[3 * head + index] for head in range(heads)]))
    assert torch.equal(merge_query_key_value(*parts, heads), fused)


def test_packed_rows_equal_padded_batches(tmp_path, protein_batch):
    converted = convert_rita(save_rita(build_oracle(), tmp_path / "rita"), tmp_path / "plm")
    tokenizer = PLMTokenizerFast.from_pretrained(converted)
    batch = tokenizer(protein_batch, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    encoded = [tokenizer(sequence)["input_ids"] for sequence in protein_batch]
    packed_ids = torch.tensor([sum(encoded, [])])
    positions = torch.tensor([sum((list(range(len(ids))) for ids in encoded), [])])
    for backend in BACKENDS:
        model = load_plm(converted, backend)
        with torch.no_grad():
            padded = model(**batch).logits[real]
            packed = model(input_ids=packed_ids, position_ids=positions).logits[0]
        torch.testing.assert_close(packed, padded, atol=TOL, rtol=0)


def test_tokenizer_keeps_ritas_ids(tmp_path, swissprot_sequences):
    source = save_rita(build_oracle(), tmp_path / "rita")
    converted = convert_rita(source, tmp_path / "plm")
    ours = PLMTokenizerFast.from_pretrained(converted)
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(source / "tokenizer.json"))
    assert ours.get_vocab() == theirs.get_vocab() == {token: i for i, token in enumerate(RITA_VOCAB)}
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, ours.mask_token) == (EOS, EOS, PAD, None)
    for sequence in swissprot_sequences:
        # RITA's ids exactly, after the <EOS> that starts a sequence as it does in RITA's training stream.
        assert ours(sequence)["input_ids"] == [EOS, *theirs(sequence)["input_ids"]]
    assert ours.decode(ours(swissprot_sequences[0])["input_ids"], skip_special_tokens=True) == swissprot_sequences[0]


def test_greedy_generation_matches_gpt_neox_generate(tmp_path, swissprot_sequences):
    oracle = build_oracle()
    converted = convert_rita(save_rita(oracle, tmp_path / "rita"), tmp_path / "plm")
    model = PLMForCausalLM.from_pretrained(converted).eval()  # the default kernels, as `plm generate` runs
    tokenizer = PLMTokenizerFast.from_pretrained(converted)
    options = dict(max_new_tokens=20, do_sample=False, use_cache=True, pad_token_id=PAD, eos_token_id=EOS)
    tokenizer.padding_side = "left"
    for lengths in ((8, 8, 8), (4, 9, 6)):  # equal prompts, then a left-padded batch
        prompts = tokenizer([s[:n] for s, n in zip(swissprot_sequences, lengths)], padding=True, return_tensors="pt")
        # <EOS> residues, without the final <EOS> the tokenizer adds
        prompts = {name: values[:, :-1] for name, values in prompts.items()}
        with torch.no_grad():
            expected = oracle.generate(**prompts, **options)
            actual = model.generate(**prompts, **options)
        assert expected.shape[1] > prompts["input_ids"].shape[1] and torch.equal(actual, expected)


def test_round_trip_plm_to_gpt_neox_to_plm_is_identical(tmp_path, protein_batch):
    oracle = build_oracle()
    first = convert_rita(save_rita(oracle, tmp_path / "rita"), tmp_path / "plm")
    neox = convert_plm_to_gpt_neox(first, tmp_path / "neox")
    second = convert_rita(neox, tmp_path / "plm_again")
    first_weights, second_weights = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[name], second_weights[name]) for name in first_weights)
    first_config, second_config = (json.loads((folder / "config.json").read_text()) for folder in (first, second))
    assert first_config == second_config
    assert (first / "vocab.txt").read_text() == (second / "vocab.txt").read_text()
    # The GPT-NeoX checkpoint we wrote is a working transformers model with the oracle's outputs, bit for bit.
    reloaded = GPTNeoXForCausalLM.from_pretrained(neox).eval()
    batch = PreTrainedTokenizerFast.from_pretrained(neox)(protein_batch, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, oracle(**batch).logits, atol=0, rtol=0)


def test_reverse_conversion_names_what_gpt_neox_cannot_express(tmp_path):
    PLMForCausalLM(config_from_preset("tiny")).save_pretrained(tmp_path / "plm")  # RMSNorm, SwiGLU
    PLMTokenizerFast().save_pretrained(tmp_path / "plm")
    with pytest.raises(ValueError, match=r"GPT-NeoX: mlp_type='glu'.*norm_type='rmsnorm'"):
        convert_plm_to_gpt_neox(tmp_path / "plm", tmp_path / "neox")


def test_what_rita_conversion_refuses(tmp_path):
    oracle = build_oracle()
    folder = save_rita(oracle, tmp_path / "rita")
    # Copies: the file is rewritten below, and older safetensors map the loaded tensors onto it.
    weights = {name: tensor.clone() for name, tensor in load_file(folder / "model.safetensors").items()}
    save_file(weights | {"score.weight": torch.zeros(2, 64)}, folder / "model.safetensors")  # a classifier's head
    with pytest.raises(ValueError, match=r"Not a RITA causal-LM checkpoint: unexpected weights \['score.weight'\]"):
        convert_rita(folder, tmp_path / "out")
    save_file(weights | {"lm_head.weight": weights["lm_head.weight"] + 1}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="ties the LM head to the embeddings"):
        convert_rita(folder, tmp_path / "out")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json is missing"):
        convert_rita(folder, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "llama"}))
    with pytest.raises(ModelFolderError, match="model_type 'llama' is not 'rita' or 'gpt_neox'"):
        convert_rita(folder, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        convert_rita(tmp_path / "missing" / "folder" / "x", tmp_path / "out")


def test_gpt_neox_that_rita_cannot_hold_is_refused(tmp_path):
    parallel = build_oracle(use_parallel_residual=True)  # two different norms per layer
    with pytest.raises(ValueError, match="layer 0 uses the parallel residual with two different norms"):
        convert_rita(save_gpt_neox(parallel, tmp_path / "parallel"), tmp_path / "out")
    folder = save_gpt_neox(build_oracle(vocab_size=32), tmp_path / "bpe")
    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    backend.add_tokens(["ĠLys"])  # a word-piece vocabulary (as GPT-NeoX's own BPE) is not per residue
    backend.save(str(folder / "tokenizer.json"))
    with pytest.raises(ValueError, match="token 'ĠLys' \\(id 26\\) is not one residue"):
        convert_rita(folder, tmp_path / "out")


def test_presets_have_the_published_sizes():
    # Non-embedding parameters of RITA S/M/L/XL (85M, 300M, 680M, 1.2B in the paper).
    published = {"rita_s": 85e6, "rita_m": 300e6, "rita_l": 680e6, "rita_xl": 1.2e9}
    for name, size in published.items():
        config = PLMConfig(**RITA_PRESETS[name])
        assert abs(config.num_parameters() / size - 1) < 0.03, name
        assert config.intermediate_size == 4 * config.hidden_size and config.head_dim == 64


def run_cli(*arguments: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "modeling_plm.cli", *arguments]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    return stdout


def test_cli_from_an_offline_hub_id_to_embed_score_and_generate(tmp_path, swissprot_sequences):
    """`plm convert rita OWNER/NAME` through the hub cache (offline, in a subprocess: HF variables are read at
    import), then `plm embed`, `plm score` and `plm generate` on the result, all three at once; the scores and the
    greedy sequence are the oracle's."""
    oracle = build_oracle()
    source = save_rita(oracle, tmp_path / "rita")
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--lightonai--RITA_tiny_test"
    shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    plm = str(tmp_path / "plm")
    finish(run_cli("convert", "rita", "lightonai/RITA_tiny_test", plm, env=env))
    assert json.loads((tmp_path / "plm" / "conversion.json").read_text())["base_model"] == "lightonai/RITA_tiny_test"

    sequences = swissprot_sequences[:4]
    fasta = tmp_path / "proteins.fasta"
    fasta.write_text("".join(f">p{i}\n{sequence}\n" for i, sequence in enumerate(sequences)))
    cpu = ["--device", "cpu"]
    for process in [
        run_cli("embed", plm, str(fasta), str(tmp_path / "emb"), *cpu, "--no-progress"),
        run_cli("score", plm, "--fasta", str(fasta), "--score", "causal", "--output", str(tmp_path / "s.csv"), *cpu),
        run_cli(
            "generate", plm, "--prompt", "MKT", "--greedy", "--max-length", "20", "-o", str(tmp_path / "g.fa"), *cpu
        ),
    ]:
        finish(process)

    tokenizer = PLMTokenizerFast.from_pretrained(plm)
    embedded = list(load_embeddings(tmp_path / "emb", return_tensors="pt"))
    assert [record_id for _, record_id, _ in embedded] == ["p0", "p1", "p2", "p3"]
    for sequence, (*_, arrays) in zip(sequences, embedded, strict=True):
        ids = tokenizer(sequence, return_tensors="pt")["input_ids"]
        with torch.no_grad():  # causal attention, as RITA reads a sequence; the mean over the residues
            expected = oracle(ids, output_hidden_states=True).hidden_states[-1][0, 1:-1].mean(0)
        torch.testing.assert_close(arrays["mean"], expected, atol=1e-4, rtol=0)
    rows = [line.split(",") for line in (tmp_path / "s.csv").read_text().splitlines()[1:]]
    for sequence, row in zip(sequences, rows, strict=True):
        ids = tokenizer(sequence, return_tensors="pt")["input_ids"]
        with torch.no_grad():  # log p of every token after the starting <EOS>: the residues and the final <EOS>
            expected = oracle(ids).logits.log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None]).sum().item()
        assert float(row[2]) == pytest.approx(expected, abs=1e-3)
    prompt = tokenizer("MKT", return_tensors="pt")["input_ids"][:, :-1]
    with torch.no_grad():  # the CLI produces residues only: <UNK> and <PAD> are never generated
        greedy = oracle.generate(prompt, max_new_tokens=17, do_sample=False, pad_token_id=PAD, suppress_tokens=[0, 1])
    record = (tmp_path / "g.fa").read_text().splitlines()
    assert record[0].startswith(">gen_1 prompt=MKT")
    assert record[1] == tokenizer.decode(greedy[0], skip_special_tokens=True)
