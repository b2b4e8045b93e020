"""The one context-length rule (inference and fine-tuning): the residues and the special tokens the tokenizer adds
around them (`<bos> residues <eos>`, or T5's `residues </s>`) must fit in the position table."""

from typing import Any

__all__ = ["context_residues", "special_token_layout"]


def context_residues(config: Any, special_tokens: int = 2) -> int:
    """Residues that fit in one forward pass next to the `special_tokens` the tokenizer adds (`<bos>` and `<eos>`:
    2): `config.max_position_embeddings - special_tokens`."""
    context = config.max_position_embeddings
    if context is None or context < special_tokens + 1:
        raise ValueError(
            f"config.max_position_embeddings={context}: need room for a residue and {special_tokens} special tokens"
        )
    return int(context) - special_tokens


def special_token_layout(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special-token ids the tokenizer puts before and after the residues: `[<bos>], [<eos>]` (ours, ESM's
    `<cls> ... <eos>`), `[], [</s>]` (T5's). Read from how it encodes one residue, so any tokenizer class works."""
    words = not hasattr(tokenizer, "valid_residues")  # another family's tokenizer takes one residue per word
    probe = [["A"]] if words else ["A"]
    bare = tokenizer(probe, is_split_into_words=words, add_special_tokens=False)["input_ids"][0]
    full = tokenizer(probe, is_split_into_words=words, add_special_tokens=True)["input_ids"][0]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise ValueError(f"{type(tokenizer).__name__} encodes 'A' as {full}, which does not contain its bare ids {bare}")
