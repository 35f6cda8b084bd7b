"""Machine facts recorded beside every benchmark's numbers, and the logged command runner the
benchmarks share."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``unknown`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_info() -> dict[str, object]:
    """CPU, cores, memory, load and the versions that matter for timings."""
    import numpy
    import torch

    import pseudopet_bids

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "torch": torch.__version__, "pseudopet": pseudopet_bids.__version__,
            "load_avg_start": os.getloadavg()}


def run_logged(args: list[str], log: Path) -> float:
    """Run a command with its output appended to ``log``; wall seconds. Exits on failure."""
    t0 = time.monotonic()
    with open(log, "a") as fh:
        fh.write("\n$ " + " ".join(args) + "\n")
        fh.flush()
        code = subprocess.call(args, stdout=fh, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"command failed ({code}): {' '.join(args)}; see {log}")
    return time.monotonic() - t0
