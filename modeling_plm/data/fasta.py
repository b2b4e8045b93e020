"""Reading protein sequences: a streaming FASTA / FASTA.gz reader, id lists, the format of a sequence file (FASTA or
CSV/TSV), and where the shared data sets are."""

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

DATA_DIR_ENV = "PLM_DATA_DIR"
CSV_SUFFIXES = (".csv", ".tsv")
FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas")


class FastaRecord(NamedTuple):
    id: str
    description: str
    sequence: str


def find_data_dir(start: str | os.PathLike | None = None) -> Path | None:
    """The shared data folder: `$PLM_DATA_DIR`, else the first `shared/data` beside an ancestor of `start` (cwd)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def open_text(path: Path):
    with open(path, "rb") as handle:
        is_gzip = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if is_gzip else open(path)


def read_fasta(path: str | os.PathLike) -> Iterator[FastaRecord]:
    """Yield records one at a time (constant memory), from plain or gzip-compressed FASTA (detected by content).

    Sequences are returned as written, joined across lines with whitespace removed; validating residues is the
    tokenizer's and the data pipeline's job. Raises ValueError naming the file and line for text that is not FASTA,
    for a truncated or corrupt gzip stream and for a file without any record (empty, or blank lines only).
    """
    path = Path(path)
    record_id, description, chunks = None, "", []
    try:
        with open_text(path) as handle:
            for line_number, line in enumerate(handle, start=1):
                line = line.strip()
                if not line:
                    continue
                if line.startswith(">"):
                    if record_id is not None:
                        yield FastaRecord(record_id, description, "".join(chunks))
                    description = line[1:].strip()
                    record_id = description.split(maxsplit=1)[0] if description else f"record_{line_number}"
                    chunks = []
                elif record_id is None:
                    raise ValueError(
                        f"{path}, line {line_number}: not FASTA: expected a '>' header line, got {line[:40]!r}"
                    )
                else:
                    chunks.append("".join(line.split()))
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({error})") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text FASTA file ({error})") from error
    if record_id is None:
        raise ValueError(f"{path}: no FASTA records (the file is empty or holds only blank lines)")
    yield FastaRecord(record_id, description, "".join(chunks))


def read_id_list(path: str | os.PathLike) -> set[str]:
    """The ids in the first column of a text or TSV file (plain or gzip), e.g. benchmark_exact_overlap.tsv.

    Blank lines and '#' comments are ignored; the first line is taken as a header, and skipped, when its first field
    has no digit (column names like "sprot_representative_accession" do; accessions and cluster ids do not).
    """
    ids: set[str] = set()
    with open_text(Path(path)) as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if line_number == 1 and not any(char.isdigit() for char in parts[0]):
                continue
            ids.add(parts[0])
    return ids


def file_format(path: str | os.PathLike) -> str:
    """ "csv" or "fasta", from the file name (a trailing .gz is allowed)."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(FASTA_SUFFIXES):
        return "fasta"
    raise ValueError(
        f"{path}: cannot tell the format from the name; use {'/'.join(CSV_SUFFIXES + FASTA_SUFFIXES)} (optionally .gz)"
    )
