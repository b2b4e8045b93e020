"""An independent, plain-torch AMPLIFY (chandar-lab/AMPLIFY, `amplify/model/amplify.py`, and the hub's `amplify.py`),
the oracle of tests/test_family_amplify.py.

Its parameter names are AMPLIFY's, so `state_dict()` is an AMPLIFY checkpoint. What AMPLIFY computes, written out:

- token embedding `encoder`, then (optionally) `layer_norm_1`;
- pre-LN blocks `transformer_encoder.{i}`: `x + wo(attention(attention_norm(x)))`, then `x + ffn(ffn_norm(x))`;
- q and k rotated as complex numbers: dims (2j, 2j+1) of each head are one complex number times e^(i t theta_j),
  theta_j = 10000^(-2j / head_dim);
- attention with AMPLIFY's additive pad mask (0 for real keys, -inf for padded ones), softmax(q.k / sqrt(d)) v:
  plain softmax (`eager`) or torch's SDPA, the path AMPLIFY itself takes off GPU (`sdpa`); xformers'
  memory-efficient attention is the same maths on GPU;
- xformers' SwiGLU in plain torch: one fused `w12` (gate rows first, then up rows), silu(x1) * x2, then `w3`;
  AMPLIFY shrinks the FFN width to 2/3 of `intermediate_size`, rounded up to a multiple of 8; ReLU and GELU
  (erf) FFNs are `ffn.0` / `ffn.2` of an `nn.Sequential`;
- RMSNorm: x * rsqrt(mean(x^2) + eps), normalised in float32, times `weight`; or LayerNorm (`rms_norm=False`);
- `layer_norm_2` (when `layer_norm_before_last_layer`) and the `decoder` Linear (with bias) give the logits;
- `hidden_states` are the outputs of the blocks (no embedding entry, the last one before `layer_norm_2`).
"""

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

# AMPLIFY's vocabulary in id order (conf/tokenizer/amplify_vocab.txt), and its special ids (amplify_tokenizer.yaml).
AMPLIFY_VOCAB = "<pad> <unk> <mask> <bos> <eos> | L A G V S E R T I D P K Q N F Y M H W C B".split()
AMPLIFY_SPECIAL_IDS = {"pad_token_id": 0, "unk_token_id": 1, "mask_token_id": 2, "bos_token_id": 3, "eos_token_id": 4}


@dataclass
class AmplifyConfig:
    """AMPLIFYConfig's fields and defaults (the 350M shape)."""

    hidden_size: int = 960
    num_hidden_layers: int = 32
    num_attention_heads: int = 15
    intermediate_size: int = 3840
    dropout_prob: float = 0.0
    embedding_init_range: float = 0.02
    decoder_init_range: float = 0.02
    rms_norm: bool = True
    norm_eps: float = 1e-5
    hidden_act: str = "SwiGLU"
    layer_norm_after_embedding: bool = False
    layer_norm_before_last_layer: bool = True
    vocab_size: int = 27
    ffn_bias: bool = False
    att_bias: bool = False
    pad_token_id: int = 0
    max_length: int = 2048

    def to_hub_json(self) -> dict:
        """config.json as the hub's AMPLIFY checkpoints lay it out (remote code `amplify.py`)."""
        return {
            **asdict(self),
            **{key: value for key, value in AMPLIFY_SPECIAL_IDS.items() if key != "pad_token_id"},
            "model_type": "AMPLIFY",
            "architectures": ["AMPLIFY"],
            "auto_map": {"AutoConfig": "amplify.AMPLIFYConfig", "AutoModel": "amplify.AMPLIFY"},
            "torch_dtype": "float32",
        }


def swiglu_width(intermediate_size: int) -> int:
    """AMPLIFY's SwiGLU width: 2/3 of intermediate_size, rounded up to a multiple of 8."""
    width = int(2 * intermediate_size / 3)
    return 8 * ((width + 7) // 8)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


def make_norm(config: AmplifyConfig) -> nn.Module:
    if config.rms_norm:
        return RMSNorm(config.hidden_size, config.norm_eps)
    return nn.LayerNorm(config.hidden_size, config.norm_eps)


class SwiGLU(nn.Module):
    """xformers.ops.SwiGLU with packed weights, in plain torch."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int, bias: bool):
        super().__init__()
        self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(nn.functional.silu(x1) * x2)


def make_ffn(config: AmplifyConfig) -> nn.Module:
    act = config.hidden_act.lower()
    h, width, bias = config.hidden_size, config.intermediate_size, config.ffn_bias
    if act == "swiglu":
        return SwiGLU(h, swiglu_width(width), h, bias=bias)
    activations = {"relu": nn.ReLU, "gelu": nn.GELU}
    if act not in activations:
        raise ValueError(f"Unsupported hidden_act: {config.hidden_act}")
    return nn.Sequential(nn.Linear(h, width, bias=bias), activations[act](), nn.Linear(width, h, bias=bias))


def rotary_table(head_dim: int, length: int, theta: float = 10000.0) -> torch.Tensor:
    """e^(i t theta_j) for positions t < length and pairs j < head_dim / 2 (complex64)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(length).float(), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x: (batch, seq, heads, head_dim), consecutive dims paired as (real, imaginary)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    rotated = pairs * table[None, :, None, :]
    return torch.view_as_real(rotated).flatten(3).type_as(x)


class EncoderBlock(nn.Module):
    def __init__(self, config: AmplifyConfig):
        super().__init__()
        self.config = config
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        h, bias = config.hidden_size, config.att_bias
        self.q, self.k, self.v, self.wo = (nn.Linear(h, h, bias=bias) for _ in range(4))
        self.ffn = make_ffn(config)
        self.attention_norm = make_norm(config)
        self.ffn_norm = make_norm(config)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None, table: torch.Tensor, backend: str):
        x = x + self.attention(self.attention_norm(x), pad_mask, table, backend)
        return x + self.ffn(self.ffn_norm(x))

    def attention(self, x: torch.Tensor, pad_mask: torch.Tensor | None, table: torch.Tensor, backend: str):
        batch, length, _ = x.shape
        split = (batch, length, self.heads, self.head_dim)
        q, k = rotate(self.q(x).view(split), table), rotate(self.k(x).view(split), table)
        q, k, v = (t.transpose(1, 2) for t in (q, k, self.v(x).view(split)))  # (batch, heads, seq, head_dim)
        if backend == "sdpa":
            out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=pad_mask)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            if pad_mask is not None:
                scores = scores + pad_mask
            out = scores.softmax(-1) @ v
        return self.wo(out.transpose(1, 2).reshape(batch, length, -1))


class AmplifyReference(nn.Module):
    def __init__(self, config: AmplifyConfig):
        super().__init__()
        self.config = config
        self.encoder = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        if config.layer_norm_after_embedding:
            self.layer_norm_1 = make_norm(config)
        self.transformer_encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_hidden_layers))
        if config.layer_norm_before_last_layer:
            self.layer_norm_2 = make_norm(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        # A plain attribute as in AMPLIFY: not part of the state dict.
        self.freqs_cis = rotary_table(config.hidden_size // config.num_attention_heads, config.max_length)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, backend: str = "eager"
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`attention_mask`: AMPLIFY's additive (batch, seq) pad mask. Returns the logits and the block outputs."""
        pad_mask = None
        if attention_mask is not None:
            assert attention_mask.dtype != torch.bool and not (attention_mask == 1).any(), "additive mask expected"
            pad_mask = attention_mask[:, None, None, :].expand(
                -1, self.config.num_attention_heads, input_ids.shape[1], -1
            )
        table = self.freqs_cis[: input_ids.shape[1]]
        x = self.encoder(input_ids)
        if self.config.layer_norm_after_embedding:
            x = self.layer_norm_1(x)
        hidden_states = []
        for block in self.transformer_encoder:
            x = block(x, pad_mask, table, backend)
            hidden_states.append(x)
        if self.config.layer_norm_before_last_layer:
            x = self.layer_norm_2(x)
        return self.decoder(x), hidden_states


def additive_pad_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A 1/0 tokenizer mask as AMPLIFY takes it: 0 where a key is real, -inf where it is padding."""
    return torch.zeros(attention_mask.shape).masked_fill(attention_mask == 0, float("-inf"))


def amplify_encode(sequence: str, vocab: list[str] = AMPLIFY_VOCAB) -> list[int]:
    """AMPLIFY's ProteinTokenizer.encode: one id per residue (unknown ones -> <unk>) between <bos> and <eos>."""
    ids = {token: index for index, token in enumerate(vocab)}
    unk = AMPLIFY_SPECIAL_IDS["unk_token_id"]
    return [
        AMPLIFY_SPECIAL_IDS["bos_token_id"],
        *(ids.get(r, unk) for r in sequence),
        AMPLIFY_SPECIAL_IDS["eos_token_id"],
    ]
