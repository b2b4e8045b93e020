"""Pretraining on `accelerate`: CPU, one GPU, DDP, FSDP2 and DeepSpeed, through the one training loop
(`training.loop`, shared with fine-tuning: optimizer steps with the models' own loss, gradient accumulation, SIGTERM,
the NaN stop, atomic checkpoints). What pretraining adds:

- the data: sharded, resumable protein streams (`data.streams`), batched by the collators' packing rule;
- exact resume: the data position of every rank and the step are saved with the accelerate state, collation is a
  pure function of (sequences, seed) and every seed derives from (run seed, rank, micro-batch index);
- `metrics.jsonl` (one record per log step) and TensorBoard, a progress bar with tokens/s and loss;
- FLOPs accounting, 6·N·D and exact with attention, feeding the scaling-law tools;
- the CLM→MLM transfer recipe as two phases, the second from the first's weights with a fresh optimizer and
  schedule.
"""

import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from .. import __version__
from ..configuration_plm import PLMConfig
from ..data import (
    DataSource,
    ProteinStream,
    RecordPolicy,
    RecordStats,
    load_clusters,
    read_id_list,
)
from ..data.collators import NextFitRows, build_collator
from ..data.corpora import source_files
from ..data.records import STOP_CODON_POLICIES
from ..data.sharded import BatchRules, ShardedBatcher, ShardedStreamConfig, sample_length
from ..hub.loading import check_model_folder, is_local_source
from ..modeling_plm import PLMForCausalLM, PLMForMaskedLM, PLMLanguageModelBase
from ..tokenization_plm import PLMTokenizerFast
from .config import RunConfig, check_ranges, expand_data_path
from .distributed import build_accelerator, engaged_engine, is_sharded
from .flops import flops_6nd, non_embedding_parameters, training_flops
from .loop import TrainingLoop, Window, drop_rewritten_rows, resume_point
from .presets import PRESETS, config_from_preset

logger = logging.getLogger("modeling_plm.training.trainer")

OBJECTIVES = ("mlm", "clm", "glm", "clm-mlm")
ATTENTION_OF_OBJECTIVE = {"mlm": "bidirectional", "clm": "causal", "glm": "glm"}


@dataclass
class PretrainConfig(RunConfig):
    """Every knob of a pretraining run: `RunConfig`'s and these. YAML files and `--flags` set them (flags win)."""

    # Model
    preset: str = "small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    # Objective
    objective: str = "mlm"
    transfer_fraction: float = 0.15
    mask_ratio: float = 0.15
    glm_mlm_probability: float = 0.3
    glm_span_probability: float = 0.4
    glm_gmask_probability: float = 0.3
    # Data
    train_file: list[str] = field(default_factory=list)
    valid_file: list[str] = field(default_factory=list)
    valid_sequences: int = 256
    crop_length: int = 510
    min_length: int = 1
    stop_codon: str = "strip"
    exclude_ids: str | None = None
    clusters: str | None = None
    shuffle_buffer: int = 10_000
    # Parquet/Arrow/hub sources: the sequence column and the (optional) id column. DataLoader workers that read,
    # clean, crop and collate (0: FASTA-only runs keep the in-process stream; anything else uses data.sharded).
    sequence_column: str = "sequence"
    id_column: str = "id"
    num_workers: int = 0
    # Batches
    pack_length: int | None = None
    # Optimisation (the paper's recipe, `RunConfig`'s defaults: AdamW β2 0.95, wd 0.1, clip 1.0, 2.5% warm-up,
    # cosine to 10%)
    max_steps: int = 1000
    learning_rate: float = 4e-4
    # Bookkeeping
    eval_batch_size: int = 16
    eval_objectives: list[str] = field(default_factory=list)
    report_to: str = "tensorboard"

    def validate(self) -> None:
        self.validate_shared()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not self.train_file:
            raise ValueError("no training data: pass --train-file PATH[:WEIGHT] (repeatable)")
        check_ranges(self, PRETRAIN_RANGES)
        if self.stop_codon not in STOP_CODON_POLICIES:
            raise ValueError(f"stop_codon must be one of {STOP_CODON_POLICIES}, got {self.stop_codon!r}")
        if self.preset not in PRESETS and not self.init_from:
            raise ValueError(f"preset (--preset) must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.init_from and is_local_source(self.init_from):
            check_model_folder(self.init_from, need_tokenizer=False)
        unknown = sorted(set(self.model_overrides) - set(inspect.signature(PLMConfig.__init__).parameters))
        if unknown:
            raise ValueError(f"model_overrides (--model-overrides): {unknown} are not PLMConfig settings")
        for objective in self.eval_objectives:
            if objective not in ATTENTION_OF_OBJECTIVE:
                raise ValueError(f"eval objective must be mlm, clm or glm, got {objective!r}")
        if self.pack_length is not None and self.crop_length + 2 > self.pack_length:
            raise ValueError(f"crop_length + 2 ({self.crop_length + 2}) must fit in pack_length ({self.pack_length})")

    def resolve_paths(self) -> None:
        """Expand `${PLM_DATA_DIR}` (the environment variable, else the shared data folder beside the repo) and `~`."""
        self.train_file = [expand_data_path(spec) for spec in self.train_file]
        self.valid_file = [expand_data_path(spec) for spec in self.valid_file]
        for name in ("exclude_ids", "clusters", "init_from"):
            if getattr(self, name):
                setattr(self, name, expand_data_path(getattr(self, name)))


PRETRAIN_RANGES = {
    "max_steps": (1, None, True),
    "eval_steps": (1, None, True),
    "learning_rate": (0, None, False),
    "transfer_fraction": (0, 1, False),
    "mask_ratio": (0, 1, False),
    "glm_mlm_probability": (0, 1, True),
    "glm_span_probability": (0, 1, True),
    "glm_gmask_probability": (0, 1, True),
    "crop_length": (1, None, True),
    "min_length": (1, None, True),
    "valid_sequences": (1, None, True),
    "shuffle_buffer": (1, None, True),
    "num_workers": (0, None, True),
    "pack_length": (3, None, True),
    "eval_batch_size": (1, None, True),
}


def learning_rate_factor(step: int, total_steps: int, config: RunConfig) -> float:
    """Multiplier of the peak LR: linear warm-up, then cosine decay to `min_lr_ratio` (or WSD: stable, then a
    linear decay over the last `wsd_decay_ratio` of the steps)."""
    warmup = max(1, round(config.warmup_ratio * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    if config.lr_schedule == "constant":
        return 1.0
    floor = config.min_lr_ratio
    if config.lr_schedule == "wsd":
        decay_start = total_steps - max(1, round(config.wsd_decay_ratio * total_steps))
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1, total_steps - decay_start)
        return 1.0 - (1.0 - floor) * min(1.0, progress)
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def derived_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from the parts (independent of Python's hash randomisation)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def predicted_targets(labels: torch.Tensor, objective: str) -> torch.Tensor:
    """Tokens the loss scores: CLM predicts each label from the token before it (the models' `ForCausalLM` loss
    shifts), MLM and GLM the label at each position (GLM batches already hold each span token's next token)."""
    if objective == "clm":
        labels = labels[:, 1:]
    return (labels != -100).sum()


def batch_sequence_lengths(batch: dict[str, torch.Tensor], pad_token_id: int) -> tuple[list[int], list[int] | None]:
    """Real-token length of every sequence in a padded or packed batch, and GLM context lengths when present. Packed
    batches carry their sequence boundaries (`cu_seq_lens_q`, from the collator); they are read, never recomputed."""
    real = batch["input_ids"] != pad_token_id
    if "attention_mask" in batch:
        real &= batch["attention_mask"].bool()
        sequence_ids = torch.arange(len(real))[:, None].expand_as(real)  # one sequence per row
    elif "cu_seq_lens_q" in batch:
        boundaries = batch["cu_seq_lens_q"][1:].to(real.device)
        sequence_ids = torch.bucketize(torch.arange(real.numel()), boundaries, right=True).view_as(real)
    else:
        raise ValueError("a batch needs an attention_mask (padded) or cu_seq_lens_q (packed, as the collators emit)")
    ids = sequence_ids[real]
    lengths = torch.bincount(ids)
    contexts = None
    if "block_position_ids" in batch:
        is_context = (batch["block_position_ids"] == 0)[real]
        contexts = torch.bincount(ids, weights=is_context.double(), minlength=len(lengths)).long()
        contexts = contexts[lengths > 0].tolist()
    return lengths[lengths > 0].tolist(), contexts


class Batcher:
    """Turns a ProteinStream into micro-batches. Padded: `batch_size` sequences. Packed: as many sequences as fill
    `batch_size` rows of `pack_length` tokens (next-fit, the collators' rule). It never consumes a sequence it does
    not place, so `placed` is an exact resume position."""

    def __init__(self, stream: ProteinStream, config: PretrainConfig, sample_length: Callable[[str], int]):
        self.stream, self.config, self.sample_length = stream, config, sample_length
        self.placed = 0
        self._iterator = None
        self._lookahead: list[str] = []

    def state_dict(self) -> dict[str, Any]:
        # The stream may have read one sequence ahead (the one that did not fit): resume at what was placed.
        return {"placed": self.placed, "stream": {**self.stream.state_dict(), "consumed": self.placed}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])
        self.placed, self._iterator, self._lookahead = state["placed"], None, []

    def _next_sequence(self) -> str | None:
        if self._lookahead:
            return self._lookahead.pop()
        if self._iterator is None:
            self._iterator = iter(self.stream)
        return next(self._iterator, None)

    def next_batch(self) -> list[str]:
        sequences: list[str] = []
        if self.config.pack_length is None:
            while len(sequences) < self.config.batch_size and (sequence := self._next_sequence()) is not None:
                sequences.append(sequence)
        else:
            rows = NextFitRows(self.config.pack_length)  # the collator's packing rule, asked before it packs
            while (sequence := self._next_sequence()) is not None:
                length = self.sample_length(sequence)
                if rows.rows_with(length) > self.config.batch_size:
                    self._lookahead.append(sequence)
                    break
                rows.add(length)
                sequences.append(sequence)
        self.placed += len(sequences)
        return sequences


def model_class_of(objective: str) -> type[PLMLanguageModelBase]:
    return PLMForCausalLM if objective == "clm" else PLMForMaskedLM


def build_model(config: PretrainConfig, objective: str, init_from: str | None) -> PLMLanguageModelBase:
    model_class = model_class_of(objective)
    if init_from:
        model = model_class.from_pretrained(init_from, attn_implementation=config.attn_implementation)
    else:
        model = model_class(config_from_preset(config.preset, **config.model_overrides))
        model.set_attn_implementation(config.attn_implementation)
    # Embeddings read the model as it learned: causally after causal-only training (CLM -> MLM transfer ends both).
    model.config.embedding_attention = "causal" if objective == "clm" else "bidirectional"
    return model


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and embeddings (standard for transformers)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_matrix = parameter.ndim >= 2 and "embeddings" not in name
        (decay if is_matrix else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _sources(specs: list[str]) -> list[DataSource]:
    return [DataSource.parse(spec) for spec in specs]


class PhaseRunner:
    """Trains one objective for a number of steps into `output_dir` (one phase of a run)."""

    def __init__(
        self,
        config: PretrainConfig,
        objective: str,
        max_steps: int,
        output_dir: Path,
        init_from: str | None,
        phase_seed: int,
    ):
        self.config, self.objective, self.max_steps = config, objective, max_steps
        self.output_dir = output_dir
        self.checkpoint_dir = output_dir / "checkpoints"
        self.phase_seed = phase_seed
        # The launcher's engine (DDP, FSDP2, DeepSpeed) and precision, or an error when it cannot engage.
        self.accelerator = build_accelerator(
            config.mixed_precision,
            micro_batch_size=config.batch_size,
            log_with=config.report_to if config.report_to != "none" else None,
            project_dir=str(output_dir),
            # The loop steps the schedule once per optimizer step (accelerate would step it once per process).
            step_scheduler_with_optimizer=False,
        )
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.tokenizer = PLMTokenizerFast()
        set_seed(phase_seed % 2**32)  # the initial weights (and dropout) depend on the run's seed only
        model = build_model(config, objective, init_from)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.model_config: PLMConfig = model.config
        self.non_embedding_parameters = non_embedding_parameters(self.model_config)
        self.tokenizer.model_max_length = self.model_config.max_position_embeddings
        optimizer = torch.optim.AdamW(
            _parameter_groups(model, config.weight_decay),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
            fused=True,  # one kernel for the whole update (3.5x faster than the per-tensor loop on CPU)
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: learning_rate_factor(step, max_steps, config)
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.loop = TrainingLoop(
            self.accelerator,
            self.model,
            self.optimizer,
            self.scheduler,
            max_steps=max_steps,
            max_grad_norm=config.max_grad_norm,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            loss_normalization="targets",  # the models' own loss over the window's targets (num_items_in_batch)
            forward_kwargs={"attention_type": ATTENTION_OF_OBJECTIVE[objective]},
            description=f"{objective} pretraining",
        )
        self.collator = self._collator(objective)
        if config.pack_length is not None and self._sample_length("A" * config.crop_length) > config.pack_length:
            raise ValueError(
                f"a {objective} sample of crop_length={config.crop_length} residues can take "
                f"{self._sample_length('A' * config.crop_length)} tokens, more than pack_length={config.pack_length}: "
                "lower --crop-length or raise --pack-length"
            )
        self.batcher: Batcher | ShardedBatcher = self._train_batcher(phase_seed)
        # What the training record's counts come from (a ProteinStream, or the sharded batcher's workers).
        self.train_stream = self.batcher.stream if isinstance(self.batcher, Batcher) else self.batcher
        self.micro_batch = 0
        self.tokens = 0
        self.flops_exact = 0.0
        self._valid_sequences: list[str] | None = None
        self.initial_eval: dict[str, dict[str, float]] | None = None  # kept in checkpoints for the training record

    @property
    def step(self) -> int:
        return self.loop.step

    # ---- data -------------------------------------------------------------------------------------------------
    @functools.cached_property
    def _clusters(self) -> dict[str, str] | None:
        # Read once per phase: the training and the validation streams share them (a cluster file can be large).
        return load_clusters(self.config.clusters) if self.config.clusters else None

    @functools.cached_property
    def _exclude_ids(self) -> set[str] | None:
        return read_id_list(self.config.exclude_ids) if self.config.exclude_ids else None

    def _policy(self) -> RecordPolicy:
        return RecordPolicy(
            invalid=self.config.invalid_residues, stop_codon=self.config.stop_codon, min_length=self.config.min_length
        )

    def _uses_sharded_path(self) -> bool:
        """Workers, or any source that is not a FASTA file: the sharded `datasets` path. FASTA files without workers
        keep the in-process `ProteinStream` (the same batches as before)."""
        if self.config.num_workers > 0:
            return True
        return any(source_files(source.path)[0] != "fasta" for source in _sources(self.config.train_file))

    def _train_batcher(self, phase_seed: int) -> "Batcher | ShardedBatcher":
        if not self._uses_sharded_path():
            return Batcher(self._stream("train", phase_seed), self.config, self._sample_length)
        config = self.config
        stream = ShardedStreamConfig(
            sources=_sources(config.train_file),
            rank=self.rank,
            world_size=self.world_size,
            seed=phase_seed,
            valid_fraction=config.valid_fraction,
            crop_length=config.crop_length,
            shuffle_buffer=config.shuffle_buffer,
            policy=self._policy(),
            clusters=self._clusters,
            exclude_ids=self._exclude_ids,
            sequence_column=config.sequence_column,
            id_column=config.id_column,
        )
        rules = BatchRules(config.batch_size, config.pack_length)
        return ShardedBatcher(stream, rules, self.collator, phase_seed, num_workers=config.num_workers)

    def _next_micro_batch(self) -> dict[str, torch.Tensor] | None:
        """The next collated micro-batch: from the sharded batcher's workers, or collated here from the stream's
        sequences with the (run seed, rank, micro-batch index) seed."""
        if isinstance(self.batcher, ShardedBatcher):
            return self.batcher.next_collated()
        sequences = self.batcher.next_batch()
        if not sequences:
            return None
        return self.collator(sequences, derived_seed(self.phase_seed, "train", self.rank, self.micro_batch))

    def _stream(self, split: str, seed: int) -> ProteinStream:
        config = self.config
        separate_valid = split == "valid" and bool(config.valid_file)
        files = config.valid_file if separate_valid else config.train_file
        return ProteinStream(
            _sources(files),
            split=split,
            # Separate validation files are used whole; otherwise validation is a held-out split of the training
            # files (by sequence hash, or cluster, so no exact duplicate straddles the split).
            valid_fraction=1.0 if separate_valid else config.valid_fraction,
            seed=seed,
            crop_length=config.crop_length,
            shuffle_buffer=config.shuffle_buffer,
            rank=self.rank,
            world_size=self.world_size,
            policy=self._policy(),
            clusters=self._clusters,
            exclude_ids=self._exclude_ids,
            max_sequences=config.valid_sequences if split == "valid" else None,
            sequence_column=config.sequence_column,
            id_column=config.id_column,
        )

    def _collator(self, objective: str):
        options: dict[str, Any] = {}
        if objective == "mlm":
            options = {"mask_ratio": self.config.mask_ratio}
        elif objective == "glm":
            options = {
                "mlm_probability": self.config.glm_mlm_probability,
                "span_probability": self.config.glm_span_probability,
                "gmask_probability": self.config.glm_gmask_probability,
                "mask_ratio": self.config.mask_ratio,
            }
        return build_collator(objective, self.tokenizer, pack_length=self.config.pack_length, **options)

    def _sample_length(self, sequence: str) -> int:
        """Tokens a sequence takes in a packed row: <bos> residues <eos>, or GLM's bound over its layouts (a span
        adds <smask> and <sop>), so a batch never needs more rows than planned."""
        return sample_length(self.collator, sequence)

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        state = {
            "micro_batch": self.micro_batch,
            "tokens": self.tokens,
            "flops_exact": self.flops_exact,
            "initial_eval": self.initial_eval,
            "batcher": self.batcher.state_dict(),
        }
        return self.loop.save_checkpoint(
            self.checkpoint_dir, state, keep=self.config.save_total_limit, write_files=self._write_model_files
        )

    def _write_model_files(self, folder: Path) -> None:
        """The model's config and tokenizer, so that `plm export` makes a model of any checkpoint, sharded or not."""
        self.model_config.architectures = [model_class_of(self.objective).__name__]
        self.model_config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def load_checkpoint(self, folder: Path) -> None:
        state = self.loop.load_checkpoint(folder)
        self.micro_batch, self.tokens, self.flops_exact = state["micro_batch"], state["tokens"], state["flops_exact"]
        self.initial_eval = state.get("initial_eval")
        self.batcher.load_state_dict(state["batcher"])

    # ---- evaluation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, objectives: list[str]) -> dict[str, dict[str, float]]:
        """Validation loss and perplexity of each objective, on the same held-out sequences every time."""
        self.model.eval()
        results = {}
        if self._valid_sequences is None:
            self._valid_sequences = list(self._stream("valid", self.config.seed))
            if not self._valid_sequences:
                if not self.config.valid_file:  # an empty training file is the real problem: say so
                    next(iter(self._stream("train", self.config.seed)), None)
                raise ValueError("the validation split is empty: raise --valid-fraction or pass --valid-file")
        sequences = self._valid_sequences
        starts = list(range(0, len(sequences), self.config.eval_batch_size))
        # Sharded weights are gathered in every forward, so every rank runs as many as the rank with the most
        # batches: the extra ones repeat the first batch and are not counted.
        forwards = self._most_on_any_rank(len(starts)) if is_sharded(self.accelerator) else len(starts)
        for objective in objectives:
            collator = self._collator(objective)
            loss_sum = torch.zeros((), device=self.accelerator.device, dtype=torch.float64)
            count = torch.zeros((), device=self.accelerator.device, dtype=torch.float64)
            for index in range(forwards):
                start = starts[index] if index < len(starts) else 0
                chunk = sequences[start : start + self.config.eval_batch_size]
                # The masks do not depend on the run's seed: runs that differ in seed are scored on the same task.
                batch = self.loop.to_device(collator(chunk, derived_seed("eval", objective, start)))
                with self.accelerator.autocast():
                    # The models' own loss, summed (num_items_in_batch=1): the split's mean is taken below.
                    loss = self.model(**batch, attention_type=ATTENTION_OF_OBJECTIVE[objective], num_items_in_batch=1)
                if index < len(starts):
                    loss_sum += loss.loss.double()
                    count += predicted_targets(batch["labels"], objective)
            loss_sum, count = self.accelerator.reduce(loss_sum), self.accelerator.reduce(count)
            mean = (loss_sum / count.clamp(min=1)).item()
            results[objective] = {"loss": mean, "perplexity": math.exp(min(mean, 50.0))}
        self.model.train()
        return results

    def _most_on_any_rank(self, count: int) -> int:
        counts = self.accelerator.gather(torch.tensor([count], device=self.accelerator.device))
        return int(counts.max())

    # ---- training ---------------------------------------------------------------------------------------------
    def next_window(self) -> Window:
        """The micro-batches of the next optimizer step, with their real tokens and exact FLOPs (this rank's)."""
        attention = ATTENTION_OF_OBJECTIVE[self.objective]
        micro_batches, tokens, flops = [], 0, 0.0
        for _ in range(self.config.gradient_accumulation_steps):
            batch = self._next_micro_batch()
            if batch is None:
                raise RuntimeError("the training stream ran dry (a finite source?)")
            self.micro_batch += 1
            lengths, contexts = batch_sequence_lengths(batch, self.tokenizer.pad_token_id)
            tokens += sum(lengths)
            flops += training_flops(self.model_config, lengths, attention, contexts)
            micro_batches.append(batch)
        return Window(micro_batches, counts={"tokens": tokens, "flops": flops})

    def run(self, eval_objectives: list[str], metrics_file: Path, record: dict[str, Any]) -> dict[str, Any]:
        accelerator, config = self.accelerator, self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        resume_from = resume_point(
            self.config.resume, self.checkpoint_dir, Path(self.config.output_dir), self.rank, world_size=self.world_size
        )
        if resume_from is not None:
            self.load_checkpoint(resume_from)
            accelerator.print(f"Resumed {self.objective} from {resume_from} (step {self.step})")
        self._drop_metrics_to_be_rewritten(metrics_file)
        if config.report_to != "none":
            accelerator.init_trackers(self.output_dir.name, config=_flat_config(config))
        if self.step == 0:
            self.initial_eval = self.evaluate(eval_objectives)
            self._log_eval(self.initial_eval, metrics_file)
        if record.get("initial_eval") is None:  # the first phase's, also after a resume
            record["initial_eval"] = self.initial_eval
        self.last_good, self.last_eval = resume_from, None
        self._window_start, self._window_tokens = time.perf_counter(), 0
        try:
            self.loop.run(
                self.next_window,
                lambda step, loss, counts, window: self._after_step(step, loss, counts, eval_objectives, metrics_file),
                nan_hint=self._nan_hint,
                on_sigterm=self._save_on_sigterm,
            )
        finally:
            # Only the trackers end here: `end_training()` also destroys the process group, which the final save
            # still needs (accelerate >= 1.16); `pretrain()` calls it once everything is written.
            for tracker in accelerator.trackers:
                tracker.finish()
            accelerator.trackers = []
        return self.last_eval if self.last_eval is not None else self.evaluate(eval_objectives)

    def _after_step(
        self, step: int, loss: float, counts: dict[str, float], eval_objectives: list[str], metrics_file: Path
    ) -> bool:
        """Counts, logs, evaluates and saves on schedule after each optimizer step (never stops early)."""
        config = self.config
        self.tokens += int(counts["tokens"])
        self.flops_exact += counts["flops"]
        self._window_tokens += int(counts["tokens"])
        if step % config.log_steps == 0 or step == self.max_steps:
            elapsed = time.perf_counter() - self._window_start
            entry = {
                "step": step,
                "objective": self.objective,
                "tokens": self.tokens,
                "flops_6nd": flops_6nd(self.model_config, self.tokens),
                "flops": self.flops_exact,
                "loss": loss,
                "learning_rate": self.scheduler.get_last_lr()[0],
                "tokens_per_s": self._window_tokens / max(elapsed, 1e-9),
                "non_embedding_parameters": self.non_embedding_parameters,
            }
            self._write_metrics(entry, metrics_file)
            self.loop.progress.set_postfix(loss=f"{loss:.3f}", tok_s=f"{entry['tokens_per_s']:.0f}")
            self._window_start, self._window_tokens = time.perf_counter(), 0
        if step % config.eval_steps == 0 or step == self.max_steps:
            self.last_eval = self.evaluate(eval_objectives)
            self._log_eval(self.last_eval, metrics_file)
        save_every = config.save_steps or config.eval_steps  # 0: at every evaluation
        if not self.loop.stop_requested and (step % save_every == 0 or step == self.max_steps):
            self.last_good = self.save_checkpoint()  # (on SIGTERM, `_save_on_sigterm` saves this step)
        return False

    def _nan_hint(self) -> str:
        where = f"the last good checkpoint is {self.last_good}" if self.last_good else "no checkpoint was saved yet"
        return f"{where} ({self.objective}). Lower the learning rate or use bf16/fp32, then resume with --resume"

    def _save_on_sigterm(self) -> None:
        saved = self.save_checkpoint()
        self.accelerator.print(f"SIGTERM: saved {saved}; resume with --resume")

    def _drop_metrics_to_be_rewritten(self, metrics_file: Path) -> None:
        """Rows this phase logged after the checkpoint it resumes from (or all of them, when it starts afresh)."""
        if self.accelerator.is_main_process:
            drop_rewritten_rows(
                metrics_file,
                lambda row: row.get("objective") == self.objective and (row["step"] > self.step or self.step == 0),
            )

    def _write_metrics(self, entry: dict[str, Any], metrics_file: Path) -> None:
        if self.accelerator.is_main_process:
            with open(metrics_file, "a") as handle:
                handle.write(json.dumps(entry) + "\n")
        self.accelerator.log({k: v for k, v in entry.items() if isinstance(v, int | float)}, step=self.step)

    def _log_eval(self, results: dict[str, dict[str, float]], metrics_file: Path) -> None:
        entry: dict[str, Any] = {"step": self.step, "objective": self.objective, "tokens": self.tokens}
        for objective, values in results.items():
            entry[f"valid_loss_{objective}"] = values["loss"]
            entry[f"valid_perplexity_{objective}"] = values["perplexity"]
        self._write_metrics(entry, metrics_file)
        self.accelerator.print(
            f"step {self.step}: " + ", ".join(f"valid {k} loss {v['loss']:.4f}" for k, v in results.items())
        )


def _flat_config(config: PretrainConfig) -> dict[str, Any]:
    """TensorBoard's hparams accept scalars and strings only."""
    return {
        k: (v if isinstance(v, int | float | str | bool) else json.dumps(v))
        for k, v in dataclasses.asdict(config).items()
        if v is not None
    }


def phases_of(config: PretrainConfig) -> list[tuple[str, int]]:
    """(objective, steps) of each phase: one, or CLM then MLM for the transfer recipe."""
    if config.objective != "clm-mlm":
        return [(config.objective, config.max_steps)]
    clm_steps = max(1, round(config.transfer_fraction * config.max_steps))
    return [("clm", clm_steps), ("mlm", config.max_steps - clm_steps)]


def pretrain(config: PretrainConfig) -> Path:
    """Run a pretraining job; returns the folder of the final model (`<output_dir>/final`)."""
    config.resolve_paths()
    config.validate()
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = output_dir / "metrics.jsonl"
    phases = phases_of(config)
    started = time.time()
    record: dict[str, Any] = {"phases": []}
    init_from = config.init_from
    runner = None
    for index, (objective, steps) in enumerate(phases):
        phase_dir = output_dir if len(phases) == 1 else output_dir / f"phase{index + 1}-{objective}"
        done_marker = phase_dir / "phase_complete.json"
        if len(phases) > 1 and done_marker.exists():  # a finished phase of a resumed transfer run
            record["phases"].append(json.loads(done_marker.read_text()))
            init_from = str(phase_dir / "model")
            continue
        eval_objectives = config.eval_objectives or sorted({objective for objective, _ in phases})
        runner = PhaseRunner(
            config,
            objective=objective,
            max_steps=steps,
            output_dir=phase_dir,
            init_from=init_from,
            phase_seed=derived_seed(config.seed, index),
        )
        final_eval = runner.run(eval_objectives, metrics_file, record)
        phase_record = {
            "objective": objective,
            "steps": steps,
            "tokens": runner.tokens,
            "flops_6nd": flops_6nd(runner.model_config, runner.tokens),
            "flops": runner.flops_exact,
            "final_eval": final_eval,
            "fresh_optimizer_and_schedule": index > 0,
        }
        record["phases"].append(phase_record)
        if len(phases) > 1 and index < len(phases) - 1:
            _save_model(runner, phase_dir / "model")
            if runner.accelerator.is_main_process:
                done_marker.write_text(json.dumps(phase_record))
            runner.accelerator.wait_for_everyone()
            init_from = str(phase_dir / "model")
    final_dir = output_dir / "final"
    _save_model(runner, final_dir)
    if runner.accelerator.is_main_process:
        stats = RecordStats()
        stats.merge(runner.train_stream.stats)
        model_config = runner.model_config
        training_record = {
            "modeling_plm_version": __version__,
            "objective": config.objective,
            "phases": record["phases"],
            "steps": config.max_steps,
            "tokens": sum(p["tokens"] for p in record["phases"]),
            "flops_6nd": sum(p["flops_6nd"] for p in record["phases"]),
            "flops": sum(p["flops"] for p in record["phases"]),
            "non_embedding_parameters": non_embedding_parameters(model_config),
            "parameters": model_config.num_parameters(include_embeddings=True),
            "initial_eval": record.get("initial_eval"),
            "final_eval": record["phases"][-1]["final_eval"],
            "data": {
                "train": [dataclasses.asdict(s) for s in _sources(config.train_file)],
                "valid": [dataclasses.asdict(s) for s in _sources(config.valid_file)] or "held-out split of train",
                "valid_fraction": config.valid_fraction,
                "record_stats_last_phase": stats.as_dict(),
            },
            "world_size": runner.world_size,
            "device": str(runner.accelerator.device),
            "mixed_precision": runner.accelerator.mixed_precision,
            "distributed_engine": engaged_engine(runner.accelerator),
            "wall_time_s": time.time() - started,
            "config": dataclasses.asdict(config),
        }
        (final_dir / "training_record.json").write_text(json.dumps(training_record, indent=2) + "\n")
    runner.accelerator.wait_for_everyone()
    runner.accelerator.end_training()
    return final_dir


def _save_model(runner: PhaseRunner, folder: Path) -> None:
    """The full model (gathered from every rank's shard under FSDP/ZeRO-3) as one safetensors checkpoint."""
    accelerator = runner.accelerator
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(runner.model)
    state_dict = accelerator.get_state_dict(runner.model)
    if accelerator.is_main_process:
        model.save_pretrained(folder, state_dict=state_dict)
        # FSDP2 turns the model's class into a subclass named "FSDP<name>": config.json names the model's own class.
        runner.model_config.architectures = [model_class_of(runner.objective).__name__]
        runner.model_config.save_pretrained(folder)
        runner.tokenizer.save_pretrained(folder)
    accelerator.wait_for_everyone()
