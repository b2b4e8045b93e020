"""Export a checkpoint as a Hugging Face hub repository (`plm export CHECKPOINT OUT [--push REPO_ID]`).

The exported folder holds safetensors weights (sharded with an index above `max_shard_size`), `config.json` with an
`auto_map` entry for AutoConfig and every AutoModel* class, the self-contained remote-code files, the tokenizer files
(with their own `auto_map`), `generation_config.json`, the provenance files of the checkpoint
(`training_record.json`, `conversion.json`, `eval_results.json` when present or given) and `README.md`, the model
card (`modeling_plm.hub.model_card`). This module checks the checkpoint before any work, writes the folder, checks
what it wrote, and pushes it.

The protein-* pipelines import package internals, so they are not shipped as hub custom pipelines (a hub
`custom_pipelines` entry needs a self-contained pipeline file); the card says that `pip install modeling_plm`
provides them.
"""

import ast
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    GenerationConfig,
)

from .. import __version__
from ..modeling_plm import AUTO_MAP
from .loading import TOKENIZER_FILES, check_weight_files
from .model_card import TEMPLATE_PATH, render_model_card

REMOTE_CODE_FILES = ("configuration_plm.py", "modeling_plm.py", "modeling_plm_layers.py", "tokenization_plm.py")
PROVENANCE_FILES = ("training_record.json", "conversion.json")
TOKENIZER_AUTO_MAP = {"AutoTokenizer": "tokenization_plm.PLMTokenizerFast"}
# Class named in config.json `architectures` -> Auto class that rebuilds it with the same head.
LOADERS = {
    "PLMForMaskedLM": AutoModelForMaskedLM,
    "PLMForCausalLM": AutoModelForCausalLM,
    "PLMForSequenceClassification": AutoModelForSequenceClassification,
    "PLMForTokenClassification": AutoModelForTokenClassification,
}
# Sampling defaults written to generation_config.json (ProGen2-style nucleus sampling); users override per call.
SAMPLING_DEFAULTS = {"do_sample": True, "temperature": 1.0, "top_p": 0.95}


class ExportError(ValueError):
    """A checkpoint that cannot be exported as it is, or an export that would be incomplete."""


# ---- checks on the input checkpoint ----------------------------------------------------------------------------
def check_checkpoint_files(folder: Path) -> list[Path]:
    """Fail with a message naming the file when a checkpoint folder cannot be exported; return its weight files."""
    if not folder.is_dir():
        raise ExportError(f"checkpoint folder {folder} does not exist (or is not a folder)")
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder / 'config.json'} is missing: {folder} is not a saved model")
    weights = check_weight_files(folder)
    for name in TOKENIZER_FILES:
        if not (folder / name).is_file():
            raise ExportError(
                f"tokenizer file {name} is missing from {folder}; save the tokenizer beside the model "
                "(PLMTokenizerFast().save_pretrained(folder))"
            )
    return weights


def read_json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ExportError(f"{what} {path} is not valid JSON: {error}") from error


def read_eval_results(path: Path) -> list[dict[str, Any]]:
    """A JSON list of {"task", "dataset", "metric", "value"} entries (optional: "task_name", "dataset_name",
    "dataset_split", "metric_name", "source"), or a `plm eval` results file (its "model_index" list)."""
    if not path.is_file():
        raise ExportError(f"evaluation results file {path} does not exist")
    entries = read_json_file(path, "evaluation results file")
    if isinstance(entries, dict) and "model_index" in entries:  # <benchmark>_results.json of `plm eval`
        entries = entries["model_index"]
    if not isinstance(entries, list) or not entries:
        raise ExportError(f"{path} must hold a non-empty JSON list of {{task, dataset, metric, value}} objects")
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ExportError(f"{path} entry {position} is not an object: {entry!r}")
        missing = [key for key in ("task", "dataset", "metric", "value") if key not in entry]
        if missing:
            raise ExportError(f"{path} entry {position} lacks {missing}: {entry!r}")
        value = entry["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ExportError(f"{path} entry {position} has a value that is not a finite number: {value!r}")
    return entries


# ---- checks on the exported folder -----------------------------------------------------------------------------
def _defined_classes(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)}


def check_auto_map(folder: Path, auto_map: dict[str, Any], expected: set[str], where: str) -> None:
    """Every `auto_map` entry must name a file of `folder` that defines the class; every expected key present."""
    missing = sorted(expected - set(auto_map))
    if missing:
        raise ExportError(f"{where} auto_map lacks {missing}")
    for auto_class, reference in auto_map.items():
        # Tokenizer entries are [slow, fast] pairs; no slow tokenizer exists, so the slow slot is null.
        references = [r for r in reference if r is not None] if isinstance(reference, list) else [reference]
        if not references:
            raise ExportError(f"{where} auto_map[{auto_class!r}] names no class: {reference!r}")
        for ref in references:
            module, _, class_name = ref.rpartition(".")
            source = folder / f"{module}.py"
            if not source.is_file():
                raise ExportError(f"{where} auto_map[{auto_class!r}] = {ref!r}, but {source.name} is not in {folder}")
            if class_name not in _defined_classes(source):
                raise ExportError(
                    f"{where} auto_map[{auto_class!r}] = {ref!r}, but {source.name} defines no such class"
                )


def check_self_contained(folder: Path) -> None:
    """Remote-code files may import only each other (relative imports) and third-party packages, never this one."""
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                if not node.module or not (folder / f"{node.module.replace('.', '/')}.py").is_file():
                    raise ExportError(f"{path.name} imports .{node.module or ''}, which is not in {folder}")
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "modeling_plm" for name in names):
                raise ExportError(f"{path.name} imports the modeling_plm package, so it is not self-contained")


# ---- export ----------------------------------------------------------------------------------------------------
def _require_token(push: bool, repo_id: str | None, token: str | None) -> str | None:
    if not push:
        return token
    if not repo_id:
        raise ExportError("push=True needs a repo_id (owner/name)")
    token = token or get_token()
    if not token:
        raise ExportError(
            "no Hugging Face token: pushing needs one. Run `hf auth login` or set HF_TOKEN, then retry "
            "(nothing was written)."
        )
    return token


EvalResultsPaths = str | os.PathLike[str] | list[str | os.PathLike[str]] | None


def read_provenance(checkpoint: Path, eval_results: EvalResultsPaths) -> dict[str, Any]:
    """The training record, conversion record and evaluation entries the card is built from (None when absent);
    `eval_results` is one file or a list of files (e.g. one per `plm eval` benchmark), read in order."""
    provenance = {"record": None, "conversion": None, "eval_entries": None}
    if (checkpoint / "training_record.json").is_file():
        provenance["record"] = read_json_file(checkpoint / "training_record.json", "training record")
    if (checkpoint / "conversion.json").is_file():
        provenance["conversion"] = read_json_file(checkpoint / "conversion.json", "conversion record")
    if eval_results is not None:
        paths = eval_results if isinstance(eval_results, list) else [eval_results]
        provenance["eval_entries"] = [entry for path in paths for entry in read_eval_results(Path(path))]
    return provenance


def load_checkpoint(checkpoint: Path, record: dict[str, Any] | None) -> tuple[Any, Any]:
    """The model (with the head its config names) and tokenizer; refuses a partial load or another run's record."""
    config = read_json_file(checkpoint / "config.json", "config")
    architecture = (config.get("architectures") or ["PLMForMaskedLM"])[0]
    loader = LOADERS.get(architecture, AutoModelForMaskedLM)
    model, loading_info = loader.from_pretrained(checkpoint, output_loading_info=True)
    problems = {key: value for key, value in loading_info.items() if value and key != "error_msgs"}
    if problems or loading_info.get("error_msgs"):
        raise ExportError(f"{checkpoint} does not load cleanly as {architecture}: {loading_info}")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if record and record.get("non_embedding_parameters") != model.config.num_parameters():
        raise ExportError(
            f"{checkpoint / 'training_record.json'} says {record.get('non_embedding_parameters')} non-embedding "
            f"parameters but the model has {model.config.num_parameters()}: the record is not this checkpoint's"
        )
    return model, tokenizer


def write_hub_folder(
    output_dir: Path,
    *,
    checkpoint: Path,
    model: Any,
    tokenizer: Any,
    eval_entries: list[dict[str, Any]] | None,
    max_shard_size: int | str,
) -> None:
    """Weights, config and remote code (save_pretrained copies the code files), tokenizer, generation config and
    the provenance files."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(output_dir)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_length=model.config.max_position_embeddings,
        **SAMPLING_DEFAULTS,
    ).save_pretrained(output_dir)
    for name in PROVENANCE_FILES:
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, output_dir / name)
    if eval_entries is not None:
        (output_dir / "eval_results.json").write_text(json.dumps(eval_entries, indent=2) + "\n")


def check_exported_folder(output_dir: Path) -> None:
    """The written folder loads without this package: remote code present, auto_maps resolvable, weights whole."""
    for name in REMOTE_CODE_FILES:
        if not (output_dir / name).is_file():
            raise ExportError(f"remote-code file {name} was not written to {output_dir}")
    check_auto_map(
        output_dir, read_json_file(output_dir / "config.json", "config")["auto_map"], set(AUTO_MAP), "config.json"
    )
    tokenizer_auto_map = read_json_file(output_dir / "tokenizer_config.json", "tokenizer config").get("auto_map", {})
    check_auto_map(output_dir, tokenizer_auto_map, set(TOKENIZER_AUTO_MAP), "tokenizer_config.json")
    check_self_contained(output_dir)
    check_checkpoint_files(output_dir)


def push_folder(output_dir: Path, *, repo_id: str, private: bool, token: str | None) -> None:
    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
    api.upload_folder(
        folder_path=str(output_dir),
        repo_id=repo_id,
        repo_type="model",
        commit_message=f"Upload {output_dir.name} with modeling_plm {__version__} (plm export)",
    )


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    eval_results: EvalResultsPaths = None,
    max_shard_size: int | str = "2GB",
    push: bool = False,
    private: bool = False,
    token: str | None = None,
) -> Path:
    """Write the hub folder of `checkpoint` into `output_dir` (which must be new or empty); push it to `repo_id`
    when `push`. Returns `output_dir`."""
    token = _require_token(push, repo_id, token)  # before any work: a missing token must not cost an export
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    check_checkpoint_files(checkpoint)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ExportError(f"output folder {output_dir} exists and is not empty; export into a new folder")
    if not TEMPLATE_PATH.is_file():
        raise ExportError(
            f"model-card template {TEMPLATE_PATH} not found: the modeling_plm install is incomplete "
            "(reinstall it; model_cards/template.md ships as modeling_plm.model_cards)"
        )
    provenance = read_provenance(checkpoint, eval_results)
    model, tokenizer = load_checkpoint(checkpoint, provenance["record"])
    write_hub_folder(
        output_dir,
        checkpoint=checkpoint,
        model=model,
        tokenizer=tokenizer,
        eval_entries=provenance["eval_entries"],
        max_shard_size=max_shard_size,
    )
    check_exported_folder(output_dir)
    card = render_model_card(output_dir, model=model, repo_id=repo_id, license=license, datasets=datasets, **provenance)
    card.save(output_dir / "README.md")
    if push:
        push_folder(output_dir, repo_id=repo_id, private=private, token=token)
    return output_dir


__all__ = [
    "ExportError",
    "check_auto_map",
    "check_checkpoint_files",
    "export_checkpoint",
    "read_eval_results",
    "render_model_card",
]
