"""An independent, plain-torch xTrimoPGLM / ProteinGLM (the hub's `modeling_proteinglm.py` of
biomap-research/proteinglm-*, which descends from xTrimoPGLM's Megatron `transformer.py`), the oracle of
tests/test_family_xtrimopglm.py.

Its parameter names are ProteinGLM's, so `state_dict()` is a ProteinGLM checkpoint, and it keeps ProteinGLM's
layout: activations are (seq, batch, hidden) inside, hidden states come back that way, logits (batch, seq, vocab).
What ProteinGLM computes, written out:

- token embedding `transformer.embedding.word_embeddings` (no scaling, no position table, no norm);
- blocks `transformer.encoder.layers.{i}` with GLM's DeepNorm (`deepnorm=True` forces
  `apply_residual_connection_post_layernorm`): `y = input_layernorm(x)`, `x = alpha * y + attention(y)`,
  `y = post_attention_layernorm(x)`, `x = alpha * y + mlp(y)`, alpha = (2 * num_layers) ** 0.5; without deepnorm and
  without the post-layernorm residual it is plain pre-LN; `final_layernorm` once after the last block;
- `self_attention.query_key_value`: one fused projection whose output is, per head, [q_h | k_h | v_h]
  (with `multi_query_attention`: all queries, then the key groups, then the value groups);
- RoPE in the rotate-half layout (dims i and i + d/2 of a rotated block are a pair), base 10000, over the whole head
  (`rotary_embedding_2d=False`), or 2-D: the first half of each head rotated by `position_ids[:, 0]`, the second by
  `position_ids[:, 1]`, each half with its own table of dim head_dim / 2. Positions are arange(L) (1-D); 2-D
  masked-LM positions are (arange(L), 0) and 2-D causal ones (0, arange(L)) (`get_position_ids`);
- attention softmax(q.k / sqrt(d)) v, either torch's SDPA (`use_pytorch_sdpa`) or the Megatron path: scores scaled by
  1 / (sqrt(d) * layer_number), then multiplied back by layer_number in float32 (`apply_query_key_layer_scaling`);
  masks from `get_masks` (bool, True = hidden): padded keys hidden, padded query rows see every key;
- `mlp.dense_h_to_4h` (2 * ffn rows), chunked in two halves: the first half is multiplied, the second goes through
  the activation (GeGLU: x0 * gelu(x1), erf GELU; SwiGLU: x0 * silu(x1)), then `mlp.dense_4h_to_h`;
- `transformer.output_layer`, an untied Linear (the hub code gives it a bias);
- `hidden_states`: the input of every block, then the final-normed output of the last block (num_layers + 1);
- the tokenizer: one token per character of `tokenizer.model` (<pad>, 27 residue letters, <mask> <gmask> <smask> <eod>
  <sop> <eop> <eos> <unk>), `<eos>` appended; the causal checkpoints' native prompt is `<gmask> <sop> <eos>` +
  residues; the embedding table is padded to 128 rows.
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

# tokenizer.model of the ProteinGLM checkpoints, one token per line, line number = id.
PROTEINGLM_VOCAB = [
    "<pad>",
    *"LAGVSERTIDPKQNFYMHWCXBUZO.-",
    *"<mask> <gmask> <smask> <eod> <sop> <eop> <eos> <unk>".split(),
]
EOS_ID = PROTEINGLM_VOCAB.index("<eos>")
# What ProteinGLM's chat template puts before the residues of a causal prompt.
NATIVE_CLM_PREFIX = ["<gmask>", "<sop>", "<eos>"]


@dataclass
class ProteinGLMConfig:
    """ProteinGLMConfig's architecture fields (hub config.json), defaulting to the 1B shape."""

    num_layers: int = 24
    padded_vocab_size: int = 128
    hidden_size: int = 2048
    ffn_hidden_size: int = 5461
    kv_channels: int = 64
    num_attention_heads: int = 32
    seq_length: int = 1024
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    layernorm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    glu_activation: str = "geglu"
    rmsnorm: bool = False
    deepnorm: bool = True
    apply_residual_connection_post_layernorm: bool = True
    post_layer_norm: bool = True
    add_bias_linear: bool = True
    add_qkv_bias: bool = True
    multi_query_attention: bool = False
    multi_query_group_num: int = 1
    apply_query_key_layer_scaling: bool = True
    attention_softmax_in_fp32: bool = True
    rotary_embedding_2d: bool = False
    use_pytorch_sdpa: bool = True
    is_causal: bool = False
    untie_head: bool = False
    head_num: int = 1
    quantization_bit: int = 0
    moe: bool = False

    def to_hub_json(self) -> dict:
        """config.json laid out as the hub's ProteinGLM checkpoints have it."""
        head = "ProteinGLMForCasualLM" if self.is_causal else "ProteinGLMForMaskedLM"
        return {
            **asdict(self),
            "vocab_size": self.padded_vocab_size,
            "model_type": "ProteinGLM",
            "architectures": [head],
            "torch_dtype": "float32",
        }


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        # A persistent buffer, as in ProteinGLM: its checkpoints carry the frequencies.
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, dim, 2).float() / dim))

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), self.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x: (seq, batch, heads, dim); positions: (seq, batch) indexing the tables."""
    cos, sin = F.embedding(positions, cos).unsqueeze(2), F.embedding(positions, sin).unsqueeze(2)
    return x * cos + rotate_half(x) * sin


class CoreAttention(nn.Module):
    def __init__(self, config: ProteinGLMConfig, layer_number: int):
        super().__init__()
        self.config = config
        self.layer_number = layer_number

    def forward(self, q, k, v, mask):
        """q, k, v: (seq, batch, heads, dim); mask: bool (batch, 1, sq, sk), True = hidden, or None."""
        q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))
        if self.config.use_pytorch_sdpa:
            context = self.sdpa(q, k, v, mask)
        else:
            context = self.megatron(q, k, v, mask)
        batch, heads, seq, dim = context.shape
        return context.permute(2, 0, 1, 3).reshape(seq, batch, heads * dim)

    def sdpa(self, q, k, v, mask):
        if mask is None:
            causal = self.config.is_causal and q.shape[2] == k.shape[2]
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=~mask)

    def megatron(self, q, k, v, mask):
        coefficient = float(self.layer_number) if self.config.apply_query_key_layer_scaling else 1.0
        scores = torch.matmul(q, k.transpose(-1, -2)) / (math.sqrt(q.shape[-1]) * coefficient)
        scores = scores.float() * coefficient
        if mask is None and self.config.is_causal and q.shape[2] == k.shape[2]:
            mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril().logical_not()
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        return torch.matmul(F.softmax(scores, dim=-1).type_as(v), v)


class SelfAttention(nn.Module):
    def __init__(self, config: ProteinGLMConfig, layer_number: int):
        super().__init__()
        self.config = config
        self.heads, self.dim = config.num_attention_heads, config.kv_channels
        self.groups = config.multi_query_group_num if config.multi_query_attention else self.heads
        width = self.dim * (self.heads + 2 * self.groups)
        has_qkv_bias = config.add_bias_linear or config.add_qkv_bias
        self.query_key_value = nn.Linear(config.hidden_size, width, bias=has_qkv_bias)
        self.core_attention = CoreAttention(config, layer_number)
        self.dense = nn.Linear(self.heads * self.dim, config.hidden_size, bias=config.add_bias_linear)
        self.rotary_emb = RotaryEmbedding(self.dim // 2 if config.rotary_embedding_2d else self.dim)

    def split_heads(self, mixed: torch.Tensor):
        seq, batch = mixed.shape[:2]
        if not self.config.multi_query_attention:
            per_head = mixed.view(seq, batch, self.heads, 3 * self.dim)
            return per_head.split(self.dim, dim=-1)
        q, k, v = mixed.split([self.heads * self.dim, self.groups * self.dim, self.groups * self.dim], dim=-1)
        return q.view(seq, batch, self.heads, self.dim), *(t.view(seq, batch, self.groups, self.dim) for t in (k, v))

    def apply_positions(self, q, k, position_ids):
        cos, sin = self.rotary_emb(int(position_ids.max()) + 1)
        if not self.config.rotary_embedding_2d:
            positions = position_ids.transpose(0, 1)
            return rotate(q, cos, sin, positions), rotate(k, cos, sin, positions)
        positions, blocks = position_ids[:, 0].transpose(0, 1), position_ids[:, 1].transpose(0, 1)
        (q1, q2), (k1, k2) = q.chunk(2, dim=-1), k.chunk(2, dim=-1)
        q = torch.cat((rotate(q1, cos, sin, positions), rotate(q2, cos, sin, blocks)), dim=-1)
        k = torch.cat((rotate(k1, cos, sin, positions), rotate(k2, cos, sin, blocks)), dim=-1)
        return q, k

    def forward(self, hidden_states, mask, position_ids, kv_cache=None):
        q, k, v = self.split_heads(self.query_key_value(hidden_states))
        q, k = self.apply_positions(q, k, position_ids)
        if kv_cache is not None:
            k, v = torch.cat((kv_cache[0], k), dim=0), torch.cat((kv_cache[1], v), dim=0)
        present = (k, v)
        if self.groups != self.heads:
            repeat = self.heads // self.groups
            k, v = k.repeat_interleave(repeat, dim=2), v.repeat_interleave(repeat, dim=2)
        return self.dense(self.core_attention(q, k, v, mask)), present


class MLP(nn.Module):
    def __init__(self, config: ProteinGLMConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, 2 * config.ffn_hidden_size, bias=config.add_bias_linear)
        self.dense_4h_to_h = nn.Linear(config.ffn_hidden_size, config.hidden_size, bias=config.add_bias_linear)
        self.activation = {"geglu": F.gelu, "swiglu": F.silu}[config.glu_activation]

    def forward(self, x):
        multiplied, activated = self.dense_h_to_4h(x).chunk(2, dim=-1)
        return self.dense_4h_to_h(multiplied * self.activation(activated))


class Block(nn.Module):
    def __init__(self, config: ProteinGLMConfig, layer_number: int):
        super().__init__()
        eps = config.layernorm_epsilon
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.self_attention = SelfAttention(config, layer_number)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = MLP(config)
        self.residual_from_norm = config.deepnorm or config.apply_residual_connection_post_layernorm
        self.alpha = (2 * config.num_layers) ** 0.5 if config.deepnorm else 1.0

    def forward(self, x, mask, position_ids, kv_cache=None):
        normed = self.input_layernorm(x)
        attention, present = self.self_attention(normed, mask, position_ids, kv_cache)
        x = (normed if self.residual_from_norm else x) * self.alpha + attention
        normed = self.post_attention_layernorm(x)
        x = (normed if self.residual_from_norm else x) * self.alpha + self.mlp(normed)
        return x, present


class Encoder(nn.Module):
    def __init__(self, config: ProteinGLMConfig):
        super().__init__()
        self.layers = nn.ModuleList(Block(config, number + 1) for number in range(config.num_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)

    def forward(self, x, mask, position_ids, kv_caches=None):
        hidden_states, presents = [], []
        for index, layer in enumerate(self.layers):
            hidden_states.append(x)
            x, present = layer(x, mask, position_ids, None if kv_caches is None else kv_caches[index])
            presents.append(present)
        x = self.final_layernorm(x)
        return x, tuple(hidden_states) + (x,), tuple(presents)


class Embedding(nn.Module):
    def __init__(self, config: ProteinGLMConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)


class ProteinGLMModel(nn.Module):
    def __init__(self, config: ProteinGLMConfig, output_layer_bias: bool = True):
        super().__init__()
        self.embedding = Embedding(config)
        self.encoder = Encoder(config)
        self.output_layer = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=output_layer_bias)


def get_masks(input_ids, past_length: int, padding_mask, is_causal: bool) -> torch.Tensor:
    """ProteinGLM's bool mask (batch, 1, sq, past + sq), True = hidden."""
    batch, seq = input_ids.shape
    visible = torch.ones(batch, seq, seq)
    if is_causal:
        visible = visible.tril()
    if past_length:
        visible = torch.cat((torch.ones(batch, seq, past_length), visible), dim=-1)
    if padding_mask is not None:
        visible = visible * padding_mask.unsqueeze(1)
        if not past_length:
            visible = visible - (padding_mask.unsqueeze(-1) - 1)  # padded query rows see every key
    return (visible < 0.5).unsqueeze(1)


def get_position_ids(input_ids, rotary_embedding_2d: bool, is_causal: bool, start: int = 0) -> torch.Tensor:
    batch, seq = input_ids.shape
    positions = torch.arange(start, start + seq).unsqueeze(0).repeat(batch, 1)
    if not rotary_embedding_2d:
        return positions
    zeros = torch.zeros_like(positions)
    streams = (zeros, positions) if is_causal else (positions, zeros)
    return torch.stack(streams, dim=1)


@dataclass
class Output:
    logits: torch.Tensor
    hidden_states: tuple
    past_key_values: tuple


class ProteinGLMForLM(nn.Module):
    """ProteinGLMForMaskedLM (is_causal=False) or ProteinGLMForCasualLM (is_causal=True)."""

    def __init__(self, config: ProteinGLMConfig, output_layer_bias: bool = True):
        super().__init__()
        self.config = config
        self.transformer = ProteinGLMModel(config, output_layer_bias)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None) -> Output:
        past_length = 0 if past_key_values is None else past_key_values[0][0].shape[0]
        if position_ids is None:
            config = self.config
            position_ids = get_position_ids(input_ids, config.rotary_embedding_2d, config.is_causal, past_length)
        mask = self.mask(input_ids, attention_mask, past_length)
        x = self.transformer.embedding.word_embeddings(input_ids).transpose(0, 1)
        x, hidden_states, presents = self.transformer.encoder(x, mask, position_ids, past_key_values)
        logits = self.transformer.output_layer(x).transpose(0, 1)
        return Output(logits=logits, hidden_states=hidden_states, past_key_values=presents)

    def mask(self, input_ids, attention_mask, past_length: int):
        if not self.config.is_causal:  # ProteinGLMForMaskedLM always builds the full mask
            return get_masks(input_ids, past_length, attention_mask, is_causal=False)
        has_padding = attention_mask is not None and not bool(attention_mask.all())
        if has_padding or (past_length and input_ids.shape[1] != 1):
            return get_masks(input_ids, past_length, attention_mask, is_causal=True)
        return None  # causal without padding: SDPA's is_causal / a tril mask, or one step over the whole cache


@torch.no_grad()
def greedy_generate(model: ProteinGLMForLM, input_ids: torch.Tensor, max_new_tokens: int, eos_id: int = EOS_ID):
    """ProteinGLM's own greedy loop with its key-value cache: one prompt row, stops at `<eos>`."""
    config = model.config
    output = model(input_ids)
    tokens = input_ids
    for step in range(max_new_tokens):
        next_token = output.logits[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat((tokens, next_token), dim=1)
        if int(next_token) == eos_id or step == max_new_tokens - 1:
            break
        position_ids = get_position_ids(next_token, config.rotary_embedding_2d, config.is_causal, tokens.shape[1] - 1)
        output = model(next_token, position_ids=position_ids, past_key_values=output.past_key_values)
    return tokens


def encode(sequence: str) -> list[int]:
    """ProteinGLMTokenizer's ids of a sequence with its special tokens: each character, then `<eos>`."""
    return [PROTEINGLM_VOCAB.index(character) for character in sequence] + [EOS_ID]


def native_prompt(residues: str) -> list[int]:
    return [PROTEINGLM_VOCAB.index(token) for token in NATIVE_CLM_PREFIX] + encode(residues)[:-1]


def build(config: ProteinGLMConfig, output_layer_bias: bool = True, seed: int = 0) -> ProteinGLMForLM:
    """A random ProteinGLM in eval mode with every weight drawn (norm weights around 1, biases and norm biases
    non-zero), at a scale where attention is far from uniform, so no mix-up can hide."""
    torch.manual_seed(seed)
    model = ProteinGLMForLM(config, output_layer_bias).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(0.0, config.hidden_size**-0.5)
            if "layernorm" in name and name.endswith("weight"):
                parameter.add_(1.0)
    return model


def save_checkpoint(model: ProteinGLMForLM, folder: Path) -> Path:
    """A hub-style ProteinGLM folder: config.json, model.safetensors, tokenizer.model, tokenizer_config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.config.to_hub_json(), indent=2))
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "tokenizer.model").write_text("\n".join(PROTEINGLM_VOCAB))
    tokenizer_config = {"eos_token": "<eos>", "pad_token": "<pad>", "mask_token": "<mask>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


def load_checkpoint(folder: Path) -> ProteinGLMForLM:
    """The reference model of a ProteinGLM folder (strict: every weight must be there and known)."""
    from safetensors.torch import load_file

    fields = set(ProteinGLMConfig.__dataclass_fields__)
    hub = json.loads((folder / "config.json").read_text())
    config = ProteinGLMConfig(**{key: value for key, value in hub.items() if key in fields})
    state_dict = load_file(folder / "model.safetensors")
    model = ProteinGLMForLM(config, "transformer.output_layer.bias" in state_dict).eval()
    model.load_state_dict(state_dict, strict=True)
    return model
