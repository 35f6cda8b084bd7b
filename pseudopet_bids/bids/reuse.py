"""Reuse of fMRIPrep / sMRIPrep / PETPrep derivatives (``-d/--derivatives NAME=PATH``).

What is looked for, per (subject, session), with pybids on each derivative dataset:

==================  ================================================================  =========
role                file (fMRIPrep / sMRIPrep / PETPrep naming)                          replaces
==================  ================================================================  =========
``t1w``             ``sub-<L>[_ses-<S>]_desc-preproc_T1w.nii[.gz]`` (no ``space-``)        input T1w
``mask``            ``…_desc-brain_mask.nii[.gz]`` (no ``space-``)                        brain mask
``GM/WM/CSF``       ``…_label-{GM,WM,CSF}_probseg.nii[.gz]`` (all three, no ``space-``)   segmentation
``xfm``             ``…_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.{h5,nii.gz}`` and   template
                    ``…_from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.{h5,nii.gz}``      registration
``pet``             ``<PET entities>_space-T1w_desc-preproc_pet.nii[.gz]``                coregistration
==================  ================================================================  =========

Rules
-----
- Files of the unit's session win over session-less ones (fMRIPrep writes one anatomy per
  subject, without ``ses-``). Two candidates for one role make that role ambiguous: not reused.
- The anatomical roles come from **one** dataset (the first given that has any of them), so
  that the mask, tissues and transforms belong to the same anatomical reference. The PET comes
  from the first dataset that has one matching the chosen raw PET's ``trc``/``rec``/``acq``/``run``.
- The transforms are reused only when they target pseudopet's template
  (``MNI152NLin2009aSym``); fMRIPrep's default ``MNI152NLin2009cAsym`` is a different template,
  so the registration is computed (the pre-flight table says so, and how to get the right one).
- Grids are checked from the headers before anything runs: the mask and tissue maps must lie on
  the grid of the image they accompany (``desc-preproc_T1w``, or the input T1w when the
  derivatives have none). A mismatch skips the subject with a message naming both files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from pseudopet_bids.bids.entities import parse_entities
from pseudopet_bids.errors import InputError

if TYPE_CHECKING:  # pybids has no type information: Any to mypy
    from bids import BIDSLayout

LOGGER = logging.getLogger(__name__)
TEMPLATE = "MNI152NLin2009aSym"
TISSUES = ("GM", "WM", "CSF")
NIFTI = [".nii", ".nii.gz"]
#: PET entities that must agree between the raw PET and a derivative PET.
PET_ENTITIES = ("trc", "rec", "acq", "run")
_PYBIDS_NAMES = {"trc": "tracer", "rec": "reconstruction", "acq": "acquisition", "run": "run"}


def parse_derivative_specs(specs: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` (or a bare ``PATH``, named after its folder) → ``{name: path}``.

    Raises
    ------
    InputError
        A folder that does not exist or is not a BIDS derivatives dataset (exit 66).
    """
    datasets: dict[str, Path] = {}
    for spec in specs:
        name, sep, path_text = spec.partition("=")
        if not sep:
            name, path_text = Path(spec).name, spec
        path = Path(path_text).expanduser().resolve()
        if not path.is_dir():
            raise InputError("--derivatives: folder not found", path,
                             "give NAME=PATH with PATH the root of an fMRIPrep/sMRIPrep/PETPrep "
                             "output dataset")
        desc = path / "dataset_description.json"
        if not desc.is_file():
            raise InputError("--derivatives: not a BIDS derivatives dataset "
                             "(dataset_description.json is missing)", path,
                             "point to the dataset root (the folder holding "
                             "dataset_description.json and sub-*)")
        try:
            json.loads(desc.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"--derivatives: unreadable dataset_description.json ({exc})", desc,
                             "fix the JSON") from exc
        if name in datasets:
            raise InputError(f"--derivatives: the name {name!r} is given twice", path,
                             "give each dataset its own NAME=PATH")
        datasets[name] = path
    return datasets


@dataclass
class Reused:
    """Derivative files reused for one (subject, session).

    Attributes
    ----------
    files
        Role (``t1w``, ``mask``, ``GM``, ``WM``, ``CSF``, ``xfm_forward``, ``xfm_inverse``,
        ``pet``) → file.
    uris
        Role → BIDS URI (``bids:<NAME>:sub-01/anat/…``) for the sidecars' ``Sources``.
    notes
        What was not reused and why (pre-flight table and log).
    problem
        Why the subject cannot run with these derivatives (grid mismatch), or None.
    """

    files: dict[str, Path] = field(default_factory=dict)
    uris: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problem: str | None = None

    def has(self, *roles: str) -> bool:
        return all(r in self.files for r in roles)

    @property
    def tissues(self) -> bool:
        return self.has(*TISSUES)

    @property
    def xfm(self) -> bool:
        return self.has("xfm_forward", "xfm_inverse")

    def summary(self) -> str:
        """Short text for the pre-flight table, e.g. ``fmriprep: T1w, mask, tissues, xfm``."""
        if not self.files:
            return "-"
        by_dataset: dict[str, list[str]] = {}
        names = {"t1w": "T1w", "mask": "mask", "GM": "tissues", "xfm_forward": "xfm",
                 "pet": "PET"}
        for role, uri in self.uris.items():
            if role in names:
                by_dataset.setdefault(uri.split(":")[1], []).append(names[role])
        return "; ".join(f"{name}: {', '.join(roles)}" for name, roles in by_dataset.items())

    def fingerprint(self) -> str:
        """sha256 over the reused files' names and contents (part of the preprocessing cache
        key and of the analysis record)."""
        digest = hashlib.sha256()
        for role in sorted(self.files):
            digest.update(f"{role}={self.uris.get(role, '')}".encode())
            with open(self.files[role], "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()

    def sidecar_entry(self) -> dict[str, str]:
        """``{"desc-brain_mask": "bids:fmriprep:…", …}`` for the derivatives' sidecars."""
        return dict(sorted(self.uris.items()))


def build_layouts(datasets: dict[str, Path]) -> dict[str, BIDSLayout]:
    """One pybids layout per derivative dataset (derivatives config: ``space``, ``desc``,
    ``label``, ``from``/``to``/``mode`` entities)."""
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    layouts = {}
    for name, path in datasets.items():
        try:
            layouts[name] = BIDSLayout(str(path), validate=False, config=["bids", "derivatives"],
                                       indexer=BIDSLayoutIndexer(validate=False,
                                                                 index_metadata=False))
        except Exception as exc:  # pybids raises many types for broken datasets
            raise InputError(f"--derivatives {name}: pybids cannot index the dataset "
                             f"({type(exc).__name__}: {exc})", path,
                             "check its dataset_description.json and folder layout") from exc
    return layouts


def _pick(layout, subject: str, session: str | None, **query) -> tuple[Path | None, str | None]:
    """The one file of a role: the session's, else a session-less one; (None, why) if several."""
    found = [Path(f.path) for f in layout.get(subject=subject, return_type="object", **query)]
    own = [p for p in found if parse_entities(p).get("ses") == session] if session else []
    shared = [p for p in found if "ses" not in parse_entities(p)]
    for group in (own, shared):
        if len(group) == 1:
            return group[0], None
        if len(group) > 1:
            return None, f"{len(group)} candidates ({', '.join(p.name for p in group[:2])}, ...)"
    return None, None


def _grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    img = cast(SpatialImage, nib.load(str(path)))  # nibabel types load() as any file image
    return tuple(int(n) for n in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)


def _same_grid(a: Path, b: Path) -> bool:
    (shape_a, aff_a), (shape_b, aff_b) = _grid(a), _grid(b)
    return shape_a == shape_b and np.allclose(aff_a, aff_b, atol=1e-3)


def find_reused(layouts: dict[str, BIDSLayout], datasets: dict[str, Path], subject: str,
                session: str | None, raw_t1w: Path | None, raw_pet: Path | None) -> Reused:
    """What the derivative datasets provide for one (subject, session); see module docstring.

    Header problems (unreadable files, grids that disagree) are returned in ``problem``.
    """
    from bids.layout import Query

    reused = Reused()
    if not layouts:
        return reused
    native = {"space": Query.NONE, "extension": NIFTI}
    anat_queries = {
        "t1w": dict(suffix="T1w", desc="preproc", **native),
        "mask": dict(suffix="mask", desc="brain", **native),
        **{t: dict(suffix="probseg", label=t, **native) for t in TISSUES},
        "xfm_forward": dict(suffix="xfm", **{"from": "T1w"}, to=TEMPLATE, mode="image"),
        "xfm_inverse": dict(suffix="xfm", **{"from": TEMPLATE}, to="T1w", mode="image"),
    }
    for name, layout in layouts.items():
        found: dict[str, Path] = {}
        for role, query in anat_queries.items():
            path, why = _pick(layout, subject, session, **query)
            if why:
                reused.notes.append(f"{name} {role} not reused: {why}")
            elif path is not None:
                found[role] = path
        if not found:
            continue
        partial_tissues = [t for t in TISSUES if t in found]
        if 0 < len(partial_tissues) < 3:
            reused.notes.append(f"{name}: tissues not reused (only "
                                f"{'/'.join(partial_tissues)} probseg found)")
            for t in partial_tissues:
                found.pop(t)
        if ("xfm_forward" in found) != ("xfm_inverse" in found):
            reused.notes.append(f"{name}: transforms not reused (only one direction found)")
            found.pop("xfm_forward", None)
            found.pop("xfm_inverse", None)
        if "xfm_forward" not in found:
            other = [Path(f.path).name for f in layout.get(
                subject=subject, suffix="xfm", return_type="object", **{"from": "T1w"})]
            if other:
                reused.notes.append(
                    f"{name}: transform {other[0]} not reused (pseudopet's atlas lives on "
                    f"{TEMPLATE}; add it to fMRIPrep/sMRIPrep --output-spaces to reuse one)")
        _add(reused, name, datasets[name], found)
        break  # the anatomy comes from one dataset only
    if raw_pet is not None:
        ents = parse_entities(raw_pet)
        want = {_PYBIDS_NAMES[k]: ents[k] for k in PET_ENTITIES if k in ents}
        for name, layout in layouts.items():
            path, why = _pick(layout, subject, session, suffix="pet", space="T1w",
                              desc="preproc", extension=NIFTI, **want)
            if why:
                reused.notes.append(f"{name} PET not reused: {why}")
            elif path is not None:
                _add(reused, name, datasets[name], {"pet": path})
                break
    reused.problem = _check_grids(reused, raw_t1w)
    return reused


def _add(reused: Reused, name: str, root: Path, found: dict[str, Path]) -> None:
    for role, path in found.items():
        reused.files[role] = path
        reused.uris[role] = f"bids:{name}:{path.relative_to(root).as_posix()}"


def _check_grids(reused: Reused, raw_t1w: Path | None) -> str | None:
    """Header checks: every file readable, mask/tissues on the anatomical reference's grid."""
    for role, path in reused.files.items():
        if path.suffix == ".h5" or role.startswith("xfm"):
            if not path.exists():
                return f"{path.name} is a broken link (content not present)"
            continue
        try:
            cast(SpatialImage, nib.load(str(path))).header.get_data_shape()
        except Exception as exc:  # nibabel raises many types for non-NIfTI content
            return f"derivative {path.name} is not a readable NIfTI ({type(exc).__name__})"
    reference = reused.files.get("t1w", raw_t1w)
    if reference is None:
        return None
    for role in ("mask", *TISSUES):
        if role in reused.files and not _same_grid(reused.files[role], reference):
            return (f"derivative {reused.files[role].name} is not on the grid of "
                    f"{reference.name}; give derivatives made from this T1w")
    return None
