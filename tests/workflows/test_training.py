"""Group-level training workflow helpers: the paired validation split and its metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudopet_bids.errors import UsageError
from pseudopet_bids.models.presets import preset
from pseudopet_bids.models.registry import build_model
from pseudopet_bids.workflows.training import (MIN_TRAINING_CONTROLS, RECOMMENDED_CONTROLS,
                                                ControlVolumes, check_training_controls,
                                                make_validator, paired_metrics,
                                                split_validation)

# --------------------------------------------------------------------------- metrics


def _pet(rng: np.random.Generator, shape=(16, 18, 12)) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros(shape, bool)
    mask[3:13, 3:15, 2:10] = True
    smooth = np.cumsum(np.cumsum(rng.normal(size=shape), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth)
    return np.where(mask, smooth * 1.6 - 1, -1.0).astype(np.float32), mask


def test_identical_volumes(rng):
    pet, mask = _pet(rng)
    m = paired_metrics(pet, pet.copy(), mask)
    assert set(m) == {"ssim", "psnr", "mae"}
    assert m["ssim"] == pytest.approx(1.0)
    assert m["mae"] == 0.0
    assert m["psnr"] >= 100


def test_known_error(rng):
    pet, mask = _pet(rng)
    pred = pet + 0.2                              # 0.1 on the [0, 1] scale of the metrics
    m = paired_metrics(pet, pred, mask)
    assert m["mae"] == pytest.approx(0.1, abs=1e-6)
    assert m["psnr"] == pytest.approx(20.0, abs=1e-4)
    assert m["ssim"] < 1.0
    worse = paired_metrics(pet, pet + 0.6, mask)
    assert worse["mae"] > m["mae"] and worse["psnr"] < m["psnr"]
    assert worse["ssim"] < m["ssim"]


def test_mae_and_psnr_look_at_the_brain_only(rng):
    pet, mask = _pet(rng)
    pred = np.where(mask, pet, 0.5).astype(np.float32)   # wrong outside the brain only
    m = paired_metrics(pet, pred, mask)
    assert m["mae"] == 0.0 and m["psnr"] >= 100
    assert m["ssim"] < 0.99                               # SSIM sees the whole grid


# --------------------------------------------------------------------------- split


def _volumes(n_paired: int, n_t1_only: int = 2) -> list[ControlVolumes]:
    empty = np.zeros(1)
    vols = [ControlVolumes(f"sub-p{i}", "", empty, empty, np.zeros(1)) for i in range(n_paired)]
    vols += [ControlVolumes(f"sub-t{i}", "", empty, empty, None) for i in range(n_t1_only)]
    return vols[::2] + vols[1::2]                 # interleave the two kinds


@pytest.mark.parametrize("n_paired,expected", [(0, 0), (1, 0), (2, 0), (3, 1), (5, 1), (6, 2),
                                               (9, 2)])
def test_default_number_of_validation_controls(n_paired, expected):
    train, val = split_validation(_volumes(n_paired), None, 0)
    assert len(val) == expected
    assert len(train) + len(val) == n_paired + 2


def test_split_is_deterministic_and_disjoint():
    vols = _volumes(8)
    train, val = split_validation(vols, 3, seed=5)
    again = split_validation(vols, 3, seed=5)
    assert [v.key for v in val] == [v.key for v in again[1]]
    assert [v.key for v in train] == [v.key for v in again[0]]
    assert len(val) == 3 and all(v.pet is not None for v in val)
    keys = [v.key for v in train] + [v.key for v in val]
    assert sorted(keys) == sorted(v.key for v in vols)
    # T1w-only controls always train; the input order is kept
    assert all(v in train for v in vols if v.pet is None)
    assert [v.key for v in train] == [v.key for v in vols if v in train]
    # the seed picks the controls
    picks = {tuple(v.key for v in split_validation(vols, 3, seed=s)[1]) for s in range(8)}
    assert len(picks) > 1


def test_too_many_validation_controls_are_refused():
    with pytest.raises(UsageError, match="val-controls 3"):
        split_validation(_volumes(3), 3, 0)
    with pytest.raises(UsageError):
        split_validation(_volumes(0), 1, 0)
    train, val = split_validation(_volumes(3), 2, 0)       # one paired control must remain
    assert len(val) == 2 and sum(v.pet is not None for v in train) == 1
    assert split_validation(_volumes(3), 0, 0)[1] == []


# --------------------------------------------------------------------------- validator


def test_validator_scores_the_held_out_controls(rng):
    assert make_validator([], 0, 0) is None
    shape = (32, 40, 8)
    mask = np.zeros(shape, bool)
    mask[6:26, 8:32, 2:6] = True
    val = [ControlVolumes(f"sub-{i}", "",
                          np.where(mask, rng.uniform(-1, 1, shape), -1).astype(np.float32), mask,
                          np.where(mask, rng.uniform(-1, 1, shape), -1).astype(np.float32))
           for i in range(2)]
    torch.manual_seed(0)
    model = build_model("cyclegan", preset("cyclegan", "tiny"), 3).eval()
    validate = make_validator(val, 1, 0)
    metrics = validate(model)
    assert set(metrics) == {"ssim", "psnr", "mae"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert 0 < metrics["mae"] < 1 and metrics["ssim"] < 1


# --------------------------------------------------------------------------- data problems


def test_a_data_problem_of_a_control_names_its_file(tmp_path, monkeypatch):
    """A problem the core finds in a control's data (errors.DataError: no file known there) is
    reported naming the file it concerns, and the control is left out of the training."""
    from pseudopet_bids.bids.discovery import discover
    from pseudopet_bids.config import RunConfig
    from pseudopet_bids.errors import DataError
    from pseudopet_bids.workflows import training
    from tests.conftest import make_bids

    root = make_bids(tmp_path / "ds", {"01": {}})
    (unit,) = discover(root)
    cfg = RunConfig.from_flat({"bids_dir": str(root), "output_dir": str(tmp_path / "out"),
                               "work_dir": str(tmp_path / "work")})

    def no_brain(*args, **kwargs):
        raise DataError("found no brain in the T1w", role="t1w", fix="give a T1w")

    monkeypatch.setattr(training, "preprocess_cached", no_brain)
    failure = training._prepare_job((unit, cfg, preset("cyclegan", "small")["grid"]))
    assert failure == f"sub-01: {unit.t1w}: found no brain in the T1w -> give a T1w"


# --------------------------------------------------------------------------- how many controls


def test_too_few_controls_are_refused_except_for_smoke_tests(tmp_path, caplog):
    with pytest.raises(UsageError, match=f"at least {MIN_TRAINING_CONTROLS}") as exc:
        check_training_controls(MIN_TRAINING_CONTROLS - 1, 1, "small", tmp_path)
    assert exc.value.path == tmp_path and "--preset tiny" in exc.value.fix
    check_training_controls(1, 0, "tiny", tmp_path)  # tests and smoke runs
    with caplog.at_level("WARNING"):
        check_training_controls(MIN_TRAINING_CONTROLS, 1, "paper", tmp_path)
    assert f"fewer than the {RECOMMENDED_CONTROLS} recommended" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        check_training_controls(RECOMMENDED_CONTROLS - 2, 2, "small", tmp_path)
    assert not caplog.text


def test_stochastic_validation_averages_samples(rng):
    shape = (32, 40, 6)
    mask = np.zeros(shape, bool)
    mask[6:26, 8:32, 1:5] = True
    val = [ControlVolumes("sub-1", "", np.where(mask, rng.uniform(-1, 1, shape), -1
                                                 ).astype(np.float32), mask,
                          np.where(mask, 0.2, -1).astype(np.float32))]
    torch.manual_seed(0)
    model = build_model("syndiff", preset("syndiff", "tiny"), 1).eval()
    one, four = make_validator(val, 0, 0, 1)(model), make_validator(val, 0, 0, 4)(model)
    assert one != four  # the mean of 4 samples is validated, not one sample
    assert four == make_validator(val, 0, 0, 4)(model)  # same seed, same metrics
