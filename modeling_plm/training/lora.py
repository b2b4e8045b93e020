"""PEFT defaults for PLM models: which modules LoRA adapts, and which heads are trained and saved in full."""

from typing import Any

# Module names of the backbone (see modeling_plm.py): attention projections, and the MLP for "all-linear".
ATTENTION_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP_PROJECTIONS = ["gate_proj", "up_proj", "down_proj"]
# task -> (PEFT task type, head modules trained and saved in full alongside the adapter)
LORA_TASKS: dict[str, tuple[str, list[str]]] = {
    "sequence-classification": ("SEQ_CLS", ["classifier"]),
    "sequence-regression": ("SEQ_CLS", ["classifier"]),
    "token-classification": ("TOKEN_CLS", ["classifier"]),
    "masked-lm": ("FEATURE_EXTRACTION", []),
    "causal-lm": ("CAUSAL_LM", []),
}


def default_lora_config(
    task: str, r: int = 8, alpha: int = 16, dropout: float = 0.05, targets: str = "attention", **overrides: Any
):
    """A `peft.LoraConfig` for a PLM model.

    LoRA adapts the attention projections (`targets="attention"`, the usual choice for PLMs) or every linear layer of
    the blocks (`targets="all-linear"`). For classification and regression the head (`classifier`) is trained and
    saved in full with the adapter, so `save_pretrained` keeps everything needed to reload the fine-tuned model.
    `overrides` go to `LoraConfig` unchanged.
    """
    from peft import LoraConfig, TaskType

    if task not in LORA_TASKS:
        raise ValueError(f"task must be one of {sorted(LORA_TASKS)}, got {task!r}")
    if targets not in ("attention", "all-linear"):
        raise ValueError(f"targets must be 'attention' or 'all-linear', got {targets!r}")
    task_type, heads = LORA_TASKS[task]
    modules = ATTENTION_PROJECTIONS + (MLP_PROJECTIONS if targets == "all-linear" else [])
    options: dict[str, Any] = {
        "task_type": TaskType[task_type],
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": modules,
        "modules_to_save": heads or None,
    }
    options.update(overrides)
    return LoraConfig(**options)
