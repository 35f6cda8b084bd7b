"""The one real end-to-end case (slow): good and broken participants in one dataset.

One simulated control runs the whole participant pipeline (tissue model); six broken
participants beside it are skipped or fail, each named with its file. The dataset lives in a
folder whose path holds spaces and non-ASCII letters, and the good T1w is a DataLad-style
symlink. The already skull-stripped T1w case reuses the good participant's outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import write_image
from tests.reliability.cases_dataset import _annex
from tests.reliability.corpus import case, html_page
from tests.reliability.harness import Run, Scenario

GOOD = "C01"
T1 = "sub-{0}/anat/sub-{0}_T1w.nii.gz"
PET = "sub-{0}/pet/sub-{0}_trc-FDG_pet.nii.gz"
#: Broken participant -> the file its message must name.
BROKEN = {"X1": PET.format("X1"), "X2": T1.format("X2"), "X3": "sub-X3/pet/",
          "X4": "sub-X4/pet/sub-X4_trc-DASB_pet.nii.gz", "X5": PET.format("X5"),
          "X6": T1.format("X6")}


def _copy(root: Path, rel: str, label: str, new_rel: str | None = None) -> Path:
    src = root / rel.format(GOOD)
    dst = root / (new_rel or rel).format(label)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    js = src.with_name(src.name.replace(".nii.gz", ".json"))
    if js.exists():
        shutil.copy(js, dst.with_name(dst.name.replace(".nii.gz", ".json")))
    return dst


def _broken_participants(root: Path) -> None:
    _copy(root, T1, "X1")
    pet = _copy(root, PET, "X1")
    pet.write_bytes(pet.read_bytes()[: pet.stat().st_size // 2])  # truncated PET
    t1 = nib.load(root / T1.format(GOOD))
    data = np.asarray(t1.dataobj, dtype=np.float32)
    data[40:42, 50, 60] = np.nan
    write_image(root / T1.format("X2"), data, t1.affine)  # NaN voxels in the T1w
    _copy(root, PET, "X2")
    _copy(root, T1, "X3")  # no PET
    _copy(root, T1, "X4")
    dasb = _copy(root, PET, "X4", "sub-{0}/pet/sub-{0}_trc-DASB_pet.nii.gz")
    meta = json.loads(dasb.with_name("sub-X4_trc-DASB_pet.json").read_text())
    dasb.with_name("sub-X4_trc-DASB_pet.json").write_text(json.dumps({**meta,
                                                                      "TracerName": "DASB"}))
    _copy(root, T1, "X5")
    _copy(root, PET, "X5").write_bytes(html_page())  # a saved web page
    write_image(root / T1.format("X6"), np.random.default_rng(0).uniform(1, 2, (8, 8, 8)),
                np.eye(4))  # readable, but no head
    _copy(root, PET, "X6")
    table = root / "participants.tsv"
    rows = table.read_text().rstrip("\n").split("\n")
    width = len(rows[0].split("\t"))
    rows += ["\t".join([f"sub-X{k}"] + ["n/a"] * (width - 1)) for k in range(1, 7)]
    table.write_text("\n".join(rows) + "\n")


def _verify(run: Run) -> None:
    from pseudopet_bids.bids.derivatives import SubjectPaths
    from pseudopet_bids.workflows.outputs import expected_outputs

    root = Path(run.watch.root)
    final = SubjectPaths(run.out, GOOD, None, root / PET.format(GOOD))
    missing = [p.name for p in expected_outputs(final, "tissue", "tissue") if not p.exists()]
    assert not missing and (run.out / f"sub-{GOOD}.html").exists(), missing
    status = json.loads((run.out / "logs" / f"sub-{GOOD}_status.json").read_text())
    assert status["state"] == "finished", status["state"]
    notices = run.notices()
    for label, rel in BROKEN.items():
        mine = [m for m in notices if f"sub-{label}" in m]
        assert mine, f"sub-{label}: no warning or error"
        assert any(rel in m and "->" in m for m in mine), (label, mine)
    assert any("found no brain in the T1w" in m for m in notices if "sub-X6" in m)
    _skull_stripped(root, run.out)


def _skull_stripped(root: Path, out: Path) -> None:
    """An already skull-stripped T1w: the brain mask barely changes (deepbet on the stripped
    image vs the raw one's mask from the run above)."""
    from pseudopet_bids.io.intake import load_image
    from pseudopet_bids.preproc.brainmask import brain_mask

    t1 = load_image(root / T1.format(GOOD), "T1w")
    mask = np.asarray(nib.load(next((out / f"sub-{GOOD}/anat").glob(
        "*_desc-brain_mask.nii.gz"))).dataobj) > 0
    stripped = nib.Nifti1Image(np.where(mask, t1.get_fdata(), 0.0).astype(np.float32),
                               t1.affine)
    again = np.asarray(brain_mask(stripped, omp_nthreads=2).dataobj) > 0
    dice = 2 * (mask & again).sum() / (mask.sum() + again.sum())
    volume = again.sum() * float(np.prod(t1.header.get_zooms()[:3])) / 1000
    assert dice > 0.95 and 500 <= volume <= 2500, (dice, volume)


@case("dataset", "real end-to-end run: one good simulated participant (its T1w a DataLad-style "
      "symlink) and six broken ones (truncated PET, NaN T1w, no PET, DASB, HTML page as PET, "
      "a T1w too small for a head), in a path with spaces and non-ASCII letters; then an "
      "already skull-stripped T1w", 1,
      "the good participant finishes with every output and its report; the broken ones are "
      "skipped or fail, each named with its file (the too-small T1w fails at the brain mask: "
      "deepbet outlines only noise in it); nothing written for them; a skull-stripped T1w "
      "gives the same brain mask (Dice > 0.95)", "1 ok, 3 failed, 3 skipped", level="slow")
def real_run_good_and_broken(tmp: Path) -> Scenario:
    from pseudopet_bids.simulate.cohort import simulate_cohort

    base = tmp / "Dätä mit Leerzeichen ø"
    root = base / "bids ds"
    simulate_cohort(root, n_controls=1, n_patients=0, seed=7, t1_voxel_mm=1.5)
    _broken_participants(root)
    _annex(root, T1.format(GOOD), (root / T1.format(GOOD)).read_bytes())
    return Scenario(root, ["--omp-nthreads", "2"], pipeline="real", file=BROKEN["X1"],
                    fix="re-copy or re-export", finished={GOOD},
                    failed={"sub-X1", "sub-X2", "sub-X6"}, verify=_verify,
                    out=base / "out ü", work=base / "work ü")

