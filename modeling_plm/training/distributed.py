"""The distributed engine of a training run: taken from the launcher, engaged, or refused with an error.

`accelerate launch --config_file X.yaml` tells the processes what to run through environment variables
(`ACCELERATE_USE_FSDP`, `FSDP_VERSION`, `ACCELERATE_USE_DEEPSPEED`, `ACCELERATE_MIXED_PRECISION`, ...); `torchrun`
and `srun` set only the ranks (plain DDP). accelerate itself quietly runs DDP where the requested engine is not
available (FSDP and DeepSpeed on CPU processes), so `build_accelerator` checks what engaged against what was asked:

- DDP: `torchrun`/`srun`/`accelerate launch` with a MULTI_GPU or MULTI_CPU config.
- FSDP2: accelerate's own FSDP2 path (`fully_shard` per `PLMLayer`, sharded `save_state`, full `get_state_dict`).
  accelerate enables it only on accelerators; on CPU processes (gloo) torch's `fully_shard` works the same, so the
  engine is switched to FSDP there too, which is how the CPU tests exercise it. Needs accelerate >= 1.6.
- FSDP1 and DeepSpeed: as accelerate engages them on GPUs; on CPU they are refused.
- Mixed precision: the launcher's, unless the run sets its own (a different one is refused).

Anything requested that did not engage raises `DistributedEngineError`, naming what was asked and what runs.
"""

import dataclasses
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin


class DistributedEngineError(ValueError):
    """The launcher asked for an engine (or a precision) this run cannot engage."""


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def requested_engine(environ: Mapping[str, str] = os.environ) -> str:
    """ "deepspeed", "fsdp1", "fsdp2" (what `accelerate launch` asked for) or "ddp" (everything else: torchrun, srun,
    a MULTI_* config, one process)."""
    if _flag(environ, "ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if _flag(environ, "ACCELERATE_USE_FSDP"):
        return f"fsdp{environ.get('FSDP_VERSION', '1').strip()}"
    return "ddp"


def resolve_mixed_precision(configured: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The run's mixed precision: the one configured, else None (accelerate then takes the launcher's). A launcher
    that asks for another precision than the run's config is refused rather than overruled silently."""
    launcher = environ.get("ACCELERATE_MIXED_PRECISION")
    if configured is not None and launcher is not None and launcher.lower() != configured:
        raise DistributedEngineError(
            f"the launcher asks for mixed precision {launcher!r} (ACCELERATE_MIXED_PRECISION, from accelerate "
            f"launch's config) but the run sets mixed_precision={configured!r}: drop one of the two"
        )
    return configured


def engaged_engine(accelerator: Accelerator) -> str:
    """What the accelerator actually runs: "deepspeed", "fsdp1", "fsdp2", "ddp" or "single"."""
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return "deepspeed"
    if kind == DistributedType.FSDP:
        return f"fsdp{getattr(accelerator.state.fsdp_plugin, 'fsdp_version', 1)}"
    return "single" if accelerator.num_processes == 1 else "ddp"


ENGINES = ("ddp", "fsdp1", "fsdp2", "deepspeed")


def build_accelerator(
    mixed_precision: str | None,
    micro_batch_size: int | None = None,
    supported: tuple[str, ...] = ENGINES,
    job: str = "pretraining",
    **options: Any,
) -> Accelerator:
    """An `Accelerator` running the launcher's engine and precision, or `DistributedEngineError`.

    `micro_batch_size` (sequences, or packed rows, per process and micro-batch) goes to DeepSpeed, which needs it
    when no DataLoader is prepared (the configs leave it "auto"). `supported`: the engines the `job` can run."""
    requested = requested_engine()
    if requested not in supported:
        raise DistributedEngineError(
            f"the launcher asked for {requested}, which {job} does not run: launch it with torchrun or a DDP config "
            f"(training/accelerate/cpu.yaml, ddp.yaml); it runs {', '.join(supported)}"
        )
    if requested == "deepspeed" and not (torch.cuda.is_available() and importlib.util.find_spec("deepspeed")):
        raise DistributedEngineError(
            "the launcher asked for deepspeed, which runs here only on GPUs with the deepspeed package installed "
            f"(CUDA available: {torch.cuda.is_available()}, deepspeed installed: "
            f"{importlib.util.find_spec('deepspeed') is not None}). On CPU, launch with training/accelerate/"
            "fsdp2_cpu.yaml (sharded) or torchrun (DDP)"
        )
    if requested.startswith("fsdp") and not torch.cuda.is_available() and not _has_fsdp2(requested):
        # accelerate < 1.6 fails inside Accelerator() on CPU with FSDP asked for: say why before it does.
        raise DistributedEngineError(_refusal(requested, "ddp", None))
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=resolve_mixed_precision(mixed_precision), **options
    )
    if requested == "fsdp2" and accelerator.distributed_type == DistributedType.MULTI_CPU:
        _engage_fsdp2_on_cpu(accelerator)
    engaged = engaged_engine(accelerator)
    if requested != "ddp" and engaged != requested:
        raise DistributedEngineError(_refusal(requested, engaged, accelerator))
    if engaged == "deepspeed":
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch_size
    return accelerator


def _engage_fsdp2_on_cpu(accelerator: Accelerator) -> None:
    """accelerate's FSDP2 path on CPU processes: the plugin reads the launcher's FSDP_* settings, as on GPUs."""
    plugin = FullyShardedDataParallelPlugin()
    for state in (PartialState._shared_state, accelerator.state.__dict__):
        state["distributed_type"] = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    if accelerator.state.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.state.mixed_precision)


def _has_fsdp2(requested: str) -> bool:
    fields = {field.name for field in dataclasses.fields(FullyShardedDataParallelPlugin)}
    return requested == "fsdp2" and "fsdp_version" in fields


def _refusal(requested: str, engaged: str, accelerator: Accelerator | None) -> str:
    import accelerate

    where = (
        "CPU processes"
        if accelerator is None
        else f"{accelerator.num_processes} process(es) on {accelerator.device.type}"
    )
    reason = {
        "fsdp2": "FSDP2 needs accelerate >= 1.6 (installed: {version}) and at least 2 processes on CPU",
        "fsdp1": "accelerate engages FSDP1 only on GPUs; use FSDP2 (fsdp_version: 2) on CPU",
    }.get(requested, "it is not available here")
    return (
        f"the launcher asked for {requested} but accelerate would run {engaged} ({where}): "
        + reason.format(version=accelerate.__version__)
        + ". Launch with a DDP config (training/accelerate/cpu.yaml, ddp.yaml) or torchrun to train without it."
    )


def is_sharded(accelerator: Accelerator) -> bool:
    """Whether each process holds only a shard of the weights (FSDP, DeepSpeed ZeRO): every process must then run
    every forward together (the shards are gathered layer by layer)."""
    return engaged_engine(accelerator) in ("fsdp1", "fsdp2", "deepspeed")


FSDP_MODEL_FOLDER = "pytorch_model_fsdp_0"  # accelerate's sharded model (torch.distributed.checkpoint files)


def is_training_checkpoint(folder: str | os.PathLike) -> bool:
    """A folder the training loop's `save_checkpoint` wrote (accelerate's state plus each rank's trainer state)."""
    return (Path(folder) / "trainer_state_rank0.json").is_file()


def consolidate_checkpoint(checkpoint: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """One safetensors model folder, ready for `from_pretrained`, from a training checkpoint: sharded (FSDP, merged
    with accelerate's `merge_fsdp_weights`, on CPU in one process) or not. Its config and tokenizer are the copies
    the checkpoint holds. Missing or unexpected weights raise, naming the checkpoint."""
    from accelerate.utils import merge_fsdp_weights
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoTokenizer

    from ..modeling_plm import PLMForCausalLM, PLMForMaskedLM

    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    if not (checkpoint / "config.json").is_file():
        raise ValueError(f"{checkpoint} has no config.json: not a training checkpoint this version wrote")
    config = AutoConfig.from_pretrained(checkpoint)
    classes = {cls.__name__: cls for cls in (PLMForMaskedLM, PLMForCausalLM)}
    model_class = classes.get((config.architectures or ["PLMForMaskedLM"])[0], PLMForMaskedLM)
    staging = output_dir.with_name(output_dir.name + ".tmp")
    staging.mkdir(parents=True, exist_ok=True)
    if (checkpoint / FSDP_MODEL_FOLDER).is_dir():
        merge_fsdp_weights(str(checkpoint / FSDP_MODEL_FOLDER), str(staging), safe_serialization=True)
    elif (checkpoint / "model.safetensors").is_file():
        weights = load_file(checkpoint / "model.safetensors")
        save_file(
            {name.removeprefix("module."): tensor for name, tensor in weights.items()}, staging / "model.safetensors"
        )
    else:
        raise ValueError(f"{checkpoint} holds no model weights ({FSDP_MODEL_FOLDER}/ or model.safetensors)")
    config.save_pretrained(staging)
    model, info = model_class.from_pretrained(staging, output_loading_info=True)
    problems = {
        kind: names
        for kind, names in info.items()
        if names and kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if problems:
        raise ValueError(f"{checkpoint}: the weights do not fit {model_class.__name__}: {problems}")
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(output_dir)
    for path in staging.iterdir():
        path.unlink()
    staging.rmdir()
    return output_dir
