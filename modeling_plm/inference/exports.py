"""A finished `embed_fasta` store as one HDF5 or parquet file, and those files read back as the store is.

- HDF5 (`.h5`, `.hdf5`; needs `h5py`): one group per output (`mean`, `max`, `bos`, `residues`), one dataset per
  record keyed by its id, as ESM's `extract.py` and bio_embeddings users expect (`f["mean"][record_id][()]`). Each
  dataset's attributes hold the record's file `index`. A repeated id gets its index appended (`id#17`), counted in
  the file's `duplicate_ids` attribute. The store's settings are the root's `settings` attribute (JSON).
- parquet (`.parquet`; needs `pyarrow`): one row per record, columns `index`, `id` and one per output (lists of
  floats; `residues` a list of per-residue lists), one row group per shard. It reads with
  `datasets.load_dataset("parquet", data_files=path)` and `pyarrow.parquet.read_table(path)`.

`export_embeddings(store, path)` writes either (constant memory: one shard at a time); `load_embeddings(path)` reads
all three forms (the folder, either file) back as `EmbeddingRecord`s in file order.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .stores import EmbeddingRecord, read_store

EXPORT_FORMATS = {".h5": "hdf5", ".hdf5": "hdf5", ".parquet": "parquet"}
SETTINGS_KEY = "modeling_plm-embeddings"


def export_format(path: str | os.PathLike) -> str:
    """ "hdf5" or "parquet" from the file's suffix; anything else raises naming the choices."""
    suffix = Path(path).suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise ValueError(f"{path}: export to .h5/.hdf5 (HDF5) or .parquet, not {suffix or 'a file without a suffix'!r}")
    return EXPORT_FORMATS[suffix]


def _store_settings(store: Path) -> dict[str, Any]:
    with open(store / "manifest.jsonl", encoding="utf-8") as handle:
        return json.loads(handle.readline())


def export_embeddings(store: str | os.PathLike, path: str | os.PathLike) -> dict[str, Any]:
    """Write the records of a finished store (`embed_fasta`'s output folder) to `path` (.h5/.hdf5 or .parquet),
    through a temporary file renamed at the end. Returns `{"path", "format", "records", "duplicate_ids"}`."""
    store, path, kind = Path(store), Path(path), export_format(path)
    settings = _store_settings(store)
    if settings.get("dtype") == "bfloat16":
        raise ValueError(f"{store} holds bfloat16 arrays, which HDF5 and parquet lack: embed with --dtype float16")
    records = read_store(store)  # raises for an unfinished store
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = _write_hdf5(records, tmp, settings) if kind == "hdf5" else _write_parquet(records, tmp, settings)
    os.replace(tmp, path)
    return {"path": str(path), "format": kind, **written}


def _write_hdf5(records: Iterator[EmbeddingRecord], path: Path, settings: dict) -> dict[str, int]:
    import h5py

    seen, duplicates, count = set(), 0, 0
    with h5py.File(path, "w") as handle:
        handle.attrs["settings"] = json.dumps(settings)
        for record in records:
            key = record.id.replace("/", "_")  # "/" would nest groups
            if key in seen:
                key, duplicates = f"{key}#{record.index}", duplicates + 1
            seen.add(key)
            for name, array in record.arrays.items():
                dataset = handle.require_group(name).create_dataset(key, data=array)
                dataset.attrs["index"] = record.index
                dataset.attrs["id"] = record.id
            count += 1
        handle.attrs["duplicate_ids"] = duplicates
    return {"records": count, "duplicate_ids": duplicates}


def _write_parquet(records: Iterator[EmbeddingRecord], path: Path, settings: dict) -> dict[str, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, rows, count = None, [], 0

    def flush() -> None:
        nonlocal writer
        if not rows:
            return
        columns = {"index": pa.array([r.index for r in rows], pa.int64()), "id": [r.id for r in rows]}
        for name, first in rows[0].arrays.items():
            value_type = pa.from_numpy_dtype(first.dtype)
            for _ in range(first.ndim):  # (H,) -> list<float>, (L, H) -> list<list<float>>, ...
                value_type = pa.list_(value_type)
            columns[name] = pa.array([r.arrays[name].tolist() for r in rows], type=value_type)
        table = pa.table(columns)
        if writer is None:
            metadata = {**(table.schema.metadata or {}), SETTINGS_KEY.encode(): json.dumps(settings).encode()}
            writer = pq.ParquetWriter(path, table.schema.with_metadata(metadata))
        writer.write_table(table)
        rows.clear()

    for record in records:
        rows.append(record)
        count += 1
        if len(rows) == settings["shard_size"]:
            flush()
    flush()
    if writer is None:
        raise ValueError("the store holds no records: nothing to export")
    writer.close()
    return {"records": count, "duplicate_ids": 0}


def load_embeddings(
    path: str | os.PathLike, return_tensors: str = "np", require_complete: bool = True
) -> Iterator[EmbeddingRecord]:
    """Yield `EmbeddingRecord(index, id, arrays)` for every record of an `embed_fasta` output, in file order: its
    folder (`stores.read_store`; an unfinished run raises unless `require_complete=False`) or the .h5/.parquet file
    `export_embeddings` made of it. Constant memory: one record at a time."""
    if return_tensors not in ("np", "pt"):
        raise ValueError(f"return_tensors must be one of ('np', 'pt'), got {return_tensors!r}")
    if Path(path).is_file():
        yield from read_exported(Path(path), return_tensors)
    else:
        yield from read_store(path, return_tensors, require_complete)


def read_exported(path: Path, return_tensors: str = "np") -> Iterator[EmbeddingRecord]:
    """The records of an exported file, in file order (HDF5 sorted by each dataset's `index` attribute)."""
    if export_format(path) == "hdf5":
        yield from _read_hdf5(path, return_tensors)
    else:
        yield from _read_parquet(path, return_tensors)


def _as(array: np.ndarray, return_tensors: str) -> Any:
    if return_tensors == "pt":
        import torch

        return torch.from_numpy(np.ascontiguousarray(array))
    return array


def _read_hdf5(path: Path, return_tensors: str) -> Iterator[EmbeddingRecord]:
    import h5py

    with h5py.File(path, "r") as handle:
        names = list(handle.keys())
        keys = sorted(handle[names[0]].keys(), key=lambda key: int(handle[names[0]][key].attrs["index"]))
        for key in keys:
            first = handle[names[0]][key]
            arrays = {name: _as(handle[name][key][()], return_tensors) for name in names}
            yield EmbeddingRecord(int(first.attrs["index"]), str(first.attrs["id"]), arrays)


def _read_parquet(path: Path, return_tensors: str) -> Iterator[EmbeddingRecord]:
    import pyarrow.parquet as pq

    settings = json.loads(pq.read_schema(path).metadata[SETTINGS_KEY.encode()])
    dtype = np.dtype(settings["dtype"])
    parquet = pq.ParquetFile(path)
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group).to_pylist()
        for row in table:
            arrays = {
                name: _as(np.asarray(value, dtype=dtype), return_tensors)
                for name, value in row.items()
                if name not in ("index", "id")
            }
            yield EmbeddingRecord(row["index"], row["id"], arrays)
