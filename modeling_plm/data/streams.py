"""`ProteinStream`: a deterministic, resumable, rank-sharded stream of cleaned sequences from weighted sources."""

from collections.abc import Iterator
from dataclasses import asdict

import numpy as np

from .corpora import iter_source_records, source_files
from .fasta import FastaRecord
from .records import RecordPolicy, RecordStats, clean_record_stream, clean_records
from .sources import DataSource, split_of

# Distinct first words of the numpy seeds, so that mixing, shuffling and cropping never share a random stream.
_MIX_STREAM, _SHUFFLE_STREAM, _CROP_STREAM = 0, 1, 2
_RANDOM_BLOCK = 4096  # random numbers drawn per numpy call: one call per item would dominate the run time
_STATE_VERSION = 1


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
        sequence_column: str = "sequence",
        id_column: str | None = "id",
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
        # (kind, files) of each source: FASTA files are read directly, parquet/Arrow/hub data through `datasets`.
        self._resolved = [source_files(source.path) for source in sources]
        self.sequence_column, self.id_column = sequence_column, id_column
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

    def _records(self, source: DataSource) -> Iterator[FastaRecord]:
        kind, files = self._resolved[self.sources.index(source)]
        if kind == "fasta" and len(files) == 1:
            return clean_records(files[0], self.policy, self._stats, self.exclude_ids)
        rows = iter_source_records(source.path, self.sequence_column, self.id_column)
        return clean_record_stream(rows, source.path, self.policy, self._stats, self.exclude_ids)

    def _split_records(self, source: DataSource) -> Iterator[str]:
        """One pass over a source: cleaned sequences of this stream's split, in file order."""
        for record in self._records(source):
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
