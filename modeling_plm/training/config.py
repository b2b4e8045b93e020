"""The fields every training run has: pretraining (`PretrainConfig`) and fine-tuning (`FinetuneConfig`) extend
`RunConfig`, and redeclare a field where their default differs."""

import os
from dataclasses import dataclass

from ..data.fasta import DATA_DIR_ENV, find_data_dir
from ..data.residues import check_residue_policy

LR_SCHEDULES = ("cosine", "wsd", "constant")


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
    mixed_precision: str = "no"
    # Bookkeeping
    output_dir: str = "runs/pretrain"
    seed: int = 0
    log_steps: int = 10
    eval_steps: int = 100

    def validate_shared(self) -> None:
        check_residue_policy(self.invalid_residues)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


def expand_data_path(spec: str) -> str:
    """`${PLM_DATA_DIR}` (the environment variable, else the shared data folder beside the repo) and `~` expanded."""
    if "PLM_DATA_DIR" in spec:
        data_dir = os.environ.get(DATA_DIR_ENV) or find_data_dir()
        if data_dir is None:
            raise FileNotFoundError(f"{spec}: set {DATA_DIR_ENV} to the shared data folder")
        spec = spec.replace("${PLM_DATA_DIR}", str(data_dir)).replace("$PLM_DATA_DIR", str(data_dir))
    return os.path.expanduser(spec)
