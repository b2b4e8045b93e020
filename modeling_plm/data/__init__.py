"""Data: FASTA files → cleaned records → streams → tokens → batches.

- `records`: FASTA reading, the record policy (invalid residues, stop codons, lengths), data sources, splits,
  MMseqs2 clustering and the resumable `ProteinStream`.
- `collators`: MLM, CLM and GLM collators (padded or packed rows) and the batching rules.
"""

from .collators import (
    IGNORE_INDEX,
    STANDARD_AMINO_ACIDS,
    CLMCollator,
    GLMCollator,
    MLMCollator,
    build_collator,
    glm_infill_inputs,
    pack_rows,
    token_budget_batches,
)
from .records import (
    DATA_DIR_ENV,
    STANDARD_ALPHABET,
    DataSource,
    FastaRecord,
    ProteinStream,
    RecordPolicy,
    RecordStats,
    clean_records,
    cluster_with_mmseqs,
    find_data_dir,
    load_clusters,
    mmseqs_available,
    read_fasta,
    read_id_list,
    split_of,
)

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
    "pack_rows",
    "read_fasta",
    "read_id_list",
    "split_of",
    "token_budget_batches",
]
