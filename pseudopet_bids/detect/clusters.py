"""Hypometabolic clusters of a z-map (DESIGN.md §1 step 2).

A voxel is hypometabolic when it lies in grey matter and ``Z < −threshold`` (default 1.65, the
one-sided 5 % level). Hypometabolic voxels are grouped into connected components, by default with
the 26-neighbourhood (faces, edges and corners; 6 = faces only, 18 = faces and edges), and
components smaller than ``min_volume_mm3`` (default 1,500 mm³, the paper's 1,500 voxels at ~1 mm)
are discarded. Surviving clusters are numbered 1..K by decreasing size; ties are broken by the
position of the cluster's first voxel in C (row-major) order, so the numbering is deterministic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

_RANK = {6: 1, 18: 2, 26: 3}


@dataclass(frozen=True)
class Cluster:
    """One hypometabolic cluster.

    Attributes
    ----------
    id
        Label value in the label map (1 = largest).
    n_voxels
        Number of voxels.
    volume_mm3
        ``n_voxels`` × voxel volume.
    peak_index
        Voxel index (i, j, k) of the most negative Z (first in C order on ties).
    peak_z
        Z at the peak (negative).
    mean_z
        Mean Z over the cluster (negative).
    """

    id: int
    n_voxels: int
    volume_mm3: float
    peak_index: tuple[int, int, int]
    peak_z: float
    mean_z: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dictionary (JSON-serialisable)."""
        return asdict(self)


def find_clusters(z: np.ndarray, gm_mask: np.ndarray, voxel_volume_mm3: float,
                  threshold: float = 1.65, min_volume_mm3: float = 1500.0,
                  connectivity: int = 26) -> tuple[np.ndarray, list[Cluster]]:
    """Find hypometabolic clusters (``Z < −threshold`` inside grey matter).

    Parameters
    ----------
    z
        3D z-map (see :func:`pseudopet_bids.detect.zmap.zmap`).
    gm_mask
        Binary grey-matter mask on the same grid (bool or 0/1).
    voxel_volume_mm3
        Volume of one voxel in mm³ (product of the voxel sizes).
    threshold
        Positive magnitude of the z threshold; voxels with ``Z < −threshold`` are hypometabolic.
    min_volume_mm3
        Clusters with a volume below this are removed (``>=`` survives).
    connectivity
        Neighbourhood for connected components: 6, 18 or 26 (default).

    Returns
    -------
    labels : numpy.ndarray
        int32 label map, 0 = background, 1..K the surviving clusters by decreasing size.
    clusters : list of Cluster
        One entry per label, in label order.
    """
    z = np.asarray(z)
    gm = np.asarray(gm_mask)
    if z.ndim != 3:
        raise ValueError(f"z-map must be 3D, got shape {z.shape}")
    if z.shape != gm.shape:
        raise ValueError(f"z-map shape {z.shape} differs from GM mask shape {gm.shape}")
    if connectivity not in _RANK:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    if not voxel_volume_mm3 > 0:
        raise ValueError(f"voxel_volume_mm3 must be > 0, got {voxel_volume_mm3}")
    if not threshold >= 0:
        raise ValueError(f"threshold is the positive magnitude of the z cut-off (Z < -threshold), "
                         f"got {threshold}")
    if not min_volume_mm3 >= 0:
        raise ValueError(f"min_volume_mm3 must be >= 0, got {min_volume_mm3}")

    hypo = (gm != 0) & (z < -threshold)
    structure = ndimage.generate_binary_structure(3, _RANK[connectivity])
    raw, n = ndimage.label(hypo, structure=structure)
    labels = np.zeros(z.shape, dtype=np.int32)
    if n == 0:
        return labels, []

    flat_idx = np.flatnonzero(raw)  # ascending C order
    flat_lab = raw.ravel()[flat_idx]
    sizes = np.bincount(flat_lab, minlength=n + 1)
    # First voxel of each component in C order, for deterministic tie-breaking.
    first = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, flat_lab, flat_idx)
    keep = np.flatnonzero(sizes * float(voxel_volume_mm3) >= min_volume_mm3)
    keep = keep[keep > 0]
    if keep.size == 0:
        return labels, []
    order = keep[np.lexsort((first[keep], -sizes[keep]))]
    new_id = np.zeros(n + 1, dtype=np.int32)
    new_id[order] = np.arange(1, order.size + 1, dtype=np.int32)

    sel = new_id[flat_lab] > 0
    flat_idx, ids = flat_idx[sel], new_id[flat_lab[sel]]
    np.put(labels, flat_idx, ids)
    zvals = z.ravel()[flat_idx].astype(np.float64)
    sums = np.bincount(ids, weights=zvals, minlength=order.size + 1)
    # Peak = most negative Z; lexsort on (index, z, id) keeps the first voxel in C order on ties.
    by = np.lexsort((flat_idx, zvals, ids))
    starts = np.searchsorted(ids[by], np.arange(1, order.size + 1))
    clusters = []
    for k, start in enumerate(starts, start=1):
        pos = by[start]
        count = int(sizes[order[k - 1]])
        i, j, kk = (int(n) for n in np.unravel_index(flat_idx[pos], z.shape))  # z is 3D
        clusters.append(Cluster(
            id=k,
            n_voxels=count,
            volume_mm3=count * float(voxel_volume_mm3),
            peak_index=(i, j, kk),
            peak_z=float(zvals[pos]),
            mean_z=float(sums[k] / count),
        ))
    return labels, clusters
