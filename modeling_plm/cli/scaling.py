"""`plm scaling plan | fit | validate | sweep`: plan a compute-optimal run, fit scaling laws, validate them against
the released logs, run a sweep. The work itself lives in `modeling_plm.scaling`."""

import argparse
import json
import sys
from pathlib import Path

from ..data.fasta import find_data_dir
from .main import run_command

HELP = "compute-optimal planning, scaling-law fits and sweeps (see: plm scaling --help)"
EXAMPLES = """examples:
  plm scaling plan --flops 1e21 --objective mlm
  plm scaling plan --flops 1e21 --objective clm --laws paper
  plm scaling plan --flops 1e21 --objective mlm --transfer --clm-share 0.15
  plm scaling plan --flops 3e15 --objective mlm --fit runs/scaling/fit.json
  plm scaling fit runs/scaling/ --output-dir runs/scaling/fit            # run folders of `plm pretrain`
  plm scaling fit my_runs.csv --objective mlm --bootstrap 500            # a CSV table (see: plm scaling fit --help)
  plm scaling fit ../shared/data/scaling_protein_lm --output-dir /tmp/released_fit
  plm scaling validate --data ../shared/data/scaling_protein_lm --output-dir docs/figures
  plm scaling sweep --help                                               # the CPU sweep runner
"""
TABLE_HELP = (
    "Run tables (CSV header or JSON keys), one row per point: run, objective, parameters (non-embedding N), loss, "
    "tokens and/or flops (C = 6·N·D fills the other), optional budget (the run's target C), final (true/false; "
    "default: each run's row with the most compute), flops_exact."
)
SWEEP_EXAMPLES = """examples:
  OMP_NUM_THREADS=1 plm scaling sweep training/configs/scaling_cpu.yaml    # the CPU study (~30 min, 1 core)
  OMP_NUM_THREADS=1 python training/scaling_sweep.py training/configs/scaling_cpu.yaml
  plm scaling sweep training/configs/scaling_cpu.yaml --dry-run            # the plan: steps, tokens
  plm scaling sweep training/configs/scaling_cpu.yaml --dry-run --report-dir docs/figures --figure-prefix cpu_
  plm scaling sweep training/configs/scaling_cpu.yaml --time-budget-minutes 10 --objectives mlm
  plm scaling sweep training/configs/scaling_cpu.yaml --only 'mlm_*' --order cheapest
  plm scaling sweep training/configs/scaling_cpu.yaml   # again: finished runs are kept, interrupted ones resume

Outputs (in output_dir): runs.csv / runs.json (finished runs: run, objective, parameters N, budget C, tokens D,
flops = 6ND, flops_exact, loss, ... metrics_path), plan.csv (every run, its status and why it was skipped), and
one folder per run (metrics.jsonl, final/, scaling_run.json). Fit them with `plm scaling fit OUTPUT_DIR/runs.csv`.
"""
RAW = argparse.RawDescriptionHelpFormatter


def add_plan_arguments(plan: argparse.ArgumentParser) -> None:
    from ..scaling.plan import DEFAULT_BATCH_SIZE, DEFAULT_PACK_LENGTH, DEFAULT_TRAIN_FILE, LAW_CHOICES

    plan.add_argument("--flops", type=float, required=True, help="compute budget C in FLOPs (6·N·D), e.g. 1e21")
    plan.add_argument("--objective", choices=("mlm", "clm"), default="mlm")
    plan.add_argument(
        "--laws",
        choices=LAW_CHOICES,
        help="released: the authors' released fitted laws (default); paper: the paper text's exponents, anchored "
        "to the released law at 1e21 (numbers: scaling_protein_lm/SOURCE.txt)",
    )
    plan.add_argument("--transfer", action="store_true", help="CLM pre-training then MLM on one model (mlm only)")
    plan.add_argument("--clm-share", type=float, default=0.15, help="share of compute on CLM with --transfer")
    plan.add_argument("--fit", type=Path, help="a fit.json written by `plm scaling fit` instead of --laws")
    plan.add_argument(
        "--approach",
        choices=("isoflop", "envelope", "parametric"),
        default="isoflop",
        help="which of the fit's N_opt/D_opt laws to use with --fit",
    )
    plan.add_argument(
        "--train-file", default=DEFAULT_TRAIN_FILE, help="training data of the printed command (default: %(default)s)"
    )
    plan.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="packed rows per step of the printed command"
    )
    plan.add_argument(
        "--pack-length", type=int, default=DEFAULT_PACK_LENGTH, help="tokens per packed row of the printed command"
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")


def add_fit_arguments(fit: argparse.ArgumentParser) -> None:
    fit.add_argument(
        "sources",
        nargs="+",
        type=Path,
        help="run folders (or folders of them), .csv/.json tables, or the released-log folder",
    )
    fit.add_argument("--objective", action="append", help="objective(s) to fit (default: every one in the data)")
    fit.add_argument("--output-dir", type=Path, help="write fit.json, runs.csv and PNG figures here")
    fit.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates (resampled runs)")
    fit.add_argument("--parametric-bootstrap", type=int, default=50, help="replicates of the slower parametric fit")
    fit.add_argument(
        "--parametric-points",
        choices=("final", "all"),
        default="final",
        help="fit L(N, D) on final points only or on every curve point",
    )
    fit.add_argument("--min-sizes", type=int, default=3, help="sizes an IsoFLOP budget needs to be fitted")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--no-plots", action="store_true")


def add_validate_arguments(validate: argparse.ArgumentParser) -> None:
    validate.add_argument("--data", type=Path, help="the released logs (default: <shared data>/scaling_protein_lm)")
    validate.add_argument("--output-dir", type=Path, help="write validation.json and PNG figures here")
    validate.add_argument("--bootstrap", type=int, default=200)
    validate.add_argument("--parametric-bootstrap", type=int, default=50)
    validate.add_argument("--seed", type=int, default=0)


def add_sweep_arguments(sweep: argparse.ArgumentParser) -> None:
    from ..scaling.sweep import GRID_OBJECTIVES, ORDERS  # the trainer loads with it: only for `plm scaling ...`

    sweep.add_argument("config", help="sweep YAML (shapes, budgets, objectives, transfer, base, ...)")
    sweep.add_argument("--output-dir", help="where the runs and tables go (default: the YAML's output_dir)")
    sweep.add_argument("--time-budget-minutes", type=float, help="wall-clock budget of this invocation")
    sweep.add_argument("--no-time-budget", action="store_true", help="ignore the YAML's time budget")
    sweep.add_argument("--objectives", nargs="+", choices=GRID_OBJECTIVES, help="grid objectives to run")
    sweep.add_argument("--no-transfer", action="store_true", help="leave out the CLM->MLM transfer arm")
    sweep.add_argument("--order", choices=ORDERS, help="run order (default: the YAML's, else interleaved)")
    sweep.add_argument("--only", nargs="+", metavar="GLOB", help="only runs whose name matches (e.g. 'mlm_*')")
    sweep.add_argument(
        "--dry-run", action="store_true", help="train nothing: plan, and collect the tables of runs already finished"
    )
    sweep.add_argument(
        "--report-dir",
        type=Path,
        help="after the sweep, fit the grid (envelope, IsoFLOP, parametric; bootstrap CIs) into OUTPUT_DIR/fit.json "
        "and write the figures (IsoFLOP, frontier, loss vs compute, transfer) here",
    )
    sweep.add_argument("--figure-prefix", default="", help="prefix of the figure file names (e.g. cpu_)")
    sweep.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates of the frontier fits")
    sweep.add_argument("--parametric-bootstrap", type=int, default=50, help="replicates of the parametric fit")
    sweep.add_argument("--num-threads", type=int, help="torch CPU threads (default: torch's, OMP_NUM_THREADS)")
    sweep.add_argument("--quiet", action="store_true", help="no progress display")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plm scaling",
        description="Compute-optimal planning and scaling-law fits for protein language models "
        "(Cheng et al. 2024, arXiv 2411.02142). C = 6·N·D with N the non-embedding parameters.",
        formatter_class=RAW,
        epilog=EXAMPLES,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser(
        "plan",
        help="N_opt, D_opt, a concrete model and the expected loss for a FLOPs budget",
        formatter_class=RAW,
        description="N_opt = k·C^a and D_opt from the authors' released laws (default), the paper's exponents "
        "(--laws paper) or your fit (--fit); the model shape (width a multiple of 128, 64-wide heads, depth near the "
        "plm_* presets' rule) whose exact non-embedding N is nearest N_opt; its token count C/(6N); and the "
        "`plm pretrain` command that trains it (packed rows, --max-steps from the tokens). With --fit, the fit's "
        "parametric L(N, D) gives the expected validation loss.",
        epilog="examples:\n  plm scaling plan --flops 1e21 --objective mlm\n"
        "  plm scaling plan --flops 1e21 --objective clm --laws paper\n"
        "  plm scaling plan --flops 1e20 --objective clm --json\n"
        "  plm scaling plan --flops 1e21 --objective mlm --transfer\n"
        "  plm scaling plan --flops 1e20 --train-file corpora/uniref50 --batch-size 512 --pack-length 2048\n"
        "  plm scaling plan --flops 3e15 --fit runs/scaling/fit/fit.json --approach isoflop",
    )
    add_plan_arguments(plan)
    fit = commands.add_parser(
        "fit",
        help="fit scaling laws (envelope, IsoFLOP, parametric) with bootstrap intervals",
        formatter_class=RAW,
        description="Fits Hoffmann et al.'s three approaches per objective and prints the exponents with 95% "
        "bootstrap intervals. " + TABLE_HELP,
        epilog="examples:\n  plm scaling fit runs/scaling/ --output-dir runs/scaling/fit\n"
        "  plm scaling fit a.csv b.json runs/x --objective mlm --bootstrap 500 --seed 1\n"
        "  plm scaling fit ../shared/data/scaling_protein_lm --objective clm --no-plots",
    )
    add_fit_arguments(fit)
    validate = commands.add_parser(
        "validate",
        help="refit the released logs of Cheng et al. 2024 and compare with the published exponents",
        formatter_class=RAW,
        description="Reads the released CLM/MLM validation curves, refits the IsoFLOP exponents under several "
        "readings, reproduces the mask-ratio ablation's best ratio and the transfer gain at equal compute.",
        epilog="examples:\n  plm scaling validate --data ../shared/data/scaling_protein_lm\n"
        "  plm scaling validate --data ../shared/data/scaling_protein_lm --output-dir docs/figures --bootstrap 500",
    )
    add_validate_arguments(validate)
    sweep = commands.add_parser(
        "sweep",
        help="run a small scaling sweep (see: plm scaling sweep --help)",
        formatter_class=RAW,
        description="Train a grid of model sizes x compute budgets (MLM, CLM, CLM->MLM transfer) within a "
        "wall-clock budget, and collect the runs table for scaling-law fits.",
        epilog=SWEEP_EXAMPLES,
    )
    add_sweep_arguments(sweep)
    return parser


def plan_command(args: argparse.Namespace) -> int:
    from ..scaling.plan import plan

    if args.fit is not None and args.laws is not None:
        raise ValueError("--laws and --fit both choose the laws: give one")
    result = plan(
        args.flops,
        objective=args.objective,
        transfer=args.transfer,
        clm_share=args.clm_share,
        fit_path=args.fit,
        approach=args.approach,
        laws=args.laws or "released",
        train_file=args.train_file,
        batch_size=args.batch_size,
        pack_length=args.pack_length,
    )
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.render())
    return 0


def fit_command(args: argparse.Namespace) -> int:
    from ..scaling.fit import fit_all, format_fits, save_fits
    from ..scaling.plan import PUBLISHED_LAWS
    from ..scaling.plots import plot_fits
    from ..scaling.runs import read_runs, write_csv_table

    table = read_runs(args.sources)
    print(table.summary())
    fits = []
    for objective in args.objective or table.objectives():
        if objective not in table.objectives():
            raise ValueError(f"no points for objective {objective!r} (the data has {', '.join(table.objectives())})")
        fits.append(
            fit_all(
                table,
                objective,
                bootstrap=args.bootstrap,
                seed=args.seed,
                parametric_bootstrap=args.parametric_bootstrap,
                parametric_use=args.parametric_points,
                min_sizes=args.min_sizes,
            )
        )
    print()
    print(format_fits(fits))
    if args.output_dir is not None:
        out = args.output_dir
        written = [save_fits(fits, out / "fit.json"), write_csv_table(table, out / "runs.csv")]
        if not args.no_plots:
            references = {name: {"Cheng et al. 2024, released": law.n_opt} for name, law in PUBLISHED_LAWS.items()}
            written += plot_fits(table, fits, out, references=references)
        print("\nwrote " + ", ".join(str(path) for path in written))
    return 0


def validate_command(args: argparse.Namespace) -> int:
    from ..scaling.validate import format_report, validate

    data = args.data
    if data is None:
        root = find_data_dir(str(Path.cwd()))
        if root is None:
            raise FileNotFoundError("no shared data folder found: pass --data PATH/scaling_protein_lm")
        data = root / "scaling_protein_lm"
    result = validate(
        data,
        args.output_dir,
        bootstrap=args.bootstrap,
        parametric_bootstrap=args.parametric_bootstrap,
        seed=args.seed,
    )
    print(format_report(result))
    if args.output_dir is not None:
        path = args.output_dir / "validation.json"
        path.write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
        print(f"\nwrote {path} and the figures in {args.output_dir}")
    return 0


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sweep_overrides(args: argparse.Namespace) -> dict:
    """The YAML keys the sweep's flags replace (only the flags given)."""
    overrides = {}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.time_budget_minutes is not None:
        overrides["time_budget_minutes"] = args.time_budget_minutes
    if args.no_time_budget:
        overrides["time_budget_minutes"] = None
    if args.objectives:
        overrides["objectives"] = args.objectives
    if args.no_transfer:
        overrides["transfer"] = None
    if args.order:
        overrides["order"] = args.order
    return overrides


def sweep_command(args: argparse.Namespace) -> int:
    """1 when a run failed (the others still ran and the tables name it), else 0."""
    from ..scaling.sweep import (
        format_results,
        format_transfer,
        load_sweep_config,
        run_sweep,
        transfer_comparison,
        write_report,
    )

    config = load_sweep_config(args.config, overrides=sweep_overrides(args))
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    result = run_sweep(config, dry_run=args.dry_run, only=args.only, quiet=args.quiet)
    print(format_results(result))
    pairs = transfer_comparison(result.finished)
    if pairs:
        print("\nCLM->MLM transfer vs MLM from scratch (final MLM validation loss):\n" + format_transfer(pairs))
    print(f"tables: {', '.join(str(path) for path in result.tables.values())}  ({result.wall_time_s:.0f} s)")
    if args.report_dir is not None:
        print(
            write_report(
                result,
                args.report_dir,
                args.figure_prefix,
                bootstrap=args.bootstrap,
                parametric_bootstrap=args.parametric_bootstrap,
            )
        )
    return 1 if result.failed else 0


SUBCOMMANDS = {"plan": plan_command, "fit": fit_command, "validate": validate_command, "sweep": sweep_command}


def dispatch(argv: list[str]) -> int:
    """Parse and run one subcommand; its errors propagate (`main` turns user errors into messages)."""
    args = build_parser().parse_args(argv)
    return SUBCOMMANDS[args.command](args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = f"scaling {argv[0]}" if argv and argv[0] in SUBCOMMANDS else "scaling"
    return run_command(name, lambda: dispatch(argv))
