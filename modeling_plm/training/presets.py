"""Named model shapes: the ESM-2 family and a compute-optimal size grid.

`config_from_preset("esm2_8m")` gives a `PLMConfig`; keyword arguments override any field.
"""

from typing import Any

from ..configuration_plm import PLMConfig

# ESM-2's architecture: pre-LN LayerNorm, erf-GELU MLP, rotary, biases, ESM's LM head and token dropout.
ESM2_ARCHITECTURE: dict[str, Any] = {
    "mlp_type": "mlp",
    "hidden_act": "gelu",
    "norm_type": "layernorm",
    "norm_scheme": "pre",
    "position_embedding_type": "rotary",
    "attention_bias": True,
    "mlp_bias": True,
    "lm_head_transform": True,
    "lm_head_bias": True,
    "token_dropout": True,
    "max_position_embeddings": 1026,
}

# The package's default for new models: Llama-style blocks (RMSNorm, SwiGLU, no biases), which train faster per
# FLOP, plus ESM's LM-head transform, which helps masked-LM.
MODERN_ARCHITECTURE: dict[str, Any] = {
    "mlp_type": "glu",
    "hidden_act": "silu",
    "norm_type": "rmsnorm",
    "norm_scheme": "pre",
    "position_embedding_type": "rotary",
    "attention_bias": False,
    "mlp_bias": False,
    "lm_head_transform": True,
    "lm_head_bias": True,
    "token_dropout": False,
    "max_position_embeddings": 2048,
}

# xTrimoPGLM's choices: DeepNorm post-LN, GeGLU, 2-D rotary positions for GLM infilling.
XTRIMOPGLM_ARCHITECTURE: dict[str, Any] = {
    "mlp_type": "glu",
    "hidden_act": "gelu",
    "norm_type": "layernorm",
    "norm_scheme": "deepnorm",
    "position_embedding_type": "rotary_2d",
    "attention_bias": True,
    "mlp_bias": True,
    "lm_head_transform": False,
    "lm_head_bias": False,
    "token_dropout": False,
    "max_position_embeddings": 2048,
}


def _shape(layers: int, hidden: int, heads: int, **extra: Any) -> dict[str, Any]:
    return {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads, **extra}


PRESETS: dict[str, dict[str, Any]] = {
    # Tiny shapes for tests and CPU demos.
    "tiny": {**MODERN_ARCHITECTURE, **_shape(2, 64, 4), "max_position_embeddings": 1026},
    "small": {**MODERN_ARCHITECTURE, **_shape(4, 128, 4), "max_position_embeddings": 1026},
    # ESM-2 shapes (layers / hidden / heads), as published.
    "esm2_8m": {**ESM2_ARCHITECTURE, **_shape(6, 320, 20)},
    "esm2_35m": {**ESM2_ARCHITECTURE, **_shape(12, 480, 20)},
    "esm2_150m": {**ESM2_ARCHITECTURE, **_shape(30, 640, 20)},
    "esm2_650m": {**ESM2_ARCHITECTURE, **_shape(33, 1280, 20)},
    # Compute-optimal grid: head_dim 64, depth growing slowly with width; N counts non-embedding parameters.
    "plm_3m": {**MODERN_ARCHITECTURE, **_shape(4, 256, 4)},
    "plm_10m": {**MODERN_ARCHITECTURE, **_shape(8, 320, 5)},
    "plm_25m": {**MODERN_ARCHITECTURE, **_shape(10, 448, 7)},
    "plm_50m": {**MODERN_ARCHITECTURE, **_shape(12, 576, 9)},
    "plm_100m": {**MODERN_ARCHITECTURE, **_shape(14, 768, 12)},
    "plm_300m": {**MODERN_ARCHITECTURE, **_shape(24, 1024, 16)},
    "plm_1b": {**MODERN_ARCHITECTURE, **_shape(32, 1600, 25)},
    "plm_3b": {**MODERN_ARCHITECTURE, **_shape(40, 2560, 40)},
    # xTrimoPGLM-style GLM backbone.
    "xtrimopglm_100m": {**XTRIMOPGLM_ARCHITECTURE, **_shape(14, 768, 12)},
}


def config_from_preset(name: str, **overrides: Any) -> PLMConfig:
    """A `PLMConfig` for a named preset; `overrides` replace any of its fields."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Presets: {', '.join(PRESETS)}")
    return PLMConfig(**{**PRESETS[name], **overrides})
