"""Scaling-law fits (Hoffmann et al. 2022's three approaches) with seeded bootstrap intervals.

- Approach 1, `fit_envelope`: at each compute on a log grid, the run with the lowest loss (loss curves interpolated
  in log C); power laws N_opt = k·C^a and D_opt = k'·C^b through those envelope points.
- Approach 2, `fit_isoflop`: per budget, a parabola of final loss in ln N; its minimum gives N_opt(C), D_opt =
  C/(6·N_opt); power laws through the minima.
- Approach 3, `fit_parametric`: L(N, D) = E + A/N^α + B/D^β by L-BFGS on the Huber loss of
  ln L̂ − ln L (L̂ = exp(LSE(a − α ln N, b − β ln D, e))), started from the best points of a grid; then
  N_opt = G·(C/6)^a, D_opt = (C/6)^b / G with a = β/(α+β), b = α/(α+β), G = (αA/(βB))^(1/(α+β)).

Every fit returns a plain dataclass; `bootstrap` replicates resample whole runs with replacement (seeded), refit,
and give 95% percentile intervals. `save_fits` / `load_fits` write and read the JSON `plm scaling fit` writes and
`plm scaling plan --fit` reads; `format_fits` is the table `plm scaling fit` prints.
"""

import contextlib
import ctypes
import functools
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from .runs import RunPoint, RunTable

FIT_FORMAT = "modeling_plm.scaling.fit/1"


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run OpenBLAS single-threaded inside the block, then restore its thread count.

    L-BFGS-B does tiny BLAS operations; on a loaded multi-core machine OpenBLAS's threads make each one cost
    milliseconds (60x slower fits measured on 2 busy cores). Only the thread count changes, never a result; where
    no OpenBLAS is loaded (or it has no such symbol) the block runs as is.
    """
    restore = []
    try:
        libraries = {line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.lower()}
    except OSError:
        libraries = set()
    for library in sorted(libraries):
        try:
            handle = ctypes.CDLL(library)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", "_64_", ""):
                getter = getattr(handle, f"{prefix}_get_num_threads{suffix}", None)
                setter = getattr(handle, f"{prefix}_set_num_threads{suffix}", None)
                if getter is not None and setter is not None:
                    restore.append((setter, getter()))
                    setter(1)
                    break
            else:
                continue
            break
    try:
        yield
    finally:
        for setter, threads in restore:
            setter(threads)


def _blas_single_threaded(function: Callable) -> Callable:
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with single_threaded_blas():
            return function(*args, **kwargs)

    return wrapper


@dataclass
class PowerLaw:
    """y = coefficient · C^exponent, with 95% bootstrap intervals (None when not bootstrapped)."""

    coefficient: float
    exponent: float
    exponent_ci: tuple[float, float] | None = None
    coefficient_ci: tuple[float, float] | None = None

    def __call__(self, flops: float | np.ndarray) -> float | np.ndarray:
        return self.coefficient * np.power(flops, self.exponent)


@dataclass
class OptimumPoint:
    """A compute-optimal point: from the envelope (approach 1) or one IsoFLOP parabola's minimum (approach 2)."""

    flops: float
    parameters: float
    tokens: float
    loss: float
    runs: int = 1  # runs behind it (IsoFLOP: sizes in the profile)
    extrapolated: bool = False  # IsoFLOP minimum outside the sizes trained at that budget
    run: str = ""  # envelope: the run with the lowest loss there


@dataclass
class FrontierFit:
    """Approaches 1 and 2: power laws for N_opt(C), D_opt(C) and the loss at the optimum L_opt(C) = k·C^a."""

    approach: str  # "envelope" or "isoflop"
    objective: str
    n_opt: PowerLaw
    d_opt: PowerLaw
    loss: PowerLaw
    points: list[OptimumPoint]
    runs: int
    bootstrap: int
    seed: int
    skipped: list[str] = field(default_factory=list)  # budgets left out, with why
    # Optima computed but not fitted: IsoFLOP minima outside the trained sizes, envelope points above `flops_cap`
    excluded: list[OptimumPoint] = field(default_factory=list)
    excluded_budgets: list[float] = field(default_factory=list)  # IsoFLOP budgets without a fitted minimum
    flops_cap: float | None = None  # envelope: only points at C <= this were fitted
    bootstrap_failures: int = 0  # replicates with too few budgets/points to fit
    # (coefficient, exponent) of N_opt and D_opt in each bootstrap replicate: the confidence band of the frontier
    n_opt_replicates: list[tuple[float, float]] = field(default_factory=list)
    d_opt_replicates: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class ParametricFit:
    """Approach 3: L(N, D) = E + A/N^α + B/D^β and the compute-optimal allocation it implies."""

    objective: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    n_opt: PowerLaw  # exponent a = β/(α+β)
    d_opt: PowerLaw  # exponent b = α/(α+β)
    points: int
    runs: int
    huber_delta: float
    objective_value: float
    bootstrap: int
    seed: int
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # E, A, B, alpha, beta, a, b
    bootstrap_failures: int = 0
    n_opt_replicates: list[tuple[float, float]] = field(default_factory=list)
    d_opt_replicates: list[tuple[float, float]] = field(default_factory=list)

    def predict(self, parameters: float | np.ndarray, tokens: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.A / np.power(parameters, self.alpha) + self.B / np.power(tokens, self.beta)


@dataclass
class ScalingFits:
    """All approaches for one objective (None where the data cannot support one), plus how they were made."""

    objective: str
    envelope: FrontierFit | None
    isoflop: FrontierFit | None
    parametric: ParametricFit | None
    errors: dict[str, str] = field(default_factory=dict)  # approach -> why it was not fitted
    sources: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# Power laws


def fit_power_law(flops: Sequence[float], values: Sequence[float]) -> PowerLaw:
    """Least squares of ln y = ln k + a ln C (at least two distinct C)."""
    if min(values, default=1.0) <= 0 or min(flops, default=1.0) <= 0:
        raise ValueError("a power law needs positive compute and values")
    x, y = np.log(np.asarray(flops, float)), np.log(np.asarray(values, float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"a power law needs at least two distinct compute values, got {len(set(x.tolist()))}")
    slope, intercept = np.polyfit(x, y, 1)
    return PowerLaw(coefficient=float(math.exp(intercept)), exponent=float(slope))


def _percentile_ci(values: Sequence[float]) -> tuple[float, float] | None:
    finite = np.asarray([v for v in values if np.isfinite(v)], float)
    if len(finite) < 2:
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _runs_of(points: Sequence[RunPoint]) -> dict[str, list[RunPoint]]:
    grouped: dict[str, list[RunPoint]] = defaultdict(list)
    for point in points:
        grouped[point.run].append(point)
    return {run: sorted(group, key=lambda p: p.flops) for run, group in sorted(grouped.items())}


def _resample_runs(runs: dict[str, list[RunPoint]], rng: np.random.Generator, stratify: Callable | None = None):
    """Runs drawn with replacement (each draw renamed so duplicates stay distinct runs); within strata if given."""
    names = list(runs)
    if stratify is None:
        strata = {None: names}
    else:
        strata = defaultdict(list)
        for name in names:
            strata[stratify(runs[name])].append(name)
    sample: dict[str, list[RunPoint]] = {}
    for members in strata.values():
        for draw, index in enumerate(rng.integers(0, len(members), size=len(members))):
            name = members[index]
            sample[f"{name}#{draw}"] = runs[name]
    return sample


def _points(table: RunTable | Sequence[RunPoint], objective: str | None) -> list[RunPoint]:
    points = table.points if isinstance(table, RunTable) else list(table)
    if objective is not None:
        points = [p for p in points if p.objective == objective]
    if not points:
        raise ValueError(f"no points for objective {objective!r}")
    return points


# ---------------------------------------------------------------------------------------------------------------
# Approach 1: envelope of the loss curves


def envelope_points(runs: dict[str, list[RunPoint]], grid_size: int = 40) -> list[OptimumPoint]:
    """At `grid_size` log-spaced compute values between the smallest and the largest final compute, the run with the
    lowest loss there (each curve interpolated linearly in ln C, only inside its own range)."""
    finals = [points[-1].flops for points in runs.values()]
    low, high = min(finals), max(finals)
    if not high > low:
        raise ValueError("the envelope needs runs ending at different compute")
    grid = np.exp(np.linspace(math.log(low), math.log(high), grid_size))
    best_loss = np.full(grid_size, np.inf)
    best_n = np.zeros(grid_size)
    best_run = [""] * grid_size
    for name, points in runs.items():
        c = np.log([p.flops for p in points])
        loss = np.asarray([p.loss for p in points])
        inside = (np.log(grid) >= c[0]) & (np.log(grid) <= c[-1])
        if not inside.any():
            continue
        interpolated = np.interp(np.log(grid[inside]), c, loss)
        better = interpolated < best_loss[inside]
        index = np.flatnonzero(inside)[better]
        best_loss[index] = interpolated[better]
        best_n[index] = points[0].parameters
        for i in index:
            best_run[i] = name.split("#", 1)[0]  # a bootstrap draw's name is run#draw
    return [
        OptimumPoint(flops=float(c), parameters=float(n), tokens=float(c / (6 * n)), loss=float(loss), run=run)
        for c, n, loss, run, keep in zip(grid, best_n, best_loss, best_run, np.isfinite(best_loss))
        if keep
    ]


def check_curves(runs: dict[str, list[RunPoint]]) -> None:
    """The envelope interpolates each run's loss curve: every run needs two points at distinct compute."""
    short = [name for name, points in runs.items() if len({p.flops for p in points}) < 2]
    if short:
        named = ", ".join(f"{name!r} ({_source_of(runs[name])})" for name in short[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        raise ValueError(
            f"the envelope needs at least two points per run (a loss curve), but {len(short)} run(s) have one: "
            f"{named}{more}; give the curve points (metrics rows) or use the IsoFLOP fit"
        )


def _source_of(points: list[RunPoint]) -> str:
    return points[0].source or "no file"


@_blas_single_threaded
def fit_envelope(
    table: RunTable | Sequence[RunPoint],
    objective: str | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    grid_size: int = 40,
    max_flops: float | None = None,
) -> FrontierFit:
    """Approach 1 on every point (curve and final) of `objective`'s runs. Raises ValueError when a run has fewer
    than two points. With `max_flops`, only the envelope points at C <= max_flops are fitted (the grid is the same
    as without it); the others are kept in `excluded`."""
    runs = _runs_of(_points(table, objective))
    if len(runs) < 2:
        raise ValueError(f"the envelope needs at least two runs, got {len(runs)}")
    check_curves(runs)
    cap = math.inf if max_flops is None else max_flops * (1 + 1e-9)

    def fit(sample: dict[str, list[RunPoint]]):
        points = envelope_points(sample, grid_size)
        fitted = [p for p in points if p.flops <= cap]
        c = [p.flops for p in fitted]
        return (
            fit_power_law(c, [p.parameters for p in fitted]),
            fit_power_law(c, [p.tokens for p in fitted]),
            fit_power_law(c, [p.loss for p in fitted]),
            fitted,
            [p for p in points if p.flops > cap],
        )

    n_opt, d_opt, loss, points, beyond = fit(runs)
    replicates, failures = _bootstrap(runs, fit, bootstrap, seed, stratify=None)
    _attach_cis((n_opt, d_opt, loss), replicates)
    return FrontierFit(
        approach="envelope",
        objective=objective or points_objective(runs),
        n_opt=n_opt,
        d_opt=d_opt,
        loss=loss,
        points=points,
        runs=len(runs),
        bootstrap=bootstrap,
        seed=seed,
        skipped=[f"{len(beyond)} envelope point(s) above C = {max_flops:.3g}"] if beyond else [],
        excluded=beyond,
        flops_cap=max_flops,
        bootstrap_failures=failures,
        n_opt_replicates=[(r[0].coefficient, r[0].exponent) for r in replicates],
        d_opt_replicates=[(r[1].coefficient, r[1].exponent) for r in replicates],
    )


def points_objective(runs: dict[str, list[RunPoint]]) -> str:
    objectives = sorted({points[0].objective for points in runs.values()})
    return objectives[0] if len(objectives) == 1 else "+".join(objectives)


def _bootstrap(runs, fit, bootstrap: int, seed: int, stratify) -> tuple[list[tuple], int]:
    rng = np.random.default_rng(seed)
    replicates, failures = [], 0
    for _ in range(bootstrap):
        try:
            replicates.append(fit(_resample_runs(runs, rng, stratify)))
        except (ValueError, np.linalg.LinAlgError):
            failures += 1
    return replicates, failures


def _attach_cis(laws: tuple[PowerLaw, ...], replicates: list[tuple]) -> None:
    for index, law in enumerate(laws):
        law.exponent_ci = _percentile_ci([replicate[index].exponent for replicate in replicates])
        law.coefficient_ci = _percentile_ci([replicate[index].coefficient for replicate in replicates])


# ---------------------------------------------------------------------------------------------------------------
# Approach 2: IsoFLOP profiles


def isoflop_groups(
    finals: Sequence[RunPoint], budget_tolerance: float = 0.15
) -> tuple[dict[float, list[RunPoint]], list[str]]:
    """Final points grouped by budget. A run without a budget joins the declared budget its compute is within
    `budget_tolerance` (relative) of; runs matching none are reported."""
    declared = sorted({p.budget for p in finals if p.budget is not None})
    groups: dict[float, list[RunPoint]] = defaultdict(list)
    unplaced = []
    for point in sorted(finals, key=lambda p: p.run):
        budget = point.budget
        if budget is None:
            near = [b for b in declared if abs(math.log(point.flops / b)) <= math.log1p(budget_tolerance)]
            if not near:
                unplaced.append(point.run)
                continue
            budget = near[0]
        groups[budget].append(point)
    if unplaced:
        unplaced = [
            f"{len(unplaced)} run(s) without a budget, within {budget_tolerance:.0%} of none: {', '.join(unplaced)}"
        ]
    return dict(sorted(groups.items())), unplaced


def parabola_minimum(parameters: Sequence[float], losses: Sequence[float]) -> tuple[float, float]:
    """(N at the minimum, loss there) of loss = c2·(ln N)² + c1·ln N + c0; raises ValueError when not convex."""
    x = np.log(np.asarray(parameters, float))
    c2, c1, c0 = np.polyfit(x, np.asarray(losses, float), 2)
    if c2 <= 0:
        raise ValueError("the profile is not convex (no minimum)")
    x_min = -c1 / (2 * c2)
    return float(math.exp(x_min)), float(c0 - c1 * c1 / (4 * c2))


def isoflop_minima(
    groups: dict[float, list[RunPoint]], min_sizes: int = 3, window: int | None = None
) -> tuple[list[OptimumPoint], list[str]]:
    """The parabola minimum of each budget with at least `min_sizes` distinct sizes, and why others were skipped.
    Several runs of one size at one budget are averaged. With `window`, the parabola goes through only the
    `window` sizes (in ln N order) centred on the lowest loss: a profile far wider than its curvature (a flat
    plateau on one side) otherwise pulls the minimum toward the plateau."""
    minima, skipped = [], []
    for budget, points in groups.items():
        by_size: dict[float, list[float]] = defaultdict(list)
        for point in points:
            by_size[point.parameters].append(point.loss)
        sizes = sorted(by_size)
        if len(sizes) < min_sizes:
            skipped.append(f"{budget:.2g}: {len(sizes)} size(s), fewer than {min_sizes}")
            continue
        losses = [float(np.mean(by_size[n])) for n in sizes]
        if window is not None and len(sizes) > window:
            start = min(max(int(np.argmin(losses)) - window // 2, 0), len(sizes) - window)
            sizes, losses = sizes[start : start + window], losses[start : start + window]
        try:
            n_opt, loss = parabola_minimum(sizes, losses)
        except ValueError as error:
            skipped.append(f"{budget:.2g}: {error}")
            continue
        minima.append(
            OptimumPoint(
                flops=budget,
                parameters=n_opt,
                tokens=budget / (6 * n_opt),
                loss=loss,
                runs=len(sizes),
                extrapolated=not sizes[0] <= n_opt <= sizes[-1],
            )
        )
    return minima, skipped


@_blas_single_threaded
def fit_isoflop(
    table: RunTable | Sequence[RunPoint],
    objective: str | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    min_sizes: int = 3,
    budget_tolerance: float = 0.15,
    include_extrapolated: bool = False,
    window: int | None = None,
) -> FrontierFit:
    """Approach 2 on the final points of `objective`'s runs. Budgets with fewer than `min_sizes` sizes, non-convex
    profiles and (unless `include_extrapolated`) minima outside the trained sizes are left out and listed in
    `skipped`. `window` fits each parabola through that many sizes around the lowest loss (see `isoflop_minima`).
    Bootstrap replicates resample runs within each budget."""
    finals = [p for p in _points(table, objective) if p.final]
    groups, unplaced = isoflop_groups(finals, budget_tolerance)
    runs = {f"{budget}|{p.run}": [p] for budget, points in groups.items() for p in points}

    def fit(sample: dict[str, list[RunPoint]]):
        regrouped: dict[float, list[RunPoint]] = defaultdict(list)
        for name, (point,) in sample.items():
            regrouped[float(name.split("|", 1)[0])].append(point)
        minima, skipped = isoflop_minima(dict(sorted(regrouped.items())), min_sizes, window)
        excluded = []
        if not include_extrapolated:
            skipped += [
                f"{m.flops:.2g}: minimum {m.parameters:.3g} outside the sizes trained" for m in minima if m.extrapolated
            ]
            excluded = [m for m in minima if m.extrapolated]
            minima = [m for m in minima if not m.extrapolated]
        if len(minima) < 2:
            raise ValueError(f"IsoFLOP needs two budgets with a minimum, got {len(minima)} ({'; '.join(skipped)})")
        c = [m.flops for m in minima]
        return (
            fit_power_law(c, [m.parameters for m in minima]),
            fit_power_law(c, [m.tokens for m in minima]),
            fit_power_law(c, [m.loss for m in minima]),
            minima,
            skipped,
            excluded,
        )

    n_opt, d_opt, loss, minima, skipped, excluded = fit(runs)
    replicates, failures = _bootstrap(runs, fit, bootstrap, seed, stratify=lambda points: points[0].budget)
    _attach_cis((n_opt, d_opt, loss), replicates)
    return FrontierFit(
        approach="isoflop",
        objective=objective or points_objective({name: points for name, points in runs.items()}),
        n_opt=n_opt,
        d_opt=d_opt,
        loss=loss,
        points=minima,
        runs=len(runs),
        bootstrap=bootstrap,
        seed=seed,
        skipped=unplaced + skipped,
        excluded=excluded,
        excluded_budgets=sorted(set(groups) - {m.flops for m in minima}),
        bootstrap_failures=failures,
        n_opt_replicates=[(r[0].coefficient, r[0].exponent) for r in replicates],
        d_opt_replicates=[(r[1].coefficient, r[1].exponent) for r in replicates],
    )


# ---------------------------------------------------------------------------------------------------------------
# Approach 3: parametric L(N, D)

# Hoffmann et al.'s initialisation grid, thinned: (e, a, b, alpha, beta) with A = exp(a), B = exp(b), E = exp(e).
DEFAULT_GRID = {
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}


def _huber(residual: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber values and derivatives."""
    small = np.abs(residual) <= delta
    value = np.where(small, 0.5 * residual**2, delta * (np.abs(residual) - 0.5 * delta))
    grad = np.where(small, residual, delta * np.sign(residual))
    return value, grad


def _parametric_objective(theta: np.ndarray, ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray, delta: float):
    e, a, b, alpha, beta = theta
    terms = np.stack([a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)])
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    lse = top + np.log(total)
    value, grad_r = _huber(lse - ln_l, delta)
    soft = weights / total  # d lse / d term
    grad = np.array(
        [
            np.sum(grad_r * soft[2]),
            np.sum(grad_r * soft[0]),
            np.sum(grad_r * soft[1]),
            np.sum(grad_r * soft[0] * -ln_n),
            np.sum(grad_r * soft[1] * -ln_d),
        ]
    )
    return float(value.sum()), grad


def _grid_values(grid: dict[str, Sequence[float]], ln_n, ln_d, ln_l, delta) -> tuple[np.ndarray, np.ndarray]:
    mesh = np.array(np.meshgrid(*(grid[k] for k in ("e", "a", "b", "alpha", "beta")), indexing="ij"))
    starts = mesh.reshape(5, -1).T
    e, a, b, alpha, beta = (starts[:, i : i + 1] for i in range(5))
    terms = np.stack([a - alpha * ln_n, b - beta * ln_d, np.broadcast_to(e, (len(starts), len(ln_n)))])
    top = terms.max(axis=0)
    lse = top + np.log(np.exp(terms - top).sum(axis=0))
    values, _ = _huber(lse - ln_l, delta)
    return starts, values.sum(axis=1)


def _minimise(starts: np.ndarray, ln_n, ln_d, ln_l, delta) -> tuple[np.ndarray, float]:
    best_theta, best_value = None, math.inf
    for start in starts:
        result = minimize(_parametric_objective, start, args=(ln_n, ln_d, ln_l, delta), jac=True, method="L-BFGS-B")
        if np.all(np.isfinite(result.x)) and result.fun < best_value:
            best_theta, best_value = result.x, float(result.fun)
    if best_theta is None:
        raise ValueError("L-BFGS found no finite optimum")
    return best_theta, best_value


def _allocation(theta: np.ndarray) -> tuple[PowerLaw, PowerLaw]:
    e, a, b, alpha, beta = theta
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"alpha {alpha:.3g} and beta {beta:.3g} must be positive for a compute-optimal allocation")
    A, B = math.exp(a), math.exp(b)
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    exp_n, exp_d = beta / (alpha + beta), alpha / (alpha + beta)
    # N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b
    return PowerLaw(float(g * 6.0**-exp_n), float(exp_n)), PowerLaw(float(6.0**-exp_d / g), float(exp_d))


@_blas_single_threaded
def fit_parametric(
    table: RunTable | Sequence[RunPoint],
    objective: str | None = None,
    bootstrap: int = 100,
    seed: int = 0,
    use: str = "final",
    huber_delta: float = 1e-3,
    grid: dict[str, Sequence[float]] | None = None,
    starts: int = 10,
) -> ParametricFit:
    """Approach 3. `use="final"` fits each run's final point, `"all"` every point of every curve. The objective is
    evaluated on the whole start grid at once; L-BFGS runs from its `starts` best points (bootstrap replicates
    start from the full fit's optimum and the grid's best point)."""
    if use not in ("final", "all"):
        raise ValueError(f"use must be 'final' or 'all', got {use!r}")
    points = [p for p in _points(table, objective) if use == "all" or p.final]
    runs = _runs_of(points)
    if len(points) < 5:
        raise ValueError(f"the parametric fit has 5 parameters and needs more than 5 points, got {len(points)}")
    grid = grid or DEFAULT_GRID

    def arrays(sample: dict[str, list[RunPoint]]):
        flat = [p for group in sample.values() for p in group]
        return (
            np.log([p.parameters for p in flat]),
            np.log([p.tokens for p in flat]),
            np.log([p.loss for p in flat]),
        )

    ln_n, ln_d, ln_l = arrays(runs)
    grid_starts, grid_values = _grid_values(grid, ln_n, ln_d, ln_l, delta=huber_delta)
    best = grid_starts[np.argsort(grid_values)[:starts]]
    theta, value = _minimise(best, ln_n, ln_d, ln_l, delta=huber_delta)
    n_opt, d_opt = _allocation(theta)

    rng = np.random.default_rng(seed)
    replicates, failures = [], 0
    for _ in range(bootstrap):
        sample = _resample_runs(runs, rng)
        s_n, s_d, s_l = arrays(sample)
        try:
            s_theta, _ = _minimise(np.stack([theta, best[0]]), s_n, s_d, s_l, delta=huber_delta)
            s_n_opt, s_d_opt = _allocation(s_theta)
        except ValueError:
            failures += 1
            continue
        replicates.append((s_theta, s_n_opt, s_d_opt))
    e, a, b, alpha, beta = theta
    ci = {}
    if replicates:
        thetas = np.array([r[0] for r in replicates])
        named = {
            "E": np.exp(thetas[:, 0]),
            "A": np.exp(thetas[:, 1]),
            "B": np.exp(thetas[:, 2]),
            "alpha": thetas[:, 3],
            "beta": thetas[:, 4],
            "a": [r[1].exponent for r in replicates],
            "b": [r[2].exponent for r in replicates],
        }
        ci = {name: interval for name, values in named.items() if (interval := _percentile_ci(values)) is not None}
        n_opt.exponent_ci, d_opt.exponent_ci = ci.get("a"), ci.get("b")
        n_opt.coefficient_ci = _percentile_ci([r[1].coefficient for r in replicates])
        d_opt.coefficient_ci = _percentile_ci([r[2].coefficient for r in replicates])
    return ParametricFit(
        objective=objective or points_objective(runs),
        E=float(math.exp(e)),
        A=float(math.exp(a)),
        B=float(math.exp(b)),
        alpha=float(alpha),
        beta=float(beta),
        n_opt=n_opt,
        d_opt=d_opt,
        points=len(points),
        runs=len(runs),
        huber_delta=huber_delta,
        objective_value=value,
        bootstrap=bootstrap,
        seed=seed,
        ci=ci,
        bootstrap_failures=failures,
        n_opt_replicates=[(r[1].coefficient, r[1].exponent) for r in replicates],
        d_opt_replicates=[(r[2].coefficient, r[2].exponent) for r in replicates],
    )


# ---------------------------------------------------------------------------------------------------------------
# All approaches, JSON


def fit_all(
    table: RunTable,
    objective: str,
    bootstrap: int = 200,
    seed: int = 0,
    parametric_bootstrap: int | None = None,
    parametric_use: str = "final",
    min_sizes: int = 3,
) -> ScalingFits:
    """The three approaches for one objective; an approach the data cannot support is None with its reason in
    `errors` (never silently)."""
    fits = ScalingFits(objective=objective, envelope=None, isoflop=None, parametric=None)
    fits.sources = sorted({p.source for p in table.points if p.objective == objective and p.source})[:50]
    try:
        fits.envelope = fit_envelope(table, objective, bootstrap, seed)
    except ValueError as error:
        fits.errors["envelope"] = str(error)
    try:
        fits.isoflop = fit_isoflop(table, objective, bootstrap, seed, min_sizes=min_sizes)
    except ValueError as error:
        fits.errors["isoflop"] = str(error)
    try:
        fits.parametric = fit_parametric(
            table,
            objective,
            bootstrap if parametric_bootstrap is None else parametric_bootstrap,
            seed,
            use=parametric_use,
        )
    except ValueError as error:
        fits.errors["parametric"] = str(error)
    return fits


def format_fits(fits: Sequence[ScalingFits]) -> str:
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
                f"{item.objective:<9} {name:<11} {_with_ci(fit.n_opt.exponent, fit.n_opt.exponent_ci):<26} "
                f"{_with_ci(fit.d_opt.exponent, fit.d_opt.exponent_ci):<26} {fit.n_opt.coefficient:>10.3g} {fit.runs}"
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


def _with_ci(value: float, ci: tuple[float, float] | None) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def fits_to_dict(fits: Sequence[ScalingFits]) -> dict[str, Any]:
    return {"format": FIT_FORMAT, "objectives": {f.objective: asdict(f) for f in fits}}


def save_fits(fits: Sequence[ScalingFits], path: str | Path) -> Path:
    """Write the fits as JSON (what `plm scaling plan --fit` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fits_to_dict(fits), indent=1) + "\n")
    return path


def _power_law(data: dict[str, Any]) -> PowerLaw:
    return PowerLaw(
        coefficient=data["coefficient"],
        exponent=data["exponent"],
        exponent_ci=tuple(data["exponent_ci"]) if data.get("exponent_ci") else None,
        coefficient_ci=tuple(data["coefficient_ci"]) if data.get("coefficient_ci") else None,
    )


def _frontier(data: dict[str, Any] | None) -> FrontierFit | None:
    if data is None:
        return None
    return FrontierFit(
        **{
            **data,
            "n_opt": _power_law(data["n_opt"]),
            "d_opt": _power_law(data["d_opt"]),
            "loss": _power_law(data["loss"]),
            "points": [OptimumPoint(**p) for p in data["points"]],
            "excluded": [OptimumPoint(**p) for p in data.get("excluded", [])],
            "n_opt_replicates": [tuple(r) for r in data.get("n_opt_replicates", [])],
            "d_opt_replicates": [tuple(r) for r in data.get("d_opt_replicates", [])],
        }
    )


def load_fits(path: str | Path) -> dict[str, ScalingFits]:
    """Read `save_fits` JSON: objective -> fits. Raises ValueError on another format."""
    path = Path(path)
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("format") != FIT_FORMAT:
        raise ValueError(f"{path} is not a `plm scaling fit` JSON (format {FIT_FORMAT!r})")
    result = {}
    for objective, item in data["objectives"].items():
        parametric = item.get("parametric")
        if parametric is not None:
            parametric = ParametricFit(
                **{
                    **parametric,
                    "n_opt": _power_law(parametric["n_opt"]),
                    "d_opt": _power_law(parametric["d_opt"]),
                    "ci": {k: tuple(v) for k, v in parametric.get("ci", {}).items()},
                    "n_opt_replicates": [tuple(r) for r in parametric.get("n_opt_replicates", [])],
                    "d_opt_replicates": [tuple(r) for r in parametric.get("d_opt_replicates", [])],
                }
            )
        result[objective] = ScalingFits(
            objective=objective,
            envelope=_frontier(item.get("envelope")),
            isoflop=_frontier(item.get("isoflop")),
            parametric=parametric,
            errors=item.get("errors", {}),
            sources=item.get("sources", []),
        )
    return result
