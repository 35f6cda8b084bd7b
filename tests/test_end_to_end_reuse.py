"""End to end: a participant chained after fMRIPrep/sMRIPrep + PETPrep (``-d NAME=PATH``).

The derivative datasets are built from a first pseudopet run of the same subject, with fMRIPrep's
and PETPrep's exact file names; the transforms are real ANTs composite ``.h5`` files, as
fMRIPrep writes them, from a registration made here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pseudopet_bids.cli.run import main
from pseudopet_bids.errors import ProcessingError
from tests.conftest import assert_bids_valid

pytestmark = pytest.mark.slow
TPL = "MNI152NLin2009aSym"
SUB = "P01"


def _composite_transforms(t1_path: Path, mask_path: Path, prefix: Path) -> tuple[Path, Path]:
    """(from-T1w_to-TPL, from-TPL_to-T1w) ANTs composite .h5 files of a quick 3 mm SyN."""
    import ants

    from pseudopet_bids import resources
    from pseudopet_bids.preproc._ants import resample_to_spacing, to_ants

    t1 = nib.load(t1_path)
    brain = np.asarray(t1.dataobj, dtype=np.float32) * (np.asarray(nib.load(mask_path).dataobj)
                                                        > 0)
    fixed = resample_to_spacing(to_ants(resources.load_template("T1w")), 3.0)
    moving = resample_to_spacing(to_ants(t1, brain), 3.0)
    reg = ants.registration(fixed, moving, "SyN", write_composite_transform=True,
                            outprefix=str(prefix), reg_iterations=(20, 10, 0))
    return Path(reg["fwdtransforms"]), Path(reg["invtransforms"])


def _dataset(root: Path, name: str) -> Path:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": name, "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": name}]}))
    return root


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    from pseudopet_bids.simulate.cohort import simulate_cohort

    base = tmp_path_factory.mktemp("reuse")
    bids = base / "bids"
    simulate_cohort(bids, n_controls=0, n_patients=1, seed=11, t1_voxel_mm=1.5)
    first = base / "first"
    assert main([str(bids), str(first), "participant", "--model", "tissue",
                 "--omp-nthreads", "2", "--skip-bids-validation"]) == 0
    anat = first / f"sub-{SUB}" / "anat"
    fmriprep = _dataset(base / "fmriprep", "fMRIPrep")
    out_anat = fmriprep / f"sub-{SUB}" / "anat"
    out_anat.mkdir(parents=True)
    for name in ("desc-preproc_T1w", "desc-brain_mask", "label-GM_probseg", "label-WM_probseg",
                 "label-CSF_probseg"):
        shutil.copy(anat / f"sub-{SUB}_{name}.nii.gz", out_anat / f"sub-{SUB}_{name}.nii.gz")
    fwd, inv = _composite_transforms(anat / f"sub-{SUB}_desc-preproc_T1w.nii.gz",
                                     anat / f"sub-{SUB}_desc-brain_mask.nii.gz", base / "reg_")
    shutil.copy(fwd, out_anat / f"sub-{SUB}_from-T1w_to-{TPL}_mode-image_xfm.h5")
    shutil.copy(inv, out_anat / f"sub-{SUB}_from-{TPL}_to-T1w_mode-image_xfm.h5")
    # fMRIPrep's default output space: present, and must not be mistaken for the right one
    shutil.copy(fwd, out_anat / f"sub-{SUB}_from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5")
    petprep = _dataset(base / "petprep", "PETPrep")
    (petprep / f"sub-{SUB}" / "pet").mkdir(parents=True)
    src = next((first / f"sub-{SUB}" / "pet").glob("*_space-T1w_desc-preproc_pet.nii.gz"))
    shutil.copy(src, petprep / f"sub-{SUB}" / "pet" / src.name)
    digests = {p: _tree_digest(p) for p in (fmriprep, petprep)}
    return base, bids, first, fmriprep, petprep, digests


def test_chained_run_reuses_and_says_so(chained, caplog):
    base, bids, first, fmriprep, petprep, digests = chained
    out = base / "chained"
    with caplog.at_level(logging.INFO):
        code = main([str(bids), str(out), "participant", "--model", "tissue", "--omp-nthreads",
                     "2", "--skip-bids-validation", "-d", f"fmriprep={fmriprep}",
                     f"petprep={petprep}"])
    assert code == 0
    for step in ("brain mask", "T1w to template registration", "tissue segmentation",
                 "PET to T1w coregistration"):
        assert f"{step} reused from bids:" in caplog.text
    assert "fmriprep: T1w, mask, tissues, xfm" in caplog.text  # pre-flight column
    anat = out / f"sub-{SUB}" / "anat"
    mask_meta = json.loads((anat / f"sub-{SUB}_desc-brain_mask.json").read_text())
    assert mask_meta["Sources"] == [f"bids:fmriprep:sub-{SUB}/anat/sub-{SUB}_desc-brain_mask.nii.gz"]
    assert mask_meta["Method"].startswith("reused from bids:fmriprep:")
    pet_meta = json.loads(next((out / f"sub-{SUB}" / "pet").glob(
        "*_desc-preproc_pet.json")).read_text())
    assert pet_meta["ReusedDerivatives"]["pet"].startswith("bids:petprep:")
    assert "already in T1w space" in pet_meta["Coregistration"]["Method"]
    links = json.loads((out / "dataset_description.json").read_text())["DatasetLinks"]
    assert {"raw", "fmriprep", "petprep"} <= set(links)
    # the reused masks and tissues are the outputs, unchanged
    for name in ("desc-brain_mask", "label-GM_probseg"):
        a = nib.load(anat / f"sub-{SUB}_{name}.nii.gz").get_fdata()
        b = nib.load(fmriprep / f"sub-{SUB}/anat/sub-{SUB}_{name}.nii.gz").get_fdata()
        assert np.allclose(a, b, atol=1e-6), name
    # the detection agrees with the unchained run (same images; another template transform)
    z1 = nib.load(next((first / f"sub-{SUB}" / "pet").glob("*stat-z*_statmap.nii.gz"))).get_fdata()
    z2 = nib.load(next((out / f"sub-{SUB}" / "pet").glob("*stat-z*_statmap.nii.gz"))).get_fdata()
    both = (z1 != 0) & (z2 != 0)
    assert both.sum() > 0.8 * (z1 != 0).sum()
    assert np.corrcoef(z1[both], z2[both])[0, 1] > 0.9
    for path, digest in digests.items():
        assert _tree_digest(path) == digest, f"{path} was modified"
    assert_bids_valid(out)
    status = json.loads((out / "logs" / f"sub-{SUB}_status.json").read_text())
    assert status["state"] == "finished" and status["fraction_done"] == 1.0
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["brain mask"]["state"] == "skipped"
    assert stages["brain mask"]["reason"].startswith("reused from bids:fmriprep:")
    assert stages["detection"]["state"] == "done"


def test_changed_derivatives_redo_the_subject(chained, caplog, tmp_path):
    base, bids, first, fmriprep, petprep, _ = chained
    out = base / "chained"
    args = [str(bids), str(out), "participant", "--model", "tissue", "--omp-nthreads", "2",
            "--skip-bids-validation"]
    with caplog.at_level(logging.INFO):
        assert main(args + ["-d", f"fmriprep={fmriprep}", f"petprep={petprep}"]) == 0
    assert "skipped, finished with the same settings" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(args + ["-d", f"fmriprep={fmriprep}"]) == 0
    assert "settings changed since the last run (derivatives)" in caplog.text
    assert "PET to T1w coregistration done" in caplog.text  # PET now coregistered here


def test_wrong_transform_is_caught(chained):
    from pseudopet_bids.io.intake import load_image
    from pseudopet_bids.preproc.pipeline import reused_registration

    base, _, _, fmriprep, _, _ = chained
    anat = fmriprep / f"sub-{SUB}" / "anat"
    t1 = load_image(anat / f"sub-{SUB}_desc-preproc_T1w.nii.gz")
    mask = np.asarray(nib.load(anat / f"sub-{SUB}_desc-brain_mask.nii.gz").dataobj) > 0
    fwd = anat / f"sub-{SUB}_from-T1w_to-{TPL}_mode-image_xfm.h5"
    inv = anat / f"sub-{SUB}_from-{TPL}_to-T1w_mode-image_xfm.h5"
    assert reused_registration(t1, mask, fwd, inv).metric > 0.9  # Dice of the brains
    import ants

    # e.g. another subject's transform, or one to another space: 60 mm off
    shifted = base / "shifted_xfm.h5"
    ants.write_transform(ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3, translation=(60.0, 0.0, 0.0)),
        str(shifted))
    with pytest.raises(ProcessingError, match="does not align the template"):
        reused_registration(t1, mask, fwd, shifted)


def test_output_inside_a_derivatives_dataset_is_refused(chained):
    base, bids, _, fmriprep, _, digests = chained
    code = main([str(bids), str(fmriprep / "pseudopet"), "participant", "--skip-bids-validation",
                 "-d", f"fmriprep={fmriprep}"])
    assert code == 64
    assert _tree_digest(fmriprep) == digests[fmriprep]
