"""Are the demo cohort's outputs byte-identical between two versions of the code?

Checks out ``--ref`` (default ``HEAD``) into a temporary git worktree, runs the demo of the
Makefile (3 controls + 3 patients, seed 1; participant with ``--omp-nthreads 1``; group) once
with that tree and once with the working tree, and compares every file of the two output
folders byte by byte. Files that legitimately differ between any two runs (logs with times and
hosts, run records with timings, HTML pages showing those timings) are listed separately and
do not fail the check.

Usage: ``python scripts/demo_identity.py [--ref REF] [--work DIR]`` (about 10 minutes on 2
cores). Exit 0 when every other file is identical.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Outputs that hold run times, dates, hosts or process ids: they differ between two runs of
#: the same code, so they cannot show a difference between two versions.
RUN_SPECIFIC = ("logs/", ".html", "_report.pdf")  # the PDF lists the run time per step


def run_demo(source: Path, dest: Path) -> None:
    """The Makefile's demo with the package from ``source``, into ``dest``."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    shutil.rmtree(dest, ignore_errors=True)
    bids, out = dest / "bids", dest / "out"
    py = [sys.executable, "-m"]
    for cmd in ([*py, "pseudopet_bids.simulate.cli", str(bids), "--controls", "3", "--patients",
                 "3", "--seed", "1"],
                [*py, "pseudopet_bids", str(bids), str(out), "participant", "--nprocs", "2",
                 "--omp-nthreads", "1"],
                [*py, "pseudopet_bids", str(bids), str(out), "group"]):
        print("+", " ".join(cmd[2:]), f"(code from {source})", flush=True)
        subprocess.run(cmd, check=True, env=env, cwd=dest.parent)


def digests(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_specific(name: str) -> bool:
    return name.startswith(RUN_SPECIFIC[0]) or name.endswith(RUN_SPECIFIC[1])


def compare(before: Path, after: Path) -> tuple[list[str], list[str], list[str], int]:
    """(different, only in one, run-specific and different or only in one, identical count).

    Run logs carry the time, host and pid in their names, so they are only in one folder: they
    count as run-specific, like the files that hold times.
    """
    a, b = digests(before), digests(after)
    different, run_specific = [], []
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            (run_specific if _run_specific(name) else different).append(name)
    only = [n for n in different if n not in a or n not in b]
    different = [n for n in different if n in a and n in b]
    identical = sum(a[n] == b[n] for n in set(a) & set(b))
    return different, only, run_specific, identical


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD", help="git revision to compare with")
    parser.add_argument("--work", type=Path, help="work folder (kept); default: a temporary one")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pseudopet-identity-"))
    work.mkdir(parents=True, exist_ok=True)
    tree = work / "ref_tree"
    if tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.ref],
                   check=True)
    try:  # both in the same folder: the dataset's absolute path is in the outputs
        for source, name in ((tree, "before"), (ROOT, "after")):
            shutil.rmtree(work / name, ignore_errors=True)
            run_demo(source, work / "demo")
            (work / "demo").rename(work / name)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)
    different, only, run_specific, identical = compare(work / "before" / "out",
                                                       work / "after" / "out")
    print(f"\n{identical} files identical")
    print(f"{len(run_specific)} run-specific files differ (times, hosts): "
          + ", ".join(run_specific[:6]) + (" ..." if len(run_specific) > 6 else ""))
    for name in only:
        print(f"ONLY IN ONE: {name}")
    for name in different:
        print(f"DIFFERENT: {name}")
    return 1 if different or only else 0


if __name__ == "__main__":
    sys.exit(main())
