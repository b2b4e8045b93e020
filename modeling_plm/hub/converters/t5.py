"""T5 protein encoders (Ankh, ProtT5): transformers' T5 checkpoints to modeling_plm encoders and back
(`plm convert t5`, aliases `ankh` and `prott5`; `plm convert to-t5`).

The T5 encoder maps onto the PLM backbone with: pre-norm RMSNorm blocks without biases, T5's bidirectional bucketed
relative position bias (one table, learned in block 0 and shared by every layer), unscaled attention scores
(`attention_scale=1.0`), `head_dim = d_kv` and T5's feed-forward: ReLU `wi -> wo` (ProtT5) or gated `wo(act(wi_0) *
wi_1)` (Ankh: gelu_new; Ankh2/3: silu), as `feed_forward_proj` says. Only the encoder is kept: the result is a
`PLMModel` (no LM head, so `plm score` refuses it). An encoder-decoder checkpoint's decoder and LM head are dropped
by rule, and `conversion.json` lists them; any other unknown weight raises.

The tokenizer keeps the source's ids (read from tokenizer.json, or from ProtT5's spiece.model with T5's extra ids
after the pieces, `<extra_id_0>` last): residues lose the sentencepiece "▁" (ProtT5's "▁A" becomes "A", so
sequences are given without spaces), `<extra_id_N>` stay special tokens, ids the tokenizer leaves free become
`<unused_N>`. T5 has no begin-of-sequence token: `</s>` is appended, nothing prepended.
"""

import json
import logging
import re
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import T5Config, T5EncoderModel, T5Tokenizer
from transformers.activations import ACT2FN

from ...configuration_plm import PLMConfig
from ...modeling_plm import PLMModel
from ...tokenization_plm import PLMTokenizerFast, is_special_token
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

logger = logging.getLogger(__name__)

SPIECE_UNDERLINE = "▁"
# The files of a T5 hub repository a conversion reads (ProtT5 ships spiece.model, Ankh tokenizer.json).
SOURCE_FILES = [
    "config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
]
# T5's context when config.json names none (its historical n_positions); relative positions reach beyond it.
DEFAULT_CONTEXT = 512
# The knobs every T5 encoder shares; the rest are read from, or written to, each T5Config.
T5_FIXED_KNOBS = {
    "norm_type": "rmsnorm",
    "norm_scheme": "pre",
    "position_embedding_type": "relative",
    "attention_bias": False,
    "mlp_bias": False,
    "attention_scale": 1.0,
    "qk_norm": False,
    "parallel_residual": False,
    "residual_multiplier": 1.0,
    "token_dropout": False,
}
# Encoder-only: no LM head to tie, transform or bias; no <mask> and no <bos> in T5's vocabularies.
T5_ENCODER_KNOBS = {
    **T5_FIXED_KNOBS,
    "lm_head_transform": False,
    "lm_head_bias": False,
    "tie_word_embeddings": False,
    "mask_token_id": None,
    "bos_token_id": None,
}
# Weights of an encoder-decoder checkpoint that an encoder conversion leaves out, by rule.
_DROPPED = re.compile(r"(decoder\..*|lm_head\.weight)$")
_EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight")
_BLOCK = "encoder.block.{layer}.layer"


def _name_templates(gated: bool) -> list[tuple[str, str]]:
    """(T5 name, PLM name) pairs of the encoder; the feed-forward names depend on `feed_forward_proj`."""
    up = [(f"{_BLOCK}.1.DenseReluDense.wi_0.weight", "layers.{layer}.mlp.gate_proj.weight")] if gated else []
    up.append((f"{_BLOCK}.1.DenseReluDense.{'wi_1' if gated else 'wi'}.weight", "layers.{layer}.mlp.up_proj.weight"))
    return [
        ("shared.weight", "embeddings.word_embeddings.weight"),
        ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "relative_attention_bias.weight"),
        *[(f"{_BLOCK}.0.SelfAttention.{t5}.weight", f"layers.{{layer}}.self_attn.{t5}_proj.weight") for t5 in "qkvo"],
        (f"{_BLOCK}.0.layer_norm.weight", "layers.{layer}.attention_norm.weight"),
        *up,
        (f"{_BLOCK}.1.DenseReluDense.wo.weight", "layers.{layer}.mlp.down_proj.weight"),
        (f"{_BLOCK}.1.layer_norm.weight", "layers.{layer}.mlp_norm.weight"),
        ("encoder.final_layer_norm.weight", "norm.weight"),
    ]


def _table(gated: bool, reverse: bool = False) -> list[tuple[re.Pattern, str]]:
    pairs = _name_templates(gated)
    return [(compile_name_template(b if reverse else a), a if reverse else b) for a, b in pairs]


def t5_state_dict_to_plm(state_dict: dict[str, torch.Tensor], gated: bool) -> tuple[dict[str, torch.Tensor], list]:
    """Rename T5 encoder weights to PLMModel names; returns them and the decoder/LM-head names left out. Unknown
    weights raise: nothing else is dropped."""
    state_dict = dict(state_dict)
    embeddings = [state_dict.pop(name) for name in _EMBEDDING_NAMES if name in state_dict]
    if len(embeddings) == 2 and not torch.equal(*embeddings):
        raise ValueError("shared.weight and encoder.embed_tokens.weight differ: an untied T5 encoder embedding")
    if embeddings:
        state_dict["shared.weight"] = embeddings[0]
    converted, dropped, unknown = {}, [], []
    table = _table(gated)
    for name, tensor in state_dict.items():
        target = rename(name, table)
        if target is not None:
            converted[target] = tensor
        elif _DROPPED.match(name):
            dropped.append(name)
        else:
            unknown.append(name)
    if unknown:
        kind = "gated (wi_0, wi_1, wo)" if gated else "ReLU (wi, wo)"
        raise ValueError(f"Not a T5 encoder with a {kind} feed-forward: unexpected weights {unknown[:8]}")
    return converted, sorted(dropped)


def plm_state_dict_to_t5(state_dict: dict[str, torch.Tensor], gated: bool) -> dict[str, torch.Tensor]:
    """PLMModel weights (optionally under `model.`) to T5EncoderModel names; anything T5 lacks raises."""
    converted, table = {}, _table(gated, reverse=True)
    for name, tensor in state_dict.items():
        target = rename(name.removeprefix("model."), table)
        if target is None:
            raise ValueError(f"Weight {name!r} has no T5 encoder counterpart (T5EncoderModel has no LM or task head)")
        converted[target] = tensor
    return converted


def t5_config_to_plm(t5: T5Config) -> PLMConfig:
    """The PLMConfig of a T5 encoder; raises naming what is not a T5 encoder."""
    problems = []
    if getattr(t5, "is_decoder", False):
        problems.append("is_decoder=True (a T5 decoder)")
    if t5.dense_act_fn not in ACT2FN:
        problems.append(f"feed_forward_proj={t5.feed_forward_proj!r} (unknown activation {t5.dense_act_fn!r})")
    if problems:
        raise ValueError("Not a T5 encoder checkpoint: " + "; ".join(problems))
    return PLMConfig(
        **T5_ENCODER_KNOBS,
        vocab_size=t5.vocab_size,
        hidden_size=t5.d_model,
        num_hidden_layers=t5.num_layers,
        num_attention_heads=t5.num_heads,
        head_dim=t5.d_kv,  # T5 sizes heads on their own, not as d_model / num_heads
        intermediate_size=t5.d_ff,
        mlp_type="glu" if t5.is_gated_act else "mlp",
        hidden_act=t5.dense_act_fn,
        layer_norm_eps=t5.layer_norm_epsilon,
        relative_attention_num_buckets=t5.relative_attention_num_buckets,
        relative_attention_max_distance=t5.relative_attention_max_distance,
        max_position_embeddings=getattr(t5, "n_positions", None) or DEFAULT_CONTEXT,
        pad_token_id=t5.pad_token_id,
        eos_token_id=t5.eos_token_id,
        attention_dropout=t5.dropout_rate,
        hidden_dropout=t5.dropout_rate,
    )


def _feed_forward_proj(config: PLMConfig) -> str | None:
    """T5's name of the PLM feed-forward; None where T5 would read it as another activation."""
    act = config.hidden_act
    if config.mlp_type == "mlp":
        return act if "-" not in act else None
    if act == "gelu_new":
        return "gated-gelu"  # T5 spells its tanh-GELU gate "gated-gelu"
    return None if act == "gelu" or "-" in act else f"gated-{act}"


def plm_config_to_t5(config: PLMConfig) -> T5Config:
    """The T5Config of a PLM encoder; raises listing every knob T5 cannot express."""
    expected = {**T5_FIXED_KNOBS, "num_key_value_heads": config.num_attention_heads}
    problems = knob_problems(config, expected, "T5")
    feed_forward_proj = _feed_forward_proj(config)
    if feed_forward_proj is None:
        problems.append(f"hidden_act={config.hidden_act!r} with mlp_type={config.mlp_type!r} (no T5 feed_forward_proj)")
    if config.attention_dropout != config.hidden_dropout:
        problems.append(f"attention_dropout={config.attention_dropout} != hidden_dropout (T5 has one dropout_rate)")
    if config.bos_token_id is not None:
        problems.append(f"bos_token_id={config.bos_token_id} (T5 prepends no token)")
    if problems:
        raise ValueError("This model cannot be expressed as a T5 encoder: " + "; ".join(problems))
    return T5Config(
        vocab_size=config.vocab_size,
        d_model=config.hidden_size,
        d_kv=config.head_dim,
        d_ff=config.intermediate_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance,
        dropout_rate=config.hidden_dropout,
        layer_norm_epsilon=config.layer_norm_eps,
        feed_forward_proj=feed_forward_proj,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        n_positions=config.max_position_embeddings,
        tie_word_embeddings=False,
    )


def _sentencepiece_ids(folder: Path) -> dict[str, int]:
    """Token ids of a slow T5 tokenizer: spiece.model's pieces in order, then T5's `extra_ids` sentinels in reverse
    (`<extra_id_0>` gets the last id), as transformers' T5Tokenizer numbers them."""
    from transformers.convert_slow_tokenizer import import_protobuf  # protobuf only, no sentencepiece needed

    model = import_protobuf().ModelProto()
    model.ParseFromString((folder / "spiece.model").read_bytes())
    ids = {piece.piece: index for index, piece in enumerate(model.pieces)}
    settings = folder / "tokenizer_config.json"
    extra_ids = json.loads(settings.read_text()).get("extra_ids", 100) if settings.exists() else 100
    ids.update({f"<extra_id_{i}>": len(model.pieces) + extra_ids - 1 - i for i in range(extra_ids)})
    return ids


def read_t5_token_ids(folder: Path) -> dict[str, int]:
    """The source tokenizer's token -> id map (added tokens included)."""
    if (folder / "tokenizer.json").exists():
        return Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(with_added_tokens=True)
    if (folder / "spiece.model").exists():
        return _sentencepiece_ids(folder)
    raise FileNotFoundError(f"{folder}: no tokenizer.json or spiece.model; the T5 tokenizer defines the token ids")


def _plm_token(token: str, index: int) -> str:
    """Our spelling of a T5 token: specials as they are, residues without the sentencepiece word-start mark."""
    if is_special_token(token):
        return token
    residue = token.removeprefix(SPIECE_UNDERLINE)
    if len(residue) != 1 or residue.isspace():
        raise ValueError(f"token {token!r} (id {index}) is neither one residue nor a <...> special token")
    return residue


def t5_vocab_to_plm(token_ids: dict[str, int], vocab_size: int) -> list[str]:
    """Our vocabulary in the source's id order, `<unused_N>` where the source has no token."""
    vocab: list[str | None] = [None] * vocab_size
    for token, index in sorted(token_ids.items(), key=lambda item: item[1]):
        if index >= vocab_size:
            raise ValueError(f"token {token!r} has id {index}, beyond config.json's vocab_size {vocab_size}")
        vocab[index] = _plm_token(token, index)
    vocab = [token if token is not None else f"<unused_{index}>" for index, token in enumerate(vocab)]
    seen: dict[str, int] = {}
    for index, token in enumerate(vocab):
        if token in seen:
            raise ValueError(f"tokens {seen[token]} and {index} both become {token!r} (with and without '▁')")
        seen[token] = index
    return vocab


def _plm_tokenizer(vocab: list[str], config: PLMConfig, source: Path) -> PLMTokenizerFast:
    named = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    for name, token in named.items():
        if token not in vocab:
            raise ValueError(f"{source}: the tokenizer has no {token} ({name})")
    for name in ("pad_token", "eos_token"):
        if vocab.index(named[name]) != getattr(config, f"{name}_id"):
            raise ValueError(f"{source}: {named[name]} has id {vocab.index(named[name])}, config.json says otherwise")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = PLMTokenizerFast(
            vocab_file=str(Path(folder) / "vocab.txt"), bos_token=None, mask_token=None, **named
        )
    tokenizer.model_max_length = config.max_position_embeddings
    return tokenizer


def _record_dropped(destination: Path, dropped: list[str]) -> None:
    """Name, in conversion.json, the decoder / LM-head weights an encoder conversion left out."""
    if not dropped:
        return
    path = destination / "conversion.json"
    record = json.loads(path.read_text())
    decoder = sum(name.startswith("decoder.") for name in dropped)
    record["dropped"] = ([f"decoder.* ({decoder} tensors)"] if decoder else []) + [
        name for name in dropped if not name.startswith("decoder.")
    ]
    path.write_text(json.dumps(record, indent=2) + "\n")


def convert_t5(source: str | Path, destination: str | Path) -> Path:
    """Convert a T5 protein encoder (a folder laid out like `ElnaggarLab/ankh-base` or `Rostlab/prot_t5_xl_uniref50`,
    or a hub id when online; encoder-only or encoder-decoder) into a modeling_plm `PLMModel` checkpoint: safetensors
    weights (float32), config, remote code and a tokenizer with the source's ids."""
    source = resolve_source(source, patterns=SOURCE_FILES, example="Rostlab/prot_t5_xl_half_uniref50-enc")
    check_model_type(source, ("t5",))
    t5_config = T5Config.from_pretrained(source)
    config = t5_config_to_plm(t5_config)
    try:
        vocab = t5_vocab_to_plm(read_t5_token_ids(source), config.vocab_size)
    except ValueError as error:
        raise ValueError(f"{source}: not a residue-level T5 tokenizer: {error}") from None
    tokenizer = _plm_tokenizer(vocab, config, source)
    model = PLMModel(config)
    state_dict, dropped = t5_state_dict_to_plm(load_checkpoint_weights(source), gated=t5_config.is_gated_act)
    expected = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)}" for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{source}: weights whose shapes config.json contradicts: {wrong[:4]}")
    load_weights_into(model, state_dict)
    if dropped:
        logger.warning("%s: encoder conversion leaves out %d decoder / LM-head weights", source, len(dropped))
    destination = Path(destination)
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
    write_conversion_record(destination, family="t5", source=source)
    _record_dropped(destination, dropped)
    return destination


def _t5_tokenizer(tokenizer: PLMTokenizerFast) -> T5Tokenizer:
    """A transformers T5 tokenizer with our ids; residues become "▁A"-style pieces (ProtT5's spelling: give it
    space-separated residues)."""
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    specials = [token for token, _ in by_id if is_special_token(token)]
    pieces = [(token, 0.0) if token in specials else (SPIECE_UNDERLINE + token, -1.0) for token, _ in by_id]
    if [token for token, _ in pieces[:3]] != ["<pad>", "</s>", "<unk>"]:
        raise ValueError("T5 tokenizers need <pad>, </s>, <unk> at ids 0, 1, 2")
    extras = [token for token in specials if token not in ("<pad>", "</s>", "<unk>")]
    return T5Tokenizer(vocab=pieces, extra_ids=0, additional_special_tokens=extras)


def convert_plm_to_t5(source: str | Path, destination: str | Path) -> Path:
    """Convert a modeling_plm encoder whose config T5 can express into a transformers `T5EncoderModel`
    checkpoint (with a T5 tokenizer of the same ids)."""
    source, destination = Path(source), Path(destination)
    check_model_folder(source)
    config = PLMConfig.from_pretrained(source)
    t5_config = plm_config_to_t5(config)
    state_dict = plm_state_dict_to_t5(load_checkpoint_weights(source), gated=t5_config.is_gated_act)
    model = T5EncoderModel(t5_config)
    load_weights_into(model, state_dict, may_miss={"encoder.embed_tokens.weight"})  # tied to shared.weight
    model.save_pretrained(destination)
    _t5_tokenizer(PLMTokenizerFast.from_pretrained(source)).save_pretrained(destination)
    return destination


# PLMConfig kwargs of the published sizes. Ankh base and ProtT5-XL are read from their config.json; Ankh large from
# FastPLMs' table (1536 wide, 48 layers, 16 heads, gelu_new) and Ankh2-large's config.json (d_kv 64, d_ff 3840,
# 64 buckets), which its 1.15B encoder parameters confirm. Ankh names no context: T5's 512 stands in.
_ANKH = {**T5_ENCODER_KNOBS, "mlp_type": "glu", "hidden_act": "gelu_new", "layer_norm_eps": 1e-6, "vocab_size": 144}
_ANKH_SHAPE = {"num_hidden_layers": 48, "head_dim": 64, "relative_attention_num_buckets": 64}
T5_PRESETS: dict[str, dict] = {
    "ankh_base": {
        **_ANKH,
        **_ANKH_SHAPE,
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": DEFAULT_CONTEXT,
        "relative_attention_max_distance": 128,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "attention_dropout": 0.0,
        "hidden_dropout": 0.0,
    },
    "ankh_large": {
        **_ANKH,
        **_ANKH_SHAPE,
        "hidden_size": 1536,
        "num_attention_heads": 16,
        "intermediate_size": 3840,
        "max_position_embeddings": DEFAULT_CONTEXT,
        "relative_attention_max_distance": 128,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "attention_dropout": 0.0,
        "hidden_dropout": 0.0,
    },
    "prott5_xl": {
        **T5_ENCODER_KNOBS,
        "mlp_type": "mlp",
        "hidden_act": "relu",
        "layer_norm_eps": 1e-6,
        "vocab_size": 128,
        "num_hidden_layers": 24,
        "hidden_size": 1024,
        "num_attention_heads": 32,
        "head_dim": 128,
        "intermediate_size": 16384,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "max_position_embeddings": 512,  # n_positions of its config.json
        "pad_token_id": 0,
        "eos_token_id": 1,
        "attention_dropout": 0.1,
        "hidden_dropout": 0.1,
    },
}

_T5_HELP = dict(
    convert=convert_t5,
    source_help="folder (or hub id) with config.json, model.safetensors or pytorch_model.bin, and tokenizer.json "
    "or spiece.model",
    destination_help="output folder (PLMModel safetensors, config, remote code, tokenizer)",
)
CONVERTERS = (
    Converter(name="t5", help="T5 protein encoder (Ankh, ProtT5) -> modeling_plm encoder (PLMModel)", **_T5_HELP),
    Converter(name="ankh", help="Ankh (T5) checkpoint -> modeling_plm encoder; the same as `t5`", **_T5_HELP),
    Converter(name="prott5", help="ProtT5 checkpoint -> modeling_plm encoder; the same as `t5`", **_T5_HELP),
    Converter(
        name="to-t5",
        convert=convert_plm_to_t5,
        help="modeling_plm encoder -> transformers T5EncoderModel checkpoint",
        source_help="a modeling_plm encoder checkpoint folder whose architecture T5 can express",
        destination_help="output folder (T5EncoderModel safetensors, config, T5 tokenizer)",
    ),
)
