"""The built wheel, installed for real into a fresh virtual environment, works away from the repository.

No mocks and no editable install: the wheel is built from this checkout, installed into a new venv (no system site
packages) next to the CPU torch wheel, and then used from a working directory outside the repository, so nothing can
be imported from the source tree by accident. This catches what the rest of the suite cannot (it runs on the
checkout): a subpackage or data file missing from the wheel, a console script that does not start, a module that
only imports with the repository on `sys.path`.

The venv's other dependencies are pinned (`-c`) to the versions of the interpreter running the tests, so the
installed stack is the one the suite just tested and pip finds everything in its cache.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH_REQUIREMENT = "torch==2.13.0"  # the CPU wheel (see README: CPU torch first, so no CUDA build is pulled in)
# Files that must ship inside the wheel whatever the package discovery says.
REQUIRED_FILES = (
    "modeling_plm/__init__.py",
    "modeling_plm/scaling/__init__.py",
    "modeling_plm/inference/__init__.py",
    "modeling_plm/cli/__init__.py",
    "modeling_plm/hub/converters/__init__.py",
    "modeling_plm/tokenizer_data/tokenizer.json",
    "modeling_plm/tokenizer_data/vocab.txt",
    "modeling_plm/model_cards/template.md",
)
# Data folders of the checkout and where their files go in the wheel (setup.py's DATA_PACKAGES).
DATA_FOLDERS = {"tokenizer": "modeling_plm/tokenizer_data", "model_cards": "modeling_plm/model_cards"}

pytestmark = pytest.mark.slow  # builds a wheel and installs torch and the whole stack into a new venv (minutes)


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: int = 900):
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        pytest.fail(
            f"command failed ({completed.returncode}): {' '.join(map(str, command))}\n"
            f"--- stdout ---\n{completed.stdout[-4000:]}\n--- stderr ---\n{completed.stderr[-4000:]}"
        )
    return completed


def _clean_env(outside: Path) -> dict[str, str]:
    """The environment for commands run in the venv: no PYTHONPATH or venv of the caller, HOME-relative caches kept."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    env["HF_HUB_OFFLINE"] = "1"  # everything here is local; no hub call may be needed
    env["PWD"] = str(outside)
    return env


def _current_pins() -> str:
    """A pip constraints file with the installed version of every distribution of this interpreter but ours."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or re.sub(r"[-_.]+", "-", name).lower() in ("modeling-plm", "pip", "setuptools", "wheel"):
            continue
        pins[re.sub(r"[-_.]+", "-", name).lower()] = f"{name}=={dist.version}"
    return "\n".join(sorted(pins.values())) + "\n"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from this checkout (isolated build, as `pip install .` does)."""
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)], cwd=out)
    wheels = list(out.glob("modeling_plm-*.whl"))
    assert len(wheels) == 1, f"expected one modeling_plm wheel, got {wheels}"
    return wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel) -> dict:
    """A fresh venv with torch and the wheel installed; returns its python, plm script and an outside folder."""
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "venv"
    venv.EnvBuilder(system_site_packages=False, clear=True, with_pip=True).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    outside = root / "elsewhere"
    outside.mkdir()
    env = _clean_env(outside)
    constraints = root / "constraints.txt"
    constraints.write_text(_current_pins())
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run(pip + [TORCH_REQUIREMENT], cwd=outside, env=env)
    _run(pip + ["-c", str(constraints), str(wheel)], cwd=outside, env=env)
    return {"env_dir": env_dir, "python": python, "plm": bin_dir / "plm", "outside": outside, "env": env}


def test_wheel_contains_every_subpackage_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in REQUIRED_FILES if name not in names]
    # Every module of the package on disk (so every subpackage, with its __init__.py), and every data file.
    on_disk = [path for path in (REPO / "modeling_plm").rglob("*.py") if "__pycache__" not in path.parts]
    missing += [p.relative_to(REPO).as_posix() for p in on_disk if p.relative_to(REPO).as_posix() not in names]
    for folder, package in DATA_FOLDERS.items():
        for path in (REPO / folder).iterdir():
            if path.suffix in (".py", ".json", ".txt", ".md") and f"{package}/{path.name}" not in names:
                missing.append(f"{package}/{path.name}")
    assert not missing, f"the wheel lacks {missing}"
    # Nothing of the checkout that is not the package: tests, benchmarks, training configs.
    assert not [name for name in names if name.split("/")[0] in ("tests", "benchmarks", "training", "tokenizer")]
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert "plm = modeling_plm.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_is_not_an_editable_install(installed):
    site_packages = list(installed["env_dir"].glob("lib/python*/site-packages"))
    assert len(site_packages) == 1
    leftovers = [p.name for p in site_packages[0].iterdir() if p.name.endswith(".egg-link") or "__editable__" in p.name]
    assert not leftovers, f"an editable install is in the venv: {leftovers}"
    for pth in site_packages[0].glob("*.pth"):
        assert str(REPO) not in pth.read_text(), f"{pth.name} puts the repository on sys.path"
    dist_info = list(site_packages[0].glob("modeling_plm-*.dist-info"))
    assert len(dist_info) == 1
    direct_url = dist_info[0] / "direct_url.json"
    if direct_url.exists():
        assert not json.loads(direct_url.read_text()).get("dir_info", {}).get("editable")


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every subcommand path of an argparse parser, nested ones included (`convert esm2`, ...)."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                paths.append(prefix + (name,))
                paths += _subcommand_paths(subparser, prefix + (name,))
    return paths


def _nested_from_usage(help_text: str, path: tuple[str, ...]) -> list[str]:
    """Subcommands in a delegated parser's usage line: `usage: plm scaling [-h] {plan,fit,validate,sweep} ...`
    (right after the command itself, so an option's choices, `--pooling {mean,max,bos}`, are not taken)."""
    usage = help_text.split("\n\n")[0]
    match = re.match(rf"usage: plm {re.escape(' '.join(path))} \[-h\] \{{([\w,-]+)\}} \.\.\.", usage)
    return match.group(1).split(",") if match else []


def test_plm_help_and_every_subcommand_help_from_outside_the_repo(installed):
    from modeling_plm.cli import build_parser

    plm, outside, env = str(installed["plm"]), installed["outside"], installed["env"]
    top = _run([plm, "--help"], cwd=outside, env=env).stdout
    paths = _subcommand_paths(build_parser())
    assert paths, "the plm parser has no subcommands"
    for name in {path[0] for path in paths}:
        assert name in top, f"`plm --help` does not list {name}"
    seen = set()
    while paths:
        path = paths.pop(0)
        if path in seen:
            continue
        seen.add(path)
        text = _run([plm, *path, "--help"], cwd=outside, env=env).stdout
        assert text.startswith("usage:"), f"`plm {' '.join(path)} --help` printed no usage:\n{text[:500]}"
        # Commands that hand their arguments to their own parser (pretrain, finetune, scaling) have their
        # subcommands only there: take them from the usage line it printed.
        paths += [path + (name,) for name in _nested_from_usage(text, path) if path + (name,) not in seen]
    assert ("scaling", "plan") in seen and ("convert", "esm2") in seen, sorted(seen)


ROUND_TRIP = textwrap.dedent(
    """
    import json, pkgutil, sys, importlib
    from pathlib import Path

    import modeling_plm

    imported = []
    for module in pkgutil.walk_packages(modeling_plm.__path__, prefix="modeling_plm."):
        if any(part.startswith("_") for part in module.name.split(".")):
            continue
        importlib.import_module(module.name)
        imported.append(module.name)

    import torch
    import transformers
    from modeling_plm import PLMForMaskedLM, PLMTokenizerFast, config_from_preset

    torch.manual_seed(0)
    config = config_from_preset("tiny")
    folder = Path(sys.argv[1])
    PLMForMaskedLM(config).eval().save_pretrained(folder)
    PLMTokenizerFast().save_pretrained(folder)
    loaded = transformers.AutoModel.from_pretrained(folder)
    sequence = "MKTAYIAKQRQISFVKSHFSRQ"
    embedder = transformers.pipeline("protein-embedding", model=str(folder))
    out = embedder(sequence, per_residue=True)
    print(json.dumps({
        "file": modeling_plm.__file__,
        "tokenizer_file": str(Path(modeling_plm.__file__).parent / "tokenizer_data" / "tokenizer.json"),
        "imported": imported,
        "auto_class": type(loaded).__name__,
        "hidden_size": config.hidden_size,
        "mean_shape": list(out["mean"].shape),
        "residues_shape": list(out["residues"].shape),
        "length": len(sequence),
    }))
    """
)


def test_imports_and_save_load_pipeline_round_trip_from_outside_the_repo(installed, tmp_path):
    outside = installed["outside"]
    script = outside / "round_trip.py"
    script.write_text(ROUND_TRIP)
    completed = _run([str(installed["python"]), str(script), str(tmp_path / "tiny")], cwd=outside, env=installed["env"])
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    module_file = Path(result["file"]).resolve()
    assert installed["env_dir"].resolve() in module_file.parents, f"modeling_plm came from {module_file}"
    assert REPO not in module_file.parents
    assert Path(result["tokenizer_file"]).is_file()
    # walk_packages found the subpackages (and their modules) in the installed copy.
    for name in ("modeling_plm.cli", "modeling_plm.cli.scaling", "modeling_plm.inference.embedding"):
        assert name in result["imported"], result["imported"]
    on_disk = set()
    for path in (REPO / "modeling_plm").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if "__pycache__" not in path.parts and len(parts) > 1 and not any(part.startswith("_") for part in parts):
            on_disk.add(".".join(parts))
    assert on_disk <= set(result["imported"]), sorted(on_disk - set(result["imported"]))
    assert result["auto_class"] == "PLMModel"
    assert result["mean_shape"] == [result["hidden_size"]]
    assert result["residues_shape"] == [result["length"], result["hidden_size"]]
