"""Scaling-law toolkit: fits recover a known law, the planner follows the published formulas, the released logs
parse to the counts found by inspecting them, trainer folders read back, and bad input fails clearly."""

import json
import math
import random

import numpy as np
import pytest

from modeling_plm import PLMConfig
from modeling_plm.cli.scaling import main as scaling_main
from modeling_plm.scaling.fit import fit_envelope, fit_isoflop, fit_parametric, load_fits
from modeling_plm.scaling.plan import PUBLISHED_LAWS, plan, shape_for_parameters, transfer_split
from modeling_plm.scaling.runs import (
    RunPoint,
    RunTable,
    read_csv_table,
    read_json_table,
    read_released_logs,
    read_run_dir,
    write_csv_table,
    write_json_table,
)
from modeling_plm.scaling.validate import mask_ratio_ablation, read_transfer_curves, transfer_gains
from modeling_plm.training.presets import MODERN_ARCHITECTURE, config_from_preset

from .conftest import data_path

# A known law: L = E + A/N^alpha + B/D^beta, so N_opt = G (C/6)^a with a = beta/(alpha+beta) and
# G = (alpha A/(beta B))^(1/(alpha+beta)).
E, A, B, ALPHA, BETA = 1.8, 400.0, 1200.0, 0.34, 0.28
TRUE_A = BETA / (ALPHA + BETA)  # 0.4516
TRUE_B = ALPHA / (ALPHA + BETA)  # 0.5484
G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
TRUE_K_N = G * 6**-TRUE_A  # N_opt = 0.1036 · C^0.4516


def synthetic_runs(noise: float = 0.002, seed: int = 0) -> RunTable:
    """9 sizes (1/8x to 8x N_opt) at each of 6 budgets, 10 points along each curve, multiplicative noise."""
    rng = np.random.default_rng(seed)
    points = []
    for budget in (1e15, 3e15, 1e16, 3e16, 1e17, 3e17):
        n_opt = G * (budget / 6) ** TRUE_A
        for factor in np.exp(np.linspace(math.log(1 / 8), math.log(8), 9)):
            n = n_opt * factor
            d_final = budget / (6 * n)
            for step in range(1, 11):
                d = d_final * step / 10
                loss = (E + A / n**ALPHA + B / d**BETA) * math.exp(rng.normal(0, noise))
                points.append(RunPoint(f"n{n:.4g}_c{budget:.0e}", "mlm", n, budget, d, 6 * n * d, loss, step == 10))
    return RunTable(points)


@pytest.fixture(scope="module")
def synthetic() -> RunTable:
    return synthetic_runs()


def test_isoflop_recovers_the_known_allocation_with_an_interval_that_covers_it(synthetic):
    fit = fit_isoflop(synthetic, "mlm", bootstrap=60, seed=0)
    assert len(fit.points) == 6 and fit.skipped == []
    assert fit.n_opt.exponent == pytest.approx(TRUE_A, abs=0.01)
    assert fit.d_opt.exponent == pytest.approx(TRUE_B, abs=0.01)
    assert fit.n_opt.coefficient == pytest.approx(TRUE_K_N, rel=0.15)
    low, high = fit.n_opt.exponent_ci
    assert low <= TRUE_A <= high and high - low < 0.05
    # each budget's minimum is where the law puts it
    for point in fit.points:
        assert point.parameters == pytest.approx(TRUE_K_N * point.flops**TRUE_A, rel=0.1)
    assert len(fit.n_opt_replicates) == 60 - fit.bootstrap_failures
    local = fit_isoflop(synthetic, "mlm", bootstrap=0, window=5)  # parabolas through the 5 sizes around each minimum
    assert local.n_opt.exponent == pytest.approx(TRUE_A, abs=0.01) and local.n_opt.exponent_ci is None


def test_envelope_recovers_the_allocation_from_the_curves(synthetic):
    fit = fit_envelope(synthetic, "mlm", bootstrap=30, seed=0)
    assert fit.n_opt.exponent == pytest.approx(TRUE_A, abs=0.03)
    assert fit.n_opt.exponent + fit.d_opt.exponent == pytest.approx(1.0, abs=1e-9)  # D = C/(6N) exactly
    assert fit.n_opt.exponent_ci[0] <= fit.n_opt.exponent <= fit.n_opt.exponent_ci[1]


def test_parametric_fit_recovers_the_law_and_its_exponents(synthetic):
    fit = fit_parametric(synthetic, "mlm", bootstrap=10, seed=0, use="all")
    assert fit.alpha == pytest.approx(ALPHA, abs=0.02)
    assert fit.beta == pytest.approx(BETA, abs=0.02)
    assert fit.E == pytest.approx(E, abs=0.05)
    assert fit.n_opt.exponent == pytest.approx(TRUE_A, abs=0.01)
    assert fit.d_opt.exponent == pytest.approx(TRUE_B, abs=0.01)
    assert fit.n_opt.coefficient == pytest.approx(TRUE_K_N, rel=0.1)
    assert set(fit.ci) == {"E", "A", "B", "alpha", "beta", "a", "b"}
    assert float(fit.predict(1e6, 1e9)) == pytest.approx(E + A / 1e6**ALPHA + B / 1e9**BETA, rel=0.01)


def test_bootstrap_is_seeded(synthetic):
    first = fit_isoflop(synthetic, "mlm", bootstrap=20, seed=3)
    again = fit_isoflop(synthetic, "mlm", bootstrap=20, seed=3)
    other = fit_isoflop(synthetic, "mlm", bootstrap=20, seed=4)
    assert first.n_opt.exponent_ci == again.n_opt.exponent_ci != other.n_opt.exponent_ci


def test_planner_reproduces_the_published_formulas():
    # By hand from N_opt = k C^a: MLM 1e20 -> 6.19e-8 * 10^(20*0.776 = 15.52) = 6.19e-8 * 3.3113e15 = 2.0497e8;
    # CLM 1e20 -> 1.26e-3 * 10^(20*0.578 = 11.56) = 1.26e-3 * 3.6308e11 = 4.5748e8;
    # MLM 1e22 -> 6.19e-8 * 10^17.072 = 6.19e-8 * 1.1803e17 = 7.306e9; D_opt MLM 1e20 -> 2.02e6 * 10^4.6 = 8.042e10.
    assert plan(1e20, "mlm").n_opt == pytest.approx(2.0497e8, rel=1e-3)
    assert plan(1e20, "clm").n_opt == pytest.approx(4.5748e8, rel=1e-3)
    assert plan(1e22, "mlm").n_opt == pytest.approx(7.306e9, rel=1e-3)
    assert plan(1e20, "mlm").d_opt == pytest.approx(8.042e10, rel=1e-3)
    assert PUBLISHED_LAWS["clm"].n_opt.exponent + PUBLISHED_LAWS["clm"].d_opt.exponent == pytest.approx(1.0)
    # C = 6 N D holds for the published pairs of coefficients to within 7% (CLM) and 1% at 1e21 (MLM)
    for objective, tolerance in (("clm", 0.08), ("mlm", 0.01)):
        law = PUBLISHED_LAWS[objective]
        assert 6 * law.n_opt(1e21) * law.d_opt(1e21) == pytest.approx(1e21, rel=tolerance)


def test_planned_model_is_a_real_config_near_n_opt():
    result = plan(1e21, "mlm")
    shape = result.shape
    config = PLMConfig(
        **{
            **MODERN_ARCHITECTURE,
            "num_hidden_layers": shape.num_hidden_layers,
            "hidden_size": shape.hidden_size,
            "num_attention_heads": shape.num_attention_heads,
        }
    )
    assert shape.head_dim == config.head_dim == 64
    assert shape.parameters == config.num_parameters(include_embeddings=False)
    assert 0.8 < shape.parameters / result.n_opt < 1.25
    assert result.tokens == pytest.approx(1e21 / (6 * shape.parameters))
    assert 1.9 < result.expected_loss < 2.1  # the released 1e21 MLM runs end at 1.98-2.05
    # the depth/width rule is the presets' grid: a preset's own N plans back to that preset
    for name in ("plm_10m", "plm_100m", "plm_1b"):
        assert shape_for_parameters(config_from_preset(name).num_parameters()).nearest_preset == name


def test_transfer_plan_splits_compute_between_clm_and_mlm():
    result = plan(1e20, "mlm", transfer=True, clm_share=0.15)
    split = result.transfer
    assert split.clm_flops == pytest.approx(0.15e20) and split.mlm_flops == pytest.approx(0.85e20)
    assert split.clm_tokens + split.mlm_tokens == pytest.approx(result.tokens)
    assert "outside" in transfer_split(1e20, 1e8, 0.4).note
    with pytest.raises(ValueError, match="--objective mlm"):
        plan(1e20, "clm", transfer=True)


def test_released_logs_parse_to_the_inspected_counts():
    table = read_released_logs(data_path("scaling_protein_lm"))
    clm, mlm = table.select("clm"), table.select("mlm")
    # 124 CLM exports, 7 byte-identical copies read once; 86 MLM files, one of them extract_loss.py
    assert len(clm.runs()) == 117 and len(mlm.runs()) == 85
    # unfinished: CLM 1.2B all1ep (stops at 8.4e19 of 1.45e21), MLM 106M 1e20 (7.2e19) and 85M all1ep (1.3e19)
    assert len(clm.finals()) == 116 and len(mlm.finals()) == 83
    assert len(clm.sizes()) == 27 and len(mlm.sizes()) == 32
    assert clm.sizes()[0] == 6e6 and clm.sizes()[-1] == 7e9 and mlm.sizes()[-1] == 10e9
    assert clm.budgets() == [1e18, 3e18, 6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 1e21]
    assert mlm.budgets() == [1e18, 3e18, 1e19, 3e19, 1e20, 1.5e20, 2e20, 3e20, 4e20, 5e20, 6e20, 1e21]
    finals_at_1e21 = [p for p in mlm.finals() if p.budget == 1e21]
    assert len(finals_at_1e21) == 10
    # N comes from the folder: 13M_flops/run-gpt_10M_... is the 13M model, its final D = C/(6N)
    point = next(p for p in clm.finals() if p.run.endswith("gpt_10M_1024l_1e19flops_all0.63ep"))
    assert point.parameters == 13e6 and point.flops == pytest.approx(1.0e19, rel=0.03)
    assert point.tokens == pytest.approx(point.flops / (6 * 13e6))
    reasons = dict(table.skipped)
    assert len(table.skipped) == 8
    assert reasons["mlm_valid/approach3_flops/1.2B_flops/extract_loss.py"] == "not a CSV export"
    assert sum("byte-identical copy" in reason for reason in reasons.values()) == 7
    notes = " ".join(note for _, note in table.notes)
    assert "rebuilt from a text log" in notes and notes.count("unfinished") == 3


def test_released_ablations_best_mask_ratio_and_transfer_gain():
    root = data_path("scaling_protein_lm")
    masks = {m.size: m for m in mask_ratio_ablation(root)}
    assert set(masks) == {"85M", "154M"} and all(m.best_ratio == 0.1 for m in masks.values())
    assert all(0.1 <= m.parabola_ratio <= 0.15 for m in masks.values())
    curves, _ = read_transfer_curves(root)
    gains = {(g.objective, g.budget, g.metric): g for g in transfer_gains(curves)}
    # 10% of the compute on CLM (1e18 of 1e19): the transferred MLM is better at equal total compute
    assert gains[("mlm", 1e19, "validation")].gain_equal_compute > 0
    # 53% on CLM (5.3e20 of 1e21): worse at equal total compute, though better at equal MLM compute
    assert (
        gains[("mlm", 1e21, "validation")].gain_equal_compute
        < 0
        < gains[("mlm", 1e21, "validation")].gain_equal_target_compute
    )


def test_run_dir_of_a_real_transfer_pretrain_reads_back(tmp_path):
    from modeling_plm.training.trainer import PretrainConfig, pretrain

    rng = random.Random(0)
    fasta = tmp_path / "train.fasta"
    fasta.write_text(
        "".join(f">s{i}\n{''.join(rng.choice('ACDEFGHIKLMNPQRSTVWY') for _ in range(30))}\n" for i in range(200))
    )
    run_dir = tmp_path / "run"
    final = pretrain(
        PretrainConfig(
            preset="tiny",
            objective="clm-mlm",
            transfer_fraction=0.5,
            train_file=[str(fasta)],
            valid_fraction=0.05,
            valid_sequences=8,
            crop_length=64,
            batch_size=4,
            max_steps=4,
            log_steps=1,
            eval_steps=1,
            save_steps=4,
            output_dir=str(run_dir),
            report_to="none",
            shuffle_buffer=50,
        )
    )
    (run_dir / "scaling_run.json").write_text(json.dumps({"budget": 1e9, "run": "tiny_transfer"}))
    table = read_run_dir(run_dir)
    record = json.loads((final / "training_record.json").read_text())
    points = table.points
    assert {p.run for p in points} == {"tiny_transfer"} and {p.objective for p in points} == {"clm-mlm"}
    assert [p.final for p in points] == [False] * (len(points) - 1) + [True]
    assert all(p.budget == 1e9 for p in points)
    # tokens accumulate over both phases (2 CLM + 2 MLM steps of 4 sequences of 32 tokens)
    assert [p.tokens for p in points] == [128, 256, 384, 512]
    assert points[-1].tokens == record["tokens"] and points[-1].flops_exact == pytest.approx(record["flops"])
    assert points[-1].flops == pytest.approx(record["flops_6nd"])
    assert points[-1].loss == pytest.approx(record["final_eval"]["mlm"]["loss"])
    # a resume logs its last steps again: the re-logged rows replace the old ones, they add no tokens
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines + lines[-3:]) + "\n")
    assert read_run_dir(run_dir).points == points


def test_tables_round_trip_and_bad_tables_fail_clearly(tmp_path, synthetic):
    written = read_csv_table(write_csv_table(synthetic, tmp_path / "runs.csv"))
    assert written.points == [type(p)(**{**p.__dict__, "source": str(tmp_path / "runs.csv")}) for p in synthetic.points]
    assert len(read_json_table(write_json_table(synthetic, tmp_path / "runs.json")).points) == len(synthetic.points)

    missing = tmp_path / "missing.csv"
    missing.write_text("run,objective,parameters,tokens\nr1,mlm,1e6,1e9\n")
    with pytest.raises(ValueError, match=r"missing\.csv: missing column\(s\) loss"):
        read_csv_table(missing)
    no_axis = tmp_path / "no_axis.csv"
    no_axis.write_text("run,objective,parameters,loss\nr1,mlm,1e6,2.5\n")
    with pytest.raises(ValueError, match="tokens or flops"):
        read_csv_table(no_axis)
    bad = tmp_path / "bad.csv"
    bad.write_text("run,objective,parameters,tokens,loss\nr1,mlm,1e6,1e9,2.5\nr2,mlm,2e6,1e9,two\n")
    with pytest.raises(ValueError, match="bad.csv row 3: loss is not a number: 'two'"):
        read_csv_table(bad)
    with pytest.raises(ValueError, match="at least two runs"):
        fit_envelope(RunTable(synthetic.points[:10]), "mlm", bootstrap=0)
    with pytest.raises(ValueError, match="IsoFLOP needs two budgets"):
        fit_isoflop(RunTable([p for p in synthetic.points if p.budget == 1e15]), "mlm", bootstrap=0)
    with pytest.raises(ValueError, match="no points for objective 'clm'"):
        fit_isoflop(synthetic, "clm")
    not_a_fit = tmp_path / "not_a_fit.json"
    not_a_fit.write_text("{}")
    with pytest.raises(ValueError, match="not a `plm scaling fit` JSON"):
        load_fits(not_a_fit)


def test_cli_fit_then_plan_with_the_fit(tmp_path, synthetic, capsys):
    table_path = write_csv_table(synthetic, tmp_path / "runs.csv")
    out = tmp_path / "fit"
    assert (
        scaling_main(
            ["fit", str(table_path), "--output-dir", str(out), "--bootstrap", "20", "--parametric-bootstrap", "2"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "isoflop" in printed and "envelope" in printed and "parametric" in printed
    assert {p.name for p in out.iterdir()} >= {
        "fit.json",
        "runs.csv",
        "isoflop_mlm.png",
        "frontier_mlm.png",
        "loss_vs_compute_mlm.png",
    }
    fits = load_fits(out / "fit.json")
    assert fits["mlm"].isoflop.n_opt.exponent == pytest.approx(TRUE_A, abs=0.01)
    assert scaling_main(["plan", "--flops", "1e17", "--fit", str(out / "fit.json"), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["n_opt"] == pytest.approx(fits["mlm"].isoflop.n_opt(1e17), rel=1e-9)
    assert planned["n_opt"] == pytest.approx(TRUE_K_N * 1e17**TRUE_A, rel=0.15)
    assert scaling_main(["plan", "--flops", "-1"]) == 2
    assert "flops must be a positive number" in capsys.readouterr().err
