"""FLIP benchmarks: LoRA fine-tuning of a PLM next to a baseline that needs no PLM, on real splits.

- GB1 (`flip/gb1/<split>.csv.gz`, sequence regression, 265 residues; the variants differ at 4 positions): test
  Spearman of the fine-tuned model, of one-hot (265 x 20) + ridge with alpha picked on the validation rows, and, to
  tell the representation from the fine-tuning, of ridge on the base model's frozen pooled embeddings.
- 3-state secondary structure (`flip/secondary_structure`, per residue): test per-residue accuracy of the fine-tuned
  model, and of the majority state of each amino acid in the training split. Masked residues are excluded from both
  the loss and the metrics.

Both sides use the same rows: the validation rows (`validation` / VALIDATION=True) pick the checkpoint (early
stopping) and the ridge alpha, and the test rows are scored once. Writes results/flip_gb1.json and
results/flip_secondary_structure.json.

    OMP_NUM_THREADS=1 python benchmarks/flip.py --model runs/demo/final --threads 1
"""

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import report  # noqa: E402

from modeling_plm.data.fasta import find_data_dir  # noqa: E402
from modeling_plm.training.finetune import (  # noqa: E402
    FinetuneConfig,
    compute_metrics,
    finetune,
    load_data,
    read_record,
    spearman,
)

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
LOAD_AT_START = os.getloadavg()  # the machine is shared: wall times depend on what else runs


def one_hot(sequences: list[str]) -> np.ndarray:
    """(n, L*20) one-hot of equal-length sequences (a non-standard residue is all zeros)."""
    lengths = {len(sequence) for sequence in sequences}
    if len(lengths) != 1:
        raise ValueError(f"one-hot needs sequences of one length, got lengths {sorted(lengths)[:5]}")
    codes = np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8).reshape(len(sequences), -1)
    lookup = np.full(256, -1)
    lookup[np.frombuffer(AMINO_ACIDS.encode("ascii"), dtype=np.uint8)] = np.arange(len(AMINO_ACIDS))
    index = lookup[codes]  # (n, L), -1 for non-standard residues
    features = (index[:, :, None] == np.arange(len(AMINO_ACIDS))).astype(np.float64)
    return features.reshape(len(sequences), -1)


def ridge_fit_select(
    x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray, alphas: np.ndarray
):
    """Closed-form ridge (intercept unpenalised) with alpha picked by validation Spearman; returns (predict, alpha,
    valid Spearman). Columns constant over the training rows add nothing once centred: they are dropped (same fit)."""
    varying = x_train.std(0) > 0
    x_mean, y_mean = x_train[:, varying].mean(0), y_train.mean()
    centred = x_train[:, varying] - x_mean
    gram, moment = centred.T @ centred, centred.T @ (y_train - y_mean)

    def fit(alpha: float) -> np.ndarray:
        return np.linalg.solve(gram + alpha * np.eye(len(gram)), moment)

    def predict_with(weights: np.ndarray):
        return lambda x: (x[:, varying] - x_mean) @ weights + y_mean

    scores = {float(a): spearman(predict_with(fit(a))(x_valid), y_valid) for a in alphas}
    alpha = max(scores, key=lambda a: scores[a])
    return predict_with(fit(alpha)), alpha, scores[alpha]


def ridge_baseline(data, alphas: np.ndarray, featurize, name: str) -> dict[str, object]:
    """Ridge on `featurize(sequences)`, fit on the train rows, alpha by validation Spearman, scored on test."""
    started = time.time()
    x_train, x_valid, x_test = (featurize([e.sequence for e in split]) for split in (data.train, data.valid, data.test))
    labels = {name: np.array([e.label for e in getattr(data, name)]) for name in ("train", "valid", "test")}
    predict, alpha, valid_spearman = ridge_fit_select(x_train, labels["train"], x_valid, labels["valid"], alphas)
    test = compute_metrics("sequence-regression", predict(x_test), labels["test"])
    return {
        "features": name,
        "dimensions": int(x_train.shape[1]),
        "alpha": alpha,
        "valid_spearman": valid_spearman,
        "test": test,
        "wall_time_s": time.time() - started,
    }


def frozen_embeddings(model_path: str, pooling: str):
    """Pooled last-layer embeddings of the base model, not fine-tuned (the protein-embedding pipeline's function)."""
    from transformers import AutoTokenizer

    from modeling_plm import PLMModel
    from modeling_plm.inference.embedding import embed_sequences

    model = PLMModel.from_pretrained(model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def featurize(sequences: list[str]) -> np.ndarray:
        rows = embed_sequences(model, tokenizer, sequences, pooling=pooling, token_budget=16384, progress=True)
        return np.stack([row[pooling] for row in rows]).astype(np.float64)

    return featurize


def majority_baseline(train, test) -> dict[str, object]:
    """Each amino acid predicts its most frequent state among the scored training residues."""
    counts: dict[str, Counter] = {}
    overall: Counter = Counter()
    for example in train:
        for residue, state, keep in zip(example.sequence, example.label, example.mask or "1" * len(example.label)):
            if keep == "1":
                counts.setdefault(residue, Counter())[state] += 1
                overall[state] += 1
    fallback = overall.most_common(1)[0][0]
    rule = {residue: counter.most_common(1)[0][0] for residue, counter in counts.items()}
    states = sorted(overall)
    predicted, actual = [], []
    for example in test:
        for residue, state, keep in zip(example.sequence, example.label, example.mask or "1" * len(example.label)):
            if keep == "1":
                predicted.append(states.index(rule.get(residue, fallback)))
                actual.append(states.index(state))
    metrics = compute_metrics("token-classification", np.array(predicted), np.array(actual), len(states))
    return {**metrics, "rule": dict(sorted(rule.items()))}


def run_gb1(args: argparse.Namespace, data_dir: Path) -> None:
    config = FinetuneConfig(
        model=args.model,
        task="sequence-regression",
        train_file=str(data_dir / "flip" / "gb1" / f"{args.gb1_split}.csv.gz"),
        sequence_column="sequence",
        label_column="target",
        split_column="set",
        validation_column="validation",
        max_train_samples=args.gb1_train_samples,
        epochs=args.gb1_epochs,
        batch_size=args.batch_size,
        learning_rate=args.gb1_learning_rate,
        head_learning_rate=args.gb1_head_learning_rate,
        pooling=args.gb1_pooling,
        eval_steps=args.gb1_eval_steps,
        lora_targets=args.lora_targets,
        early_stopping_patience=args.patience,
        output_dir=str(Path(args.output_root) / f"gb1-{args.gb1_split}"),
        overwrite=True,
        seed=args.seed,
    )
    started = time.time()
    output_dir = finetune(config)
    plm_wall = time.time() - started
    record = read_record(output_dir)
    # The baseline reads the same rows through the same loader (same subset, same validation and test rows).
    from transformers import AutoTokenizer

    data = load_data(config, AutoTokenizer.from_pretrained(args.model).valid_residues, None)
    one_hot_ridge = ridge_baseline(data, np.logspace(-5, 4, 19), one_hot, "one-hot, 265 x 20")
    embedding_ridge = ridge_baseline(
        data, np.logspace(-8, 2, 21), frozen_embeddings(args.model, args.gb1_pooling), f"{args.gb1_pooling}-pooled"
    )
    counts = record["data"]["sequences"]
    rows = [
        {
            "method": f"LoRA fine-tune of {args.model} ({args.lora_targets}, r=8, {args.gb1_pooling} pooling)",
            "test_spearman": record["test"]["spearman"],
            "valid_spearman": record["best_valid"]["spearman"],
            "train_rows": counts["train"],
            "valid_rows": counts["valid"],
            "test_rows": counts["test"],
            "wall_s": plm_wall,
        }
    ]
    for method, result in (
        (f"one-hot + ridge (no PLM; alpha={one_hot_ridge['alpha']:.3g})", one_hot_ridge),
        (
            f"frozen {args.gb1_pooling}-pooled embeddings of {args.model} + ridge "
            f"(alpha={embedding_ridge['alpha']:.3g})",
            embedding_ridge,
        ),
    ):
        rows.append(
            {
                "method": method,
                "test_spearman": result["test"]["spearman"],
                "valid_spearman": result["valid_spearman"],
                "train_rows": len(data.train),
                "valid_rows": len(data.valid),
                "test_rows": len(data.test),
                "wall_s": result["wall_time_s"],
            }
        )
    report(
        "flip_gb1",
        rows,
        {
            "split": args.gb1_split,
            "base_model": record["base_model"],
            "base_model_training": _base_model_summary(args.model),
            "finetune": {k: record[k] for k in ("best_step", "steps", "epochs_run", "stopped_early", "parameters")},
            "finetune_test": record["test"],
            "finetune_config": {k: record["config"][k] for k in _CONFIG_KEYS if k in record["config"]},
            "one_hot_ridge": one_hot_ridge,
            "embedding_ridge": embedding_ridge,
            "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
            "load_average_at_start": LOAD_AT_START,
        },
    )


def run_secondary_structure(args: argparse.Namespace, data_dir: Path) -> None:
    folder = data_dir / "flip" / "secondary_structure"
    config = FinetuneConfig(
        model=args.model,
        task="token-classification",
        train_file=str(folder / "sequences.fasta.gz"),
        labels_fasta=str(folder / "sampled.fasta.gz"),
        mask_fasta=str(folder / "mask.fasta.gz"),
        split_column="SET",
        validation_column="VALIDATION",
        max_train_samples=args.ss_train_samples,
        max_valid_samples=args.ss_valid_samples,
        max_length=args.ss_max_length,
        epochs=args.ss_epochs,
        batch_size=args.batch_size,
        learning_rate=args.ss_learning_rate,
        lora_targets=args.lora_targets,
        early_stopping_patience=args.patience,
        output_dir=str(Path(args.output_root) / "secondary_structure"),
        overwrite=True,
        seed=args.seed,
    )
    started = time.time()
    output_dir = finetune(config)
    plm_wall = time.time() - started
    record = read_record(output_dir)
    from transformers import AutoTokenizer

    valid_residues = AutoTokenizer.from_pretrained(args.model).valid_residues
    same_rows = load_data(config, valid_residues, None)  # the PLM's training subset and the full test split
    full = load_data(
        FinetuneConfig(**{**vars(config), "max_train_samples": None, "max_valid_samples": None}), valid_residues, None
    )
    started = time.time()
    majority_subset = majority_baseline(same_rows.train, same_rows.test)
    majority_full = majority_baseline(full.train, full.test)
    majority_wall = time.time() - started
    if majority_subset["count"] != record["test"]["count"]:
        raise RuntimeError("the baseline and the fine-tuned model scored different residues")
    counts = record["data"]["sequences"]
    rows = [
        {
            "method": f"LoRA fine-tune of {args.model} ({args.lora_targets}, r=8)",
            "test_accuracy": record["test"]["accuracy"],
            "test_macro_f1": record["test"]["macro_f1"],
            "train_sequences": counts["train"],
            "test_sequences": counts["test"],
            "test_residues": record["test"]["count"],
            "wall_s": plm_wall,
        },
        {
            "method": "per-amino-acid majority state (no PLM; same train subset)",
            "test_accuracy": majority_subset["accuracy"],
            "test_macro_f1": majority_subset["macro_f1"],
            "train_sequences": same_rows.stats["sequences"]["train"],
            "test_sequences": same_rows.stats["sequences"]["test"],
            "test_residues": majority_subset["count"],
            "wall_s": majority_wall,
        },
        {
            "method": "per-amino-acid majority state (no PLM; all train sequences)",
            "test_accuracy": majority_full["accuracy"],
            "test_macro_f1": majority_full["macro_f1"],
            "train_sequences": full.stats["sequences"]["train"],
            "test_sequences": full.stats["sequences"]["test"],
            "test_residues": majority_full["count"],
            "wall_s": majority_wall,
        },
    ]
    report(
        "flip_secondary_structure",
        rows,
        {
            "base_model": record["base_model"],
            "base_model_training": _base_model_summary(args.model),
            "finetune": {k: record[k] for k in ("best_step", "steps", "epochs_run", "stopped_early", "parameters")},
            "finetune_data": record["data"],
            "finetune_test": record["test"],
            "finetune_config": {k: record["config"][k] for k in _CONFIG_KEYS if k in record["config"]},
            "majority_rule_full_train": majority_full["rule"],
            "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
            "load_average_at_start": LOAD_AT_START,
        },
    )


_CONFIG_KEYS = (
    "method",
    "lora_r",
    "lora_alpha",
    "lora_targets",
    "pooling",
    "epochs",
    "batch_size",
    "learning_rate",
    "head_learning_rate",
    "weight_decay",
    "warmup_ratio",
    "lr_schedule",
    "max_train_samples",
    "max_valid_samples",
    "max_length",
    "early_stopping_patience",
    "seed",
)


def _base_model_summary(model: str) -> dict[str, object] | None:
    path = Path(model) / "training_record.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    # No wall time: a resumed run records only its last leg.
    return {k: record.get(k) for k in ("objective", "steps", "tokens", "parameters", "non_embedding_parameters")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo/final", help="base checkpoint folder")
    parser.add_argument("--only", choices=("gb1", "secondary_structure"), default=None, help="run one benchmark")
    parser.add_argument("--gb1-split", default="three_vs_rest", choices=("three_vs_rest", "low_vs_high"))
    parser.add_argument("--gb1-train-samples", type=int, default=None, help="subset of the GB1 training rows")
    parser.add_argument("--gb1-epochs", type=int, default=3)
    parser.add_argument("--gb1-learning-rate", type=float, default=3e-4, help="LoRA learning rate")
    parser.add_argument("--gb1-head-learning-rate", type=float, default=3e-3)
    parser.add_argument("--gb1-pooling", default="max", choices=("mean", "max", "bos"))
    parser.add_argument("--gb1-eval-steps", type=int, default=56, help="validate every N steps (0: every epoch)")
    parser.add_argument("--ss-train-samples", type=int, default=2000, help="subset of the 9,712 training sequences")
    parser.add_argument("--ss-valid-samples", type=int, default=500, help="subset of the 1,080 validation sequences")
    parser.add_argument("--ss-max-length", type=int, default=512, help="longer sequences are cut into chunks")
    parser.add_argument("--ss-epochs", type=int, default=4)
    parser.add_argument("--ss-learning-rate", type=float, default=2e-3)
    parser.add_argument("--lora-targets", default="attention", choices=("attention", "all-linear"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patience", type=int, default=3, help="early stopping: validations without improvement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-root", default="runs/flip", help="fine-tuned models go to OUTPUT_ROOT/<task>")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = find_data_dir(Path(__file__).parent)
    if data_dir is None:
        raise FileNotFoundError("shared data not found: set PLM_DATA_DIR")
    if args.only in (None, "gb1"):
        run_gb1(args, data_dir)
    if args.only in (None, "secondary_structure"):
        run_secondary_structure(args, data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
