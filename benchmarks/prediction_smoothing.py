"""Does the pseudo-normal PET carry structure finer than the real PET's resolution?

Smooths each written pseudo-normal PET of the controls of a participant-level output folder with
an extra Gaussian (``--fwhm`` values, inside the brain mask) and reports SSIM / PSNR / MAE
against the real PET, measured as in ``benchmarks/model_comparison.py`` (same scaling, same
brain box). A width that raises all three means the prediction has texture that the PET does
not; the package does not apply such a smoothing (``docs/model_comparison.md`` says why).

Usage::

    python benchmarks/prediction_smoothing.py OUT BIDS/participants.tsv --fwhm 0 2 3 4 6 \\
        [--labels C01 ... C10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_comparison import synthesis_quality  # noqa: E402


def smoothing_table(out: Path, participants: pd.DataFrame, fwhms: list[float]) -> str:
    """Markdown table: mean SSIM / PSNR / MAE over the controls for each extra FWHM."""
    lines = ["| extra FWHM | SSIM | PSNR (dB) | MAE |", "|---|---|---|---|"]
    for fwhm in fwhms:
        q = synthesis_quality(out, participants, extra_fwhm_mm=fwhm)
        lines.append(f"| {fwhm:g} mm | {q['ssim'].mean():.4f} | {q['psnr'].mean():.2f} | "
                     f"{q['mae'].mean():.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="participant-level output folder")
    ap.add_argument("participants", type=Path, help="the dataset's participants.tsv")
    ap.add_argument("--fwhm", type=float, nargs="+", default=[0, 2, 3, 4, 6])
    ap.add_argument("--labels", nargs="*", help="participants to use (default: all controls "
                    "with outputs)")
    args = ap.parse_args(argv)
    table = pd.read_csv(args.participants, sep="\t")
    have = {p.name for p in args.out.glob("sub-*") if p.is_dir()}
    keep = table["participant_id"].isin(have)
    if args.labels:
        keep &= table["participant_id"].isin([f"sub-{lab.removeprefix('sub-')}"
                                              for lab in args.labels])
    print(smoothing_table(args.out, table[keep], args.fwhm))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
