"""Scaling-law figures (matplotlib, Agg backend, small PNGs).

- `plot_isoflop`: final loss against N for each budget, with each budget's parabola and its minimum.
- `plot_frontier`: N_opt (and D_opt) against C: the optimum points, the fitted power law, its 95% bootstrap band,
  and optionally a reference law (e.g. the published one).
- `plot_loss_vs_compute`: every run's loss curve against C, with the envelope and the IsoFLOP minima.
- `plot_fits`: those three figures for each objective's fits (`plm scaling fit`, the sweep's report).
"""

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .fit import FrontierFit, PowerLaw, ScalingFits, isoflop_groups  # noqa: E402
from .runs import RunPoint, RunTable, format_count  # noqa: E402

DPI = 72
FIGSIZE = (6.0, 4.2)


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def plot_isoflop(table: RunTable, fit: FrontierFit, path: str | Path, title: str | None = None) -> Path:
    """Final loss vs N per budget (one colour each), the parabolas in ln N, and the minima (stars)."""
    finals = [p for p in table.points if p.final and p.objective == fit.objective]
    groups, _ = isoflop_groups(finals)
    minima = {point.flops: point for point in fit.points}
    figure, axis = plt.subplots(figsize=FIGSIZE)
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(groups), 1)))
    for colour, (budget, points) in zip(colours, groups.items()):
        n = np.array([p.parameters for p in points])
        loss = np.array([p.loss for p in points])
        axis.scatter(n, loss, s=14, color=colour, label=f"{budget:.0e}")
        if budget in minima and len(set(n.tolist())) >= 3:
            c2, c1, c0 = np.polyfit(np.log(n), loss, 2)
            x = np.linspace(np.log(n.min()), np.log(n.max()), 100)
            axis.plot(np.exp(x), c2 * x * x + c1 * x + c0, color=colour, linewidth=1)
            axis.scatter(
                [minima[budget].parameters],
                [minima[budget].loss],
                marker="*",
                s=90,
                color=colour,
                edgecolor="black",
                linewidth=0.5,
                zorder=3,
            )
    axis.set_xscale("log")
    axis.set_xlabel("non-embedding parameters N")
    axis.set_ylabel("final validation loss")
    axis.set_title(title or f"IsoFLOP profiles ({fit.objective.upper()})")
    axis.legend(title="budget C", fontsize=7, title_fontsize=7, ncol=2)
    return _save(figure, path)


def plot_frontier(
    fits: Sequence[FrontierFit],
    path: str | Path,
    reference: dict[str, PowerLaw] | None = None,
    quantity: str = "parameters",
    title: str | None = None,
) -> Path:
    """N_opt (`quantity="parameters"`) or D_opt (`"tokens"`) against C for each fit: points, power law and the 95%
    bootstrap band (pointwise 2.5-97.5 percentiles of the replicate power laws)."""
    figure, axis = plt.subplots(figsize=FIGSIZE)
    all_c = [p.flops for fit in fits for p in fit.points]
    if not all_c:
        raise ValueError("no optimum points to plot")
    c = np.exp(np.linspace(np.log(min(all_c)) - 0.5, np.log(max(all_c)) + 0.5, 100))
    for fit, colour in zip(fits, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        law = fit.n_opt if quantity == "parameters" else fit.d_opt
        values = [p.parameters if quantity == "parameters" else p.tokens for p in fit.points]
        axis.scatter([p.flops for p in fit.points], values, s=14, color=colour)
        label = f"{fit.approach}: ∝ C^{law.exponent:.3f}"
        if law.exponent_ci:
            label += f" [{law.exponent_ci[0]:.3f}, {law.exponent_ci[1]:.3f}]"
        axis.plot(c, law(c), color=colour, label=label)
        replicates = fit.n_opt_replicates if quantity == "parameters" else fit.d_opt_replicates
        if len(replicates) >= 2:
            curves = np.array([k * c**e for k, e in replicates])
            low, high = np.percentile(curves, [2.5, 97.5], axis=0)
            axis.fill_between(c, low, high, color=colour, alpha=0.2, linewidth=0)
    for name, law in (reference or {}).items():
        axis.plot(c, law(c), color="black", linestyle="--", linewidth=1, label=f"{name}: ∝ C^{law.exponent:.3f}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("compute C = 6·N·D (FLOPs)")
    axis.set_ylabel("N_opt (non-embedding)" if quantity == "parameters" else "D_opt (tokens)")
    axis.set_title(title or f"Compute-optimal {'model size' if quantity == 'parameters' else 'tokens'}")
    axis.legend(fontsize=7)
    return _save(figure, path)


def plot_loss_vs_compute(
    table: RunTable,
    path: str | Path,
    fits: Sequence[FrontierFit] = (),
    objective: str | None = None,
    title: str | None = None,
    max_runs: int = 400,
) -> Path:
    """Each run's loss curve against C (colour: N), the envelope points and the IsoFLOP minima of `fits`."""
    points: list[RunPoint] = [p for p in table.points if objective is None or p.objective == objective]
    by_run: dict[str, list[RunPoint]] = defaultdict(list)
    for point in points:
        by_run[point.run].append(point)
    sizes = np.log([p.parameters for p in points]) if points else np.zeros(1)
    low, high = float(sizes.min()), float(sizes.max())
    figure, axis = plt.subplots(figsize=FIGSIZE)
    for run_points in list(by_run.values())[:max_runs]:
        run_points.sort(key=lambda p: p.flops)
        run_points = run_points[:: max(1, len(run_points) // 60)] + run_points[-1:]  # ~60 points a curve: small PNGs
        shade = (np.log(run_points[0].parameters) - low) / max(high - low, 1e-9)
        axis.plot(
            [p.flops for p in run_points],
            [p.loss for p in run_points],
            color=plt.cm.viridis(0.9 * shade),
            linewidth=0.6,
            alpha=0.6,
        )
    markers = {"envelope": ("o", "black"), "isoflop": ("*", "red")}
    for fit in fits:
        marker, colour = markers.get(fit.approach, ("s", "gray"))
        axis.scatter(
            [p.flops for p in fit.points],
            [p.loss for p in fit.points],
            marker=marker,
            s=16 if marker == "o" else 70,
            color=colour,
            zorder=3,
            label=f"{fit.approach} (L ∝ C^{fit.loss.exponent:.3f})",
        )
    axis.set_xscale("log")
    axis.set_xlabel("compute C = 6·N·D (FLOPs)")
    axis.set_ylabel("validation loss")
    span = f"{format_count(np.exp(low))}–{format_count(np.exp(high))}" if points else ""
    axis.set_title(title or f"Loss vs compute ({objective or 'all'}; colour: N {span})")
    if fits:
        axis.legend(fontsize=7)
    return _save(figure, path)


def plot_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
    xscale: str = "log",
) -> Path:
    """Named (x, y) curves on one axis (mask-ratio and transfer figures)."""
    figure, axis = plt.subplots(figsize=FIGSIZE)
    for name, (x, y) in curves.items():
        axis.plot(x, y, label=name, linewidth=1)
    axis.set_xscale(xscale)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=7)
    return _save(figure, path)


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
