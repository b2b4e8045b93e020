"""ESM C: transformers' `EsmcForMaskedLM` checkpoints (`biohub/ESMC-300M`, `-600M`, `-6B`) to modeling_plm
checkpoints and back (`plm convert esmc`, `plm convert to-esmc`).

ESM C maps onto the PLM backbone with: pre-LN LayerNorm blocks, bias-free SwiGLU MLP and attention projections,
rotary positions, a LayerNorm over the full query and key widths (`qk_norm`), every residual branch scaled by
(N / 36)^-0.5 (`residual_multiplier`), a final LayerNorm without bias (ours gets a zero bias), and an untied LM head
dense -> erf GELU -> LayerNorm -> decoder + bias. The tokenizer keeps ESM C's 64 ids (33 named tokens, then unused).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import transformers

from ...configuration_plm import PLMConfig
from ...modeling_plm import PLMForMaskedLM
from ...tokenization_plm import PLMTokenizerFast
from ..loading import check_model_folder, check_model_type
from .common import (
    Converter,
    compile_name_template,
    knob_problems,
    load_checkpoint_weights,
    load_weights_into,
    rename,
    resolve_source,
    write_conversion_record,
)

if TYPE_CHECKING:
    from transformers import EsmcConfig


def esmc_classes() -> tuple[type, type, type]:
    """transformers' EsmcConfig, EsmcForMaskedLM and EsmcTokenizer: new in transformers 5.24, so imported on use
    (the package supports older transformers for every other family)."""
    try:
        from transformers import EsmcConfig, EsmcForMaskedLM, EsmcTokenizer
    except ImportError:
        raise ImportError(
            f"ESM C conversion needs transformers >= 5.24 (its ESM C classes); this is {transformers.__version__}. "
            "pip install -U transformers"
        ) from None
    return EsmcConfig, EsmcForMaskedLM, EsmcTokenizer


# EsmcForMaskedLM parameter names and their PLM names.
_NAME_TEMPLATES = [
    ("esmc.embed_tokens.weight", "model.embeddings.word_embeddings.weight"),
    ("esmc.layers.{layer}.self_attn.q_proj.{param}", "model.layers.{layer}.self_attn.q_proj.{param}"),
    ("esmc.layers.{layer}.self_attn.k_proj.{param}", "model.layers.{layer}.self_attn.k_proj.{param}"),
    ("esmc.layers.{layer}.self_attn.v_proj.{param}", "model.layers.{layer}.self_attn.v_proj.{param}"),
    ("esmc.layers.{layer}.self_attn.o_proj.{param}", "model.layers.{layer}.self_attn.o_proj.{param}"),
    ("esmc.layers.{layer}.self_attn.q_norm.weight", "model.layers.{layer}.self_attn.q_norm.weight"),
    ("esmc.layers.{layer}.self_attn.k_norm.weight", "model.layers.{layer}.self_attn.k_norm.weight"),
    ("esmc.layers.{layer}.mlp.gate_proj.{param}", "model.layers.{layer}.mlp.gate_proj.{param}"),
    ("esmc.layers.{layer}.mlp.up_proj.{param}", "model.layers.{layer}.mlp.up_proj.{param}"),
    ("esmc.layers.{layer}.mlp.down_proj.{param}", "model.layers.{layer}.mlp.down_proj.{param}"),
    ("esmc.layers.{layer}.input_layernorm.{param}", "model.layers.{layer}.attention_norm.{param}"),
    ("esmc.layers.{layer}.post_attention_layernorm.{param}", "model.layers.{layer}.mlp_norm.{param}"),
    ("esmc.norm.weight", "model.norm.weight"),
    ("lm_head.dense.{param}", "lm_head.dense.{param}"),
    ("lm_head.layer_norm.{param}", "lm_head.norm.{param}"),
    ("lm_head.decoder.weight", "lm_head.decoder.weight"),
    ("lm_head.decoder.bias", "lm_head.bias"),
]
_ESMC_TO_PLM = [(compile_name_template(esmc), plm) for esmc, plm in _NAME_TEMPLATES]
_PLM_TO_ESMC = [(compile_name_template(plm), esmc) for esmc, plm in _NAME_TEMPLATES]
# The final norm has no bias in ESM C; ours is a LayerNorm with a bias that stays zero.
_ZERO_BIASES = ("model.norm.bias",)
# Rotary frequencies: recomputed by both models, never stored by transformers but tolerated if present.
_ESMC_BUFFERS = ("esmc.rotary_emb.inv_freq", "esmc.rotary_emb.original_inv_freq")

# ESM C's 33 named tokens in id order (transformers' EsmcTokenizer); ids 33..63 of the 64-row embedding are unused.
ESMC_TOKENS = "<cls> <pad> <eos> <unk> L A G V S E R T I D P K Q N F Y M H W C X B U Z O . - | <mask>".split()
ESMC_VOCAB_SIZE = 64
# Epsilon of every ESM C LayerNorm (torch's default; EsmcConfig has no field for it).
ESMC_LAYER_NORM_EPS = 1e-5
# The files of an ESM C hub repository a conversion reads.
SOURCE_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
]

# The architecture every ESM C shares, as PLMConfig knobs.
ESMC_ARCHITECTURE = {
    "mlp_type": "glu",
    "hidden_act": "silu",
    "norm_type": "layernorm",
    "norm_scheme": "pre",
    "layer_norm_eps": ESMC_LAYER_NORM_EPS,
    "position_embedding_type": "rotary",
    "rope_theta": 10000.0,
    "attention_bias": False,
    "mlp_bias": False,
    "qk_norm": True,
    "lm_head_transform": True,
    "lm_head_hidden_act": "gelu",
    "lm_head_bias": True,
    "tie_word_embeddings": False,
    "token_dropout": False,
    "vocab_size": ESMC_VOCAB_SIZE,
    "max_position_embeddings": 2048,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "mask_token_id": 32,
    "classifier_dropout": 0.1,
}


def esmc_intermediate_size(hidden_size: int) -> int:
    """ESM C's SwiGLU width: 8/3 of the model width, rounded up to a multiple of 256 (2560, 3072, 6912)."""
    return int((8 * hidden_size / 3 + 255) // 256 * 256)


def esmc_residual_multiplier(num_hidden_layers: int) -> float:
    """ESM C divides every residual branch by sqrt(N / 36)."""
    return 1.0 / math.sqrt(num_hidden_layers / 36)


def _esmc_preset(layers: int, hidden: int, heads: int) -> dict:
    return {
        **ESMC_ARCHITECTURE,
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "intermediate_size": esmc_intermediate_size(hidden),
        "residual_multiplier": esmc_residual_multiplier(layers),
    }


# Published sizes (Biohub's ESMC_300M/600M constructors, the EsmcConfig defaults for 6B); see the module tests.
ESMC_PRESETS: dict[str, dict] = {
    "esmc_300m": _esmc_preset(30, 960, 15),
    "esmc_600m": _esmc_preset(36, 1152, 18),
    "esmc_6b": _esmc_preset(80, 2560, 40),
}


def esmc_vocab(vocab_size: int = ESMC_VOCAB_SIZE) -> list[str]:
    """ESM C's vocabulary in id order, unused ids named `<unused_ID>` so that it has `vocab_size` rows."""
    if vocab_size < len(ESMC_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} is smaller than ESM C's {len(ESMC_TOKENS)} named tokens")
    return [*ESMC_TOKENS, *(f"<unused_{index}>" for index in range(len(ESMC_TOKENS), vocab_size))]


def build_esmc_tokenizer(folder: Path, vocab_size: int) -> PLMTokenizerFast:
    """A PLM tokenizer with ESM C's ids; `folder` receives its vocab.txt."""
    (folder / "vocab.txt").write_text("\n".join(esmc_vocab(vocab_size)) + "\n")
    return PLMTokenizerFast(vocab_file=str(folder / "vocab.txt"), bos_token="<cls>", eos_token="<eos>")


def check_source_tokenizer(source: Path) -> None:
    """A source tokenizer.json, when present, must give ESM C's ids (EsmcTokenizer hard-codes them)."""
    path = source / "tokenizer.json"
    if not path.is_file():
        return
    data = json.loads(path.read_text())
    vocab = dict(data.get("model", {}).get("vocab") or {})
    vocab.update({token["content"]: token["id"] for token in data.get("added_tokens", [])})
    wrong = [f"{token!r}={vocab.get(token)}" for index, token in enumerate(ESMC_TOKENS) if vocab.get(token) != index]
    if wrong:
        raise ValueError(f"{path}: not ESM C's vocabulary (ids differ: {', '.join(wrong[:8])})")


def esmc_state_dict_to_plm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ESM C weights to PLM names and add the zero final-norm bias. Unknown weights raise."""
    converted, unknown = {}, []
    for name, tensor in state_dict.items():
        if name in _ESMC_BUFFERS:
            continue
        target = rename(name, _ESMC_TO_PLM)
        if target is None:
            unknown.append(name)
        else:
            converted[target] = tensor
    if unknown:
        raise ValueError(f"Not an ESM C masked-LM checkpoint: unexpected weights {unknown[:8]}")
    if "lm_head.decoder.weight" not in converted:
        raise ValueError("Not an ESM C masked-LM checkpoint: no lm_head weights (an EsmcModel checkpoint?)")
    for name in _ZERO_BIASES:
        weight = converted.get(name.replace(".bias", ".weight"))
        if weight is not None:  # a missing weight is reported by the load that follows
            converted[name] = torch.zeros_like(weight)
    return converted


def plm_state_dict_to_esmc(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PLM weights under ESM C names; a bias ESM C lacks must be zero, anything without a counterpart raises."""
    converted = {}
    for name, tensor in state_dict.items():
        if name in _ZERO_BIASES:
            if torch.count_nonzero(tensor):
                raise ValueError(f"{name} is not zero: ESM C's final LayerNorm has no bias")
            continue
        target = rename(name, _PLM_TO_ESMC)
        if target is None:
            raise ValueError(f"Weight {name!r} has no ESM C counterpart")
        converted[target] = tensor
    if "lm_head.decoder.weight" not in converted:  # tied in PLM: ESM C's decoder is always a weight of its own
        converted["lm_head.decoder.weight"] = converted["esmc.embed_tokens.weight"].clone()
    return converted


def _check_esmc_config(esmc: EsmcConfig) -> None:
    problems = []
    rope = esmc.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type={rope.get('rope_type')!r} (only plain RoPE is supported)")
    if esmc.num_key_value_heads != esmc.num_attention_heads:
        problems.append(f"num_key_value_heads={esmc.num_key_value_heads} (ESM C has no grouped-query attention)")
    if esmc.head_dim * esmc.num_attention_heads != esmc.hidden_size:
        problems.append(f"head_dim={esmc.head_dim} (its q/k LayerNorms need heads * head_dim == hidden_size)")
    if problems:
        raise ValueError("Not a convertible ESM C checkpoint: " + "; ".join(problems))


def esmc_config_to_plm(esmc: EsmcConfig) -> PLMConfig:
    """The PLMConfig of an EsmcConfig: ESM C's fixed architecture, with the fields every EsmcConfig carries."""
    _check_esmc_config(esmc)
    read = {
        key: getattr(esmc, key)
        for key in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "hidden_act",
            "attention_bias",
            "mlp_bias",
            "max_position_embeddings",
            "pad_token_id",
            "bos_token_id",
            "eos_token_id",
            "mask_token_id",
            "attention_dropout",
            "classifier_dropout",
            "initializer_range",
        )
    }
    read["rope_theta"] = (esmc.rope_parameters or {}).get("rope_theta", 10000.0)
    read["residual_multiplier"] = esmc_residual_multiplier(esmc.num_hidden_layers)
    return PLMConfig(**{**ESMC_ARCHITECTURE, **read})


def _esmc_config_problems(config: PLMConfig) -> list[str]:
    """Every knob of `config` ESM C cannot express."""
    fixed = ("mlp_type", "norm_type", "norm_scheme", "position_embedding_type", "qk_norm", "lm_head_transform")
    expected = {key: ESMC_ARCHITECTURE[key] for key in (*fixed, "lm_head_bias", "token_dropout", "layer_norm_eps")}
    expected.update(
        num_key_value_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        parallel_residual=False,
        attention_scale=None,
        hidden_dropout=0.0,
        contact_head=False,
        pad_token_id=ESMC_ARCHITECTURE["pad_token_id"],
        bos_token_id=ESMC_ARCHITECTURE["bos_token_id"],
        eos_token_id=ESMC_ARCHITECTURE["eos_token_id"],
        mask_token_id=ESMC_ARCHITECTURE["mask_token_id"],
    )
    problems = knob_problems(config, expected, "ESM C")
    if config.rotary_dim not in (None, config.head_dim):
        problems.append(f"rotary_dim={config.rotary_dim!r} (ESM C rotates the whole head)")
    if (config.lm_head_hidden_act or config.hidden_act) not in ("gelu", "gelu_python"):
        problems.append(f"lm_head_hidden_act={config.lm_head_hidden_act!r} (ESM C's head uses the erf GELU)")
    wanted = esmc_residual_multiplier(config.num_hidden_layers)
    if not math.isclose(config.residual_multiplier, wanted, rel_tol=1e-12):
        problems.append(f"residual_multiplier={config.residual_multiplier!r} (ESM C needs {wanted!r} for N layers)")
    if config.vocab_size < len(ESMC_TOKENS):
        problems.append(f"vocab_size={config.vocab_size} (ESM C has {len(ESMC_TOKENS)} named tokens)")
    return problems


def plm_config_to_esmc(config: PLMConfig) -> EsmcConfig:
    """The EsmcConfig of a PLM config; raises listing every knob ESM C cannot express."""
    problems = _esmc_config_problems(config)
    if problems:
        raise ValueError("This model cannot be expressed as ESM C: " + "; ".join(problems))
    return esmc_classes()[0](
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        head_dim=config.head_dim,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        mask_token_id=config.mask_token_id,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        attention_bias=config.attention_bias,
        attention_dropout=config.attention_dropout,
        mlp_bias=config.mlp_bias,
        classifier_dropout=config.classifier_dropout,
    )


def _check_tokenizer_is_esmc(tokenizer: PLMTokenizerFast, source: Path) -> None:
    vocab = tokenizer.get_vocab()
    wrong = [token for index, token in enumerate(ESMC_TOKENS) if vocab.get(token) != index]
    if wrong:
        raise ValueError(f"{source}: the tokenizer does not have ESM C's ids (differing: {wrong[:8]})")


def _check_legacy_config(source: Path) -> None:
    config = json.loads((source / "config.json").read_text())
    if "hidden_size" not in config and {"d_model", "n_layers", "n_heads"} <= config.keys():
        raise ValueError(
            f"{source / 'config.json'}: an `esm`-package ESM C config (d_model/n_layers/n_heads), not transformers' "
            "EsmcConfig; download the current revision of the hub repository (biohub/ESMC-*)"
        )


def _source_dtype(state_dict: dict[str, torch.Tensor]) -> torch.dtype:
    """The checkpoint's floating dtype when it has one (bf16 weights stay bf16), else float32."""
    dtypes = {tensor.dtype for tensor in state_dict.values() if tensor.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def convert_esmc(source: str | Path, destination: str | Path) -> Path:
    """Convert an ESM C checkpoint (an `EsmcForMaskedLM` folder, or a hub id such as `biohub/ESMC-300M`) into a
    modeling_plm checkpoint: safetensors weights, config, remote code and a tokenizer with ESM C's ids."""
    source = resolve_source(source, patterns=SOURCE_FILES, example="biohub/ESMC-300M")
    check_model_type(source, ("esmc",))
    _check_legacy_config(source)
    check_source_tokenizer(source)
    config = esmc_config_to_plm(esmc_classes()[0].from_pretrained(source))
    weights = load_checkpoint_weights(source)
    state_dict = esmc_state_dict_to_plm(weights)
    model = PLMForMaskedLM(config)
    expected = model.state_dict()
    wrong_shapes = [
        f"{name} {tuple(tensor.shape)} (config.json implies {tuple(expected[name].shape)})"
        for name, tensor in state_dict.items()
        if name in expected and tensor.shape != expected[name].shape
    ]
    if wrong_shapes:
        raise ValueError(f"{source}: weights do not fit config.json: {wrong_shapes[:4]}")
    load_weights_into(model, state_dict)
    model.to(_source_dtype(weights))
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(destination)
    tokenizer = build_esmc_tokenizer(destination, config.vocab_size)
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(destination)
    write_conversion_record(destination, family="esmc", source=source)
    return destination


def convert_plm_to_esmc(source: str | Path, destination: str | Path) -> Path:
    """Convert a modeling_plm checkpoint whose config ESM C can express into a transformers `EsmcForMaskedLM`."""
    source, destination = Path(source), Path(destination)
    check_model_folder(source)
    config = PLMConfig.from_pretrained(source)
    esmc_config = plm_config_to_esmc(config)
    _check_tokenizer_is_esmc(PLMTokenizerFast.from_pretrained(source), source)
    weights = load_checkpoint_weights(source)
    state_dict = plm_state_dict_to_esmc(weights)
    model = esmc_classes()[1](esmc_config)
    load_weights_into(model, state_dict)
    model.to(_source_dtype(weights))
    model.save_pretrained(destination)
    esmc_classes()[2]().save_pretrained(destination)
    return destination


CONVERTERS = (
    Converter(
        name="esmc",
        convert=convert_esmc,
        help="ESM C checkpoint (EsmcForMaskedLM folder or hub id, e.g. biohub/ESMC-300M) -> modeling_plm checkpoint",
        source_help="folder with config.json (model_type esmc) and model.safetensors, or a hub id",
        destination_help="output folder (safetensors, config, remote code, tokenizer with ESM C's ids)",
    ),
    Converter(
        name="to-esmc",
        convert=convert_plm_to_esmc,
        help="modeling_plm checkpoint -> transformers ESM C checkpoint (EsmcForMaskedLM)",
        source_help="a modeling_plm checkpoint folder whose architecture ESM C can express",
        destination_help="output folder (EsmcForMaskedLM safetensors, config, EsmcTokenizer files)",
    ),
)
