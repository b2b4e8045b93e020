"""Compute-optimal planning: from a FLOPs budget to N_opt, D_opt, a concrete model shape and a `plm pretrain` command.

Two sets of laws from Cheng et al. 2024 ("Training Compute-Optimal Protein Language Models", NeurIPS 2024,
arXiv 2411.02142), C = 6·N·D with N the non-embedding parameters. Every number below is the one recorded in
`<shared data>/scaling_protein_lm/SOURCE.txt`; `tests/test_scaling.py` reads that file and compares.

- `released` (the default): the fitted laws the authors released in their repository (github.com/cxysteven/
  ScalingProteinLM at commit 12acfa0, `law_weights/{CLM,MLM}_app3_law.pkl`, each [k, a] for N_opt = k·C^a):

  | objective | N_opt | D_opt = C/(6·N_opt) |
  |---|---|---|
  | CLM | 3.3057090957451653e-3 · C^0.5561066052168413 | 50.42 · C^0.4439 |
  | MLM | 1.3646356233553013e-7 · C^0.7598018681954262 | 1.221e6 · C^0.2402 |

  The release has no D_opt law, so D_opt is C/(6·N_opt).
- `paper`: the exponents of the paper's text as SOURCE.txt records them (CLM N_opt ∝ C^0.578, D_opt ∝ C^0.422;
  MLM C^0.776, C^0.230). The paper's coefficients were not readable, so each law is anchored to the released one
  at C = 1e21 (the largest IsoFLOP budget): N_opt(C) = N_rel(1e21)·(C/1e21)^a, D_opt(C) = D_rel(1e21)·(C/1e21)^b.

No published loss law L(N, D) is used: none is recorded in SOURCE.txt. A fit written by `plm scaling fit` replaces
the laws (`plan(..., fit_path=...)`), per objective, and brings its parametric L(N, D) for the expected loss.
"""

import functools
import json
import math
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..configuration_plm import PLMConfig
from ..training.presets import MODERN_ARCHITECTURE, PRESETS
from .fit import PowerLaw, load_fits
from .runs import format_count

PAPER = "Cheng et al. 2024, Training Compute-Optimal Protein Language Models (arXiv 2411.02142)"
RELEASE = "github.com/cxysteven/ScalingProteinLM @ 12acfa0"
SOURCE_FILE = "scaling_protein_lm/SOURCE.txt"
# [k, a] of N_opt = k·C^a, as SOURCE.txt decodes law_weights/{CLM,MLM}_app3_law.pkl.
RELEASED_N_OPT = {
    "clm": (3.3057090957451653e-03, 0.5561066052168413),
    "mlm": (1.3646356233553013e-07, 0.7598018681954262),
}
# (N_opt exponent, D_opt exponent) of the paper's text, as SOURCE.txt records them.
PAPER_EXPONENTS = {"clm": (0.578, 0.422), "mlm": (0.776, 0.230)}
PAPER_ANCHOR_FLOPS = 1e21  # the paper-exponent laws pass through the released allocation here
LAW_CHOICES = ("released", "paper")

HEAD_DIM = 64
WIDTH_MULTIPLE = 128  # GPU-friendly widths: whole 128-wide tiles, an even number of 64-wide heads
# Width/depth ratios a proposed shape may have (the presets span 40-64; wider so that widths 128 apart still reach
# any N_opt). A shape's cost is |ln(N/N_opt)| + DEPTH_WEIGHT·|ln(layers/rule)|: 10% off the presets' depth rule
# weighs as much as 1% off N_opt. Measured on a dense sweep of N_opt: N within 6% above 3e7, 3.7% above 1e8,
# 2.3% above 3e8, 1.7% above 1e9 (12% near 3e6); depth within 45% of the rule above 3e7.
ASPECT_RANGE = (24, 96)
DEPTH_WEIGHT = 0.1
# The compute-optimal presets whose depth/width rule a planned shape follows.
GRID_PRESETS = ("plm_3m", "plm_10m", "plm_25m", "plm_50m", "plm_100m", "plm_300m", "plm_1b", "plm_3b")
TRANSFER_SHARE_RANGE = (0.10, 0.20)
DEFAULT_TRANSFER_SHARE = 0.15
# What the printed `plm pretrain` command trains on and how it batches (packed rows, as training/configs/plm_*.yaml).
DEFAULT_TRAIN_FILE = "${PLM_DATA_DIR}/swissprot2014/sprot2014_unique.fasta.gz"
DEFAULT_BATCH_SIZE = 256
DEFAULT_PACK_LENGTH = 1024
EVALS_PER_RUN = 20


@dataclass(frozen=True)
class LossLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __call__(self, parameters: float, tokens: float) -> float:
        return self.E + self.A / parameters**self.alpha + self.B / tokens**self.beta


@dataclass(frozen=True)
class ScalingLaw:
    """The compute-optimal allocation of one objective and where it comes from."""

    objective: str
    n_opt: PowerLaw
    d_opt: PowerLaw
    loss: LossLaw | None
    source: str  # where the numbers come from
    verified: str  # how far the constants were checked
    name: str = "fit"  # "released", "paper" or "fit"


def released_law(objective: str) -> ScalingLaw:
    """The authors' released N_opt law; D_opt = C/(6·N_opt) = C^(1-a)/(6k)."""
    k, a = RELEASED_N_OPT[objective]
    return ScalingLaw(
        objective=objective,
        n_opt=PowerLaw(k, a),
        d_opt=PowerLaw(1 / (6 * k), 1 - a),
        loss=None,
        source=f"{PAPER}: the authors' released fit, {RELEASE} law_weights/{objective.upper()}_app3_law.pkl "
        f"(values as recorded in {SOURCE_FILE})",
        verified=f"k and a equal {SOURCE_FILE}'s decoded values (tested); D_opt = C/(6·N_opt), the release has no "
        "D_opt law",
        name="released",
    )


def paper_law(objective: str) -> ScalingLaw:
    """The paper's exponents, anchored to the released allocation at `PAPER_ANCHOR_FLOPS`."""
    a, b = PAPER_EXPONENTS[objective]
    n_anchor = float(released_law(objective).n_opt(PAPER_ANCHOR_FLOPS))
    d_anchor = PAPER_ANCHOR_FLOPS / (6 * n_anchor)
    return ScalingLaw(
        objective=objective,
        n_opt=PowerLaw(n_anchor / PAPER_ANCHOR_FLOPS**a, a),
        d_opt=PowerLaw(d_anchor / PAPER_ANCHOR_FLOPS**b, b),
        loss=None,
        source=f"{PAPER}: exponents of the paper's text (as recorded in {SOURCE_FILE}); coefficients set so that "
        f"N_opt and D_opt equal the released law's at C = {PAPER_ANCHOR_FLOPS:.0e}",
        verified=f"exponents equal {SOURCE_FILE}'s (tested); the paper's own coefficients were not readable, so "
        "these are anchored, not published",
        name="paper",
    )


LAWS: dict[str, dict[str, ScalingLaw]] = {
    "released": {objective: released_law(objective) for objective in RELEASED_N_OPT},
    "paper": {objective: paper_law(objective) for objective in PAPER_EXPONENTS},
}
# The default laws (the model card places a trained model on these).
PUBLISHED_LAWS: dict[str, ScalingLaw] = LAWS["released"]


@dataclass
class ModelShape:
    """A concrete model near a target N: the package's modern architecture, width a multiple of 128, 64-wide heads,
    depth near the presets' depth/width rule."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    head_dim: int
    intermediate_size: int
    parameters: int  # exact non-embedding N (PLMConfig.num_parameters)
    nearest_preset: str | None  # a preset with exactly this shape, if any

    def config(self, **overrides: Any) -> PLMConfig:
        return PLMConfig(**{**MODERN_ARCHITECTURE, **self.model_overrides(), **overrides})

    def model_overrides(self) -> dict[str, int]:
        return {
            "num_hidden_layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
        }


@dataclass
class TransferPlan:
    """CLM first, then MLM from those weights, on the same model: the compute split."""

    clm_share: float
    clm_flops: float
    mlm_flops: float
    clm_tokens: float
    mlm_tokens: float
    note: str


@dataclass
class TrainCommand:
    """The `plm pretrain` command that trains a plan: its arguments and how its step count was reached."""

    argv: list[str]  # without the leading "plm"
    max_steps: int  # ceil(tokens / tokens_per_step)
    tokens_per_step: int  # batch_size × pack_length (full packed rows)
    batch_size: int
    pack_length: int
    train_file: str

    @property
    def text(self) -> str:
        return shlex.join(["plm", *self.argv])


@dataclass
class Plan:
    objective: str
    flops: float
    n_opt: float
    d_opt: float
    shape: ModelShape
    tokens: float  # C / (6 N) for the concrete shape
    tokens_per_parameter: float
    expected_loss: float | None
    law: dict[str, Any]
    command: TrainCommand
    transfer: TransferPlan | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["command"]["text"] = self.command.text
        return data

    def render(self) -> str:
        """The plan as the text `plm scaling plan` prints."""
        shape, law, command = self.shape, self.law, self.command
        mode = f"{self.objective.upper()}{', CLM->MLM transfer' if self.transfer else ''}"
        n_law = f"N_opt = {law['n_opt']['coefficient']:.4g}·C^{law['n_opt']['exponent']:.4f}"
        d_law = f"D_opt = {law['d_opt']['coefficient']:.4g}·C^{law['d_opt']['exponent']:.4f}"
        ratio = shape.parameters / self.n_opt
        lines = [
            f"compute budget C        {self.flops:.3g} FLOPs ({mode})",
            f"laws                    {law['name']}: {n_law}, {d_law}",
            f"  from                  {law['source']}",
            f"  checked               {law['verified']}",
            f"N_opt                   {format_count(self.n_opt)} non-embedding parameters",
            f"D_opt                   {format_count(self.d_opt)} tokens",
            f"model                   {shape.num_hidden_layers} layers × hidden {shape.hidden_size}, "
            f"{shape.num_attention_heads} heads × {shape.head_dim}, MLP {shape.intermediate_size} (SwiGLU)"
            + (f"  = preset {shape.nearest_preset}" if shape.nearest_preset else ""),
            f"N (exact)               {shape.parameters:,} ({ratio:.3f}× N_opt, {abs(ratio - 1):.1%} off)",
            f"tokens for this N       {format_count(self.tokens)} "
            f"(C/6N; {self.tokens_per_parameter:.1f} tokens per parameter)",
        ]
        if self.expected_loss is not None:
            lines.append(f"expected valid loss     {self.expected_loss:.3f} nats/token (the fit's parametric L(N, D))")
        if self.transfer:
            t = self.transfer
            lines.append(
                f"transfer                CLM {t.clm_share:.0%}: {t.clm_flops:.3g} FLOPs = "
                f"{format_count(t.clm_tokens)} tokens, then MLM {t.mlm_flops:.3g} FLOPs = "
                f"{format_count(t.mlm_tokens)} tokens"
            )
            lines.append(f"                        {t.note}")
        lines.append(
            f"steps                   {command.max_steps:,} = tokens / ({command.batch_size} rows × "
            f"{command.pack_length} tokens = {command.tokens_per_step:,} per step, full packed rows)"
        )
        lines.append(f"train with              {command.text}")
        lines.append(
            "                        (the training record counts the real tokens; add --mixed-precision bf16 on GPUs)"
        )
        lines.extend(f"warning                 {w}" for w in self.warnings)
        return "\n".join(lines)


def depth_for_width(hidden_size: int) -> int:
    """Layers for a width, interpolated in ln(width) through the compute-optimal presets (extrapolated with the end
    segments' slopes beyond them), at least 2."""
    widths = np.log([PRESETS[name]["hidden_size"] for name in GRID_PRESETS])
    depths = np.array([PRESETS[name]["num_hidden_layers"] for name in GRID_PRESETS], float)
    x = math.log(hidden_size)
    if x < widths[0]:
        slope = (depths[1] - depths[0]) / (widths[1] - widths[0])
        value = depths[0] + slope * (x - widths[0])
    elif x > widths[-1]:
        slope = (depths[-1] - depths[-2]) / (widths[-1] - widths[-2])
        value = depths[-1] + slope * (x - widths[-1])
    else:
        value = float(np.interp(x, widths, depths))
    return max(2, int(round(value)))


def _preset_with_shape(layers: int, hidden: int, heads: int) -> str | None:
    for name in GRID_PRESETS:
        preset = PRESETS[name]
        if (preset["num_hidden_layers"], preset["hidden_size"], preset["num_attention_heads"]) == (
            layers,
            hidden,
            heads,
        ):
            return name
    return None


def _shape_config(layers: int, hidden: int) -> PLMConfig:
    return PLMConfig(
        **{
            **MODERN_ARCHITECTURE,
            "num_hidden_layers": layers,
            "hidden_size": hidden,
            "num_attention_heads": hidden // HEAD_DIM,
        }  # fmt: skip
    )


@functools.cache
def candidate_shapes(max_hidden: int = 16384) -> tuple[tuple[int, int, int], ...]:
    """(layers, hidden, exact non-embedding N) of every shape a plan may propose: widths a multiple of
    `WIDTH_MULTIPLE`, 64-wide heads, at least 2 layers and a width/depth ratio within `ASPECT_RANGE`."""
    shapes = []
    low, high = ASPECT_RANGE
    for hidden in range(WIDTH_MULTIPLE, max_hidden + 1, WIDTH_MULTIPLE):
        # N is linear in depth: two configs give the per-layer count and the rest (final norm).
        one, two = (_shape_config(layers, hidden).num_parameters(include_embeddings=False) for layers in (1, 2))
        per_layer = two - one
        for layers in range(max(2, math.ceil(hidden / high)), max(2, math.floor(hidden / low)) + 1):
            shapes.append((layers, hidden, one + (layers - 1) * per_layer))
    return tuple(shapes)


def shape_for_parameters(target: float, max_hidden: int = 16384) -> ModelShape:
    """The candidate shape (`candidate_shapes`) of least |ln(N/target)| + DEPTH_WEIGHT·|ln(layers/rule)|, with N its
    exact non-embedding count and rule the presets' depth for its width (`depth_for_width`)."""
    if not target > 0:
        raise ValueError(f"target parameters must be positive, got {target}")
    rule = {hidden: depth_for_width(hidden) for hidden in range(WIDTH_MULTIPLE, max_hidden + 1, WIDTH_MULTIPLE)}

    def cost(shape: tuple[int, int, int]) -> float:
        layers, hidden, n = shape
        return abs(math.log(n / target)) + DEPTH_WEIGHT * abs(math.log(layers / rule[hidden]))

    layers, hidden, n = min(candidate_shapes(max_hidden), key=cost)
    config = _shape_config(layers, hidden)
    assert config.num_parameters(include_embeddings=False) == n
    return ModelShape(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=config.num_attention_heads,
        head_dim=config.head_dim,
        intermediate_size=config.intermediate_size,
        parameters=n,
        nearest_preset=_preset_with_shape(layers, hidden, config.num_attention_heads),
    )


def law_from_fit(path: str | Path, objective: str, approach: str = "isoflop") -> ScalingLaw:
    """A `ScalingLaw` from `plm scaling fit` JSON: N_opt/D_opt from `approach` (isoflop, envelope or parametric),
    expected loss from the parametric fit when present."""
    fits = load_fits(path)
    key = "mlm" if objective == "clm-mlm" else objective
    if key not in fits:
        raise ValueError(f"{path} has no fit for objective {key!r} (it has {', '.join(fits) or 'none'})")
    item = fits[key]
    frontier = getattr(item, approach, None)
    if frontier is None:
        raise ValueError(f"{path}: no {approach} fit for {key} ({item.errors.get(approach, 'not fitted')})")
    parametric = item.parametric
    loss = None
    if parametric:
        loss = LossLaw(E=parametric.E, A=parametric.A, B=parametric.B, alpha=parametric.alpha, beta=parametric.beta)
    return ScalingLaw(
        objective=key,
        n_opt=PowerLaw(frontier.n_opt.coefficient, frontier.n_opt.exponent, frontier.n_opt.exponent_ci),
        d_opt=PowerLaw(frontier.d_opt.coefficient, frontier.d_opt.exponent, frontier.d_opt.exponent_ci),
        loss=loss,
        source=f"{path} ({approach})",
        verified="your own fit",
        name="fit",
    )


def transfer_split(flops: float, parameters: float, clm_share: float = DEFAULT_TRANSFER_SHARE) -> TransferPlan:
    """Split `flops` between CLM pre-training and MLM on one model of `parameters` (tokens = C/(6N) per phase)."""
    if not 0 < clm_share < 1:
        raise ValueError(f"clm_share must be in (0, 1), got {clm_share}")
    low, high = TRANSFER_SHARE_RANGE
    note = (
        f"the paper finds {low:.0%}-{high:.0%} of compute on CLM best, as do the released transfer runs "
        "(`plm scaling validate`); its transfer formula is not used here"
    )
    if not low <= clm_share <= high:
        note += f"; {clm_share:.0%} is outside that range"
    clm, mlm = clm_share * flops, (1 - clm_share) * flops
    return TransferPlan(
        clm_share=clm_share,
        clm_flops=clm,
        mlm_flops=mlm,
        clm_tokens=clm / (6 * parameters),
        mlm_tokens=mlm / (6 * parameters),
        note=note,
    )


def _base_preset(shape: ModelShape) -> str:
    """The preset the command starts from: the shape's own, else the grid preset nearest in N (its shape is then
    replaced by --model-overrides)."""
    if shape.nearest_preset:
        return shape.nearest_preset
    sizes = {name: PLMConfig(**PRESETS[name]).num_parameters(include_embeddings=False) for name in GRID_PRESETS}
    return min(sizes, key=lambda name: abs(math.log(sizes[name] / shape.parameters)))


def train_command(
    shape: ModelShape,
    objective: str,
    tokens: float,
    flops: float,
    clm_share: float | None = None,
    train_file: str = DEFAULT_TRAIN_FILE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pack_length: int = DEFAULT_PACK_LENGTH,
) -> TrainCommand:
    """The `plm pretrain` arguments that train `shape` on `tokens` tokens in packed rows of `pack_length`
    (`clm_share` given: CLM then MLM, `--objective clm-mlm`)."""
    tokens_per_step = batch_size * pack_length
    max_steps = max(1, math.ceil(tokens / tokens_per_step))
    every = max(1, math.ceil(max_steps / EVALS_PER_RUN))
    argv = ["pretrain", "--preset", _base_preset(shape)]
    if not shape.nearest_preset:
        argv += ["--model-overrides", json.dumps(shape.model_overrides())]
    argv += ["--objective", "clm-mlm" if clm_share is not None else objective]
    if clm_share is not None:
        argv += ["--transfer-fraction", f"{clm_share:g}"]
    argv += ["--train-file", train_file, "--crop-length", str(pack_length - 2), "--pack-length", str(pack_length)]
    argv += ["--batch-size", str(batch_size), "--max-steps", str(max_steps)]
    argv += ["--eval-steps", str(every), "--save-steps", str(every)]
    argv += ["--output-dir", f"runs/plan_{objective}_{f'{flops:.0e}'.replace('+', '')}"]
    return TrainCommand(
        argv=argv,
        max_steps=max_steps,
        tokens_per_step=tokens_per_step,
        batch_size=batch_size,
        pack_length=pack_length,
        train_file=train_file,
    )


def select_law(objective: str, laws: str = "released", fit_path: str | Path | None = None, approach: str = "isoflop"):
    """The law a plan uses: your fit when `fit_path` is given, else `LAWS[laws]`."""
    if fit_path is not None:
        return law_from_fit(fit_path, objective, approach)
    if laws not in LAWS:
        raise ValueError(f"laws must be one of {', '.join(LAWS)}, got {laws!r}")
    return LAWS[laws][objective]


def _check_batching(batch_size: int, pack_length: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    limit = MODERN_ARCHITECTURE["max_position_embeddings"]
    if not 3 <= pack_length <= limit:
        raise ValueError(f"pack length must be between 3 and the model's {limit} positions, got {pack_length}")


def _plan_warnings(flops: float, n_opt: float, d_opt: float, shape: ModelShape, law: ScalingLaw) -> list[str]:
    warnings = []
    if abs(math.log(shape.parameters / n_opt)) > math.log(1.05):
        warnings.append(f"the nearest GPU-friendly shape has {shape.parameters / n_opt:.2f}× N_opt")
    ratio = 6 * n_opt * d_opt / flops
    if abs(math.log(ratio)) > math.log(1.2):
        warnings.append(f"the law's 6·N_opt·D_opt is {ratio:.2f}× C: its N and D laws were fitted separately")
    if law.name in LAWS and not 1e18 <= flops <= 1e21:
        warnings.append(f"C = {flops:.3g} is outside 1e18-1e21, the budgets the laws were fitted on: an extrapolation")
    return warnings


def plan(
    flops: float,
    objective: str = "mlm",
    transfer: bool = False,
    clm_share: float = DEFAULT_TRANSFER_SHARE,
    fit_path: str | Path | None = None,
    approach: str = "isoflop",
    laws: str = "released",
    train_file: str = DEFAULT_TRAIN_FILE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pack_length: int = DEFAULT_PACK_LENGTH,
) -> Plan:
    """N_opt, D_opt, a concrete shape near N_opt and the `plm pretrain` command for a budget of `flops` (C = 6·N·D).

    `laws` picks the authors' released laws ("released") or the paper's exponents ("paper"); `fit_path` uses your
    `plm scaling fit` JSON instead. `transfer=True` plans CLM then MLM on one model (objective must be mlm): N from
    the MLM law at the whole budget, `clm_share` of the compute on CLM.
    """
    if not (flops > 0 and math.isfinite(flops)):
        raise ValueError(f"flops must be a positive number, got {flops}")
    if objective not in ("mlm", "clm"):
        raise ValueError(f"objective must be 'mlm' or 'clm', got {objective!r}")
    if transfer and objective != "mlm":
        raise ValueError("--transfer plans CLM pre-training followed by MLM: use --objective mlm")
    _check_batching(batch_size, pack_length)
    law = select_law(objective, laws, fit_path, approach)
    n_opt, d_opt = float(law.n_opt(flops)), float(law.d_opt(flops))
    shape = shape_for_parameters(n_opt)
    tokens = flops / (6 * shape.parameters)
    split = transfer_split(flops, shape.parameters, clm_share) if transfer else None
    command = train_command(
        shape, objective, tokens, flops, clm_share if transfer else None, train_file, batch_size, pack_length
    )
    return Plan(
        objective=objective,
        flops=flops,
        n_opt=n_opt,
        d_opt=d_opt,
        shape=shape,
        tokens=tokens,
        tokens_per_parameter=tokens / shape.parameters,
        expected_loss=float(law.loss(shape.parameters, tokens)) if law.loss is not None else None,
        law={
            "name": law.name,
            "objective": law.objective,
            "n_opt": asdict(law.n_opt),
            "d_opt": asdict(law.d_opt),
            "loss": asdict(law.loss) if law.loss else None,
            "source": law.source,
            "verified": law.verified,
        },
        command=command,
        transfer=split,
        warnings=_plan_warnings(flops, n_opt, d_opt, shape, law),
    )


def place_on_law(parameters: float, tokens: float, objective: str) -> dict[str, float] | None:
    """Where a trained model sits against the default (released) law at its own compute C = 6·N·D: N/N_opt and
    D/D_opt (None for objectives without a law, e.g. glm)."""
    law = PUBLISHED_LAWS.get("mlm" if objective == "clm-mlm" else objective)
    if law is None:
        return None
    flops = 6.0 * parameters * tokens
    return {
        "flops": flops,
        "n_opt": float(law.n_opt(flops)),
        "d_opt": float(law.d_opt(flops)),
        "n_ratio": parameters / float(law.n_opt(flops)),
        "d_ratio": tokens / float(law.d_opt(flops)),
    }
