"""ProGen2 -> modeling_plm conversion: layer-wise parity with transformers' GPTJForCausalLM (ProGen2's block), ProGen2's
own checkpoint layout (fused `qkv_proj`), its tokenizer ids, generation, the CLI, and the way back to GPT-J.

The oracle is a random GPT-J. ProGen2's modeling code is remote code that cannot be imported here, so
`gptj_to_progen_state_dict` writes the same weights in ProGen2's layout as its `modeling_progen.py` reads them, and
`test_fused_qkv_rows_are_read_as_progen_reads_them` checks that against ProGen2's split of the fused projection.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import GPTJConfig, GPTJForCausalLM

from modeling_plm import PLMConfig, PLMForCausalLM, PLMTokenizerFast, config_from_preset
from modeling_plm.hub.converters.progen2 import (
    PROGEN2_PRESETS,
    convert_plm_to_gptj,
    convert_progen2,
    split_progen_qkv,
)
from modeling_plm.hub.loading import ModelFolderError
from modeling_plm.inference.embedding import load_embeddings

TOL = 1e-5
BACKENDS = ("eager", "sdpa")
# The GEMM of our projections: transformers' own ("torch") and oneDNN (the default on AMD CPUs), which rounds
# differently; both stay within TOL of the oracle at these shapes.
CPU_LINEAR_KERNELS = ("torch", "onednn")
MP_NUM = 8  # ProGen2's row blocks of the fused qkv_proj
# ProGen2's tokenizer.json as published (salesforce/progen progen2/tokenizer.json; the hub ports ship the same ids).
PROGEN2_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "1", "2", *"ABCDEFGHIKLMNOPQRSTUVWXYZ"]
PROGEN2_TOKENIZER_JSON = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [
        {"id": i, "special": True, "content": t, "single_word": False, "lstrip": False, "rstrip": False}
        | {"normalized": False}
        for i, t in enumerate(PROGEN2_TOKENS[:3])
    ],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
    "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
    "model": {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "vocab": {token: index for index, token in enumerate(PROGEN2_TOKENS)},
        "merges": [],
    },
}
# A small shape (partial rotary: 8 of 16 dims per head) and progen2-small's width, heads, rotary dims and FFN with its
# depth cut from 12 to 2 layers for CI.
SHAPES = {
    "small": dict(n_embd=128, n_layer=3, n_head=8, rotary_dim=8, n_inner=320, n_positions=256),
    "progen2_small_2_layers": dict(n_embd=1024, n_layer=2, n_head=16, rotary_dim=32, n_inner=None, n_positions=1024),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small matmuls gain nothing from a second thread, and stall badly when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_gptj(shape: str, vocab_size: int = 32) -> GPTJForCausalLM:
    """A random GPT-J with every weight perturbed (norms and biases too); larger q/k weights make the attention
    peaked, so that a wrong rotary layout shows far above the tolerance."""
    torch.manual_seed(0)
    config = GPTJConfig(
        vocab_size=vocab_size,
        activation_function="gelu_new",
        bos_token_id=3,
        eos_token_id=4,
        pad_token_id=0,
        tie_word_embeddings=False,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        **SHAPES[shape],
    )
    model = GPTJForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                parameter.normal_(std=1.5 / config.n_embd**0.5)
    return model


def gptj_to_progen_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GPT-J's weights in ProGen2's layout: q/k/v fused into `qkv_proj`, MP_NUM row blocks of [query, value, key]."""
    converted = {}
    for name, tensor in state_dict.items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            continue
        if not name.endswith("q_proj.weight"):
            converted[name] = tensor
            continue
        prefix = name.removesuffix("q_proj.weight")
        parts = [
            state_dict[f"{prefix}{part}.weight"].unflatten(0, (MP_NUM, -1)) for part in ("q_proj", "v_proj", "k_proj")
        ]
        converted[prefix + "qkv_proj.weight"] = torch.stack(parts, 1).flatten(0, 2).clone()
    return converted


def progen_config(model: GPTJForCausalLM, original: bool) -> dict:
    """config.json as ProGen2 writes it: the hub ports (embed_dim, vocab_size_emb/_lm_head) or the original release
    (n_embd, n_ctx, vocab_size)."""
    c = model.config
    common = dict(
        model_type="progen",
        architectures=["ProGenForCausalLM"],
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_positions=c.n_positions,
        n_inner=c.n_inner,
        rotary_dim=c.rotary_dim,
        activation_function="gelu_new",
        layer_norm_epsilon=c.layer_norm_epsilon,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        scale_attn_weights=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    if original:
        return common | dict(n_embd=c.n_embd, n_ctx=2048, vocab_size=c.vocab_size)
    return common | dict(n_embd=c.n_embd, embed_dim=c.n_embd, vocab_size_emb=32, vocab_size_lm_head=32)


def save_progen(model: GPTJForCausalLM, folder, original: bool = False):
    """A ProGen2 checkpoint folder: the hub ports' (safetensors, tokenizer.json), or the original release's
    (pytorch_model.bin with the causal-mask buffers, no tokenizer.json)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(progen_config(model, original)))
    state_dict = gptj_to_progen_state_dict(model.state_dict())
    if original:
        positions = model.config.n_positions
        for layer in range(model.config.n_layer):
            state_dict[f"transformer.h.{layer}.attn.bias"] = torch.ones(positions, positions, dtype=torch.bool).tril()
            state_dict[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e9)
        torch.save(state_dict, folder / "pytorch_model.bin")
    else:
        save_file(state_dict, folder / "model.safetensors")
        (folder / "tokenizer.json").write_text(json.dumps(PROGEN2_TOKENIZER_JSON))
    return folder


def save_gptj(model: GPTJForCausalLM, folder):
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(json.dumps(PROGEN2_TOKENIZER_JSON))
    return folder


def progen_tokenizer() -> Tokenizer:
    return Tokenizer.from_str(json.dumps(PROGEN2_TOKENIZER_JSON))


def load_plm(folder, backend: str = "eager", kernel: str = "torch") -> PLMForCausalLM:
    return PLMForCausalLM.from_pretrained(folder, attn_implementation=backend, cpu_linear_kernel=kernel).eval()


@pytest.fixture(scope="module")
def protein_batch(swissprot_sequences) -> list[str]:
    """Real sequences of different lengths, so that the batch is padded."""
    chosen = sorted(swissprot_sequences, key=len)
    return [chosen[-1][:90], chosen[0][:25], chosen[30][:60]]


@pytest.fixture(scope="module", params=list(SHAPES))
def converted(request, tmp_path_factory):
    """(oracle, folder of the oracle converted from ProGen2's hub layout)."""
    oracle = build_gptj(request.param)
    root = tmp_path_factory.mktemp(request.param)
    return oracle, convert_progen2(save_progen(oracle, root / "progen"), root / "plm")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    oracle = build_gptj("small")
    root = tmp_path_factory.mktemp("small")
    return oracle, convert_progen2(save_progen(oracle, root / "progen"), root / "plm"), root


def real_positions(batch) -> torch.Tensor:
    mask = batch["attention_mask"].bool()
    assert (~mask).any()  # the batch is padded
    return mask


def test_fused_qkv_rows_are_read_as_progen_reads_them():
    """ProGen2's attention reshapes the fused output to (..., MP_NUM, 3E/MP_NUM), splits each block into query, value,
    key, and merges the blocks' heads in order: that must give back GPT-J's q, k and v, head by head."""
    oracle = build_gptj("small")
    attention, heads = oracle.transformer.h[0].attn, oracle.config.n_head
    fused = gptj_to_progen_state_dict(oracle.state_dict())["transformer.h.0.attn.qkv_proj.weight"]
    x = torch.randn(2, 5, oracle.config.n_embd)
    blocks = (x @ fused.T).unflatten(-1, (MP_NUM, -1))
    query, value, key = blocks.split(blocks.shape[-1] // 3, dim=-1)
    as_heads = [part.reshape(2, 5, heads, -1) for part in (query, key, value)]
    for got, projection in zip(as_heads, (attention.q_proj, attention.k_proj, attention.v_proj)):
        torch.testing.assert_close(got, projection(x).view(2, 5, heads, -1), atol=1e-6, rtol=0)
    for got, projection in zip(split_progen_qkv(fused), (attention.q_proj, attention.k_proj, attention.v_proj)):
        assert torch.equal(got, projection.weight)


@pytest.mark.parametrize("kernel", CPU_LINEAR_KERNELS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_converted_model_matches_gptj(converted, backend, kernel, protein_batch):
    oracle, folder = converted
    oracle.set_attn_implementation(backend)
    plm = load_plm(folder, backend, kernel)
    assert plm.config._attn_implementation == backend
    assert plm.config.rotary_dim < plm.config.head_dim and plm.config.parallel_residual
    batch = PLMTokenizerFast.from_pretrained(folder)(protein_batch, padding=True, return_tensors="pt")
    real = real_positions(batch)
    with torch.no_grad():
        expected = oracle(**batch, output_hidden_states=True)
        actual = plm(**batch, output_hidden_states=True)
    torch.testing.assert_close(actual.logits[real], expected.logits[real], atol=TOL, rtol=0)
    # Both: the embeddings, each layer's output, the last one after the final norm.
    assert len(actual.hidden_states) == len(expected.hidden_states) == oracle.config.n_layer + 1
    for got, want in zip(actual.hidden_states, expected.hidden_states):
        torch.testing.assert_close(got[real], want[real], atol=TOL, rtol=0)


def test_all_layouts_convert_to_the_same_checkpoint(small, tmp_path):
    """ProGen2's original release (.bin with mask buffers, no tokenizer.json: the published vocabulary) and GPT-J's
    layout give the very checkpoint the hub layout gives."""
    oracle, expected, _ = small
    sources = {
        "original": save_progen(oracle, tmp_path / "original", original=True),
        "gptj": save_gptj(oracle, tmp_path / "gptj"),
    }
    want = load_file(expected / "model.safetensors")
    for name, source in sources.items():
        folder = convert_progen2(source, tmp_path / f"plm_{name}")
        got = load_file(folder / "model.safetensors")
        assert got.keys() == want.keys() and all(torch.equal(got[key], want[key]) for key in want), name
        assert json.loads((folder / "config.json").read_text()) == json.loads((expected / "config.json").read_text())
        assert (folder / "vocab.txt").read_text() == (expected / "vocab.txt").read_text()


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_rows_equal_padded_batch(small, backend, protein_batch):
    _, folder, _ = small
    plm = load_plm(folder, backend)
    tokenizer = PLMTokenizerFast.from_pretrained(folder)
    batch = tokenizer(protein_batch, padding=True, return_tensors="pt")
    encoded = [tokenizer(sequence)["input_ids"] for sequence in protein_batch]
    packed_ids = torch.tensor([sum(encoded, [])])
    positions = torch.tensor([sum((list(range(len(ids))) for ids in encoded), [])])
    with torch.no_grad():
        padded = plm(**batch).logits[real_positions(batch)]
        packed = plm(input_ids=packed_ids, position_ids=positions).logits[0]
    torch.testing.assert_close(packed, padded, atol=TOL, rtol=0)


def test_tokenizer_gives_progen2_ids(small, swissprot_sequences):
    _, folder, _ = small
    tokenizer, reference = PLMTokenizerFast.from_pretrained(folder), progen_tokenizer()
    for sequence in swissprot_sequences:
        # ProGen2 writes a protein as 1 residues 2; its tokenizer adds nothing itself.
        assert tokenizer(sequence)["input_ids"] == reference.encode(f"1{sequence}2").ids
        assert tokenizer.decode(tokenizer(sequence)["input_ids"], skip_special_tokens=True) == sequence
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("1", "2", "<|pad|>")
    assert len(tokenizer) == PLMConfig.from_pretrained(folder).vocab_size == 32
    assert tokenizer.convert_ids_to_tokens([30, 31]) == ["<unused_30>", "<unused_31>"] and tokenizer.mask_token is None
    assert tokenizer.unk_token == "<unused_30>" and tokenizer.valid_residues == "ABCDEFGHIKLMNOPQRSTUVWXYZ"
    batch = tokenizer(swissprot_sequences[:4], padding=True)
    lengths = [len(sequence) + 2 for sequence in swissprot_sequences[:4]]
    assert [row.count(0) for row in batch["input_ids"]] == [max(lengths) - n for n in lengths]


def test_round_trip_to_gptj_and_back_is_identical(small, tmp_path, protein_batch):
    oracle, first, _ = small
    gptj_folder = convert_plm_to_gptj(first, tmp_path / "gptj")
    second = convert_progen2(gptj_folder, tmp_path / "plm_again")
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    assert json.loads((first / "config.json").read_text()) == json.loads((second / "config.json").read_text())
    assert (first / "vocab.txt").read_text() == (second / "vocab.txt").read_text()
    # The GPT-J checkpoint is the oracle itself, weight for weight, and its tokenizer.json gives ProGen2's ids.
    reloaded = GPTJForCausalLM.from_pretrained(gptj_folder).eval()
    want = oracle.state_dict()
    assert reloaded.state_dict().keys() == want.keys()
    assert all(torch.equal(tensor, want[name]) for name, tensor in reloaded.state_dict().items())
    written = Tokenizer.from_file(str(gptj_folder / "tokenizer.json"))
    for sequence in protein_batch:
        assert written.encode(f"1{sequence}2").ids == progen_tokenizer().encode(f"1{sequence}2").ids


def test_rows_beyond_a_large_vocabulary_stay_in_the_model(tmp_path, protein_batch):
    """progen2-large has 51200 embedding and LM-head rows for 30 tokens: the rows are kept (the logits are the
    oracle's), the tokenizer stops at 32 ids (ProGen2's), so it loads in milliseconds, not minutes."""
    oracle = build_gptj("small", vocab_size=2048)
    folder = convert_progen2(save_progen(oracle, tmp_path / "progen", original=True), tmp_path / "plm")
    tokenizer, plm = PLMTokenizerFast.from_pretrained(folder), load_plm(folder)
    assert plm.config.vocab_size == 2048 and len(tokenizer) == 32 and "X" in tokenizer.valid_residues
    batch = tokenizer(protein_batch, padding=True, return_tensors="pt")
    real = real_positions(batch)
    with torch.no_grad():
        expected, actual = oracle(**batch).logits, plm(**batch).logits
    assert actual.shape[-1] == 2048
    torch.testing.assert_close(actual[real], expected[real], atol=TOL, rtol=0)
    back = convert_progen2(convert_plm_to_gptj(folder, tmp_path / "gptj"), tmp_path / "plm_again")
    assert (back / "vocab.txt").read_text() == (folder / "vocab.txt").read_text()


def test_the_source_dtype_is_kept(tmp_path):
    """ProGen2's checkpoints are also published in float16: converted and converted back without a cast."""
    oracle = build_gptj("small").to(torch.float16)
    folder = convert_progen2(save_gptj(oracle, tmp_path / "gptj"), tmp_path / "plm")
    assert {tensor.dtype for tensor in load_file(folder / "model.safetensors").values()} == {torch.float16}
    back = load_file(convert_plm_to_gptj(folder, tmp_path / "back") / "model.safetensors")
    assert all(torch.equal(back[name], tensor) for name, tensor in oracle.state_dict().items())


def test_reverse_conversion_names_what_gptj_cannot_express(tmp_path):
    model = PLMForCausalLM(config_from_preset("tiny"))  # RMSNorm, SwiGLU, sequential residuals, tied, no biases
    model.save_pretrained(tmp_path / "plm")
    PLMTokenizerFast().save_pretrained(tmp_path / "plm")
    with pytest.raises(ValueError, match="cannot be expressed as GPT-J") as error:
        convert_plm_to_gptj(tmp_path / "plm", tmp_path / "gptj")
    knobs = ("mlp_type='glu'", "norm_type='rmsnorm'", "parallel_residual=False", "mlp_bias=False")
    for knob in (*knobs, "lm_head_transform=True", "tie_word_embeddings=True"):
        assert knob in str(error.value)


def test_different_embedding_and_head_vocabularies_are_refused(small, tmp_path):
    _, _, root = small
    folder = shutil.copytree(root / "progen", tmp_path / "progen")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"vocab_size_emb": 37, "vocab_size_lm_head": 32}))
    with pytest.raises(ValueError, match="vocab_size_emb=37 and vocab_size_lm_head=32 differ"):
        convert_progen2(folder, tmp_path / "plm")


def test_wrong_checkpoints_are_refused(small, tmp_path):
    _, _, root = small
    folder = shutil.copytree(root / "progen", tmp_path / "progen")
    weights = load_file(folder / "model.safetensors")
    save_file(weights | {"transformer.h.0.attn.extra.weight": torch.zeros(2)}, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected weights \['transformer.h.0.attn.extra.weight'\]"):
        convert_progen2(folder, tmp_path / "out")
    save_file(weights, folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"n_inner": 64}))
    with pytest.raises(ValueError, match="mlp.up_proj.weight .* do not fit|do not fit config.json"):
        convert_progen2(folder, tmp_path / "out")
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "llama"}))
    with pytest.raises(ModelFolderError, match="model_type 'llama' is not 'progen' or 'gptj'"):
        convert_progen2(folder, tmp_path / "out")
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "gptj"}))
    with pytest.raises(ValueError, match="model_type 'gptj' with ProGen2's fused qkv_proj"):
        convert_progen2(folder, tmp_path / "out")
    (folder / "tokenizer.json").unlink()
    (folder / "config.json").write_text(json.dumps(config | {"bos_token_id": 50256}))
    with pytest.raises(FileNotFoundError, match="tokenizer.json is missing"):
        convert_progen2(folder, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        convert_progen2(tmp_path / "missing" / "folder" / "x", tmp_path / "out")


def test_generation_matches_gptj_generate(small, swissprot_sequences):
    """Greedy decoding with the KV cache, one prompt and a left-padded batch of two: the same tokens as GPT-J's."""
    oracle, folder, _ = small
    plm = load_plm(folder, "sdpa")
    tokenizer = PLMTokenizerFast.from_pretrained(folder, padding_side="left")
    prompts = [swissprot_sequences[3][:12], swissprot_sequences[5][:5]]
    options = dict(do_sample=False, max_new_tokens=40, pad_token_id=0, eos_token_id=4, use_cache=True)
    for batch_prompts in (prompts[:1], prompts):
        # A prompt is 1 + residues, without the closing 2.
        ids = [[tokenizer.bos_token_id, *tokenizer(p, add_special_tokens=False)["input_ids"]] for p in batch_prompts]
        batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        with torch.no_grad():
            expected = oracle.generate(**batch, **options)
            actual = plm.generate(**batch, **options)
        assert expected.shape[1] > batch["input_ids"].shape[1] + 10
        assert torch.equal(actual, expected)


def oracle_causal_log_likelihood(oracle, ids: list[int]) -> float:
    with torch.no_grad():
        log_probs = oracle(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    return float(log_probs.gather(-1, torch.tensor(ids[1:])[:, None]).sum())


def oracle_greedy_residues(oracle, tokenizer, prompt: str, max_length: int) -> str:
    """GPT-J's greedy continuation under `plm generate`'s rules: residues or the end token only, at most
    `max_length` residues in all."""
    allowed = {tokenizer.convert_tokens_to_ids(r) for r in tokenizer.valid_residues} | {tokenizer.eos_token_id}
    ids = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    suppress = [token_id for token_id in range(oracle.config.vocab_size) if token_id not in allowed]
    with torch.no_grad():
        out = oracle.generate(
            torch.tensor([ids]),
            do_sample=False,
            max_new_tokens=max_length - len(prompt) + 1,
            suppress_tokens=suppress,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(ids) :].tolist()
    new = out[: out.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in out else out
    return prompt + tokenizer.decode(new, skip_special_tokens=True)[: max_length - len(prompt)]


def run_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "modeling_plm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    return stdout


def test_cli_end_to_end_from_a_hub_id_in_the_offline_cache(small, tmp_path, protein_batch):
    """`plm convert progen2 owner/name` through the hub cache (offline), then `plm embed`, `plm score` and
    `plm generate` on the result, each checked against the oracle."""
    oracle, _, root = small
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--hugohrban--progen2-tiny-test"
    shutil.copytree(root / "progen", repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    offline = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    model = tmp_path / "plm"
    finish(run_cli("convert", "progen2", "hugohrban/progen2-tiny-test", str(model), env=offline))
    assert json.loads((model / "conversion.json").read_text())["base_model"] == "hugohrban/progen2-tiny-test"

    fasta = tmp_path / "proteins.fasta"
    fasta.write_text("".join(f">p{index}\n{sequence}\n" for index, sequence in enumerate(protein_batch)))
    prompt, max_length = protein_batch[1][:6], 30
    processes = [
        run_cli("embed", str(model), str(fasta), str(tmp_path / "emb"), "--device", "cpu", "--no-progress"),
        run_cli("score", str(model), "--fasta", str(fasta), "--score", "causal", "--device", "cpu", "--no-progress"),
        run_cli(
            "generate", str(model), "--prompt", prompt, "--greedy", "--max-length", str(max_length), "--device", "cpu"
        ),
    ]
    _, scores, generated = (finish(process) for process in processes)

    tokenizer = PLMTokenizerFast.from_pretrained(model)
    embeddings = {record.id: record.arrays["mean"] for record in load_embeddings(tmp_path / "emb", "pt")}
    rows = {row["id"]: float(row["causal_log_likelihood"]) for row in csv.DictReader(scores.splitlines())}
    for index, sequence in enumerate(protein_batch):
        ids = tokenizer(sequence)["input_ids"]
        with torch.no_grad():
            last = oracle(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0, 1:-1]
        torch.testing.assert_close(embeddings[f"p{index}"], last.mean(0), atol=TOL, rtol=0)
        assert rows[f"p{index}"] == pytest.approx(oracle_causal_log_likelihood(oracle, ids), abs=1e-4)
    assert generated.splitlines()[1] == oracle_greedy_residues(oracle, tokenizer, prompt, max_length)


@pytest.mark.parametrize(
    "preset, millions",
    # MultiMolecule's model card (small, medium) and the loaded hub checkpoints' counts (large, xlarge).
    [("progen2_small", 151.15), ("progen2_medium", 764.81), ("progen2_large", 2779.4), ("progen2_xlarge", 6443.6)],
)
def test_presets_have_the_published_parameter_counts(preset, millions):
    config = PLMConfig(**PROGEN2_PRESETS[preset])
    head = config.vocab_size * (config.hidden_size + 1)  # the untied LM head and its bias
    assert (config.num_parameters(include_embeddings=True) + head) / 1e6 == pytest.approx(millions, abs=0.06)
