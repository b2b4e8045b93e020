"""Shared helpers of the benchmarks: real Swiss-Prot sequences, timing, and the result table/JSON."""

import itertools
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import EsmConfig, EsmForMaskedLM

from modeling_plm.data.collators import STANDARD_AMINO_ACIDS
from modeling_plm.data.fasta import find_data_dir, read_fasta
from modeling_plm.hub.convert import ESM2_VOCAB, convert_esm2

RESULTS = Path(__file__).parent / "results"
SWISSPROT_SAMPLE = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"
STANDARD = set(STANDARD_AMINO_ACIDS)
ESM_SHAPES = {
    "esm2_8m": (6, 320, 20),
    "esm2_35m": (12, 480, 20),
    "esm2_150m": (30, 640, 20),
    "esm2_650m": (33, 1280, 20),
}


def add_kernel_argument(parser) -> None:
    """--cpu-linear-kernel: our projections' GEMM (PLMConfig.cpu_linear_kernel); 'torch' measures without oneDNN."""
    parser.add_argument(
        "--cpu-linear-kernel",
        default="auto",
        choices=["auto", "onednn", "torch"],
        help="our float32 CPU projections' GEMM; 'torch' is the before of the oneDNN change",
    )


def kernel_suffix(kernel: str) -> str:
    """Results of a non-default --cpu-linear-kernel go to their own JSON file, beside the default's."""
    return "" if kernel == "auto" else f"_cpu_linear_{kernel}"


def swissprot_sequences(count: int, max_length: int = 1022) -> list[str]:
    """The first `count` sequences of the Swiss-Prot sample that fit ESM-2's context, in file order: a real length
    distribution (median ~300 residues)."""
    data_dir = find_data_dir(Path(__file__).parent)
    if data_dir is None:
        raise FileNotFoundError("shared data not found: set PLM_DATA_DIR")
    records = read_fasta(data_dir / SWISSPROT_SAMPLE)
    keep = (r.sequence for r in records if len(r.sequence) <= max_length and set(r.sequence) <= STANDARD)
    return list(itertools.islice(keep, count))


def esm_twin_folders(shape: str, folder: Path) -> tuple[Path, Path]:
    """A random transformers `EsmForMaskedLM` of an ESM-2 shape saved in `folder/esm` (with its vocab.txt), and the
    same weights converted to modeling_plm in `folder/plm`: the peer and our model, bit-identical in maths."""
    layers, hidden, heads = ESM_SHAPES[shape]
    config = EsmConfig(
        vocab_size=33,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        position_embedding_type="rotary",
        token_dropout=True,
        mask_token_id=32,
        pad_token_id=1,
        max_position_embeddings=1026,
        emb_layer_norm_before=False,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        hidden_act="gelu",
    )
    torch.manual_seed(0)
    EsmForMaskedLM(config).save_pretrained(folder / "esm")
    (folder / "esm" / "vocab.txt").write_text("\n".join(ESM2_VOCAB) + "\n")
    convert_esm2(folder / "esm", folder / "plm")
    return folder / "esm", folder / "plm"


def best_time(function: Callable[[], object], repeats: int = 3) -> float:
    """Best wall time of `repeats` runs after one warm-up (the minimum is the least noisy estimate)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> dict[str, object]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def report(name: str, rows: list[dict[str, object]], extra: dict[str, object]) -> None:
    """Print a table and write results/<name>.json."""
    keys = list(rows[0])
    widths = [max(len(str(k)), *(len(_fmt(r[k])) for r in rows)) for k in keys]
    print(" | ".join(str(k).ljust(w) for k, w in zip(keys, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(_fmt(row[k]).ljust(w) for k, w in zip(keys, widths)))
    for key, value in extra.items():
        print(f"{key}: {_fmt(value)}")
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "rows": rows, **extra, "machine": machine()}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")


def _fmt(value: object) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)
