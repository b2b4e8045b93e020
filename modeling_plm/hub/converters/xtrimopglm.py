"""xTrimoPGLM / ProteinGLM (biomap-research/proteinglm-{1b,3b,10b}-mlm and -{1b,3b,7b}-clm): their checkpoints to
modeling_plm checkpoints and back (`plm convert xtrimopglm`, `plm convert to-xtrimopglm`).

ProteinGLM maps onto the PLM backbone with: GLM's DeepNorm (`norm_scheme="glm_deepnorm"`: the residual taken from the
normed input, alpha = (2N)^0.5 on both residuals, the final norm once), LayerNorm with biases, GeGLU (`mlp_type="glu"`
with the erf GELU; the fused `dense_h_to_4h` is [up | gate], its first half multiplied and its second activated),
biases everywhere, rotary positions of base 10000 in the rotate-half layout (no permutation), and an untied
`output_layer` (with its bias when the checkpoint has one) as a plain decoder. The fused `query_key_value` is split per
head ([q_h | k_h | v_h]; with multi-query attention [q | k groups | v groups]).

Positions: `rotary_embedding_2d=False` is plain RoPE over the whole head (`position_embedding_type="rotary"`). 2-D
RoPE rotates the first half of each head by `position_ids[:, 0]` and the second by `position_ids[:, 1]`; ProteinGLM
feeds masked LMs (arange, 0), which is `"rotary_2d"` with block positions 0, and causal LMs (0, arange), which is RoPE
on the second half only: the halves of the q and k rows are swapped within each head (the scores are unchanged) and
the model gets `"rotary"` with `rotary_dim=head_dim/2`.

Masked-LM checkpoints (`is_causal: false`) become `PLMForMaskedLM`, causal ones `PLMForCausalLM`. The tokenizer keeps
ProteinGLM's ids (`tokenizer.model`: `<pad>`, the 27 residue letters, `<mask> <gmask> <smask> <eod> <sop> <eop> <eos>
<unk>`; ids 36-127 of the padded table become `<unused_N>`). ProteinGLM encodes `residues <eos>` and has no
begin-of-sequence token, while the embedding, scoring and generation pipelines put one first: `<eos>`, the sequence
separator ProteinGLM was trained with, serves as `<bos>` (the causal checkpoints' own prompt is
`<gmask> <sop> <eos> residues`, which `generate()` takes as given).
"""

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ...configuration_plm import PLMConfig
from ...modeling_plm import PLMForCausalLM, PLMForMaskedLM
from ...tokenization_plm import PLMTokenizerFast, read_vocab_file
from ..loading import ModelFolderError, check_model_folder, read_json
from .common import (
    Converter,
    hub_id_of_snapshot,
    knob_problems,
    load_checkpoint_weights,
    resolve_source,
    write_conversion_record,
)

# The model_type spellings of the published configs (proteinglm-1b-clm says "ProteinPGLM"; early uploads xTrimoPGLM).
PROTEINGLM_MODEL_TYPES = ("proteinglm", "proteinpglm", "xtrimopglm")
# tokenizer.model of every ProteinGLM checkpoint, in id order.
PROTEINGLM_VOCAB = [
    "<pad>",
    *"LAGVSERTIDPKQNFYMHWCXBUZO.-",
    *"<mask> <gmask> <smask> <eod> <sop> <eop> <eos> <unk>".split(),
]
# SwissArmyTransformer / MSAGPT spellings of the same tokens, renamed to ours (ids kept).
_TOKEN_RENAMES = {
    "[pad]": "<pad>",
    "[MASK]": "<mask>",
    "MASK": "<mask>",
    "[gMASK]": "<gmask>",
    "gMASK": "<gmask>",
    "[sMASK]": "<smask>",
    "sMASK": "<smask>",
    "eod": "<eod>",
    "sop": "<sop>",
    "eop": "<eop>",
    "</s>": "<eos>",
    "<M>": "<unk>",
}
# Named tokens of the converted tokenizer; <eos> doubles as <bos> (see the module docstring).
TOKENIZER_TOKENS = {
    "bos_token": "<eos>",
    "eos_token": "<eos>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}
# ProteinGLMConfig's defaults, for keys a config.json may leave out.
PROTEINGLM_DEFAULTS: dict[str, Any] = {
    "num_layers": 28,
    "padded_vocab_size": 128,
    "hidden_size": 4096,
    "ffn_hidden_size": 6832,
    "kv_channels": 64,
    "num_attention_heads": 40,
    "seq_length": 2048,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "layernorm_epsilon": 1e-5,
    "initializer_range": 0.02,
    "glu_activation": "geglu",
    "rmsnorm": False,
    "deepnorm": True,
    "apply_residual_connection_post_layernorm": True,
    "post_layer_norm": True,
    "add_bias_linear": True,
    "add_qkv_bias": True,
    "multi_query_attention": False,
    "multi_query_group_num": 1,
    "rotary_embedding_2d": False,
    "quantization_bit": 0,
    "moe": False,
    "untie_head": False,
}
# What the values of these ProteinGLM switches must be: anything else has no backbone counterpart.
_REQUIRED = {
    "rmsnorm": False,  # the hub code's RMSNorm path does not even build (MixedFusedLayerNorm is undefined)
    "post_layer_norm": True,
    "add_bias_linear": True,
    "add_qkv_bias": True,
    "moe": False,
    "untie_head": False,
    "quantization_bit": 0,
}
# Runtime switches of ProteinGLMConfig, written into the config.json of a reverse conversion (no numeric effect here:
# the layer-number scaling of the Megatron softmax path cancels out, and SDPA computes the same attention).
_RUNTIME_DEFAULTS = {
    "apply_query_key_layer_scaling": True,
    "attention_softmax_in_fp32": True,
    "use_pytorch_sdpa": True,
    "use_cache": True,
    "head_num": 1,
}
_GLU_ACTIVATIONS = {"geglu": "gelu", "swiglu": "silu"}
ROPE_BASE = 10000.0  # hard-coded in ProteinGLM's RotaryEmbedding
# The files of a ProteinGLM hub repository a conversion reads.
SOURCE_FILES = [
    "config.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
]
# Per-layer ProteinGLM weight -> PLM weight, for the ones that map one to one.
_LAYER_RENAMES = {
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "mlp_norm",
    "self_attention.dense": "self_attn.o_proj",
    "mlp.dense_4h_to_h": "mlp.down_proj",
}
_GLOBAL_RENAMES = {
    "embedding.word_embeddings.weight": "model.embeddings.word_embeddings.weight",
    "encoder.final_layernorm.weight": "model.norm.weight",
    "encoder.final_layernorm.bias": "model.norm.bias",
    "output_layer.weight": "lm_head.decoder.weight",
    "output_layer.bias": "lm_head.bias",
}

# Published sizes as PLMConfig kwargs. Verified against the hub configs as the search tool shows them:
# 1b-clm (hidden 2048, ffn 5461, kv_channels 64, geglu, deepnorm, LayerNorm 1e-5, 128 ids) and 7b-clm (hidden 4096,
# ffn 10922, kv_channels 128, 36 layers, 1-D RoPE, seq_length 1024). Layer counts of 1b / 3b and every 3b / 10b
# width are derived from the published weight sizes (fp32 bytes / 4 = parameters) and index sizes, not read.
_COMMON = {
    "vocab_size": 128,
    "mlp_type": "glu",
    "hidden_act": "gelu",
    "norm_type": "layernorm",
    "norm_scheme": "glm_deepnorm",
    "layer_norm_eps": 1e-5,
    "position_embedding_type": "rotary",
    "rope_theta": ROPE_BASE,
    "max_position_embeddings": 1024,
    "attention_bias": True,
    "mlp_bias": True,
    "lm_head_transform": False,
    "lm_head_bias": True,
    "tie_word_embeddings": False,
    "token_dropout": False,
    "pad_token_id": 0,
    "mask_token_id": 28,
    "bos_token_id": 34,
    "eos_token_id": 34,
}
_SHAPES = {
    "1b": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32, "intermediate_size": 5461},
    "3b": {"hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 40, "intermediate_size": 6826},
    "10b": {"hidden_size": 4352, "num_hidden_layers": 47, "num_attention_heads": 68, "intermediate_size": 11605},
    "7b": {"hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32, "intermediate_size": 10922},
}
XTRIMOPGLM_PRESETS: dict[str, dict] = {
    f"xtrimopglm_{size}_{kind}": {**_COMMON, **_SHAPES[size]}
    for size, kind in (("1b", "mlm"), ("3b", "mlm"), ("10b", "mlm"), ("1b", "clm"), ("3b", "clm"), ("7b", "clm"))
}


def read_proteinglm_config(source: Path) -> dict[str, Any]:
    """The source's config.json with ProteinGLMConfig's defaults filled in; a wrong folder raises naming the file."""
    path = source / "config.json"
    if not path.is_file():
        raise ModelFolderError(f"{source} has no config.json: not a ProteinGLM checkpoint folder")
    config = read_json(path)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if str(model_type).lower() not in PROTEINGLM_MODEL_TYPES:
        raise ModelFolderError(f"{path}: model_type {model_type!r} is not a ProteinGLM / xTrimoPGLM model type")
    return {**PROTEINGLM_DEFAULTS, **config}


def is_causal_checkpoint(config: dict[str, Any], source: Path, hub_id: str | None = None) -> bool:
    """Causal (CLM) or masked (MLM): `is_causal` of the config, else `-clm` / `-mlm` in the hub id or folder name."""
    if "is_causal" in config:
        return bool(config["is_causal"])
    name = (hub_id or source.name).lower()
    if "clm" in name or "mlm" in name:
        return "clm" in name
    raise ValueError(f"{source / 'config.json'}: no is_causal, and the name says neither -mlm nor -clm")


def _norm_scheme(config: dict[str, Any]) -> str | None:
    if config["deepnorm"]:
        return "glm_deepnorm"  # deepnorm forces apply_residual_connection_post_layernorm in ProteinGLMConfig
    return None if config["apply_residual_connection_post_layernorm"] else "pre"


def _positions(config: dict[str, Any], causal: bool) -> dict[str, Any]:
    if not config["rotary_embedding_2d"]:
        return {"position_embedding_type": "rotary"}
    if not causal:
        return {"position_embedding_type": "rotary_2d"}
    return {"position_embedding_type": "rotary", "rotary_dim": config["kv_channels"] // 2}  # halves swapped


def proteinglm_config_to_plm(config: dict[str, Any], causal: bool, output_bias: bool, tied: bool) -> PLMConfig:
    """The PLMConfig of a ProteinGLM config.json (defaults filled in); raises listing every knob it cannot take."""
    problems = [f"{key}={config[key]!r} (needs {value!r})" for key, value in _REQUIRED.items() if config[key] != value]
    if config["glu_activation"] not in _GLU_ACTIVATIONS:
        problems.append(f"glu_activation={config['glu_activation']!r} (needs one of {sorted(_GLU_ACTIVATIONS)})")
    if _norm_scheme(config) is None:
        problems.append("deepnorm=False with apply_residual_connection_post_layernorm=True (no backbone scheme)")
    if problems:
        raise ValueError("This ProteinGLM checkpoint cannot be converted: " + "; ".join(problems))
    heads = config["num_attention_heads"]
    return PLMConfig(
        **_positions(config, causal),
        vocab_size=config["padded_vocab_size"],
        hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=config["multi_query_group_num"] if config["multi_query_attention"] else heads,
        head_dim=config["kv_channels"],
        intermediate_size=config["ffn_hidden_size"],
        mlp_type="glu",
        hidden_act=_GLU_ACTIVATIONS[config["glu_activation"]],
        norm_type="layernorm",
        norm_scheme=_norm_scheme(config),
        layer_norm_eps=config["layernorm_epsilon"],
        rope_theta=ROPE_BASE,
        max_position_embeddings=config["seq_length"],
        attention_bias=True,
        mlp_bias=True,
        lm_head_transform=False,
        lm_head_bias=output_bias,
        tie_word_embeddings=tied,
        token_dropout=False,
        pad_token_id=PROTEINGLM_VOCAB.index("<pad>"),
        mask_token_id=PROTEINGLM_VOCAB.index("<mask>"),
        bos_token_id=PROTEINGLM_VOCAB.index(TOKENIZER_TOKENS["bos_token"]),
        eos_token_id=PROTEINGLM_VOCAB.index("<eos>"),
        attention_dropout=config["attention_dropout"],
        hidden_dropout=config["hidden_dropout"],
        initializer_range=config["initializer_range"],
    )


def swap_rotary_halves(weight: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Swaps the two halves of every head's rows (q or k projection weight or bias); its own inverse."""
    heads = weight.reshape(-1, 2, head_dim // 2, *weight.shape[1:])
    return heads.flip(1).reshape(weight.shape)


def _split_qkv(fused: torch.Tensor, config: PLMConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d, heads, groups = config.head_dim, config.num_attention_heads, config.num_key_value_heads
    if groups != heads:  # multi-query: all queries, then the key groups, then the value groups
        return fused.split([heads * d, groups * d, groups * d], dim=0)
    per_head = fused.reshape(heads, 3, d, *fused.shape[1:])
    return tuple(per_head[:, index].reshape(heads * d, *fused.shape[1:]) for index in range(3))


def _fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: PLMConfig) -> torch.Tensor:
    d, heads, groups = config.head_dim, config.num_attention_heads, config.num_key_value_heads
    if groups != heads:
        return torch.cat((q, k, v), dim=0)
    per_head = [t.reshape(heads, 1, d, *t.shape[1:]) for t in (q, k, v)]
    return torch.cat(per_head, dim=1).reshape(heads * 3 * d, *q.shape[1:])


def _swaps_halves(config: PLMConfig) -> bool:
    """Causal 2-D RoPE as converted: the rotated second half of each head moved first (`rotary_dim=head_dim/2`)."""
    return config.position_embedding_type == "rotary" and config.rotary_dim is not None


def _rotary_is_half(config: PLMConfig) -> bool:
    return config.position_embedding_type == "rotary_2d" or _swaps_halves(config)


def _check_inv_freq(name: str, tensor: torch.Tensor, config: PLMConfig) -> None:
    """ProteinGLM stores each layer's rotary frequencies; they must be base-10000 ones of the rotated width (to
    bf16 precision, as a bf16 run rounds them), since the backbone recomputes them."""
    width = config.head_dim // 2 if _rotary_is_half(config) else config.head_dim
    expected = 1.0 / ROPE_BASE ** (torch.arange(0, width, 2).float() / width)
    if tensor.shape != expected.shape or not torch.allclose(tensor.float(), expected, rtol=1e-2, atol=0):
        raise ValueError(f"{name}: rotary frequencies other than base {ROPE_BASE:g} over {width} dims")


def _convert_layer_weight(name: str, tensor: torch.Tensor, layer: str, config: PLMConfig) -> dict[str, torch.Tensor]:
    prefix = f"model.layers.{layer}."
    module, _, param = name.rpartition(".")
    if param not in ("weight", "bias"):
        return {}
    if module == "self_attention.query_key_value":
        q, k, v = _split_qkv(tensor, config)
        if _swaps_halves(config):
            q, k = swap_rotary_halves(q, config.head_dim), swap_rotary_halves(k, config.head_dim)
        return {f"{prefix}self_attn.{proj}.{param}": t for proj, t in zip(("q_proj", "k_proj", "v_proj"), (q, k, v))}
    if module == "mlp.dense_h_to_4h":
        up, gate = tensor.chunk(2, dim=0)  # ProteinGLM multiplies the first half and activates the second
        return {f"{prefix}mlp.up_proj.{param}": up, f"{prefix}mlp.gate_proj.{param}": gate}
    if module in _LAYER_RENAMES:
        return {f"{prefix}{_LAYER_RENAMES[module]}.{param}": tensor}
    return {}


def proteinglm_state_dict_to_plm(state_dict: dict[str, torch.Tensor], config: PLMConfig) -> dict[str, torch.Tensor]:
    """ProteinGLM weights under PLM names (fused matrices split). Unknown weights raise: nothing is dropped silently;
    the stored rotary frequencies are checked, then left to the backbone, which recomputes them."""
    converted, unknown = {}, []
    for name, tensor in state_dict.items():
        short = name.removeprefix("transformer.")
        if short in _GLOBAL_RENAMES:
            converted[_GLOBAL_RENAMES[short]] = tensor
            continue
        parts = short.split(".", 3)
        if len(parts) == 4 and parts[:2] == ["encoder", "layers"] and parts[2].isdigit():
            if parts[3] == "self_attention.rotary_emb.inv_freq":
                _check_inv_freq(name, tensor, config)
                continue
            renamed = _convert_layer_weight(parts[3], tensor, parts[2], config)
            if renamed:
                converted.update(renamed)
                continue
        unknown.append(name)
    if unknown:
        raise ValueError(f"Not a ProteinGLM checkpoint: unexpected weights {unknown[:8]}")
    return converted


def plm_state_dict_to_proteinglm(state_dict: dict[str, torch.Tensor], config: PLMConfig) -> dict[str, torch.Tensor]:
    """PLM weights under ProteinGLM names (fused again), with the rotary frequencies ProteinGLM stores."""
    converted = {f"transformer.{short}": state_dict[plm] for short, plm in _GLOBAL_RENAMES.items() if plm in state_dict}
    if "transformer.output_layer.weight" not in converted:  # tied: ProteinGLM's output layer is its own weight
        converted["transformer.output_layer.weight"] = state_dict["model.embeddings.word_embeddings.weight"]
    width = config.head_dim // 2 if _rotary_is_half(config) else config.head_dim
    inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, width, 2).float() / width)
    for layer in range(config.num_hidden_layers):
        converted.update(_fuse_layer(state_dict, f"model.layers.{layer}.", config))
        converted[f"transformer.encoder.layers.{layer}.self_attention.rotary_emb.inv_freq"] = inv_freq.clone()
    return converted


def _fuse_layer(state_dict: dict[str, torch.Tensor], prefix: str, config: PLMConfig) -> dict[str, torch.Tensor]:
    target = "transformer.encoder.layers." + prefix.split(".")[2] + "."
    converted = {}
    for param in ("weight", "bias"):
        q, k, v = (state_dict[f"{prefix}self_attn.{proj}.{param}"] for proj in ("q_proj", "k_proj", "v_proj"))
        if _swaps_halves(config):
            q, k = swap_rotary_halves(q, config.head_dim), swap_rotary_halves(k, config.head_dim)
        converted[f"{target}self_attention.query_key_value.{param}"] = _fuse_qkv(q, k, v, config)
        up, gate = state_dict[f"{prefix}mlp.up_proj.{param}"], state_dict[f"{prefix}mlp.gate_proj.{param}"]
        converted[f"{target}mlp.dense_h_to_4h.{param}"] = torch.cat((up, gate), dim=0)
        for theirs, ours in _LAYER_RENAMES.items():
            converted[f"{target}{theirs}.{param}"] = state_dict[f"{prefix}{ours}.{param}"]
    return converted


def read_proteinglm_vocab(source: Path, vocab_size: int) -> list[str]:
    """tokenizer.model's tokens (renamed to our spellings, ids kept), padded with `<unused_N>` to `vocab_size`."""
    path = source / "tokenizer.model"
    if not path.is_file():
        raise FileNotFoundError(f"{source}: tokenizer.model is missing; it defines ProteinGLM's token ids")
    vocab = [_TOKEN_RENAMES.get(token, token) for token in read_vocab_file(path)]
    missing = sorted(set(TOKENIZER_TOKENS.values()) - set(vocab))
    if missing or len(vocab) > vocab_size:
        raise ValueError(f"{path}: not ProteinGLM's vocabulary (missing {missing}, {len(vocab)} > {vocab_size} ids?)")
    return vocab + [f"<unused_{index}>" for index in range(len(vocab), vocab_size)]


def build_tokenizer(vocab: list[str], model_max_length: int) -> PLMTokenizerFast:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab.txt"
        path.write_text("\n".join(vocab) + "\n")
        tokenizer = PLMTokenizerFast(vocab_file=str(path), **TOKENIZER_TOKENS)
    tokenizer.model_max_length = model_max_length
    return tokenizer


def convert_xtrimopglm(source: str | Path, destination: str | Path) -> Path:
    """Convert a ProteinGLM checkpoint (a folder laid out like `biomap-research/proteinglm-*`, or that hub id) into a
    modeling_plm checkpoint: PLMForMaskedLM for masked-LM checkpoints, PLMForCausalLM for causal ones."""
    source = resolve_source(source, patterns=SOURCE_FILES, example="biomap-research/proteinglm-1b-mlm")
    proteinglm = read_proteinglm_config(source)
    causal = is_causal_checkpoint(proteinglm, source, hub_id_of_snapshot(source))
    weights = load_checkpoint_weights(source)
    has_output = any(name.endswith("output_layer.weight") for name in weights)
    has_bias = any(name.endswith("output_layer.bias") for name in weights)
    config = proteinglm_config_to_plm(proteinglm, causal, output_bias=has_bias, tied=not has_output)
    vocab = read_proteinglm_vocab(source, config.vocab_size)
    model = (PLMForCausalLM if causal else PLMForMaskedLM)(config)
    missing, unexpected = model.load_state_dict(proteinglm_state_dict_to_plm(weights, config), strict=False)
    missing = [name for name in missing if not (name == "lm_head.decoder.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"{source}: conversion mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")
    model.tie_weights()
    destination = Path(destination)
    model.save_pretrained(destination)
    build_tokenizer(vocab, config.max_position_embeddings).save_pretrained(destination)
    write_conversion_record(destination, family="xtrimopglm", source=source)
    return destination


def _rotary_knobs(config: PLMConfig, causal: bool) -> tuple[bool, str | None]:
    """(rotary_embedding_2d, problem) for the position knobs of a PLM config."""
    kind, rotary_dim = config.position_embedding_type, config.rotary_dim
    if kind == "rotary" and rotary_dim is None:
        return False, None
    if kind == "rotary_2d" and rotary_dim is None and not causal:
        return True, None
    if kind == "rotary" and rotary_dim == config.head_dim // 2 and causal:
        return True, None
    return False, (
        f"position_embedding_type={kind!r} with rotary_dim={rotary_dim!r} in a {'causal' if causal else 'masked'} "
        "LM (ProteinGLM has whole-head RoPE, or 2-D RoPE: (arange, 0) for masked LMs, (0, arange) for causal ones)"
    )


def plm_config_to_proteinglm(config: PLMConfig, causal: bool) -> dict[str, Any]:
    """ProteinGLM's config.json for a PLM config; raises listing every knob ProteinGLM cannot express."""
    expected = {
        "norm_type": "layernorm",
        "mlp_type": "glu",
        "attention_bias": True,
        "mlp_bias": True,
        "qk_norm": False,
        "parallel_residual": False,
        "residual_multiplier": 1.0,
        "lm_head_transform": False,
        "token_dropout": False,
        "contact_head": False,
        "rope_theta": ROPE_BASE,
    }
    problems = knob_problems(config, expected, "")
    if config.norm_scheme not in ("glm_deepnorm", "pre"):
        problems.append(f"norm_scheme={config.norm_scheme!r} (needs 'glm_deepnorm' or 'pre')")
    if config.hidden_act not in ("gelu", "silu"):
        problems.append(f"hidden_act={config.hidden_act!r} (needs 'gelu' for GeGLU or 'silu' for SwiGLU)")
    if config.attention_scale not in (None, config.head_dim**-0.5):
        problems.append(f"attention_scale={config.attention_scale!r} (needs head_dim ** -0.5)")
    rotary_2d, problem = _rotary_knobs(config, causal)
    problems += [problem] if problem else []
    if problems:
        raise ValueError("This model cannot be expressed as ProteinGLM: " + "; ".join(problems))
    deepnorm = config.norm_scheme == "glm_deepnorm"
    multi_query = config.num_key_value_heads != config.num_attention_heads
    return {
        **PROTEINGLM_DEFAULTS,
        **_RUNTIME_DEFAULTS,
        "model_type": "ProteinGLM",
        "architectures": ["ProteinGLMForCasualLM" if causal else "ProteinGLMForMaskedLM"],
        "num_layers": config.num_hidden_layers,
        "padded_vocab_size": config.vocab_size,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "ffn_hidden_size": config.intermediate_size,
        "kv_channels": config.head_dim,
        "num_attention_heads": config.num_attention_heads,
        "seq_length": config.max_position_embeddings,
        "hidden_dropout": config.hidden_dropout,
        "attention_dropout": config.attention_dropout,
        "layernorm_epsilon": config.layer_norm_eps,
        "initializer_range": config.initializer_range,
        "glu_activation": "geglu" if config.hidden_act == "gelu" else "swiglu",
        "deepnorm": deepnorm,
        "apply_residual_connection_post_layernorm": deepnorm,
        "multi_query_attention": multi_query,
        "multi_query_group_num": config.num_key_value_heads if multi_query else 1,
        "rotary_embedding_2d": rotary_2d,
        "is_causal": causal,
        "torch_dtype": "float32",
    }


def _check_vocab(tokenizer: PLMTokenizerFast, vocab_size: int) -> None:
    vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    if vocab[: len(PROTEINGLM_VOCAB)] != PROTEINGLM_VOCAB or len(vocab) != vocab_size:
        raise ValueError(
            "This model cannot be expressed as ProteinGLM: its vocabulary is not ProteinGLM's "
            f"({' '.join(PROTEINGLM_VOCAB[:3])} ... in id order, {vocab_size} ids)"
        )


def convert_plm_to_xtrimopglm(source: str | Path, destination: str | Path) -> Path:
    """Convert a modeling_plm checkpoint whose config ProteinGLM can express into a ProteinGLM checkpoint folder
    (config.json, model.safetensors, tokenizer.model, tokenizer_config.json; the hub's remote-code files
    `*_proteinglm.py` are not ours to ship: copy them from the hub repository to load it with transformers)."""
    source, destination = Path(source), Path(destination)
    check_model_folder(source)
    config = PLMConfig.from_pretrained(source)
    architectures = config.architectures or []
    if not {"PLMForMaskedLM", "PLMForCausalLM"} & set(architectures):
        raise ValueError(f"{source}: ProteinGLM needs a masked or causal language model, got {architectures}")
    causal = "PLMForCausalLM" in architectures
    proteinglm = plm_config_to_proteinglm(config, causal)
    _check_vocab(PLMTokenizerFast.from_pretrained(source), config.vocab_size)
    state_dict = plm_state_dict_to_proteinglm(load_checkpoint_weights(source), config)
    destination.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in state_dict.items()}, destination / "model.safetensors")
    (destination / "config.json").write_text(json.dumps(proteinglm, indent=2) + "\n")
    (destination / "tokenizer.model").write_text("\n".join(PROTEINGLM_VOCAB))
    named = {"eos_token": "<eos>", "pad_token": "<pad>", "mask_token": "<mask>", "unk_token": "<unk>"}
    tokenizer_config = {**named, "model_max_length": config.max_position_embeddings}
    (destination / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return destination


CONVERTERS = (
    Converter(
        name="xtrimopglm",
        convert=convert_xtrimopglm,
        help="xTrimoPGLM / ProteinGLM checkpoint (folder or hub id) -> modeling_plm checkpoint (MLM or CLM)",
        source_help="folder with config.json (model_type ProteinGLM), *.safetensors, tokenizer.model",
        destination_help="output folder (safetensors, config, remote code, tokenizer)",
    ),
    Converter(
        name="to-xtrimopglm",
        convert=convert_plm_to_xtrimopglm,
        help="modeling_plm masked or causal LM -> xTrimoPGLM / ProteinGLM checkpoint",
        source_help="a modeling_plm checkpoint folder whose architecture ProteinGLM can express",
        destination_help="output folder (ProteinGLM config.json, model.safetensors, tokenizer.model)",
    ),
)
