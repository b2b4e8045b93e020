"""`plm eval contacts MODEL --data STRUCTURES`: contact precision (P@L, L/2, L/5; short, medium, long range) from
attention maps, ESM's logistic regression and the model's contact head (the work is in `evaluation.contacts`)."""

import argparse
import time
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from ..data.fasta import find_data_dir
from ..evaluation.contacts import (
    CONTACT_THRESHOLD,
    ContactSettings,
    evaluate_contacts,
    load_structure_set,
    split_chains,
    summary_rows,
    write_contacts_report,
)
from ..evaluation.report import markdown_table
from ..inference.context import context_residues, special_token_layout
from . import options
from .eval import add_runtime_arguments, load_model

__all__ = ["HELP", "add_arguments", "run"]

HELP = "contact precision (P@L, L/2, L/5 by range) from attention maps, ESM's regression and the contact head"
DESCRIPTION = """\
Score every chain of a structure set (a folder with chains.fasta, ids "path.pdb.gz|chain", and the PDB files; the
parsed C-alpha sequence of each chain must equal the listed one) with:
  attention + APC      every layer's and head's attention map, symmetrised, APC-corrected, averaged;
  logistic regression  ESM's approach: an L1 logistic regression over all those maps, fitted on --train-chains
                       chains (distinct sequences, seeded) and scored on the others; test chains identical in
                       sequence to a training chain, and repeats of a test chain's sequence, are left out
                       (counted); named --train-list/--test-list chains sharing a name or sequence are refused;
  contact head         the checkpoint's own ESM-2 contact head, when it has one.
Contacts: C-beta (C-alpha for glycine) closer than 8 A. Precision of the top L, L/2 and L/5 pairs (L = the chain's
residues) at separations 6-11 (short), 12-23 (medium) and >= 24 (long), averaged over chains. Chains longer than the
model's context are skipped and counted. Writes OUTPUT_DIR/contacts_results.{json,md} and contacts_model_index.json."""
EPILOG = """\
examples:
  plm eval contacts runs/demo/final --data ../shared/data/structures --output-dir evals/demo
  plm eval contacts ./esm2-8m-plm --data ../shared/data/structures --output-dir evals/esm2-8m   # + contact head
  plm eval contacts runs/demo/final --data ../shared/data/structures --train-chains 0 --output-dir evals/quick
  plm eval contacts runs/demo/final --data ../shared/data/structures --max-chains 30 --train-chains 10 \\
      --output-dir evals/quick"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `plm eval contacts`'s arguments (and its description and examples) to `parser`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.add_argument("model", help="model folder or hub id (a modeling_plm checkpoint)")
    parser.add_argument("--data", help="structure folder with chains.fasta (default: the shared data's structures)")
    parser.add_argument("--output-dir", required=True, type=options.output_folder, help="folder for the results")
    parser.add_argument(
        "--train-chains",
        type=int,
        default=20,
        help="chains that fit the logistic regression, drawn with --seed (0: no regression; default: 20)",
    )
    parser.add_argument("--train-list", help="file of training chain names (one per line) instead of drawing them")
    parser.add_argument("--test-list", help="file of test chain names (default: every chain not used for training)")
    parser.add_argument("--max-chains", type=options.positive_int, help="only the first N chains of chains.fasta")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training-chain draw and pair sampling")
    parser.add_argument("--l1-c", type=float, default=0.15, help="inverse L1 strength of the regression (0.15)")
    parser.add_argument(
        "--max-train-pairs", type=options.positive_int, default=100_000, help="residue pairs that fit the regression"
    )
    parser.add_argument("--threshold", type=float, default=CONTACT_THRESHOLD, help="contact distance in A (8)")
    add_runtime_arguments(parser)
    return parser


def structure_folder(args: argparse.Namespace) -> Path:
    if args.data:
        return Path(args.data)
    data_dir = find_data_dir()
    if data_dir is None:
        raise FileNotFoundError("no shared data folder found: pass --data FOLDER (with chains.fasta)")
    return data_dir / "structures"


def read_names(path: str | None) -> list[str] | None:
    """Chain names, one per line (blank lines and # comments skipped), in file order."""
    if path is None:
        return None
    names = [line.split("#")[0].strip() for line in Path(path).read_text().splitlines()]
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"{path}: no chain names")
    return names


def model_class(source: str):
    """The masked LM (for its contact head) when the checkpoint has a contact head, else the backbone."""
    return AutoModelForMaskedLM if getattr(AutoConfig.from_pretrained(source), "contact_head", False) else AutoModel


def run(args: argparse.Namespace) -> int:
    """`plm eval contacts`: read and check the structures, load the model, score, write the report."""
    if args.train_chains < 0:
        raise ValueError(f"--train-chains must be 0 or more, got {args.train_chains}")
    data_dir = structure_folder(args)
    chains = load_structure_set(data_dir, args.max_chains)  # data errors before the model loads
    model, tokenizer = load_model(args, model_class(args.model))
    specials = sum(map(len, special_token_layout(tokenizer)))
    unlimited = getattr(model.config, "max_position_embeddings", None) is None
    max_residues = None if unlimited else context_residues(model.config, specials)
    split = split_chains(
        chains, args.train_chains, args.seed, read_names(args.train_list), read_names(args.test_list), max_residues
    )
    if not split.test:
        raise ValueError(f"no test chains left in {data_dir} (all used for training, skipped or left out)")
    settings = ContactSettings(
        args.train_chains, args.seed, args.l1_c, args.max_train_pairs, args.threshold, not args.no_progress
    )
    started = time.perf_counter()
    outcome = evaluate_contacts(model, tokenizer, split, settings)
    paths = write_contacts_report(args.output_dir, str(args.model), outcome, split, data_dir)
    print(markdown_table(*summary_rows(outcome)))
    left_out = (
        f"{len(split.dropped_same_sequence)} left out (same sequence as a training chain), "
        f"{len(split.repeated_test_sequences)} repeats of a test chain left out, {len(split.skipped_too_long)} too long"
    )
    print(f"{len(split.test)} test chains, {len(split.train)} training chains, {left_out}")
    print(f"done in {time.perf_counter() - started:.1f} s; wrote {paths['markdown']}, {paths['json']}")
    return 0
