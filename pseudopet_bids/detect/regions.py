"""Cluster table and lobe labelling (DESIGN.md §1 step 3 and §4).

Each cluster is assigned to the lobe label (values of
:data:`pseudopet_bids.resources.LOBE_LABELS`, on the same grid as the z-map) that holds the most of
its voxels. Voxels with label 0 (outside the atlas) take no part in that vote; the cluster is
``other`` when the winner is label 9 (``other``) or when none of its voxels is labelled.
``region_fraction`` is the share of the cluster's voxels inside the reported region, where
``other`` comprises labels 0 and 9.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pseudopet_bids.detect.clusters import Cluster
from pseudopet_bids.resources import LOBE_INDEX, LOBE_LABELS, REGIONS, TEMPLATE_NAME

#: Columns that :func:`cluster_table` computes from the clusters alone.
BASE_COLUMNS: tuple[str, ...] = (
    "cluster_id", "n_voxels", "volume_mm3", "peak_zscore", "mean_zscore",
    "peak_x_mm", "peak_y_mm", "peak_z_mm",
    "peak_template_x_mm", "peak_template_y_mm", "peak_template_z_mm",
    "region", "region_fraction",
)
#: Columns of ``*_desc-<analysis>Focus_clusters.tsv``, in order (DESIGN.md §4): the base
#: columns plus the confidence of each cluster (:mod:`pseudopet_bids.detect.confidence`).
#: Z values end in ``zscore``, coordinates in ``_mm``: the two cannot be confused.
CLUSTER_COLUMNS: tuple[str, ...] = (
    "cluster_id", "tier", "region", "region_fraction", "volume_mm3", "n_voxels",
    "peak_zscore", "mean_zscore", "z_mass", "p_corrected", "p_method",
    "asymmetry_index", "asymmetry_z",
    "peak_x_mm", "peak_y_mm", "peak_z_mm",
    "peak_template_x_mm", "peak_template_y_mm", "peak_template_z_mm",
)
#: The cluster table's JSON sidecar: what each column means (BIDS column descriptions).
CLUSTER_COLUMN_DESCRIPTIONS: dict[str, dict[str, Any]] = {
    "cluster_id": {"Description": "Cluster number = rank (1 = most likely real: by tier, then "
                                  "criteria met, then z_mass); value of the cluster in the "
                                  "desc-<analysis>Focus_dseg image"},
    "tier": {"Description": "Confidence tier: high = significant cluster (p_corrected <= "
                            "0.05) and asymmetric beyond the control range, both calibrated "
                            "on healthy controls; possible = one of the two (without "
                            "controls, at most possible); low = neither (docs/detection.md)",
             "Levels": {"high": "significant and asymmetric, both calibrated on controls",
                        "possible": "one of the two (or both by the fallbacks without "
                                    "controls)",
                        "low": "neither"}},
    "region": {"Description": "Lobe holding most of the cluster (or other)"},
    "region_fraction": {"Description": "Share of the cluster's voxels in that region"},
    "volume_mm3": {"Description": "Cluster volume", "Units": "mm^3"},
    "n_voxels": {"Description": "Voxels in the cluster (T1w grid)"},
    "peak_zscore": {"Description": "Most negative Z in the cluster"},
    "mean_zscore": {"Description": "Mean Z in the cluster"},
    "z_mass": {"Description": "Cluster mass: sum over its voxels of (-Z - threshold) x voxel "
                              "volume (strength: extent and depth together)", "Units": "mm^3"},
    "p_corrected": {"Description": "Cluster-level corrected p: chance that a healthy brain "
                                   "shows a cluster at least this extreme anywhere in the "
                                   "searched grey matter (method in p_method)"},
    "p_method": {"Description": "How p_corrected was obtained: controls (calibrated on healthy "
                                "controls' clusters, cluster mass) or random-field (fallback "
                                "without controls, cluster extent; liberal)"},
    "asymmetry_index": {"Description": "200 x (cluster - mirror homologue) / (cluster + "
                                       "homologue) of the real PET, template space (negative: "
                                       "less uptake than the other hemisphere)", "Units": "%"},
    "asymmetry_z": {"Description": "Asymmetry index against healthy controls' asymmetry of the "
                                   "same voxels (Z; n/a without controls: the fixed cut-off "
                                   "-10 % applies)"},
    "peak_x_mm": {"Description": "Peak, scanner RAS x", "Units": "mm"},
    "peak_y_mm": {"Description": "Peak, scanner RAS y", "Units": "mm"},
    "peak_z_mm": {"Description": "Peak, scanner RAS z", "Units": "mm"},
    "peak_template_x_mm": {"Description": f"Peak in {TEMPLATE_NAME} x", "Units": "mm"},
    "peak_template_y_mm": {"Description": f"Peak in {TEMPLATE_NAME} y", "Units": "mm"},
    "peak_template_z_mm": {"Description": f"Peak in {TEMPLATE_NAME} z", "Units": "mm"},
}
COLUMN_DTYPES = {
    "cluster_id": "int64", "n_voxels": "int64", "volume_mm3": "float64",
    "peak_zscore": "float64", "mean_zscore": "float64", "peak_x_mm": "float64",
    "peak_y_mm": "float64", "peak_z_mm": "float64", "peak_template_x_mm": "float64",
    "peak_template_y_mm": "float64", "peak_template_z_mm": "float64",
    "region": "object", "region_fraction": "float64", "tier": "object", "z_mass": "float64",
    "p_corrected": "float64", "p_method": "object", "asymmetry_index": "float64",
    "asymmetry_z": "float64",
}
_DTYPES = {c: COLUMN_DTYPES[c] for c in BASE_COLUMNS}


def assign_region(lobe_values: np.ndarray) -> tuple[str, float]:
    """Region of one cluster from the lobe labels of its voxels.

    Parameters
    ----------
    lobe_values
        Lobe label (0..9) of every voxel of the cluster.

    Returns
    -------
    region : str
        A name of :data:`pseudopet_bids.resources.REGIONS`, or ``other``.
    fraction : float
        Share of the cluster's voxels inside that region (``other`` = labels 0 and 9).
    """
    values = np.asarray(lobe_values).astype(np.int64).ravel()
    if values.size == 0:
        raise ValueError("a cluster has no voxels")
    if values.min() < 0 or values.max() > max(LOBE_LABELS):
        raise ValueError(f"lobe labels must lie in 0..{max(LOBE_LABELS)}")
    counts = np.bincount(values, minlength=max(LOBE_LABELS) + 1)
    labelled = counts[1:]
    winner = int(np.argmax(labelled)) + 1 if labelled.any() else 0  # lowest label on ties
    name = LOBE_LABELS.get(winner, "other")
    if name not in REGIONS:
        other = counts[0] + counts[LOBE_INDEX["other"]]
        return "other", float(other / values.size)
    return name, float(counts[winner] / values.size)


def cluster_table(z: np.ndarray, labels: np.ndarray, clusters: Sequence[Cluster],
                  lobe_labels: np.ndarray, affine: np.ndarray,
                  to_template: Callable[[np.ndarray], np.ndarray] | None) -> pd.DataFrame:
    """One row per cluster with the :data:`BASE_COLUMNS` (the confidence columns are added by
    :func:`pseudopet_bids.detect.confidence.rank_clusters`).

    Parameters
    ----------
    z
        The z-map the clusters came from (used to check the peaks).
    labels
        Cluster label map from :func:`pseudopet_bids.detect.clusters.find_clusters`.
    clusters
        The matching cluster list.
    lobe_labels
        Lobe segmentation on the same grid (values of ``LOBE_LABELS``, 0 = none).
    affine
        4×4 voxel → scanner-mm affine of the grid.
    to_template
        Maps (N, 3) scanner-mm points of this grid to (N, 3) template mm (e.g.
        ``TemplateRegistration.points_to_template``); None leaves the template columns NaN
        (written ``n/a`` in the TSV).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`BASE_COLUMNS` (present even with no rows). ``peak_x_mm`` … are scanner
        mm; ``peak_zscore`` and ``mean_zscore`` are z-scores (negative).
    """
    z = np.asarray(z)
    labels = np.asarray(labels)
    lobes = np.asarray(lobe_labels)
    affine = np.asarray(affine, dtype=np.float64)
    if not (z.shape == labels.shape == lobes.shape):
        raise ValueError(f"shapes differ: z {z.shape}, labels {labels.shape}, lobe labels "
                         f"{lobes.shape}")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    if not clusters:
        return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in BASE_COLUMNS})

    peaks = np.array([c.peak_index for c in clusters], dtype=np.float64)
    scanner = peaks @ affine[:3, :3].T + affine[:3, 3]
    if to_template is None:
        template = np.full_like(scanner, np.nan)
    else:
        template = np.asarray(to_template(scanner), dtype=np.float64)
        if template.shape != scanner.shape:
            raise ValueError(f"to_template returned shape {template.shape}, expected "
                             f"{scanner.shape}")

    # One pass over the labelled voxels instead of one full-volume mask per cluster.
    flat = np.flatnonzero(labels)
    ids = labels.ravel()[flat]
    order = np.argsort(ids, kind="stable")
    ids, lobe_vals = ids[order], lobes.ravel()[flat[order]]
    rows = []
    for k, c in enumerate(clusters):
        lo, hi = np.searchsorted(ids, [c.id, c.id + 1])
        if hi - lo != c.n_voxels:
            raise ValueError(f"cluster {c.id}: {hi - lo} voxels in the label map, "
                             f"{c.n_voxels} in the cluster list")
        if not np.isclose(z[c.peak_index], c.peak_z, atol=1e-5):
            raise ValueError(f"cluster {c.id}: peak Z does not match the z-map")
        region, fraction = assign_region(lobe_vals[lo:hi])
        rows.append({
            "cluster_id": c.id, "n_voxels": c.n_voxels, "volume_mm3": c.volume_mm3,
            "peak_zscore": c.peak_z, "mean_zscore": c.mean_z,
            "peak_x_mm": scanner[k, 0], "peak_y_mm": scanner[k, 1], "peak_z_mm": scanner[k, 2],
            "peak_template_x_mm": template[k, 0], "peak_template_y_mm": template[k, 1],
            "peak_template_z_mm": template[k, 2],
            "region": region, "region_fraction": fraction,
        })
    return pd.DataFrame(rows, columns=list(BASE_COLUMNS)).astype(_DTYPES)


def lobe_dseg_table() -> pd.DataFrame:
    """Look-up table of ``desc-lobes_dseg.nii.gz`` (columns ``index``, ``name``; 0 omitted)."""
    return pd.DataFrame({"index": list(LOBE_LABELS), "name": list(LOBE_LABELS.values())})
