"""Compute-device and thread choices shared by training, synthesis and the participant flow."""

from __future__ import annotations

import os

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from pseudopet_bids.errors import UsageError


def flush_denormals() -> None:
    """Flush denormal floats to zero on CPU.

    Near-zero initial layers (NCSN++) produce denormals, which make CPU convolutions up to 5x
    slower; flushing them changes nothing measurable. numpy's float limits are computed first:
    computed afterwards they warn that the smallest subnormal is zero.
    """
    dtypes: tuple[type[np.floating], ...] = (np.float16, np.float32, np.float64)
    for dtype in dtypes:
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


def used_device(name: str, uses_device: bool) -> str:
    """The device a run records (config, reports): the one its model really runs on.

    ``--device`` is checked whatever the model (:func:`resolve_device`): ``cuda`` on a machine
    without a GPU is refused (exit 64) rather than silently replaced by the CPU, because it
    mostly means a container started without its GPU (``--gpus all`` / ``--nv``), which a
    learned model would then run 100 times slower on. A model that uses no torch device (the
    tissue baseline, fitted with numpy) records ``cpu``; ``cuda`` gets its index
    (``cuda:0``), so the record names the GPU used.

    Parameters
    ----------
    name
        ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    uses_device
        Whether the run's model or computation runs on the torch device.
    """
    device = resolve_device(name)
    if not uses_device or device.type != "cuda":
        return "cpu"
    return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"


def set_threads(n: int) -> None:
    """Threads of this process for ITK (ANTs), torch and the BLAS/OpenMP libraries that numpy
    and scipy loaded: ``--omp-nthreads``.

    BLAS reads ``OMP_NUM_THREADS`` once, when numpy is first imported, which may have happened
    before the command line was parsed (``main()`` called from Python, or the CLI's own
    imports); its pools are therefore limited here at run time. With one thread the results
    are bit-identical between runs; with several, BLAS reductions may differ in the last bits.
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n)
    torch.set_num_threads(n)
    threadpool_limits(n)
