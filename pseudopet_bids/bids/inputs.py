"""Read one (subject, session)'s images: the raw T1w and PET, or their ``--derivatives`` stand-ins.

The preprocessing steps that derivative datasets already did (``bids/reuse.py``) come back as a
:class:`Provided` record that :func:`pseudopet_bids.preproc.pipeline.preprocess` uses instead
of computing them. All images are checked and brought to RAS like the raw inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pseudopet_bids.bids.discovery import SubjectInputs
from pseudopet_bids.bids.reuse import TISSUES
from pseudopet_bids.errors import ImageError
from pseudopet_bids.io.intake import load_image, load_static_pet


@dataclass
class Provided:
    """Preprocessing results taken from derivative datasets (all on the T1w grid, RAS).

    Attributes
    ----------
    mask
        Brain mask, or None (computed).
    tissues
        ``GM``/``WM``/``CSF`` probability maps, or None (computed).
    xfm
        (forward, inverse) transform files to/from the template, ANTs-readable
        (``.h5`` composite or displacement field), or None (registration computed).
    pet_in_t1w
        The PET is already in T1w space (PETPrep ``space-T1w``): no coregistration.
    fingerprint
        sha256 of the reused files (preprocessing cache key).
    sources
        Role → BIDS URI of each reused file.
    """

    mask: nib.Nifti1Image | None = None
    tissues: dict[str, nib.Nifti1Image] | None = None
    xfm: tuple[Path, Path] | None = None
    pet_in_t1w: bool = False
    fingerprint: str = ""
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class UnitImages:
    """The images one unit runs on, what ``--derivatives`` provided, and their files."""

    t1: nib.Nifti1Image
    pet: nib.Nifti1Image | None = None
    frame_info: dict[str, Any] = field(default_factory=dict)
    provided: Provided = field(default_factory=Provided)
    t1_path: Path | None = None
    pet_path: Path | None = None


def _on_grid(img: nib.Nifti1Image, ref: nib.Nifti1Image, path: Path, kind: str) -> None:
    if img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine, atol=1e-3):
        raise ImageError(f"the reused {kind} is not on the T1w grid ({img.shape[:3]} vs "
                         f"{ref.shape[:3]})", path,
                         "give derivatives computed from this T1w, or drop --derivatives")


def _frame_durations(derivative_pet: Path, raw_meta: dict) -> list | None:
    """Frame durations of a derivative PET: its own sidecar's, else the raw PET's."""
    sidecar = derivative_pet.with_name(derivative_pet.name.split(".nii")[0] + ".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ImageError(f"invalid JSON sidecar ({exc})", sidecar, "fix the JSON") from exc
        if meta.get("FrameDuration") is not None:
            return meta["FrameDuration"]
    return raw_meta.get("FrameDuration")


def input_files(unit: SubjectInputs) -> dict[str, Path | None]:
    """The files :func:`load_inputs` reads the unit's images from, by role (``t1w``, ``pet``):
    the raw ones, or the preprocessed T1w or PET of a ``--derivatives`` dataset. The workflows
    name them in errors about the data (:func:`pseudopet_bids.errors.naming_inputs`)."""
    files = unit.reused.files
    return {"t1w": files.get("t1w", unit.t1w),
            "pet": None if unit.pet is None else files.get("pet", unit.pet)}


def load_inputs(unit: SubjectInputs, with_pet: bool = True) -> UnitImages:
    """Read and check the unit's T1w and PET and whatever ``--derivatives`` provide.

    Parameters
    ----------
    unit
        A runnable unit of :func:`pseudopet_bids.bids.discovery.discover`.
    with_pet
        Read the PET (False: T1w-only training control).

    Raises
    ------
    ImageError
        An unreadable image, or a reused mask/tissue map off the T1w grid.
    """
    files = unit.reused.files
    t1_path = input_files(unit)["t1w"]
    if t1_path is None:
        raise ImageError("no T1w image", None, "add a T1w")
    t1 = load_image(t1_path, "T1w")
    provided = Provided(sources=unit.reused.sidecar_entry(),
                        fingerprint=unit.reused.fingerprint() if files else "")
    if "mask" in files:
        mask = load_image(files["mask"], "brain mask")
        _on_grid(mask, t1, files["mask"], "brain mask")
        provided.mask = nib.Nifti1Image((np.asarray(mask.dataobj) > 0.5).astype(np.uint8),
                                        t1.affine)
    if unit.reused.tissues:
        provided.tissues = {}
        for label in TISSUES:
            img = load_image(files[label], f"{label} probability map")
            _on_grid(img, t1, files[label], f"{label} probability map")
            provided.tissues[label] = nib.Nifti1Image(
                np.clip(np.asarray(img.dataobj, dtype=np.float32), 0.0, 1.0), t1.affine)
    if unit.reused.xfm:
        provided.xfm = (files["xfm_forward"], files["xfm_inverse"])
    frame_info: dict[str, Any]
    pet, frame_info, pet_path = None, {}, None
    if with_pet and unit.pet is not None:
        if "pet" in files:
            pet_path = files["pet"]
            pet, frame_info = load_static_pet(pet_path, _frame_durations(pet_path,
                                                                         unit.pet_meta))
            provided.pet_in_t1w = True
        else:
            pet_path = unit.pet
            pet, frame_info = load_static_pet(pet_path, unit.pet_meta.get("FrameDuration"))
    return UnitImages(t1=t1, pet=pet, frame_info=frame_info, provided=provided,
                      t1_path=Path(t1_path), pet_path=pet_path)
