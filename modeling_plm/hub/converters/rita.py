"""RITA (LightOn's autoregressive protein models, `lightonai/RITA_s`/`_m`/`_l`/`_xl`) and GPT-NeoX checkpoints to
modeling_plm causal LMs, and modeling_plm causal LMs to GPT-NeoX (`plm convert rita`, `plm convert to-gpt-neox`).

RITA is a GPT-NeoX block with sequential residuals: pre-LN LayerNorm (eps 1e-5) with biases, separate query/key/value
projections with biases, RoPE over the whole head in the rotate-half layout (base 10000), a 4x MLP with the tanh GELU,
a final LayerNorm and a bias-free LM head tied to the embeddings (RITA's config never sets `tie_word_embeddings`, so
transformers ties it). Both layouts map onto the backbone without weight surgery other than GPT-NeoX's fused
`query_key_value`, whose rows are [head, (q, k, v), head_dim].

Tokens: the vocabulary is read from the source's `tokenizer.json` and kept in its id order. RITA's tokenizer appends
`<EOS>` and prepends nothing, so in a stream of sequences `<EOS>` is what comes before each one; the converted tokenizer
starts sequences with it too (`<EOS> residues <EOS>`), which gives the first residue a context to be scored and
generated from (our scoring and generation need a start token). Every id after the first is RITA's own.

Two RITA quirks the converted model does not copy: its attention passes the config's dropout where the layer count
goes, so in training mode the attention keeps a fixed dropout of 0.1 (the converted model uses the config's dropout
everywhere); and it numbers positions 0..L-1 whatever the padding, where the backbone starts each row at its first
real token (the same for right padding, the tokenizer's default; left-padded rows then match their unpadded selves).
"""

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from ...configuration_plm import PLMConfig
from ...modeling_plm import PLMForCausalLM
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

# The files of a RITA (or GPT-NeoX) hub repository a conversion reads.
SOURCE_FILES = ["config.json", "tokenizer.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
# The backbone knobs every RITA (and every GPT-NeoX we accept) shares.
RITA_ARCHITECTURE = dict(
    mlp_type="mlp",
    norm_type="layernorm",
    norm_scheme="pre",
    position_embedding_type="rotary",
    mlp_bias=True,
    lm_head_transform=False,
    lm_head_bias=False,
    token_dropout=False,
    mask_token_id=None,
    embedding_attention="causal",  # a causal LM: embeddings read it as it was trained
)
# RITA's GELU is x/2 * (1 + tanh(0.79788456 x (1 + 0.044715 x^2))): transformers' "gelu_fast" is that formula (its
# constant differs from RITA's truncated one by 1e-10 relative, below float32 resolution).
RITA_HIDDEN_ACT = "gelu_fast"
RITA_ROPE_THETA = 10000.0
RITA_LAYER_NORM_EPS = 1e-5  # RITA's nn.LayerNorm default; not a config field
# Token ids of the published RITA tokenizer (26 tokens; <PAD> = 1, <EOS> = 2, the 20 amino acids at 3..22).
RITA_SPECIAL_IDS = dict(vocab_size=26, pad_token_id=1, bos_token_id=2, eos_token_id=2)
_RITA_COMMON = dict(
    **RITA_ARCHITECTURE,
    **RITA_SPECIAL_IDS,
    hidden_act=RITA_HIDDEN_ACT,
    attention_bias=True,
    layer_norm_eps=RITA_LAYER_NORM_EPS,
    rope_theta=RITA_ROPE_THETA,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
    attention_dropout=0.0,
    hidden_dropout=0.0,
)
# The published sizes (config.json of lightonai/RITA_s, _l and _xl; RITA_m from its README and rita_configuration.py).
RITA_PRESETS: dict[str, dict] = {
    "rita_s": dict(_RITA_COMMON, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "rita_m": dict(
        _RITA_COMMON, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
    "rita_l": dict(
        _RITA_COMMON, hidden_size=1536, num_hidden_layers=24, num_attention_heads=24, intermediate_size=6144
    ),
    "rita_xl": dict(
        _RITA_COMMON, hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, intermediate_size=8192
    ),
}

# RITA parameter names (without the "transformer." prefix of RITAModelForCausalLM) and their PLM names.
_RITA_TEMPLATES = [
    ("embedding.weight", "model.embeddings.word_embeddings.weight"),
    ("layers.{layer}.self_attention.query.{param}", "model.layers.{layer}.self_attn.q_proj.{param}"),
    ("layers.{layer}.self_attention.key.{param}", "model.layers.{layer}.self_attn.k_proj.{param}"),
    ("layers.{layer}.self_attention.value.{param}", "model.layers.{layer}.self_attn.v_proj.{param}"),
    ("layers.{layer}.self_attention.proj.{param}", "model.layers.{layer}.self_attn.o_proj.{param}"),
    ("layers.{layer}.attn_norm.{param}", "model.layers.{layer}.attention_norm.{param}"),
    ("layers.{layer}.mlp.0.{param}", "model.layers.{layer}.mlp.up_proj.{param}"),
    ("layers.{layer}.mlp.2.{param}", "model.layers.{layer}.mlp.down_proj.{param}"),
    ("layers.{layer}.mlp_norm.{param}", "model.layers.{layer}.mlp_norm.{param}"),
    ("final_norm.{param}", "model.norm.{param}"),
    ("lm_head.weight", "lm_head.decoder.weight"),
]
# GPT-NeoX parameter names and their PLM names; query_key_value is split apart (see split_query_key_value).
_NEOX_TEMPLATES = [
    ("gpt_neox.embed_in.weight", "model.embeddings.word_embeddings.weight"),
    ("gpt_neox.layers.{layer}.input_layernorm.{param}", "model.layers.{layer}.attention_norm.{param}"),
    ("gpt_neox.layers.{layer}.post_attention_layernorm.{param}", "model.layers.{layer}.mlp_norm.{param}"),
    ("gpt_neox.layers.{layer}.attention.dense.{param}", "model.layers.{layer}.self_attn.o_proj.{param}"),
    ("gpt_neox.layers.{layer}.mlp.dense_h_to_4h.{param}", "model.layers.{layer}.mlp.up_proj.{param}"),
    ("gpt_neox.layers.{layer}.mlp.dense_4h_to_h.{param}", "model.layers.{layer}.mlp.down_proj.{param}"),
    ("gpt_neox.final_layer_norm.{param}", "model.norm.{param}"),
    ("lm_head.weight", "lm_head.decoder.weight"),
]
_RITA_TO_PLM = [(compile_name_template(rita), plm) for rita, plm in _RITA_TEMPLATES]
_NEOX_TO_PLM = [(compile_name_template(neox), plm) for neox, plm in _NEOX_TEMPLATES]
_PLM_TO_NEOX = [(compile_name_template(plm), neox) for neox, plm in _NEOX_TEMPLATES]
_NEOX_QKV = re.compile(r"gpt_neox\.layers\.(?P<layer>\d+)\.attention\.query_key_value\.(?P<param>weight|bias)$")
_RITA_INV_FREQ = re.compile(r"layers\.\d+\.self_attention\.rotary_embedding\.inv_freq$")
# Buffers GPT-NeoX checkpoints may carry that the backbone recomputes (rotary frequencies, old causal masks).
_NEOX_IGNORED = re.compile(r".*(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias)$")


@dataclass(frozen=True)
class FamilyVocabulary:
    """A per-residue vocabulary in the family's id order and its named tokens."""

    tokens: list[str]
    bos_token: str
    eos_token: str
    pad_token: str
    unk_token: str

    def tokenizer(self, max_length: int) -> PLMTokenizerFast:
        with tempfile.TemporaryDirectory() as folder:
            vocab_file = Path(folder) / "vocab.txt"
            vocab_file.write_text("\n".join(self.tokens) + "\n")
            tokenizer = PLMTokenizerFast(
                vocab_file=str(vocab_file),
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                pad_token=self.pad_token,
                unk_token=self.unk_token,
                mask_token=None,
            )
        tokenizer.model_max_length = max_length
        return tokenizer


def _token_named(vocab: dict[str, int], name: str) -> str | None:
    return next((token for token in vocab if token.lower() == f"<{name}>"), None)


def _special_tokens_around(backend: Tokenizer) -> tuple[list[str], list[str]]:
    """The tokens the family's tokenizer puts before and after a sequence (read off an encoding of one residue)."""
    plain = backend.encode("A", add_special_tokens=False).tokens
    full = backend.encode("A").tokens
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def read_family_vocabulary(folder: Path, vocab_size: int) -> FamilyVocabulary:
    """The per-residue vocabulary of `folder/tokenizer.json` in id order, filled with `<unused_N>` up to the model's
    `vocab_size`. Raises naming the file for anything but one token per residue character."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: tokenizer.json is missing; it defines RITA's token ids")
    backend = Tokenizer.from_file(str(path))
    vocab = backend.get_vocab(with_added_tokens=True)
    by_id = {index: token for token, index in vocab.items()}
    if len(by_id) > vocab_size or max(by_id) >= vocab_size:
        raise ValueError(f"{path}: {len(by_id)} tokens (ids up to {max(by_id)}) do not fit vocab_size {vocab_size}")
    special = {token.content for token in backend.get_added_tokens_decoder().values() if token.special}
    for index, token in sorted(by_id.items()):
        if len(token) != 1 and token not in special and not is_special_token(token):
            raise ValueError(f"{path}: token {token!r} (id {index}) is not one residue; RITA's tokens are residues")
    tokens = [by_id.get(index, f"<unused_{index}>") for index in range(vocab_size)]
    before, after = _special_tokens_around(backend)
    eos = after[0] if len(after) == 1 else _token_named(vocab, "eos")
    pad = _token_named(vocab, "pad")
    if eos is None or pad is None:
        raise ValueError(f"{path}: no end-of-sequence token (appended, or named <EOS>) or no <PAD> token")
    # No start token of its own (RITA's case): sequences are separated by <EOS> in training, so it starts them.
    bos = before[0] if len(before) == 1 else eos
    unk = getattr(backend.model, "unk_token", None) or _token_named(vocab, "unk")
    unk = unk if unk in vocab else ("X" if "X" in vocab else None)
    if unk is None:
        raise ValueError(f"{path}: no unknown-token (<UNK> or the residue X) to map unknown characters to")
    return FamilyVocabulary(tokens, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk)


def rita_config_to_plm(rita: dict, vocabulary: FamilyVocabulary) -> PLMConfig:
    """The PLMConfig of a RITA config.json (RITA's config class is remote code, so the raw dict is read)."""
    hidden, heads = rita.get("d_model", 768), rita.get("num_heads", 12)
    # RITA's config recomputes d_feedforward as d_model * ff_ratio, whatever config.json stores.
    intermediate = hidden * rita.get("ff_ratio", 4)
    problems = []
    if hidden % heads:
        problems.append(f"d_model={hidden} is not a multiple of num_heads={heads}")
    if rita.get("d_feedforward", intermediate) != intermediate:
        problems.append(f"d_feedforward={rita['d_feedforward']} is not d_model * ff_ratio = {intermediate}")
    if problems:
        raise ValueError("Not a RITA checkpoint: " + "; ".join(problems))
    return PLMConfig(
        **RITA_ARCHITECTURE,
        **_special_ids(vocabulary),
        hidden_act=RITA_HIDDEN_ACT,
        attention_bias=True,
        layer_norm_eps=RITA_LAYER_NORM_EPS,
        rope_theta=RITA_ROPE_THETA,
        vocab_size=rita.get("vocab_size", 26),
        hidden_size=hidden,
        num_hidden_layers=rita.get("num_layers", 12),
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=rita.get("max_seq_len", 1024),
        tie_word_embeddings=rita.get("tie_word_embeddings", True),
        attention_dropout=rita.get("dropout", 0.0),
        hidden_dropout=rita.get("dropout", 0.0),
        initializer_range=rita.get("initializer_range", 0.02),
    )


def _special_ids(vocabulary: FamilyVocabulary) -> dict[str, int]:
    # From the tokenizer, never from config.json: RITA_xl's config says eos_token_id 50256, outside its vocabulary.
    index = vocabulary.tokens.index
    return dict(
        pad_token_id=index(vocabulary.pad_token),
        bos_token_id=index(vocabulary.bos_token),
        eos_token_id=index(vocabulary.eos_token),
    )


def gpt_neox_config_to_plm(neox: GPTNeoXConfig, vocabulary: FamilyVocabulary) -> PLMConfig:
    """The PLMConfig of a GPT-NeoX config: partial rotary becomes `rotary_dim`, the parallel block (whose two norms
    `gpt_neox_state_dict_to_plm` checks to be one) `parallel_residual`."""
    head_dim = neox.hidden_size // neox.num_attention_heads
    rope = neox.rope_parameters or {}
    rotary_dim = int(head_dim * rope.get("partial_rotary_factor", 1.0))
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"Not expressible: GPT-NeoX rope_type={rope['rope_type']!r} (only plain RoPE maps)")
    return PLMConfig(
        **RITA_ARCHITECTURE,
        **_special_ids(vocabulary),
        parallel_residual=neox.use_parallel_residual,
        hidden_act=neox.hidden_act,
        attention_bias=neox.attention_bias,
        layer_norm_eps=neox.layer_norm_eps,
        rope_theta=rope.get("rope_theta", RITA_ROPE_THETA),
        rotary_dim=None if rotary_dim == head_dim else rotary_dim,
        vocab_size=neox.vocab_size,
        hidden_size=neox.hidden_size,
        num_hidden_layers=neox.num_hidden_layers,
        num_attention_heads=neox.num_attention_heads,
        intermediate_size=neox.intermediate_size,
        max_position_embeddings=neox.max_position_embeddings,
        tie_word_embeddings=neox.tie_word_embeddings,
        attention_dropout=neox.attention_dropout,
        hidden_dropout=neox.hidden_dropout,
        initializer_range=neox.initializer_range,
    )


def _rename_all(state_dict: dict[str, torch.Tensor], table: list, family: str) -> dict[str, torch.Tensor]:
    converted, unknown = {}, []
    for name, tensor in state_dict.items():
        target = rename(name, table)
        if target is None:
            unknown.append(name)
        else:
            converted[target] = tensor
    if unknown:
        raise ValueError(f"Not a {family} causal-LM checkpoint: unexpected weights {unknown[:8]}")
    return converted


def _check_tied_head(state_dict: dict[str, torch.Tensor], config: PLMConfig, family: str) -> None:
    """A tied model keeps one matrix: a stored LM head must then equal the embeddings (or nothing is dropped)."""
    head = state_dict.pop("lm_head.decoder.weight", None)
    if not config.tie_word_embeddings:
        if head is None:
            raise ValueError(f"The {family} checkpoint has no LM head weight and does not tie it to the embeddings")
        state_dict["lm_head.decoder.weight"] = head
    elif head is not None and not torch.equal(head, state_dict["model.embeddings.word_embeddings.weight"]):
        raise ValueError(
            f"The {family} config ties the LM head to the embeddings (tie_word_embeddings, true by default) but the "
            "stored LM head differs from them (transformers would replace it by the embeddings when loading); set "
            "tie_word_embeddings false in config.json to convert the stored head instead"
        )


def rita_state_dict_to_plm(state_dict: dict[str, torch.Tensor], config: PLMConfig) -> dict[str, torch.Tensor]:
    """Rename RITA weights to PLM names. Unknown weights raise; the rotary frequencies are checked, not copied."""
    kept = {}
    head_dim = config.head_dim
    expected_inv_freq = 1.0 / RITA_ROPE_THETA ** (torch.arange(0, head_dim, 2).float() / head_dim)
    for name, tensor in state_dict.items():
        short = name.removeprefix("transformer.")
        if not _RITA_INV_FREQ.match(short):
            kept[short] = tensor
        elif tensor.shape != expected_inv_freq.shape or not torch.allclose(
            tensor.float(), expected_inv_freq, rtol=1e-3
        ):
            raise ValueError(f"{name}: rotary frequencies of another base than {RITA_ROPE_THETA:g}")
    converted = _rename_all(kept, _RITA_TO_PLM, "RITA")
    _check_tied_head(converted, config, "RITA")
    return converted


def split_query_key_value(fused: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPT-NeoX's fused rows are [head, (q, k, v), head_dim]: the q, k and v rows, each in head order."""
    per_head = fused.unflatten(0, (num_heads, 3, -1))
    return tuple(per_head[:, part].flatten(0, 1) for part in range(3))


def merge_query_key_value(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The inverse of `split_query_key_value`."""
    return torch.stack([part.unflatten(0, (num_heads, -1)) for part in (q, k, v)], dim=1).flatten(0, 2)


def gpt_neox_state_dict_to_plm(state_dict: dict[str, torch.Tensor], config: PLMConfig) -> dict[str, torch.Tensor]:
    """Rename GPT-NeoX weights to PLM names, splitting query_key_value. Unknown weights raise."""
    kept, converted = {}, {}
    for name, tensor in state_dict.items():
        name = "lm_head.weight" if name == "embed_out.weight" else name  # the name on disk, and in transformers 4
        match = _NEOX_QKV.match(name)
        if match:
            prefix = f"model.layers.{match['layer']}.self_attn"
            parts = split_query_key_value(tensor, config.num_attention_heads)
            converted |= {f"{prefix}.{p}_proj.{match['param']}": part for p, part in zip("qkv", parts)}
        elif not _NEOX_IGNORED.match(name):
            kept[name] = tensor
    converted |= _rename_all(kept, _NEOX_TO_PLM, "GPT-NeoX")
    if config.parallel_residual:
        _fold_parallel_norms(converted, config.num_hidden_layers)
    _check_tied_head(converted, config, "GPT-NeoX")
    return converted


def _fold_parallel_norms(state_dict: dict[str, torch.Tensor], num_layers: int) -> None:
    """GPT-NeoX's parallel block normalises the input twice; the backbone's once, so both norms must be equal."""
    for layer in range(num_layers):
        for param in ("weight", "bias"):
            first = state_dict[f"model.layers.{layer}.attention_norm.{param}"]
            second = state_dict.pop(f"model.layers.{layer}.mlp_norm.{param}")
            if not torch.equal(first, second):
                raise ValueError(
                    f"Not expressible: GPT-NeoX layer {layer} uses the parallel residual with two different norms "
                    "(input_layernorm, post_attention_layernorm); the backbone's parallel block has one"
                )


def convert_rita(source: str | Path, destination: str | Path) -> Path:
    """Convert a RITA checkpoint (a folder laid out like `lightonai/RITA_s`, or a hub id) or a GPT-NeoX one
    (`GPTNeoXForCausalLM`, with a per-residue tokenizer.json) into a modeling_plm causal LM: safetensors weights,
    config, remote code and a tokenizer in the source's id order."""
    source = resolve_source(source, patterns=SOURCE_FILES, example="lightonai/RITA_s")
    raw = check_model_type(source, ("rita", "gpt_neox"))
    weights = load_checkpoint_weights(source)
    if raw["model_type"] == "rita":
        vocabulary = read_family_vocabulary(source, raw.get("vocab_size", 26))
        config = rita_config_to_plm(raw, vocabulary)
        state_dict = rita_state_dict_to_plm(weights, config)
    else:
        neox = GPTNeoXConfig.from_pretrained(source)
        vocabulary = read_family_vocabulary(source, neox.vocab_size)
        config = gpt_neox_config_to_plm(neox, vocabulary)
        state_dict = gpt_neox_state_dict_to_plm(weights, config)
    model = PLMForCausalLM(config)
    load_weights_into(model, state_dict, may_miss={"lm_head.decoder.weight"} if config.tie_word_embeddings else set())
    model.tie_weights()
    destination = Path(destination)
    model.save_pretrained(destination)
    vocabulary.tokenizer(config.max_position_embeddings).save_pretrained(destination)
    write_conversion_record(destination, family="rita" if raw["model_type"] == "rita" else "gpt_neox", source=source)
    return destination


def plm_config_to_gpt_neox(config: PLMConfig) -> GPTNeoXConfig:
    """The GPTNeoXConfig of a PLM config; raises listing every knob GPT-NeoX cannot express."""
    head_dim = config.hidden_size // config.num_attention_heads
    expected = {
        "mlp_type": "mlp",
        "norm_type": "layernorm",
        "norm_scheme": "pre",
        "position_embedding_type": "rotary",
        "lm_head_transform": False,
        "lm_head_bias": False,
        "token_dropout": False,
        "contact_head": False,
        "qk_norm": False,
        "residual_multiplier": 1.0,
        "num_key_value_heads": config.num_attention_heads,
        "head_dim": head_dim,
    }
    problems = knob_problems(config, expected, "GPT-NeoX")
    if config.attention_scale is not None and not math.isclose(config.attention_scale, head_dim**-0.5):
        problems.append(f"attention_scale={config.attention_scale!r} (GPT-NeoX scales by head_dim ** -0.5)")
    rotary_dim = config.rotary_dim or head_dim
    if int(head_dim * (rotary_dim / head_dim)) != rotary_dim:
        problems.append(f"rotary_dim={rotary_dim} (no partial_rotary_factor gives it back)")
    if problems:
        raise ValueError("This model cannot be expressed as GPT-NeoX: " + "; ".join(problems))
    return GPTNeoXConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        attention_dropout=config.attention_dropout,
        hidden_dropout=config.hidden_dropout,
        max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        tie_word_embeddings=config.tie_word_embeddings,
        use_parallel_residual=config.parallel_residual,
        attention_bias=config.attention_bias,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": config.rope_theta,
            "partial_rotary_factor": rotary_dim / head_dim,
        },
    )


def plm_state_dict_to_gpt_neox(state_dict: dict[str, torch.Tensor], config: PLMConfig) -> dict[str, torch.Tensor]:
    """PLM weights under GPTNeoXForCausalLM's names, query/key/value fused, the norm of a parallel block written to
    both GPT-NeoX norms and absent MLP biases written as zeros."""
    converted, fused = {}, {}
    for name, tensor in state_dict.items():
        match = re.match(r"model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$", name)
        if match:
            fused.setdefault((match[1], match[3]), {})[match[2]] = tensor
            continue
        target = rename(name, _PLM_TO_NEOX)
        if target is None:
            raise ValueError(f"Weight {name!r} has no GPT-NeoX counterpart")
        converted[target] = tensor
    for (layer, param), parts in fused.items():
        merged = merge_query_key_value(parts["q"], parts["k"], parts["v"], config.num_attention_heads)
        converted[f"gpt_neox.layers.{layer}.attention.query_key_value.{param}"] = merged
    for layer in range(config.num_hidden_layers):
        prefix = f"gpt_neox.layers.{layer}"
        if config.parallel_residual:
            for param in ("weight", "bias"):
                converted[f"{prefix}.post_attention_layernorm.{param}"] = converted[f"{prefix}.input_layernorm.{param}"]
        if not config.mlp_bias:  # GPT-NeoX's MLP always has biases: zero ones are the same maths
            converted[f"{prefix}.mlp.dense_h_to_4h.bias"] = torch.zeros(config.intermediate_size)
            converted[f"{prefix}.mlp.dense_4h_to_h.bias"] = torch.zeros(config.hidden_size)
    return converted


def convert_plm_to_gpt_neox(source: str | Path, destination: str | Path) -> Path:
    """Convert a modeling_plm checkpoint whose config GPT-NeoX can express into a transformers GPTNeoXForCausalLM
    checkpoint, with the same tokens in a plain `tokenizer.json` (PreTrainedTokenizerFast)."""
    source, destination = Path(source), Path(destination)
    check_model_folder(source)
    config = PLMConfig.from_pretrained(source)
    neox_config = plm_config_to_gpt_neox(config)
    tokenizer = PLMTokenizerFast.from_pretrained(source)
    model = GPTNeoXForCausalLM(neox_config)
    state_dict = plm_state_dict_to_gpt_neox(load_checkpoint_weights(source), config)
    head = "embed_out.weight" if hasattr(model, "embed_out") else "lm_head.weight"  # embed_out: older transformers
    if "lm_head.weight" in state_dict:
        state_dict[head] = state_dict.pop("lm_head.weight")
    load_weights_into(model, state_dict, may_miss={head} if config.tie_word_embeddings else set())
    model.tie_weights()
    model.save_pretrained(destination)
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer,
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token,
        unk_token=tokenizer.unk_token,
        model_max_length=tokenizer.model_max_length,
    ).save_pretrained(destination)
    return destination


CONVERTERS = (
    Converter(
        name="rita",
        convert=convert_rita,
        help="RITA or GPT-NeoX checkpoint (folder or hub id, e.g. lightonai/RITA_s) -> modeling_plm causal LM",
        source_help="folder with config.json (model_type rita or gpt_neox), weights and a per-residue tokenizer.json",
        destination_help="output folder (safetensors, config, remote code, tokenizer)",
    ),
    Converter(
        name="to-gpt-neox",
        convert=convert_plm_to_gpt_neox,
        help="modeling_plm causal LM -> transformers GPTNeoXForCausalLM checkpoint",
        source_help="a modeling_plm checkpoint folder whose architecture GPT-NeoX can express",
        destination_help="output folder (GPTNeoXForCausalLM safetensors, config, tokenizer.json)",
    ),
)
