"""The one accelerate training loop, shared by pretraining (`training.trainer`) and fine-tuning (`training.finetune`).

What it owns: the optimizer step over an accumulation window with the model's own loss (`loss_function`, given
`num_items_in_batch`), gradient sync on the window's last micro-batch only, clipping, the schedule, one cross-rank
reduction per step (loss, counts and every rank's SIGTERM), the NaN stop, the progress bar, and atomic checkpoints
(`step-N.tmp`, then renamed) with a retention limit and exact resume.

What the caller brings: the windows of micro-batches (`Window`, from a `next_window()` callable that returns None when
the data is done) and `after_step(step, loss, counts)`, which logs, evaluates and saves, and returns True to stop.
"""

import contextlib
import json
import math
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from tqdm.auto import tqdm

CHECKPOINT_PREFIX = "step-"
LOSS_NORMALIZATIONS = ("targets", "micro_batches")


@dataclass
class Window:
    """The micro-batches of one optimizer step, and what the caller counts in them (tokens, FLOPs: summed over ranks
    and handed to `after_step`). `info` is passed through untouched (e.g. the epoch)."""

    micro_batches: list[dict[str, Any]]
    counts: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def checkpoints_in(folder: Path) -> list[Path]:
    """The complete checkpoints in `folder`, oldest first."""
    found = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp")]
    return sorted(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)))


def resume_point(resume: str | None, checkpoint_dir: Path, output_dir: Path, rank: int) -> Path | None:
    """The checkpoint a run continues from: `resume` is None (a fresh start, refused where this run already has
    checkpoints), "auto" or the run's output folder (its newest checkpoint; None when it has none yet) or one
    checkpoint folder."""
    if not resume:
        if checkpoints_in(checkpoint_dir):
            raise FileExistsError(
                f"{checkpoint_dir} already has checkpoints: pass --resume auto to continue, or a new --output-dir"
            )
        return None
    if resume == "auto" or Path(resume).resolve() == output_dir.resolve():
        found = checkpoints_in(checkpoint_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / f"trainer_state_rank{rank}.json").exists():
        raise FileNotFoundError(f"{path} is not a complete checkpoint of this run")
    return path


def drop_rewritten_rows(metrics_file: Path, rewritten: Callable[[dict[str, Any]], bool]) -> None:
    """Removes the `metrics.jsonl` rows a resumed run is about to log again (those after its checkpoint), so that
    the file holds each step once. Call on the main process only."""
    if not metrics_file.exists():
        return
    lines = metrics_file.read_text().splitlines()
    keep = [line for line in lines if not rewritten(json.loads(line))]
    if len(keep) != len(lines):
        temporary = metrics_file.with_suffix(".tmp")
        temporary.write_text("".join(line + "\n" for line in keep))
        os.replace(temporary, metrics_file)


class TrainingLoop:
    """Optimizer steps on a prepared model, optimizer and scheduler (see the module docstring).

    `loss_normalization`: "targets" passes the window's label count as `num_items_in_batch`, so the window's loss is
    one mean over its targets whatever the micro-batch sizes (transformers' convention for losses that take it);
    "micro_batches" divides each micro-batch's mean loss by the window length (for losses that average per batch,
    as sequence-level heads do). `forward_kwargs` go to every training forward (e.g. `attention_type`).
    """

    def __init__(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        *,
        max_steps: int,
        max_grad_norm: float | None,
        gradient_accumulation_steps: int = 1,
        loss_normalization: str = "targets",
        forward_kwargs: dict[str, Any] | None = None,
        description: str = "training",
    ):
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(f"loss_normalization must be one of {LOSS_NORMALIZATIONS}, got {loss_normalization!r}")
        if accelerator.distributed_type == DistributedType.DEEPSPEED and gradient_accumulation_steps > 1:
            raise ValueError("DeepSpeed steps the optimizer on every backward: use --gradient-accumulation-steps 1")
        self.accelerator, self.model, self.optimizer, self.scheduler = accelerator, model, optimizer, scheduler
        self.max_steps, self.max_grad_norm = max_steps, max_grad_norm
        self.loss_normalization, self.forward_kwargs = loss_normalization, forward_kwargs or {}
        self.description = description
        self.step = 0
        self.stop_requested = False
        self.progress: tqdm | None = None

    # ---- one optimizer step ---------------------------------------------------------------------------------------
    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch's tensors on the accelerator's device (packed batches also hold plain ints)."""
        device = self.accelerator.device
        return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}

    def train_step(self, window: Window) -> float:
        """Forward and backward over the window's micro-batches, then one optimizer and schedule step. Returns this
        rank's loss of the window (a mean over its targets or its micro-batches)."""
        micro_batches = window.micro_batches
        loss_kwargs: dict[str, Any] = {}
        if self.loss_normalization == "targets":
            targets = sum(int((batch["labels"] != -100).sum()) for batch in micro_batches)
            loss_kwargs["num_items_in_batch"] = max(targets, 1)
        loss_total = 0.0
        for index, batch in enumerate(micro_batches):
            is_last = index == len(micro_batches) - 1
            sync = contextlib.nullcontext() if is_last else self.accelerator.no_sync(self.model)
            with sync, self.accelerator.autocast():
                loss = self.model(**self.to_device(batch), **self.forward_kwargs, **loss_kwargs).loss
                if self.loss_normalization == "micro_batches":
                    loss = loss / len(micro_batches)
            self.accelerator.backward(loss)
            loss_total += loss.item()
        if self.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_total

    # ---- the loop -------------------------------------------------------------------------------------------------
    def run(
        self,
        next_window: Callable[[], Window | None],
        after_step: Callable[[int, float, dict[str, float], Window], bool],
        nan_hint: Callable[[], str] = lambda: "lower the learning rate",
        on_sigterm: Callable[[], None] | None = None,
    ) -> bool:
        """Steps until `max_steps`, the end of the data (`next_window()` gives None on every rank alike) or
        `after_step` returns True (then True is returned). On SIGTERM the current step finishes on every rank, then
        `on_sigterm()` runs (e.g. a checkpoint) and the process exits with status 0."""
        accelerator, world_size = self.accelerator, self.accelerator.num_processes
        previous_handler = signal.signal(signal.SIGTERM, self._request_stop)
        self.progress = tqdm(
            total=self.max_steps,
            initial=self.step,
            desc=self.description,
            unit="step",
            dynamic_ncols=True,
            disable=not accelerator.is_main_process,
        )
        try:
            while self.step < self.max_steps and (window := next_window()) is not None:
                loss = self.train_step(window)
                self.step += 1
                # One reduction per step carries the loss, the counts and every rank's stop request.
                names = list(window.counts)
                values = [loss, float(self.stop_requested), *(window.counts[name] for name in names)]
                stats = accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=accelerator.device), "sum")
                mean_loss = stats[0].item() / world_size
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"Loss became {mean_loss} at step {self.step}; {nan_hint()}.")
                self.progress.update(1)
                counts = {name: stats[2 + i].item() for i, name in enumerate(names)}
                self.stop_requested = stats[1].item() > 0  # agreed by every rank: after_step may skip a save
                stop = after_step(self.step, mean_loss, counts, window)
                if self.stop_requested:
                    if on_sigterm is not None:
                        on_sigterm()
                    raise SystemExit(0)
                if stop:
                    return True
            return False
        finally:
            self.progress.close()
            signal.signal(signal.SIGTERM, previous_handler)

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = True  # acted on after the current step, on every rank together

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    def save_checkpoint(
        self,
        checkpoint_dir: Path,
        state: dict[str, Any],
        keep: int,
        write_files: Callable[[Path], None] | None = None,
    ) -> Path:
        """accelerate's state (model, optimizer, schedule, RNGs) plus `state` (this rank's, as JSON) in
        `checkpoint_dir/step-N`, written atomically; only the newest `keep` checkpoints stay. `write_files(folder)`,
        on the main process, adds the caller's own files to the checkpoint before it is complete."""
        accelerator = self.accelerator
        final = checkpoint_dir / f"{CHECKPOINT_PREFIX}{self.step:07d}"
        temporary = final.with_name(final.name + ".tmp")
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))
        rank_state = {"step": self.step, **state}
        (temporary / f"trainer_state_rank{accelerator.process_index}.json").write_text(json.dumps(rank_state))
        if write_files is not None and accelerator.is_main_process:
            write_files(temporary)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)  # atomic: a checkpoint folder either is complete or does not exist
            for old in checkpoints_in(checkpoint_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        """Restores accelerate's state and the step; returns this rank's saved `state`."""
        self.accelerator.load_state(str(folder))
        state = json.loads((folder / f"trainer_state_rank{self.accelerator.process_index}.json").read_text())
        self.step = state.pop("step")
        return state
