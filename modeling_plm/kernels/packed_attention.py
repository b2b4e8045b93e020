"""SDPA over padding-free packed rows, one sequence at a time.

The work grows with the sum of squared sequence lengths instead of the squared row length that a block-diagonal mask
costs, and no kernel sees a mask where none is needed. Registered with transformers' `AttentionInterface` as
`"plm_packed_sdpa"`; `PLMModel` picks it for packed rows on SDPA when this package is imported.
"""

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.models.llama.modeling_llama import repeat_kv

PACKED_SDPA = "plm_packed_sdpa"
Segments = list[tuple[list[int], list[torch.Tensor | None]]]


def packed_sequence_segments(sequence_ids: torch.Tensor, block_position_ids: torch.Tensor | None) -> Segments:
    """For each packed row, the lengths of its sequences and their masks: None for bidirectional and causal
    attention, and for GLM (given `block_position_ids`) each sequence's own prefix-LM mask: every token sees the
    context, spans are causal."""
    segments = []
    for row, row_ids in enumerate(sequence_ids):
        lengths = torch.unique_consecutive(row_ids, return_counts=True)[1].tolist()
        masks: list[torch.Tensor | None] = [None] * len(lengths)
        if block_position_ids is not None:
            for index, is_context in enumerate((block_position_ids[row] == 0).split(lengths)):
                causal = torch.ones(len(is_context), len(is_context), dtype=torch.bool, device=row_ids.device).tril()
                masks[index] = causal | is_context[None, :]
        segments.append((lengths, masks))
    return segments


def packed_sdpa_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    is_causal: bool = False,
    segments: Segments | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """(unbind and split, not slicing: their backward writes each gradient once instead of zero-filling per slice.)"""
    if segments is None:
        raise ValueError(f"{PACKED_SDPA} attends within packed sequences: pass `segments` (packed_sequence_segments).")
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    rows = []
    for q_row, k_row, v_row, (lengths, masks) in zip(query.unbind(0), key.unbind(0), value.unbind(0), segments):
        pieces = [
            nn.functional.scaled_dot_product_attention(  # 4-D inputs: 3-D ones miss the fused CPU kernel
                q[None],
                k[None],
                v[None],
                attn_mask=mask,
                dropout_p=dropout,
                is_causal=is_causal and mask is None,
                scale=scaling,
            )
            for q, k, v, mask in zip(q_row.split(lengths, 1), k_row.split(lengths, 1), v_row.split(lengths, 1), masks)
        ]
        rows.append(torch.cat(pieces, dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention_forward)
