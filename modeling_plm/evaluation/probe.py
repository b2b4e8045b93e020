"""Frozen-embedding probes: how much of a protein property a linear model can read from pooled embeddings.

Protocol (`run_probe`):
- Every sequence of the train, validation and test sets is embedded once by the frozen model (`embed_sequences`:
  one hidden-state layer, pooled over the residues; long sequences in overlapping windows) and cached in
  `OUTPUT_DIR/embeddings/` (`cached_embeddings`), so that a rerun only refits the probes.
- The probe is a scikit-learn pipeline of feature standardisation and a logistic regression (classification) or
  ridge regression (regression). Its strength (C, or alpha) is chosen on the validation split only (accuracy, or
  Spearman), the probe fitted on the train split with that value is applied once to each test split.
- The same probe on the 20-d amino-acid composition of each sequence is the baseline: what the labels give away
  without any model.
- Each test metric comes with a 95% percentile-bootstrap interval over the test examples (scipy.stats.bootstrap,
  paired resampling of (label, prediction)).

Leakage check (`check_no_overlap`): a test record whose id (where the files have ids) or whose exact sequence also
appears in the train or validation split is refused, naming both files and the first ids. It catches copies, not
homologs: homology-reduced splits (DeepLoc's setHARD) are what measure transfer to new families.

Data sets (`deeploc_task`, `solubility_task`, `custom_task`), read from the shared data folder's SOURCE.txt files:
- DeepLoc 1.0 (10 classes): train on the 8,710 training proteins whose sequences were recovered from Swiss-Prot 2014
  (train_from_eat_lookup_sprot2014.fasta, label = header field 2), select on Light Attention's validation split,
  test on the DeepLoc test set (2,768) and on setHARD (490, homology-reduced). Headers: ">ACC Location[-M|S|U] ...";
  the membrane suffix is dropped.
- DeepSol (soluble 1 / insoluble 0): the 62k training sequences are absent from the snapshot (labels only), so the
  probe trains on a stratified 90% of DeepSol's validation set, selects on the other 10% and is tested on the
  standard DeepSol test set (2,001). Absolute accuracy is lower than with the paper's 62k training sequences.
- Any labelled FASTA (label = a whitespace-separated header field) or CSV/TSV (sequence and label columns); without
  a validation file a stratified 10% of the train file is held out for selection.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..data.collators import STANDARD_AMINO_ACIDS
from ..data.fasta import file_format, open_text, read_fasta
from ..data.residues import apply_residue_policy, check_residue_policy, invalid_character_pattern, strip_stop_codon

PROBLEMS = ("classification", "regression")
DEFAULT_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # C=100 took lbfgs minutes on DeepLoc, no gain
DEFAULT_ALPHA_GRID = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
VALIDATION_FRACTION = 0.1  # held out of the train file for selection when there is no validation file
CACHE_CHUNK = 500  # sequences per cached part file: a killed run loses at most one part
DEFAULT_RESIDUES = STANDARD_AMINO_ACIDS + "XBZUO"  # when the tokenizer does not say


# ---------------------------------------------------------------------------------------------------------------------
# Labelled sequence files
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class LabelledSet:
    """One split: parallel lists of ids, sequences and labels (label text as written), read from `path`."""

    name: str
    path: Path
    ids: list[str]
    sequences: list[str]
    labels: list[str]
    has_ids: bool = True  # False for a CSV without an id column: ids are "file:line", not comparable across files
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sequences)

    def subset(self, indices: Sequence[int], name: str | None = None, note: str | None = None) -> LabelledSet:
        return replace(
            self,
            name=name or self.name,
            ids=[self.ids[i] for i in indices],
            sequences=[self.sequences[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            notes=[*self.notes, note] if note else list(self.notes),
        )


def read_labelled_fasta(
    path: str | Path, name: str, label_field: int = 1, label_transform: Callable[[str], str] | None = None
) -> LabelledSet:
    """Records of a FASTA file with the label in header field `label_field` (0 is the id; fields split on
    whitespace). A header without that field raises ValueError naming the file and record."""
    path = Path(path)
    ids, sequences, labels = [], [], []
    for index, record in enumerate(read_fasta(path)):
        fields = record.description.split()
        if len(fields) <= label_field:
            raise ValueError(
                f"{path}: record {index} ({record.id!r}) has no header field {label_field} to read the label from "
                f"(header {record.description!r}); put the label after the id, or use --label-field"
            )
        label = fields[label_field]
        ids.append(record.id)
        sequences.append(record.sequence)
        labels.append(label_transform(label) if label_transform else label)
    return LabelledSet(name, path, ids, sequences, labels)


def read_labelled_csv(
    path: str | Path, name: str, sequence_column: str, label_column: str, id_column: str | None = None
) -> LabelledSet:
    """Rows of a CSV/TSV file (tab-separated when the name says .tsv); a missing column or an empty cell raises
    ValueError naming the file, line and column."""
    path = Path(path)
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    ids, sequences, labels = [], [], []
    with open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        wanted = [column for column in (sequence_column, label_column, id_column) if column]
        missing = [column for column in wanted if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} has no column {missing[0]!r}; its columns: {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            for column in wanted:
                if not (row[column] or "").strip():
                    raise ValueError(f"{path}, line {line}: empty {column!r}")
            ids.append(row[id_column].strip() if id_column else f"{path.name}:{line}")
            sequences.append(row[sequence_column].strip())
            labels.append(row[label_column].strip())
    if not sequences:
        raise ValueError(f"{path}: no data rows")
    return LabelledSet(name, path, ids, sequences, labels, has_ids=id_column is not None)


@dataclass(frozen=True)
class LabelColumns:
    """Where the labels are: a FASTA header field, or CSV columns."""

    label_field: int = 1
    sequence_column: str = "sequence"
    label_column: str = "label"
    id_column: str | None = None


def read_labelled_file(path: str | Path, name: str, columns: LabelColumns = LabelColumns()) -> LabelledSet:
    """A labelled FASTA or CSV/TSV file (the format from the name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} file not found: {path}")
    if file_format(path) == "fasta":
        return read_labelled_fasta(path, name, columns.label_field)
    return read_labelled_csv(path, name, columns.sequence_column, columns.label_column, columns.id_column)


def clean_sequences(data: LabelledSet, residues: str, policy: str = "error") -> LabelledSet:
    """Upper-cased sequences without a trailing stop codon, under the one residue policy (`data.residues`):
    "error" names the file and record, "skip" leaves records out (noted), "X"/"drop" repair them."""
    check_residue_policy(policy)
    invalid = invalid_character_pattern(residues)
    keep, sequences = [], []
    for index, (record_id, sequence) in enumerate(zip(data.ids, data.sequences)):
        sequence, _ = strip_stop_codon(sequence.upper())
        where = f"{data.path}: record {index} ({record_id!r})"
        cleaned = apply_residue_policy(sequence, policy, invalid, where)
        if cleaned:
            keep.append(index)
            sequences.append(cleaned)
        elif cleaned is not None:
            raise ValueError(f"{where}: empty sequence")
    skipped = len(data) - len(keep)
    cleaned_set = data.subset(keep, note=f"{skipped} records skipped (invalid residues)" if skipped else None)
    cleaned_set.sequences = sequences
    return cleaned_set


def sample_records(data: LabelledSet, max_records: int | None, seed: int) -> LabelledSet:
    """A seeded random subset of `max_records` records (in file order), or the set itself."""
    if max_records is None or max_records >= len(data):
        return data
    chosen = np.sort(np.random.default_rng(seed).choice(len(data), size=max_records, replace=False))
    return data.subset(chosen.tolist(), note=f"random subset of {max_records} of {len(data)} records (seed {seed})")


def hold_out_validation(data: LabelledSet, problem: str, seed: int) -> tuple[LabelledSet, LabelledSet]:
    """(train, validation): a seeded, for classification stratified, `VALIDATION_FRACTION` of `data` held out."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(data))
    stratify = data.labels if problem == "classification" and _every_class_twice(data.labels) else None
    train, valid = train_test_split(positions, test_size=VALIDATION_FRACTION, random_state=seed, stratify=stratify)
    how = "stratified " if stratify is not None else ""
    note = f"{how}{VALIDATION_FRACTION:.0%} of {data.path.name} held out for selection (seed {seed})"
    return (
        data.subset(sorted(train), name="train", note=f"the rest of {data.path.name} after that hold-out"),
        data.subset(sorted(valid), name="validation", note=note),
    )


def _every_class_twice(labels: list[str]) -> bool:
    _, counts = np.unique(labels, return_counts=True)
    return bool(counts.min() >= 2)


def check_no_overlap(fitted_on: Sequence[LabelledSet], test: LabelledSet) -> None:
    """Refuse a test set that shares an id (where both files have ids) or an identical sequence with a split the
    probe is fitted or selected on; the error names both files and the first shared records."""
    for split in fitted_on:
        same_ids = set(split.ids) & set(test.ids) if split.has_ids and test.has_ids else set()
        same_sequences = set(split.sequences) & set(test.sequences)
        shared = [
            record_id
            for record_id, sequence in zip(test.ids, test.sequences)
            if record_id in same_ids or sequence in same_sequences
        ]
        if shared:
            raise ValueError(
                f"{test.name} file {test.path} and {split.name} file {split.path} share {len(shared)} records "
                f"(the same id or the same sequence), e.g. {shared[:5]}: a probe tested on proteins it was fitted "
                "or selected on measures memory, not prediction. Remove them from one of the files."
            )


def infer_problem(labels: Sequence[str]) -> str:
    """The problem the labels pose: regression when every label is a number and some are not whole numbers or there
    are more than 10 distinct values, else classification (so 0/1 solubility labels are classes)."""
    try:
        values = {float(label) for label in labels}
    except ValueError:
        return "classification"
    fractional = any(not value.is_integer() for value in values)
    return "regression" if fractional or len(values) > 10 else "classification"


def numeric_labels(data: LabelledSet) -> np.ndarray:
    """Regression targets; a label that is not a number raises ValueError naming the file and record."""
    values = []
    for record_id, label in zip(data.ids, data.labels):
        try:
            values.append(float(label))
        except ValueError:
            raise ValueError(f"{data.path}: record {record_id!r} has label {label!r}, not a number") from None
    return np.asarray(values)


# ---------------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------------


def composition_features(sequences: Sequence[str]) -> np.ndarray:
    """The 20-d amino-acid composition: the fraction of each standard residue (ACDEFGHIKLMNPQRSTVWY) among all the
    residues of the sequence (other letters count in the length only)."""
    features = np.zeros((len(sequences), len(STANDARD_AMINO_ACIDS)))
    for row, sequence in enumerate(sequences):
        for column, residue in enumerate(STANDARD_AMINO_ACIDS):
            features[row, column] = sequence.count(residue)
        features[row] /= max(len(sequence), 1)
    return features


@dataclass(frozen=True)
class EmbeddingSettings:
    """Which embedding a probe reads (`embed_sequences`' options)."""

    layer: int = -1
    pooling: str = "mean"
    token_budget: int = 8192
    window: int | None = None
    stride: int | None = None

    def describe(self) -> str:
        return f"layer {self.layer}, {self.pooling} pooling"


def embedding_cache_key(model: Any, settings: EmbeddingSettings, sequences: Sequence[str]) -> str:
    """A digest of the model's weights fingerprint, the embedding settings and the sequences themselves."""
    from ..inference.embedding import _backbone_of, _model_fingerprint

    digest = hashlib.sha256(_model_fingerprint(_backbone_of(model, allow_stock=False)).encode())
    digest.update(json.dumps(settings.__dict__, sort_keys=True).encode())
    for sequence in sequences:
        digest.update(sequence.encode() + b"\n")
    return digest.hexdigest()[:20]


def cached_embeddings(
    model: Any,
    tokenizer: Any,
    data: LabelledSet,
    cache_dir: Path,
    settings: EmbeddingSettings,
    progress: bool = True,
) -> tuple[np.ndarray, bool]:
    """(pooled embeddings (N, H), whether they came from the cache). Stored in `cache_dir` under a key of the model,
    the settings and the sequences, in parts of `CACHE_CHUNK` sequences, so a killed run resumes at its last part."""
    from safetensors.numpy import load_file, save_file

    key = embedding_cache_key(model, settings, data.sequences)
    complete = cache_dir / f"{data.name}-{key}.safetensors"
    if complete.exists():
        return load_file(complete)["embeddings"], True
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    bar = tqdm(total=len(data), unit="seq", desc=f"embedding {data.name}", disable=not progress)
    for start in range(0, len(data), CACHE_CHUNK):
        part_path = cache_dir / f"{data.name}-{key}.part{start // CACHE_CHUNK:05d}.safetensors"
        if part_path.exists():
            parts.append(load_file(part_path)["embeddings"])
        else:
            parts.append(_embed(model, tokenizer, data.sequences[start : start + CACHE_CHUNK], settings))
            _save_atomically(save_file, parts[-1], part_path)
        bar.update(len(parts[-1]))
    bar.close()
    embeddings = np.concatenate(parts)
    _save_atomically(save_file, embeddings, complete, {"records": str(len(data)), "source": str(data.path)})
    for start in range(0, len(data), CACHE_CHUNK):
        (cache_dir / f"{data.name}-{key}.part{start // CACHE_CHUNK:05d}.safetensors").unlink(missing_ok=True)
    return embeddings, False


def _save_atomically(save_file: Callable, embeddings: np.ndarray, path: Path, metadata: dict | None = None) -> None:
    """A killed run leaves no half-written part that a resume would read back."""
    partial = path.with_name(path.name + ".partial")
    save_file({"embeddings": embeddings}, partial, metadata=metadata)
    os.replace(partial, path)


def _embed(model: Any, tokenizer: Any, sequences: list[str], settings: EmbeddingSettings) -> np.ndarray:
    from ..inference.embedding import embed_sequences

    outputs = embed_sequences(
        model,
        tokenizer,
        sequences,
        layers=settings.layer,
        pooling=settings.pooling,
        token_budget=settings.token_budget,
        window=settings.window,
        stride=settings.stride,
    )
    return np.stack([output[settings.pooling] for output in outputs]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Probes and metrics
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class FittedProbe:
    """The probe fitted with the selected strength, and every candidate's validation score."""

    estimator: Any
    parameter: str  # "C" or "alpha"
    selected: float
    validation_scores: dict[float, float]
    converged: bool


def make_probe(problem: str, strength: float) -> Any:
    """Standardised features into a logistic regression (C = `strength`) or a ridge regression (alpha)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if problem == "classification":
        return make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=2000))
    return make_pipeline(StandardScaler(), Ridge(alpha=strength))


def selection_score(problem: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """What selects the probe's strength on the validation split: accuracy, or Spearman's rho."""
    from scipy.stats import spearmanr
    from sklearn.metrics import accuracy_score

    if problem == "classification":
        return float(accuracy_score(y_true, y_pred))
    rho = spearmanr(y_true, y_pred).statistic
    return float(rho) if np.isfinite(rho) else -1.0


def fit_probe(
    problem: str,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    grid: Sequence[float],
    progress: bool = False,
    description: str = "probe",
) -> FittedProbe:
    """Fit one probe per strength in `grid` on `train` (x, y); keep the best on `valid` (the first of equals)."""
    from sklearn.exceptions import ConvergenceWarning

    best, scores, converged = None, {}, True
    for strength in tqdm(grid, desc=f"fitting {description}", unit="fit", disable=not progress):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            estimator = make_probe(problem, strength).fit(*train)
        scores[strength] = selection_score(problem, valid[1], estimator.predict(valid[0]))
        if best is None or scores[strength] > scores[best[0]]:
            best = (strength, estimator, not any(issubclass(w.category, ConvergenceWarning) for w in caught))
    strength, estimator, converged = best
    return FittedProbe(estimator, "C" if problem == "classification" else "alpha", strength, scores, converged)


def metric_functions(problem: str) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """The test metrics: accuracy, macro F1 and MCC (classification) or Spearman, Pearson and R2 (regression)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, r2_score

    if problem == "classification":
        return {
            "accuracy": accuracy_score,
            "macro_f1": lambda y, p: f1_score(y, p, average="macro", zero_division=0),
            "mcc": matthews_corrcoef,
        }
    return {
        "spearman": lambda y, p: spearmanr(y, p).statistic,
        "pearson": lambda y, p: pearsonr(y, p).statistic,
        "r2": r2_score,
    }


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """The percentile-bootstrap interval of `metric` over test examples (labels and predictions resampled as pairs)."""
    from scipy.stats import bootstrap

    if resamples < 1 or len(y_true) < 2:
        return float("nan"), float("nan")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate resample (one class) gives a warning and a NaN or 0
        result = bootstrap(
            (y_true, y_pred),
            lambda y, p: float(metric(y, p)),
            paired=True,
            vectorized=False,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            random_state=np.random.default_rng(seed),  # `rng` only from scipy 1.15
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def metrics_with_intervals(
    problem: str, y_true: np.ndarray, y_pred: np.ndarray, resamples: int, seed: int
) -> dict[str, Any]:
    """Each metric's value and 95% bootstrap interval: {"accuracy": {"value", "low", "high"}, ...}."""
    results = {}
    for name, metric in metric_functions(problem).items():
        low, high = bootstrap_interval(metric, y_true, y_pred, resamples, seed)
        results[name] = {"value": float(metric(y_true, y_pred)), "low": low, "high": high}
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ProbeTask:
    """What to fit on, select on and test on, and how the results are named on a model card."""

    name: str
    problem: str
    train: LabelledSet
    valid: LabelledSet
    tests: list[LabelledSet]
    task_name: str
    datasets: dict[str, tuple[str, str]]  # test split name -> (model-index dataset id, dataset name)
    protocol: list[str] = field(default_factory=list)


DEEPLOC_FILES = {
    "train": "train_from_eat_lookup_sprot2014.fasta",
    "validation": "deeploc_our_val_set.fasta",
    "deeploc_test": "deeploc_test_set.fasta",
    "setHARD": "setHARD.fasta",
}
DEEPLOC_DATASETS = {
    "deeploc_test": ("deeploc", "DeepLoc 1.0 test set (10 classes)"),
    "setHARD": ("deeploc-sethard", "DeepLoc setHARD (Light Attention's homology-reduced test set, 10 classes)"),
}
DEEPSOL_FILES = {"train_and_validation": "deepsol_val.csv", "deepsol_test": "deepsol_test.csv"}


def task_folder(data_dir: str | Path, name: str, marker: str) -> Path:
    """The data set's folder: `data_dir` itself when it holds `marker`, else `data_dir/name`."""
    data_dir = Path(data_dir)
    for folder in (data_dir, data_dir / name):
        if (folder / marker).is_file():
            return folder
    raise FileNotFoundError(f"{marker} not found in {data_dir} or {data_dir / name}; pass the shared data folder")


def _deeploc_label(header_field: str) -> str:
    """'Cell.membrane-M' -> 'Cell.membrane': the membrane-bound/soluble/unknown flag is another task."""
    return re.sub(r"-[MSU]$", "", header_field)


def deeploc_task(data_dir: str | Path, hard_only: bool = False) -> ProbeTask:
    """DeepLoc 1.0 (see the module docstring): train, Light Attention's validation split, then the DeepLoc test set and
    setHARD (only setHARD with `hard_only`)."""
    folder = task_folder(data_dir, "deeploc", DEEPLOC_FILES["train"])
    splits = {name: read_labelled_fasta(folder / file, name, 1, _deeploc_label) for name, file in DEEPLOC_FILES.items()}
    test_names = ["setHARD"] if hard_only else ["deeploc_test", "setHARD"]
    return ProbeTask(
        name="deeploc-hard" if hard_only else "deeploc",
        problem="classification",
        train=splits["train"],
        valid=splits["validation"],
        tests=[splits[name] for name in test_names],
        task_name="Subcellular localization (frozen-embedding probe)",
        datasets={name: DEEPLOC_DATASETS[name] for name in test_names},
        protocol=[
            "train: DeepLoc 1.0 training proteins recovered from Swiss-Prot 2014 (train_from_eat_lookup_sprot2014)",
            "selection: Light Attention's validation split (deeploc_our_val_set); test: " + ", ".join(test_names),
        ],
    )


def solubility_task(data_dir: str | Path, seed: int = 0) -> ProbeTask:
    """DeepSol: its 62k training sequences are not in the snapshot (labels only), so a stratified 90% of DeepSol's
    validation set trains, the other 10% selects and the standard test set tests (see the module docstring)."""
    folder = task_folder(data_dir, "deepsol", DEEPSOL_FILES["deepsol_test"])
    pool = read_labelled_csv(folder / DEEPSOL_FILES["train_and_validation"], "train", "sequence", "soluble")
    train, valid = hold_out_validation(pool, "classification", seed)
    test = read_labelled_csv(folder / DEEPSOL_FILES["deepsol_test"], "deepsol_test", "sequence", "soluble")
    return ProbeTask(
        name="solubility",
        problem="classification",
        train=train,
        valid=valid,
        tests=[test],
        task_name="Protein solubility (frozen-embedding probe)",
        datasets={"deepsol_test": ("deepsol", "DeepSol test set (soluble / insoluble)")},
        protocol=[
            "DeepSol's 62,478 training sequences are absent from the data snapshot (labels only): not used",
            f"train: a stratified 90% of deepsol_val.csv; selection: the other 10% (seed {seed}); test: deepsol_test",
            "deviates from the paper (trained on 62k): absolute accuracy is lower than published",
        ],
    )


def custom_task(
    train_path: str | Path,
    test_paths: Sequence[str | Path],
    valid_path: str | Path | None = None,
    columns: LabelColumns = LabelColumns(),
    problem: str | None = None,
    seed: int = 0,
) -> ProbeTask:
    """Any labelled FASTA/CSV files; the problem is inferred from the train labels unless given."""
    train = read_labelled_file(train_path, "train", columns)
    problem = problem or infer_problem(train.labels)
    if problem not in PROBLEMS:
        raise ValueError(f"problem must be one of {PROBLEMS}, got {problem!r}")
    if valid_path is not None:
        valid = read_labelled_file(valid_path, "validation", columns)
        selection = f"selection: {Path(valid_path).name}"
    else:
        train, valid = hold_out_validation(train, problem, seed)
        selection = f"selection: {valid.notes[-1]}"
    tests = []
    for path in test_paths:
        name = Path(path).name.split(".")[0]
        name = name if name not in {test.name for test in tests} else f"{name}_{len(tests)}"
        tests.append(read_labelled_file(path, name, columns))
    return ProbeTask(
        name="custom",
        problem=problem,
        train=train,
        valid=valid,
        tests=tests,
        task_name=f"Frozen-embedding probe ({problem})",
        datasets={test.name: (test.name, str(test.path)) for test in tests},
        protocol=[f"train: {Path(train_path).name}", selection, "test: " + ", ".join(str(p) for p in test_paths)],
    )


# ---------------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSettings:
    """How `run_probe` fits and measures (the command line's options)."""

    embedding: EmbeddingSettings = EmbeddingSettings()
    c_grid: tuple[float, ...] = DEFAULT_C_GRID
    alpha_grid: tuple[float, ...] = DEFAULT_ALPHA_GRID
    bootstrap: int = 1000
    seed: int = 0
    max_train: int | None = None
    max_valid: int | None = None
    max_test: int | None = None
    invalid_residues: str = "error"
    progress: bool = True


def prepare_splits(task: ProbeTask, settings: ProbeSettings, residues: str) -> list[LabelledSet]:
    """[train, validation, *tests]: cleaned, subsampled as asked, and checked for train/test overlap."""
    limits = [settings.max_train, settings.max_valid] + [settings.max_test] * len(task.tests)
    splits = []
    for data, limit in zip([task.train, task.valid, *task.tests], limits):
        cleaned = clean_sequences(data, residues, settings.invalid_residues)
        splits.append(sample_records(cleaned, limit, settings.seed))
    for test in splits[2:]:
        check_no_overlap(splits[:2], test)
    return splits


def encode_targets(problem: str, splits: list[LabelledSet]) -> list[np.ndarray]:
    """Class ids (over the sorted labels of every split) or numbers, one array per split."""
    if problem == "regression":
        return [numeric_labels(split) for split in splits]
    classes = sorted({label for split in splits for label in split.labels})
    index = {label: position for position, label in enumerate(classes)}
    return [np.asarray([index[label] for label in split.labels]) for split in splits]


def split_features(
    model: Any, tokenizer: Any, splits: list[LabelledSet], cache_dir: Path, settings: ProbeSettings
) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """{"model": [per split (N, H)], "composition": [per split (N, 20)]}, and what was cached or computed."""
    embedded, cache = [], {}
    for split in splits:
        started = time.perf_counter()
        features, from_cache = cached_embeddings(
            model, tokenizer, split, cache_dir, settings.embedding, settings.progress
        )
        embedded.append(features)
        cache[split.name] = {"from_cache": from_cache, "seconds": round(time.perf_counter() - started, 2)}
    composition = [composition_features(split.sequences) for split in splits]
    return {"model": embedded, "composition": composition}, cache


def run_probe(
    model: Any, tokenizer: Any, task: ProbeTask, settings: ProbeSettings, output_dir: str | Path
) -> dict[str, Any]:
    """Embed (cached), fit the model and composition probes, test them; returns the results for `probe_report`."""
    residues = getattr(tokenizer, "valid_residues", DEFAULT_RESIDUES)
    splits = prepare_splits(task, settings, residues)
    targets = encode_targets(task.problem, splits)
    features, cache = split_features(model, tokenizer, splits, Path(output_dir) / "embeddings", settings)
    grid = settings.c_grid if task.problem == "classification" else settings.alpha_grid
    results = []
    for kind, per_split in features.items():
        probe = fit_probe(
            task.problem,
            (per_split[0], targets[0]),
            (per_split[1], targets[1]),
            grid,
            settings.progress,
            f"{kind} probe",
        )
        for test, x_test, y_test in zip(splits[2:], per_split[2:], targets[2:]):
            predictions = probe.estimator.predict(x_test)
            metrics = metrics_with_intervals(task.problem, y_test, predictions, settings.bootstrap, settings.seed)
            results.append({"features": kind, "test": test.name, "n": len(test), "probe": probe, "metrics": metrics})
    splits_info = [{"split": s.name, "file": str(s.path), "records": len(s), "notes": s.notes} for s in splits]
    unseen = _unseen_test_labels(task.problem, splits)
    return {"task": task, "settings": settings, "results": results, "splits": splits_info, "cache": cache, **unseen}


def _unseen_test_labels(problem: str, splits: list[LabelledSet]) -> dict[str, Any]:
    if problem != "classification":
        return {"unseen_test_labels": {}}
    known = set(splits[0].labels)
    return {"unseen_test_labels": {s.name: sorted(set(s.labels) - known) for s in splits[2:] if set(s.labels) - known}}


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------

FEATURE_NAMES = {"model": "model embedding", "composition": "amino-acid composition (20-d)"}
METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "mcc": "MCC",
    "spearman": "Spearman",
    "pearson": "Pearson",
    "r2": "R2",
}


def _interval(metric: dict[str, float]) -> str:
    if not (np.isfinite(metric["low"]) and np.isfinite(metric["high"])):
        return "n/a"
    return f"[{metric['low']:.3f}, {metric['high']:.3f}]"


def result_rows(outcome: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The results table: one row per (features, test set), each metric with its bootstrap interval."""
    settings: ProbeSettings = outcome["settings"]
    rows, metric_columns = [], []
    for result in outcome["results"]:
        probe: FittedProbe = result["probe"]
        features = FEATURE_NAMES[result["features"]]
        if result["features"] == "model":
            features += f" ({settings.embedding.describe()})"
        row = {"features": features, "test set": result["test"], "n": result["n"]}
        for name, metric in result["metrics"].items():
            row[METRIC_NAMES[name]] = metric["value"]
            row[f"{METRIC_NAMES[name]} 95% CI"] = _interval(metric)
        row["selected " + probe.parameter] = f"{probe.selected:g}"
        row["validation score"] = probe.validation_scores[probe.selected]
        rows.append(row)
        metric_columns = [column for column in row if column not in ("features", "test set", "n")]
    return rows, ["features", "test set", "n", *metric_columns]


def model_index_entries(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's (not the baseline's) primary metric on each test set: accuracy, or Spearman."""
    from .report import model_index_entry

    task: ProbeTask = outcome["task"]
    primary = "accuracy" if task.problem == "classification" else "spearman"
    entries = []
    for result in outcome["results"]:
        if result["features"] != "model":
            continue
        dataset, dataset_name = task.datasets[result["test"]]
        entries.append(
            model_index_entry(
                task="protein-classification" if task.problem == "classification" else "protein-regression",
                task_name=task.task_name,
                dataset=dataset,
                dataset_name=dataset_name,
                dataset_split="test",
                metric=primary,
                metric_name=f"{METRIC_NAMES[primary]} (linear probe, {outcome['settings'].embedding.describe()})",
                value=result["metrics"][primary]["value"],
            )
        )
    return entries


def probe_details(outcome: dict[str, Any]) -> dict[str, Any]:
    """Everything else, for the JSON record: protocol, splits, settings, every candidate's validation score."""
    task: ProbeTask = outcome["task"]
    settings: ProbeSettings = outcome["settings"]
    fits = {}
    for result in outcome["results"]:
        probe: FittedProbe = result["probe"]
        fits[result["features"]] = {
            "parameter": probe.parameter,
            "selected": probe.selected,
            "validation_scores": {f"{key:g}": value for key, value in probe.validation_scores.items()},
            "converged": probe.converged,
        }
    return {
        "task": task.name,
        "problem": task.problem,
        "protocol": task.protocol,
        "splits": outcome["splits"],
        "embedding": settings.embedding.__dict__,
        "bootstrap_resamples": settings.bootstrap,
        "seed": settings.seed,
        "probe": "StandardScaler + " + ("LogisticRegression" if task.problem == "classification" else "Ridge"),
        "fits": fits,
        "metrics": [{"features": r["features"], "test": r["test"], **r["metrics"]} for r in outcome["results"]],
        "embedding_cache": outcome["cache"],
        "unseen_test_labels": outcome["unseen_test_labels"],
    }


def write_probe_report(output_dir: str | Path, model: str, outcome: dict[str, Any]) -> dict[str, Path]:
    """probe_results.json / .md / probe_model_index.json via `report.write_report`."""
    from .report import write_report

    splits = [{k: v if k != "notes" else "; ".join(v) for k, v in split.items()} for split in outcome["splits"]]
    return write_report(
        output_dir,
        benchmark="probe",
        model=model,
        tables={
            f"{outcome['task'].name}: test metrics": result_rows(outcome),
            "Data": (splits, ["split", "file", "records", "notes"]),
            "Protocol": ([{"step": line} for line in outcome["task"].protocol], ["step"]),
        },
        model_index=model_index_entries(outcome),
        details=probe_details(outcome),
    )
