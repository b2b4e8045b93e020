"""`plm eval probe MODEL --task deeploc|deeploc-hard|solubility|custom`: frozen-embedding linear probes beside the
amino-acid composition baseline (the work is in `modeling_plm.evaluation.probe`)."""

import argparse
import time
from pathlib import Path

from transformers import AutoModel

from ..data.fasta import find_data_dir
from ..data.residues import INVALID_RESIDUE_POLICIES
from ..evaluation.probe import (
    DEFAULT_ALPHA_GRID,
    DEFAULT_C_GRID,
    EmbeddingSettings,
    LabelColumns,
    ProbeSettings,
    custom_task,
    deeploc_task,
    result_rows,
    run_probe,
    solubility_task,
    write_probe_report,
)
from ..evaluation.report import markdown_table
from ..inference.embedding import POOLING_METHODS
from . import options
from .eval import add_runtime_arguments, load_model

__all__ = ["HELP", "add_arguments", "run"]

TASKS = ("deeploc", "deeploc-hard", "solubility", "custom")
HELP = "frozen-embedding probes (DeepLoc, DeepSol, your labelled files) beside an amino-acid composition baseline"
DESCRIPTION = """\
Embed every sequence with the frozen model (one layer, pooled over the residues), fit a linear probe on the train
split (standardised features; logistic regression for classes, ridge regression for numbers), choose its strength
(C, alpha) on the validation split, and test it. The same probe on the 20-d amino-acid composition is the baseline,
in the same table. Test metrics (accuracy, macro F1, MCC; or Spearman, Pearson, R2) come with 95% percentile-bootstrap
intervals over the test examples.

Tasks: deeploc (DeepLoc 1.0, 10 classes: test set and setHARD), deeploc-hard (setHARD only), solubility (DeepSol; its
training sequences are not in the data snapshot, so 90% of its validation set trains and 10% selects), custom (your
files: FASTA with the label in a header field, or CSV/TSV with sequence and label columns).

A test record with the same id or the same sequence as a train or validation record is refused (it names both files).
Embeddings are cached in OUTPUT_DIR/embeddings (keyed by the model's weights, the settings and the sequences): a
rerun only refits. Writes OUTPUT_DIR/probe_results.{json,md} and probe_model_index.json."""
EPILOG = """\
examples:
  plm eval probe runs/demo/final --task deeploc --output-dir evals/demo
  plm eval probe runs/demo/final --task deeploc --max-train 2000 --max-test 500 --output-dir evals/quick
  plm eval probe runs/demo/final --task solubility --layer -2 --pooling max --output-dir evals/demo
  # your files: labels in FASTA header field 1 (">id label ..."), or CSV columns
  plm eval probe runs/demo/final --task custom --train train.fasta --valid valid.fasta --test test.fasta \\
      --output-dir evals/mine
  plm eval probe runs/demo/final --task custom --train train.csv --test test.csv --label-column stability \\
      --problem regression --output-dir evals/stability"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `plm eval probe`'s arguments (and its description and examples) to `parser`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.add_argument("model", help="model folder or hub id (any modeling_plm checkpoint; its backbone is used)")
    parser.add_argument("--task", choices=TASKS, default="deeploc", help="benchmark (default: %(default)s)")
    parser.add_argument(
        "--output-dir", required=True, type=options.output_folder, help="folder for the results and embedding cache"
    )
    parser.add_argument("--data-dir", help="the shared data folder (default: $PLM_DATA_DIR or ../shared/data)")
    _add_custom_arguments(parser)
    _add_embedding_arguments(parser)
    _add_probe_arguments(parser)
    add_runtime_arguments(parser)
    return parser


def _add_custom_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("custom task (labelled FASTA or CSV/TSV files)")
    group.add_argument("--train", help="train file")
    group.add_argument("--valid", help="validation file (default: a stratified 10%% of --train)")
    group.add_argument("--test", action="append", help="test file (repeatable)")
    group.add_argument(
        "--label-field",
        type=int,
        default=1,
        help="FASTA: whitespace-separated header field holding the label (0 is the id; default: 1)",
    )
    group.add_argument("--sequence-column", default="sequence", help="CSV: sequence column (default: %(default)s)")
    group.add_argument("--label-column", default="label", help="CSV: label column (default: %(default)s)")
    group.add_argument("--id-column", help="CSV: id column, also checked for train/test overlap (default: none)")
    group.add_argument(
        "--problem",
        choices=("auto", "classification", "regression"),
        default="auto",
        help="auto: regression when every train label is a number and some are fractional or there are more "
        "than 10 distinct ones",
    )


def _add_embedding_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("embeddings")
    group.add_argument("--layer", type=int, default=-1, help="hidden state (0 embeddings, -1 last; default: -1)")
    group.add_argument("--pooling", choices=POOLING_METHODS, default="mean", help="default: %(default)s")
    group.add_argument("--token-budget", type=options.positive_int, default=8192, help="tokens per forward pass")
    group.add_argument("--window", type=int, default=None, help="residues per window for long sequences")
    group.add_argument("--stride", type=int, default=None, help="residues between windows (default: window / 2)")
    group.add_argument(
        "--invalid-residues",
        choices=INVALID_RESIDUE_POLICIES,
        default="error",
        help="characters outside the residue alphabet: error (names the file and record), skip, X or drop",
    )


def _add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("probe and metrics")
    group.add_argument(
        "--c-grid", type=float, nargs="+", default=list(DEFAULT_C_GRID), help="logistic-regression C candidates"
    )
    group.add_argument(
        "--alpha-grid", type=float, nargs="+", default=list(DEFAULT_ALPHA_GRID), help="ridge alpha candidates"
    )
    group.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (0: none)")
    group.add_argument("--seed", type=int, default=0, help="seed of subsets, hold-outs and the bootstrap")
    group.add_argument("--max-train", type=options.positive_int, help="a random subset of the train split")
    group.add_argument("--max-valid", type=options.positive_int, help="a random subset of the validation split")
    group.add_argument("--max-test", type=options.positive_int, help="a random subset of each test split")


def build_task(args: argparse.Namespace):
    """The `ProbeTask` the arguments name; files of the custom task only with --task custom."""
    custom_files = [args.train, args.valid, args.test]
    if args.task != "custom":
        if any(custom_files):
            raise ValueError(f"--train/--valid/--test are for --task custom, not --task {args.task}")
        data_dir = args.data_dir or find_data_dir()
        if data_dir is None:
            raise FileNotFoundError("no shared data folder found: pass --data-dir or set PLM_DATA_DIR")
        if args.task == "solubility":
            return solubility_task(data_dir, seed=args.seed)
        return deeploc_task(data_dir, hard_only=args.task == "deeploc-hard")
    if not args.train or not args.test:
        raise ValueError("--task custom needs --train FILE and at least one --test FILE")
    columns = LabelColumns(args.label_field, args.sequence_column, args.label_column, args.id_column)
    problem = None if args.problem == "auto" else args.problem
    return custom_task(args.train, args.test, args.valid, columns, problem, seed=args.seed)


def probe_settings(args: argparse.Namespace) -> ProbeSettings:
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    embedding = EmbeddingSettings(args.layer, args.pooling, args.token_budget, args.window, args.stride)
    return ProbeSettings(
        embedding=embedding,
        c_grid=tuple(args.c_grid),
        alpha_grid=tuple(args.alpha_grid),
        bootstrap=args.bootstrap,
        seed=args.seed,
        max_train=args.max_train,
        max_valid=args.max_valid,
        max_test=args.max_test,
        invalid_residues=args.invalid_residues,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    """`plm eval probe`: read the task, load the model, run the probes, write the report. Returns the exit status."""
    task = build_task(args)  # data errors before the model loads
    settings = probe_settings(args)
    model, tokenizer = load_model(args, AutoModel)
    started = time.perf_counter()
    outcome = run_probe(model, tokenizer, task, settings, args.output_dir)
    paths = write_probe_report(args.output_dir, str(args.model), outcome)
    print(markdown_table(*result_rows(outcome)))
    print(f"{task.name}: done in {time.perf_counter() - started:.1f} s; wrote {paths['markdown']}, {paths['json']}")
    for split, labels in outcome["unseen_test_labels"].items():
        print(f"note: {split} has labels the train split lacks: {labels}")
    print(f"model index: {Path(paths['model_index'])}")
    return 0
