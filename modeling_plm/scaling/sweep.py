"""Scaling-law sweeps: train a grid of model sizes × compute budgets within a wall-clock budget.

`plm scaling sweep CONFIG.yaml` (or `python training/scaling_sweep.py CONFIG.yaml`) trains, for every objective
(`mlm`, `clm`), every model shape at every compute budget C with `modeling_plm.training.trainer.pretrain`, plus an
optional transfer arm (`clm-mlm`: CLM for a fraction of the steps, then MLM, at the same total compute as an MLM run).

- **Budget → steps.** `max_steps = ceil(C / (6·N·tokens_per_step))`, N the non-embedding parameters. Rows are
  packed (`pack_length`) so tokens per step are nearly constant; the sweep measures them once by running the
  trainer's own batcher over the training stream. The actual tokens and FLOPs come from each training record.
- **Wall-clock budget.** Before training, a short calibration run per shape measures tokens/s. Each run's time is
  estimated from that rate, corrected by how long the runs so far really took (the machine may be shared), and a
  run that would not fit in the time left is skipped with the reason; cheaper runs after it still get their chance.
- **Order.** `interleaved` (default): runs grouped by (budget, objective), cheapest first inside each group, groups
  taken in turn, so every budget gets coverage early. `cheapest`: by estimated time. `given`: the YAML's order.
- **Resume.** A run whose `final/training_record.json` exists is not retrained (its plan must match). An
  interrupted one continues from its last checkpoint (`resume="auto"`; the trainer cuts `metrics.jsonl` back to that
  checkpoint, so the curve has no duplicate rows); one with no checkpoint restarts clean.
- **Outputs** in `output_dir`: `runs.csv` and `runs.json` (finished runs, one row each: the columns of
  `modeling_plm.scaling.runs` tables plus shape, steps, wall time and the path of each run's `metrics.jsonl`),
  `plan.csv` (every planned run with its status and, for a skipped one, why), and one folder per run with
  `scaling_run.json` (its budget, name and objective, for `modeling_plm.scaling.runs.read_run_dir`).

The YAML (see `training/configs/scaling_cpu.yaml`):

    output_dir: runs/scaling_cpu
    time_budget_minutes: 35
    objectives: [mlm, clm]
    budgets: [3.0e+10, 1.0e+11, 3.0e+11]        # FLOPs, C = 6·N·D
    shapes:                                     # name -> PLMConfig fields over base.preset
      h32l2: {num_hidden_layers: 2, hidden_size: 32, num_attention_heads: 2, intermediate_size: 88}
    transfer: {shapes: [h32l2], budgets: [1.0e+11], transfer_fraction: 0.2}
    base: {preset: tiny, train_file: [...], pack_length: 256, batch_size: 8, ...}   # PretrainConfig fields
"""

import csv
import dataclasses
import fnmatch
import inspect
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..configuration_plm import PLMConfig
from ..data import DataSource, ProteinStream, RecordPolicy, load_clusters, read_id_list
from ..training.arguments import read_yaml_mapping
from ..training.flops import non_embedding_parameters
from ..training.presets import config_from_preset
from ..training.trainer import Batcher, PretrainConfig, derived_seed, pretrain
from .fit import fit_all, format_fits, save_fits
from .runs import RunTable, read_metrics, read_run_dir

GRID_OBJECTIVES = ("mlm", "clm")
TRANSFER_OBJECTIVE = "clm-mlm"
ORDERS = ("interleaved", "cheapest", "given")
# PretrainConfig fields the sweep sets per run; the YAML's `base` may not set them.
SWEEP_OWNED_FIELDS = ("objective", "max_steps", "output_dir", "resume", "transfer_fraction", "eval_steps", "save_steps")
RUN_META_FILE = "scaling_run.json"
SHAPE_COLUMNS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
CALIBRATION_DIR = "calibration"
# Columns of runs.csv: the modeling_plm.scaling.runs table columns first, then the sweep's own.
RUN_COLUMNS = (
    "run",
    "objective",
    "parameters",
    "budget",
    "tokens",
    "flops",
    "loss",
    "final",
    "flops_exact",
    "arm",
    "shape",
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "total_parameters",
    "transfer_fraction",
    "steps",
    "tokens_per_step",
    "budget_ratio",
    "initial_loss",
    "valid_loss_mlm",
    "valid_loss_clm",
    "wall_time_s",
    "tokens_per_s",
    "metrics_path",
    "run_dir",
)
PLAN_COLUMNS = (
    "run",
    "arm",
    "objective",
    "shape",
    "parameters",
    "budget",
    "steps",
    "tokens_per_step",
    "estimated_s",
    "status",
    "reason",
    "run_dir",
)


# ---- configuration ------------------------------------------------------------------------------------------------
@dataclass
class TransferArm:
    """CLM→MLM runs (objective `clm-mlm`) at these shapes and budgets, compared with MLM from scratch at the same
    shape and total compute (the sweep adds the MLM run when the grid lacks it)."""

    shapes: list[str]
    budgets: list[float]
    transfer_fraction: float = 0.15


@dataclass
class SweepConfig:
    """A sweep: shapes × budgets × objectives, the PretrainConfig fields they share, and the wall-clock budget."""

    shapes: dict[str, dict[str, Any]]
    budgets: list[float]
    base: dict[str, Any] = field(default_factory=dict)
    objectives: list[str] = field(default_factory=lambda: list(GRID_OBJECTIVES))
    transfer: TransferArm | None = None
    output_dir: str = "runs/scaling"
    time_budget_minutes: float | None = None
    order: str = "interleaved"
    min_steps: int = 20  # fewer steps are mostly warm-up: the budget is too small for that size
    max_steps: int | None = None  # more steps than this: the budget is too large for that size
    evals_per_run: int = 4  # validation points per run (curve points for the envelope fit), besides step 0
    checkpoints_per_run: int = 2  # checkpoints per run, for resuming an interrupted run
    keep_checkpoints: bool = False  # a finished run's checkpoints are deleted unless set
    calibration_steps: int = 20
    tokens_per_step_sample: int = 200  # steps of the batcher simulated to measure tokens per step
    safety_factor: float = 1.15  # estimated times are multiplied by this before comparing with the time left

    def validate(self) -> None:
        if not self.shapes:
            raise ValueError("a sweep needs at least one shape (shapes: {name: {hidden_size: ..., ...}})")
        if not self.budgets:
            raise ValueError("a sweep needs at least one compute budget (budgets: [1.0e+11, ...])")
        if any(not math.isfinite(b) or b <= 0 for b in self.budgets):
            raise ValueError(f"budgets must be positive FLOP counts, got {self.budgets}")
        for objective in self.objectives:
            if objective not in GRID_OBJECTIVES:
                raise ValueError(f"sweep objectives must be among {GRID_OBJECTIVES}, got {objective!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.min_steps < 1 or (self.max_steps is not None and self.max_steps < self.min_steps):
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.evals_per_run < 1 or self.checkpoints_per_run < 1 or self.calibration_steps < 2:
            raise ValueError("evals_per_run and checkpoints_per_run must be >= 1, calibration_steps >= 2")
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise ValueError(f"time_budget_minutes must be positive, got {self.time_budget_minutes}")
        known = {spec.name for spec in dataclasses.fields(PretrainConfig)}
        unknown = sorted(set(self.base) - known)
        if unknown:
            raise ValueError(f"base: unknown PretrainConfig fields {unknown}")
        owned = sorted(set(self.base) & set(SWEEP_OWNED_FIELDS))
        if owned:
            raise ValueError(f"base: {owned} are set by the sweep for each run; remove them")
        model_fields = set(inspect.signature(PLMConfig.__init__).parameters) - {"self", "kwargs"}
        for name, shape in self.shapes.items():
            bad = sorted(set(shape) - model_fields)
            if bad:
                raise ValueError(f"shape {name!r}: unknown PLMConfig fields {bad}")
        if self.transfer is not None:
            missing = [name for name in self.transfer.shapes if name not in self.shapes]
            if missing:
                raise ValueError(f"transfer: shapes {missing} are not in shapes ({', '.join(self.shapes)})")
            if not 0 < self.transfer.transfer_fraction < 1:
                raise ValueError("transfer: transfer_fraction must be between 0 and 1")
            if not self.transfer.budgets:
                raise ValueError("transfer: give at least one budget")

    @property
    def time_budget_s(self) -> float | None:
        return None if self.time_budget_minutes is None else 60.0 * self.time_budget_minutes


def _as_float(value: Any, what: str) -> float:
    # YAML 1.1 reads "3e10" (no dot, no exponent sign) as a string: accept it.
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a number, got {value!r}") from None


def sweep_config_from_dict(values: dict[str, Any], source: str = "sweep config") -> SweepConfig:
    known = {spec.name for spec in dataclasses.fields(SweepConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; keys are {sorted(known)}")
    values = dict(values)
    values["budgets"] = [_as_float(b, f"{source}: budgets") for b in values.get("budgets") or []]
    if isinstance(values.get("objectives"), str):
        values["objectives"] = [values["objectives"]]
    transfer = values.get("transfer")
    if transfer is not None and not isinstance(transfer, TransferArm):
        extra = sorted(set(transfer) - {"shapes", "budgets", "transfer_fraction"})
        if extra:
            raise ValueError(f"{source}: transfer: unknown keys {extra}")
        values["transfer"] = TransferArm(
            shapes=list(transfer.get("shapes") or []),
            budgets=[_as_float(b, f"{source}: transfer budgets") for b in transfer.get("budgets") or []],
            transfer_fraction=float(transfer.get("transfer_fraction", 0.15)),
        )
    values["shapes"] = {str(name): dict(shape or {}) for name, shape in (values.get("shapes") or {}).items()}
    config = SweepConfig(**values)
    config.validate()
    return config


def load_sweep_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """The sweep YAML at `path`, with the keys of `overrides` (the command line's flags) replacing its own."""
    raw = read_yaml_mapping(path, what="a sweep config")
    return sweep_config_from_dict({**raw, **(overrides or {})}, str(path))


# ---- planning -----------------------------------------------------------------------------------------------------
@dataclass
class PlannedRun:
    """One run of the sweep: its place in the grid and what it trains."""

    name: str
    arm: str  # "grid" or "transfer"
    objective: str  # mlm, clm or clm-mlm
    shape: str
    budget: float
    parameters: int  # N, non-embedding
    total_parameters: int
    steps: int
    tokens_per_step: float
    model_overrides: dict[str, Any]
    run_dir: Path
    transfer_fraction: float | None = None
    skip_reason: str | None = None  # outside the step window: never trained
    estimated_s: float | None = None


def format_budget(flops: float) -> str:
    """3e11 -> '3e11', 1.5e11 -> '1.5e11' (for run names)."""
    mantissa, exponent = f"{flops:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def run_name(objective: str, shape: str, budget: float) -> str:
    return f"{objective}_{shape}_C{format_budget(budget)}"


def base_pretrain_config(config: SweepConfig) -> PretrainConfig:
    """The fields every run shares (the sweep logs to metrics.jsonl only, unless the YAML says otherwise)."""
    return PretrainConfig(**{"report_to": "none", **config.base})


def model_overrides_of(config: SweepConfig, shape: str) -> dict[str, Any]:
    return {**config.base.get("model_overrides", {}), **config.shapes[shape]}


def estimate_tokens_per_step(base: PretrainConfig, steps: int = 200) -> float:
    """Mean real tokens per optimizer step over the first `steps` steps of the training stream, from the trainer's
    own batcher on the same stream (packing waste included). Deterministic for a given config."""
    config = dataclasses.replace(base, train_file=list(base.train_file), valid_file=list(base.valid_file))
    config.resolve_paths()
    if not config.train_file:
        raise ValueError("base: no train_file")
    stream = ProteinStream(
        [DataSource.parse(spec) for spec in config.train_file],
        split="train",
        valid_fraction=config.valid_fraction,
        seed=derived_seed(config.seed, 0),  # the first phase's stream, as PhaseRunner builds it
        crop_length=config.crop_length,
        shuffle_buffer=config.shuffle_buffer,
        policy=RecordPolicy(
            invalid=config.invalid_residues, stop_codon=config.stop_codon, min_length=config.min_length
        ),
        clusters=load_clusters(config.clusters) if config.clusters else None,
        exclude_ids=read_id_list(config.exclude_ids) if config.exclude_ids else None,
    )
    batcher = Batcher(stream, config, lambda sequence: len(sequence) + 2)  # <bos> residues <eos>
    tokens = 0
    for _ in range(steps * config.gradient_accumulation_steps):
        tokens += sum(len(sequence) + 2 for sequence in batcher.next_batch())
    return tokens / steps


def plan_sweep(config: SweepConfig, tokens_per_step: float) -> list[PlannedRun]:
    """Every run of the sweep, in the YAML's order (budget by budget), with its steps and any step-window skip."""
    output_dir = Path(config.output_dir)
    base = base_pretrain_config(config)
    entries: list[tuple[str, str, str, float]] = []  # (arm, objective, shape, budget)
    for budget in config.budgets:
        for objective in config.objectives:
            entries += [("grid", objective, shape, budget) for shape in config.shapes]
    if config.transfer is not None:
        for budget in config.transfer.budgets:
            for shape in config.transfer.shapes:
                if ("grid", "mlm", shape, budget) not in entries:  # the from-scratch baseline at equal compute
                    entries.append(("grid", "mlm", shape, budget))
                entries.append(("transfer", TRANSFER_OBJECTIVE, shape, budget))
    runs = []
    for arm, objective, shape, budget in entries:
        overrides = model_overrides_of(config, shape)
        model_config = config_from_preset(base.preset, **overrides)
        parameters = non_embedding_parameters(model_config)
        steps = math.ceil(budget / (6.0 * parameters * tokens_per_step))
        reason = None
        if steps < config.min_steps:
            reason = f"{steps} steps < min_steps {config.min_steps}: budget {budget:.3g} too small for N={parameters:,}"
        elif config.max_steps is not None and steps > config.max_steps:
            reason = f"{steps} steps > max_steps {config.max_steps}: budget {budget:.3g} too large for N={parameters:,}"
        name = run_name(objective, shape, budget)
        runs.append(
            PlannedRun(
                name=name,
                arm=arm,
                objective=objective,
                shape=shape,
                budget=budget,
                parameters=parameters,
                total_parameters=model_config.num_parameters(include_embeddings=True),
                steps=steps,
                tokens_per_step=tokens_per_step,
                model_overrides=overrides,
                run_dir=output_dir / name,
                transfer_fraction=config.transfer.transfer_fraction if arm == "transfer" else None,
                skip_reason=reason,
            )
        )
    return runs


def pretrain_config_of(config: SweepConfig, run: PlannedRun) -> PretrainConfig:
    values = {"report_to": "none", **config.base}
    values.update(
        model_overrides=run.model_overrides,
        objective=run.objective,
        max_steps=run.steps,
        output_dir=str(run.run_dir),
        resume="auto",
        eval_steps=max(1, math.ceil(run.steps / config.evals_per_run)),
        save_steps=max(1, math.ceil(run.steps / config.checkpoints_per_run)),
        save_total_limit=1,
    )
    if run.transfer_fraction is not None:
        values["transfer_fraction"] = run.transfer_fraction
    return PretrainConfig(**values)


# ---- time estimates -----------------------------------------------------------------------------------------------
@dataclass
class ShapeRate:
    """Measured speed of a shape: training tokens/s and the fixed seconds of a run (start-up, evaluations, save)."""

    tokens_per_s: float
    overhead_s: float


class TimeModel:
    """Run time = tokens / calibrated tokens/s + overhead, times a slowdown factor learnt from the runs so far (how
    much slower they really were: the CPU may be shared), times a safety margin."""

    def __init__(self, rates: dict[str, ShapeRate], safety_factor: float):
        self.rates, self.safety_factor = rates, safety_factor
        self.slowdown = 1.0

    def raw_estimate(self, run: PlannedRun, steps: int | None = None) -> float:
        rate = self.rates[run.shape]
        steps = run.steps if steps is None else steps
        return steps * run.tokens_per_step / rate.tokens_per_s + rate.overhead_s

    def estimate(self, run: PlannedRun, steps: int | None = None) -> float:
        return self.raw_estimate(run, steps) * self.slowdown * self.safety_factor

    def observe(self, run: PlannedRun, steps_trained: int, seconds: float) -> None:
        predicted = self.raw_estimate(run, steps_trained)
        ratio = seconds / max(predicted, 1e-9)
        self.slowdown = 0.5 * self.slowdown + 0.5 * ratio  # recent runs weigh most: the load changes


def calibrate(config: SweepConfig, shape: str) -> ShapeRate:
    """A short run of the shape (cached in output_dir/calibration/<shape>) measures its tokens/s and overhead."""
    folder = Path(config.output_dir) / CALIBRATION_DIR / shape
    record_file = folder / "final" / "training_record.json"
    steps = config.calibration_steps
    if not record_file.exists():
        shutil.rmtree(folder, ignore_errors=True)
        values = {"report_to": "none", **config.base}
        values.update(
            model_overrides=model_overrides_of(config, shape),
            objective=config.objectives[0] if config.objectives else "mlm",
            max_steps=steps,
            output_dir=str(folder),
            log_steps=max(1, steps // 2),
            eval_steps=steps,
            save_steps=steps,
            save_total_limit=1,
        )
        pretrain(PretrainConfig(**values))
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    record = json.loads(record_file.read_text())
    rows = read_metrics(folder / "metrics.jsonl")
    # The last log window is warm (the first includes start-up).
    tokens_per_s = [row["tokens_per_s"] for row in rows if "tokens_per_s" in row][-1]
    train_s = record["tokens"] / tokens_per_s
    # Start-up, the two evaluations and the save; a sweep run evaluates evals_per_run + 2 times, but start-up does
    # not repeat, so this is a fair per-run overhead.
    overhead = max(0.0, record["wall_time_s"] - train_s) * (config.evals_per_run + 2) / 2
    return ShapeRate(tokens_per_s=tokens_per_s, overhead_s=overhead)


# ---- run folders --------------------------------------------------------------------------------------------------
def _phases(run: PlannedRun) -> list[tuple[str, Path]]:
    """(objective, folder holding its checkpoints) of each phase, as the trainer lays them out."""
    if run.objective != TRANSFER_OBJECTIVE:
        return [(run.objective, run.run_dir)]
    return [("clm", run.run_dir / "phase1-clm"), ("mlm", run.run_dir / "phase2-mlm")]


def _latest_checkpoint_step(folder: Path) -> int | None:
    steps = [
        int(path.name.removeprefix("step-"))
        for path in (folder / "checkpoints").glob("step-*")
        if path.is_dir() and not path.name.endswith(".tmp")
    ]
    return max(steps) if steps else None


def prepare_resume(run: PlannedRun) -> int:
    """Make an unfinished run folder resumable and return the optimizer steps already done (all phases).

    With no checkpoint (and no finished phase) the folder is cleared, so the run restarts clean. Otherwise the
    trainer resumes it, and drops the metrics rows it will write again, so every curve point appears once."""
    if not run.run_dir.exists():
        return 0
    phases = _phases(run)
    done_steps, finished_phases = 0, 0
    in_progress = None  # the folder of the phase to resume
    for _, folder in phases:
        if len(phases) > 1 and (folder / "phase_complete.json").exists():
            done_steps += json.loads((folder / "phase_complete.json").read_text())["steps"]
            finished_phases += 1
            continue
        in_progress = folder
        break
    if in_progress is None:  # every phase complete but no final record: only the final save is missing
        return done_steps
    checkpoint = _latest_checkpoint_step(in_progress)
    if checkpoint is None and not finished_phases:
        shutil.rmtree(run.run_dir)
        return 0
    # The trainer drops the metrics rows it is about to write again when it resumes.
    return done_steps + (checkpoint or 0)


def check_finished_run(run: PlannedRun, record: dict[str, Any]) -> None:
    """A finished run counts only if it was trained with this plan; otherwise say so (no silent reuse)."""
    trained = record["config"]
    differences = [
        f"{key} {trained.get(key)!r} (planned {planned!r})"
        for key, planned in (
            ("objective", run.objective),
            ("max_steps", run.steps),
            ("model_overrides", run.model_overrides),
        )
        if trained.get(key) != planned
    ]
    if differences:
        raise ValueError(
            f"{run.run_dir} was trained with a different plan: {'; '.join(differences)}. "
            "Delete that folder or use another output_dir."
        )


def write_run_meta(run: PlannedRun) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "run": run.name,
        "budget": run.budget,
        "objective": run.objective,
        "arm": run.arm,
        "shape": run.shape,
        "parameters": run.parameters,
        "steps": run.steps,
        "tokens_per_step": run.tokens_per_step,
        "transfer_fraction": run.transfer_fraction,
    }
    (run.run_dir / RUN_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _final_loss(record: dict[str, Any], objective: str) -> float | None:
    entry = record.get("final_eval", {}).get(objective)
    return None if entry is None else float(entry["loss"])


def result_row(run: PlannedRun, record: dict[str, Any]) -> dict[str, Any]:
    """The runs-table row of a finished run, from its training record and metrics."""
    loss_objective = "mlm" if run.objective == TRANSFER_OBJECTIVE else run.objective
    metrics_path = run.run_dir / "metrics.jsonl"
    speeds = [row["tokens_per_s"] for row in read_metrics(metrics_path) if "tokens_per_s" in row]
    initial = (record.get("initial_eval") or {}).get(loss_objective)
    return {
        "run": run.name,
        "objective": run.objective,
        "parameters": record["non_embedding_parameters"],
        "budget": run.budget,
        "tokens": record["tokens"],
        "flops": record["flops_6nd"],
        "loss": _final_loss(record, loss_objective),
        "final": True,
        "flops_exact": record["flops"],
        "arm": run.arm,
        "shape": run.shape,
        **{key: run.model_overrides.get(key) for key in SHAPE_COLUMNS},
        "total_parameters": record["parameters"],
        "transfer_fraction": run.transfer_fraction,
        "steps": record["steps"],
        "tokens_per_step": record["tokens"] / max(record["steps"], 1),
        "budget_ratio": record["flops_6nd"] / run.budget,
        "initial_loss": None if initial is None else float(initial["loss"]),
        "valid_loss_mlm": _final_loss(record, "mlm"),
        "valid_loss_clm": _final_loss(record, "clm"),
        "wall_time_s": record["wall_time_s"],
        "tokens_per_s": statistics.median(speeds) if speeds else None,
        "metrics_path": str(metrics_path),
        "run_dir": str(run.run_dir),
    }


# ---- tables -------------------------------------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row[key]) for key in columns})
    return buffer.getvalue()


def write_tables(
    output_dir: Path, finished: list[dict[str, Any]], plan: list[dict[str, Any]], sweep: dict[str, Any]
) -> dict[str, Path]:
    """runs.csv / runs.json (finished runs; `points` is the modeling_plm.scaling.runs JSON layout) and plan.csv."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": output_dir / "runs.csv", "json": output_dir / "runs.json", "plan": output_dir / "plan.csv"}
    _write_atomic(paths["csv"], _csv_text(finished, RUN_COLUMNS))
    skipped = [{"run": row["run"], "reason": row["reason"]} for row in plan if row["status"] == "skipped"]
    document = {
        "points": finished,
        "transfer": transfer_comparison(finished),
        "plan": plan,
        "skipped": skipped,
        "sweep": sweep,
    }
    _write_atomic(paths["json"], json.dumps(document, indent=2) + "\n")
    _write_atomic(paths["plan"], _csv_text(plan, PLAN_COLUMNS))
    return paths


def read_runs_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """runs.csv back as dicts with numbers parsed (empty cells -> None)."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                if value == "":
                    parsed[key] = None
                elif value in ("True", "False"):
                    parsed[key] = value == "True"
                else:
                    try:
                        number = float(value)
                        parsed[key] = int(number) if number.is_integer() and "." not in value else number
                    except ValueError:
                        parsed[key] = value
            rows.append(parsed)
    return rows


# ---- the sweep ----------------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    finished: list[dict[str, Any]]  # runs.csv rows
    plan: list[dict[str, Any]]  # plan.csv rows (every run, with status and reason)
    tables: dict[str, Path]
    wall_time_s: float
    trained: list[str]  # runs trained (or resumed) by this invocation
    failed: list[str]


def order_runs(runs: list[PlannedRun], order: str, estimate: dict[str, float]) -> list[PlannedRun]:
    if order == "given":
        return list(runs)
    if order == "cheapest":
        return sorted(runs, key=lambda run: estimate[run.name])
    groups: dict[tuple[float, str], list[PlannedRun]] = {}
    for run in sorted(runs, key=lambda run: (run.budget, run.arm != "grid")):
        groups.setdefault((run.budget, run.objective), []).append(run)
    queues = [sorted(group, key=lambda run: estimate[run.name]) for group in groups.values()]
    ordered = []
    for index in range(max((len(queue) for queue in queues), default=0)):
        ordered += [queue[index] for queue in queues if index < len(queue)]
    return ordered


def _plan_row(run: PlannedRun, status: str, reason: str | None) -> dict[str, Any]:
    return {
        "run": run.name,
        "arm": run.arm,
        "objective": run.objective,
        "shape": run.shape,
        "parameters": run.parameters,
        "budget": run.budget,
        "steps": run.steps,
        "tokens_per_step": round(run.tokens_per_step, 2),
        "estimated_s": None if run.estimated_s is None else round(run.estimated_s, 1),
        "status": status,
        "reason": reason,
        "run_dir": str(run.run_dir),
    }


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def status_before_training(
    runs: list[PlannedRun],
) -> tuple[dict[str, tuple[str, str | None]], dict[str, dict[str, Any]]]:
    """(status, reason) of the runs finished earlier (checked against the plan) or outside the step window, and
    the training records of the finished ones."""
    status: dict[str, tuple[str, str | None]] = {}
    records: dict[str, dict[str, Any]] = {}
    for run in runs:
        record_file = run.run_dir / "final" / "training_record.json"
        if record_file.exists():
            record = json.loads(record_file.read_text())
            check_finished_run(run, record)
            records[run.name] = record
            status[run.name] = ("done", "finished earlier")
        elif run.skip_reason:
            status[run.name] = ("skipped", run.skip_reason)
    return status, records


def train_planned_run(
    config: SweepConfig, run: PlannedRun, *, time_model: TimeModel, remaining_steps: int
) -> tuple[dict[str, Any], float]:
    """Train one run (resuming where it stopped) and return its training record and seconds; the time model learns
    how long it really took. A finished run's checkpoints go unless `keep_checkpoints`."""
    write_run_meta(run)
    run_started = time.monotonic()
    pretrain(pretrain_config_of(config, run))
    seconds = time.monotonic() - run_started
    time_model.observe(run, remaining_steps, seconds)
    record = json.loads((run.run_dir / "final" / "training_record.json").read_text())
    if not config.keep_checkpoints:
        for _, folder in _phases(run):
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    return record, seconds


def run_sweep(
    config: SweepConfig, dry_run: bool = False, only: list[str] | None = None, quiet: bool = False
) -> SweepResult:
    """Plan, calibrate, train what fits in the time budget, and write the tables (after every run)."""
    started = time.monotonic()
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    output_dir = Path(config.output_dir)
    say = (lambda message: None) if quiet else _say
    tokens_per_step = estimate_tokens_per_step(base_pretrain_config(config), config.tokens_per_step_sample)
    runs = plan_sweep(config, tokens_per_step)
    if only:
        runs = [run for run in runs if any(fnmatch.fnmatch(run.name, pattern) for pattern in only)]
    say(f"sweep: {len(runs)} runs, {tokens_per_step:.1f} tokens/step, output {output_dir}")
    status, records = status_before_training(runs)
    todo = [run for run in runs if run.name not in status]
    sweep_info = {
        "tokens_per_step": tokens_per_step,
        "time_budget_s": config.time_budget_s,
        "shapes": config.shapes,
        "budgets": config.budgets,
        "objectives": config.objectives,
        "transfer": dataclasses.asdict(config.transfer) if config.transfer else None,
        "base": config.base,
    }

    def tables() -> dict[str, Path]:
        finished = [result_row(run, records[run.name]) for run in runs if run.name in records]
        plan = [_plan_row(run, *status.get(run.name, ("pending", None))) for run in runs]
        return write_tables(output_dir, finished, plan, {**sweep_info, "wall_time_s": time.monotonic() - started})

    trained, failed = [], []
    if todo and not dry_run:
        rates = {}
        for shape in sorted({run.shape for run in todo}, key=list(config.shapes).index):
            rates[shape] = calibrate(config, shape)
            say(f"calibration {shape}: {rates[shape].tokens_per_s:,.0f} tokens/s, {rates[shape].overhead_s:.1f} s/run")
        model = TimeModel(rates, config.safety_factor)
        done_steps = {run.name: prepare_resume(run) for run in todo}
        for run in todo:
            run.estimated_s = model.estimate(run, run.steps - done_steps[run.name])
        ordered = order_runs(todo, config.order, {run.name: run.estimated_s for run in todo})
        progress = tqdm(total=len(ordered), desc="sweep", unit="run", position=0, disable=quiet, dynamic_ncols=True)
        for index, run in enumerate(ordered, start=1):
            remaining_steps = run.steps - done_steps[run.name]
            estimate = model.estimate(run, remaining_steps)
            run.estimated_s = estimate
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and estimate > left:
                reason = f"estimated {estimate:.0f} s > {max(left, 0):.0f} s left of the time budget"
                status[run.name] = ("skipped", reason)
                say(f"[{index}/{len(ordered)}] skip {run.name}: {reason}")
                progress.update(1)
                continue
            left_text = "" if left is None else f", {left:.0f} s left"
            say(
                f"[{index}/{len(ordered)}] {run.name}: N={run.parameters:,}, {run.steps} steps "
                f"({remaining_steps} to go), estimated {estimate:.0f} s{left_text}"
            )
            progress.set_postfix_str(run.name)
            try:
                record, seconds = train_planned_run(config, run, time_model=model, remaining_steps=remaining_steps)
            except (FloatingPointError, RuntimeError, ValueError) as error:
                status[run.name] = ("failed", f"{type(error).__name__}: {error}")
                failed.append(run.name)
                say(f"  {run.name} FAILED: {error}")
                progress.update(1)
                tables()
                continue
            records[run.name] = record
            status[run.name] = ("done", None)
            trained.append(run.name)
            row = result_row(run, record)
            say(
                f"  done in {seconds:.0f} s: valid loss {row['loss']:.4f}, D={row['tokens']:,}, "
                f"6ND = {row['budget_ratio']:.3f} x budget (slowdown x{model.slowdown:.2f})"
            )
            progress.update(1)
            tables()
        progress.close()
    paths = tables()
    finished = [result_row(run, records[run.name]) for run in runs if run.name in records]
    plan = [_plan_row(run, *status.get(run.name, ("pending", None))) for run in runs]
    return SweepResult(
        finished=finished,
        plan=plan,
        tables=paths,
        wall_time_s=time.monotonic() - started,
        trained=trained,
        failed=failed,
    )


def format_results(result: SweepResult) -> str:
    """A plain-text summary: finished runs (N, budget, tokens, loss) and every skipped or failed run with why."""
    lines = [f"{'run':34} {'N':>9} {'budget':>9} {'tokens':>11} {'6ND/C':>6} {'loss':>7} {'wall s':>7}"]
    for row in result.finished:
        lines.append(
            f"{row['run']:34} {row['parameters']:>9,} {row['budget']:>9.3g} {row['tokens']:>11,} "
            f"{row['budget_ratio']:>6.3f} {row['loss']:>7.4f} {row['wall_time_s']:>7.1f}"
        )
    for row in result.plan:
        if row["status"] in ("skipped", "failed", "pending"):
            lines.append(f"{row['status']:8} {row['run']}: {row['reason'] or 'not reached'}")
    return "\n".join(lines)


def transfer_comparison(finished: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each transfer run beside the MLM-from-scratch run of the same shape and budget: final MLM validation loss of
    both, and the difference (negative: transfer is better)."""
    scratch = {(r["shape"], r["budget"]): r for r in finished if r["arm"] == "grid" and r["objective"] == "mlm"}
    pairs = []
    for row in finished:
        baseline = scratch.get((row["shape"], row["budget"])) if row["arm"] == "transfer" else None
        if baseline is None:
            continue
        pairs.append(
            {
                "shape": row["shape"],
                "parameters": row["parameters"],
                "budget": row["budget"],
                "transfer_fraction": row["transfer_fraction"],
                "scratch_run": baseline["run"],
                "transfer_run": row["run"],
                "scratch_loss": baseline["loss"],
                "transfer_loss": row["loss"],
                "difference": row["loss"] - baseline["loss"],
                "scratch_flops": baseline["flops"],
                "transfer_flops": row["flops"],
            }
        )
    return pairs


def format_transfer(pairs: list[dict[str, Any]]) -> str:
    lines = [f"{'shape':8} {'N':>8} {'budget':>9} {'MLM scratch':>11} {'CLM->MLM':>9} {'difference':>10}"]
    for pair in pairs:
        lines.append(
            f"{pair['shape']:8} {pair['parameters']:>8,} {pair['budget']:>9.3g} {pair['scratch_loss']:>11.4f} "
            f"{pair['transfer_loss']:>9.4f} {pair['difference']:>+10.4f}"
        )
    return "\n".join(lines)


def write_report(
    result: SweepResult,
    figures_dir: Path,
    prefix: str = "",
    bootstrap: int = 200,
    parametric_bootstrap: int = 50,
    seed: int = 0,
) -> str:
    """Fit the finished grid runs (modeling_plm.scaling.fit: envelope, IsoFLOP, parametric, with bootstrap CIs) and
    draw the figures (modeling_plm.scaling.plots) into `figures_dir` as `<prefix>isoflop_<objective>.png`,
    `<prefix>frontier_<objective>.png`, `<prefix>loss_vs_compute_<objective>.png` and `<prefix>transfer.png`. The
    fits go to `<output_dir>/fit.json`. Returns the printed summary."""
    from .plots import plot_curves, plot_fits  # matplotlib loads only when a report is asked for

    table = RunTable()
    for row in result.finished:
        if row["arm"] == "grid":
            table.extend(read_run_dir(row["run_dir"]))
    objectives = [objective for objective in GRID_OBJECTIVES if objective in table.objectives()]
    fits = [
        fit_all(table, objective, bootstrap=bootstrap, seed=seed, parametric_bootstrap=parametric_bootstrap)
        for objective in objectives
    ]
    output_dir = Path(result.tables["csv"]).parent
    written = [save_fits(fits, output_dir / "fit.json"), *plot_fits(table, fits, figures_dir, prefix)]
    pairs = transfer_comparison(result.finished)
    if pairs:
        curves = {}
        for pair in pairs:
            for label, name in (("MLM from scratch", pair["scratch_run"]), ("CLM->MLM", pair["transfer_run"])):
                run_dir = output_dir / name
                points = read_run_dir(run_dir).points
                if name == pair["transfer_run"]:  # the MLM phase only: a causal model's MLM loss is off the scale
                    record = json.loads((run_dir / "final" / "training_record.json").read_text())
                    points = [p for p in points if p.tokens > record["phases"][0]["tokens"]]
                key = f"{pair['shape']} (N={pair['parameters']:,}) {label}"
                curves[key] = ([p.flops for p in points], [p.loss for p in points])
        written.append(
            plot_curves(
                curves,
                figures_dir / f"{prefix}transfer.png",
                xlabel="compute C = 6·N·D (FLOPs, both phases)",
                ylabel="MLM validation loss",
                title=f"CLM->MLM (MLM phase) vs MLM from scratch, C = {pairs[0]['budget']:.2g}",
            )
        )
    summary = [format_fits(fits)]
    if pairs:
        summary += ["", "CLM->MLM transfer vs MLM from scratch (final MLM validation loss):", format_transfer(pairs)]
    summary += ["", "wrote " + ", ".join(str(path) for path in written)]
    return "\n".join(summary)
