"""Healthy-control normative model: sums, leave-one-out, Z, storage."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pseudopet_bids.detect import normative
from pseudopet_bids.detect.zmap import zmap

SHAPE = (12, 14, 10)


def _stats(values, shape=SHAPE):
    stats = normative.NormativeStats.empty(shape, np.eye(4))
    for i, v in enumerate(values):
        stats.add(f"sub-C{i}", np.full(shape, v, np.float32), np.ones(shape, bool))
    return stats


def test_mean_sd_and_leave_one_out_match_numpy():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    stats = _stats(values)
    mean, sd, ok, n = stats.mean_sd()
    assert ok.all() and (n == 5).all()
    assert np.allclose(mean, 3.0) and np.allclose(sd, np.std(values, ddof=1), rtol=1e-5)
    mean, sd, ok, n = stats.mean_sd((np.full(SHAPE, 5.0), np.ones(SHAPE, bool)))
    assert np.allclose(mean, 2.5) and np.allclose(sd, np.std(values[:4], ddof=1), rtol=1e-5)
    assert (n == 4).all()


def test_voxels_with_too_few_controls_are_not_tested():
    stats = _stats([0.0, 1.0, 2.0])
    mean, sd, ok, _ = stats.mean_sd()
    assert ok.all()
    mean, sd, ok, n = stats.mean_sd((np.zeros(SHAPE), np.ones(SHAPE, bool)))  # leaves 2 < 3
    assert not ok.any() and not sd.any() and not n.any()
    z = normative.normative_z(np.ones(SHAPE), ok, mean, sd, n)
    assert not z.any()


def test_single_case_z_matches_the_t_distribution():
    """Z of the Crawford-Howell t: its tail probability is the t tail with n - 1 df."""
    from scipy import stats as st

    n = np.array([4, 9, 30, 1000])
    mean, sd = np.zeros(4), np.ones(4)
    r = np.array([-2.0, -2.0, -2.0, -2.0])
    z = normative.normative_z(r, np.ones(4, bool), mean, sd, n)
    t = r / np.sqrt(1 + 1 / n)
    assert np.allclose(st.norm.cdf(z), st.t.cdf(t, df=n - 1), rtol=1e-4)
    # few controls: a residual 2 SD low is less extreme than a Z of -2; many: about -2
    assert z[0] > z[1] > z[2] > -2.0 and z[3] == pytest.approx(-2.0, abs=0.01)
    assert normative.normative_z(np.array([2.0]), np.ones(1, bool), np.zeros(1), np.ones(1),
                                 np.array([9]))[0] == pytest.approx(-z[1], rel=1e-6)


def test_adding_a_control_twice_is_refused():
    stats = _stats([0.0])
    with pytest.raises(ValueError, match="added twice"):
        stats.add("sub-C0", np.zeros(SHAPE), np.ones(SHAPE, bool))


def test_sd_is_floored():
    stats = _stats([1.0, 1.0, 1.0, 1.0])  # no spread at all
    _, sd, ok, _ = stats.mean_sd()
    assert ok.all() and (sd > 0).all()


def test_save_load_round_trip_and_tamper_check(tmp_path):
    stats = _stats([1.0, 2.0, 4.0])
    card = normative.save(tmp_path / "normative-x", stats, {"model": "x", "model_sha256": "ab"})
    assert card["n_controls"] == 3 and len(card["sha256"]) == 64
    loaded, card2 = normative.load(tmp_path / "normative-x")
    assert loaded.controls == stats.controls and card2["model"] == "x"
    assert np.array_equal(loaded.total, stats.total) and np.array_equal(loaded.count, stats.count)
    blob = (tmp_path / "normative-x" / normative.NORMATIVE_FILE)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        normative.load(tmp_path / "normative-x")
    with pytest.raises(FileNotFoundError):
        normative.load(tmp_path / "nothing")


class _Identity:
    """A registration whose template grid is the subject grid (for tests)."""

    t1_affine = np.eye(4)

    def to_template(self, img, interpolation="linear", reference=None):
        return nib.Nifti1Image(np.asarray(img.dataobj, np.float32), np.eye(4))

    def to_t1(self, img, interpolation="nearest"):
        return nib.Nifti1Image(np.asarray(img.dataobj, np.float32), np.eye(4))


@pytest.fixture
def identity_grid(monkeypatch):
    monkeypatch.setattr(normative, "grid_reference",
                        lambda: nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)))


def test_systematic_model_error_flags_everyone_with_the_subject_rule_but_not_normatively(
        identity_grid):
    """A region the model always gets wrong (D = -0.3 in every control) is 'hypometabolic'
    for the paper's rule in a healthy subject; against the controls it is normal."""
    rng = np.random.default_rng(0)
    gm = np.zeros(SHAPE, bool)
    gm[2:10, 2:12, 2:8] = True
    bias = np.zeros(SHAPE, np.float32)
    bias[2:4, 2:6, 2:8] = -0.3
    reg = _Identity()
    ref = normative.grid_reference()
    stats = normative.NormativeStats.empty(ref.shape, ref.affine)
    diffs = [bias + rng.normal(0, 0.05, SHAPE).astype(np.float32) for _ in range(8)]
    for i, d in enumerate(diffs):
        res, valid = normative.residual_to_template(normative.centred_residual(d, gm), gm, reg)
        stats.add(f"sub-C{i}", res, valid)
    new_control = bias + rng.normal(0, 0.05, SHAPE).astype(np.float32)
    z_subject = zmap(new_control, gm)
    z_norm, info = normative.zmap_against_controls(new_control, gm, gm, reg, stats, "sub-new")
    region = bias < 0
    assert (z_subject[region & gm] < -1.65).mean() > 0.9
    assert (z_norm[region & gm] < -1.65).mean() < 0.2
    assert info == {"NormativeControls": 8, "LeaveOneOut": False, "NormativeCoverage": 1.0}
    # a real deficit elsewhere is still found
    patient = new_control.copy()
    patient[7:10, 8:12, 3:7] -= 0.4
    z_pat, _ = normative.zmap_against_controls(patient, gm, gm, reg, stats, "sub-P")
    assert (z_pat[7:10, 8:12, 3:7] < -1.65).mean() > 0.9


def test_a_control_of_the_model_is_scored_leave_one_out(identity_grid):
    gm = np.ones(SHAPE, bool)
    reg = _Identity()
    stats = normative.NormativeStats.empty(SHAPE, np.eye(4))
    rng = np.random.default_rng(1)
    diffs = [rng.normal(0, 1, SHAPE).astype(np.float32) for _ in range(5)]
    for i, d in enumerate(diffs):
        res, valid = normative.residual_to_template(normative.centred_residual(d, gm), gm, reg)
        stats.add(f"sub-C{i}", res, valid)
    z_in, info = normative.zmap_against_controls(diffs[0], gm, gm, reg, stats, "sub-C0")
    assert info["LeaveOneOut"] and info["NormativeControls"] == 4
    # leave-one-out = a model built without that control
    others = normative.NormativeStats.empty(SHAPE, np.eye(4))
    for i, d in enumerate(diffs[1:], start=1):
        res, valid = normative.residual_to_template(normative.centred_residual(d, gm), gm, reg)
        others.add(f"sub-C{i}", res, valid)
    z_ref, _ = normative.zmap_against_controls(diffs[0], gm, gm, reg, others, "sub-C0x")
    assert np.allclose(z_in, z_ref, atol=1e-4)


def test_residual_to_template_keeps_non_gm_values_out(identity_grid):
    gm = np.zeros(SHAPE, bool)
    gm[3:8, 3:9, 2:7] = True
    residual = np.where(gm, 1.0, 100.0).astype(np.float32)
    res, valid = normative.residual_to_template(residual, gm, _Identity())
    assert np.array_equal(valid, gm) and np.allclose(res[valid], 1.0) and not res[~valid].any()


def test_grid_reference_is_the_template_at_2mm():
    ref = normative.grid_reference()
    assert np.allclose(np.abs(np.diag(ref.affine)[:3]), normative.GRID_MM)
    assert all(40 < n < 140 for n in ref.shape)
