"""Difference and z-score maps."""

from __future__ import annotations

import numpy as np
import pytest

from pseudopet_bids.detect.zmap import difference_map, zmap
from pseudopet_bids.errors import DataError


def test_difference_sign():
    real = np.full((3, 3, 3), 1.0)
    pseudo = np.full((3, 3, 3), 1.5)
    d = difference_map(real, pseudo)
    assert d.dtype == np.float32 and np.all(d == -0.5)  # lower than predicted = negative
    with pytest.raises(ValueError, match="shape"):
        difference_map(real, pseudo[:2])


def test_zmap_standardizes_over_gm(rng):
    d = rng.normal(3.0, 2.0, (10, 11, 12)).astype(np.float32)
    gm = rng.random(d.shape) < 0.4
    z = zmap(d, gm)
    assert z.dtype == np.float32
    assert z[gm].mean() == pytest.approx(0.0, abs=1e-5)
    assert z[gm].std() == pytest.approx(1.0, abs=1e-5)
    assert np.all(z[~gm] == 0)
    # Values outside GM do not influence the statistics.
    d2 = d.copy()
    d2[~gm] = 1e6
    np.testing.assert_array_equal(zmap(d2, gm), z)
    # A 0/1 integer mask is accepted and equivalent.
    np.testing.assert_array_equal(zmap(d, gm.astype(np.uint8)), z)


def test_zmap_errors(rng):
    d = rng.normal(size=(4, 4, 4))
    gm = np.ones(d.shape, bool)
    with pytest.raises(DataError, match="no grey matter.*--gm-threshold") as empty:
        zmap(d, np.zeros_like(gm))
    assert empty.value.role == "t1w"
    with pytest.raises(DataError, match="std = 0") as constant:
        zmap(np.ones_like(d), gm)
    assert constant.value.role == "pet"
    with pytest.raises(ValueError, match="binary"):
        zmap(d, np.full(d.shape, 0.7))
    with pytest.raises(ValueError, match="shape"):
        zmap(d, gm[:3])
    d[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        zmap(d, gm)


def test_zmap_with_the_sample_spread(rng):
    """--z-reference spread: the sample SD widens the denominator voxel by voxel."""
    d = rng.normal(0.0, 0.1, (8, 9, 10)).astype(np.float32)
    gm = rng.random(d.shape) < 0.5
    plain = zmap(d, gm)
    assert np.array_equal(zmap(d, gm, np.zeros(d.shape)), plain)
    sd = np.where(np.arange(10) < 5, 0.0, 0.2)[None, None, :] * np.ones(d.shape)
    wide = zmap(d, gm, sd)
    calm, unsure = gm & (sd == 0), gm & (sd > 0)
    np.testing.assert_allclose(wide[calm], plain[calm], rtol=1e-5)
    std = d[gm].astype(np.float64).std()
    np.testing.assert_allclose(wide[unsure], plain[unsure] * std / np.sqrt(std ** 2 + 0.04),
                               rtol=1e-4)
    with pytest.raises(ValueError, match="spread shape"):
        zmap(d, gm, sd[:2])
