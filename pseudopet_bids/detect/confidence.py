"""How likely each cluster is real: corrected p, asymmetry, confidence tier and rank.

Tier rule (docs/detection.md):

- **high**: the cluster is significant (corrected p ≤ 0.05, :mod:`.calibration`) *and* the
  real PET is asymmetric there beyond the control range (:mod:`.asymmetry`: asymmetry Z
  against controls at or below −2 and below the 5th percentile of the controls' own clusters'
  asymmetry Z, or AI ≤ −10 % without controls);
- **possible**: one of the two;
- **low**: neither.

Without a calibration on controls (the random-field p and the fixed AI cut-off) no cluster is
rated **high**: both fallbacks are liberal — random-field cluster inference at a
cluster-forming threshold as low as Z 1.65 is far from its nominal error rate (Eklund et al.
2016), and a fixed AI cut-off ignores the asymmetries that healthy brains have — and on the
harder simulated cohort they gave 1.2 "high" clusters per healthy control. A cluster meeting
both fallback criteria is then **possible**, ranked before those meeting one.

Clusters are ranked by tier, then by the number of criteria met, then by strength (cluster
mass, larger first; then the earlier size order), and renumbered so that ``cluster_id`` 1 is
the top-ranked cluster; the label map is renumbered the same way. The paper's voxel rule (Z < −threshold, clusters ≥ the minimum
volume) is not changed: the same voxels form the same clusters, only their order and the
information beside them are new.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from pseudopet_bids.detect import asymmetry, calibration
from pseudopet_bids.detect.regions import CLUSTER_COLUMNS, COLUMN_DTYPES

TIERS: tuple[str, ...] = ("high", "possible", "low")


@dataclass(frozen=True)
class Evidence:
    """What a run judges clusters with, loaded once per run (None: the fallbacks).

    ``null``: the controls' clusters of this analysis with these settings
    (:class:`calibration.ClusterNull`); ``asymmetry``: the controls' asymmetry maps;
    ``sha256``: identity of both (part of the output hash).
    """

    null: calibration.ClusterNull | None = None
    asymmetry: asymmetry.AsymmetryReference | None = None
    sha256: str = ""


@dataclass(frozen=True)
class ClusterInputs:
    """One subject's arrays for :func:`rank_clusters` (T1w grid unless said otherwise)."""

    z: np.ndarray
    labels: np.ndarray
    search: np.ndarray  #: searched grey matter (bool)
    voxel_sizes: Sequence[float]
    threshold: float  #: positive magnitude of the cluster-forming threshold
    ai: np.ndarray | None  #: AI map on the template grid (None: asymmetry not computed)
    ai_valid: np.ndarray | None
    cluster_voxels: list[np.ndarray]  #: each cluster's template-grid voxels
    key: str  #: ``sub-L[_ses-S]`` (leave-one-out when it is a calibration control)


def tier_of(significant: bool, asymmetric: bool, calibrated: bool = True) -> str:
    """The tier rule (module doc); ``calibrated`` False (fallbacks) caps it at possible."""
    tier = TIERS[2 - int(significant) - int(asymmetric)]
    return "possible" if tier == "high" and not calibrated else tier


def rank_clusters(table: pd.DataFrame, inputs: ClusterInputs, evidence: Evidence
                  ) -> tuple[pd.DataFrame, np.ndarray, dict[str, object]]:
    """Add the confidence columns, rank and renumber the clusters.

    Parameters
    ----------
    table
        :func:`pseudopet_bids.detect.regions.cluster_table` output (cluster_id = size order).
    inputs, evidence
        The subject's arrays and the run's references.

    Returns
    -------
    table : pandas.DataFrame
        Columns :data:`CLUSTER_COLUMNS`, rows in rank order, ``cluster_id`` = rank.
    labels : numpy.ndarray
        The label map renumbered to the new ``cluster_id``.
    info : dict
        How p and the asymmetry were obtained (for the sidecars).
    """
    n = len(table)
    voxel_volume = float(np.prod(inputs.voxel_sizes))
    masses = calibration.cluster_masses(inputs.z, inputs.labels, n, inputs.threshold,
                                        voxel_volume)
    info: dict[str, object] = {}
    null = evidence.null
    if null is not None:
        n_ctrl = len(null.controls(inputs.key))
        method = f"{calibration.METHOD_CONTROLS} (cluster mass, {n_ctrl} controls)"
        p = [calibration.controls_p(null, m, inputs.key) for m in masses]
        info["ClusterInference"] = {"Method": calibration.METHOD_CONTROLS,
                                    "Statistic": "cluster mass", "Controls": n_ctrl,
                                    "LeaveOneOut": inputs.key in null.masses}
    elif n:
        search_mm3 = float(np.count_nonzero(inputs.search)) * voxel_volume
        fwhm = calibration.smoothness_fwhm(inputs.z, inputs.search, inputs.voxel_sizes)
        method = (f"{calibration.METHOD_RANDOM_FIELD} (cluster extent, FWHM "
                  f"{float(np.mean(fwhm)):.1f} mm; no controls)")
        p = [calibration.random_field_p(v, search_mm3, fwhm, inputs.threshold)
             for v in table["volume_mm3"]]
        info["ClusterInference"] = {"Method": calibration.METHOD_RANDOM_FIELD,
                                    "Statistic": "cluster extent",
                                    "SmoothnessFWHM_mm": [round(float(f), 2) for f in fwhm],
                                    "SearchVolume_mm3": search_mm3}
    else:
        method, p = calibration.METHOD_RANDOM_FIELD, []
    cutoff = null.asymmetry_cutoff(inputs.key) if null is not None else asymmetry.ASYMMETRY_Z
    ai_values, ai_z = np.full(n, np.nan), np.full(n, np.nan)
    if inputs.ai is not None and inputs.ai_valid is not None:
        for k in range(n):
            ai_values[k], ai_z[k] = asymmetry.region_asymmetry(
                inputs.ai, inputs.ai_valid, inputs.cluster_voxels[k], evidence.asymmetry,
                inputs.key)
        info["Asymmetry"] = {"Reference": "controls" if evidence.asymmetry is not None
                             else f"fixed cut-off AI <= {asymmetry.FIXED_AI:g} %",
                             "ZCutoff": round(cutoff, 3)}
    out = table.copy()
    out["z_mass"] = masses
    out["p_corrected"] = np.asarray(p, dtype=np.float64)
    out["p_method"] = method
    out["asymmetry_index"] = ai_values
    out["asymmetry_z"] = ai_z
    significant = [bool(pk <= calibration.ALPHA) for pk in out["p_corrected"]]
    asymmetric = [asymmetry.is_asymmetric(a, zz, cutoff) for a, zz in zip(ai_values, ai_z)]
    met = [int(s) + int(a) for s, a in zip(significant, asymmetric)]
    out["tier"] = [tier_of(s, a, calibrated=null is not None)
                   for s, a in zip(significant, asymmetric)]
    rank = {t: i for i, t in enumerate(TIERS)}
    order = sorted(range(n), key=lambda i: (rank[out["tier"].iat[i]], -met[i], -masses[i],
                                            int(out["cluster_id"].iat[i])))
    old_ids = out["cluster_id"].to_numpy()[order]
    out = out.iloc[order].reset_index(drop=True)
    out["cluster_id"] = np.arange(1, n + 1, dtype=np.int64)
    lut = np.zeros(int(old_ids.max(initial=0)) + 1, dtype=np.int32)
    lut[old_ids] = np.arange(1, n + 1, dtype=np.int32)
    labels = lut[np.asarray(inputs.labels)] if n else np.asarray(inputs.labels, np.int32)
    if n == 0:
        out = pd.DataFrame({c: pd.Series(dtype=COLUMN_DTYPES[c]) for c in CLUSTER_COLUMNS})
    return out[list(CLUSTER_COLUMNS)].astype(COLUMN_DTYPES), labels.astype(np.int32), info
