"""MLM training throughput: modeling_plm vs transformers' EsmForMaskedLM of the same ESM-2 shape and weights.

Both train on the same real Swiss-Prot sequences, step for step: every step gets the same `--batch-size` sequences.
The peer is fed the usual way: `DataCollatorForLanguageModeling` pads the batch to its longest sequence. Ours packs
the same sequences with `MLMCollator` into one padding-free row per step (or `--pack-length` rows), as
`plm pretrain` does. The metric is real (non-padding) tokens per second of a full training step: forward, backward
and AdamW (fused, transformers' `Trainer` default, for both). Batches are collated before the clock starts, for both.
The engines alternate in rounds, so load on the machine hits them alike.

Ours starts from the peer's weights converted, with the same maths. The converted checkpoint computes GELU with
ESM's Python formula for bit-exact parity; for training, ours uses torch's exact (erf) GELU kernel, as the `esm2_*`
presets do.

    python benchmarks/bench_training.py                          # ESM-2 8M shape
    python benchmarks/bench_training.py --shape esm2_35m --steps 12
    python benchmarks/bench_training.py --attention sdpa flex_attention --compile
"""

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
from common import ESM_SHAPES, add_kernel_argument, esm_twin_folders, kernel_suffix, report, swissprot_sequences
from transformers import DataCollatorForLanguageModeling, EsmForMaskedLM, EsmTokenizer

import modeling_plm  # noqa: F401  (registers the Auto classes)
from modeling_plm import PLMForMaskedLM, PLMTokenizerFast
from modeling_plm.data.collators import MLMCollator


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="esm2_8m", choices=ESM_SHAPES)
    parser.add_argument("--steps", type=int, default=24, help="timed steps per engine")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="alternate the engines this many times")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    parser.add_argument("--pack-length", type=int, default=0, help="our row length; 0: one row per step")
    parser.add_argument("--attention", nargs="+", default=["sdpa"], help="our attention backends to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    add_kernel_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    steps = args.warmup + args.steps
    sequences = swissprot_sequences(steps * args.batch_size)
    random.Random(args.seed).shuffle(sequences)
    batches = [sequences[i * args.batch_size : (i + 1) * args.batch_size] for i in range(steps)]
    real_tokens = [sum(len(s) + 2 for s in batch) for batch in batches]  # residues + <cls>/<bos> + <eos>

    with tempfile.TemporaryDirectory() as tmp:
        esm_folder, plm_folder = esm_twin_folders(args.shape, Path(tmp))
        esm_tokenizer = EsmTokenizer(str(esm_folder / "vocab.txt"))
        torch.manual_seed(args.seed)
        collate_esm = DataCollatorForLanguageModeling(esm_tokenizer, mlm_probability=0.15)
        esm_batches = [collate_esm([esm_tokenizer(s) for s in batch]) for batch in batches]
        our_tokenizer = PLMTokenizerFast.from_pretrained(plm_folder)
        our_batches = []
        for i, (batch, tokens) in enumerate(zip(batches, real_tokens)):
            collate = MLMCollator(our_tokenizer, pack_length=args.pack_length or tokens)
            our_batches.append(collate(batch, seed=args.seed + i))

        engines = {
            "transformers EsmForMaskedLM (sdpa, padded)": (
                EsmForMaskedLM.from_pretrained(esm_folder, attn_implementation="sdpa"),
                esm_batches,
            )
        }
        for attention in args.attention:
            model = PLMForMaskedLM.from_pretrained(
                plm_folder, attn_implementation=attention, hidden_act="gelu", cpu_linear_kernel=args.cpu_linear_kernel
            )
            rows = f"rows of {args.pack_length}" if args.pack_length else "one row per step"
            engines[f"modeling_plm PLMForMaskedLM ({attention}, packed, {rows})"] = (model, our_batches)

    optimizers = {}
    for name, (model, engine_batches) in engines.items():
        model.train()
        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        for batch in engine_batches[: args.warmup]:
            training_step(model, optimizers[name], batch)

    seconds = dict.fromkeys(engines, 0.0)
    losses: dict[str, list[float]] = {name: [] for name in engines}
    timed = list(range(args.warmup, steps))
    for round_steps in (timed[r :: args.rounds] for r in range(args.rounds)):
        for name, (model, engine_batches) in engines.items():
            start = time.perf_counter()
            for step in round_steps:
                losses[name].append(training_step(model, optimizers[name], engine_batches[step]))
            seconds[name] += time.perf_counter() - start

    tokens = sum(real_tokens[args.warmup :])
    padded = sum(b["input_ids"].numel() for b in esm_batches[args.warmup :])
    packed = sum(b["input_ids"].numel() for b in our_batches[args.warmup :])
    peer = next(iter(engines))
    rows = [
        {
            "engine": name,
            "seconds": seconds[name],
            "real_tokens_per_s": tokens / seconds[name],
            "speedup": seconds[peer] / seconds[name],
            "final_loss": sum(losses[name][-4:]) / 4,
        }
        for name in engines
    ]
    report(
        f"training_{args.shape}{kernel_suffix(args.cpu_linear_kernel)}",
        rows,
        {
            "shape": args.shape,
            "timed_steps": args.steps,
            "sequences_per_step": args.batch_size,
            "real_tokens": tokens,
            "peer_padded_tokens": padded,
            "our_packed_tokens": packed,
            "peer_padding_fraction": 1 - tokens / padded,
        },
    )


if __name__ == "__main__":
    main()
