"""The bulk-embedding store of `embed_fasta`: safetensors shards plus a JSON-lines manifest, written so that a run
killed at any point resumes without losing or duplicating a record.

Layout of an output folder:
  - `embeddings-00000.safetensors`, ...: shard k holds the records at file positions [k * shard_size,
    (k + 1) * shard_size). Tensor names are `"{index}/{name}"`: index = the record's 0-based position in the FASTA
    file (so duplicate ids never collide), name = `mean`, `max`, `bos` or `residues`. The safetensors metadata (key
    "modeling_plm-embeddings") repeats the shard's `[index, id]` pairs.
  - `manifest.jsonl`: line 1 is a header with the settings; then one line per complete shard,
    `{"shard": k, "file": ..., "records": [[index, id, key], ...], "skipped": [[index, id, reason], ...]}`; the last
    line, `{"done": true, "summary": {...}}`, marks a finished run.

Each shard is written to a temporary file, synced and renamed, and only then is its manifest line appended (and
synced): a kill leaves only complete shards listed.
"""

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

MANIFEST_NAME = "manifest.jsonl"
MANIFEST_FORMAT = "modeling_plm-embeddings"
MANIFEST_VERSION = 1
SHARD_PATTERN = re.compile(r"^embeddings-\d{5,}\.safetensors(\.tmp)?$")
Record = tuple[int, str, str]  # (index in the file, id, sequence)


class EmbeddingRecord(NamedTuple):
    index: int  # 0-based position of the record in the FASTA file
    id: str
    arrays: dict[str, Any]


def shard_name(shard: int) -> str:
    return f"embeddings-{shard:05d}.safetensors"


def read_manifest(path: Path) -> tuple[dict | None, list[dict]]:
    """The header and the complete shard entries of a manifest (None, [] when there is none).

    A last line cut short by a kill (no newline) and a final `done` line are removed from the file: the first so
    that the next append starts on a clean line, the second because the run is continuing and will write it again.
    """
    if not path.exists():
        return None, []
    lines = path.read_bytes().split(b"\n")[:-1]  # the piece after the last newline is incomplete (or empty)
    entries = [json.loads(line) for line in lines if line.strip()]
    if not entries:
        path.unlink()
        return None, []
    header, shards = entries[0], entries[1:]
    if header.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a {MANIFEST_FORMAT} manifest")
    if shards and shards[-1].get("done"):
        shards = shards[:-1]
    for expected, entry in enumerate(shards):
        if entry.get("shard") != expected:
            raise ValueError(f"{path}: expected the entry of shard {expected}, found {entry}; not an embed_fasta run")
    rewritten = b"".join(json.dumps(entry, separators=(",", ":")).encode() + b"\n" for entry in [header, *shards])
    if rewritten != path.read_bytes():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(rewritten)
        os.replace(tmp, path)
    return header, shards


def append_line(path: Path, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, separators=(",", ":")) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write to `<name>.tmp`, sync, then rename: a shard file under its final name is always complete."""
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def remove_outputs(output_dir: Path) -> None:
    """Delete this function's own files (shards, temporary shards, the manifest), nothing else."""
    for path in output_dir.iterdir():
        if path.name in (MANIFEST_NAME, MANIFEST_NAME + ".tmp") or SHARD_PATTERN.match(path.name):
            path.unlink()


def open_store(output_dir: Path, header: dict, resume: bool) -> list[dict]:
    """Prepares `output_dir` for a run with these settings and returns the entries of its complete shards: none for
    a new (or `resume=False`) run; for a resumed one, those of the earlier run, whose settings must be the same."""
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"{output_dir} is a file, not a folder to write the embeddings into")
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = output_dir / MANIFEST_NAME
    if not resume:
        remove_outputs(output_dir)
    for stale in output_dir.glob("embeddings-*.safetensors.tmp"):
        stale.unlink()  # a shard a kill interrupted mid-write; it will be redone
    previous_header, done_shards = read_manifest(manifest_path)
    if previous_header is None:
        remove_outputs(output_dir)  # shards without a manifest cannot be trusted
        append_line(manifest_path, header)
        return []
    changed = [key for key in header if key not in ("model", "fasta") and previous_header.get(key) != header[key]]
    if changed:
        details = ", ".join(f"{key}: {previous_header.get(key)!r} -> {header[key]!r}" for key in changed)
        raise ValueError(
            f"{output_dir} holds embeddings made with other settings ({details}); use another output folder, "
            "or resume=False (--no-resume) to start over."
        )
    for entry in done_shards:
        if not (output_dir / entry["file"]).exists():
            raise ValueError(f"{output_dir / entry['file']} is listed in the manifest but missing")
    return done_shards


def check_resumed_shard(entry: dict, chunk: list[Record], fasta_path: Path, output_dir: Path) -> None:
    """A shard kept from an earlier run must list exactly the records the FASTA file now has at its positions."""
    listed = [(index, record_id) for index, record_id, _ in entry["records"] + entry["skipped"]]
    if sorted(listed) != [(index, record_id) for index, record_id, _ in chunk]:
        raise ValueError(
            f"{fasta_path} does not match the manifest of {output_dir} in shard {entry['shard']} (records "
            f"{chunk[0][0]}-{chunk[-1][0]}): the file changed since the first run; use --no-resume."
        )


def store_shard(
    output_dir: Path,
    shard: int,
    tensors: dict[str, torch.Tensor],
    kept: list[Record],
    skipped: list[list],
    stop_stripped: int = 0,
) -> None:
    """Writes one complete shard, then lists it in the manifest: only now is it part of the output. `skipped` holds
    [index, id, reason] per record left out; `stop_stripped` counts the records whose trailing `*` was removed."""
    # One metadata key: safetensors writes its metadata map in an arbitrary order, and a single key keeps the shard
    # files byte-identical between runs.
    metadata = {MANIFEST_FORMAT: json.dumps({"shard": shard, "records": [list(record[:2]) for record in kept]})}
    write_shard(output_dir / shard_name(shard), tensors, metadata)
    records = [[index, record_id, str(index)] for index, record_id, _ in kept]
    entry = {"shard": shard, "file": shard_name(shard), "records": records, "skipped": skipped}
    if stop_stripped:
        entry["stop_stripped"] = stop_stripped
    append_line(output_dir / MANIFEST_NAME, entry)


def finish_store(output_dir: Path, summary: dict[str, Any]) -> None:
    append_line(output_dir / MANIFEST_NAME, {"done": True, "summary": summary})


def load_embeddings(
    output_dir: str | os.PathLike, return_tensors: str = "np", require_complete: bool = True
) -> Iterator[EmbeddingRecord]:
    """Yield `EmbeddingRecord(index, id, arrays)` for every stored record of an `embed_fasta` output, in file order.

    Reads one tensor at a time (constant memory). Only shards listed in the manifest are read. With
    `require_complete` (default) an unfinished run raises ValueError instead of yielding a partial result.
    """
    if return_tensors not in ("np", "pt"):
        raise ValueError(f"return_tensors must be one of ('np', 'pt'), got {return_tensors!r}")
    output_dir = Path(output_dir)
    manifest_path = output_dir / MANIFEST_NAME
    if not manifest_path.exists():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {output_dir}: not an embed_fasta output folder")
    # Only newline-terminated lines: a line cut short by a kill is not part of the output.
    lines = [json.loads(line) for line in manifest_path.read_bytes().split(b"\n")[:-1] if line.strip()]
    if not lines or lines[0].get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{manifest_path} is not a {MANIFEST_FORMAT} manifest")
    if require_complete and not lines[-1].get("done"):
        raise ValueError(f"{output_dir} is incomplete (the run was interrupted): rerun embed_fasta to resume it")
    header = lines[0]
    if return_tensors == "np" and header["dtype"] == "bfloat16":
        raise ValueError(f"{output_dir} holds bfloat16 arrays, which numpy lacks: pass return_tensors='pt'")
    names = list(header["pooling"]) + (["residues"] if header["per_residue"] else [])
    for entry in lines[1:]:
        if "shard" not in entry:
            continue
        with safe_open(str(output_dir / entry["file"]), framework=return_tensors) as shard:
            for index, record_id, key in entry["records"]:
                yield EmbeddingRecord(index, record_id, {name: shard.get_tensor(f"{key}/{name}") for name in names})
