"""Header and geometry cases: q/sform, singular and sheared affines, orientations, dimensions,
and the PET/T1w overlap decided by coregistration (function level)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import blob, write_image
from tests.reliability.corpus import (PET, T1, case, dataset, head, nifti, probed,
                                      same_as_canonical)
from tests.reliability.harness import Scenario

ZOOM2 = np.diag([2.0, 2.0, 2.0, 1.0])


def _t1(tmp: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None,
        **header) -> tuple[Path, Path]:
    """A dataset whose T1w is rewritten with the given data and header."""
    root = dataset(tmp)
    path = nifti(root / T1, head() if data is None else data, affine, **header)
    return root, path


def _affine_of(run, expected: np.ndarray, shape) -> None:
    want = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(shape, np.float32), expected))
    np.testing.assert_allclose(probed(run)["images"].t1.affine, want.affine, atol=1e-4)


@case("header and geometry", "sform and qform disagree by 10 mm", 0,
      "runs with the sform; a warning names the file", "sform and qform disagree by up to 10.0")
def qform_sform_disagree(tmp: Path) -> Scenario:
    qform = ZOOM2.copy()
    qform[:3, 3] = [10.0, 0.0, 0.0]
    root, path = _t1(tmp, qform=qform)
    return Scenario(root, ran={"sub-01"}, file=T1, fix="using the sform",
                    verify=lambda run: _affine_of(run, ZOOM2, head().shape))


@case("header and geometry", "sform and qform codes both 0", 1,
      "fails at image intake: no position in space", "neither a valid sform nor qform")
def no_qform_no_sform(tmp: Path) -> Scenario:
    root, _ = _t1(tmp, sform_code=0, qform_code=0)
    return Scenario(root, file=T1, fix="dcm2niix", failed={"sub-01"})


@case("header and geometry", "sform code 0, qform set", 0, "runs with the qform")
def qform_only(tmp: Path) -> Scenario:
    qform = ZOOM2.copy()
    qform[:3, 3] = [-20.0, -22.0, -18.0]
    root, _ = _t1(tmp, affine=ZOOM2, sform_code=0, qform=qform)
    return Scenario(root, ran={"sub-01"}, verify=lambda run: _affine_of(run, qform, head().shape))


@case("header and geometry", "singular sform (a zero column), valid qform", 0,
      "runs with the qform and a warning (was: refused)", "the sform is singular or not finite")
def singular_sform_valid_qform(tmp: Path) -> Scenario:
    sform = ZOOM2.copy()
    sform[:, 2] = 0.0
    root, _ = _t1(tmp, affine=sform, qform=ZOOM2)
    return Scenario(root, ran={"sub-01"}, file=T1, fix="using the qform",
                    verify=lambda run: _affine_of(run, ZOOM2, head().shape))


@case("header and geometry", "singular sform and qform code 0", 1,
      "fails at image intake", "the sform is singular or not finite")
def singular_affine(tmp: Path) -> Scenario:
    sform = ZOOM2.copy()
    sform[:, 2] = 0.0
    root, _ = _t1(tmp, affine=sform, qform_code=0)
    return Scenario(root, file=T1, fix="fix the image header", failed={"sub-01"})


@case("header and geometry", "sheared sform (gantry-tilt style, 10 mm over the image), no qform",
      1, "fails at image intake (was: accepted, and ANTs silently dropped the shear)",
      "the sform is sheared")
def sheared_sform(tmp: Path) -> Scenario:
    sform = ZOOM2.copy()
    sform[1, 2] = 0.6  # y moves 0.6 mm per slice
    root, _ = _t1(tmp, affine=sform, qform_code=0)
    return Scenario(root, file=T1, fix="resample it to an orthogonal grid", failed={"sub-01"})


def _rotation(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    rot = np.eye(4)
    rot[:2, :2] = [[c, -s], [s, c]]
    return rot


@case("header and geometry", "oblique T1w (rotated 20 degrees about z)", 0,
      "runs; reoriented to the closest RAS, the rotation kept in the affine, the marker voxel "
      "at the same world position")
def oblique(tmp: Path) -> Scenario:
    root, path = _t1(tmp, affine=_rotation(20.0) @ ZOOM2)
    return Scenario(root, ran={"sub-01"}, verify=same_as_canonical(path))


@case("header and geometry", "LPS-oriented T1w", 0,
      "runs; data flipped to RAS, the marker voxel at the same world position")
def lps_orientation(tmp: Path) -> Scenario:
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    affine[:3, 3] = [20.0, 22.0, -18.0]
    root, path = _t1(tmp, affine=affine)
    return Scenario(root, ran={"sub-01"}, verify=same_as_canonical(path))


@case("header and geometry", "LIA-oriented PET (axes permuted and flipped)", 0,
      "runs; data permuted/flipped to RAS, the marker voxel at the same world position")
def lia_orientation(tmp: Path) -> Scenario:
    root = dataset(tmp)
    affine = np.array([[-2.0, 0, 0, 20], [0, 0, 2.0, -20], [0, -2.0, 0, 22], [0, 0, 0, 1]])
    path = nifti(root / PET, head(), affine)
    assert nib.aff2axcodes(affine) == ("L", "I", "A")
    return Scenario(root, ran={"sub-01"}, verify=same_as_canonical(path, "pet"))


@case("header and geometry", "anisotropic T1w voxels (1 x 1 x 5 mm)", 0,
      "runs; voxel sizes kept")
def anisotropic_voxels(tmp: Path) -> Scenario:
    root, path = _t1(tmp, affine=np.diag([1.0, 1.0, 5.0, 1.0]))

    def verify(run) -> None:
        zooms = probed(run)["images"].t1.header.get_zooms()[:3]
        np.testing.assert_allclose(zooms, (1.0, 1.0, 5.0))
        same_as_canonical(path)(run)

    return Scenario(root, ran={"sub-01"}, verify=verify)


@case("header and geometry", "2D T1w (one slice, stored as 2 dimensions)", 1,
      "fails at image intake", "T1w has 2 dimensions")
def two_dimensional(tmp: Path) -> Scenario:
    root, _ = _t1(tmp, data=head()[:, :, 9])
    return Scenario(root, file=T1, fix="give a 3D image", failed={"sub-01"})


@case("header and geometry", "5D T1w (x, y, z, 1, 3)", 1, "fails at image intake",
      "T1w has 5 dimensions")
def five_dimensional(tmp: Path) -> Scenario:
    root, _ = _t1(tmp, data=np.stack([head()] * 3, -1)[:, :, :, None, :])
    return Scenario(root, file=T1, fix="give a 3D image", failed={"sub-01"})


@case("header and geometry", "T1w stored 4D with one volume (x, y, z, 1)", 0,
      "runs: trailing singleton dimensions are dropped")
def t1w_4d_one_volume(tmp: Path) -> Scenario:
    root, _ = _t1(tmp, data=head()[..., None])
    return Scenario(root, ran={"sub-01"})


@case("header and geometry", "LR-flipped PET data with an unchanged header", 0,
      "LIMIT: runs; a mirror image cannot be detected from the images (brains are nearly "
      "symmetric and a rigid registration cannot undo a mirror; the report's overlay looks "
      "normal); clusters would be lateralised wrongly")
def lr_flipped_pet(tmp: Path) -> Scenario:
    root = dataset(tmp)
    data = blob() + 1
    data[2:6, 8:12, 6:10] += 50  # a left-sided feature
    write_image(root / PET, data[::-1])

    def verify(run) -> None:  # the file is used as it is: mirrored, and nothing says so
        pet = np.asarray(probed(run)["images"].pet.dataobj)
        np.testing.assert_allclose(pet, data[::-1], rtol=1e-6)
        assert not [r for r in run.records if r.levelno >= 30 and "flip" in r.getMessage()]

    return Scenario(root, ran={"sub-01"}, verify=verify)


@case("header and geometry", "PET header 550 mm away from the T1w (no overlap at all)", 0,
      "runs: the coregistration starts from the centres of mass and recovers the offset "
      "(within 1.5 mm on a 3 mm phantom)", level="function")
def pet_far_from_t1w(tmp: Path) -> Scenario:
    from pseudopet_bids.preproc.coregister import coregister_pet_to_t1
    from tests.preproc.conftest import make_head, make_pet, rigid_matrix

    t1, truth, moved = make_head(voxel_mm=3.0, seed=3)
    offset = rigid_matrix((0.0, 0.0, 0.0), (400.0, -250.0, 300.0))
    pet = make_pet(voxel_mm=3.0, header_motion=offset)
    root = dataset(tmp)  # watched for writes like every case

    def call():
        return coregister_pet_to_t1(pet, t1, truth["mask"], seed=0, omp_nthreads=1)

    def verify(run) -> None:
        want = offset @ np.linalg.inv(moved)
        pts = np.array([[0, 0, 0, 1], [60, 40, 50, 1], [-60, -40, -30, 1]], float).T
        assert np.abs(run.value.t1_to_pet @ pts - want @ pts).max() < 1.5

    return Scenario(root, call=call, verify=verify)


def _stub_preprocess(mp: pytest.MonkeyPatch, mask: np.ndarray, affine: np.ndarray) -> None:
    """Replace the heavy steps of ``preprocess`` (mask, registrations, segmentation) so that
    its own checks run on small images in milliseconds."""
    from types import SimpleNamespace

    from pseudopet_bids import resources
    from pseudopet_bids.preproc import coregister, pipeline

    img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    zeros = nib.Nifti1Image(np.zeros(mask.shape, np.float32), affine)
    mp.setattr(pipeline, "brain_mask", lambda t1, **kw: img)
    mp.setattr(pipeline, "register_t1_to_template",
               lambda *a, **kw: SimpleNamespace(to_t1=lambda image, interp: zeros))
    mp.setattr(resources, "load_aal", lambda: zeros)
    mp.setattr(resources, "load_template", lambda name: zeros)
    mp.setattr(pipeline, "segment_tissues", lambda *a, **kw: {
        "GM": img, "WM": zeros, "CSF": zeros})
    mp.setattr(pipeline, "coregister_pet_to_t1",
               lambda *a, **kw: coregister.RigidResult(t1_to_pet=np.eye(4)))


def _ball(shape=(64, 64, 64)) -> np.ndarray:
    grid = np.indices(shape) - (np.array(shape) - 1)[:, None, None, None] / 2
    return (grid ** 2).sum(0) < 24 ** 2  # 57900 voxels: about 1020 ml at 2.6 mm


def _preprocess_with(tmp: Path, pet_affine: np.ndarray, keep_slices: slice | None = None):
    from pseudopet_bids.bids.inputs import UnitImages
    from pseudopet_bids.config import PreprocConfig
    from pseudopet_bids.preproc.pipeline import preprocess

    mask = _ball()
    affine = np.diag([2.6, 2.6, 2.6, 1.0])  # a brain volume inside the plausible range
    t1 = nib.Nifti1Image(np.where(mask, 100.0, 10.0).astype(np.float32), affine)
    pet_data = np.where(mask, 50.0, 1.0).astype(np.float32)
    if keep_slices is not None:
        cut = np.zeros_like(pet_data)
        cut[:, :, keep_slices] = pet_data[:, :, keep_slices]
        pet_data = cut
    pet = nib.Nifti1Image(pet_data, pet_affine)
    with pytest.MonkeyPatch.context() as mp:
        _stub_preprocess(mp, mask, affine)
        images = UnitImages(t1, pet, t1_path=tmp / "ds" / "sub-01/anat/sub-01_T1w.nii.gz",
                            pet_path=tmp / "ds" / "sub-01/pet/sub-01_trc-FDG_pet.nii.gz")
        return preprocess(images, tmp / "work", PreprocConfig(), 0, 1, "sub-01")


@case("header and geometry", "PET and T1w do not overlap after coregistration", 1,
      "the participant fails: 'PET and T1w do not overlap', naming the PET",
      "PET and T1w do not overlap", level="function")
def no_overlap_after_registration(tmp: Path) -> Scenario:
    root = dataset(tmp)
    far = np.diag([2.6, 2.6, 2.6, 1.0])
    far[:3, 3] = [900.0, 0.0, 0.0]
    return Scenario(root, call=lambda: _preprocess_with(tmp, far), fix="belong to the same",
                    file="sub-01/pet/sub-01_trc-FDG_pet.nii.gz")


@case("header and geometry", "PET covers the lower 60 % of the brain (partial coverage)",
      0, "runs with a warning; grey matter outside the PET's field of view is left out of the "
         "detection (zero uptake there would read as hypometabolism)",
      "grey matter outside its field of view is left out", level="function")
def partial_brain_coverage(tmp: Path) -> Scenario:
    root = dataset(tmp)

    def verify(run) -> None:
        from pseudopet_bids.config import DetectionConfig
        from pseudopet_bids.detect.search import detection_mask

        pre = run.value
        covered = float((pre.pet[pre.mask] > 0).mean())
        assert 0.55 < covered < 0.8, covered
        pre.aal = pre.mask.astype(np.int16)  # the stub's atlas is empty: one region, the brain
        gm = detection_mask(pre, DetectionConfig(search_region="gm"))
        assert gm.any() and not (gm & (pre.pet == 0)).any()

    return Scenario(root, call=lambda: _preprocess_with(tmp, np.diag([2.6, 2.6, 2.6, 1.0]),
                                                         slice(0, 36)), verify=verify)


@case("header and geometry", "PET covers a fifth of the brain", 1,
      "the participant fails: the PET covers too little of the brain, naming the PET",
      "of the brain (field of view or coregistration)", level="function")
def tiny_brain_coverage(tmp: Path) -> Scenario:
    root = dataset(tmp)
    return Scenario(root, call=lambda: _preprocess_with(tmp, np.diag([2.6, 2.6, 2.6, 1.0]),
                                                         slice(0, 20)),
                    file="sub-01/pet/sub-01_trc-FDG_pet.nii.gz", fix="give a PET covering")
