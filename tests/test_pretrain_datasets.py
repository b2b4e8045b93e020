"""Pretraining corpora read with `datasets` (data.corpora, data.sharded): parquet/Arrow/save_to_disk/fsspec sources
made from real Swiss-Prot records, `plm shard`, rank- and worker-sharding, exact O(1) resume, mixing weights and the
leakage-free split, and a parquet corpus pretrained with DataLoader workers and resumed."""

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_plm import PLMTokenizerFast
from modeling_plm.cli.main import main as plm_main
from modeling_plm.cli.shard import fasta_to_parquet
from modeling_plm.data import DataSource, ProteinStream, read_fasta, split_of
from modeling_plm.data.collators import build_collator
from modeling_plm.data.corpora import iter_source_records, source_files
from modeling_plm.data.sharded import BatchRules, ShardedBatcher, ShardedStreamConfig, WorkerStream
from modeling_plm.training.trainer import PretrainConfig, pretrain

from .conftest import data_path

datasets = pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")

REPO = Path(__file__).resolve().parents[1]
SPROT = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"
RECORDS = 1600


@pytest.fixture(scope="module")
def sprot_fasta(tmp_path_factory) -> Path:
    """The first RECORDS real Swiss-Prot records as a small FASTA file."""
    path = tmp_path_factory.mktemp("sprot") / "sprot_head.fasta"
    with open(path, "w") as handle:
        for record in itertools.islice(read_fasta(data_path(SPROT)), RECORDS):
            handle.write(f">{record.description}\n{record.sequence}\n")
    return path


@pytest.fixture(scope="module")
def corpus(sprot_fasta, tmp_path_factory) -> Path:
    """Those records as 8 parquet shards of 200 (the `plm shard` tool's output)."""
    folder = tmp_path_factory.mktemp("corpus") / "sprot"
    fasta_to_parquet(sprot_fasta, folder, shard_size=RECORDS // 8, row_group_size=50, progress=False)
    return folder


def mlm_collator():
    return build_collator("mlm", PLMTokenizerFast(), pack_length=None, mask_ratio=0.15)


def batcher(corpus, num_workers=0, rank=0, world_size=1, collator=None, **options) -> ShardedBatcher:
    settings = dict(seed=1, crop_length=100, shuffle_buffer=64)
    settings.update(options)
    sources = settings.pop("sources", [DataSource(str(corpus))])
    config = ShardedStreamConfig(sources, rank=rank, world_size=world_size, **settings)
    return ShardedBatcher(config, BatchRules(8), collator or mlm_collator(), phase_seed=5, num_workers=num_workers)


# ---- the conversion tool ----------------------------------------------------------------------------------------
def test_plm_shard_writes_the_records_as_parquet_shards(sprot_fasta, tmp_path, capsys):
    out = tmp_path / "shards"
    assert plm_main(["shard", str(sprot_fasta), str(out), "--shard-size", "500"]) == 0
    shards = sorted(out.glob("shard-*.parquet"))
    assert [p.name for p in shards] == [f"shard-{i:05d}.parquet" for i in range(4)]  # 1600 = 500 + 500 + 500 + 100
    table = pq.read_table(shards)
    assert table.column_names == ["id", "description", "sequence"]
    expected = list(read_fasta(sprot_fasta))
    assert table.column("id").to_pylist() == [r.id for r in expected]
    assert table.column("sequence").to_pylist() == [r.sequence for r in expected]
    # An existing output is refused without --overwrite; bad input names the file, no traceback (exit 2).
    assert plm_main(["shard", str(sprot_fasta), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("not a FASTA file\n")
    assert plm_main(["shard", str(notes), str(tmp_path / "bad")]) == 2
    assert "notes.txt, line 1: not FASTA" in capsys.readouterr().err


# ---- sources ----------------------------------------------------------------------------------------------------
def test_every_kind_of_source_reads_the_same_records(sprot_fasta, corpus, tmp_path):
    expected = [(r.id, r.sequence) for r in read_fasta(sprot_fasta)]

    def read(path, **options):
        return [(r.id, r.sequence) for r in iter_source_records(str(path), **options)]

    assert source_files(str(corpus))[0] == "parquet" and len(source_files(str(corpus))[1]) == 8
    assert read(corpus) == expected  # a folder
    assert read(f"{corpus}/shard-*.parquet") == expected  # a glob
    assert read(corpus / "shard-00000.parquet") == expected[:200]  # one file
    # A `save_to_disk` folder (Arrow), with other column names.
    table = datasets.Dataset.from_dict({"name": [i for i, _ in expected], "seq": [s for _, s in expected]})
    table.save_to_disk(str(tmp_path / "saved"), num_shards=2)
    assert source_files(str(tmp_path / "saved"))[0] == "arrow"
    assert read(tmp_path / "saved", sequence_column="seq", id_column="name") == expected
    # An fsspec URL (the in-memory file system stands in for s3://, gs://, hf://).
    import fsspec

    memory = fsspec.filesystem("memory")
    for shard in sorted(corpus.glob("*.parquet"))[:2]:
        memory.pipe(f"/corpus/{shard.name}", shard.read_bytes())
    assert read("memory://corpus/*.parquet") == expected[:400]
    # A missing column and a missing source are named.
    with pytest.raises(ValueError, match="no column 'sequence'.*--sequence-column"):
        read(tmp_path / "saved")
    with pytest.raises(FileNotFoundError, match="absent"):
        source_files(str(tmp_path / "absent.parquet"))


def test_a_missing_datasets_library_names_the_extra_to_install(corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # what `import datasets` does when it is not installed
    with pytest.raises(ImportError, match=r"pip install 'modeling_plm\[data\]'"):
        batcher(corpus)


# ---- the sharded stream -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_exactly_from_a_stored_state(corpus, num_workers):
    reference = batcher(corpus, num_workers)
    expected = [reference.next_collated() for _ in range(24)]
    interrupted = batcher(corpus, num_workers)
    for _ in range(11):  # an odd count: with 2 workers the resumed run starts at worker 1
        interrupted.next_collated()
    state = json.loads(json.dumps(interrupted.state_dict()))  # as it is stored in the checkpoint
    resumed = batcher(corpus, num_workers)
    resumed.load_state_dict(state)
    rest = [resumed.next_collated() for _ in range(13)]
    for want, got in zip(expected[11:], rest):
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert resumed.stats.as_dict() == reference.stats.as_dict()
    with pytest.raises(ValueError, match="with 2 workers|different stream"):
        batcher(corpus, 1 if num_workers == 2 else 0, seed=9).load_state_dict(state)


def test_resume_time_does_not_grow_with_the_position(corpus):
    """Resume loads a state: the time to the first batch is the same at batch 2 and batch 400 (12 epochs in)."""
    timings = {}
    for position in (2, 400):
        run = batcher(corpus)
        for _ in range(position):
            run.next_collated()
        state = run.state_dict()
        best = float("inf")
        for _ in range(3):
            resumed = batcher(corpus)
            started = time.perf_counter()
            resumed.load_state_dict(state)
            resumed.next_collated()
            best = min(best, time.perf_counter() - started)
        timings[position] = best
    # Replaying 400 batches (3,200 sequences, 12 passes over the corpus) would take ~200x one batch.
    assert timings[400] < 3 * timings[2] + 0.05, timings


def test_mixing_follows_the_weights_and_no_valid_sequence_is_trained_on(corpus, tmp_path):
    shards = sorted(corpus.glob("*.parquet"))
    small = tmp_path / "small"
    small.mkdir()
    for shard in shards[:2]:
        shutil.copy(shard, small / shard.name)
    big = tmp_path / "big"
    big.mkdir()
    for shard in shards[2:]:
        shutil.copy(shard, big / shard.name)
    small_sequences = {r.sequence for r in iter_source_records(str(small))}
    sources = [DataSource(str(big), 1.0), DataSource(str(small), 3.0)]
    config = ShardedStreamConfig(sources, seed=2, crop_length=None, shuffle_buffer=50, valid_fraction=0.2)
    stream = WorkerStream(config, worker=0, num_workers=1)
    draws = [stream.next() for _ in range(3000)]  # the small source cycles many epochs
    share = sum(sequence in small_sequences for sequence in draws) / len(draws)
    assert share == pytest.approx(0.75, abs=0.03)
    assert all(split_of(sequence, 0.2) == "train" for sequence in draws)
    valid = set(ProteinStream(sources, split="valid", valid_fraction=0.2))
    assert valid and not valid & set(draws)


RANK_SCRIPT = """
import json, os, sys
from modeling_plm import PLMTokenizerFast
from modeling_plm.data import DataSource
from modeling_plm.data.collators import build_collator
from modeling_plm.data.sharded import BatchRules, ShardedBatcher, ShardedStreamConfig
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
tokenizer = PLMTokenizerFast()
config = ShardedStreamConfig([DataSource(sys.argv[1])], rank=rank, world_size=world, crop_length=None,
                             shuffle_buffer=1000, valid_fraction=0.0)
batcher = ShardedBatcher(config, BatchRules(8), build_collator("clm", tokenizer), phase_seed=0, num_workers=2)
sequences = []
for _ in range(100):  # one pass over this rank's 800 records
    ids = batcher.next_collated()["input_ids"]
    sequences += [s.replace(" ", "") for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]
json.dump(sequences, open(f"{sys.argv[2]}/rank{rank}.json", "w"))
"""


def test_torchrun_two_ranks_read_disjoint_shards_with_workers(corpus, tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541"]
        + ["--no-python", sys.executable, "-c", RANK_SCRIPT, str(corpus), str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    by_shard = [{r.sequence for r in iter_source_records(str(shard))} for shard in sorted(corpus.glob("*.parquet"))]
    for sequences in ranks:
        assert len(sequences) == len(set(sequences)) == RECORDS // 2  # one pass, nothing twice
    assert not set(ranks[0]) & set(ranks[1])  # the ranks partition the corpus
    # ... by shards: each rank's sequences are whole shards, and no shard is split between the ranks.
    owners = [{rank for rank in (0, 1) if shard & set(ranks[rank])} for shard in by_shard]
    assert all(len(owner) == 1 for owner in owners) and set(ranks[0]) | set(ranks[1]) == set().union(*by_shard)


# ---- pretraining ------------------------------------------------------------------------------------------------
def parquet_run(corpus, output_dir, **overrides) -> PretrainConfig:
    values = dict(
        preset="small",
        train_file=[f"{corpus}:1"],
        valid_sequences=16,
        crop_length=62,
        batch_size=8,
        max_steps=6,
        learning_rate=3e-3,
        log_steps=2,
        eval_steps=6,
        save_steps=3,
        output_dir=str(output_dir),
        report_to="none",
        shuffle_buffer=100,
        num_workers=2,
    )
    values.update(overrides)
    return PretrainConfig(**values)


def test_a_parquet_corpus_pretrains_with_workers_and_resumes_exactly(corpus, tmp_path):
    reference = pretrain(parquet_run(corpus, tmp_path / "reference"))
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "reference", interrupted)  # as if stopped right after the step-3 checkpoint
    for later in ("checkpoints/step-0000006", "final"):
        shutil.rmtree(interrupted / later)
    state = json.loads((interrupted / "checkpoints/step-0000003/trainer_state_rank0.json").read_text())
    assert state["batcher"]["kind"] == "sharded" and state["batcher"]["next_worker"] == 1  # 3 batches, 2 workers
    resumed = pretrain(parquet_run(corpus, interrupted, resume="auto"))
    expected, actual = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    records = [json.loads((folder / "training_record.json").read_text()) for folder in (reference, resumed)]
    assert records[0]["tokens"] == records[1]["tokens"] > 0
    assert records[0]["data"]["record_stats_last_phase"] == records[1]["data"]["record_stats_last_phase"]
