"""Validation of the fitting code against the logs released with Cheng et al. 2024.

`validate(data_dir)` refits the IsoFLOP (and envelope, parametric) exponents for CLM and MLM with bootstrap
intervals under several readings of the logs (last logged point or the mean of the last five; named budgets
only; extrapolated minima kept), fits the envelope both over its full range and only up to the largest IsoFLOP
budget (naming the points and runs beyond it), finds the best mask ratio of the mask-ratio ablation, and measures
the transfer gain (MLM fine-tuned from a CLM checkpoint vs MLM from scratch) at equal total compute.
`plm scaling validate` prints it, writes `validation.json` and the figures.
"""

import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .fit import FrontierFit, fit_envelope, fit_isoflop, fit_parametric
from .plan import LAWS, PAPER_EXPONENTS
from .plots import plot_curves, plot_frontier, plot_isoflop, plot_loss_vs_compute
from .runs import (
    RunTable,
    parse_count,
    parse_released_name,
    read_released_logs,
    read_tensorboard_csv,
    released_logs_dir,
)

PUBLISHED_EXPONENTS = PAPER_EXPONENTS  # the paper text's (a, b), as SOURCE.txt records them


def smoothed_finals(table: RunTable, window: int = 5) -> RunTable:
    """The table with each final point's loss replaced by the mean of its run's last `window` logged losses (the
    released curves jitter by ~0.006 between evaluations)."""
    points = []
    for run_points in table.runs().values():
        tail = [p.loss for p in run_points[-window:]]
        for point in run_points:
            points.append(replace(point, loss=float(np.mean(tail))) if point.final else point)
    return RunTable(points, list(table.skipped), list(table.notes))


def _frontier_summary(fit: FrontierFit) -> dict[str, Any]:
    return {
        "a": fit.n_opt.exponent,
        "a_ci": fit.n_opt.exponent_ci,
        "b": fit.d_opt.exponent,
        "b_ci": fit.d_opt.exponent_ci,
        "k_n": fit.n_opt.coefficient,
        "k_d": fit.d_opt.coefficient,
        "loss_exponent": fit.loss.exponent,
        "budgets": [p.flops for p in fit.points],
        "points": len(fit.points),
        "runs": fit.runs,
        "skipped": fit.skipped,
        "bootstrap_failures": fit.bootstrap_failures,
    }


def isoflop_variants(table: RunTable, objective: str, bootstrap: int, seed: int) -> dict[str, dict[str, Any]]:
    """The IsoFLOP exponents under several readings of the same logs."""
    smooth = smoothed_finals(table.select(objective))
    named = RunTable([p for p in table.points if p.objective == objective and p.budget is not None])
    variants = {
        "last logged point": fit_isoflop(table, objective, bootstrap, seed),
        "mean of last 5 points": fit_isoflop(smooth, objective, bootstrap, seed),
        "named budgets only": fit_isoflop(named, objective, bootstrap, seed),
        "last-5 mean, extrapolated minima kept": fit_isoflop(
            smooth, objective, bootstrap, seed, include_extrapolated=True
        ),
        "last-5 mean, budgets with >= 8 sizes": fit_isoflop(smooth, objective, bootstrap, seed, min_sizes=8),
        "last-5 mean, parabola through 7 sizes": fit_isoflop(smooth, objective, bootstrap, seed, window=7),
    }
    return {name: _frontier_summary(fit) for name, fit in variants.items()}


# ---------------------------------------------------------------------------------------------------------------
# Mask ratio


@dataclass
class MaskRatioResult:
    size: str
    ratios: list[float]
    final_loss: list[float]
    last5_loss: list[float]
    best_ratio: float  # lowest last-5 mean loss
    parabola_ratio: float | None  # minimum of a parabola in the ratio through the three best points' neighbourhood


def mask_ratio_ablation(data_dir: str | Path) -> list[MaskRatioResult]:
    """Final and last-5-mean validation loss of each mask ratio, per model size (`mask_ratio_data/<size>/mask_r.csv`,
    x axis: steps; every ratio of one size runs the same steps)."""
    base = released_logs_dir(data_dir) / "mask_ratio_data"
    if not base.is_dir():
        raise FileNotFoundError(f"{base} does not exist")
    results = []
    for folder in sorted(base.iterdir(), key=lambda p: parse_count(p.name)):
        rows = []
        for path in sorted(folder.glob("mask_*.csv")):
            match = re.fullmatch(r"mask_(\d+(?:\.\d+)?)", path.stem)
            if not match:
                raise ValueError(f"{path}: expected mask_<ratio>.csv")
            _, steps, values = read_tensorboard_csv(path)
            rows.append((float(match.group(1)), values[-1], float(np.mean(values[-5:])), steps[-1]))
        rows.sort()
        if len({row[3] for row in rows}) != 1:
            raise ValueError(f"{folder}: the ratios were not trained for the same number of steps")
        ratios = [r[0] for r in rows]
        last5 = [r[2] for r in rows]
        best = int(np.argmin(last5))
        lo, hi = max(0, best - 2), min(len(rows), best + 3)
        parabola = None
        if hi - lo >= 3:
            c2, c1, _ = np.polyfit(ratios[lo:hi], last5[lo:hi], 2)
            parabola = float(-c1 / (2 * c2)) if c2 > 0 else None
        results.append(
            MaskRatioResult(
                size=folder.name,
                ratios=ratios,
                final_loss=[r[1] for r in rows],
                last5_loss=last5,
                best_ratio=ratios[best],
                parabola_ratio=parabola,
            )
        )
    return results


# ---------------------------------------------------------------------------------------------------------------
# Transfer


@dataclass
class TransferCurve:
    path: str
    objective: str  # the target objective ("mlm" or "clm")
    kind: str  # "ft" (from the other objective's checkpoint) or "scratch"
    budget: float  # compute of the target phase
    source_flops: float  # compute of the source phase (0 for scratch)
    flops: list[float]  # target-phase compute at each point
    loss: list[float]
    metric: str


@dataclass
class TransferResult:
    objective: str
    budget: float
    source_flops: float
    scratch_file: str
    ft_file: str
    metric: str
    scratch_final: float  # scratch loss at C = budget (mean of its last 5 points)
    ft_equal_compute: float  # ft loss after budget − source_flops of target-phase compute (5 nearest points)
    ft_final: float  # ft loss at its end (total compute budget + source_flops)
    gain_equal_compute: float  # scratch_final − ft_equal_compute (> 0: transfer helps at equal total compute)
    gain_equal_target_compute: float  # scratch_final − ft_final (ignores the source phase's compute)
    notes: list[str] = field(default_factory=list)


TRANSFER_FT = re.compile(
    r"^(mlm|gpt)(\d+(?:\.\d+)?e\d+)_transfer_from_(gpt|mlm)(\d+(?:\.\d+)?e\d+)_(\d+(?:\.\d+)?[MBmb])"
)
TRANSFER_SCRATCH = re.compile(r"^(mlm|gpt)_(\d+(?:\.\d+)?[MBmb])_1024l_(\d+(?:\.\d+)?e\d+)flops")
TRANSFER_TOKENS = re.compile(r"^(\d+(?:\.\d+)?[MB])_(\d+(?:\.\d+)?e\d+)(?:_clm_pretrain_(\d+(?:\.\d+)?e\d+))?$")


def read_transfer_curves(data_dir: str | Path) -> tuple[list[TransferCurve], list[tuple[str, str]]]:
    """Every transfer_valid export as a curve on a target-phase FLOPs axis, and (file, reason) for the skipped ones.

    Kind comes from the run name (`..._transfer_from_...` is ft), not the folder (one scratch run sits in gpt/ft).
    Token-axis files are put on FLOPs with N = budget / (6 · final tokens). The untagged `mlm/tokens/*.csv` files
    are read as validation loss: where a tagged validation export of the same run exists their values are equal.
    """
    base = released_logs_dir(data_dir) / "transfer_valid"
    curves, skipped = [], []
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        relative = str(path.relative_to(base.parent))
        try:
            _, x, loss = read_tensorboard_csv(path)
        except ValueError as error:
            skipped.append((relative, str(error)))
            continue
        metric, axis = "validation", "tokens"
        if "-tag-" in path.stem:
            info = parse_released_name(path)
            run, metric, axis = info["run"], info["metric"], info["axis"]
            ft, scratch = TRANSFER_FT.match(run), TRANSFER_SCRATCH.match(run)
            if ft:
                objective, budget, source = ft.group(1), float(ft.group(2)), float(ft.group(4))
                kind = "ft"
            elif scratch:
                objective, budget, source, kind = scratch.group(1), float(scratch.group(3)), 0.0, "scratch"
            elif info["name_size"] and info["epochs"]:
                objective, kind, source = run.split("_")[0], "scratch", 0.0
                budget = 6 * parse_count(info["name_size"]) * info["epochs"] * 200e9
                budget = float(f"{budget:.0e}")
            else:
                skipped.append((relative, f"run name {run!r} gives no budget"))
                continue
        else:
            match = TRANSFER_TOKENS.match(path.stem)
            if not match:
                skipped.append((relative, "untagged file name is not <size>_<budget>[_clm_pretrain_<flops>]"))
                continue
            objective, budget = path.parent.parent.name, float(match.group(2))
            source = float(match.group(3)) if match.group(3) else 0.0
            kind = "ft" if match.group(3) else "scratch"
        objective = "clm" if objective == "gpt" else objective
        flops = [v * 1e9 for v in x] if axis == "gigaflops" else [v * budget / x[-1] for v in x]
        curves.append(
            TransferCurve(
                path=relative,
                objective=objective,
                kind=kind,
                budget=budget,
                source_flops=source,
                flops=flops,
                loss=list(loss),
                metric=metric,
            )
        )
    return curves, skipped


def _near_mean(flops: list[float], loss: list[float], at: float, count: int = 5) -> float:
    """Mean loss of the `count` logged points nearest `at` in log compute."""
    distance = np.abs(np.log(np.asarray(flops)) - math.log(at))
    nearest = np.argsort(distance)[:count]
    return float(np.mean(np.asarray(loss)[nearest]))


def transfer_gains(curves: list[TransferCurve]) -> list[TransferResult]:
    """Pair each ft curve with the scratch curve of its objective and budget (validation on both sides, FLOPs axis
    preferred) and compare them at equal total compute: scratch after `budget`, ft after `budget − source`."""
    results = []
    for ft in curves:
        if ft.kind != "ft":
            continue
        matches = [c for c in curves if c.kind == "scratch" and c.objective == ft.objective and c.budget == ft.budget]
        same_metric = [c for c in matches if c.metric == ft.metric]
        if not same_metric:
            continue
        scratch = sorted(
            same_metric, key=lambda c: (-round(min(c.flops[-1] / c.budget, 1.0), 2), "tokens" in c.path, c.path)
        )[0]
        notes = []
        for curve in (ft, scratch):
            if curve.flops[-1] < 0.98 * curve.budget:
                notes.append(f"{curve.path} stops at {curve.flops[-1] / curve.budget:.0%} of its budget")
        if ft.metric != "validation":
            notes.append(f"both curves are {ft.metric} loss")
        scratch_final = float(np.mean(scratch.loss[-5:]))
        remaining = ft.budget - ft.source_flops
        if remaining <= ft.flops[0]:
            ft_equal = math.nan
            notes.append("the source phase alone spends more than the budget: no equal-compute point")
        else:
            ft_equal = _near_mean(ft.flops, ft.loss, remaining)
        ft_final = float(np.mean(ft.loss[-5:]))
        results.append(
            TransferResult(
                objective=ft.objective,
                budget=ft.budget,
                source_flops=ft.source_flops,
                scratch_file=scratch.path,
                ft_file=ft.path,
                metric=ft.metric,
                scratch_final=scratch_final,
                ft_equal_compute=ft_equal,
                ft_final=ft_final,
                gain_equal_compute=scratch_final - ft_equal,
                gain_equal_target_compute=scratch_final - ft_final,
                notes=notes,
            )
        )
    # One result per (objective, budget, metric): the pair whose curves reach furthest toward the budget (one FLOPs
    # export stops at 94% where its token export is complete), then FLOPs-axis files.
    reach = {curve.path: curve.flops[-1] / curve.budget for curve in curves}

    def preference(result: TransferResult) -> tuple:
        coverage = min(reach[result.ft_file], reach[result.scratch_file], 1.0)
        return (round(coverage, 2), "tokens" not in result.ft_file, "tokens" not in result.scratch_file)

    best: dict[tuple, TransferResult] = {}
    for result in results:
        key = (result.objective, result.budget, result.metric)
        if key not in best or preference(result) > preference(best[key]):
            best[key] = result
    return sorted(best.values(), key=lambda r: (r.objective, r.budget, r.metric))


# ---------------------------------------------------------------------------------------------------------------
# Everything


def validate(
    data_dir: str | Path,
    output_dir: str | Path | None = None,
    bootstrap: int = 200,
    parametric_bootstrap: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """Refits, mask ratio and transfer on the released logs; figures into `output_dir` when given."""
    table = read_released_logs(data_dir)
    figures = Path(output_dir) if output_dir is not None else None
    result: dict[str, Any] = {
        "data": str(data_dir),
        "table": {
            objective: {
                "runs": len(table.select(objective).runs()),
                "final_points": len(table.select(objective, final=True).points),
                "sizes": table.sizes(objective),
                "budgets": table.budgets(objective),
            }
            for objective in table.objectives()
        },
        "skipped": table.skipped,
        "notes": table.notes,
        "objectives": {
            objective: refit_objective(
                table,
                objective,
                bootstrap=bootstrap,
                parametric_bootstrap=parametric_bootstrap,
                seed=seed,
                figures=figures,
            )
            for objective in ("clm", "mlm")
        },
    }
    masks = mask_ratio_ablation(data_dir)
    result["mask_ratio"] = [asdict(m) for m in masks]
    curves, transfer_skipped = read_transfer_curves(data_dir)
    gains = transfer_gains(curves)
    result["transfer"] = [asdict(g) for g in gains]
    result["transfer_skipped"] = transfer_skipped
    if figures is not None:
        plot_mask_ratio_and_transfer(masks, curves, gains, figures)
    return result


def beyond_cap_summary(capped: FrontierFit) -> dict[str, Any]:
    """The envelope points a capped fit left out: how many, their compute range, and the runs behind them."""
    beyond = capped.excluded
    runs: dict[str, list[float]] = {}
    for point in beyond:
        runs.setdefault(point.run, []).append(point.flops)
    return {
        "cap": capped.flops_cap,
        "points": len(beyond),
        "flops": [p.flops for p in beyond],
        "parameters": [p.parameters for p in beyond],
        "runs": [
            {"run": run, "points": len(flops), "from": min(flops), "to": max(flops)} for run, flops in runs.items()
        ],
    }


def refit_objective(
    table: RunTable,
    objective: str,
    *,
    bootstrap: int,
    parametric_bootstrap: int,
    seed: int,
    figures: Path | None,
) -> dict[str, Any]:
    """The three approaches on one objective's released logs, beside the released law and the paper's exponents
    (and its figures). The envelope is fitted twice: over its whole range, and only up to the largest budget the
    IsoFLOP fit used (its points above that come from the few runs trained past every named budget)."""
    smooth = smoothed_finals(table.select(objective))
    isoflop = fit_isoflop(smooth, objective, bootstrap, seed)
    # The compute the largest fitted IsoFLOP budget's runs reached (its runs end within a few % of the budget).
    largest = max(p.flops for p in isoflop.points)
    cap = max([largest] + [p.flops for p in smooth.points if p.final and p.budget == largest])
    envelope = fit_envelope(table, objective, bootstrap, seed)
    capped = fit_envelope(table, objective, bootstrap, seed, max_flops=cap)
    parametric = fit_parametric(table, objective, parametric_bootstrap, seed)
    released, paper = LAWS["released"][objective], LAWS["paper"][objective]
    per_budget = [
        {
            "budget": p.flops,
            "sizes": p.runs,
            "n_opt": p.parameters,
            "loss": p.loss,
            "released_n_opt": float(released.n_opt(p.flops)),
            "paper_n_opt": float(paper.n_opt(p.flops)),
        }
        for p in isoflop.points
    ]
    if figures is not None:
        plot_released_fits(smooth, table, objective, isoflop, capped, envelope, figures)
    return {
        "published": {"a": PUBLISHED_EXPONENTS[objective][0], "b": PUBLISHED_EXPONENTS[objective][1]},
        "released": {"k": released.n_opt.coefficient, "a": released.n_opt.exponent},
        "isoflop_variants": isoflop_variants(table, objective, bootstrap, seed),
        "isoflop_per_budget": per_budget,
        "isoflop_skipped": isoflop.skipped,
        "isoflop_largest_budget": cap,
        "k_n_with_released_exponent": _coefficient_with_exponent(isoflop, released.n_opt.exponent),
        "k_n_with_paper_exponent": _coefficient_with_exponent(isoflop, paper.n_opt.exponent),
        "paper_k_n": paper.n_opt.coefficient,
        "envelope": _frontier_summary(envelope),
        "envelope_isoflop_budgets_only": _frontier_summary(capped),
        "envelope_beyond_largest_budget": beyond_cap_summary(capped),
        "parametric": {
            "E": parametric.E,
            "A": parametric.A,
            "B": parametric.B,
            "alpha": parametric.alpha,
            "beta": parametric.beta,
            "a": parametric.n_opt.exponent,
            "b": parametric.d_opt.exponent,
            "ci": parametric.ci,
            "points": parametric.points,
            "bootstrap_failures": parametric.bootstrap_failures,
        },
    }


def _coefficient_with_exponent(fit: FrontierFit, exponent: float) -> float:
    """The N_opt coefficient the IsoFLOP minima imply with the exponent held fixed (checks a law's k)."""
    return math.exp(float(np.mean([math.log(p.parameters) - exponent * math.log(p.flops) for p in fit.points])))


def plot_released_fits(
    smooth: RunTable,
    table: RunTable,
    objective: str,
    isoflop: FrontierFit,
    capped: FrontierFit,
    envelope: FrontierFit,
    figures: Path,
) -> None:
    """IsoFLOP profiles, the frontier (capped envelope, its left-out points, the full-range envelope and both laws)
    and loss vs compute for one objective."""
    name = objective.upper()
    plot_isoflop(smooth, isoflop, figures / f"released_isoflop_{objective}.png",
                 f"IsoFLOP profiles, released {name} logs (last-5 mean)")  # fmt: skip
    released, paper = LAWS["released"][objective], LAWS["paper"][objective]
    plot_frontier(
        [isoflop, capped],
        figures / f"released_frontier_{objective}.png",
        reference={
            "released law": released.n_opt,
            "paper exponent (anchored at 1e21)": paper.n_opt,
            f"envelope, full range to {envelope.points[-1].flops:.2g}": envelope.n_opt,
        },
        title=f"N_opt(C), released {name} logs, 95% bootstrap bands",
    )
    plot_loss_vs_compute(table, figures / f"released_loss_vs_compute_{objective}.png", [capped, isoflop], objective)


def plot_mask_ratio_and_transfer(masks, curves, gains, figures: Path) -> None:
    """The mask-ratio ablation and the MLM transfer curves (scratch vs from CLM, at total compute)."""
    plot_curves(
        {f"{m.size}": (m.ratios, m.last5_loss) for m in masks},
        figures / "released_mask_ratio.png",
        xlabel="mask ratio",
        ylabel="final MLM validation loss (last-5 mean)",
        title="Mask-ratio ablation (released logs)",
        xscale="linear",
    )
    pairs = {}
    for gain in gains:
        if gain.objective != "mlm" or gain.metric != "validation":
            continue
        for kind, file in (("scratch", gain.scratch_file), ("from CLM", gain.ft_file)):
            curve = next(c for c in curves if c.path == file)
            offset = gain.source_flops if kind == "from CLM" else 0.0
            pairs[f"{gain.budget:.0e} {kind}"] = ([f + offset for f in curve.flops], curve.loss)
    plot_curves(
        pairs,
        figures / "released_transfer_mlm.png",
        xlabel="total compute (CLM + MLM FLOPs)",
        ylabel="MLM validation loss",
        title="MLM from scratch vs from a CLM checkpoint",
    )


def format_report(result: dict[str, Any]) -> str:
    """The validation result as the text tables `plm scaling validate` prints."""
    lines = []
    for objective, info in result["table"].items():
        lines.append(
            f"{objective}: {info['runs']} runs, {info['final_points']} complete, {len(info['sizes'])} sizes, "
            f"budgets {', '.join(f'{b:.2g}' for b in info['budgets'])}"
        )
    lines.append(f"{len(result['skipped'])} files skipped, {len(result['notes'])} notes (see validation.json)")
    for objective, info in result["objectives"].items():
        lines += ["", *_objective_report(objective, info)]
    lines += ["", *_mask_ratio_report(result["mask_ratio"]), "", *_transfer_report(result["transfer"])]
    return "\n".join(lines)


def _objective_report(objective: str, info: dict[str, Any]) -> list[str]:
    pa, pb = info["published"]["a"], info["published"]["b"]
    released = info["released"]
    cap = info["isoflop_largest_budget"]
    full = info["envelope"]
    lines = [
        f"{objective.upper()}  (paper a = {pa}, b = {pb}; "
        f"released law N_opt = {released['k']:.4g}·C^{released['a']:.4f})",
        f"  {'reading':<48} {'a = N_opt exp.':<24} {'b = D_opt exp.':<24} points",
    ]
    rows = [(f"IsoFLOP, {name}", v) for name, v in info["isoflop_variants"].items()]
    rows.append((f"envelope, C <= {cap:.3g} (IsoFLOP budgets only)", info["envelope_isoflop_budgets_only"]))
    rows.append((f"envelope, full range (to {full['budgets'][-1]:.2g})", full))
    for name, v in rows:
        lines.append(f"  {name:<48} {_with_ci(v['a'], v['a_ci']):<24} {_with_ci(v['b'], v['b_ci']):<24} {v['points']}")
    p = info["parametric"]
    lines.append(
        f"  {'parametric (approach 3, final points)':<48} {_with_ci(p['a'], p['ci'].get('a')):<24} "
        f"{_with_ci(p['b'], p['ci'].get('b')):<24} E={p['E']:.3g} A={p['A']:.3g} B={p['B']:.3g} "
        f"α={p['alpha']:.3f} β={p['beta']:.3f}"
    )
    beyond = info["envelope_beyond_largest_budget"]
    if beyond["points"]:
        lines.append(
            f"  beyond the largest IsoFLOP budget (its runs end by C = {cap:.3g}): {beyond['points']} envelope points, "
            f"C = {_span(min(beyond['flops']), max(beyond['flops']))}, from:"
        )
        lines += [
            f"    {r['run']} ({r['points']} point{'s' if r['points'] > 1 else ''}, C = {_span(r['from'], r['to'])})"
            for r in beyond["runs"]
        ]
    lines.append(
        f"  per budget (last-5 mean): {'budget':>8} {'sizes':>5} {'N_opt fit':>10} {'released':>10} {'paper':>10} "
        f"{'loss':>6}"
    )
    for row in info["isoflop_per_budget"]:
        lines.append(
            f"  {'':<26}{row['budget']:>8.0e} {row['sizes']:>5} {row['n_opt']:>10.3g} "
            f"{row['released_n_opt']:>10.3g} {row['paper_n_opt']:>10.3g} {row['loss']:>6.3f}"
        )
    lines.append(
        f"  N_opt coefficient from the IsoFLOP minima with the exponent held fixed: released a -> "
        f"{info['k_n_with_released_exponent']:.4g} (released {released['k']:.4g}); paper a -> "
        f"{info['k_n_with_paper_exponent']:.4g} (anchored {info['paper_k_n']:.4g})"
    )
    for reason in info["isoflop_skipped"]:
        short = reason if len(reason) <= 110 else reason[:107] + "..."
        lines.append(f"  not in the profile fit: {short}")
    return lines


def _span(low: float, high: float) -> str:
    return f"{low:.3g}" if low == high else f"{low:.3g}-{high:.3g}"


def _mask_ratio_report(masks: list[dict[str, Any]]) -> list[str]:
    lines = ["mask ratio (last-5 mean validation loss):"]
    for m in masks:
        cells = ", ".join(f"{r:g}: {loss:.4f}" for r, loss in zip(m["ratios"], m["last5_loss"]))
        parabola = f"{m['parabola_ratio']:.3f}" if m["parabola_ratio"] is not None else "n/a"
        lines.append(f"  {m['size']}: best {m['best_ratio']:g} (parabola {parabola}); {cells}")
    return lines


def _transfer_report(gains: list[dict[str, Any]]) -> list[str]:
    lines = [
        "transfer (loss, last-5 means; gain > 0: the transferred model is better):",
        f"  {'target':<6} {'budget':>7} {'source':>8} {'metric':<10} {'scratch':>8} {'ft@equal C':>10} "
        f"{'gain@equal C':>12} {'gain@equal target C':>19}",
    ]
    for g in gains:
        lines.append(
            f"  {g['objective']:<6} {g['budget']:>7.0e} {g['source_flops']:>8.2g} {g['metric']:<10} "
            f"{g['scratch_final']:>8.4f} {g['ft_equal_compute']:>10.4f} {g['gain_equal_compute']:>12.4f} "
            f"{g['gain_equal_target_compute']:>19.4f}"
        )
    return lines


def _with_ci(value: float, ci: Any) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"
