"""AMPLIFY (chandar-lab/AMPLIFY_120M, AMPLIFY_350M): AMPLIFY checkpoints to modeling_plm masked-LM checkpoints and
back (`plm convert amplify`, `plm convert to-amplify`).

AMPLIFY maps onto the PLM backbone with: pre-LN RMSNorm blocks (`attention_norm`, `ffn_norm`), xformers' SwiGLU
(one fused `w12`, split here into `gate_proj` and `up_proj`; width 2/3 of `intermediate_size` rounded up to 8),
rotary positions, optional attention / FFN biases, the final norm `layer_norm_2` and an untied decoder with bias
(no LM-head transform). AMPLIFY rotates q and k as complex numbers (dims 2j and 2j+1 of a head are one pair); the
backbone rotates dim j with j + head_dim/2, so the q and k projection rows are permuted within each head (the
scores are unchanged: the same permutation applies to both). Its GELU and ReLU FFNs, and LayerNorm
(`rms_norm=False`), convert too. A norm right after the embedding (`layer_norm_after_embedding=True`) and no final
norm (`layer_norm_before_last_layer=False`) have no backbone counterpart and are refused.

The tokenizer keeps AMPLIFY's vocabulary order (`<pad> <unk> <mask> <bos> <eos> | L A G ...`), read from the
source's tokenizer.json (or vocab.txt), so token ids are identical.
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ...configuration_plm import PLMConfig
from ...modeling_plm import PLMForMaskedLM
from ...tokenization_plm import PLMTokenizerFast, build_backend_tokenizer, read_vocab_file, special_tokens_of
from ..loading import check_model_folder, check_model_type
from .common import (
    Converter,
    compile_name_template,
    knob_problems,
    load_checkpoint_weights,
    rename,
    resolve_source,
    write_conversion_record,
)

AMPLIFY_MODEL_TYPES = ("AMPLIFY", "amplify")
# AMPLIFYConfig's defaults, for keys a config.json may leave out.
AMPLIFY_DEFAULTS: dict[str, Any] = {
    "hidden_size": 960,
    "num_hidden_layers": 32,
    "num_attention_heads": 15,
    "intermediate_size": 3840,
    "dropout_prob": 0.0,
    "rms_norm": True,
    "norm_eps": 1e-5,
    "hidden_act": "SwiGLU",
    "layer_norm_after_embedding": False,
    "layer_norm_before_last_layer": True,
    "vocab_size": 27,
    "ffn_bias": False,
    "att_bias": False,
    "pad_token_id": 0,
    "max_length": 2048,
}
# AMPLIFY's named tokens (conf/tokenizer/amplify_tokenizer.yaml: pad 0, unk 1, mask 2, bos 3, eos 4).
AMPLIFY_SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
}
# Knobs every AMPLIFY shares (RoPE base 10000 is hard-coded in AMPLIFY's rotary.py).
AMPLIFY_ARCHITECTURE: dict[str, Any] = {
    "norm_scheme": "pre",
    "position_embedding_type": "rotary",
    "rope_theta": 10000.0,
    "lm_head_transform": False,
    "lm_head_bias": True,
    "tie_word_embeddings": False,
    "token_dropout": False,
}
# AMPLIFY's FFN choices (hidden_act, lower-cased as AMPLIFY does) -> the backbone's MLP.
_FFN_KNOBS = {
    "swiglu": {"mlp_type": "glu", "hidden_act": "silu"},
    "gelu": {"mlp_type": "mlp", "hidden_act": "gelu"},  # torch's erf GELU, as nn.GELU()
    "relu": {"mlp_type": "mlp", "hidden_act": "relu"},
}
_AMPLIFY_HIDDEN_ACT = {("glu", "silu"): "SwiGLU", ("mlp", "gelu"): "GELU", ("mlp", "relu"): "ReLU"}


def swiglu_width(intermediate_size: int) -> int:
    """AMPLIFY's SwiGLU width: int(2/3 of intermediate_size), rounded up to a multiple of 8."""
    return 8 * -(-int(2 * intermediate_size / 3) // 8)


def _published(layers: int, hidden: int, heads: int, intermediate: int) -> dict[str, Any]:
    return {
        **AMPLIFY_ARCHITECTURE,
        **_FFN_KNOBS["swiglu"],
        "norm_type": "rmsnorm",
        "layer_norm_eps": 1e-5,
        "attention_bias": False,
        "mlp_bias": False,
        "max_position_embeddings": 2048,
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "intermediate_size": swiglu_width(intermediate),
    }


# The published sizes (conf/model/120M.yaml, 350M.yaml and amplify.yaml of chandar-lab/AMPLIFY, max_length 2048 as
# AMPLIFYConfig's default). Vocabulary and token ids are AMPLIFY_TOKENS (conf/tokenizer/amplify_tokenizer.yaml).
AMPLIFY_PRESETS: dict[str, dict[str, Any]] = {
    "amplify_120m": _published(24, 640, 10, 2560),
    "amplify_350m": _published(32, 960, 15, 3840),
}
AMPLIFY_TOKENS: dict[str, int] = {
    "vocab_size": 27,
    "pad_token_id": 0,
    "mask_token_id": 2,
    "bos_token_id": 3,
    "eos_token_id": 4,
}

# The files of an AMPLIFY hub repository a conversion reads (not its remote code).
SOURCE_FILES = [
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]
# AMPLIFY names and their PLM names; `mlp.gate_up_proj` is the fused w12, split (and joined back) separately.
_NAME_TEMPLATES = [
    ("encoder.weight", "model.embeddings.word_embeddings.weight"),
    ("transformer_encoder.{layer}.q.{param}", "model.layers.{layer}.self_attn.q_proj.{param}"),
    ("transformer_encoder.{layer}.k.{param}", "model.layers.{layer}.self_attn.k_proj.{param}"),
    ("transformer_encoder.{layer}.v.{param}", "model.layers.{layer}.self_attn.v_proj.{param}"),
    ("transformer_encoder.{layer}.wo.{param}", "model.layers.{layer}.self_attn.o_proj.{param}"),
    ("transformer_encoder.{layer}.attention_norm.{param}", "model.layers.{layer}.attention_norm.{param}"),
    ("transformer_encoder.{layer}.ffn_norm.{param}", "model.layers.{layer}.mlp_norm.{param}"),
    ("transformer_encoder.{layer}.ffn.w12.{param}", "model.layers.{layer}.mlp.gate_up_proj.{param}"),
    ("transformer_encoder.{layer}.ffn.w3.{param}", "model.layers.{layer}.mlp.down_proj.{param}"),
    ("transformer_encoder.{layer}.ffn.0.{param}", "model.layers.{layer}.mlp.up_proj.{param}"),
    ("transformer_encoder.{layer}.ffn.2.{param}", "model.layers.{layer}.mlp.down_proj.{param}"),
    ("layer_norm_2.{param}", "model.norm.{param}"),
    ("decoder.weight", "lm_head.decoder.weight"),
    ("decoder.bias", "lm_head.bias"),
]
_AMPLIFY_TO_PLM = [(compile_name_template(amplify), plm) for amplify, plm in _NAME_TEMPLATES]
_SWIGLU_TO_AMPLIFY = [
    (compile_name_template(plm), amplify) for amplify, plm in _NAME_TEMPLATES if "ffn.0" not in amplify
]
_MLP_TO_AMPLIFY = [(compile_name_template(plm), amplify) for amplify, plm in _NAME_TEMPLATES if "ffn.w" not in amplify]


def interleaved_to_half_rows(width: int, head_dim: int) -> torch.Tensor:
    """Row order that turns AMPLIFY's complex-pair RoPE layout into the backbone's rotate-half layout: within each
    head, new dim j < head_dim/2 takes old dim 2j and new dim head_dim/2 + j takes old dim 2j + 1."""
    within = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    return (torch.arange(width // head_dim)[:, None] * head_dim + within).flatten()


def _is_rotated(name: str) -> bool:
    return ".self_attn.q_proj." in name or ".self_attn.k_proj." in name


def amplify_state_dict_to_plm(state_dict: dict[str, torch.Tensor], head_dim: int) -> dict[str, torch.Tensor]:
    """AMPLIFY weights under PLM names, q/k rows permuted and w12 split. Unknown weights raise: nothing is dropped."""
    converted, unknown = {}, []
    for name, tensor in state_dict.items():
        target = rename(name, _AMPLIFY_TO_PLM)
        if target is None:
            unknown.append(name)
        elif ".mlp.gate_up_proj." in target:
            gate, up = tensor.chunk(2, dim=0)  # xformers packs w1 (the gated half) before w2
            converted[target.replace("gate_up_proj", "gate_proj")] = gate.contiguous()
            converted[target.replace("gate_up_proj", "up_proj")] = up.contiguous()
        elif _is_rotated(target):
            converted[target] = tensor[interleaved_to_half_rows(tensor.shape[0], head_dim)]
        else:
            converted[target] = tensor
    if unknown:
        raise ValueError(f"unexpected weights {unknown[:8]}")
    return converted


def plm_state_dict_to_amplify(state_dict: dict[str, torch.Tensor], config: PLMConfig) -> dict[str, torch.Tensor]:
    """The inverse of `amplify_state_dict_to_plm` (tied or bias-free decoders written out in full)."""
    table = _SWIGLU_TO_AMPLIFY if config.mlp_type == "glu" else _MLP_TO_AMPLIFY
    state_dict = dict(state_dict)
    if "lm_head.decoder.weight" not in state_dict:  # tied: saved once, as the embedding
        state_dict["lm_head.decoder.weight"] = state_dict["model.embeddings.word_embeddings.weight"]
    if "lm_head.bias" not in state_dict:
        state_dict["lm_head.bias"] = torch.zeros(config.vocab_size, dtype=state_dict["lm_head.decoder.weight"].dtype)
    converted = {}
    for name in [name for name in state_dict if ".mlp.gate_proj." in name]:
        up_name = name.replace("gate_proj", "up_proj")
        fused = torch.cat([state_dict.pop(name), state_dict.pop(up_name)], dim=0)
        state_dict[name.replace("gate_proj", "gate_up_proj")] = fused
    for name, tensor in state_dict.items():
        target = rename(name, table)
        if target is None:
            raise ValueError(f"Weight {name!r} has no AMPLIFY counterpart")
        if _is_rotated(name):
            rows = interleaved_to_half_rows(tensor.shape[0], config.head_dim)
            tensor = torch.empty_like(tensor).index_copy_(0, rows, tensor)  # undo the permutation
        converted[target] = tensor.clone().contiguous()  # own storage: tied tensors are saved twice
    return converted


def read_amplify_vocab(source: Path) -> list[str]:
    """AMPLIFY's tokens in id order, from tokenizer.json (the hub's layout) or vocab.txt (the GitHub repo's)."""
    if (source / "tokenizer.json").is_file():
        data = json.loads((source / "tokenizer.json").read_text())
        by_id = dict((data.get("model") or {}).get("vocab") or {})
        by_id.update({token["content"]: token["id"] for token in data.get("added_tokens", [])})
        vocab = sorted(by_id, key=by_id.__getitem__)
        if [by_id[token] for token in vocab] != list(range(len(vocab))):
            raise ValueError(f"{source / 'tokenizer.json'}: token ids are not 0..{len(vocab) - 1} without gaps")
        return vocab
    if (source / "vocab.txt").is_file():
        return read_vocab_file(source / "vocab.txt")
    raise FileNotFoundError(f"{source}: no tokenizer.json or vocab.txt; they define AMPLIFY's token ids")


def read_amplify_special_tokens(source: Path, vocab: list[str], amplify: dict[str, Any]) -> dict[str, str]:
    """The named tokens: tokenizer_config.json / special_tokens_map.json where given, else AMPLIFY's; each must be in
    the vocabulary and agree with the ids that config.json states (`pad_token_id`, `bos_token_id`, ...)."""
    named = dict(AMPLIFY_SPECIAL_TOKENS)
    for file_name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (source / file_name).is_file():
            data = json.loads((source / file_name).read_text())
            for name in named:
                value = data.get(name)
                value = value.get("content") if isinstance(value, dict) else value
                if isinstance(value, str):
                    named[name] = value
    problems = [f"{name} {token!r} is not in the vocabulary" for name, token in named.items() if token not in vocab]
    for name, token in named.items():
        stated = amplify.get(f"{name}_id")
        if token in vocab and isinstance(stated, int) and vocab.index(token) != stated:
            problems.append(f"config.json's {name}_id={stated} but {token!r} has id {vocab.index(token)}")
    if problems:
        raise ValueError(f"{source}: inconsistent AMPLIFY tokenizer: " + "; ".join(problems))
    return named


def amplify_config_to_plm(amplify: dict[str, Any], vocab: list[str], special: dict[str, str]) -> PLMConfig:
    """The PLMConfig of an AMPLIFY config.json; raises listing every setting the backbone cannot express."""
    amplify = {**AMPLIFY_DEFAULTS, **amplify}
    act = str(amplify["hidden_act"]).lower()
    problems = []
    if amplify["layer_norm_after_embedding"]:
        problems.append("layer_norm_after_embedding=True (the backbone has no norm after the embedding)")
    if not amplify["layer_norm_before_last_layer"]:
        problems.append("layer_norm_before_last_layer=False (the backbone always applies its final norm)")
    if act not in _FFN_KNOBS:
        problems.append(f"hidden_act={amplify['hidden_act']!r} (AMPLIFY knows SwiGLU, GELU and ReLU)")
    if amplify["hidden_size"] % amplify["num_attention_heads"]:
        problems.append(f"hidden_size={amplify['hidden_size']} not divisible by {amplify['num_attention_heads']} heads")
    if problems:
        raise ValueError("Cannot convert this AMPLIFY checkpoint: " + "; ".join(problems))
    intermediate = amplify["intermediate_size"]
    return PLMConfig(
        **AMPLIFY_ARCHITECTURE,
        **_FFN_KNOBS[act],
        intermediate_size=swiglu_width(intermediate) if act == "swiglu" else intermediate,
        norm_type="rmsnorm" if amplify["rms_norm"] else "layernorm",
        layer_norm_eps=amplify["norm_eps"],
        vocab_size=amplify["vocab_size"],
        hidden_size=amplify["hidden_size"],
        num_hidden_layers=amplify["num_hidden_layers"],
        num_attention_heads=amplify["num_attention_heads"],
        attention_bias=amplify["att_bias"],
        mlp_bias=amplify["ffn_bias"],
        max_position_embeddings=amplify["max_length"],
        attention_dropout=amplify["dropout_prob"],
        hidden_dropout=amplify["dropout_prob"],
        initializer_range=amplify.get("decoder_init_range", 0.02),
        pad_token_id=vocab.index(special["pad_token"]),
        bos_token_id=vocab.index(special["bos_token"]),
        eos_token_id=vocab.index(special["eos_token"]),
        mask_token_id=vocab.index(special["mask_token"]),
    )


def amplify_intermediate_size(config: PLMConfig) -> int:
    """An AMPLIFY `intermediate_size` whose SwiGLU width is the backbone's: 4x hidden when that fits (as every
    published AMPLIFY), else the smallest that does."""
    if swiglu_width(4 * config.hidden_size) == config.intermediate_size:
        return 4 * config.hidden_size
    return -(-3 * config.intermediate_size // 2)


def plm_config_to_amplify(config: PLMConfig, tokenizer: PLMTokenizerFast) -> dict[str, Any]:
    """AMPLIFY's config.json for a PLM config; raises listing every knob AMPLIFY cannot express."""
    expected = {
        "norm_scheme": "pre",
        "position_embedding_type": "rotary",
        "rope_theta": 10000.0,
        "head_dim": config.hidden_size // config.num_attention_heads,
        "num_key_value_heads": config.num_attention_heads,
        "qk_norm": False,
        "parallel_residual": False,
        "residual_multiplier": 1.0,
        "lm_head_transform": False,
        "token_dropout": False,
        "attention_dropout": config.hidden_dropout,  # AMPLIFY has one dropout_prob
    }
    problems = knob_problems(config, expected, "AMPLIFY")
    if config.hidden_size % config.num_attention_heads:
        problems.append(f"hidden_size={config.hidden_size} not divisible by num_attention_heads")
    if config.rotary_dim not in (None, config.head_dim):
        problems.append(f"rotary_dim={config.rotary_dim} (AMPLIFY rotates the whole head)")
    if config.attention_scale not in (None, config.head_dim**-0.5):
        problems.append(f"attention_scale={config.attention_scale} (AMPLIFY scales by head_dim ** -0.5)")
    hidden_act = _AMPLIFY_HIDDEN_ACT.get((config.mlp_type, config.hidden_act))
    if hidden_act is None:
        problems.append(
            f"mlp_type={config.mlp_type!r} with hidden_act={config.hidden_act!r} (AMPLIFY: SwiGLU/GELU/ReLU)"
        )
    elif hidden_act == "SwiGLU" and config.intermediate_size % 8:
        problems.append(f"intermediate_size={config.intermediate_size} (AMPLIFY's SwiGLU width is a multiple of 8)")
    if config.pad_token_id is None:
        problems.append("pad_token_id=None (AMPLIFY's embedding has a padding index)")
    if config.contact_head:
        problems.append("contact_head=True (AMPLIFY has no contact head)")
    problems += [f"the tokenizer has no {name}" for name in AMPLIFY_SPECIAL_TOKENS if getattr(tokenizer, name) is None]
    if problems:
        raise ValueError("This model cannot be expressed as AMPLIFY: " + "; ".join(problems))
    ids = {f"{name}_id": tokenizer.convert_tokens_to_ids(getattr(tokenizer, name)) for name in AMPLIFY_SPECIAL_TOKENS}
    return {
        "model_type": "AMPLIFY",
        "architectures": ["AMPLIFY"],
        "auto_map": {"AutoConfig": "amplify.AMPLIFYConfig", "AutoModel": "amplify.AMPLIFY"},
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": amplify_intermediate_size(config) if hidden_act == "SwiGLU" else config.intermediate_size,
        "dropout_prob": config.hidden_dropout,
        "embedding_init_range": config.initializer_range,
        "decoder_init_range": config.initializer_range,
        "rms_norm": config.norm_type == "rmsnorm",
        "norm_eps": config.layer_norm_eps,
        "hidden_act": hidden_act,
        "layer_norm_after_embedding": False,
        "layer_norm_before_last_layer": True,
        "vocab_size": config.vocab_size,
        "ffn_bias": config.mlp_bias,
        "att_bias": config.attention_bias,
        "max_length": config.max_position_embeddings,
        **ids,
        "pad_token_id": config.pad_token_id,
        "torch_dtype": "float32",
    }


def _amplify_tokenizer(vocab: list[str], special: dict[str, str]) -> PLMTokenizerFast:
    backend = build_backend_tokenizer(
        vocab,
        bos_token=special["bos_token"],
        eos_token=special["eos_token"],
        pad_token=special["pad_token"],
        unk_token=special["unk_token"],
        special_tokens=special_tokens_of(vocab),
    )
    return PLMTokenizerFast(tokenizer_object=backend, **special)


def convert_amplify(source: str | Path, destination: str | Path) -> Path:
    """Convert an AMPLIFY checkpoint (a folder laid out like `chandar-lab/AMPLIFY_120M`, or a hub id) into a
    modeling_plm masked-LM checkpoint: safetensors weights, config, remote code and an AMPLIFY-order tokenizer."""
    source = resolve_source(source, patterns=SOURCE_FILES, example="chandar-lab/AMPLIFY_120M")
    amplify = check_model_type(source, AMPLIFY_MODEL_TYPES)
    vocab = read_amplify_vocab(source)
    special = read_amplify_special_tokens(source, vocab, amplify)
    try:
        config = amplify_config_to_plm(amplify, vocab, special)
    except ValueError as error:
        raise ValueError(f"{source / 'config.json'}: {error}") from None
    if len(vocab) != config.vocab_size:
        raise ValueError(
            f"{source}: the tokenizer has {len(vocab)} tokens, config.json's vocab_size is {config.vocab_size}"
        )
    model = PLMForMaskedLM(config)
    try:
        state_dict = amplify_state_dict_to_plm(load_checkpoint_weights(source), config.head_dim)
    except ValueError as error:
        raise ValueError(f"{source}: not an AMPLIFY checkpoint: {error}") from None
    expected = model.state_dict()
    wrong = [
        f"{name} {tuple(t.shape)} != {tuple(expected[name].shape)}"
        for name, t in state_dict.items()
        if name in expected and t.shape != expected[name].shape
    ]
    missing = sorted(set(expected) - set(state_dict))
    if wrong or missing:
        raise ValueError(f"{source}: weights do not fit config.json: shapes {wrong[:4]}, missing {missing[:8]}")
    model.load_state_dict(state_dict, strict=True)
    destination = Path(destination)
    tokenizer = _amplify_tokenizer(vocab, special)
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
    write_conversion_record(destination, family="amplify", source=source)
    return destination


def save_amplify_tokenizer(tokenizer: PLMTokenizerFast, destination: Path) -> None:
    """AMPLIFY's tokenizer files: tokenizer.json (a plain `PreTrainedTokenizerFast`), its config and special-token
    map, and vocab.txt (the GitHub repo's ProteinTokenizer reads that)."""
    vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    (destination / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer.backend_tokenizer.save(str(destination / "tokenizer.json"))
    special = {name: getattr(tokenizer, name) for name in AMPLIFY_SPECIAL_TOKENS}
    (destination / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": tokenizer.model_max_length}
    (destination / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, **special}, indent=2) + "\n")


def convert_plm_to_amplify(source: str | Path, destination: str | Path) -> Path:
    """Convert a modeling_plm checkpoint whose architecture AMPLIFY can express into AMPLIFY's layout (config.json,
    model.safetensors, tokenizer files). AMPLIFY's remote code (amplify.py, rmsnorm.py, rotary.py) is not written:
    copy it from chandar-lab/AMPLIFY_120M to load the folder with transformers' trust_remote_code."""
    source, destination = Path(source), Path(destination)
    check_model_folder(source)
    config = PLMConfig.from_pretrained(source)
    tokenizer = PLMTokenizerFast.from_pretrained(source)
    amplify = plm_config_to_amplify(config, tokenizer)
    state_dict = plm_state_dict_to_amplify(load_checkpoint_weights(source), config)
    destination.mkdir(parents=True, exist_ok=True)
    (destination / "config.json").write_text(json.dumps(amplify, indent=2) + "\n")
    save_file(state_dict, destination / "model.safetensors", metadata={"format": "pt"})
    save_amplify_tokenizer(tokenizer, destination)
    return destination


CONVERTERS = (
    Converter(
        name="amplify",
        convert=convert_amplify,
        help="AMPLIFY checkpoint (folder or hub id, e.g. chandar-lab/AMPLIFY_120M) -> modeling_plm checkpoint",
        source_help="folder with AMPLIFY's config.json, model.safetensors and tokenizer.json (or vocab.txt)",
        destination_help="output folder (safetensors, config, remote code, tokenizer)",
    ),
    Converter(
        name="to-amplify",
        convert=convert_plm_to_amplify,
        help="modeling_plm checkpoint -> AMPLIFY checkpoint (config.json, model.safetensors, tokenizer)",
        source_help="a modeling_plm checkpoint folder whose architecture AMPLIFY can express",
        destination_help="output folder (AMPLIFY's layout; add the hub's amplify.py to load it as remote code)",
    ),
)
