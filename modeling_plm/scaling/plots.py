"""Scaling-law figures (matplotlib, Agg backend, PNG at `DPI`).

- `plot_isoflop`: final loss against N for each budget (colour: budget, with a colour bar), each fitted budget's
  parabola and its minimum; budgets left out of the fit and minima outside the trained sizes have their own markers.
- `plot_frontier`: N_opt (and D_opt) against C: the optimum points, the fitted power law, its 95% bootstrap band,
  the points left out of the fit (own marker), the envelope's cap, and reference laws (e.g. the published ones).
- `plot_loss_vs_compute`: every run's loss curve against C (colour: N, with a colour bar), with the envelope points
  and the IsoFLOP minima; envelope points above the cap and excluded minima are marked apart.
- `plot_fits`: those three figures for each objective's fits (`plm scaling fit`, the sweep's report).

Each `plot_*` draws with the matching `*_figure` function, which returns the open `Figure` (the tests read its
legend and colour bars), then saves it.
"""

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .fit import FrontierFit, OptimumPoint, PowerLaw, ScalingFits, isoflop_groups  # noqa: E402
from .runs import RunPoint, RunTable, format_count  # noqa: E402

DPI = 150
FIGSIZE = (7.0, 4.8)  # 1050 × 720 px at DPI
LEGEND_FONTSIZE = 9
COLOURMAP = "viridis"
FRONTIER_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")
REFERENCE_STYLES = (("black", "--"), ("dimgray", ":"), ("gray", "-."), ("black", (0, (1, 3))))


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def _new_figure() -> tuple[Figure, plt.Axes]:
    return plt.subplots(figsize=FIGSIZE, layout="constrained")


def _legend(axis: plt.Axes, **options) -> None:
    axis.legend(fontsize=LEGEND_FONTSIZE, title_fontsize=LEGEND_FONTSIZE, **options)


def _colour_bar(figure: Figure, axis: plt.Axes, norm: LogNorm, label: str) -> None:
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=COLOURMAP)
    figure.colorbar(mappable, ax=axis, label=label)


def _log_norm(values: Sequence[float]) -> LogNorm:
    low, high = min(values), max(values)
    return LogNorm(vmin=low, vmax=high if high > low else low * 1.01)


def isoflop_figure(table: RunTable, fit: FrontierFit, title: str | None = None) -> Figure:
    """Final loss vs N per budget (colour: budget), the fitted parabolas and minima (stars); budgets left out of the
    fit drawn as crosses, minima outside the trained sizes as open stars."""
    finals = [p for p in table.points if p.final and p.objective == fit.objective]
    groups, _ = isoflop_groups(finals)
    if not groups:
        raise ValueError(f"no final points with a budget for objective {fit.objective!r}")
    minima = {point.flops: point for point in fit.points}
    outside = {point.flops: point for point in fit.excluded}
    norm = _log_norm(list(groups))
    figure, axis = _new_figure()
    labelled: set[str] = set()

    def once(label: str) -> str:
        # one legend entry per kind of mark, not one per budget
        if label in labelled:
            return "_nolegend_"
        labelled.add(label)
        return label

    for budget, points in groups.items():
        colour = plt.get_cmap(COLOURMAP)(norm(budget))
        n = np.array([p.parameters for p in points])
        loss = np.array([p.loss for p in points])
        if budget not in minima:
            label = once("budget left out of the fit (see the report)")
            axis.scatter(n, loss, s=22, marker="x", color=colour, linewidth=1, label=label)
            if budget in outside:
                axis.scatter([outside[budget].parameters], [outside[budget].loss], marker="*", s=110,
                             facecolor="none", edgecolor=colour, linewidth=1,
                             label=once("its minimum, outside the sizes trained"))  # fmt: skip
            continue
        axis.scatter(n, loss, s=16, color=colour, label=once("final loss of a run"))
        if len(set(n.tolist())) >= 3:
            c2, c1, c0 = np.polyfit(np.log(n), loss, 2)
            x = np.linspace(np.log(n.min()), np.log(n.max()), 100)
            axis.plot(np.exp(x), c2 * x * x + c1 * x + c0, color=colour, linewidth=1, label=once("parabola in ln N"))
        axis.scatter([minima[budget].parameters], [minima[budget].loss], marker="*", s=110, color=colour,
                     edgecolor="black", linewidth=0.5, zorder=3, label=once("fitted minimum N_opt"))  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("non-embedding parameters N")
    axis.set_ylabel("final validation loss")
    axis.set_title(title or f"IsoFLOP profiles ({fit.objective.upper()})")
    _legend(axis)
    _colour_bar(figure, axis, norm, "budget C (FLOPs)")
    return figure


def plot_isoflop(table: RunTable, fit: FrontierFit, path: str | Path, title: str | None = None) -> Path:
    return _save(isoflop_figure(table, fit, title), path)


def _value(point: OptimumPoint, quantity: str) -> float:
    return point.parameters if quantity == "parameters" else point.tokens


def _draw_band(axis: plt.Axes, c: np.ndarray, replicates: list[tuple[float, float]], colour: str) -> None:
    if len(replicates) >= 2:
        curves = np.array([k * c**e for k, e in replicates])
        low, high = np.percentile(curves, [2.5, 97.5], axis=0)
        axis.fill_between(c, low, high, color=colour, alpha=0.2, linewidth=0)


def _excluded_label(fit: FrontierFit) -> str:
    if fit.flops_cap is not None:
        return f"{fit.approach}: above C = {fit.flops_cap:.2g}, not fitted"
    return f"{fit.approach}: minimum outside the sizes, not fitted"


def frontier_figure(
    fits: Sequence[FrontierFit],
    reference: dict[str, PowerLaw] | None = None,
    quantity: str = "parameters",
    title: str | None = None,
) -> Figure:
    """N_opt (`quantity="parameters"`) or D_opt (`"tokens"`) against C for each fit: points, power law and the 95%
    bootstrap band (pointwise 2.5-97.5 percentiles of the replicate power laws); points left out of a fit as open
    markers, an envelope's cap as a vertical line; `reference` laws dashed."""
    all_c = [p.flops for fit in fits for p in [*fit.points, *fit.excluded]]
    if not all_c:
        raise ValueError("no optimum points to plot")
    figure, axis = _new_figure()
    c = np.exp(np.linspace(np.log(min(all_c)) - 0.5, np.log(max(all_c)) + 0.5, 100))
    for fit, colour in zip(fits, FRONTIER_COLOURS):
        law = fit.n_opt if quantity == "parameters" else fit.d_opt
        axis.scatter([p.flops for p in fit.points], [_value(p, quantity) for p in fit.points], s=16, color=colour)
        if fit.excluded:
            axis.scatter([p.flops for p in fit.excluded], [_value(p, quantity) for p in fit.excluded], s=30,
                         marker="D", facecolor="none", edgecolor=colour, label=_excluded_label(fit))  # fmt: skip
        if fit.flops_cap is not None:
            axis.axvline(fit.flops_cap, color=colour, linestyle=":", linewidth=1,
                         label=f"{fit.approach} fit range ends (C = {fit.flops_cap:.2g})")  # fmt: skip
        label = f"{fit.approach}: ∝ C^{law.exponent:.3f}"
        if law.exponent_ci:
            label += f" [{law.exponent_ci[0]:.3f}, {law.exponent_ci[1]:.3f}]"
        axis.plot(c, law(c), color=colour, label=label)
        _draw_band(axis, c, fit.n_opt_replicates if quantity == "parameters" else fit.d_opt_replicates, colour)
    for (name, law), (colour, style) in zip((reference or {}).items(), REFERENCE_STYLES):
        axis.plot(c, law(c), color=colour, linestyle=style, linewidth=1, label=f"{name}: ∝ C^{law.exponent:.3f}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("compute C = 6·N·D (FLOPs)")
    axis.set_ylabel("N_opt (non-embedding)" if quantity == "parameters" else "D_opt (tokens)")
    axis.set_title(title or f"Compute-optimal {'model size' if quantity == 'parameters' else 'tokens'}")
    _legend(axis)
    return figure


def plot_frontier(
    fits: Sequence[FrontierFit],
    path: str | Path,
    reference: dict[str, PowerLaw] | None = None,
    quantity: str = "parameters",
    title: str | None = None,
) -> Path:
    return _save(frontier_figure(fits, reference, quantity, title), path)


def _thinned(points: list[RunPoint], per_curve: int = 60) -> list[RunPoint]:
    points = sorted(points, key=lambda p: p.flops)
    return points[:: max(1, len(points) // per_curve)] + points[-1:]  # ~60 points a curve: small PNGs


OPTIMUM_MARKERS = {"envelope": ("o", "black", 16), "isoflop": ("*", "red", 80)}


def _draw_optima(axis: plt.Axes, fit: FrontierFit) -> None:
    marker, colour, size = OPTIMUM_MARKERS.get(fit.approach, ("s", "gray", 16))
    axis.scatter([p.flops for p in fit.points], [p.loss for p in fit.points], marker=marker, s=size, color=colour,
                 zorder=3, label=f"{fit.approach} (L ∝ C^{fit.loss.exponent:.3f})")  # fmt: skip
    if fit.excluded:
        axis.scatter([p.flops for p in fit.excluded], [p.loss for p in fit.excluded], marker=marker, s=size * 1.5,
                     facecolor="none", edgecolor=colour, zorder=3, label=_excluded_label(fit))  # fmt: skip


def loss_vs_compute_figure(
    table: RunTable,
    fits: Sequence[FrontierFit] = (),
    objective: str | None = None,
    title: str | None = None,
    max_runs: int = 400,
) -> Figure:
    """Each run's loss curve against C (colour: N, with a colour bar), the envelope points and the IsoFLOP minima of
    `fits` (points left out of a fit as open markers)."""
    points: list[RunPoint] = [p for p in table.points if objective is None or p.objective == objective]
    if not points:
        raise ValueError(f"no points for objective {objective!r}")
    by_run: dict[str, list[RunPoint]] = defaultdict(list)
    for point in points:
        by_run[point.run].append(point)
    sizes = [p.parameters for p in points]
    norm = _log_norm(sizes)
    figure, axis = _new_figure()
    for run_points in list(by_run.values())[:max_runs]:
        curve = _thinned(run_points)
        colour = plt.get_cmap(COLOURMAP)(norm(curve[0].parameters))
        axis.plot([p.flops for p in curve], [p.loss for p in curve], color=colour, linewidth=0.6, alpha=0.7)
    for fit in fits:
        _draw_optima(axis, fit)
    axis.set_xscale("log")
    axis.set_xlabel("compute C = 6·N·D (FLOPs)")
    axis.set_ylabel("validation loss")
    span = f"{format_count(min(sizes))}–{format_count(max(sizes))}"
    axis.set_title(title or f"Loss vs compute ({objective or 'all'}; N {span})")
    if fits:
        _legend(axis)
    _colour_bar(figure, axis, norm, "non-embedding parameters N")
    return figure


def plot_loss_vs_compute(
    table: RunTable,
    path: str | Path,
    fits: Sequence[FrontierFit] = (),
    objective: str | None = None,
    title: str | None = None,
    max_runs: int = 400,
) -> Path:
    return _save(loss_vs_compute_figure(table, fits, objective, title, max_runs), path)


def curves_figure(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    xscale: str = "log",
) -> Figure:
    """Named (x, y) curves on one axis (mask-ratio and transfer figures; colour names a curve, not a value)."""
    figure, axis = _new_figure()
    for name, (x, y) in curves.items():
        axis.plot(x, y, label=name, linewidth=1.2, marker="o" if len(x) <= 12 else None, markersize=3)
    axis.set_xscale(xscale)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    _legend(axis)
    return figure


def plot_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
    xscale: str = "log",
) -> Path:
    return _save(curves_figure(curves, xlabel, ylabel, title, xscale), path)


def plot_fits(
    table: RunTable,
    fits: Sequence[ScalingFits],
    folder: str | Path,
    prefix: str = "",
    references: dict[str, dict[str, PowerLaw]] | None = None,
) -> list[Path]:
    """`<prefix>isoflop_<objective>.png`, `<prefix>frontier_<objective>.png` (with `references[objective]`, name ->
    N_opt law, dashed) and `<prefix>loss_vs_compute_<objective>.png` for each objective's fits, in `folder`."""
    folder, written = Path(folder), []
    for item in fits:
        frontiers = [fit for fit in (item.isoflop, item.envelope) if fit is not None]
        if item.isoflop is not None:
            written.append(plot_isoflop(table, item.isoflop, folder / f"{prefix}isoflop_{item.objective}.png"))
        if frontiers:
            reference = (references or {}).get(item.objective)
            written.append(plot_frontier(frontiers, folder / f"{prefix}frontier_{item.objective}.png", reference))
        curves = folder / f"{prefix}loss_vs_compute_{item.objective}.png"
        written.append(plot_loss_vs_compute(table, curves, frontiers, item.objective))
    return written
