"""Scaling laws for protein language models (Cheng et al. 2024, arXiv 2411.02142).

- `runs`: run tables (`RunPoint`, `RunTable`) from trainer folders, CSV/JSON tables and the authors' released logs.
- `fit`: Hoffmann et al.'s approaches 1-3 (`fit_envelope`, `fit_isoflop`, `fit_parametric`) with seeded bootstrap
  intervals; `save_fits` / `load_fits`.
- `plan`: N_opt, D_opt, a GPU-friendly model shape and the `plm pretrain` command for a FLOPs budget (`plan`), from
  the authors' released laws (`LAWS["released"]`), the paper's exponents (`LAWS["paper"]`) or a fit.
- `plots`: IsoFLOP profiles, frontiers with bootstrap bands, loss vs compute (matplotlib, PNG).
- `validate`: refits of the released logs, the mask-ratio ablation and the transfer gain.
- `sweep`: train a grid of shapes × budgets within a wall-clock budget (`run_sweep`).

The command line, `plm scaling plan | fit | validate | sweep`, is `modeling_plm.cli.scaling`.

C = 6·N·D with N the non-embedding parameters (`modeling_plm.training.flops`).
"""

from .fit import (
    FrontierFit,
    OptimumPoint,
    ParametricFit,
    PowerLaw,
    ScalingFits,
    fit_all,
    fit_envelope,
    fit_isoflop,
    fit_parametric,
    load_fits,
    save_fits,
)
from .plan import (
    LAWS,
    PUBLISHED_LAWS,
    LossLaw,
    ModelShape,
    Plan,
    ScalingLaw,
    TrainCommand,
    TransferPlan,
    plan,
    shape_for_parameters,
)
from .runs import (
    RunPoint,
    RunTable,
    read_csv_table,
    read_json_table,
    read_released_logs,
    read_run_dir,
    read_runs,
    write_csv_table,
    write_json_table,
)

__all__ = [
    "LAWS",
    "PUBLISHED_LAWS",
    "FrontierFit",
    "LossLaw",
    "ModelShape",
    "OptimumPoint",
    "ParametricFit",
    "Plan",
    "PowerLaw",
    "RunPoint",
    "RunTable",
    "ScalingFits",
    "ScalingLaw",
    "TrainCommand",
    "TransferPlan",
    "fit_all",
    "fit_envelope",
    "fit_isoflop",
    "fit_parametric",
    "load_fits",
    "plan",
    "read_csv_table",
    "read_json_table",
    "read_released_logs",
    "read_run_dir",
    "read_runs",
    "save_fits",
    "shape_for_parameters",
    "write_csv_table",
    "write_json_table",
]
