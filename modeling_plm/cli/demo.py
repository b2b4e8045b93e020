"""The bundled demo: one checkpoint used as masked LM, embedder, causal LM and GLM infiller on real sequences."""

import argparse
import itertools
import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from ..data.fasta import find_data_dir, read_fasta
from ..hub.loading import check_model_folder
from ..inference.embedding import embed_sequences
from ..inference.generation import generate_sequences, infill_sequences
from ..tokenization_plm import PLMTokenizerFast
from ..training.presets import PRESETS, config_from_preset
from . import options

SWISSPROT_SAMPLE = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"
HELP = "build a small model and use it as masked LM, causal LM and GLM infiller on real sequences"
PARSER_OPTIONS = {
    "formatter_class": argparse.ArgumentDefaultsHelpFormatter,
    "epilog": (
        "examples:\n  plm demo --model runs/demo/final\n"
        "  plm demo --preset small --fasta my_proteins.fasta.gz --num-sequences 16"
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="a trained checkpoint folder (default: build an untrained one)")
    parser.add_argument("--preset", default="small", choices=list(PRESETS), help="model preset when no --model")
    parser.add_argument("--fasta", default=None, help="FASTA(.gz) of sequences; default: the shared Swiss-Prot sample")
    parser.add_argument("--num-sequences", type=options.positive_int, default=8)
    parser.add_argument("--max-length", type=options.positive_int, default=200, help="skip longer sequences")
    parser.add_argument("--output-dir", default="outputs/demo-model")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    run_demo(
        model=args.model,
        preset=args.preset,
        fasta=args.fasta,
        num_sequences=args.num_sequences,
        max_length=args.max_length,
        output_dir=args.output_dir,
        seed=args.seed,
    )
    return 0


def default_fasta() -> Path:
    data_dir = find_data_dir()
    if data_dir is None or not (data_dir / SWISSPROT_SAMPLE).exists():
        raise FileNotFoundError(
            f"Swiss-Prot sample not found: pass --fasta, set PLM_DATA_DIR, or put shared/data beside the repo "
            f"(looked for <data>/{SWISSPROT_SAMPLE})."
        )
    return data_dir / SWISSPROT_SAMPLE


def run_demo(
    model: str | Path | None = None,
    preset: str = "small",
    fasta: str | Path | None = None,
    num_sequences: int = 8,
    max_length: int = 200,
    output_dir: str | Path = "outputs/demo-model",
    seed: int = 0,
) -> dict[str, float]:
    """Use one checkpoint as a masked LM, an embedder, a causal LM and a GLM infiller on real sequences.

    With `model` (e.g. `runs/demo/final` from `plm pretrain training/configs/demo.yaml`) the trained checkpoint is
    used; without it a fresh `preset` model is built and saved to `output_dir` first.
    """
    torch.manual_seed(seed)
    if model is not None:
        check_model_folder(model)
    elif preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
    fasta = Path(fasta) if fasta else default_fasta()
    records = list(itertools.islice((r for r in read_fasta(fasta) if len(r.sequence) <= max_length), num_sequences))
    if not records:
        raise ValueError(f"{fasta}: no sequence of at most {max_length} residues (--max-length)")
    print(f"Read {len(records)} sequences of <= {max_length} residues from {fasta}")

    if model is None:
        tokenizer = PLMTokenizerFast(invalid_residues="X")
        config = config_from_preset(preset)
        tokenizer.model_max_length = config.max_position_embeddings
        fresh = AutoModelForMaskedLM.from_config(config)
        model = Path(output_dir)
        fresh.save_pretrained(model)
        tokenizer.save_pretrained(model)
        n_params = sum(p.numel() for p in fresh.parameters())
        print(f"Built a '{preset}' model ({n_params / 1e6:.2f}M parameters) and saved it to {model}/ (safetensors)")
        print("Note: its weights are untrained, so predictions are at chance level. Train one with")
        print("  plm pretrain training/configs/demo.yaml   and then   plm demo --model runs/demo/final")
    tokenizer = AutoTokenizer.from_pretrained(model)
    masked_lm = AutoModelForMaskedLM.from_pretrained(model).eval()
    causal_lm = AutoModelForCausalLM.from_pretrained(model).eval()
    print(f"Loaded {model} as {type(masked_lm).__name__} and {type(causal_lm).__name__} (one checkpoint)")

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
        f"accuracy {accuracy:.3f}, perplexity {masked_perplexity:.2f} (uniform guessing: 0.05, 20-25)"
    )

    # Embeddings through the embedding engine: per-residue states and their mean over residues.
    embeddings = embed_sequences(
        masked_lm, tokenizer, [r.sequence for r in records], pooling="mean", per_residue=True, return_tensors="pt"
    )
    pooled = torch.nn.functional.normalize(torch.stack([e["mean"] for e in embeddings]), dim=-1)
    similarity = pooled @ pooled.T
    print(
        f"Embeddings: per-residue {tuple(embeddings[0]['residues'].shape)} for {records[0].id}, "
        f"pooled {tuple(pooled.shape)}; cosine similarity of the first three:"
    )
    for row, record in zip(similarity[:3], records[:3]):
        print(f"  {record.id:>12} " + " ".join(f"{value:+.2f}" for value in row[:3].tolist()))

    # Causal LM: the same weights read left to right.
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        causal_loss = causal_lm(**batch, labels=labels).loss.item()
    print(f"\nCausal LM next-residue perplexity on the same sequences: {math.exp(causal_loss):.2f}")

    # Generation with the KV cache. GLM-trained models generate after <gmask> and stop at <eop>; plain causal
    # sampling works for every checkpoint (a GLM-only model rarely emits <eos>, so it runs to the length limit).
    print("Generated sequences, GLM continuation after <gmask> (prompt | new residues):")
    for prompt in ["M", records[0].sequence[:10], records[1].sequence[:10]]:
        result = infill_sequences(
            causal_lm,
            tokenizer,
            prompt + tokenizer.gmask_token,
            do_sample=True,
            top_p=0.95,
            seed=seed,
            max_span_length=80,
        )[0][0]
        print(f"  {prompt} | {result['spans'][0]}")
    print("Causal sampling from <bos> + prompt (prompt | new residues):")
    for result in generate_sequences(
        causal_lm,
        tokenizer,
        [records[0].sequence[:10], records[1].sequence[:10]],
        max_length=60,
        top_p=0.95,
        seed=seed,
    ):
        print(f"  {result[0]['sequence'][:10]} | {result[0]['generated']}")

    # GLM infilling: the span between two contexts, generated left to right after <sop>.
    sequence = records[0].sequence
    context = sequence[:20] + tokenizer.smask_token + sequence[30:50]
    span = infill_sequences(causal_lm, tokenizer, context, max_span_length=20)[0][0]["spans"][0]
    print(f"\nGLM infilling of {context}\n  true span: {sequence[20:30]}   model's span: {span}")
    return {
        "masked_accuracy": accuracy,
        "masked_perplexity": masked_perplexity,
        "causal_perplexity": math.exp(causal_loss),
    }
