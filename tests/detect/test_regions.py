"""Cluster table and lobe labelling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.detect.clusters import find_clusters
from pseudopet_bids.detect.regions import (BASE_COLUMNS, assign_region, cluster_table,
                                           lobe_dseg_table)
from pseudopet_bids.resources import LOBE_INDEX

DESIGN_COLUMNS = ["cluster_id", "n_voxels", "volume_mm3", "peak_zscore", "mean_zscore",
                  "peak_x_mm", "peak_y_mm", "peak_z_mm", "peak_template_x_mm",
                  "peak_template_y_mm", "peak_template_z_mm", "region",
                  "region_fraction"]
AFFINE = np.array([[2.0, 0, 0, -40.0],
                   [0, 2.0, 0, -50.0],
                   [0, 0, 3.0, -20.0],
                   [0, 0, 0, 1.0]])


@pytest.fixture
def scene():
    z = np.zeros((30, 30, 30), np.float32)
    lobes = np.zeros(z.shape, np.int16)
    z[2:12, 2:12, 2:12] = -3.0  # 1000 voxels
    z[5, 6, 7] = -6.0
    lobes[2:9, 2:12, 2:12] = LOBE_INDEX["left-temporal"]  # 70 %
    lobes[9:12, 2:12, 2:12] = LOBE_INDEX["right-temporal"]  # 30 %
    z[20:26, 20:26, 20:26] = -2.5  # 216 voxels, mostly "other"
    lobes[20:24, 20:26, 20:26] = LOBE_INDEX["other"]
    lobes[24:26, 20:26, 20:26] = LOBE_INDEX["left-parietal"]
    gm = np.ones(z.shape, bool)
    labels, clusters = find_clusters(z, gm, voxel_volume_mm3=12.0, min_volume_mm3=100.0)
    return z, labels, clusters, lobes


def test_table_regions_and_coordinates(scene):
    z, labels, clusters, lobes = scene
    table = cluster_table(z, labels, clusters, lobes, AFFINE, to_template=lambda p: p + 100.0)
    assert list(table.columns) == DESIGN_COLUMNS == list(BASE_COLUMNS)
    first, second = table.iloc[0], table.iloc[1]
    assert first.cluster_id == 1 and first.n_voxels == 1000
    assert first.volume_mm3 == pytest.approx(12000.0)
    assert first.region == "left-temporal" and first.region_fraction == pytest.approx(0.7)
    assert (first.peak_x_mm, first.peak_y_mm, first.peak_z_mm) == pytest.approx((-30.0, -38.0, 1.0))
    assert (first.peak_template_x_mm, first.peak_template_y_mm, first.peak_template_z_mm) == \
        pytest.approx((70.0, 62.0, 101.0))
    assert first.peak_zscore == pytest.approx(-6.0) and first.mean_zscore < -3.0
    assert second.region == "other" and second.region_fraction == pytest.approx(4 / 6)


def test_no_template_gives_nan(scene):
    z, labels, clusters, lobes = scene
    table = cluster_table(z, labels, clusters, lobes, AFFINE, to_template=None)
    assert table[["peak_template_x_mm", "peak_template_y_mm", "peak_template_z_mm"]].isna().all().all()
    assert table["peak_x_mm"].notna().all()


def test_empty_table_has_columns():
    z = np.zeros((4, 4, 4), np.float32)
    table = cluster_table(z, np.zeros(z.shape, np.int32), [], np.zeros(z.shape, np.int16),
                          np.eye(4), None)
    assert table.empty and list(table.columns) == DESIGN_COLUMNS


def test_assign_region_rules():
    lt, other = LOBE_INDEX["left-temporal"], LOBE_INDEX["other"]
    # Unlabelled voxels take no part in the vote, but count in the fraction.
    assert assign_region(np.array([0] * 6 + [lt] * 4)) == ("left-temporal", 0.4)
    assert assign_region(np.array([0] * 3)) == ("other", 1.0)
    assert assign_region(np.array([other] * 5 + [0] * 2 + [lt] * 3)) == ("other", 0.7)
    with pytest.raises(ValueError):
        assign_region(np.array([12]))


def test_inconsistent_inputs(scene):
    z, labels, clusters, lobes = scene
    with pytest.raises(ValueError, match="peak Z"):
        cluster_table(z * 2, labels, clusters, lobes, AFFINE, None)
    with pytest.raises(ValueError, match="shapes"):
        cluster_table(z, labels, clusters, lobes[:-1], AFFINE, None)


def test_lobe_dseg_table():
    table = lobe_dseg_table()
    assert list(table.columns) == ["index", "name"]
    assert table["index"].tolist() == list(range(1, 10))
    assert table.set_index("index").loc[3, "name"] == "left-temporal"
    assert isinstance(table, pd.DataFrame)
