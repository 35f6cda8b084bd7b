"""Compute-device choices shared by training and synthesis (no I/O)."""

from __future__ import annotations

import numpy as np
import torch

from pseudopet_bids.errors import UsageError


def flush_denormals() -> None:
    """Flush denormal floats to zero on CPU.

    Near-zero initial layers (NCSN++) produce denormals, which make CPU convolutions up to 5x
    slower; flushing them changes nothing measurable. numpy's float limits are computed first:
    computed afterwards they warn that the smallest subnormal is zero.
    """
    for dtype in (np.float16, np.float32, np.float64):
        np.finfo(dtype).smallest_subnormal
    torch.set_flush_denormal(True)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; a CUDA request without a GPU is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was requested but no CUDA GPU is available", None,
                         "use --device cpu (or auto), or run on a machine with a GPU")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible",
                         None, "choose an existing GPU index")
    return device
