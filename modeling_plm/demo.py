"""The bundled demo: one small checkpoint used as a masked LM, a causal LM and a GLM infiller on real sequences."""

import itertools
import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from .data import find_data_dir, read_fasta
from .presets import config_from_preset
from .tokenization_plm import PLMTokenizerFast

SWISSPROT_SAMPLE = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"


def default_fasta() -> Path:
    data_dir = find_data_dir()
    if data_dir is None or not (data_dir / SWISSPROT_SAMPLE).exists():
        raise FileNotFoundError(
            f"Swiss-Prot sample not found: pass --fasta, set PLM_DATA_DIR, or put shared/data beside the repo "
            f"(looked for <data>/{SWISSPROT_SAMPLE})."
        )
    return data_dir / SWISSPROT_SAMPLE


def run_demo(
    preset: str = "small",
    fasta: str | Path | None = None,
    num_sequences: int = 8,
    max_length: int = 200,
    output_dir: str | Path = "outputs/demo-model",
    seed: int = 0,
) -> dict[str, float]:
    """Build a model, save it, reload it through the Auto classes and use the one checkpoint three ways."""
    torch.manual_seed(seed)
    fasta = Path(fasta) if fasta else default_fasta()
    records = list(itertools.islice((r for r in read_fasta(fasta) if len(r.sequence) <= max_length), num_sequences))
    print(f"Read {len(records)} sequences of <= {max_length} residues from {fasta}")

    tokenizer = PLMTokenizerFast(invalid_residues="X")
    config = config_from_preset(preset)
    tokenizer.model_max_length = config.max_position_embeddings
    model = AutoModelForMaskedLM.from_config(config)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Built a '{preset}' model ({n_params / 1e6:.2f}M parameters) and saved it to {output_dir}/ (safetensors)")

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    masked_lm = AutoModelForMaskedLM.from_pretrained(output_dir).eval()
    causal_lm = AutoModelForCausalLM.from_pretrained(output_dir).eval()
    print(f"Reloaded the one checkpoint as {type(masked_lm).__name__} and {type(causal_lm).__name__}")
    print("Note: the weights are freshly initialised, so predictions are at chance level until the model is trained.")

    # Masked LM: hide 15% of the residues and score the model's guesses.
    batch = tokenizer([r.sequence for r in records], padding=True, return_tensors="pt")
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    chosen = (torch.rand(batch["input_ids"].shape) < 0.15) & ~special
    masked_ids = batch["input_ids"].masked_fill(chosen, tokenizer.mask_token_id)
    with torch.no_grad():
        logits = masked_lm(input_ids=masked_ids, attention_mask=batch["attention_mask"]).logits
    log_probs = logits.log_softmax(-1)[chosen].gather(-1, batch["input_ids"][chosen][:, None])
    accuracy = (logits[chosen].argmax(-1) == batch["input_ids"][chosen]).float().mean().item()
    masked_perplexity = math.exp(-log_probs.mean().item())
    print(
        f"\nMasked LM on {int(chosen.sum())} hidden residues: "
        f"accuracy {accuracy:.3f}, perplexity {masked_perplexity:.2f}"
    )

    # Causal LM: the same weights read left to right.
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        causal_loss = causal_lm(**batch, labels=labels).loss.item()
    print(f"Causal LM next-residue perplexity on the same sequences: {math.exp(causal_loss):.2f}")

    # Generation from the first 10 residues of three sequences, with the KV cache.
    prompts = [
        [tokenizer.bos_token_id] + tokenizer(r.sequence[:10], add_special_tokens=False)["input_ids"]
        for r in records[:3]
    ]
    generated = causal_lm.generate(
        torch.tensor(prompts),
        max_new_tokens=40,
        do_sample=True,
        top_p=0.95,
        temperature=1.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    print("\nGenerated continuations (prompt | new residues):")
    for prompt, row in zip(prompts, generated):
        new = tokenizer.decode(row[len(prompt) :], skip_special_tokens=True)
        print(f"  {tokenizer.decode(prompt, skip_special_tokens=True)} | {new}")

    # GLM infilling: the span between two contexts, generated left to right after <sop>.
    sequence = records[0].sequence
    context = sequence[:20] + tokenizer.smask_token + sequence[30:50]
    context_ids = tokenizer(context)["input_ids"]
    mask_position = context_ids.index(tokenizer.smask_token_id)
    input_ids = torch.tensor([context_ids + [tokenizer.sop_token_id]])
    position_ids = torch.tensor([list(range(len(context_ids))) + [mask_position]])
    block_position_ids = torch.tensor([[0] * len(context_ids) + [1]])
    infilled = causal_lm.generate(
        input_ids,
        position_ids=position_ids,
        block_position_ids=block_position_ids,
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=tokenizer.eop_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    span = tokenizer.decode(infilled[0, input_ids.shape[1] :], skip_special_tokens=True)
    print(f"\nGLM infilling of {context}\n  true span: {sequence[20:30]}   model's span: {span}")
    return {
        "masked_accuracy": accuracy,
        "masked_perplexity": masked_perplexity,
        "causal_perplexity": math.exp(causal_loss),
    }
