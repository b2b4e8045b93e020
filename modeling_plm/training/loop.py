"""The one accelerate training loop, shared by pretraining (`training.trainer`) and fine-tuning (`training.finetune`).

What it owns: the optimizer step over an accumulation window with the model's own loss (`loss_function`, given
`num_items_in_batch`), gradient sync on the window's last micro-batch only, clipping, the schedule, one cross-rank
reduction per step (loss, counts and every rank's SIGTERM), the NaN stop, the progress bar, and atomic checkpoints
(`step-N.tmp`, synced to disk, then renamed) with a retention limit and exact resume from the newest valid one
(`check_checkpoint`: an invalid checkpoint is named with its broken file and skipped, or refused when asked for).

What the caller brings: the windows of micro-batches (`Window`, from a `next_window()` callable that returns None when
the data is done) and `after_step(step, loss, counts)`, which logs, evaluates and saves, and returns True to stop.
"""

import base64
import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors import safe_open
from tqdm.auto import tqdm

logger = logging.getLogger("modeling_plm.training.loop")

CHECKPOINT_PREFIX = "step-"
RNG_KEY = "random_states"  # in each rank's trainer state
LOSS_NORMALIZATIONS = ("targets", "micro_batches")
# torch.save writes zip archives; their CRCs are checked up to this size (the RNG states, the schedule, small
# optimizers). Larger files get the structural check only: a truncated file has lost its central directory, and
# CRC-checking a many-GB optimizer would read it twice on every resume.
CRC_CHECKED_BYTES = 64 * 2**20


@dataclass
class Window:
    """The micro-batches of one optimizer step, and what the caller counts in them (tokens, FLOPs: summed over ranks
    and handed to `after_step`). `info` is passed through untouched (e.g. the epoch)."""

    micro_batches: list[dict[str, Any]]
    counts: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def checkpoints_in(folder: Path) -> list[Path]:
    """The checkpoint folders in `folder` (`step-<digits>`; not the `.tmp` ones still being written), oldest first."""
    found = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and _step_of(p) is not None]
    return sorted(found, key=_step_of)


def _step_of(folder: Path) -> int | None:
    digits = folder.name.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if folder.name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else None


# ---- checkpoint validation ----------------------------------------------------------------------------------------
def check_checkpoint(folder: Path, world_size: int) -> str | None:
    """What is wrong with the checkpoint `folder` for a run of `world_size` processes, or None when it is complete:
    accelerate's files (model, optimizer, schedule, every rank's RNG states) and every rank's trainer state present,
    JSON parseable, safetensors whole, torch files whole zip archives. Reads the same files in the same order on
    every rank, so that all ranks reach the same verdict."""
    if not folder.is_dir():
        return "no such folder"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        return "the folder is empty (not a checkpoint this trainer wrote)"
    missing = _missing_files(folder, world_size)
    problems = [f"missing {', '.join(missing)}"] if missing else []
    for path in files:
        problem = _check_file(path, folder)
        if problem is not None:
            problems.append(f"{path.relative_to(folder)} {problem}")
    return "; ".join(problems) or None


def _missing_files(folder: Path, world_size: int) -> list[str]:
    """The files accelerate's `save_state` and `save_checkpoint` write that `folder` lacks."""
    names = {p.name for p in folder.iterdir()}
    missing = [f"trainer_state_rank{r}.json" for r in range(world_size) if f"trainer_state_rank{r}.json" not in names]
    missing += [f"random_states_{r}.pkl" for r in range(world_size) if f"random_states_{r}.pkl" not in names]
    if not any(name.startswith(("model", "pytorch_model")) for name in names):
        missing.append("the model (model.safetensors)")
    # DeepSpeed (its `latest` file) keeps the optimizer and the schedule in its own model folder.
    if "latest" not in names:
        missing += [f"the {part} ({part}.bin)" for part in ("optimizer", "scheduler") if not _has_prefix(names, part)]
    return missing


def _has_prefix(names: set[str], prefix: str) -> bool:
    return any(name.startswith(prefix) for name in names)


def _check_file(path: Path, folder: Path) -> str | None:
    """What is wrong with one file of a checkpoint (by its kind), or None."""
    size = path.stat().st_size
    if size == 0 and path.suffix in (".json", ".safetensors", ".bin", ".pkl", ".pt"):
        return "is empty"
    if path.suffix == ".safetensors":
        return _check_safetensors(path, size)
    if path.suffix in (".bin", ".pkl", ".pt"):
        return _check_torch_file(path, size)
    if path.name.startswith("trainer_state_rank") and path.suffix == ".json":
        return _check_trainer_state(path, _step_of(folder))
    return None


def _check_safetensors(path: Path, size: int) -> str | None:
    """The header parses and the data section is as long as the header's offsets say."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or 8 + length > size:
                return f"is truncated ({size} bytes, shorter than its own header)"
            header = json.loads(handle.read(length))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        return f"has an unreadable header ({error})"
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        return (
            f"is truncated ({size} of {expected} bytes)" if size < expected else f"has {size - expected} bytes too many"
        )
    try:
        with safe_open(str(path), framework="pt"):
            return None
    except Exception as error:  # safetensors raises its own SafetensorError
        return f"is unreadable ({error})"


def _check_torch_file(path: Path, size: int) -> str | None:
    """torch.save's zip archive: its central directory (lost when the file is cut short) and, when small, CRCs."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip() if size <= CRC_CHECKED_BYTES else None
    except zipfile.BadZipFile:
        return "is truncated (zip central directory missing)"
    except (OSError, EOFError, ValueError) as error:
        return f"is corrupt ({error})"
    return None if damaged is None else f"is corrupt (CRC mismatch in {damaged})"


def _check_trainer_state(path: Path, folder_step: int | None) -> str | None:
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        return f"is not valid JSON ({error})"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return "holds no step"
    if folder_step is not None and state["step"] != folder_step:
        return f"is of step {state['step']}, not of the folder's step {folder_step} (a renamed copy?)"
    return None


# ---- which checkpoint a run resumes from --------------------------------------------------------------------------
def resume_point(
    resume: str | None, checkpoint_dir: Path, output_dir: Path, rank: int, *, world_size: int
) -> Path | None:
    """The checkpoint a run continues from: `resume` is None (a fresh start, refused where this run already has
    checkpoints), "auto" or the run's output folder (its newest valid checkpoint, skipping invalid ones with a
    warning; None when it has none yet) or one checkpoint folder (a ValueError naming the problem when it is
    invalid). Every rank must call it: they check that they agree."""
    if not resume:
        if checkpoints_in(checkpoint_dir):
            raise FileExistsError(
                f"{checkpoint_dir} already has checkpoints: pass --resume auto to continue, or a new --output-dir"
            )
        return None
    if resume == "auto" or Path(resume).resolve() == output_dir.resolve():
        choice = _newest_valid(checkpoint_dir, world_size, warn=rank == 0)
    else:
        choice = _explicit_checkpoint(Path(resume), world_size)
    return _agreed_by_every_rank(choice)


def _newest_valid(checkpoint_dir: Path, world_size: int, warn: bool) -> Path | None:
    """The newest valid checkpoint, warning about each newer invalid one; a ValueError when none is valid."""
    found = checkpoints_in(checkpoint_dir)
    invalid: list[tuple[Path, str]] = []
    for folder in reversed(found):
        problem = check_checkpoint(folder, world_size)
        if problem is None:
            if warn:  # rank 0's: every rank decides alike
                for bad, why in invalid:
                    logger.warning("%s: %s; resuming from %s instead", bad, why, folder.name)
            return folder
        invalid.append((folder, problem))
    if invalid:
        listed = "; ".join(f"{folder.name}: {why}" for folder, why in reversed(invalid))
        raise ValueError(
            f"{checkpoint_dir}: no valid checkpoint to resume from ({listed}); "
            "remove them to start afresh, or pass a new --output-dir"
        )
    return None


def _explicit_checkpoint(path: Path, world_size: int) -> Path:
    """`path` when it is a valid checkpoint; else a ValueError naming the problem and the newest valid one beside it."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    problem = check_checkpoint(path, world_size)
    if problem is None:
        return path
    others = [c for c in reversed(checkpoints_in(path.parent)) if c.resolve() != path.resolve()]
    alternative = next((c for c in others if check_checkpoint(c, world_size) is None), None)
    hint = f"pass --resume {alternative} instead" if alternative else f"{path.parent} holds no valid checkpoint"
    raise ValueError(f"{path}: not a valid checkpoint: {problem}; {hint}")


def _agreed_by_every_rank(choice: Path | None) -> Path | None:
    """`choice`, once every rank is known to have made the same one (ranks that read different files, e.g. storage
    that is not shared alike, would otherwise load different states and hang or diverge)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return choice
    choices: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(choices, None if choice is None else choice.name)
    if len(set(choices)) > 1:
        raise RuntimeError(f"the ranks chose different checkpoints to resume from ({choices}): is the folder shared?")
    return choice


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
        rank_state = {"step": self.step, **state, RNG_KEY: random_states()}
        (temporary / f"trainer_state_rank{accelerator.process_index}.json").write_text(json.dumps(rank_state))
        if write_files is not None and accelerator.is_main_process:
            write_files(temporary)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _flush_to_disk(temporary)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)  # atomic: a checkpoint folder either is complete or does not exist
            with contextlib.suppress(OSError):  # the rename, durable too (not every file system syncs folders)
                _fsync(checkpoint_dir)
            self._drop_old_checkpoints(checkpoint_dir, keep)
        accelerator.wait_for_everyone()
        return final

    def _drop_old_checkpoints(self, checkpoint_dir: Path, keep: int) -> None:
        """Keeps the checkpoint just written (complete, so the newest valid one) and the `keep - 1` newest before it.
        Those of later steps are not counted nor deleted: they are the invalid ones a resume skipped (overwritten when
        the run gets there) or stray copies, and counting them could delete the checkpoint just written."""
        older = [folder for folder in checkpoints_in(checkpoint_dir) if _step_of(folder) < self.step]
        for old in older[: max(len(older) - (keep - 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        """Restores accelerate's state and the step; returns this rank's saved `state`. What fails to load (e.g. the
        weights of a model of another shape) is a ValueError naming the folder and the file."""
        try:
            self.accelerator.load_state(str(folder))
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            file = _file_being_read(error, folder) or "accelerate's state"
            raise ValueError(f"{folder}: cannot load {file}: {error}") from error
        state_file = folder / f"trainer_state_rank{self.accelerator.process_index}.json"
        try:
            state = json.loads(state_file.read_text())
            self.step = state.pop("step")
            if RNG_KEY in state:  # older checkpoints: accelerate's restore only
                restore_random_states(state.pop(RNG_KEY))
        except (OSError, ValueError, KeyError, AttributeError) as error:
            raise ValueError(f"{folder}: cannot load {state_file.name}: {error!r}") from error
        return state


def random_states() -> dict[str, Any]:
    """This process's random generators (torch CPU and CUDA, numpy, Python), as JSON. Saved beside accelerate's own
    copy because accelerate 1.4 does not restore torch's generator exactly, and dropout draws from it."""
    states = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "numpy": [value.tolist() if isinstance(value, np.ndarray) else value for value in np.random.get_state()],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        states["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    def as_tensor(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    torch.set_rng_state(as_tensor(states["torch"]))
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([as_tensor(text) for text in states["cuda"]])


def _flush_to_disk(folder: Path) -> None:
    """fsync a checkpoint's files before its rename. A killed process loses no written data, but a machine that
    crashes could otherwise leave a renamed checkpoint whose files never reached the disk, after retention deleted
    the older ones."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _fsync(path)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _file_being_read(error: BaseException, folder: Path) -> str | None:
    """The checkpoint file a load failed on. accelerate's `load_state` names none, so this takes the innermost frame
    of the traceback that held a path to a file of `folder` (safetensors' `filename`, torch.load's `f`, ...)."""
    root, frames, trace = folder.resolve(), [], error.__traceback__
    while trace is not None:
        frames.append(trace.tb_frame)
        trace = trace.tb_next
    for frame in reversed(frames):
        inside = [p for p in map(_as_path, frame.f_locals.values()) if p is not None and root in p.parents]
        if inside:
            return str(inside[-1].relative_to(root))
    return None


def _as_path(value: Any) -> Path | None:
    if not isinstance(value, str | os.PathLike) or not value:
        return None
    with contextlib.suppress(OSError, ValueError, TypeError):
        path = Path(value).resolve()
        return path if path.is_file() else None
    return None
