"""Synthetic heads and PET-like images for the preprocessing tests (built from the template).

The head is the template brain wrapped in CSF / skull / scalp shells with a neck, moved by a known
rigid (plus mild scaling) transform and given a smooth multiplicative bias field and noise, so the
ground truth (brain mask and tissue maps) is known exactly.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from pseudopet_bids import resources


def rigid_matrix(rot_deg, shift_mm, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """4x4 RAS matrix ``x' = R S x + t`` (rotations about x, y, z in degrees, extrinsic)."""
    mat = np.eye(4)
    mat[:3, :3] = Rotation.from_euler("xyz", rot_deg, degrees=True).as_matrix() @ np.diag(scale)
    mat[:3, 3] = shift_mm
    return mat


def downsample(arr, factor: float) -> np.ndarray:
    """Sample ``arr`` every ``factor`` voxels (voxel 0 kept): affine ``A @ diag(f, f, f, 1)``."""
    arr = np.asarray(arr, dtype=np.float32)
    shape = tuple(int(np.floor((n - 1) / factor)) + 1 for n in arr.shape)
    return ndimage.affine_transform(arr, np.diag(np.full(3, factor)), output_shape=shape, order=1)


@functools.lru_cache(maxsize=4)
def _template_head(voxel_mm: float):
    """Head (brain + shells + neck) and truth maps on a padded template-space grid."""
    t1 = resources.load_template("T1w")
    pad = int(round(30 / voxel_mm))

    def grid(arr: np.ndarray) -> np.ndarray:
        return np.pad(downsample(arr, voxel_mm), pad)

    brain = grid(t1.dataobj)
    maps = {k: grid(resources.load_template(k).dataobj) for k in ("GM", "WM", "CSF", "mask")}
    mask = maps["mask"] > 0.5
    affine = t1.affine.copy()
    affine[:3, :3] *= voxel_mm
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    dist = ndimage.distance_transform_edt(~mask, sampling=voxel_mm)
    head = np.where(mask, brain, 0.0).astype(np.float32)
    for lo, hi, value in ((0, 3, 0.12), (3, 9, 0.04), (9, 15, 0.85), (15, 16, 0.45)):
        head[(dist > lo) & (dist <= hi)] = value
    # neck: a soft-tissue cylinder under the brain stem down to the edge of the box
    ii, jj, kk = np.indices(head.shape)
    xyz = (np.tensordot(affine[:3, :3], np.stack([ii, jj, kk]), axes=1)
           + affine[:3, 3, None, None, None])
    neck = ((xyz[0] / 45.0) ** 2 + ((xyz[1] + 20.0) / 40.0) ** 2 < 1.0) & (xyz[2] < -45.0)
    head[neck & (dist > 16)] = 0.5
    return head, maps, affine


def make_head(voxel_mm: float = 2.0, seed: int = 0, rot_deg=(6.0, -4.0, 8.0),
              shift_mm=(5.0, -8.0, 6.0), scale=(1.0, 1.0, 1.0), bias: float = 0.25,
              noise: float = 0.02, fov_mm=(200.0, 240.0, 220.0)):
    """A raw-head T1w phantom and its truth.

    Returns
    -------
    t1 : nib.Nifti1Image
        float32 head on an axis-aligned ``voxel_mm`` grid, intensities ~[0, 1000].
    truth : dict[str, nib.Nifti1Image]
        ``mask`` (uint8) and ``GM``, ``WM``, ``CSF`` probabilities on the same grid.
    moved : np.ndarray
        The 4x4 RAS matrix that moved the template-space head into place.
    """
    rng = np.random.default_rng(seed)
    head, maps, src_aff = _template_head(voxel_mm)
    moved = rigid_matrix(rot_deg, shift_mm, scale)
    shape = tuple(int(round(f / voxel_mm)) for f in fov_mm)
    out_aff = np.diag([voxel_mm] * 3 + [1.0])
    out_aff[:3, 3] = -np.asarray(fov_mm) / 2 + np.array([0.0, -15.0, 5.0])
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = out_aff[:3, :3] @ ijk + out_aff[:3, 3:]
    homogeneous = np.vstack([world, np.ones((1, world.shape[1]))])
    src = np.linalg.inv(src_aff) @ np.linalg.inv(moved) @ homogeneous

    def pull(arr: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(arr, src[:3], order=1).reshape(shape).astype(np.float32)

    vol = pull(head)
    truth = {k: pull(v) for k, v in maps.items()}
    g = (np.indices(shape, dtype=np.float32)
         / np.asarray(shape, dtype=np.float32)[:, None, None, None])
    c = rng.uniform(-1.0, 1.0, 3)
    field = np.exp(bias * 2.0 * sum(c[i] * (g[i] - 0.5) for i in range(3)))
    vol = vol * field + rng.normal(0.0, noise, shape).astype(np.float32) * (vol > 0.01)
    vol = (np.clip(vol, 0.0, None) * 1000.0).astype(np.float32)
    out = {"mask": nib.Nifti1Image((truth.pop("mask") >= 0.5).astype(np.uint8), out_aff)}
    out.update({k: nib.Nifti1Image(v, out_aff) for k, v in truth.items()})
    return nib.Nifti1Image(vol, out_aff), out, moved


def make_pet(voxel_mm: float = 2.0, fwhm_mm: float = 6.0, header_motion=None):
    """A PET-like image in template space: 4*GM + 1*WM + 0.3*CSF, smoothed, on a ``voxel_mm`` grid.

    ``header_motion`` (4x4 RAS) is premultiplied into the affine: the image content is unchanged
    but its world position moves by that matrix (a header disagreement).
    """
    gm, wm, csf = (np.asarray(resources.load_template(k).dataobj) for k in ("GM", "WM", "CSF"))
    act = (4.0 * gm + 1.0 * wm + 0.3 * csf).astype(np.float32)
    sigma = fwhm_mm / 2.3548
    act = ndimage.gaussian_filter(act, sigma)
    aff = resources.load_template("T1w").affine.copy()
    act = downsample(act, voxel_mm)
    aff[:3, :3] *= voxel_mm
    if header_motion is not None:
        aff = header_motion @ aff
    return nib.Nifti1Image(act * 1000.0, aff)


@pytest.fixture(scope="session")
def phantoms() -> SimpleNamespace:
    """The phantom builders of this file (tests get them through this fixture, not an import,
    so that no test module depends on which ``conftest`` is importable)."""
    return SimpleNamespace(make_head=make_head, make_pet=make_pet, rigid_matrix=rigid_matrix)


@pytest.fixture(scope="session")
def head3mm():
    return make_head(voxel_mm=3.0, seed=3)


@pytest.fixture(scope="session")
def head2mm():
    return make_head(voxel_mm=2.0, seed=2)


@pytest.fixture(scope="session")
def registration3mm(head3mm, tmp_path_factory):
    """T1w → template registration of the 3 mm phantom (truth mask), shared by several tests."""
    from pseudopet_bids.preproc.template_reg import register_t1_to_template

    t1, truth, _ = head3mm
    return register_t1_to_template(t1, truth["mask"], tmp_path_factory.mktemp("reg"), seed=0)
