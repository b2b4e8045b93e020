"""Loading saved models for the commands and the pipelines: the folder is checked first, so that a user reads what is
missing, what was refused and why, and what to do; then transformers' `from_pretrained`, without its load report.

`check_model_folder(folder)` names the problem: a folder that does not exist or is a file, no or broken `config.json`,
a model type that is not this package's (ESM-2 gets the `plm convert esm2` command to run), pickled weights only
(refused: unpickling can run code; how to convert them safely), a truncated or corrupt safetensors file or shard, a
missing tokenizer. `load_pretrained(auto_class, source)` checks a local folder, then loads it quietly and refuses a load
that would leave backbone weights at their random initialisation.
"""

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
PLM_MODEL_TYPES = ("plm",)
# A head a checkpoint of another task lacks by design: a new task head starts fresh (an LM head never does).
FRESH_HEAD_PREFIXES = ("classifier",)
# Another family's model_type: the converter that brings it onto this backbone.
CONVERT_HINTS = {
    model_type: f"convert it first: plm convert {family} {{folder}} OUTPUT_FOLDER"
    for model_type, family in {
        "esm": "esm2",
        "esmc": "esmc",
        "progen": "progen2",
        "gptj": "progen2",
        "rita": "rita",
        "gpt_neox": "rita",
        "AMPLIFY": "amplify",
        "amplify": "amplify",
        "proteinglm": "xtrimopglm",
        "t5": "t5",
    }.items()
}
PICKLE_HINT = (
    "pickled weights are refused (unpickling can run code). Convert them once, on a machine you trust: python -c "
    "\"import torch; from safetensors.torch import save_file; save_file(torch.load('{name}', weights_only=True), "
    "'model.safetensors')\" in {folder}"
)


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded as it is; the message names the file and what to do."""


def is_local_source(source: str | os.PathLike) -> bool:
    """Whether `source` means a folder on this machine rather than a hub id ("name" or "owner/name")."""
    text = os.fspath(source)
    if Path(text).exists() or text.startswith((".", "/", "~")) or "\\" in text:
        return True
    return text.count("/") > 1


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelFolderError(f"{path} is not valid JSON (line {error.lineno}, column {error.colno})") from None


def check_safetensors(path: Path, expected_keys: set[str] | None = None) -> set[str]:
    """The tensor names of a safetensors file; a missing, truncated or corrupt file raises naming it."""
    if not path.is_file():
        raise ModelFolderError(f"missing weights file {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:  # validates the header against the file size
            keys = set(handle.keys())
    except (SafetensorError, OSError) as error:
        raise ModelFolderError(f"{path} is truncated or corrupt ({error}); save or download it again") from None
    if expected_keys is not None and not expected_keys <= keys:
        missing = sorted(expected_keys - keys)
        raise ModelFolderError(f"{path} lacks {len(missing)} tensors that {SAFE_INDEX} places there: {missing[:3]}")
    return keys


def check_weight_files(folder: Path) -> list[Path]:
    """The safetensors weight files of `folder` (one file, or the shards of an index), each checked."""
    index_path = folder / SAFE_INDEX
    if index_path.exists():
        index = read_json(index_path)
        if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
            raise ModelFolderError(f"{index_path} has no weight_map: the shard index is corrupt")
        shards: dict[str, set[str]] = {}
        for tensor, shard in index["weight_map"].items():
            shards.setdefault(shard, set()).add(tensor)
        for shard, tensors in sorted(shards.items()):
            check_safetensors(folder / shard, tensors)
        return [folder / shard for shard in sorted(shards)]
    if (folder / SAFE_WEIGHTS).exists():
        check_safetensors(folder / SAFE_WEIGHTS)
        return [folder / SAFE_WEIGHTS]
    pickled = [name for name in PICKLED_WEIGHTS if (folder / name).exists()]
    if pickled:
        raise ModelFolderError(
            f"{folder} holds only {pickled[0]}: " + PICKLE_HINT.format(name=pickled[0], folder=folder)
        )
    raise ModelFolderError(f"{folder} has no weights: {SAFE_WEIGHTS} (or {SAFE_INDEX} with its shards) is missing")


def check_model_type(folder: Path, model_types: tuple[str, ...]) -> dict[str, Any]:
    """The folder's config.json, whose `model_type` is one of `model_types`; anything else raises naming it."""
    if not folder.exists():
        raise ModelFolderError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is a file, not a model folder (a folder written by save_pretrained)")
    if not (folder / "config.json").is_file():
        raise ModelFolderError(
            f"{folder} has no config.json: not a saved model (pass a folder written by save_pretrained, "
            "`plm pretrain` or `plm convert`)"
        )
    config = read_json(folder / "config.json")
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in model_types:
        hint = CONVERT_HINTS.get(model_type, "").format(folder=folder)
        raise ModelFolderError(
            f"{folder / 'config.json'}: model_type {model_type!r} is not {' or '.join(map(repr, model_types))}"
            + (f"; {hint}" if hint else "")
        )
    return config


def check_model_folder(
    folder: str | os.PathLike, model_types: tuple[str, ...] = PLM_MODEL_TYPES, need_tokenizer: bool = True
) -> dict[str, Any]:
    """Raises `ModelFolderError` naming what is wrong with a saved model folder; returns its config.json."""
    folder = Path(folder).expanduser()
    config = check_model_type(folder, model_types)
    check_weight_files(folder)
    missing = [name for name in TOKENIZER_FILES if need_tokenizer and not (folder / name).is_file()]
    if missing:
        raise ModelFolderError(
            f"{folder} has no tokenizer ({', '.join(missing)} missing): save it beside the model with "
            "tokenizer.save_pretrained(folder)"
        )
    return config


def load_pretrained(auto_class: Any, source: str | os.PathLike, **kwargs: Any) -> Any:
    """`auto_class.from_pretrained(source, **kwargs)` for a checked folder (or a hub id), without transformers' load
    report; a head of another task may start fresh (`FRESH_HEAD_PREFIXES`), a missing backbone weight is an error."""
    import transformers

    if is_local_source(source):
        check_model_folder(source, need_tokenizer=False)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model, info = auto_class.from_pretrained(source, output_loading_info=True, **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = [key for key in info["missing_keys"] if not key.startswith(FRESH_HEAD_PREFIXES)]
    if missing and all(key.startswith("lm_head.") for key in missing):
        raise ModelFolderError(
            f"{source}: this checkpoint has no language-model head (an encoder, e.g. converted from Ankh or ProtT5), "
            f"so it cannot score or generate; it embeds (plm embed) and fine-tunes (plm finetune)"
        )
    if missing:
        raise ModelFolderError(f"{source}: the checkpoint lacks the weights {missing[:5]}; is it a modeling_plm model?")
    return model


def load_tokenizer(source: str | os.PathLike) -> Any:
    """The tokenizer saved with a model (checked like the model folder)."""
    from transformers import AutoTokenizer

    if is_local_source(source):
        check_model_folder(source)
    return AutoTokenizer.from_pretrained(source)
