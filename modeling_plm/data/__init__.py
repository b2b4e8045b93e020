"""Data: FASTA files and parquet/Arrow/HF datasets → cleaned records → streams → tokens → batches.

- `fasta`: FASTA / FASTA.gz reading, id lists, the shared data folder.
- `residues`: the one invalid-residue policy of tokens (error, skip, X, drop).
- `records`: cleaning records for pretraining (invalid letters, stop codons, lengths), with counts.
- `sources`: weighted sources, leakage-free train/valid splits, MMseqs2 clusters.
- `streams`: the deterministic, resumable, rank-sharded `ProteinStream` (in process; every rank reads everything).
- `corpora`: parquet/Arrow/`save_to_disk`/hub/fsspec sources, read with `datasets`.
- `sharded`: the scalable path: per-rank and per-worker shards, work in DataLoader workers, O(1) exact resume.
- `collators`: MLM, CLM and GLM collators (padded or packed rows) and the batching rules.
"""

from .collators import (
    IGNORE_INDEX,
    STANDARD_AMINO_ACIDS,
    CLMCollator,
    GLMCollator,
    MLMCollator,
    NextFitRows,
    build_collator,
    glm_infill_inputs,
    pack_rows,
    token_budget_batches,
)
from .fasta import DATA_DIR_ENV, FastaRecord, find_data_dir, read_fasta, read_id_list
from .records import STANDARD_ALPHABET, RecordPolicy, RecordStats, clean_records
from .sources import DataSource, cluster_with_mmseqs, load_clusters, mmseqs_available, split_of
from .streams import ProteinStream

__all__ = [
    "DATA_DIR_ENV",
    "IGNORE_INDEX",
    "STANDARD_ALPHABET",
    "STANDARD_AMINO_ACIDS",
    "CLMCollator",
    "DataSource",
    "FastaRecord",
    "GLMCollator",
    "MLMCollator",
    "ProteinStream",
    "RecordPolicy",
    "RecordStats",
    "build_collator",
    "clean_records",
    "cluster_with_mmseqs",
    "find_data_dir",
    "glm_infill_inputs",
    "load_clusters",
    "mmseqs_available",
    "NextFitRows",
    "pack_rows",
    "read_fasta",
    "read_id_list",
    "split_of",
    "token_budget_batches",
]
