"""Protein embeddings: per-residue and pooled hidden states, in memory or streamed from a FASTA file to disk.

- `embed_sequences(model, tokenizer, sequences, ...)`: the engine. Token-budget batching over length-sorted
  sequences, results in input order, overlapping windows for sequences longer than the model's context.
- `ProteinEmbeddingPipeline`: the same engine as transformers' `pipeline("protein-embedding", model=...)`.
- `embed_fasta(model, tokenizer, fasta, output_dir, ...)`: a FASTA of any size into safetensors shards plus a
  manifest, resumable after a kill; `load_embeddings(output_dir)` reads them back in file order.

Output of one sequence (`embed_sequences`, the pipeline, and each record of `load_embeddings`), a dict of arrays:

    "mean", "max":  the mean / maximum over the residues (special tokens excluded)      (H,)    or (n_layers, H)
    "bos":          the hidden state of the `<bos>` token                                (H,)    or (n_layers, H)
    "residues":     one row per residue, `<bos>`/`<eos>` stripped (with per_residue)     (L, H)  or (n_layers, L, H)

`layers` picks hidden states: 0 is the embedding output, i the output of block i, -1 the last (after the final
norm). An int gives arrays without a layer axis; a list (even of one) stacks the layers, in the order given, on a
leading axis.

Long sequences: a sequence with more residues than fit in the context (`config.max_position_embeddings - 2`, or
more than `window` when given) is cut into overlapping windows of `window` residues (default: the context minus 2)
starting every `stride` residues (default `window // 2`), the last window ending at the last residue. Each window is
embedded as its own `<bos> window <eos>`, each residue's embedding is the uniform (unweighted) average over the
windows that cover it, `mean`/`max` pool those averaged residue embeddings, and `bos` comes from the first window.
No forward pass is ever longer than the window plus 2 tokens, so memory is bounded by the window and the token
budget, never by the sequence length.
"""

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from ..data.collators import padded_inputs, token_budget_batches
from ..data.fasta import read_fasta
from ..data.residues import apply_residue_policy, check_residue_policy, invalid_character_pattern, strip_stop_codon
from ..modeling_plm import pool_residues
from .context import context_residues, special_token_layout
from .exports import load_embeddings  # importable from here as before
from .inputs import is_batch, iter_inputs
from .stores import (  # EmbeddingRecord and shard_name: importable from here as before
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    EmbeddingRecord,
    Record,
    StorePart,
    check_resumed_shard,
    finish_store,
    open_store,
    shard_name,
    store_shard,
)

TASK = "protein-embedding"
POOLING_METHODS = ("mean", "max", "bos")
RETURN_TENSORS = ("np", "pt")
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingOptions:
    """Validated embedding options (built by `_resolve_options`)."""

    layer_indices: tuple[int, ...]  # non-negative hidden-state indices
    stack_layers: bool  # False when `layers` was an int: no layer axis in the output
    pooling: tuple[str, ...]
    per_residue: bool
    token_budget: int
    window: int  # residues per window
    stride: int
    max_residues: int  # longer sequences are windowed
    batch_size: int | None = None  # most rows per forward pass, within the token budget (None: the budget alone)
    leading_specials: int = 1  # special tokens the tokenizer puts before the residues (<bos>), and after (<eos>)
    trailing_specials: int = 1


class _Piece(NamedTuple):
    """One forward-pass row: a whole sequence, or one window of a long one."""

    owner: int  # position of the sequence in the input
    start: int  # first residue of the window (0 for a whole sequence)
    ids: list[int]  # residue token ids (no special tokens)
    windowed: bool


# transformers' own protein encoders, embedded as they are (to compare a family without converting it).
STOCK_ENCODER_TYPES = ("esm", "esmc", "t5")


def _backbone_of(model: torch.nn.Module, allow_stock: bool = True) -> torch.nn.Module:
    """The bare backbone of any PLM model class (`PLMModel` itself, or `.model` of the head classes) or, with
    `allow_stock`, of transformers' ESM-2, ESM C and T5 models (their base model; a T5 encoder-decoder's encoder)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type == "plm":
        return getattr(model, model.base_model_prefix, model)
    if allow_stock and model_type in STOCK_ENCODER_TYPES:
        return model.get_encoder() if model.config.is_encoder_decoder else model.base_model
    stock = " or a transformers EsmModel, EsmcModel or T5EncoderModel" if allow_stock else ""
    raise TypeError(
        f"this needs a modeling_plm model (config.model_type 'plm'){stock}, got {type(model).__name__}; "
        "load one with AutoModel.from_pretrained(...) after `import modeling_plm`."
    )


def _resolve_options(
    config: Any,
    *,
    layers: int | Sequence[int],
    pooling: str | Sequence[str] | None,
    per_residue: bool,
    token_budget: int,
    window: int | None,
    stride: int | None,
    batch_size: int | None = None,
    tokenizer: Any = None,
) -> EmbeddingOptions:
    num_states = config.num_hidden_layers + 1
    leading, trailing = map(len, special_token_layout(tokenizer)) if tokenizer is not None else (1, 1)
    stack_layers = not isinstance(layers, (int, np.integer))
    requested = [int(layer) for layer in layers] if stack_layers else [int(layers)]
    if not requested:
        raise ValueError("layers is empty: pass a hidden-state index such as -1, or a list of them.")
    for layer in requested:
        if not -num_states <= layer < num_states:
            raise ValueError(
                f"layer {layer} is out of range: this model has {num_states} hidden states "
                f"(0 = embeddings, {num_states - 1} or -1 = the last, after the final norm)."
            )
    if pooling is None:
        methods: tuple[str, ...] = ()
    elif isinstance(pooling, str):
        methods = (pooling,)
    else:
        methods = tuple(pooling)
    for method in methods:
        if method not in POOLING_METHODS:
            raise ValueError(f"pooling must be among {POOLING_METHODS}, got {method!r}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"pooling lists a method twice: {list(methods)}")
    if "bos" in methods and not leading:
        raise ValueError("pooling 'bos' needs a tokenizer that puts a token before the residues; this one adds none")
    if not methods and not per_residue:
        raise ValueError("Nothing to compute: give pooling methods, per_residue=True, or both.")
    if token_budget < 1:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    # A model without a position table (T5's relative positions, as transformers' T5 has it) has no context limit.
    unlimited = getattr(config, "max_position_embeddings", None) is None
    fits = 2**31 if unlimited else context_residues(config, leading + trailing)
    if window is None:
        window = fits
    elif not 1 <= window <= fits:
        raise ValueError(f"window must be between 1 and the context minus special tokens ({fits} residues): {window}")
    max_residues = window
    if stride is None:
        stride = max(1, window // 2)
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be between 1 and the window ({window}), got {stride}")
    return EmbeddingOptions(
        layer_indices=tuple(layer % num_states for layer in requested),
        stack_layers=stack_layers,
        pooling=methods,
        per_residue=per_residue,
        token_budget=token_budget,
        window=window,
        stride=stride,
        max_residues=max_residues,
        batch_size=batch_size,
        leading_specials=leading,
        trailing_specials=trailing,
    )


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """First residue of each window: every `stride` residues, plus one ending exactly at the last residue."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def _pieces_of(residue_ids: list[list[int]], options: EmbeddingOptions) -> list[_Piece]:
    pieces = []
    for owner, ids in enumerate(residue_ids):
        if len(ids) <= options.max_residues:
            pieces.append(_Piece(owner, 0, ids, False))
            continue
        for start in window_starts(len(ids), options.window, options.stride):
            pieces.append(_Piece(owner, start, ids[start : start + options.window], True))
    return pieces


def _batches(pieces: list[_Piece], options: EmbeddingOptions) -> Iterator[list[_Piece]]:
    """Longest first; each batch's padded size (rows x longest row, in tokens with <bos> and <eos>) stays within the
    budget, and its rows within `batch_size` when given. A single row longer than the budget runs alone: the budget
    bounds batching, and the window bounds each row.
    """
    specials = options.leading_specials + options.trailing_specials
    for indices in token_budget_batches([len(piece.ids) + specials for piece in pieces], options.token_budget):
        rows = options.batch_size or len(indices)
        for start in range(0, len(indices), rows):
            yield [pieces[index] for index in indices[start : start + rows]]


def _finish(
    states: torch.Tensor, bos: torch.Tensor, options: EmbeddingOptions, stored_dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Pooled values (and residues) from one sequence's residue states (n_layers, L, H) and `<bos>` (n_layers, H)."""
    result: dict[str, torch.Tensor] = {}
    every_residue = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
    for method in options.pooling:
        if method == "bos":
            result["bos"] = bos.clone()
        else:  # the model's own pooling, as PLMForSequenceClassification pools
            result[method] = pool_residues(states, every_residue, method)
    if options.per_residue:
        result["residues"] = states.clone()
    if not options.stack_layers:
        result = {name: value[0] for name, value in result.items()}
    return {name: value.to(stored_dtype).contiguous() for name, value in result.items()}


@torch.no_grad()
def _iter_embeddings(
    backbone: torch.nn.Module,
    tokenizer: Any,
    residue_ids: list[list[int]],
    options: EmbeddingOptions,
    stored_dtype: torch.dtype = torch.float32,
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield (input position, outputs as CPU tensors) for every sequence, in processing (length) order."""
    device = backbone.device
    # Our backbone attends as its model was trained to embed (both ways, or causally for causal-only models);
    # transformers' encoders always attend both ways.
    plm = backbone.config.model_type == "plm"
    extra = {"attention_type": getattr(backbone.config, "embedding_attention", "bidirectional")} if plm else {}
    leading_ids, trailing_ids = special_token_layout(tokenizer)
    first = len(leading_ids)
    last_state = backbone.config.num_hidden_layers
    need_all_states = any(index != last_state for index in options.layer_indices)
    pieces = _pieces_of(residue_ids, options)
    windows_left: dict[int, int] = {}
    for piece in pieces:
        if piece.windowed:
            windows_left[piece.owner] = windows_left.get(piece.owner, 0) + 1
    # Long sequences in progress: summed residue states, how many windows covered each residue, the first <bos>.
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, torch.Tensor] = {}
    first_bos: dict[int, torch.Tensor] = {}

    for batch in _batches(pieces, options):
        rows = [[*leading_ids, *piece.ids, *trailing_ids] for piece in batch]
        inputs = padded_inputs(rows, tokenizer.pad_token_id)
        outputs = backbone(
            input_ids=inputs["input_ids"].to(device),
            attention_mask=inputs["attention_mask"].to(device),
            output_hidden_states=need_all_states,
            **extra,
        )
        if need_all_states:
            selected = torch.stack([outputs.hidden_states[index] for index in options.layer_indices])
        else:
            selected = outputs.last_hidden_state.unsqueeze(0).expand(len(options.layer_indices), -1, -1, -1)
        selected = selected.float().cpu()  # (n_layers, rows, tokens, H)

        for row, piece in enumerate(batch):
            length = len(piece.ids)
            states = selected[:, row, first : first + length]
            if not piece.windowed:
                yield piece.owner, _finish(states, selected[:, row, 0], options, stored_dtype)
                continue
            owner = piece.owner
            if owner not in sums:
                total = len(residue_ids[owner])
                sums[owner] = torch.zeros(states.shape[0], total, states.shape[2])
                counts[owner] = torch.zeros(total)
            sums[owner][:, piece.start : piece.start + length] += states
            counts[owner][piece.start : piece.start + length] += 1
            if piece.start == 0:
                first_bos[owner] = selected[:, row, 0].clone()
            windows_left[owner] -= 1
            if windows_left[owner] == 0:
                averaged = sums.pop(owner) / counts.pop(owner)[None, :, None]
                yield owner, _finish(averaged, first_bos.pop(owner), options, stored_dtype)


def _tokenize_residues(tokenizer: Any, sequences: list[str]) -> list[list[int]]:
    """Residue token ids without special tokens; the tokenizer's invalid-residue policy applies (errors name the
    0-based sequence index)."""
    if not sequences:
        return []
    # verbose=False: the tokenizer's "longer than model_max_length" warning does not apply, long ones are windowed.
    if hasattr(tokenizer, "valid_residues"):  # ours: the residue policy reads the strings
        residue_ids = tokenizer(sequences, add_special_tokens=False, verbose=False)["input_ids"]
    else:  # another family's tokenizer (ESM's, T5's sentencepiece): one residue per word, as their users call them
        words = [list(sequence) for sequence in sequences]
        residue_ids = tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)["input_ids"]
    for index, ids in enumerate(residue_ids):
        if not ids:
            raise ValueError(f"sequence {index} is empty (no residues left after the tokenizer's policy)")
    return residue_ids


def _check_special_ids(tokenizer: Any) -> None:
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer needs a pad token to embed sequences in batches")


def _to_output(result: dict[str, torch.Tensor], return_tensors: str) -> dict[str, Any]:
    if return_tensors == "pt":
        return result
    return {name: value.numpy() for name, value in result.items()}


def embed_sequences(
    model: torch.nn.Module,
    tokenizer: Any,
    sequences: Sequence[str] | Iterable[str],
    *,
    layers: int | list[int] = -1,
    pooling: str | list[str] | None = "mean",
    per_residue: bool = False,
    token_budget: int = 8192,
    window: int | None = None,
    stride: int | None = None,
    return_tensors: str = "np",
    progress: bool = False,
    batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """Embed protein sequences; one dict of float32 arrays per sequence, in input order.

    Args:
        model: any modeling_plm model (`PLMModel`, `PLMForMaskedLM`, `PLMForCausalLM`, ...). Its bare backbone runs
            with bidirectional attention, in eval mode for the call (the model's mode is restored afterwards).
            transformers' own `EsmModel`, `EsmcModel` and `T5EncoderModel` (or their masked-LM / encoder-decoder
            classes) are embedded as they are, with their own tokenizers, to compare a family without converting
            it; a converted copy gives the same numbers. `layers` then indexes their `hidden_states`.
        tokenizer: the model's tokenizer; its `invalid_residues` policy validates the input, and errors name the
            0-based sequence index. Special tokens written in a sequence (`<mask>`) count as residues. Another
            family's tokenizer gets one residue per word (`is_split_into_words`), as ProtT5's and Ankh's need.
        sequences: residue strings: a list, a dataset column (`ds["sequence"]`), `KeyDataset(ds, "sequence")` or any
            iterable of str. An empty sequence raises ValueError naming its index.
        layers: hidden-state index (0 = embeddings, -1 = last, after the final norm), or a list of them.
        pooling: "mean", "max", "bos", a list of them, or None for none.
        per_residue: also return "residues", one row per residue of the input (`<bos>`/`<eos>` stripped).
        token_budget: most tokens per forward pass, padding included (rows x longest row). Sequences are sorted by
            length first, so little is padding. It does not change the results.
        batch_size: most sequences (windows) per forward pass, within the token budget; None: the budget alone.
        window, stride: the long-sequence strategy (see the module docstring): sequences with more residues than
            the context minus 2 (or than `window`, when given) are embedded in overlapping windows of `window`
            residues every `stride` residues, averaged per residue with uniform weights.
        return_tensors: "np" (numpy arrays) or "pt" (CPU torch tensors).
        progress: show a progress bar (sequences/s).

    Returns:
        `[{"mean": (H,), "max": (H,), "bos": (H,), "residues": (L, H)}, ...]` with the requested keys; with a list of
        layers every array gains a leading layer axis: (n_layers, H) and (n_layers, L, H).

    For a sequence that fits the context the result equals `model(**tokenizer([sequence], return_tensors="pt"),
    output_hidden_states=True)` on that sequence alone (within float error, ~1e-6), whatever the batch around it.
    """
    if return_tensors not in RETURN_TENSORS:
        raise ValueError(f"return_tensors must be one of {RETURN_TENSORS}, got {return_tensors!r}")
    if isinstance(sequences, str):
        raise TypeError("sequences must be a list of strings; wrap a single sequence as [sequence]")
    if not is_batch(sequences):
        raise TypeError(f"sequences must be a list (or dataset column) of strings, got {type(sequences).__name__}")
    sequences = list(iter_inputs(sequences))
    for index, sequence in enumerate(sequences):
        if isinstance(sequence, dict):  # iterating a datasets.Dataset yields its rows
            raise TypeError(
                f"sequence {index} is a dict (a dataset row?): pass the column, ds['sequence'] or KeyDataset(ds, "
                f"'sequence'); its keys: {sorted(sequence)}"
            )
        if not isinstance(sequence, str):
            raise TypeError(f"sequence {index} is a {type(sequence).__name__}, not a str")
    backbone = _backbone_of(model)
    options = _resolve_options(
        backbone.config,
        layers=layers,
        pooling=pooling,
        per_residue=per_residue,
        token_budget=token_budget,
        window=window,
        stride=stride,
        batch_size=batch_size,
        tokenizer=tokenizer,
    )
    residue_ids = _tokenize_residues(tokenizer, sequences)
    results: list[dict[str, Any] | None] = [None] * len(sequences)
    bar = tqdm(total=len(sequences), unit="seq", desc="embedding", disable=not progress)
    was_training = backbone.training
    backbone.eval()
    try:
        _check_special_ids(tokenizer)
        for owner, result in _iter_embeddings(backbone, tokenizer, residue_ids, options):
            results[owner] = _to_output(result, return_tensors)
            bar.update(1)
    finally:
        backbone.train(was_training)
        bar.close()
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------------
# transformers pipeline
# ---------------------------------------------------------------------------------------------------------------------

_CALL_PARAMETERS = (
    "layers",
    "pooling",
    "per_residue",
    "token_budget",
    "batch_size",
    "window",
    "stride",
    "return_tensors",
    "progress",
)


class ProteinEmbeddingPipeline(Pipeline):
    """Per-residue and pooled protein embeddings: `pipeline("protein-embedding", model=...)`.

    ```python
    import modeling_plm.inference  # registers the task
    from transformers import pipeline

    embedder = pipeline("protein-embedding", model="runs/demo/final", pooling=["mean", "max"])
    embedder("MKTAYIAKQRQISFVKSHFSRQ")["mean"].shape  # (H,)
    embedder(["MKTAYIAK", "MSLRSEHIWIEPLE"], layers=[-1, -2], per_residue=True)[1]["residues"].shape  # (2, 14, H)
    ```

    Options (at construction or per call, a call's win): `layers`, `pooling`, `per_residue`, `token_budget`, `window`,
    `stride`, `return_tensors` ("np" or "pt"), `progress`; see `embed_sequences`, which gives identical results.
    The model may be `PLMModel` (what `pipeline()` loads from a folder or hub id) or any head class such as
    `PLMForMaskedLM`: its backbone is used.

    Batching: `__call__` sends a whole list of sequences to `embed_sequences`, which sorts them by length and fills
    each forward pass up to `token_budget` tokens; transformers' `batch_size` caps the rows of each forward pass
    (results do not depend on it: padding never changes a row). Any other batch (a generator, a dataset column
    `ds["sequence"]`, `KeyDataset(ds, "sequence")`) is consumed lazily in chunks of `chunk_size` (default 1024)
    sequences, each chunk batched as above, and the results are yielded in input order, as transformers' pipelines
    yield theirs for a dataset: `list(embedder(KeyDataset(ds, "sequence"))) == embedder(list(ds["sequence"]))`.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        unknown = sorted(set(kwargs) - set(_CALL_PARAMETERS) - {"chunk_size"})
        if unknown:
            raise TypeError(f"protein-embedding got unknown options {unknown}; it takes {list(_CALL_PARAMETERS)}")
        forward_params = {name: kwargs[name] for name in _CALL_PARAMETERS if name in kwargs}
        if "chunk_size" in kwargs:
            forward_params["chunk_size"] = kwargs["chunk_size"]
        return {}, forward_params, {}

    # The per-item hooks of transformers' Pipeline (used only by its run_single path): one sequence at a time.
    def preprocess(self, inputs: str, **_: Any) -> dict[str, str]:
        return {"sequence": inputs}

    def _forward(self, model_inputs: dict[str, str], **forward_params: Any) -> dict[str, Any]:
        forward_params.pop("chunk_size", None)
        return embed_sequences(self.model, self.tokenizer, [model_inputs["sequence"]], **forward_params)[0]

    def postprocess(self, model_outputs: dict[str, Any], **_: Any) -> dict[str, Any]:
        return model_outputs

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """Embed one sequence (returns one dict), a list of them (returns a list of dicts, in input order), or any other
        batch: a generator, dataset column or `KeyDataset` (returns an iterator of dicts, in input order)."""
        if args:
            raise TypeError("pass sequences as one str or one list of str; options as keywords")
        kwargs.pop("num_workers", None)  # transformers' DataLoader option: embedding runs in this process
        _, forward_params, _ = self._sanitize_parameters(**kwargs)
        params = {**self._forward_params, **forward_params}
        chunk_size = params.pop("chunk_size", 1024)
        if isinstance(inputs, str):
            return embed_sequences(self.model, self.tokenizer, [inputs], **params)[0]
        if isinstance(inputs, (list, tuple)):
            return embed_sequences(self.model, self.tokenizer, list(inputs), **params)
        if is_batch(inputs):
            return self._iter_chunks(iter_inputs(inputs), chunk_size, params)
        raise TypeError(
            f"protein-embedding takes a str, a list of str, a dataset column or KeyDataset, got {type(inputs).__name__}"
        )

    def _iter_chunks(self, inputs: Iterator[str], chunk_size: int, params: dict[str, Any]) -> Iterator[dict]:
        while True:
            chunk = [sequence for _, sequence in zip(range(chunk_size), inputs)]
            if not chunk:
                return
            yield from embed_sequences(self.model, self.tokenizer, chunk, **params)


def register_pipeline() -> None:
    """Register `protein-embedding` with transformers' pipeline registry (done on import; safe to repeat)."""
    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is ProteinEmbeddingPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=ProteinEmbeddingPipeline, pt_model=AutoModel, default=None, type="text"
    )


register_pipeline()


# ---------------------------------------------------------------------------------------------------------------------
# Bulk: FASTA -> safetensors shards
# ---------------------------------------------------------------------------------------------------------------------


def _model_fingerprint(backbone: torch.nn.Module) -> str:
    """Identifies the weights cheaply: the config plus the input-embedding and final-norm weights."""
    config = backbone.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "architectures", "auto_map", "dtype", "torch_dtype"):
        config.pop(volatile, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for tensor in (backbone.get_input_embeddings().weight, backbone.norm.weight):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class CleanChunk(NamedTuple):
    kept: list[Record]  # (index, id, cleaned sequence)
    skipped: list[list]  # [index, id, reason]
    stop_stripped: int


def _file_residue_policy(tokenizer: Any, invalid_residues: str | None) -> str:
    """The residue policy for a file's records: the one given, else the tokenizer's own."""
    policy = invalid_residues if invalid_residues is not None else getattr(tokenizer, "invalid_residues", "error")
    return check_residue_policy(policy)


def _clean_records(records: list[Record], policy: str, invalid: re.Pattern[str], fasta_path: Path) -> CleanChunk:
    """The records under the one residue policy (`data.residues`): upper-cased, a trailing `*` stripped (counted),
    invalid characters (gaps, digits, `<...>` typed into a sequence) handled by `policy`; records left empty or
    skipped are listed with the reason."""
    kept, skipped, stop_stripped = [], [], 0
    for index, record_id, sequence in records:
        sequence, had_stop = strip_stop_codon(sequence.upper())
        stop_stripped += had_stop
        cleaned = apply_residue_policy(sequence, policy, invalid, f"{fasta_path}: record {index} ({record_id!r})")
        if cleaned is None:
            skipped.append([index, record_id, "invalid"])
        elif not cleaned:
            skipped.append([index, record_id, "empty"])
        else:
            kept.append((index, record_id, cleaned))
    return CleanChunk(kept, skipped, stop_stripped)


def embed_fasta(
    model: torch.nn.Module,
    tokenizer: Any,
    fasta_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    layers: int | list[int] = -1,
    pooling: str | Sequence[str] | None = ("mean",),
    per_residue: bool = False,
    token_budget: int = 8192,
    shard_size: int = 10_000,
    dtype: str = "float32",
    window: int | None = None,
    stride: int | None = None,
    resume: bool = True,
    progress: bool = True,
    invalid_residues: str | None = "error",
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Stream a FASTA(.gz) file of any size into safetensors shards plus a manifest; resumable after a kill.

    The output folder's layout is `stores.py`'s: shard k holds the records at file positions [k * shard_size,
    (k + 1) * shard_size), as tensors `"{index}/{name}"` with the shapes of `embed_sequences` (per-residue arrays
    have one row per residue); the manifest's header holds the settings (layers, pooling, per_residue, shard_size,
    dtype, window, stride, invalid_residues, model fingerprint).

    Resuming: with `resume=True` (default) a rerun keeps the listed shards, checks that the FASTA's records at
    those positions still have the same ids, and continues with the next shard: no record is lost or duplicated, and
    the output equals an uninterrupted run's. It refuses to resume with different settings. `resume=False` deletes
    this function's files (shards, temporary shards, manifest; nothing else) in `output_dir` and starts over.

    Records: duplicate ids are kept (each under its own index) and counted. A trailing stop codon `*` is removed
    (counted). `invalid_residues` ("error", "skip", "X", "drop": `data.residues`' one policy; None = the tokenizer's
    own) applies to every record; "error" raises ValueError naming the file, record index and id, character and
    position, after the shards before it have been written. Empty sequences (also those emptied by "drop") and
    skipped ones are left out and listed with the reason.

    Several processes: with `world_size` > 1, this process (`rank`) embeds the shards k with k % world_size == rank
    into the shared `output_dir` under its own manifest, and the process that finishes last merges every part into
    `manifest.jsonl`, equal to a one-process run's (see `stores.py`). Each part resumes on its own; resuming with
    another `world_size` is refused. `summary["complete"]` says whether the merged output exists yet.

    Memory: one shard's records and embeddings (with per_residue: shard_size x mean length x H x n_layers x 4
    bytes, so lower `shard_size` for large per-residue runs) plus the set of record ids (for the duplicate count).

    Returns a summary: `records` (embedded and stored), `read` (records in the file), `shards`, `duplicates`
    (records whose id appeared earlier), `skipped` (empty or invalid), `stop_stripped`, `resumed` (records found
    already done), `output_dir`.
    """
    fasta_path, output_dir = Path(fasta_path), Path(output_dir)
    backbone = _backbone_of(model, allow_stock=False)
    options = _resolve_options(
        backbone.config,
        layers=layers,
        pooling=pooling,
        per_residue=per_residue,
        token_budget=token_budget,
        window=window,
        stride=stride,
        tokenizer=tokenizer,
    )
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    part = StorePart(rank, world_size)
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {list(STORAGE_DTYPES)}, got {dtype!r}")
    policy = _file_residue_policy(tokenizer, invalid_residues)
    if not fasta_path.exists():
        raise FileNotFoundError(f"FASTA file not found: {fasta_path}")
    if fasta_path.is_dir():
        raise IsADirectoryError(f"{fasta_path} is a directory, not a FASTA file")
    header = _store_header(backbone, options, fasta_path, policy=policy, shard_size=shard_size, dtype=dtype)
    if world_size > 1:
        header |= {"rank": rank, "world_size": world_size}
    done_shards = open_store(output_dir, header, resume, part)

    seen_ids: set[str] = set()
    counts = {"read": 0, "records": 0, "duplicates": 0, "skipped": 0, "stop_stripped": 0, "resumed": 0}
    invalid = invalid_character_pattern(tokenizer.valid_residues)
    bar = tqdm(unit="rec", desc=f"embedding {fasta_path.name}", disable=not progress, smoothing=0.1)
    was_training = backbone.training
    backbone.eval()
    shard, position, started = 0, 0, time.perf_counter()  # position: this part's shards so far
    try:
        records = read_fasta(fasta_path)
        while chunk := [(counts["read"] + i, r.id, r.sequence) for i, r in zip(range(shard_size), records)]:
            counts["read"] += len(chunk)
            for _, record_id, _ in chunk:
                counts["duplicates"] += record_id in seen_ids
                seen_ids.add(record_id)
            if not part.owns(shard):  # another process's
                bar.update(len(chunk))
            elif position < len(done_shards):  # written by an earlier run
                entry = done_shards[position]
                check_resumed_shard(entry, chunk, fasta_path, output_dir)
                counts["records"] += len(entry["records"])
                counts["skipped"] += len(entry["skipped"])
                counts["stop_stripped"] += entry.get("stop_stripped", 0)
                counts["resumed"] += len(chunk)
                bar.update(len(chunk))
            else:
                clean = _clean_records(chunk, policy, invalid, fasta_path)
                tensors = _embed_chunk(backbone, tokenizer, clean.kept, options=options, dtype=dtype, bar=bar)
                bar.update(len(clean.skipped))
                store_shard(
                    output_dir,
                    shard=shard,
                    tensors=tensors,
                    kept=clean.kept,
                    skipped=clean.skipped,
                    stop_stripped=clean.stop_stripped,
                    part=part,
                )
                counts["records"] += len(clean.kept)
                counts["skipped"] += len(clean.skipped)
                counts["stop_stripped"] += clean.stop_stripped
                bar.set_postfix(shards=position + 1)
            position += part.owns(shard)
            shard += 1
    finally:
        backbone.train(was_training)
        bar.close()
    if position < len(done_shards):
        raise ValueError(f"{fasta_path} has fewer records than the manifest of {output_dir} lists; use --no-resume")
    # The done line leaves out what differs between an uninterrupted and a resumed run, so both manifests are equal.
    totals = {key: counts[key] for key in ("read", "records", "duplicates", "skipped", "stop_stripped")}
    complete = finish_store(output_dir, {**totals, "shards": shard}, part)
    seconds = round(time.perf_counter() - started, 2)
    summary = {**totals, "shards": shard, "resumed": counts["resumed"], "seconds": seconds}
    if world_size > 1:
        summary |= {"rank": rank, "world_size": world_size, "complete": complete}
    return {**summary, "output_dir": str(output_dir)}


def _store_header(
    backbone: torch.nn.Module,
    options: EmbeddingOptions,
    fasta_path: Path,
    *,
    policy: str,
    shard_size: int,
    dtype: str,
) -> dict[str, Any]:
    """The settings a resumed run must share (all but `model` and `fasta`, which may be spelled differently)."""
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "layers": list(options.layer_indices) if options.stack_layers else options.layer_indices[0],
        "pooling": list(options.pooling),
        "per_residue": options.per_residue,
        "shard_size": shard_size,
        "dtype": dtype,
        "window": options.window,
        "stride": options.stride,
        "max_residues": options.max_residues,
        "invalid_residues": policy,
        "model": str(getattr(backbone.config, "_name_or_path", "")),
        "model_fingerprint": _model_fingerprint(backbone),
        "fasta": str(fasta_path),
    }


def _embed_chunk(
    backbone: torch.nn.Module,
    tokenizer: Any,
    records: list[Record],
    *,
    options: EmbeddingOptions,
    dtype: str,
    bar: tqdm,
) -> dict[str, torch.Tensor]:
    """The tensors of one shard's clean records, named `"{index}/{name}"`."""
    sequences = [sequence for _, _, sequence in records]
    residue_ids = tokenizer(sequences, add_special_tokens=False, verbose=False)["input_ids"] if sequences else []
    tensors: dict[str, torch.Tensor] = {}
    _check_special_ids(tokenizer)
    for position, result in _iter_embeddings(backbone, tokenizer, residue_ids, options, STORAGE_DTYPES[dtype]):
        index = records[position][0]
        for name, value in result.items():
            tensors[f"{index}/{name}"] = value
        bar.update(1)
    return tensors


__all__ = [
    "EmbeddingOptions",
    "EmbeddingRecord",
    "ProteinEmbeddingPipeline",
    "embed_fasta",
    "embed_sequences",
    "load_embeddings",
    "register_pipeline",
    "shard_name",
    "window_starts",
]
