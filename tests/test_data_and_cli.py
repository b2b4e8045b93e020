"""The FASTA reader's contract on real and broken files, and the demo end to end through the `plm` CLI."""

import gzip
import subprocess
import sys

import pytest

from modeling_plm.cli import main
from modeling_plm.data.fasta import read_fasta

from .conftest import data_path


def test_read_fasta_streams_real_gzip_records():
    path = data_path("swissprot2014/sprot2014_sample50k_seed0.fasta.gz")
    records = read_fasta(path)
    first = next(records)
    assert first.id == "A0A318" and first.sequence.startswith("MLNIFSLIWICLNSALYSSG")
    assert sum(1 for _ in zip(range(999), records)) == 999  # a generator: nothing read past what was asked


def test_read_fasta_joins_wrapped_lines_and_keeps_descriptions(tmp_path):
    path = tmp_path / "two.fasta"
    path.write_text(">sp|P1 first protein\nMKT\nAYI\n\n>P2\nmk tl\n")
    records = list(read_fasta(path))
    assert [(r.id, r.description, r.sequence) for r in records] == [
        ("sp|P1", "sp|P1 first protein", "MKTAYI"),
        ("P2", "P2", "mktl"),
    ]


def test_read_fasta_rejects_text_that_is_not_fasta(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a fasta file\n>later\nMKT\n")
    with pytest.raises(ValueError, match=r"notes.txt, line 1: not FASTA"):
        list(read_fasta(path))


def test_read_fasta_reports_a_truncated_gzip(tmp_path):
    path = tmp_path / "cut.fasta.gz"
    payload = gzip.compress(b"".join(b">P%d\n%s\n" % (i, b"MKT" * 50) for i in range(200)))
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        list(read_fasta(path))


def test_an_empty_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "empty.fasta"
    path.write_text("")
    with pytest.raises(ValueError, match="empty.fasta: no FASTA records"):
        list(read_fasta(path))


def test_plm_demo_runs_end_to_end(tmp_path, capsys):
    fasta = data_path("swissprot2014/sprot2014_sample50k_seed0.fasta.gz")
    assert main(["demo", "--fasta", str(fasta), "--num-sequences", "4", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "as PLMForMaskedLM and PLMForCausalLM (one checkpoint)" in out
    assert "Embeddings: per-residue" in out
    assert "GLM infilling" in out and "Generated sequences" in out
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "tokenizer.json").exists()


def test_plm_help_lists_the_demo():
    completed = subprocess.run([sys.executable, "-m", "modeling_plm.cli", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and "demo" in completed.stdout and "examples:" in completed.stdout


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """The README's tour is code users paste: it must run as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["out"].logits.shape == (2, 24, 34)
    assert namespace["span"].shape[1] > namespace["inputs"]["input_ids"].shape[1]
    assert namespace["embeddings"][0]["residues"].shape == (22, namespace["config"].hidden_size)
