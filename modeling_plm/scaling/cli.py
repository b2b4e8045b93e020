"""`plm scaling ...`: plan a compute-optimal run, fit scaling laws, validate against the released logs, sweep."""

import argparse
import json
import sys
from pathlib import Path

from ..data.records import find_data_dir

EXAMPLES = """examples:
  plm scaling plan --flops 1e21 --objective mlm
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plm scaling",
        description="Compute-optimal planning and scaling-law fits for protein language models "
        "(Cheng et al. 2024, arXiv 2411.02142). C = 6·N·D with N the non-embedding parameters.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    plan = commands.add_parser(
        "plan",
        help="N_opt, D_opt, a concrete model and the expected loss for a FLOPs budget",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="N_opt = k·C^a and D_opt = k'·C^b from the paper's laws (or your fit), the model shape "
        "(head_dim 64, depth from width as in the plm_* presets) whose exact non-embedding N is nearest N_opt, its "
        "token count C/(6N) and the expected validation loss from L(N, D) = E + A/N^α + B/D^β.",
        epilog="examples:\n  plm scaling plan --flops 1e21 --objective mlm\n"
        "  plm scaling plan --flops 1e20 --objective clm --json\n"
        "  plm scaling plan --flops 1e21 --objective mlm --transfer\n"
        "  plm scaling plan --flops 3e15 --fit runs/scaling/fit/fit.json --approach isoflop",
    )
    plan.add_argument("--flops", type=float, required=True, help="compute budget C in FLOPs (6·N·D), e.g. 1e21")
    plan.add_argument("--objective", choices=("mlm", "clm"), default="mlm")
    plan.add_argument("--transfer", action="store_true", help="CLM pre-training then MLM on one model (mlm only)")
    plan.add_argument("--clm-share", type=float, default=0.15, help="share of compute on CLM with --transfer")
    plan.add_argument("--fit", type=Path, help="a fit.json written by `plm scaling fit` instead of the paper's laws")
    plan.add_argument(
        "--approach",
        choices=("isoflop", "envelope", "parametric"),
        default="isoflop",
        help="which of the fit's N_opt/D_opt laws to use with --fit",
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    fit = commands.add_parser(
        "fit",
        help="fit scaling laws (envelope, IsoFLOP, parametric) with bootstrap intervals",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fits Hoffmann et al.'s three approaches per objective and prints the exponents with 95% "
        "bootstrap intervals. " + TABLE_HELP,
        epilog="examples:\n  plm scaling fit runs/scaling/ --output-dir runs/scaling/fit\n"
        "  plm scaling fit a.csv b.json runs/x --objective mlm --bootstrap 500 --seed 1\n"
        "  plm scaling fit ../shared/data/scaling_protein_lm --objective clm --no-plots",
    )
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

    validate = commands.add_parser(
        "validate",
        help="refit the released logs of Cheng et al. 2024 and compare with the published exponents",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reads the released CLM/MLM validation curves, refits the IsoFLOP exponents under several "
        "readings, reproduces the mask-ratio ablation's best ratio and the transfer gain at equal compute.",
        epilog="examples:\n  plm scaling validate --data ../shared/data/scaling_protein_lm\n"
        "  plm scaling validate --data ../shared/data/scaling_protein_lm --output-dir docs/figures --bootstrap 500",
    )
    validate.add_argument("--data", type=Path, help="the released logs (default: <shared data>/scaling_protein_lm)")
    validate.add_argument("--output-dir", type=Path, help="write validation.json and PNG figures here")
    validate.add_argument("--bootstrap", type=int, default=200)
    validate.add_argument("--parametric-bootstrap", type=int, default=50)
    validate.add_argument("--seed", type=int, default=0)

    commands.add_parser("sweep", help="run a small scaling sweep (see: plm scaling sweep --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sweep":
        # The sweep runner lives in its own module, loaded only when asked for.
        try:
            from .sweep import main as sweep_main
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.sweep":
                raise
            print("plm scaling sweep: modeling_plm.scaling.sweep is not installed in this version", file=sys.stderr)
            return 2
        return sweep_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "plan":
            return _plan(args)
        if args.command == "fit":
            return _fit(args)
        return _validate(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"plm scaling {args.command}: {error}", file=sys.stderr)
        return 2


def _plan(args: argparse.Namespace) -> int:
    from .plan import plan

    result = plan(
        args.flops,
        objective=args.objective,
        transfer=args.transfer,
        clm_share=args.clm_share,
        fit_path=args.fit,
        approach=args.approach,
    )
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.render())
    return 0


def _fit(args: argparse.Namespace) -> int:
    from .fit import fit_all, save_fits
    from .runs import read_runs, write_csv_table

    table = read_runs(args.sources)
    print(table.summary())
    objectives = args.objective or table.objectives()
    fits = []
    for objective in objectives:
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
        save_fits(fits, out / "fit.json")
        write_csv_table(table, out / "runs.csv")
        written = [out / "fit.json", out / "runs.csv"]
        if not args.no_plots:
            written += _fit_figures(table, fits, out)
        print("\nwrote " + ", ".join(str(path) for path in written))
    return 0


def _fit_figures(table, fits, out: Path) -> list[Path]:
    from .plan import PUBLISHED_LAWS
    from .plots import plot_frontier, plot_isoflop, plot_loss_vs_compute

    written = []
    for item in fits:
        frontiers = [f for f in (item.isoflop, item.envelope) if f is not None]
        if item.isoflop is not None:
            written.append(plot_isoflop(table, item.isoflop, out / f"isoflop_{item.objective}.png"))
        if frontiers:
            published = PUBLISHED_LAWS.get(item.objective)
            reference = {"Cheng et al. 2024": published.n_opt} if published else None
            written.append(plot_frontier(frontiers, out / f"frontier_{item.objective}.png", reference=reference))
        written.append(
            plot_loss_vs_compute(table, out / f"loss_vs_compute_{item.objective}.png", frontiers, item.objective)
        )
    return written


def format_fits(fits) -> str:
    """A table of exponents (95% bootstrap intervals) per objective and approach, then what was left out."""
    lines = [f"{'objective':<9} {'approach':<11} {'a: N_opt ∝ C^a':<26} {'b: D_opt ∝ C^b':<26} {'k (N_opt)':>10} runs"]
    notes = []
    for item in fits:
        for name in ("envelope", "isoflop", "parametric"):
            fit = getattr(item, name)
            if fit is None:
                lines.append(f"{item.objective:<9} {name:<11} not fitted: {item.errors.get(name, '')}")
                continue
            lines.append(
                f"{item.objective:<9} {name:<11} {_ci(fit.n_opt.exponent, fit.n_opt.exponent_ci):<26} "
                f"{_ci(fit.d_opt.exponent, fit.d_opt.exponent_ci):<26} {fit.n_opt.coefficient:>10.3g} {fit.runs}"
            )
            if name == "parametric":
                notes.append(
                    f"{item.objective} parametric: E={fit.E:.4g} A={fit.A:.4g} B={fit.B:.4g} "
                    f"alpha={fit.alpha:.4g} beta={fit.beta:.4g} on {fit.points} points"
                )
            else:
                notes += [f"{item.objective} {name}: left out {reason}" for reason in fit.skipped]
            if fit.bootstrap_failures:
                notes.append(
                    f"{item.objective} {name}: {fit.bootstrap_failures} bootstrap replicates could not be fitted"
                )
    return "\n".join(lines + [""] + notes)


def _ci(value: float, ci) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _validate(args: argparse.Namespace) -> int:
    from .validate import format_report, validate

    data = args.data
    if data is None:
        root = find_data_dir(str(Path.cwd()))
        if root is None:
            raise FileNotFoundError("no shared data folder found: pass --data PATH/scaling_protein_lm")
        data = root / "scaling_protein_lm"
    result = validate(data, args.output_dir, args.bootstrap, args.parametric_bootstrap, args.seed)
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


if __name__ == "__main__":
    sys.exit(main())
