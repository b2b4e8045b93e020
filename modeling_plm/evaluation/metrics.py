"""Per-assay zero-shot metrics exactly as ProteinGym defines them (`proteingym/performance_DMS_benchmarks.py`,
OATML-Markslab/ProteinGym), and a bootstrap interval of a mean over assays.

Every metric takes the measured DMS scores (higher = fitter) and the model's scores (higher = predicted fitter):
  - Spearman: scipy's rank correlation.
  - AUC: ROC AUC of the model score against the binary DMS label (`DMS_score_bin`; `binarize` makes it from a
    cutoff), sklearn's `roc_auc_score`.
  - MCC: the model score binarised at its median (1 where score >= median) against the DMS label, sklearn's
    `matthews_corrcoef`.
  - NDCG: gains are the DMS scores min-max normalised to [0, 1]; the model's top k = floor(10% of n) mutants are
    discounted by log2(rank + 1) and divided by the same sum over the true top k.
  - Top-10% recall: the fraction of the true top 10% (DMS score >= its 90th percentile, numpy's linear
    interpolation) that is also in the model's top 10% (model score >= its 90th percentile).
A metric that is undefined on an assay (a constant score, a single DMS class) is NaN, as ProteinGym records it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import bootstrap, spearmanr
from sklearn.metrics import matthews_corrcoef, roc_auc_score

__all__ = [
    "METRICS",
    "TOP_PERCENT",
    "assay_metrics",
    "auc",
    "binarize",
    "bootstrap_mean_interval",
    "mcc",
    "ndcg",
    "spearman",
    "top_recall",
]

METRICS = ("spearman", "auc", "mcc", "ndcg", "top_recall")
TOP_PERCENT = 10  # ProteinGym's NDCG and recall look at the top 10% of an assay


def _arrays(first: Sequence[float], second: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"metric inputs must be two 1-D sequences of one length, got {first.shape} and {second.shape}")
    return first, second


def binarize(dms_scores: Sequence[float], cutoff: float) -> np.ndarray:
    """The binary DMS label: 1 (fit) where the score is at or above `cutoff`, else 0 (ProteinGym's own thresholding
    rule, the one it applies to model scores for the MCC)."""
    return (np.asarray(dms_scores, dtype=float) >= cutoff).astype(int)


def spearman(dms_scores: Sequence[float], model_scores: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get average ranks); NaN when either side is constant."""
    dms, model = _arrays(dms_scores, model_scores)
    if np.ptp(dms) == 0 or np.ptp(model) == 0:
        return math.nan
    return float(spearmanr(dms, model).statistic)


def auc(dms_labels: Sequence[int], model_scores: Sequence[float]) -> float:
    """ROC AUC of `model_scores` for the binary `dms_labels`; NaN when the assay has one class only."""
    labels, model = _arrays(dms_labels, model_scores)
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, model))


def mcc(dms_labels: Sequence[int], model_scores: Sequence[float]) -> float:
    """Matthews correlation of the model's median split (1 where score >= its median) with `dms_labels`."""
    labels, model = _arrays(dms_labels, model_scores)
    predicted = (model >= np.median(model)).astype(int)
    return float(matthews_corrcoef(labels.astype(int), predicted))


def _discounted_gain(gains: np.ndarray, ranks: np.ndarray, k: int) -> float:
    kept = (ranks <= k) & (gains != 0)
    return float(np.sum(gains[kept] / np.log2(ranks[kept] + 1)))


def ndcg(dms_scores: Sequence[float], model_scores: Sequence[float], top_percent: float = TOP_PERCENT) -> float:
    """ProteinGym's NDCG over the model's top `top_percent`% (k = floor(n * top_percent / 100)).

    Ranks are 1-based positions in descending order; tied scores take their order in the input (a stable sort;
    ProteinGym's numpy quicksort leaves that order unspecified). 0 when k is 0, NaN for constant DMS scores.
    """
    dms, model = _arrays(dms_scores, model_scores)
    if np.ptp(dms) == 0:
        return math.nan
    k = int(np.floor(len(dms) * top_percent / 100))
    gains = (dms - dms.min()) / (dms.max() - dms.min())
    ranks = np.argsort(np.argsort(-model, kind="stable"), kind="stable") + 1
    dcg = _discounted_gain(gains, ranks, k)
    if dcg == 0:
        return 0.0  # also ProteinGym's answer when none of the top k has a gain
    ideal_ranks = np.argsort(np.argsort(-gains, kind="stable"), kind="stable") + 1
    return dcg / _discounted_gain(gains, ideal_ranks, k)


def top_recall(dms_scores: Sequence[float], model_scores: Sequence[float], top_percent: float = TOP_PERCENT) -> float:
    """Fraction of the true top `top_percent`% that the model also puts in its top `top_percent`% (ties at either
    percentile count as in the top, as in ProteinGym)."""
    dms, model = _arrays(dms_scores, model_scores)
    true_top = dms >= np.percentile(dms, 100 - top_percent)
    model_top = model >= np.percentile(model, 100 - top_percent)
    return float((true_top & model_top).sum() / true_top.sum())


def assay_metrics(
    dms_scores: Sequence[float], dms_labels: Sequence[int], model_scores: Sequence[float]
) -> dict[str, float]:
    """All of `METRICS` for one assay and one scorer."""
    return {
        "spearman": spearman(dms_scores, model_scores),
        "auc": auc(dms_labels, model_scores),
        "mcc": mcc(dms_labels, model_scores),
        "ndcg": ndcg(dms_scores, model_scores),
        "top_recall": top_recall(dms_scores, model_scores),
    }


def bootstrap_mean_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Percentile bootstrap interval of the mean of `values` (one per assay: the assays are resampled with
    replacement, `resamples` times, seeded), with the bootstrap standard error. NaN values are left out first; with
    fewer than two values left the interval is NaN."""
    kept = np.asarray([value for value in values if math.isfinite(value)], dtype=float)
    if len(kept) < 2:
        return {"low": math.nan, "high": math.nan, "standard_error": math.nan, "assays": len(kept)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a constant sample gives a zero-width interval, not an error
        result = bootstrap(
            (kept,),
            np.mean,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    interval = result.confidence_interval
    return {
        "low": float(interval.low),
        "high": float(interval.high),
        "standard_error": float(result.standard_error),
        "assays": len(kept),
    }
