"""The settings of training runs: `RunConfig`, the fields every run has, and the fine-tuning run's `FinetuneConfig`.
Pretraining's `PretrainConfig` (in `training.trainer`) and `FinetuneConfig` extend `RunConfig`, and redeclare a field
where their default differs."""

import os
from dataclasses import dataclass
from pathlib import Path

from ..data.fasta import DATA_DIR_ENV, file_format, find_data_dir
from ..data.residues import check_residue_policy
from ..hub.loading import check_model_folder, is_local_source
from .metrics import TASK_METRICS

LR_SCHEDULES = ("cosine", "wsd", "constant")
MIXED_PRECISIONS = ("no", "bf16", "fp16")
# Field -> (lowest, highest, whether the lowest is allowed); None: no bound. Checked before any work starts.
SHARED_RANGES = {
    "batch_size": (1, None, True),
    "gradient_accumulation_steps": (1, None, True),
    "log_steps": (1, None, True),
    "eval_steps": (0, None, True),
    "save_steps": (0, None, True),
    "save_total_limit": (1, None, True),
    "warmup_ratio": (0, 1, True),
    "min_lr_ratio": (0, 1, True),
    "wsd_decay_ratio": (0, 1, True),
    "weight_decay": (0, None, True),
    "adam_beta1": (0, 1, True),
    "adam_beta2": (0, 1, True),
    "adam_epsilon": (0, None, False),
    "max_grad_norm": (0, None, True),
    "valid_fraction": (0, 1, True),
}


def check_ranges(config: object, ranges: dict[str, tuple[float | None, float | None, bool]]) -> None:
    """Each named field (when set) within its range; the error names the field and its flag."""
    for name, (low, high, low_allowed) in ranges.items():
        value = getattr(config, name)
        if value is None:
            continue
        too_low = low is not None and (value < low if low_allowed else value <= low)
        if too_low or (high is not None and value > high):
            bound = f"at least {low}" if low_allowed else f"more than {low}"
            bound = bound if high is None else f"{bound} and at most {high}"
            raise ValueError(f"{name} (--{name.replace('_', '-')}) must be {bound}, got {value}")


TASKS = ("sequence-regression", "sequence-classification", "token-classification")
METHODS = ("lora", "full")


@dataclass
class RunConfig:
    """Data policy, optimisation and bookkeeping shared by every run (defaults: the pretraining recipe)."""

    # Data
    valid_fraction: float = 0.01
    invalid_residues: str = "skip"
    # Batches
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    # Optimisation (AdamW; `learning_rate_factor` reads the schedule fields)
    lr_schedule: str = "cosine"
    warmup_ratio: float = 0.025
    min_lr_ratio: float = 0.1
    wsd_decay_ratio: float = 0.2
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    # None: the launcher's (`accelerate launch --config_file`, its mixed_precision), "no" without one.
    mixed_precision: str | None = None
    # Bookkeeping
    output_dir: str = "runs/pretrain"
    seed: int = 0
    log_steps: int = 10
    eval_steps: int = 100
    save_steps: int = 100  # 0: a checkpoint at every evaluation
    save_total_limit: int = 3
    resume: str | None = None  # "auto" (the output folder's newest checkpoint) or a checkpoint folder

    def validate_shared(self) -> None:
        check_residue_policy(self.invalid_residues)
        check_ranges(self, SHARED_RANGES)
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise NotADirectoryError(f"{self.output_dir} (--output-dir) is a file, not a folder to write into")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}")


def check_input_file(path: str | None, field: str) -> None:
    """An input file the run needs (when set) exists and is a file; the error names it and its flag."""
    if path is None or Path(path).is_file():
        return
    flag = "--" + field.replace("_", "-")
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path} ({flag}) is a directory, not a file")
    raise FileNotFoundError(f"{path} ({flag}): no such file")


def expand_data_path(spec: str) -> str:
    """`${PLM_DATA_DIR}` (the environment variable, else the shared data folder beside the repo) and `~` expanded."""
    if "PLM_DATA_DIR" in spec:
        data_dir = os.environ.get(DATA_DIR_ENV) or find_data_dir()
        if data_dir is None:
            raise FileNotFoundError(f"{spec}: set {DATA_DIR_ENV} to the shared data folder")
        spec = spec.replace("${PLM_DATA_DIR}", str(data_dir)).replace("$PLM_DATA_DIR", str(data_dir))
    return os.path.expanduser(spec)


FINETUNE_RANGES = {
    "epochs": (1, None, True),
    "eval_token_budget": (1, None, True),
    "early_stopping_patience": (0, None, True),
    "max_length": (1, None, True),
    "learning_rate": (0, None, False),
    "head_learning_rate": (0, None, False),
    "lora_r": (1, None, True),
    "lora_alpha": (0, None, False),
    "lora_dropout": (0, 1, True),
    "max_train_samples": (1, None, True),
    "max_valid_samples": (1, None, True),
    "max_test_samples": (1, None, True),
}


@dataclass
class FinetuneConfig(RunConfig):
    """Every knob of a fine-tuning run: `RunConfig`'s (with the defaults below) and these. YAML files and `--flags`
    set them (flags win)."""

    # RunConfig's fields whose fine-tuning default differs
    valid_fraction: float = 0.0
    invalid_residues: str = "error"
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    min_lr_ratio: float = 0.0
    adam_beta2: float = 0.999
    eval_steps: int = 0
    save_steps: int = 0
    save_total_limit: int = 1
    output_dir: str = "runs/finetune"

    # Model
    model: str = ""
    task: str = "sequence-regression"
    method: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: str = "attention"
    pooling: str | None = None
    # Data
    train_file: str = ""
    valid_file: str | None = None
    test_file: str | None = None
    sequence_column: str = "sequence"
    label_column: str = "target"
    split_column: str | None = None
    validation_column: str | None = None
    mask_column: str | None = None
    labels_fasta: str | None = None
    mask_fasta: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    max_train_samples: int | None = None
    max_valid_samples: int | None = None
    max_test_samples: int | None = None
    max_length: int | None = None
    # Optimisation (the schedule is the pretraining trainer's `learning_rate_factor`)
    epochs: int = 10
    group_by_length: bool = True
    learning_rate: float | None = None
    head_learning_rate: float | None = None
    normalize_targets: bool = True
    standardize_pooled: bool = True
    # Evaluation and early stopping
    eval_token_budget: int = 16384
    metric_for_best: str | None = None
    early_stopping_patience: int = 3
    # Bookkeeping
    overwrite: bool = False

    def validate(self) -> None:
        self.validate_shared()
        if not self.model:
            raise ValueError("no base model: pass --model PATH (a modeling_plm checkpoint folder)")
        if not self.train_file:
            raise ValueError("no training data: pass --train-file PATH (CSV/TSV or FASTA, optionally .gz)")
        for name, value, allowed in (
            ("task", self.task, TASKS),
            ("method", self.method, METHODS),
            ("lora_targets", self.lora_targets, ("attention", "all-linear")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.invalid_residues == "drop" and self.task == "token-classification":
            raise ValueError("invalid_residues='drop' would shift per-residue labels: use error, skip or X")
        if self.pooling is not None and self.task == "token-classification":
            raise ValueError("--pooling applies to sequence tasks only")
        per_residue = self.task == "token-classification"
        if (self.mask_fasta or self.mask_column) and not per_residue:
            raise ValueError("--mask-fasta / --mask-column apply to token-classification only")
        if self.labels_fasta and not per_residue:
            raise ValueError("--labels-fasta applies to token-classification only (sequence labels: --label-column)")
        if per_residue:
            for path in (self.train_file, self.valid_file, self.test_file):
                if path and file_format(path) == "fasta" and not self.labels_fasta:
                    raise ValueError(
                        f"{path}: token-classification from FASTA needs --labels-fasta (per-residue labels by id)"
                    )
        metrics = TASK_METRICS[self.task]
        if self.metric_for_best is not None and self.metric_for_best not in metrics:
            raise ValueError(f"metric_for_best for {self.task} must be one of {metrics}, got {self.metric_for_best!r}")
        if self.valid_fraction >= 1:
            raise ValueError(f"valid_fraction (--valid-fraction) must be less than 1, got {self.valid_fraction}")
        check_ranges(self, FINETUNE_RANGES)
        # Then the files (the settings' own mistakes first: they need no disk to be reported).
        if is_local_source(self.model):
            check_model_folder(self.model)
        for name in ("train_file", "valid_file", "test_file", "labels_fasta", "mask_fasta"):
            check_input_file(getattr(self, name), name)

    def resolve_paths(self) -> None:
        """Expand `${PLM_DATA_DIR}` and `~` in the file paths (as the pretraining configs do)."""
        for name in ("model", "train_file", "valid_file", "test_file", "labels_fasta", "mask_fasta", "output_dir"):
            if getattr(self, name):
                setattr(self, name, expand_data_path(getattr(self, name)))

    @property
    def best_metric(self) -> str:
        return self.metric_for_best or TASK_METRICS[self.task][0]

    @property
    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-3 if self.method == "lora" else 1e-4
