"""Translation quality on held-out healthy controls (group level; paired evaluation only).

For every model found in the participant outputs, the controls that have a real PET and were
*not* used to train that model (neither their MRI nor their PET: ``training_subjects`` of the
model card) are compared voxel by voxel: real ``desc-preproc_pet`` against
``desc-<model>Pseudonormal_pet`` on the T1w grid.

Scaling to [0, 1] (documented rule, the one the models are trained with): PET divided by the
subject's grey-matter median (the ``Scale`` of the sidecar) and by ``PET_MAX`` = 2.5, clipped to
[0, 1]. Metrics: SSIM, PSNR, RMSE and MAE inside the brain mask and over the whole image (volume
level), and the mean per-slice SSIM (slice level); FID with InceptionV3 features of axial brain
slices when the user gives ``--fid-weights``; the mean normalised singular-value spectrum of
real and synthetic slices and their L1 distance.

The ``tissue`` baseline is fitted to the subject's own PET, so its numbers measure how much of the
real PET the tissue pattern explains, not a translation from MRI alone; reports say so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.evaluate.fid import fid
from pseudopet_bids.evaluate.translation import (singular_value_spectrum, slice_metrics,
                                                 spectrum_distance, volume_metrics)
from pseudopet_bids.synthesis.modelspace import PET_MAX

LOGGER = logging.getLogger(__name__)
SLICE_SIZE = 128
METRICS = ("ssim_brain", "psnr_brain", "rmse_brain", "mae_brain", "ssim_image", "psnr_image",
           "rmse_image", "mae_image", "slice_ssim_brain")


def to_unit(pet: np.ndarray, scale: float) -> np.ndarray:
    """PET (derivative units) → [0, 1]: ``clip(PET / scale / PET_MAX, 0, 1)``."""
    if not scale > 0:
        raise ValueError(f"PET normalisation scale must be positive, got {scale}")
    return np.clip(np.asarray(pet, np.float64) / scale / PET_MAX, 0.0, 1.0)


def brain_slices(volume: np.ndarray, mask: np.ndarray, size: int = SLICE_SIZE,
                 min_fraction: float = 0.2) -> np.ndarray:
    """Axial slices of the brain's bounding box, zero outside the mask, resized to size².

    Slices whose brain fills less than ``min_fraction`` of the box's slice are left out (the
    top and bottom of the brain carry little). Returns (N, size, size) float64.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("brain_slices: empty brain mask")
    idx = np.nonzero(mask)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    vol = np.where(mask, volume, 0.0)[box]
    m = mask[box]
    plane = m.shape[0] * m.shape[1]
    out = []
    for k in range(vol.shape[2]):
        if m[:, :, k].sum() < min_fraction * plane:
            continue
        s = vol[:, :, k]
        out.append(ndimage.zoom(s, (size / s.shape[0], size / s.shape[1]), order=1,
                                grid_mode=True, mode="grid-constant")[:size, :size])
    return np.asarray(out, dtype=np.float64).reshape(-1, size, size)


def control_metrics(real01: np.ndarray, pseudo01: np.ndarray, mask: np.ndarray
                    ) -> dict[str, float]:
    """Volume metrics (brain and image) and the mean per-slice SSIM of one control."""
    row = volume_metrics(real01, pseudo01, mask)
    slices = slice_metrics(real01, pseudo01, mask)
    row["slice_ssim_brain"] = float(np.nanmean([s["ssim"] for s in slices])) if slices \
        else float("nan")
    return {k: row[k] for k in METRICS}


def training_keys(output_dir: Path) -> dict[str, set[str]]:
    """Model label → keys of the subjects whose MRI or PET trained it (from the model cards)."""
    seen: dict[str, set[str]] = {}
    for label, card in der.model_cards(output_dir).items():
        subjects = card.get("training_subjects", {})
        seen[label] = set(subjects.get("mri", [])) | set(subjects.get("pet", []))
    return seen


def find_pairs(output_dir: Path, participants: dict[str, Participant],
               skip_models: frozenset[str] = frozenset()) -> list[dict]:
    """Held-out controls with a real and a pseudo-normal PET, per model label (but the labels
    in ``skip_models``)."""
    trained_on = training_keys(output_dir)
    pairs = []
    for pseudo, model in der.labelled_outputs(output_dir, "pseudonormal"):
        if model in skip_models:
            continue
        paths = der.SubjectPaths.of(output_dir, pseudo)
        info = participants.get(paths.subject)
        if info is None or info.group != "control":
            continue
        key = paths.anat_prefix
        if key in trained_on.get(model, set()):
            continue
        pairs.append({"model": model, "participant_id": f"sub-{paths.subject}",
                      "session": paths.session or "n/a", "key": key, "pseudo": pseudo,
                      "real": paths.pet("space-T1w_desc-preproc_pet.nii.gz"),
                      "mask": paths.anat("desc-brain_mask.nii.gz")})
    return pairs


def evaluate_translation(output_dir: Path, participants: dict[str, Participant],
                         fid_model=None, device: str = "cpu",
                         skip_models: frozenset[str] = frozenset()
                         ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-control metrics, a per-model summary and the spectra (see the module docstring).

    Parameters
    ----------
    skip_models
        Model labels not to score (the group level leaves out the non-learned baseline
        unless ``--translation-metrics all``).
    fid_model
        A loaded :class:`~pseudopet_bids.evaluate.inception.FIDInceptionV3`, or None (FID left
        out, NaN in the summary).
    """
    rows, slices = [], {}
    for pair in find_pairs(output_dir, participants, skip_models):
        try:
            scale = float(json.loads(der.sidecar(pair["real"]).read_text())
                          ["IntensityNormalization"]["Scale"])
            real = to_unit(np.asarray(nib.load(pair["real"]).dataobj), scale)
            pseudo = to_unit(np.asarray(nib.load(pair["pseudo"]).dataobj), scale)
            mask = np.asarray(nib.load(pair["mask"]).dataobj) > 0
        except (OSError, KeyError, ValueError) as exc:
            LOGGER.warning("translation metrics: %s (%s) skipped: %s", pair["key"],
                           pair["model"], exc)
            continue
        rows.append({"model": pair["model"], "participant_id": pair["participant_id"],
                     "session": pair["session"], **control_metrics(real, pseudo, mask)})
        store = slices.setdefault(pair["model"], {"real": [], "synthetic": []})
        store["real"].append(brain_slices(real, mask))
        store["synthetic"].append(brain_slices(pseudo, mask))
    per_control = pd.DataFrame(rows, columns=["model", "participant_id", "session",
                                              *METRICS])
    summary, spectra = [], []
    for model, group in per_control.groupby("model", sort=True):
        entry: dict = {"model": model, "n_controls": len(group)}
        for metric in METRICS:
            entry[f"{metric}_mean"] = float(group[metric].mean())
            entry[f"{metric}_sd"] = float(group[metric].std(ddof=1)) if len(group) > 1 \
                else float("nan")
        real_s = np.concatenate(slices[model]["real"])
        fake_s = np.concatenate(slices[model]["synthetic"])
        spec = {"real": singular_value_spectrum(real_s),
                "synthetic": singular_value_spectrum(fake_s)}
        entry["spectrum_distance"] = spectrum_distance(spec["real"], spec["synthetic"])
        entry["n_slices"] = len(real_s)
        entry["fid"] = float("nan")
        if fid_model is not None:
            entry["fid"] = fid(real_s, fake_s, fid_model, device=device)
        summary.append(entry)
        for source, values in spec.items():
            spectra += [{"model": model, "source": source, "component": i + 1,
                         "value": float(v)} for i, v in enumerate(values)]
    # with the columns even when empty: a header-only table reads back (the group report)
    columns = ["model", "n_controls", *(f"{m}_{s}" for m in METRICS for s in ("mean", "sd")),
               "spectrum_distance", "n_slices", "fid"]
    return (per_control, pd.DataFrame(summary, columns=columns),
            pd.DataFrame(spectra, columns=["model", "source", "component", "value"]))
