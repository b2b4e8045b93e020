"""The projections' GEMM alone: torch's `nn.functional.linear` (MKL on this build) against our oneDNN paths, at the
shapes of the benchmarks: decoding (8 rows), and embedding or training (1,024-4,096 rows).

    python benchmarks/bench_gemm.py
    python benchmarks/bench_gemm.py --threads 1

Inference rows time one call with no autograd: torch, `OneDNNLinear` (plain weight), and the pre-packed weight
`generate()` uses (`FusedProjection`). Training rows time forward + backward of one layer (input and weight
gradients). The outputs of every path are compared with torch's.
"""

import argparse
import time
from collections.abc import Callable

import torch
from common import report
from torch import nn

from modeling_plm.kernels.onednn import ONEDNN_AVAILABLE, FusedProjection, OneDNNLinear

# (rows, in, out): a 6x320 block's q/k/v fused (960) and SwiGLU gate/up fused (1,706), an ESM-2 8M MLP (1,280).
INFERENCE_SHAPES = [(8, 320, 320), (8, 320, 960), (8, 320, 1706), (8, 853, 320), (1024, 320, 960), (1024, 320, 1280)]
TRAINING_SHAPES = [(1024, 320, 960), (1024, 1280, 320), (4096, 320, 1280)]


def microseconds(function: Callable[[], object], seconds: float = 0.5) -> float:
    """Mean microseconds per call over `seconds` of calls, after a warm-up."""
    for _ in range(10):
        function()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        function()
        calls += 1
    return (time.perf_counter() - start) / calls * 1e6


def inference_row(batch: int, fan_in: int, fan_out: int) -> tuple[dict, float]:
    layer = OneDNNLinear.from_linear(nn.Linear(fan_in, fan_out, bias=False))
    packed = FusedProjection((layer,))
    x = torch.randn(batch, fan_in)
    with torch.no_grad():
        reference = nn.functional.linear(x, layer.weight)
        difference = max((output - reference).abs().max().item() for output in (layer(x), packed.run(x)[0]))
        torch_us = microseconds(lambda: nn.functional.linear(x, layer.weight))
        plain_us = microseconds(lambda: layer(x))
        packed_us = microseconds(lambda: packed.run(x))
    row = {
        "pass": "inference",
        "rows x in x out": f"{batch} x {fan_in} x {fan_out}",
        "torch_us": torch_us,
        "onednn_us": plain_us,
        "onednn_packed_us": packed_us,
        "best_speedup": torch_us / min(plain_us, packed_us),
    }
    return row, difference


def training_row(batch: int, fan_in: int, fan_out: int) -> tuple[dict, float]:
    layer = OneDNNLinear.from_linear(nn.Linear(fan_in, fan_out))
    x = torch.randn(batch, fan_in, requires_grad=True)
    grad_output = torch.randn(batch, fan_out)

    def step(forward: Callable[[], torch.Tensor]) -> None:
        x.grad = None
        layer.zero_grad()
        forward().backward(grad_output)

    def torch_linear() -> torch.Tensor:
        return nn.functional.linear(x, layer.weight, layer.bias)

    step(torch_linear)
    reference = [x.grad.clone(), layer.weight.grad.clone()]
    step(lambda: layer(x))
    difference = max(
        ((got - want).abs().max() / want.abs().max()).item()
        for got, want in zip((x.grad, layer.weight.grad), reference)
    )
    torch_us = microseconds(lambda: step(torch_linear))
    ours_us = microseconds(lambda: step(lambda: layer(x)))
    row = {
        "pass": "forward + backward",
        "rows x in x out": f"{batch} x {fan_in} x {fan_out}",
        "torch_us": torch_us,
        "onednn_us": ours_us,
        "onednn_packed_us": float("nan"),
        "best_speedup": torch_us / ours_us,
    }
    return row, difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not ONEDNN_AVAILABLE:
        raise SystemExit("this torch build has no oneDNN")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = [inference_row(*shape) for shape in INFERENCE_SHAPES]
    results += [training_row(*shape) for shape in TRAINING_SHAPES]
    report(
        "gemm",
        [row for row, _ in results],
        {
            "threads": args.threads,
            "max_difference_vs_torch (absolute; relative for gradients)": max(d for _, d in results),
        },
    )


if __name__ == "__main__":
    main()
