"""Training compute: the scaling-law convention C = 6·N·D, and an exact count that includes attention.

N is the non-embedding parameter count (Kaplan et al.; Cheng et al. 2024). The exact count adds, per token, the
attention score and value products over the tokens it actually attends to, and the LM head; a training step costs
three forward passes (forward + backward ≈ 2× forward). FLOPs count a multiply-add as 2.
"""

from collections.abc import Sequence

from ..configuration_plm import PLMConfig


def non_embedding_parameters(config: PLMConfig) -> int:
    return config.num_parameters(include_embeddings=False)


def flops_6nd(config: PLMConfig, tokens: float) -> float:
    """C = 6·N·D."""
    return 6.0 * non_embedding_parameters(config) * tokens


def dense_forward_flops_per_token(config: PLMConfig) -> float:
    """Matmul FLOPs of one token's forward pass outside attention's score/value products: projections, MLP and
    the LM head (embedding lookups are free)."""
    h, d = config.hidden_size, config.head_dim
    q_width, kv_width = config.num_attention_heads * d, config.num_key_value_heads * d
    projections = 2 * (h * q_width + 2 * h * kv_width + q_width * h)
    mlp = 2 * h * config.intermediate_size * (3 if config.mlp_type == "glu" else 2)
    head = 2 * h * config.vocab_size + (2 * h * h if config.lm_head_transform else 0)
    return float(config.num_hidden_layers * (projections + mlp) + head)


def attended_pairs(length: int, attention_type: str, context_length: int | None = None) -> int:
    """(query, key) pairs one sequence computes: L² bidirectional, L(L+1)/2 causal; for GLM the context is
    bidirectional (C²) and each of the S span tokens sees the context and the span up to itself."""
    if attention_type == "bidirectional":
        return length * length
    if attention_type == "causal":
        return length * (length + 1) // 2
    if attention_type == "glm":
        context = length if context_length is None else context_length
        span = length - context
        return context * context + span * context + span * (span + 1) // 2
    raise ValueError(f"unknown attention_type {attention_type!r}")


def attention_flops_per_pair(config: PLMConfig) -> float:
    """Scores (q·k) and the weighted sum of values, for every head and layer."""
    return float(config.num_hidden_layers * 2 * 2 * config.num_attention_heads * config.head_dim)


def training_flops(
    config: PLMConfig,
    sequence_lengths: Sequence[int],
    attention_type: str,
    context_lengths: Sequence[int] | None = None,
) -> float:
    """Exact training FLOPs (3 × forward) of a batch given each sequence's length (and GLM context length)."""
    tokens = sum(sequence_lengths)
    contexts = context_lengths if context_lengths is not None else [None] * len(sequence_lengths)
    pairs = sum(attended_pairs(n, attention_type, c) for n, c in zip(sequence_lengths, contexts))
    return 3.0 * (tokens * dense_forward_flops_per_token(config) + pairs * attention_flops_per_pair(config))
