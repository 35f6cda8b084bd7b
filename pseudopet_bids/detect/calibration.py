"""Cluster-level significance: how often would a healthy brain show a cluster this extreme?

A voxel-wise ``Z < −1.65`` flags about 5 % of any brain's grey matter, so every brain has
clusters; what tells a real focus from the noise is how extreme its cluster is. Two ways of
answering, chosen by ``--cluster-inference`` (docs/detection.md):

``controls`` (calibrated on healthy controls)
    The statistic is the **cluster mass**, ``Σ (−Z − threshold) × voxel volume`` over the
    cluster (mm³; extent and depth together). The clusters that the same analysis, with the same
    settings, leaves in healthy controls are pooled (:class:`ClusterNull`, built by ``group
    --build-normative``). ``λ(m)``, the expected number of clusters of mass ≥ ``m`` per healthy
    brain, is their empirical rate below the median control mass and a power-law (Pareto) tail
    fitted to the upper half above it (peaks over threshold: extrapolates beyond the largest
    control cluster, and a heavy tail errs on the safe side). The corrected p-value is
    ``1 − exp(−λ(m))``, the chance that a healthy brain shows at least one such cluster
    anywhere in the searched grey matter (family-wise over the brain). A control is scored
    without its own clusters (leave-one-out). At least :data:`MIN_CONTROLS` controls are needed.
``random-field`` (no controls: the fallback)
    The statistic is the cluster **extent**. The smoothness of the Z-map is estimated from its
    spatial derivatives (:func:`smoothness_fwhm`) and the expected number and size of clusters
    of a Gaussian random field of that smoothness over the searched volume give
    ``p = 1 − exp(−E[χ] · P(S ≥ s))`` (Friston et al. 1994). A residual map is not a stationary
    Gaussian field (structured errors of the pseudo-normal PET), so this p-value is liberal; it
    is labelled as the fallback everywhere it is shown.

Pure functions on arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

#: Controls needed before their clusters calibrate p-values (fewer: the random-field
#: fallback). With 10 controls and about 2 clusters each, the tail fit uses about 10 clusters.
MIN_CONTROLS = 10
#: Corrected p at or below which a cluster is called significant.
ALPHA = 0.05
#: Fewer pooled control clusters than this: no tail fit, the plus-one empirical rate is used.
MIN_TAIL_CLUSTERS = 6
METHOD_CONTROLS = "controls"
METHOD_RANDOM_FIELD = "random-field"
#: Settings that must match between the calibration and the analysis it calibrates.
SETTINGS = ("rule", "z_threshold", "cluster_min_volume", "connectivity", "gm_threshold",
            "search_region", "pseudo_calibration", "n_samples")


def cluster_masses(z: np.ndarray, labels: np.ndarray, n_clusters: int, threshold: float,
                   voxel_volume_mm3: float) -> np.ndarray:
    """Mass ``Σ (−Z − threshold) × voxel volume`` of clusters ``1..n_clusters`` (mm³).

    Parameters
    ----------
    z
        The Z-map the clusters were formed on.
    labels
        Cluster label map (0 = background, 1..n the clusters).
    n_clusters
        Number of clusters.
    threshold
        Positive magnitude of the cluster-forming threshold.
    voxel_volume_mm3
        Volume of one voxel.
    """
    labels = np.asarray(labels)
    inside = labels > 0
    excess = (-np.asarray(z, dtype=np.float64)[inside] - threshold).clip(min=0.0)
    sums = np.bincount(labels[inside], weights=excess, minlength=n_clusters + 1)
    return (sums[1:n_clusters + 1] * voxel_volume_mm3).astype(np.float64)


@dataclass(frozen=True)
class ClusterNull:
    """The clusters that one analysis leaves in healthy controls.

    Attributes
    ----------
    settings
        The analysis and its thresholds (:data:`SETTINGS`): a calibration applies only to
        the same settings.
    masses
        Control key (``sub-L[_ses-S]``) → masses of its clusters (may be empty).
    asymmetry_z
        Control key → asymmetry Z of the same clusters (leave-one-out; NaN where undefined):
        how asymmetric healthy brains' clusters are (:meth:`asymmetry_cutoff`).
    """

    settings: dict[str, Any]
    masses: dict[str, list[float]] = field(default_factory=dict)
    asymmetry_z: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the normative model's ``calibration.json``)."""
        return {"settings": dict(self.settings),
                "masses": {k: [float(v) for v in m] for k, m in sorted(self.masses.items())},
                "asymmetry_z": {k: [None if not np.isfinite(v) else float(v) for v in m]
                                for k, m in sorted(self.asymmetry_z.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClusterNull":
        return cls(dict(data["settings"]),
                   {str(k): [float(v) for v in m] for k, m in data["masses"].items()},
                   {str(k): [float("nan") if v is None else float(v) for v in m]
                    for k, m in data.get("asymmetry_z", {}).items()})

    def asymmetry_cutoff(self, leave_out: str | None = None) -> float:
        """Asymmetry Z a cluster must reach to be asymmetric *beyond the control range*: the
        5th percentile of the asymmetry Z of the controls' own clusters, and at most
        :data:`pseudopet_bids.detect.asymmetry.ASYMMETRY_Z`.

        A cluster is where Z is low, and there the PET is often lower than on the other side
        too: the controls' clusters are more asymmetric than 2 SD would suggest, so the cut-off
        is taken from them (with fewer than 20 control clusters, −2 SD alone).
        """
        from pseudopet_bids.detect.asymmetry import ASYMMETRY_Z

        values = np.array([v for k, zs in self.asymmetry_z.items() if k != leave_out
                           for v in zs], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size < 20:
            return ASYMMETRY_Z
        return float(min(ASYMMETRY_Z, np.percentile(values, 5)))

    def controls(self, leave_out: str | None = None) -> list[str]:
        """Keys of the controls used (without ``leave_out``)."""
        return [k for k in self.masses if k != leave_out]

    def mismatch(self, settings: Mapping[str, Any]) -> list[str]:
        """Names of the settings that differ from ``settings`` (empty: it applies)."""
        return [k for k in SETTINGS if _norm(self.settings.get(k)) != _norm(settings.get(k))]


def _norm(value: Any) -> Any:
    return round(float(value), 6) if isinstance(value, (int, float)) else value


def clusters_per_control(null: ClusterNull, mass: float, leave_out: str | None = None
                         ) -> float:
    """λ(m): expected number of clusters of mass ≥ ``mass`` in one healthy brain (module doc).

    Raises
    ------
    ValueError
        No control left (after ``leave_out``).
    """
    keys = null.controls(leave_out)
    if not keys:
        raise ValueError("cluster calibration: no control left to compare with")
    n = len(keys)
    pooled = np.sort(np.concatenate([np.asarray(null.masses[k], np.float64) for k in keys]
                                    + [np.zeros(0)]))
    if pooled.size < MIN_TAIL_CLUSTERS:
        # too few clusters to fit a tail: the plus-one rate (never 0, as for a permutation p)
        return (int((pooled >= mass).sum()) + 1) / (n + 1)
    m0 = float(np.median(pooled))
    if mass < m0:
        return int((pooled >= mass).sum()) / n
    upper = pooled[pooled >= m0]
    logs = np.log(upper / m0)
    # Pareto tail above the median (maximum likelihood, (k − 1)/k bias correction)
    alpha = (upper.size - 1) / max(float(logs.sum()), 1e-12)
    return upper.size / n * (mass / m0) ** (-alpha)


def controls_p(null: ClusterNull, mass: float, leave_out: str | None = None) -> float:
    """Corrected p ``1 − exp(−λ(m))`` of a cluster of mass ``mass`` against the controls."""
    return float(-math.expm1(-clusters_per_control(null, mass, leave_out)))


# --------------------------------------------------------------------------- random fields
def smoothness_fwhm(z: np.ndarray, mask: np.ndarray, voxel_sizes: Sequence[float]
                    ) -> np.ndarray:
    """FWHM (mm, per axis) of a Z-map from the variance of its first differences.

    For a unit-variance Gaussian field with Gaussian autocorrelation,
    ``FWHM = Δ · sqrt(4 ln 2 / var(∂Z/∂i))`` with ``∂Z/∂i`` the difference of neighbouring
    voxels (Forman et al. 1995). Only pairs of voxels that are both in ``mask`` count; the map
    is standardised over the mask first.
    """
    mask = np.asarray(mask, dtype=bool)
    values = np.asarray(z, dtype=np.float64)
    sd = float(values[mask].std()) if mask.any() else 0.0
    if not sd > 0:
        raise ValueError("smoothness: the Z-map is constant over the mask")
    values = np.where(mask, (values - values[mask].mean()) / sd, 0.0)
    fwhm = []
    for axis, size in enumerate(voxel_sizes):
        lead = [slice(None)] * 3
        lag = [slice(None)] * 3
        lead[axis], lag[axis] = slice(1, None), slice(None, -1)
        both = mask[tuple(lead)] & mask[tuple(lag)]
        diff = (values[tuple(lead)] - values[tuple(lag)])[both]
        var = float(diff.var()) if diff.size > 1 else 0.0
        # an un-smooth map (var → 2) still gets a finite FWHM; cap for a constant gradient
        fwhm.append(float(size) * math.sqrt(4 * math.log(2) / max(var, 1e-6)))
    return np.asarray(fwhm)


def random_field_p(extent_mm3: float, search_mm3: float, fwhm_mm: Sequence[float] | np.ndarray,
                   threshold: float) -> float:
    """Corrected p of a cluster's extent under a 3D Gaussian random field (module doc).

    ``E[χ] = R · (4 ln 2)^{3/2} (2π)^{−2} (u² − 1) e^{−u²/2}`` with ``R`` the search volume in
    resels, the mean cluster size ``E[S] = V Φ(−u) / E[χ]``, ``P(S ≥ s) = exp(−β s^{2/3})``
    with ``β = (Γ(5/2) / E[S])^{2/3}``, and ``p = 1 − exp(−E[χ] P(S ≥ s))``.
    """
    u = float(threshold)
    resels = search_mm3 / float(np.prod(fwhm_mm))
    ec = resels * (4 * math.log(2)) ** 1.5 / (2 * math.pi) ** 2 * (u * u - 1) \
        * math.exp(-u * u / 2)
    if not ec > 0:  # u ≤ 1: the Euler characteristic no longer counts clusters
        return 1.0
    tail = 0.5 * math.erfc(u / math.sqrt(2))
    mean_size = search_mm3 * tail / ec
    beta = (math.gamma(2.5) / mean_size) ** (2.0 / 3.0)
    return float(-math.expm1(-ec * math.exp(-beta * extent_mm3 ** (2.0 / 3.0))))
