"""Export a checkpoint as a Hugging Face hub repository: `plm export CHECKPOINT OUT [--push REPO_ID]`.

The exported folder holds safetensors weights (sharded with an index above `max_shard_size`), `config.json` with an
`auto_map` entry for AutoConfig and every AutoModel* class, the self-contained remote-code files, the tokenizer files
(with their own `auto_map`), `generation_config.json`, the provenance files of the checkpoint
(`training_record.json`, `conversion.json`, `eval_results.json` when present or given) and `README.md`, the model
card rendered from `model_cards/template.md`. Every number in the card is read from the checkpoint (config, the
loaded model) or from those provenance files.

The protein-* pipelines import package internals, so they are not shipped as hub custom pipelines (a hub
`custom_pipelines` entry needs a self-contained pipeline file); the card says that `pip install modeling_plm`
provides them.
"""

import argparse
import ast
import datetime
import importlib.resources
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from safetensors import SafetensorError, safe_open
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
from ..scaling.plan import PUBLISHED_LAWS, place_on_law

# model_cards/ ships inside the wheel as the package modeling_plm.model_cards (a pyproject package-dir mapping).
TEMPLATE_PATH = Path(str(importlib.resources.files("modeling_plm.model_cards").joinpath("template.md")))
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
REMOTE_CODE_FILES = ("configuration_plm.py", "modeling_plm.py", "tokenization_plm.py")
PROVENANCE_FILES = ("training_record.json", "conversion.json")
TOKENIZER_AUTO_MAP = {"AutoTokenizer": "tokenization_plm.PLMTokenizerFast"}
# Class named in config.json `architectures` -> Auto class that rebuilds it with the same head.
LOADERS = {
    "PLMForMaskedLM": AutoModelForMaskedLM,
    "PLMForCausalLM": AutoModelForCausalLM,
    "PLMForSequenceClassification": AutoModelForSequenceClassification,
    "PLMForTokenClassification": AutoModelForTokenClassification,
}
PIPELINE_TAG_OF_OBJECTIVE = {"mlm": "fill-mask", "glm": "fill-mask", "clm-mlm": "fill-mask", "clm": "text-generation"}
PIPELINE_TAG_OF_ARCHITECTURE = {
    "PLMForMaskedLM": "fill-mask",
    "PLMForCausalLM": "text-generation",
    "PLMForSequenceClassification": "text-classification",
    "PLMForTokenClassification": "token-classification",
}
# huggingface_hub groups results by task type and dataset, so task names stay generic; metric names carry the
# objective.
EVAL_TASK_OF_OBJECTIVE = {
    "mlm": ("fill-mask", "Fill-Mask"),
    "clm": ("text-generation", "Text Generation"),
    "glm": ("fill-mask", "Fill-Mask"),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Sampling defaults written to generation_config.json (ProGen2-style nucleus sampling); users override per call.
SAMPLING_DEFAULTS = {"do_sample": True, "temperature": 1.0, "top_p": 0.95}


class ExportError(ValueError):
    """A checkpoint that cannot be exported as it is, or an export that would be incomplete."""


# ---- checks on the input checkpoint ----------------------------------------------------------------------------
def _check_safetensors_file(path: Path, expected_keys: set[str] | None = None) -> set[str]:
    """Open a safetensors file (the header is validated against the file size) and return its tensor names."""
    if not path.is_file():
        raise ExportError(f"missing weights file {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
    except (SafetensorError, OSError) as error:
        raise ExportError(f"corrupt safetensors file {path}: {error}") from error
    if expected_keys is not None and not expected_keys <= keys:
        missing = sorted(expected_keys - keys)
        raise ExportError(f"{path} lacks {len(missing)} tensors that {SAFE_INDEX} places there, e.g. {missing[:3]}")
    return keys


def check_checkpoint_files(folder: Path) -> list[Path]:
    """Fail with a message naming the file when a checkpoint folder cannot be exported; return its weight files."""
    if not folder.is_dir():
        raise ExportError(f"checkpoint folder {folder} does not exist (or is not a folder)")
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder / 'config.json'} is missing: {folder} is not a saved model")
    index_path = folder / SAFE_INDEX
    if index_path.exists():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ExportError(f"corrupt shard index {index_path}: {error}") from error
        shards: dict[str, set[str]] = {}
        for tensor, shard in weight_map.items():
            shards.setdefault(shard, set()).add(tensor)
        for shard, tensors in sorted(shards.items()):
            if not (folder / shard).is_file():
                raise ExportError(f"shard {shard} named in {index_path} is missing from {folder}")
            _check_safetensors_file(folder / shard, tensors)
        weights = [folder / shard for shard in sorted(shards)]
    elif (folder / SAFE_WEIGHTS).exists():
        _check_safetensors_file(folder / SAFE_WEIGHTS)
        weights = [folder / SAFE_WEIGHTS]
    else:
        pickled = [name for name in PICKLED_WEIGHTS if (folder / name).exists()]
        if pickled:
            raise ExportError(
                f"{folder} has only pickled weights ({', '.join(pickled)}), which can run arbitrary code when "
                f"loaded and are refused. Convert them to {SAFE_WEIGHTS} in a trusted environment first "
                "(from_pretrained(..., use_safetensors=False) then save_pretrained)."
            )
        raise ExportError(f"{folder} has no weights: {SAFE_WEIGHTS} (or {SAFE_INDEX} with its shards) is missing")
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
    "dataset_split", "metric_name", "source")."""
    if not path.is_file():
        raise ExportError(f"evaluation results file {path} does not exist")
    entries = read_json_file(path, "evaluation results file")
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


# ---- the model card --------------------------------------------------------------------------------------------
def _int(value: float) -> str:
    return f"{round(value):,}"


def _flops(value: float) -> str:
    return f"{round(value):,} ({value:.3e})"


def _hub_id_or_none(value: str | None) -> str | None:
    if value and HUB_ID.match(value) and not Path(value).exists():
        return value
    return None


def _source_names(record: dict[str, Any]) -> list[str]:
    return [source["name"] for source in record.get("data", {}).get("train", [])]


def _validation_description(record: dict[str, Any]) -> str:
    valid = record.get("data", {}).get("valid")
    if isinstance(valid, list) and valid:
        return ", ".join(source["name"] for source in valid)
    fraction = record.get("data", {}).get("valid_fraction")
    names = ", ".join(_source_names(record))
    share = f"{fraction:.2%} " if isinstance(fraction, (int, float)) else ""
    return f"held-out split ({share}of the training records) of {names}"


def _objective_details(objective: str, config: dict[str, Any]) -> str:
    """A sentence about one objective; its numeric knobs come from the record's config."""
    if objective == "mlm":
        return (
            f"masked language modelling: bidirectional attention, {config.get('mask_ratio')} of residues selected "
            "for prediction (ESM-2 style)"
        )
    if objective == "clm":
        return "causal language modelling: next-residue prediction with causal attention (ProGen2 style)"
    if objective == "glm":
        return (
            "GLM (xTrimoPGLM style): per sequence, masked-LM with probability "
            f"{config.get('glm_mlm_probability')}, short-span blank infilling (`<smask>`) with probability "
            f"{config.get('glm_span_probability')}, suffix generation (`<gmask>`) with probability "
            f"{config.get('glm_gmask_probability')}"
        )
    return objective


def architecture_rows(config: Any) -> list[tuple[str, str]]:
    return [
        ("Architecture", ", ".join(config.architectures or []) or "PLMModel"),
        ("Layers", str(config.num_hidden_layers)),
        ("Hidden size", str(config.hidden_size)),
        ("Attention heads", str(config.num_attention_heads)),
        ("Key/value heads", str(config.num_key_value_heads)),
        ("Head dimension", str(config.head_dim)),
        ("Intermediate size", str(config.intermediate_size)),
        ("MLP", f"{config.mlp_type} ({config.hidden_act})"),
        ("Normalisation", f"{config.norm_type}, {config.norm_scheme}"),
        ("Positions", config.position_embedding_type),
        ("Context (tokens, incl. `<bos>`/`<eos>`)", str(config.max_position_embeddings)),
        ("Vocabulary", str(config.vocab_size)),
        ("Tied input/output embeddings", str(bool(config.tie_word_embeddings))),
    ]


def build_card_data(
    *,
    model_name: str,
    architecture: str,
    record: dict[str, Any] | None,
    conversion: dict[str, Any] | None,
    license: str,
    datasets: list[str] | None,
    eval_entries: list[dict[str, Any]] | None,
) -> ModelCardData:
    objective = record["objective"] if record else None
    pipeline_tag = PIPELINE_TAG_OF_OBJECTIVE.get(objective or "") or PIPELINE_TAG_OF_ARCHITECTURE.get(
        architecture, "fill-mask"
    )
    tags = ["protein", "biology", "protein-language-model", "modeling_plm"]
    if objective:
        tags.append(objective)
    if conversion:
        tags.append(str(conversion.get("converted_from")))
    base_model = None
    if conversion:
        base_model = _hub_id_or_none(conversion.get("base_model"))
    elif record:
        base_model = _hub_id_or_none(record.get("config", {}).get("init_from"))
    results: list[EvalResult] = []
    for entry in eval_entries or []:
        results.append(
            EvalResult(
                task_type=entry["task"],
                task_name=entry.get("task_name"),
                dataset_type=entry["dataset"],
                dataset_name=entry.get("dataset_name", entry["dataset"]),
                dataset_split=entry.get("dataset_split"),
                metric_type=entry["metric"],
                metric_name=entry.get("metric_name"),
                metric_value=entry["value"],
                source_name=entry.get("source"),
            )
        )
    if record and record.get("final_eval"):
        # The run's own validation numbers: a held-out split of the training source, named as such.
        valid = _validation_description(record)
        for eval_objective, values in sorted(record["final_eval"].items()):
            task_type, task_name = EVAL_TASK_OF_OBJECTIVE[eval_objective]
            for metric in ("loss", "perplexity"):
                results.append(
                    EvalResult(
                        task_type=task_type,
                        task_name=task_name,
                        dataset_type="validation-split",
                        dataset_name=valid,
                        dataset_split="validation",
                        metric_type=metric,
                        metric_name=f"{eval_objective} {metric}",
                        metric_value=values[metric],
                    )
                )
    return ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        license=license,
        datasets=datasets if datasets else (_source_names(record) if record else None) or None,
        base_model=base_model,
        eval_results=results or None,
    )


def compute_context(config: Any, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """C, N, D, D/N from the record; the published exponents of the objective(s) it used."""
    if not record:
        return None
    n, d = record["non_embedding_parameters"], record["tokens"]
    objectives = sorted({phase["objective"] for phase in record["phases"]})
    # The published laws of `plm scaling` (modeling_plm.scaling.plan.PUBLISHED_LAWS), evaluated at this model's C.
    laws = []
    for name, law in PUBLISHED_LAWS.items():
        if name in objectives or "glm" in objectives:
            placed = place_on_law(n, d, name)
            laws.append(
                {
                    "objective": name.upper(),
                    "n_exponent": f"{law.n_opt.exponent:.3f}",
                    "d_exponent": f"{law.d_opt.exponent:.3f}",
                    "n_coefficient": f"{law.n_opt.coefficient:.3g}",
                    "d_coefficient": f"{law.d_opt.coefficient:.3g}",
                    "n_opt": _int(placed["n_opt"]),
                    "d_opt": _int(placed["d_opt"]),
                    "n_ratio": f"{placed['n_ratio']:.3g}",
                    "d_ratio": f"{placed['d_ratio']:.3g}",
                }
            )
    return {
        "flops_6nd": _flops(record["flops_6nd"]),
        "flops": _flops(record["flops"]),
        "n": _int(n),
        "d": _int(d),
        "tokens_per_parameter": f"{d / n:.4g}",
        "laws": laws,
        "glm": "glm" in objectives,
    }


def render_model_card(
    folder: Path,
    *,
    model: Any,
    record: dict[str, Any] | None,
    conversion: dict[str, Any] | None,
    eval_entries: list[dict[str, Any]] | None,
    repo_id: str | None,
    license: str,
    datasets: list[str] | None,
) -> ModelCard:
    if not TEMPLATE_PATH.is_file():
        raise ExportError(
            f"model-card template {TEMPLATE_PATH} not found: the modeling_plm install is incomplete "
            "(reinstall it; model_cards/template.md ships as modeling_plm.model_cards)"
        )
    config = model.config
    architecture = (config.architectures or ["PLMForMaskedLM"])[0]
    model_name = repo_id.split("/")[-1] if repo_id else folder.name
    card_data = build_card_data(
        model_name=model_name,
        architecture=architecture,
        record=record,
        conversion=conversion,
        license=license,
        datasets=datasets,
        eval_entries=eval_entries,
    )
    record_config = (record or {}).get("config", {})
    phases = [
        {
            "index": index + 1,
            "objective": phase["objective"],
            "details": _objective_details(phase["objective"], record_config),
            "steps": _int(phase["steps"]),
            "tokens": _int(phase["tokens"]),
            "flops_6nd": _flops(phase["flops_6nd"]),
            "flops": _flops(phase["flops"]),
        }
        for index, phase in enumerate((record or {}).get("phases", []))
    ]
    validation = [
        {"objective": name, "loss": f"{values['loss']:.4f}", "perplexity": f"{values['perplexity']:.3f}"}
        for name, values in sorted(((record or {}).get("final_eval") or {}).items())
    ]
    initial = {
        name: f"{values['perplexity']:.3f}" for name, values in ((record or {}).get("initial_eval") or {}).items()
    }
    for row in validation:
        row["initial_perplexity"] = initial.get(row["objective"], "n/a")
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        usage_id=repo_id or str(folder),
        architecture_rows=architecture_rows(config),
        parameters=_int(model.num_parameters()),
        backbone_parameters=_int(config.num_parameters(include_embeddings=True)),
        non_embedding_parameters=_int(config.num_parameters(include_embeddings=False)),
        pipeline_tag=card_data.pipeline_tag,
        record=record,
        objective=(record or {}).get("objective"),
        phases=phases,
        train_sources=(record or {}).get("data", {}).get("train", []),
        validation_description=_validation_description(record) if record else None,
        record_stats=(record or {}).get("data", {}).get("record_stats_last_phase"),
        tokens=_int(record["tokens"]) if record else None,
        steps=_int(record["steps"]) if record else None,
        crop_length=record_config.get("crop_length"),
        hardware=f"{record['world_size']} × {record['device']}, mixed precision {record['mixed_precision']}"
        if record
        else None,
        wall_time=f"{record['wall_time_s']:,.0f} s ({record['wall_time_s'] / 3600:.2f} h)" if record else None,
        validation=validation,
        compute=compute_context(config, record),
        conversion=conversion,
        base_model=card_data.base_model,
        eval_entries=eval_entries or [],
        context=config.max_position_embeddings,
        version=(record or {}).get("modeling_plm_version", __version__),
        year=datetime.date.today().year,
    )


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


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    eval_results: str | os.PathLike[str] | None = None,
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
    record = conversion = None
    if (checkpoint / "training_record.json").is_file():
        record = read_json_file(checkpoint / "training_record.json", "training record")
    if (checkpoint / "conversion.json").is_file():
        conversion = read_json_file(checkpoint / "conversion.json", "conversion record")
    eval_entries = read_eval_results(Path(eval_results)) if eval_results is not None else None

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

    card = render_model_card(
        output_dir,
        model=model,
        record=record,
        conversion=conversion,
        eval_entries=eval_entries,
        repo_id=repo_id,
        license=license,
        datasets=datasets,
    )
    card.save(output_dir / "README.md")

    if push:
        api = HfApi(token=token)
        api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
        api.upload_folder(
            folder_path=str(output_dir),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"Upload {output_dir.name} with modeling_plm {__version__} (plm export)",
        )
    return output_dir


# ---- command line ----------------------------------------------------------------------------------------------
EXPORT_HELP = "write a hub folder (safetensors, config + remote code, tokenizer, model card) and optionally push it"
EXPORT_EPILOG = (
    "examples:\n"
    "  plm export runs/demo/final exports/plm-demo\n"
    "  plm export runs/demo/final exports/plm-demo --eval-results results.json --dataset uniprot/swissprot\n"
    "  plm export runs/demo/final exports/plm-demo --push my-name/plm-demo --private   # needs `hf auth login`\n"
    "  plm export ./esm2-8m-plm exports/esm2-8m --max-shard-size 500MB\n\n"
    "--eval-results: a JSON list of {task, dataset, metric, value} objects (optional: task_name, dataset_name,\n"
    "dataset_split, metric_name, source), written to the card's model-index."
)


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXPORT_EPILOG
    parser.add_argument("checkpoint", help="a saved model folder (safetensors, config.json, tokenizer files)")
    parser.add_argument("output_dir", help="the hub folder to write (must be new or empty)")
    parser.add_argument("--push", metavar="REPO_ID", default=None, help="push the folder to this hub repository")
    parser.add_argument("--repo-id", default=None, help="repository id for the card's code without pushing")
    parser.add_argument("--private", action="store_true", help="create the pushed repository as private")
    parser.add_argument(
        "--license", default="apache-2.0", help="license identifier for the card (default: %(default)s)"
    )
    parser.add_argument(
        "--dataset",
        action="append",
        default=None,
        help="a dataset id for the card metadata (repeat for several; default: the training record's source names)",
    )
    parser.add_argument("--eval-results", default=None, help="JSON file of evaluation results for the model-index")
    parser.add_argument("--max-shard-size", default="2GB", help="shard the safetensors above this size (default: 2GB)")
    return parser


def run_export(args: argparse.Namespace) -> int:
    """`plm export`: 0 on success, 2 with the message on stderr when the checkpoint or the request is refused."""
    try:
        folder = export_checkpoint(
            args.checkpoint,
            args.output_dir,
            repo_id=args.push or args.repo_id,
            license=args.license,
            datasets=args.dataset,
            eval_results=args.eval_results,
            max_shard_size=args.max_shard_size,
            push=args.push is not None,
            private=args.private,
        )
    except ExportError as error:
        print(f"plm export: error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {folder}" + (f" and pushed it to https://huggingface.co/{args.push}" if args.push else ""))
    return 0


__all__ = [
    "ExportError",
    "add_export_arguments",
    "check_auto_map",
    "check_checkpoint_files",
    "export_checkpoint",
    "render_model_card",
    "run_export",
]
