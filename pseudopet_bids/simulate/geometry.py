"""Grids, orientations, random spatial transforms and fast resampling for the simulator.

Conventions
    World coordinates are millimetres in the RAS+ frame of the NIfTI standard. A :class:`Grid` maps
    voxel indices to world millimetres through a 4×4 affine. Template coordinates are the mm of
    ``MNI152NLin2009aSym`` (:mod:`pseudopet_bids.resources`).

Every image of a subject is produced by *pulling*: each output voxel centre is mapped to template
millimetres (``to_template``) and the template-space model is interpolated there. Only the backward
map is ever needed, so the nonlinear warp never has to be inverted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Voxel axis direction of each orientation letter: (world axis, sign).
_AXIS_OF_LETTER: dict[str, tuple[int, float]] = {
    "R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0),
}

PointMap = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` and the voxel → world (mm) ``affine``."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def voxel_mm(self) -> np.ndarray:
        """Voxel edge lengths (mm) along the three voxel axes."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def to_world(self, ijk: np.ndarray) -> np.ndarray:
        """World mm of (N, 3) voxel indices."""
        return apply_affine(self.affine, ijk)

    def to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Voxel indices (float) of (N, 3) world mm."""
        return apply_affine(np.linalg.inv(self.affine), xyz)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4×4 affine to (N, 3) points."""
    p = np.asarray(points, dtype=np.float64)
    # Column by column: faster than a (N, 3) @ (3, 3) matmul, which takes a slow BLAS path.
    return (p[:, 0:1] * matrix[:3, 0] + p[:, 1:2] * matrix[:3, 1] + p[:, 2:3] * matrix[:3, 2]
            + matrix[:3, 3])


def oriented_grid(fov_mm: Sequence[float], voxel_mm: float, orientation: str,
                  centre_mm: Sequence[float]) -> Grid:
    """An axis-aligned grid in a given orientation, centred on a world point.

    Parameters
    ----------
    fov_mm
        Field of view along the world x, y, z axes (mm), whatever the voxel order.
    voxel_mm
        Isotropic voxel size (mm).
    orientation
        Three letters naming where each voxel axis points, e.g. ``RAS``, ``LPS`` or ``PIL``
        (a sagittal acquisition: slices run right → left).
    centre_mm
        World coordinate of the grid centre.
    """
    orientation = orientation.upper()
    axes = [_AXIS_OF_LETTER[c] for c in orientation]
    if sorted(a for a, _ in axes) != [0, 1, 2]:
        raise ValueError(f"orientation {orientation!r} does not name each axis once")
    affine = np.eye(4)
    shape = []
    for i, (world_axis, sign) in enumerate(axes):
        affine[:3, i] = 0.0
        affine[world_axis, i] = sign * voxel_mm
        shape.append(int(round(fov_mm[world_axis] / voxel_mm)))
    middle = (np.array(shape) - 1) / 2.0
    affine[:3, 3] = np.asarray(centre_mm, dtype=np.float64) - affine[:3, :3] @ middle
    return Grid(tuple(shape), affine)


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """3×3 rotation about x, then y, then z (angles in degrees)."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def compose_affine(angles_deg: Sequence[float], scales: Sequence[float],
                   translation_mm: Sequence[float]) -> np.ndarray:
    """4×4 matrix ``x = R·diag(scales)·y + t`` (rotation and scaling about the origin)."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_matrix(angles_deg) @ np.diag(np.asarray(scales, dtype=np.float64))
    matrix[:3, 3] = translation_mm
    return matrix


@dataclass(frozen=True)
class SubjectWarp:
    """Backward map from a subject's world (MR scanner mm) to template mm.

    ``y0 = inv(affine) @ x`` undoes the subject's global pose and size; ``y = y0 + u(y0)`` adds a
    smooth displacement ``u`` held on a coarse template-space lattice (cubic B-spline coefficients).
    """

    affine: np.ndarray          # template mm -> subject world mm
    coeffs: np.ndarray          # (3, nx, ny, nz) spline coefficients of u (mm)
    lattice: Grid               # voxel -> template mm of the displacement lattice

    def to_template(self, xyz: np.ndarray) -> np.ndarray:
        """Template mm of (N, 3) subject-world mm."""
        y0 = apply_affine(np.linalg.inv(self.affine), xyz)
        ijk = self.lattice.to_voxel(y0).T
        disp = np.stack([ndimage.map_coordinates(c, ijk, order=3, mode="nearest",
                                                 prefilter=False) for c in self.coeffs], axis=1)
        return y0 + disp


def random_displacement(rng: np.random.Generator, bounds_mm: Sequence[tuple[float, float]],
                        max_mm: float, spacing_mm: float = 10.0) -> tuple[np.ndarray, Grid]:
    """A smooth random displacement field on a coarse lattice covering ``bounds_mm``.

    Returns
    -------
    coeffs, lattice
        Cubic spline coefficients (3, nx, ny, nz) in mm, scaled so the largest displacement
        magnitude at the lattice nodes is ``max_mm``, and the lattice grid.
    """
    lo = np.array([b[0] for b in bounds_mm], dtype=np.float64)
    shape = tuple(int(np.ceil((b[1] - b[0]) / spacing_mm)) + 1 for b in bounds_mm)
    field = rng.standard_normal((3, *shape))
    # Smoothing over ~2 nodes keeps wavelengths at several centimetres: a shape change, not noise.
    field = np.stack([ndimage.gaussian_filter(c, 2.0, mode="nearest") for c in field])
    field *= max_mm / max(float(np.sqrt((field ** 2).sum(0)).max()), 1e-9)
    coeffs = np.stack([ndimage.spline_filter(c, order=3, mode="nearest") for c in field])
    lattice = Grid(shape, np.array([[spacing_mm, 0, 0, lo[0]], [0, spacing_mm, 0, lo[1]],
                                    [0, 0, spacing_mm, lo[2]], [0, 0, 0, 1.0]]))
    return coeffs, lattice


def _coarse_lattice(grid: Grid, step_mm: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Voxel indices of a coarse lattice spanning ``grid`` corner to corner, and its world mm."""
    axes = []
    for n, vox in zip(grid.shape, grid.voxel_mm):
        count = max(2, int(np.ceil((n - 1) * vox / step_mm)) + 1)
        axes.append(np.linspace(0.0, n - 1.0, count))
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return axes, grid.to_world(mesh)


def smooth_field_on_grid(grid: Grid, fn: PointMap, step_mm: float = 8.0) -> np.ndarray:
    """Evaluate a smooth scalar function of world mm on ``grid`` (coarse lattice + trilinear).

    A smooth field varies little over ``step_mm``, so evaluating it on a coarse lattice and
    interpolating is indistinguishable from evaluating it everywhere, at a fraction of the cost.
    """
    import torch
    import torch.nn.functional as F

    axes, world = _coarse_lattice(grid, step_mm)
    values = np.asarray(fn(world), dtype=np.float32).reshape([len(a) for a in axes])
    fine = F.interpolate(torch.from_numpy(values)[None, None], size=grid.shape,
                         mode="trilinear", align_corners=True)
    return fine[0, 0].numpy()


def pull(volumes: np.ndarray, source: Grid, target: Grid, to_source_mm: PointMap,
         step_mm: float = 8.0) -> np.ndarray:
    """Resample source-grid volumes onto ``target`` through a smooth backward point map.

    Parameters
    ----------
    volumes
        (C, *source.shape) float32 volumes.
    source
        Grid of ``volumes`` (template space).
    target
        Output grid.
    to_source_mm
        (N, 3) target world mm → (N, 3) source world mm; must be smooth (affine + a displacement
        varying over centimetres): it is evaluated on a lattice every ``step_mm`` and
        interpolated trilinearly in between, which reproduces its affine part exactly (the
        warp's ~10 cm wavelengths leave an error below 0.1 mm at 8 mm).
    step_mm
        Spacing of that lattice.

    Returns
    -------
    numpy.ndarray
        (C, *target.shape) float32, trilinear interpolation, zero outside ``source``.
    """
    import torch
    import torch.nn.functional as F

    axes, world = _coarse_lattice(target, step_mm)
    ijk = source.to_voxel(to_source_mm(world))
    # grid_sample wants (x, y, z) = (last, middle, first) array axis, normalised to [-1, 1].
    norm = 2.0 * ijk / (np.array(source.shape, dtype=np.float64) - 1.0) - 1.0
    coarse = norm[:, ::-1].astype(np.float32).reshape(*[len(a) for a in axes], 3)
    coarse_t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(coarse, -1, 0)))[None]
    fine = F.interpolate(coarse_t, size=target.shape, mode="trilinear", align_corners=True)
    sample_grid = fine[0].permute(1, 2, 3, 0)[None].contiguous()
    del fine
    src = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None]
    out = F.grid_sample(src, sample_grid, mode="bilinear", padding_mode="zeros",
                        align_corners=True)
    return out[0].numpy()
