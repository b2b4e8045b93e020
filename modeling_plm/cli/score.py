"""`plm score MODEL`: sequence likelihoods and zero-shot variant-effect scores, written as CSV."""

import argparse
import csv
import math
import sys
import time
from pathlib import Path
from typing import Any

from transformers import AutoModelForMaskedLM

from ..data.fasta import read_fasta
from ..data.residues import strip_stop_codon
from ..hub.loading import load_pretrained, load_tokenizer
from ..inference.scoring import (
    DEFAULT_BATCH_SIZE,
    SEQUENCE_SCORES,
    VARIANT_METHODS,
    _residue_ids,
    causal_log_likelihood,
    parse_mutations,
    pseudo_log_likelihood,
    score_variants,
)
from . import options

__all__ = ["HELP", "add_arguments", "run"]

HELP = "sequence likelihoods (PLL, causal) and zero-shot variant-effect scores (ESM-1v masked marginals, CLM)"
DESCRIPTION = """\
Score protein sequences or mutations with a PLM checkpoint (one checkpoint serves every method).

Whole sequences (--sequence or --fasta) get their pseudo-log-likelihood (PLL: each residue masked in turn) and/or
their causal log-likelihood (left to right, <eos> included), as sums with per-token means.

Mutations of a wild type (--sequence or --wild-type-fasta, with --mutations-csv or --mutation) are written A23V or
A23V:G45D, numbered so that the first residue of the wild type is --offset. Every wild-type letter is checked. A DMS
CSV gets a score column added next to its own columns; with --target-column the Spearman correlation is printed."""
EPILOG = """\
examples:
  # ESM's TEM-1 beta-lactamase DMS (4,996 single mutants; numbered from the start of the full 286-residue
  # precursor, so offset 1); Spearman of the masked-marginal scores against the 2500 ug/mL ampicillin fitness
  plm score runs/demo/final \\
      --wild-type-fasta ../shared/data/proteingym_singles/wildtypes.fasta --wild-type-id BLAT_ECOLX_Stiffler_2015.csv \\
      --mutations-csv ../shared/data/esm_variant_examples/BLAT_ECOLX_Ranganathan2015.csv --target-column 2500 \\
      --output blat_scores.csv
  # the same with the causal log-likelihood ratio
  plm score runs/demo/final --wild-type-fasta ... --mutations-csv ... --target-column 2500 --method causal
  # a wild type longer than the model's context: each mutant scored in a 512-residue window around its mutations
  plm score runs/demo/final --wild-type-fasta ... --mutations-csv ... --method wt-marginal --window 512
  # a few mutants given on the command line, printed as CSV
  plm score runs/demo/final --sequence MKTAYIAKQRQISFVKSHFSRQ --mutation K2A --mutation K2A:Q11E
  # per-sequence PLL and causal log-likelihood of a FASTA
  plm score runs/demo/final --fasta proteins.fasta --output likelihoods.csv --score both"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `plm score`'s arguments (and its description and examples) to `parser`; run it with `run(args)`."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", help="checkpoint folder (or hub id) of a PLM language model")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequence", help="one sequence: scored itself, or the wild type of the mutations")
    source.add_argument("--fasta", help="FASTA(.gz) of sequences to score (PLL and/or causal log-likelihood)")
    source.add_argument("--wild-type-fasta", help="FASTA holding the wild type of the mutations (see --wild-type-id)")
    parser.add_argument("--wild-type-id", help="record of --wild-type-fasta to use (default: its only record)")
    variants = parser.add_mutually_exclusive_group()
    variants.add_argument("--mutations-csv", help="CSV of mutations (a DMS table); the scores are added as a column")
    variants.add_argument(
        "--mutation", action="append", help="a mutation such as A23V or A23V:G45D (repeatable); output mutation,score"
    )
    parser.add_argument("--mutation-column", default="mutant", help="column of --mutations-csv holding the mutations")
    parser.add_argument("--target-column", help="column of measured fitness: print the Spearman correlation with it")
    parser.add_argument(
        "--offset", type=int, default=1, help="number of the wild type's first residue in the mutations' numbering"
    )
    parser.add_argument(
        "--method",
        choices=VARIANT_METHODS,
        default="masked-marginal",
        help="variant-effect score (default: %(default)s)",
    )
    parser.add_argument(
        "--score",
        choices=(*SEQUENCE_SCORES, "both"),
        default="both",
        help="whole-sequence score for --sequence/--fasta without mutations (default: %(default)s)",
    )
    parser.add_argument(
        "--score-column", help="name of the added score column (default: the method, e.g. masked_marginal)"
    )
    parser.add_argument("--output", help="CSV to write (default: print the CSV to stdout, the summary to stderr)")
    parser.add_argument(
        "--window",
        type=options.positive_int,
        help="residues per window for a sequence longer than it (default: the model's context): masked scores read "
        "each position in a window centred on it, wt-marginal and causal each mutant in one around its mutations",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per forward pass")
    parser.add_argument(
        "--device", type=options.device, default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def _read_wild_type(path: str, record_id: str | None) -> tuple[str, str]:
    records = list(read_fasta(path))
    if record_id is None:
        if len(records) != 1:
            raise ValueError(f"{path} holds {len(records)} records; choose the wild type with --wild-type-id")
        return records[0].id, records[0].sequence
    matches = [record for record in records if record.id == record_id]
    if len(matches) != 1:
        found = "no record" if not matches else f"{len(matches)} records"
        raise ValueError(f"{path} has {found} with id {record_id!r}")
    return matches[0].id, matches[0].sequence


def _check_score_usage(args: argparse.Namespace) -> None:
    has_mutations = args.mutations_csv is not None or args.mutation is not None
    if has_mutations and args.fasta is not None:
        raise ValueError(
            "--fasta scores whole sequences; give the wild type of mutations with --sequence or --wild-type-fasta"
        )
    if not has_mutations and args.wild_type_fasta is not None:
        raise ValueError(
            "--wild-type-fasta needs mutations (--mutations-csv or --mutation); use --fasta to score sequences"
        )
    if args.wild_type_id is not None and args.wild_type_fasta is None:
        raise ValueError("--wild-type-id selects a record of --wild-type-fasta")
    if args.target_column is not None and args.mutations_csv is None:
        raise ValueError("--target-column needs --mutations-csv")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")


def _parse_target(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        return math.nan  # an empty or non-numeric cell is a missing measurement
    return number


def _write_csv(path: str | None, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    handle = open(path, "w", newline="", encoding="utf-8") if path else sys.stdout
    try:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if path:
            handle.close()


def _score_mutations_csv(args, *, model, tokenizer, wild_type: str, report) -> int:
    from scipy.stats import spearmanr

    path = Path(args.mutations_csv)
    with open(path, newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: ESM's DMS files start with a BOM
        reader = csv.DictReader(handle)
        fieldnames = list(reader.fieldnames or [])
        rows = list(reader)
    for column in (args.mutation_column, args.target_column):
        if column is not None and column not in fieldnames:
            raise ValueError(f"{path} has no column {column!r}; its columns are {', '.join(map(repr, fieldnames))}")
    score_column = args.score_column or args.method.replace("-", "_")
    if score_column in fieldnames:
        raise ValueError(f"{path} already has a column {score_column!r}; name the new one with --score-column")
    if not rows:
        raise ValueError(f"{path} has no rows")
    mutations = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        spec = row[args.mutation_column]
        try:
            parse_mutations(spec, wild_type, args.offset)
        except ValueError as error:
            raise ValueError(f"{path}, line {line}: {error}") from error
        mutations.append(spec)

    started = time.perf_counter()
    scores = score_variants(
        model,
        tokenizer,
        wild_type,
        mutations,
        method=args.method,
        offset=args.offset,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        window=args.window,
    )
    elapsed = time.perf_counter() - started
    for row, score in zip(rows, scores):
        row[score_column] = repr(score)
    _write_csv(args.output, [*fieldnames, score_column], rows)
    report(
        f"Scored {len(scores)} mutants of a {len(wild_type)}-residue wild type with {args.method} in {elapsed:.1f} s"
    )
    if args.target_column is not None:
        pairs = [
            (score, target)
            for score, target in zip(scores, (_parse_target(row[args.target_column]) for row in rows))
            if math.isfinite(target)
        ]
        if len(pairs) < 2:
            raise ValueError(f"column {args.target_column!r} has {len(pairs)} numeric values; a Spearman needs 2")
        rho = float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic)
        report(f"Spearman vs {args.target_column!r}: {rho:.4f} (n={len(pairs)})")
    if args.output:
        report(f"Wrote {args.output}")
    return 0


def _score_sequences(args, *, model, tokenizer, records: list[tuple[str, str]], report) -> int:
    for record_id, sequence in records:
        _residue_ids(tokenizer, sequence, f"record {record_id!r}")
    sequences = [sequence for _, sequence in records]
    progress = not args.no_progress
    fieldnames = ["id", "length"]
    columns: dict[str, list[float]] = {}
    started = time.perf_counter()
    if args.score in ("pseudo-log-likelihood", "both"):
        totals = pseudo_log_likelihood(
            model, tokenizer, sequences=sequences, batch_size=args.batch_size, progress=progress, window=args.window
        )
        columns["pseudo_log_likelihood"] = totals
        columns["pseudo_log_likelihood_per_residue"] = [t / len(s) for t, s in zip(totals, sequences)]
    if args.score in ("causal", "both"):
        totals = causal_log_likelihood(
            model, tokenizer, sequences=sequences, batch_size=args.batch_size, progress=progress
        )
        columns["causal_log_likelihood"] = totals
        columns["causal_log_likelihood_per_token"] = [t / (len(s) + 1) for t, s in zip(totals, sequences)]
    elapsed = time.perf_counter() - started
    fieldnames += list(columns)
    rows = [
        {"id": record_id, "length": len(sequence), **{name: repr(values[n]) for name, values in columns.items()}}
        for n, (record_id, sequence) in enumerate(records)
    ]
    _write_csv(args.output, fieldnames, rows)
    report(f"Scored {len(records)} sequences ({args.score}) in {elapsed:.1f} s")
    if args.output:
        report(f"Wrote {args.output}")
    return 0


def run(args: argparse.Namespace) -> int:
    """`plm score`: the arguments of `add_arguments`. Returns the exit status (user errors raise ValueError, which
    `plm` turns into a message and exit code 2)."""

    def report(message: str) -> None:
        # With --output the CSV goes to the file and the summary to stdout; without it stdout is the CSV.
        print(message, file=sys.stdout if args.output else sys.stderr)

    _check_score_usage(args)
    if args.wild_type_fasta is not None:
        _, wild_type = _read_wild_type(args.wild_type_fasta, args.wild_type_id)
    else:
        wild_type = args.sequence
    tokenizer = load_tokenizer(args.model)
    model = load_pretrained(AutoModelForMaskedLM, args.model).to(options.default_device(args.device)).eval()
    if args.mutations_csv is not None:
        return _score_mutations_csv(args, model=model, tokenizer=tokenizer, wild_type=wild_type.upper(), report=report)
    if args.mutation is not None:
        scores = score_variants(
            model,
            tokenizer,
            wild_type,
            args.mutation,
            method=args.method,
            offset=args.offset,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            window=args.window,
        )
        column = args.score_column or args.method.replace("-", "_")
        rows = [{"mutation": m, column: repr(s)} for m, s in zip(args.mutation, scores)]
        _write_csv(args.output, ["mutation", column], rows)
        if args.output:
            report(f"Wrote {args.output}")
        return 0
    if args.fasta is not None:
        records = _fasta_records(args.fasta, report)
    else:
        records = [("sequence", args.sequence)]
    return _score_sequences(args, model=model, tokenizer=tokenizer, records=records, report=report)


def _fasta_records(path: str, report) -> list[tuple[str, str]]:
    """(id, sequence) of each record; a trailing stop codon `*` is removed and counted (`data.residues`)."""
    records, stripped = [], 0
    for record in read_fasta(path):
        sequence, had_stop = strip_stop_codon(record.sequence)
        stripped += had_stop
        records.append((record.id, sequence))
    if stripped:
        report(f"{path}: removed the trailing stop codon '*' of {stripped} record{'s' if stripped > 1 else ''}")
    return records
