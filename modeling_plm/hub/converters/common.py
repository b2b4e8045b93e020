"""What every family's converter shares: its registry entry, reading a source checkpoint (a folder or a hub id),
renaming weights through name templates, and the `conversion.json` the model card reads."""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file


@dataclass(frozen=True)
class Converter:
    """One direction of `plm convert NAME SOURCE DESTINATION`: `convert(source, destination)` returns the folder
    it wrote; the texts are the subcommand's help."""

    name: str
    convert: Callable[[str | Path, str | Path], Path]
    help: str
    source_help: str
    destination_help: str


def load_weights_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], may_miss=()) -> None:
    """Load converted weights; any weight missing (but those in `may_miss`, e.g. tied ones) or left over raises."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [name for name in missing if name not in may_miss]
    if missing or unexpected:
        raise ValueError(f"Conversion mismatch: missing {missing}, unexpected {unexpected}")


def knob_problems(config, expected: dict, family: str) -> list[str]:
    """`key=value (FAMILY needs value)` for each knob of `config` that differs from what `family` can express: the
    reverse converters list every one at once before refusing."""
    needs = f"{family} needs" if family else "needs"
    return [
        f"{key}={getattr(config, key)!r} ({needs} {value!r})"
        for key, value in expected.items()
        if getattr(config, key) != value
    ]


def compile_name_template(template: str) -> re.Pattern:
    """`encoder.layer.{layer}.x.{param}` -> a pattern whose groups `layer` (digits) and `param` (weight|bias) fill
    the other side's template."""
    pattern = (
        re.escape(template).replace(r"\{layer\}", r"(?P<layer>\d+)").replace(r"\{param\}", r"(?P<param>weight|bias)")
    )
    return re.compile(pattern + "$")


def rename(name: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    """The target name of `name` under the first matching (pattern, template) pair; None when none matches."""
    for pattern, template in table:
        match = pattern.match(name)
        if match:
            return template.format(**match.groupdict())
    return None


def load_checkpoint_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Weights of a checkpoint folder: safetensors (single or sharded) first, else a legacy `pytorch_model.bin`
    read with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects."""
    if (folder / "model.safetensors").exists():
        return load_file(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {name: tensor for shard in shards for name, tensor in load_file(folder / shard).items()}
    if (folder / "pytorch_model.bin").exists():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def resolve_source(source: str | Path, *, patterns: list[str], example: str) -> Path:
    """A local checkpoint folder as is; an `owner/name` hub id downloaded (only the files matching `patterns`)
    through the hub cache, which also answers offline once filled."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or str(source).count("/") != 1:
        raise FileNotFoundError(f"{source}: not a checkpoint folder (nor a hub id like {example})")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(source), allow_patterns=patterns))


def hub_id_of_snapshot(folder: Path) -> str | None:
    """`owner/name` of a hub-cache snapshot folder (models--owner--name/snapshots/<sha>), else None."""
    for part in folder.parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/", 1)
    return None


def write_conversion_record(destination: Path, *, family: str, source: Path) -> None:
    """`conversion.json`: the family and source a checkpoint was converted from; `base_model` (a hub id) goes on
    the model card."""
    record = {"converted_from": family, "source": str(source), "base_model": hub_id_of_snapshot(source)}
    (destination / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
