"""The one context-length rule (inference and fine-tuning): `<bos> residues <eos>` must fit in the position table."""

from typing import Any

__all__ = ["context_residues"]


def context_residues(config: Any) -> int:
    """Residues that fit in one forward pass next to `<bos>` and `<eos>`: `config.max_position_embeddings - 2`."""
    context = config.max_position_embeddings
    if context is None or context < 3:
        raise ValueError(f"config.max_position_embeddings={context}: need room for <bos>, a residue and <eos>")
    return int(context) - 2
