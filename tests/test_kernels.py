"""Exactness of the CPU fast paths (modeling_plm.kernels): oneDNN projections (forward and backward), generate()'s
fused projections, and the cheaper RoPE and RMSNorm formulations, each against its reference."""

import copy
import pickle

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import modeling_plm.kernels.onednn as onednn
from modeling_plm import PLMConfig, PLMForCausalLM, PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.kernels import decoding_projections
from modeling_plm.kernels.onednn import FusedProjection, OneDNNLinear
from modeling_plm.modeling_plm_layers import PLMRMSNorm, PLMRotaryEmbedding, apply_rotary_pos_emb

pytestmark = pytest.mark.skipif(not onednn.ONEDNN_AVAILABLE, reason="this torch build has no oneDNN")


def onednn_linear(fan_in: int, fan_out: int, bias: bool = True) -> OneDNNLinear:
    return OneDNNLinear.from_linear(nn.Linear(fan_in, fan_out, bias=bias))


CONFIGS = {
    "modern": dict(),  # RMSNorm, SwiGLU, no biases
    "esm": dict(norm_type="layernorm", mlp_type="mlp", hidden_act="gelu", attention_bias=True, mlp_bias=True),
    "xtrimopglm": dict(
        norm_scheme="deepnorm", mlp_type="glu", position_embedding_type="rotary_2d", num_key_value_heads=2
    ),
}


def twin_models(cls, config_name: str):
    """The same weights with torch's GEMM and with oneDNN's."""
    reference = cls(config_from_preset("tiny", cpu_linear_kernel="torch", **CONFIGS[config_name])).eval()
    fast = cls(config_from_preset("tiny", cpu_linear_kernel="onednn", **CONFIGS[config_name])).eval()
    fast.load_state_dict(reference.state_dict())
    return reference, fast


def scaled_close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal up to GEMM rounding: `tol` of the tensor's largest magnitude."""
    torch.testing.assert_close(got, want, atol=tol * max(1.0, want.abs().max().item()), rtol=0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 48), (3, 7, 48)])
def test_onednn_linear_matches_torch_forward_and_gradients(bias, shape):
    layer = onednn_linear(48, 80, bias=bias)
    x = torch.randn(*shape, requires_grad=True)
    out = layer(x)
    assert type(out.grad_fn).__name__ == "OneDNNLinearFunctionBackward"  # the oneDNN path ran
    grad_output = torch.randn_like(out)
    out.backward(grad_output)
    fast_grads = [x.grad] + [p.grad for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    expected = nn.functional.linear(x, layer.weight, layer.bias)
    expected.backward(grad_output)
    scaled_close(out, expected)
    for got, want in zip(fast_grads, [x.grad] + [p.grad for p in layer.parameters()]):
        scaled_close(got, want)


def test_onednn_linear_grads_only_what_is_asked():
    layer = onednn_linear(16, 8)
    layer.weight.requires_grad_(False)
    x = torch.randn(4, 16, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is None and layer.bias.grad is not None
    with torch.no_grad():  # inference skips autograd altogether
        assert layer(x).grad_fn is None


def test_torch_linear_kept_under_autocast_other_dtypes_and_empty_inputs():
    layer = onednn_linear(16, 8)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16  # autocast's rules, as nn.Linear
    half = copy.deepcopy(layer).to(torch.bfloat16)
    assert torch.equal(half(x.bfloat16()), nn.functional.linear(x.bfloat16(), half.weight, half.bias))
    assert layer(torch.randn(0, 16)).shape == (0, 8)


def test_kernel_choice_is_validated(monkeypatch):
    with pytest.raises(ValueError, match="cpu_linear_kernel must be one of"):
        PLMConfig(cpu_linear_kernel="mkl")
    monkeypatch.setattr(onednn, "ONEDNN_AVAILABLE", False)
    with pytest.raises(ValueError, match="needs a torch build with oneDNN"):
        PLMForMaskedLM(config_from_preset("tiny", cpu_linear_kernel="onednn"))
    fallback = PLMForMaskedLM(config_from_preset("tiny"))  # "auto" documents its choice: torch without oneDNN
    assert type(fallback.model.layers[0].mlp.up_proj) is nn.Linear


@pytest.mark.parametrize(
    "vendor, expected", [("AuthenticAMD", OneDNNLinear), ("GenuineIntel", nn.Linear), ("", nn.Linear)]
)
def test_auto_takes_onednn_only_where_mkl_is_slow(vendor, expected, monkeypatch):
    """MKL is fast on Intel CPUs and absent off x86: "auto" keeps torch's linear there, and takes oneDNN elsewhere."""
    monkeypatch.setattr(onednn, "ONEDNN_PREFERRED_CPU", onednn.onednn_preferred(vendor))
    model = PLMForMaskedLM(config_from_preset("tiny"))
    assert type(model.model.layers[0].mlp.up_proj) is expected
    assert type(model.model.layers[0].self_attn.q_proj) is expected
    assert onednn.ONEDNN_PREFERRED_CPU is onednn.onednn_preferred(vendor)


def test_kernel_choice_stays_with_the_machine(monkeypatch, tmp_path):
    """Saving never writes the kernel; a checkpoint written with "onednn" by an older version loads on a torch
    build without oneDNN, and from_pretrained's argument still chooses."""
    import json

    model = PLMForMaskedLM(config_from_preset("tiny", cpu_linear_kernel="onednn"))
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    assert "cpu_linear_kernel" not in config_file.read_text()
    assert "cpu_linear_kernel" not in model.config.to_diff_dict()
    stored = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**stored, "cpu_linear_kernel": "onednn"}))  # as versions <= 0.1 wrote it

    monkeypatch.setattr(onednn, "ONEDNN_AVAILABLE", False)
    loaded = PLMForMaskedLM.from_pretrained(tmp_path)
    assert loaded.config.cpu_linear_kernel == "auto"
    assert type(loaded.model.layers[0].mlp.up_proj) is nn.Linear
    chosen = PLMForMaskedLM.from_pretrained(tmp_path, cpu_linear_kernel="torch")
    assert type(chosen.model.layers[0].mlp.up_proj) is nn.Linear
    with pytest.raises(ValueError, match="needs a torch build with oneDNN"):
        PLMForMaskedLM.from_pretrained(tmp_path, cpu_linear_kernel="onednn")


@pytest.mark.parametrize("config_name", CONFIGS)
def test_model_outputs_and_gradients_match_across_kernels(config_name, swissprot_sequences):
    reference, fast = twin_models(PLMForMaskedLM, config_name)
    reference.train(), fast.train()
    batch = PLMTokenizerFast()(swissprot_sequences[:3], padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(torch.rand(batch["input_ids"].shape) > 0.15, -100)
    outputs = [model(**batch, labels=labels) for model in (reference, fast)]
    for output in outputs:
        output.loss.backward()
    scaled_close(outputs[1].logits, outputs[0].logits)
    for want, got in zip(reference.parameters(), fast.parameters()):
        if want.grad is not None:
            scaled_close(got.grad, want.grad, tol=1e-4)


def greedy(model, input_ids, **options):
    return model.generate(
        input_ids,
        max_new_tokens=10,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
        output_scores=True,
        return_dict_in_generate=True,
        **options,
    )


@pytest.mark.parametrize("config_name", CONFIGS)
def test_generate_on_packed_projections_equals_unpacked(config_name, monkeypatch):
    reference, fast = twin_models(PLMForCausalLM, config_name)
    calls = []
    original_run = FusedProjection.run
    monkeypatch.setattr(FusedProjection, "run", lambda self, x: calls.append(1) or original_run(self, x))
    input_ids = torch.randint(5, 25, (3, 6))
    packed, unpacked = greedy(fast, input_ids), greedy(reference, input_ids)
    layers, groups = fast.config.num_hidden_layers, 4  # q/k/v, output, MLP in, MLP out
    assert len(calls) == 10 * layers * groups  # prefill and every decoding step ran packed
    assert torch.equal(packed.sequences, unpacked.sequences)
    for got, want in zip(packed.scores, unpacked.scores):
        scaled_close(got, want)
    for layer in fast.model.layers:
        for block, output in ((layer.self_attn, layer.self_attn.o_proj), (layer.mlp, layer.mlp.down_proj)):
            assert "project_input" not in block.__dict__ and output.packed is None
    copy.deepcopy(fast), pickle.dumps(fast)  # nothing packed is left behind


def test_assisted_generation_equals_greedy():
    reference, fast = twin_models(PLMForCausalLM, "modern")
    input_ids = torch.randint(5, 25, (1, 6))
    plain = greedy(fast, input_ids)
    assisted = greedy(fast, input_ids, assistant_model=copy.deepcopy(fast))  # the drafts run unpacked
    assert torch.equal(plain.sequences, assisted.sequences)
    assert torch.equal(plain.sequences, greedy(reference, input_ids).sequences)


def test_adapters_and_hooks_see_their_own_calls_during_generate():
    _, model = twin_models(PLMForCausalLM, "modern")
    input_ids = torch.randint(5, 25, (2, 5))
    hooked = []
    handle = model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda *args: hooked.append(1))
    greedy(model, input_ids)
    handle.remove()
    assert len(hooked) == 10  # one call per forward: q/k/v of that layer were not packed

    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, parameter in lora.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter, std=0.5)  # a non-zero adapter, so that skipping it would show
    with decoding_projections(lora):
        attention = lora.base_model.model.model.layers[0].self_attn
        assert "project_input" not in attention.__dict__ and attention.o_proj.packed is not None
    adapted = greedy(lora, input_ids)
    merged = greedy(lora.merge_and_unload(), input_ids)
    assert torch.equal(adapted.sequences, merged.sequences)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


@pytest.mark.parametrize("position_embedding_type", ["rotary", "rotary_2d"])
def test_rope_equals_the_rotate_half_formula_exactly(position_embedding_type):
    config = config_from_preset("tiny", position_embedding_type=position_embedding_type)
    rotary = PLMRotaryEmbedding(config)
    position_ids, block_position_ids = torch.randint(0, 500, (2, 9)), torch.randint(0, 5, (2, 9))
    q, k = torch.randn(2, 4, 9, config.head_dim), torch.randn(2, 4, 9, config.head_dim)
    parts = 2 if position_embedding_type == "rotary_2d" else 1
    got = apply_rotary_pos_emb(q, k, *rotary(q, position_ids, block_position_ids), parts=parts)

    # The textbook form: angles cat(freqs, freqs) per stream, x * cos + rotate_half(x) * sin per part.
    streams = [position_ids, block_position_ids][:parts]
    angles = [(p[..., None].float() * rotary.inv_freq) for p in streams]
    angles = torch.cat([torch.cat((a, a), -1) for a in angles], -1).unsqueeze(1)
    cos, sin = angles.cos(), angles.sin()

    def rotate(x):
        return torch.cat([rotate_half(part) for part in x.chunk(parts, -1)], -1)

    assert torch.equal(got[0], q * cos + rotate(q) * sin)
    assert torch.equal(got[1], k * cos + rotate(k) * sin)


def test_float32_rms_norm_equals_the_two_step_form_exactly():
    norm = PLMRMSNorm(96, eps=1e-5)
    nn.init.normal_(norm.weight)
    x = torch.randn(3, 17, 96) * 4
    assert torch.equal(norm(x), norm.weight * nn.functional.rms_norm(x, (96,), eps=1e-5))
