"""The one residue policy: what happens to a sequence with a character outside the accepted alphabet.

Every entry point takes it under the name `invalid_residues` (`--invalid-residues` on the command line) with the
same values:

- "error": raise, naming the file, record, 1-based position and character;
- "skip": leave the record out and count it (only where there are records: files and lists; a tokenizer must return
  one encoding per input, so it refuses "skip");
- "X": replace each such character with the unknown residue X;
- "drop": delete each such character.

What counts as outside: anything that is not a residue letter of the alphabet (the tokenizer's residues, or the
pretraining alphabet): alignment gaps `-` and `.`, digits, and special tokens typed into a sequence (`<mask>` starts
with `<`) alike, so raw text never becomes a special token. Letters are upper-cased first. A trailing `*` (the stop
codon of gene callers) is removed and counted at every entry point that reads files (`strip_stop_codon`;
pretraining's `stop_codon` setting can also skip or refuse such records); a `*` anywhere else is an invalid character.
"""

import re

INVALID_RESIDUE_POLICIES = ("error", "skip", "X", "drop")
STOP_CODON = "*"


def strip_stop_codon(sequence: str) -> tuple[str, bool]:
    """The sequence without a trailing stop codon `*`, and whether it had one."""
    if sequence.endswith(STOP_CODON):
        return sequence[: -len(STOP_CODON)], True
    return sequence, False


def check_residue_policy(policy: str) -> str:
    if policy not in INVALID_RESIDUE_POLICIES:
        raise ValueError(f"invalid_residues must be one of {', '.join(INVALID_RESIDUE_POLICIES)}; got {policy!r}")
    return policy


def invalid_character_pattern(alphabet: str) -> re.Pattern[str]:
    """Finds characters outside `alphabet` (a compiled negated class: one C scan per sequence)."""
    return re.compile(f"[^{re.escape(alphabet)}]")


def apply_residue_policy(sequence: str, policy: str, invalid: re.Pattern[str], where: str) -> str | None:
    """`sequence` under `policy`: unchanged, repaired ("X", "drop"), None ("skip": the caller counts it) or a
    ValueError ("error") whose message starts with `where` (file and record)."""
    found = invalid.search(sequence)
    if found is None:
        return sequence
    if policy == "error":
        raise ValueError(
            f"{where}: invalid residue {found.group()!r} at position {found.start() + 1}. "
            "Pass invalid_residues='skip' to leave such records out, 'X' to map such characters to X, or 'drop' "
            "to delete them."
        )
    if policy == "skip":
        return None
    if policy == "X":
        return invalid.sub("X", sequence)
    if policy == "drop":
        return invalid.sub("", sequence)
    raise ValueError(f"invalid_residues must be one of {', '.join(INVALID_RESIDUE_POLICIES)}; got {policy!r}")
