"""Healthy-control normative model of the residual ``D`` (``--z-reference controls``).

The paper's rule standardises ``D = real − pseudo`` over the subject's own grey matter, so about
5 % of every brain's grey matter falls below Z = −1.65 — healthy controls included. The normative
alternative asks instead how unusual ``D`` is *at this voxel* compared with healthy controls:

1. for every control, ``D`` (normalised PET units) minus its grey-matter median (so a global
   offset left by intensity normalisation does not count as hypometabolism) is resampled to a
   2 mm template grid with the transforms the participant level already computed;
2. the voxel-wise sum, sum of squares and count over the controls are stored (``models/
   normative-<model>/normative.safetensors`` with its card ``normative.json``);
3. for a new subject, its centred residual is brought to the same grid the same way and compared
   with the controls as a single case against a small sample (:func:`normative_z`: prediction
   t with ``n − 1`` degrees of freedom, mapped to Z); the Z-map is brought back to the T1w grid.
   The standard deviation is smoothed (few controls give a noisy map) and floored. A control
   that is itself part of the model is scored leave-one-out, from the stored sums minus its own
   residual, so its Z is an honest estimate of the false-positive behaviour.

Pure functions on arrays; reading and writing the folder is in :func:`save` and :func:`load`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from pseudopet_bids import resources
from pseudopet_bids.errors import DataError
from pseudopet_bids.io.files import atomic_write_bytes, atomic_write_text
from pseudopet_bids.preproc.registration import Registration

NORMATIVE_FILE = "normative.safetensors"
NORMATIVE_CARD = "normative.json"
#: Fewer controls than this at a voxel: no normative Z there (Z = 0, the voxel is not tested).
MIN_CONTROLS = 3
#: Smoothing of the variance map (FWHM, mm) and floor of the SD (fraction of its median).
SD_FWHM_MM = 8.0
SD_FLOOR = 0.25
GRID_MM = 2.0


def folder_name(model_label: str) -> str:
    """``normative-<model label>``: where the normative model of a synthesis model lives."""
    return f"normative-{model_label}"


def normative_gm(gm_prob: np.ndarray, brain: np.ndarray, gm_threshold: float) -> np.ndarray:
    """Grey matter over which residuals are centred and pooled: all GM (probability ≥
    ``gm_threshold``) in the brain mask, whatever the search region of the detection."""
    return (np.asarray(gm_prob) >= gm_threshold) & (np.asarray(brain) > 0)


def centred_residual(diff: np.ndarray, gm: np.ndarray) -> np.ndarray:
    """``D − median_GM(D)`` (float32); the reference both for building and for scoring."""
    gm = np.asarray(gm, dtype=bool)
    if not gm.any():
        raise DataError("normative model: no grey matter to centre the residual on",
                        role="t1w", fix="lower --gm-threshold, and check the grey-matter "
                                        "segmentation of the T1w (label-GM_probseg)")
    return (np.asarray(diff, dtype=np.float32) - np.float32(np.median(diff[gm])))


@dataclass
class NormativeStats:
    """Voxel-wise sums of the centred residuals of healthy controls on a template grid.

    Attributes
    ----------
    total, total_sq
        float64 sums of the residual and of its square.
    count
        int32 number of controls with a valid (grey-matter) value at each voxel.
    affine
        Template-grid affine (RAS mm).
    controls
        Keys (``sub-L[_ses-S]``) of the controls in the sums, in order.
    """

    total: np.ndarray
    total_sq: np.ndarray
    count: np.ndarray
    affine: np.ndarray
    controls: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, shape: tuple[int, int, int], affine: np.ndarray) -> "NormativeStats":
        return cls(np.zeros(shape), np.zeros(shape), np.zeros(shape, np.int32),
                   np.asarray(affine, dtype=np.float64), [])

    def add(self, key: str, residual: np.ndarray, valid: np.ndarray) -> None:
        """Add one control's template-space residual (``valid``: where it is defined)."""
        if key in self.controls:
            raise ValueError(f"normative model: {key} added twice")
        valid = np.asarray(valid, dtype=bool) & np.isfinite(residual)
        r = np.where(valid, residual, 0.0).astype(np.float64)
        self.total += r
        self.total_sq += r * r
        self.count += valid.astype(np.int32)
        self.controls.append(key)

    def mean_sd(self, leave_out: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mean, smoothed and floored SD (float32), validity mask and number of controls per
        voxel, on the template grid.

        Parameters
        ----------
        leave_out
            ``(residual, valid)`` of one control of the model to exclude (leave-one-out).
        """
        total, total_sq, count = self.total, self.total_sq, self.count.astype(np.float64)
        if leave_out is not None:
            res, valid = leave_out
            valid = np.asarray(valid, dtype=bool) & np.isfinite(res)
            r = np.where(valid, res, 0.0)
            total, total_sq, count = total - r, total_sq - r * r, count - valid
        ok = count >= MIN_CONTROLS
        n = np.where(ok, count, 1.0)
        mean = np.where(ok, total / n, 0.0)
        var = np.where(ok, np.maximum(total_sq - n * mean * mean, 0.0) / np.maximum(n - 1, 1),
                       0.0)
        var = smooth_within(var, ok, SD_FWHM_MM / GRID_MM)
        sd = np.sqrt(var)
        if ok.any():
            floor = SD_FLOOR * float(np.median(sd[ok]))
            sd = np.maximum(sd, max(floor, 1e-6))
        return (mean.astype(np.float32), np.where(ok, sd, 0.0).astype(np.float32), ok,
                np.where(ok, count, 0).astype(np.int32))


def smooth_within(values: np.ndarray, mask: np.ndarray,
                  fwhm_vox: float | Sequence[float]) -> np.ndarray:
    """Gaussian smoothing restricted to ``mask`` (normalised convolution: values outside the
    mask do not leak in), 0 outside; ``fwhm_vox`` in voxels, one value or one per axis."""
    fwhm = np.asarray(fwhm_vox, dtype=np.float64)
    if not (fwhm > 0).any() or not mask.any():
        return values
    sigma = fwhm / np.sqrt(8 * np.log(2))
    num = ndimage.gaussian_filter(np.where(mask, values, 0.0), sigma)
    den = ndimage.gaussian_filter(mask.astype(np.float64), sigma)
    return np.where(mask, num / np.maximum(den, 1e-12), 0.0)


def normative_z(residual: np.ndarray, valid: np.ndarray, mean: np.ndarray, sd: np.ndarray,
                n: np.ndarray, smoothed_sd: bool = False) -> np.ndarray:
    """Z of a residual against controls, as a single case against a small control sample.

    ``t = (r − mean) / (sd · √(1 + 1/n))`` is Student-t with ``n − 1`` degrees of freedom for a
    new healthy subject (Crawford & Howell 1998); it is mapped to the standard-normal Z with the
    same tail probability, so that Z < −1.65 keeps meaning one-sided p < 0.05 with 5 or 50
    controls. With ``smoothed_sd`` the SD pools many neighbouring voxels and is no longer a
    noisy n-sample estimate: ``t`` is then taken as normal (the t tails made Z too narrow,
    SD 0.90 in simulated controls). float32, 0 where not ``valid`` or where fewer than 2
    controls (or ``sd`` = 0).
    """
    from scipy import stats as st

    use = np.asarray(valid, bool) & (np.asarray(sd) > 0) & (np.asarray(n) >= 2)
    z = np.zeros(np.shape(residual), dtype=np.float32)
    nn = np.asarray(n, np.float64)[use]
    t = (np.asarray(residual, np.float64)[use] - mean[use]) / (sd[use] * np.sqrt(1 + 1 / nn))
    if smoothed_sd:
        z[use] = t.astype(np.float32)
        return z
    tail = st.t.sf(np.abs(t), df=nn - 1)
    z[use] = (np.sign(t) * st.norm.isf(tail)).astype(np.float32)
    return z


def grid_reference() -> nib.Nifti1Image:
    """Empty image on the 2 mm template grid of the normative sums (RAS)."""
    ref = resources.load_template("mask")
    step = int(round(GRID_MM / float(abs(ref.affine[0, 0]))))
    affine = ref.affine.copy()
    affine[:3, :3] *= step
    shape = tuple(int(np.ceil(n / step)) for n in ref.shape[:3])
    return nib.Nifti1Image(np.zeros(shape, np.float32), affine)


def residual_to_template(residual: np.ndarray, gm: np.ndarray, registration: Registration
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Resample a centred residual (defined in ``gm``) to :func:`grid_reference`.

    Normalised interpolation: ``warp(residual * gm) / warp(gm)`` where at least half of the
    interpolated neighbourhood is grey matter, so non-GM values never leak into the sums.
    ``registration`` is e.g. a :class:`~pseudopet_bids.preproc.template_reg.TemplateRegistration`.
    """
    gm = np.asarray(gm, dtype=bool)
    affine = registration.t1_affine
    ref = grid_reference()
    num_img = registration.to_template(nib.Nifti1Image(np.where(gm, residual, 0.0)
                                                       .astype(np.float32), affine), "linear", ref)
    den_img = registration.to_template(nib.Nifti1Image(gm.astype(np.float32), affine), "linear",
                                       ref)
    num, den = np.asarray(num_img.dataobj), np.asarray(den_img.dataobj)
    valid = den >= 0.5
    return np.where(valid, num / np.maximum(den, 1e-6), 0.0).astype(np.float32), valid


def zmap_against_controls(diff: np.ndarray, gm: np.ndarray, search: np.ndarray,
                          registration: Registration, stats: NormativeStats, key: str
                          ) -> tuple[np.ndarray, dict[str, Any]]:
    """Normative Z-map of one subject on its T1w grid (see the module docstring).

    Parameters
    ----------
    diff
        ``D`` in normalised PET units on the T1w grid.
    gm
        :func:`normative_gm` of the subject (centring and template pooling, as in the build).
    search
        Voxels where Z is wanted (the detection mask, a subset of ``gm``).
    registration
        The subject's :class:`~pseudopet_bids.preproc.template_reg.TemplateRegistration`.
    stats
        The normative sums; ``key`` (``sub-L[_ses-S]``) in ``stats.controls`` → leave-one-out.

    Returns
    -------
    tuple
        The Z-map (0 outside ``search`` and where fewer than :data:`MIN_CONTROLS` controls
        cover the voxel) and a small dict for the sidecars.
    """
    gm = np.asarray(gm, dtype=bool)
    residual = centred_residual(diff, gm)
    # scored on the template grid, where the controls' residuals were pooled: the resampling
    # smooths a residual, and comparing an unsmoothed one with their spread inflated |Z|
    # (SD of Z 1.24 instead of 1 in simulated controls)
    res_t, valid_t = residual_to_template(residual, gm, registration)
    leave_out = (res_t, valid_t) if key in stats.controls else None
    mean, sd, ok, n = stats.mean_sd(leave_out)
    z_t = normative_z(res_t, valid_t & ok, mean, sd, n, smoothed_sd=SD_FWHM_MM > 0)
    # nearest neighbour back to the T1w grid: interpolating Z would average neighbouring
    # template voxels and shrink its spread (SD 0.76 instead of 1 in simulated controls)
    to_t1 = (lambda a: np.asarray(registration.to_t1(
        nib.Nifti1Image(np.asarray(a, np.float32), stats.affine), "nearest").dataobj))
    wanted = np.asarray(search, dtype=bool)
    search = wanted & (to_t1(valid_t & ok) >= 0.5)
    z = np.where(search, to_t1(z_t), 0.0).astype(np.float32)
    info = {"NormativeControls": len(stats.controls) - (leave_out is not None),
            "LeaveOneOut": leave_out is not None,
            "NormativeCoverage": round(float(search.sum() / max(wanted.sum(), 1)), 4)}
    return z, info


def save(folder: Path, stats: NormativeStats, card: dict[str, Any]) -> dict[str, Any]:
    """Write ``normative.safetensors`` then ``normative.json`` (with the file's sha256).

    The card is written last (atomically), so a folder with a card always has its sums.
    """
    from safetensors.numpy import save as st_save

    folder = Path(folder)
    blob = st_save({"total": stats.total, "total_sq": stats.total_sq, "count": stats.count,
                    "affine": stats.affine})
    atomic_write_bytes(folder / NORMATIVE_FILE, blob)
    card = {**card, "format_version": 1, "controls": list(stats.controls),
            "n_controls": len(stats.controls), "grid_mm": GRID_MM,
            "min_controls_per_voxel": MIN_CONTROLS, "sd_fwhm_mm": SD_FWHM_MM,
            "sd_floor_fraction_of_median": SD_FLOOR,
            "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_text(folder / NORMATIVE_CARD, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return card


def load(folder: Path) -> tuple[NormativeStats, dict[str, Any]]:
    """Read a normative model written by :func:`save`, checking its sha256.

    Raises
    ------
    FileNotFoundError
        No card in ``folder``.
    ValueError
        The sums do not match the card (corrupt or replaced file).
    """
    from safetensors.numpy import load as st_load

    folder = Path(folder)
    card_path = folder / NORMATIVE_CARD
    if not card_path.exists():
        raise FileNotFoundError(card_path)
    card = json.loads(card_path.read_text())
    blob = (folder / NORMATIVE_FILE).read_bytes()
    if hashlib.sha256(blob).hexdigest() != card.get("sha256"):
        raise ValueError(f"{folder / NORMATIVE_FILE} does not match the sha256 in its card")
    arrays = st_load(blob)
    stats = NormativeStats(arrays["total"], arrays["total_sq"], arrays["count"],
                           arrays["affine"], list(card.get("controls", [])))
    return stats, card


# --------------------------------------------------------------------------- cluster evidence
CALIBRATION_FILE = "calibration.json"
ASYMMETRY_FILE = "asymmetry.safetensors"


def save_evidence(folder: Path, nulls: dict[str, Any], asymmetry_ref: Any | None
                  ) -> dict[str, str]:
    """Write the controls' cluster calibration (``calibration.json``: rule name →
    :class:`~pseudopet_bids.detect.calibration.ClusterNull`) and asymmetry maps
    (``asymmetry.safetensors``); returns file name → sha256, for the card (written after)."""
    from safetensors.numpy import save as st_save

    folder = Path(folder)
    text = json.dumps({"format_version": 1,
                       "rules": {name: null.to_dict() for name, null in sorted(nulls.items())}},
                      indent=1, sort_keys=True) + "\n"
    atomic_write_text(folder / CALIBRATION_FILE, text)
    digests = {CALIBRATION_FILE: hashlib.sha256(text.encode()).hexdigest()}
    if asymmetry_ref is not None:
        blob = st_save({"index": asymmetry_ref.index.astype(np.int64),
                        "maps": asymmetry_ref.maps.astype(np.float32)},
                       metadata={"controls": json.dumps(asymmetry_ref.controls)})
        atomic_write_bytes(folder / ASYMMETRY_FILE, blob)
        digests[ASYMMETRY_FILE] = hashlib.sha256(blob).hexdigest()
    return digests


def load_evidence(folder: Path, card: dict[str, Any]) -> tuple[dict[str, Any], Any | None]:
    """Read what :func:`save_evidence` wrote, checking the digests in the card.

    Returns ``(rule name → ClusterNull, AsymmetryReference or None)``; both empty/None for a
    normative model built before they existed.

    Raises
    ------
    ValueError
        A file does not match the digest in the card.
    """
    from safetensors import safe_open
    from safetensors.numpy import load as st_load

    from pseudopet_bids.detect.asymmetry import AsymmetryReference
    from pseudopet_bids.detect.calibration import ClusterNull

    folder = Path(folder)
    digests = card.get("evidence_sha256", {})
    nulls: dict[str, Any] = {}
    reference = None
    for name, digest in digests.items():
        blob = (folder / name).read_bytes()
        if hashlib.sha256(blob).hexdigest() != digest:
            raise ValueError(f"{folder / name} does not match the sha256 in its card")
        if name == CALIBRATION_FILE:
            data = json.loads(blob)
            nulls = {rule: ClusterNull.from_dict(d) for rule, d in data["rules"].items()}
        elif name == ASYMMETRY_FILE:
            arrays = st_load(blob)
            with safe_open(str(folder / name), framework="numpy") as handle:
                controls = json.loads((handle.metadata() or {}).get("controls", "[]"))
            reference = AsymmetryReference(arrays["index"], arrays["maps"], controls)
    return nulls, reference
