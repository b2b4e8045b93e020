"""A corpus of bad inputs to every `plm` command: malformed files, configs, arguments and model folders.

Each case runs the real command line (`modeling_plm.cli.main.main`) on real files and asserts the documented answer:
exit code 2 and one `plm CMD: error: ...` line naming the place (file, record or line, position or column, field or
flag), or, for a documented and counted handling, exit code 0 and the count in the output. No case may end in a
traceback. A few cases also run as a subprocess, to check what a user's terminal really shows.

Cases are written as (name, argv, expected substrings); `{tmp}` in an argument is the case's folder, `{mlm}` the tiny
masked-LM folder, `{clm}` a tiny causal-LM folder. Files a case needs are written by `FILES` beforehand.
"""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_plm import PLMForCausalLM, PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.cli.main import main

REPO = Path(__file__).resolve().parents[1]
GOOD = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"

# File name -> content (bytes or str), written into every case's folder.
FILES: dict[str, bytes | str] = {
    "good.fasta": f">P1 first\n{GOOD}\n>P2\n{GOOD[::-1]}\n",
    "empty.fasta": "",
    "blank_lines.fasta": "\n\n\n",
    "notes.txt": "this is not a FASTA file\nat all\n",
    "invalid_char.fasta": f">P1\n{GOOD}\n>bad_one\nMKTJ1AY\n",
    "lower.fasta": f">P1\n{GOOD.lower()}\n",
    "stop.fasta": f">P1\n{GOOD}*\n",
    "inner_stop.fasta": ">P1\nMKT*AYI\n",
    "gap.fasta": ">P1\nMKT-AYI\n",
    "no_sequence.fasta": f">P1\n>P2\n{GOOD}\n",
    "special_token.fasta": ">P1\nMKT<mask>AYI\n",
    "binary.fasta": bytes(range(256)) * 4,
    "truncated.fasta.gz": (lambda data: data[: len(data) // 2])(
        gzip.compress("".join(f">P{i}\n{GOOD[i % 30 :]}{GOOD[: i % 30]}\n" for i in range(400)).encode())
    ),
    "latin1.fasta": ">P1 caf\xe9\nMKT\n".encode("latin-1"),
    "good.csv": "sequence,target\n" + "".join(f"{GOOD[i:] + GOOD[:i]},{i / 10}\n" for i in range(12)),
    "extra_field.csv": "sequence,target\nMKTAYIAK,0.5\nMKTAYIAQ,0.7,oops\nMKTAYIAR,0.1\n",
    "nan_label.csv": "sequence,target\nMKTAYIAK,0.5\nMKTAYIAQ,NaN\nMKTAYIAR,0.1\n",
    "word_label.csv": "sequence,target\nMKTAYIAK,0.5\nMKTAYIAQ,high\n",
    "no_sequence_column.csv": "seq,target\nMKTAYIAK,0.5\n",
    "no_label_column.csv": "sequence,score\nMKTAYIAK,0.5\n",
    "header_only.csv": "sequence,target\n",
    "empty.csv": "",
    "bad_residue.csv": "sequence,target\nMKTAYIAK,0.5\nMKT1AYIAQ,0.7\nMKTAYIAR,0.1\n",
    "empty_sequence.csv": "sequence,target\nMKTAYIAK,0.5\n,0.7\n",
    "one_valid.csv": "sequence,target,validation\n"
    + "".join(f"{GOOD[i:] + GOOD[:i]},{i / 10},false\n" for i in range(8))
    + f"{GOOD},0.3,true\n",
    "token_len.csv": "sequence,target\nMKTAYIAK,HHHEEE\n",
    "good.yaml": "train_file: [good.fasta]\nmax_steps: 2\n",
    "syntax.yaml": "train_file: [good.fasta\nmax_steps: 2\n",
    "unknown_key.yaml": "train_file: [good.fasta]\nmax_stepz: 2\n",
    "wrong_type.yaml": "train_file: [good.fasta]\nbatch_size: four\n",
    "list.yaml": "- train_file\n- max_steps\n",
    "bool_type.yaml": "train_file: [good.fasta]\ngradient_checkpointing: maybe\n",
    "negative.yaml": "train_file: [good.fasta]\nmax_steps: -5\n",
    "finetune_unknown.yaml": "model: x\ntrain_file: good.csv\nepochz: 3\n",
    "mutations.csv": "mutant,score\nK2A,0.1\nT3V,0.2\n",
    "bad_mutations.csv": "mutant,score\nK2A,0.1\nQ3V,0.2\n",
    "no_mutant_column.csv": "variant,score\nK2A,0.1\n",
}


def mlm_folder(root: Path) -> Path:
    folder = root / "mlm"
    torch.manual_seed(0)
    PLMForMaskedLM(config_from_preset("tiny")).save_pretrained(folder)
    PLMTokenizerFast().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    mlm = mlm_folder(root)
    clm = root / "clm"
    PLMForCausalLM(config_from_preset("tiny")).save_pretrained(clm)
    PLMTokenizerFast().save_pretrained(clm)
    # Broken model folders, each from a copy of the good one.
    pickle_only = root / "pickle_only"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text((mlm / "config.json").read_text())
    torch.save(PLMForMaskedLM.from_pretrained(mlm).state_dict(), pickle_only / "pytorch_model.bin")
    truncated = root / "truncated"
    truncated.mkdir()
    for path in mlm.iterdir():
        data = path.read_bytes()
        (truncated / path.name).write_bytes(data[: len(data) // 2] if path.suffix == ".safetensors" else data)
    no_config = root / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes((mlm / "model.safetensors").read_bytes())
    other_type = root / "bert"
    other_type.mkdir()
    (other_type / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    bad_json = root / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text('{"model_type": "plm", ')
    (root / "empty_folder").mkdir()
    return {"mlm": mlm, "clm": clm, "root": root}


def embed(fasta: str, *flags: str) -> list[str]:
    return ["embed", "{mlm}", "{tmp}/" + fasta, "{tmp}/out", *flags]


def finetune(train_file: str, *flags: str) -> list[str]:
    return ["finetune", "--model", "{mlm}", "--train-file", "{tmp}/" + train_file, "--valid-fraction", "0.3", *flags]


def pretrain(*flags: str) -> list[str]:
    return ["pretrain", "--train-file", "{tmp}/good.fasta", *flags]


def m(name: str) -> str:
    """A broken model folder of the `models` fixture."""
    return "{root}/" + name


# (case id, argv, substrings the error message must contain)
ERRORS = [
    # ---- plm embed: files ----
    ("embed-missing-fasta", embed("absent.fasta"), ["absent.fasta", "not found"]),
    ("embed-fasta-is-dir", ["embed", "{mlm}", "{tmp}", "{tmp}/out"], ["is a directory"]),
    ("embed-empty-fasta", embed("empty.fasta"), ["empty.fasta", "no FASTA records"]),
    ("embed-blank-fasta", embed("blank_lines.fasta"), ["blank_lines.fasta"]),
    ("embed-not-fasta", embed("notes.txt"), ["notes.txt", "line 1", "FASTA"]),
    ("embed-binary", embed("binary.fasta"), ["binary.fasta"]),
    ("embed-truncated-gz", embed("truncated.fasta.gz"), ["truncated.fasta.gz"]),
    (
        "embed-invalid-char",
        embed("invalid_char.fasta"),
        ["bad_one", "'J'", "position 4"],
    ),
    ("embed-inner-stop", embed("inner_stop.fasta"), ["P1", "'*'", "position 4"]),
    ("embed-gap", embed("gap.fasta"), ["P1", "'-'", "position 4"]),
    ("embed-special", embed("special_token.fasta"), ["P1", "'<'", "position 4"]),
    ("embed-out-is-file", ["embed", "{mlm}", "{tmp}/good.fasta", "{tmp}/good.csv"], ["good.csv", "is a file"]),
    # ---- plm embed: arguments ----
    ("embed-token-budget-0", embed("good.fasta", "--token-budget", "0"), ["token"]),
    ("embed-shard-size-0", embed("good.fasta", "--shard-size", "0"), ["shard"]),
    ("embed-layer-99", embed("good.fasta", "--layers", "99"), ["99", "layer"]),
    ("embed-window-0", embed("good.fasta", "--window", "0"), ["window"]),
    ("embed-stride-big", embed("good.fasta", "--stride", "100000"), ["stride"]),
    ("embed-bad-device", embed("good.fasta", "--device", "gpu7"), ["gpu7"]),
    ("embed-bad-pooling", embed("good.fasta", "--pooling", "median"), ["median"]),
    ("embed-no-outputs", embed("good.fasta", "--pooling"), ["pooling"]),
    ("embed-layers-text", embed("good.fasta", "--layers", "last"), ["--layers"]),
    ("embed-missing-args", ["embed", "{mlm}"], ["required", "fasta"]),
    # ---- model folders (through plm embed, score and generate) ----
    ("model-missing", ["embed", "{tmp}/no_model", "{tmp}/good.fasta", "{tmp}/out"], ["no_model", "does not exist"]),
    (
        "model-pickle-only",
        ["embed", m("pickle_only"), "{tmp}/good.fasta", "{tmp}/out"],
        ["pytorch_model.bin", "pickle"],
    ),
    ("model-truncated", ["embed", m("truncated"), "{tmp}/good.fasta", "{tmp}/out"], ["model.safetensors"]),
    ("model-no-config", ["embed", m("no_config"), "{tmp}/good.fasta", "{tmp}/out"], ["config.json"]),
    ("model-other-type", ["embed", m("bert"), "{tmp}/good.fasta", "{tmp}/out"], ["bert"]),
    ("model-bad-json", ["embed", m("bad_json"), "{tmp}/good.fasta", "{tmp}/out"], ["config.json"]),
    ("model-empty-folder", ["embed", m("empty_folder"), "{tmp}/good.fasta", "{tmp}/out"], ["empty_folder", "config"]),
    ("model-is-file", ["embed", "{tmp}/good.csv", "{tmp}/good.fasta", "{tmp}/out"], ["good.csv"]),
    ("score-model-missing", ["score", "{tmp}/no_model", "--sequence", GOOD], ["no_model", "does not exist"]),
    ("generate-model-missing", ["generate", "{tmp}/no_model"], ["no_model", "does not exist"]),
    ("generate-model-pickle", ["generate", m("pickle_only")], ["pytorch_model.bin", "pickle"]),
    # ---- plm score ----
    ("score-wrong-wild-type", ["score", "{mlm}", "--sequence", GOOD, "--mutation", "A2V"], ["A2V", "K"]),
    ("score-position-out", ["score", "{mlm}", "--sequence", GOOD, "--mutation", "K200A"], ["K200A", "200"]),
    ("score-malformed-mutation", ["score", "{mlm}", "--sequence", GOOD, "--mutation", "K2"], ["K2"]),
    ("score-mutation-bad-letter", ["score", "{mlm}", "--sequence", GOOD, "--mutation", "K2J"], ["K2J", "J"]),
    ("score-invalid-residue", ["score", "{mlm}", "--sequence", "MKT1AYI"], ["'1'", "position 4"]),
    ("score-empty-sequence", ["score", "{mlm}", "--sequence", ""], ["empty"]),
    ("score-fasta-missing", ["score", "{mlm}", "--fasta", "{tmp}/absent.fasta"], ["absent.fasta"]),
    ("score-fasta-empty", ["score", "{mlm}", "--fasta", "{tmp}/empty.fasta"], ["empty.fasta", "no FASTA records"]),
    ("score-fasta-invalid", ["score", "{mlm}", "--fasta", "{tmp}/invalid_char.fasta"], ["bad_one", "'J'"]),
    (
        "score-mutations-csv-missing",
        ["score", "{mlm}", "--sequence", GOOD, "--mutations-csv", "{tmp}/absent.csv"],
        ["absent.csv"],
    ),
    (
        "score-mutations-csv-bad-row",
        ["score", "{mlm}", "--sequence", GOOD, "--mutations-csv", "{tmp}/bad_mutations.csv"],
        ["bad_mutations.csv", "Q3V"],
    ),
    (
        "score-mutations-no-column",
        ["score", "{mlm}", "--sequence", GOOD, "--mutations-csv", "{tmp}/no_mutant_column.csv"],
        ["no_mutant_column.csv", "mutant"],
    ),
    ("score-batch-size-0", ["score", "{mlm}", "--sequence", GOOD, "--batch-size", "0"], ["batch"]),
    ("score-bad-method", ["score", "{mlm}", "--sequence", GOOD, "--mutation", "K2A", "--method", "magic"], ["magic"]),
    ("score-no-source", ["score", "{mlm}"], ["--sequence"]),
    (
        "score-wild-type-id-missing",
        ["score", "{mlm}", "--wild-type-fasta", "{tmp}/good.fasta", "--wild-type-id", "P9", "--mutation", "K2A"],
        ["P9", "good.fasta"],
    ),
    # ---- plm generate ----
    ("generate-invalid-prompt", ["generate", "{clm}", "--prompt", "MK1T"], ["'1'"]),
    ("generate-special-prompt", ["generate", "{clm}", "--prompt", "MK<mask>T"], ["<mask>"]),
    ("generate-infill-no-mask", ["generate", "{clm}", "--infill", "MKTAYIAK"], ["MKTAYIAK"]),
    ("generate-num-0", ["generate", "{clm}", "--num-sequences", "0"], ["num"]),
    ("generate-top-p-2", ["generate", "{clm}", "--top-p", "2"], ["top_p"]),
    ("generate-temperature-0", ["generate", "{clm}", "--temperature", "0"], ["temperature"]),
    ("generate-top-k-negative", ["generate", "{clm}", "--top-k", "-1"], ["top_k"]),
    ("generate-min-over-max", ["generate", "{clm}", "--min-length", "50", "--max-length", "10"], ["min_length"]),
    ("generate-greedy-and-sample", ["generate", "{clm}", "--greedy", "--sample"], ["--greedy", "--sample"]),
    ("generate-max-length-text", ["generate", "{clm}", "--max-length", "long"], ["--max-length"]),
    # ---- plm export ----
    ("export-missing", ["export", "{tmp}/no_model", "{tmp}/exported"], ["no_model"]),
    ("export-output-not-empty", ["export", "{mlm}", "{tmp}"], ["not empty"]),
    ("export-pickle-only", ["export", m("pickle_only"), "{tmp}/exported"], ["pytorch_model.bin"]),
    ("export-bad-shard-size", ["export", "{mlm}", "{tmp}/exported", "--max-shard-size", "big"], ["big"]),
    # ---- plm convert ----
    ("convert-missing", ["convert", "esm2", "{tmp}/no_model", "{tmp}/converted"], ["no_model"]),
    ("convert-not-esm", ["convert", "esm2", "{mlm}", "{tmp}/converted"], ["esm"]),
    ("convert-back-not-plm", ["convert", "to-esm2", m("bert"), "{tmp}/converted"], ["bert"]),
    ("convert-unknown-family", ["convert", "progen9", "{mlm}", "{tmp}/converted"], ["progen9"]),
    # ---- plm pretrain: configs ----
    ("pretrain-config-missing", ["pretrain", "{tmp}/absent.yaml"], ["absent.yaml"]),
    ("pretrain-yaml-syntax", ["pretrain", "{tmp}/syntax.yaml"], ["syntax.yaml", "line"]),
    ("pretrain-unknown-key", ["pretrain", "{tmp}/unknown_key.yaml"], ["unknown_key.yaml", "max_stepz"]),
    ("pretrain-wrong-type", ["pretrain", "{tmp}/wrong_type.yaml"], ["wrong_type.yaml", "batch_size", "four"]),
    ("pretrain-yaml-list", ["pretrain", "{tmp}/list.yaml"], ["list.yaml", "mapping"]),
    ("pretrain-yaml-bool", ["pretrain", "{tmp}/bool_type.yaml"], ["bool_type.yaml", "gradient_checkpointing"]),
    ("pretrain-negative-steps", ["pretrain", "{tmp}/negative.yaml"], ["max_steps"]),
    ("pretrain-config-is-dir", ["pretrain", "{tmp}"], ["is a directory"]),
    # ---- plm pretrain: arguments and data ----
    ("pretrain-no-data", ["pretrain", "--max-steps", "1"], ["train-file"]),
    ("pretrain-train-file-missing", ["pretrain", "--train-file", "{tmp}/absent.fasta"], ["absent.fasta"]),
    ("pretrain-train-file-dir", ["pretrain", "--train-file", "{tmp}"], ["is a directory"]),
    ("pretrain-train-file-empty", ["pretrain", "--train-file", "{tmp}/empty.fasta"], ["empty.fasta"]),
    ("pretrain-not-fasta", ["pretrain", "--train-file", "{tmp}/notes.txt"], ["notes.txt"]),
    ("pretrain-bad-weight", ["pretrain", "--train-file", "{tmp}/good.fasta:heavy"], ["heavy"]),
    ("pretrain-batch-size-0", pretrain("--batch-size", "0"), ["batch_size"]),
    (
        "pretrain-lr-negative",
        pretrain("--learning-rate", "-1"),
        ["learning_rate"],
    ),
    ("pretrain-bad-objective", pretrain("--objective", "mlmx"), ["mlmx"]),
    ("pretrain-bad-preset", pretrain("--preset", "huge9"), ["huge9"]),
    (
        "pretrain-overrides-not-json",
        pretrain("--model-overrides", "{layers: 2"),
        ["--model-overrides"],
    ),
    (
        "pretrain-overrides-unknown",
        ["pretrain", "--train-file", "{tmp}/good.fasta", "--model-overrides", '{"num_layerz": 2}'],
        ["num_layerz"],
    ),
    ("pretrain-mask-ratio", pretrain("--mask-ratio", "1.5"), ["mask_ratio"]),
    ("pretrain-stop-codon", pretrain("--stop-codon", "keep"), ["stop_codon"]),
    ("pretrain-residues", pretrain("--invalid-residues", "fix"), ["fix"]),
    ("pretrain-unknown-flag", pretrain("--max-stepz", "3"), ["--max-stepz"]),
    ("pretrain-steps-text", pretrain("--max-steps", "ten"), ["--max-steps"]),
    (
        "pretrain-crop-over-pack",
        pretrain("--pack-length", "64", "--crop-length", "100"),
        ["pack_length"],
    ),
    (
        "pretrain-init-from-missing",
        pretrain("--init-from", "{tmp}/no_model"),
        ["no_model"],
    ),
    (
        "pretrain-resume-not-checkpoint",
        pretrain("--resume", "{tmp}/no_checkpoint", "--output-dir", "{tmp}/r"),
        ["no_checkpoint"],
    ),
    (
        "pretrain-output-is-file",
        pretrain("--output-dir", "{tmp}/good.csv"),
        ["good.csv"],
    ),
    (
        "pretrain-exclude-missing",
        pretrain("--exclude-ids", "{tmp}/absent.txt"),
        ["absent.txt"],
    ),
    # ---- plm finetune ----
    ("finetune-no-model", ["finetune", "--train-file", "{tmp}/good.csv"], ["--model"]),
    (
        "finetune-model-missing",
        ["finetune", "--model", "{tmp}/no_model", "--train-file", "{tmp}/good.csv"],
        ["no_model"],
    ),
    ("finetune-no-train-file", ["finetune", "--model", "{mlm}"], ["--train-file"]),
    ("finetune-train-missing", finetune("absent.csv"), ["absent.csv"]),
    ("finetune-train-dir", ["finetune", "--model", "{mlm}", "--train-file", "{tmp}"], ["is a directory"]),
    (
        "finetune-no-sequence-column",
        finetune("no_sequence_column.csv"),
        ["no_sequence_column.csv", "sequence"],
    ),
    (
        "finetune-no-label-column",
        finetune("no_label_column.csv"),
        ["no_label_column.csv", "target"],
    ),
    (
        "finetune-extra-field",
        finetune("extra_field.csv"),
        ["extra_field.csv", "line 3"],
    ),
    (
        "finetune-nan-label",
        finetune("nan_label.csv"),
        ["nan_label.csv", "line 3", "target"],
    ),
    (
        "finetune-word-label",
        finetune("word_label.csv"),
        ["word_label.csv", "line 3", "high"],
    ),
    (
        "finetune-header-only",
        finetune("header_only.csv"),
        ["header_only.csv"],
    ),
    ("finetune-empty-csv", finetune("empty.csv"), ["empty.csv"]),
    (
        "finetune-bad-residue",
        finetune("bad_residue.csv"),
        ["bad_residue.csv", "line 3", "'1'"],
    ),
    (
        "finetune-empty-sequence",
        finetune("empty_sequence.csv"),
        ["empty_sequence.csv", "line 3"],
    ),
    (
        "finetune-one-valid-sequence",
        ["finetune", "--model", "{mlm}", "--train-file", "{tmp}/one_valid.csv", "--validation-column", "validation"],
        ["validation", "1"],
    ),
    (
        "finetune-token-label-length",
        finetune("token_len.csv", "--task", "token-classification"),
        ["token_len.csv", "line 2"],
    ),
    ("finetune-bad-task", finetune("good.csv", "--task", "x"), ["task"]),
    (
        "finetune-epochs-0",
        finetune("good.csv", "--epochs", "0"),
        ["epochs"],
    ),
    (
        "finetune-bad-metric",
        finetune("good.csv", "--metric-for-best", "auc"),
        ["auc"],
    ),
    (
        "finetune-valid-fraction",
        finetune("good.csv", "--valid-fraction", "1.5"),
        ["valid_fraction"],
    ),
    (
        "finetune-split-column-missing",
        finetune("good.csv", "--split-column", "fold"),
        ["good.csv", "fold"],
    ),
    (
        "finetune-pooling-token",
        [
            "finetune",
            "--model",
            "{mlm}",
            "--train-file",
            "{tmp}/good.csv",
            "--task",
            "token-classification",
            "--pooling",
            "mean",
        ],
        ["--pooling"],
    ),
    ("finetune-unknown-yaml-key", ["finetune", "{tmp}/finetune_unknown.yaml"], ["finetune_unknown.yaml", "epochz"]),
    (
        "finetune-lr-negative",
        finetune("good.csv", "--learning-rate", "-0.1"),
        ["learning_rate"],
    ),
    (
        "finetune-model-pickle",
        ["finetune", "--model", m("pickle_only"), "--train-file", "{tmp}/good.csv"],
        ["pytorch_model.bin"],
    ),
    # ---- plm demo ----
    ("demo-empty-fasta", ["demo", "--fasta", "{tmp}/empty.fasta", "--output-dir", "{tmp}/demo"], ["empty.fasta"]),
    ("demo-missing-fasta", ["demo", "--fasta", "{tmp}/absent.fasta", "--output-dir", "{tmp}/demo"], ["absent.fasta"]),
    ("demo-model-missing", ["demo", "--model", "{tmp}/no_model"], ["no_model"]),
    ("demo-num-0", ["demo", "--num-sequences", "0", "--output-dir", "{tmp}/demo"], ["num"]),
    ("demo-bad-preset", ["demo", "--preset", "huge9", "--output-dir", "{tmp}/demo"], ["huge9"]),
    # ---- plm scaling ----
    ("scaling-plan-negative", ["scaling", "plan", "--flops", "-1"], ["flops"]),
    ("scaling-plan-text", ["scaling", "plan", "--flops", "lots"], ["--flops"]),
    ("scaling-plan-fit-missing", ["scaling", "plan", "--flops", "1e20", "--fit", "{tmp}/absent.json"], ["absent.json"]),
    ("scaling-fit-missing", ["scaling", "fit", "{tmp}/absent_runs"], ["absent_runs"]),
    ("scaling-sweep-missing", ["scaling", "sweep", "{tmp}/absent.yaml"], ["absent.yaml"]),
    ("scaling-sweep-syntax", ["scaling", "sweep", "{tmp}/syntax.yaml"], ["syntax.yaml"]),
    # ---- plm itself ----
    ("plm-unknown-command", ["embedd"], ["embedd"]),
    ("plm-no-command", [], ["command"]),
]


def expand(argv: list[str], tmp: Path, models: dict[str, Path]) -> list[str]:
    values = {"tmp": tmp, "mlm": models["mlm"], "clm": models["clm"], "root": models["root"]}
    for key, value in values.items():
        argv = [arg.replace("{" + key + "}", str(value)) for arg in argv]
    return argv


@pytest.fixture
def case_folder(tmp_path: Path, monkeypatch) -> Path:
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)  # YAML paths are relative to where the command runs
    return tmp_path


def run_plm(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name, argv, expected", ERRORS, ids=[case[0] for case in ERRORS])
def test_bad_input_gets_one_clear_message_and_exit_code_2(name, argv, expected, case_folder, models, capsys):
    code, _, err = run_plm(expand(argv, case_folder, models), capsys)
    assert code == 2, f"{name}: exit code {code}\n{err[-2000:]}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no message"
    message = "\n".join(lines)
    for part in expected:
        assert part.lower() in message.lower(), f"{name}: {part!r} not in:\n{message}"


# Handled and counted, not errors: (case id, argv, substrings of the output)
COUNTED = [
    ("embed-stop-codon-stripped", embed("stop.fasta"), ['"stop_stripped": 1', '"records": 1']),
    ("embed-lower-case", embed("lower.fasta"), ['"records": 1']),
    ("embed-empty-record", embed("no_sequence.fasta"), ['"skipped": 1', '"records": 1']),
    (
        "embed-invalid-as-x",
        embed("invalid_char.fasta", "--invalid-residues", "X"),
        ['"records": 2'],
    ),
    (
        "embed-invalid-skipped",
        embed("invalid_char.fasta", "--invalid-residues", "skip"),
        ['"records": 1', '"skipped": 1'],
    ),
    ("score-stop-codon", ["score", "{mlm}", "--fasta", "{tmp}/stop.fasta", "--score", "causal"], ["P1"]),
]


@pytest.mark.parametrize("name, argv, expected", COUNTED, ids=[case[0] for case in COUNTED])
def test_documented_handling_is_counted_in_the_output(name, argv, expected, case_folder, models, capsys):
    code, out, err = run_plm(expand(argv, case_folder, models), capsys)
    assert code == 0, f"{name}: exit code {code}\n{err[-2000:]}"
    for part in expected:
        assert part in out, f"{name}: {part!r} not in:\n{out}"


def test_the_corpus_is_large():
    assert len(ERRORS) + len(COUNTED) >= 100


def test_a_user_error_in_a_terminal_is_one_line_without_traceback(tmp_path):
    (tmp_path / "empty.fasta").write_text("")
    command = [sys.executable, "-m", "modeling_plm.cli", "embed", str(tmp_path / "none"), "x.fasta", "out"]
    env = {key: value for key, value in os.environ.items() if key != "PLM_DEBUG"}
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert completed.stderr.startswith("plm embed: error: ")
    debug = subprocess.run(
        command[:3] + ["--debug"] + command[3:], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert debug.returncode == 2 and "Traceback" in debug.stderr  # --debug shows where it came from


def test_embedding_a_masked_lm_checkpoint_is_quiet(models, tmp_path):
    """Success prints the summary, not transformers' load report about the unused LM head, nor deprecation warnings."""
    (tmp_path / "good.fasta").write_text(FILES["good.fasta"])
    command = [sys.executable, "-W", "default", "-m", "modeling_plm.cli", "embed", str(models["mlm"])]
    command += [str(tmp_path / "good.fasta"), str(tmp_path / "out"), "--no-progress"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout)["records"] == 2
    for noise in ("LOAD REPORT", "UNEXPECTED", "Warning", "deprecated"):
        assert noise not in completed.stderr, completed.stderr
