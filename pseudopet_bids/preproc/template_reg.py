"""T1w → template (``MNI152NLin2009aSym``) registration: affine + SyN (ANTs), estimated at 2 mm.

The template shipped with nilearn is skull-stripped, so the brain-masked T1w is registered to it.
Both images are resampled to 2 mm for the estimation (a 1 mm estimation is ~8x slower for the
same GM overlap); the transforms are physical-space maps, so they apply to images of any grid.

Direction conventions (ANTs registration with fixed = template, moving = T1w)
------------------------------------------------------------------------------
``forward`` transforms (``[1Warp, 0GenericAffine]``)
    map **template points to T1w points**; they are what ``antsApplyTransforms`` needs to resample
    a **T1w-space image into template space**. Written by :meth:`TemplateRegistration.write` as
    ``from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.nii.gz`` (fMRIPrep/ANTs naming: the file
    named ``from-A_to-B`` moves *images* from A to B).
``inverse`` transforms (``[0GenericAffine (inverted), 1InverseWarp]``)
    map **T1w points to template points**; they resample a **template-space image onto the T1w
    grid** (:meth:`TemplateRegistration.to_t1`) and carry T1w coordinates into template
    coordinates (:meth:`TemplateRegistration.points_to_template`). Written as
    ``from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.nii.gz``.
Points are RAS mm at this API; ANTs works in LPS, and the flips happen inside.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from pseudopet_bids import resources
from pseudopet_bids.errors import DataError
from pseudopet_bids.preproc._ants import (LPS, ants_session, box_affine, from_ants, grid_shape,
                                          mask_box, resample_to_spacing, to_ants)

if TYPE_CHECKING:  # antspyx has no type information: Any to mypy
    from ants import ANTsImage

REGISTRATION_MM = 2.0  # estimation grid of the registration
FIELD_MM = 2.0         # grid of the written displacement fields (the warp is estimated at 2 mm)


@dataclass
class TemplateRegistration:
    """A T1w ↔ template mapping estimated by :func:`register_t1_to_template`.

    Attributes
    ----------
    t1_affine, t1_shape
        The T1w grid (the ``T1w`` space of the derivatives).
    forward
        ANTs transform files mapping template points → T1w points (resample T1w → template).
    inverse
        ANTs transform files mapping T1w points → template points (resample template → T1w),
        with ``inverse_invert`` flags (the affine is inverted on the fly, ANTs convention).
    metric
        Mattes MI between the warped T1w brain and the template at 2 mm (more negative = better).
    grids
        The 2 mm template and T1w images the registration was estimated on, when it was
        estimated in this process (not kept in the preprocessing cache): :meth:`write` composes
        the fields on their grids instead of resampling two 1 mm images again (1.5 s).
    """

    t1_affine: np.ndarray
    t1_shape: tuple[int, int, int]
    forward: list[str]
    inverse: list[str]
    inverse_invert: list[bool] = field(default_factory=lambda: [True, False])
    metric: float = float("nan")
    brain_box: tuple[slice, slice, slice] | None = None
    grids: tuple[ANTsImage, ANTsImage] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_files(cls, t1: nib.Nifti1Image, forward_path: Path, inverse_path: Path
                   ) -> "TemplateRegistration":
        """The mapping written by :meth:`write` (the derivatives' ``_xfm.nii.gz`` pair).

        ``t1`` is the image that defines the T1w grid (``desc-preproc_T1w``).
        """
        for path in (forward_path, inverse_path):
            if not Path(path).is_file():
                raise FileNotFoundError(path)
        return cls(t1_affine=t1.affine, t1_shape=grid_shape(t1),
                   forward=[str(forward_path)], inverse=[str(inverse_path)],
                   inverse_invert=[False])

    def _t1_ref(self, box: tuple[slice, slice, slice] | None = None) -> ANTsImage:
        shape = self.t1_shape if box is None else tuple(s.stop - s.start for s in box)
        affine = self.t1_affine if box is None else box_affine(self.t1_affine, box)
        return to_ants(nib.Nifti1Image(np.zeros(shape, dtype=np.float32), affine))

    def to_t1(self, img: nib.Nifti1Image, interpolation: str = "nearest", *,
              crop: bool = True) -> nib.Nifti1Image:
        """Resample a template-space image onto the T1w grid.

        Parameters
        ----------
        img
            3D image in template space (any grid, e.g. ``resources.load_aal()``).
        interpolation
            ``nearest`` (labels; the output keeps the input's integer dtype) or ``linear``
            (float32, e.g. probability maps).
        crop
            Evaluate only inside :attr:`brain_box` (the T1w brain mask's bounding box grown by
            20 mm) and leave 0 elsewhere: ~3x faster on a 256³ grid, and exact for every
            template-space image of this project (skull-stripped template, its tissue maps,
            AAL, lobes), which are 0 outside the brain. ``False`` fills the whole grid.
        """
        import ants

        interp = {"nearest": "nearestNeighbor", "linear": "linear"}.get(interpolation)
        if interp is None:
            raise ValueError(f"unknown interpolation {interpolation!r}; choose nearest or linear")
        box = self.brain_box if crop else None
        with ants_session(None, None):
            out = ants.apply_transforms(self._t1_ref(box), to_ants(img), self.inverse,
                                        interpolator=interp, whichtoinvert=self.inverse_invert)
        dtype = img.get_data_dtype()
        integer = interpolation == "nearest" and np.issubdtype(dtype, np.integer)
        values = np.rint(out.numpy()).astype(dtype) if integer else out.numpy().astype(np.float32)
        if box is None:
            return nib.Nifti1Image(values, self.t1_affine)
        full = np.zeros(self.t1_shape, dtype=values.dtype)
        full[box] = values
        return nib.Nifti1Image(full, self.t1_affine)

    def to_template(self, img: nib.Nifti1Image, interpolation: str = "linear",
                    reference: nib.Nifti1Image | None = None) -> nib.Nifti1Image:
        """Resample a T1w-space image into template space (1 mm template grid by default)."""
        import ants

        interp = {"nearest": "nearestNeighbor", "linear": "linear"}[interpolation]
        ref = to_ants(reference if reference is not None else resources.load_template("mask"))
        with ants_session(None, None):
            out = ants.apply_transforms(ref, to_ants(img), self.forward, interpolator=interp)
        return from_ants(out)

    def points_to_template(self, xyz: np.ndarray) -> np.ndarray:
        """Map (N, 3) T1w scanner RAS mm to (N, 3) template RAS mm."""
        return self._map_points(xyz, self.inverse, self.inverse_invert)

    def points_to_t1(self, xyz: np.ndarray) -> np.ndarray:
        """Map (N, 3) template RAS mm to (N, 3) T1w scanner RAS mm."""
        return self._map_points(xyz, self.forward, [False] * len(self.forward))

    @staticmethod
    def _map_points(xyz: np.ndarray, transforms: list[str], invert: list[bool]) -> np.ndarray:
        import ants
        import pandas as pd

        pts = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"expected (N, 3) points, got shape {np.shape(xyz)}")
        if len(pts) == 0:
            return pts.copy()
        # ANTs point transforms use the transforms of the *image* mapping in the other
        # direction (a point list is mapped fixed -> moving), in LPS.
        lps = pts * LPS[:3, :3].diagonal()
        frame = pd.DataFrame({"x": lps[:, 0], "y": lps[:, 1], "z": lps[:, 2]})
        out = ants.apply_transforms_to_points(3, frame, transforms, whichtoinvert=list(invert))
        return out[["x", "y", "z"]].to_numpy(dtype=np.float64) * LPS[:3, :3].diagonal()

    def write(self, forward_path: Path, inverse_path: Path) -> None:
        """Write both composite transforms as ITK displacement fields (``.nii.gz``).

        Parameters
        ----------
        forward_path
            ``…_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.nii.gz``: a field on a 2 mm
            template grid whose vectors map template points to T1w points (LPS mm), i.e. what
            ``antsApplyTransforms -r template -i T1w -t forward`` needs.
        inverse_path
            ``…_from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.nii.gz``: a field on a 2 mm grid
            covering the T1w field of view, mapping T1w points to template points.

        Both are on 2 mm grids (the warp was estimated at 2 mm, and linear interpolation of the
        field loses nothing); a 1 mm field of a 256³ T1w would be ~200 MB.
        """
        import ants

        if self.grids is not None and REGISTRATION_MM == FIELD_MM:
            # the same grids: only their geometry (and pixel type) counts, not the values
            template_ref, t1_ref = self.grids
        else:
            template_ref = resample_to_spacing(to_ants(resources.load_template("mask")),
                                               FIELD_MM)
            t1_ref = resample_to_spacing(self._t1_ref(), FIELD_MM)
        with ants_session(None, None), tempfile.TemporaryDirectory(prefix="xfm") as tmp:
            jobs = ((template_ref, self.forward, [False] * len(self.forward), forward_path),
                    (t1_ref, self.inverse, self.inverse_invert, inverse_path))
            for k, (ref, transforms, invert, dest) in enumerate(jobs):
                # the moving image only sets the pixel type; the composed field is the output
                composed = ants.apply_transforms(ref, ref, transforms, whichtoinvert=invert,
                                                 compose=str(Path(tmp) / f"c{k}_"),
                                                 singleprecision=True)
                if composed is None:
                    raise RuntimeError("antsApplyTransforms did not write the composed field")
                dest = Path(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(composed, dest)


def register_t1_to_template(t1: nib.Nifti1Image, t1_mask: nib.Nifti1Image, workdir: Path,
                            seed: int = 0, omp_nthreads: int = 1) -> TemplateRegistration:
    """Affine + SyN registration of the brain-masked T1w to the template, estimated at 2 mm.

    Parameters
    ----------
    t1
        T1w (RAS, float32), skull present or not.
    t1_mask
        Brain mask on the T1w grid (the template is skull-stripped).
    workdir
        Folder that receives the ANTs transform files (``t1w2template_*``).
    seed
        Seed of ANTs' random metric sampling (set through ``ants.config``; see ``_ants.py``).
    omp_nthreads
        ITK threads.

    Returns
    -------
    TemplateRegistration
    """
    import ants

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    inside = np.asarray(t1_mask.dataobj) > 0
    if inside.shape != t1.shape[:3]:
        raise ValueError("t1_mask must lie on the T1w grid")
    if inside.sum() < 1000:
        raise DataError(f"template registration: the brain holds only {int(inside.sum())} "
                        "voxels of the T1w (at least 1000 are needed): the image is too coarse",
                        role="t1w", fix="give a T1w with voxels of 1 to 2 mm")
    data = np.asarray(t1.dataobj, dtype=np.float32)
    # scale the brain to the template's [0, 1] (MI does not need it; the optimiser steps do)
    hi = float(np.percentile(data[inside], 99.5)) or 1.0
    brain = np.where(inside, np.clip(data / hi, 0.0, 1.5), 0.0).astype(np.float32)
    prefix = str(workdir / "t1w2template_")
    for old in workdir.glob("t1w2template_*"):
        old.unlink()  # a stale file would be picked up by antspyx's glob of the prefix
    with ants_session(seed, omp_nthreads):
        moving = resample_to_spacing(to_ants(t1, brain), REGISTRATION_MM)
        fixed = resample_to_spacing(to_ants(resources.load_template("T1w")), REGISTRATION_MM)
        reg = ants.registration(fixed, moving, type_of_transform="SyN", outprefix=prefix,
                                aff_metric="mattes", aff_random_sampling_rate=0.1,
                                syn_metric="mattes", reg_iterations=(40, 20, 0))
        metric = float(ants.image_similarity(fixed, reg["warpedmovout"],
                                             "MattesMutualInformation"))
    forward = [str(p) for p in reg["fwdtransforms"]]
    inverse = [str(p) for p in reg["invtransforms"]]
    if len(inverse) != 2 or not inverse[0].endswith(".mat"):
        raise RuntimeError(f"unexpected ANTs transform list {inverse}")
    return TemplateRegistration(t1_affine=np.asarray(t1.affine, dtype=np.float64),
                                t1_shape=grid_shape(t1),
                                forward=forward, inverse=inverse, metric=metric,
                                brain_box=mask_box(inside, t1.affine, 20.0),
                                grids=(fixed, moving))
