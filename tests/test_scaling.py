"""Scaling-law toolkit: fits recover a known law, the planner follows the published formulas, the released logs
parse to the counts found by inspecting them, trainer folders read back, and bad input fails clearly."""

import json
import math
import random
import re
import shlex

import numpy as np
import pytest

from modeling_plm.cli.main import main as cli_main
from modeling_plm.cli.scaling import main as scaling_main
from modeling_plm.scaling.fit import fit_envelope, fit_isoflop, fit_parametric, load_fits
from modeling_plm.scaling.plan import (
    LAWS,
    PAPER_EXPONENTS,
    PUBLISHED_LAWS,
    RELEASED_N_OPT,
    plan,
    shape_for_parameters,
    transfer_split,
)
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
from modeling_plm.training.presets import config_from_preset

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


def source_txt() -> str:
    return (data_path("scaling_protein_lm") / "SOURCE.txt").read_text()


def test_law_constants_are_the_ones_source_txt_records():
    text = source_txt()
    # "CLM  N_opt = 3.3057090957451653e-03 * C^0.5561066052168413": the decoded law_weights/*_app3_law.pkl
    released = {
        name.lower(): (float(k), float(a))
        for name, k, a in re.findall(r"^\s*(CLM|MLM)\s+N_opt = ([0-9.e+-]+) \* C\^([0-9.]+)\s*$", text, re.M)
    }
    assert set(released) == {"clm", "mlm"} and released == RELEASED_N_OPT
    # "CLM: N_opt ∝ C^0.578, D_opt ∝ C^0.422      MLM: N_opt ∝ C^0.776, D_opt ∝ C^0.230": the paper's exponents
    paper = {
        name.lower(): (float(a), float(b))
        for name, a, b in re.findall(r"(CLM|MLM): N_opt ∝ C\^([0-9.]+), D_opt ∝ C\^([0-9.]+)", text)
    }
    assert paper == PAPER_EXPONENTS
    # "At C = 1e21 the released MLM law gives N_opt = 1.23e9 and the released CLM law 1.58e9"
    words = " ".join(text.split())  # the sentence wraps
    match = re.search(r"released MLM law gives N_opt = ([0-9.]+e\d+) and the released CLM law ([0-9.]+e\d+)", words)
    for objective, quoted in zip(("mlm", "clm"), match.groups()):
        assert float(f"{LAWS['released'][objective].n_opt(1e21):.3g}") == float(quoted)
    for objective in ("clm", "mlm"):
        law, anchored = LAWS["released"][objective], LAWS["paper"][objective]
        assert (law.n_opt.coefficient, law.n_opt.exponent) == RELEASED_N_OPT[objective]
        assert (anchored.n_opt.exponent, anchored.d_opt.exponent) == PAPER_EXPONENTS[objective]
        # the paper-exponent laws pass through the released allocation at 1e21, and C = 6 N_opt D_opt there
        assert anchored.n_opt(1e21) == pytest.approx(law.n_opt(1e21), rel=1e-12)
        assert 6 * anchored.n_opt(1e21) * anchored.d_opt(1e21) == pytest.approx(1e21, rel=1e-12)
    assert PUBLISHED_LAWS is LAWS["released"]


def test_planner_follows_the_laws_by_hand():
    # MLM 1e20: 20 * 0.7598018682 = 15.1960374; 10^15.1960374 = 1.57050e15; * 1.36463562e-7 = 2.1432e8.
    # CLM 1e20: 20 * 0.5561066052 = 11.1221321; 10^11.1221321 = 1.32474e11; * 3.30570910e-3 = 4.3792e8.
    # D_opt = C / (6 N_opt): MLM 1e20 -> 1e20 / (6 * 2.1432e8 = 1.28592e9) = 7.7766e10.
    # Paper MLM 1e20: N_rel(1e21) = 1.36463562e-7 * 10^15.9558392 (= 9.03323e15) = 1.23271e9; * 10^-0.776
    # (= 0.167494) = 2.0647e8.
    assert plan(1e20, "mlm").n_opt == pytest.approx(2.1432e8, rel=1e-4)
    assert plan(1e20, "clm").n_opt == pytest.approx(4.3792e8, rel=1e-4)
    assert plan(1e20, "mlm").d_opt == pytest.approx(7.7766e10, rel=1e-4)
    assert plan(1e20, "mlm", laws="paper").n_opt == pytest.approx(2.0647e8, rel=1e-4)
    result = plan(1e21, "clm")
    assert result.law["name"] == "released" and "CLM_app3_law.pkl" in result.law["source"]
    assert "SOURCE.txt" in result.law["source"] and result.expected_loss is None
    text = result.render()
    assert "laws                    released: N_opt = 0.003306·C^0.5561" in text
    paper = plan(1e21, "clm", laws="paper")
    assert paper.law["name"] == "paper" and "C^0.5780" in paper.render() and "anchored" in paper.law["verified"]
    with pytest.raises(ValueError, match="laws must be one of released, paper"):
        plan(1e21, "clm", laws="recalled")


@pytest.mark.parametrize("laws", ["released", "paper"])
def test_planned_shapes_are_gpu_friendly_and_near_n_opt(laws):
    for flops in np.logspace(17, 23, 25):
        for objective in ("clm", "mlm"):
            result = plan(float(flops), objective, laws=laws)
            shape, argv = result.shape, result.command.argv
            assert shape.hidden_size % 128 == 0 and isinstance(shape.num_hidden_layers, int)
            assert shape.head_dim in (64, 128) and shape.num_attention_heads * shape.head_dim == shape.hidden_size
            # the model the command trains: its preset with its overrides
            flags = dict(zip(argv, argv[1:]))
            config = config_from_preset(flags["--preset"], **json.loads(flags.get("--model-overrides", "{}")))
            assert config.num_parameters(include_embeddings=False) == shape.parameters
            assert (config.hidden_size, config.num_attention_heads) == (shape.hidden_size, shape.num_attention_heads)
            assert result.tokens == pytest.approx(flops / (6 * shape.parameters))
            assert int(flags["--max-steps"]) == math.ceil(result.tokens / (256 * 1024))
            # the shape grid's spacing (measured on a dense sweep of N_opt): within 6% of N_opt above 30M
            # non-embedding parameters, 2.5% above 300M
            off = abs(shape.parameters / result.n_opt - 1)
            assert off <= (0.025 if result.n_opt >= 3e8 else 0.06 if result.n_opt >= 3e7 else 1.0)
    # a preset of the grid with a width multiple of 128 plans back to itself
    for name in ("plm_3m", "plm_100m", "plm_300m", "plm_3b"):
        assert shape_for_parameters(config_from_preset(name).num_parameters()).nearest_preset == name


def test_the_printed_command_runs(tmp_path, capsys):
    rng = random.Random(0)
    fasta = tmp_path / "train.fasta"
    fasta.write_text(
        "".join(f">s{i}\n{''.join(rng.choice('ACDEFGHIKLMNPQRSTVWY') for _ in range(60))}\n" for i in range(2000))
    )
    flags = ["--objective", "clm", "--train-file", str(fasta), "--batch-size", "2", "--pack-length", "128"]
    assert scaling_main(["plan", "--flops", "3e15", *flags]) == 0
    printed = capsys.readouterr().out
    command = next(line for line in printed.splitlines() if line.startswith("train with")).removeprefix("train with")
    argv = shlex.split(command)
    assert argv[:2] == ["plm", "pretrain"] and "--max-steps" in argv
    assert scaling_main(["plan", "--flops", "3e15", *flags, "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert shlex.split(planned["command"]["text"]) == argv and planned["law"]["name"] == "released"
    # run it as printed, with only the step count and the output folder overridden
    out = tmp_path / "run"
    assert cli_main([*argv[1:], "--max-steps", "1", "--output-dir", str(out)]) == 0
    record = json.loads((out / "final" / "training_record.json").read_text())
    assert record["non_embedding_parameters"] == planned["shape"]["parameters"]
    assert record["steps"] == 1 and [phase["objective"] for phase in record["phases"]] == ["clm"]


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


def test_envelope_refuses_runs_without_a_curve(synthetic):
    finals = RunTable([p for p in synthetic.points if p.final])
    with pytest.raises(ValueError, match=r"at least two points per run .* 54 run\(s\) have one: 'n") as error:
        fit_envelope(finals, "mlm", bootstrap=0)
    assert "and 49 more" in str(error.value)
    short = synthetic.points[0].run  # one run reduced to its final point
    one_short = RunTable([p for p in synthetic.points if p.final or p.run != short])
    with pytest.raises(ValueError, match=rf"1 run\(s\) have one: '{re.escape(short)}' \(no file\)"):
        fit_envelope(one_short, "mlm", bootstrap=0)


def test_figures_are_readable_and_mark_what_the_fits_left_out(tmp_path, synthetic):
    from PIL import Image

    from modeling_plm.scaling.plots import (
        frontier_figure,
        isoflop_figure,
        loss_vs_compute_figure,
        plot_frontier,
        plot_isoflop,
        plot_loss_vs_compute,
    )

    # a budget with two sizes only: left out of the IsoFLOP fit
    extra = [RunPoint(f"extra{i}", "mlm", n, 1e14, 1e14 / (6 * n), 1e14, 3.0 + i / 10, True) for i, n in
             enumerate((3e3, 6e3))]  # fmt: skip
    table = RunTable(synthetic.points + extra)
    isoflop = fit_isoflop(table, "mlm", bootstrap=5)
    assert isoflop.excluded_budgets == [1e14]
    capped = fit_envelope(synthetic, "mlm", bootstrap=5, max_flops=1e17)
    assert capped.excluded and all(p.flops > 1e17 for p in capped.excluded)
    assert all(p.flops <= 1e17 for p in capped.points) and capped.flops_cap == 1e17

    def legend_texts(figure) -> list[str]:
        texts = figure.axes[0].get_legend().get_texts()
        assert all(text.get_fontsize() >= 9 for text in texts)
        return [text.get_text() for text in texts]

    figure = isoflop_figure(table, isoflop)
    assert "budget left out of the fit (see the report)" in legend_texts(figure)
    assert "fitted minimum N_opt" in legend_texts(figure)
    assert figure.axes[1].get_ylabel() == "budget C (FLOPs)"  # colour is the budget: a colour bar says so
    figure = frontier_figure([isoflop, capped], reference={"law": PUBLISHED_LAWS["mlm"].n_opt})
    assert {"envelope: above C = 1e+17, not fitted", "envelope fit range ends (C = 1e+17)"} <= set(legend_texts(figure))
    figure = loss_vs_compute_figure(synthetic, [capped, isoflop], "mlm")
    assert "envelope: above C = 1e+17, not fitted" in legend_texts(figure)
    assert figure.axes[1].get_ylabel() == "non-embedding parameters N"
    import matplotlib.pyplot as plt

    plt.close("all")
    paths = [
        plot_isoflop(table, isoflop, tmp_path / "isoflop.png"),
        plot_frontier([isoflop, capped], tmp_path / "frontier.png"),
        plot_loss_vs_compute(synthetic, tmp_path / "loss.png", [capped], "mlm"),
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (1050, 720) and image.info["dpi"] == pytest.approx((150, 150), abs=0.1)


def test_validation_report_separates_points_beyond_the_largest_isoflop_budget():
    from modeling_plm.scaling.validate import format_report, validate

    result = validate(data_path("scaling_protein_lm"), bootstrap=3, parametric_bootstrap=0)
    report = format_report(result)
    for objective, full_range in (("clm", "1.2e+22"), ("mlm", "1.7e+22")):
        info = result["objectives"][objective]
        assert info["isoflop_largest_budget"] == pytest.approx(1e21, rel=0.01)
        capped, full = info["envelope_isoflop_budgets_only"], info["envelope"]
        assert (
            max(capped["budgets"])
            <= info["isoflop_largest_budget"]
            < min(info["envelope_beyond_largest_budget"]["flops"])
        )
        assert capped["points"] + info["envelope_beyond_largest_budget"]["points"] == full["points"] == 40
        assert f"envelope, full range (to {full_range})" in report
    assert report.count("envelope, C <= 1e+21 (IsoFLOP budgets only)") == 2
    assert report.count("beyond the largest IsoFLOP budget") == 2
    # the largest runs carry the full-range fit: the 7B CLM and the 10B MLM run, trained past every named budget
    assert "clm/7B/gpt_7b_1024_noreg_all1.32ep_pg2xlg_bf16 (6 points" in report
    assert "mlm/10B/mlm_10b_all1.33ep_noreg_tk263b_cl1024_bsz1m_scratch (7 points" in report
    # released law and paper exponents side by side, per budget
    assert "released law N_opt = 1.365e-07·C^0.7598" in report and "paper a = 0.776" in report
