"""oneDNN GEMMs for the float32 projections on CPU.

torch's default CPU BLAS (MKL) runs its generic code on non-Intel CPUs: on AMD EPYC its fp32 GEMMs reach a third to a
half of oneDNN's speed (BENCHMARKS.md). `OneDNNLinear` is an `nn.Linear` (same parameters, state dict and hooks)
whose float32 CPU matmuls, forward and backward, run on oneDNN; `FusedProjection` runs the linear layers that read
one input as one matmul over pre-packed weights, the fast form of decoding's few-row matmuls.
"""

import torch
from torch import nn

ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def cpu_vendor() -> str:
    """The x86 vendor of this machine's CPU ("GenuineIntel", "AuthenticAMD", ...); "" where /proc/cpuinfo has none
    (ARM, macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# MKL's fast fp32 GEMMs are Intel's: on an Intel Xeon torch's own linear beats oneDNN (training 3,392 vs 2,857
# tokens/s, decoding 1.18x vs 0.93x Llama), on AMD EPYC oneDNN beats MKL's generic path 1.5-2.6x (BENCHMARKS.md).
def onednn_preferred(vendor: str) -> bool:
    """Whether "auto" picks oneDNN on a CPU of this vendor: on x86 CPUs that are not Intel's."""
    return vendor not in ("", "GenuineIntel")


ONEDNN_PREFERRED_CPU = onednn_preferred(cpu_vendor())


def resolve_cpu_linear_kernel(kernel: str) -> str:
    """`"auto"` -> the faster kernel for this CPU and torch build; `"onednn"` without oneDNN raises."""
    if kernel == "onednn" and not ONEDNN_AVAILABLE:
        raise ValueError("cpu_linear_kernel='onednn' needs a torch build with oneDNN (mkldnn); use 'auto' or 'torch'.")
    if kernel == "auto":
        return "onednn" if ONEDNN_AVAILABLE and ONEDNN_PREFERRED_CPU else "torch"
    return kernel


def onednn_input(x: torch.Tensor) -> bool:
    """Inputs oneDNN takes as torch would: non-empty float32 CPU tensors, outside autocast, compiled graphs and
    traces (which keep the portable op)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    )


def is_plain_parameter(weight: torch.Tensor) -> bool:
    """Not a tensor subclass (FSDP's DTensor) nor a DeepSpeed ZeRO-3 parameter: those keep torch's own linear."""
    return type(weight) in (torch.Tensor, nn.Parameter) and not hasattr(weight, "ds_id")


def onednn_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias on oneDNN; weight is (out, in), plain or pre-packed by `_reorder_linear_weight`."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDNNLinearFunction(torch.autograd.Function):
    """A linear layer whose forward and both gradients are oneDNN GEMMs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_matmul(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_matmul(grad_output, weight.t().contiguous())
        flat_grad = grad_output.reshape(-1, grad_output.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_weight = onednn_matmul(flat_grad.t(), x.reshape(-1, x.shape[-1]).t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = flat_grad.sum(0)
        return grad_x, grad_weight, grad_bias


class OneDNNLinear(nn.Linear):
    """`nn.Linear` whose float32 CPU matmuls run on oneDNN; anything else takes torch's own path. Made from an
    `nn.Linear` in place by `from_linear`, so parameters, hooks and every reference to the module stay."""

    packed: "FusedProjection | None" = None  # set while decoding (`decoding_projections`)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "OneDNNLinear":
        linear.__class__ = cls
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_plain_parameter(self.weight) or not onednn_input(x):
            return nn.functional.linear(x, self.weight, self.bias)
        if self.packed is not None and not torch.is_grad_enabled():
            return self.packed.run(x)[0]
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return OneDNNLinearFunction.apply(x, self.weight, self.bias)
        return onednn_matmul(x, self.weight, self.bias)


class FusedProjection:
    """Linear layers that read one input, run as a single oneDNN matmul over their concatenated weights pre-packed
    into oneDNN's blocked layout. A snapshot of the weights: `decoding_projections` makes them for one `generate()`
    call only. Outside no-grad float32 CPU calls each layer runs as itself."""

    def __init__(self, linears: tuple[nn.Linear, ...]):
        self.linears = linears
        with torch.no_grad():
            self.weight = torch.ops.mkldnn._reorder_linear_weight(torch.cat([x.weight for x in linears]), None)
            self.bias = torch.cat([x.bias for x in linears]) if linears[0].bias is not None else None
        self.sizes = [linear.out_features for linear in linears]

    @classmethod
    def of(cls, linears: tuple[nn.Linear, ...]) -> "FusedProjection | None":
        """Fuses plain float32 CPU `OneDNNLinear`s; None for anything else, such as PEFT-wrapped layers or layers
        with hooks, which must see their own calls."""
        fusable = all(
            type(linear) is OneDNNLinear
            and is_plain_parameter(linear.weight)
            and linear.weight.device.type == "cpu"
            and linear.weight.dtype == torch.float32
            and not (linear._forward_hooks or linear._forward_pre_hooks)
            for linear in linears
        )
        return cls(linears) if fusable else None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if torch.is_grad_enabled() or not onednn_input(x):
            return tuple(linear(x) for linear in self.linears)
        return self.run(x)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The fused matmul itself, for inputs already known to suit it (no-grad float32 CPU)."""
        return onednn_matmul(x, self.weight, self.bias).split(self.sizes, dim=-1)
