"""Rigid PET → T1w coregistration by mutual information (ANTs); PET resampling onto the T1w grid.

The PET is registered to the brain-masked T1w at 2 mm (the PET carries no scalp signal, and 2 mm
is the PET's own resolution, so nothing is gained at 1 mm). The search starts from the alignment of
the intensity centres of mass, which absorbs header translations of centimetres; rotations of a
few degrees are well inside the capture range of multi-resolution Mattes MI. Optional extra starts
(rotations about each axis) are tried and the one with the best final metric kept.

Direction convention (one matrix, stated once): :attr:`RigidResult.t1_to_pet` maps **T1w scanner
RAS mm to PET scanner RAS mm**, ``x_pet = t1_to_pet @ x_t1``. It is the "pull" transform that
resamples the PET onto the T1w grid, the same direction as the ANTs transform file (which maps
fixed = T1w points to moving = PET points, in LPS). The matrix that moves PET-space points into
T1w space is :attr:`RigidResult.pet_to_t1` (its inverse).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from pseudopet_bids.preproc._ants import (LPS, ants_affine, ants_session, box_affine, mask_box,
                                          resample_to_spacing, to_ants)

if TYPE_CHECKING:  # antspyx has no type information: Any to mypy
    from ants import ANTsImage, ANTsTransform


@dataclass
class RigidResult:
    """Result of :func:`coregister_pet_to_t1`.

    Attributes
    ----------
    t1_to_pet
        4x4 RAS matrix, ``x_pet_mm = t1_to_pet @ x_t1_mm`` (scanner coordinates of the two
        headers). Use it to pull PET values onto T1w voxels.
    transform_files
        The ANTs transform file(s) (ITK ``.mat``, LPS, fixed = T1w, moving = PET) when a
        ``workdir`` was given; empty otherwise (the temporary files are removed).
    metric
        Final Mattes mutual information on the 2 mm registration grid (ANTs sign: more
        negative is better).
    starts
        Metric of each start that was tried (first = centre-of-mass start).
    """

    t1_to_pet: np.ndarray
    transform_files: list[Path] = field(default_factory=list)
    metric: float = float("nan")
    starts: list[float] = field(default_factory=list)

    @property
    def pet_to_t1(self) -> np.ndarray:
        """4x4 RAS matrix moving PET scanner points into T1w scanner coordinates."""
        return np.linalg.inv(self.t1_to_pet)

    def rotation_deg(self) -> float:
        """Total rotation angle of the transform (degrees)."""
        return float(np.degrees(Rotation.from_matrix(self.t1_to_pet[:3, :3]).magnitude()))


def ants_matrix_to_ras(parameters: np.ndarray, fixed_parameters: np.ndarray) -> np.ndarray:
    """4x4 RAS matrix of an ITK ``MatrixOffsetTransformBase`` (affine/rigid ``.mat``) in LPS.

    ITK stores ``y = A (x - c) + t + c`` with ``parameters = [A (row-major), t]`` and
    ``fixed_parameters = c``; it maps fixed-space to moving-space LPS points.
    """
    params = np.asarray(parameters, dtype=np.float64)
    centre = np.asarray(fixed_parameters, dtype=np.float64)[:3]
    a = params[:9].reshape(3, 3)
    t = params[9:12]
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = t + centre - a @ centre
    return LPS @ lps @ LPS


def ras_to_ants_transform(matrix: np.ndarray) -> ANTsTransform:
    """``ants.ANTsTransform`` (affine, LPS) for a 4x4 RAS fixed→moving matrix."""
    import ants

    lps = LPS @ np.asarray(matrix, dtype=np.float64) @ LPS
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    matrix=lps[:3, :3], translation=lps[:3, 3])
    return tx


def _prepare(pet: nib.Nifti1Image, t1: nib.Nifti1Image, t1_mask: nib.Nifti1Image | None
             ) -> tuple[ANTsImage, ANTsImage]:
    """Fixed (T1w brain, 2 mm) and moving (PET, >= 0) ANTs images."""
    t1_data = np.asarray(t1.dataobj, dtype=np.float32)
    if t1_mask is not None:
        inside = np.asarray(t1_mask.dataobj) > 0
        if inside.shape != t1_data.shape:
            raise ValueError("t1_mask must lie on the T1w grid")
        # a slightly dilated mask keeps the brain edge (the strongest PET/T1w feature)
        inside = ndimage.binary_dilation(inside, iterations=2)
        t1_data = np.where(inside, t1_data, 0.0).astype(np.float32)
        # the metric samples the fixed grid: crop it to the brain (+10 mm of background)
        box = mask_box(inside, t1.affine, 10.0)
        t1 = nib.Nifti1Image(t1_data[box], box_affine(t1.affine, box))
        t1_data = np.asarray(t1.dataobj)
    fixed = resample_to_spacing(to_ants(t1, t1_data), 2.0, "linear")
    pet_data = np.nan_to_num(np.asarray(pet.dataobj, dtype=np.float32))
    if pet_data.ndim != 3:
        raise ValueError(f"coregister_pet_to_t1 needs a 3D PET, got shape {pet_data.shape}")
    moving = to_ants(pet, np.clip(pet_data, 0.0, None))
    return fixed, moving


def _centre_of_mass(aimg: ANTsImage) -> np.ndarray:
    """Intensity centre of mass of an ``ANTsImage`` in RAS mm."""
    data = np.clip(aimg.numpy(), 0.0, None)
    com = np.asarray(ndimage.center_of_mass(data))
    return (ants_affine(aimg) @ np.append(com, 1.0))[:3]


def coregister_pet_to_t1(pet: nib.Nifti1Image, t1: nib.Nifti1Image,
                         t1_mask: nib.Nifti1Image | None = None, seed: int = 0,
                         omp_nthreads: int = 1, *, n_starts: int = 1,
                         workdir: Path | None = None) -> RigidResult:
    """Rigid PET → T1w registration (6 parameters) by Mattes mutual information.

    Parameters
    ----------
    pet
        Static 3D PET (RAS).
    t1
        T1w (RAS) defining the target space.
    t1_mask
        Brain mask on the T1w grid (recommended: the PET has no scalp signal).
    seed
        Seed of ANTs' random metric sampling.
    omp_nthreads
        ITK threads.
    n_starts
        1 = centre-of-mass start only; more adds starts rotated by ±15° about x (pitch, the
        usual disagreement) then about z and y, and keeps the best final metric.
    workdir
        If given, the chosen ANTs transform is copied there as ``pet_to_t1_rigid.mat``.

    Returns
    -------
    RigidResult
    """
    import ants

    fixed, moving = _prepare(pet, t1, t1_mask)
    offsets = [np.zeros(3)] + [np.eye(3)[axis] * sign * 15.0
                               for axis in (0, 2, 1) for sign in (1, -1)]
    offsets = offsets[:max(1, int(n_starts))]
    c_fix, c_mov = _centre_of_mass(fixed), _centre_of_mass(moving)
    best: tuple[float, np.ndarray, str] | None = None
    metrics: list[float] = []
    with ants_session(seed, omp_nthreads), tempfile.TemporaryDirectory(prefix="coreg") as tmp:
        for k, rot in enumerate(offsets):
            # start: rotate about the T1w centre of mass, then move it onto the PET's
            init = np.eye(4)
            init[:3, :3] = Rotation.from_euler("xyz", rot, degrees=True).as_matrix()
            init[:3, 3] = c_mov - init[:3, :3] @ c_fix
            init_file = str(Path(tmp) / f"init{k}.mat")
            ants.write_transform(ras_to_ants_transform(init), init_file)
            reg = ants.registration(
                fixed, moving, type_of_transform="Rigid", initial_transform=[init_file],
                outprefix=str(Path(tmp) / f"start{k}_"), aff_metric="mattes",
                aff_sampling=32, aff_random_sampling_rate=0.1,
                aff_iterations=(500, 250, 100), aff_shrink_factors=(4, 2, 1),
                aff_smoothing_sigmas=(4, 2, 0), smoothing_in_mm=True)
            tx_file = reg["fwdtransforms"][0]
            tx = ants.read_transform(tx_file)
            matrix = ants_matrix_to_ras(tx.parameters, tx.fixed_parameters)
            warped = ants.apply_transforms(fixed, moving, [tx_file], interpolator="linear")
            metric = float(ants.image_similarity(fixed, warped, "MattesMutualInformation"))
            metrics.append(metric)
            if best is None or metric < best[0]:
                best = (metric, matrix, tx_file)
        if best is None:  # n_starts >= 1 always runs one start
            raise RuntimeError("no coregistration start ran")
        files: list[Path] = []
        if workdir is not None:
            workdir = Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            dest = workdir / "pet_to_t1_rigid.mat"
            shutil.copyfile(best[2], dest)
            files.append(dest)
    return RigidResult(t1_to_pet=best[1], transform_files=files, metric=best[0], starts=metrics)


def resample_pet_to_t1(pet: nib.Nifti1Image, t1: nib.Nifti1Image, result: RigidResult,
                       interpolation: str = "linear") -> nib.Nifti1Image:
    """The PET on the T1w grid (float32), through ``result.t1_to_pet``.

    Parameters
    ----------
    interpolation
        ``linear`` (default) or ``bspline`` (cubic; the result is clipped to the input's value
        range so that the spline's ringing makes no negative or overshooting values).
        Voxels outside the PET field of view are 0.
    """
    if interpolation not in ("linear", "bspline"):
        raise ValueError(f"unknown interpolation {interpolation!r}; choose linear or bspline")
    data = np.nan_to_num(np.asarray(pet.dataobj, dtype=np.float32))
    # output voxel -> T1 world -> PET world -> PET voxel, in one matrix
    vox = np.linalg.inv(pet.affine) @ np.asarray(result.t1_to_pet) @ t1.affine
    order = 1 if interpolation == "linear" else 3
    out = ndimage.affine_transform(data, vox, output_shape=t1.shape[:3], order=order,
                                   mode="constant", cval=0.0, prefilter=order > 1,
                                   output=np.float32)
    if order > 1:
        np.clip(out, min(float(data.min()), 0.0), float(data.max()), out=out)
    return nib.Nifti1Image(out, t1.affine)
