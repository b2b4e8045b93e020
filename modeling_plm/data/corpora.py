"""Where pretraining corpora live, read with Hugging Face `datasets`: parquet and Arrow files, folders and globs,
`save_to_disk` folders, hub dataset ids and fsspec URLs (s3://, gs://, hf://, memory://, ...), beside FASTA/FASTA.gz.

`source_files(path)` resolves a source to its kind and its files (the shards); `open_source(...)` gives a streaming
`datasets.IterableDataset` of {"id", "sequence"} rows over those files in the order given (so shard order can be
shuffled per epoch by the caller); `iter_source_records(...)` reads one source whole, in order, as `FastaRecord`s.
"""

import glob
import json
from collections.abc import Iterator
from pathlib import Path

from .fasta import FASTA_SUFFIXES, FastaRecord, read_fasta

DATA_EXTRA = "pip install 'modeling_plm[data]'"
TABLE_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow"}
SOURCE_KINDS = ("fasta", "parquet", "arrow", "hub")


def import_datasets():
    """The `datasets` module, or an ImportError that says how to install it."""
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            f"reading parquet/Arrow/Hugging Face datasets or using --num-workers needs the `datasets` library: "
            f"{DATA_EXTRA}"
        ) from error
    return datasets


def _is_url(path: str) -> bool:
    return "://" in path


def _kind_of_file(name: str) -> str | None:
    name = name.lower()
    for suffix, kind in TABLE_SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    if name.removesuffix(".gz").endswith(FASTA_SUFFIXES):
        return "fasta"
    return None


def _fs_and_path(path: str):
    import fsspec

    return fsspec.core.url_to_fs(path)


def _expand(path: str) -> list[str]:
    """The files a path, folder or glob names (local or fsspec URL), sorted; folders are searched recursively."""
    if not _is_url(path):
        if any(char in path for char in "*?["):
            return sorted(glob.glob(path, recursive=True))
        if Path(path).is_dir():
            return sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
        return [path] if Path(path).is_file() else []
    fs, inner = _fs_and_path(path)
    protocol = path.split("://", 1)[0]
    if any(char in inner for char in "*?["):
        found = fs.glob(inner)
    elif fs.isdir(inner):
        found = fs.find(inner)
    else:
        found = [inner] if fs.exists(inner) else []
    return sorted(f"{protocol}://{name.removeprefix(protocol + '://')}" for name in found)


def _disk_arrow_files(folder: Path) -> list[str] | None:
    """The Arrow files of a `Dataset.save_to_disk` folder (its state.json lists them), or None if it is not one."""
    state = folder / "state.json"
    if not (state.is_file() and (folder / "dataset_info.json").is_file()):
        return None
    return [str(folder / item["filename"]) for item in json.loads(state.read_text())["_data_files"]]


def looks_like_hub_id(path: str) -> bool:
    """ "name" or "owner/name" with no file suffix, which is not a local path."""
    parts = path.split("/")
    return (
        not _is_url(path)
        and not Path(path).exists()
        and 1 <= len(parts) <= 2
        and all(parts)
        and _kind_of_file(path) is None
        and not path.startswith((".", "~"))
    )


def source_files(path: str) -> tuple[str, list[str]]:
    """(kind, files) of a source: kind is "fasta", "parquet", "arrow" (files are the shards) or "hub" (files is
    [dataset id]). Raises FileNotFoundError naming the path when it names nothing readable."""
    if not _is_url(path) and Path(path).is_dir():
        arrow = _disk_arrow_files(Path(path))
        if arrow is not None:
            return "arrow", arrow
    if not _is_url(path) and Path(path).is_file():
        kind = _kind_of_file(path)
        return kind or "fasta", [path]  # any other single file is read as FASTA (detected by content, as before)
    if looks_like_hub_id(path):
        return "hub", [path]
    files = _expand(path)
    kinds = {_kind_of_file(name) for name in files} - {None}
    is_folder = not _is_url(path) and Path(path).is_dir()
    if is_folder:
        kinds.discard("fasta")  # a folder is a table dataset; FASTA files are named one by one (or by a glob)
    if not kinds:
        if is_folder:
            raise IsADirectoryError(f"data source {path} is a directory with no parquet or Arrow files in it")
        raise FileNotFoundError(
            f"data source not found: {path} (no parquet, Arrow or FASTA file there: nothing matches, or no name ends "
            f"in .parquet/.arrow/{'/'.join(FASTA_SUFFIXES)})"
        )
    if len(kinds) > 1:
        raise ValueError(f"data source {path} mixes file kinds ({', '.join(sorted(kinds))}): give one source per kind")
    kind = kinds.pop()
    return kind, [name for name in files if _kind_of_file(name) == kind]


def _fasta_rows(paths: list[str]) -> Iterator[dict[str, str]]:
    for path in paths:
        for record in read_fasta(path):
            yield {"id": record.id, "sequence": record.sequence}


def open_source(
    kind: str, files: list[str], sequence_column: str = "sequence", id_column: str | None = "id", split: str = "train"
):
    """A streaming `datasets.IterableDataset` of {"id", "sequence"} rows over `files` (one shard per file, in this
    order). `id` is "" where the data has no `id_column`."""
    datasets = import_datasets()
    if kind == "fasta":
        features = datasets.Features({"id": datasets.Value("string"), "sequence": datasets.Value("string")})
        return datasets.IterableDataset.from_generator(_fasta_rows, gen_kwargs={"paths": files}, features=features)
    if kind == "hub":
        dataset = datasets.load_dataset(files[0], split=split, streaming=True)
    else:
        dataset = datasets.load_dataset(kind, data_files={"train": files}, split="train", streaming=True)
    columns = list(dataset.column_names or [])
    if sequence_column not in columns:
        raise ValueError(
            f"data source {files[0] if len(files) == 1 else files[0] + ', ...'}: no column {sequence_column!r} "
            f"(columns: {columns}); set --sequence-column"
        )
    keep = [sequence_column] + ([id_column] if id_column in columns and id_column != sequence_column else [])
    dataset = dataset.select_columns(keep)
    if sequence_column != "sequence":
        dataset = dataset.rename_column(sequence_column, "sequence")
    if id_column in columns and id_column != "id":
        dataset = dataset.rename_column(id_column, "id")
    return dataset


def num_shards(dataset) -> int:
    """Shards of an IterableDataset (`num_shards` in datasets >= 4.x, `n_shards` before)."""
    return int(getattr(dataset, "num_shards", None) or dataset.n_shards)


def row_record(row: dict, where: str) -> FastaRecord:
    """A `datasets` row as a FastaRecord; a missing or non-text sequence names the source."""
    sequence = row.get("sequence")
    if not isinstance(sequence, str):
        raise ValueError(f"{where}: record {row.get('id')!r}: sequence is {type(sequence).__name__}, not text")
    return FastaRecord(str(row.get("id") or ""), "", "".join(sequence.split()))


def iter_source_records(
    path: str, sequence_column: str = "sequence", id_column: str | None = "id"
) -> Iterator[FastaRecord]:
    """Every record of one source, in order: FASTA files directly, everything else through `datasets` streaming."""
    kind, files = source_files(path)
    if kind == "fasta":
        for name in files:
            yield from read_fasta(name)
        return
    for row in open_source(kind, files, sequence_column, id_column):
        yield row_record(row, path)
