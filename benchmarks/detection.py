"""Detection statistics of a finished simulated cohort at several Z thresholds.

Reads each participant's Z-map and lobe segmentation written by ``pseudopet … participant``,
forms clusters again at each threshold with the package's own functions (cluster volume and
connectivity as in the run), scores them against ``participants.tsv`` (and the simulator's lesion
masks when given) and writes ``docs/detection.md``.

Usage::

    pseudopet-simulate /tmp/c/bids --controls 10 --patients 10 --seed 2026
    pseudopet /tmp/c/bids /tmp/c/out participant
    python benchmarks/detection.py /tmp/c/bids /tmp/c/out --truth /tmp/c/bids_truth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from pseudopet_bids.bids.participants import read_participants
from pseudopet_bids.detect.clusters import find_clusters
from pseudopet_bids.detect.regions import cluster_table
from pseudopet_bids.evaluate.group import subject_row, summarize

ROOT = Path(__file__).resolve().parents[1]


def subject_rows(out: Path, participants: dict, truth: Path | None, threshold: float,
                 min_volume: float) -> pd.DataFrame:
    """One row per subject (``evaluate.group.subject_row``) at a given threshold."""
    rows = []
    for zfile in sorted(out.glob("sub-*/pet/*_stat-z_desc-*_statmap.nii.gz")):
        label = zfile.name.split("_")[0][4:]
        anat = zfile.parents[1] / "anat"
        zimg = nib.load(zfile)
        z = np.asarray(zimg.dataobj, dtype=np.float32)
        lobes = np.asarray(nib.load(next(anat.glob("*_desc-lobes_dseg.nii.gz"))).dataobj)
        labels, clusters = find_clusters(z, z != 0, float(np.prod(zimg.header.get_zooms()[:3])),
                                         threshold=threshold, min_volume_mm3=min_volume)
        table = cluster_table(z, labels, clusters, lobes, zimg.affine, None)
        info = participants[label]
        hit = np.nan
        if truth is not None and info.group == "patient":
            lesion = nib.as_closest_canonical(nib.load(truth / f"sub-{label}_desc-lesion_mask.nii.gz"))
            hit = float(((np.asarray(lesion.dataobj) > 0) & (labels > 0)).any())
        rows.append({**subject_row(info, None, list(table["region"])), "lesion_hit": hit})
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--truth", type=Path, help="simulator ground-truth folder")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[1.65, 1.96, 2.33])
    parser.add_argument("--cluster-min-volume", type=float, default=1500.0)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "detection.md")
    args = parser.parse_args()
    participants = read_participants(args.bids_dir)
    lines = ["# Detection on a simulated cohort", "",
             f"Cohort: `{args.bids_dir}` ({sum(p.group == 'patient' for p in participants.values())}"
             f" patients, {sum(p.group == 'control' for p in participants.values())} controls), "
             "tissue model, default settings except the Z threshold; clusters of at least "
             f"{args.cluster_min_volume:.0f} mm³ in the searched grey matter. Produced by "
             "`python benchmarks/detection.py` from the participant outputs.", "",
             "| Z threshold | detection rate | localization (largest) | localization (any) | "
             "lesion hit | controls with clusters | false clusters / control |",
             "|---|---|---|---|---|---|---|"]
    for thr in args.thresholds:
        subjects = subject_rows(args.output_dir, participants, args.truth, thr,
                                args.cluster_min_volume)
        s = summarize(subjects).set_index("measure")

        def fmt(name: str) -> str:
            r = s.loc[name]
            return f"{int(r['count'])}/{int(r['n'])} ({r['ci95_low']:.2f}–{r['ci95_high']:.2f})"

        pats = subjects[subjects["group"] == "patient"]
        hits = f"{int(pats['lesion_hit'].sum())}/{len(pats)}" if args.truth else "n/a"
        lines.append(f"| {thr:.2f} | {fmt('detection_rate')} | "
                     f"{fmt('localization_accuracy_largest')} | {fmt('localization_accuracy_any')}"
                     f" | {hits} | {fmt('controls_with_clusters')} | "
                     f"{s.loc['false_clusters_per_control', 'value']:.2f} |")
    lines += ["", "Counts are k/n with Wilson 95 % intervals. Localization is over detected "
              "patients; *lesion hit*: some cluster overlaps the simulated lesion mask.", ""]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
