"""What the pipelines take as a batch of sequences: a list or tuple, a `datasets` column (`ds["sequence"]`: a list in
datasets < 4, a lazy `Column` from 4 on), transformers' `KeyDataset(ds, "sequence")` (a torch Dataset: indexable but
not iterable), or any other iterable of strings."""

from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["is_batch", "iter_inputs"]


def is_batch(inputs: Any) -> bool:
    """Whether `inputs` holds several sequences: an iterable other than a str, or an indexable object with a length."""
    if isinstance(inputs, str):
        return False
    return isinstance(inputs, Iterable) or (hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__"))


def iter_inputs(inputs: Any) -> Iterator[Any]:
    """The items of a batch in order, read lazily (a `KeyDataset` by index: torch Datasets define no __iter__)."""
    if isinstance(inputs, Iterable):
        return iter(inputs)
    return (inputs[index] for index in range(len(inputs)))
