"""Fine-tuning metrics: Spearman, Pearson and MSE for regression, accuracy and macro-F1 for classification (per
residue for per-residue tasks), which of two values is better, and a `compute_metrics` for transformers' `Trainer`."""

import math

import numpy as np

# Metrics each task reports on validation and test; the first is the default for early stopping.
TASK_METRICS = {
    "sequence-regression": ("spearman", "pearson", "mse", "loss"),
    "sequence-classification": ("accuracy", "macro_f1", "loss"),
    "token-classification": ("accuracy", "macro_f1", "loss"),
}
LOWER_IS_BETTER = {"mse", "loss"}


def spearman(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Spearman's rank correlation (NaN when either side is constant)."""
    from scipy.stats import spearmanr

    if len(predictions) < 2 or np.ptp(predictions) == 0 or np.ptp(targets) == 0:
        return float("nan")
    return float(spearmanr(predictions, targets).statistic)


def macro_f1(predictions: np.ndarray, targets: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in the targets or the predictions."""
    scores = []
    for label in range(num_classes):
        true_positive = np.sum((predictions == label) & (targets == label))
        predicted, actual = np.sum(predictions == label), np.sum(targets == label)
        if predicted + actual:
            scores.append(2 * true_positive / (predicted + actual))
    return float(np.mean(scores)) if scores else float("nan")


def compute_metrics(task: str, predictions: np.ndarray, targets: np.ndarray, num_classes: int = 0) -> dict:
    """Regression: Spearman, Pearson, MSE. Classification: accuracy, macro-F1 (per residue for token tasks: pass the
    scored residues only)."""
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    if task == "sequence-regression":
        pearson = float(np.corrcoef(predictions, targets)[0, 1]) if np.ptp(predictions) > 0 else float("nan")
        return {
            "spearman": spearman(predictions, targets),
            "pearson": pearson,
            "mse": float(np.mean((predictions - targets) ** 2)),
            "count": int(len(targets)),
        }
    return {
        "accuracy": float(np.mean(predictions == targets)) if len(targets) else float("nan"),
        "macro_f1": macro_f1(predictions, targets, num_classes),
        "count": int(len(targets)),
    }


def trainer_compute_metrics(task: str, num_classes: int = 0):
    """A `compute_metrics` for transformers' `Trainer` (`EvalPrediction` of logits and label ids)."""

    def metrics(prediction) -> dict[str, float]:
        logits, labels = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
        if task == "sequence-regression":
            return compute_metrics(task, logits.reshape(-1), labels.reshape(-1))
        predicted = logits.argmax(-1)
        if task == "token-classification":
            keep = labels != -100
            predicted, labels = predicted[keep], labels[keep]
        return compute_metrics(task, predicted, labels, num_classes or logits.shape[-1])

    return metrics


def is_better(value: float, best: float | None, metric: str) -> bool:
    """Whether `value` of `metric` beats `best` (None or NaN: nothing to beat; a NaN value never wins)."""
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best
