"""Report figures on tiny synthetic volumes: each returns a valid, reasonably small PNG."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.evaluate.group import wilson_interval
from pseudopet_bids.reports import figures as F
from pseudopet_bids.reports import group_figures as G

SHAPE = (24, 28, 22)
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
AFFINE[:3, 3] = [-46.0, -62.0, -40.0]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decoded_shape(data: bytes) -> tuple[int, ...]:
    """Check the PNG signature and decode it; returns (height, width, channels)."""
    from PIL import Image

    assert data[:8] == PNG_SIGNATURE
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        arr = np.asarray(im.convert("RGB"))
    assert arr.ndim == 3 and arr.shape[0] > 50 and arr.shape[1] > 100
    assert arr.reshape(-1, 3).std(axis=0).max() > 5, "blank image"
    return arr.shape


def check_png(data: bytes, max_kb: int = 250) -> tuple[int, ...]:
    assert len(data) < max_kb * 1024
    return decoded_shape(data)


@pytest.fixture(scope="module")
def head():
    """A T1w-like head (ellipsoid, brighter WM core, GM shell), its mask, GM and a PET."""
    grid = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1)[:, None, None, None] / 2
    r = np.sqrt((((grid - centre) / (np.array(SHAPE)[:, None, None, None] / 2.3)) ** 2).sum(0))
    mask = r < 0.85
    gm = np.clip(1 - np.abs(r - 0.7) / 0.12, 0, 1).astype(np.float32) * mask
    t1 = np.where(r < 1.0, 60.0, 0.0) + np.where(mask, 40 + 40 * (r < 0.6), 0)
    t1 = t1 + np.random.default_rng(0).normal(0, 2, SHAPE)
    pet = (gm * 3 + mask * 1.0 + 0.2).astype(np.float32) * 1000
    return (nib.Nifti1Image(t1.astype(np.float32), AFFINE), mask, gm, pet)


def test_segmentation_figure(head):
    t1, mask, gm, _ = head
    check_png(F.segmentation_figure(t1, mask, nib.Nifti1Image(gm, AFFINE)))


def test_segmentation_figure_reoriented_image(head):
    """A LAS image (x flipped) renders like the RAS one (same decoded size)."""
    t1, mask, gm, _ = head
    flip = AFFINE.copy()
    flip[0, 0] = -4.0
    flip[0, 3] = 46.0
    las = nib.Nifti1Image(np.asarray(t1.dataobj)[::-1], flip)
    a = check_png(F.segmentation_figure(t1, mask, gm))
    b = check_png(F.segmentation_figure(las, mask[::-1], gm[::-1]))
    assert a == b


def test_coregistration_figure(head):
    t1, mask, _, pet = head
    check_png(F.coregistration_figure(t1, pet, mask))
    check_png(F.coregistration_figure(t1, nib.Nifti1Image(pet, AFFINE)))  # no mask


def test_template_figure(head):
    t1, mask, _, _ = head
    # the template on another (finer, shifted) grid than the subject's image in template space
    fine = AFFINE.copy()
    fine[:3, :3] /= 2
    big = tuple(2 * n for n in SHAPE)
    tpl = np.zeros(big, np.float32)
    tpl[4:-4, 4:-4, 4:-4] = 1.0
    check_png(F.template_figure(t1, nib.Nifti1Image(tpl * 80, fine),
                                nib.Nifti1Image(tpl, fine)))


@pytest.mark.parametrize("with_sd", [False, True])
def test_pet_figure(head, with_sd):
    _, mask, _, pet = head
    real = nib.Nifti1Image(pet * mask, AFFINE)
    pseudo = pet * mask * 0.95
    sd = (pet * 0.05).astype(np.float32) if with_sd else None
    shape = check_png(F.pet_figure(real, pseudo, mask, sd=sd))
    if with_sd:  # one more row
        no_sd = decoded_shape(F.pet_figure(real, pseudo, mask))
        assert shape[0] > no_sd[0]


def test_zmap_figure_with_and_without_clusters(head):
    t1, mask, gm, _ = head
    z = np.where(gm > 0.3, np.random.default_rng(1).normal(0, 1, SHAPE), 0).astype(np.float32)
    labels = np.zeros(SHAPE, np.int16)
    labels[5:9, 8:12, 8:11] = 1
    labels[15:17, 18:20, 12:14] = 2
    z[labels > 0] = -3.5
    check_png(F.zmap_figure(t1, z, labels, 1.65, cluster_names={1: "left-temporal"}))
    check_png(F.zmap_figure(t1, z, np.zeros(SHAPE), 1.65))
    check_png(F.zmap_figure(t1, np.zeros(SHAPE), np.zeros(SHAPE), 2.0))  # empty Z-map


def summary_frame(analyses=("tissue", "tissueNorm"), n_patients=3, n_controls=2):
    rows = []
    for a in analyses:
        model, ref = ("tissue", "controls") if a.endswith("Norm") else (a, "subject")
        for measure, k, n in (("detection_rate", 2, n_patients),
                              ("localization_accuracy_top", 1, 2 if n_patients else 0),
                              ("localization_accuracy_any", 2, 2 if n_patients else 0),
                              ("controls_with_clusters", 1, n_controls)):
            k = min(k, n)
            lo, hi = wilson_interval(k, n)
            rows.append({"analysis": a, "model": model, "z_reference": ref, "measure": measure,
                         "count": k, "n": n, "value": k / n if n else np.nan,
                         "ci95_low": lo, "ci95_high": hi})
        rows.append({"analysis": a, "model": model, "z_reference": ref,
                     "measure": "false_clusters_per_control", "count": 3, "n": n_controls,
                     "value": 3 / n_controls if n_controls else np.nan, "ci95_low": np.nan,
                     "ci95_high": np.nan})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("patients,controls", [(3, 2), (0, 2), (3, 0)])
def test_rates_figure(patients, controls):
    check_png(G.rates_figure(summary_frame(n_patients=patients, n_controls=controls)))


def test_rates_figure_empty():
    check_png(G.rates_figure(summary_frame().iloc[0:0]))


def translation_frame():
    rng = np.random.default_rng(0)
    rows = []
    for model in ("tissue", "cyclegan"):
        for i in range(4):
            rows.append({"model": model, "participant_id": f"sub-C0{i}", "session": "n/a",
                         "ssim_brain": rng.uniform(0.7, 0.9), "psnr_brain": rng.uniform(20, 28),
                         "rmse_brain": rng.uniform(0.03, 0.08),
                         "mae_brain": rng.uniform(0.02, 0.05)})
    return pd.DataFrame(rows)


def test_metric_distributions_figure():
    check_png(G.metric_distributions_figure(translation_frame()))
    check_png(G.metric_distributions_figure(translation_frame().iloc[:1]))  # one control


def spectra_frame():
    rows = []
    for model in ("tissue", "cyclegan"):
        for source, decay in (("real", 0.8), ("synthetic", 0.7)):
            values = decay ** np.arange(1, 33)
            values /= values.sum()
            rows += [{"model": model, "source": source, "component": i + 1, "value": v}
                     for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_spectra_figure():
    check_png(G.spectra_figure(spectra_frame()))
    check_png(G.spectra_figure(spectra_frame().iloc[0:0]))
