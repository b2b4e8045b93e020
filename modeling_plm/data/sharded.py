"""The scalable pretraining data path: each rank and each DataLoader worker reads only its own shards, and parses,
cleans, splits, shuffles, crops, packs and collates in the worker; resume loads a stored state (no replay).

Reading is `datasets`' (`data.corpora`): streaming parquet/Arrow/hub/fsspec shards, `split_dataset_by_node` for the
ranks, its own per-worker split of the shards inside torch DataLoader workers, and its `state_dict()` for the
position inside the shards. What it does not do exactly is kept here: its shuffle buffer is not part of its state
(it is refilled on resume, so examples are lost), so a worker shuffles by windows instead, and the window is re-read
on resume (bounded by `shuffle_buffer` records, whatever the position).

One worker's stream, per source: each epoch the source's files (shards) are put in a new order (seeded by seed,
source, epoch), split over the ranks and the workers; cleaned records of the split are gathered in windows of
`shuffle_buffer` and each window is permuted (seeded by seed, source, rank, worker, epoch, window). Draws pick a
source by weight (seeded by seed, rank, worker, draw index) and crop long sequences (same seeds). Batches follow the
collators' packing rule and are collated with a seed from (phase seed, rank, worker, batch index).

`ShardedBatcher` runs the workers (a torch DataLoader, or in process when num_workers is 0) and returns their
batches in the DataLoader's round-robin order; every batch carries its worker's state after it, so the batcher's
state_dict() is the latest state of each worker and which worker is next. Resume starts each worker from its state
and re-orders the first round so that the worker that was next comes first.
"""

import copy
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .collators import GLMCollator, NextFitRows
from .corpora import import_datasets, num_shards, open_source, row_record, source_files
from .records import RecordPolicy, RecordStats, clean_record_stream
from .sources import DataSource, split_of

logger = logging.getLogger("modeling_plm.data")

_MIX_STREAM, _SHUFFLE_STREAM, _CROP_STREAM, _SHARD_ORDER_STREAM = 10, 11, 12, 13
_RANDOM_BLOCK = 4096
_STATE_VERSION = 1


def batch_seed(phase_seed: int, rank: int, worker: int, index: int) -> int:
    """The collator seed of a worker's index-th batch: a stable 63-bit number (no Python hash randomisation)."""
    digest = hashlib.sha256(f"{phase_seed}/train/{rank}/worker/{worker}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_length(collator, sequence: str) -> int:
    """Tokens a sequence takes in a packed row: <bos> residues <eos>, or GLM's bound over its layouts."""
    if isinstance(collator, GLMCollator):
        return collator.max_sample_length(len(sequence))
    return len(sequence) + 2


@dataclass
class ShardedStreamConfig:
    """What defines one rank's training stream (the same in every worker); picklable, for the DataLoader."""

    sources: list[DataSource]
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    split_seed: int = 0
    valid_fraction: float = 0.01
    crop_length: int | None = None
    shuffle_buffer: int = 10_000
    policy: RecordPolicy = field(default_factory=RecordPolicy)
    clusters: dict[str, str] | None = None
    exclude_ids: set[str] | None = None
    sequence_column: str = "sequence"
    id_column: str | None = "id"

    def fingerprint(self) -> dict[str, Any]:
        """Plain-JSON settings a state must match (names, not paths: the data may live elsewhere on resume)."""
        return {
            "sources": [[source.name, float(source.weight)] for source in self.sources],
            "valid_fraction": self.valid_fraction,
            "seed": self.seed,
            "split_seed": self.split_seed,
            "crop_length": self.crop_length,
            "shuffle_buffer": self.shuffle_buffer,
            "policy": asdict(self.policy),
            "clusters": len(self.clusters) if self.clusters is not None else None,
            "exclude_ids": len(self.exclude_ids) if self.exclude_ids is not None else None,
        }


def _block_value(key: list[int], index: int, draw: Callable[[np.random.Generator], np.ndarray], cache: dict) -> Any:
    """Value `index` of an endless random sequence made in blocks, each from its own seed (key + block number): any
    position is reached in O(1), so a resumed stream needs no replay of its random numbers."""
    block = index // _RANDOM_BLOCK
    if cache.get("block") != (tuple(key), block):
        cache["block"], cache["values"] = (tuple(key), block), draw(np.random.default_rng([*key, block])).tolist()
    return cache["values"][index % _RANDOM_BLOCK]


class SourceReader:
    """One source's cleaned sequences of the train split, for one rank and one worker, epoch after epoch."""

    def __init__(self, config: ShardedStreamConfig, index: int, worker: int, num_workers: int):
        self.config, self.index, self.worker, self.num_workers = config, index, worker, num_workers
        self.source = config.sources[index]
        self.kind, self.files = source_files(self.source.path)
        self.stats = RecordStats()
        self.epoch, self.window_index, self.offset = 0, 0, 0
        self._window: list[str] = []
        self._window_start: dict | None = None  # the datasets state before the window's first record
        self._stats_at_window_start = self.stats.as_dict()
        self._dataset = None
        self._rows: Iterator | None = None

    # ---- state ----
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "window": self.window_index,
            "offset": self.offset,
            "window_start": self._window_start,
            "stats_at_window_start": self._stats_at_window_start,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.window_index = int(state["epoch"]), int(state["window"])
        self.stats = RecordStats(**state["stats_at_window_start"])
        self._open_epoch(state["window_start"])
        self._fill_window()
        self.offset = int(state["offset"])

    # ---- reading ----
    def _epoch_files(self) -> list[str]:
        """This epoch's shard order (a new permutation each epoch, the same on every rank and worker)."""
        if self.kind == "hub" or len(self.files) == 1:
            return list(self.files)
        rng = np.random.default_rng([_SHARD_ORDER_STREAM, self.config.seed, self.index, self.epoch])
        return [self.files[i] for i in rng.permutation(len(self.files)).tolist()]

    def _open_epoch(self, start_state: dict | None = None) -> None:
        import_datasets()
        from datasets.distributed import split_dataset_by_node

        config = self.config
        dataset = open_source(self.kind, self._epoch_files(), config.sequence_column, config.id_column)
        if config.world_size > 1:
            if self.epoch == 0 and self.window_index == 0 and num_shards(dataset) % config.world_size:
                logger.warning(
                    "%s: %d shards do not divide among %d ranks: every rank reads every shard and keeps every "
                    "%d-th record (write a multiple of the rank count with plm shard)",
                    self.source.path,
                    num_shards(dataset),
                    config.world_size,
                    config.world_size,
                )
            dataset = split_dataset_by_node(dataset, rank=config.rank, world_size=config.world_size)
        shards = num_shards(dataset)
        if self.epoch == 0 and self.window_index == 0 and shards < self.num_workers:
            raise ValueError(
                f"data source {self.source.path}: {shards} shard(s) per rank for {self.num_workers} DataLoader "
                "workers; every worker needs its own shard: lower --num-workers or write more shards "
                "(plm shard IN.fasta OUT_DIR --shard-size N)"
            )
        if start_state is not None:
            dataset.load_state_dict(start_state)
        self._dataset, self._rows = dataset, iter(dataset)
        self._window_start = start_state

    def _records(self) -> Iterator:
        where = self.source.path
        for row in self._rows:
            yield row_record(row, where)

    def _fill_window(self) -> None:
        """Read the next `shuffle_buffer` usable records and permute them; empty at the end of the epoch."""
        config = self.config
        self._stats_at_window_start = self.stats.as_dict()
        window: list[str] = []
        records = clean_record_stream(self._records(), self.source.path, config.policy, self.stats, config.exclude_ids)
        for record in records:
            key = record.sequence
            if config.clusters is not None:
                key = config.clusters.get(record.id, key)
            if split_of(key, config.valid_fraction, config.split_seed) == "train":
                window.append(record.sequence)
                if len(window) >= config.shuffle_buffer:
                    break
        seed = [_SHUFFLE_STREAM, config.seed, self.index, config.rank, self.worker, self.epoch, self.window_index]
        order = np.random.default_rng(seed).permutation(len(window)).tolist()
        self._window, self.offset = [window[i] for i in order], 0

    def next(self) -> str:
        if self._rows is None:
            self._open_epoch()
            self._fill_window()
        while self.offset >= len(self._window):
            ended = len(self._window) < self.config.shuffle_buffer
            if ended:
                if self.window_index == 0 and not self._window:
                    raise ValueError(
                        f"no usable sequences in {self.source.path} for split 'train' on rank {self.config.rank} "
                        f"worker {self.worker} (valid_fraction={self.config.valid_fraction}; counts: "
                        f"{self.stats.as_dict()})"
                    )
                self.epoch, self.window_index = self.epoch + 1, 0
                self._open_epoch()
            else:
                self.window_index += 1
                self._window_start = self._dataset.state_dict()
            self._fill_window()
        sequence = self._window[self.offset]
        self.offset += 1
        return sequence


class WorkerStream:
    """One worker's draws: a source by weight, then a crop of long sequences; exact state, O(1) to restore."""

    def __init__(self, config: ShardedStreamConfig, worker: int, num_workers: int):
        self.config, self.worker = config, worker
        self.readers = [SourceReader(config, index, worker, num_workers) for index in range(len(config.sources))]
        weights = np.array([source.weight for source in config.sources], dtype=np.float64)
        self.probabilities = weights / weights.sum()
        self.draw, self.cropped = 0, 0
        self._cache: dict = {}

    def state_dict(self) -> dict[str, Any]:
        return {"draw": self.draw, "cropped": self.cropped, "readers": [r.state_dict() for r in self.readers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.draw, self.cropped = int(state["draw"]), int(state["cropped"])
        for reader, reader_state in zip(self.readers, state["readers"], strict=True):
            reader.load_state_dict(reader_state)

    @property
    def stats(self) -> RecordStats:
        total = RecordStats(cropped=self.cropped)
        for reader in self.readers:
            total.merge(reader.stats)
        return total

    def _choices(self, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.readers), _RANDOM_BLOCK, p=self.probabilities)

    def next(self) -> str:
        config, draw = self.config, self.draw
        key = [_MIX_STREAM, config.seed, config.rank, self.worker]
        choice = _block_value(key, draw, self._choices, self._cache)
        sequence = self.readers[choice].next()
        self.draw += 1
        if config.crop_length is None or len(sequence) <= config.crop_length:
            return sequence
        self.cropped += 1
        rng = np.random.default_rng([_CROP_STREAM, config.seed, config.rank, self.worker, draw])
        start = int(rng.integers(0, len(sequence) - config.crop_length + 1))
        return sequence[start : start + config.crop_length]


@dataclass
class BatchRules:
    """How a worker fills a micro-batch: `batch_size` sequences, or (packed) as many as fill `batch_size` rows of
    `pack_length` tokens by the collators' next-fit rule."""

    batch_size: int
    pack_length: int | None = None


class WorkerBatches(torch.utils.data.IterableDataset):
    """Collated micro-batches of one rank, made in each DataLoader worker from that worker's shards. Each item is
    {"worker", "index", "batch", "state", "stats"}: `state` restores the worker to just after this batch."""

    def __init__(
        self,
        config: ShardedStreamConfig,
        rules: BatchRules,
        collator,
        phase_seed: int,
        start_states: list[dict | None],
    ):
        super().__init__()
        self.config, self.rules, self.collator, self.phase_seed = config, rules, collator, phase_seed
        self.start_states = start_states

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream = WorkerStream(self.config, worker, num_workers)
        state = self.start_states[worker]
        index, lookahead = 0, None
        if state is not None:
            stream.load_state_dict(state["stream"])
            index, lookahead = int(state["index"]), state["lookahead"]
        while True:
            sequences, lookahead = self._next_sequences(stream, lookahead)
            batch = self.collator(sequences, batch_seed(self.phase_seed, self.config.rank, worker, index))
            index += 1
            state = {"stream": stream.state_dict(), "index": index, "lookahead": lookahead}
            yield {"worker": worker, "index": index, "batch": batch, "state": state, "stats": stream.stats.as_dict()}

    def _next_sequences(self, stream: WorkerStream, lookahead: str | None) -> tuple[list[str], str | None]:
        """The next batch's sequences, and the one read that did not fit (the next batch's first)."""
        sequences = [lookahead] if lookahead is not None else []
        if self.rules.pack_length is None:
            while len(sequences) < self.rules.batch_size:
                sequences.append(stream.next())
            return sequences, None
        rows = NextFitRows(self.rules.pack_length)
        for sequence in sequences:
            rows.add(sample_length(self.collator, sequence))
        while True:
            sequence = stream.next()
            length = sample_length(self.collator, sequence)
            if rows.rows_with(length) > self.rules.batch_size:
                return sequences, sequence
            rows.add(length)
            sequences.append(sequence)


def _identity(item):
    return item


class ShardedBatcher:
    """Micro-batches from `num_workers` DataLoader workers (0: made in this process), in a fixed order that a
    resumed run repeats exactly; see the module docstring."""

    def __init__(
        self,
        config: ShardedStreamConfig,
        rules: BatchRules,
        collator,
        phase_seed: int,
        num_workers: int = 0,
        prefetch_factor: int = 2,
    ):
        import_datasets()
        for source in config.sources:
            source_files(source.path)  # a missing or unreadable source fails here, before any worker starts
        self.config, self.rules, self.collator, self.phase_seed = config, rules, collator, phase_seed
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self._slots = max(1, num_workers)
        self._states: list[dict | None] = [None] * self._slots
        self._stats: list[dict | None] = [None] * self._slots
        self._next_worker = 0
        self._iterator: Iterator | None = None
        self._pending: list[deque] = [deque() for _ in range(self._slots)]

    @property
    def stats(self) -> RecordStats:
        total = RecordStats()
        for counts in self._stats:
            if counts is not None:
                total.merge(RecordStats(**counts))
        return total

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "kind": "sharded",
            "rank": self.config.rank,
            "world_size": self.config.world_size,
            "num_workers": self.num_workers,
            "next_worker": self._next_worker,
            "workers": copy.deepcopy(self._states),
            "stats": copy.deepcopy(self._stats),
            "stream": self.config.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "sharded" or state.get("version") != _STATE_VERSION:
            raise ValueError("the checkpoint's data state is not from the sharded data path (--num-workers, parquet)")
        ours = (self.config.rank, self.config.world_size, self.num_workers)
        theirs = (state["rank"], state["world_size"], state["num_workers"])
        if ours != theirs:
            raise ValueError(
                f"the checkpoint's data state is for rank {theirs[0]} of {theirs[1]} with {theirs[2]} workers, "
                f"this run is rank {ours[0]} of {ours[1]} with {ours[2]}: resume with the same layout"
            )
        mismatched = sorted(k for k, v in self.config.fingerprint().items() if state["stream"].get(k) != v)
        if mismatched:
            raise ValueError(f"state was taken from a different stream (differs in: {', '.join(mismatched)})")
        self._states, self._stats = state["workers"], state["stats"]
        self._next_worker, self._iterator = int(state["next_worker"]), None
        self._pending = [deque() for _ in range(self._slots)]

    def _start(self) -> Iterator:
        dataset = WorkerBatches(self.config, self.rules, self.collator, self.phase_seed, list(self._states))
        if self.num_workers == 0:
            return iter(dataset)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_identity,
            prefetch_factor=self.prefetch_factor,
        )
        return iter(loader)

    def next_collated(self, micro_batch: int | None = None) -> dict[str, torch.Tensor]:
        """The next micro-batch (already collated in its worker). `micro_batch` is unused: seeds come from the
        worker and its batch index, so they survive a change of round-robin phase on resume."""
        if self._iterator is None:
            self._iterator = self._start()
        wanted = self._next_worker
        # The DataLoader always starts at worker 0; after a resume the next batch may be another worker's, so the
        # first round's other batches wait here (at most num_workers of them).
        while not self._pending[wanted]:
            item = next(self._iterator)
            self._pending[item["worker"]].append(item)
        item = self._pending[wanted].popleft()
        self._states[wanted], self._stats[wanted] = item["state"], item["stats"]
        self._next_worker = (wanted + 1) % self._slots
        return item["batch"]
