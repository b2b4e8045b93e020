"""GPU benchmarks: training MFU with packing in bf16, and attention backends on packed batches.

1. **MFU**: a `PLMForMaskedLM` of `--preset` (≥150M parameters by default) trains on packed rows of real Swiss-Prot
   sequences in bf16 autocast with fused AdamW. MFU = exact training FLOPs per second (`modeling_plm.training.flops`,
   attention over each sequence's real length included) / the GPU's dense bf16 peak (`--peak-tflops`; 989 for
   H100/H200 SXM).
2. **Backends**: the same packed batches, forward + backward, with sdpa (per-sequence kernel calls),
   flex_attention (block-sparse document mask) and flash_attention_2 (varlen), where installed; a backend that is
   not available is reported as such, never replaced.

    python benchmarks/bench_gpu.py                                   # plm_300m, bf16, CUDA
    python benchmarks/bench_gpu.py --preset esm2_150m --backends sdpa flash_attention_2
    python benchmarks/bench_gpu.py --device cpu --preset tiny --steps 2 --dtype float32   # smoke run without a GPU

Embedding throughput at the 650M shape: `python benchmarks/bench_embedding.py --shape esm2_650m --device cuda`.
"""

import argparse
import random
import time
from contextlib import nullcontext

import torch
from common import report, swissprot_sequences

import modeling_plm  # noqa: F401  (registers the Auto classes)
from modeling_plm import PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.data.collators import MLMCollator
from modeling_plm.training.flops import training_flops
from modeling_plm.training.trainer import batch_sequence_lengths


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training(model, batches, device, dtype, steps: int, warmup: int) -> float:
    """Seconds for `steps` training steps (forward, backward, AdamW) after `warmup` untimed ones."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cuda", "cpu"))
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    for index in range(warmup + steps):
        if index == warmup:
            synchronize(device)
            start = time.perf_counter()
        batch = {
            k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batches[index % len(batches)].items()
        }
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="plm_300m")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--rows", type=int, default=16, help="packed rows per step")
    parser.add_argument("--pack-length", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense peak of --dtype on this device")
    parser.add_argument("--backends", nargs="+", default=["sdpa", "flex_attention", "flash_attention_2"])
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    tokenizer = PLMTokenizerFast()
    sequences = [s[: args.pack_length - 2] for s in swissprot_sequences(4000)]
    random.Random(0).shuffle(sequences)
    collate = MLMCollator(tokenizer, pack_length=args.pack_length)
    batches, cursor = [], 0
    while len(batches) < 8:  # fill `rows` packed rows per step from the stream of sequences
        chunk = sequences[cursor : cursor + args.rows * args.pack_length // 300]
        cursor += len(chunk)
        batch = collate(chunk, seed=len(batches))
        batches.append({k: v[: args.rows] for k, v in batch.items()})
    config = config_from_preset(args.preset)
    flops_per_step = []
    for batch in batches:
        lengths, _ = batch_sequence_lengths(batch, tokenizer.pad_token_id)
        flops_per_step.append(training_flops(config, lengths, "bidirectional"))
    mean_flops = sum(flops_per_step) / len(flops_per_step)

    rows = []
    torch.manual_seed(0)
    state = PLMForMaskedLM(config).state_dict()
    for backend in args.backends:
        model = PLMForMaskedLM(config)
        model.load_state_dict(state)
        try:
            model.set_attn_implementation(backend)
        except (ImportError, ValueError) as error:
            rows.append({"backend": backend, "step_s": float("nan"), "tflops": float("nan"), "mfu": str(error)[:60]})
            continue
        model.to(device).train()
        seconds = time_training(model, batches, device, dtype, args.steps, args.warmup) / args.steps
        achieved = mean_flops / seconds / 1e12
        rows.append(
            {"backend": backend, "step_s": seconds, "tflops": achieved, "mfu": f"{achieved / args.peak_tflops:.1%}"}
        )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report(
        f"gpu_{args.preset}_{device.type}",
        rows,
        {
            "preset": args.preset,
            "non_embedding_parameters": config.num_parameters(include_embeddings=False),
            "dtype": args.dtype,
            "rows_x_pack_length": f"{args.rows} x {args.pack_length}",
            "exact_training_flops_per_step": mean_flops,
            "peak_tflops": args.peak_tflops,
        },
    )


if __name__ == "__main__":
    main()
