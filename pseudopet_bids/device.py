"""Compute-device and thread choices shared by training, synthesis and the participant flow."""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator

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


def needs_spawn(device: str, learned: bool) -> bool:
    """Whether worker processes must be started with ``spawn`` rather than ``fork``.

    A forked child cannot use CUDA once its parent touched it (``torch.cuda.is_available()``
    already does: "Cannot re-initialize CUDA in forked subprocess"); the parent checks the
    device before the run, so every worker that may put a learned model on a GPU is spawned.
    Workers that never use CUDA (the tissue model, ``--device cpu``) keep ``fork``, which
    starts in milliseconds instead of re-importing torch.
    """
    return learned and device != "cpu"


@contextmanager
def worker_pool(nprocs: int, spawn: bool) -> Iterator[ProcessPoolExecutor]:
    """A process pool of ``nprocs`` workers, spawned when ``spawn`` (:func:`needs_spawn`).

    Spawned workers do not inherit this process's logging set-up (console, log file): their
    records are sent back through a queue and handled here by the logger of the same name,
    so they reach the same handlers as those of forked workers.
    """
    if not spawn:
        with ProcessPoolExecutor(max_workers=nprocs) as pool:
            yield pool
        return
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    listener = logging.handlers.QueueListener(queue, _Forward())
    listener.start()
    try:
        with ProcessPoolExecutor(max_workers=nprocs, mp_context=ctx,
                                 initializer=_log_to_queue, initargs=(queue,)) as pool:
            yield pool
    finally:
        listener.stop()
        queue.close()


class _Forward(logging.Handler):
    """Hands a record from a worker to this process's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _log_to_queue(queue: Any) -> None:
    """Initializer of spawned workers: every record goes to the parent (:func:`worker_pool`)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(queue))
    root.setLevel(logging.DEBUG)


#: cuBLAS needs a fixed workspace for deterministic results (read when cuBLAS starts).
CUBLAS_DETERMINISTIC = ":4096:8"


def configure_determinism(device: torch.device, deterministic: bool) -> None:
    """Kernel choices on CUDA (``--deterministic``); nothing changes on the CPU.

    Deterministic: cuDNN's deterministic algorithms, no autotuning, and
    ``torch.use_deterministic_algorithms`` (operations without a deterministic CUDA kernel
    warn rather than fail, so a run never stops for it; the warning names them). Otherwise
    cuDNN autotunes its kernels for the fixed slice shapes (``cudnn.benchmark``), the fastest
    choice, whose results may differ in the last bits between runs. On the CPU, results are
    bit-identical between runs with one thread (:func:`set_threads`).
    """
    if device.type != "cuda":
        return
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
