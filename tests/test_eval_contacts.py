"""`plm eval contacts`: APC and precision at L/k against hand-computed examples, the PDB reader on handwritten files,
the training/test split, and the command end to end on two tiny PDB files and on four real chains."""

import gzip
import json

import numpy as np
import pytest
import torch

from modeling_plm import PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.cli.main import main
from modeling_plm.evaluation.contacts import (
    ChainStructure,
    apc,
    contact_map,
    contact_precisions,
    precision_at,
    read_pdb_chains,
    split_chains,
    symmetrize,
    virtual_beta,
)

from .conftest import data_path


def run_cli(argv: list[str]) -> int:
    """`plm eval contacts ARGV` as the command line runs it (user errors: a message and exit code 2)."""
    return main(["eval", "contacts", *argv])


def test_apc_and_symmetrize_by_hand():
    # Row sums 6, 15, 24; column sums 12, 15, 18; total 45: APC_ij = A_ij - row_i * column_j / 45.
    maps = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
    expected = np.array([[-0.6, 0, 0.6], [0, 0, 0], [0.6, 0, -0.6]])
    np.testing.assert_allclose(apc(maps), expected, atol=1e-12)
    np.testing.assert_allclose(apc(np.stack([maps, 2 * maps])), np.stack([expected, 2 * expected]), atol=1e-12)
    np.testing.assert_array_equal(symmetrize(maps), [[2, 6, 10], [6, 10, 14], [10, 14, 18]])


def test_precision_at_l_by_hand_on_a_10x10_map():
    # L = 10: the pairs at separation >= 6 are (0,6) (0,7) (0,8) (0,9) (1,7) (1,8) (1,9) (2,8) (2,9) (3,9), all short
    # range (6-11); contacts among them: (0,6) (1,7) (3,9). Ranked: (0,9) no, (0,6) yes, (1,7) yes, (2,9) no,
    # (3,9) yes, then the other five (no).
    contacts = np.zeros((10, 10), dtype=bool)
    for i, j in [(0, 6), (1, 7), (3, 9), (0, 1), (4, 5)]:  # (0,1) and (4,5) are too close in sequence to count
        contacts[i, j] = contacts[j, i] = True
    scores = np.zeros((10, 10))
    for (i, j), score in {(0, 9): 0.9, (0, 6): 0.8, (1, 7): 0.7, (2, 9): 0.6, (3, 9): 0.5, (0, 1): 5.0}.items():
        scores[i, j] = score
    scores[9, 0] = scores[5, 4] = 100.0  # the lower triangle is never read
    assert precision_at(scores, contacts, 6, 11, 5) == pytest.approx(1 / 2)  # top 2: no, yes
    assert precision_at(scores, contacts, 6, 11, 2) == pytest.approx(3 / 5)  # top 5
    assert precision_at(scores, contacts, 6, 11, 1) == pytest.approx(3 / 10)  # all ten
    assert precision_at(scores, contacts, 6, 7, 5) == pytest.approx(1.0)  # separations 6-7: (0,6), (1,7) on top
    assert precision_at(scores, contacts, 6, 8, 1) == pytest.approx(3 / 10)  # 9 pairs, 3 contacts, padded to 10
    metrics = contact_precisions(scores, contacts)
    assert metrics["short P@L/5"] == pytest.approx(0.5) and metrics["short P@L"] == pytest.approx(0.3)
    assert metrics["medium P@L"] == 0.0 and metrics["long P@L/5"] == 0.0  # no pair that far apart: all padding


def test_precision_at_l_on_a_5x5_map_and_too_short_chains():
    # L = 5 has no pair 6 apart: P@L/5 (one pair) is 0; L // 10 = 0 pairs is undefined (NaN).
    scores, contacts = np.ones((5, 5)), np.ones((5, 5), dtype=bool)
    assert precision_at(scores, contacts, 6, None, 5) == 0.0
    assert np.isnan(precision_at(scores, contacts, 6, None, 10))
    # With min separation 1 (to use a 5x5 map): pairs ranked (0,4) 0.9 yes, (1,3) 0.8 no, ... top L // 2 = 2 -> 1/2.
    contacts = np.zeros((5, 5), dtype=bool)
    contacts[0, 4] = contacts[2, 3] = True
    scores = np.zeros((5, 5))
    scores[0, 4], scores[1, 3], scores[2, 3] = 0.9, 0.8, 0.1
    assert precision_at(scores, contacts, 1, None, 2) == pytest.approx(1 / 2)
    assert precision_at(scores, contacts, 1, None, 1) == pytest.approx(2 / 5)


def test_contact_map_uses_a_strict_8_angstrom_cutoff():
    coordinates = np.array([[0.0, 0, 0], [7.9, 0, 0], [8.1, 0, 0], [0, 0, 8.0]])
    expected = np.eye(4, dtype=bool)
    expected[0, 1] = expected[1, 0] = expected[1, 2] = expected[2, 1] = True
    np.testing.assert_array_equal(contact_map(coordinates), expected)


def test_virtual_beta_has_the_ideal_geometry():
    n, ca, c = np.array([-0.525, 1.363, 0.0]), np.zeros(3), np.array([1.526, 0.0, 0.0])
    beta = virtual_beta(n, ca, c)
    assert np.linalg.norm(beta - ca) == pytest.approx(1.52, abs=0.03)
    angle = np.degrees(np.arccos(np.dot(n - ca, beta - ca) / np.linalg.norm(n - ca) / np.linalg.norm(beta - ca)))
    assert angle == pytest.approx(110.5, abs=2.0)


# ---------------------------------------------------------------------------------------------------------------------
# Handwritten PDB files

THREE = {"A": "ALA", "G": "GLY", "K": "LYS", "L": "LEU", "V": "VAL", "E": "GLU", "S": "SER", "M": "MET", "F": "PHE"}


def atom_line(serial, name, residue, chain, number, xyz, record="ATOM", altloc=" "):
    x, y, z = xyz
    return (
        f"{record:<6}{serial:5d} {name:<4}{altloc}{residue:>3} {chain}{number:4d}    "
        f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00           {name[0]}"
    )


def hairpin_lines(sequence: str, chain: str, start_serial: int = 1) -> list[str]:
    """A two-strand hairpin: residue k of the first strand faces residue L-1-k of the second, 4.8 A apart (contact);
    neighbours along a strand are 3.8 A apart. C-beta 1.5 A above each C-alpha (glycine: none)."""
    half = len(sequence) // 2
    lines, serial = [], start_serial
    for index, letter in enumerate(sequence):
        x = 3.8 * index if index < half else 3.8 * (len(sequence) - 1 - index)
        y = 0.0 if index < half else 4.8
        residue = "MSE" if letter == "M" else THREE[letter]
        record = "HETATM" if residue == "MSE" else "ATOM"
        atoms = [("N", (x - 1.0, y, 0.5)), ("CA", (x, y, 0.0)), ("C", (x + 1.0, y, 0.5))]
        if letter != "G":
            atoms.append(("CB", (x, y, 1.5)))
        for name, xyz in atoms:
            lines.append(atom_line(serial, name, residue, chain, index + 1, xyz, record))
            serial += 1
    return lines


def test_pdb_reader_on_a_handwritten_file(tmp_path):
    lines = hairpin_lines("GAKLMVESAF", "A")
    lines.insert(7, atom_line(99, "CB", "ALA", "A", 2, (50.0, 50.0, 50.0), altloc="B"))  # a second location: ignored
    lines.append(atom_line(200, "CA", "LEU", " ", 1, (0.0, 0.0, 0.0)))  # a residue without a C-beta: rebuilt
    lines.append(atom_line(201, "N", "LEU", " ", 1, (-1.0, 0.0, 0.5)))
    lines.append(atom_line(202, "C", "LEU", " ", 1, (1.0, 0.0, 0.5)))
    lines.append(atom_line(203, "O", "HOH", "W", 1, (9.0, 9.0, 9.0), record="HETATM"))  # water: not a residue
    lines += ["ENDMDL", "MODEL        2", atom_line(300, "CA", "GLY", "Z", 1, (0.0, 0.0, 0.0))]  # second model: ignored
    path = tmp_path / "hand.pdb.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("HEADER    TEST\nMODEL        1\n" + "\n".join(lines) + "\nEND\n")
    chains = read_pdb_chains(path)
    assert sorted(chains) == ["", "A"]
    chain = chains["A"]
    assert chain.name == "hand.pdb.gz|A" and chain.sequence == "GAKLMVESAF"  # MSE read as M
    np.testing.assert_allclose(chain.coordinates[0], [0.0, 0.0, 0.0])  # glycine: its C-alpha
    np.testing.assert_allclose(chain.coordinates[1], [3.8, 0.0, 1.5])  # the first C-beta location, not B's
    contacts = contact_map(chain.coordinates)
    assert contacts[0, 9] and contacts[1, 8] and contacts[0, 8] and not contacts[0, 7]  # 4.8, 4.8, 6.1, 9.0 A
    blank = chains[""]
    assert blank.sequence == "L" and blank.virtual_beta == 1
    np.testing.assert_allclose(blank.coordinates[0], virtual_beta(*np.array([[-1.0, 0, 0.5], [0, 0, 0], [1, 0, 0.5]])))


def write_structure_set(folder):
    """one.pdb (chains A and B) and two.pdb.gz (chains A and C; C repeats one.pdb's A), and chains.fasta."""
    folder.mkdir()
    sequences = {
        "one.pdb|A": "MKLVESAGFLKVAESLGFKA",
        "one.pdb|B": "AKLVGSEFMKVLAE",
        "two.pdb.gz|A": "SLKVAEFGMKLVESAKLGFEVAKS",
        "two.pdb.gz|C": "MKLVESAGFLKVAESLGFKA",
    }
    one = hairpin_lines(sequences["one.pdb|A"], "A") + hairpin_lines(sequences["one.pdb|B"], "B", 500)
    (folder / "one.pdb").write_text("\n".join(one) + "\nEND\n")
    two = hairpin_lines(sequences["two.pdb.gz|A"], "A") + hairpin_lines(sequences["two.pdb.gz|C"], "C", 500)
    with gzip.open(folder / "two.pdb.gz", "wt") as handle:
        handle.write("\n".join(two) + "\nEND\n")
    (folder / "chains.fasta").write_text("".join(f">{name}\n{sequence}\n" for name, sequence in sequences.items()))
    return sequences


def test_split_keeps_training_and_test_chains_apart():
    chains = [ChainStructure(f"c{i}", sequence, np.zeros((len(sequence), 3))) for i, sequence in enumerate("ABACDE")]
    split = split_chains(chains, 2, seed=0)
    train_sequences = {c.sequence for c in split.train}
    assert len(split.train) == 2 and len(train_sequences) == 2
    assert not train_sequences & {c.sequence for c in split.test}
    assert (
        len(split.train) + len(split.test) + len(split.dropped_same_sequence) + len(split.repeated_test_sequences) == 6
    )
    assert len({c.sequence for c in split.test}) == len(split.test)
    split = split_chains(chains, 0, train_names=["c0"], max_residues=None)
    assert [c.name for c in split.test] == ["c1", "c3", "c4", "c5"] and split.dropped_same_sequence == ["c2"]
    with pytest.raises(ValueError, match=r"1 test chains share a name or a sequence .*\['c2'\]"):
        split_chains(chains, 0, train_names=["c0"], test_names=["c1", "c2"])


@pytest.fixture(scope="module")
def contact_head_model(tmp_path_factory) -> str:
    """A tiny random masked LM with an ESM-2 contact head, saved like a checkpoint."""
    folder = tmp_path_factory.mktemp("contact_head")
    torch.manual_seed(0)
    PLMForMaskedLM(config_from_preset("tiny", contact_head=True)).save_pretrained(folder)
    PLMTokenizerFast().save_pretrained(folder)
    return str(folder)


def test_cli_on_handwritten_structures(contact_head_model, tmp_path, capsys):
    write_structure_set(tmp_path / "structures")
    (tmp_path / "train.txt").write_text("one.pdb|A\n")
    out = tmp_path / "eval"
    argv = [contact_head_model, "--data", str(tmp_path / "structures"), "--train-list", str(tmp_path / "train.txt")]
    assert run_cli([*argv, "--output-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 test chains, 1 training chains, 1 left out (same sequence as a training chain), 0 repeats" in printed
    record = json.loads((out / "contacts_results.json").read_text())
    rows = record["tables"]["Contact precision (mean over test chains)"]["rows"]
    assert [row["predictor"] for row in rows] == ["attention + APC", "logistic regression", "contact head"]
    assert all(0.0 <= row["long P@L/5"] <= 1.0 and row["chains"] == 2 for row in rows)
    details = record["details"]
    assert details["train_chains"] == ["one.pdb|A"] and details["dropped_same_sequence"] == ["two.pdb.gz|C"]
    assert [chain["chain"] for chain in details["per_chain"]] == ["one.pdb|B", "two.pdb.gz|A"]
    assert details["regression"]["fitted"] and details["regression"]["features"] == 2 * 4  # layers x heads
    index = json.loads((out / "contacts_model_index.json").read_text())
    assert {entry["metric"] for entry in index} == {"long_p_at_l", "long_p_at_l_5"} and len(index) == 6

    # Named test chains that repeat a training chain's sequence are refused.
    (tmp_path / "test.txt").write_text("two.pdb.gz|C\n")
    assert run_cli([*argv, "--test-list", str(tmp_path / "test.txt"), "--output-dir", str(out)]) == 2
    assert "share a name or a sequence with a training chain" in capsys.readouterr().err
    # chains.fasta must agree with the coordinates.
    listing = tmp_path / "structures" / "chains.fasta"
    listing.write_text(listing.read_text().replace("AKLVGSEFMKVLAE", "AKLVGSEWMKVLAE"))
    assert run_cli([*argv, "--output-dir", str(out)]) == 2
    assert "one.pdb: chain 'B' reads as 14 residues, chains.fasta lists 14; they differ from residue 8" in (
        capsys.readouterr().err
    )


def test_cli_on_four_real_chains(base_model, tmp_path):
    structures = data_path("structures/chains.fasta").parent
    out = tmp_path / "eval"
    argv = [base_model, "--data", str(structures), "--max-chains", "4", "--train-chains", "1", "--seed", "1"]
    assert run_cli([*argv, "--output-dir", str(out), "--no-progress"]) == 0
    record = json.loads((out / "contacts_results.json").read_text())
    rows = record["tables"]["Contact precision (mean over test chains)"]["rows"]
    assert [row["predictor"] for row in rows] == ["attention + APC", "logistic regression"]  # no contact head
    details = record["details"]
    assert len(details["train_chains"]) == 1 and rows[0]["chains"] == len(details["per_chain"]) >= 2
    left_out = details["dropped_same_sequence"] + details["repeated_test_sequences"]
    assert len(details["per_chain"]) + len(left_out) == 3 and len(left_out) == 1  # 4uv3 B repeats A
    assert all(0.0 <= row["short P@L"] <= 1.0 for row in rows)
    assert "contacts: " in (out / "contacts_results.md").read_text()
