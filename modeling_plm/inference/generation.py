"""Protein generation and GLM span infilling: two transformers pipelines and the functions behind them.

    pipe = pipeline("protein-generation", model="runs/demo/final")
    pipe("MKT", max_length=120, num_return_sequences=4, seed=0)   # prompted: [{"sequence", "generated", "finished"}]
    pipe(num_return_sequences=8, top_p=0.95)                      # unconditional: the prompt is <bos> alone
    pipe(["MKT", "MSL"], do_sample=False, max_length=50)          # several prompts: one list of results per prompt

    fill = pipeline("protein-infilling", model="runs/demo/final")
    fill("MKTAYIAK<smask>SHFSRQ<smask>EPLE", max_span_length=20)   # [{"sequence", "spans", "finished"}]
    fill("MKTAYIAKQRQ<gmask>")                                      # a trailing <gmask> continues the protein

Generation runs causal attention with the KV cache: the prompt is `<bos>` + residues (no `<eos>`), several prompts go
left-padded into one `generate()` call, and a row stops at `<eos>`. Only residue letters can be sampled: every other
token (`<mask>`, `<pad>`, `<unk>`, `<bos>`, the GLM tokens, any embedding row beyond the tokenizer) is suppressed in
the logits, except the stop token, so even an untrained model emits residues only.

Infilling follows the layout GLMCollator trains (span mode): the context holds every span as one `<smask>`; each span
is generated after the context as `<sop> ...` at the position of its `<smask>`, with block positions 1, 2, ..., until
`<eop>`; spans are filled left to right and each span sees the ones filled before it (the `<eop>` of a finished span
is not kept, as in training, where it is only a label). The alternative, writing each finished span into the context
and infilling the next `<smask>` as if it were the only one, would show the model contexts that GLMCollator never
builds. The first span's inputs are exactly `modeling_plm.data.collators.glm_infill_inputs`; `_glm_inputs` extends that
layout to the later spans.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    Pipeline,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

from ..data.collators import pad_rows, padded_inputs
from ..tokenization_plm import glm_layout
from .context import context_residues

logger = logging.get_logger(__name__)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "GenerationSettings",
    "InfillingSettings",
    "ProteinGenerationPipeline",
    "ProteinInfillingPipeline",
    "decode_generation_batch",
    "encode_prompts",
    "generate_sequences",
    "infill_sequences",
    "parse_infill_template",
    "prepare_generation_batch",
    "residue_token_ids",
    "run_generation_batch",
]

# Rows (prompts x num_return_sequences) per generate() call when the caller does not say.
DEFAULT_BATCH_SIZE = 32

Row = tuple[int, list[int]]  # (index of the prompt it belongs to, prompt token ids incl. <bos>)


# ----------------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------------


def _check_sampling(settings: GenerationSettings | InfillingSettings) -> None:
    """The sampling options both settings classes share."""
    num_return_sequences, do_sample = settings.num_return_sequences, settings.do_sample
    temperature, top_k, top_p = settings.temperature, settings.top_k, settings.top_p
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be >= 1, got {num_return_sequences}")
    if num_return_sequences > 1 and not do_sample:
        raise ValueError(
            f"num_return_sequences={num_return_sequences} with do_sample=False would repeat one greedy result; "
            "pass do_sample=True"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {top_p}")


@dataclass(frozen=True)
class GenerationSettings:
    """Options of `generate_sequences` and the "protein-generation" pipeline (lengths count residues).

    Attributes:
        num_return_sequences: Sequences per prompt.
        max_length: Most residues of a whole sequence, prompt included (default: the model's context,
            `max_position_embeddings - 2`, which leaves room for `<bos>` and `<eos>`). A prompt of P residues gets up
            to `max_length - P + 1` new tokens: the last one can only end the sequence; if it is a residue instead,
            the sequence is cut at `max_length` residues and reported with `finished=False`.
        max_new_tokens: Most new tokens per sequence, as in transformers (the closing `<eos>` counts); with
            max_length, the tighter of the two applies. A sequence that uses them all on residues has finished=False.
        min_length: Fewest residues of a whole sequence, prompt included: `<eos>` is suppressed until then.
        do_sample: Sample (True) or pick the most likely residue (False, greedy).
        temperature, top_k, top_p: Sampling filters (top_k=0 and top_p=1 disable them); used only when sampling.
        repetition_penalty: CTRL's penalty (> 1 discourages residues already in the sequence, prompt included).
        seed: Makes sampling reproducible: the call runs on torch's RNG seeded with it, inside `torch.random.fork_rng`,
            so the global RNG state (CPU and the model's CUDA device) is restored afterwards. Without a seed the call
            draws from, and advances, the global torch RNG as transformers does.
    """

    num_return_sequences: int = 1
    max_length: int | None = None
    max_new_tokens: int | None = None
    min_length: int = 0
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_sampling(self)
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 residue, got {self.max_length}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.min_length < 0:
            raise ValueError(f"min_length must be >= 0, got {self.min_length}")
        if self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length ({self.min_length}) is larger than max_length ({self.max_length})")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 disables it), got {self.repetition_penalty}")


@dataclass(frozen=True)
class InfillingSettings:
    """Options of `infill_sequences` and the "protein-infilling" pipeline.

    Attributes:
        num_return_sequences: Completions per input (needs do_sample=True above 1).
        do_sample: Sample (True) or fill greedily (False, the default).
        temperature, top_k, top_p: Sampling filters (top_k=0 and top_p=1 disable them); used only when sampling.
        max_span_length: Most residues per span; a span that reaches it without `<eop>` is reported unfinished.
            Default: what is left of the model's context (`max_position_embeddings - 2` residues for the completed
            sequence, counting the spans filled so far).
        seed: Reproducible sampling, scoped as in `GenerationSettings`.
    """

    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_span_length: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_sampling(self)
        if self.max_span_length is not None and self.max_span_length < 1:
            raise ValueError(f"max_span_length must be >= 1 residue, got {self.max_span_length}")


GENERATION_OPTIONS = tuple(field.name for field in fields(GenerationSettings))
INFILLING_OPTIONS = tuple(field.name for field in fields(InfillingSettings))


def _settings(settings_class: type, options: dict[str, Any]) -> Any:
    unknown = sorted(set(options) - {field.name for field in fields(settings_class)})
    if unknown:
        allowed = ", ".join(field.name for field in fields(settings_class))
        raise TypeError(f"Unknown option(s) {', '.join(unknown)}; the options are: {allowed}")
    return settings_class(**options)


# ----------------------------------------------------------------------------------------------------------------------
# Shared pieces: vocabulary, logits processing, stopping, seeding, padding
# ----------------------------------------------------------------------------------------------------------------------


def residue_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of the residue tokens: the single-letter, non-special entries of the vocabulary (ESM's `.`/`-` excluded)."""
    special = set(tokenizer.all_special_tokens)
    return sorted(
        token_id
        for token, token_id in tokenizer.get_vocab().items()
        if len(token) == 1 and token.isalpha() and token not in special
    )


def _forbidden_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stop_token_id: int) -> list[int]:
    """Every id the model can emit but a residue or the stop token (embedding rows past the tokenizer included)."""
    vocab_size = max(model.get_output_embeddings().weight.shape[0], len(tokenizer))
    allowed = set(residue_token_ids(tokenizer)) | {stop_token_id}
    return [token_id for token_id in range(vocab_size) if token_id not in allowed]


class MinNewTokensPerRowLogitsProcessor(LogitsProcessor):
    """Suppresses the stop token until each row has `min_new_tokens[row]` new tokens (rows' prompts differ in length).

    For equal minimums it does what transformers' `min_new_tokens` does.
    """

    def __init__(self, prompt_width: int, min_new_tokens: torch.Tensor, stop_token_id: int):
        self.prompt_width = prompt_width
        self.min_new_tokens = min_new_tokens
        self.stop_token_id = stop_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        too_short = self.min_new_tokens.to(scores.device) > input_ids.shape[1] - self.prompt_width
        scores = scores.clone()
        scores[too_short, self.stop_token_id] = -float("inf")
        return scores


class RowBudgetStoppingCriteria(StoppingCriteria):
    """Ends each row after its own number of new tokens (transformers' max_new_tokens is one number per batch)."""

    def __init__(self, prompt_width: int, max_new_tokens: torch.Tensor):
        self.prompt_width = prompt_width
        self.max_new_tokens = max_new_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs) -> torch.BoolTensor:
        return self.max_new_tokens.to(input_ids.device) <= input_ids.shape[1] - self.prompt_width


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run the block on torch's RNG seeded with `seed`, restoring the global RNG state afterwards (no-op for None)."""
    if seed is None:
        yield
        return
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


def _sampling_kwargs(do_sample: bool, temperature: float, top_k: int, top_p: float) -> dict[str, Any]:
    # Sampling filters only when sampling (generate() warns about them otherwise); explicit values override any
    # generation_config.json of the checkpoint (transformers' global default top_k is 50).
    if not do_sample:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p}


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    return [items[start : start + size] for start in range(0, len(items), size)]


def _tokens_to_residues(tokenizer: PreTrainedTokenizerBase, token_ids: list[int]) -> str:
    return "".join(tokenizer.convert_ids_to_tokens(token_ids))


# ----------------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------------


def _normalise_prompts(prompts: str | Iterable[str | None] | None) -> list[str]:
    if prompts is None or isinstance(prompts, str):
        return [prompts or ""]
    prompts = ["" if prompt is None else prompt for prompt in prompts]
    if not prompts:
        raise ValueError("No prompts given; pass '' or None for unconditional generation.")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"Prompt {index} is a {type(prompt).__name__}, expected a string of residues")
    return prompts


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[list[int]]:
    """`<bos>` + residue ids per prompt; invalid characters follow the tokenizer's `invalid_residues` policy.

    Raises ValueError for a special token inside a prompt (`<mask>`, `<smask>`, ...): prompts are residues only.
    """
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("Generation needs a tokenizer with <bos>, <eos> and <pad> tokens.")
    residues = set(residue_token_ids(tokenizer))
    encoded = tokenizer(prompts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    for index, ids in enumerate(encoded):
        for position, token_id in enumerate(ids, start=1):
            if token_id not in residues:
                token = tokenizer.convert_ids_to_tokens(token_id)
                raise ValueError(
                    f"Prompt {index} ({prompts[index][:30]!r}) has the non-residue token {token!r} at residue "
                    f"position {position}: prompts are residues only (use the protein-infilling pipeline for "
                    "<smask>/<gmask> templates)"
                )
    return [[tokenizer.bos_token_id, *ids] for ids in encoded]


def _resolve_max_length(model: PreTrainedModel, settings: GenerationSettings) -> int:
    max_length = settings.max_length if settings.max_length is not None else context_residues(model.config)
    if settings.min_length > max_length:
        raise ValueError(f"min_length ({settings.min_length}) is larger than max_length ({max_length})")
    return max_length


def _generation_rows(
    prompt_ids: list[list[int]], settings: GenerationSettings, max_length: int, model: PreTrainedModel
) -> list[Row]:
    """One row per sequence to generate, grouped by prompt (as generate's num_return_sequences lays them out)."""
    context = context_residues(model.config)
    if max_length > context:
        if getattr(model.config, "position_embedding_type", None) == "absolute":
            raise ValueError(
                f"max_length {max_length} exceeds the model's context of {context} residues (absolute positions)"
            )
        logger.warning(
            f"max_length {max_length} exceeds the model's context of {context} residues: rotary positions run past "
            "it, but the model never saw such lengths in training"
        )
    for index, ids in enumerate(prompt_ids):
        if len(ids) - 1 > max_length:
            raise ValueError(f"Prompt {index} has {len(ids) - 1} residues, more than max_length={max_length}")
    return [(index, ids) for index, ids in enumerate(prompt_ids) for _ in range(settings.num_return_sequences)]


def prepare_generation_batch(tokenizer: PreTrainedTokenizerBase, rows: list[Row]) -> dict[str, Any]:
    """Left-padded `input_ids` and `attention_mask` for a batch of rows (positions come from the mask)."""
    return {**padded_inputs([ids for _, ids in rows], tokenizer.pad_token_id, side="left"), "rows": rows}


def run_generation_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch: dict[str, Any],
    settings: GenerationSettings,
    max_length: int,
) -> torch.Tensor:
    """One `generate()` call (KV cache) for a prepared batch; returns the output ids (prompt width + new tokens)."""
    input_ids, attention_mask, rows = batch["input_ids"], batch["attention_mask"], batch["rows"]
    width = input_ids.shape[1]
    prompt_residues = torch.tensor([len(ids) - 1 for _, ids in rows])
    # One step more than the residues left: that step may only end the sequence (a residue there is cut off).
    budgets = max_length - prompt_residues + 1
    if settings.max_new_tokens is not None:
        budgets = budgets.clamp(max=settings.max_new_tokens)
    min_new = (settings.min_length - prompt_residues).clamp(min=0)
    eos = tokenizer.eos_token_id
    kwargs: dict[str, Any] = {
        "max_new_tokens": int(budgets.max()),
        "eos_token_id": eos,
        "pad_token_id": tokenizer.pad_token_id,
        "suppress_tokens": _forbidden_token_ids(model, tokenizer, eos),
        "stopping_criteria": StoppingCriteriaList([RowBudgetStoppingCriteria(width, budgets)]),
        "num_beams": 1,
        "use_cache": True,
        **_sampling_kwargs(settings.do_sample, settings.temperature, settings.top_k, settings.top_p),
    }
    if int(min_new.max()) > 0:
        kwargs["logits_processor"] = LogitsProcessorList([MinNewTokensPerRowLogitsProcessor(width, min_new, eos)])
    if settings.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = settings.repetition_penalty
    device = model.device
    return model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs)


def decode_generation_batch(
    tokenizer: PreTrainedTokenizerBase, batch: dict[str, Any], output_ids: torch.Tensor, max_length: int
) -> list[tuple[int, dict[str, Any]]]:
    """(prompt index, result) per row; a result is {"sequence", "generated", "finished"} (see generate_sequences)."""
    width = batch["input_ids"].shape[1]
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    results = []
    for (prompt_index, prompt_ids), row in zip(batch["rows"], output_ids[:, width:].tolist()):
        new_ids: list[int] = []
        finished = False
        for token_id in row:
            if token_id in stops:
                finished = token_id == tokenizer.eos_token_id
                break
            new_ids.append(token_id)
        room = max_length - (len(prompt_ids) - 1)
        if len(new_ids) > room:  # the extra step produced a residue: cut, and the sequence did not end
            new_ids, finished = new_ids[:room], False
        prompt = _tokens_to_residues(tokenizer, prompt_ids[1:])
        generated = _tokens_to_residues(tokenizer, new_ids)
        results.append((prompt_index, {"sequence": prompt + generated, "generated": generated, "finished": finished}))
    return results


def _group_by_prompt(n_prompts: int, results: Iterable[tuple[int, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    grouped: list[list[dict[str, Any]]] = [[] for _ in range(n_prompts)]
    for prompt_index, result in results:
        grouped[prompt_index].append(result)
    return grouped


def generate_sequences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: str | Sequence[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    **options: Any,
) -> list[list[dict[str, Any]]]:
    """Generate protein sequences with a causal LM (`PLMForCausalLM` or any `generate()`-capable model).

    Args:
        model: The causal LM, e.g. `AutoModelForCausalLM.from_pretrained(folder)`.
        tokenizer: Its tokenizer.
        prompts: A string of residues, a list of them, or None / "" for unconditional generation. Each prompt is
            `<bos>` + its residues (no `<eos>`).
        batch_size: Rows (prompts x num_return_sequences) per `generate()` call; rows are left-padded.
        progress: Show a progress bar over the batches.
        **options: `GenerationSettings` fields: num_return_sequences, max_length, min_length (both in residues of the
            whole sequence, prompt included), do_sample (default True), temperature, top_k, top_p,
            repetition_penalty, seed.

    Returns:
        One list per prompt, of `num_return_sequences` dicts: `sequence` (prompt + new residues), `generated` (the
        new residues) and `finished` (True when the model ended the sequence with `<eos>`, False when it was cut at
        max_length). Only residue letters are ever produced.
    """
    settings = _settings(GenerationSettings, options)
    prompts = _normalise_prompts(prompts)
    max_length = _resolve_max_length(model, settings)
    rows = _generation_rows(encode_prompts(tokenizer, prompts), settings, max_length, model)
    results = []
    with _seeded(settings.seed, model.device), torch.no_grad():
        for chunk in tqdm(_chunks(rows, batch_size), desc="generating", unit="batch", disable=not progress):
            batch = prepare_generation_batch(tokenizer, chunk)
            output_ids = run_generation_batch(model, tokenizer, batch=batch, settings=settings, max_length=max_length)
            results.extend(decode_generation_batch(tokenizer, batch, output_ids.cpu(), max_length))
    return _group_by_prompt(len(prompts), results)


# ----------------------------------------------------------------------------------------------------------------------
# GLM infilling
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfillTemplate:
    """A parsed infilling input: the GLM context ids and where its masks are.

    `context_ids` is `<bos> ... <eos>` with one `<smask>` per span, or `<bos> ... <gmask>` (no `<eos>`) for a
    continuation; `mask_positions` are the indices of the mask tokens in it, left to right.
    """

    text: str
    context_ids: list[int]
    mask_positions: list[int]


def _glm_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    ids = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("smask", "gmask", "sop", "eop")}
    missing = [f"<{name}>" for name, token_id in ids.items() if token_id is None]
    if missing:
        raise ValueError(
            f"The tokenizer has no GLM token(s) {' '.join(missing)} (e.g. a converted ESM-2 checkpoint): infilling "
            "needs a model trained with the GLM objective (plm pretrain --objective glm)."
        )
    return ids


def parse_infill_template(tokenizer: PreTrainedTokenizerBase, text: str, index: int = 0) -> InfillTemplate:
    """Parse `"MKT<smask>LV"` (one or more `<smask>` spans) or `"MKTLV<gmask>"` (a continuation) into GLM context ids.

    Raises ValueError naming the input and the 1-based character position for: no mask; a `<gmask>` that is not the
    last token or is mixed with `<smask>` (GLMCollator never trains that); any other special token; and invalid
    residues (through the tokenizer's `invalid_residues` policy).
    """
    glm = _glm_token_ids(tokenizer)
    if not isinstance(text, str):
        raise TypeError(f"Infilling input {index} is a {type(text).__name__}, expected a string like 'MKT<smask>LV'")
    try:
        encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    except ValueError as error:
        raise ValueError(f"Infilling input {index}: {error}") from None
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    residues = set(residue_token_ids(tokenizer))
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if ids[0] != bos or ids[-1] != eos:
        raise ValueError("The tokenizer must encode a sequence as <bos> residues <eos>.")
    body, body_offsets = ids[1:-1], offsets[1:-1]
    for token_id, (start, _) in zip(body, body_offsets):
        if token_id not in residues and token_id not in (glm["smask"], glm["gmask"]):
            token = tokenizer.convert_ids_to_tokens(token_id)
            raise ValueError(
                f"Infilling input {index} ({text[:40]!r}) has {token!r} at position {start + 1}: only residues, "
                "<smask> (a span to fill) and a final <gmask> (a continuation) are allowed"
            )
    smasks = [position + 1 for position, token_id in enumerate(body) if token_id == glm["smask"]]
    gmasks = [position + 1 for position, token_id in enumerate(body) if token_id == glm["gmask"]]
    if not smasks and not gmasks:
        raise ValueError(
            f"Infilling input {index} ({text[:40]!r}) has no <smask> or <gmask>: mark each span to fill with <smask> "
            "(MKT<smask>LV), or end the input with <gmask> to continue it"
        )
    if gmasks:
        start = body_offsets[gmasks[0] - 1][0]
        if smasks or len(gmasks) > 1 or gmasks[0] != len(body):
            raise ValueError(
                f"Infilling input {index} ({text[:40]!r}) has a <gmask> at position {start + 1} that is not its only "
                "mask at the end: a <gmask> continues the sequence, so it must be the last token, without <smask> "
                "spans (the GLM objective trains these two layouts separately)"
            )
        # A continuation is open-ended: no <eos> after <gmask>, as in training.
        return InfillTemplate(text, ids[:-1], gmasks)
    return InfillTemplate(text, ids, smasks)


@dataclass
class _InfillRow:
    input_index: int
    template: InfillTemplate
    spans: list[list[int]]
    finished: list[bool]


def _glm_inputs(template: InfillTemplate, spans: list[list[int]], sop: int) -> tuple[list[int], list[int], list[int]]:
    """(input_ids, position_ids, block_position_ids) to generate span number len(spans) after the filled ones.

    The layout of GLMCollator's span mode: the context, then `<sop> span` per filled span (at its mask position,
    block positions 1, 2, ...), then `<sop>` of the next span.
    """
    return glm_layout(template.context_ids, template.mask_positions, [*spans, []], sop)


def _check_glm_model(model: PreTrainedModel) -> None:
    if "block_position_ids" not in inspect.signature(model.forward).parameters:
        raise ValueError(
            f"{type(model).__name__} takes no block_position_ids: GLM infilling needs a modeling_plm causal LM "
            "(AutoModelForCausalLM.from_pretrained on a modeling_plm checkpoint)."
        )


def _infill_chunk(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[_InfillRow],
    settings: InfillingSettings,
) -> None:
    """Fill every span of every row, left to right: one left-padded generate() call per span index.

    Each call re-encodes the context and the spans filled so far (one prefill per span) rather than carrying the KV
    cache over: between two spans the closing `<eop>` must be dropped and the next `<sop>` placed at another
    position, which generate() cannot do mid-call; a prefill is cheap next to generating a span token by token.
    """
    glm = _glm_token_ids(tokenizer)
    eop, sop, pad = glm["eop"], glm["sop"], tokenizer.pad_token_id
    forbidden = _forbidden_token_ids(model, tokenizer, eop)
    context = context_residues(model.config)
    residues = set(residue_token_ids(tokenizer))
    max_spans = max(len(row.template.mask_positions) for row in rows)
    for span_index in range(max_spans):
        active = [row for row in rows if len(row.template.mask_positions) > span_index]
        budgets = _infill_budgets(active, settings, context, residues)
        generating = [(row, budget) for row, budget in zip(active, budgets) if budget > 0]
        for row, budget in zip(active, budgets):
            if budget == 0:  # no room left in the context: an empty, unfinished span
                row.spans.append([])
                row.finished.append(False)
        if not generating:
            continue
        layouts = [_glm_inputs(row.template, row.spans, sop) for row, _ in generating]
        inputs = padded_inputs([layout[0] for layout in layouts], pad, side="left")
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        position_ids = pad_rows([layout[1] for layout in layouts], 0, side="left")
        block_position_ids = pad_rows([layout[2] for layout in layouts], 0, side="left")
        width = input_ids.shape[1]
        row_budgets = torch.tensor([budget for _, budget in generating])
        device = model.device
        output_ids = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device),
            block_position_ids=block_position_ids.to(device),
            max_new_tokens=int(row_budgets.max()),
            eos_token_id=eop,
            pad_token_id=pad,
            suppress_tokens=forbidden,
            stopping_criteria=StoppingCriteriaList([RowBudgetStoppingCriteria(width, row_budgets)]),
            num_beams=1,
            use_cache=True,
            **_sampling_kwargs(settings.do_sample, settings.temperature, settings.top_k, settings.top_p),
        )
        for (row, _), new_ids in zip(generating, output_ids[:, width:].tolist()):
            span: list[int] = []
            finished = False
            for token_id in new_ids:
                if token_id in (eop, pad):
                    finished = token_id == eop
                    break
                span.append(token_id)
            row.spans.append(span)
            row.finished.append(finished)


def _infill_budgets(rows: list[_InfillRow], settings: InfillingSettings, context: int, residues: set[int]) -> list[int]:
    """Most residues the next span of each row may have: max_span_length, or what is left of the model's context."""
    budgets = []
    for row in rows:
        n_residues = sum(token_id in residues for token_id in row.template.context_ids)
        n_residues += sum(len(span) for span in row.spans)
        room = max(context - n_residues, 0)
        budgets.append(room if settings.max_span_length is None else min(settings.max_span_length, room))
    return budgets


def _infill_result(tokenizer: PreTrainedTokenizerBase, row: _InfillRow) -> dict[str, Any]:
    """{"sequence": the input with every span substituted, "spans": the span residues, "finished": per span}."""
    template = row.template
    fill = dict(zip(template.mask_positions, row.spans))
    end = len(template.context_ids) - (1 if template.context_ids[-1] == tokenizer.eos_token_id else 0)
    pieces = []
    for position in range(1, end):
        token_id = template.context_ids[position]
        pieces.append(_tokens_to_residues(tokenizer, fill[position] if position in fill else [token_id]))
    return {
        "sequence": "".join(pieces),
        "spans": [_tokens_to_residues(tokenizer, span) for span in row.spans],
        "finished": list(row.finished),
    }


def infill_sequences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    inputs: str | Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    **options: Any,
) -> list[list[dict[str, Any]]]:
    """Fill the `<smask>` spans (or the `<gmask>` continuation) of each input with a GLM-trained causal LM.

    Args:
        model: A modeling_plm causal LM (`AutoModelForCausalLM`), trained with the GLM objective.
        tokenizer: Its tokenizer, with the GLM tokens `<smask> <gmask> <sop> <eop>`.
        inputs: One string or a list, e.g. `"MKT<smask>LV"`, `"MK<smask>LV<smask>A"` or `"MKTLV<gmask>"`.
        batch_size: Rows (inputs x num_return_sequences) per generate() call.
        progress: Show a progress bar over the batches.
        **options: `InfillingSettings` fields: num_return_sequences, do_sample (default False: greedy),
            temperature, top_k, top_p, max_span_length, seed.

    Returns:
        One list per input, of `num_return_sequences` dicts: `sequence` (the input with each mask replaced by its
        span, residues only), `spans` (the residues of each span, left to right) and `finished` (per span: True when
        the model closed it with `<eop>`, False when it hit max_span_length).
    """
    settings = _settings(InfillingSettings, options)
    _check_glm_model(model)
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not texts:
        raise ValueError("No infilling inputs given.")
    templates = [parse_infill_template(tokenizer, text, index) for index, text in enumerate(texts)]
    rows = _infill_rows(templates, settings, model)
    with _seeded(settings.seed, model.device), torch.no_grad():
        for chunk in tqdm(_chunks(rows, batch_size), desc="infilling", unit="batch", disable=not progress):
            _infill_chunk(model, tokenizer, chunk, settings)
    return _group_by_prompt(len(texts), ((row.input_index, _infill_result(tokenizer, row)) for row in rows))


def _infill_rows(
    templates: list[InfillTemplate], settings: InfillingSettings, model: PreTrainedModel
) -> list[_InfillRow]:
    context = context_residues(model.config)
    for index, template in enumerate(templates):
        if len(template.context_ids) - 2 > context:
            raise ValueError(
                f"Infilling input {index} is {len(template.context_ids) - 2} tokens long, more than the model's "
                f"context of {context}"
            )
    return [
        _InfillRow(index, template, [], [])
        for index, template in enumerate(templates)
        for _ in range(settings.num_return_sequences)
    ]


# ----------------------------------------------------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------------------------------------------------


def _plan_generation(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Any, options: dict[str, Any]
) -> tuple[GenerationSettings, int, list[Row], int]:
    """Settings, max_length in residues, the rows to generate and the number of prompts; validates everything."""
    settings = _settings(GenerationSettings, options)
    prompts = _normalise_prompts(prompts)
    max_length = _resolve_max_length(model, settings)
    rows = _generation_rows(encode_prompts(tokenizer, prompts), settings, max_length, model)
    return settings, max_length, rows, len(prompts)


class ProteinGenerationPipeline(Pipeline):
    """Protein sequence generation with a causal LM (task "protein-generation").

        pipe = pipeline("protein-generation", model="runs/demo/final")
        pipe("MKT", max_length=100, num_return_sequences=3, top_p=0.95, seed=0)
        pipe(num_return_sequences=8)                 # unconditional (also pipe(""), pipe(None))
        pipe(["MKT", "MSLR"], batch_size=16)         # a list of prompts: a list of result lists

    Options (at construction or per call): num_return_sequences, max_length, min_length (residues of the whole
    sequence, prompt included), max_new_tokens (new tokens, as in transformers), do_sample (default True),
    temperature, top_k, top_p, repetition_penalty, seed, batch_size (see `GenerationSettings`). Prompts are residues
    only; each is `<bos>` + residues.

    Batching: the pipeline batches itself rather than through transformers' per-item DataLoader: all rows (prompts x
    num_return_sequences) are laid out in input order and `batch_size` of them (default 32) at a time go left-padded
    into one `generate()` call with the KV cache; `seed` seeds the whole call once.

    Returns, for one prompt, a list of `num_return_sequences` dicts `{"sequence": prompt + new residues,
    "generated": new residues, "finished": ended with <eos> (False: cut at max_length)}`, like transformers'
    text-generation; for a list of prompts, one such list per prompt.
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.model.can_generate():
            raise ValueError(f"{type(self.model).__name__} cannot generate; load the checkpoint as a causal LM.")

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        _settings(GenerationSettings, kwargs)  # rejects unknown names and bad values early
        return {}, kwargs, {}

    def __call__(self, inputs: str | Sequence[str] | None = None, batch_size: int | None = None, **kwargs: Any):
        _, call_options, _ = self._sanitize_parameters(**kwargs)
        options = {**self._forward_params, **call_options}
        settings, max_length, rows, n_prompts = _plan_generation(self.model, self.tokenizer, inputs, options)
        size = batch_size or self._batch_size or DEFAULT_BATCH_SIZE
        results = []
        with _seeded(settings.seed, self.device):
            for chunk in _chunks(rows, size):
                forward_params = {"settings": settings, "max_length": max_length}
                results.extend(self.run_single(chunk, {}, forward_params, {"max_length": max_length}))
        grouped = _group_by_prompt(n_prompts, results)
        return grouped[0] if inputs is None or isinstance(inputs, str) else grouped

    def preprocess(self, rows: list[Row]) -> dict[str, Any]:
        return prepare_generation_batch(self.tokenizer, rows)

    def _forward(self, batch: dict[str, Any], settings: GenerationSettings, max_length: int) -> dict[str, Any]:
        return {
            **batch,
            "output_ids": run_generation_batch(
                self.model, self.tokenizer, batch=batch, settings=settings, max_length=max_length
            ),
        }

    def postprocess(self, outputs: dict[str, Any], max_length: int) -> list[tuple[int, dict[str, Any]]]:
        return decode_generation_batch(self.tokenizer, outputs, outputs["output_ids"], max_length)


class ProteinInfillingPipeline(Pipeline):
    """GLM span infilling (task "protein-infilling") with a model trained with the GLM objective.

        fill = pipeline("protein-infilling", model="runs/demo/final")
        fill("MKTAYIAK<smask>SHFSRQ", max_span_length=20)                  # greedy by default
        fill("MK<smask>AYIAK<smask>SHF", do_sample=True, num_return_sequences=4, seed=0)
        fill("MKTAYIAKQRQ<gmask>")                                         # continue the sequence

    Options (at construction or per call): num_return_sequences, do_sample (default False), temperature, top_k,
    top_p, max_span_length, seed, batch_size (see `InfillingSettings`).

    Spans are filled left to right in GLMCollator's training layout: the context keeps every `<smask>`; span k is
    generated after the context and the spans before it, as `<sop> ...` at its mask's position with block positions
    1, 2, ..., until `<eop>` (or max_span_length). One `generate()` call per span index serves `batch_size` rows.

    Returns, for one input, a list of `num_return_sequences` dicts `{"sequence": the input with each mask replaced
    by its span, "spans": [span residues, left to right], "finished": [per span, closed by <eop>]}`; for a list of
    inputs, one such list per input.
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_glm_model(self.model)
        _glm_token_ids(self.tokenizer)

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        _settings(InfillingSettings, kwargs)
        return {}, kwargs, {}

    def __call__(self, inputs: str | Sequence[str], batch_size: int | None = None, **kwargs: Any):
        _, call_options, _ = self._sanitize_parameters(**kwargs)
        settings = _settings(InfillingSettings, {**self._forward_params, **call_options})
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise ValueError("No infilling inputs given.")
        templates = [parse_infill_template(self.tokenizer, text, index) for index, text in enumerate(texts)]
        rows = _infill_rows(templates, settings, self.model)
        size = batch_size or self._batch_size or DEFAULT_BATCH_SIZE
        results = []
        with _seeded(settings.seed, self.device):
            for chunk in _chunks(rows, size):
                results.extend(self.run_single(chunk, {}, {"settings": settings}, {}))
        grouped = _group_by_prompt(len(texts), results)
        return grouped[0] if isinstance(inputs, str) else grouped

    def preprocess(self, rows: list[_InfillRow]) -> dict[str, Any]:
        return {"rows": rows}

    def _forward(self, batch: dict[str, Any], settings: InfillingSettings) -> dict[str, Any]:
        _infill_chunk(self.model, self.tokenizer, batch["rows"], settings)
        return batch

    def postprocess(self, outputs: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        return [(row.input_index, _infill_result(self.tokenizer, row)) for row in outputs["rows"]]


PIPELINE_REGISTRY.register_pipeline(
    "protein-generation", pipeline_class=ProteinGenerationPipeline, pt_model=AutoModelForCausalLM, type="text"
)
PIPELINE_REGISTRY.register_pipeline(
    "protein-infilling", pipeline_class=ProteinInfillingPipeline, pt_model=AutoModelForCausalLM, type="text"
)
