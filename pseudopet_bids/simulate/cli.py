"""``pseudopet-simulate``: write a synthetic BIDS cohort (demo data and tests)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pseudopet_bids import __version__
from pseudopet_bids.cli import environment
from pseudopet_bids.cli.parser import int_in
from pseudopet_bids.errors import EXIT_OK, EXIT_USAGE, PseudopetError, UsageError
from pseudopet_bids.simulate.cohort import simulate_cohort

LOGGER = logging.getLogger("pseudopet.simulate")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage; the BIDS execution spec wants 64."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message, fix=f"see {self.prog} --help")


_non_negative_int = int_in(0)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (no heavy imports)."""
    p = _Parser(prog="pseudopet-simulate",
                description="Write a synthetic BIDS dataset of FDG PET + T1w controls and "
                            "patients (one hypometabolic focus each), with the ground truth "
                            "beside it.")
    p.add_argument("out", type=Path, metavar="OUT", help="BIDS folder to create (new or empty)")
    g = p.add_argument_group("cohort")
    g.add_argument("--controls", type=_non_negative_int, default=0, metavar="N",
                   help="number of healthy controls (default 0)")
    g.add_argument("--patients", type=_non_negative_int, default=0, metavar="M",
                   help="number of patients (default 0)")
    g.add_argument("--seed", type=_non_negative_int, required=True, metavar="S",
                   help="random seed; the same arguments give identical files")
    g.add_argument("--difficulty", choices=("classic", "ladder"), default="classic",
                   help="classic: one 20-35 %% focus in a random lobe (default); ladder: foci "
                        "of 8-35 %% depth and 2-40 cm3, mesial temporal most often, some "
                        "multilobar, and benign left/right asymmetries in every subject")
    g.add_argument("--uptake-pattern", choices=("regional", "template"), default="regional",
                   help="normal FDG pattern: regional (symmetric, bounded within regions; "
                        "default) or template (the real template's, unsymmetrised and "
                        "unbounded: harder for a tissue model)")
    g = p.add_argument_group("images")
    g.add_argument("--t1-voxel-size", type=float, default=1.0, metavar="MM",
                   help="isotropic T1w voxel size in mm (default 1.0)")
    g.add_argument("--pet-voxel-size", type=float, default=2.0, metavar="MM",
                   help="isotropic PET voxel size in mm (default 2.0)")
    g.add_argument("--frames", type=int, default=1, metavar="K",
                   help="PET frames; K > 1 writes a 4D PET (default 1)")
    g = p.add_argument_group("output")
    g.add_argument("--truth-dir", type=Path, default=None, metavar="DIR",
                   help="ground-truth folder (default: OUT's sibling OUT_truth)")
    g.add_argument("--nprocs", type=int, default=1, metavar="N",
                   help="subjects simulated in parallel (default 1)")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output (-v: debug)")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    p.add_argument("--version", action="version", version=f"pseudopet-simulate {__version__}")
    return p


@contextlib.contextmanager
def _matplotlib_cache_beside(out: Path) -> Iterator[None]:
    """Give matplotlib (imported by ANTs in the workers) a writable cache folder for the run.

    Where its own folder is not writable, it wants a temporary one, and fails where none is
    writable (a read-only container root with no writable /tmp): a hidden folder beside OUT,
    which must be writable anyway, is used then and removed afterwards. The workers inherit
    the variable.
    """
    if environment.matplotlib_config_writable():
        yield
        return
    saved = os.environ.get("MPLCONFIGDIR")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        cache = tempfile.mkdtemp(prefix=".pseudopet-simulate-matplotlib-", dir=out.parent)
    except OSError:  # OUT cannot be created either: simulate_cohort says so with exit 73
        yield
        return
    os.environ["MPLCONFIGDIR"] = cache
    try:
        yield
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if saved is None:
            os.environ.pop("MPLCONFIGDIR", None)
        else:
            os.environ["MPLCONFIGDIR"] = saved


def main(argv: list[str] | None = None) -> int:
    """Run the simulator; returns the exit code (0, 64 usage, 73 cannot create output)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"pseudopet-simulate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("pseudopet_bids.simulate").setLevel(level)  # its own loggers only
    try:
        with _matplotlib_cache_beside(args.out):
            table = simulate_cohort(args.out, args.controls, args.patients, args.seed,
                                    t1_voxel_mm=args.t1_voxel_size,
                                    pet_voxel_mm=args.pet_voxel_size,
                                    truth_dir=args.truth_dir, frames=args.frames,
                                    nprocs=args.nprocs, difficulty=args.difficulty,
                                    pattern=args.uptake_pattern)
    except PseudopetError as exc:
        LOGGER.error("%s", exc)
        return exc.exit_code
    LOGGER.info("done: %d participants (%d patients)", len(table),
                int((table["group"] == "patient").sum()))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
