"""Benchmark one participant with the tissue model: wall time per stage and peak memory.

Simulates one patient (1 mm T1w, 2 mm PET), runs ``pseudopet ... participant`` in a child
process, reads the per-stage timings the run records in ``logs/<subject>_config.toml`` and the
child's peak RSS, and writes ``docs/performance.md``.

Usage: ``python benchmarks/participant.py [--keep DIR] [--omp-nthreads N]``
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--omp-nthreads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    from pseudopet_bids.simulate.cohort import simulate_cohort

    base = args.keep or Path(tempfile.mkdtemp(prefix="pseudopet-bench-"))
    bids, out = base / "bids", base / "out"
    t0 = time.monotonic()
    simulate_cohort(bids, n_controls=0, n_patients=1, seed=7)
    t_sim = time.monotonic() - t0
    cmd = [sys.executable, "-m", "pseudopet_bids", str(bids), str(out), "participant",
           "--omp-nthreads", str(args.omp_nthreads), "--skip-bids-validation", "--force"]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True)
    wall = time.monotonic() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    record = next((out / "logs").glob("sub-*_desc-*_config.toml"))
    timings = tomllib.loads(record.read_text())["timings_s"]
    info = machine_info()
    lines = ["# Performance", "",
             "One simulated patient (T1w 1 mm, PET 2 mm), tissue model, produced by "
             "`python benchmarks/participant.py` (numbers are from the last run).", "",
             f"- wall time of `pseudopet … participant` (process start to exit): **{wall:.1f} s** "
             "(target ≤ 90 s)",
             f"- peak resident memory: **{peak_gb:.2f} GB** (target ≤ 3 GB)",
             f"- threads per participant (`--omp-nthreads`): {args.omp_nthreads}",
             f"- simulating the subject (not part of the target): {t_sim:.1f} s", "",
             "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {sec:.1f} |" for stage, sec in timings.items()]
    lines += ["", "`writing derivatives` includes the five report figures (about 7 s); the "
              "subject's HTML page and the citation files are written after the stages (within "
              "the wall time).",
              "", "Machine:", ""] + [f"- {k}: {v}" for k, v in info.items()] + [""]
    lines += ["## Trained models", "",
              "Model sizes (parameters, GFLOPs per slice), training seconds per step and "
              "whole-volume inference time per preset: [models_benchmark.md](models_benchmark.md) "
              "(`python benchmarks/models.py`). Training time of the `small` presets on 10 "
              "simulated controls and their comparison with the tissue baseline: "
              "[model_comparison.md](model_comparison.md). Group-level evaluation timings: "
              "[evaluation.md](evaluation.md).", ""]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
