"""Fine-tuning on accelerate: LoRA (PEFT) or full fine-tuning for sequence regression, sequence classification and
per-residue classification, from CSV or FASTA.

The pieces are plain functions, usable on their own:

- the settings: `FinetuneConfig` (in `training.config`, beside the fields every run shares);
- the data: `training.finetune_data` reads, splits and encodes the labelled files (`load_data`, `encode_examples`, whose
  `{"input_ids", "labels"}` rows transformers' `DataCollatorWithPadding` / `DataCollatorForTokenClassification` and
  `Trainer` accept as they are; `collate` is its own padding);
- the metrics: `training.metrics` (Spearman for regression, accuracy and macro-F1 for classification, per residue for
  per-residue tasks; `trainer_compute_metrics` for `Trainer`);
- the model, here: `build_model` (the base checkpoint with a new head, wrapped by `peft.get_peft_model` for LoRA);
- the loop, here: `finetune(FinetuneConfig)` with early stopping on the validation metric and the best weights kept;
- loading, here: `load_finetuned(path)` returns the ready model from a LoRA adapter folder or a full checkpoint, and
  `predict` runs it.

While training, regression targets are standardised with the training mean and deviation, and the pooled features
entering a sequence head are centred and scaled (`standardized_head_inputs`: near-identical variants of one protein
pool to nearly the same vector). Both are folded into the saved head (`saved_head`), so a loaded model takes raw
inputs and predicts in the units of the labels.
"""

import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file

from .. import __version__
from ..data.collators import token_budget_batches
from ..hub.loading import load_pretrained
from ..inference.context import context_residues, special_token_layout
from ..modeling_plm import PLMClassificationHead, PLMForSequenceClassification, PLMForTokenClassification
from .config import METHODS, TASKS, FinetuneConfig
from .distributed import build_accelerator
from .finetune_data import (
    SPLITS,
    Example,
    FinetuneData,
    LengthGroupedBatches,
    clean_sequence,
    collate,
    encode_examples,
    header_fields,
    load_data,
    parse_label,
    read_csv_examples,
    read_fasta_by_id,
    read_fasta_examples,
)
from .loop import TrainingLoop, Window, drop_rewritten_rows, resume_point
from .lora import default_lora_config
from .metrics import (
    LOWER_IS_BETTER,
    TASK_METRICS,
    compute_metrics,
    is_better,
    macro_f1,
    spearman,
    trainer_compute_metrics,
)
from .trainer import _parameter_groups, learning_rate_factor

MODEL_CLASSES = {
    "sequence-regression": PLMForSequenceClassification,
    "sequence-classification": PLMForSequenceClassification,
    "token-classification": PLMForTokenClassification,
}
RECORD_FILE = "finetune_record.json"
CHECKPOINT_DIR = "checkpoints"  # resumable training states, beside the best model
BEST_WEIGHTS_FILE = "best_weights.safetensors"  # in a checkpoint: the trainable weights of the best step so far
# Settings a resumed run may change; any other change would make the resumed run a different run.
RESUME_MAY_CHANGE = ("resume", "overwrite")


# ---- the model -----------------------------------------------------------------------------------------------------
def head_kwargs(task: str, label_names: list[str] | None, pooling: str | None = None) -> dict[str, Any]:
    """Config overrides of the fine-tuned model: labels, problem type and pooling."""
    kwargs: dict[str, Any] = {}
    if task == "sequence-regression":
        kwargs.update(num_labels=1, problem_type="regression")
    else:
        kwargs.update(
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: index for index, name in enumerate(label_names)},
        )
        if task == "sequence-classification":
            kwargs["problem_type"] = "single_label_classification"
    if pooling is not None:
        kwargs["classifier_pooling"] = pooling
    return kwargs


def build_model(
    model_path: str,
    task: str,
    label_names: list[str] | None = None,
    method: str = "lora",
    pooling: str | None = None,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    lora_targets: str = "attention",
) -> torch.nn.Module:
    """The base checkpoint (any modeling_plm class's weights) with a new task head; for LoRA wrapped by
    `get_peft_model`, so only the adapters and the head train (and are saved)."""
    model = load_pretrained(MODEL_CLASSES[task], model_path, **head_kwargs(task, label_names, pooling))
    if method == "full":
        return model
    from peft import get_peft_model

    return get_peft_model(
        model, default_lora_config(task, r=lora_r, alpha=lora_alpha, dropout=lora_dropout, targets=lora_targets)
    )


def sequence_head(model: torch.nn.Module) -> PLMClassificationHead:
    """The trainable head of a sequence model (PEFT's `modules_to_save` copy under LoRA)."""
    heads = [
        module
        for module in model.modules()
        if isinstance(module, PLMClassificationHead) and all(p.requires_grad for p in module.parameters())
    ]
    if len(heads) != 1:
        raise RuntimeError(f"expected one trainable sequence classification head, found {len(heads)}")
    return heads[0]


@torch.no_grad()
def pooled_feature_statistics(
    model: torch.nn.Module, features: list[dict[str, Any]], pad_token_id: int, token_budget: int = 16384
) -> tuple[torch.Tensor, float]:
    """Mean (H,) over `features` of the pooled vector that enters the sequence head, and the root mean square of its
    deviations (one number over all dimensions)."""
    pooled: list[torch.Tensor] = []
    hook = sequence_head(model).register_forward_pre_hook(lambda module, args: pooled.append(args[0].double()))
    try:
        predict_features(model, features, pad_token_id, token_budget)
    finally:
        hook.remove()
    values = torch.cat(pooled)
    mean = values.mean(0)
    scale = float((values - mean).pow(2).mean().sqrt())
    return mean.float(), scale if scale > 0 else 1.0


@contextlib.contextmanager
def standardized_head_inputs(model: torch.nn.Module, statistics: tuple[torch.Tensor, float] | None) -> Iterator[None]:
    """Within the block the sequence head sees (pooled - mean) / scale.

    Near-identical sequences (GB1's variants differ at 4 of 265 residues) pool to vectors whose spread is ~1% of their
    size. As they are, the constant part dominates the head's gradients, Adam's steps on the head are mostly noise and
    the predictions stay constant; centred and scaled to unit spread, the head learns the differences. The scale is
    one number, not one per dimension, so that no near-constant dimension is blown up. On save the shift and scale
    are folded into the head's first layer (`saved_head`).
    """
    if statistics is None:
        yield
        return
    mean, scale = statistics

    def standardize(module, args):
        return ((args[0] - mean.to(args[0].device, args[0].dtype)) / scale, *args[1:])

    hook = sequence_head(model).register_forward_pre_hook(standardize)
    try:
        yield
    finally:
        hook.remove()


@contextlib.contextmanager
def saved_head(
    model: torch.nn.Module,
    statistics: tuple[torch.Tensor, float] | None,
    target_mean: float = 0.0,
    target_std: float = 1.0,
) -> Iterator[None]:
    """Within the block the head's weights compute, on the raw pooled features, what the training-time head computed
    on standardised ones, in label units: first layer W' = W / scale, b' = b - W'·mean; output layer w' = std·w,
    b' = std·b + mean. Used to save; afterwards the weights are restored exactly."""
    if statistics is None and target_mean == 0.0 and target_std == 1.0:
        yield
        return
    head = sequence_head(model)
    saved = {name: p.detach().clone() for name, p in head.named_parameters()}
    with torch.no_grad():
        if statistics is not None:
            mean, scale = statistics
            head.dense.weight.div_(scale)
            head.dense.bias.sub_(head.dense.weight @ mean.to(head.dense.weight))
        head.out_proj.weight.mul_(target_std)
        head.out_proj.bias.mul_(target_std).add_(target_mean)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, parameter in head.named_parameters():
                parameter.copy_(saved[name])


# ---- evaluation ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_features(
    model: torch.nn.Module, features: list[dict[str, Any]], pad_token_id: int, token_budget: int = 16384, autocast=None
) -> tuple[list[np.ndarray], float | None]:
    """Raw outputs per feature, in input order (a (num_labels,) vector for sequence tasks, (L+2, num_labels) for
    token tasks), and the mean model loss over the batches (weighted by the examples or scored residues)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs: list[np.ndarray | None] = [None] * len(features)
    loss_sum, loss_weight = 0.0, 0
    for indices in token_budget_batches([len(f["input_ids"]) for f in features], token_budget):
        batch = {k: v.to(device) for k, v in collate([features[i] for i in indices], pad_token_id).items()}
        with autocast() if autocast is not None else contextlib.nullcontext():
            out = model(**batch)
        if out.loss is not None:
            labels = batch["labels"]
            weight = int((labels != -100).sum()) if labels.dtype == torch.long and labels.dim() == 2 else len(indices)
            loss_sum += out.loss.float().item() * weight
            loss_weight += weight
        logits = out.logits.float().cpu().numpy()
        for row, index in enumerate(indices):
            outputs[index] = logits[row, : len(features[index]["input_ids"])] if logits.ndim == 3 else logits[row]
    if was_training:
        model.train()
    return outputs, (loss_sum / loss_weight if loss_weight else None)


def evaluate(
    model: torch.nn.Module,
    features: list[dict[str, Any]],
    task: str,
    pad_token_id: int,
    num_classes: int = 0,
    target_mean: float = 0.0,
    target_std: float = 1.0,
    token_budget: int = 16384,
    autocast=None,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of `model` on encoded `features`, and the predictions (regression in label units; class ids; for
    token tasks the class id of every scored residue, concatenated)."""
    outputs, loss = predict_features(
        model, features, pad_token_id=pad_token_id, token_budget=token_budget, autocast=autocast
    )
    if task == "sequence-regression":
        predictions = np.array([o[0] for o in outputs]) * target_std + target_mean
        targets = np.array([f["labels"] for f in features]) * target_std + target_mean
    elif task == "sequence-classification":
        predictions = np.array([o.argmax(-1) for o in outputs])
        targets = np.array([f["labels"] for f in features])
    else:
        labels = [np.asarray(f["labels"]) for f in features]
        predictions = np.concatenate([o.argmax(-1)[lab != -100] for o, lab in zip(outputs, labels)])
        targets = np.concatenate([lab[lab != -100] for lab in labels])
    metrics = compute_metrics(task, predictions, targets, num_classes)
    metrics["loss"] = loss
    return metrics, predictions


# ---- the loop ------------------------------------------------------------------------------------------------------
def _optimizer(model: torch.nn.Module, config: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW over the trainer's parameter groups (no decay on biases and norms), split so that the head can take its
    own learning rate."""
    head = {id(p) for name, p in model.named_parameters() if "classifier" in name}
    head_lr = config.head_learning_rate if config.head_learning_rate is not None else config.peak_learning_rate
    groups = []
    for group in _parameter_groups(model, config.weight_decay):
        for is_head, lr in ((False, config.peak_learning_rate), (True, head_lr)):
            params = [p for p in group["params"] if (id(p) in head) == is_head]
            if params:
                groups.append({"params": params, "weight_decay": group["weight_decay"], "lr": lr})
    return torch.optim.AdamW(groups, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _prepare_output_dir(config: FinetuneConfig) -> Path:
    output_dir = Path(config.output_dir)
    if config.resume and config.overwrite:
        raise ValueError("--resume continues the run in --output-dir and --overwrite deletes it: pass one of them")
    if not config.resume and output_dir.exists() and any(output_dir.iterdir()):
        if not config.overwrite:
            raise FileExistsError(
                f"{output_dir} is not empty: pass --resume auto to continue its run, --overwrite to start again, "
                "or a new --output-dir"
            )
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


def save_finetuned(model: torch.nn.Module, tokenizer, output_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """LoRA: the PEFT adapter (adapter_model.safetensors, with the head via `modules_to_save`); full: the whole model.
    Plus the tokenizer and `finetune_record.json` (what `load_finetuned` needs, the metrics and the run's config)."""
    output_dir = Path(output_dir)
    staging = output_dir.with_name(output_dir.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / RECORD_FILE).write_text(json.dumps(_json_safe(record), indent=2) + "\n")
    # Replace the files one by one: the folder also holds metrics.jsonl and the checkpoints, which stay.
    for old in output_dir.iterdir():
        if old.name not in ("metrics.jsonl", CHECKPOINT_DIR):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for new in staging.iterdir():
        new.rename(output_dir / new.name)
    staging.rmdir()


def _encoded_splits(config: FinetuneConfig, tokenizer, context_residues: int) -> dict[str, Any]:
    """The data read and encoded: `data`, `features` per split, the label ids and the regression target scale."""
    data = load_data(config, tokenizer.valid_residues, context_residues)
    label2id = {name: i for i, name in enumerate(data.label_names)} if data.label_names else None
    target_mean, target_std = 0.0, 1.0
    if config.task == "sequence-regression" and config.normalize_targets:
        values = np.array([e.label for e in data.train])
        target_mean, target_std = float(values.mean()), float(values.std()) or 1.0
    encode = partial(
        encode_examples, tokenizer, task=config.task, label2id=label2id, target_mean=target_mean, target_std=target_std
    )
    features = {name: encode(getattr(data, name)) for name in SPLITS}
    if config.task == "token-classification":  # a chunk with every residue masked has no loss term (a batch: NaN)
        features["train"] = [f for f in features["train"] if any(label != -100 for label in f["labels"])]
        data.stats["train_inputs_without_scored_residues"] = len(data.train) - len(features["train"])
    num_classes = len(data.label_names) if data.label_names else 0
    return dict(data=data, features=features, num_classes=num_classes, target_mean=target_mean, target_std=target_std)


def _train_loader(features: list[dict[str, Any]], config: FinetuneConfig, accelerator: Accelerator, pad_id: int):
    # Not prepared by accelerate: the sampler shards itself, so every process takes the same number of steps.
    return torch.utils.data.DataLoader(
        features,
        batch_sampler=LengthGroupedBatches(
            [len(f["input_ids"]) for f in features],
            batch_size=config.batch_size,
            seed=config.seed,
            group_by_length=config.group_by_length,
            num_shards=accelerator.num_processes,
            shard_index=accelerator.process_index,
        ),
        collate_fn=partial(collate, pad_token_id=pad_id),
        # Its own generator: each pass would otherwise draw a seed from torch's global one, which dropout uses, so
        # that a resumed run (which starts a pass in the middle) would not draw what the uninterrupted run draws.
        generator=torch.Generator().manual_seed(config.seed),
    )


def _run_record(config: FinetuneConfig, *, data: FinetuneData, run: dict[str, Any], statistics, parameters) -> dict:
    """What `finetune_record.json` starts with: what `load_finetuned` needs, the data and the run's config."""
    task = config.task
    return {
        "modeling_plm_version": __version__,
        "task": task,
        "method": config.method,
        "base_model": str(Path(config.model).resolve()) if Path(config.model).exists() else config.model,
        "model_kwargs": head_kwargs(task, data.label_names, config.pooling),
        "label_names": data.label_names,
        "regression_target": {"mean": run["target_mean"], "std": run["target_std"], "folded_into_head": True}
        if task == "sequence-regression"
        else None,
        "parameters": parameters,
        "pooled_standardization": None
        if statistics is None
        else {"mean_norm": float(statistics[0].norm()), "scale": statistics[1], "folded_into_head": True},
        "data": data.stats,
        "metric_for_best": config.best_metric,
        "config": dataclasses.asdict(config),
    }


def _windows(loader, config: FinetuneConfig, start_step: int = 0) -> Iterator[Window]:
    """The optimizer steps' micro-batches: `gradient_accumulation_steps` batches each, counted across epochs (a last
    incomplete window is dropped); `info["epoch"]` is the epoch of the window's last batch (0-based). From
    `start_step` on: the batches of the steps before are skipped (the sampler's passes are seeded, so the batches
    that follow are the uninterrupted run's)."""
    first_epoch, skipped = divmod(start_step * config.gradient_accumulation_steps, len(loader))
    loader.batch_sampler.passes = first_epoch
    window: list[dict[str, Any]] = []
    for epoch in range(first_epoch, config.epochs):
        for batch in itertools.islice(loader, skipped if epoch == first_epoch else 0, None):
            window.append(batch)
            if len(window) == config.gradient_accumulation_steps:
                yield Window(window, info={"epoch": epoch})
                window = []


class FinetuneSteps:
    """Fine-tuning's side of the training loop: the loss log every `log_steps`, validation on schedule (every
    `eval_steps`, else once per epoch, and at the end) with early stopping through the tracker, and the resumable
    checkpoints (every `save_steps`, else at every validation, and on SIGTERM)."""

    def __init__(self, config: FinetuneConfig, tracker: "FinetuneTracker", loop: TrainingLoop, steps_per_epoch: int):
        self.config, self.tracker, self.loop = config, tracker, loop
        self.eval_every = config.eval_steps or max(1, steps_per_epoch)
        self.checkpoint_dir = tracker.output_dir / CHECKPOINT_DIR
        self.losses: list[float] = []
        self.epoch = 0
        self.stopped_early = False

    def after_step(self, step: int, loss: float, counts: dict[str, float], window: Window) -> bool:
        self.epoch = window.info["epoch"]
        self.losses.append(loss)
        if step % self.config.log_steps == 0:
            mean_loss = float(np.mean(self.losses))
            learning_rate = self.loop.scheduler.get_last_lr()[0]
            self.tracker.log({"step": step, "epoch": self.epoch + 1, "loss": mean_loss, "learning_rate": learning_rate})
            self.loop.progress.set_postfix(loss=f"{mean_loss:.4f}")
            self.losses = []
        validated = step % self.eval_every == 0 or step == self.loop.max_steps
        if validated:
            self.stopped_early = self.tracker.validate(step, self.epoch)
        due = step % self.config.save_steps == 0 if self.config.save_steps else validated
        # Not at the end (the final save follows) nor on SIGTERM (`on_sigterm` saves this step).
        if due and step < self.loop.max_steps and not self.stopped_early and not self.loop.stop_requested:
            self.save_checkpoint()
        return self.stopped_early

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        state = _json_safe(
            {
                "config": dataclasses.asdict(self.config),
                "epoch": self.epoch,
                "losses": self.losses,
                "tracker": self.tracker.state_dict(),
            }
        )
        return self.loop.save_checkpoint(
            self.checkpoint_dir, state, keep=self.config.save_total_limit, write_files=self.tracker.write_best_weights
        )

    def load_checkpoint(self, folder: Path) -> None:
        """Restores the loop (weights, optimizer, schedule, RNGs, step), this side's counters and the tracker."""
        state = self.loop.load_checkpoint(folder)
        changed = [
            f"{name} {state['config'].get(name)!r} -> {value!r}"
            for name, value in json.loads(json.dumps(dataclasses.asdict(self.config))).items()
            if name not in RESUME_MAY_CHANGE and state["config"].get(name) != value
        ]
        if changed:
            raise ValueError(
                f"{folder}: cannot resume with other settings than the run's ({'; '.join(changed)}); "
                "pass the same settings, or start a new run in a new --output-dir"
            )
        self.epoch, self.losses = state["epoch"], state["losses"]
        self.tracker.load_state_dict(state["tracker"], folder)

    def on_sigterm(self) -> None:
        """A resumable checkpoint of this step, then the best model so far with status "interrupted"."""
        saved = self.save_checkpoint()
        self.tracker.save_interrupted()
        self.loop.accelerator.print(f"SIGTERM: saved {saved}; continue with --resume auto")


class FinetuneTracker:
    """What a fine-tuning run's evaluations share: the metrics log, the best weights so far (by `best_metric`, kept
    in memory and saved), early stopping, and the checkpoint saves."""

    def __init__(
        self,
        config: FinetuneConfig,
        accelerator: Accelerator,
        model,
        tokenizer,
        run,
        statistics,
        record,
        output_dir: Path,
    ):
        self.config, self.accelerator, self.model, self.tokenizer = config, accelerator, model, tokenizer
        self.run, self.statistics, self.record, self.output_dir = run, statistics, record, output_dir
        self.metric = config.best_metric
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_value: float | None = None
        self.evals_without_gain = 0

    def evaluate(self, split: str) -> dict[str, float]:
        metrics, _ = evaluate(
            self.model,
            self.run["features"][split],
            self.config.task,
            self.tokenizer.pad_token_id,
            num_classes=self.run["num_classes"],
            target_mean=self.run["target_mean"],
            target_std=self.run["target_std"],
            token_budget=self.config.eval_token_budget,
            autocast=self.accelerator.autocast,
        )
        return metrics

    def log(self, entry: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.output_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(_json_safe(entry)) + "\n")

    def save(self, status: str) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            with saved_head(self.model, self.statistics, self.run["target_mean"], self.run["target_std"]):
                save_finetuned(self.model, self.tokenizer, self.output_dir, {**self.record, "status": status})

    def keep_best(self, step: int, metrics: dict[str, float]) -> None:
        self.best_state = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        self.best_value, self.evals_without_gain = metrics[self.metric], 0
        self.record.update(best_step=step, best_valid=metrics)
        self.save("training")

    def validate(self, step: int, epoch: int) -> bool:
        """Evaluates on the validation split; True when early stopping says to stop."""
        metrics = self.evaluate("valid")
        self.log({"step": step, "epoch": epoch + 1, **{f"valid_{k}": v for k, v in metrics.items()}})
        self.accelerator.print(f"step {step} (epoch {epoch + 1}): valid {self.metric} {metrics[self.metric]:.4f}")
        if is_better(metrics[self.metric], self.best_value, self.metric):
            self.keep_best(step, metrics)
        else:
            self.evals_without_gain += 1
        patience = self.config.early_stopping_patience
        return bool(patience) and self.evals_without_gain >= patience

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the tracker (the best weights go to their own file: `write_best_weights`)."""
        return {"best_value": self.best_value, "evals_without_gain": self.evals_without_gain, "record": self.record}

    def write_best_weights(self, folder: Path) -> None:
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in self.best_state.items()}
        save_file(weights, folder / BEST_WEIGHTS_FILE)

    def load_state_dict(self, state: dict[str, Any], folder: Path) -> None:
        self.best_value, self.evals_without_gain = state["best_value"], state["evals_without_gain"]
        self.record.clear()
        self.record.update(state["record"])
        device = next(self.model.parameters()).device
        self.best_state = {name: t.to(device) for name, t in load_file(folder / BEST_WEIGHTS_FILE).items()}

    def save_interrupted(self) -> None:
        """On SIGTERM: the best weights so far, saved with status "interrupted"."""
        self.restore_best()
        self.save("interrupted")
        self.accelerator.print(
            f"SIGTERM: saved the best model so far (step {self.record['best_step']}) to {self.output_dir}"
        )

    @torch.no_grad()
    def restore_best(self) -> None:
        for name, parameter in self.model.named_parameters():
            if name in self.best_state:
                parameter.copy_(self.best_state[name])


def finetune(config: FinetuneConfig) -> Path:
    """Fine-tune `config.model` on the task; returns the output folder, which holds the best checkpoint (by the
    validation metric), the tokenizer, `finetune_record.json` and `metrics.jsonl`."""
    from transformers import AutoConfig, AutoTokenizer

    started = time.time()
    config.resolve_paths()
    config.validate()
    # Gradient accumulation is the training loop's (windows of micro-batches), not accelerate's.
    # The loop steps the schedule once per optimizer step (accelerate would step it once per process).
    accelerator = build_accelerator(
        config.mixed_precision, supported=("ddp",), job="fine-tuning", step_scheduler_with_optimizer=False
    )
    output_dir = _prepare_output_dir(config) if accelerator.is_main_process else Path(config.output_dir)
    accelerator.wait_for_everyone()
    if config.resume and (output_dir / RECORD_FILE).exists() and read_record(output_dir)["status"] == "finished":
        accelerator.print(f"{output_dir}: this run has finished already; nothing to resume")
        return output_dir
    resume_from = resume_point(
        config.resume,
        output_dir / CHECKPOINT_DIR,
        output_dir,
        accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    specials = sum(map(len, special_token_layout(tokenizer)))
    run = _encoded_splits(config, tokenizer, context_residues(AutoConfig.from_pretrained(config.model), specials))
    data, features, task = run["data"], run["features"], config.task
    model = build_model(
        config.model,
        task,
        label_names=data.label_names,
        method=config.method,
        pooling=config.pooling,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        lora_targets=config.lora_targets,
    )
    parameters = {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    pad_id = tokenizer.pad_token_id
    loader = _train_loader(features["train"], config, accelerator, pad_id)
    # Windows of `gradient_accumulation_steps` micro-batches, counted across epochs.
    total_steps = len(loader) * config.epochs // config.gradient_accumulation_steps
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, total_steps, config))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    statistics = None
    if task != "token-classification" and config.standardize_pooled:
        # From the base model's pooled training features (the adapters start as the identity), up to 1,024 sequences.
        rng = np.random.default_rng([config.seed, 7])
        sample = [features["train"][i] for i in rng.permutation(len(features["train"]))[:1024]]
        statistics = pooled_feature_statistics(unwrapped, sample, pad_id, config.eval_token_budget)
    record = _run_record(config, data=data, run=run, statistics=statistics, parameters=parameters)
    tracker = FinetuneTracker(
        config,
        accelerator=accelerator,
        model=unwrapped,
        tokenizer=tokenizer,
        run=run,
        statistics=statistics,
        record=record,
        output_dir=output_dir,
    )

    with standardized_head_inputs(unwrapped, statistics):  # removed again before returning
        loop = TrainingLoop(
            accelerator,
            model,
            optimizer,
            scheduler,
            max_steps=total_steps,
            max_grad_norm=config.max_grad_norm,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            # Per-residue losses take the window's label count; sequence heads average per batch.
            loss_normalization="targets" if task == "token-classification" else "micro_batches",
            description=f"fine-tuning ({config.method})",
        )
        steps = FinetuneSteps(config, tracker, loop, steps_per_epoch=len(loader) // config.gradient_accumulation_steps)
        if resume_from is not None:
            steps.load_checkpoint(resume_from)
            record.setdefault("resumed_from", []).append(str(resume_from))
            accelerator.print(f"Resumed fine-tuning from {resume_from} (step {loop.step} of {total_steps})")
        if accelerator.is_main_process:  # rows after the checkpoint are logged again (all of them on a fresh start)
            drop_rewritten_rows(output_dir / "metrics.jsonl", lambda row: loop.step == 0 or row["step"] > loop.step)
        if resume_from is None:
            _initial_validation(tracker, data, parameters)
        windows = _windows(loader, config, start_step=loop.step)
        model.train()
        stopped_early = loop.run(lambda: next(windows, None), steps.after_step, on_sigterm=steps.on_sigterm)
        step, epochs_run = loop.step, steps.epoch + 1 if stopped_early else config.epochs
        tracker.restore_best()  # the test split and the final save use the best weights
        record.update(steps=step, epochs_run=epochs_run, stopped_early=stopped_early)
        if features["test"]:
            record["test"] = tracker.evaluate("test")
            test = {f"test_{k}": v for k, v in record["test"].items()}
            tracker.log({"step": step, "best_step": record["best_step"], **test})
        record.update(
            wall_time_s=time.time() - started, device=str(accelerator.device), world_size=accelerator.num_processes
        )
        tracker.save("finished")
    accelerator.wait_for_everyone()
    return output_dir


def _initial_validation(tracker: FinetuneTracker, data: FinetuneData, parameters: dict[str, int]) -> None:
    """The validation metrics of the untrained model, logged as step 0 and kept as the best so far."""
    config = tracker.config
    initial = tracker.evaluate("valid")
    tracker.record["initial_valid"] = initial
    tracker.log({"step": 0, "epoch": 0, **{f"valid_{k}": v for k, v in initial.items()}})
    tracker.keep_best(0, initial)
    tracker.accelerator.print(
        f"{config.task} {config.method}: " + " / ".join(f"{n} {k}" for k, n in data.stats["sequences"].items()) + " "
        f"sequences, {parameters['trainable']:,} of {parameters['total']:,} parameters trained; "
        f"valid {config.best_metric} before training {_number(initial[config.best_metric])}"
    )


# ---- loading and prediction ----------------------------------------------------------------------------------------
def read_record(path: str | os.PathLike) -> dict[str, Any]:
    record_file = Path(path) / RECORD_FILE
    if not record_file.exists():
        raise FileNotFoundError(f"{path}: no {RECORD_FILE}; is it a folder written by `plm finetune`?")
    return json.loads(record_file.read_text())


def load_finetuned(path: str | os.PathLike, merge: bool = False, base_model: str | None = None) -> torch.nn.Module:
    """The fine-tuned model of a `plm finetune` folder, in eval mode: for LoRA the base model (from the record, or
    `base_model` if it moved) with the adapter and head loaded (`merge=True` merges the adapter into the weights and
    returns the plain model class); for full fine-tuning the saved checkpoint. Its tokenizer:
    `AutoTokenizer.from_pretrained(path)`."""
    record = read_record(path)
    model_class = MODEL_CLASSES[record["task"]]
    if record["method"] == "full":
        return model_class.from_pretrained(path).eval()
    from peft import PeftModel

    kwargs = record["model_kwargs"]
    if "id2label" in kwargs:  # JSON turned the ids into strings
        kwargs = {**kwargs, "id2label": {int(k): v for k, v in kwargs["id2label"].items()}}
    base = load_pretrained(model_class, base_model or record["base_model"], **kwargs)
    model = PeftModel.from_pretrained(base, path)
    if merge:
        model = model.merge_and_unload()
    return model.eval()


def predict(
    model: torch.nn.Module,
    tokenizer,
    sequences: list[str],
    max_length: int | None = None,
    token_budget: int = 16384,
) -> list[Any]:
    """Predictions of a loaded fine-tuned model: a float (regression), a label name (classification) or a string of
    one label per residue (token classification).

    As in training, at most `max_length` residues go in at once (default: the context minus 2): per-residue tasks
    predict longer sequences in consecutive chunks, sequence tasks see the first `max_length` residues."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    leading, trailing = map(len, special_token_layout(tokenizer))
    max_length = max_length or context_residues(base.config, leading + trailing)
    per_residue = isinstance(base, PLMForTokenClassification)
    pieces: list[tuple[int, str]] = []  # (sequence index, residues)
    for index, sequence in enumerate(sequences):
        sequence = "".join(sequence.split())
        starts = range(0, len(sequence), max_length) if per_residue else [0]
        pieces.extend((index, sequence[start : start + max_length]) for start in starts)
    # The tokenizer's invalid_residues policy applies (its error names the piece, position and character).
    features = [{"input_ids": ids} for ids in tokenizer([piece for _, piece in pieces])["input_ids"]]
    outputs, _ = predict_features(model, features, tokenizer.pad_token_id, token_budget)
    id2label = base.config.id2label
    if per_residue:
        labels = [""] * len(sequences)
        for (index, _), output in zip(pieces, outputs):
            residues = output[leading : len(output) - trailing]
            labels[index] += "".join(id2label[int(i)] for i in residues.argmax(-1))
        return labels
    if base.config.problem_type == "regression" or base.config.num_labels == 1:
        return [float(output[0]) for output in outputs]
    return [id2label[int(output.argmax(-1))] for output in outputs]


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# Importable from here as before: the config lives in `training.config`, the data in `training.finetune_data` and the
# metrics in `training.metrics`.
__all__ = [
    "LOWER_IS_BETTER",
    "METHODS",
    "MODEL_CLASSES",
    "RECORD_FILE",
    "TASKS",
    "TASK_METRICS",
    "Example",
    "FinetuneConfig",
    "FinetuneData",
    "FinetuneTracker",
    "LengthGroupedBatches",
    "build_model",
    "clean_sequence",
    "collate",
    "compute_metrics",
    "encode_examples",
    "evaluate",
    "finetune",
    "head_kwargs",
    "header_fields",
    "load_data",
    "load_finetuned",
    "macro_f1",
    "parse_label",
    "predict",
    "predict_features",
    "read_csv_examples",
    "read_fasta_by_id",
    "read_fasta_examples",
    "read_record",
    "save_finetuned",
    "spearman",
    "trainer_compute_metrics",
]
