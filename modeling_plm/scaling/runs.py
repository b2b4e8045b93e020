"""Run tables for scaling-law fits: one row per (run, point on its loss curve).

A `RunPoint` is one measurement: a run of N non-embedding parameters, trained toward a compute budget C_target (or
None), seen after D tokens and C = 6·N·D FLOPs, with a validation loss. `final=True` marks the last point of a run
(the point IsoFLOP fits use); the other points trace the loss curve (the envelope fit uses them).

Readers:

- `read_run_dir(path)`: a `plm pretrain` output folder: `metrics.jsonl` eval rows become curve points and
  `final/training_record.json` the final one.
- `read_csv_table(path)` / `read_json_table(path)`: tables you write yourself (columns below).
- `read_released_logs(root)`: the TensorBoard CSV exports released with Cheng et al. 2024 (`gpt_valid`, `mlm_valid`).
- `read_runs(sources)`: any mix of the above, by what each path is.

Table columns (CSV header or JSON object keys), one row per point:

| column | required | meaning |
|---|---|---|
| run | yes | run name; rows of one run share it |
| objective | yes | `mlm`, `clm`, `glm`, `clm-mlm`, ... |
| parameters | yes | N, non-embedding parameters |
| loss | yes | validation loss (nats per predicted token) |
| tokens | one of tokens/flops | D, training tokens seen |
| flops | one of tokens/flops | C; when missing it is 6·N·D, and D = C/(6N) when tokens is missing |
| budget | no | the run's target compute C_target (empty: none) |
| final | no | true/false; default: the row with the most compute of each run |
| flops_exact | no | exact FLOPs including attention (`modeling_plm.training.flops.training_flops`) |
"""

import csv
import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REQUIRED_COLUMNS = ("run", "objective", "parameters", "loss")
TABLE_COLUMNS = ("run", "objective", "parameters", "budget", "tokens", "flops", "loss", "final", "flops_exact")

# The released exports name the compute axis in the file name; "Step" holds that axis.
RELEASED_AXES = {
    "gigaflos (without embeddings)": "gigaflops",
    "tokens": "tokens",
}
# One pass over the authors' UniMeta200B data is about 200B tokens ("all1ep ... tk200b" in the run names).
RELEASED_TOKENS_PER_EPOCH = 200e9


@dataclass(frozen=True)
class RunPoint:
    """One point of one run: N parameters, D tokens, C = 6·N·D FLOPs, loss; `final` marks the run's last point."""

    run: str
    objective: str
    parameters: float
    budget: float | None
    tokens: float
    flops: float
    loss: float
    final: bool
    flops_exact: float | None = None
    source: str = ""


@dataclass
class RunTable:
    """Points of many runs, with the files a reader skipped or flagged (never dropped silently)."""

    points: list[RunPoint] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it was not read)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, what was read but is worth knowing)

    def __len__(self) -> int:
        return len(self.points)

    def extend(self, other: "RunTable") -> "RunTable":
        self.points.extend(other.points)
        self.skipped.extend(other.skipped)
        self.notes.extend(other.notes)
        return self

    def select(self, objective: str | None = None, final: bool | None = None) -> "RunTable":
        """The points of one objective and/or only final (or only curve) points; skips and notes are kept."""
        points = [
            p
            for p in self.points
            if (objective is None or p.objective == objective) and (final is None or p.final == final)
        ]
        return RunTable(points, list(self.skipped), list(self.notes))

    def finals(self) -> list[RunPoint]:
        return [p for p in self.points if p.final]

    def runs(self) -> dict[str, list[RunPoint]]:
        """Points of each run in compute order."""
        grouped: dict[str, list[RunPoint]] = defaultdict(list)
        for point in self.points:
            grouped[point.run].append(point)
        return {run: sorted(points, key=lambda p: p.flops) for run, points in grouped.items()}

    def objectives(self) -> list[str]:
        return sorted({p.objective for p in self.points})

    def sizes(self, objective: str | None = None) -> list[float]:
        return sorted({p.parameters for p in self.points if objective is None or p.objective == objective})

    def budgets(self, objective: str | None = None) -> list[float]:
        return sorted(
            {p.budget for p in self.points if p.budget is not None and (objective is None or p.objective == objective)}
        )

    def summary(self) -> str:
        """Runs, sizes and budgets per objective, then every skipped and flagged file with its reason."""
        lines = []
        for objective in self.objectives():
            table = self.select(objective)
            runs = table.runs()
            finals = table.finals()
            budgeted = sum(1 for p in finals if p.budget is not None)
            lines.append(
                f"{objective}: {len(runs)} runs, {len(table.points)} points, {len(table.sizes())} sizes "
                f"({format_count(min(table.sizes()))}–{format_count(max(table.sizes()))}), "
                f"{budgeted} runs with a budget over {len(table.budgets())} budgets "
                f"[{', '.join(f'{b:.2g}' for b in table.budgets())}]"
            )
        if not self.points:
            lines.append("no points")
        for path, reason in self.skipped:
            lines.append(f"skipped {path}: {reason}")
        for path, note in self.notes:
            lines.append(f"note {path}: {note}")
        return "\n".join(lines)


def format_count(value: float) -> str:
    """1.2e9 -> '1.2B', 85e6 -> '85M'."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def parse_count(text: str) -> float:
    """'85M' -> 85e6, '1.2B' / '1.2b' -> 1.2e9, '10.1M' -> 10.1e6; raises ValueError otherwise."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KkMmBbGgTt])", text.strip())
    if not match:
        raise ValueError(f"not a size like 85M or 1.2B: {text!r}")
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}[match.group(2).lower()]
    return float(match.group(1)) * scale


# ---------------------------------------------------------------------------------------------------------------
# Trainer output folders


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a trainer's `metrics.jsonl`, in order; none when the file does not exist yet."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_run_dir(
    path: str | Path,
    budget: float | None = None,
    run: str | None = None,
    objective: str | None = None,
) -> RunTable:
    """Points of one `plm pretrain` output folder.

    Eval rows of `metrics.jsonl` (those with `valid_loss_<objective>`) give the curve; `final/training_record.json`
    (when present) gives the final point and marks the run complete. C = 6·N·D with N from the train rows or the
    record; the exact count (`flops` in the train row of the same step) goes to `flops_exact`.

    `budget`, `run` and `objective` default to the keys of `<path>/scaling_run.json` when that file exists (the
    sweep writes it), else to None, the folder name and the run's training objective. For a `clm-mlm` transfer run
    the loss is the MLM loss and tokens/FLOPs count both phases.
    """
    folder = Path(path)
    metrics_file = folder / "metrics.jsonl"
    if not metrics_file.exists():
        raise FileNotFoundError(f"{folder} has no metrics.jsonl: not a `plm pretrain` output folder")
    meta_file = folder / "scaling_run.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    budget = budget if budget is not None else meta.get("budget")
    run = run or meta.get("run") or folder.name
    record_file = folder / "final" / "training_record.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else None
    rows = read_metrics(metrics_file)
    run_objective = objective or meta.get("objective") or (record or {}).get("objective") or _row_objective(rows)
    loss_key = "valid_loss_" + ("mlm" if run_objective == "clm-mlm" else run_objective)
    table = RunTable()

    # A transfer run's phases (a change of `objective` in the rows) restart step and token counts: later phases add
    # the earlier ones' tokens and FLOPs. After a resume the trainer logs some steps again; the last row wins.
    n_params: float | None = (record or {}).get("non_embedding_parameters")
    phases: list[dict[int, dict[str, Any]]] = []
    last_phase = None
    for row in rows:
        if not phases or row.get("objective") != last_phase:
            phases.append({})
            last_phase = row.get("objective")
        phases[-1].setdefault(row["step"], {}).update(row)
        if "non_embedding_parameters" in row:
            n_params = n_params or row["non_embedding_parameters"]
    curve: list[tuple[float, float, float | None]] = []  # (tokens, loss, exact flops)
    token_offset, exact_offset = 0.0, 0.0
    for steps in phases:
        for step in sorted(steps):
            row = steps[step]
            if loss_key in row and step > 0:
                exact = exact_offset + float(row["flops"]) if "flops" in row else None
                curve.append((token_offset + float(row["tokens"]), float(row[loss_key]), exact))
        trained = [row for row in steps.values() if "flops" in row]
        if trained:
            last = max(trained, key=lambda row: row["step"])
            token_offset += float(last["tokens"])
            exact_offset += float(last["flops"])
    if n_params is None:
        table.skipped.append((str(folder), "no train row or training record gives the non-embedding parameter count"))
        return table
    if not curve:
        table.skipped.append((str(folder), f"no eval rows with {loss_key} after step 0"))
        return table
    complete = record is not None
    if not complete:
        table.notes.append((str(folder), "no final/training_record.json: run unfinished, all points are curve points"))
    for index, (tokens, loss, exact) in enumerate(curve):
        final = complete and index == len(curve) - 1
        if final:
            tokens = float(record["tokens"])
            exact = float(record["flops"])
            final_eval = record["final_eval"].get(loss_key.removeprefix("valid_loss_"))
            loss = float(final_eval["loss"]) if final_eval else loss
        table.points.append(
            RunPoint(
                run=run,
                objective=run_objective,
                parameters=float(n_params),
                budget=float(budget) if budget is not None else None,
                tokens=tokens,
                flops=6.0 * n_params * tokens,
                loss=loss,
                final=final,
                flops_exact=exact,
                source=str(folder),
            )
        )
    return table


def _row_objective(rows: list[dict[str, Any]]) -> str:
    objectives = [row["objective"] for row in rows if "objective" in row]
    if not objectives:
        raise ValueError("metrics.jsonl rows name no objective")
    if objectives[0] != objectives[-1]:
        return f"{objectives[0]}-{objectives[-1]}"
    return objectives[0]


# ---------------------------------------------------------------------------------------------------------------
# CSV and JSON tables


def read_csv_table(path: str | Path) -> RunTable:
    """A CSV run table (columns in the module docstring). Missing columns or bad values raise ValueError naming
    the file, the row and the column."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        rows = list(reader)
    return _table_from_rows(rows, header, str(path), first_row=2)


def read_json_table(path: str | Path) -> RunTable:
    """A JSON run table: a list of row objects, or {"points": [...]} (what `write_json_table` writes)."""
    path = Path(path)
    data = json.loads(path.read_text())
    rows = data["points"] if isinstance(data, dict) and "points" in data else data
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: expected a list of objects or {{'points': [...]}}")
    header = sorted({key for row in rows for key in row})
    return _table_from_rows(rows, header, str(path), first_row=1)


def _table_from_rows(rows: list[dict[str, Any]], header: Sequence[str], name: str, first_row: int) -> RunTable:
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if "tokens" not in header and "flops" not in header:
        missing.append("tokens or flops")
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}; columns are {', '.join(header) or 'none'}")
    if not rows:
        raise ValueError(f"{name}: no rows")
    table = RunTable()
    parsed: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=first_row):
        where = f"{name} row {number}"
        parameters = _number(row, "parameters", where)
        tokens = _number(row, "tokens", where, required=False)
        flops = _number(row, "flops", where, required=False)
        if tokens is None and flops is None:
            raise ValueError(f"{where}: needs tokens or flops")
        if parameters <= 0:
            raise ValueError(f"{where}: parameters must be positive, got {parameters}")
        tokens = tokens if tokens is not None else flops / (6.0 * parameters)
        flops = flops if flops is not None else 6.0 * parameters * tokens
        final = row.get("final")
        parsed.append(
            {
                "run": str(row["run"]),
                "objective": str(row["objective"]),
                "parameters": parameters,
                "budget": _number(row, "budget", where, required=False),
                "tokens": tokens,
                "flops": flops,
                "loss": _number(row, "loss", where),
                "final": None if final in (None, "") else _boolean(final, where),
                "flops_exact": _number(row, "flops_exact", where, required=False),
                "source": name,
            }
        )
    # Without a final column the row with the most compute of each run is its final point.
    last: dict[str, int] = {}
    for index, row in enumerate(parsed):
        if row["run"] not in last or row["flops"] > parsed[last[row["run"]]]["flops"]:
            last[row["run"]] = index
    for index, row in enumerate(parsed):
        if row["final"] is None:
            row["final"] = last[row["run"]] == index
        table.points.append(RunPoint(**row))
    return table


def _number(row: dict[str, Any], column: str, where: str, required: bool = True) -> float | None:
    value = row.get(column)
    if value is None or value == "":
        if required:
            raise ValueError(f"{where}: empty {column}")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {column} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {column} is not finite: {value!r}")
    return number


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{where}: final must be true or false, got {value!r}")


def write_csv_table(table: RunTable, path: str | Path) -> Path:
    """Write the points as a CSV table that `read_csv_table` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TABLE_COLUMNS))
        writer.writeheader()
        for point in table.points:
            row = {key: value for key, value in asdict(point).items() if key in TABLE_COLUMNS}
            writer.writerow({key: ("" if value is None else value) for key, value in row.items()})
    return path


def write_json_table(table: RunTable, path: str | Path) -> Path:
    """Write {"points": [...], "skipped": [...], "notes": [...]}; `read_json_table` reads the points back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "points": [asdict(point) for point in table.points],
        "skipped": [list(item) for item in table.skipped],
        "notes": [list(item) for item in table.notes],
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------------------
# The released logs of Cheng et al. 2024


@dataclass(frozen=True)
class ReleasedCurve:
    """One released TensorBoard export: its (x, loss) rows and what its path and name say."""

    path: Path
    run: str
    objective: str  # "clm" or "mlm"
    metric: str  # "validation" or "training"
    axis: str  # "gigaflops", "tokens" or "steps"
    x: tuple[float, ...]
    loss: tuple[float, ...]
    size_label: str | None  # the size in the folder name (the non-embedding N) or, failing that, the run name
    budget: float | None
    epochs: float | None
    rebuilt_from_text_log: bool = False  # "Wall time" all 0: written by the authors' extract_loss.py


RUN_BUDGET = re.compile(r"(?:^|_)(\d+(?:\.\d+)?e\d+)(?:flops)?(?:_|$)")
RUN_EPOCHS = re.compile(r"(?:^|_)all(\d+(?:\.\d+)?)ep(?:_|$)")
RUN_SIZE = re.compile(r"^(?:gpt|mlm)_(\d+(?:\.\d+)?[mMbB])(?:_|$)")


def parse_released_name(path: Path) -> dict[str, Any]:
    """Run name, metric and x axis of a released export's file name; size from its folder (else its run name).

    `.../gpt_valid/approach3_flops/85M_flops/run-gpt_85M_1024l_1e19flops_all0.1ep-tag-lm-loss-validation_valid_lm
    loss validation vs gigaflos (without embeddings).csv` -> run `gpt_85M_1024l_1e19flops_all0.1ep`, validation,
    gigaflops, size 85M, budget 1e19, 0.1 epochs.
    """
    stem = path.stem
    if "-tag-" not in stem:
        raise ValueError("no '-tag-' in the file name: not a TensorBoard CSV export")
    run, tag = stem.split("-tag-", 1)
    run = re.sub(r"^(?:dep-)?run-", "", run)
    run = re.sub(r"^tensorboard_", "", run).removesuffix(".sh")
    tag = re.sub(r" \(\d+\)$", "", tag)  # browser download duplicates: "... (1).csv"
    if " vs " not in tag:
        raise ValueError(f"tag {tag!r} names no x axis ('... vs gigaflos', '... vs tokens')")
    what, axis_name = tag.rsplit(" vs ", 1)
    axis = RELEASED_AXES.get(axis_name, "steps" if axis_name in ("steps", "step") else None)
    if axis is None:
        raise ValueError(f"unknown x axis {axis_name!r}")
    if "validation" in what:
        metric = "validation"
    elif "training" in what:
        metric = "training"
    else:
        raise ValueError(f"tag {what!r} is neither a validation nor a training loss")
    if " ppl" in what:
        raise ValueError("a perplexity export, not a loss")
    folder_size = re.fullmatch(r"(\d+(?:\.\d+)?[MB])(?:_flops)?", path.parent.name)
    name_size = RUN_SIZE.match(run)
    budget = RUN_BUDGET.search(run)
    epochs = RUN_EPOCHS.search(run)
    return {
        "run": run,
        "metric": metric,
        "axis": axis,
        "folder_size": folder_size.group(1) if folder_size else None,
        "name_size": name_size.group(1) if name_size else None,
        "budget": float(budget.group(1)) if budget else None,
        "epochs": float(epochs.group(1)) if epochs else None,
    }


def read_tensorboard_csv(path: Path) -> tuple[list[float], list[float], list[float]]:
    """(wall times, steps, values) of a TensorBoard CSV export; raises ValueError naming the line on bad rows."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["Wall time", "Step", "Value"]:
            raise ValueError(f"header {header!r} is not a TensorBoard export's 'Wall time,Step,Value'")
        walls, steps, values = [], [], []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                wall, step, value = (float(cell) for cell in row)
            except ValueError:
                raise ValueError(f"line {line}: not three numbers: {row!r}") from None
            walls.append(wall)
            steps.append(step)
            values.append(value)
    if not steps:
        raise ValueError("no rows")
    return walls, steps, values


def read_released_curves(
    root: str | Path, subsets: Iterable[str] = ("gpt_valid", "mlm_valid")
) -> tuple[list[ReleasedCurve], list[tuple[str, str]]]:
    """Every CSV export under `<root>/[data/training_logs/]<subset>` as a `ReleasedCurve`, and the (path, reason)
    list of skipped files. Byte-identical copies are read once: the copy whose folder size fits the run's epochs
    is kept (else the first by path)."""
    base = released_logs_dir(root)
    skipped: list[tuple[str, str]] = []
    by_digest: dict[str, list[ReleasedCurve]] = defaultdict(list)
    for subset in subsets:
        folder = base / subset
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist: is {root} the released scaling_protein_lm data?")
        objective = {"gpt": "clm", "mlm": "mlm"}[subset.split("_")[0]]
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = str(path.relative_to(base))
            if path.suffix != ".csv":
                skipped.append((relative, "not a CSV export"))
                continue
            try:
                info = parse_released_name(path)
                walls, x, loss = read_tensorboard_csv(path)
            except (ValueError, UnicodeDecodeError) as error:
                skipped.append((relative, str(error)))
                continue
            curve = ReleasedCurve(
                path=path,
                run=info["run"],
                objective=objective,
                metric=info["metric"],
                axis=info["axis"],
                x=tuple(x),
                loss=tuple(loss),
                size_label=info["folder_size"] or info["name_size"],
                budget=info["budget"],
                epochs=info["epochs"],
                rebuilt_from_text_log=all(wall == 0 for wall in walls),
            )
            by_digest[hashlib.sha256(path.read_bytes()).hexdigest()].append(curve)
    curves = []
    for copies in by_digest.values():
        fitting = [curve for curve in copies if size_fits_epochs(curve) is not False]
        kept = (fitting or copies)[0]
        curves.append(kept)
        for other in copies:
            if other is not kept:
                skipped.append(
                    (str(other.path.relative_to(base)), f"byte-identical copy of {kept.path.relative_to(base)}")
                )
    curves.sort(key=lambda curve: str(curve.path))
    return curves, skipped


def released_flops(curve: ReleasedCurve) -> list[float]:
    """The curve's x axis in FLOPs (GFLOPs × 1e9; the text-log rebuild assumed N = 1e9, so it is rescaled to N)."""
    flops = [x * 1e9 for x in curve.x]
    if curve.rebuilt_from_text_log and curve.size_label is not None:
        flops = [c * parse_count(curve.size_label) / 1e9 for c in flops]
    return flops


def size_fits_epochs(curve: ReleasedCurve) -> bool | None:
    """Whether the size label agrees (within 1.6x) with C/(6·epochs·200B); None when it cannot be checked (no
    epochs in the name, fewer than 0.05 epochs where the rounding is too coarse, or not a FLOPs axis)."""
    if curve.epochs is None or curve.epochs < 0.05 or curve.axis != "gigaflops" or curve.size_label is None:
        return None
    implied = released_flops(curve)[-1] / (6.0 * curve.epochs * RELEASED_TOKENS_PER_EPOCH)
    return 1 / 1.6 < implied / parse_count(curve.size_label) < 1.6


def released_logs_dir(root: str | Path) -> Path:
    """`<root>/data/training_logs` when it exists (the repository layout), else `root`."""
    root = Path(root)
    nested = root / "data" / "training_logs"
    return nested if nested.is_dir() else root


def read_released_logs(
    root: str | Path,
    budget_tolerance: float = 0.25,
) -> RunTable:
    """The CLM (`gpt_valid`) and MLM (`mlm_valid`) validation curves released with Cheng et al. 2024 as a run table.

    - N is the size in the folder name (`85M_flops` holds the non-embedding 85M model even where the run name says
      otherwise, e.g. `13M_flops/run-gpt_10M_...`); the run name's size is used only where the folder has none.
    - C is the export's "gigaflos (without embeddings)" axis × 1e9 (Megatron's 6·N·D); D = C/(6N).
    - Budgets come from the run name (`1e19flops`, `_1.5e20`); runs without one ("noreg all0.5ep") get None.
    - Byte-identical copies under two folders are read once; the copy whose folder size agrees with the run's
      epochs (N ≈ C/(6·epochs·200B tokens)) is kept, and the others are listed as skipped.
    - The MLM 1.2B all-1-epoch export was rebuilt from a text log by `extract_loss.py`, whose FLOPs assume
      N = 1e9 (`iteration * 6 * 1024 * 1024` GFLOPs); its axis is rescaled by N/1e9 and a note says so.
    - Runs whose final compute is more than `budget_tolerance` (relative) away from their named budget are kept
      with a note. Training-loss exports, perplexity exports and files that are not exports are skipped with the
      reason.
    """
    base = released_logs_dir(root)
    curves, skipped = read_released_curves(root)
    table = RunTable(skipped=skipped)
    for curve in curves:
        relative = str(curve.path.relative_to(base))
        if curve.metric != "validation":
            table.skipped.append((relative, f"{curve.metric} loss, not validation loss"))
            continue
        if curve.axis != "gigaflops":
            table.skipped.append((relative, f"x axis is {curve.axis}, not FLOPs"))
            continue
        if curve.size_label is None:
            table.skipped.append((relative, "no model size in the folder or run name"))
            continue
        parameters = parse_count(curve.size_label)
        flops = released_flops(curve)
        if curve.rebuilt_from_text_log:
            table.notes.append(
                (
                    relative,
                    f"rebuilt from a text log with N = 1e9 in its FLOPs; axis rescaled by {parameters / 1e9:.3g}",
                )
            )
        # A run whose export stops well short of its target (the named budget, else epochs × 200B tokens) did not
        # finish: its points stay on the curve but none is final, so it joins no IsoFLOP profile.
        complete = True
        if curve.budget is not None:
            target, what = curve.budget, f"its budget {curve.budget:.2g}"
        elif curve.epochs is not None:
            target = 6.0 * parameters * curve.epochs * RELEASED_TOKENS_PER_EPOCH
            what = f"6·N·{curve.epochs} epochs·200B = {target:.3g}"
        else:
            target, what = None, ""
        if target is not None and flops[-1] < target / (1 + budget_tolerance):
            complete = False
            table.notes.append(
                (relative, f"stops at {flops[-1]:.3g} FLOPs, short of {what}: unfinished, no final point")
            )
        elif target is not None and flops[-1] > target * (1 + budget_tolerance):
            table.notes.append((relative, f"ends at {flops[-1]:.3g} FLOPs, past {what}"))
        if curve.budget is not None and size_fits_epochs(curve) is False:
            table.notes.append((relative, f"the run name's {curve.epochs} epochs disagree with N and the budget"))
        for index, (c, loss) in enumerate(zip(flops, curve.loss)):
            table.points.append(
                RunPoint(
                    run=f"{curve.objective}/{curve.size_label}/{curve.run}",
                    objective=curve.objective,
                    parameters=parameters,
                    budget=curve.budget,
                    tokens=c / (6.0 * parameters),
                    flops=c,
                    loss=loss,
                    final=complete and index == len(flops) - 1,
                    source=relative,
                )
            )
    return table


# ---------------------------------------------------------------------------------------------------------------
# Any source


def read_runs(sources: Iterable[str | Path]) -> RunTable:
    """Read run folders (metrics.jsonl), folders of run folders, CSV and JSON tables, and the released logs
    (a folder holding `gpt_valid`/`mlm_valid`, directly or under `data/training_logs`) into one table."""
    table = RunTable()
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_file():
            if path.suffix == ".csv":
                table.extend(read_csv_table(path))
            elif path.suffix == ".json":
                table.extend(read_json_table(path))
            else:
                raise ValueError(f"{path}: a run table must be .csv or .json")
        elif (released_logs_dir(path) / "gpt_valid").is_dir() or (released_logs_dir(path) / "mlm_valid").is_dir():
            table.extend(read_released_logs(path))
        elif (path / "metrics.jsonl").exists():
            table.extend(read_run_dir(path))
        else:
            children = sorted(child for child in path.iterdir() if (child / "metrics.jsonl").exists())
            if not children:
                raise ValueError(f"{path}: no metrics.jsonl in it or in its subfolders, and not the released logs")
            for child in children:
                table.extend(read_run_dir(child))
    return table
