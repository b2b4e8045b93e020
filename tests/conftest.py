import importlib
import itertools
import os
from pathlib import Path

import pytest
import torch

from modeling_plm import PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.data.fasta import find_data_dir, read_fasta

REQUIRE_DATA_ENV = "PLM_REQUIRE_DATA"  # CI sets it: a missing data set fails instead of skipping.
# Marks that transformers' common tests (tests/test_transformers_common.py) carry; transformers' conftest defines them.
TRANSFORMERS_MARKS = (
    "accelerate_tests",
    "flash_attn_test",
    "flash_attn_3_test",
    "flash_attn_4_test",
    "torch_compile_test",
)


def pytest_configure(config):
    for mark in TRANSFORMERS_MARKS:
        config.addinivalue_line("markers", f"{mark}: a transformers common-test mark")


def data_path(relative: str):
    """Path of a file under the shared data folder, or skip (fail when $PLM_REQUIRE_DATA is set) if absent."""
    root = find_data_dir(os.path.dirname(__file__))
    path = root / relative if root is not None else None
    if path is None or not path.exists():
        message = f"shared data file {relative!r} not found (set PLM_DATA_DIR or put shared/data beside the repo)"
        if os.environ.get(REQUIRE_DATA_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return path


def optional_module(name: str):
    """`pytest.importorskip(name)`, except that with $PLM_REQUIRE_DATA set (CI) a missing module fails the test."""
    if os.environ.get(REQUIRE_DATA_ENV):
        try:
            return importlib.import_module(name)
        except ImportError as error:
            pytest.fail(f"{name} is not installed ({error}); {REQUIRE_DATA_ENV} is set, so it may not be skipped")
    return pytest.importorskip(name)


@pytest.fixture(scope="session")
def swissprot_sequences() -> list[str]:
    """Real Swiss-Prot sequences (first 64 of the 50k sample) of 20-120 residues, standard letters only."""
    path = data_path("swissprot2014/sprot2014_sample50k_seed0.fasta.gz")
    keep = (
        r.sequence
        for r in read_fasta(path)
        if 20 <= len(r.sequence) <= 120 and set(r.sequence) <= set("ACDEFGHIKLMNPQRSTVWY")
    )
    return list(itertools.islice(keep, 64))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    # Tiny models run fastest on one thread when the machine is shared; OMP_NUM_THREADS=1 python -m pytest.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))


SECONDARY_STRUCTURE = "flip/secondary_structure/"


def ss_flags(base_model: str, output: Path, **overrides) -> list[str]:
    """`plm finetune` flags for a small per-residue run on the secondary-structure data."""
    flags = {
        "--model": base_model,
        "--task": "token-classification",
        "--train-file": data_path(SECONDARY_STRUCTURE + "sequences.fasta.gz"),
        "--labels-fasta": data_path(SECONDARY_STRUCTURE + "sampled.fasta.gz"),
        "--mask-fasta": data_path(SECONDARY_STRUCTURE + "mask.fasta.gz"),
        "--split-column": "SET",
        "--validation-column": "VALIDATION",
        "--max-train-samples": 40,
        "--max-valid-samples": 8,
        "--max-length": 128,
        "--batch-size": 8,
        "--output-dir": output,
        **overrides,
    }
    return [str(x) for item in flags.items() for x in item]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> str:
    """A fresh tiny masked LM saved like a pretrained checkpoint (no pretrained weights in tests)."""
    folder = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    PLMForMaskedLM(config_from_preset("tiny")).save_pretrained(folder)
    PLMTokenizerFast().save_pretrained(folder)
    return str(folder)
