"""Small synthetic cohorts shared by the simulator tests (3 mm T1w and PET: seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pseudopet_bids.simulate.cohort import simulate_cohort

SMALL = {"n_controls": 2, "n_patients": 2, "seed": 7, "t1_voxel_mm": 3.0, "pet_voxel_mm": 3.0,
         "frames": 3}


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> tuple[Path, Path, object]:
    """(BIDS folder, truth folder, truth table) of a 2 + 2 cohort with 3-frame PET."""
    base = tmp_path_factory.mktemp("sim")
    table = simulate_cohort(base / "bids", **SMALL)
    return base / "bids", base / "bids_truth", table
