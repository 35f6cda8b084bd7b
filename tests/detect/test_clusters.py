"""Hypometabolic cluster detection."""

from __future__ import annotations

import numpy as np
import pytest

from pseudopet_bids.detect.clusters import Cluster, find_clusters

VOX = 8.0  # 2 mm isotropic voxels


@pytest.fixture
def scene(rng):
    z = rng.uniform(-1.0, 1.0, (30, 30, 30)).astype(np.float32)
    gm = np.ones(z.shape, bool)
    z[2:8, 2:8, 2:8] = -3.0  # 216 voxels = 1728 mm³: kept
    z[4, 5, 6] = -5.0  # its peak
    z[20:23, 20:23, 20:23] = -4.0  # 27 voxels = 216 mm³: removed
    z[12:19, 12:19, 12:19] = -2.0  # 343 voxels: the largest
    return z, gm


def test_known_blobs(scene):
    z, gm = scene
    labels, clusters = find_clusters(z, gm, VOX)
    assert [c.n_voxels for c in clusters] == [343, 216]
    assert [c.id for c in clusters] == [1, 2]
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 1, 2}
    big, small = clusters
    assert big.volume_mm3 == pytest.approx(343 * VOX)
    assert small.volume_mm3 == pytest.approx(1728.0)
    assert small.peak_index == (4, 5, 6) and small.peak_z == pytest.approx(-5.0)
    assert small.mean_z == pytest.approx((215 * -3.0 - 5.0) / 216)
    assert big.peak_z == pytest.approx(-2.0) and big.peak_index == (12, 12, 12)  # first on ties
    assert np.all(labels[20:23, 20:23, 20:23] == 0)
    assert np.all((labels == 2) == (np.indices(z.shape)[0] < 8) & (labels > 0))
    assert isinstance(small, Cluster) and small.to_dict()["n_voxels"] == 216


def test_min_volume_inclusive_and_threshold(scene):
    z, gm = scene
    _, clusters = find_clusters(z, gm, VOX, min_volume_mm3=1728.0)
    assert [c.n_voxels for c in clusters] == [343, 216]
    _, clusters = find_clusters(z, gm, VOX, min_volume_mm3=1728.1)
    assert [c.n_voxels for c in clusters] == [343]
    _, clusters = find_clusters(z, gm, VOX, threshold=2.5)  # the -2 block is no longer hypo
    assert [c.n_voxels for c in clusters] == [216]
    _, clusters = find_clusters(z, gm, VOX, min_volume_mm3=0.0)
    assert sum(c.n_voxels for c in clusters) == 343 + 216 + 27


def test_only_grey_matter_and_only_negative(scene):
    z, gm = scene
    gm = gm.copy()
    gm[12:19, 12:19, 12:16] = False  # 196 voxels of the big block leave GM
    labels, clusters = find_clusters(z, gm, VOX)
    assert [c.n_voxels for c in clusters] == [216]  # 147 voxels left: under 1500 mm³
    _, clusters = find_clusters(-z, np.ones_like(gm), VOX)  # hyper-metabolism is not detected
    assert clusters == []


def test_connectivity_diagonal():
    z = np.zeros((20, 20, 20), np.float32)
    z[2:7, 2:7, 2:7] = -3.0
    z[7:12, 7:12, 7:12] = -3.0  # touches the first block at one corner only
    gm = np.ones(z.shape, bool)
    _, c26 = find_clusters(z, gm, 1.0, min_volume_mm3=10)
    _, c18 = find_clusters(z, gm, 1.0, min_volume_mm3=10, connectivity=18)
    _, c6 = find_clusters(z, gm, 1.0, min_volume_mm3=10, connectivity=6)
    assert [c.n_voxels for c in c26] == [250]
    assert [c.n_voxels for c in c18] == [125, 125]
    assert [c.n_voxels for c in c6] == [125, 125]
    # Equal sizes: the block whose first voxel comes first in C order is cluster 1.
    assert c6[0].peak_index == (2, 2, 2) and c6[1].peak_index == (7, 7, 7)


def test_connectivity_edge():
    z = np.zeros((20, 20, 20), np.float32)
    z[2:7, 2:7, 2:7] = -3.0
    z[7:12, 7:12, 2:7] = -3.0  # shares an edge (along the third axis), no face
    gm = np.ones(z.shape, bool)
    counts = {conn: [c.n_voxels for c in find_clusters(z, gm, 1.0, min_volume_mm3=10,
                                                       connectivity=conn)[1]]
              for conn in (6, 18, 26)}
    assert counts == {6: [125, 125], 18: [250], 26: [250]}


def test_empty_and_errors():
    z = np.zeros((5, 5, 5))
    gm = np.ones(z.shape, bool)
    labels, clusters = find_clusters(z, gm, 1.0)
    assert clusters == [] and not labels.any()
    with pytest.raises(ValueError, match="connectivity"):
        find_clusters(z, gm, 1.0, connectivity=8)
    with pytest.raises(ValueError, match="positive magnitude"):
        find_clusters(z, gm, 1.0, threshold=-1.65)
    with pytest.raises(ValueError, match="shape"):
        find_clusters(z, gm[:4], 1.0)
    with pytest.raises(ValueError, match="voxel_volume"):
        find_clusters(z, gm, 0.0)
