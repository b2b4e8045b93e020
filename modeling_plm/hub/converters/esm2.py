"""ESM-2: transformers' `EsmForMaskedLM` checkpoints to modeling_plm checkpoints and back (`plm convert esm2`,
`plm convert to-esm2`).

ESM-2 maps onto the PLM backbone with: pre-LN LayerNorm blocks, erf-GELU MLP, biases everywhere, rotary positions,
ESM's LM head (dense -> gelu -> LayerNorm -> tied decoder + bias), token dropout, and the contact head. The
tokenizer keeps ESM's vocabulary order, so token ids are identical.
"""

import re
from pathlib import Path

import torch
from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

from ...configuration_plm import PLMConfig
from ...modeling_plm import PLMForMaskedLM
from ...tokenization_plm import PLMTokenizerFast, read_vocab_file
from ...training.presets import ESM2_ARCHITECTURE
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

# ESM parameter names (without the "esm." prefix of EsmForMaskedLM) and their PLM names.
_NAME_TEMPLATES = [
    ("embeddings.word_embeddings.weight", "model.embeddings.word_embeddings.weight"),
    ("encoder.layer.{layer}.attention.self.query.{param}", "model.layers.{layer}.self_attn.q_proj.{param}"),
    ("encoder.layer.{layer}.attention.self.key.{param}", "model.layers.{layer}.self_attn.k_proj.{param}"),
    ("encoder.layer.{layer}.attention.self.value.{param}", "model.layers.{layer}.self_attn.v_proj.{param}"),
    ("encoder.layer.{layer}.attention.output.dense.{param}", "model.layers.{layer}.self_attn.o_proj.{param}"),
    ("encoder.layer.{layer}.attention.LayerNorm.{param}", "model.layers.{layer}.attention_norm.{param}"),
    ("encoder.layer.{layer}.intermediate.dense.{param}", "model.layers.{layer}.mlp.up_proj.{param}"),
    ("encoder.layer.{layer}.output.dense.{param}", "model.layers.{layer}.mlp.down_proj.{param}"),
    ("encoder.layer.{layer}.LayerNorm.{param}", "model.layers.{layer}.mlp_norm.{param}"),
    ("encoder.emb_layer_norm_after.{param}", "model.norm.{param}"),
    ("contact_head.regression.{param}", "contact_head.regression.{param}"),
    ("lm_head.dense.{param}", "lm_head.dense.{param}"),
    ("lm_head.layer_norm.{param}", "lm_head.norm.{param}"),
    ("lm_head.decoder.weight", "lm_head.decoder.weight"),
    ("lm_head.bias", "lm_head.bias"),
]
# ESM-2's vocabulary, in id order (its vocab.txt).
ESM2_VOCAB = "<cls> <pad> <eos> <unk> L A G V S E R T I D P K Q N F Y M H W C X B U Z O . - <null_1> <mask>".split()
# The architecture knobs every ESM-2 shares (the rest are read from, or written to, each EsmConfig).
ESM2_FIXED_KNOBS = {
    key: value
    for key, value in ESM2_ARCHITECTURE.items()
    if key not in ("hidden_act", "token_dropout", "max_position_embeddings")
}
# The files of an ESM-2 hub repository a conversion reads.
SOURCE_FILES = ["config.json", "vocab.txt", "*.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
# Buffers ESM checkpoints may carry that PLM recomputes (rotary frequencies, position ranges).
_ESM_IGNORED = re.compile(r"(.*rotary_embeddings\.inv_freq|.*position_ids)$")
_ESM_TO_PLM = [(compile_name_template(esm), plm) for esm, plm in _NAME_TEMPLATES]
_PLM_TO_ESM = [(compile_name_template(plm), esm) for esm, plm in _NAME_TEMPLATES]


def esm_state_dict_to_plm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ESM-2 weights to PLM names. Unknown weights raise: nothing is dropped silently."""
    converted, unknown = {}, []
    for name, tensor in state_dict.items():
        short = name.removeprefix("esm.")
        # Older checkpoints (and transformers' own legacy save path) name LayerNorm parameters gamma/beta.
        short = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", short))
        if _ESM_IGNORED.match(short):
            continue
        target = rename(short, _ESM_TO_PLM)
        if target is None:
            unknown.append(name)
        else:
            converted[target] = tensor
    if unknown:
        raise ValueError(f"Not an ESM-2 masked-LM checkpoint: unexpected weights {unknown[:8]}")
    return converted


def plm_state_dict_to_esm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for name, tensor in state_dict.items():
        target = rename(name, _PLM_TO_ESM)
        if target is None:
            raise ValueError(f"Weight {name!r} has no ESM-2 counterpart")
        converted[target if target.startswith("lm_head.") else f"esm.{target}"] = tensor
    return converted


def esm_config_to_plm(esm: EsmConfig, tokenizer: PLMTokenizerFast) -> PLMConfig:
    problems = []
    if getattr(esm, "position_embedding_type", "rotary") != "rotary":
        problems.append(f"position_embedding_type={esm.position_embedding_type!r} (ESM-2 uses rotary)")
    if getattr(esm, "emb_layer_norm_before", False):
        problems.append("emb_layer_norm_before=True (an ESM-1b trait)")
    if getattr(esm, "is_folding_model", False) or getattr(esm, "esmfold_config", None) is not None:
        problems.append("an ESMFold config")
    if getattr(esm, "is_decoder", False):
        problems.append("is_decoder=True")
    if problems:
        raise ValueError("Not an ESM-2 checkpoint: " + "; ".join(problems))
    return PLMConfig(
        **ESM2_FIXED_KNOBS,
        # ESM-2 always computes the erf GELU as x * 0.5 * (1 + erf(x / sqrt(2))), whatever its config says;
        # "gelu_python" is that very formula, so the converted model rounds exactly as ESM does.
        hidden_act="gelu_python",
        vocab_size=esm.vocab_size,
        hidden_size=esm.hidden_size,
        num_hidden_layers=esm.num_hidden_layers,
        num_attention_heads=esm.num_attention_heads,
        intermediate_size=esm.intermediate_size,
        layer_norm_eps=esm.layer_norm_eps,
        rope_theta=getattr(esm, "rope_theta", None) or 10000.0,
        max_position_embeddings=esm.max_position_embeddings,
        tie_word_embeddings=getattr(esm, "tie_word_embeddings", True),
        token_dropout=esm.token_dropout,
        mask_token_id=esm.mask_token_id if esm.mask_token_id is not None else tokenizer.mask_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attention_dropout=esm.attention_probs_dropout_prob,
        hidden_dropout=esm.hidden_dropout_prob,
        initializer_range=esm.initializer_range,
        contact_head=True,
    )


def plm_config_to_esm(config: PLMConfig) -> EsmConfig:
    """The EsmConfig of a PLM config; raises listing every knob ESM cannot express."""
    expected = {
        **ESM2_FIXED_KNOBS,
        "tie_word_embeddings": True,
        "num_key_value_heads": config.num_attention_heads,
        "head_dim": config.hidden_size // config.num_attention_heads,
    }
    problems = knob_problems(config, expected, "ESM")
    if config.hidden_act not in ("gelu", "gelu_python"):
        problems.append(f"hidden_act={config.hidden_act!r} (ESM needs the erf GELU)")
    if problems:
        raise ValueError("This model cannot be expressed as ESM-2: " + "; ".join(problems))
    return EsmConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=config.hidden_dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        position_embedding_type="rotary",
        rope_theta=config.rope_theta,
        emb_layer_norm_before=False,
        token_dropout=config.token_dropout,
        mask_token_id=config.mask_token_id,
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        tie_word_embeddings=True,
    )


def convert_esm2(source: str | Path, destination: str | Path) -> Path:
    """Convert an ESM-2 checkpoint (a folder laid out like `facebook/esm2_*`, or a hub id when online) into a
    modeling_plm checkpoint: safetensors weights, config, remote code and an ESM-order tokenizer."""
    source = resolve_source(source, patterns=SOURCE_FILES, example="facebook/esm2_t6_8M_UR50D")
    check_model_type(source, ("esm",))
    if not (source / "vocab.txt").exists():
        raise FileNotFoundError(f"{source}: vocab.txt is missing; it defines ESM's token ids")
    tokenizer = PLMTokenizerFast(vocab_file=str(source / "vocab.txt"), bos_token="<cls>", eos_token="<eos>")
    esm_config = EsmConfig.from_pretrained(source)
    config = esm_config_to_plm(esm_config, tokenizer)
    if len(read_vocab_file(source / "vocab.txt")) != config.vocab_size:
        raise ValueError(f"{source}: vocab.txt has a different size than config.json's vocab_size")
    model = PLMForMaskedLM(config)
    state_dict = esm_state_dict_to_plm(load_checkpoint_weights(source))
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [name for name in missing if name != "lm_head.decoder.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise ValueError(f"Conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    destination = Path(destination)
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
    write_conversion_record(destination, family="esm2", source=source)
    return destination


def convert_plm_to_esm2(source: str | Path, destination: str | Path) -> Path:
    """Convert a modeling_plm checkpoint whose config ESM can express into a transformers ESM-2 checkpoint."""
    source, destination = Path(source), Path(destination)
    check_model_folder(source)
    config = PLMConfig.from_pretrained(source)
    esm_config = plm_config_to_esm(config)
    tokenizer = PLMTokenizerFast.from_pretrained(source)
    state_dict = plm_state_dict_to_esm(load_checkpoint_weights(source))
    model = EsmForMaskedLM(esm_config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    allowed_missing = {
        "lm_head.decoder.weight",
        "esm.contact_head.regression.weight",
        "esm.contact_head.regression.bias",
    }
    missing = [name for name in missing if name not in allowed_missing and not _ESM_IGNORED.match(name)]
    if missing or unexpected:
        raise ValueError(f"Conversion mismatch: missing {missing}, unexpected {unexpected}")
    if not config.contact_head:  # ESM always has one: make it an explicit, deterministic no-op
        torch.nn.init.zeros_(model.esm.contact_head.regression.weight)
        torch.nn.init.zeros_(model.esm.contact_head.regression.bias)
    model.tie_weights()
    model.save_pretrained(destination)
    vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    (destination / "vocab.txt").write_text("\n".join(vocab) + "\n")
    esm_tokenizer = EsmTokenizer(
        str(destination / "vocab.txt"),
        cls_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token,
        unk_token=tokenizer.unk_token,
        mask_token=tokenizer.mask_token,
    )
    esm_tokenizer.save_pretrained(destination)
    return destination


CONVERTERS = (
    Converter(
        name="esm2",
        convert=convert_esm2,
        help="ESM-2 checkpoint (folder or hub id) -> modeling_plm checkpoint",
        source_help="folder with config.json, model.safetensors or pytorch_model.bin, vocab.txt",
        destination_help="output folder (safetensors, config, remote code, tokenizer)",
    ),
    Converter(
        name="to-esm2",
        convert=convert_plm_to_esm2,
        help="modeling_plm checkpoint -> transformers ESM-2 checkpoint",
        source_help="a modeling_plm checkpoint folder whose architecture ESM-2 can express",
        destination_help="output folder (EsmForMaskedLM safetensors, config, vocab.txt)",
    ),
)
