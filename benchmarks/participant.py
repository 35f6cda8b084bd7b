"""Benchmark one participant with the tissue model: wall time per stage and peak memory.

Simulates one patient (1 mm T1w, 2 mm PET), runs ``pseudopet ... participant`` in a child
process, reads the per-stage timings the run records in ``logs/<subject>_config.toml``, the
child's peak RSS and CPU time, and the load average before and after the run (other jobs on the
machine slow the wall time down), and writes ``docs/performance.md``.

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
    info = machine_info()  # its load average: just before the run
    t0 = time.monotonic()
    subprocess.run(cmd, check=True)
    wall = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_gib = usage.ru_maxrss / 1024 ** 2
    cpu = usage.ru_utime + usage.ru_stime
    load_end = tuple(round(v, 2) for v in os.getloadavg())
    record = next((out / "logs").glob("sub-*_desc-*_config.toml"))
    timings = tomllib.loads(record.read_text())["timings_s"]
    lines = ["# Performance", "",
             "One simulated patient (T1w 1 mm, PET 2 mm), tissue model, produced by "
             "`python benchmarks/participant.py` (numbers are from the last run).", "",
             f"- wall time of `pseudopet … participant` (process start to exit): **{wall:.1f} s** "
             "(target ≤ 45 s on 2 cores)",
             f"- CPU time of the run (user + system, all threads): {cpu:.1f} s",
             f"- peak resident memory: **{peak_gib:.2f} GiB** (ru_maxrss; target ≤ 2.5)",
             f"- threads per participant (`--omp-nthreads`): {args.omp_nthreads}",
             f"- load average (1, 5, 15 min) before the run: "
             f"{tuple(round(v, 2) for v in info['load_avg_start'])}, after: {load_end} "
             "(the run itself adds up to about the number of threads; more means other jobs "
             "shared the cores)",
             f"- simulating the subject (not part of the target): {t_sim:.1f} s", "",
             "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {sec:.1f} |" for stage, sec in timings.items()]
    lines += ["", "`writing derivatives` writes the images (gzip level 1, in `--omp-nthreads` "
              "threads) while a forked process of its own draws the five QC figures (about "
              "6 s of CPU; with one thread, or where there is no fork, they are drawn after the "
              "images); the preprocessing cache is compressed by a background thread during "
              "`pseudo-normal PET` (with one thread, untimed, between the preprocessing and "
              "that stage), and the tissue model's fit runs BLAS on one thread. The subject's "
              "HTML page and the citation files are written after the stages (within the wall "
              "time).",
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
