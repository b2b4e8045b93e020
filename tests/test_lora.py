"""PEFT out of the box: default LoRA targets, trainable parameters, exact adapter round trip, exact merge."""

import pytest
import torch
from peft import PeftModel, get_peft_model

from modeling_plm import (
    PLMForCausalLM,
    PLMForSequenceClassification,
    PLMForTokenClassification,
    PLMTokenizerFast,
    config_from_preset,
    default_lora_config,
)


@pytest.fixture
def batch(swissprot_sequences):
    return PLMTokenizerFast()(swissprot_sequences[:6], padding=True, return_tensors="pt")


@pytest.mark.parametrize("targets", ["attention", "all-linear"])
def test_only_adapters_and_the_head_are_trainable(targets):
    model = PLMForSequenceClassification(config_from_preset("tiny", num_labels=3))
    lora = get_peft_model(model, default_lora_config("sequence-classification", targets=targets))
    trainable = {name for name, p in lora.named_parameters() if p.requires_grad}
    assert trainable
    assert all("lora_" in name or "classifier" in name for name in trainable)
    adapted = {name.split(".")[-4] for name in trainable if "lora_A" in name}  # ...q_proj.lora_A.default.weight
    expected = {"q_proj", "k_proj", "v_proj", "o_proj"} | (
        {"gate_proj", "up_proj", "down_proj"} if targets != "attention" else set()
    )
    assert adapted == expected


@pytest.mark.parametrize(
    "task, cls, num_labels",
    [
        ("sequence-regression", PLMForSequenceClassification, 1),
        ("sequence-classification", PLMForSequenceClassification, 3),
        ("token-classification", PLMForTokenClassification, 3),
    ],
)
def test_adapter_round_trip_and_merge_are_exact(tmp_path, batch, task, cls, num_labels):
    torch.manual_seed(0)
    model = cls(config_from_preset("tiny", num_labels=num_labels))
    model.save_pretrained(tmp_path / "base")
    lora = get_peft_model(model, default_lora_config(task, dropout=0.0))
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    rows = len(batch["input_ids"])
    if task == "sequence-regression":
        targets = torch.linspace(-1, 1, rows)
    elif task == "sequence-classification":
        targets = torch.arange(rows) % num_labels
    else:  # per residue, -100 at padding
        targets = (batch["input_ids"] % num_labels).masked_fill(batch["attention_mask"] == 0, -100)
    losses = []
    for _ in range(8):  # a few steps, so the adapter and head differ from their initialisation
        loss = lora(**batch, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    lora.eval()
    with torch.no_grad():
        expected = lora(**batch).logits
    lora.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    base = cls.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, expected)  # adapter and head both restored
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=0)
    assert type(merged) is cls


@pytest.mark.parametrize(
    "task, cls",
    [
        ("sequence-regression", PLMForSequenceClassification),
        ("sequence-classification", PLMForSequenceClassification),
        ("token-classification", PLMForTokenClassification),
        ("causal-lm", PLMForCausalLM),
    ],
)
def test_every_task_accepts_peft_kwargs(task, cls, batch):
    config = config_from_preset("tiny", num_labels=1 if task == "sequence-regression" else 3)
    lora = get_peft_model(cls(config), default_lora_config(task))
    rows = len(batch["input_ids"])
    labels = {
        "sequence-regression": torch.randn(rows),
        "sequence-classification": torch.arange(rows) % 3,
        "token-classification": torch.randint(0, 3, batch["input_ids"].shape),
        "causal-lm": batch["input_ids"],
    }[task]
    if labels.dim() == 2:
        labels = labels.masked_fill(batch["attention_mask"] == 0, -100)
    embeddings = lora.get_input_embeddings()(batch["input_ids"])
    out = lora(
        inputs_embeds=embeddings,
        attention_mask=batch["attention_mask"],
        labels=labels,
        output_hidden_states=True,
        output_attentions=True,
        return_dict=True,
    )
    assert out.loss is not None and len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(a is not None for a in out.attentions)
    out.loss.backward()
    assert all(p.grad is not None for name, p in lora.named_parameters() if "lora_A" in name)
    as_tuple = lora(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.is_tensor(as_tuple[0])


def test_bad_task_is_refused():
    with pytest.raises(ValueError, match="task must be one of"):
        default_lora_config("protein-folding")
