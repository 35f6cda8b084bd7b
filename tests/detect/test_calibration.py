"""Cluster-level significance (detect/calibration.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from pseudopet_bids.detect import calibration as cal


def test_cluster_mass_sums_the_excess_below_the_threshold():
    z = np.zeros((4, 4, 4), np.float32)
    labels = np.zeros((4, 4, 4), np.int32)
    z[0, 0, :2] = [-2.0, -3.0]
    labels[0, 0, :2] = 1
    z[3, 3, 3] = -1.75
    labels[3, 3, 3] = 2
    masses = cal.cluster_masses(z, labels, 2, 1.5, 2.0)
    assert masses == pytest.approx([(0.5 + 1.5) * 2.0, 0.25 * 2.0])


def _null(masses: dict[str, list[float]]) -> cal.ClusterNull:
    return cal.ClusterNull({"rule": "subject"}, masses)


def test_few_control_clusters_give_the_plus_one_rate():
    null = _null({"a": [100.0], "b": [], "c": [50.0]})
    # 3 controls, 1 cluster >= 80: (1 + 1) / (3 + 1)
    assert cal.clusters_per_control(null, 80.0) == pytest.approx(0.5)
    assert cal.clusters_per_control(null, 1e9) == pytest.approx(0.25)  # never zero


def test_rate_is_empirical_below_the_median_and_a_decreasing_tail_above():
    rng = np.random.default_rng(0)
    masses = {f"c{i}": list(rng.pareto(2.0, 3) * 100 + 100) for i in range(12)}
    null = _null(masses)
    pooled = np.sort(np.concatenate(list(masses.values())))
    low = float(pooled[5])
    assert cal.clusters_per_control(null, low) == pytest.approx((pooled >= low).sum() / 12)
    values = [cal.clusters_per_control(null, m) for m in (pooled[-1], 2 * pooled[-1], 1e6)]
    assert values[0] > values[1] > values[2] > 0
    # beyond the largest control cluster the tail extrapolates below one cluster in 12 brains
    assert values[1] < 1 / 12
    p = [cal.controls_p(null, m) for m in (100.0, 1000.0, 10000.0)]
    assert p[0] > p[1] > p[2] and all(0 < v < 1 for v in p)


def test_a_control_is_scored_without_its_own_clusters():
    null = _null({"a": [500.0], "b": [10.0], "c": [12.0]})
    assert cal.clusters_per_control(null, 400.0) > cal.clusters_per_control(null, 400.0, "a")
    with pytest.raises(ValueError):
        cal.clusters_per_control(_null({"a": [1.0]}), 1.0, "a")


def test_null_round_trip_and_settings_mismatch():
    null = cal.ClusterNull({"rule": "subject", "z_threshold": 1.65, "cluster_min_volume": 1500,
                            "connectivity": 26, "gm_threshold": 0.5,
                            "search_region": "cortex"}, {"a": [1.0, 2.0]})
    again = cal.ClusterNull.from_dict(null.to_dict())
    assert again == null
    assert again.mismatch({**null.settings}) == []
    assert again.mismatch({**null.settings, "z_threshold": 2.33}) == ["z_threshold"]


def test_smoothness_of_a_smoothed_noise_field():
    rng = np.random.default_rng(1)
    fwhm_vox = 4.0
    field = ndimage.gaussian_filter(rng.standard_normal((60, 60, 60)),
                                    fwhm_vox / math.sqrt(8 * math.log(2)))
    mask = np.zeros(field.shape, bool)
    mask[8:-8, 8:-8, 8:-8] = True
    est = cal.smoothness_fwhm(field, mask, (2.0, 2.0, 2.0))
    assert est == pytest.approx([2.0 * fwhm_vox] * 3, rel=0.15)
    with pytest.raises(ValueError):
        cal.smoothness_fwhm(np.ones((5, 5, 5)), np.ones((5, 5, 5), bool), (1, 1, 1))


def test_random_field_p_falls_with_extent_and_is_a_probability():
    p = [cal.random_field_p(s, 500_000.0, (9.0, 9.0, 9.0), 1.65)
         for s in (500.0, 2000.0, 8000.0, 32000.0)]
    assert all(0 <= v <= 1 for v in p)
    assert p[0] > p[1] > p[2] > p[3]
    assert p[0] > 0.5 > p[3]
    assert cal.random_field_p(1000.0, 1e5, (8, 8, 8), 0.9) == 1.0


def test_asymmetry_cutoff_comes_from_the_controls_clusters():
    null = _null({f"c{i}": [1.0, 1.0] for i in range(12)})
    assert null.asymmetry_cutoff() == -2.0  # no asymmetry recorded: 2 SD
    null.asymmetry_z.update({f"c{i}": [-1.0 - 0.1 * i, -3.5 if i == 0 else 0.5]
                             for i in range(12)})
    cut = null.asymmetry_cutoff()
    assert cut < -2.0  # the controls' clusters reach -3.5 and -2.1: stricter than 2 SD
    assert null.asymmetry_cutoff("c0") > cut  # without c0's own -3.5
    assert cal.ClusterNull.from_dict(null.to_dict()).asymmetry_cutoff() == pytest.approx(cut)
