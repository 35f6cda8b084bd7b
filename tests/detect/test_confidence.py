"""Confidence tiers and ranking (detect/confidence.py)."""

from __future__ import annotations

import numpy as np

from pseudopet_bids.detect import calibration
from pseudopet_bids.detect.clusters import find_clusters
from pseudopet_bids.detect.confidence import ClusterInputs, Evidence, rank_clusters, tier_of
from pseudopet_bids.detect.regions import CLUSTER_COLUMNS, cluster_table


def test_tier_rule():
    assert tier_of(True, True) == "high"
    assert tier_of(True, False) == tier_of(False, True) == "possible"
    assert tier_of(False, False) == "low"
    # the fallbacks without controls are liberal: nothing is high without a calibration
    assert tier_of(True, True, calibrated=False) == "possible"
    assert tier_of(False, True, calibrated=False) == "possible"


def _two_clusters():
    z = np.zeros((20, 20, 20), np.float32)
    z[2:8, 2:8, 2:8] = -2.0      # 216 voxels, shallow: the largest
    z[12:17, 12:17, 12:17] = -5  # 125 voxels, deep
    search = np.ones(z.shape, bool)
    labels, clusters = find_clusters(z, search, 1.0, threshold=1.65, min_volume_mm3=50)
    table = cluster_table(z, labels, clusters, np.ones(z.shape, np.int16), np.eye(4), None)
    return z, search, labels, clusters, table


def test_a_significant_asymmetric_cluster_outranks_a_larger_one():
    z, search, labels, clusters, table = _two_clusters()
    assert table["volume_mm3"].iloc[0] == 216  # size order first
    ai = np.zeros((4, 4, 4), np.float32)
    ai.ravel()[[0, 1]] = [-1.0, -20.0]
    inputs = ClusterInputs(z=z, labels=labels, search=search, voxel_sizes=(1, 1, 1),
                           threshold=1.65, ai=ai, ai_valid=np.ones(ai.shape, bool),
                           cluster_voxels=[np.array([0]), np.array([1])], key="sub-P1")
    null = calibration.ClusterNull({"rule": "subject"},
                                   {f"sub-C{i}": [60.0, 80.0] for i in range(12)})
    ranked, relabelled, info = rank_clusters(table, inputs, Evidence(null, None))
    assert list(ranked.columns) == list(CLUSTER_COLUMNS)
    assert list(ranked["cluster_id"]) == [1, 2]
    # the deep cluster: mass 125 * 3.35 = 419 >> controls, and AI -20 % < -10 %: high tier
    assert ranked["tier"].tolist() == ["high", "low"]  # the shallow one: as in controls
    assert ranked["volume_mm3"].tolist() == [125, 216]
    assert ranked["p_corrected"].iloc[0] < 0.05
    assert ranked["p_method"].iloc[0].startswith("controls")
    assert (relabelled[14, 14, 14], relabelled[4, 4, 4]) == (1, 2)
    assert ((relabelled > 0) == (labels > 0)).all()
    assert info["ClusterInference"]["Controls"] == 12


def test_without_controls_the_random_field_fallback_is_named():
    z, search, labels, clusters, table = _two_clusters()
    inputs = ClusterInputs(z=z, labels=labels, search=search, voxel_sizes=(1, 1, 1),
                           threshold=1.65, ai=None, ai_valid=None, cluster_voxels=[],
                           key="sub-P1")
    ranked, _, info = rank_clusters(table, inputs, Evidence())
    assert ranked["p_method"].str.startswith("random-field").all()
    assert "high" not in set(ranked["tier"])
    assert ranked["asymmetry_index"].isna().all()
    assert info["ClusterInference"]["Method"] == "random-field"


def test_no_cluster_gives_an_empty_table_with_every_column():
    z = np.zeros((5, 5, 5), np.float32)
    labels, clusters = find_clusters(z, np.ones(z.shape, bool), 1.0)
    table = cluster_table(z, labels, clusters, np.ones(z.shape, np.int16), np.eye(4), None)
    inputs = ClusterInputs(z=z, labels=labels, search=np.ones(z.shape, bool),
                           voxel_sizes=(1, 1, 1), threshold=1.65, ai=None, ai_valid=None,
                           cluster_voxels=[], key="k")
    ranked, relabelled, _ = rank_clusters(table, inputs, Evidence())
    assert ranked.empty and list(ranked.columns) == list(CLUSTER_COLUMNS)
    assert not relabelled.any()
