"""Configuration of the PLM backbone.

Self-contained (torch/transformers imports only): this file ships inside exported checkpoints as remote code.
"""

from transformers import PretrainedConfig

NORM_TYPES = ("layernorm", "rmsnorm")
NORM_SCHEMES = ("pre", "deepnorm", "glm_deepnorm")
MLP_TYPES = ("mlp", "glu")
POSITION_EMBEDDING_TYPES = ("rotary", "rotary_2d", "absolute", "relative")
CLASSIFIER_POOLINGS = ("mean", "max", "bos")
EMBEDDING_ATTENTIONS = ("bidirectional", "causal")
CPU_LINEAR_KERNELS = ("auto", "onednn", "torch")


class PLMConfig(PretrainedConfig):
    r"""
    Configuration of a protein language model whose one backbone serves masked-LM, causal-LM and GLM infilling.

    Standard transformers names are used wherever one exists. The knobs below express ESM-2, Llama-style and
    xTrimoPGLM-style models:

    Args:
        vocab_size: number of tokens; the default fits the default `PLMTokenizerFast` (34 tokens).
        hidden_size, num_hidden_layers, num_attention_heads: the usual shape.
        num_key_value_heads: grouped-query attention when smaller than `num_attention_heads` (default: equal).
        head_dim: per-head width (default `hidden_size // num_attention_heads`).
        intermediate_size: MLP width (default 4x hidden for `mlp`, 8/3x hidden rounded up to 64 for `glu`).
        mlp_type: `"mlp"` (up -> act -> down, as ESM-2) or `"glu"` (gated: `act(gate) * up -> down`).
            With `hidden_act="gelu"` a `glu` is GeGLU (xTrimoPGLM), with `"silu"` it is SwiGLU (Llama).
        hidden_act: activation; `"gelu"` is the exact erf GELU that ESM-2 uses.
        norm_type: `"layernorm"` or `"rmsnorm"`.
        norm_scheme: `"pre"` (pre-LN, as ESM-2 and Llama), `"deepnorm"` (post-LN, `norm(alpha * x + f(x))`, with
            residual scaling alpha = (2N)^0.5 and init scaling beta = (2N)^-0.5) or `"glm_deepnorm"` (GLM-130B's and
            xTrimoPGLM's placement of the same scales: `y = norm(x); x = alpha * y + f(y)`, the residual taken from
            the normed input, and the final norm once after the last layer).
        layer_norm_eps: epsilon of every norm.
        position_embedding_type: `"rotary"` (RoPE over the whole head), `"rotary_2d"` (xTrimoPGLM's 2-D RoPE: the
            first half of each head is rotated by `position_ids`, the second half by `block_position_ids`) or
            `"absolute"` (learned position embeddings) or `"relative"` (T5's bucketed relative position bias, one
            table shared by all layers and added to the attention scores; bidirectional attention, eager or sdpa).
        rotary_dim: RoPE rotates the first `rotary_dim` dimensions of each head only (GPT-J, ProGen2); default the
            whole head (half of it per stream for `rotary_2d`). The rotation pairs dimension i with i + rotary_dim/2
            (the rotate-half layout); checkpoints with interleaved pairs are permuted at conversion.
        relative_attention_num_buckets, relative_attention_max_distance: T5's buckets for `"relative"`.
        rope_theta: rotary base.
        max_position_embeddings: longest sequence the model is trained for (size of the absolute table).
        attention_bias, mlp_bias: biases in the attention and MLP projections.
        attention_scale: the multiplier of the query-key scores (default `head_dim ** -0.5`; T5 uses 1.0).
        qk_norm: a norm (of `norm_type`, without bias) over the full query width and the full key width, after the
            projections and before the split into heads (ESM C).
        parallel_residual: GPT-J's block, `x + attn(norm(x)) + mlp(norm(x))` with one norm (no `mlp_norm`).
        residual_multiplier: each residual branch is scaled by it before it is added (ESM C: (N / 36)^-0.5).
        lm_head_transform: ESM-2's LM head (dense -> act -> norm -> decoder); otherwise norm-free linear decoder.
        lm_head_hidden_act: activation of the LM-head transform (default `hidden_act`; ESM C's head uses GELU).
        lm_head_bias: a bias on the decoder output (ESM-2 has one).
        tie_word_embeddings: tie the LM decoder to the input embeddings.
        token_dropout: ESM-2's token dropout: `<mask>` embeddings are zeroed and the rest rescaled by
            (1 - 0.15 * 0.8) / (1 - observed mask ratio of each sequence).
        mask_token_id: id of `<mask>` (used by token dropout).
        attention_dropout, hidden_dropout: dropout probabilities (0 for pretraining at scale).
        initializer_range: std of the normal init.
        embedding_attention: the attention that embeddings and classification heads read the backbone with:
            `"bidirectional"` for models trained with the masked-LM or GLM objective, `"causal"` for causal-only
            models (ProGen2, RITA, CLM pretraining), whose tokens never saw what follows them.
        classifier_pooling: pooling of `PLMForSequenceClassification` over residues (special tokens excluded):
            `"mean"`, `"max"` or `"bos"` (the begin-of-sequence token).
        classifier_dropout: dropout in the classification heads (default `hidden_dropout`).
        contact_head: add ESM-2's contact-prediction head (logistic regression over all attention maps).
        cpu_linear_kernel: the GEMM behind the float32 projections on CPU. `"onednn"` runs them through oneDNN
            (forward and backward; during `generate()` with fused, pre-packed weights), which on CPUs where torch's
            default BLAS is slow (MKL on AMD: 2-3x) is much faster; `"torch"` uses `torch.nn.functional.linear`;
            `"auto"` (default) is `"onednn"` on x86 CPUs other than Intel's when this torch build has it, else
            `"torch"` (MKL is fast on Intel). Asking for `"onednn"` on a build without it raises. A choice about the
            machine, not the model: it is never written to `config.json`, and a value stored there by older versions
            is ignored on load (pass it to `from_pretrained` instead).
    """

    model_type = "plm"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {"rms_norm_eps": "layer_norm_eps"}

    def __init__(
        self,
        vocab_size: int = 34,
        hidden_size: int = 320,
        num_hidden_layers: int = 6,
        num_attention_heads: int = 20,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        intermediate_size: int | None = None,
        mlp_type: str = "mlp",
        hidden_act: str = "gelu",
        norm_type: str = "layernorm",
        norm_scheme: str = "pre",
        layer_norm_eps: float = 1e-5,
        position_embedding_type: str = "rotary",
        rope_theta: float = 10000.0,
        max_position_embeddings: int = 1026,
        rotary_dim: int | None = None,
        relative_attention_num_buckets: int = 32,
        relative_attention_max_distance: int = 128,
        attention_bias: bool = True,
        mlp_bias: bool = True,
        attention_scale: float | None = None,
        qk_norm: bool = False,
        parallel_residual: bool = False,
        residual_multiplier: float = 1.0,
        lm_head_transform: bool = True,
        lm_head_hidden_act: str | None = None,
        lm_head_bias: bool = True,
        tie_word_embeddings: bool = True,
        token_dropout: bool = False,
        mask_token_id: int | None = 4,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        attention_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        initializer_range: float = 0.02,
        embedding_attention: str = "bidirectional",
        classifier_pooling: str = "mean",
        classifier_dropout: float | None = None,
        contact_head: bool = False,
        cpu_linear_kernel: str = "auto",
        use_cache: bool = True,
        **kwargs,
    ):
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
        if norm_scheme not in NORM_SCHEMES:
            raise ValueError(f"norm_scheme must be one of {NORM_SCHEMES}, got {norm_scheme!r}")
        if mlp_type not in MLP_TYPES:
            raise ValueError(f"mlp_type must be one of {MLP_TYPES}, got {mlp_type!r}")
        if position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"position_embedding_type must be one of {POSITION_EMBEDDING_TYPES}, got {position_embedding_type!r}"
            )
        if embedding_attention not in EMBEDDING_ATTENTIONS:
            raise ValueError(f"embedding_attention must be one of {EMBEDDING_ATTENTIONS}, got {embedding_attention!r}")
        if classifier_pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(f"classifier_pooling must be one of {CLASSIFIER_POOLINGS}, got {classifier_pooling!r}")
        head_dim = head_dim or hidden_size // num_attention_heads
        num_key_value_heads = num_key_value_heads or num_attention_heads
        if num_attention_heads % num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({num_key_value_heads})"
            )
        rotary_multiple = 4 if position_embedding_type == "rotary_2d" else 2
        if position_embedding_type in ("rotary", "rotary_2d") and head_dim % rotary_multiple:
            raise ValueError(f"{position_embedding_type} needs head_dim divisible by {rotary_multiple}, got {head_dim}")
        if rotary_dim is not None:
            stream_width = head_dim // 2 if position_embedding_type == "rotary_2d" else head_dim
            if position_embedding_type not in ("rotary", "rotary_2d"):
                raise ValueError(f"rotary_dim needs a rotary position_embedding_type, got {position_embedding_type!r}")
            if not 0 < rotary_dim <= stream_width or rotary_dim % 2:
                raise ValueError(f"rotary_dim must be even and in (0, {stream_width}], got {rotary_dim}")
        if parallel_residual and norm_scheme != "pre":
            raise ValueError(f"parallel_residual needs norm_scheme='pre', got {norm_scheme!r}")
        if intermediate_size is None:
            # GLU keeps the parameter count of a 4x MLP with 8/3x width (Llama's rule), rounded for kernels.
            intermediate_size = 4 * hidden_size if mlp_type == "mlp" else 64 * -(-8 * hidden_size // (3 * 64))

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.intermediate_size = intermediate_size
        self.mlp_type = mlp_type
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.norm_scheme = norm_scheme
        self.layer_norm_eps = layer_norm_eps
        self.position_embedding_type = position_embedding_type
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.rotary_dim = rotary_dim
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_max_distance = relative_attention_max_distance
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        self.attention_scale = attention_scale
        self.qk_norm = qk_norm
        self.parallel_residual = parallel_residual
        self.residual_multiplier = residual_multiplier
        self.lm_head_transform = lm_head_transform
        self.lm_head_hidden_act = lm_head_hidden_act
        self.lm_head_bias = lm_head_bias
        self.token_dropout = token_dropout
        self.mask_token_id = mask_token_id
        self.attention_dropout = attention_dropout
        self.hidden_dropout = hidden_dropout
        self.initializer_range = initializer_range
        self.embedding_attention = embedding_attention
        self.classifier_pooling = classifier_pooling
        self.classifier_dropout = classifier_dropout
        self.contact_head = contact_head
        self.cpu_linear_kernel = cpu_linear_kernel
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    # Runtime choices: set on the object (or through `from_pretrained` kwargs), never saved with the weights.
    runtime_attributes = ("cpu_linear_kernel",)

    @property
    def cpu_linear_kernel(self) -> str:
        return self._cpu_linear_kernel

    @cpu_linear_kernel.setter
    def cpu_linear_kernel(self, kernel: str) -> None:
        if kernel not in CPU_LINEAR_KERNELS:
            raise ValueError(f"cpu_linear_kernel must be one of {CPU_LINEAR_KERNELS}, got {kernel!r}")
        self._cpu_linear_kernel = kernel

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        # Checkpoints written before the runtime choices left config.json still carry them: the machine that loads
        # them decides, not the one that saved them.
        config_dict = {key: value for key, value in config_dict.items() if key not in cls.runtime_attributes}
        return super().from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict:
        output = super().to_dict()
        for key in self.runtime_attributes:
            output.pop(f"_{key}", None)  # each is stored behind its validating property
        return output

    @property
    def classifier_dropout_rate(self) -> float:
        return self.classifier_dropout if self.classifier_dropout is not None else self.hidden_dropout

    @property
    def deepnorm_alpha(self) -> float:
        """DeepNorm residual scale for a decoder-only stack of N layers: (2N)^0.5 (GLM-130B)."""
        return (2.0 * self.num_hidden_layers) ** 0.5

    @property
    def deepnorm_beta(self) -> float:
        """DeepNorm init scale of the value, output and MLP projections: (2N)^-0.5."""
        return (2.0 * self.num_hidden_layers) ** -0.5

    def num_parameters(self, include_embeddings: bool = False) -> int:
        """Exact parameter count of the backbone (non-embedding by default, the scaling-law convention)."""
        h, kv_width = self.hidden_size, self.num_key_value_heads * self.head_dim
        q_width = self.num_attention_heads * self.head_dim
        attention = h * q_width + 2 * h * kv_width + q_width * h
        if self.attention_bias:
            attention += q_width + 2 * kv_width + h
        n_up = 2 if self.mlp_type == "glu" else 1
        mlp = (n_up + 1) * h * self.intermediate_size
        if self.mlp_bias:
            mlp += n_up * self.intermediate_size + h
        if self.qk_norm:  # weight only, over the full query and key widths
            attention += q_width + kv_width
        norm = h if self.norm_type == "rmsnorm" else 2 * h
        per_layer = attention + mlp + (1 if self.parallel_residual else 2) * norm
        total = self.num_hidden_layers * per_layer + norm  # + final norm
        if self.position_embedding_type == "relative":  # one bias table shared by the layers
            total += self.relative_attention_num_buckets * self.num_attention_heads
        if include_embeddings:
            total += self.vocab_size * h
            if self.position_embedding_type == "absolute":
                total += self.max_position_embeddings * h
        return total


__all__ = ["PLMConfig"]
