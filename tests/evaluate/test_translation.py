"""Translation metrics: error metrics, SSIM wiring, Fréchet distance, singular-value spectra."""

from __future__ import annotations

import numpy as np
import pytest

from pseudopet_bids.evaluate.translation import (error_metrics, frechet_distance,
                                                 singular_value_spectrum, slice_metrics,
                                                 spectrum_distance, volume_metrics)


def test_error_metrics_match_definitions(rng):
    a = rng.uniform(0, 1, 500)
    b = a + rng.normal(0, 0.1, 500)
    m = error_metrics(a, b)
    mse = np.mean((a - b) ** 2)
    assert m["rmse"] == pytest.approx(np.sqrt(mse))
    assert m["mae"] == pytest.approx(np.mean(np.abs(a - b)))
    assert m["psnr"] == pytest.approx(-10 * np.log10(mse))


def test_volume_metrics_identical_and_degraded(rng):
    vol = rng.uniform(0, 1, (20, 22, 18))
    mask = np.zeros(vol.shape, bool)
    mask[4:16, 5:17, 3:15] = True
    same = volume_metrics(vol, vol, mask)
    assert same["ssim_image"] == pytest.approx(1.0) and same["ssim_brain"] == pytest.approx(1.0)
    assert same["mae_brain"] == 0 and same["psnr_brain"] > 100
    noisy = vol + rng.normal(0, 0.2, vol.shape)
    worse = volume_metrics(vol, noisy, mask)
    assert worse["ssim_brain"] < 0.9 and worse["psnr_brain"] < 20
    # errors outside the mask change the image metrics only
    outside = vol.copy()
    outside[~mask] += 0.5
    m = volume_metrics(vol, outside, mask)
    assert m["mae_brain"] == 0 and m["mae_image"] > 0
    with pytest.raises(ValueError):
        volume_metrics(vol, vol[:-1])


def test_slice_metrics_only_slices_with_brain(rng):
    vol = rng.uniform(0, 1, (16, 16, 6))
    mask = np.zeros(vol.shape, bool)
    mask[4:12, 4:12, 2:4] = True
    rows = slice_metrics(vol, vol * 0.9, mask)
    assert [r["slice"] for r in rows] == [2, 3]
    assert all(r["ssim"] < 1 and r["mae"] > 0 for r in rows)


def test_frechet_distance_against_closed_forms(rng):
    # 1D Gaussians: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    # diagonal covariances: ||dmu||^2 + sum (sqrt a - sqrt b)^2
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    # general SPD matrices: direct scipy computation
    from scipy.linalg import sqrtm

    x, y = rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) @ rng.normal(size=(4, 4))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    m1, m2 = x.mean(0), y.mean(0)
    direct = (np.sum((m1 - m2) ** 2) + np.trace(s1 + s2)
              - 2 * np.trace(np.real(sqrtm(s1 @ s2))))
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(direct, rel=1e-6)
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0, abs=1e-6)


def test_singular_value_spectrum_separates_blur(rng):
    from scipy import ndimage

    sharp = rng.uniform(0, 1, (5, 32, 32))
    blurred = ndimage.gaussian_filter(sharp, (0, 3, 3))
    s_sharp, s_blur = singular_value_spectrum(sharp), singular_value_spectrum(blurred)
    assert s_sharp.sum() == pytest.approx(1) and s_blur.sum() == pytest.approx(1)
    assert s_blur[0] > s_sharp[0]  # blur concentrates energy in the first component
    assert spectrum_distance(s_sharp, s_sharp) == 0
    assert 0 < spectrum_distance(s_sharp, s_blur) <= 2
