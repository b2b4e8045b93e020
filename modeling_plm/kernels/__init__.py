"""Runtime speed-ups for PLM models, applied after a model is built, as quantizers and HF `kernels` do.

The model file (shipped inside checkpoints as remote code) holds only the model and runs on torch's own paths;
importing `modeling_plm` sets `PLMPreTrainedModel.runtime_kernels` to this module, and the model then calls:

  - `apply(model)` when it is built or loaded: float32 CPU projections run on oneDNN (`config.cpu_linear_kernel`);
  - `decoding(model, generation_config)` around `generate()`: fused, pre-packed projections for the few-row matmuls;
  - `new_cache(config)` and `generation_cache(model, generation_config)`: `PLMCache`, a dynamic cache without the
    per-step copies, for forwards that start a cache and for generate();
  - `packed_attention(...)` for padding-free packed rows on SDPA: attention within each sequence.

Every path gives the results of the plain model (tests/test_kernels.py). A remote-code load (no package) runs the
plain paths; `cpu_linear_kernel="onednn"` raises there.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers.cache_utils import Cache

from ..modeling_plm import PLMLMHead, PLMPreTrainedModel
from ..modeling_plm_layers import PLMMLP, PLMAttention
from .cache import PLMCache, PLMCacheLayer
from .onednn import ONEDNN_AVAILABLE, FusedProjection, OneDNNLinear, resolve_cpu_linear_kernel
from .packed_attention import PACKED_SDPA, packed_sdpa_attention_forward, packed_sequence_segments


def block_input_projections(block: nn.Module) -> tuple[nn.Linear, ...]:
    """The linear layers that read an attention or MLP block's input, in the order its `project_input` returns."""
    if isinstance(block, PLMAttention):
        return (block.q_proj, block.k_proj, block.v_proj)
    return (block.gate_proj, block.up_proj) if block.is_gated else (block.up_proj,)


def block_output_projection(block: nn.Module) -> nn.Linear:
    return block.o_proj if isinstance(block, PLMAttention) else block.down_proj


def apply(model: PLMPreTrainedModel) -> None:
    """Swaps the float32 projections (attention, MLP, LM-head transform) to oneDNN when the config's kernel says so."""
    if resolve_cpu_linear_kernel(model.config.cpu_linear_kernel) != "onednn":
        return
    for module in model.modules():
        if isinstance(module, (PLMAttention, PLMMLP)):
            linears = (*block_input_projections(module), block_output_projection(module))
        elif isinstance(module, PLMLMHead) and module.has_transform:
            linears = (module.dense,)
        else:
            continue
        for linear in linears:
            if type(linear) is nn.Linear:
                OneDNNLinear.from_linear(linear)


@contextmanager
def decoding_projections(model: nn.Module) -> Iterator[None]:
    """Within the block, each attention and MLP block reads its input through one fused matmul and writes its
    output through a pre-packed one. Layers that cannot be fused (adapters, hooks) keep their own calls."""
    blocks = [module for module in model.modules() if isinstance(module, (PLMAttention, PLMMLP))]
    try:
        for block in blocks:
            fused = FusedProjection.of(block_input_projections(block))
            if fused is not None:
                block.project_input = fused  # shadows the method on this instance only
            output = block_output_projection(block)
            if type(output) is OneDNNLinear:
                output.packed = FusedProjection.of((output,))
        yield
    finally:
        for block in blocks:
            block.__dict__.pop("project_input", None)
            output = block_output_projection(block)
            if type(output) is OneDNNLinear:
                output.packed = None


def decoding(model: nn.Module, generation_config) -> contextmanager:
    # An assistant model drafts a few tokens per call: too few to pay for packing.
    if generation_config is not None and generation_config.is_assistant:
        return _nothing()
    return decoding_projections(model)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def new_cache(config) -> PLMCache:
    """The cache a forward starts when asked to cache and given none."""
    return PLMCache(config.num_hidden_layers)


def generation_cache(model: nn.Module, generation_config) -> Cache | None:
    """`PLMCache` for generate()'s default dynamic cache (assistant models keep transformers' cache, which records
    its past for rollback); None leaves the choice to transformers."""
    wants_dynamic = generation_config.cache_implementation in (None, "dynamic")
    if wants_dynamic and generation_config.use_cache and not generation_config.is_assistant:
        return new_cache(model.config)
    return None


def packed_attention(sequence_ids: torch.Tensor, glm_block_position_ids: torch.Tensor | None) -> tuple[str, dict]:
    """The attention backend (its `AttentionInterface` name) and its per-forward arguments for packed rows on SDPA
    (segments computed once per forward)."""
    return PACKED_SDPA, {"segments": packed_sequence_segments(sequence_ids, glm_block_position_ids)}


def install() -> None:
    """Makes every PLM model class of this package use these kernels (called when `modeling_plm` is imported)."""
    import sys

    PLMPreTrainedModel.runtime_kernels = sys.modules[__name__]


__all__ = [
    "ONEDNN_AVAILABLE",
    "FusedProjection",
    "OneDNNLinear",
    "PLMCache",
    "PLMCacheLayer",
    "apply",
    "decoding",
    "decoding_projections",
    "generation_cache",
    "install",
    "new_cache",
    "packed_attention",
    "packed_sdpa_attention_forward",
    "packed_sequence_segments",
    "resolve_cpu_linear_kernel",
]
