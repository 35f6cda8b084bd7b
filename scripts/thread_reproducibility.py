"""Measure how far fresh runs of one simulated patient differ with 1 and 2 threads.

Simulates the crash test's patient (2 mm T1w, seed 11), runs ``participant --model tissue``
once with ``--omp-nthreads 1`` and N times with 2 threads, each with a fresh work folder, and
prints each run's cluster table and, per measure of
``tests/reliability/test_crash_safety.py::measure``, the best and worst pairs. The numbers go
into docs/reliability.md ("Reproducibility"). Usage, from the repository root::

    python scripts/thread_reproducibility.py /tmp/repro --runs 6
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="folder for the cohort and the runs")
    parser.add_argument("--runs", type=int, default=6, help="2-thread runs (default: 6)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from pseudopet_bids.simulate.cohort import simulate_cohort
    from tests.reliability.test_crash_safety import derivative_files, measure, same_bytes

    base, bids = args.base, args.base / "bids"
    if not bids.exists():
        simulate_cohort(bids, n_controls=0, n_patients=1, seed=11, t1_voxel_mm=2.0)

    def run(name: str, threads: int) -> Path:
        out = base / name
        if not (out / "sub-P01").exists():
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            with open(base / f"{name}.log", "w") as log:
                subprocess.run([sys.executable, "-m", "pseudopet_bids", str(bids), str(out),
                                "participant", "--model", "tissue", "-w",
                                str(base / f"{name}_work"), "--skip-bids-validation",
                                "--omp-nthreads", str(threads)],
                               env=env, check=True, stdout=subprocess.DEVNULL, stderr=log)
        return out

    outs = [run("t1", 1)] + [run(f"t2_{i}", 2) for i in range(args.runs)]
    for out in outs:
        table = pd.read_csv(next(out.rglob("*_clusters.tsv")), sep="\t")
        print(out.name, table[["cluster_id", "region", "volume_mm3", "peak_zscore"]]
              .to_string(index=False), sep="\n")
    values: dict[str, list[tuple[float, str, str]]] = {}
    for a, b in itertools.combinations(outs, 2):
        fa, fb = derivative_files(a), derivative_files(b)
        for rel in sorted(set(fa) & set(fb)):
            if not same_bytes(fa[rel], fb[rel]):
                for key, value in measure(fa[rel], fb[rel]).items():
                    values.setdefault(key, []).append((round(float(value), 4), a.name, b.name))
    print(f"{len(outs) * (len(outs) - 1) // 2} pairs; per measure: best two, worst two")
    for key, found in sorted(values.items()):
        found.sort()
        print(key, found[:2], found[-2:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
