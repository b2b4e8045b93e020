"""Embeddings: the engine equals the model's direct outputs, batching and order do not change results, long
sequences run in bounded windows, and bulk FASTA embedding survives SIGKILL with an identical result."""

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, pipeline

from modeling_plm import PLMForCausalLM, PLMForMaskedLM, PLMModel, PLMTokenizerFast, config_from_preset
from modeling_plm.cli.embed import add_arguments as add_embed_arguments
from modeling_plm.cli.embed import run as run_embed
from modeling_plm.data.fasta import read_fasta
from modeling_plm.inference.embedding import (
    ProteinEmbeddingPipeline,
    embed_fasta,
    embed_sequences,
    load_embeddings,
    window_starts,
)

from .conftest import data_path

CONTEXT = 64  # tokens, <bos> and <eos> included: 62 residues fit
SWISSPROT = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matrices: on a shared 2-core machine a second OpenMP thread only adds waiting (~15 ms per op under load).
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = PLMForMaskedLM(config_from_preset("tiny", max_position_embeddings=CONTEXT)).eval()
    return model, PLMTokenizerFast()


@pytest.fixture(scope="module")
def tiny_folder(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-plm")
    model, tokenizer = tiny
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def short_sequences():
    """40 real Swiss-Prot sequences that fit the tiny model's context whole (8-62 residues)."""
    records = read_fasta(data_path(SWISSPROT))
    keep = (r.sequence for r in records if 8 <= len(r.sequence) <= CONTEXT - 2 and r.sequence.isalpha())
    return list(itertools.islice(keep, 40))


@pytest.fixture(scope="module")
def long_sequence():
    """A real Swiss-Prot sequence of 3 to 4 times the tiny model's context."""
    records = read_fasta(data_path(SWISSPROT))
    return next(r.sequence for r in records if 3 * CONTEXT <= len(r.sequence) <= 4 * CONTEXT and r.sequence.isalpha())


def direct_hidden_states(model, tokenizer, sequence: str) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(**tokenizer([sequence], return_tensors="pt"), output_hidden_states=True).hidden_states


def assert_same_results(left: list[dict], right: list[dict], atol: float = 1e-5) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].shape == b[name].shape
            np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[name]), rtol=0, atol=atol)


def test_results_equal_the_models_direct_outputs(tiny, short_sequences):
    model, tokenizer = tiny
    layers = [0, 1, -1]
    sequences = short_sequences[:16]
    results = embed_sequences(
        model, tokenizer, sequences, layers=layers, pooling=["mean", "max", "bos"], per_residue=True
    )
    for sequence, result in zip(sequences, results):
        hidden = direct_hidden_states(model, tokenizer, sequence)
        assert result["residues"].shape == (len(layers), len(sequence), 64)  # one row per residue
        assert result["mean"].shape == result["max"].shape == result["bos"].shape == (len(layers), 64)
        for position, layer in enumerate(layers):
            states = hidden[layer][0]
            residues = states[1:-1]  # <bos> and <eos> stripped
            np.testing.assert_allclose(result["residues"][position], residues.numpy(), rtol=0, atol=1e-5)
            np.testing.assert_allclose(result["mean"][position], residues.mean(0).numpy(), rtol=0, atol=1e-5)
            np.testing.assert_allclose(result["max"][position], residues.amax(0).numpy(), rtol=0, atol=1e-5)
            np.testing.assert_allclose(result["bos"][position], states[0].numpy(), rtol=0, atol=1e-5)
    # An int layer gives arrays without the layer axis; the last hidden state is the one after the final norm.
    single = embed_sequences(model, tokenizer, short_sequences[:2], layers=-1, per_residue=True)
    assert single[0]["mean"].shape == (64,) and single[0]["residues"].shape == (len(short_sequences[0]), 64)
    np.testing.assert_allclose(single[1]["mean"], results[1]["mean"][2], rtol=0, atol=1e-6)


def test_input_order_kept_and_batching_does_not_change_results(tiny, short_sequences):
    model, tokenizer = tiny
    sequences = short_sequences[:20]
    options = dict(layers=[1, -1], pooling=["mean", "max", "bos"], per_residue=True)
    unbatched = embed_sequences(model, tokenizer, sequences, token_budget=1, **options)  # one row per forward
    for budget in (300, 100_000):
        assert_same_results(embed_sequences(model, tokenizer, sequences, token_budget=budget, **options), unbatched)
    permutation = np.random.default_rng(0).permutation(len(sequences))
    shuffled = [sequences[i] for i in permutation]
    assert len({len(s) for s in shuffled}) > 10 and [len(s) for s in shuffled] != sorted(len(s) for s in shuffled)
    results = embed_sequences(model, tokenizer, shuffled, token_budget=300, **options)
    assert_same_results(results, [unbatched[i] for i in permutation])
    assert [r["residues"].shape[1] for r in results] == [len(s) for s in shuffled]


def test_batches_respect_the_token_budget(tiny, short_sequences):
    model, tokenizer = tiny
    shapes = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        embed_sequences(model, tokenizer, short_sequences, token_budget=200)
    finally:
        hook.remove()
    assert sum(rows for rows, _ in shapes) == len(short_sequences)
    assert all(rows * length <= 200 for rows, length in shapes)
    assert max(rows for rows, _ in shapes) > 1  # it did batch


def test_sequence_three_times_the_context_runs_in_bounded_windows(tiny, long_sequence):
    model, tokenizer = tiny
    assert len(long_sequence) + 2 >= 3 * CONTEXT
    lengths = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        [result] = embed_sequences(
            model, tokenizer, [long_sequence], layers=[0, -1], pooling=["mean", "max", "bos"], per_residue=True
        )
    finally:
        hook.remove()
    # Measured: no forward pass was longer than the context, and each fitted the default budget.
    assert max(length for _, length in lengths) == CONTEXT
    assert all(rows * length <= 8192 for rows, length in lengths)
    assert result["residues"].shape == (2, len(long_sequence), 64)
    assert np.isfinite(result["residues"]).all()

    # The documented strategy, recomputed here from direct calls: windows of 62 residues every 31, the last one
    # ending at the last residue, averaged per residue with uniform weights; pooling over the averaged residues.
    window, stride = CONTEXT - 2, (CONTEXT - 2) // 2
    starts = list(range(0, len(long_sequence) - window + 1, stride))
    if starts[-1] + window < len(long_sequence):
        starts.append(len(long_sequence) - window)
    assert window_starts(len(long_sequence), window, stride) == starts
    total = torch.zeros(len(long_sequence), 64)
    covered = torch.zeros(len(long_sequence), 1)
    for start in starts:
        hidden = direct_hidden_states(model, tokenizer, long_sequence[start : start + window])[-1][0]
        total[start : start + window] += hidden[1:-1]
        covered[start : start + window] += 1
        if start == 0:
            first_bos = hidden[0]
    expected = total / covered
    np.testing.assert_allclose(result["residues"][1], expected.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(result["mean"][1], expected.mean(0).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(result["max"][1], expected.amax(0).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(result["bos"][1], first_bos.numpy(), rtol=0, atol=1e-5)


def test_explicit_window_and_absolute_positions(long_sequence):
    # Learned absolute positions raise beyond the context: windows keep every position inside it.
    torch.manual_seed(0)
    config = config_from_preset("tiny", max_position_embeddings=CONTEXT, position_embedding_type="absolute")
    model, tokenizer = PLMModel(config).eval(), PLMTokenizerFast()
    with pytest.raises(ValueError, match="beyond max_position_embeddings"):
        with torch.no_grad():
            model(**tokenizer([long_sequence], return_tensors="pt"))
    [result] = embed_sequences(model, tokenizer, [long_sequence], per_residue=True)
    assert result["residues"].shape == (len(long_sequence), 64)
    # Non-overlapping windows (stride == window): every residue is its own window's direct output.
    [tiled] = embed_sequences(model, tokenizer, [long_sequence], window=20, stride=20, per_residue=True)
    with torch.no_grad():
        piece = model(**tokenizer([long_sequence[40:60]], return_tensors="pt")).last_hidden_state[0, 1:-1]
    np.testing.assert_allclose(tiled["residues"][40:60], piece.numpy(), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="window must be between 1 and"):
        embed_sequences(model, tokenizer, [long_sequence], window=CONTEXT)


def test_numpy_and_torch_outputs(tiny, short_sequences):
    model, tokenizer = tiny
    as_numpy = embed_sequences(model, tokenizer, short_sequences[:3], pooling=["mean", "bos"], per_residue=True)
    as_torch = embed_sequences(
        model, tokenizer, short_sequences[:3], pooling=["mean", "bos"], per_residue=True, return_tensors="pt"
    )
    for a, b in zip(as_numpy, as_torch):
        assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in a.values())
        assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in b.values())
        for name in a:
            assert np.array_equal(a[name], b[name].numpy())


def test_bad_input_is_reported_with_its_index(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match=r"Invalid residue 'J' at position 3 of sequence 1"):
        embed_sequences(model, tokenizer, ["MKTAY", "MKJ"])
    with pytest.raises(ValueError, match=r"sequence 2 is empty"):
        embed_sequences(model, tokenizer, ["MKTAY", "MKT", ""])
    with pytest.raises(ValueError, match="out of range"):
        embed_sequences(model, tokenizer, ["MKT"], layers=[5])
    with pytest.raises(ValueError, match="pooling must be among"):
        embed_sequences(model, tokenizer, ["MKT"], pooling="cls")


def test_pipeline_equals_the_engine_for_base_and_head_models(tiny, tiny_folder, short_sequences):
    model, tokenizer = tiny
    sequences = short_sequences[:6]
    options = dict(layers=[0, -1], pooling=["mean", "max", "bos"], per_residue=True)
    expected = embed_sequences(model, tokenizer, sequences, **options)

    from_folder = pipeline("protein-embedding", model=str(tiny_folder), pooling=["mean", "max", "bos"])
    assert isinstance(from_folder, ProteinEmbeddingPipeline) and isinstance(from_folder.model, PLMModel)
    assert_same_results(from_folder(sequences, layers=[0, -1], per_residue=True), expected)
    one = from_folder(sequences[0], layers=[0, -1], per_residue=True, return_tensors="pt")
    assert isinstance(one, dict) and isinstance(one["mean"], torch.Tensor)
    assert_same_results([{k: v.numpy() for k, v in one.items()}], expected[:1])

    for head_model in (model, PLMForCausalLM.from_pretrained(tiny_folder).eval()):  # causal class: bidirectional
        embedder = pipeline("protein-embedding", model=head_model, tokenizer=tokenizer)
        assert_same_results(embedder(sequences, **options), expected)
        assert_same_results(list(embedder(iter(sequences), chunk_size=4, **options)), expected)
    for batch_size in (1, 4):  # transformers' batch_size: rows per forward pass; the results do not change
        assert_same_results(embedder(sequences, batch_size=batch_size, **options), expected)
    with pytest.raises(ValueError, match="batch_size"):
        embedder(sequences, batch_size=0)


def write_fasta(path, records):
    path.write_text("".join(f">{record_id} test record\n{sequence}\n" for record_id, sequence in records))
    return path


def test_duplicate_ids_empty_records_and_invalid_residues(tiny, tmp_path, short_sequences):
    model, tokenizer = tiny
    records = [("P1", short_sequences[0]), ("P2", short_sequences[1]), ("P1", short_sequences[2]), ("P3", "")]
    records += [("P4", short_sequences[3]), ("P2", short_sequences[4])]
    fasta = write_fasta(tmp_path / "dups.fasta", records)
    summary = embed_fasta(model, tokenizer, fasta, tmp_path / "out", shard_size=4, progress=False)
    assert summary["read"] == 6 and summary["records"] == 5 and summary["skipped"] == 1
    assert summary["duplicates"] == 2 and summary["shards"] == 2
    loaded = list(load_embeddings(tmp_path / "out"))
    assert [(r.index, r.id) for r in loaded] == [(0, "P1"), (1, "P2"), (2, "P1"), (4, "P4"), (5, "P2")]
    expected = embed_sequences(model, tokenizer, [sequence for _, sequence in records if sequence])
    assert_same_results([r.arrays for r in loaded], expected)  # both P1 records kept, each its own embedding

    bad = write_fasta(tmp_path / "bad.fasta", [("ok1", "MKTAYIAK"), ("sp|Q9BAD", "MKTJAY")])
    with pytest.raises(ValueError, match=r"record 1 \('sp\|Q9BAD'\): invalid residue 'J' at position 4"):
        embed_fasta(model, tokenizer, bad, tmp_path / "bad", progress=False)
    for policy, stored in (("X", "MKTXAY"), ("drop", "MKTAY")):
        embed_fasta(model, tokenizer, bad, tmp_path / policy, invalid_residues=policy, progress=False)
        [_, record] = load_embeddings(tmp_path / policy)
        np.testing.assert_allclose(
            record.arrays["mean"], embed_sequences(model, tokenizer, [stored])[0]["mean"], atol=1e-5
        )
    assert tokenizer.invalid_residues == "error"  # the caller's tokenizer is left alone


KILLABLE_RUN = textwrap.dedent(
    """
    import sys, torch
    import modeling_plm
    from transformers import AutoModel, AutoTokenizer
    from modeling_plm.inference.embedding import embed_fasta
    torch.set_num_threads(1)
    folder, fasta, out = sys.argv[1:4]
    model = AutoModel.from_pretrained(folder).eval()
    embed_fasta(model, AutoTokenizer.from_pretrained(folder), fasta, out, layers=[0, -1], pooling=["mean", "max"],
                per_residue=True, shard_size=20, token_budget=512, progress=False)
    """
)


def manifest_lines(output_dir) -> list[dict]:
    path = output_dir / "manifest.jsonl"
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]] if path.exists() else []


def test_embed_fasta_resumes_after_sigkill_with_identical_output(tiny_folder, tmp_path):
    # 300 real Swiss-Prot records of up to 150 residues (over half longer than the context, so windowed), with a
    # duplicate id added; short ones keep the test fast on 2 loaded cores.
    short = (r for r in read_fasta(data_path(SWISSPROT)) if len(r.sequence) <= 150)
    records = [(r.id, r.sequence) for r in itertools.islice(short, 299)]
    records.append((records[7][0], records[7][1][:50]))
    fasta = write_fasta(tmp_path / "sprot300.fasta", records)
    options = dict(layers=[0, -1], pooling=["mean", "max"], per_residue=True, shard_size=20, token_budget=512)
    model = AutoModel.from_pretrained(tiny_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_RUN, str(tiny_folder), str(fasta), str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(manifest_lines(killed)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # wait for the header and two complete shards
    os.kill(process.pid, signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    lines = manifest_lines(killed)
    assert 3 <= len(lines) < 16 and not lines[-1].get("done")  # killed mid-run: some shards done, not all
    with pytest.raises(ValueError, match="incomplete"):
        list(load_embeddings(killed))
    # A kill can also land mid-append or mid-write: leave both traces behind, as such a kill would.
    with open(killed / "manifest.jsonl", "ab") as handle:
        handle.write(b'{"shard":99,"file":"embeddings-000')
    (killed / "embeddings-00099.safetensors.tmp").write_bytes(b"partial")

    resumed = embed_fasta(model, tokenizer, fasta, killed, progress=False, **options)
    assert resumed["resumed"] == 20 * (len(lines) - 1)
    reference = embed_fasta(model, tokenizer, fasta, tmp_path / "uninterrupted", progress=False, **options)
    for summary in (resumed, reference):
        assert (summary["read"], summary["records"], summary["duplicates"], summary["shards"]) == (300, 300, 1, 15)

    killed_records = list(load_embeddings(killed))
    reference_records = list(load_embeddings(tmp_path / "uninterrupted"))
    assert [r.index for r in killed_records] == list(range(300))  # none lost, none twice
    assert [r.id for r in killed_records] == [record_id for record_id, _ in records]
    for a, b in zip(killed_records, reference_records):
        assert a.index == b.index and a.id == b.id and a.arrays.keys() == b.arrays.keys() == {"mean", "max", "residues"}
        assert a.arrays["residues"].shape == (2, len(records[a.index][1]), 64)
        for name in a.arrays:
            assert np.array_equal(a.arrays[name], b.arrays[name])
    # The files themselves are identical, and nothing else is left behind.
    names = sorted(p.name for p in killed.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "uninterrupted").iterdir())
    assert names == sorted(["manifest.jsonl"] + [f"embeddings-{k:05d}.safetensors" for k in range(15)])
    for name in names:  # the shards and the manifest
        assert (killed / name).read_bytes() == (tmp_path / "uninterrupted" / name).read_bytes(), name

    with pytest.raises(ValueError, match="other settings"):
        embed_fasta(model, tokenizer, fasta, killed, progress=False, **{**options, "pooling": ["mean"]})


def test_plm_embed_command(tiny_folder, tmp_path, short_sequences, capsys):
    parser = argparse.ArgumentParser(prog="plm embed")
    add_embed_arguments(parser)
    assert "examples:" in parser.format_help() and "--per-residue" in parser.format_help()
    fasta = write_fasta(tmp_path / "few.fasta", [(f"Q{i}", s) for i, s in enumerate(short_sequences[:5])])
    command = [str(tiny_folder), str(fasta), str(tmp_path / "out"), "--pooling", "mean", "bos", "--layers", "0", "-1"]
    assert run_embed(parser.parse_args([*command, "--dtype", "float16", "--no-progress"])) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 5
    loaded = list(load_embeddings(tmp_path / "out"))
    assert [r.id for r in loaded] == [f"Q{i}" for i in range(5)]
    assert all(r.arrays["mean"].dtype == np.float16 and r.arrays["bos"].shape == (2, 64) for r in loaded)
    model, tokenizer = AutoModel.from_pretrained(tiny_folder), AutoTokenizer.from_pretrained(tiny_folder)
    expected = embed_sequences(model, tokenizer, short_sequences[:5], layers=[0, -1], pooling=["mean", "bos"])
    assert_same_results([{k: v.astype(np.float32) for k, v in r.arrays.items()} for r in loaded], expected, atol=5e-3)
    # Rerunning the finished command changes nothing; other settings in the same folder are refused.
    assert run_embed(parser.parse_args([*command, "--dtype", "float16", "--no-progress"])) == 0
    assert json.loads(capsys.readouterr().out)["resumed"] == 5
    with pytest.raises(ValueError, match="dtype: 'float16' -> 'float32'"):
        run_embed(parser.parse_args([*command, "--no-progress"]))
