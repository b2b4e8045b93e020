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

Several processes (torchrun, accelerate launch, a SLURM array) share one output folder: process r of W embeds the
shards k with k % W == r and lists them in its own manifest, `manifest.rank-0000r-of-0000W.jsonl`. The process that
finds every part finished merges them into `manifest.jsonl` (atomically; any of them may), which is then the same as
one process's manifest: every record once, in file order. A killed process resumes its own part. A folder keeps
the world size that wrote it: a run with another one (one process over a multi-process folder included, and the
reverse) is refused, since it would split the shards differently.
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
PART_PATTERN = re.compile(r"^manifest\.rank-(\d{5,})-of-(\d{5,})\.jsonl$")
Record = tuple[int, str, str]  # (index in the file, id, sequence)
PART_KEYS = ("rank", "world_size")  # in each part's header only


class EmbeddingRecord(NamedTuple):
    index: int  # 0-based position of the record in the FASTA file
    id: str
    arrays: dict[str, Any]


def shard_name(shard: int) -> str:
    return f"embeddings-{shard:05d}.safetensors"


class StorePart(NamedTuple):
    """The part of a store one process writes: shard k belongs to process k % world_size."""

    rank: int = 0
    world_size: int = 1

    @property
    def manifest_name(self) -> str:
        if self.world_size == 1:
            return MANIFEST_NAME
        return f"manifest.rank-{self.rank:05d}-of-{self.world_size:05d}.jsonl"

    def owns(self, shard: int) -> bool:
        return shard % self.world_size == self.rank

    def shard_at(self, position: int) -> int:
        """The shard number of this part's `position`-th shard."""
        return self.rank + position * self.world_size


WHOLE_STORE = StorePart()  # one process writes every shard


def read_manifest(path: Path, part: StorePart = WHOLE_STORE) -> tuple[dict | None, list[dict]]:
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
    for position, entry in enumerate(shards):
        expected = part.shard_at(position)
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


def remove_outputs(output_dir: Path, part: StorePart = WHOLE_STORE) -> None:
    """Delete this part's own files (its shards, temporary shards and manifest) and the merged manifest, nothing
    else: the other processes' parts stay."""
    for path in output_dir.iterdir():
        name = path.name
        is_shard = SHARD_PATTERN.match(name) and part.owns(int(name.split("-")[1].split(".")[0]))
        if is_shard or name in (MANIFEST_NAME, MANIFEST_NAME + ".tmp", part.manifest_name):
            path.unlink()


def changed_settings(previous: dict, header: dict) -> list[str]:
    """The settings in which two runs' headers differ (the model and FASTA paths may be spelled differently)."""
    ignored = ("model", "fasta", *PART_KEYS)
    return [key for key in header if key not in ignored and previous.get(key) != header[key]]


def part_headers(output_dir: Path) -> dict[StorePart, dict | None]:
    """The parts of a multi-process run found in `output_dir`, each with its header (None while it has none)."""
    parts = {}
    for path in output_dir.glob("manifest.rank-*.jsonl"):
        match = PART_PATTERN.match(path.name)
        if match is None:
            continue
        first_line, newline, _ = path.read_bytes().partition(b"\n")
        parts[StorePart(int(match[1]), int(match[2]))] = json.loads(first_line) if newline else None
    return parts


def check_world_size(output_dir: Path, header: dict, part: StorePart) -> None:
    """Refuse to write into a folder another world size wrote (or is writing): its shards are split differently,
    and the two runs would delete, duplicate or never merge each other's shards. Refuse, too, a part whose settings
    differ from the other parts' (they must be one run's)."""
    parts = part_headers(output_dir)
    written_by = {found.world_size for found in parts}
    if not parts and (output_dir / MANIFEST_NAME).exists():
        written_by = {1}  # a merged manifest.jsonl always has its parts beside it
    if written_by and written_by != {part.world_size}:
        old = " and ".join(str(size) for size in sorted(written_by))
        raise ValueError(
            f"{output_dir} was written by a run with world size {old} ({_describe(written_by)}); this run has "
            f"world size {part.world_size}, which splits the shards differently. Rerun with world size {old} to resume "
            "or re-read it (launched as before, or --rank/--world-size), or use a new output folder (or delete it)."
        )
    for other, other_header in sorted(parts.items()):
        if other != part and other_header is not None and (changed := changed_settings(other_header, header)):
            details = ", ".join(f"{key}: {other_header.get(key)!r} -> {header[key]!r}" for key in changed)
            raise ValueError(
                f"{output_dir}: process {other.rank} of {other.world_size} embeds with other settings ({details}); "
                "every process of a run needs the same settings: rerun this one with theirs, or use another folder."
            )


def _describe(world_sizes: set[int]) -> str:
    if world_sizes == {1}:
        return f"one process: {MANIFEST_NAME} without manifest.rank-* parts"
    return ", ".join(f"manifest.rank-*-of-{size:05d}.jsonl" for size in sorted(world_sizes))


def open_store(output_dir: Path, header: dict, resume: bool, part: StorePart = WHOLE_STORE) -> list[dict]:
    """Prepares `output_dir` for a run with these settings and returns the entries of its complete shards: none for
    a new (or `resume=False`) run; for a resumed one, those of the earlier run, whose settings must be the same."""
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"{output_dir} is a file, not a folder to write the embeddings into")
    output_dir.mkdir(parents=True, exist_ok=True)
    check_world_size(output_dir, header, part)
    manifest_path = output_dir / part.manifest_name
    if not resume:
        remove_outputs(output_dir, part)
    for stale in output_dir.glob("embeddings-*.safetensors.tmp"):
        if part.owns(int(stale.name.split("-")[1].split(".")[0])):
            stale.unlink()  # a shard a kill interrupted mid-write; it will be redone
    previous_header, done_shards = read_manifest(manifest_path, part)
    if previous_header is None:
        remove_outputs(output_dir, part)  # shards without a manifest cannot be trusted
        append_line(manifest_path, header)
        return []
    if changed := changed_settings(previous_header, header):
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
    part: StorePart = WHOLE_STORE,
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
    append_line(output_dir / part.manifest_name, entry)


def finish_store(output_dir: Path, summary: dict[str, Any], part: StorePart = WHOLE_STORE) -> bool:
    """Marks this part finished; with several parts, merges them when every one is. Returns whether the store is
    complete (`manifest.jsonl` finished)."""
    append_line(output_dir / part.manifest_name, {"done": True, "summary": summary})
    return part.world_size == 1 or merge_parts(output_dir, part.world_size)


# Every process reads the whole file, so these count the same in each part; the others add up over the parts.
WHOLE_FILE_COUNTS = ("read", "duplicates", "shards")


def merge_parts(output_dir: Path, world_size: int) -> bool:
    """`manifest.jsonl` from the parts' manifests when all `world_size` are finished (False while one is not): their
    shard entries in shard order under the shared header, so that it equals the manifest of a one-process run."""
    parts = []
    for rank in range(world_size):
        path = output_dir / StorePart(rank, world_size).manifest_name
        lines = path.read_bytes().split(b"\n")[:-1] if path.exists() else []
        entries = [json.loads(line) for line in lines if line.strip()]
        if not entries or not entries[-1].get("done"):
            return False
        parts.append(entries)
    header = {key: value for key, value in parts[0][0].items() if key not in PART_KEYS}
    shards = sorted((entry for entries in parts for entry in entries[1:-1]), key=lambda entry: entry["shard"])
    summaries = [entries[-1]["summary"] for entries in parts]
    summary = {
        key: summaries[0][key] if key in WHOLE_FILE_COUNTS else sum(part[key] for part in summaries)
        for key in summaries[0]
    }
    lines = [header, *shards, {"done": True, "summary": summary}]
    tmp = output_dir / f"{MANIFEST_NAME}.{os.getpid()}.tmp"  # each process its own file: any of them may merge
    tmp.write_bytes(b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines))
    os.replace(tmp, output_dir / MANIFEST_NAME)
    return True


def read_store(
    output_dir: str | os.PathLike, return_tensors: str = "np", require_complete: bool = True
) -> Iterator[EmbeddingRecord]:
    """Yield `EmbeddingRecord(index, id, arrays)` for every stored record of an `embed_fasta` output folder, in file
    order (`exports.load_embeddings` also reads the .h5/.parquet files made of one).

    Reads one tensor at a time (constant memory). Only shards listed in the manifest are read. With
    `require_complete` (default) an unfinished run raises ValueError instead of yielding a partial result.
    """
    if return_tensors not in ("np", "pt"):
        raise ValueError(f"return_tensors must be one of ('np', 'pt'), got {return_tensors!r}")
    output_dir = Path(output_dir)
    manifest_path = output_dir / MANIFEST_NAME
    if not manifest_path.exists():
        parts = sorted(path.name for path in output_dir.glob("manifest.rank-*.jsonl"))
        if parts:
            raise ValueError(
                f"{output_dir} holds the parts of a multi-process run ({', '.join(parts)}) that are not all finished "
                "yet: rerun the unfinished processes (the last one to finish merges them into manifest.jsonl)"
            )
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
