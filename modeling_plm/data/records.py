"""Cleaning FASTA records for pretraining: the record policy (invalid letters, stop codons, lengths) and its counts."""

import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

from .fasta import FastaRecord, read_fasta
from .residues import INVALID_RESIDUE_POLICIES, apply_residue_policy, check_residue_policy, strip_stop_codon

logger = logging.getLogger("modeling_plm.data")

STANDARD_ALPHABET = "ACDEFGHIKLMNPQRSTVWYXBZUO"
STOP_CODON_POLICIES = ("strip", "skip", "error")


@dataclass
class RecordPolicy:
    """How bad or unusual records are handled; every non-default outcome is counted in RecordStats.

    invalid: the one residue policy (`data.residues`) for a letter outside `alphabet`: "skip" drops the record
        (counted as invalid, one summary warning per file pass), "error" raises ValueError naming the file, record
        id, 1-based position and the character, "X" and "drop" repair it (counted as repaired).
    stop_codon: a trailing '*' (gene-caller output) is removed ("strip", counted in stop_stripped), or the record is
        dropped ("skip", counted as invalid) or rejected ("error"). A '*' anywhere else is an invalid character.
    min_length: shorter records (after cleaning) are dropped and counted as too_short. Empty sequences are always
        counted as empty and dropped, or raise when invalid == "error".
    alphabet: the accepted residue letters; sequences are upper-cased first (read_fasta already removed whitespace).
    """

    invalid: str = "skip"
    stop_codon: str = "strip"
    min_length: int = 1
    alphabet: str = STANDARD_ALPHABET

    def __post_init__(self) -> None:
        if self.invalid not in INVALID_RESIDUE_POLICIES:
            check_residue_policy(self.invalid)
        if self.stop_codon not in STOP_CODON_POLICIES:
            raise ValueError(f"RecordPolicy.stop_codon must be one of {STOP_CODON_POLICIES}, got {self.stop_codon!r}")
        if self.min_length < 1:
            raise ValueError(f"RecordPolicy.min_length must be >= 1, got {self.min_length}")
        if not self.alphabet or self.alphabet != self.alphabet.upper():
            raise ValueError(f"RecordPolicy.alphabet must be non-empty upper-case letters, got {self.alphabet!r}")


@dataclass
class RecordStats:
    """Counts of what the pipeline did. Outcomes partition the records: read == kept + empty + too_short + invalid +
    excluded. stop_stripped and cropped count changes made to records (a stripped record may still be dropped later).
    """

    read: int = 0
    kept: int = 0
    empty: int = 0
    too_short: int = 0
    invalid: int = 0
    repaired: int = 0
    stop_stripped: int = 0
    excluded: int = 0
    cropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    def merge(self, other: "RecordStats") -> None:
        """Add `other`'s counts to these."""
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


def _record_error(path: str | os.PathLike, record_id: str, problem: str) -> ValueError:
    return ValueError(f"{path}: record {record_id!r}: {problem}")


def clean_records(
    path: str | os.PathLike,
    policy: RecordPolicy,
    stats: RecordStats,
    exclude_ids: set[str] | None = None,
) -> Iterator[FastaRecord]:
    """Stream the records of one FASTA file, upper-cased and checked against `policy` (see RecordPolicy).

    Every record dropped or changed is counted in `stats` (updated as records are read); when a full pass over the
    file dropped or changed any, one warning on the "modeling_plm.data" logger summarises this pass's counts.
    Records whose id is in `exclude_ids` are dropped first and counted as excluded.
    """
    return clean_record_stream(read_fasta(path), path, policy, stats, exclude_ids)


def clean_record_stream(
    records: Iterable[FastaRecord],
    where: str | os.PathLike,
    policy: RecordPolicy,
    stats: RecordStats,
    exclude_ids: set[str] | None = None,
) -> Iterator[FastaRecord]:
    """`clean_records` for records from anywhere (a FASTA file, a parquet shard, a `datasets` stream); `where` names
    their origin in errors and in the pass's summary warning."""
    path = where
    before = stats.as_dict()
    # A compiled negated class finds the first bad letter in C; a Python loop per residue would be the bottleneck.
    bad_letter = re.compile(f"[^{re.escape(policy.alphabet)}]")
    for record in records:
        stats.read += 1
        if exclude_ids and record.id in exclude_ids:
            stats.excluded += 1
            continue
        sequence, had_stop = strip_stop_codon(record.sequence.upper())
        if had_stop:
            if policy.stop_codon == "error":
                raise _record_error(path, record.id, f"trailing stop codon '*' at position {len(sequence) + 1}")
            if policy.stop_codon == "skip":
                stats.invalid += 1
                continue
            stats.stop_stripped += 1
        if not sequence:
            if policy.invalid == "error":
                raise _record_error(path, record.id, "empty sequence")
            stats.empty += 1
            continue
        cleaned = apply_residue_policy(sequence, policy.invalid, bad_letter, f"{path}: record {record.id!r}")
        if cleaned is None:
            stats.invalid += 1
            continue
        if cleaned != sequence:
            stats.repaired += 1
            sequence = cleaned
        if not sequence:
            stats.empty += 1
            continue
        if len(sequence) < policy.min_length:
            stats.too_short += 1
            continue
        stats.kept += 1
        yield FastaRecord(record.id, record.description, sequence)
    after = stats.as_dict()
    # Only this function's own counters: the caller may count other things (crops) in the same stats meanwhile.
    changes = {
        name: after[name] - before[name]
        for name in ("empty", "too_short", "invalid", "repaired", "stop_stripped", "excluded")
    }
    if any(changes.values()):
        summary = ", ".join(f"{name}={count}" for name, count in changes.items() if count)
        read, kept = after["read"] - before["read"], after["kept"] - before["kept"]
        logger.warning("%s: read %d records, kept %d; %s (policy %s)", path, read, kept, summary, policy)
