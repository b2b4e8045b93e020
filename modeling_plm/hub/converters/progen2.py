"""ProGen2 (Salesforce's autoregressive protein models, `progen2-small` ... `progen2-xlarge`, OAS and BFD90) and
GPT-J checkpoints to modeling_plm causal LMs, and modeling_plm causal LMs to GPT-J (`plm convert progen2`,
`plm convert to-gptj`).

ProGen2 is a GPT-J block: one LayerNorm feeds attention and MLP in parallel (`x + attn(ln(x)) + mlp(ln(x))`), the
attention has no biases, RoPE (base 10000) rotates the first `rotary_dim` dimensions of each head in GPT-J's
interleaved pairs (`rotate_every_two`), the 4x MLP has biases and `gelu_new`, a final LayerNorm, and an untied LM head
with a bias. Two weight layouts are read:

- ProGen2's own (`model_type` "progen": the original checkpoints and the hub ports such as `hugohrban/progen2-small`):
  one fused `attn.qkv_proj` whose rows are 8 blocks (ProGen's `mp_num`, the TPU model-parallel split), each block
  holding that block's query, value and key rows, in this order;
- transformers' GPT-J (`model_type` "gptj"), with separate `q_proj`, `k_proj` and `v_proj`.

The backbone's RoPE pairs dimension i with i + rotary_dim/2 (rotate-half), so the query and key rows are permuted
within each head's rotary dimensions at conversion (and back in `to-gptj`); the scores q.k do not change.

Tokens: the vocabulary is read from the source's `tokenizer.json` and kept in its id order; ids the model has rows for
but the vocabulary lacks become `<unused_N>` (up to `MAX_FILLED_VOCAB`). ProGen2 writes a protein as `1` residues `2`
(its `<|bos|>`/`<|eos|>` entries are unused), so `1` and `2` are the converted tokenizer's start and end tokens and
`<|pad|>` its pad; the first `<unused_N>` stands for unknown characters (ProGen2 has no such token). Without a
`tokenizer.json` (the original release keeps it beside the code), ProGen2's published vocabulary is used, but only
for a "progen" checkpoint whose config names ids 1/2 as bos/eos, as that vocabulary does.

One ProGen2 quirk: it numbers positions from 0 whatever the padding, where the backbone starts each row at its first
real token (the same for right padding, the tokenizer's default).
"""

import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GPTJConfig, GPTJForCausalLM
from transformers.activations import ACT2FN

from ...configuration_plm import PLMConfig
from ...modeling_plm import PLMForCausalLM
from ...tokenization_plm import PLMTokenizerFast, build_backend_tokenizer, is_special_token, special_tokens_of
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

# The files of a ProGen2 (or GPT-J) hub repository a conversion reads.
SOURCE_FILES = ["config.json", "tokenizer.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
# ProGen2's vocabulary in id order, as in salesforce/progen's progen2/tokenizer.json (and the hub ports').
PROGEN2_VOCAB = ["<|pad|>", "<|bos|>", "<|eos|>", "1", "2", *"ABCDEFGHIKLMNOPQRSTUVWXYZ"]
PROGEN2_BOS, PROGEN2_EOS, PROGEN2_PAD = "1", "2", "<|pad|>"
# ProGen2's fused qkv_proj is split in this many row blocks, each [query, value, key] (modeling_progen's mp_num).
PROGEN2_MP_NUM = 8
# Vocabularies are filled with <unused_N> up to the model's rows only up to this size: progen2-large has 51200 rows
# for 30 tokens, and 51170 special tokens take minutes to load. The rows beyond stay in the model (never produced).
MAX_FILLED_VOCAB = 1024
# The backbone knobs every ProGen2 (and every GPT-J we accept) shares.
PROGEN2_ARCHITECTURE = dict(
    mlp_type="mlp",
    norm_type="layernorm",
    norm_scheme="pre",
    parallel_residual=True,
    position_embedding_type="rotary",
    rope_theta=10000.0,
    attention_bias=False,
    mlp_bias=True,
    lm_head_transform=False,
    lm_head_bias=True,
    tie_word_embeddings=False,
    token_dropout=False,
)
# A causal-only model: its tokens never saw what follows them, so embeddings read it causally too.
PROGEN2_EMBEDDING_ATTENTION = "causal"
_PROGEN2_COMMON = dict(
    **PROGEN2_ARCHITECTURE,
    embedding_attention=PROGEN2_EMBEDDING_ATTENTION,
    hidden_act="gelu_new",
    layer_norm_eps=1e-5,
    pad_token_id=0,
    bos_token_id=3,
    eos_token_id=4,
    mask_token_id=None,
    attention_dropout=0.0,
    hidden_dropout=0.0,
)


def _progen2_preset(hidden: int, layers: int, heads: int, rotary: int, context: int, vocab: int) -> dict:
    return dict(
        _PROGEN2_COMMON,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        rotary_dim=rotary,
        max_position_embeddings=context,
        vocab_size=vocab,
    )


# The published sizes. From config.json: small and medium (hugohrban/progen2-*), large (the original release's config,
# vocab_size 51200, as its fine-tunes copy it). Base (context 2048), OAS, BFD90 and xlarge from the ProGen2 paper and
# MultiMolecule's model card; xlarge's rotary_dim (64) and the vocab sizes of OAS, base and BFD90 are unverified.
PROGEN2_PRESETS: dict[str, dict] = {
    "progen2_small": _progen2_preset(1024, 12, 16, 32, 1024, 32),
    "progen2_medium": _progen2_preset(1536, 27, 16, 48, 1024, 32),
    "progen2_oas": _progen2_preset(1536, 27, 16, 48, 1024, 32),
    "progen2_base": _progen2_preset(1536, 27, 16, 48, 2048, 32),
    "progen2_large": _progen2_preset(2560, 32, 32, 64, 1024, 51200),
    "progen2_bfd90": _progen2_preset(2560, 32, 32, 64, 1024, 51200),
    "progen2_xlarge": _progen2_preset(4096, 32, 16, 64, 1024, 32),
}

# transformers' GPT-J parameter names and their PLM names (ProGen2's are the same but for the fused qkv_proj).
_NAME_TEMPLATES = [
    ("transformer.wte.weight", "model.embeddings.word_embeddings.weight"),
    ("transformer.h.{layer}.ln_1.{param}", "model.layers.{layer}.attention_norm.{param}"),
    ("transformer.h.{layer}.attn.q_proj.weight", "model.layers.{layer}.self_attn.q_proj.weight"),
    ("transformer.h.{layer}.attn.k_proj.weight", "model.layers.{layer}.self_attn.k_proj.weight"),
    ("transformer.h.{layer}.attn.v_proj.weight", "model.layers.{layer}.self_attn.v_proj.weight"),
    ("transformer.h.{layer}.attn.out_proj.weight", "model.layers.{layer}.self_attn.o_proj.weight"),
    ("transformer.h.{layer}.mlp.fc_in.{param}", "model.layers.{layer}.mlp.up_proj.{param}"),
    ("transformer.h.{layer}.mlp.fc_out.{param}", "model.layers.{layer}.mlp.down_proj.{param}"),
    ("transformer.ln_f.{param}", "model.norm.{param}"),
    ("lm_head.weight", "lm_head.decoder.weight"),
    ("lm_head.bias", "lm_head.bias"),
]
_GPTJ_TO_PLM = [(compile_name_template(gptj), plm) for gptj, plm in _NAME_TEMPLATES]
_PLM_TO_GPTJ = [(compile_name_template(plm), gptj) for gptj, plm in _NAME_TEMPLATES]
_QKV = compile_name_template("transformer.h.{layer}.attn.qkv_proj.weight")
# Buffers the checkpoints may carry that are recomputed: causal masks (ProGen2's bin files) and GPT-J's RoPE table.
_IGNORED = (
    compile_name_template("transformer.h.{layer}.attn.bias"),
    compile_name_template("transformer.h.{layer}.attn.masked_bias"),
    compile_name_template("transformer.rotary_emb.embed_positions"),
)


def split_progen_qkv(weight: torch.Tensor, mp_num: int = PROGEN2_MP_NUM) -> tuple[torch.Tensor, ...]:
    """ProGen2's fused `qkv_proj.weight` (3E, E) as GPT-J's (q, k, v) weights, each (E, E): the rows are `mp_num`
    blocks of [query, value, key], and block b's queries are heads b*H/mp_num ... (b+1)*H/mp_num - 1."""
    width = weight.shape[1]
    if weight.shape[0] != 3 * width or width % mp_num:
        raise ValueError(
            f"qkv_proj.weight of shape {tuple(weight.shape)} is not ({3 * width}, E) with E % {mp_num} == 0"
        )
    query, value, key = weight.view(mp_num, 3, width // mp_num, width).unbind(1)
    return tuple(part.reshape(width, width).contiguous() for part in (query, key, value))


def progen_state_dict_to_gptj(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ProGen2's weight names to GPT-J's: only the fused qkv_proj differs (split, see `split_progen_qkv`)."""
    converted = {}
    for name, tensor in state_dict.items():
        match = _QKV.match(name)
        if match is None:
            converted[name] = tensor
            continue
        prefix = f"transformer.h.{match['layer']}.attn"
        for part, weight in zip(("q_proj", "k_proj", "v_proj"), split_progen_qkv(tensor)):
            converted[f"{prefix}.{part}.weight"] = weight
    return converted


def _rotary_row_order(head_dim: int, rotary_dim: int) -> torch.Tensor:
    """Row order within a head that turns GPT-J's interleaved pairs (2j, 2j+1) into rotate-half pairs (j, j + r/2)."""
    return torch.cat(
        (torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2), torch.arange(rotary_dim, head_dim))
    )


def permute_rotary_rows(weight: torch.Tensor, head_dim: int, rotary_dim: int, inverse: bool = False) -> torch.Tensor:
    """A q/k projection's rows from the interleaved RoPE layout to the rotate-half one (`inverse`: back)."""
    order = _rotary_row_order(head_dim, rotary_dim)
    if inverse:
        order = torch.argsort(order)
    return weight.view(-1, head_dim, weight.shape[-1])[:, order].reshape(weight.shape).contiguous()


def gptj_state_dict_to_plm(state_dict: dict[str, torch.Tensor], config: PLMConfig) -> dict[str, torch.Tensor]:
    """GPT-J (or ProGen2, after `progen_state_dict_to_gptj`) weights to PLM names, the q/k rows permuted for RoPE.
    Unknown weights raise: nothing is dropped silently."""
    converted, unknown = {}, []
    for name, tensor in state_dict.items():
        if any(pattern.match(name) for pattern in _IGNORED):
            continue
        target = rename(name, _GPTJ_TO_PLM)
        if target is None:
            unknown.append(name)
            continue
        if target.endswith(("q_proj.weight", "k_proj.weight")):
            tensor = permute_rotary_rows(tensor, config.head_dim, config.rotary_dim)
        converted[target] = tensor
    if unknown:
        raise ValueError(f"Not a ProGen2 / GPT-J causal-LM checkpoint: unexpected weights {unknown[:8]}")
    return converted


def plm_state_dict_to_gptj(state_dict: dict[str, torch.Tensor], config: PLMConfig) -> dict[str, torch.Tensor]:
    converted = {}
    for name, tensor in state_dict.items():
        target = rename(name, _PLM_TO_GPTJ)
        if target is None:
            raise ValueError(f"Weight {name!r} has no GPT-J counterpart")
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            tensor = permute_rotary_rows(tensor, config.head_dim, config.rotary_dim, inverse=True)
        converted[target] = tensor
    return converted


def _required(source: dict, keys: tuple[str, ...], path: Path) -> int:
    """The value a config gives under any of `keys` (aliases, which must agree); raises naming the file if none."""
    given = {key: source[key] for key in keys if source.get(key) is not None}
    if not given:
        raise ValueError(f"{path}: none of {', '.join(keys)} is set")
    if len(set(given.values())) > 1:
        raise ValueError(f"{path}: {' and '.join(f'{key}={value}' for key, value in given.items())} disagree")
    return next(iter(given.values()))


def source_vocab_size(source: dict, path: Path) -> int:
    """The one vocabulary size of a ProGen2/GPT-J config: ProGen2's hub ports name the embedding's and the LM head's
    sizes apart (`vocab_size_emb`, `vocab_size_lm_head`), which one backbone vocabulary cannot express if they
    differ (e.g. the fine-tunes that added family tokens to the input only)."""
    embedding, head = source.get("vocab_size_emb"), source.get("vocab_size_lm_head")
    if embedding is not None and head is not None and embedding != head:
        raise ValueError(
            f"{path}: vocab_size_emb={embedding} and vocab_size_lm_head={head} differ; the backbone has one vocabulary "
            "for the embeddings and the LM head, so this checkpoint cannot be converted"
        )
    return _required(source, ("vocab_size", "vocab_size_emb", "vocab_size_lm_head"), path)


def progen_config_to_plm(source: dict, path: Path, tokenizer: PLMTokenizerFast) -> PLMConfig:
    """The PLM config of a ProGen2 or GPT-J config.json (read as a dict: ProGen2's class is remote code)."""
    problems = []
    if source.get("scale_attn_weights", True) is not True:
        problems.append("scale_attn_weights=False (ProGen2 and GPT-J scale by head_dim ** -0.5)")
    if source.get("tie_word_embeddings", False):
        problems.append("tie_word_embeddings=True (ProGen2's LM head is its own)")
    activation = source.get("activation_function", "gelu_new")
    if activation not in ACT2FN:
        problems.append(f"activation_function={activation!r} (not a transformers activation)")
    if problems:
        raise ValueError(f"{path}: not a convertible ProGen2 / GPT-J checkpoint: " + "; ".join(problems))
    hidden = _required(source, ("n_embd", "embed_dim"), path)
    heads = _required(source, ("n_head",), path)
    return PLMConfig(
        **PROGEN2_ARCHITECTURE,
        embedding_attention=PROGEN2_EMBEDDING_ATTENTION,
        hidden_act=activation,
        vocab_size=source_vocab_size(source, path),
        hidden_size=hidden,
        num_hidden_layers=_required(source, ("n_layer",), path),
        num_attention_heads=heads,
        intermediate_size=source.get("n_inner") or 4 * hidden,
        # None rotates the whole head in ProGen2's code; the class default of both configs is 64.
        rotary_dim=source.get("rotary_dim", 64) or hidden // heads,
        max_position_embeddings=source.get("n_positions", 2048),
        layer_norm_eps=source.get("layer_norm_epsilon", 1e-5),
        attention_dropout=source.get("attn_pdrop", 0.0),
        hidden_dropout=source.get("resid_pdrop", 0.0),
        initializer_range=source.get("initializer_range", 0.02),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        mask_token_id=None,
    )


def read_tokenizer_vocab(path: Path) -> list[str]:
    """The tokens of a `tokenizers` tokenizer.json (its model's vocab and added tokens) in id order; ids without a
    token are None."""
    data = json.loads(path.read_text())
    by_id: dict[int, str] = {}
    entries = list(data.get("model", {}).get("vocab", {}).items())
    entries += [(token["content"], token["id"]) for token in data.get("added_tokens", [])]
    for token, token_id in entries:
        if by_id.setdefault(token_id, token) != token:
            raise ValueError(f"{path}: id {token_id} is both {by_id[token_id]!r} and {token!r}")
    if not by_id:
        raise ValueError(f"{path}: no vocabulary (model.vocab is empty)")
    return [by_id.get(index) for index in range(max(by_id) + 1)]


def source_vocabulary(folder: Path, source: dict) -> list[str | None]:
    """The source's vocabulary in id order: its tokenizer.json, else (checked) ProGen2's published one."""
    if (folder / "tokenizer.json").is_file():
        return read_tokenizer_vocab(folder / "tokenizer.json")
    if source.get("model_type") == "progen" and (source.get("bos_token_id"), source.get("eos_token_id")) == (1, 2):
        return list(PROGEN2_VOCAB)
    raise FileNotFoundError(
        f"{folder}: tokenizer.json is missing; it defines the token ids (ProGen2's published vocabulary is used only "
        "for model_type 'progen' with bos_token_id 1 and eos_token_id 2)"
    )


def tokenizer_width(num_tokens: int, vocab_size: int) -> int:
    """How many ids the converted tokenizer covers: every model row up to `MAX_FILLED_VOCAB` rows; beyond that
    (progen2-large's 51200 rows for 30 tokens) the source's ids and at least one spare, rounded up to 32."""
    if vocab_size <= MAX_FILLED_VOCAB:
        return vocab_size
    return min(vocab_size, -(-(num_tokens + 1) // 32) * 32)


def build_tokenizer(vocab: list[str | None], vocab_size: int, folder: Path) -> PLMTokenizerFast:
    """PLMTokenizerFast with the source's ids: `1` residues `2`, `<|pad|>` for padding, gaps as `<unused_N>`."""
    if len(vocab) > vocab_size:
        raise ValueError(f"{folder}: the tokenizer has id {len(vocab) - 1}, beyond the model's {vocab_size} rows")
    vocab = [token if token is not None else f"<unused_{index}>" for index, token in enumerate(vocab)]
    vocab += [f"<unused_{index}>" for index in range(len(vocab), tokenizer_width(len(vocab), vocab_size))]
    missing = [token for token in (PROGEN2_BOS, PROGEN2_EOS, PROGEN2_PAD) if token not in vocab]
    if missing:
        raise ValueError(f"{folder}: the vocabulary lacks ProGen2's {missing} tokens")
    unused = [token for token in vocab if token.startswith("<unused_")]
    special = {"bos_token": PROGEN2_BOS, "eos_token": PROGEN2_EOS, "pad_token": PROGEN2_PAD}
    # ProGen2 has no unknown token: the first unused id stands for one (X is a residue of its own).
    special["unk_token"] = unused[0] if unused else "X"
    backend = build_backend_tokenizer(vocab, special_tokens=special_tokens_of(vocab), **special)
    return PLMTokenizerFast(tokenizer_object=backend, mask_token=None, **special)


def check_shapes(state_dict: dict[str, torch.Tensor], model: PLMForCausalLM, folder: Path) -> None:
    """Raises naming the weights whose shapes config.json does not give."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    wrong = [
        f"{name} {tuple(tensor.shape)} (config.json gives {expected[name]})"
        for name, tensor in state_dict.items()
        if name in expected and tuple(tensor.shape) != expected[name]
    ]
    if wrong:
        raise ValueError(f"{folder}: weights do not fit config.json: {', '.join(wrong[:4])}")


def load_progen_weights(folder: Path, source: dict) -> dict[str, torch.Tensor]:
    """The source's weights in GPT-J names; checks each layout's projections are there."""
    state_dict = load_checkpoint_weights(folder)
    fused = any(_QKV.match(name) for name in state_dict)
    if source["model_type"] == "progen":
        if not fused:
            raise ValueError(f"{folder}: model_type 'progen' but no transformer.h.N.attn.qkv_proj.weight")
        return progen_state_dict_to_gptj(state_dict)
    if fused:
        raise ValueError(f"{folder}: model_type 'gptj' with ProGen2's fused qkv_proj; set model_type 'progen'")
    return state_dict


def _dtype_of(state_dict: dict[str, torch.Tensor], name: str) -> torch.dtype:
    """The checkpoint's dtype (that of its embeddings), kept by the conversion: no silent up- or down-cast."""
    return state_dict[name].dtype if name in state_dict else torch.float32


def convert_progen2(source: str | Path, destination: str | Path) -> Path:
    """Convert a ProGen2 checkpoint (ProGen2's layout, as `hugohrban/progen2-small`, or transformers' GPT-J; a folder
    or a hub id) into a modeling_plm causal LM: safetensors weights, config, remote code and a ProGen2-id tokenizer."""
    source = resolve_source(source, patterns=SOURCE_FILES, example="hugohrban/progen2-small")
    source_config = check_model_type(source, ("progen", "gptj"))
    vocab_size = source_vocab_size(source_config, source / "config.json")
    tokenizer = build_tokenizer(source_vocabulary(source, source_config), vocab_size, source)
    config = progen_config_to_plm(source_config, source / "config.json", tokenizer)
    state_dict = gptj_state_dict_to_plm(load_progen_weights(source, source_config), config)
    model = PLMForCausalLM(config).to(_dtype_of(state_dict, "model.embeddings.word_embeddings.weight"))
    check_shapes(state_dict, model, source)
    load_weights_into(model, state_dict)
    destination = Path(destination)
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
    write_conversion_record(destination, family="progen2", source=source)
    return destination


def plm_config_to_gptj(config: PLMConfig) -> GPTJConfig:
    """The GPTJConfig of a PLM config; raises listing every knob GPT-J cannot express."""
    expected = {
        **PROGEN2_ARCHITECTURE,
        "qk_norm": False,
        "residual_multiplier": 1.0,
        "contact_head": False,
        "num_key_value_heads": config.num_attention_heads,
        "head_dim": config.hidden_size // config.num_attention_heads,
    }
    problems = knob_problems(config, expected, "GPT-J")
    if config.attention_scale not in (None, config.head_dim**-0.5):
        problems.append(f"attention_scale={config.attention_scale!r} (GPT-J scales by head_dim ** -0.5)")
    if config.hidden_act not in ACT2FN:
        problems.append(f"hidden_act={config.hidden_act!r} (not a transformers activation)")
    if problems:
        raise ValueError("This model cannot be expressed as GPT-J: " + "; ".join(problems))
    return GPTJConfig(
        vocab_size=config.vocab_size,
        n_positions=config.max_position_embeddings,
        n_embd=config.hidden_size,
        n_layer=config.num_hidden_layers,
        n_head=config.num_attention_heads,
        rotary_dim=config.rotary_dim or config.head_dim,
        n_inner=config.intermediate_size,
        activation_function=config.hidden_act,
        resid_pdrop=config.hidden_dropout,
        embd_pdrop=config.hidden_dropout,
        attn_pdrop=config.attention_dropout,
        layer_norm_epsilon=config.layer_norm_eps,
        initializer_range=config.initializer_range,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        tie_word_embeddings=False,
    )


def write_progen_tokenizer(tokenizer: PLMTokenizerFast, path: Path) -> None:
    """ProGen2's tokenizer.json format (a merge-free byte-level BPE over the vocabulary; `<|...|>` tokens added as
    special), with our vocabulary in id order and the `<unused_N>` fillers left out."""
    vocab = {token: token_id for token, token_id in tokenizer.get_vocab().items() if not token.startswith("<unused_")}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.post_processor = processors.ByteLevel(trim_offsets=True)
    backend.decoder = decoders.ByteLevel()
    specials = sorted((token for token in vocab if is_special_token(token)), key=vocab.__getitem__)
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    backend.save(str(path))


def convert_plm_to_gptj(source: str | Path, destination: str | Path) -> Path:
    """Convert a modeling_plm causal LM whose config GPT-J can express into a transformers GPT-J checkpoint (with a
    ProGen2-format tokenizer.json, so that `plm convert progen2` reads it back)."""
    source, destination = Path(source), Path(destination)
    check_model_folder(source)
    config = PLMConfig.from_pretrained(source)
    gptj_config = plm_config_to_gptj(config)
    config.rotary_dim = config.rotary_dim or config.head_dim
    tokenizer = PLMTokenizerFast.from_pretrained(source)
    state_dict = plm_state_dict_to_gptj(load_checkpoint_weights(source), config)
    model = GPTJForCausalLM(gptj_config).to(_dtype_of(state_dict, "transformer.wte.weight"))
    load_weights_into(model, state_dict)
    model.save_pretrained(destination)
    write_progen_tokenizer(tokenizer, destination / "tokenizer.json")
    return destination


CONVERTERS = (
    Converter(
        name="progen2",
        convert=convert_progen2,
        help="ProGen2 checkpoint (ProGen2's or GPT-J's layout; folder or hub id) -> modeling_plm causal LM",
        source_help="folder (or hub id such as hugohrban/progen2-small) with config.json (model_type progen or "
        "gptj), model.safetensors or pytorch_model.bin, tokenizer.json",
        destination_help="output folder (safetensors, config, remote code, tokenizer)",
    ),
    Converter(
        name="to-gptj",
        convert=convert_plm_to_gptj,
        help="modeling_plm causal LM -> transformers GPT-J checkpoint (ProGen2's architecture)",
        source_help="a modeling_plm checkpoint folder whose architecture GPT-J can express",
        destination_help="output folder (GPTJForCausalLM safetensors, config, ProGen2-format tokenizer.json)",
    ),
)
