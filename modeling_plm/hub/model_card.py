"""The model card of an exported checkpoint: `model_cards/template.md` filled from the checkpoint alone.

Every number in the card is read from the config, the loaded model or the checkpoint's provenance files
(`training_record.json`, `conversion.json`, the evaluation results given to `plm export`): the architecture table,
the training phases, the validation tables, the compute context (C, N, D, D/N) placed on the published scaling
laws, and the hub metadata (pipeline tag, tags, datasets, base model, model-index).
"""

import datetime
import importlib.resources
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .. import __version__
from ..scaling.plan import PUBLISHED_LAWS, place_on_law

# model_cards/ ships inside the wheel as the package modeling_plm.model_cards (a pyproject package-dir mapping).
TEMPLATE_PATH = Path(str(importlib.resources.files("modeling_plm.model_cards").joinpath("template.md")))
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


def eval_results_of(eval_entries: list[dict[str, Any]] | None, record: dict[str, Any] | None) -> list[EvalResult]:
    """The card's model-index: the given evaluation entries, then the run's own final validation numbers."""
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
                # huggingface_hub takes a source name only with its URL; a bare name stays in eval_results.json.
                source_name=entry.get("source") if entry.get("source_url") else None,
                source_url=entry.get("source_url"),
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
    return results


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
    results = eval_results_of(eval_entries, record)
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


def phase_rows(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per training phase: objective, what it trains, steps, tokens and compute."""
    record_config = (record or {}).get("config", {})
    return [
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


def validation_rows(record: dict[str, Any] | None) -> list[dict[str, str]]:
    """Final validation loss and perplexity per objective, beside the perplexity before training."""
    validation = [
        {"objective": name, "loss": f"{values['loss']:.4f}", "perplexity": f"{values['perplexity']:.3f}"}
        for name, values in sorted(((record or {}).get("final_eval") or {}).items())
    ]
    initial = {
        name: f"{values['perplexity']:.3f}" for name, values in ((record or {}).get("initial_eval") or {}).items()
    }
    for row in validation:
        row["initial_perplexity"] = initial.get(row["objective"], "n/a")
    return validation


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
        phases=phase_rows(record),
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
        validation=validation_rows(record),
        compute=compute_context(config, record),
        conversion=conversion,
        base_model=card_data.base_model,
        eval_entries=eval_entries or [],
        context=config.max_position_embeddings,
        version=(record or {}).get("modeling_plm_version", __version__),
        year=datetime.date.today().year,
    )
