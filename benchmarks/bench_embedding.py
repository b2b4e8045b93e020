"""Embedding throughput: modeling_plm vs transformers' EsmModel of the same shape and the same weights.

Both embed the same real Swiss-Prot sequences (mean over residues). The peer is driven the usual way: a plain
batched loop in input order, padded by its tokenizer. Ours is `embed_sequences` (length-sorted token-budget
batches). The ESM weights are converted into ours, so the embeddings themselves are compared too.

    python benchmarks/bench_embedding.py                      # ESM-2 8M shape, 2,000 sequences
    python benchmarks/bench_embedding.py --shape esm2_35m --sequences 500
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import ESM_SHAPES, add_kernel_argument, esm_twin_folders, kernel_suffix, report, swissprot_sequences
from transformers import EsmModel, EsmTokenizer

import modeling_plm  # noqa: F401  (registers the Auto classes)
from modeling_plm.inference.embedding import embed_sequences
from modeling_plm.modeling_plm import PLMModel
from modeling_plm.tokenization_plm import PLMTokenizerFast


@torch.no_grad()
def embed_with_esm(model: EsmModel, tokenizer: EsmTokenizer, sequences: list[str], batch_size: int) -> torch.Tensor:
    """The usual loop: batches in input order, padded, mean over residues (special tokens and padding excluded)."""
    pooled = []
    for start in range(0, len(sequences), batch_size):
        batch = tokenizer(sequences[start : start + batch_size], padding=True, return_tensors="pt").to(model.device)
        hidden = model(**batch).last_hidden_state
        residues = batch["attention_mask"].clone()
        residues[:, 0] = 0
        residues[torch.arange(len(residues)), batch["attention_mask"].sum(1) - 1] = 0  # <eos>
        weights = residues.unsqueeze(-1).float()
        pooled.append((hidden * weights).sum(1) / weights.sum(1))
    return torch.cat(pooled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="esm2_8m", choices=ESM_SHAPES)
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16, help="the peer's batch size")
    parser.add_argument("--token-budget", type=int, default=16384, help="our padded tokens per batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both engines)")
    add_kernel_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sequences = swissprot_sequences(args.sequences)
    residues = sum(map(len, sequences))
    with tempfile.TemporaryDirectory() as tmp:
        esm_folder, plm_folder = esm_twin_folders(args.shape, Path(tmp))
        esm = EsmModel.from_pretrained(esm_folder, add_pooling_layer=False, attn_implementation="sdpa").eval()
        esm_tokenizer = EsmTokenizer(str(esm_folder / "vocab.txt"))
        ours = PLMModel.from_pretrained(
            plm_folder, attn_implementation="sdpa", cpu_linear_kernel=args.cpu_linear_kernel
        ).eval()
        tokenizer = PLMTokenizerFast.from_pretrained(plm_folder)
    esm.to(args.device)
    ours.to(args.device)
    warmup = sequences[:32]
    embed_with_esm(esm, esm_tokenizer, warmup, args.batch_size)
    embed_sequences(ours, tokenizer, warmup, pooling="mean", token_budget=args.token_budget, return_tensors="pt")

    start = time.perf_counter()
    peer_embeddings = embed_with_esm(esm, esm_tokenizer, sequences, args.batch_size)
    peer_seconds = time.perf_counter() - start
    start = time.perf_counter()
    results = embed_sequences(
        ours, tokenizer, sequences, pooling="mean", token_budget=args.token_budget, return_tensors="pt"
    )
    our_seconds = time.perf_counter() - start
    our_embeddings = torch.stack([r["mean"] for r in results])
    peer_embeddings = peer_embeddings.cpu()

    rows = [
        {
            "engine": f"transformers EsmModel (sdpa, batch {args.batch_size})",
            "seconds": peer_seconds,
            "residues_per_s": residues / peer_seconds,
        },
        {
            "engine": f"modeling_plm embed_sequences (sdpa, budget {args.token_budget})",
            "seconds": our_seconds,
            "residues_per_s": residues / our_seconds,
        },
    ]
    report(
        f"embedding_{args.shape}{kernel_suffix(args.cpu_linear_kernel)}",
        rows,
        {
            "shape": args.shape,
            "cpu_linear_kernel": type(ours.layers[0].mlp.up_proj).__name__,
            "sequences": len(sequences),
            "residues": residues,
            "speedup": peer_seconds / our_seconds,
            "max_abs_diff_mean_embedding": (our_embeddings - peer_embeddings).abs().max().item(),
        },
    )


if __name__ == "__main__":
    main()
