"""Hemispheric asymmetry of the real PET (per cluster, per lobe, voxel-wise).

The MNI152NLin2009aSym template is left/right symmetric, so the homologous point of a template
voxel is its mirror image across x = 0. A subject's normalised PET is brought to the 2 mm
template grid of the normative model (grey-matter-weighted, as the residuals:
:func:`pseudopet_bids.detect.normative.residual_to_template`), mirrored, and compared with
itself: the asymmetry index ``AI = 200 · (ipsi − contra) / (ipsi + contra)`` (%) is negative
where a region takes up less FDG than its homologue.

Against healthy controls (:class:`AsymmetryReference`, built by ``group --build-normative``)
the AI of a region is a single case against a small sample (Crawford & Howell 1998): ``Z`` of
the t with ``n − 1`` degrees of freedom. Without controls a fixed cut-off is used,
:data:`FIXED_AI` (AI ≤ −10 %): normal cortical asymmetry stays within a few percent, and
temporal lobe epilepsy series report regional AIs of −12 to −16 % ipsilateral to the focus
(Korean J Nucl Med 1999;33:28-39; Abou-Khalil et al. 1987 called an asymmetry abnormal beyond
2 SD of normal subjects', as :data:`ASYMMETRY_Z` does here).

Pure functions on arrays (the registration does the resampling).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from scipy import stats as st

from pseudopet_bids import resources
from pseudopet_bids.detect import normative
from pseudopet_bids.errors import DataError
from pseudopet_bids.preproc.registration import Registration

if TYPE_CHECKING:
    import pandas as pd

#: Fixed AI cut-off (%) when no controls are available (module doc).
FIXED_AI = -10.0
#: Asymmetry Z at or below which a region is asymmetric beyond the controls' range (2 SD).
ASYMMETRY_Z = -2.0
#: Least share of the subject's template-space grey matter whose mirror is covered too.
MIN_MIRROR_COVERAGE = 0.5
#: Least controls covering a region for an asymmetry Z.
MIN_CONTROLS = 3


def mirror_axis_flip(affine: np.ndarray, shape: tuple[int, ...]) -> None:
    """Check that flipping array axis 0 mirrors the grid across x = 0.

    Raises
    ------
    ValueError
        The grid is not axis-aligned or not centred on x = 0 (another template).
    """
    affine = np.asarray(affine, dtype=np.float64)
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))) or affine[0, 0] == 0:
        raise ValueError("asymmetry: the template grid is not axis-aligned")
    first, last = affine[0, 3], affine[0, 3] + affine[0, 0] * (shape[0] - 1)
    if not np.isclose(first, -last, atol=1e-3):
        raise ValueError(f"asymmetry: the template grid is not centred on x = 0 "
                         f"(x from {first:g} to {last:g} mm)")


def asymmetry_map(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-wise AI (%) of a template-grid image against its mirror, and where it is defined.

    ``valid``: where ``values`` is defined; the AI is defined where both the voxel and its
    mirror are (and their sum is positive).
    """
    values = np.asarray(values, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    mirror, mirror_valid = values[::-1], valid[::-1]
    total = values + mirror
    both = valid & mirror_valid & (total > 0)
    ai = np.zeros(values.shape, dtype=np.float32)
    ai[both] = (200.0 * (values[both] - mirror[both]) / total[both]).astype(np.float32)
    return ai, both


def subject_asymmetry(pet_norm: np.ndarray, gm: np.ndarray, registration: Registration
                      ) -> tuple[np.ndarray, np.ndarray]:
    """AI map of a subject's normalised PET on the normative 2 mm template grid.

    Raises
    ------
    DataError
        Less than :data:`MIN_MIRROR_COVERAGE` of the subject's grey matter has a homologue
        inside the mapped brain (a brain partly outside the field of view, or a T1w that does
        not match the template).
    """
    ref = normative.grid_reference()
    mirror_axis_flip(ref.affine, ref.shape)
    values, valid = normative.residual_to_template(np.asarray(pet_norm, np.float32), gm,
                                                   registration)
    ai, both = asymmetry_map(values, valid)
    coverage = float(both.sum()) / max(int(valid.sum()), 1)
    if coverage < MIN_MIRROR_COVERAGE:
        raise DataError(f"hemispheric asymmetry: only {coverage:.0%} of the grey matter has a "
                        "mirror-image homologue in the template's field of view", role="pet",
                        fix="check that the T1w and the PET cover the whole brain (both "
                            "hemispheres), and the T1w-to-template registration in the report")
    return ai, both


@dataclass
class AsymmetryReference:
    """The AI maps of healthy controls on the 2 mm template grid.

    Attributes
    ----------
    index
        Flat indices of the stored voxels (where at least one control has an AI).
    maps
        float32 ``(n_controls, len(index))``; NaN where a control has no AI.
    controls
        Control keys, in the order of ``maps``.
    """

    index: np.ndarray
    maps: np.ndarray
    controls: list[str] = field(default_factory=list)

    @classmethod
    def from_maps(cls, maps: dict[str, tuple[np.ndarray, np.ndarray]]) -> "AsymmetryReference":
        """From ``key → (AI map, valid)`` of each control."""
        keys = list(maps)
        union = np.zeros(next(iter(maps.values()))[0].shape, bool) if keys else np.zeros(0, bool)
        for ai, valid in maps.values():
            union |= valid
        index = np.flatnonzero(union)
        rows = np.full((len(keys), index.size), np.nan, np.float32)
        for row, key in enumerate(keys):
            ai, valid = maps[key]
            rows[row] = np.where(valid.ravel()[index], ai.ravel()[index], np.nan)
        return cls(index, rows, keys)

    def region_values(self, voxels: np.ndarray, leave_out: str | None = None) -> np.ndarray:
        """Each control's mean AI over the template voxels ``voxels`` (flat indices); NaN for
        controls without any of them; the control ``leave_out`` is left out."""
        cols = np.searchsorted(self.index, voxels)
        ok = (cols < self.index.size)
        cols = cols[ok][self.index[cols[ok]] == voxels[ok]]
        keep = [i for i, k in enumerate(self.controls) if k != leave_out]
        sub = self.maps[np.ix_(keep, cols)] if cols.size else np.full((len(keep), 0), np.nan)
        with np.errstate(invalid="ignore"):
            counts = np.isfinite(sub).sum(1)
            sums = np.nansum(sub, axis=1)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def voxel_stats(self, leave_out: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, SD (ddof 1) and number of controls of the AI at each stored voxel."""
        keep = [i for i, k in enumerate(self.controls) if k != leave_out]
        sub = self.maps[keep]
        n = np.isfinite(sub).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.nansum(sub, 0) / np.maximum(n, 1), 0.0)
            dev = np.where(np.isfinite(sub), sub - mean, 0.0)
            sd = np.sqrt((dev * dev).sum(0) / np.maximum(n - 1, 1))
        return mean, sd, n


def single_case_z(value: float, controls: np.ndarray) -> float:
    """Z of one value against a small control sample (Crawford & Howell 1998); NaN with fewer
    than :data:`MIN_CONTROLS` finite controls or no spread."""
    sample = np.asarray(controls, np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size < MIN_CONTROLS or not np.isfinite(value):
        return float("nan")
    sd = float(sample.std(ddof=1))
    if not sd > 0:
        return float("nan")
    n = sample.size
    t = (value - float(sample.mean())) / (sd * np.sqrt(1 + 1 / n))
    return float(np.sign(t) * st.norm.isf(st.t.sf(abs(t), df=n - 1)))


def region_asymmetry(ai: np.ndarray, both: np.ndarray, voxels: np.ndarray,
                     reference: AsymmetryReference | None, key: str
                     ) -> tuple[float, float]:
    """``(AI, asymmetry Z)`` of a region given as flat template-grid indices: the mean voxel
    AI of the subject where it is defined, and its Z against the controls (NaN: none)."""
    voxels = np.asarray(voxels, np.int64)
    voxels = voxels[both.ravel()[voxels]]
    if voxels.size == 0:
        return float("nan"), float("nan")
    value = float(ai.ravel()[voxels].mean())
    if reference is None:
        return value, float("nan")
    return value, single_case_z(value, reference.region_values(voxels, key))


def cluster_voxels(labels: np.ndarray, n_clusters: int, registration: Registration
                   ) -> list[np.ndarray]:
    """Flat template-grid indices of each cluster ``1..n`` (nearest-neighbour resampling)."""
    if n_clusters == 0:
        return []
    ref = normative.grid_reference()
    img = registration.to_template(nib.Nifti1Image(np.asarray(labels, np.float32),
                                                   registration.t1_affine), "nearest", ref)
    flat = np.rint(np.asarray(img.dataobj)).astype(np.int64).ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(1, n_clusters + 2))
    return [np.sort(order[bounds[k]:bounds[k + 1]]) for k in range(n_clusters)]


@functools.lru_cache(maxsize=1)
def lobe_voxels() -> dict[str, np.ndarray]:
    """Flat indices of each lobar region (:data:`resources.REGIONS`) on the 2 mm grid."""
    ref = normative.grid_reference()
    atlas = resources.load_lobe_atlas()
    from nibabel.processing import resample_from_to

    lobes = np.rint(np.asarray(resample_from_to(atlas, ref, order=0).dataobj)).astype(np.int64)
    return {name: np.flatnonzero(lobes.ravel() == resources.LOBE_INDEX[name])
            for name in resources.REGIONS}


def is_asymmetric(ai: float, z: float, cutoff: float = ASYMMETRY_Z) -> bool:
    """The tier rule's asymmetry criterion: Z ≤ ``cutoff`` against controls (default
    :data:`ASYMMETRY_Z`; the calibration's :meth:`ClusterNull.asymmetry_cutoff
    <pseudopet_bids.detect.calibration.ClusterNull.asymmetry_cutoff>` when there is one), or,
    without controls (``z`` NaN), AI ≤ :data:`FIXED_AI`."""
    if np.isfinite(z):
        return bool(z <= cutoff)
    return bool(np.isfinite(ai) and ai <= FIXED_AI)


def asymmetry_zmap(ai: np.ndarray, both: np.ndarray, reference: AsymmetryReference,
                   registration: Registration, search: np.ndarray, key: str
                   ) -> tuple[np.ndarray, dict[str, object]]:
    """Voxel-wise asymmetry Z on the T1w grid (the ``asymmetry`` detection rule).

    At each template voxel the subject's AI is a single case against the controls' AIs there
    (Crawford & Howell t with ``n − 1`` degrees of freedom, mapped to Z; the SD is floored at
    a quarter of its median, as few controls give some near-zero SDs); Z is brought back to the
    T1w grid by nearest neighbour (interpolating would shrink its spread) and kept in
    ``search``. Voxels with fewer than :data:`MIN_CONTROLS` controls get Z = 0 (not tested).
    """
    mean, sd, n = reference.voxel_stats(key)
    ok = n >= MIN_CONTROLS
    if ok.any():
        sd = np.maximum(sd, 0.25 * float(np.median(sd[ok])))
    idx = reference.index
    sub_ai = ai.ravel()[idx].astype(np.float64)
    use = ok & both.ravel()[idx] & (sd > 0)
    t = np.zeros(idx.size)
    t[use] = (sub_ai[use] - mean[use]) / (sd[use] * np.sqrt(1 + 1 / n[use]))
    z_vals = np.zeros(idx.size, np.float32)
    z_vals[use] = (np.sign(t[use]) * st.norm.isf(st.t.sf(np.abs(t[use]), df=n[use] - 1))
                   ).astype(np.float32)
    ref = normative.grid_reference()
    z_t = np.zeros(ref.shape, np.float32)
    z_t.ravel()[idx] = z_vals
    tested = np.zeros(ref.shape, np.float32)
    tested.ravel()[idx[use]] = 1.0
    to_t1 = (lambda a: np.asarray(registration.to_t1(nib.Nifti1Image(a, ref.affine),
                                                     "nearest").dataobj))
    wanted = np.asarray(search, dtype=bool)
    keep = wanted & (to_t1(tested) >= 0.5)
    z = np.where(keep, to_t1(z_t), 0.0).astype(np.float32)
    controls = len([c for c in reference.controls if c != key])
    return z, {"AsymmetryControls": controls, "LeaveOneOut": key in reference.controls,
               "AsymmetryCoverage": round(float(keep.sum() / max(wanted.sum(), 1)), 4)}


#: Columns of ``*_desc-<analysis>Lobes_asymmetry.tsv``.
LOBE_COLUMNS = ("region", "asymmetry_index", "asymmetry_z", "asymmetric", "reference")
LOBE_COLUMN_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "region": {"Description": "Lobar region (its homologue is the same lobe of the other "
                              "hemisphere)"},
    "asymmetry_index": {"Description": "200 x (region - homologue) / (region + homologue) of "
                                       "the real PET's grey matter, mean over the region in "
                                       "template space", "Units": "%"},
    "asymmetry_z": {"Description": "Asymmetry index against healthy controls (Z; n/a without "
                                   "controls)"},
    "asymmetric": {"Description": f"asymmetry_z <= {ASYMMETRY_Z:g}, or without controls "
                                  f"asymmetry_index <= {FIXED_AI:g} %"},
    "reference": {"Description": "controls (n) or fixed cut-off"},
}


def lobe_table(ai: np.ndarray, both: np.ndarray, reference: AsymmetryReference | None,
               key: str) -> "pd.DataFrame":
    """Asymmetry of every lobar region of a subject (:data:`LOBE_COLUMNS`)."""
    import pandas as pd

    n_ctrl = len([c for c in reference.controls if c != key]) if reference is not None else 0
    label = f"controls ({n_ctrl})" if reference is not None else \
        f"fixed cut-off {FIXED_AI:g} %"
    rows = []
    for region, voxels in lobe_voxels().items():
        value, z = region_asymmetry(ai, both, voxels, reference, key)
        rows.append({"region": region, "asymmetry_index": value, "asymmetry_z": z,
                     "asymmetric": is_asymmetric(value, z), "reference": label})
    return pd.DataFrame(rows, columns=list(LOBE_COLUMNS))
