"""Model-size and compute measurements for reporting (parameters, FLOPs per forward call)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "flops_per_call", "gflops"]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (buffers such as FIR kernels are not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def flops_per_call(module: nn.Module, *example_inputs: torch.Tensor) -> float:
    """FLOPs of one forward call ``module(*example_inputs)``.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts one
    multiply-add as 2 FLOPs and covers matmuls and convolutions only (norms, activations,
    softmax and elementwise ops are not counted). Runs under ``torch.no_grad()``; the module's
    train/eval mode is left as it is.

    Returns
    -------
    float
        Total FLOPs for the given input sizes (scale with batch size).
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*example_inputs)
    return float(counter.get_total_flops())


def gflops(module: nn.Module, *example_inputs: torch.Tensor) -> float:
    """:func:`flops_per_call` in units of 1e9 FLOPs."""
    return flops_per_call(module, *example_inputs) / 1e9
