"""The launcher's engine and precision engage or are refused (training/distributed.py), in real launches on CPU.

- FSDP2 through `accelerate launch --config_file training/accelerate/fsdp2_cpu.yaml` with 2 gloo processes: it
  learns, writes sharded checkpoints, resumes to the same weights bit for bit, and `plm export` consolidates a
  sharded checkpoint into one safetensors model equal to the run's final one.
- DeepSpeed, FSDP1 on CPU and FSDP2 with one CPU process are refused with a message and exit code 2, never run as
  DDP; fine-tuning refuses sharded engines.
- bf16 from the launcher reaches the model's forward; a run that sets another precision than its launcher is refused.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import accelerate
import pytest
import torch
from packaging.version import Version
from safetensors.torch import load_file

from modeling_plm import PLMForMaskedLM
from modeling_plm.training.distributed import DistributedEngineError, requested_engine, resolve_mixed_precision

from .conftest import data_path

REPO = Path(__file__).resolve().parents[1]
SPROT = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"
HAS_FSDP2 = Version(accelerate.__version__) >= Version("1.6.0")
TINY_RUN = [
    "training/configs/smoke.yaml",
    "--preset",
    "tiny",
    "--crop-length",
    "62",
    "--batch-size",
    "8",
    "--valid-sequences",
    "32",
    "--log-steps",
    "1",
    "--report-to",
    "none",
]


def _launch(launcher: list[str], run_dir: Path, *flags: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [*launcher, "training/pretrain.py", *TINY_RUN, "--output-dir", str(run_dir), *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def _accelerate(config: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config,
        "--main_process_port",
        str(port),
    ]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


@pytest.mark.skipif(not HAS_FSDP2, reason="accelerate < 1.6 has no FSDP2 (the refusal is tested below)")
def test_fsdp2_on_cpu_learns_resumes_bitwise_and_consolidates(tmp_path):
    data_path(SPROT)
    fsdp2 = _accelerate("training/accelerate/fsdp2_cpu.yaml", 29561)
    steps = ["--max-steps", "6", "--save-steps", "3", "--eval-steps", "6"]
    whole = _launch(fsdp2, tmp_path / "whole", *steps)
    assert whole.returncode == 0, whole.stderr[-3000:]
    record = json.loads((tmp_path / "whole" / "final" / "training_record.json").read_text())
    assert record["distributed_engine"] == "fsdp2" and record["world_size"] == 2
    assert record["final_eval"]["mlm"]["loss"] < record["initial_eval"]["mlm"]["loss"]
    checkpoint = tmp_path / "whole" / "checkpoints" / "step-0000003"
    shards = sorted(path.name for path in (checkpoint / "pytorch_model_fsdp_0").iterdir())
    assert [name for name in shards if name.endswith(".distcp")] == ["__0_0.distcp", "__1_0.distcp"]  # one per rank

    # Resume from the step-3 checkpoint, in a fresh folder: the same final weights, bit for bit.
    shutil.copytree(checkpoint, tmp_path / "resumed" / "checkpoints" / checkpoint.name)
    resumed = _launch(fsdp2, tmp_path / "resumed", *steps, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed mlm from" in resumed.stdout
    final, resumed_final = _weights(tmp_path / "whole" / "final"), _weights(tmp_path / "resumed" / "final")
    assert final.keys() == resumed_final.keys()
    assert all(torch.equal(final[name], resumed_final[name]) for name in final)

    # A sharded checkpoint consolidates into one model: the step-6 one equals the final model.
    _export_equals_final(tmp_path / "whole" / "checkpoints" / "step-0000006", tmp_path / "whole" / "final", tmp_path)


def _export_equals_final(checkpoint: Path, final_dir: Path, tmp_path: Path) -> None:
    exported = tmp_path / f"export-{checkpoint.parent.parent.name}"
    completed = subprocess.run(
        [sys.executable, "-m", "modeling_plm", "export", str(checkpoint), str(exported)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    consolidated = PLMForMaskedLM.from_pretrained(exported).state_dict()
    final = PLMForMaskedLM.from_pretrained(final_dir).state_dict()
    assert consolidated.keys() == final.keys()
    assert all(torch.equal(consolidated[name], final[name]) for name in final)
    assert json.loads((exported / "config.json").read_text())["architectures"] == ["PLMForMaskedLM"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "asked for deepspeed, which runs here only on GPUs"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "asked for fsdp1 but accelerate would run"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "asked for fsdp2 but accelerate would run"),
    ],
)
def test_an_engine_that_cannot_engage_is_refused_not_swapped(tmp_path, env, expected):
    data_path(SPROT)
    completed = _launch([sys.executable], tmp_path / "run", "--max-steps", "2", env=env)
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert expected in completed.stderr and "Traceback" not in completed.stderr
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.skipif(HAS_FSDP2, reason="with accelerate >= 1.6 FSDP2 engages (tested above)")
def test_fsdp2_with_an_accelerate_that_lacks_it_is_refused(tmp_path):
    data_path(SPROT)
    completed = _launch(_accelerate("training/accelerate/fsdp2_cpu.yaml", 29562), tmp_path / "run", "--max-steps", "2")
    assert completed.returncode != 0
    assert "asked for fsdp" in completed.stderr and not (tmp_path / "run" / "final").exists()


def test_launcher_bf16_reaches_the_model_and_a_conflicting_run_precision_is_refused(tmp_path):
    data_path(SPROT)
    launcher = [*_accelerate("training/accelerate/cpu.yaml", 29563), "--mixed_precision", "bf16"]
    completed = _launch(launcher, tmp_path / "bf16", "--max-steps", "2", "--eval-steps", "2", "--save-steps", "2")
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads((tmp_path / "bf16" / "final" / "training_record.json").read_text())
    assert record["mixed_precision"] == "bf16"
    # An unsharded checkpoint exports too (the weights accelerate saved, not a merge): the final model's.
    _export_equals_final(tmp_path / "bf16" / "checkpoints" / "step-0000002", tmp_path / "bf16" / "final", tmp_path)
    # The forward of the prepared model runs in bf16 (accelerate's autocast), as the launcher asked.
    probe = subprocess.run(
        [sys.executable, "-c", BF16_PROBE], capture_output=True, text=True, timeout=300,
        env={**os.environ, "ACCELERATE_MIXED_PRECISION": "bf16"}, cwd=REPO,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.split() == ["bf16", "torch.bfloat16"]
    conflicting = _launch(launcher, tmp_path / "conflict", "--max-steps", "2", "--mixed-precision", "no")
    assert conflicting.returncode != 0  # the process exits 2; accelerate launch reports 1
    assert "the launcher asks for mixed precision 'bf16'" in conflicting.stderr


BF16_PROBE = """
import torch
from modeling_plm import PLMForMaskedLM
from modeling_plm.training.distributed import build_accelerator
from modeling_plm.training.presets import config_from_preset

accelerator = build_accelerator(None, micro_batch_size=2)
model = accelerator.prepare(PLMForMaskedLM(config_from_preset("tiny", vocab_size=33)))
seen = []  # accelerate returns fp32 outputs: look inside, at a projection's output
accelerator.unwrap_model(model).model.layers[0].self_attn.q_proj.register_forward_hook(
    lambda module, inputs, output: seen.append(output.dtype)
)
model(input_ids=torch.randint(4, 24, (2, 12)))
print(accelerator.mixed_precision, seen[0])
"""


def test_finetuning_refuses_sharded_engines(tmp_path):
    completed = subprocess.run(
        [sys.executable, "training/finetune.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0 and "examples" in completed.stdout
    refused = subprocess.run(
        [sys.executable, "-c", "from modeling_plm.training.distributed import build_accelerator\n"
         "build_accelerator(None, supported=('ddp',), job='fine-tuning')"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "ACCELERATE_USE_FSDP": "true",
                                                          "FSDP_VERSION": "2"},
    )  # fmt: skip
    assert refused.returncode != 0 and "asked for fsdp2, which fine-tuning does not run" in refused.stderr


def test_requested_engine_and_precision_from_the_environment():
    assert requested_engine({}) == "ddp"
    assert requested_engine({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}) == "fsdp2"
    assert requested_engine({"ACCELERATE_USE_FSDP": "True"}) == "fsdp1"
    assert requested_engine({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_USE_FSDP": "true"}) == "deepspeed"
    assert resolve_mixed_precision(None, {"ACCELERATE_MIXED_PRECISION": "bf16"}) is None  # accelerate reads it
    assert resolve_mixed_precision("bf16", {"ACCELERATE_MIXED_PRECISION": "bf16"}) == "bf16"
    assert resolve_mixed_precision("fp16", {}) == "fp16"
    with pytest.raises(DistributedEngineError, match="asks for mixed precision 'fp16'"):
        resolve_mixed_precision("no", {"ACCELERATE_MIXED_PRECISION": "fp16"})
