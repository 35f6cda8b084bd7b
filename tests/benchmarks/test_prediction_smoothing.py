"""benchmarks/model_comparison.py's smoothing inside the brain mask (used by
benchmarks/prediction_smoothing.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def comparison():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("model_comparison",
                                                  BENCH / "model_comparison.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_constant_inside_the_mask_stays_constant_up_to_the_edge(comparison):
    mask = np.zeros((20, 20, 20), bool)
    mask[4:16, 4:16, 4:16] = True
    volume = np.where(mask, 3.0, 100.0)  # a bright background must not leak in
    out = comparison.smooth_in_mask(volume, mask, 6.0, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(out[mask], 3.0, rtol=1e-9)
    assert not out[~mask].any()


def test_smoothing_lowers_voxel_noise_and_zero_width_is_identity(comparison):
    rng = np.random.default_rng(0)
    mask = np.ones((24, 24, 24), bool)
    volume = 1.0 + rng.normal(0, 0.2, mask.shape)
    assert comparison.smooth_in_mask(volume, mask, 0.0, (2.0, 2.0, 2.0)) is volume
    out = comparison.smooth_in_mask(volume, mask, 4.0, (2.0, 2.0, 2.0))
    assert out.std() < 0.5 * volume.std()
    assert abs(out.mean() - volume.mean()) < 0.01
