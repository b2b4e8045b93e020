"""The building blocks of the PLM backbone, bottom-up: norms, rotary embeddings (1-D and xTrimoPGLM's 2-D), attention
(dispatched by name through transformers' `AttentionInterface`), the MLP, the layer, the embeddings, and the packed-row
helpers (positions, sequence ids and the mask functions that keep packed sequences apart).

Self-contained (torch/transformers imports only): shipped beside `modeling_plm.py` inside exported checkpoints as
remote code. The model and its heads are in `modeling_plm.py`.
"""

import math
from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward  # the same maths as ESM's

from .configuration_plm import PLMConfig

# ESM-2 was trained with 15% of tokens selected and 80% of those replaced by <mask>.
ESM_MASK_RATIO_TRAIN = 0.15 * 0.8


class PLMRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.dtype == self.weight.dtype == torch.float32:  # one kernel; the same numbers as below
            return nn.functional.rms_norm(hidden_states, self.weight.shape, self.weight, eps=self.eps)
        # Normalised in float32 by torch's fused kernel, scaled after the cast back (as Llama does).
        input_dtype = hidden_states.dtype
        hidden_states = nn.functional.rms_norm(hidden_states.float(), self.weight.shape, eps=self.eps)
        return self.weight * hidden_states.to(input_dtype)


def build_norm(config: PLMConfig, width: int | None = None, bias: bool = True) -> nn.Module:
    """A norm of `config.norm_type` over `width` features (default the hidden size); RMSNorm never has a bias."""
    width = width or config.hidden_size
    if config.norm_type == "rmsnorm":
        return PLMRMSNorm(width, eps=config.layer_norm_eps)
    return nn.LayerNorm(width, eps=config.layer_norm_eps, bias=bias)


class PLMRotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE; for 2-D RoPE each half of the head gets its own position stream."""

    def __init__(self, config: PLMConfig):
        super().__init__()
        self.is_2d = config.position_embedding_type == "rotary_2d"
        self.rotary_dim = config.rotary_dim or (config.head_dim // 2 if self.is_2d else config.head_dim)
        self.base = config.rope_theta
        self.inv_freq = nn.Buffer(self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        exponents = torch.arange(0, self.rotary_dim, 2, dtype=torch.int64).float() / self.rotary_dim
        return 1.0 / (self.base**exponents)

    @torch.no_grad()
    def forward(
        self, x: torch.Tensor, position_ids: torch.Tensor, block_position_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cos and signed sin tables of `apply_rotary_pos_emb`, (batch, 1, seq, rotated dims of a head)."""
        streams = [position_ids]
        if self.is_2d:
            streams.append(block_position_ids if block_position_ids is not None else torch.zeros_like(position_ids))
        cos, signed_sin = [], []
        for positions in streams:
            freqs = positions[..., None].float() * self.inv_freq.to(positions.device)
            sin = freqs.sin()
            cos += [freqs.cos()] * 2
            signed_sin += [-sin, sin]
        return torch.cat(cos, -1).unsqueeze(1).to(x.dtype), torch.cat(signed_sin, -1).unsqueeze(1).to(x.dtype)


def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bidirectional buckets: each direction has half of them, exact for near distances, logarithmic up to
    `max_distance`, and one bucket for everything beyond."""
    half = num_buckets // 2  # keys after the query use the upper half
    buckets = (relative_position > 0).long() * half
    distance = relative_position.abs()
    max_exact = half // 2
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    far = (max_exact + log_ratio * (half - max_exact)).long().clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, far)


def relative_position_bias(table: nn.Embedding, position_ids: torch.Tensor, config: PLMConfig) -> torch.Tensor:
    """T5's additive attention bias (batch, heads, seq, seq) for tokens at `position_ids` (batch, seq): one learned
    value per bucket and head (`table`), shared by every layer."""
    relative_position = position_ids[:, None, :] - position_ids[:, :, None]  # key minus query
    buckets = relative_position_bucket(
        relative_position, config.relative_attention_num_buckets, config.relative_attention_max_distance
    )
    return table(buckets).permute(0, 3, 1, 2)


def add_position_bias(mask: torch.Tensor | None, bias: torch.Tensor) -> torch.Tensor:
    """An attention mask (None, boolean, or additive as eager attention takes it) with a position bias added."""
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        return bias.masked_fill(~mask, torch.finfo(bias.dtype).min)
    return bias + mask.to(bias.dtype)


def swap_halves(x: torch.Tensor, parts: int = 1) -> torch.Tensor:
    """Swaps the two halves of each of `parts` equal slices of the last dimension (`rotate_half` without the sign)."""
    if parts == 1:
        return x.roll(x.shape[-1] // 2, dims=-1)
    return x.unflatten(-1, (parts, -1)).roll(x.shape[-1] // (2 * parts), dims=-1).flatten(-2)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, parts: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE, x * cos + rotate_half(x) * sin, with rotate_half(x) * sin computed exactly as swap_halves(x) * signed_sin
    (sin with the first half of each part negated) in fewer ops. `parts=2` is 2-D RoPE, each half of the head rotated
    on its own. q, k: (batch, heads, seq, head_dim); cos, signed_sin: (batch, 1, seq, rotated dims). When the tables
    are narrower than the head (partial rotary, `config.rotary_dim`), the first dims of each part are rotated and the
    rest pass through."""
    if cos.shape[-1] == q.shape[-1]:
        return q * cos + swap_halves(q, parts) * signed_sin, k * cos + swap_halves(k, parts) * signed_sin
    return rotate_leading_dims(q, cos, signed_sin, parts), rotate_leading_dims(k, cos, signed_sin, parts)


def rotate_leading_dims(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, parts: int) -> torch.Tensor:
    rotary_dim = cos.shape[-1] // parts
    x = x.unflatten(-1, (parts, -1))
    rotated, passed = x[..., :rotary_dim].flatten(-2), x[..., rotary_dim:]
    rotated = rotated * cos + swap_halves(rotated, parts) * signed_sin
    return torch.cat((rotated.unflatten(-1, (parts, -1)), passed), -1).flatten(-2)


def get_attention_function(attn_implementation: str) -> Callable:
    """The kernel for a backend name. An unknown or unregistered backend raises: we never fall back silently."""
    if attn_implementation != "eager" and attn_implementation not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(
            f"Attention backend {attn_implementation!r} is not available. Registered backends: eager, "
            f"{', '.join(sorted(ALL_ATTENTION_FUNCTIONS.keys()))}."
        )
    return ALL_ATTENTION_FUNCTIONS.get_interface(attn_implementation, eager_attention_forward)


class PLMAttention(nn.Module):
    def __init__(self, config: PLMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5 if config.attention_scale is None else config.attention_scale
        self.attention_dropout = config.attention_dropout
        self.is_causal = True  # the per-call value is passed to the kernel as `is_causal`
        self.rotary_parts = 2 if config.position_embedding_type == "rotary_2d" else 1
        q_width = config.num_attention_heads * self.head_dim
        kv_width = config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_width, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_width, config.hidden_size, bias=config.attention_bias)
        if config.qk_norm:  # over the full widths, before the split into heads (ESM C)
            self.q_norm = build_norm(config, q_width, bias=False)
            self.k_norm = build_norm(config, kv_width, bias=False)
        if config.norm_scheme in ("deepnorm", "glm_deepnorm"):
            self.v_proj.init_scale = self.o_proj.init_scale = config.deepnorm_beta

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
        attention_implementation: str,
        is_causal: bool,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query, key, value = self.project_input(hidden_states)
        if hasattr(self, "q_norm"):
            query, key = self.q_norm(query), self.k_norm(key)
        query = query.view(hidden_shape).transpose(1, 2)
        key = key.view(hidden_shape).transpose(1, 2)
        value = value.view(hidden_shape).transpose(1, 2)
        # The query is scaled before the rotation, as ESM-2 does: the same maths, and ESM's exact rounding.
        query = query * self.scaling
        if position_embeddings is not None:
            query, key = apply_rotary_pos_emb(query, key, *position_embeddings, parts=self.rotary_parts)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        attention_function = get_attention_function(attention_implementation)  # this call's backend (see the model)
        output, weights = attention_function(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=1.0,
            is_causal=is_causal,
            **kwargs,
        )
        output = output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(output), weights

    def project_input(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # A method of its own so that decoding kernels can fuse the three (modeling_plm.kernels).
        return self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)


class PLMMLP(nn.Module):
    """`mlp`: down(act(up(x))). `glu`: down(act(gate(x)) * up(x)) -- GeGLU with gelu, SwiGLU with silu."""

    def __init__(self, config: PLMConfig):
        super().__init__()
        self.is_gated = config.mlp_type == "glu"
        hidden, intermediate = config.hidden_size, config.intermediate_size
        self.up_proj = nn.Linear(hidden, intermediate, bias=config.mlp_bias)
        if self.is_gated:
            self.gate_proj = nn.Linear(hidden, intermediate, bias=config.mlp_bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]
        if config.norm_scheme in ("deepnorm", "glm_deepnorm"):
            for projection in (module for module in self.children() if isinstance(module, nn.Linear)):
                projection.init_scale = config.deepnorm_beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_gated:
            gate, up = self.project_input(x)
            intermediate = self.act_fn(gate) * up
        else:
            intermediate = self.act_fn(self.project_input(x)[0])
        return self.down_proj(intermediate)

    def project_input(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # A method of its own so that decoding kernels can fuse the projections (modeling_plm.kernels).
        return (self.gate_proj(x), self.up_proj(x)) if self.is_gated else (self.up_proj(x),)


class PLMLayer(GradientCheckpointingLayer):
    """One transformer block (`config.norm_scheme`): pre-LN, `x + f(norm(x))`; DeepNorm post-LN,
    `norm(alpha * x + f(x))`; GLM's DeepNorm, `y = norm(x); alpha * y + f(y)`. With `parallel_residual` (GPT-J) the
    attention and the MLP read one norm of the same input, `x + attn(norm(x)) + mlp(norm(x))`."""

    def __init__(self, config: PLMConfig, layer_idx: int):
        super().__init__()
        self.self_attn = PLMAttention(config, layer_idx)
        self.mlp = PLMMLP(config)
        self.attention_norm = build_norm(config)
        self.parallel_residual = config.parallel_residual
        if not self.parallel_residual:
            self.mlp_norm = build_norm(config)
        self.hidden_dropout = config.hidden_dropout
        self.norm_scheme = config.norm_scheme
        self.deepnorm_alpha = config.deepnorm_alpha
        self.residual_multiplier = config.residual_multiplier

    def dropout(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.hidden_dropout == 0.0:  # skipped outright: decoding pays per call
            return hidden_states
        return nn.functional.dropout(hidden_states, self.hidden_dropout, training=True)

    def branch(self, output: torch.Tensor) -> torch.Tensor:
        """A residual branch as it is added: dropped out, then scaled by `residual_multiplier` (ESM C)."""
        output = self.dropout(output)
        return output if self.residual_multiplier == 1.0 else output * self.residual_multiplier

    def forward(self, hidden_states: torch.Tensor, **attention_kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.parallel_residual:
            normed = self.attention_norm(hidden_states)
            attention_output, weights = self.self_attn(normed, **attention_kwargs)
            return hidden_states + self.branch(attention_output) + self.branch(self.mlp(normed)), weights
        if self.norm_scheme == "pre":
            attention_output, weights = self.self_attn(self.attention_norm(hidden_states), **attention_kwargs)
            hidden_states = hidden_states + self.branch(attention_output)
            hidden_states = hidden_states + self.branch(self.mlp(self.mlp_norm(hidden_states)))
        elif self.norm_scheme == "glm_deepnorm":
            normed = self.attention_norm(hidden_states)
            attention_output, weights = self.self_attn(normed, **attention_kwargs)
            normed = self.mlp_norm(normed * self.deepnorm_alpha + self.branch(attention_output))
            hidden_states = normed * self.deepnorm_alpha + self.branch(self.mlp(normed))
        else:
            attention_output, weights = self.self_attn(hidden_states, **attention_kwargs)
            hidden_states = self.attention_norm(hidden_states * self.deepnorm_alpha + self.branch(attention_output))
            hidden_states = self.mlp_norm(hidden_states * self.deepnorm_alpha + self.branch(self.mlp(hidden_states)))
        return hidden_states, weights


class PLMEmbeddings(nn.Module):
    """Token embeddings, optional learned absolute positions, and ESM-2's token dropout."""

    def __init__(self, config: PLMConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        if config.position_embedding_type == "absolute":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_dropout = config.token_dropout
        self.mask_token_id = config.mask_token_id
        self.pad_token_id = config.pad_token_id
        self.max_position_embeddings = config.max_position_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        position_ids: torch.Tensor,
        padding_mask: torch.Tensor | None,
        sequence_ids: torch.Tensor | None,
        bidirectional: bool,
    ) -> torch.Tensor:
        embeddings = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        # Token dropout is a masked-LM device: its rescaling looks at the whole sequence, which causal decoding with
        # a cache cannot, so it applies to bidirectional attention only.
        if self.token_dropout and bidirectional and input_ids is not None:
            embeddings = self._token_dropout(embeddings, input_ids, padding_mask, sequence_ids)
        if hasattr(self, "position_embeddings"):
            if position_ids.max() >= self.max_position_embeddings:
                raise ValueError(
                    f"Position {int(position_ids.max())} is beyond max_position_embeddings="
                    f"{self.max_position_embeddings} of this absolute-position model; crop or window the input."
                )
            embeddings = embeddings + self.position_embeddings(position_ids)
        if padding_mask is not None:
            # Padded positions carry nothing (as ESM-2), so their outputs do not depend on the pad token's embedding.
            embeddings = embeddings * padding_mask.unsqueeze(-1).to(embeddings.dtype)
        return embeddings

    def _token_dropout(
        self,
        embeddings: torch.Tensor,
        input_ids: torch.Tensor,
        padding_mask: torch.Tensor | None,
        sequence_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        is_masked = input_ids == self.mask_token_id
        embeddings = embeddings.masked_fill(is_masked.unsqueeze(-1), 0.0)
        if sequence_ids is None:
            # Count real tokens from the mask, or from the pad token when there is no mask: never the padded
            # length, which would make padded and unpadded results differ (transformers #44162).
            is_real = padding_mask if padding_mask is not None else input_ids != self.pad_token_id
            observed_ratio = is_masked.sum(-1).float() / is_real.sum(-1).clamp(min=1)
            observed_ratio = observed_ratio[:, None, None]
        else:
            # Packed rows: the ratio of each token's own sequence.
            num_sequences = int(sequence_ids.max()) + 1
            lengths = torch.zeros(sequence_ids.shape[0], num_sequences, device=input_ids.device)
            lengths.scatter_add_(1, sequence_ids, torch.ones_like(lengths[:, :1]).expand_as(sequence_ids))
            masked = torch.zeros_like(lengths).scatter_add_(1, sequence_ids, is_masked.float())
            observed_ratio = (masked / lengths.clamp(min=1)).gather(1, sequence_ids)[..., None]
        # An all-<mask> sequence has all-zero embeddings; the clamp keeps it zero instead of 0 / 0.
        return (embeddings * (1 - ESM_MASK_RATIO_TRAIN) / (1 - observed_ratio).clamp(min=1e-6)).to(embeddings.dtype)


def find_packed_sequence_ids(
    position_ids: torch.Tensor, block_position_ids: torch.Tensor | None, cu_seq_lens: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Index of the sequence each token belongs to in padding-free packed rows, or None if each row holds one. From
    `cu_seq_lens` (cumulative lengths over the flattened rows, as `DataCollatorWithFlattening` and our collators emit
    them) when given, else a sequence starts where `position_ids` restarts at 0 (never inside GLM spans)."""
    if cu_seq_lens is not None:
        if int(cu_seq_lens[-1]) != position_ids.numel():
            raise ValueError(f"cu_seq_lens_q covers {int(cu_seq_lens[-1])} tokens, the batch {position_ids.numel()}")
        tokens = torch.arange(position_ids.numel(), device=position_ids.device)
        sequence_ids = torch.bucketize(tokens, cu_seq_lens[1:].to(tokens.device), right=True).view_as(position_ids)
        sequence_ids = sequence_ids - sequence_ids[:, :1]
    else:
        starts = position_ids == 0
        if block_position_ids is not None:
            starts &= block_position_ids == 0
        starts[:, 0] = True
        sequence_ids = starts.long().cumsum(-1) - 1
    if not bool((sequence_ids[:, -1] > 0).any()):
        return None
    return sequence_ids


def compute_position_ids(
    tokens: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    block_position_ids: torch.Tensor | None,
    past_length: int,
    cu_seq_lens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The position of each token of `tokens` (batch, seq[, hidden]) and, in padding-free packed rows (positions given,
    no attention mask, no cache), the index of its sequence (see the module docstring)."""
    (batch_size, seq_length), device = tokens.shape[:2], tokens.device
    if position_ids is not None:
        position_ids = position_ids.to(device).expand(batch_size, -1)
        is_packed = attention_mask is None and past_length == 0
        sequence_ids = find_packed_sequence_ids(position_ids, block_position_ids, cu_seq_lens) if is_packed else None
        return position_ids, sequence_ids
    if attention_mask is None:
        position_ids = torch.arange(past_length, past_length + seq_length, device=device)
        return position_ids.unsqueeze(0).expand(batch_size, -1), None
    # Positions start at the first real token, so left- and right-padded rows match their unpadded selves; right
    # padding keeps plain 0..L-1 (as ESM-2, so even padded positions match it).
    first_real = attention_mask.long().argmax(-1, keepdim=True)
    position_ids = torch.arange(attention_mask.shape[1], device=device) - first_real
    return position_ids.clamp(min=0)[:, -seq_length:], None


def same_sequence_mask_function(sequence_ids: torch.Tensor) -> Callable:
    def inner_mask(batch_idx, head_idx, q_idx, kv_idx):
        return sequence_ids[batch_idx, q_idx] == sequence_ids[batch_idx, kv_idx]

    return inner_mask


def glm_context_mask_function(block_position_ids: torch.Tensor) -> Callable:
    """Added (OR) to the causal mask: every token also sees every context token (block position 0)."""

    def inner_mask(batch_idx, head_idx, q_idx, kv_idx):
        return block_position_ids[batch_idx, kv_idx] == 0

    return inner_mask
