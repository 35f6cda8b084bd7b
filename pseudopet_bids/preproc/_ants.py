"""Small bridge between nibabel (RAS) and antspyx (ITK, LPS), shared by the preprocessing steps.

ITK stores images with an origin, spacing and a direction matrix in LPS world coordinates, and its
transforms map LPS points. Everything outside this package speaks nibabel RAS, so the flips live
here and nowhere else.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

if TYPE_CHECKING:  # antspyx has no type information: these names read as Any to mypy
    from ants import ANTsImage

#: RAS <-> LPS flip (its own inverse), as a 4x4 homogeneous matrix.
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _import_ants() -> ModuleType:
    # antspyx is imported lazily: it is heavy (~1 s) and the CLI parser must stay light.
    import ants

    return ants


def to_ants(img: nib.Nifti1Image, data: np.ndarray | None = None) -> ANTsImage:
    """Convert a 3D nibabel image (or ``data`` on its grid) to a float32 ``ants.ANTsImage``.

    A header with shear (non-orthogonal columns) is projected onto the nearest rotation, because
    ITK directions must be orthonormal; voxel sizes are kept.
    """
    ants = _import_ants()
    arr = np.asarray(img.dataobj if data is None else data, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {arr.shape}")
    affine = np.asarray(img.affine, dtype=np.float64)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction = affine[:3, :3] / zooms
    u, _, vt = np.linalg.svd(direction)
    direction = u @ vt
    origin = LPS[:3, :3] @ affine[:3, 3]
    direction = LPS[:3, :3] @ direction
    return ants.from_numpy(np.ascontiguousarray(arr), origin=tuple(map(float, origin)),
                           spacing=tuple(map(float, zooms)), direction=direction)


def ants_affine(aimg: ANTsImage) -> np.ndarray:
    """RAS voxel-to-world affine of an ``ANTsImage``."""
    direction = np.asarray(aimg.direction, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(aimg.spacing, dtype=np.float64)[None, :]
    affine[:3, 3] = aimg.origin
    return LPS @ affine


def from_ants(aimg: ANTsImage, dtype: type = np.float32) -> nib.Nifti1Image:
    """Convert a 3D ``ANTsImage`` to a nibabel image (RAS affine, ``dtype`` data)."""
    out = nib.Nifti1Image(np.asarray(aimg.numpy(), dtype=dtype), ants_affine(aimg))
    out.header.set_xyzt_units("mm", "sec")
    return out


def resample_to_spacing(aimg: ANTsImage, spacing_mm: float, interpolation: str = "linear"
                        ) -> ANTsImage:
    """Resample an ``ANTsImage`` onto an isotropic grid covering the same field of view."""
    ants = _import_ants()
    if np.allclose(aimg.spacing, spacing_mm):
        return aimg
    interp = {"linear": 0, "nearest": 1, "gaussian": 2, "bspline": 4}[interpolation]
    return ants.resample_image(aimg, (spacing_mm,) * 3, use_voxels=False, interp_type=interp)


@contextlib.contextmanager
def ants_session(seed: int | None, omp_nthreads: int | None) -> Iterator[None]:
    """Seed ANTs' random metric sampling and bound its threads for the duration of a block.

    antspyx 0.6 has no ``random_seed=`` argument (``**kwargs`` of ``ants.registration`` are
    silently dropped): the seed is read from ``ants.config._random_seed`` at call time, so it is set
    here and restored afterwards. ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once, when
    its first filter of the process runs, so ``omp_nthreads`` bounds threads only if this block
    holds the first ANTs call of the process (``None`` leaves the variable alone); the CLI should
    export it at start-up. Registrations are bit-reproducible for a seed only with 1 thread:
    multi-threaded metric sums depend on the thread schedule.
    """
    ants = _import_ants()
    old_seed = ants.config._random_seed
    old_env = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
    if omp_nthreads is not None:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(omp_nthreads)))
    ants.config._random_seed = None if seed is None else int(seed)
    try:
        yield
    finally:
        ants.config._random_seed = old_seed
        if old_env is None:
            os.environ.pop("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", None)
        else:
            os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = old_env


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * float(np.logical_and(a, b).sum()) / denom


def mask_box(mask: np.ndarray, affine: np.ndarray, margin_mm: float) -> tuple[slice, slice, slice]:
    """Bounding box of a boolean mask grown by ``margin_mm`` (clipped to the grid)."""
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        raise ValueError("empty mask")
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    pad = np.ceil(margin_mm / zooms).astype(int)
    x, y, z = (slice(max(0, int(i.min()) - int(p)), min(int(n), int(i.max()) + 1 + int(p)))
               for i, p, n in zip(idx, pad, mask.shape))
    return x, y, z


def grid_shape(img: nib.Nifti1Image) -> tuple[int, int, int]:
    """The 3D grid of an image: the first three entries of its shape."""
    x, y, z = (int(n) for n in img.shape[:3])
    return x, y, z


def box_affine(affine: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
    """Affine of the sub-grid ``box`` of a grid with ``affine``."""
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] = affine[:3, :3] @ np.array([s.start for s in box], dtype=np.float64) + affine[:3, 3]
    return out
