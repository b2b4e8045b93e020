"""Cleaning FASTA records for pretraining: the record policy (invalid letters, stop codons, lengths) and its counts."""

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields

from .fasta import FastaRecord, read_fasta

logger = logging.getLogger("modeling_plm.data")

STANDARD_ALPHABET = "ACDEFGHIKLMNPQRSTVWYXBZUO"
_INVALID_CHOICES = ("skip", "error")
_STOP_CODON_CHOICES = ("strip", "skip", "error")


@dataclass
class RecordPolicy:
    """How bad or unusual records are handled; every non-default outcome is counted in RecordStats.

    invalid: "skip" drops a record with a letter outside `alphabet` (counted, one summary warning per file pass);
        "error" raises ValueError naming the file, record id, 1-based position and the character.
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
        if self.invalid not in _INVALID_CHOICES:
            raise ValueError(f"RecordPolicy.invalid must be one of {_INVALID_CHOICES}, got {self.invalid!r}")
        if self.stop_codon not in _STOP_CODON_CHOICES:
            raise ValueError(f"RecordPolicy.stop_codon must be one of {_STOP_CODON_CHOICES}, got {self.stop_codon!r}")
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
    before = stats.as_dict()
    # A compiled negated class finds the first bad letter in C; a Python loop per residue would be the bottleneck.
    bad_letter = re.compile(f"[^{re.escape(policy.alphabet)}]")
    for record in read_fasta(path):
        stats.read += 1
        if exclude_ids and record.id in exclude_ids:
            stats.excluded += 1
            continue
        sequence = record.sequence.upper()
        if sequence.endswith("*"):
            if policy.stop_codon == "error":
                raise _record_error(path, record.id, f"trailing stop codon '*' at position {len(sequence)}")
            if policy.stop_codon == "skip":
                stats.invalid += 1
                continue
            sequence = sequence[:-1]
            stats.stop_stripped += 1
        if not sequence:
            if policy.invalid == "error":
                raise _record_error(path, record.id, "empty sequence")
            stats.empty += 1
            continue
        found = bad_letter.search(sequence)
        if found is not None:
            if policy.invalid == "error":
                position, char = found.start() + 1, found.group()
                raise _record_error(path, record.id, f"invalid character {char!r} at position {position}")
            stats.invalid += 1
            continue
        if len(sequence) < policy.min_length:
            stats.too_short += 1
            continue
        stats.kept += 1
        yield FastaRecord(record.id, record.description, sequence)
    after = stats.as_dict()
    # Only this function's own counters: the caller may count other things (crops) in the same stats meanwhile.
    changes = {
        name: after[name] - before[name] for name in ("empty", "too_short", "invalid", "stop_stripped", "excluded")
    }
    if any(changes.values()):
        summary = ", ".join(f"{name}={count}" for name, count in changes.items() if count)
        read, kept = after["read"] - before["read"], after["kept"] - before["kept"]
        logger.warning("%s: read %d records, kept %d; %s (policy %s)", path, read, kept, summary, policy)
