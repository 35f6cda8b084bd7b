"""Shared fixtures: tiny synthetic images and BIDS datasets (no network, no ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    """Model, training and synthesis tests run torch single-threaded: tiny convolutions gain
    nothing from threads, and intra-op threads competing with other processes on a small,
    busy machine slow them down up to 100-fold."""
    if not {"models", "train", "synthesis"} & set(request.node.path.parts):
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def assert_bids_valid(root: Path) -> None:
    """bids-validator-deno reports no error for ``root`` (skips when it is not installed)."""
    from pseudopet_bids.bids.validator import validation_errors, validator_executable

    if validator_executable() is None:
        pytest.skip("bids-validator-deno is not installed (pip install bids-validator-deno)")
    errors = validation_errors(root)
    assert not errors, json.dumps(errors[:5], indent=1)


#: Validator warnings about a derivatives folder that pseudopet cannot fix: the input
#: dataset's own ``Authors`` are copied (one author, or none, is the input's business).
UNFIXABLE_WARNINGS = {"TOO_FEW_AUTHORS"}


def assert_no_fixable_warnings(root: Path) -> None:
    """bids-validator-deno reports no warning for ``root`` but :data:`UNFIXABLE_WARNINGS`
    (skips when it is not installed)."""
    from pseudopet_bids.bids.validator import validation_issues, validator_executable

    if validator_executable() is None:
        pytest.skip("bids-validator-deno is not installed (pip install bids-validator-deno)")
    warnings = [w for w in validation_issues(root, "warning")
                if w.get("code") not in UNFIXABLE_WARNINGS]
    assert not warnings, json.dumps(warnings[:5], indent=1)


def write_image(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save a NIfTI image (creating folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32),
                             np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine), path)
    return path


def blob(shape=(20, 22, 18)) -> np.ndarray:
    """A smooth positive blob, a stand-in for a head."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2
    r2 = (((grid - centre) / (np.array(shape)[:, None, None, None] / 3)) ** 2).sum(0)
    return (100 * np.exp(-r2)).astype(np.float32)


def make_bids(root: Path, subjects: dict[str, dict], participants: str | None = None) -> Path:
    """A minimal BIDS dataset.

    ``subjects`` maps label → {"t1w": bool, "pet": tracer or None, "sessions": [..] or None,
    "frames": int}.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "test", "BIDSVersion": "1.10.0", "DatasetType": "raw"}))
    for label, spec in subjects.items():
        for ses in spec.get("sessions") or [None]:
            base = root / f"sub-{label}" / (f"ses-{ses}" if ses else "")
            prefix = f"sub-{label}" + (f"_ses-{ses}" if ses else "")
            if spec.get("t1w", True):
                write_image(base / "anat" / f"{prefix}_T1w.nii.gz", blob())
            tracer = spec.get("pet", "FDG")
            if tracer:
                frames = spec.get("frames", 1)
                data = blob()
                if frames > 1:
                    data = np.stack([data * (i + 1) for i in range(frames)], axis=-1)
                write_image(base / "pet" / f"{prefix}_trc-{tracer}_pet.nii.gz", data)
                meta = {"TracerName": tracer, "Units": "Bq/mL",
                        "FrameDuration": [300.0] * frames,
                        "FrameTimesStart": [300.0 * i for i in range(frames)]}
                (base / "pet" / f"{prefix}_trc-{tracer}_pet.json").write_text(json.dumps(meta))
    if participants is not None:
        (root / "participants.tsv").write_text(participants)
    return root
