"""The architecture knobs other families need (ESM C, GPT-J/ProGen2, xTrimoPGLM, T5): each keeps the backbone's
exactness contracts (batched == single, packed == padded, eager == sdpa, cached == uncached generation), and the
pieces with a reference formula match it."""

import math

import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention

from modeling_plm import PLMConfig, PLMForCausalLM, PLMForMaskedLM
from modeling_plm.modeling_plm_layers import apply_rotary_pos_emb, relative_position_bucket

BASE = {"vocab_size": 34, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
VARIANTS = {
    "esmc": {"qk_norm": True, "residual_multiplier": 0.5, "lm_head_hidden_act": "gelu", "mlp_type": "glu"},
    "gptj": {"parallel_residual": True, "rotary_dim": 8, "hidden_act": "gelu_new", "tie_word_embeddings": False},
    "glm": {"norm_scheme": "glm_deepnorm", "mlp_type": "glu", "position_embedding_type": "rotary_2d"},
    "glm_partial_rotary": {"norm_scheme": "glm_deepnorm", "position_embedding_type": "rotary_2d", "rotary_dim": 4},
    "t5": {"position_embedding_type": "relative", "attention_scale": 1.0, "norm_type": "rmsnorm", "head_dim": 32},
}


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval()


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_knobs_keep_batched_packed_and_backend_equal(variant, attention):
    config = PLMConfig(**BASE, **VARIANTS[variant])
    model = perturbed(PLMForMaskedLM(config))
    model.set_attn_implementation(attention)
    ids = torch.randint(5, 30, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    padded = model(ids, attention_mask=mask).logits
    single = model(ids[1:, :8]).logits[0]
    torch.testing.assert_close(padded[1, :8], single, atol=1e-5, rtol=0)
    packed = model(
        torch.cat([ids[0], ids[1, :8]])[None], position_ids=torch.cat([torch.arange(12), torch.arange(8)])[None]
    ).logits[0]
    torch.testing.assert_close(packed[:12], padded[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(packed[12:], single, atol=1e-5, rtol=0)
    model.set_attn_implementation("eager" if attention == "sdpa" else "sdpa")
    torch.testing.assert_close(model(ids, attention_mask=mask).logits[1, :8], padded[1, :8], atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["esmc", "gptj", "glm"])
def test_knobs_keep_cached_generation_equal_to_uncached(variant):
    model = perturbed(PLMForCausalLM(PLMConfig(**BASE, **VARIANTS[variant])))
    prompt = torch.randint(9, 29, (2, 6))
    cached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True, min_new_tokens=12)
    uncached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False, min_new_tokens=12)
    assert torch.equal(cached, uncached)


def test_relative_buckets_match_t5():
    relative = torch.arange(-300, 300)[None, :]
    for buckets, distance in ((32, 128), (64, 128), (16, 20)):
        ours = relative_position_bucket(relative, buckets, distance)
        theirs = T5Attention._relative_position_bucket(relative, True, buckets, distance)
        assert torch.equal(ours, theirs)


def test_partial_rotary_leaves_the_other_dims_unrotated():
    # With rotary_dim 8 of head_dim 16, dims 8-15 of every head carry no position: moving a token keeps its
    # contribution to those dims of q.k, which a model without any rotation shows.
    config = PLMConfig(**BASE, rotary_dim=8)
    model = PLMForMaskedLM(config)
    attention = model.model.layers[0].self_attn
    cos, sin = model.model.rotary_emb(torch.zeros(1, 5, 64), torch.arange(5)[None])
    assert cos.shape[-1] == 8
    query = torch.randn(1, 4, 5, 16)
    rotated, _ = apply_rotary_pos_emb(query, query, cos, sin)
    assert torch.equal(rotated[..., 8:], query[..., 8:])
    assert not torch.allclose(rotated[..., 1:, :8], query[..., 1:, :8])
    assert attention.scaling == 16**-0.5


def test_glm_deepnorm_block_by_hand():
    # One layer: y = LN1(x); x = a*y + attn(y); y = LN2(x); x = a*y + mlp(y); out = LN_final(x), a = sqrt(2).
    config = PLMConfig(**{**BASE, "num_hidden_layers": 1}, norm_scheme="glm_deepnorm", lm_head_transform=False)
    model = perturbed(PLMForMaskedLM(config)).model
    ids = torch.randint(5, 30, (1, 7))
    layer = model.layers[0]
    x = model.embeddings.word_embeddings(ids)
    cos, sin = model.rotary_emb(x, torch.arange(7)[None])
    alpha = math.sqrt(2.0)
    y = layer.attention_norm(x)
    attention, _ = layer.self_attn(
        y, attention_mask=None, position_embeddings=(cos, sin), attention_implementation="eager", is_causal=False
    )
    x = alpha * y + attention
    y = layer.mlp_norm(x)
    want = model.norm(alpha * y + layer.mlp(y))
    torch.testing.assert_close(model(ids).last_hidden_state, want, atol=1e-6, rtol=0)


def test_parallel_residual_has_one_norm_and_counts_parameters():
    config = PLMConfig(**BASE, parallel_residual=True, qk_norm=True, position_embedding_type="relative")
    model = PLMForMaskedLM(config)
    assert not hasattr(model.model.layers[0], "mlp_norm")
    body = sum(p.numel() for name, p in model.model.named_parameters() if "word_embeddings" not in name)
    assert body == config.num_parameters()


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"parallel_residual": True, "norm_scheme": "deepnorm"}, "parallel_residual needs norm_scheme='pre'"),
        ({"rotary_dim": 20}, "rotary_dim must be even and in"),
        ({"rotary_dim": 7}, "rotary_dim must be even"),
        ({"rotary_dim": 8, "position_embedding_type": "absolute"}, "rotary_dim needs a rotary"),
        ({"norm_scheme": "sandwich"}, "norm_scheme must be one of"),
    ],
)
def test_knob_errors_name_the_problem(knobs, message):
    with pytest.raises(ValueError, match=message):
        PLMConfig(**BASE, **knobs)


def test_relative_bias_refuses_backends_and_causal_attention_it_cannot_serve():
    model = PLMForCausalLM(PLMConfig(**BASE, position_embedding_type="relative"))
    with pytest.raises(ValueError, match="bidirectional attention"):
        model(torch.randint(5, 30, (1, 6)))
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="cannot take"):
        model(torch.randint(5, 30, (1, 6)), attention_type="bidirectional")
