"""`plm finetune CONFIG.yaml [--flag value ...]`: LoRA or full fine-tuning (also `python training/finetune.py`)."""

import logging

HELP = "fine-tune (LoRA or full) for sequence or per-residue tasks (see: plm finetune --help)"
EXAMPLES = """examples:
  # FLIP GB1 regression with LoRA (validation rows marked in the CSV; never trains on `set=test`)
  plm finetune --model runs/demo/final --task sequence-regression \\
      --train-file ../shared/data/flip/gb1/three_vs_rest.csv.gz --sequence-column sequence --label-column target \\
      --split-column set --validation-column validation --pooling max --learning-rate 3e-4 \\
      --head-learning-rate 3e-3 --epochs 3 --eval-steps 56 --output-dir runs/gb1-lora

  # FLIP 3-state secondary structure, per residue: labels and splits from a label FASTA, masked residues ignored
  plm finetune --model runs/demo/final --task token-classification \\
      --train-file ../shared/data/flip/secondary_structure/sequences.fasta.gz \\
      --labels-fasta ../shared/data/flip/secondary_structure/sampled.fasta.gz \\
      --mask-fasta ../shared/data/flip/secondary_structure/mask.fasta.gz \\
      --split-column SET --validation-column VALIDATION --max-train-samples 2000 --max-length 512 \\
      --output-dir runs/ss-lora

  # sequence classification from a FASTA with labels in the headers (>P12345 LABEL=membrane), full fine-tuning
  plm finetune --model runs/demo/final --task sequence-classification --method full --train-file train.fasta \\
      --label-column LABEL --valid-file valid.fasta --test-file test.fasta

  plm finetune training/configs/finetune_gb1.yaml --learning-rate 3e-3      # YAML keys = flags; flags win
  plm finetune training/configs/finetune_gb1.yaml --resume auto             # continue after a kill or SIGTERM
  accelerate launch training/finetune.py training/configs/finetune_gb1.yaml  # same job on accelerate's launcher

Reload: modeling_plm.training.finetune.load_finetuned(OUTPUT_DIR) (+ AutoTokenizer.from_pretrained(OUTPUT_DIR)).
"""
DESCRIPTION = (
    "Fine-tune a protein language model (LoRA or full) for sequence regression, sequence classification or "
    "per-residue classification, on accelerate, with early stopping on the validation metric."
)
FIELD_HELP = {
    "model": "base checkpoint folder (any modeling_plm model, e.g. runs/demo/final)",
    "task": "what to predict",
    "method": "LoRA adapters + head, or every weight",
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA scale numerator (scale = alpha / r)",
    "lora_dropout": "dropout on the LoRA input",
    "lora_targets": "adapted modules",
    "pooling": "sequence tasks: pooling over residues (default: the checkpoint's)",
    "train_file": "CSV/TSV or FASTA(.gz); with --split-column also holds the validation and test rows",
    "valid_file": "separate validation file (same format; split columns not read)",
    "test_file": "separate test file, scored once with the best checkpoint",
    "sequence_column": "CSV column of the amino-acid sequence",
    "label_column": "CSV column or FASTA header key of the label (token tasks in CSV: one per residue)",
    "split_column": "CSV column or FASTA header key holding --train-split / --test-split",
    "validation_column": "CSV column or header key; true marks training rows used for validation",
    "mask_column": "token tasks, CSV: column of one 0/1 per residue (0 = ignored)",
    "labels_fasta": "token tasks, FASTA: per-residue labels by id (header fields are read too)",
    "mask_fasta": "token tasks, FASTA: 0/1 per residue by id (0 = ignored in loss and metrics)",
    "train_split": "split value of training rows",
    "test_split": "split value of test rows",
    "valid_fraction": "hold out this fraction of train for validation when nothing marks validation",
    "max_train_samples": "seeded random subset of the training sequences",
    "max_valid_samples": "seeded random subset of the validation sequences",
    "max_test_samples": "seeded random subset of the test sequences",
    "max_length": (
        "residues per input: token tasks cut longer sequences into chunks, sequence tasks keep the first ones "
        "(default: the model's context)"
    ),
    "invalid_residues": (
        "a character outside the tokenizer's residues: error, skip the example (counted), map it to X, or drop it"
    ),
    "epochs": "passes over the training set (at most: early stopping may end sooner)",
    "batch_size": "sequences per step",
    "group_by_length": "batch sequences of similar length together",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "learning_rate": "peak learning rate (default: 1e-3 for LoRA, 1e-4 for full)",
    "head_learning_rate": "peak learning rate of the head (default: --learning-rate)",
    "weight_decay": "AdamW weight decay (not on biases and norms)",
    "lr_schedule": "after the warm-up",
    "warmup_ratio": "fraction of the steps of linear warm-up",
    "min_lr_ratio": "final learning rate as a fraction of the peak",
    "wsd_decay_ratio": "wsd: fraction of the steps of final decay",
    "adam_beta1": "AdamW beta1",
    "adam_beta2": "AdamW beta2",
    "adam_epsilon": "AdamW epsilon",
    "max_grad_norm": "gradient clipping (0: none)",
    "mixed_precision": "accelerate mixed precision",
    "normalize_targets": "regression: train on standardised targets (folded back on save)",
    "standardize_pooled": (
        "sequence tasks: centre the pooled features on their training mean and scale them to unit spread before "
        "the head (folded into the head on save); needed when sequences are near-identical, e.g. variants of one "
        "protein"
    ),
    "eval_steps": "validate every N optimizer steps (0: every epoch)",
    "eval_token_budget": "padded tokens per evaluation batch (length-sorted)",
    "metric_for_best": (
        "validation metric that picks the best checkpoint (default: spearman for regression, accuracy for "
        "classification)"
    ),
    "early_stopping_patience": "stop after N validations without improvement (0: never)",
    "output_dir": "where the best checkpoint, metrics.jsonl and finetune_record.json go",
    "overwrite": "replace a non-empty output folder",
    "save_steps": "write a resumable checkpoint every N optimizer steps (0: at every validation; always on SIGTERM)",
    "save_total_limit": "resumable checkpoints kept in OUTPUT_DIR/checkpoints",
    "resume": "continue an interrupted run: auto (the output folder's newest checkpoint) or a checkpoint folder",
    "seed": "seed of the head initialisation, LoRA dropout, batches and subsets",
    "log_steps": "write the mean training loss every N steps",
}


def load_finetune_config(argv: list[str] | None = None):
    """A `FinetuneConfig`: the YAML file's values first, then the flags that were given."""
    from ..data.residues import INVALID_RESIDUE_POLICIES
    from ..training.arguments import config_parser, parse_config
    from ..training.config import LR_SCHEDULES, METHODS, TASKS, FinetuneConfig

    choices = {
        "task": TASKS,
        "method": METHODS,
        "lora_targets": ("attention", "all-linear"),
        "pooling": ("mean", "max", "bos"),
        "invalid_residues": INVALID_RESIDUE_POLICIES,
        "lr_schedule": LR_SCHEDULES,
        "mixed_precision": ("no", "bf16", "fp16"),
    }
    parser = config_parser(
        FinetuneConfig,
        prog="plm finetune",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        field_help=FIELD_HELP,
        choices=choices,
    )
    return parse_config(FinetuneConfig, parser, argv)


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState

    from ..training.finetune import _number, finetune, read_record

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    output_dir = finetune(load_finetune_config(argv))
    if not PartialState().is_main_process:
        return 0
    record = read_record(output_dir)
    best = record["best_valid"][record["metric_for_best"]]
    print(f"best valid {record['metric_for_best']} {_number(best)} at step {record['best_step']}")
    if "test" in record:
        print("test: " + ", ".join(f"{k} {_number(v)}" for k, v in record["test"].items()))
    print(f"Saved to {output_dir} (load with modeling_plm.training.finetune.load_finetuned)")
    return 0
