"""Where pretraining sequences come from: weighted FASTA sources, leakage-free train/valid splits, MMseqs2 clusters."""

import hashlib
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .fasta import read_fasta


@dataclass
class DataSource:
    """One FASTA file of a training mixture, drawn with probability proportional to `weight`."""

    path: str
    weight: float = 1.0
    name: str | None = None

    def __post_init__(self) -> None:
        self.path = str(self.path)
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"DataSource weight must be a positive finite number, got {self.weight!r} for {self.path}")
        if self.name is None:
            self.name = Path(self.path).name

    @classmethod
    def parse(cls, spec: str) -> "DataSource":
        """Parse "path" or "path:weight".

        Only the text after the last ':' is tried as a weight, so paths with ':' in them (URLs, Windows drives, odd
        file names) stay whole unless they end in ":<number>".
        """
        spec = spec.strip()
        head, sep, tail = spec.rpartition(":")
        if sep and head:
            try:
                weight = float(tail)
            except ValueError:
                return cls(spec)
            return cls(head.strip(), weight)
        return cls(spec)


def split_of(key: str, valid_fraction: float, seed: int = 0) -> str:
    """Return "train" or "valid" for `key` (a sequence, or a cluster representative id), from a stable hash.

    hashlib, not Python's salted hash(): the answer is the same in every process and run, so identical sequences
    (or all members of one cluster, keyed by their representative) always land in the same split.
    """
    if not 0.0 <= valid_fraction <= 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1], got {valid_fraction}")
    digest = hashlib.blake2b(f"{seed}\t{key}".encode(), digest_size=8).digest()
    return "valid" if int.from_bytes(digest, "big") < valid_fraction * 2**64 else "train"


def mmseqs_available() -> bool:
    return shutil.which("mmseqs") is not None


def cluster_with_mmseqs(
    fasta_paths: list[str],
    workdir: str,
    min_seq_id: float = 0.5,
    coverage: float = 0.8,
    threads: int = 2,
) -> Path:
    """Cluster the sequences of all files together with `mmseqs easy-cluster`; return its *_cluster.tsv
    (representative \\t member per line, ids = first word of the FASTA header, as read_fasta gives them).

    The input is written to `workdir` as one plain FASTA (streamed; gzip inputs are decompressed and a trailing '*'
    is removed so mmseqs sees the residues the stream trains on). Ids must be unique across the files.
    """
    if not mmseqs_available():
        raise RuntimeError(
            "mmseqs not found on PATH: install MMseqs2 (Debian/Ubuntu: `apt-get install mmseqs2`, "
            "conda: `conda install -c bioconda mmseqs2`) to cluster sequences"
        )
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    combined = work / "input.fasta"
    with open(combined, "w") as out:
        for path in fasta_paths:
            for record in read_fasta(path):
                sequence = record.sequence.upper().removesuffix("*")
                if sequence:
                    out.write(f">{record.id}\n{sequence}\n")
    prefix = work / "clusters"
    command = [
        "mmseqs",
        "easy-cluster",
        str(combined),
        str(prefix),
        str(work / "tmp"),
        "--min-seq-id",
        str(min_seq_id),
        "-c",
        str(coverage),
        "--threads",
        str(threads),
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    tsv = Path(f"{prefix}_cluster.tsv")
    if completed.returncode != 0 or not tsv.exists():
        tail = (completed.stderr or completed.stdout)[-2000:]
        raise RuntimeError(f"mmseqs easy-cluster failed (exit {completed.returncode}): {' '.join(command)}\n{tail}")
    return tsv


def load_clusters(tsv_path: str | os.PathLike) -> dict[str, str]:
    """member id -> representative id, from an mmseqs *_cluster.tsv (representative \\t member)."""
    clusters: dict[str, str] = {}
    with open(tsv_path) as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{tsv_path}:{line_number}: expected 'representative<TAB>member', got {line!r}")
            representative, member = parts
            clusters[member] = representative
    return clusters
