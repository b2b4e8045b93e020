"""PLM: one protein language-model backbone for masked-LM, causal-LM and GLM blank infilling.

Self-contained (torch/transformers imports only): this file and `modeling_plm_layers.py` (the building blocks: norms,
RoPE, attention, MLP, layer, embeddings) ship inside exported checkpoints as remote code.

Attention types (the `attention_type` forward argument, or the class default):
  - "bidirectional": every token sees every token of its sequence (masked-LM, embeddings; ESM-2 style).
  - "causal": every token sees itself and earlier tokens (generation; ProGen2 style).
  - "glm": prefix-LM for xTrimoPGLM blank infilling. Tokens with `block_position_ids == 0` form the context and
    attend bidirectionally to the whole context; span tokens (`block_position_ids > 0`, placed after the context as
    `<sop> s1 s2 ...`) attend to the whole context and causally to span tokens up to themselves.

Positions follow transformers: computed from `attention_mask` when not given (left and right padding both give the
unpadded result); given without a mask, a restart at 0 (or `cu_seq_lens_q`) starts a sequence of a packed row. GLM span
tokens carry the position of their `<smask>`/`<gmask>` and `block_position_ids` 1, 2, ... from `<sop>` on, rotated
into the two halves of each head with `position_embedding_type="rotary_2d"` (xTrimoPGLM's 2-D RoPE).
"""

import warnings

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import can_return_tuple

from .configuration_plm import PLMConfig
from .modeling_plm_layers import (
    ESM_MASK_RATIO_TRAIN,
    PLMMLP,
    PLMAttention,
    PLMEmbeddings,
    PLMLayer,
    PLMRMSNorm,
    PLMRotaryEmbedding,
    add_position_bias,
    apply_rotary_pos_emb,
    build_norm,
    compute_position_ids,
    find_packed_sequence_ids,
    get_attention_function,
    glm_context_mask_function,
    relative_position_bias,
    same_sequence_mask_function,
    swap_halves,
)

ATTENTION_TYPES = ("bidirectional", "causal", "glm")
# Written into config.json on save, so that every Auto class loads a saved folder as remote code.
AUTO_MAP = {
    "AutoConfig": "configuration_plm.PLMConfig",
    "AutoModel": "modeling_plm.PLMModel",
    "AutoModelForMaskedLM": "modeling_plm.PLMForMaskedLM",
    "AutoModelForCausalLM": "modeling_plm.PLMForCausalLM",
    "AutoModelForSequenceClassification": "modeling_plm.PLMForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_plm.PLMForTokenClassification",
}
# transformers 5.24 renamed the decoding cache `past_key_values` to `cache` (argument, output field, generate()'s
# model kwarg), keeping the old name as an alias: forwards accept both, outputs use the installed version's.
CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def resolve_cache_argument(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache passed under either name (`past_key_values` is the pre-5.24 spelling)."""
    if past_key_values is None:
        return cache
    if cache is not None:
        raise ValueError("Pass the cache as `cache` or as `past_key_values`, not both.")
    if CACHE_NAME == "cache":
        warnings.warn("`past_key_values` is deprecated: pass the cache as `cache`.", FutureWarning, stacklevel=3)
    return past_key_values


# nn.Embedding indexes with these; the position streams and class labels follow the same rule.
INDEX_DTYPES = (torch.long, torch.int)


def check_forward_inputs(
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    block_position_ids: torch.Tensor | None,
    past_length: int,
    hidden_size: int,
    vocab_size: int,
) -> None:
    """Errors that name the argument and the expected shape or value, raised before torch fails deep inside (or
    broadcasts a wrong shape silently). Shape checks cost nothing; the id check is one reduction."""
    if (input_ids is None) == (inputs_embeds is None):
        given = "both" if input_ids is not None else "neither"
        raise ValueError(f"Pass exactly one of input_ids or inputs_embeds (got {given}).")
    name, tokens = ("input_ids", input_ids) if input_ids is not None else ("inputs_embeds", inputs_embeds)
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tokens).__name__}")
    if input_ids is not None:
        if input_ids.dtype not in INDEX_DTYPES:
            raise TypeError(f"input_ids must be a tensor of token ids (torch.long), got dtype {input_ids.dtype}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be 2-D (batch, seq), got shape {tuple(input_ids.shape)}")
    elif inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != hidden_size:
        raise ValueError(
            f"inputs_embeds must be 3-D (batch, seq, hidden_size={hidden_size}), got shape {tuple(inputs_embeds.shape)}"
        )
    elif not inputs_embeds.is_floating_point():
        raise TypeError(f"inputs_embeds must be a floating-point tensor, got dtype {inputs_embeds.dtype}")
    batch_size, seq_length = tokens.shape[:2]
    if seq_length == 0:
        raise ValueError(f"{name} has sequence length 0 (shape {tuple(tokens.shape)}): pass at least one token per row")
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
        expected = (batch_size, past_length + seq_length)
        if tuple(attention_mask.shape) != expected:
            past = f" ({past_length} cached + {seq_length} new tokens)" if past_length else ""
            raise ValueError(
                f"attention_mask must have shape (batch, past + seq) = {expected}{past} of 1s and 0s, "
                f"got {tuple(attention_mask.shape)}"
            )
    for positions_name, positions in (("position_ids", position_ids), ("block_position_ids", block_position_ids)):
        if positions is None:
            continue
        if not isinstance(positions, torch.Tensor) or positions.dtype not in INDEX_DTYPES:
            got = f"dtype {positions.dtype}" if isinstance(positions, torch.Tensor) else type(positions).__name__
            raise TypeError(f"{positions_name} must be an integer tensor (torch.long), got {got}")
        # A (1, seq) row is shared by the whole batch; anything else must match the tokens one to one.
        if positions.dim() != 2 or positions.shape[0] not in (1, batch_size) or positions.shape[1] != seq_length:
            raise ValueError(
                f"{positions_name} must have shape (batch, seq) = {(batch_size, seq_length)} like {name}, or "
                f"(1, {seq_length}) for one row shared by the batch; got {tuple(positions.shape)}"
            )
    # Cached decoding steps feed back the model's own samples: only ids from outside (no cache yet) are checked, which
    # keeps a reduction and a GPU->CPU sync out of every generated token.
    if input_ids is not None and past_length == 0:
        check_token_ids(input_ids, vocab_size)


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Ids out of range fail as an opaque IndexError on CPU and a device-side assert on GPU; one reduction finds them.
    Skipped while compiling, where the data-dependent branch would break the graph."""
    if input_ids.numel() == 0 or input_ids.device.type == "meta" or torch.compiler.is_compiling():
        return
    low, high = torch.aminmax(input_ids)
    if int(low) < 0 or int(high) >= vocab_size:
        row, position = ((input_ids < 0) | (input_ids >= vocab_size)).nonzero()[0].tolist()
        raise ValueError(
            f"input_ids holds id {int(input_ids[row, position])} at (row {row}, position {position}); the vocabulary "
            f"has {vocab_size} tokens (ids 0 to {vocab_size - 1})"
        )


def check_labels(
    labels: torch.Tensor, shapes: tuple[tuple[int, ...], ...], num_classes: int | None, ignore_index: int = -100
) -> None:
    """`labels` must fit the logits: one of `shapes` and, with `num_classes`, class ids in [0, num_classes) or
    `ignore_index` (regression and multi-label targets pass None). One reduction, once per loss."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if tuple(labels.shape) not in shapes:
        expected = " or ".join(str(tuple(shape)) for shape in shapes)
        raise ValueError(f"labels must have shape {expected} to fit the logits, got {tuple(labels.shape)}")
    if num_classes is None:
        return
    if labels.dtype not in (torch.long, torch.uint8):  # what cross-entropy takes
        raise TypeError(f"labels must be a tensor of class ids (torch.long), got dtype {labels.dtype}")
    if labels.numel() == 0 or labels.device.type == "meta" or torch.compiler.is_compiling():
        return
    bad = ((labels < 0) & (labels != ignore_index)) | (labels >= num_classes)
    if bool(bad.any()):
        index = tuple(bad.nonzero()[0].tolist())
        raise ValueError(
            f"labels holds {int(labels[index])} at index {list(index)}; expected class ids 0 to {num_classes - 1} "
            f"or {ignore_index} (ignored)"
        )


class PLMPreTrainedModel(PreTrainedModel):
    config_class = PLMConfig
    config: PLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["PLMLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Default attention of the class; the forward argument `attention_type` overrides it.
    default_attention_type = "bidirectional"
    # The `modeling_plm.kernels` module (oneDNN projections, fused decoding, packed attention), set when the package
    # is imported; a remote-code copy of this file has none and runs torch's own paths, with the same results.
    runtime_kernels = None

    def post_init(self) -> None:
        super().post_init()
        if self.runtime_kernels is not None:
            self.runtime_kernels.apply(self)
        elif self.config.cpu_linear_kernel == "onednn":
            raise ValueError("cpu_linear_kernel='onednn' needs the modeling_plm package installed (its kernels).")

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std * getattr(module, "init_scale", 1.0))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, (nn.LayerNorm, PLMRMSNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, PLMRotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq())
        elif isinstance(module, PLMLMHead) and module.bias is not None:
            init.zeros_(module.bias)
        elif isinstance(module, PLMContactPredictionHead):
            init.normal_(module.regression.weight, mean=0.0, std=std)
            init.zeros_(module.regression.bias)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Pickled weights can run arbitrary code: refuse them unless the caller opts in with use_safetensors=False.
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(*args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        if self._auto_class is not None:  # the remote-code files are copied alongside, so map every Auto class
            self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)

    def _resolve_attention_type(self, attention_type: str | None, block_position_ids: torch.Tensor | None) -> str:
        if attention_type is None:
            attention_type = "glm" if block_position_ids is not None else self.default_attention_type
        if attention_type not in ATTENTION_TYPES:
            raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, got {attention_type!r}")
        if attention_type == "glm" and block_position_ids is None:
            raise ValueError("attention_type='glm' needs block_position_ids (0 for context, 1, 2, ... for spans).")
        return attention_type


class PLMModel(PLMPreTrainedModel):
    """The bare backbone. Returns the final hidden states (after the final norm)."""

    def __init__(self, config: PLMConfig):
        super().__init__(config)
        self.embeddings = PLMEmbeddings(config)
        self.layers = nn.ModuleList([PLMLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)])
        self.norm = build_norm(config)
        is_rotary = config.position_embedding_type in ("rotary", "rotary_2d")
        self.rotary_emb = PLMRotaryEmbedding(config) if is_rotary else None
        if config.position_embedding_type == "relative":  # T5's bias table, shared by every layer
            buckets, heads = config.relative_attention_num_buckets, config.num_attention_heads
            self.relative_attention_bias = nn.Embedding(buckets, heads)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        block_position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        attention_type: str | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        block_position_ids: GLM block positions: 0 for context tokens, 1, 2, ... for the `<sop>`-started span tokens.
        cache: the decoding cache (`past_key_values` is accepted as its older name).
        attention_type: "bidirectional", "causal" or "glm" (see the module docstring); defaults to the class's.

        Malformed inputs raise a `ValueError` or `TypeError` naming the argument (`check_forward_inputs`).
        """
        cache = resolve_cache_argument(cache, past_key_values)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        attention_type = self._resolve_attention_type(attention_type, block_position_ids)
        if use_cache is None:
            use_cache = self.config.use_cache and attention_type != "bidirectional" and not self.training
        if use_cache and cache is None:
            kernels = self.runtime_kernels
            cache = kernels.new_cache(self.config) if kernels is not None else DynamicCache(config=self.config)
        past_length = cache.get_seq_length() if cache is not None else 0
        check_forward_inputs(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            block_position_ids=block_position_ids,
            past_length=past_length,
            hidden_size=self.config.hidden_size,
            vocab_size=getattr(self.get_input_embeddings(), "num_embeddings", self.config.vocab_size),
        )
        tokens = input_ids if input_ids is not None else inputs_embeds
        padding_mask = None
        if attention_mask is not None:
            attention_mask = attention_mask.to(tokens.device)
            padding_mask = attention_mask[:, -tokens.shape[1] :].bool()
        position_ids, sequence_ids = compute_position_ids(
            tokens,
            attention_mask=attention_mask,
            position_ids=position_ids,
            block_position_ids=block_position_ids,
            past_length=past_length,
            cu_seq_lens=kwargs.get("cu_seq_lens_q"),
        )
        if block_position_ids is not None:
            block_position_ids = block_position_ids.to(tokens.device).expand(tokens.shape[0], -1)

        is_bidirectional = attention_type == "bidirectional"
        hidden_states = self.embeddings(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            padding_mask=padding_mask,
            sequence_ids=sequence_ids,
            bidirectional=is_bidirectional,
        )
        attention_implementation, mask, attention_kwargs = self._attention_inputs(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            cache=cache,
            attention_type=attention_type,
            position_ids=position_ids,
            sequence_ids=sequence_ids,
            block_position_ids=block_position_ids,
            output_attentions=output_attentions,
        )
        position_embeddings = None
        if self.rotary_emb is not None:
            position_embeddings = self.rotary_emb(hidden_states, position_ids, block_position_ids)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(
                hidden_states,
                attention_mask=mask,
                position_embeddings=position_embeddings,
                attention_implementation=attention_implementation,
                is_causal=attention_type == "causal",
                cache=cache,
                **kwargs,  # e.g. cu_seq_lens_* / max_length_*, which varlen kernels read
                **attention_kwargs,
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)  # last entry after the final norm

        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            **{CACHE_NAME: cache if use_cache else None},
        )

    def _attention_inputs(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: Cache | None,
        attention_type: str,
        position_ids: torch.Tensor,
        sequence_ids: torch.Tensor | None,
        block_position_ids: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[str, torch.Tensor | None, dict]:
        """This call's attention backend (a name in transformers' `AttentionInterface`), its mask in the backend's
        format (built with transformers' masking utilities) and the backend's extra arguments."""
        # output_attentions is served by eager attention for this call, whatever the configured backend.
        implementation = "eager" if output_attentions else self.config._attn_implementation
        if hasattr(self, "relative_attention_bias"):
            mask = self._relative_bias_mask(
                implementation, hidden_states, attention_mask, attention_type, position_ids, sequence_ids
            )
            return implementation, mask, {}
        extra = {}
        if implementation == "sdpa" and sequence_ids is not None and self.runtime_kernels is not None:
            # Packed rows on SDPA: attend within each sequence rather than over the row with a block mask.
            glm_blocks = block_position_ids if attention_type == "glm" else None
            implementation, extra = self.runtime_kernels.packed_attention(sequence_ids, glm_blocks)
            return implementation, None, extra
        if implementation.startswith("flash_attention"):
            if attention_type == "glm":
                raise ValueError(
                    f"{implementation} cannot express the GLM prefix-LM mask; load the model with "
                    "attn_implementation='sdpa' or 'flex_attention' for GLM infilling."
                )
            extra["position_ids"] = position_ids  # varlen kernels find packed sequences from the positions
        decoding_step = hidden_states.shape[1] == 1 and (attention_mask is None or bool(attention_mask.all()))
        if decoding_step and implementation in ("sdpa", "eager"):
            return implementation, None, extra  # one token with no padding sees all its past and itself

        config = self._config_for_masks(implementation)
        same_sequence = same_sequence_mask_function(sequence_ids) if sequence_ids is not None else None
        if attention_type == "bidirectional":
            mask = create_bidirectional_mask(
                config, hidden_states, attention_mask, and_mask_function=same_sequence, **{CACHE_NAME: cache}
            )
            return implementation, mask, extra
        context = None
        if attention_type == "glm" and (cache is None or cache.get_seq_length() == 0):
            # Once the context is cached, new span tokens need only the causal mask: all of it is in their past.
            context = glm_context_mask_function(block_position_ids)
        mask = create_causal_mask(
            config,
            hidden_states,
            attention_mask,
            cache,
            position_ids=None,
            or_mask_function=context,
            and_mask_function=same_sequence,
        )
        return implementation, mask, extra

    def _config_for_masks(self, implementation: str) -> PLMConfig:
        """transformers' mask builders read the backend from the config: a copy when this call's differs."""
        if implementation == self.config._attn_implementation:
            return self.config
        config = PLMConfig.from_dict(self.config.to_dict())
        config._attn_implementation = implementation
        return config

    def _relative_bias_mask(
        self,
        implementation: str,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attention_type: str,
        position_ids: torch.Tensor,
        sequence_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """T5's relative position bias with the padding (and packed-row) mask folded in: an additive mask."""
        if implementation not in ("eager", "sdpa"):
            raise ValueError(
                f"position_embedding_type='relative' adds a bias to the attention scores, which {implementation} "
                "cannot take; load the model with attn_implementation='sdpa' or 'eager'."
            )
        if attention_type != "bidirectional":
            raise ValueError(f"T5's relative position bias is for bidirectional attention, not {attention_type!r}.")
        config = self._config_for_masks(implementation)
        same_sequence = same_sequence_mask_function(sequence_ids) if sequence_ids is not None else None
        mask = create_bidirectional_mask(config, hidden_states, attention_mask, and_mask_function=same_sequence)
        bias = relative_position_bias(self.relative_attention_bias, position_ids, self.config)
        return add_position_bias(mask, bias.to(hidden_states.dtype))


class PLMLMHead(nn.Module):
    """ESM-2's head (dense -> act -> norm -> decoder + bias) or a plain decoder. Same weights for MLM and CLM."""

    def __init__(self, config: PLMConfig):
        super().__init__()
        self.has_transform = config.lm_head_transform
        if self.has_transform:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.act_fn = ACT2FN[config.lm_head_hidden_act or config.hidden_act]
            self.norm = build_norm(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size)) if config.lm_head_bias else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.has_transform:
            hidden_states = self.norm(self.act_fn(self.dense(hidden_states)))
        logits = self.decoder(hidden_states)
        return logits + self.bias if self.bias is not None else logits

    def resize_bias(self, vocab_size: int) -> None:
        """Grows or shrinks the output bias with the vocabulary: kept entries keep their values, new ones start at 0."""
        if self.bias is None or self.bias.shape[0] == vocab_size:
            return
        bias = nn.functional.pad(self.bias.data, (0, vocab_size - self.bias.shape[0]))  # zeros added, or cropped
        self.bias = nn.Parameter(bias, requires_grad=self.bias.requires_grad)


class PLMContactPredictionHead(nn.Module):
    """Logistic regression over symmetrised, APC-corrected attention maps of every layer and head (ESM-2)."""

    def __init__(self, config: PLMConfig):
        super().__init__()
        self.regression = nn.Linear(config.num_hidden_layers * config.num_attention_heads, 1)

    def forward(self, attentions: torch.Tensor) -> torch.Tensor:
        """attentions: (batch, layers * heads, L, L) over residues only. Returns contact probabilities (batch, L, L)."""
        attentions = attentions + attentions.transpose(-1, -2)
        row_sums = attentions.sum(-1, keepdim=True)
        column_sums = attentions.sum(-2, keepdim=True)
        total = attentions.sum((-1, -2), keepdim=True)
        attentions = attentions - row_sums * column_sums / total  # average product correction
        features = attentions.permute(0, 2, 3, 1).to(self.regression.weight.dtype)
        return torch.sigmoid(self.regression(features).squeeze(-1))


class PLMLanguageModelBase(PLMPreTrainedModel):
    """Backbone + LM head. PLMForMaskedLM and PLMForCausalLM share this exact layout, so either loads the other."""

    _tied_weights_keys = {"lm_head.decoder.weight": "model.embeddings.word_embeddings.weight"}

    def __init__(self, config: PLMConfig):
        super().__init__(config)
        self.model = PLMModel(config)
        self.lm_head = PLMLMHead(config)
        if config.contact_head:
            self.contact_head = PLMContactPredictionHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    def resize_token_embeddings(self, *args, **kwargs) -> nn.Embedding:
        # transformers resizes the embeddings and the decoder; the head's separate bias must follow them.
        embeddings = super().resize_token_embeddings(*args, **kwargs)
        self.lm_head.resize_bias(embeddings.num_embeddings)
        return embeddings

    def _backbone(self, attention_type: str | None, logits_to_keep: int = 0, **model_inputs):
        outputs = self.model(attention_type=attention_type or self.default_attention_type, **model_inputs)
        hidden_states = outputs.last_hidden_state
        if logits_to_keep:  # only the last positions, e.g. the next-token logits during generation
            hidden_states = hidden_states[:, -logits_to_keep:]
        return outputs, self.lm_head(hidden_states)

    @torch.no_grad()
    def predict_contacts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Contact probabilities (batch, L, L) between residues, from every layer's attention maps (ESM-2 style),
        computed eagerly whatever the loaded backend. The input carries `<bos>` first and `<eos>` after the residues
        (as the tokenizer makes them); the result covers the residues between them."""
        if not hasattr(self, "contact_head"):
            raise AttributeError("This model has no contact head; convert an ESM-2 checkpoint to get one.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, attention_type="bidirectional", output_attentions=True
        )
        attentions = torch.stack(outputs.attentions, dim=1)  # (batch, layers, heads, L, L)
        keep = (attention_mask.bool() & (input_ids != self.config.eos_token_id)).to(attentions.dtype)
        attentions = attentions * keep[:, None, None, :, None] * keep[:, None, None, None, :]
        attentions = attentions[..., 1:-1, 1:-1]  # drop <bos> and the last column (the <eos> of the longest row)
        batch, layers, heads, length, _ = attentions.shape
        return self.contact_head(attentions.reshape(batch, layers * heads, length, length))


class PLMForMaskedLM(PLMLanguageModelBase):
    default_attention_type = "bidirectional"

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        block_position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        attention_type: str | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        r"""
        labels: the target of each position (-100 to ignore); not shifted. GLM batches put each span token's next
            token here, so the MLM and span losses are one cross-entropy.
        """
        outputs, logits = self._backbone(
            attention_type,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            block_position_ids=block_position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **(kwargs | {"use_cache": False}),  # a masked LM never caches, whatever a caller asks
        )
        loss = None
        if labels is not None:
            check_labels(labels, (logits.shape[:-1],), logits.shape[-1], kwargs.get("ignore_index", -100))
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class PLMForCausalLM(PLMLanguageModelBase, GenerationMixin):
    default_attention_type = "causal"

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        block_position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        attention_type: str | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        labels: next-token targets as in transformers: pass the input ids (-100 to ignore); they are shifted here.
        cache: the decoding cache (`past_key_values` is accepted as its older name).
        """
        outputs, logits = self._backbone(
            attention_type,
            logits_to_keep,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            block_position_ids=block_position_ids,
            cache=resolve_cache_argument(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        loss = None
        if labels is not None:
            # The input ids themselves (shifted in the loss), so all logits must be kept: logits_to_keep=0.
            check_labels(labels, (logits.shape[:-1],), logits.shape[-1], kwargs.get("ignore_index", -100))
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_NAME: outputs.get(CACHE_NAME)},
        )

    def generate(self, *args, **kwargs):
        if self.runtime_kernels is None:
            return super().generate(*args, **kwargs)
        with self.runtime_kernels.decoding(self, kwargs.get("generation_config")):  # fused decoding projections
            return super().generate(*args, **kwargs)

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        if model_kwargs.get(CACHE_NAME) is None and self.runtime_kernels is not None:
            cache = self.runtime_kernels.generation_cache(self, generation_config)
            if cache is not None:
                model_kwargs[CACHE_NAME] = cache
                return
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, inputs_embeds=None, block_position_ids=None, **kwargs):
        # `inputs_embeds` is named so that generate() accepts embedding prompts (it reads this signature).
        model_inputs = super().prepare_inputs_for_generation(input_ids, inputs_embeds=inputs_embeds, **kwargs)
        if block_position_ids is not None:
            step = model_inputs.get("input_ids")
            step = model_inputs["inputs_embeds"] if step is None else step
            model_inputs["block_position_ids"] = block_position_ids[:, -step.shape[1] :]
        return model_inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        position_ids = model_kwargs.get("position_ids")
        block_position_ids = model_kwargs.get("block_position_ids")
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )
        if block_position_ids is not None:
            # A generated span token keeps its span's position and advances the block position.
            steps = torch.arange(1, num_new_tokens + 1, device=block_position_ids.device)
            model_kwargs["block_position_ids"] = torch.cat((block_position_ids, block_position_ids[:, -1:] + steps), -1)
            if position_ids is not None:
                model_kwargs["position_ids"] = torch.cat(
                    (position_ids, position_ids[:, -1:].expand(-1, num_new_tokens)), -1
                )
        return model_kwargs


def residue_mask(
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    config: PLMConfig,
    shape: tuple[int, int],
    device: torch.device,
) -> torch.Tensor:
    """True at residue positions: real tokens that are not `<pad>`, `<bos>` or `<eos>`. Without `input_ids` (a call
    with `inputs_embeds`) special tokens cannot be told apart, so every position the attention mask keeps counts."""
    mask = torch.ones(shape, dtype=torch.bool, device=device)
    if attention_mask is not None:
        mask &= attention_mask.bool().to(device)
    if input_ids is not None:
        for special_id in (config.pad_token_id, config.bos_token_id, config.eos_token_id):
            if special_id is not None:
                mask &= input_ids != special_id
    return mask


def pool_residues(
    hidden_states: torch.Tensor, mask: torch.Tensor, method: str = "mean", bos_index: torch.Tensor | None = None
) -> torch.Tensor:
    """Pool (batch, L, H) over the residues in `mask` into (batch, H): `mean` and `max` over residue positions only
    (a sequence with none pools to zeros); `bos` takes the hidden state at `bos_index` (batch,), the first token."""
    if method == "bos":
        if bos_index is None:
            bos_index = torch.zeros(hidden_states.shape[0], dtype=torch.long, device=hidden_states.device)
        return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), bos_index]
    weights = mask.unsqueeze(-1).to(hidden_states.dtype)
    if method == "mean":
        return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1)
    if method == "max":
        pooled = hidden_states.masked_fill(~mask.unsqueeze(-1), torch.finfo(hidden_states.dtype).min).amax(1)
        return torch.where(mask.any(1, keepdim=True), pooled, torch.zeros_like(pooled))
    raise ValueError(f"pooling must be 'mean', 'max' or 'bos', got {method!r}")


class PLMClassificationHead(nn.Module):
    def __init__(self, config: PLMConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act_fn = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.classifier_dropout_rate)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(self.act_fn(self.dense(self.dropout(features)))))


class PLMClassifierBase(PLMPreTrainedModel):
    """The backbone and a task head: subclasses turn hidden states into logits (`classify`) and score them."""

    def __init__(self, config: PLMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = PLMModel(config)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        attention_type: str | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | TokenClassifierOutput:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            attention_type=attention_type or self.config.embedding_attention,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classify(outputs.last_hidden_state, input_ids, attention_mask)
        loss = None if labels is None else self.classification_loss(logits, labels, **kwargs)
        return self.output_class(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class PLMForSequenceClassification(PLMClassifierBase):
    """Regression (`num_labels=1`) or classification from residues pooled by `config.classifier_pooling`."""

    output_class = SequenceClassifierOutput

    def __init__(self, config: PLMConfig):
        super().__init__(config)
        self.classifier = PLMClassificationHead(config)
        self.post_init()

    def classify(self, hidden_states: torch.Tensor, input_ids, attention_mask) -> torch.Tensor:
        mask = residue_mask(
            input_ids, attention_mask, config=self.config, shape=hidden_states.shape[:2], device=hidden_states.device
        )
        bos_index = attention_mask.long().argmax(-1) if attention_mask is not None else None
        return self.classifier(pool_residues(hidden_states, mask, self.config.classifier_pooling, bos_index))

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor, **kwargs) -> torch.Tensor:
        problem_type, batch_size = self.config.problem_type, logits.shape[0]
        ignore_index = kwargs.get("ignore_index", -100)
        if problem_type is None:  # transformers' rule, which its loss then stores in the config
            is_ids = getattr(labels, "dtype", None) in (torch.long, torch.int)
            problem_type = "regression" if self.num_labels == 1 else "single_label_classification" if is_ids else None
        if problem_type == "single_label_classification":  # one class id per row ((batch, 1) is flattened)
            check_labels(labels, ((batch_size,), (batch_size, 1)), self.num_labels, ignore_index)
        elif problem_type == "regression" and self.num_labels == 1:  # one value per row
            check_labels(labels, ((batch_size,), (batch_size, 1)), None)
        else:  # one value per row and label
            check_labels(labels, (tuple(logits.shape),), None)
            if problem_type != "regression" and not labels.is_floating_point():
                raise TypeError(f"multi-label classification labels must be floats (0.0 or 1.0), not {labels.dtype}")
        return self.loss_function(labels=labels, pooled_logits=logits, config=self.config, **kwargs)


class PLMForTokenClassification(PLMClassifierBase):
    """Per-token labels (e.g. secondary structure); label special tokens and padding with -100."""

    output_class = TokenClassifierOutput

    def __init__(self, config: PLMConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout_rate)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def classify(self, hidden_states: torch.Tensor, input_ids, attention_mask) -> torch.Tensor:
        return self.classifier(self.dropout(hidden_states))

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor, **kwargs) -> torch.Tensor:
        check_labels(labels, (logits.shape[:-1],), self.num_labels, kwargs.get("ignore_index", -100))
        return self.loss_function(logits=logits, labels=labels, config=self.config, **kwargs)


__all__ = [
    "PLMPreTrainedModel",
    "PLMModel",
    "PLMForMaskedLM",
    "PLMForCausalLM",
    "PLMForSequenceClassification",
    "PLMForTokenClassification",
]


# The building blocks are importable from here as before they moved to `modeling_plm_layers`.
__all__ = [
    "AUTO_MAP",
    "CACHE_NAME",
    "ESM_MASK_RATIO_TRAIN",
    "PLMMLP",
    "PLMAttention",
    "PLMClassificationHead",
    "PLMContactPredictionHead",
    "PLMEmbeddings",
    "PLMForCausalLM",
    "PLMForMaskedLM",
    "PLMForSequenceClassification",
    "PLMForTokenClassification",
    "PLMLMHead",
    "PLMLayer",
    "PLMModel",
    "PLMPreTrainedModel",
    "PLMRMSNorm",
    "PLMRotaryEmbedding",
    "apply_rotary_pos_emb",
    "build_norm",
    "compute_position_ids",
    "find_packed_sequence_ids",
    "get_attention_function",
    "pool_residues",
    "residue_mask",
    "swap_halves",
]
