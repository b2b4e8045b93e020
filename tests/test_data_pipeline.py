"""The pretraining data pipeline: record policy, splits, mixing, cropping, sharding, resume, clustering."""

import gzip
import itertools
import json
import logging
import random

import pytest

from modeling_plm.data import (
    DataSource,
    ProteinStream,
    RecordPolicy,
    RecordStats,
    clean_records,
    cluster_with_mmseqs,
    load_clusters,
    mmseqs_available,
    read_fasta,
    read_id_list,
    split_of,
)

from .conftest import data_path

SWISSPROT = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"
METAGENOME = "metagenome_mag_pyhmmer/938293.PRJEB85.HG003687.faa.gz"
LETTERS = "ACDEFGHIKLMNPQRSTVWY"


def write_fasta(path, records: list[tuple[str, str]]):
    path.write_text("".join(f">{record_id}\n{sequence}\n" for record_id, sequence in records))
    return path


def random_sequence(seed: int, length: int) -> str:
    rng = random.Random(seed)
    return "M" + "".join(rng.choice(LETTERS) for _ in range(length - 1))


def random_fasta(path, count: int, prefix: str, seed: int, min_length: int = 20, max_length: int = 80):
    """Distinct random sequences that all start with `prefix`, so a draw tells which source it came from."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        body = "".join(rng.choice(LETTERS) for _ in range(rng.randint(min_length, max_length)))
        records.append((f"{prefix}{index}", prefix + body))
    return write_fasta(path, records)


@pytest.fixture
def two_sources(tmp_path) -> list[DataSource]:
    # Small files (and long-ish sequences) so that a few hundred draws span several epochs and many crops.
    first = random_fasta(tmp_path / "a.fasta", 60, "MAAA", seed=1, min_length=10, max_length=120)
    second = tmp_path / "b.fasta.gz"  # one gzip source: both formats go through the same stream
    second.write_bytes(gzip.compress(random_fasta(tmp_path / "b.fasta", 40, "MWWW", seed=2).read_bytes()))
    return [DataSource(str(first), 2.0), DataSource(str(second), 1.0)]


def take(stream, count: int) -> list[str]:
    return list(itertools.islice(stream, count))


# ---------------------------------------------------------------------------------------------------------------------
# Determinism, resume, sharding, mixing, cropping
# ---------------------------------------------------------------------------------------------------------------------


def test_same_arguments_same_stream_and_different_seeds_differ(two_sources):
    options = dict(valid_fraction=0.1, crop_length=40, shuffle_buffer=16)
    first = take(ProteinStream(two_sources, seed=3, **options), 300)
    again = take(ProteinStream(two_sources, seed=3, **options), 300)
    other = take(ProteinStream(two_sources, seed=4, **options), 300)
    assert first == again
    assert first != other
    # A seed changes the order, not the training set: the split depends on split_seed only.
    assert set(ProteinStream(two_sources, seed=3, split="valid", valid_fraction=0.1)) == set(
        ProteinStream(two_sources, seed=4, split="valid", valid_fraction=0.1)
    )


@pytest.mark.parametrize("world_size,rank", [(1, 0), (3, 2)])
def test_resume_mid_epoch_continues_exactly(two_sources, world_size, rank):
    options = dict(valid_fraction=0.1, crop_length=40, shuffle_buffer=16, seed=7, rank=rank, world_size=world_size)
    uninterrupted_stream = ProteinStream(two_sources, **options)
    uninterrupted = take(uninterrupted_stream, 400)  # ~9 epochs of the small file: resume crosses epoch ends

    interrupted = ProteinStream(two_sources, **options)
    consumed = take(interrupted, 137)
    state = json.loads(json.dumps(interrupted.state_dict()))  # survives a JSON checkpoint
    assert state["consumed"] == 137 and consumed == uninterrupted[:137]

    restored = ProteinStream(two_sources, **options)
    restored.load_state_dict(state)
    continued = take(restored, 400 - 137)
    assert continued == uninterrupted[137:]
    # Replay re-creates the counts of an uninterrupted run instead of adding to them.
    assert restored.stats == uninterrupted_stream.stats
    assert restored.state_dict()["consumed"] == 400


def test_resume_refuses_a_state_from_another_stream(two_sources):
    stream = ProteinStream(two_sources, seed=1, shuffle_buffer=8)
    take(stream, 10)
    state = stream.state_dict()
    with pytest.raises(ValueError, match="seed"):
        ProteinStream(two_sources, seed=2, shuffle_buffer=8).load_state_dict(state)
    with pytest.raises(ValueError, match="rank"):
        ProteinStream(two_sources, seed=1, shuffle_buffer=8, rank=1, world_size=2).load_state_dict(state)


def test_two_ranks_partition_the_single_rank_stream(two_sources):
    options = dict(valid_fraction=0.1, crop_length=40, shuffle_buffer=16, seed=5, max_sequences=301)
    whole = list(ProteinStream(two_sources, **options))
    rank0 = list(ProteinStream(two_sources, rank=0, world_size=2, **options))
    rank1 = list(ProteinStream(two_sources, rank=1, world_size=2, **options))
    assert len(whole) == 301 and len(rank0) == 151 and len(rank1) == 150
    assert rank0 == whole[0::2] and rank1 == whole[1::2]
    merged = [draw for pair in itertools.zip_longest(rank0, rank1) for draw in pair if draw is not None]
    assert merged == whole


def test_weighted_mixing_follows_the_weights(tmp_path):
    first = random_fasta(tmp_path / "a.fasta", 50, "MAAA", seed=1)
    second = random_fasta(tmp_path / "b.fasta", 50, "MWWW", seed=2)
    sources = [DataSource.parse(f"{first}:3"), DataSource.parse(f"{second}:1")]
    draws = list(ProteinStream(sources, valid_fraction=0.0, shuffle_buffer=10, max_sequences=4000))
    share = sum(draw.startswith("MAAA") for draw in draws) / len(draws)
    assert abs(share - 0.75) < 0.03  # 4 standard deviations of a binomial share over 4000 draws


def test_crops_have_the_length_and_are_reproducible_windows(tmp_path):
    path = random_fasta(tmp_path / "long.fasta", 30, "M", seed=3, min_length=50, max_length=300)
    originals = {record.sequence for record in read_fasta(path)}
    options = dict(valid_fraction=0.0, crop_length=64, shuffle_buffer=8, seed=11, max_sequences=200)
    uncropped = list(ProteinStream([DataSource(str(path))], **{**options, "crop_length": None}))
    stream = ProteinStream([DataSource(str(path))], **options)
    cropped = list(stream)
    assert cropped == list(ProteinStream([DataSource(str(path))], **options))
    assert all(len(draw) == min(64, len(full)) for draw, full in zip(cropped, uncropped, strict=True))
    assert all(draw in full for draw, full in zip(cropped, uncropped, strict=True))
    assert stream.stats.cropped == sum(len(full) > 64 for full in uncropped) > 50
    # Windows start anywhere, not just at the N-terminus.
    assert sum(not full.startswith(draw) for draw, full in zip(cropped, uncropped, strict=True)) > 25
    assert set(uncropped) <= originals


def test_crop_window_depends_only_on_seed_and_draw_index(tmp_path):
    long = random_sequence(0, 500)
    one = write_fasta(tmp_path / "one.fasta", [("short", "MKTAYIAK"), ("long", long)])
    # The first record of `two` is cropped too: a crop RNG shared along the stream would shift the second window.
    two = write_fasta(tmp_path / "two.fasta", [("other", random_sequence(1, 300)), ("long", long)])
    options = dict(split="valid", valid_fraction=1.0, crop_length=100, seed=2)
    from_one = list(ProteinStream([DataSource(str(one))], **options))
    from_two = list(ProteinStream([DataSource(str(two))], **options))
    assert from_one[1] == from_two[1] and len(from_one[1]) == 100 and from_one[1] in long
    other_seed = list(ProteinStream([DataSource(str(one))], **{**options, "seed": 3}))
    assert other_seed[1] != from_one[1]


def test_stream_reads_ahead_only_the_shuffle_buffer_of_the_real_sample():
    stream = ProteinStream([DataSource(str(data_path(SWISSPROT)))], crop_length=512, shuffle_buffer=1000)
    assert len(take(stream, 5000)) == 5000
    # ~5,050 records for 5,000 train draws (1% go to valid) plus the 1,000 buffered: streaming, not the 50k file.
    assert 6000 <= stream.stats.read < 6200


def test_stream_warns_once_per_source_pass_not_per_record(tmp_path, caplog):
    records = [(f"r{i}", random_sequence(i, 30)) for i in range(9)] + [("bad1", "MK1"), ("bad2", "MK2")]
    path = write_fasta(tmp_path / "some_bad.fasta", records)
    stream = ProteinStream([DataSource(str(path))], valid_fraction=0.0, shuffle_buffer=4)
    with caplog.at_level(logging.WARNING, logger="modeling_plm.data"):
        draws = take(stream, 9 * 3 + 1)  # three full passes over the file, and the first draw of a fourth
    warnings = [r.getMessage() for r in caplog.records if r.name == "modeling_plm.data"]
    assert len(warnings) == 3 and all("invalid=2" in message for message in warnings)
    # The fourth pass has read 4 records into the buffer and a fifth to release the first draw; no bad one yet.
    assert stream.stats.invalid == 6 and stream.stats.read == 3 * 11 + 5 and not {"MK1", "MK2"} & set(draws)


# ---------------------------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------------------------


def test_split_of_is_stable_and_keeps_identical_sequences_together(tmp_path):
    assert split_of("MKTAYIAKQR", 0.5, seed=1) == split_of("MKTAYIAKQR", 0.5, seed=1)
    assert split_of("MKTAYIAKQR", 0.0) == "train" and split_of("MKTAYIAKQR", 1.0) == "valid"
    keys = [f"KEY{index}" for index in range(2000)]
    assert [split_of(key, 0.3, seed=0) for key in keys] != [split_of(key, 0.3, seed=1) for key in keys]
    # Duplicates under different ids in two files: every copy lands in the split of its sequence.
    sequences = [random_sequence(index, 30) for index in range(100)]
    first = write_fasta(tmp_path / "a.fasta", [(f"a{i}", s) for i, s in enumerate(sequences)])
    second = write_fasta(tmp_path / "b.fasta", [(f"b{i}", s.lower()) for i, s in enumerate(sequences)])
    sources = [DataSource(str(first)), DataSource(str(second))]
    valid = list(ProteinStream(sources, split="valid", valid_fraction=0.3))
    train = set(ProteinStream(sources, split="train", valid_fraction=0.3, max_sequences=3000, shuffle_buffer=10))
    assert 0 < len(valid) < 200 and len(valid) % 2 == 0
    assert not set(valid) & train and set(valid) | train == set(sequences)


def test_valid_fraction_and_no_leakage_on_real_swissprot():
    source = DataSource(str(data_path(SWISSPROT)))
    valid_stream = ProteinStream([source], split="valid", valid_fraction=0.1, max_sequences=500)
    valid = list(valid_stream)
    assert len(valid) == 500
    assert 0.085 < 500 / valid_stream.stats.read < 0.115  # ~5,000 records read; 3 sigma is about +-0.013
    train = set(ProteinStream([source], valid_fraction=0.1, shuffle_buffer=500, max_sequences=4000))
    assert len(train) > 3900 and not train & set(valid)
    # The valid split is in file order, unshuffled: its first sequences are the first valid records of the file.
    first_valid = (r.sequence for r in read_fasta(source.path) if split_of(r.sequence.upper(), 0.1) == "valid")
    assert valid[:20] == list(itertools.islice(first_valid, 20))


def test_clusters_decide_the_split(tmp_path):
    # Two different sequences in one cluster go where their representative goes, whatever their own hash says.
    sequences = {f"s{i}": random_sequence(i, 40) for i in range(200)}
    path = write_fasta(tmp_path / "c.fasta", list(sequences.items()))
    to_valid = next(key for key in sequences if split_of(key, 0.5) == "valid")
    to_train = next(key for key in sequences if split_of(key, 0.5) == "train")
    clusters = {member: (to_valid if index % 2 else to_train) for index, member in enumerate(sequences)}
    split_of_rep = {to_valid: "valid", to_train: "train"}
    valid = set(ProteinStream([DataSource(str(path))], split="valid", valid_fraction=0.5, clusters=clusters))
    expected = {sequences[m] for m, rep in clusters.items() if split_of_rep[rep] == "valid"}
    assert valid == expected and len(valid) == 100


# ---------------------------------------------------------------------------------------------------------------------
# Bad records and bad files
# ---------------------------------------------------------------------------------------------------------------------


def test_policy_skips_and_counts_bad_records(tmp_path, caplog):
    path = write_fasta(
        tmp_path / "bad.fasta",
        [("good", "mktayiak"), ("empty", ""), ("gap", "MKT-AYI"), ("short", "MK"), ("stop", "MKTAYI*"), ("x", "MXBZ")],
    )
    stats = RecordStats()
    with caplog.at_level(logging.WARNING, logger="modeling_plm.data"):
        kept = list(clean_records(path, RecordPolicy(min_length=3), stats))
    assert [(r.id, r.sequence) for r in kept] == [("good", "MKTAYIAK"), ("stop", "MKTAYI"), ("x", "MXBZ")]
    assert stats.as_dict() == dict(
        read=6, kept=3, empty=1, too_short=1, invalid=1, repaired=0, stop_stripped=1, excluded=0, cropped=0
    )
    assert stats.read == stats.kept + stats.empty + stats.too_short + stats.invalid + stats.excluded
    warnings = [r for r in caplog.records if r.name == "modeling_plm.data" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "invalid=1" in warnings[0].getMessage() and "bad.fasta" in warnings[0].getMessage()
    # "X" and "drop" repair the gap instead (counted), as everywhere else the one residue policy applies.
    for policy, repaired in (("X", "MKTXAYI"), ("drop", "MKTAYI")):
        stats = RecordStats()
        kept = list(clean_records(path, RecordPolicy(invalid=policy, min_length=3), stats))
        assert ("gap", repaired) in [(r.id, r.sequence) for r in kept] and stats.repaired == 1


def test_policy_error_names_file_record_position_and_character(tmp_path):
    path = write_fasta(tmp_path / "bad.fasta", [("ok", "MKT"), ("sp|P1|BAD", "MKTAY1AK")])
    with pytest.raises(ValueError, match=r"bad\.fasta: record 'sp\|P1\|BAD': invalid residue '1' at position 6"):
        list(clean_records(path, RecordPolicy(invalid="error"), RecordStats()))
    empty = write_fasta(tmp_path / "hole.fasta", [("ok", "MKT"), ("nothing", "")])
    with pytest.raises(ValueError, match=r"hole\.fasta: record 'nothing': empty sequence"):
        list(clean_records(empty, RecordPolicy(invalid="error"), RecordStats()))
    with pytest.raises(ValueError, match="invalid residue '1' at position 6"):
        list(ProteinStream([DataSource(str(path))], policy=RecordPolicy(invalid="error"), valid_fraction=0.0))
    with pytest.raises(ValueError):
        RecordPolicy(invalid="ignore")


def test_real_metagenome_stop_codons_are_stripped_and_counted():
    path = data_path(METAGENOME)
    raw = list(itertools.islice(read_fasta(path), 200))
    with_stop = sum(record.sequence.endswith("*") for record in raw)
    assert with_stop >= 195  # complete genes end in '*'; partial ones (gene cut by the contig end) may not
    stats = RecordStats()
    cleaned = list(itertools.islice(clean_records(path, RecordPolicy(), stats), 200))
    assert [r.sequence for r in cleaned] == [r.sequence.removesuffix("*") for r in raw]
    assert stats.stop_stripped == with_stop and stats.kept == 200 and not any("*" in r.sequence for r in cleaned)
    skipping = RecordStats()
    kept_without_stop = list(clean_records(path, RecordPolicy(stop_codon="skip"), skipping))
    assert skipping.read == 2100 and skipping.invalid == 2100 - len(kept_without_stop) > 2000
    with pytest.raises(ValueError, match=rf"record '{raw[0].id}': trailing stop codon"):
        next(clean_records(path, RecordPolicy(stop_codon="error"), RecordStats()))


def test_exclude_ids_from_the_real_benchmark_overlap():
    ids = read_id_list(data_path("swissprot2014/benchmark_exact_overlap.tsv"))
    assert len(ids) == 6154 and "A0AEI5" in ids and "sprot_representative_accession" not in ids
    path = data_path(SWISSPROT)
    first = list(itertools.islice(read_fasta(path), 5000))
    overlapping = {r.id for r in first} & ids
    assert len(overlapping) >= 5  # 729 of the 50k sample overlap a benchmark; 9 of these first 5k
    stats = RecordStats()
    kept = list(itertools.islice(clean_records(path, RecordPolicy(), stats, exclude_ids=ids), 5000 - len(overlapping)))
    assert stats.read == 5000 and stats.excluded == len(overlapping)
    assert not {r.id for r in kept} & ids


def test_read_id_list_without_header(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("P12345\n# a comment\n\nQ9XYZ1\textra column\n")
    assert read_id_list(path) == {"P12345", "Q9XYZ1"}


def test_an_empty_file_is_an_error_that_names_it(tmp_path, two_sources):
    """An empty FASTA file is never a data source (most likely a failed download): it is refused wherever it is."""
    empty = tmp_path / "empty.fasta"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.fasta: no FASTA records"):
        list(ProteinStream([DataSource(str(empty)), two_sources[0]], split="valid", valid_fraction=0.5))
    with pytest.raises(ValueError, match="empty.fasta: no FASTA records"):
        take(ProteinStream([DataSource(str(empty))]), 1)
    with pytest.raises(ValueError, match="empty.fasta: no FASTA records"):
        take(ProteinStream([two_sources[0], DataSource(str(empty), weight=0.5)], shuffle_buffer=4), 100)


def test_train_source_with_no_record_in_the_split_fails_instead_of_spinning(two_sources):
    with pytest.raises(ValueError, match="no usable sequences in .*a.fasta"):
        take(ProteinStream(two_sources[:1], valid_fraction=1.0), 1)


def test_non_fasta_text_and_truncated_gzip_name_the_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a protein file\n")
    with pytest.raises(ValueError, match=r"notes\.txt, line 1: not FASTA"):
        take(ProteinStream([DataSource(str(text))]), 1)
    cut = tmp_path / "cut.fasta.gz"
    payload = gzip.compress(b"".join(b">P%d\n%s\n" % (i, b"MKTAYIAK" * 40) for i in range(300)))
    cut.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match=r"cut\.fasta\.gz: corrupt or truncated gzip"):
        list(ProteinStream([DataSource(str(cut))], split="valid", valid_fraction=0.5))
    with pytest.raises(FileNotFoundError):
        ProteinStream([DataSource(str(tmp_path / "missing.fasta"))])


def test_data_source_parse():
    assert DataSource.parse("data/a.fasta.gz") == DataSource("data/a.fasta.gz", 1.0, "a.fasta.gz")
    assert DataSource.parse("data/a.fasta:2.5") == DataSource("data/a.fasta", 2.5, "a.fasta")
    assert DataSource.parse("/x/run:2/b.fa:1e-1").weight == pytest.approx(0.1)
    assert DataSource.parse("/x/run:2/b.fa:1e-1").path == "/x/run:2/b.fa"
    assert DataSource.parse("C:/data/b.fa") == DataSource("C:/data/b.fa")
    assert DataSource.parse("weird:name.fa").path == "weird:name.fa"
    with pytest.raises(ValueError, match="positive"):
        DataSource.parse("a.fa:0")
    with pytest.raises(ValueError, match="positive"):
        DataSource.parse("a.fa:-1")


# ---------------------------------------------------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------------------------------------------------


def test_cluster_with_mmseqs_missing_raises_with_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert not mmseqs_available()
    with pytest.raises(RuntimeError, match="mmseqs2"):
        cluster_with_mmseqs([str(tmp_path / "a.fasta")], str(tmp_path / "work"))


@pytest.mark.skipif(not mmseqs_available(), reason="mmseqs not installed (Debian package mmseqs2)")
def test_mmseqs_clusters_real_sequences_and_splits_by_cluster(tmp_path):
    # 150 real sequences plus 50 near-copies (a few substitutions), so some clusters surely have several members.
    real = list(itertools.islice(read_fasta(data_path(SWISSPROT)), 150))
    rng = random.Random(0)
    records = [(r.id, r.sequence) for r in real]
    for record in real[:50]:
        mutated = list(record.sequence)
        for position in rng.sample(range(len(mutated)), k=max(1, len(mutated) // 50)):
            mutated[position] = "W" if mutated[position] != "W" else "A"
        records.append((f"{record.id}_variant", "".join(mutated)))
    path = write_fasta(tmp_path / "input.fasta", records)
    tsv = cluster_with_mmseqs([str(path)], str(tmp_path / "work"), min_seq_id=0.9, coverage=0.8, threads=2)
    clusters = load_clusters(tsv)
    assert set(clusters) == {record_id for record_id, _ in records}
    assert all(clusters[rep] == rep for rep in set(clusters.values()))
    assert 100 <= len(set(clusters.values())) <= 160
    for record in real[:50]:
        assert clusters[record.id] == clusters[f"{record.id}_variant"]
    # Split by cluster: members of one cluster are all in the same split.
    by_sequence = dict((sequence, record_id) for record_id, sequence in records)
    options = dict(split="valid", valid_fraction=0.4, clusters=clusters)
    valid = list(ProteinStream([DataSource(str(path))], **options))
    valid_reps = {clusters[by_sequence[sequence]] for sequence in valid}
    expected = {record_id for record_id, rep in clusters.items() if rep in valid_reps}
    assert {by_sequence[sequence] for sequence in valid} == expected and 0 < len(valid) < len(records)
