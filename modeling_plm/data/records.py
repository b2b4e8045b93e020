"""Reading protein sequences (a streaming FASTA / FASTA.gz reader, the shared data sets) and the pretraining
data pipeline: record cleaning policy, weighted sources, leakage-free splits, clustering and a resumable stream."""

import gzip
import hashlib
import logging
import math
import os
import re
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

DATA_DIR_ENV = "PLM_DATA_DIR"


class FastaRecord(NamedTuple):
    id: str
    description: str
    sequence: str


def find_data_dir(start: str | os.PathLike | None = None) -> Path | None:
    """The shared data folder: `$PLM_DATA_DIR`, else the first `shared/data` beside an ancestor of `start` (cwd)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def _open_text(path: Path):
    with open(path, "rb") as handle:
        is_gzip = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if is_gzip else open(path)


def read_fasta(path: str | os.PathLike) -> Iterator[FastaRecord]:
    """Yield records one at a time (constant memory), from plain or gzip-compressed FASTA (detected by content).

    Sequences are returned as written, joined across lines with whitespace removed; validating residues is the
    tokenizer's and the data pipeline's job. Raises ValueError naming the file and line for text that is not FASTA,
    and for a truncated or corrupt gzip stream.
    """
    path = Path(path)
    record_id, description, chunks = None, "", []
    try:
        with _open_text(path) as handle:
            for line_number, line in enumerate(handle, start=1):
                line = line.strip()
                if not line:
                    continue
                if line.startswith(">"):
                    if record_id is not None:
                        yield FastaRecord(record_id, description, "".join(chunks))
                    description = line[1:].strip()
                    record_id = description.split(maxsplit=1)[0] if description else f"record_{line_number}"
                    chunks = []
                elif record_id is None:
                    raise ValueError(f"{path}:{line_number}: not FASTA: expected a '>' header line, got {line[:40]!r}")
                else:
                    chunks.append("".join(line.split()))
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({error})") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text FASTA file ({error})") from error
    if record_id is not None:
        yield FastaRecord(record_id, description, "".join(chunks))


# ---------------------------------------------------------------------------------------------------------------------
# Pretraining data pipeline: record policy, weighted sources, leakage-free splits, clustering, a resumable stream.
# ---------------------------------------------------------------------------------------------------------------------

logger = logging.getLogger("modeling_plm.data")

STANDARD_ALPHABET = "ACDEFGHIKLMNPQRSTVWYXBZUO"
_INVALID_CHOICES = ("skip", "error")
_STOP_CODON_CHOICES = ("strip", "skip", "error")

# Distinct first words of the numpy seeds, so that mixing, shuffling and cropping never share a random stream.
_MIX_STREAM, _SHUFFLE_STREAM, _CROP_STREAM = 0, 1, 2
_RANDOM_BLOCK = 4096  # random numbers drawn per numpy call: one call per item would dominate the run time
_STATE_VERSION = 1


@dataclass
class RecordPolicy:
    """How bad or unusual records are handled; every non-default outcome is counted in RecordStats.

    invalid: "skip" drops a record with a letter outside `alphabet` (counted, one summary warning per file pass);
        "error" raises ValueError naming the file, record id, 1-based position and the character.
    stop_codon: a trailing '*' (gene-caller output) is removed ("strip", counted in stop_stripped), or the record is
        dropped ("skip", counted as invalid) or rejected ("error"). A '*' anywhere else is an invalid character.
    min_length: shorter records (after cleaning) are dropped and counted as too_short. Empty sequences are always
        counted as empty and dropped, or raise when invalid == "error".
    alphabet: the accepted residue letters; sequences are upper-cased first (read_fasta already removed whitespace).
    """

    invalid: str = "skip"
    stop_codon: str = "strip"
    min_length: int = 1
    alphabet: str = STANDARD_ALPHABET

    def __post_init__(self) -> None:
        if self.invalid not in _INVALID_CHOICES:
            raise ValueError(f"RecordPolicy.invalid must be one of {_INVALID_CHOICES}, got {self.invalid!r}")
        if self.stop_codon not in _STOP_CODON_CHOICES:
            raise ValueError(f"RecordPolicy.stop_codon must be one of {_STOP_CODON_CHOICES}, got {self.stop_codon!r}")
        if self.min_length < 1:
            raise ValueError(f"RecordPolicy.min_length must be >= 1, got {self.min_length}")
        if not self.alphabet or self.alphabet != self.alphabet.upper():
            raise ValueError(f"RecordPolicy.alphabet must be non-empty upper-case letters, got {self.alphabet!r}")


@dataclass
class RecordStats:
    """Counts of what the pipeline did. Outcomes partition the records: read == kept + empty + too_short + invalid +
    excluded. stop_stripped and cropped count changes made to records (a stripped record may still be dropped later).
    """

    read: int = 0
    kept: int = 0
    empty: int = 0
    too_short: int = 0
    invalid: int = 0
    stop_stripped: int = 0
    excluded: int = 0
    cropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    def merge(self, other: "RecordStats") -> None:
        """Add `other`'s counts to these."""
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


def _record_error(path: str | os.PathLike, record_id: str, problem: str) -> ValueError:
    return ValueError(f"{path}: record {record_id!r}: {problem}")


def clean_records(
    path: str | os.PathLike,
    policy: RecordPolicy,
    stats: RecordStats,
    exclude_ids: set[str] | None = None,
) -> Iterator[FastaRecord]:
    """Stream the records of one FASTA file, upper-cased and checked against `policy` (see RecordPolicy).

    Every record dropped or changed is counted in `stats` (updated as records are read); when a full pass over the
    file dropped or changed any, one warning on the "modeling_plm.data" logger summarises this pass's counts.
    Records whose id is in `exclude_ids` are dropped first and counted as excluded.
    """
    before = stats.as_dict()
    # A compiled negated class finds the first bad letter in C; a Python loop per residue would be the bottleneck.
    bad_letter = re.compile(f"[^{re.escape(policy.alphabet)}]")
    for record in read_fasta(path):
        stats.read += 1
        if exclude_ids and record.id in exclude_ids:
            stats.excluded += 1
            continue
        sequence = record.sequence.upper()
        if sequence.endswith("*"):
            if policy.stop_codon == "error":
                raise _record_error(path, record.id, f"trailing stop codon '*' at position {len(sequence)}")
            if policy.stop_codon == "skip":
                stats.invalid += 1
                continue
            sequence = sequence[:-1]
            stats.stop_stripped += 1
        if not sequence:
            if policy.invalid == "error":
                raise _record_error(path, record.id, "empty sequence")
            stats.empty += 1
            continue
        found = bad_letter.search(sequence)
        if found is not None:
            if policy.invalid == "error":
                position, char = found.start() + 1, found.group()
                raise _record_error(path, record.id, f"invalid character {char!r} at position {position}")
            stats.invalid += 1
            continue
        if len(sequence) < policy.min_length:
            stats.too_short += 1
            continue
        stats.kept += 1
        yield FastaRecord(record.id, record.description, sequence)
    after = stats.as_dict()
    # Only this function's own counters: the caller may count other things (crops) in the same stats meanwhile.
    changes = {
        name: after[name] - before[name] for name in ("empty", "too_short", "invalid", "stop_stripped", "excluded")
    }
    if any(changes.values()):
        summary = ", ".join(f"{name}={count}" for name, count in changes.items() if count)
        read, kept = after["read"] - before["read"], after["kept"] - before["kept"]
        logger.warning("%s: read %d records, kept %d; %s (policy %s)", path, read, kept, summary, policy)


def read_id_list(path: str | os.PathLike) -> set[str]:
    """The ids in the first column of a text or TSV file (plain or gzip), e.g. benchmark_exact_overlap.tsv.

    Blank lines and '#' comments are ignored; the first line is taken as a header, and skipped, when its first field
    has no digit (column names like "sprot_representative_accession" do; accessions and cluster ids do not).
    """
    ids: set[str] = set()
    with _open_text(Path(path)) as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if line_number == 1 and not any(char.isdigit() for char in parts[0]):
                continue
            ids.add(parts[0])
    return ids


@dataclass
class DataSource:
    """One FASTA file of a training mixture, drawn with probability proportional to `weight`."""

    path: str
    weight: float = 1.0
    name: str | None = None

    def __post_init__(self) -> None:
        self.path = str(self.path)
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"DataSource weight must be a positive finite number, got {self.weight!r} for {self.path}")
        if self.name is None:
            self.name = Path(self.path).name

    @classmethod
    def parse(cls, spec: str) -> "DataSource":
        """Parse "path" or "path:weight".

        Only the text after the last ':' is tried as a weight, so paths with ':' in them (URLs, Windows drives, odd
        file names) stay whole unless they end in ":<number>".
        """
        spec = spec.strip()
        head, sep, tail = spec.rpartition(":")
        if sep and head:
            try:
                weight = float(tail)
            except ValueError:
                return cls(spec)
            return cls(head.strip(), weight)
        return cls(spec)


def split_of(key: str, valid_fraction: float, seed: int = 0) -> str:
    """Return "train" or "valid" for `key` (a sequence, or a cluster representative id), from a stable hash.

    hashlib, not Python's salted hash(): the answer is the same in every process and run, so identical sequences
    (or all members of one cluster, keyed by their representative) always land in the same split.
    """
    if not 0.0 <= valid_fraction <= 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1], got {valid_fraction}")
    digest = hashlib.blake2b(f"{seed}\t{key}".encode(), digest_size=8).digest()
    return "valid" if int.from_bytes(digest, "big") < valid_fraction * 2**64 else "train"


def mmseqs_available() -> bool:
    return shutil.which("mmseqs") is not None


def cluster_with_mmseqs(
    fasta_paths: list[str],
    workdir: str,
    min_seq_id: float = 0.5,
    coverage: float = 0.8,
    threads: int = 2,
) -> Path:
    """Cluster the sequences of all files together with `mmseqs easy-cluster`; return its *_cluster.tsv
    (representative \\t member per line, ids = first word of the FASTA header, as read_fasta gives them).

    The input is written to `workdir` as one plain FASTA (streamed; gzip inputs are decompressed and a trailing '*'
    is removed so mmseqs sees the residues the stream trains on). Ids must be unique across the files.
    """
    if not mmseqs_available():
        raise RuntimeError(
            "mmseqs not found on PATH: install MMseqs2 (Debian/Ubuntu: `apt-get install mmseqs2`, "
            "conda: `conda install -c bioconda mmseqs2`) to cluster sequences"
        )
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    combined = work / "input.fasta"
    with open(combined, "w") as out:
        for path in fasta_paths:
            for record in read_fasta(path):
                sequence = record.sequence.upper().removesuffix("*")
                if sequence:
                    out.write(f">{record.id}\n{sequence}\n")
    prefix = work / "clusters"
    command = [
        "mmseqs",
        "easy-cluster",
        str(combined),
        str(prefix),
        str(work / "tmp"),
        "--min-seq-id",
        str(min_seq_id),
        "-c",
        str(coverage),
        "--threads",
        str(threads),
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    tsv = Path(f"{prefix}_cluster.tsv")
    if completed.returncode != 0 or not tsv.exists():
        tail = (completed.stderr or completed.stdout)[-2000:]
        raise RuntimeError(f"mmseqs easy-cluster failed (exit {completed.returncode}): {' '.join(command)}\n{tail}")
    return tsv


def load_clusters(tsv_path: str | os.PathLike) -> dict[str, str]:
    """member id -> representative id, from an mmseqs *_cluster.tsv (representative \\t member)."""
    clusters: dict[str, str] = {}
    with open(tsv_path) as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{tsv_path}:{line_number}: expected 'representative<TAB>member', got {line!r}")
            representative, member = parts
            clusters[member] = representative
    return clusters


def _shuffle_buffered(items: Iterator[str], buffer_size: int, rng: np.random.Generator) -> Iterator[str]:
    """Approximate shuffle in constant memory: fill a buffer, emit a random slot, refill it with the next item."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[str] = []
    slots: Iterator[int] = iter(())
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = next(slots, None)
        if slot is None:
            slots = iter(rng.integers(0, buffer_size, size=_RANDOM_BLOCK).tolist())
            slot = next(slots)
        yield buffer[slot]
        buffer[slot] = item
    for slot in rng.permutation(len(buffer)).tolist():
        yield buffer[slot]


class ProteinStream:
    """Deterministic, resumable, rank-sharded stream of cleaned protein sequences (str) from weighted sources.

    split "train": infinite unless max_sequences is given. Each draw picks a source with probability proportional to
    its weight; each source is read in epochs, shuffled per epoch with a shuffle buffer seeded by (seed, source index,
    epoch), and starts its next epoch when it runs out. split "valid": finite, sources in order, records in file
    order. Either way only records with split_of(key, valid_fraction, split_seed) == split are used, key = the
    cluster representative of the record id when `clusters` has it, else the cleaned sequence; the split depends on
    `split_seed` only, so runs with different `seed`s share one validation set.

    Every rank computes the same global sequence of draws; rank r yields the draws with index % world_size == r.
    max_sequences caps the global draws (all ranks together), so the ranks' outputs always partition the
    world_size=1 stream. Sequences longer than crop_length are replaced by a window whose start comes from an RNG
    seeded by (seed, global draw index).

    Resume: state_dict() records how many sequences this rank has yielded; after load_state_dict(state), __iter__
    replays the stream from the start (re-reading files, nothing yielded) and continues with the next sequence.
    Each __iter__ starts at that resume point (the start, unless a state was loaded), so one stream object serves one
    iteration at a time. `stats` describe the current iteration, replay included: they are reset when __iter__ starts
    and so equal those of an uninterrupted stream at the same position (not counted twice). Every rank reads every
    record, so read/kept/... count the whole mixture's reading, while cropped counts this rank's sequences only.
    """

    def __init__(
        self,
        sources: list[DataSource],
        *,
        split: str = "train",
        valid_fraction: float = 0.01,
        seed: int = 0,
        crop_length: int | None = None,
        shuffle_buffer: int = 10_000,
        rank: int = 0,
        world_size: int = 1,
        policy: RecordPolicy | None = None,
        clusters: dict[str, str] | None = None,
        exclude_ids: set[str] | None = None,
        max_sequences: int | None = None,
        split_seed: int = 0,
    ) -> None:
        if not sources:
            raise ValueError("ProteinStream needs at least one DataSource")
        if split not in ("train", "valid"):
            raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
        if not 0.0 <= valid_fraction <= 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1], got {valid_fraction}")
        if seed < 0 or split_seed < 0:
            raise ValueError(f"seeds must be non-negative integers (numpy seeding), got {seed}, {split_seed}")
        if crop_length is not None and crop_length < 1:
            raise ValueError(f"crop_length must be a positive integer or None, got {crop_length}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if max_sequences is not None and max_sequences < 0:
            raise ValueError(f"max_sequences must be >= 0 or None, got {max_sequences}")
        for source in sources:
            if not Path(source.path).is_file():
                raise FileNotFoundError(f"data source not found: {source.path}")
        self.sources = list(sources)
        self.split = split
        self.valid_fraction = valid_fraction
        self.seed = seed
        self.split_seed = split_seed
        self.crop_length = crop_length
        self.shuffle_buffer = shuffle_buffer
        self.rank = rank
        self.world_size = world_size
        self.policy = policy if policy is not None else RecordPolicy()
        self.clusters = clusters
        self.exclude_ids = exclude_ids
        self.max_sequences = max_sequences
        self._resume_from = 0  # sequences of this rank to skip at the start of the next __iter__
        self._consumed = 0
        self._stats = RecordStats()

    @property
    def stats(self) -> RecordStats:
        return self._stats

    def state_dict(self) -> dict:
        """JSON-serialisable position: "consumed" (sequences this rank yielded) plus the settings that define the
        stream, which load_state_dict checks so a checkpoint is never resumed into a different stream."""
        return {
            "version": _STATE_VERSION,
            "consumed": self._consumed,
            "next_draw": self._consumed * self.world_size + self.rank,
            "rank": self.rank,
            "world_size": self.world_size,
            "stream": self._fingerprint(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Make the next __iter__ continue exactly after the last sequence yielded when `state` was taken."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported ProteinStream state version {state.get('version')!r}")
        if (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            raise ValueError(
                f"state is for rank {state['rank']} of {state['world_size']}, "
                f"this stream is rank {self.rank} of {self.world_size}"
            )
        mismatched = {key for key, value in self._fingerprint().items() if state["stream"].get(key) != value}
        if mismatched:
            raise ValueError(f"state was taken from a different stream (differs in: {', '.join(sorted(mismatched))})")
        self._resume_from = int(state["consumed"])
        self._consumed = self._resume_from

    def _fingerprint(self) -> dict:
        # Plain JSON types only, so the trainer can store the state in a JSON checkpoint and compare it after reload.
        return {
            # Names, not paths: a checkpoint may be resumed on a machine where the data lives elsewhere.
            "sources": [[source.name, float(source.weight)] for source in self.sources],
            "split": self.split,
            "valid_fraction": self.valid_fraction,
            "seed": self.seed,
            "split_seed": self.split_seed,
            "crop_length": self.crop_length,
            "shuffle_buffer": self.shuffle_buffer,
            "policy": asdict(self.policy),
            "max_sequences": self.max_sequences,
            "clusters": len(self.clusters) if self.clusters is not None else None,
            "exclude_ids": len(self.exclude_ids) if self.exclude_ids is not None else None,
        }

    def __iter__(self) -> Iterator[str]:
        self._stats = RecordStats()
        self._consumed = self._resume_from
        draws = self._train_draws() if self.split == "train" else self._valid_draws()
        owned = 0  # draws of this rank seen so far, replayed ones included
        for index, sequence in enumerate(draws):
            if self.max_sequences is not None and index >= self.max_sequences:
                return
            if index % self.world_size != self.rank:
                continue
            owned += 1
            if owned <= self._resume_from:
                # Replay: count the crop it had (so stats match an uninterrupted stream) but skip computing it.
                if self.crop_length is not None and len(sequence) > self.crop_length:
                    self._stats.cropped += 1
                continue
            self._consumed += 1
            yield self._crop(sequence, index)

    def _crop(self, sequence: str, index: int) -> str:
        if self.crop_length is None or len(sequence) <= self.crop_length:
            return sequence
        self._stats.cropped += 1
        rng = np.random.default_rng([_CROP_STREAM, self.seed, index])
        start = int(rng.integers(0, len(sequence) - self.crop_length + 1))
        return sequence[start : start + self.crop_length]

    def _split_records(self, source: DataSource) -> Iterator[str]:
        """One pass over a source: cleaned sequences of this stream's split, in file order."""
        for record in clean_records(source.path, self.policy, self._stats, self.exclude_ids):
            key = record.sequence
            if self.clusters is not None:
                key = self.clusters.get(record.id, key)
            if split_of(key, self.valid_fraction, self.split_seed) == self.split:
                yield record.sequence

    def _valid_draws(self) -> Iterator[str]:
        for source in self.sources:
            yield from self._split_records(source)

    def _source_epochs(self, source_index: int) -> Iterator[str]:
        """A source's sequences forever: epoch after epoch, each shuffled with its own seed."""
        source = self.sources[source_index]
        epoch = 0
        while True:
            rng = np.random.default_rng([_SHUFFLE_STREAM, self.seed, source_index, epoch])
            count = 0
            for sequence in _shuffle_buffered(self._split_records(source), self.shuffle_buffer, rng):
                count += 1
                yield sequence
            if count == 0:
                # Otherwise an infinite stream would spin forever re-reading a file that gives nothing.
                raise ValueError(
                    f"no usable sequences in {source.path} for split {self.split!r} "
                    f"(valid_fraction={self.valid_fraction}; counts so far: {self._stats.as_dict()})"
                )
            epoch += 1

    def _train_draws(self) -> Iterator[str]:
        streams = [self._source_epochs(index) for index in range(len(self.sources))]
        weights = np.array([source.weight for source in self.sources], dtype=np.float64)
        probabilities = weights / weights.sum()
        rng = np.random.default_rng([_MIX_STREAM, self.seed])
        while True:
            # Blocks of choices: the draw sequence is the same whatever the block size as long as it never changes.
            for choice in rng.choice(len(streams), size=_RANDOM_BLOCK, p=probabilities).tolist():
                yield next(streams[choice])
