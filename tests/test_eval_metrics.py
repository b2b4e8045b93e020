"""ProteinGym's per-assay metrics against values worked out by hand on a 10-mutant example, and against scipy and
sklearn where they compute the same thing."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import matthews_corrcoef, ndcg_score, roc_auc_score

from modeling_plm.evaluation.metrics import (
    assay_metrics,
    auc,
    binarize,
    bootstrap_mean_interval,
    mcc,
    ndcg,
    spearman,
    top_recall,
)

# Ten mutants. DMS ranks (ascending): 4 8 2 10 5 1 7 9 3 6; model ranks: 6 5 2 10 7 1 9 8 3 4.
DMS = [0.1, 0.5, -0.3, 0.9, 0.2, -1.0, 0.4, 0.7, 0.0, 0.3]
MODEL = [0.2, 0.1, -0.5, 0.8, 0.3, -0.9, 0.6, 0.4, -0.1, 0.0]
CUTOFF = 0.3  # fit (label 1): 0.5, 0.9, 0.4, 0.7 and 0.3 itself, at indices 1, 3, 6, 7, 9


def test_binarize_labels_scores_at_or_above_the_cutoff():
    assert binarize(DMS, CUTOFF).tolist() == [0, 1, 0, 1, 0, 0, 1, 1, 0, 1]


def test_spearman_by_hand():
    # Rank differences -2 3 0 0 -2 0 -2 1 0 2: sum of squares 26; rho = 1 - 6 * 26 / (10 * (100 - 1)).
    assert spearman(DMS, MODEL) == pytest.approx(1 - 6 * 26 / 990, abs=1e-12)
    assert math.isnan(spearman(DMS, [1.0] * 10))  # a constant model has no ranking


def test_auc_by_hand():
    # Positives' model scores 0.1 0.8 0.6 0.4 0.0 each beat 3, 5, 5, 5 and 3 of the negatives' 0.2 -0.5 0.3 -0.9 -0.1.
    assert auc(binarize(DMS, CUTOFF), MODEL) == pytest.approx(21 / 25, abs=1e-12)
    assert math.isnan(auc([1] * 10, MODEL))  # one class: undefined


def test_mcc_binarises_the_model_at_its_median_by_hand():
    # Model median (0.1 + 0.2) / 2 = 0.15: predicted fit at indices 0, 3, 4, 6, 7. TP 3, FP 2, FN 2, TN 3.
    assert mcc(binarize(DMS, CUTOFF), MODEL) == pytest.approx((3 * 3 - 2 * 2) / math.sqrt(5**4), abs=1e-12)


def test_ndcg_by_hand():
    # Gains: DMS min-max normalised, (dms + 1) / 1.9. Top 30% = 3 mutants. The model's top 3 are indices 3, 6, 7
    # (gains 1.9, 1.4 and 1.7 over 1.9); the ideal top 3 are indices 3, 7, 1 (gains 1.9, 1.7, 1.5 over 1.9).
    dcg = 1.9 / 1.9 / math.log2(2) + 1.4 / 1.9 / math.log2(3) + 1.7 / 1.9 / math.log2(4)
    ideal = 1.9 / 1.9 / math.log2(2) + 1.7 / 1.9 / math.log2(3) + 1.5 / 1.9 / math.log2(4)
    assert ndcg(DMS, MODEL, top_percent=30) == pytest.approx(dcg / ideal, abs=1e-12)
    assert ndcg(DMS, MODEL) == 1.0  # top 10% = 1 mutant, and the model's best is the fittest
    assert ndcg(DMS, [-x for x in MODEL]) == 0.0  # its best is the least fit, whose gain is 0
    assert ndcg(DMS[:9], MODEL[:9]) == 0.0  # floor(0.9) = 0 mutants in the top 10%
    assert math.isnan(ndcg([0.5] * 10, MODEL))


def test_top_recall_by_hand():
    # 90th percentiles (linear): DMS 0.7 + 0.1 * 0.2 = 0.72 -> index 3; model 0.6 + 0.1 * 0.2 = 0.62 -> index 3.
    assert top_recall(DMS, MODEL) == 1.0
    # 70th percentiles: DMS 0.43 -> indices 1, 3, 7; model 0.33 -> indices 3, 6, 7; 2 of the 3 found.
    assert top_recall(DMS, MODEL, top_percent=30) == pytest.approx(2 / 3, abs=1e-12)


def test_metrics_agree_with_scipy_and_sklearn_on_random_assays():
    rng = np.random.default_rng(0)
    for size in (7, 50, 301):
        dms = rng.normal(size=size)
        model = dms + rng.normal(scale=1.5, size=size)
        labels = binarize(dms, np.median(dms))
        assert spearman(dms, model) == pytest.approx(spearmanr(dms, model).statistic, abs=1e-12)
        assert auc(labels, model) == pytest.approx(roc_auc_score(labels, model), abs=1e-12)
        predicted = (model >= np.median(model)).astype(int)
        assert mcc(labels, model) == pytest.approx(matthews_corrcoef(labels, predicted), abs=1e-12)
        gains = (dms - dms.min()) / (dms.max() - dms.min())
        k = size // 10
        if k:  # sklearn's NDCG@k with ProteinGym's min-max gains (no ties in continuous data)
            assert ndcg(dms, model) == pytest.approx(ndcg_score([gains], [model], k=k), abs=1e-12)
        metrics = assay_metrics(dms, labels, model)
        assert list(metrics) == ["spearman", "auc", "mcc", "ndcg", "top_recall"]
        assert metrics["top_recall"] == top_recall(dms, model)


def test_metric_inputs_must_match():
    with pytest.raises(ValueError, match=r"two 1-D sequences of one length, got \(3,\) and \(2,\)"):
        spearman([1, 2, 3], [1, 2])


def test_bootstrap_interval_of_the_mean_over_assays():
    # Two assays 0 and 1: a resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the 95% percentile
    # interval is [0, 1] and the standard error sqrt(0.25 / 2).
    two = bootstrap_mean_interval([0.0, 1.0], seed=0)
    assert (two["low"], two["high"], two["assays"]) == (0.0, 1.0, 2)
    assert two["standard_error"] == pytest.approx(math.sqrt(0.125), abs=0.01)
    values = [0.31, 0.12, 0.45, 0.05, 0.27, float("nan"), 0.38]
    first, again = bootstrap_mean_interval(values, seed=7), bootstrap_mean_interval(values, seed=7)
    assert first == again  # seeded
    assert first["assays"] == 6  # the NaN assay is left out
    assert first["low"] < np.nanmean(values) < first["high"]
    assert bootstrap_mean_interval(values, seed=8) != first
    constant = bootstrap_mean_interval([0.2, 0.2, 0.2])
    assert constant["low"] == pytest.approx(0.2) and constant["high"] == pytest.approx(0.2)
    assert math.isnan(bootstrap_mean_interval([0.4])["low"])
