"""The labelled data of a fine-tuning run: reading CSV/TSV columns or FASTA header `key=value` fields (per-residue
labels from a label FASTA aligned by id, or a CSV column of one label per residue; an optional 0/1 mask), splits,
length limits, encoding to `{"input_ids", "labels"}` rows, padding (`collate`) and length-grouped batches.

Bad input raises `ValueError` naming the file, the row (1-based CSV line or FASTA record, with its id) and the column,
position and character.
"""

import csv
import dataclasses
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.collators import IGNORE_INDEX, pad_rows, padded_inputs
from ..data.fasta import file_format, open_text, read_fasta
from ..data.residues import apply_residue_policy, invalid_character_pattern, strip_stop_codon
from ..inference.context import special_token_layout
from .config import FinetuneConfig

logger = logging.getLogger("modeling_plm.training.finetune")

TRUE_VALUES = {"true", "1", "yes", "y", "t"}
FALSE_VALUES = {"false", "0", "no", "n", "f", ""}
SPLITS = ("train", "valid", "test")


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


def header_fields(description: str) -> dict[str, str]:
    """`key=value` words of a FASTA header after the id (`>1es5-A SET=train VALIDATION=False`)."""
    fields = {}
    for word in description.split()[1:]:
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = value
    return fields


def clean_sequence(text: str | None, where: str, invalid: re.Pattern[str], policy: str) -> str | None:
    """Upper-case, whitespace and a trailing stop codon `*` removed, then the `invalid_residues` policy
    (`data.residues`): None when "skip" leaves the example out."""
    sequence, _ = strip_stop_codon("".join((text or "").split()).upper())
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
            if None in row:  # csv.DictReader files the fields beyond the header under None
                raise ValueError(
                    f"{where}: the row has {len(header) + len(row[None])} fields, the header {len(header)} "
                    f"(extra: {row[None]!r}); quote fields that hold the delimiter"
                )
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
    if config.task == "sequence-regression":
        _check_rankable(splits["valid"], "validation")
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


def _check_rankable(examples: list[Example], split: str) -> None:
    """A regression split whose Spearman correlation exists: at least 3 sequences, not all with one target (early
    stopping and the best checkpoint would otherwise follow NaN)."""
    targets = {e.label for e in examples}
    if len(examples) < 3 or len(targets) < 2:
        raise ValueError(
            f"the {split} split has {len(examples)} sequences with {len(targets)} distinct targets: its Spearman "
            "correlation is undefined (it needs at least 3 sequences and 2 targets); give it more rows "
            "(--valid-file, --validation-column or a larger --valid-fraction)"
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
    if not examples:  # e.g. no test split (the tokenizer refuses an empty batch)
        return []
    encoded = tokenizer([e.sequence for e in examples], add_special_tokens=True)["input_ids"]
    leading, trailing = map(len, special_token_layout(tokenizer))  # <bos> and <eos>; T5's tokenizers add no <bos>
    features = []
    for example, input_ids in zip(examples, encoded):
        if len(input_ids) != len(example.sequence) + leading + trailing:  # labels align on one token per residue
            raise ValueError(f"{example.where}: the tokenizer did not give one token per residue between its specials")
        if task == "sequence-regression":
            label: Any = (example.label - target_mean) / target_std
        elif task == "sequence-classification":
            label = label2id[example.label]
        else:
            mask = example.mask or "1" * len(example.label)
            residue_labels = [label2id[c] if m == "1" else -100 for c, m in zip(example.label, mask)]
            label = [-100] * leading + residue_labels + [-100] * trailing
        features.append({"input_ids": input_ids, "labels": label})
    return features


def collate(features: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding on the right: `input_ids`, `attention_mask` and `labels` (-100 at padding of token labels)."""
    batch = padded_inputs([f["input_ids"] for f in features], pad_token_id)
    if "labels" in features[0]:
        first = features[0]["labels"]
        if isinstance(first, list):
            labels = pad_rows([f["labels"] for f in features], IGNORE_INDEX)
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
