"""`plm eval proteingym MODEL --data DIR --output-dir OUT`: ProteinGym zero-shot variant effects over every assay."""

import argparse
import sys

from transformers import AutoModelForMaskedLM

from ..inference.scoring import DEFAULT_BATCH_SIZE, VARIANT_METHODS
from . import options
from .eval import add_runtime_arguments, load_model

__all__ = ["HELP", "add_arguments", "run"]

HELP = "ProteinGym zero-shot variant effects: Spearman, AUC, MCC, NDCG, top-10% recall over every assay, with BLOSUM62"
DESCRIPTION = """\
Score every mutant of every ProteinGym substitution assay with a PLM checkpoint and report ProteinGym's metrics
(Spearman, AUC, MCC, NDCG, top-10% recall) per assay, per function category and on average (ProteinGym's
aggregation: per UniProt entry and category, then per category, then the mean of the categories), next to a BLOSUM62
baseline scored the same way. The plain mean Spearman over assays comes with a seeded bootstrap 95% interval.

Data layouts (detected, and printed):
  singles  DIR/dms/<assay>.csv (mutant, score) and DIR/wildtypes.fasta (headers <assay>.csv), with a ProteinGym
           reference CSV beside them for cutoffs and categories (ProteinGym_reference_DMS_substitutions.csv or
           DMS_substitutions.csv, or --reference). Assays are matched to it by name, else by UniProt entry + first
           author + year; the others get the median DMS score as cutoff and the category "unknown".
  v1       the official ProteinGym v1 files: DIR/DMS_substitutions.csv (or --reference) and the DMS folder
           DIR/DMS_ProteinGym_substitutions (or --dms-dir) with mutant, DMS_score, DMS_score_bin; wild type =
           target_seq.

Results go to OUTPUT_DIR: proteingym_results.json (everything), proteingym_results.md (the tables) and
proteingym_model_index.json (for plm export --eval-results). Every (assay, method) result is kept in
OUTPUT_DIR/proteingym_assays/ as soon as it is done, so rerunning the same command resumes where it stopped."""
EPILOG = """\
examples:
  # the 87 single-substitution assays, ESM-1v masked marginals (one masked row per mutated position)
  plm eval proteingym runs/demo/final --data ../shared/data/proteingym_singles --output-dir evals/demo
  # three methods in one run; wt-marginal and causal read a long protein in a window around each mutant
  plm eval proteingym runs/demo/final --data ../shared/data/proteingym_singles --output-dir evals/demo \\
      --methods masked-marginal wt-marginal causal
  # a quick look at two assays, 200 mutants each (a seeded subset: NOT comparable to ProteinGym's numbers)
  plm eval proteingym runs/demo/final --data ../shared/data/proteingym_singles --output-dir evals/quick \\
      --assays 'BLAT_ECOLX_*' --max-mutants-per-assay 200
  # the official ProteinGym v1 download
  plm eval proteingym runs/demo/final --data ProteinGym --reference ProteinGym/DMS_substitutions.csv \\
      --dms-dir ProteinGym/DMS_ProteinGym_substitutions --output-dir evals/v1"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `plm eval proteingym`'s arguments (and its description and examples) to `parser`."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", help="checkpoint folder (or hub id) of a PLM language model")
    parser.add_argument("--data", required=True, help="ProteinGym data folder (singles or v1 layout, see above)")
    parser.add_argument("--reference", help="ProteinGym reference CSV (default: the one in --data)")
    parser.add_argument("--dms-dir", help="folder of the v1 DMS files (default: --data/DMS_ProteinGym_substitutions)")
    parser.add_argument(
        "--output-dir", required=True, type=options.output_folder, help="folder for the results (resumes there)"
    )
    parser.add_argument(
        "--methods",
        "--method",
        nargs="+",
        choices=VARIANT_METHODS,
        default=["masked-marginal"],
        help="variant-effect scores to evaluate (default: %(default)s); pseudo-likelihood costs L rows per mutant",
    )
    parser.add_argument("--assays", nargs="+", help="assay names or shell globs (default: all)")
    parser.add_argument(
        "--max-mutants-per-assay",
        type=options.positive_int,
        help="score a seeded random subset of at most this many mutants per assay: quick, NOT comparable",
    )
    parser.add_argument(
        "--window",
        type=options.positive_int,
        help="residues per window for proteins longer than it (default: the model's context)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of the mutant subsets")
    parser.add_argument("--batch-size", type=options.positive_int, default=DEFAULT_BATCH_SIZE, help="rows per pass")
    add_runtime_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """`plm eval proteingym`: prints the layout found, the summary table and the files written; returns 0 (user
    errors raise ValueError/OSError, which `plm` turns into one line and exit code 2)."""
    from ..evaluation.proteingym import evaluate_proteingym, load_layout
    from ..evaluation.report import markdown_table

    layout = load_layout(args.data, reference=args.reference, dms_dir=args.dms_dir)
    print(f"Data: {layout.describe()}")
    model, tokenizer = load_model(args, AutoModelForMaskedLM)
    outcome = evaluate_proteingym(
        model,
        tokenizer,
        layout,
        args.methods,
        args.output_dir,
        model_name=str(args.model),
        assays=args.assays,
        max_mutants_per_assay=args.max_mutants_per_assay,
        window=args.window,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    title, (rows, columns) = next(iter(outcome.tables.items()))
    print(f"\n{title}\n{markdown_table(rows, columns)}\n")
    if args.max_mutants_per_assay is not None:
        print(f"At most {args.max_mutants_per_assay} mutants per assay: not comparable to ProteinGym's numbers.")
    print(f"Scored {outcome.scored} (assay, method) results, reused {outcome.reused} from {args.output_dir}")
    for path in outcome.paths.values():
        print(f"Wrote {path}")
    sys.stdout.flush()
    return 0
