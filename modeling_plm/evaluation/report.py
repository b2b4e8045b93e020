"""One result format for every `plm eval` benchmark: a JSON record with everything, a Markdown file with the tables
in order, and the model-index entries that `plm export --eval-results` puts on the model card."""

import datetime
import json
import math
import os
from pathlib import Path
from typing import Any

from .. import __version__

RESULTS_JSON, RESULTS_MARKDOWN, MODEL_INDEX_JSON = "{}_results.json", "{}_results.md", "{}_model_index.json"


def model_index_entry(
    *,
    task: str,
    dataset: str,
    metric: str,
    value: float,
    task_name: str | None = None,
    dataset_name: str | None = None,
    dataset_split: str | None = None,
    metric_name: str | None = None,
    source: str | None = None,
    source_url: str | None = None,
) -> dict[str, Any]:
    """One model-index result in the form `plm export --eval-results` reads ({task, dataset, metric, value, ...})."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"model-index value of {metric} on {dataset} is not a finite number: {value!r}")
    entry = {
        "task": task,
        "task_name": task_name,
        "dataset": dataset,
        "dataset_name": dataset_name,
        "dataset_split": dataset_split,
        "metric": metric,
        "metric_name": metric_name,
        "value": float(value),
        "source": source,
        "source_url": source_url,
    }
    return {key: item for key, item in entry.items() if item is not None}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.3f}"
    return "" if value is None else str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub Markdown table of `rows` (dicts) over `columns`; floats with 3 decimals, missing cells empty."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """NaN/inf become null (JSON has no NaN); paths become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_report(
    output_dir: str | os.PathLike[str],
    *,
    benchmark: str,
    model: str,
    tables: dict[str, tuple[list[dict[str, Any]], list[str]]],
    model_index: list[dict[str, Any]],
    details: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Writes <benchmark>_results.json, <benchmark>_results.md and <benchmark>_model_index.json in `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {
        "benchmark": benchmark,
        "model": model,
        "created": created,
        "modeling_plm_version": __version__,
        "tables": {title: {"columns": columns, "rows": rows} for title, (rows, columns) in tables.items()},
        "model_index": model_index,
        "details": details or {},
    }
    sections = [f"# {benchmark}: {model}", f"modeling_plm {__version__}, {created}"]
    sections += [f"## {title}\n\n{markdown_table(rows, columns)}" for title, (rows, columns) in tables.items()]
    paths = {
        "json": output_dir / RESULTS_JSON.format(benchmark),
        "markdown": output_dir / RESULTS_MARKDOWN.format(benchmark),
        "model_index": output_dir / MODEL_INDEX_JSON.format(benchmark),
    }
    _write_atomically(paths["json"], json.dumps(_json_safe(record), indent=2) + "\n")
    _write_atomically(paths["markdown"], "\n\n".join(sections) + "\n")
    _write_atomically(paths["model_index"], json.dumps(model_index, indent=2) + "\n")
    return paths


__all__ = ["markdown_table", "model_index_entry", "write_report"]
