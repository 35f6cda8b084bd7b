"""The bad-input corpus: a registry of cases, each with its documented outcome.

Every case is a builder ``(tmp_path) -> Scenario`` registered with :func:`case`, which records
its class, what the input is, the expected exit code, the outcome in words and an excerpt of the
message the user gets. ``tests/reliability/test_bad_inputs.py`` runs each one (one pytest id
per case) through :func:`tests.reliability.harness.check`; ``scripts/reliability_table.py``
writes the registry into ``docs/reliability.md``.

Inputs are built on the fly: tiny synthetic images (``tests/conftest.py``) in BIDS layouts, and
real metadata copied from public datasets into ``tests/data/real_layouts/`` (see its
``SOURCES.md``). The builders live in the ``cases_*`` modules, imported at the end.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from tests.conftest import blob, make_bids
from tests.reliability.harness import Run, Scenario

REAL = Path(__file__).resolve().parents[1] / "data" / "real_layouts"
#: Order of the classes in the report.
CLASSES = ("dataset", "discovery", "PET metadata", "header and geometry", "values",
           "corruption", "models")
#: A T1w and a PET that pass intake (the stand-ins of tests/conftest.py).
T1 = "sub-01/anat/sub-01_T1w.nii.gz"
PET = "sub-01/pet/sub-01_trc-FDG_pet.nii.gz"
PET_JSON = "sub-01/pet/sub-01_trc-FDG_pet.json"


@dataclass(frozen=True)
class Case:
    """One corpus case: what it is and what must happen."""

    id: str
    cls: str
    title: str
    exit: int
    outcome: str
    message: str | None
    build: Callable[[Path], Scenario]
    level: str = "cli"  # cli: the command line in-process; function: the deciding function;
    # slow: the real pipeline end to end (pytest -m slow)


CASES: dict[str, Case] = {}


def case(cls: str, title: str, exit: int, outcome: str, message: str | None = None,
         level: str = "cli") -> Callable:
    """Register a builder as a case; its id is the function name with dashes."""
    assert cls in CLASSES, cls

    def register(build: Callable[[Path], Scenario]) -> Callable[[Path], Scenario]:
        cid = build.__name__.strip("_").replace("_", "-")
        assert cid not in CASES, f"duplicate case {cid}"
        CASES[cid] = Case(cid, cls, title, exit, outcome, message, build, level)
        return build

    return register


# --------------------------------------------------------------------------- building blocks


def dataset(tmp: Path, subjects: dict | None = None, name: str = "ds",
            participants: str | None = None) -> Path:
    """A BIDS dataset of tiny synthetic images (``tests/conftest.py``), ``sub-01`` by default."""
    return make_bids(tmp / name, subjects if subjects is not None else {"01": {}}, participants)


def nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, *,
          sform_code: int = 1, qform: np.ndarray | None = None, qform_code: int = 1,
          dtype: type = np.float32, scaling: tuple[float, float] | None = None) -> Path:
    """Write an image with full control of its header: codes, a separate qform, the on-disk
    dtype and, for integer data, ``scl_slope``/``scl_inter`` kept exactly as given."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = np.asarray(data).astype(dtype)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(raw.shape)
    hdr.set_sform(affine, code=sform_code)
    hdr.set_qform((affine if qform is None else qform) if qform_code else None, code=qform_code)
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_slope_inter(*(scaling or (1.0, 0.0)))
    hdr["vox_offset"] = 352
    # written by hand: nibabel's writer recomputes the scaling of integer data
    body = hdr.binaryblock + b"\x00" * 4 + raw.tobytes(order="F")
    if path.name.endswith(".gz"):
        import gzip

        body = gzip.compress(body, mtime=0)
    path.write_bytes(body)
    return path


def sidecar(path: Path, drop: tuple[str, ...] = (), **fields) -> Path:
    """Update (or create) a JSON sidecar."""
    meta = json.loads(path.read_text()) if path.exists() else {}
    for key in drop:
        meta.pop(key, None)
    meta.update(fields)
    path.write_text(json.dumps(meta))
    return path


def real(name: str, tmp: Path) -> Path:
    """A copy of a real layout from ``tests/data/real_layouts`` (never modified in place)."""
    return Path(shutil.copytree(REAL / name, tmp / name))


def html_page() -> bytes:
    """A real saved HTML page that bids-examples ships under an image name (pet002)."""
    return (REAL / "pet002/sub-01/ses-baseline/pet/sub-01_ses-baseline_pet.nii.gz").read_bytes()


def head(shape: tuple[int, int, int] = (20, 22, 18)) -> np.ndarray:
    """The stand-in head with one bright marker voxel off every symmetry axis."""
    data = blob(shape) + 1.0
    data[3, 5, 7] = 500.0
    return data


def marker_world(img: nib.Nifti1Image) -> np.ndarray:
    """World (scanner mm) position of the marker voxel (the image's maximum)."""
    data = np.asarray(img.dataobj)
    ijk = np.unravel_index(int(np.argmax(data)), data.shape[:3])
    return (img.affine @ np.r_[ijk, 1.0])[:3]


def probed(run: Run, key: str = "sub-01") -> dict:
    """What the probe saw for a unit (discovery's choice and the intake images)."""
    assert key in run.probed, f"{key} did not pass intake: {sorted(run.probed)}"
    return run.probed[key]


def chose(key: str, **names: str) -> Callable[[Run], None]:
    """Verify that discovery chose these file names (``t1w=``, ``pet=``)."""

    def verify(run: Run) -> None:
        unit = probed(run, key)["unit"]
        for role, name in names.items():
            assert getattr(unit, role).name == name, (role, getattr(unit, role))

    return verify


def same_as_canonical(path: Path, kind: str = "t1", key: str = "sub-01"
                      ) -> Callable[[Run], None]:
    """Verify intake against an independent expectation: nibabel's closest canonical image of
    the file, and the marker voxel at the same world position as in the file."""

    def verify(run: Run) -> None:
        img = probed(run, key)["images"]
        got = img.t1 if kind == "t1" else img.pet
        want = nib.as_closest_canonical(nib.load(path))
        assert nib.aff2axcodes(got.affine) == ("R", "A", "S")
        np.testing.assert_allclose(got.affine, want.affine, atol=1e-4)
        np.testing.assert_allclose(np.asarray(got.dataobj), want.get_fdata(), rtol=1e-6)
        np.testing.assert_allclose(marker_world(got), marker_world(nib.load(path)), atol=1e-3)

    return verify


# the cases register themselves on import
from tests.reliability import (cases_dataset, cases_discovery, cases_geometry,  # noqa: E402,F401
                               cases_images, cases_metadata, cases_mixed, cases_models,
                               cases_processing)
