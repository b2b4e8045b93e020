"""Every converted family fine-tunes with `plm finetune` (LoRA on the backbone's projections, a fresh head), and the
saved adapter reloads to the same predictions."""

import csv
import gzip

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer

from modeling_plm.hub.converters.amplify import convert_amplify
from modeling_plm.hub.converters.progen2 import convert_progen2
from modeling_plm.hub.converters.rita import convert_rita
from modeling_plm.hub.converters.t5 import convert_t5
from modeling_plm.hub.converters.xtrimopglm import convert_xtrimopglm
from modeling_plm.training.finetune import FinetuneConfig, finetune, load_finetuned
from tests import reference_proteinglm
from tests.conftest import data_path
from tests.test_family_amplify import build_amplify, save_amplify
from tests.test_family_progen2 import build_gptj, save_gptj
from tests.test_family_rita import build_oracle, save_rita
from tests.test_family_t5 import build_t5, save_t5

GB1 = "flip/gb1/three_vs_rest.csv.gz"


def converted_small(family: str, folder) -> str:
    """A small random model of the family, saved in its own layout and converted."""
    if family == "t5":
        return str(convert_t5(save_t5(build_t5("ankh_small"), folder / "src", "ankh_small"), folder / "plm"))
    if family == "progen2":
        return str(convert_progen2(save_gptj(build_gptj("small"), folder / "src"), folder / "plm"))
    if family == "rita":
        return str(convert_rita(save_rita(build_oracle("small"), folder / "src"), folder / "plm"))
    if family == "amplify":
        return str(convert_amplify(save_amplify(build_amplify("small"), folder / "src"), folder / "plm"))
    config = reference_proteinglm.ProteinGLMConfig(
        num_layers=2, hidden_size=64, ffn_hidden_size=96, kv_channels=16, num_attention_heads=4
    )
    model = reference_proteinglm.build(config, output_layer_bias=True, seed=0)
    return str(convert_xtrimopglm(reference_proteinglm.save_checkpoint(model, folder / "src"), folder / "plm"))


@pytest.fixture(scope="module")
def gb1_csv(tmp_path_factory):
    with gzip.open(data_path(GB1), "rt") as handle:
        rows = list(csv.DictReader(handle))
    rows = [r for r in rows if r["set"] == "train"][:48] + [r for r in rows if r["set"] == "test"][:16]
    path = tmp_path_factory.mktemp("gb1") / "gb1.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sequence", "target", "set", "validation"])
        writer.writeheader()
        writer.writerows({**r, "validation": str(i % 4 == 0)} for i, r in enumerate(rows))
    return path


@pytest.mark.parametrize("family", ["t5", "progen2", "rita", "amplify", "xtrimopglm"])
def test_converted_family_fine_tunes_with_lora_and_reloads(family, tmp_path, gb1_csv):
    torch.manual_seed(0)
    base = converted_small(family, tmp_path)
    output = finetune(
        FinetuneConfig(
            model=base,
            task="sequence-regression",
            method="lora",
            train_file=str(gb1_csv),
            label_column="target",
            split_column="set",
            validation_column="validation",
            epochs=1,
            batch_size=16,
            output_dir=str(tmp_path / "out"),
        )
    )
    assert (output / "adapter_model.safetensors").exists()
    model = load_finetuned(output).eval()
    inputs = model_inputs(base, ["MKTAYIAKQRQISFVK", "MSLRSEHIW"])
    with torch.no_grad():
        first, second = model(**inputs).logits, model(**inputs).logits
    assert first.shape == (2, 1) and torch.isfinite(first).all() and torch.equal(first, second)
    # The adapter sits on every layer's attention projections of the converted backbone.
    adapter = load_file(output / "adapter_model.safetensors")
    layers = AutoConfig.from_pretrained(base).num_hidden_layers
    for layer in range(layers):
        for projection in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert f"base_model.model.model.layers.{layer}.self_attn.{projection}.lora_A.weight" in adapter
    # The classifier reads the backbone as the family was trained: both ways, or causally for causal-only models.
    merged = load_finetuned(output, merge=True).eval()
    causal = AutoConfig.from_pretrained(base).embedding_attention == "causal"
    assert causal == (family in ("progen2", "rita"))
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, first, atol=1e-5, rtol=0)


def model_inputs(base: str, sequences: list[str]) -> dict:
    return AutoTokenizer.from_pretrained(base)(sequences, padding=True, return_tensors="pt")
