"""Compute-optimal planning: from a FLOPs budget to N_opt, D_opt, a concrete model shape and the expected loss.

Default laws are Cheng et al. 2024 ("Training Compute-Optimal Protein Language Models", NeurIPS 2024,
arXiv 2411.02142), C = 6·N·D with N the non-embedding parameters:

| objective | N_opt | D_opt |
|---|---|---|
| CLM | 1.26e-3 · C^0.578 | 1.23e2 · C^0.422 |
| MLM | 6.19e-8 · C^0.776 | 2.02e6 · C^0.230 |

What was verified, and how (see docs/scaling.md):

- The exponents are the ones the paper's abstract-level summaries and the released data's SOURCE.txt give.
- The coefficients k could not be read from the paper text here (only its abstract was reachable); they are the
  values as recalled from the paper's fitted equations and are checked three ways instead: 6·k_N·k_D ≈ 1 as
  C = 6·N·D requires (CLM 0.93; MLM 0.75·C^0.006 = 1.00 at C = 1e21); the authors' released plotting notebook fits
  N_opt = 1.36e-7·C^0.760 for MLM, which agrees with 6.19e-8·C^0.776 to 1% at 1e21; and both laws land within
  the spread of the IsoFLOP minima refit from the released logs (`plm scaling validate`).
- Expected loss uses the parametric law L(N, D) = E + A/N^α + B/D^β. Its coefficients are the paper's Table A9 as
  quoted by the authors' repository (analysis/README.md): CLM E 2.12, A 143.9, B 22036.5, α 0.367, β 0.496; MLM
  E "≈0", A 3.365, B 7.569, α 0.042, β 0.099 (E = 0 used). Not checked against the paper text; the docs compare
  them with the released final losses.
- Transfer (CLM pre-training, then MLM): the paper finds about 10-20% of the compute on CLM best. Its
  "effectively transferred tokens" formula's constants could not be verified, so the planner implements the
  stated range (default share 15%, the trainer's `--transfer-fraction` default), not that formula.

A fit written by `plm scaling fit` replaces these (`plan(..., fit_path=...)`), per objective.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..configuration_plm import PLMConfig
from ..training.presets import MODERN_ARCHITECTURE, PRESETS
from .fit import PowerLaw, load_fits
from .runs import format_count

PAPER = "Cheng et al. 2024, Training Compute-Optimal Protein Language Models (arXiv 2411.02142)"
HEAD_DIM = 64
# The compute-optimal presets whose depth/width rule a planned shape follows.
GRID_PRESETS = ("plm_3m", "plm_10m", "plm_25m", "plm_50m", "plm_100m", "plm_300m", "plm_1b", "plm_3b")
TRANSFER_SHARE_RANGE = (0.10, 0.20)
DEFAULT_TRANSFER_SHARE = 0.15


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
    source: str
    verified: str  # how far the constants were checked


PUBLISHED_LAWS: dict[str, ScalingLaw] = {
    "clm": ScalingLaw(
        objective="clm",
        n_opt=PowerLaw(1.26e-3, 0.578),
        d_opt=PowerLaw(1.23e2, 0.422),
        loss=LossLaw(E=2.12, A=143.9, B=22036.5, alpha=0.367, beta=0.496),
        source=PAPER,
        verified=(
            "exponents as published; coefficients recalled, not read from the paper text here (consistent with "
            "C = 6ND and the released logs); loss law: Table A9 as quoted in the authors' repository"
        ),
    ),
    "mlm": ScalingLaw(
        objective="mlm",
        n_opt=PowerLaw(6.19e-8, 0.776),
        d_opt=PowerLaw(2.02e6, 0.230),
        loss=LossLaw(E=0.0, A=3.365, B=7.569, alpha=0.042, beta=0.099),
        source=PAPER,
        verified=(
            "exponents as published; coefficients recalled, not read from the paper text here (consistent with "
            "C = 6ND, the authors' notebook and the released logs); loss law: Table A9 as quoted in the authors' "
            "repository, with E reported as ≈0 (0 used)"
        ),
    ),
}


@dataclass
class ModelShape:
    """A concrete model near a target N: the package's modern architecture, head_dim 64, depth from width."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    head_dim: int
    intermediate_size: int
    parameters: int  # exact non-embedding N (PLMConfig.num_parameters)
    nearest_preset: str | None  # a preset with exactly this shape, if any

    def config(self, **overrides: Any) -> PLMConfig:
        return PLMConfig(
            **{
                **MODERN_ARCHITECTURE,
                "num_hidden_layers": self.num_hidden_layers,
                "hidden_size": self.hidden_size,
                "num_attention_heads": self.num_attention_heads,
                **overrides,
            }
        )

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
    transfer: TransferPlan | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        """The plan as the text `plm scaling plan` prints."""
        shape = self.shape
        law = self.law
        mode = f"{self.objective.upper()}{', CLM->MLM transfer' if self.transfer else ''}"
        n_law = f"N_opt = {law['n_opt']['coefficient']:.3g}·C^{law['n_opt']['exponent']:.3f}"
        d_law = f"D_opt = {law['d_opt']['coefficient']:.3g}·C^{law['d_opt']['exponent']:.3f}"
        lines = [
            f"compute budget C        {self.flops:.3g} FLOPs ({mode})",
            f"law                     {n_law}, {d_law}  [{law['source']}]",
            f"N_opt                   {format_count(self.n_opt)} non-embedding parameters",
            f"D_opt                   {format_count(self.d_opt)} tokens",
            f"model                   {shape.num_hidden_layers} layers × hidden {shape.hidden_size}, "
            f"{shape.num_attention_heads} heads × {shape.head_dim}, MLP {shape.intermediate_size} (SwiGLU)"
            + (f"  = preset {shape.nearest_preset}" if shape.nearest_preset else ""),
            f"N (exact)               {shape.parameters:,} ({shape.parameters / self.n_opt:.2f}× N_opt)",
            f"tokens for this N       {format_count(self.tokens)} "
            f"(C/6N; {self.tokens_per_parameter:.1f} tokens per parameter)",
        ]
        if self.expected_loss is not None:
            lines.append(f"expected valid loss     {self.expected_loss:.3f} nats/token (parametric L(N, D))")
        if self.transfer:
            t = self.transfer
            lines.append(
                f"transfer                CLM {t.clm_share:.0%}: {t.clm_flops:.3g} FLOPs = "
                f"{format_count(t.clm_tokens)} tokens, then MLM {t.mlm_flops:.3g} FLOPs = "
                f"{format_count(t.mlm_tokens)} tokens"
            )
            lines.append(f"                        {t.note}")
        objective = f"clm-mlm --transfer-fraction {self.transfer.clm_share:g}" if self.transfer else self.objective
        command = f"plm pretrain --preset {shape.nearest_preset or 'plm_10m'} --objective {objective}"
        if not shape.nearest_preset:
            command += f" --model-overrides '{json.dumps(shape.model_overrides())}'"
        lines.append(f"train with              {command}")
        lines.append("                        and --max-steps = tokens / tokens per step (batch × sequence length)")
        lines.append(f"constants               {self.law['verified']}")
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


def shape_for_parameters(target: float, max_hidden: int = 16384) -> ModelShape:
    """The shape (modern architecture, head_dim 64, width a multiple of 64, depth from `depth_for_width`) whose
    exact non-embedding N is closest to `target` in log space."""
    if not target > 0:
        raise ValueError(f"target parameters must be positive, got {target}")
    best: tuple[float, ModelShape] | None = None
    for hidden in range(HEAD_DIM, max_hidden + 1, HEAD_DIM):
        layers = depth_for_width(hidden)
        config = PLMConfig(
            **{
                **MODERN_ARCHITECTURE,
                "num_hidden_layers": layers,
                "hidden_size": hidden,
                "num_attention_heads": hidden // HEAD_DIM,
            }
        )
        n = config.num_parameters(include_embeddings=False)
        distance = abs(math.log(n / target))
        if best is None or distance < best[0]:
            preset = next(
                (
                    name
                    for name in GRID_PRESETS
                    if PRESETS[name]["hidden_size"] == hidden and PRESETS[name]["num_hidden_layers"] == layers
                ),
                None,
            )
            best = (
                distance,
                ModelShape(
                    num_hidden_layers=layers,
                    hidden_size=hidden,
                    num_attention_heads=hidden // HEAD_DIM,
                    head_dim=HEAD_DIM,
                    intermediate_size=config.intermediate_size,
                    parameters=n,
                    nearest_preset=preset,
                ),
            )
    assert best is not None
    return best[1]


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
    )


def transfer_split(flops: float, parameters: float, clm_share: float = DEFAULT_TRANSFER_SHARE) -> TransferPlan:
    """Split `flops` between CLM pre-training and MLM on one model of `parameters` (tokens = C/(6N) per phase)."""
    if not 0 < clm_share < 1:
        raise ValueError(f"clm_share must be in (0, 1), got {clm_share}")
    low, high = TRANSFER_SHARE_RANGE
    note = f"the paper finds {low:.0%}-{high:.0%} of compute on CLM best (its transfer formula is not used here)"
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


def plan(
    flops: float,
    objective: str = "mlm",
    transfer: bool = False,
    clm_share: float = DEFAULT_TRANSFER_SHARE,
    fit_path: str | Path | None = None,
    approach: str = "isoflop",
) -> Plan:
    """N_opt, D_opt, a concrete shape near N_opt and its expected loss for a budget of `flops` (C = 6·N·D).

    `transfer=True` plans CLM then MLM on one model (objective must be mlm): N from the MLM law at the whole budget,
    `clm_share` of the compute on CLM. `fit_path` uses your `plm scaling fit` JSON instead of the paper's laws.
    """
    if not (flops > 0 and math.isfinite(flops)):
        raise ValueError(f"flops must be a positive number, got {flops}")
    if objective not in ("mlm", "clm"):
        raise ValueError(f"objective must be 'mlm' or 'clm', got {objective!r}")
    if transfer and objective != "mlm":
        raise ValueError("--transfer plans CLM pre-training followed by MLM: use --objective mlm")
    law = law_from_fit(fit_path, objective, approach) if fit_path is not None else PUBLISHED_LAWS[objective]
    n_opt, d_opt = float(law.n_opt(flops)), float(law.d_opt(flops))
    shape = shape_for_parameters(n_opt)
    tokens = flops / (6 * shape.parameters)
    warnings = []
    if abs(math.log(shape.parameters / n_opt)) > math.log(1.25):
        warnings.append(f"the nearest shape has {shape.parameters / n_opt:.2f}× N_opt")
    ratio = 6 * n_opt * d_opt / flops
    if abs(math.log(ratio)) > math.log(1.2):
        warnings.append(f"the law's 6·N_opt·D_opt is {ratio:.2f}× C: its N and D laws were fitted separately")
    expected = float(law.loss(shape.parameters, tokens)) if law.loss is not None else None
    law_dict = {
        "objective": law.objective,
        "n_opt": asdict(law.n_opt),
        "d_opt": asdict(law.d_opt),
        "loss": asdict(law.loss) if law.loss else None,
        "source": law.source,
        "verified": law.verified,
    }
    split = transfer_split(flops, shape.parameters, clm_share) if transfer else None
    return Plan(
        objective=objective,
        flops=flops,
        n_opt=n_opt,
        d_opt=d_opt,
        shape=shape,
        tokens=tokens,
        tokens_per_parameter=tokens / shape.parameters,
        expected_loss=expected,
        law=law_dict,
        transfer=split,
        warnings=warnings,
    )


def place_on_law(parameters: float, tokens: float, objective: str) -> dict[str, float] | None:
    """Where a trained model sits against the published law at its own compute C = 6·N·D: N/N_opt and D/D_opt
    (None for objectives without a published law, e.g. glm)."""
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
