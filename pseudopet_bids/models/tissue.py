"""Non-learned tissue-model baseline (``--model tissue``).

A pseudo-normal FDG PET built from the subject's own tissue maps and fitted robustly to the
subject's own PET. It is the honest fallback when no trained translation model exists and the
baseline that the learned models (CycleGAN, SynDiff) must beat.

Model
-----
Inside the brain mask the PET is modelled as tissue uptake blurred by the scanner resolution::

    PET(x) ≈ [PSF ∗ (Σ_r g_r · GM · 1[r]  +  w · WM  +  c · CSF)](x)

* ``GM``, ``WM``, ``CSF`` are the subject's tissue probability maps (zero outside the brain mask).
* ``PSF`` is an isotropic Gaussian of ``pet_fwhm_mm`` (default 6 mm) FWHM; convolving the tissue
  maps models partial-volume spill between tissues, so thin cortex reads lower than deep GM.
* ``g_r`` is one grey-matter uptake per coarse compartment ``r``: the 8 lobar regions of
  :data:`pseudopet_bids.resources.REGIONS`, deep grey nuclei (caudate, putamen, pallidum,
  thalamus), mesial temporal (hippocampus, parahippocampal gyrus, amygdala), cerebellum (with
  vermis) and ``other`` (insula, cingulate, GM outside the atlas). Compartments come from the AAL
  atlas warped to the T1w grid; unlabelled GM takes the nearest AAL label within a few mm. Without
  an atlas there is one global GM uptake. ``symmetric=True`` shares each left/right pair.
* ``w`` and ``c`` are the WM and CSF uptakes. All coefficients are constrained to be ≥ 0.

Fit
---
The model is linear in its coefficients, so each column of the design matrix is one blurred
tissue map. It is fitted by iteratively reweighted non-negative least squares: a Huber stage
(convex, so it converges from the least-squares start) followed by Tukey's biweight (redescending,
so gross outliers get weight 0), with the residual scale re-estimated each iteration as the MAD.
*Why robust:* the epileptogenic hypometabolism is a small fraction of the GM, and a least-squares
fit would pull the coefficients of its compartment down and so hide part of the very deficit we
look for; the biweight treats those voxels as outliers. The fit uses a deterministic 3D stride
subsample of the brain voxels (about ``max_samples``), and the prediction is computed on all voxels.

Limitations
-----------
A hypometabolism covering most of a compartment is absorbed by that compartment's coefficient
(use ``symmetric=True`` to keep unilateral lobar deficits visible). The model knows nothing about
normal regional patterns inside a compartment, or about uptake outside the brain mask spilling in.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.linalg import cho_factor, solve_triangular
from scipy.optimize import nnls

from pseudopet_bids.resources import AAL_GROUPS, LOBE_LABELS, REGIONS, aal_names, lobe_of_aal

#: GM compartments of the asymmetric model, in coefficient order.
COMPARTMENTS: tuple[str, ...] = REGIONS + ("deep-gm", "mesial-temporal", "cerebellum", "other")
#: GM compartments of the symmetric model (left/right pairs share one coefficient).
SYMMETRIC_COMPARTMENTS: tuple[str, ...] = ("frontal", "temporal", "parietal", "occipital",
                                           "deep-gm", "mesial-temporal", "cerebellum", "other")

# Compartments named after resources.AAL_GROUPS (occipital stays a lobe here).
_AAL_GROUPS: dict[str, tuple[str, ...]] = {
    key.replace("_", "-"): AAL_GROUPS[key] for key in ("deep_gm", "mesial_temporal", "cerebellum")
}
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
GAUSS_TRUNCATE = 4.0  # Gaussian kernel radius in sigmas (scipy's default)
#: Brain voxels used for a fit (deterministic 3D stride subsample): enough for the few
#: compartment levels, and it bounds the IRLS cost on 1 mm volumes.
MAX_FIT_VOXELS = 250_000
_HUBER_K = 1.345  # 95 % efficiency under Gaussian noise
_TUKEY_C = 4.685  # 95 % efficiency under Gaussian noise


def _aal_lut(symmetric: bool, granularity: str = "compartment"
             ) -> tuple[np.ndarray, tuple[str, ...]]:
    """AAL value → compartment index, and the compartment names (last one ``other``).

    ``granularity="compartment"``: the coarse groups of :data:`COMPARTMENTS`;
    ``"aal"``: one compartment per AAL label (per left/right pair when ``symmetric``).
    """
    aal = aal_names()
    if granularity == "aal":
        def key(name: str) -> str:
            return name[:-2] if symmetric and name.endswith(("_L", "_R")) else name
        names = tuple(dict.fromkeys(key(n) for _, n in sorted(aal.items()))) + ("other",)
        lut = np.full(max(aal) + 1, len(names) - 1, dtype=np.int16)
        for value, name in aal.items():
            lut[value] = names.index(key(name))
        return lut, names
    if granularity != "compartment":
        raise ValueError(f"unknown granularity {granularity!r}; choose compartment or aal")
    names = SYMMETRIC_COMPARTMENTS if symmetric else COMPARTMENTS
    other = names.index("other")
    lobes = lobe_of_aal()
    lut = np.full(max(aal) + 1, other, dtype=np.int16)
    for value, name in aal.items():
        group = next((g for g, pre in _AAL_GROUPS.items() if name.startswith(pre)), None)
        if group is None:
            group = LOBE_LABELS[lobes[value]]
            if symmetric and group != "other":
                group = group.split("-", 1)[1]
        lut[value] = names.index(group)
    return lut, names


def compartment_map(aal_labels: np.ndarray, symmetric: bool = False,
                    fill_mask: np.ndarray | None = None,
                    voxel_sizes: tuple[float, float, float] = (1.0, 1.0, 1.0),
                    fill_mm: float = 5.0, granularity: str = "compartment"
                    ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Group AAL labels into the GM compartments of the tissue model.

    Parameters
    ----------
    aal_labels
        Integer AAL label map (values of :func:`pseudopet_bids.resources.aal_names`, 0 = none).
    symmetric
        Share one compartment per left/right pair.
    fill_mask
        Voxels (e.g. GM inside the brain) that, when unlabelled, take the compartment of the
        nearest labelled voxel within ``fill_mm`` (warped atlases miss the edges of the cortex).
    voxel_sizes
        Voxel sizes in mm, for the fill distance.
    fill_mm
        Largest fill distance; farther unlabelled voxels go to ``other``.
    granularity
        ``compartment`` (coarse groups) or ``aal`` (one compartment per AAL label or pair).

    Returns
    -------
    comp : numpy.ndarray
        int16 compartment index per voxel (unlabelled → ``other``).
    names : tuple of str
        Compartment names, indexed by ``comp``.
    """
    labels = np.rint(np.asarray(aal_labels)).astype(np.int64)
    lut, names = _aal_lut(symmetric, granularity)
    other = names.index("other")
    known = (labels > 0) & (labels < lut.size)
    comp = np.full(labels.shape, other, dtype=np.int16)
    comp[known] = lut[labels[known]]
    if fill_mask is not None and known.any():
        todo = (np.asarray(fill_mask) != 0) & ~known
        if todo.any():
            # Nearest labelled voxel (EDT of the unlabelled set), limited to fill_mm; distances
            # are computed for the voxels to fill only, to spare a full float64 volume.
            idx = ndimage.distance_transform_edt(~known, sampling=voxel_sizes,
                                                 return_distances=False, return_indices=True)
            pos = np.nonzero(todo)
            src = tuple(i[pos] for i in idx)
            del idx
            dist = np.sqrt(sum(((a - b) * v) ** 2 for a, b, v in zip(src, pos, voxel_sizes)))
            near = dist <= fill_mm
            comp[tuple(p[near] for p in pos)] = comp[tuple(s[near] for s in src)]
    return comp, names


def stride_sample(mask: np.ndarray, max_samples: int
                  ) -> tuple[tuple[np.ndarray, ...], int]:
    """A deterministic 3D stride subsample of the voxels of ``mask``: about ``max_samples``
    index arrays (as ``np.nonzero``) and the stride."""
    mask = np.asarray(mask) != 0
    stride = max(1, math.ceil((int(mask.sum()) / max(max_samples, 1)) ** (1 / 3)))
    sub = np.nonzero(mask[::stride, ::stride, ::stride])
    return tuple(s * stride for s in sub), stride


def mask_box(mask: np.ndarray, margin: tuple[int, ...] | int = 0) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``margin`` voxels per axis (clipped)."""
    nz = np.nonzero(mask)
    margins = (margin,) * mask.ndim if isinstance(margin, int) else margin
    return tuple(slice(max(int(i.min()) - r, 0), min(int(i.max()) + r + 1, n))
                 for i, r, n in zip(nz, margins, mask.shape))


def _wnnls(x: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Weighted non-negative least squares via the p×p normal equations (n ≫ p)."""
    xw = x if w is None else x * w[:, None]
    gram = xw.T @ x
    rhs = xw.T @ y
    # Jitter keeps the Cholesky factor defined when a column is (nearly) collinear or unweighted.
    gram[np.diag_indices_from(gram)] += 1e-10 * max(np.trace(gram) / len(gram), 1e-30)
    chol, _ = cho_factor(gram, lower=True)
    lower = np.tril(chol)
    # ||L^T b - L^{-1} rhs||² = bᵀ G b - 2 bᵀ rhs + const, the weighted LS objective.
    beta, _ = nnls(lower.T, solve_triangular(lower, rhs, lower=True))
    return beta


def _mad_scale(r: np.ndarray, floor: float) -> float:
    return max(1.4826 * float(np.median(np.abs(r - np.median(r)))), floor)


def irls_nnls(x: np.ndarray, y: np.ndarray, loss: str = "tukey", max_iter: int = 100,
              tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray, dict]:
    """Robust non-negative linear regression by iteratively reweighted least squares.

    Parameters
    ----------
    x
        Design matrix, shape (n, p).
    y
        Observations, shape (n,).
    loss
        ``tukey`` (Huber stage, then Tukey biweight c = 4.685), ``huber`` (k = 1.345) or ``ols``
        (plain non-negative least squares, no reweighting).
    max_iter
        Largest number of reweighting iterations (all stages together).
    tol
        Stop a stage when no coefficient moves by more than ``tol`` × the largest coefficient.

    Returns
    -------
    beta : numpy.ndarray
        Coefficients (≥ 0), shape (p,).
    weights : numpy.ndarray
        Final observation weights in [0, 1].
    info : dict
        ``iterations``, ``converged``, ``scale`` (MAD of the final residuals).
    """
    if loss not in ("tukey", "huber", "ols"):
        raise ValueError(f"unknown loss {loss!r}; choose tukey, huber or ols")
    # Scale columns to unit norm so the normal equations are well conditioned.
    norms = np.linalg.norm(x, axis=0)
    norms[norms == 0] = 1.0
    xs = x / norms
    floor = 1e-9 * max(float(np.median(np.abs(y))), 1e-30)
    beta = _wnnls(xs, y, None)
    weights = np.ones_like(y)
    iterations, converged = 0, True
    stages = {"ols": (), "huber": ("huber",), "tukey": ("huber", "tukey")}[loss]
    for stage in stages:
        converged = False
        while iterations < max_iter:
            iterations += 1
            u = (y - xs @ beta) / _mad_scale(y - xs @ beta, floor)
            if stage == "huber":
                weights = np.minimum(1.0, _HUBER_K / np.maximum(np.abs(u), 1e-12))
            else:
                weights = np.square(np.clip(1.0 - np.square(u / _TUKEY_C), 0.0, None))
            if np.count_nonzero(weights) <= x.shape[1]:
                break  # degenerate: keep the last estimate rather than fit on nothing
            new = _wnnls(xs, y, weights)
            step = float(np.max(np.abs(new - beta)))
            beta = new
            if step <= tol * max(float(np.max(np.abs(beta))), 1e-30):
                converged = True
                break
    scale = _mad_scale(y - xs @ beta, floor)
    return beta / norms, weights, {"iterations": iterations, "converged": converged,
                                   "scale": scale}


class TissueModel:
    """Pseudo-normal PET from tissue maps fitted robustly to the subject's PET.

    Parameters
    ----------
    pet_fwhm_mm
        FWHM of the isotropic Gaussian PSF in mm (0 = no blur).
    loss
        ``tukey`` (default), ``huber`` or ``ols``; see :func:`irls_nnls`.
    symmetric
        One GM coefficient per left/right pair of compartments.
    granularity
        ``compartment`` (12 coarse groups, 8 when symmetric) or ``aal`` (one GM uptake per AAL
        label, per left/right pair when symmetric: the normal regional pattern at gyral scale).
    max_samples
        Target number of brain voxels used for the fit (3D stride subsample).
    min_compartment_mm3
        Compartments with less GM volume than this are merged into ``other``.
    max_iter, tol
        IRLS controls, see :func:`irls_nnls`.
    """

    name = "tissue"

    def __init__(self, pet_fwhm_mm: float = 6.0, loss: str = "tukey", symmetric: bool = False,
                 max_samples: int = MAX_FIT_VOXELS, min_compartment_mm3: float = 500.0,
                 max_iter: int = 100, tol: float = 1e-6, granularity: str = "compartment"):
        if not pet_fwhm_mm >= 0:
            raise ValueError(f"pet_fwhm_mm must be >= 0, got {pet_fwhm_mm}")
        if loss not in ("tukey", "huber", "ols"):
            raise ValueError(f"unknown loss {loss!r}; choose tukey, huber or ols")
        self.pet_fwhm_mm = float(pet_fwhm_mm)
        self.loss = loss
        self.symmetric = symmetric
        self.granularity = granularity
        self.max_samples = int(max_samples)
        self.min_compartment_mm3 = float(min_compartment_mm3)
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    def predict(self, pet: np.ndarray, tissues: dict[str, np.ndarray], brain_mask: np.ndarray,
                voxel_sizes: tuple[float, float, float],
                aal_labels: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """Fit the model to ``pet`` and return the pseudo-normal PET.

        Parameters
        ----------
        pet
            Subject PET on the T1w grid (any units; normalized or not).
        tissues
            ``{"GM", "WM", "CSF"}`` probability maps on the same grid.
        brain_mask
            Brain mask (non-zero = brain); the fit and the prediction are restricted to it.
        voxel_sizes
            Voxel sizes in mm (for the PSF and compartment volumes).
        aal_labels
            Optional AAL label map on the same grid (integers of
            :func:`pseudopet_bids.resources.aal_names`); None = one global GM coefficient.

        Returns
        -------
        pseudo : numpy.ndarray
            float32 pseudo-normal PET in the units of ``pet``, 0 outside the brain mask.
        info : dict
            JSON-serialisable fit description for sidecars: ``Coefficients`` (per compartment,
            plus ``WM`` and ``CSF``), ``CompartmentGMVolume_mm3``, ``MergedIntoOther``,
            ``Iterations``, ``Converged``, ``FractionDownweighted`` (fit voxels with weight < 0.5),
            ``FractionRejected`` (weight 0), ``ResidualScale`` (PET units), ``FitVoxels``,
            ``SampleStride``, and the settings.
        """
        pet = np.asarray(pet)
        mask = np.asarray(brain_mask) != 0
        missing = {"GM", "WM", "CSF"} - set(tissues)
        if missing:
            raise ValueError(f"tissue maps missing: {sorted(missing)}")
        for name, arr in [("PET", pet), ("aal_labels", aal_labels),
                          *((k, tissues[k]) for k in ("GM", "WM", "CSF"))]:
            if arr is not None and np.shape(arr) != mask.shape:
                raise ValueError(f"{name} shape {np.shape(arr)} differs from brain mask shape "
                                 f"{mask.shape}")
        if len(voxel_sizes) != 3 or not all(v > 0 for v in voxel_sizes):
            raise ValueError(f"voxel_sizes must be three positive numbers, got {voxel_sizes}")
        if not mask.any():
            raise ValueError("tissue model: the brain mask is empty")
        voxel_sizes = tuple(float(v) for v in voxel_sizes)
        sigma = tuple(self.pet_fwhm_mm * FWHM_TO_SIGMA / v for v in voxel_sizes)

        # Work in the mask's bounding box plus the kernel radius: identical result, less work.
        box = mask_box(mask, tuple(math.ceil(GAUSS_TRUNCATE * s) + 1 for s in sigma))
        m = mask[box]
        pet_c = np.where(m, pet[box], 0).astype(np.float32)
        if not np.all(np.isfinite(pet_c)):
            raise ValueError("tissue model: non-finite PET values inside the brain mask")
        tis = {k: np.where(m, np.asarray(tissues[k])[box], 0).astype(np.float32)
               for k in ("GM", "WM", "CSF")}

        if aal_labels is None:
            comp, names = np.zeros(m.shape, dtype=np.int8), ("GM",)
        else:
            comp, names = compartment_map(np.asarray(aal_labels)[box], self.symmetric,
                                          fill_mask=m & (tis["GM"] > 0), voxel_sizes=voxel_sizes,
                                          granularity=self.granularity)
        voxel_mm3 = float(np.prod(voxel_sizes))
        gm_volume = np.bincount(comp.ravel(), weights=tis["GM"].ravel(),
                                minlength=len(names)) * voxel_mm3
        merged = [n for i, n in enumerate(names)
                  if n not in ("GM", "other") and 0 < gm_volume[i] < self.min_compartment_mm3]
        if merged:
            other = names.index("other")
            for n in merged:
                comp[comp == names.index(n)] = other
            gm_volume[other] += sum(gm_volume[names.index(n)] for n in merged)
            for n in merged:
                gm_volume[names.index(n)] = 0.0
        fitted = [i for i in range(len(names)) if gm_volume[i] > 0]

        sample, stride = stride_sample(m, self.max_samples)
        y = pet_c[sample].astype(np.float64)

        def blur(vol: np.ndarray) -> np.ndarray:
            if self.pet_fwhm_mm == 0:
                return vol
            return ndimage.gaussian_filter(vol, sigma, mode="constant", truncate=GAUSS_TRUNCATE)

        columns = [f"gm:{names[i]}" for i in fitted] + ["WM", "CSF"]
        x = np.zeros((y.size, len(columns)), dtype=np.float64)
        # Each GM column is blurred only over its compartment's box plus the kernel radius (exact,
        # since the column is zero elsewhere): a lobe is a fraction of the brain.
        radius = [math.ceil(GAUSS_TRUNCATE * s) + 1 for s in sigma]
        boxes = ndimage.find_objects(np.where(tis["GM"] > 0, comp + 1, 0).astype(np.int16))
        for j, i in enumerate(fitted):
            if i >= len(boxes) or boxes[i] is None:
                continue
            sub_box = tuple(slice(max(b.start - r, 0), min(b.stop + r, n))
                            for b, r, n in zip(boxes[i], radius, m.shape))
            column = blur(np.where(comp[sub_box] == i, tis["GM"][sub_box], 0).astype(np.float32))
            inside = np.all([(s >= b.start) & (s < b.stop) for s, b in zip(sample, sub_box)],
                            axis=0)
            x[inside, j] = column[tuple(s[inside] - b.start for s, b in zip(sample, sub_box))]
        x[:, -2] = blur(tis["WM"])[sample]
        x[:, -1] = blur(tis["CSF"])[sample]
        keep = np.flatnonzero(np.any(x != 0, axis=0))  # a tissue absent from the mask is unfit
        beta = np.zeros(len(columns))
        b, weights, fit = irls_nnls(x[:, keep], y, self.loss, self.max_iter, self.tol)
        beta[keep] = b

        # The model is linear, so the prediction needs only one blur of the weighted tissue sum.
        g = np.zeros(len(names), dtype=np.float32)
        g[fitted] = beta[:len(fitted)]
        uptake = g[comp] * tis["GM"] + np.float32(beta[-2]) * tis["WM"] \
            + np.float32(beta[-1]) * tis["CSF"]
        pseudo = np.zeros(mask.shape, dtype=np.float32)
        pseudo[box] = np.where(m, blur(uptake), 0)

        coefficients = {names[i]: (float(g[i]) if i in fitted else None)
                        for i in range(len(names))}
        coefficients.update(WM=float(beta[-2]), CSF=float(beta[-1]))
        info = {
            "Model": self.name,
            "PSFFWHM_mm": self.pet_fwhm_mm,
            "Loss": self.loss,
            "Symmetric": bool(self.symmetric),
            "Granularity": self.granularity,
            "Coefficients": coefficients,
            "CompartmentGMVolume_mm3": {n: float(v) for n, v in zip(names, gm_volume)},
            "MergedIntoOther": merged,
            "Iterations": int(fit["iterations"]),
            "Converged": bool(fit["converged"]),
            "FractionDownweighted": float(np.mean(weights < 0.5)),
            "FractionRejected": float(np.mean(weights == 0)),
            "ResidualScale": float(fit["scale"]),
            "FitVoxels": int(y.size),
            "SampleStride": int(stride),
        }
        return pseudo, info
