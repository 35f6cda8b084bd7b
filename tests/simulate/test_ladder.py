"""The difficulty ladder and the template uptake pattern of the simulator."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from pseudopet_bids import resources
from pseudopet_bids.simulate import phantom
from pseudopet_bids.simulate.cohort import simulate_cohort


@pytest.fixture(scope="module")
def head() -> phantom.HeadModel:
    return phantom.head_model(2.0)


def test_ladder_foci_follow_the_declared_distribution(head):
    rng = np.random.default_rng(0)
    foci = [phantom.draw_ladder_lesion(rng, head) for _ in range(300)]
    depth = np.array([f.reduction for f in foci])
    volume = np.array([f.volume_mm3 for f in foci])
    assert depth.min() >= 0.08 and depth.max() <= 0.35
    assert volume.min() >= 2000 * 0.999 and volume.max() <= 40000 * 1.001
    # log-uniform volume: about half the foci below the geometric mean (~8.9 cm3)
    assert 0.35 < np.mean(volume < np.sqrt(2000 * 40000)) < 0.65
    counts = Counter(f.location for f in foci)
    assert counts["mesial temporal"] == max(counts.values())
    for name, weight in phantom.LADDER_LOCATIONS.items():
        assert abs(counts[name] / 300 - weight) < 0.08, (name, counts)
    multi = [f for f in foci if f.extra_regions]
    assert 0.05 < len(multi) / 300 < 0.25
    for f in multi:  # a neighbouring lobe of the same hemisphere
        assert f.extra_regions[0].split("-")[0] == f.region.split("-")[0]
        assert f.extra_regions[0] != f.region
    for f in foci:
        assert f.region.endswith(f.location.split()[-1])
        label = resources.LOBE_INDEX[f.region]
        ijk = np.rint(head.coarse.grid.to_voxel(np.array([f.centre_mm]))[0]).astype(int)
        assert head.lobes[tuple(ijk)] == label  # the centre lies in its lobe's grey matter
        if f.location == "mesial temporal":
            assert head.groups["mesial_temporal"][tuple(ijk)] >= 0.5


def test_benign_variation_is_a_few_percent_and_lateralised(head):
    variation = phantom.draw_variation(np.random.default_rng(3))
    assert all(abs(a) <= phantom.BENIGN_ASYMMETRY_MAX for a in variation.asymmetry.values())
    assert 0.8 <= variation.global_factor <= 1.2
    field = phantom.variation_field(head, variation)
    gm = head.coarse.gm >= 0.5
    a = variation.asymmetry["frontal"]
    left = field[(head.lobes == resources.LOBE_INDEX["left-frontal"]) & gm].mean()
    right = field[(head.lobes == resources.LOBE_INDEX["right-frontal"]) & gm].mean()
    assert left - right == pytest.approx(a, abs=0.01)
    assert np.all((field > 0.85) & (field < 1.15))


def test_template_pattern_keeps_the_real_asymmetry_and_regional_is_symmetric(head):
    template = phantom.head_model(2.0, "template")
    gm = head.coarse.gm >= 0.5
    sym = head.uptake[gm] - head.uptake[::-1][gm]
    raw = template.uptake[gm] - template.uptake[::-1][gm]
    assert np.abs(raw).mean() > 3 * np.abs(sym).mean()
    # unbounded within regions: a wider spread of the factor over grey matter
    assert template.uptake[gm].std() > head.uptake[gm].std()
    with pytest.raises(ValueError, match="uptake pattern"):
        phantom.head_model(2.0, "flat")


def test_ladder_cohort_truth_records_depth_volume_and_location(tmp_path):
    table = simulate_cohort(tmp_path / "bids", 1, 3, seed=4, t1_voxel_mm=3.0, pet_voxel_mm=3.0,
                            difficulty="ladder", pattern="template")
    truth = pd.read_csv(tmp_path / "bids_truth" / "truth.tsv", sep="\t", na_values=["n/a"])
    assert {"location", "extent", "focus_volume_mm3", "temporal_asymmetry"} <= set(truth)
    patients = truth[truth["group"] == "patient"]
    assert patients["location"].isin(list(phantom.LADDER_LOCATIONS)).all()
    assert patients["reduction"].between(0.08, 0.35).all()
    assert truth["temporal_asymmetry"].notna().all()  # controls vary too
    participants = pd.read_csv(tmp_path / "bids" / "participants.tsv", sep="\t",
                               keep_default_na=False)
    assert list(participants["focus"]) == list(table["focus"].fillna("n/a"))
    readme = (tmp_path / "bids" / "README").read_text()
    assert "Difficulty ladder" in readme and "unsymmetrised" in readme
