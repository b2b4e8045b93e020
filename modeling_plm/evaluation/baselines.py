"""Model-free variant-effect baselines for the benchmarks: BLOSUM62, the substitution score of the wild-type and
mutant residues (summed over a multi-mutant's mutations), which a language model should beat.

No dependency ships BLOSUM62 (Biopython would, and is not one), so the standard 20 x 20 matrix is written out below:
Henikoff & Henikoff (1992), "Amino acid substitution matrices from protein blocks", PNAS 89:10915-10919, in the
NCBI / Biopython form (1/2-bit units, blocks clustered at 62% identity).
"""

from __future__ import annotations

from ..inference.scoring import parse_mutations

__all__ = ["BLOSUM62", "blosum62_scores"]

_ORDER = "ARNDCQEGHILKMFPSTWYV"
_ROWS = """\
A  4 -1 -2 -2  0 -1 -1  0 -2 -1 -1 -1 -1 -2 -1  1  0 -3 -2  0
R -1  5  0 -2 -3  1  0 -2  0 -3 -2  2 -1 -3 -2 -1 -1 -3 -2 -3
N -2  0  6  1 -3  0  0  0  1 -3 -3  0 -2 -3 -2  1  0 -4 -2 -3
D -2 -2  1  6 -3  0  2 -1 -1 -3 -4 -1 -3 -3 -1  0 -1 -4 -3 -3
C  0 -3 -3 -3  9 -3 -4 -3 -3 -1 -1 -3 -1 -2 -3 -1 -1 -2 -2 -1
Q -1  1  0  0 -3  5  2 -2  0 -3 -2  1  0 -3 -1  0 -1 -2 -1 -2
E -1  0  0  2 -4  2  5 -2  0 -3 -3  1 -2 -3 -1  0 -1 -3 -2 -2
G  0 -2  0 -1 -3 -2 -2  6 -2 -4 -4 -2 -3 -3 -2  0 -2 -2 -3 -3
H -2  0  1 -1 -3  0  0 -2  8 -3 -3 -1 -2 -1 -2 -1 -2 -2  2 -3
I -1 -3 -3 -3 -1 -3 -3 -4 -3  4  2 -3  1  0 -3 -2 -1 -3 -1  3
L -1 -2 -3 -4 -1 -2 -3 -4 -3  2  4 -2  2  0 -3 -2 -1 -2 -1  1
K -1  2  0 -1 -3  1  1 -2 -1 -3 -2  5 -1 -3 -1  0 -1 -3 -2 -2
M -1 -1 -2 -3 -1  0 -2 -3 -2  1  2 -1  5  0 -2 -1 -1 -1 -1  1
F -2 -3 -3 -3 -2 -3 -3 -3 -1  0  0 -3  0  6 -4 -2 -2  1  3 -1
P -1 -2 -2 -1 -3 -1 -1 -2 -2 -3 -3 -1 -2 -4  7 -1 -1 -4 -3 -2
S  1 -1  1  0 -1  0  0  0 -1 -2 -2  0 -1 -2 -1  4  1 -3 -2 -2
T  0 -1  0 -1 -1 -1 -1 -2 -2 -1 -1 -1 -1 -2 -1  1  5 -2 -2  0
W -3 -3 -4 -4 -2 -2 -3 -2 -2 -3 -2 -3 -1  1 -4 -3 -2 11  2 -3
Y -2 -2 -2 -3 -2 -1 -2 -3  2 -1 -1 -2 -1  3 -3 -2 -2  2  7 -1
V  0 -3 -3 -3 -1 -2 -2 -3 -3  3  1 -2  1 -1 -2 -2  0 -3 -1  4
"""


def _parse_matrix() -> dict[tuple[str, str], int]:
    matrix = {}
    for line in _ROWS.splitlines():
        row, *values = line.split()
        matrix.update({(row, column): int(value) for column, value in zip(_ORDER, values, strict=True)})
    return matrix


BLOSUM62: dict[tuple[str, str], int] = _parse_matrix()  # BLOSUM62[(wild type, mutant)], symmetric


def blosum62_scores(sequence: str, mutations: list[str], offset: int = 1) -> list[float]:
    """BLOSUM62[wild type, mutant] of each mutation (`A23V`, summed over `A23V:G45D`), checked against `sequence`
    as `score_variants` checks them (ValueError naming the mutation); higher = a more conservative substitution."""
    sequence = sequence.upper()
    return [
        float(sum(BLOSUM62[(wild_type, mutant)] for wild_type, _, mutant in parse_mutations(spec, sequence, offset)))
        for spec in mutations
    ]
