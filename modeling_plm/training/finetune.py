"""Fine-tuning on accelerate: LoRA (PEFT) or full fine-tuning for sequence regression, sequence classification and
per-residue classification, from CSV or FASTA.

The pieces are plain functions, usable on their own:

- reading data: `load_data` (CSV columns or FASTA header `key=value` fields; per-residue labels from a label FASTA
  aligned by id, or a CSV column of one label per residue; an optional 0/1 mask). Bad input raises `ValueError` naming
  the file, the row (1-based CSV line or FASTA record, with its id) and the column, position and character;
- encoding: `encode_examples` gives `{"input_ids", "labels"}` rows that transformers' `DataCollatorWithPadding` /
  `DataCollatorForTokenClassification` and `Trainer` accept as they are (`collate` is this module's own padding);
- the model: `build_model` (the base checkpoint with a new head, wrapped by `peft.get_peft_model` for LoRA);
- metrics: `compute_metrics` (Spearman for regression, accuracy and macro-F1 for classification, per residue for
  per-residue tasks), `trainer_compute_metrics` for `Trainer`;
- the loop: `finetune(FinetuneConfig)` with early stopping on the validation metric and the best weights kept;
- loading: `load_finetuned(path)` returns the ready model from a LoRA adapter folder or a full checkpoint, and
  `predict` runs it.

While training, regression targets are standardised with the training mean and deviation, and the pooled features
entering a sequence head are centred and scaled (`standardized_head_inputs`: near-identical variants of one protein
pool to nearly the same vector). Both are folded into the saved head (`saved_head`), so a loaded model takes raw
inputs and predicts in the units of the labels.
"""

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from .. import __version__
from ..data.collators import token_budget_batches
from ..data.fasta import open_text, read_fasta
from ..data.residues import apply_residue_policy, invalid_character_pattern
from ..inference.context import context_residues
from ..modeling_plm import PLMClassificationHead, PLMForSequenceClassification, PLMForTokenClassification
from .config import RunConfig, expand_data_path
from .lora import default_lora_config
from .trainer import _parameter_groups, learning_rate_factor

logger = logging.getLogger("modeling_plm.training.finetune")

TASKS = ("sequence-regression", "sequence-classification", "token-classification")
METHODS = ("lora", "full")
MODEL_CLASSES = {
    "sequence-regression": PLMForSequenceClassification,
    "sequence-classification": PLMForSequenceClassification,
    "token-classification": PLMForTokenClassification,
}
# Metrics each task reports on validation and test; the first is the default for early stopping.
TASK_METRICS = {
    "sequence-regression": ("spearman", "pearson", "mse", "loss"),
    "sequence-classification": ("accuracy", "macro_f1", "loss"),
    "token-classification": ("accuracy", "macro_f1", "loss"),
}
LOWER_IS_BETTER = {"mse", "loss"}
RECORD_FILE = "finetune_record.json"
CSV_SUFFIXES = (".csv", ".tsv")
FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas")
TRUE_VALUES = {"true", "1", "yes", "y", "t"}
FALSE_VALUES = {"false", "0", "no", "n", "f", ""}
SPLITS = ("train", "valid", "test")


@dataclass
class FinetuneConfig(RunConfig):
    """Every knob of a fine-tuning run: `RunConfig`'s (with the defaults below) and these. YAML files and `--flags`
    set them (flags win)."""

    # RunConfig's fields whose fine-tuning default differs
    valid_fraction: float = 0.0
    invalid_residues: str = "error"
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    min_lr_ratio: float = 0.0
    adam_beta2: float = 0.999
    eval_steps: int = 0
    output_dir: str = "runs/finetune"

    # Model
    model: str = ""
    task: str = "sequence-regression"
    method: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: str = "attention"
    pooling: str | None = None
    # Data
    train_file: str = ""
    valid_file: str | None = None
    test_file: str | None = None
    sequence_column: str = "sequence"
    label_column: str = "target"
    split_column: str | None = None
    validation_column: str | None = None
    mask_column: str | None = None
    labels_fasta: str | None = None
    mask_fasta: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    max_train_samples: int | None = None
    max_valid_samples: int | None = None
    max_test_samples: int | None = None
    max_length: int | None = None
    # Optimisation (the schedule is the pretraining trainer's `learning_rate_factor`)
    epochs: int = 10
    group_by_length: bool = True
    learning_rate: float | None = None
    head_learning_rate: float | None = None
    normalize_targets: bool = True
    standardize_pooled: bool = True
    # Evaluation and early stopping
    eval_token_budget: int = 16384
    metric_for_best: str | None = None
    early_stopping_patience: int = 3
    # Bookkeeping
    overwrite: bool = False

    def validate(self) -> None:
        self.validate_shared()
        if not self.model:
            raise ValueError("no base model: pass --model PATH (a modeling_plm checkpoint folder)")
        if not self.train_file:
            raise ValueError("no training data: pass --train-file PATH (CSV/TSV or FASTA, optionally .gz)")
        for name, value, allowed in (
            ("task", self.task, TASKS),
            ("method", self.method, METHODS),
            ("lora_targets", self.lora_targets, ("attention", "all-linear")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.invalid_residues == "drop" and self.task == "token-classification":
            raise ValueError("invalid_residues='drop' would shift per-residue labels: use error, skip or X")
        if self.pooling is not None and self.task == "token-classification":
            raise ValueError("--pooling applies to sequence tasks only")
        per_residue = self.task == "token-classification"
        if (self.mask_fasta or self.mask_column) and not per_residue:
            raise ValueError("--mask-fasta / --mask-column apply to token-classification only")
        if self.labels_fasta and not per_residue:
            raise ValueError("--labels-fasta applies to token-classification only (sequence labels: --label-column)")
        if per_residue:
            for path in (self.train_file, self.valid_file, self.test_file):
                if path and file_format(path) == "fasta" and not self.labels_fasta:
                    raise ValueError(
                        f"{path}: token-classification from FASTA needs --labels-fasta (per-residue labels by id)"
                    )
        metrics = TASK_METRICS[self.task]
        if self.metric_for_best is not None and self.metric_for_best not in metrics:
            raise ValueError(f"metric_for_best for {self.task} must be one of {metrics}, got {self.metric_for_best!r}")
        if not 0 <= self.valid_fraction < 1:
            raise ValueError("valid_fraction must be in [0, 1)")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "eval_token_budget", "log_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.eval_steps < 0 or self.early_stopping_patience < 0:
            raise ValueError("eval_steps and early_stopping_patience must be >= 0")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError("max_length must be at least 1 residue")

    def resolve_paths(self) -> None:
        """Expand `${PLM_DATA_DIR}` and `~` in the file paths (as the pretraining configs do)."""
        for name in ("model", "train_file", "valid_file", "test_file", "labels_fasta", "mask_fasta", "output_dir"):
            if getattr(self, name):
                setattr(self, name, expand_data_path(getattr(self, name)))

    @property
    def best_metric(self) -> str:
        return self.metric_for_best or TASK_METRICS[self.task][0]

    @property
    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-3 if self.method == "lora" else 1e-4


# ---- reading data -------------------------------------------------------------------------------------------------
@dataclass
class Example:
    """One labelled sequence. `label`: a float (regression), a class name (classification) or one label character
    per residue (token classification); `mask`: one 0/1 character per residue (0 = ignored), or None."""

    sequence: str
    label: Any
    where: str
    mask: str | None = None


@dataclass
class FinetuneData:
    task: str
    train: list[Example]
    valid: list[Example]
    test: list[Example]
    label_names: list[str] | None
    stats: dict[str, Any]


def file_format(path: str | os.PathLike) -> str:
    """ "csv" or "fasta", from the file name (a trailing .gz is allowed)."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(FASTA_SUFFIXES):
        return "fasta"
    raise ValueError(
        f"{path}: cannot tell the format from the name; use {'/'.join(CSV_SUFFIXES + FASTA_SUFFIXES)} (optionally .gz)"
    )


def header_fields(description: str) -> dict[str, str]:
    """`key=value` words of a FASTA header after the id (`>1es5-A SET=train VALIDATION=False`)."""
    fields = {}
    for word in description.split()[1:]:
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = value
    return fields


def clean_sequence(text: str | None, where: str, invalid: re.Pattern[str], policy: str) -> str | None:
    """Upper-case, whitespace removed, then the `invalid_residues` policy (`data.residues`): None when "skip"
    leaves the example out."""
    sequence = "".join((text or "").split()).upper()
    if not sequence:
        raise ValueError(f"{where}: empty sequence")
    try:
        return apply_residue_policy(sequence, policy, invalid, where)
    except ValueError as error:  # name the flag too: most runs come from `plm finetune`
        raise ValueError(f"{error} On the command line: --invalid-residues X (or skip, drop).") from None


def _log_skipped(path: str | os.PathLike, skipped: int) -> None:
    if skipped:
        logger.warning("%s: left out %d sequences with invalid residues (invalid_residues='skip')", path, skipped)


def parse_label(value: str | None, task: str, where: str) -> Any:
    text = (value or "").strip()
    if task == "sequence-regression":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{where}: label {text!r} is not a number ({task} needs numeric labels)") from None
        if not math.isfinite(number):
            raise ValueError(f"{where}: label {text!r} is not a finite number")
        return number
    if task == "token-classification":
        text = "".join(text.split())
    if not text:
        raise ValueError(f"{where}: empty label")
    return text


def _flag(value: str | None, where: str) -> bool:
    text = (value or "").strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise ValueError(f"{where}: {value!r} is not a boolean (expected True/False, 1/0, yes/no or empty)")


def _split_of(split_value: str | None, validation_value: str | None, where: str, config: FinetuneConfig) -> str:
    split = "train"
    if config.split_column is not None:
        value = (split_value or "").strip()
        if value == config.test_split:
            return "test"
        if value != config.train_split:
            raise ValueError(
                f"{where}, column {config.split_column!r}: split {value!r} is neither {config.train_split!r} "
                f"(--train-split) nor {config.test_split!r} (--test-split)"
            )
    if config.validation_column is not None:
        if _flag(validation_value, f"{where}, column {config.validation_column!r}"):
            split = "valid"
    return split


def _check_per_residue(example: Example, label_where: str) -> None:
    if len(example.label) != len(example.sequence):
        raise ValueError(
            f"{label_where}: {len(example.label)} labels for a sequence of {len(example.sequence)} residues "
            f"({example.where})"
        )
    if example.mask is not None:
        if len(example.mask) != len(example.sequence):
            raise ValueError(
                f"{example.where}: the mask has {len(example.mask)} characters for {len(example.sequence)} residues"
            )
        bad = re.search("[^01]", example.mask)
        if bad is not None:
            raise ValueError(
                f"{example.where}: mask character {bad.group()!r} at position {bad.start() + 1}; expected 0 or 1"
            )


def read_csv_examples(
    path: str | os.PathLike, config: FinetuneConfig, valid_residues: str, use_splits: bool = True
) -> list[tuple[str, Example]]:
    """(split, example) for every row of a CSV/TSV. Split from `--split-column` / `--validation-column` when
    `use_splits`; otherwise every row is "train" (the caller reassigns separate valid/test files)."""
    pattern, skipped = invalid_character_pattern(valid_residues), 0
    delimiter = "\t" if Path(path).name.lower().removesuffix(".gz").endswith(".tsv") else ","
    columns = {"--sequence-column": config.sequence_column, "--label-column": config.label_column}
    if use_splits:
        columns.update({"--split-column": config.split_column, "--validation-column": config.validation_column})
    if config.task == "token-classification":
        columns["--mask-column"] = config.mask_column
    rows: list[tuple[str, Example]] = []
    with open_text(Path(path)) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = reader.fieldnames or []
        if not header:
            raise ValueError(f"{path}: empty file (no header line)")
        for flag, column in columns.items():
            if column is not None and column not in header:
                raise ValueError(
                    f"{path}: line 1 (header): no column {column!r} (set by {flag}); the columns are "
                    + ", ".join(repr(name) for name in header)
                )
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if None in row.values():
                missing = [name for name, value in row.items() if value is None]
                raise ValueError(f"{where}: the row has fewer fields than the header (no value for {missing[0]!r})")
            sequence = clean_sequence(
                row[config.sequence_column],
                f"{where}, column {config.sequence_column!r}",
                pattern,
                config.invalid_residues,
            )
            if sequence is None:
                skipped += 1
                continue
            label = parse_label(row[config.label_column], config.task, f"{where}, column {config.label_column!r}")
            mask = None
            if config.mask_column is not None and config.task == "token-classification":
                mask = "".join(row[config.mask_column].split())
            example = Example(sequence, label, where, mask)
            if config.task == "token-classification":
                _check_per_residue(example, f"{where}, column {config.label_column!r}")
            split = "train"
            if use_splits:
                split = _split_of(
                    row.get(config.split_column or ""), row.get(config.validation_column or ""), where, config
                )
            rows.append((split, example))
    _log_skipped(path, skipped)
    return rows


def read_fasta_by_id(path: str | os.PathLike) -> dict[str, tuple[str, str, dict[str, str]]]:
    """id -> (where, sequence-like text, header fields) of a FASTA of per-residue labels or masks."""
    records: dict[str, tuple[str, str, dict[str, str]]] = {}
    for index, record in enumerate(read_fasta(path), start=1):
        where = f"{path}, record {index} (id {record.id})"
        if record.id in records:
            raise ValueError(f"{where}: duplicate id (first at {records[record.id][0]})")
        records[record.id] = (where, record.sequence, header_fields(record.description))
    return records


def read_fasta_examples(
    path: str | os.PathLike,
    config: FinetuneConfig,
    valid_residues: str,
    labels_by_id: dict | None,
    masks_by_id: dict | None,
    use_splits: bool = True,
) -> list[tuple[str, Example]]:
    """(split, example) for every record of a FASTA. Sequence labels and splits come from header `key=value` fields
    (`--label-column`, `--split-column`, `--validation-column` name the keys); per-residue labels from the label
    FASTA record of the same id, whose header fields are also read."""
    pattern, skipped = invalid_character_pattern(valid_residues), 0
    rows: list[tuple[str, Example]] = []
    for index, record in enumerate(read_fasta(path), start=1):
        where = f"{path}, record {index} (id {record.id})"
        fields = header_fields(record.description)
        sequence = clean_sequence(record.sequence, where, pattern, config.invalid_residues)
        if sequence is None:
            skipped += 1
            continue
        if config.task == "token-classification":
            if record.id not in labels_by_id:
                raise ValueError(f"{where}: no record with this id in the labels FASTA {config.labels_fasta}")
            label_where, label_text, label_fields = labels_by_id[record.id]
            fields = {**fields, **label_fields}
            mask = None
            if masks_by_id is not None:
                if record.id not in masks_by_id:
                    raise ValueError(f"{where}: no record with this id in the mask FASTA {config.mask_fasta}")
                mask = masks_by_id[record.id][1]
            example = Example(sequence, parse_label(label_text, config.task, label_where), where, mask)
            _check_per_residue(example, label_where)
        else:
            if config.label_column not in fields:
                raise ValueError(f"{where}: no {config.label_column}=VALUE in the header (--label-column)")
            label = parse_label(fields[config.label_column], config.task, f"{where}, key {config.label_column!r}")
            example = Example(sequence, label, where)
        split = "train"
        if use_splits:
            for key in (config.split_column, config.validation_column):
                if key is not None and key not in fields:
                    raise ValueError(f"{where}: no {key}=VALUE in the header")
            split = _split_of(
                fields.get(config.split_column or ""), fields.get(config.validation_column or ""), where, config
            )
        rows.append((split, example))
    _log_skipped(path, skipped)
    return rows


def _read_file(path: str, config: FinetuneConfig, valid_residues: str, side: dict, use_splits: bool):
    if file_format(path) == "csv":
        return read_csv_examples(path, config, valid_residues, use_splits)
    return read_fasta_examples(
        path,
        config,
        valid_residues=valid_residues,
        labels_by_id=side.get("labels"),
        masks_by_id=side.get("masks"),
        use_splits=use_splits,
    )


def _subsample(examples: list[Example], limit: int | None, seed: int, name: str) -> list[Example]:
    if limit is None or len(examples) <= limit:
        return examples
    rng = np.random.default_rng([seed, SPLITS.index(name)])
    keep = np.sort(rng.choice(len(examples), size=limit, replace=False))  # file order kept
    return [examples[i] for i in keep]


def _fit_length(examples: list[Example], task: str, max_length: int) -> tuple[list[Example], int]:
    """Per-residue tasks: cut longer sequences into consecutive chunks of at most `max_length` residues (every residue
    is still trained and scored). Sequence tasks: keep the first `max_length` residues. Returns the count changed."""
    fitted, changed = [], 0
    for example in examples:
        length = len(example.sequence)
        if length <= max_length:
            fitted.append(example)
            continue
        changed += 1
        if task != "token-classification":
            fitted.append(dataclasses.replace(example, sequence=example.sequence[:max_length]))
            continue
        for start in range(0, length, max_length):
            end = min(length, start + max_length)
            fitted.append(
                Example(
                    example.sequence[start:end],
                    example.label[start:end],
                    f"{example.where}, residues {start + 1}-{end}",
                    example.mask[start:end] if example.mask is not None else None,
                )
            )
    return fitted, changed


def _check_labels(examples: list[Example], label_names: list[str], task: str) -> None:
    known = set(label_names)
    for example in examples:
        if task == "sequence-classification":
            if example.label not in known:
                raise ValueError(f"{example.where}: label {example.label!r} does not occur in the training split")
            continue
        for position, (label, keep) in enumerate(zip(example.label, example.mask or "1" * len(example.label))):
            if keep == "1" and label not in known:
                raise ValueError(
                    f"{example.where}: label {label!r} at position {position + 1} does not occur in the training split"
                )


def load_data(config: FinetuneConfig, valid_residues: str, context_residues: int | None = None) -> FinetuneData:
    """Read, split, subsample, fit to the length limit and check every example; classification label names come from
    the training split (sorted)."""
    side: dict[str, Any] = {}
    if config.task == "token-classification":
        if config.labels_fasta:
            side["labels"] = read_fasta_by_id(config.labels_fasta)
        if config.mask_fasta:
            side["masks"] = read_fasta_by_id(config.mask_fasta)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for split, example in _read_file(config.train_file, config, valid_residues, side, use_splits=True):
        splits[split].append(example)
    for name, path in (("valid", config.valid_file), ("test", config.test_file)):
        if path:
            splits[name].extend(
                example
                for _, example in _read_file(path, config, valid_residues=valid_residues, side=side, use_splits=False)
            )
    stats: dict[str, Any] = {"read": {name: len(examples) for name, examples in splits.items()}}
    if not splits["train"]:
        raise ValueError(f"{config.train_file}: no training rows (split value {config.train_split!r})")
    if not splits["valid"]:
        if config.valid_fraction <= 0:
            raise ValueError(
                "no validation rows: pass --valid-file, --validation-column (rows of the training split marked for "
                "validation) or --valid-fraction"
            )
        rng = np.random.default_rng([config.seed, 99])
        held = set(
            rng.choice(
                len(splits["train"]), size=max(1, round(config.valid_fraction * len(splits["train"]))), replace=False
            ).tolist()
        )
        splits["valid"] = [e for i, e in enumerate(splits["train"]) if i in held]
        splits["train"] = [e for i, e in enumerate(splits["train"]) if i not in held]
        stats["valid_fraction_held_out"] = len(held)
    limits = {"train": config.max_train_samples, "valid": config.max_valid_samples, "test": config.max_test_samples}
    for name in SPLITS:
        splits[name] = _subsample(splits[name], limits[name], config.seed, name)
    stats["sequences"] = {name: len(examples) for name, examples in splits.items()}
    stats["residues"] = {name: sum(len(e.sequence) for e in examples) for name, examples in splits.items()}
    max_length = config.max_length or context_residues
    if max_length is not None:
        stats["max_length"] = max_length
        key = "chunked" if config.task == "token-classification" else "cropped"
        stats[key] = {}
        for name in SPLITS:
            splits[name], stats[key][name] = _fit_length(splits[name], config.task, max_length)
        if config.task == "token-classification":
            stats["chunks"] = {name: len(examples) for name, examples in splits.items()}
        elif any(stats[key].values()):
            logger.warning("kept the first %d residues of %s longer sequences", max_length, stats[key])
    label_names = None
    if config.task == "sequence-classification":
        label_names = sorted({e.label for e in splits["train"]})
    elif config.task == "token-classification":
        label_names = sorted(
            {
                label
                for e in splits["train"]
                for label, keep in zip(e.label, e.mask or "1" * len(e.label))
                if keep == "1"
            }
        )
    if label_names is not None:
        if len(label_names) < 2:
            raise ValueError(f"{config.train_file}: classification needs at least 2 classes, found {label_names}")
        for name in ("valid", "test"):
            _check_labels(splits[name], label_names, config.task)
    if config.task == "token-classification":
        stats["scored_residues"] = {
            name: sum((e.mask or "1" * len(e.sequence)).count("1") for e in examples)
            for name, examples in splits.items()
        }
    return FinetuneData(
        config.task,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        label_names=label_names,
        stats=stats,
    )


# ---- encoding and batching -----------------------------------------------------------------------------------------
def encode_examples(
    tokenizer,
    examples: list[Example],
    task: str,
    label2id: dict[str, int] | None = None,
    target_mean: float = 0.0,
    target_std: float = 1.0,
) -> list[dict[str, Any]]:
    """`{"input_ids", "labels"}` per example. Token labels are -100 at `<bos>`, `<eos>` and masked residues, so the
    model's own loss and the metrics skip them; regression labels are standardised by `target_mean`/`target_std`."""
    encoded = tokenizer([e.sequence for e in examples], add_special_tokens=True)["input_ids"]
    features = []
    for example, input_ids in zip(examples, encoded):
        if len(input_ids) != len(example.sequence) + 2:  # labels are aligned on one token per residue
            raise ValueError(f"{example.where}: the tokenizer did not give <bos> + one token per residue + <eos>")
        if task == "sequence-regression":
            label: Any = (example.label - target_mean) / target_std
        elif task == "sequence-classification":
            label = label2id[example.label]
        else:
            mask = example.mask or "1" * len(example.label)
            label = [-100] + [label2id[c] if m == "1" else -100 for c, m in zip(example.label, mask)] + [-100]
        features.append({"input_ids": input_ids, "labels": label})
    return features


def collate(features: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding on the right: `input_ids`, `attention_mask` and `labels` (-100 at padding of token labels)."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, feature in enumerate(features):
        input_ids[row, : len(feature["input_ids"])] = torch.tensor(feature["input_ids"])
        attention_mask[row, : len(feature["input_ids"])] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "labels" in features[0]:
        first = features[0]["labels"]
        if isinstance(first, list):
            labels = torch.full((len(features), width), -100, dtype=torch.long)
            for row, feature in enumerate(features):
                labels[row, : len(feature["labels"])] = torch.tensor(feature["labels"])
        elif isinstance(first, float):
            labels = torch.tensor([f["labels"] for f in features], dtype=torch.float32)
        else:
            labels = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        batch["labels"] = labels
    return batch


class LengthGroupedBatches:
    """Training batches of `batch_size` examples: a fresh seeded shuffle every pass and, with `group_by_length`,
    examples of similar length together (sorted within windows of 50 batches, then the batches shuffled), which
    cuts padding work on datasets of mixed lengths.

    Under data parallelism every process builds the same batches and takes every `num_shards`-th one from
    `shard_index`; the list is first topped up with its own first batches, so every process gets the same number."""

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int,
        group_by_length: bool = True,
        num_shards: int = 1,
        shard_index: int = 0,
    ):
        self.lengths, self.batch_size, self.seed, self.group_by_length = lengths, batch_size, seed, group_by_length
        self.num_shards, self.shard_index = num_shards, shard_index
        self.passes = 0

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.lengths) / self.batch_size) / self.num_shards)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.passes])
        self.passes += 1
        order = rng.permutation(len(self.lengths)).tolist()
        if self.group_by_length:
            window = self.batch_size * 50
            order = [
                index
                for start in range(0, len(order), window)
                for index in sorted(order[start : start + window], key=lambda i: -self.lengths[i])
            ]
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        if self.group_by_length:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        batches += batches[: len(self) * self.num_shards - len(batches)]
        yield from batches[self.shard_index :: self.num_shards]


# ---- metrics -------------------------------------------------------------------------------------------------------
def spearman(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Spearman's rank correlation (NaN when either side is constant)."""
    from scipy.stats import spearmanr

    if len(predictions) < 2 or np.ptp(predictions) == 0 or np.ptp(targets) == 0:
        return float("nan")
    return float(spearmanr(predictions, targets).statistic)


def macro_f1(predictions: np.ndarray, targets: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in the targets or the predictions."""
    scores = []
    for label in range(num_classes):
        true_positive = np.sum((predictions == label) & (targets == label))
        predicted, actual = np.sum(predictions == label), np.sum(targets == label)
        if predicted + actual:
            scores.append(2 * true_positive / (predicted + actual))
    return float(np.mean(scores)) if scores else float("nan")


def compute_metrics(task: str, predictions: np.ndarray, targets: np.ndarray, num_classes: int = 0) -> dict:
    """Regression: Spearman, Pearson, MSE. Classification: accuracy, macro-F1 (per residue for token tasks: pass the
    scored residues only)."""
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    if task == "sequence-regression":
        pearson = float(np.corrcoef(predictions, targets)[0, 1]) if np.ptp(predictions) > 0 else float("nan")
        return {
            "spearman": spearman(predictions, targets),
            "pearson": pearson,
            "mse": float(np.mean((predictions - targets) ** 2)),
            "count": int(len(targets)),
        }
    return {
        "accuracy": float(np.mean(predictions == targets)) if len(targets) else float("nan"),
        "macro_f1": macro_f1(predictions, targets, num_classes),
        "count": int(len(targets)),
    }


def trainer_compute_metrics(task: str, num_classes: int = 0):
    """A `compute_metrics` for transformers' `Trainer` (`EvalPrediction` of logits and label ids)."""

    def metrics(prediction) -> dict[str, float]:
        logits, labels = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
        if task == "sequence-regression":
            return compute_metrics(task, logits.reshape(-1), labels.reshape(-1))
        predicted = logits.argmax(-1)
        if task == "token-classification":
            keep = labels != -100
            predicted, labels = predicted[keep], labels[keep]
        return compute_metrics(task, predicted, labels, num_classes or logits.shape[-1])

    return metrics


def _better(value: float, best: float | None, metric: str) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


# ---- the model -----------------------------------------------------------------------------------------------------
def _quiet_from_pretrained(model_class, path: str, **kwargs):
    """`from_pretrained` without transformers' load report: a new head and a dropped LM head are expected here;
    anything else missing from the backbone is an error."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(path, output_loading_info=True, **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = [key for key in info["missing_keys"] if not key.startswith("classifier")]
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks backbone weights {missing[:5]}; is it a modeling_plm model?")
    return model


def head_kwargs(task: str, label_names: list[str] | None, pooling: str | None = None) -> dict[str, Any]:
    """Config overrides of the fine-tuned model: labels, problem type and pooling."""
    kwargs: dict[str, Any] = {}
    if task == "sequence-regression":
        kwargs.update(num_labels=1, problem_type="regression")
    else:
        kwargs.update(
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: index for index, name in enumerate(label_names)},
        )
        if task == "sequence-classification":
            kwargs["problem_type"] = "single_label_classification"
    if pooling is not None:
        kwargs["classifier_pooling"] = pooling
    return kwargs


def build_model(
    model_path: str,
    task: str,
    label_names: list[str] | None = None,
    method: str = "lora",
    pooling: str | None = None,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    lora_targets: str = "attention",
) -> torch.nn.Module:
    """The base checkpoint (any modeling_plm class's weights) with a new task head; for LoRA wrapped by
    `get_peft_model`, so only the adapters and the head train (and are saved)."""
    model = _quiet_from_pretrained(MODEL_CLASSES[task], model_path, **head_kwargs(task, label_names, pooling))
    if method == "full":
        return model
    from peft import get_peft_model

    return get_peft_model(
        model, default_lora_config(task, r=lora_r, alpha=lora_alpha, dropout=lora_dropout, targets=lora_targets)
    )


def sequence_head(model: torch.nn.Module) -> PLMClassificationHead:
    """The trainable head of a sequence model (PEFT's `modules_to_save` copy under LoRA)."""
    heads = [
        module
        for module in model.modules()
        if isinstance(module, PLMClassificationHead) and all(p.requires_grad for p in module.parameters())
    ]
    if len(heads) != 1:
        raise RuntimeError(f"expected one trainable sequence classification head, found {len(heads)}")
    return heads[0]


@torch.no_grad()
def pooled_feature_statistics(
    model: torch.nn.Module, features: list[dict[str, Any]], pad_token_id: int, token_budget: int = 16384
) -> tuple[torch.Tensor, float]:
    """Mean (H,) over `features` of the pooled vector that enters the sequence head, and the root mean square of its
    deviations (one number over all dimensions)."""
    pooled: list[torch.Tensor] = []
    hook = sequence_head(model).register_forward_pre_hook(lambda module, args: pooled.append(args[0].double()))
    try:
        predict_features(model, features, pad_token_id, token_budget)
    finally:
        hook.remove()
    values = torch.cat(pooled)
    mean = values.mean(0)
    scale = float((values - mean).pow(2).mean().sqrt())
    return mean.float(), scale if scale > 0 else 1.0


@contextlib.contextmanager
def standardized_head_inputs(model: torch.nn.Module, statistics: tuple[torch.Tensor, float] | None) -> Iterator[None]:
    """Within the block the sequence head sees (pooled - mean) / scale.

    Near-identical sequences (GB1's variants differ at 4 of 265 residues) pool to vectors whose spread is ~1% of their
    size. As they are, the constant part dominates the head's gradients, Adam's steps on the head are mostly noise and
    the predictions stay constant; centred and scaled to unit spread, the head learns the differences. The scale is
    one number, not one per dimension, so that no near-constant dimension is blown up. On save the shift and scale
    are folded into the head's first layer (`saved_head`).
    """
    if statistics is None:
        yield
        return
    mean, scale = statistics

    def standardize(module, args):
        return ((args[0] - mean.to(args[0].device, args[0].dtype)) / scale, *args[1:])

    hook = sequence_head(model).register_forward_pre_hook(standardize)
    try:
        yield
    finally:
        hook.remove()


@contextlib.contextmanager
def saved_head(
    model: torch.nn.Module,
    statistics: tuple[torch.Tensor, float] | None,
    target_mean: float = 0.0,
    target_std: float = 1.0,
) -> Iterator[None]:
    """Within the block the head's weights compute, on the raw pooled features, what the training-time head computed
    on standardised ones, in label units: first layer W' = W / scale, b' = b - W'·mean; output layer w' = std·w,
    b' = std·b + mean. Used to save; afterwards the weights are restored exactly."""
    if statistics is None and target_mean == 0.0 and target_std == 1.0:
        yield
        return
    head = sequence_head(model)
    saved = {name: p.detach().clone() for name, p in head.named_parameters()}
    with torch.no_grad():
        if statistics is not None:
            mean, scale = statistics
            head.dense.weight.div_(scale)
            head.dense.bias.sub_(head.dense.weight @ mean.to(head.dense.weight))
        head.out_proj.weight.mul_(target_std)
        head.out_proj.bias.mul_(target_std).add_(target_mean)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, parameter in head.named_parameters():
                parameter.copy_(saved[name])


# ---- evaluation ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_features(
    model: torch.nn.Module, features: list[dict[str, Any]], pad_token_id: int, token_budget: int = 16384, autocast=None
) -> tuple[list[np.ndarray], float | None]:
    """Raw outputs per feature, in input order (a (num_labels,) vector for sequence tasks, (L+2, num_labels) for
    token tasks), and the mean model loss over the batches (weighted by the examples or scored residues)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs: list[np.ndarray | None] = [None] * len(features)
    loss_sum, loss_weight = 0.0, 0
    for indices in token_budget_batches([len(f["input_ids"]) for f in features], token_budget):
        batch = {k: v.to(device) for k, v in collate([features[i] for i in indices], pad_token_id).items()}
        with autocast() if autocast is not None else contextlib.nullcontext():
            out = model(**batch)
        if out.loss is not None:
            labels = batch["labels"]
            weight = int((labels != -100).sum()) if labels.dtype == torch.long and labels.dim() == 2 else len(indices)
            loss_sum += out.loss.float().item() * weight
            loss_weight += weight
        logits = out.logits.float().cpu().numpy()
        for row, index in enumerate(indices):
            outputs[index] = logits[row, : len(features[index]["input_ids"])] if logits.ndim == 3 else logits[row]
    if was_training:
        model.train()
    return outputs, (loss_sum / loss_weight if loss_weight else None)


def evaluate(
    model: torch.nn.Module,
    features: list[dict[str, Any]],
    task: str,
    pad_token_id: int,
    num_classes: int = 0,
    target_mean: float = 0.0,
    target_std: float = 1.0,
    token_budget: int = 16384,
    autocast=None,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of `model` on encoded `features`, and the predictions (regression in label units; class ids; for
    token tasks the class id of every scored residue, concatenated)."""
    outputs, loss = predict_features(
        model, features, pad_token_id=pad_token_id, token_budget=token_budget, autocast=autocast
    )
    if task == "sequence-regression":
        predictions = np.array([o[0] for o in outputs]) * target_std + target_mean
        targets = np.array([f["labels"] for f in features]) * target_std + target_mean
    elif task == "sequence-classification":
        predictions = np.array([o.argmax(-1) for o in outputs])
        targets = np.array([f["labels"] for f in features])
    else:
        labels = [np.asarray(f["labels"]) for f in features]
        predictions = np.concatenate([o.argmax(-1)[lab != -100] for o, lab in zip(outputs, labels)])
        targets = np.concatenate([lab[lab != -100] for lab in labels])
    metrics = compute_metrics(task, predictions, targets, num_classes)
    metrics["loss"] = loss
    return metrics, predictions


# ---- the loop ------------------------------------------------------------------------------------------------------
def _optimizer(model: torch.nn.Module, config: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW over the trainer's parameter groups (no decay on biases and norms), split so that the head can take its
    own learning rate."""
    head = {id(p) for name, p in model.named_parameters() if "classifier" in name}
    head_lr = config.head_learning_rate if config.head_learning_rate is not None else config.peak_learning_rate
    groups = []
    for group in _parameter_groups(model, config.weight_decay):
        for is_head, lr in ((False, config.peak_learning_rate), (True, head_lr)):
            params = [p for p in group["params"] if (id(p) in head) == is_head]
            if params:
                groups.append({"params": params, "weight_decay": group["weight_decay"], "lr": lr})
    return torch.optim.AdamW(groups, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _prepare_output_dir(config: FinetuneConfig) -> Path:
    output_dir = Path(config.output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        if not config.overwrite:
            raise FileExistsError(f"{output_dir} is not empty: pass --overwrite or a new --output-dir")
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


def save_finetuned(model: torch.nn.Module, tokenizer, output_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """LoRA: the PEFT adapter (adapter_model.safetensors, with the head via `modules_to_save`); full: the whole model.
    Plus the tokenizer and `finetune_record.json` (what `load_finetuned` needs, the metrics and the run's config)."""
    output_dir = Path(output_dir)
    staging = output_dir.with_name(output_dir.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / RECORD_FILE).write_text(json.dumps(_json_safe(record), indent=2) + "\n")
    # Replace the files one by one: the folder also holds metrics.jsonl, which stays.
    for old in output_dir.iterdir():
        if old.name != "metrics.jsonl":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for new in staging.iterdir():
        new.rename(output_dir / new.name)
    staging.rmdir()


def _encoded_splits(config: FinetuneConfig, tokenizer, context_residues: int) -> dict[str, Any]:
    """The data read and encoded: `data`, `features` per split, the label ids and the regression target scale."""
    data = load_data(config, tokenizer.valid_residues, context_residues)
    label2id = {name: i for i, name in enumerate(data.label_names)} if data.label_names else None
    target_mean, target_std = 0.0, 1.0
    if config.task == "sequence-regression" and config.normalize_targets:
        values = np.array([e.label for e in data.train])
        target_mean, target_std = float(values.mean()), float(values.std()) or 1.0
    encode = partial(
        encode_examples, tokenizer, task=config.task, label2id=label2id, target_mean=target_mean, target_std=target_std
    )
    features = {name: encode(getattr(data, name)) for name in SPLITS}
    if config.task == "token-classification":  # a chunk with every residue masked has no loss term (a batch: NaN)
        features["train"] = [f for f in features["train"] if any(label != -100 for label in f["labels"])]
        data.stats["train_inputs_without_scored_residues"] = len(data.train) - len(features["train"])
    num_classes = len(data.label_names) if data.label_names else 0
    return dict(data=data, features=features, num_classes=num_classes, target_mean=target_mean, target_std=target_std)


def _train_loader(features: list[dict[str, Any]], config: FinetuneConfig, accelerator: Accelerator, pad_id: int):
    # Not prepared by accelerate: the sampler shards itself, so every process takes the same number of steps.
    return torch.utils.data.DataLoader(
        features,
        batch_sampler=LengthGroupedBatches(
            [len(f["input_ids"]) for f in features],
            batch_size=config.batch_size,
            seed=config.seed,
            group_by_length=config.group_by_length,
            num_shards=accelerator.num_processes,
            shard_index=accelerator.process_index,
        ),
        collate_fn=partial(collate, pad_token_id=pad_id),
    )


def _run_record(config: FinetuneConfig, *, data: FinetuneData, run: dict[str, Any], statistics, parameters) -> dict:
    """What `finetune_record.json` starts with: what `load_finetuned` needs, the data and the run's config."""
    task = config.task
    return {
        "modeling_plm_version": __version__,
        "task": task,
        "method": config.method,
        "base_model": str(Path(config.model).resolve()) if Path(config.model).exists() else config.model,
        "model_kwargs": head_kwargs(task, data.label_names, config.pooling),
        "label_names": data.label_names,
        "regression_target": {"mean": run["target_mean"], "std": run["target_std"], "folded_into_head": True}
        if task == "sequence-regression"
        else None,
        "parameters": parameters,
        "pooled_standardization": None
        if statistics is None
        else {"mean_norm": float(statistics[0].norm()), "scale": statistics[1], "folded_into_head": True},
        "data": data.stats,
        "metric_for_best": config.best_metric,
        "config": dataclasses.asdict(config),
    }


def _train_epochs(
    *,
    model,
    loader,
    optimizer,
    scheduler,
    accelerator: Accelerator,
    config: FinetuneConfig,
    total_steps: int,
    log,
    validate,
    progress,
) -> tuple[int, int, bool]:
    """The optimizer steps of every epoch; `validate(step, epoch)` runs on schedule and returns True to stop early.
    Returns (steps, epochs run, stopped early)."""
    eval_every = config.eval_steps or max(1, len(loader) // config.gradient_accumulation_steps)
    model.train()
    loss_window: list[float] = []
    step = 0
    for epoch in range(config.epochs):
        for batch in loader:
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            with accelerator.accumulate(model), accelerator.autocast():
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}: lower the learning rate")
            loss_window.append(loss_value)
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            progress.update(1)
            if step % config.log_steps == 0:
                mean_loss = float(np.mean(loss_window))
                log({"step": step, "epoch": epoch + 1, "loss": mean_loss, "learning_rate": scheduler.get_last_lr()[0]})
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                loss_window = []
            if (step % eval_every == 0 or step == total_steps) and validate(step, epoch):
                return step, epoch + 1, True
    return step, config.epochs, False


class FinetuneTracker:
    """What a fine-tuning run's evaluations share: the metrics log, the best weights so far (by `best_metric`, kept
    in memory and saved), early stopping, and the checkpoint saves."""

    def __init__(
        self,
        config: FinetuneConfig,
        accelerator: Accelerator,
        model,
        tokenizer,
        run,
        statistics,
        record,
        output_dir: Path,
    ):
        self.config, self.accelerator, self.model, self.tokenizer = config, accelerator, model, tokenizer
        self.run, self.statistics, self.record, self.output_dir = run, statistics, record, output_dir
        self.metric = config.best_metric
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_value: float | None = None
        self.evals_without_gain = 0

    def evaluate(self, split: str) -> dict[str, float]:
        metrics, _ = evaluate(
            self.model,
            self.run["features"][split],
            self.config.task,
            self.tokenizer.pad_token_id,
            num_classes=self.run["num_classes"],
            target_mean=self.run["target_mean"],
            target_std=self.run["target_std"],
            token_budget=self.config.eval_token_budget,
            autocast=self.accelerator.autocast,
        )
        return metrics

    def log(self, entry: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.output_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(_json_safe(entry)) + "\n")

    def save(self, status: str) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            with saved_head(self.model, self.statistics, self.run["target_mean"], self.run["target_std"]):
                save_finetuned(self.model, self.tokenizer, self.output_dir, {**self.record, "status": status})

    def keep_best(self, step: int, metrics: dict[str, float]) -> None:
        self.best_state = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        self.best_value, self.evals_without_gain = metrics[self.metric], 0
        self.record.update(best_step=step, best_valid=metrics)
        self.save("training")

    def validate(self, step: int, epoch: int) -> bool:
        """Evaluates on the validation split; True when early stopping says to stop."""
        metrics = self.evaluate("valid")
        self.log({"step": step, "epoch": epoch + 1, **{f"valid_{k}": v for k, v in metrics.items()}})
        self.accelerator.print(f"step {step} (epoch {epoch + 1}): valid {self.metric} {metrics[self.metric]:.4f}")
        if _better(metrics[self.metric], self.best_value, self.metric):
            self.keep_best(step, metrics)
        else:
            self.evals_without_gain += 1
        patience = self.config.early_stopping_patience
        return bool(patience) and self.evals_without_gain >= patience

    @torch.no_grad()
    def restore_best(self) -> None:
        for name, parameter in self.model.named_parameters():
            if name in self.best_state:
                parameter.copy_(self.best_state[name])


def finetune(config: FinetuneConfig) -> Path:
    """Fine-tune `config.model` on the task; returns the output folder, which holds the best checkpoint (by the
    validation metric), the tokenizer, `finetune_record.json` and `metrics.jsonl`."""
    from transformers import AutoConfig, AutoTokenizer

    started = time.time()
    config.resolve_paths()
    config.validate()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    output_dir = _prepare_output_dir(config) if accelerator.is_main_process else Path(config.output_dir)
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    run = _encoded_splits(config, tokenizer, context_residues(AutoConfig.from_pretrained(config.model)))
    data, features, task = run["data"], run["features"], config.task
    model = build_model(
        config.model,
        task,
        label_names=data.label_names,
        method=config.method,
        pooling=config.pooling,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        lora_targets=config.lora_targets,
    )
    parameters = {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    pad_id = tokenizer.pad_token_id
    loader = _train_loader(features["train"], config, accelerator, pad_id)
    # accelerate counts micro-batches across epochs and steps the optimizer on every `gradient_accumulation_steps`-th.
    total_steps = len(loader) * config.epochs // config.gradient_accumulation_steps
    optimizer = _optimizer(model, config)
    # Not prepared: accelerate would step it once per process; it is stepped once per optimizer step below.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, total_steps, config))
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    statistics = None
    if task != "token-classification" and config.standardize_pooled:
        # From the base model's pooled training features (the adapters start as the identity), up to 1,024 sequences.
        rng = np.random.default_rng([config.seed, 7])
        sample = [features["train"][i] for i in rng.permutation(len(features["train"]))[:1024]]
        statistics = pooled_feature_statistics(unwrapped, sample, pad_id, config.eval_token_budget)
    record = _run_record(config, data=data, run=run, statistics=statistics, parameters=parameters)
    tracker = FinetuneTracker(
        config,
        accelerator=accelerator,
        model=unwrapped,
        tokenizer=tokenizer,
        run=run,
        statistics=statistics,
        record=record,
        output_dir=output_dir,
    )

    with standardized_head_inputs(unwrapped, statistics):  # removed again before returning
        initial = tracker.evaluate("valid")
        record["initial_valid"] = initial
        tracker.log({"step": 0, "epoch": 0, **{f"valid_{k}": v for k, v in initial.items()}})
        tracker.keep_best(0, initial)
        accelerator.print(
            f"{task} {config.method}: " + " / ".join(f"{n} {k}" for k, n in data.stats["sequences"].items()) + " "
            f"sequences, {parameters['trainable']:,} of {parameters['total']:,} parameters trained; "
            f"valid {config.best_metric} before training {_number(initial[config.best_metric])}"
        )
        progress = tqdm(
            total=total_steps,
            desc=f"fine-tuning ({config.method})",
            unit="step",
            dynamic_ncols=True,
            disable=not accelerator.is_main_process,
        )
        try:
            step, epochs_run, stopped_early = _train_epochs(
                model=model,
                loader=loader,
                optimizer=optimizer,
                scheduler=scheduler,
                accelerator=accelerator,
                config=config,
                total_steps=total_steps,
                log=tracker.log,
                validate=tracker.validate,
                progress=progress,
            )
        finally:
            progress.close()
        tracker.restore_best()  # the test split and the final save use the best weights
        record.update(steps=step, epochs_run=epochs_run, stopped_early=stopped_early)
        if features["test"]:
            record["test"] = tracker.evaluate("test")
            test = {f"test_{k}": v for k, v in record["test"].items()}
            tracker.log({"step": step, "best_step": record["best_step"], **test})
        record.update(
            wall_time_s=time.time() - started, device=str(accelerator.device), world_size=accelerator.num_processes
        )
        tracker.save("finished")
    accelerator.wait_for_everyone()
    return output_dir


# ---- loading and prediction ----------------------------------------------------------------------------------------
def read_record(path: str | os.PathLike) -> dict[str, Any]:
    record_file = Path(path) / RECORD_FILE
    if not record_file.exists():
        raise FileNotFoundError(f"{path}: no {RECORD_FILE}; is it a folder written by `plm finetune`?")
    return json.loads(record_file.read_text())


def load_finetuned(path: str | os.PathLike, merge: bool = False, base_model: str | None = None) -> torch.nn.Module:
    """The fine-tuned model of a `plm finetune` folder, in eval mode: for LoRA the base model (from the record, or
    `base_model` if it moved) with the adapter and head loaded (`merge=True` merges the adapter into the weights and
    returns the plain model class); for full fine-tuning the saved checkpoint. Its tokenizer:
    `AutoTokenizer.from_pretrained(path)`."""
    record = read_record(path)
    model_class = MODEL_CLASSES[record["task"]]
    if record["method"] == "full":
        return model_class.from_pretrained(path).eval()
    from peft import PeftModel

    kwargs = record["model_kwargs"]
    if "id2label" in kwargs:  # JSON turned the ids into strings
        kwargs = {**kwargs, "id2label": {int(k): v for k, v in kwargs["id2label"].items()}}
    base = _quiet_from_pretrained(model_class, base_model or record["base_model"], **kwargs)
    model = PeftModel.from_pretrained(base, path)
    if merge:
        model = model.merge_and_unload()
    return model.eval()


def predict(
    model: torch.nn.Module,
    tokenizer,
    sequences: list[str],
    max_length: int | None = None,
    token_budget: int = 16384,
) -> list[Any]:
    """Predictions of a loaded fine-tuned model: a float (regression), a label name (classification) or a string of
    one label per residue (token classification).

    As in training, at most `max_length` residues go in at once (default: the context minus 2): per-residue tasks
    predict longer sequences in consecutive chunks, sequence tasks see the first `max_length` residues."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    max_length = max_length or context_residues(base.config)
    per_residue = isinstance(base, PLMForTokenClassification)
    pieces: list[tuple[int, str]] = []  # (sequence index, residues)
    for index, sequence in enumerate(sequences):
        sequence = "".join(sequence.split())
        starts = range(0, len(sequence), max_length) if per_residue else [0]
        pieces.extend((index, sequence[start : start + max_length]) for start in starts)
    # The tokenizer's invalid_residues policy applies (its error names the piece, position and character).
    features = [{"input_ids": ids} for ids in tokenizer([piece for _, piece in pieces])["input_ids"]]
    outputs, _ = predict_features(model, features, tokenizer.pad_token_id, token_budget)
    id2label = base.config.id2label
    if per_residue:
        labels = [""] * len(sequences)
        for (index, _), output in zip(pieces, outputs):
            labels[index] += "".join(id2label[int(i)] for i in output[1:-1].argmax(-1))
        return labels
    if base.config.problem_type == "regression" or base.config.num_labels == 1:
        return [float(output[0]) for output in outputs]
    return [id2label[int(output.argmax(-1))] for output in outputs]


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
