"""Synthetic heads and FDG PET built from the MNI152 template (pure array functions, no I/O).

Head model (template space, cached per resolution)
    Brain: the template GM / WM probabilities; the cranial cavity is the brain mask closed by a
    5 mm Gaussian (sulcal and surface CSF) plus a 1.5 mm CSF rim. Around it a skull (inner
    table, fatty marrow, outer table) and a scalp (skin, subcutaneous fat, galea/muscle),
    both laid out by distance maps; a neck, a face with two eyes, and the spinal canal with the
    cord below the brainstem.
T1w contrast (MPRAGE-like, WM = 1)
    GM 0.58–0.68, CSF 0.15–0.25, bone 0.06, marrow 0.55, fat 1.05–1.25, skin 0.65, muscle 0.45,
    air 0 (Rician noise in the background, as in magnitude images).
FDG PET (Bq/mL, before the 6 mm PSF)
    GM = base × regional factor × smooth jitter × (1 − lesion); the regional factor is the Della
    Rosa et al. FDG template's GM pattern (deep nuclei boosted, cerebellum damped by AAL groups);
    deep nuclei count as GM whatever their T1 probability; WM = 0.30–0.40 × base; CSF = 0.05 ×
    base; scalp and muscles 0.03–0.10 × base. ``base`` (10–18.5 kBq/mL; GM voxels of the
    blurred image then read 8–15 kBq/mL) follows the injected dose.
Uptake patterns (``pattern``)
    ``regional`` (default): the template's pattern made left/right symmetric, with its
    variation inside each AAL region shrunk and bounded (what a per-region tissue fit can
    absorb). ``template``: the template's pattern as it is, unsymmetrised and unbounded (its
    real asymmetries and within-region variation, which a per-region fit cannot absorb).
Difficulty ladder (:func:`draw_ladder_lesion`, :func:`draw_variation`)
    Foci of 8–35 % depth and 2–40 cm³, placed as in surgical series (mesial temporal most
    often), some spanning two lobes; every subject gets benign left/right asymmetries of a few
    percent per lobe and its own deep-nuclei, cerebellar and global uptake.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources as ilr

import nibabel as nib
import numpy as np
from scipy import ndimage

from pseudopet_bids import resources
from pseudopet_bids.simulate.geometry import Grid, SubjectWarp, apply_affine, pull, rotation_matrix

#: Extent of the template-space head model (mm): the template box grown to hold scalp and neck.
MODEL_BOUNDS: tuple[tuple[float, float], ...] = ((-100.0, 100.0), (-136.0, 104.0), (-160.0, 112.0))
PSF_FWHM_MM = 6.0
SHARPEN_GAMMA = 3.0             # tissue-map sharpening (see sharpen_tissues)
WITHIN_REGION_WEIGHT = 0.4      # share of the template's within-region FDG variation kept
WITHIN_REGION_LIMIT = 0.08      # largest within-region deviation kept (fraction of the mean)
CAVITY_MARGIN_MM = 1.5          # CSF rim between the closed brain envelope and the skull
HEAD_SHELL_MM = 13.0            # skull + scalp, measured from the cavity surface
DEEP_GM_GAIN = 0.45             # regional FDG corrections of the template pattern (see below)
CEREBELLUM_GAIN = -0.28
#: Uptake patterns of the normal brain (module doc).
PATTERNS: tuple[str, ...] = ("regional", "template")
#: Focus locations of the ladder and their weights: roughly as in epilepsy surgery series
#: (temporal foci about two thirds, mesial temporal the most frequent; Blümcke et al. 2017).
LADDER_LOCATIONS: dict[str, float] = {"mesial temporal": 0.45, "lateral temporal": 0.20,
                                      "frontal": 0.20, "parietal": 0.08, "occipital": 0.07}
LADDER_DEPTH = (0.08, 0.35)           # fractional GM uptake reduction at the focus core
LADDER_VOLUME_MM3 = (2000.0, 40000.0)  # focus (ellipsoid) volume, drawn log-uniform
LADDER_MULTILOBAR = 0.15              # share of foci that extend into a neighbouring lobe
BENIGN_ASYMMETRY_SD = 0.02            # per-lobe left/right uptake difference (fraction), SD
BENIGN_ASYMMETRY_MAX = 0.05
#: The simulator always uses the packaged template and atlas, so that a cohort does not depend
#: on what the machine's TemplateFlow home holds (same arguments, same files).
PACKAGED = "packaged"
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_PATCH = tuple[tuple[slice, slice, slice], np.ndarray]


@dataclass(frozen=True)
class Level:
    """Template-space head maps on one grid (see module doc)."""

    grid: Grid
    gm: np.ndarray
    wm: np.ndarray
    cavity_depth: np.ndarray     # signed mm to the closed brain envelope (< 0 inside)
    skin_depth: np.ndarray       # mm below the skin (0 in air)
    territory: np.ndarray        # int8 lobe territory (LOBE_LABELS values, 0 outside the brain)
    patches: dict[str, _PATCH]   # eyes, vertebra, canal, cord: small weight patches


@dataclass(frozen=True)
class HeadModel:
    """The head at the T1 resolution (``fine``) and at 2 mm for PET and lesion placement.

    ``uptake`` (regional GM FDG factor, mean 1 over GM), ``lobes`` (AAL lobe labels) and ``depth`` (mm to another lobe's
    territory) live on the coarse grid.
    """

    fine: Level
    coarse: Level
    uptake: np.ndarray
    lobes: np.ndarray
    depth: np.ndarray
    #: smoothed AAL group masks on the coarse grid (deep_gm, cerebellum, mesial_temporal)
    groups: dict[str, np.ndarray] = field(default_factory=dict)


def _model_grid(res: float) -> Grid:
    shape = tuple(int(round((hi - lo) / res)) + 1 for lo, hi in MODEL_BOUNDS)
    affine = np.diag([res, res, res, 1.0])
    affine[:3, 3] = [lo for lo, _ in MODEL_BOUNDS]
    return Grid(shape, affine)


def _onto(data: np.ndarray, affine: np.ndarray, grid: Grid, order: int = 1) -> np.ndarray:
    """Resample an array given with its affine onto ``grid`` (anti-aliased when coarsening)."""
    data = np.asarray(data, dtype=np.float32)
    src_vox = np.sqrt((affine[:3, :3] ** 2).sum(0))
    ratio = grid.voxel_mm / src_vox
    if order > 0 and np.any(ratio > 1.01):
        data = ndimage.gaussian_filter(data, 0.42 * np.maximum(ratio - 1.0, 0.0) + 1e-6)
    m = np.linalg.inv(affine) @ grid.affine
    shift = np.rint(m[:3, 3]).astype(int)
    if np.allclose(m[:3, :3], np.eye(3)) and np.allclose(m[:3, 3], shift):
        return _shifted(data, shift, grid.shape)  # same voxels, other box: exact and fast
    return ndimage.affine_transform(data, m[:3, :3], m[:3, 3], output_shape=grid.shape,
                                    order=order, mode="constant", cval=0.0, prefilter=False)


def _shifted(data: np.ndarray, shift: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``out[i] = data[i + shift]`` (zero where out of range)."""
    out = np.zeros(shape, dtype=np.float32)
    dst, src = [], []
    for n_out, n_in, k in zip(shape, data.shape, shift):
        lo, hi = max(0, -k), min(n_out, n_in - k)
        dst.append(slice(lo, max(lo, hi)))
        src.append(slice(lo + k, max(lo, hi) + k))
    out[tuple(dst)] = data[tuple(src)]
    return out


def _upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear corner-aligned upsampling (both grids span the same box)."""
    import torch
    import torch.nn.functional as F

    if coarse.shape == tuple(shape):
        return coarse.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()


def _world_axes(grid: Grid) -> list[np.ndarray]:
    """Broadcastable world x, y, z of an axis-aligned RAS grid."""
    out = []
    for a in range(3):
        v = grid.affine[a, 3] + grid.affine[a, a] * np.arange(grid.shape[a], dtype=np.float32)
        out.append(v.reshape([-1 if i == a else 1 for i in range(3)]))
    return out


def _patch(grid: Grid, lo_mm, hi_mm, fn) -> _PATCH:
    """Evaluate ``fn(x, y, z)`` (broadcast world mm) on the sub-box [lo, hi] mm of a RAS grid."""
    lo = np.floor(grid.to_voxel(np.array([lo_mm], dtype=float))[0]).astype(int).clip(0)
    hi = np.ceil(grid.to_voxel(np.array([hi_mm], dtype=float))[0]).astype(int) + 1
    hi = np.maximum(np.minimum(hi, grid.shape), lo)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    x, y, z = (
        (grid.affine[a, 3] + grid.affine[a, a] * np.arange(sl[a].start, sl[a].stop,
                                                           dtype=np.float32)).reshape(
            [-1 if i == a else 1 for i in range(3)])
        for a in range(3))
    shape = tuple(s.stop - s.start for s in sl)
    return sl, np.ascontiguousarray(np.broadcast_to(fn(x, y, z), shape), dtype=np.float32)


def _fdg_template() -> nib.Nifti1Image:
    ref = ilr.files("pseudopet_bids") / "data" / "dellarosa_fdg_template_100.nii.gz"
    with ilr.as_file(ref) as path:
        img = nib.load(path)
        return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)


def _shrink_within_regions(factor: np.ndarray, labels: np.ndarray, in_gm: np.ndarray,
                           weight: float) -> np.ndarray:
    """Keep each AAL region's mean factor and ``weight`` × the variation inside it.

    The template averages 50 controls with 50 dementia patients in another MNI space: its
    within-region dips (enlarged ventricles, atrophy, misalignment with our anatomy) are partly
    not normal metabolism, so only a fraction of them is kept, bounded by ``WITHIN_REGION_LIMIT``;
    region means are kept whole.
    """
    means = np.ones(int(labels.max()) + 1)
    sel = in_gm & (factor > 0)
    sums = np.bincount(labels[sel], weights=factor[sel], minlength=means.size)
    counts = np.bincount(labels[sel], minlength=means.size)
    means[counts > 0] = sums[counts > 0] / counts[counts > 0]
    region_mean = means[labels].astype(np.float32)
    # ... and at most WITHIN_REGION_LIMIT of it: normal cortex has no focal 20 % dips
    deviation = np.clip(weight * (factor - region_mean), -WITHIN_REGION_LIMIT * region_mean,
                        WITHIN_REGION_LIMIT * region_mean)
    return np.where(factor > 0, region_mean + deviation, factor)


def _regional_factor(grid: Grid, gm: np.ndarray, wm: np.ndarray, deep: np.ndarray,
                     cerebellum: np.ndarray, aal: np.ndarray, pattern: str = "regional"
                     ) -> np.ndarray:
    """GM FDG factor from the real template, corrected by AAL groups (mean 1 over GM).

    The template is an 8 mm-smoothed average, so its raw values mix metabolism with partial
    volume (ventricles and sulci read low). The template is therefore divided by its own
    tissue-content prediction (GM/WM/CSF maps blurred by the same 8 mm, uptakes fitted by least
    squares) before the GM-weighted smoothing: what is left is regional metabolism, not anatomy.
    """
    fdg_img = _fdg_template()
    fdg = _onto(fdg_img.get_fdata(dtype=np.float32), fdg_img.affine, grid)
    sigma8 = 8.0 * FWHM_TO_SIGMA / grid.voxel_mm
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * (gm + wm > 0.05)
    cols = [ndimage.gaussian_filter(t, sigma8) for t in (gm, wm, csf)]
    inside = (fdg > 0.2 * fdg.max()) & (gm + wm > 0.5)
    design = np.stack([c[inside] for c in cols], axis=1)
    coef, *_ = np.linalg.lstsq(design, fdg[inside], rcond=None)
    expected = sum(float(k) * c for k, c in zip(coef, cols))
    ratio = np.where(expected > 0.2 * expected.max(), fdg / np.maximum(expected, 1e-6), 1.0)
    # Normal FDG uptake is close to symmetric (asymmetry indices of a few %); the template is
    # not (its dementia half), and an asymmetric "normal" would read as a unilateral defect.
    # The model grid is symmetric about x = 0 (MODEL_BOUNDS), so a flip of axis 0 mirrors it.
    # ``template`` keeps the template's own asymmetry (module doc).
    if pattern == "regional":
        ratio = 0.5 * (ratio + ratio[::-1])
    sigma = 4.0 / grid.voxel_mm[0]
    # GM-weighted smoothing: the factor at a voxel reflects nearby GM, not WM partial volume.
    num = ndimage.gaussian_filter(ratio * gm, sigma)
    den = ndimage.gaussian_filter(gm, sigma)
    factor = np.where(den > 0.02, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)
    in_gm = gm >= 0.5
    factor /= float(factor[in_gm].mean())
    if pattern == "regional":
        factor = _shrink_within_regions(factor, aal, in_gm, WITHIN_REGION_WEIGHT)
    # The 8 mm template under-represents the small hot nuclei and its cerebellum is as bright as
    # the cortex; typical FDG scans show hot nuclei and a cooler cerebellum: correct both groups.
    mult = 1.0 + DEEP_GM_GAIN * deep + CEREBELLUM_GAIN * cerebellum
    factor = np.where(den > 0.02, factor * mult, 1.0)
    factor /= float(factor[in_gm].mean())
    low, high = (0.6, 1.5) if pattern == "regional" else (0.2, 3.0)  # template: unbounded
    return np.clip(factor, low, high).astype(np.float32)


def _territories(lobes: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Give every brain voxel the nearest lobe label (AAL labels only cover grey matter)."""
    _, idx = ndimage.distance_transform_edt(lobes == 0, return_indices=True)
    return np.where(brain, lobes[tuple(idx)], 0).astype(np.int8)


def _boundary_depth(terr: np.ndarray, res: float) -> np.ndarray:
    """mm to the nearest voxel of another (non-zero) territory."""
    boundary = np.zeros(terr.shape, dtype=bool)
    for axis in range(3):
        a = np.swapaxes(terr, 0, axis)
        b = np.swapaxes(boundary, 0, axis)
        diff = (a[1:] != a[:-1]) & (a[1:] > 0) & (a[:-1] > 0)
        b[1:] |= diff
        b[:-1] |= diff
    return (ndimage.distance_transform_edt(~boundary) * res).astype(np.float32)


def _ramp(d):
    return np.clip(0.5 - d, 0.0, 1.0)


def _eyes(x, y, z):
    return np.maximum(_ramp(np.sqrt((x - 32) ** 2 + (y - 56) ** 2 + (z + 42) ** 2) - 12),
                      _ramp(np.sqrt((x + 32) ** 2 + (y - 56) ** 2 + (z + 42) ** 2) - 12))


def _spine(radius: float, top: float):
    def fn(x, y, z):
        rho = np.sqrt(x ** 2 + (y + 45.0) ** 2)  # the brainstem leaves the template at y = -45
        return _ramp(rho - radius) * np.clip((top - z) / 2.0, 0.0, 1.0)
    return fn


def _patches(grid: Grid, skin_depth: np.ndarray) -> dict[str, _PATCH]:
    bottom = MODEL_BOUNDS[2][0]
    patches = {
        "eyes": _patch(grid, (-46, 42, -56), (46, 70, -28), _eyes),
        "vertebra": _patch(grid, (-17, -62, bottom), (17, -28, -84), _spine(16.0, -86.0)),
        "canal": _patch(grid, (-10, -55, bottom), (10, -35, -66), _spine(8.5, -70.0)),
        "cord": _patch(grid, (-7, -52, bottom), (7, -38, -66), _spine(5.0, -70.0)),
    }
    # Keep them under the skin whatever the head outline.
    return {k: (sl, w * np.clip(skin_depth[sl] - 1.0, 0.0, 1.0)) for k, (sl, w) in patches.items()}


def sharpen_tissues(gm: np.ndarray, wm: np.ndarray, gamma: float = SHARPEN_GAMMA
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Crisper GM/WM maps: ``p_k^gamma`` renormalized over GM, WM and CSF.

    The template's maps are population averages, blurred over several mm where anatomy varies
    between people (ventricle walls, deep sulci). Used as one person's anatomy, such a blur
    makes a band of GM-like T1w intensity around the ventricles that holds no GM uptake in the
    PET; an individual brain has boundaries about one voxel wide, which this restores.
    """
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    powers = [np.power(np.clip(t, 0.0, 1.0), gamma) for t in (gm, wm, csf)]
    total = powers[0] + powers[1] + powers[2]
    brain = gm + wm  # keep the brain/non-brain split, sharpen only the tissue mix inside
    scale = np.where(total > 0, np.clip(brain + csf, 0.0, 1.0) / np.maximum(total, 1e-12), 0.0)
    return (powers[0] * scale).astype(np.float32), (powers[1] * scale).astype(np.float32)


@functools.lru_cache(maxsize=2)
def head_model(resolution_mm: float = 1.0, pattern: str = "regional") -> HeadModel:
    """Build (once per process and resolution) the template-space head model.

    Parameters
    ----------
    resolution_mm
        Voxel size of the fine grid (the T1w is pulled from it). Distance maps, lobe territories
        and the FDG pattern are computed at 2 mm (smooth, or used through a 6 mm PSF) and the
        distance maps interpolated onto the fine grid.
    pattern
        Normal uptake pattern, one of :data:`PATTERNS` (module doc).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"uptake pattern {pattern!r}: use one of {', '.join(PATTERNS)}")
    res = float(resolution_mm)
    grid, cgrid = _model_grid(res), _model_grid(max(2.0, res))
    taff = resources.load_template("mask", PACKAGED).affine
    tpl = {k: resources.load_template(k, PACKAGED).get_fdata(dtype=np.float32)
           for k in ("mask", "GM", "WM")}
    tpl["GM"], tpl["WM"] = sharpen_tissues(tpl["GM"], tpl["WM"])
    rc = cgrid.voxel_mm[0]

    # Coarse level: cranial cavity from the brain mask closed by a 5 mm Gaussian, head outline
    # from the shell around it plus neck and face, both as distance maps.
    gm_c, wm_c = _onto(tpl["GM"], taff, cgrid), _onto(tpl["WM"], taff, cgrid)
    brain_c = _onto(tpl["mask"], taff, cgrid) > 0.5
    envelope = (ndimage.gaussian_filter(brain_c.astype(np.float32), 5.0 / rc) > 0.2) | brain_c
    cav_c = ((ndimage.distance_transform_edt(~envelope)
              - ndimage.distance_transform_edt(envelope)) * rc).astype(np.float32)
    x, y, z = _world_axes(cgrid)
    shell = cav_c <= CAVITY_MARGIN_MM + HEAD_SHELL_MM
    neck = (((x / 55.0) ** 2 + ((y + 40.0) / 62.0) ** 2) <= 1.0) & (z < -50.0)
    face = ((x / 48.0) ** 2 + ((y - 45.0) / 45.0) ** 2 + ((z + 55.0) / 42.0) ** 2) <= 1.0
    outer = ndimage.gaussian_filter((shell | neck | face).astype(np.float32), 3.0 / rc) > 0.5
    skin_c = (ndimage.distance_transform_edt(outer) * rc).astype(np.float32)
    lobes_c = np.rint(_onto(resources.load_lobe_atlas(PACKAGED).get_fdata(), taff, cgrid, order=0))
    lobes_c = lobes_c.astype(np.int8)
    terr_c = _territories(lobes_c, brain_c)
    coarse = Level(cgrid, gm_c, wm_c, cav_c, skin_c, terr_c, _patches(cgrid, skin_c))

    # Deep grey nuclei and cerebellum get their own gains in the regional factor. PET uses the
    # same GM/WM maps as the T1w, so the MR shows every tissue the PET shows.
    groups = {k: ndimage.gaussian_filter(
        _onto(resources.aal_group_mask(k, PACKAGED).astype(np.float32), taff, cgrid), 1.0)
        for k in ("deep_gm", "cerebellum", "mesial_temporal")}
    aal_c = np.rint(_onto(resources.load_aal(PACKAGED).get_fdata(), taff, cgrid, order=0)).astype(np.int64)
    uptake = _regional_factor(cgrid, gm_c, wm_c, groups["deep_gm"], groups["cerebellum"], aal_c,
                              pattern)

    if cgrid.shape == grid.shape:
        fine = coarse
    else:
        idx = [np.clip(np.rint(np.arange(n) * res / rc).astype(int), 0, m - 1)
               for n, m in zip(grid.shape, cgrid.shape)]
        skin = _upsample(skin_c, grid.shape)
        fine = Level(grid, _onto(tpl["GM"], taff, grid), _onto(tpl["WM"], taff, grid),
                     _upsample(cav_c, grid.shape), skin, terr_c[np.ix_(*idx)],
                     _patches(grid, skin))
    return HeadModel(fine, coarse, uptake, lobes_c, _boundary_depth(terr_c, rc), groups)


# ----------------------------------------------------------------------------- subjects


@dataclass(frozen=True)
class Lesion:
    """A hypometabolic focus: smooth-edged ellipsoid in template mm, confined to one lobe."""

    region: str
    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    reduction: float
    #: further lobes the focus extends into (multilobar foci of the ladder)
    extra_regions: tuple[str, ...] = ()
    #: ladder location class (``mesial temporal`` …); empty for the classic foci
    location: str = ""

    @property
    def regions(self) -> tuple[str, ...]:
        """Every lobe the focus lies in, the one holding its centre first."""
        return (self.region, *self.extra_regions)

    @property
    def volume_mm3(self) -> float:
        """Volume of the focus ellipsoid (before it is cut to its lobes)."""
        return float(4.0 / 3.0 * np.pi * np.prod(self.semi_axes_mm))


@dataclass(frozen=True)
class Anatomy:
    """Per-subject tissue properties (T1 intensities relative to WM, shell thicknesses)."""

    t1: dict[str, float]
    skull_mm: float
    fat_mm: float


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """Random T1 contrast and shell thicknesses of one subject."""
    t1 = {"wm": 1.0, "gm": rng.uniform(0.58, 0.68), "csf": rng.uniform(0.15, 0.25),
          "bone": 0.06, "marrow": rng.uniform(0.45, 0.65), "skin": 0.65,
          "fat": rng.uniform(1.05, 1.25), "muscle": rng.uniform(0.40, 0.50), "cord": 0.85}
    return Anatomy({k: float(v) for k, v in t1.items()}, float(rng.uniform(5.5, 7.5)),
                   float(rng.uniform(3.5, 5.5)))


def draw_lesion(rng: np.random.Generator, model: HeadModel, region: str) -> Lesion:
    """A lesion whose centre lies in the GM of ``region`` well inside its territory."""
    label = resources.LOBE_INDEX[region]
    base = (model.lobes == label) & (model.coarse.gm >= 0.5)
    for depth in (10.0, 6.0, 3.0, 0.0):
        cand = np.argwhere(base & (model.depth >= depth))
        if len(cand):
            break
    if not len(cand):
        raise RuntimeError(f"no grey matter found in {region}")
    centre = model.coarse.grid.to_world(cand[rng.integers(len(cand))][None].astype(float))[0]
    radius = rng.uniform(12.0, 20.0)
    axes = radius * rng.uniform(0.8, 1.2, size=3)
    return Lesion(region, tuple(float(v) for v in centre), tuple(float(v) for v in axes),
                  tuple(float(v) for v in rng.uniform(-90, 90, size=3)),
                  float(rng.uniform(0.20, 0.35)))


def _ellipsoid_axes(rng: np.random.Generator, volume_mm3: float) -> tuple[float, float, float]:
    """Semi-axes (mm) of an ellipsoid of the given volume, each within ±20 % of the mean."""
    shape = rng.uniform(0.8, 1.2, size=3)
    shape /= float(np.prod(shape)) ** (1.0 / 3.0)
    radius = (3.0 * volume_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0)
    return tuple(float(v) for v in radius * shape)  # type: ignore[return-value]


def _neighbour_lobe(model: HeadModel, centre_mm: np.ndarray, label: int) -> int | None:
    """The other lobe of the same hemisphere most present within 12 mm of a point (or None)."""
    grid = model.coarse.grid
    ijk = np.rint(grid.to_voxel(centre_mm[None])[0]).astype(int)
    r = int(np.ceil(12.0 / grid.voxel_mm[0]))
    sl = tuple(slice(max(0, c - r), c + r + 1) for c in ijk)
    terr = model.coarse.territory[sl].astype(int)
    side = (label - 1) % 2  # LOBE_LABELS: odd = left, even = right
    same = (terr >= 1) & (terr <= 8) & (terr != label) & ((terr - 1) % 2 == side)
    if not same.any():
        return None
    return int(np.bincount(terr[same]).argmax())


def draw_ladder_lesion(rng: np.random.Generator, model: HeadModel) -> Lesion:
    """A focus of the difficulty ladder (module doc): location class, side, depth, volume and
    whether it spans two lobes are drawn here; the centre lies in the class's grey matter."""
    names = list(LADDER_LOCATIONS)
    weights = np.array([LADDER_LOCATIONS[n] for n in names])
    location = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    side = "left" if rng.random() < 0.5 else "right"
    depth = float(rng.uniform(*LADDER_DEPTH))
    low, high = np.log(LADDER_VOLUME_MM3)
    volume = float(np.exp(rng.uniform(low, high)))
    multilobar = bool(rng.random() < LADDER_MULTILOBAR)
    lobe = location.split()[-1]
    region = f"{side}-{lobe}"
    label = resources.LOBE_INDEX[region]
    gm = (model.lobes == label) & (model.coarse.gm >= 0.5)
    mesial = model.groups["mesial_temporal"] >= 0.5
    if location == "mesial temporal":
        gm &= mesial
    elif location == "lateral temporal":
        gm &= ~ndimage.binary_dilation(mesial, iterations=3)
    # a multilobar focus is centred near its lobe's border, a unilobar one well inside it
    depths = (6.0, 3.0, 0.0) if multilobar else (10.0, 6.0, 3.0, 0.0)
    for d in depths:
        cand = np.argwhere(gm & ((model.depth <= d + 2.0) if multilobar else
                                 (model.depth >= d)))
        if len(cand):
            break
    if not len(cand):
        raise RuntimeError(f"no grey matter found for a {location} focus in {region}")
    centre = model.coarse.grid.to_world(cand[rng.integers(len(cand))][None].astype(float))[0]
    extra: tuple[str, ...] = ()
    if multilobar:
        other = _neighbour_lobe(model, centre, label)
        if other is not None:
            extra = (resources.LOBE_LABELS[other],)
    return Lesion(region, tuple(float(v) for v in centre), _ellipsoid_axes(rng, volume),
                  tuple(float(v) for v in rng.uniform(-90, 90, size=3)), depth, extra, location)


@dataclass(frozen=True)
class UptakeVariation:
    """Benign per-subject variation of the normal pattern (the ladder's controls and patients).

    ``asymmetry``: lobe → left/right uptake difference as a fraction (positive: left higher);
    ``deep_gain`` and ``cerebellum_gain``: relative change of deep-nuclei and cerebellar uptake;
    ``global_factor``: whole-brain uptake relative to the dose-based level.
    """

    asymmetry: dict[str, float]
    deep_gain: float
    cerebellum_gain: float
    global_factor: float


def draw_variation(rng: np.random.Generator) -> UptakeVariation:
    """Draw one subject's :class:`UptakeVariation`."""
    asym = {lobe: float(np.clip(rng.normal(0.0, BENIGN_ASYMMETRY_SD), -BENIGN_ASYMMETRY_MAX,
                                BENIGN_ASYMMETRY_MAX))
            for lobe in ("frontal", "temporal", "parietal", "occipital")}
    return UptakeVariation(asym, float(rng.uniform(-0.08, 0.08)),
                           float(rng.uniform(-0.08, 0.08)), float(rng.uniform(0.8, 1.2)))


def variation_field(model: HeadModel, variation: UptakeVariation) -> np.ndarray:
    """Multiplicative GM uptake field of a :class:`UptakeVariation` on the coarse grid: each
    lobe's territory is scaled by ``1 ± asymmetry/2`` (edges smoothed over about 10 mm)."""
    level = model.coarse
    sigma = 10.0 * FWHM_TO_SIGMA / level.grid.voxel_mm[0]
    field_ = np.ones(level.grid.shape, dtype=np.float32)
    for lobe, a in variation.asymmetry.items():
        for side, sign in (("left", 1.0), ("right", -1.0)):
            inside = (level.territory == resources.LOBE_INDEX[f"{side}-{lobe}"])
            field_ += np.float32(sign * a / 2.0) * ndimage.gaussian_filter(
                inside.astype(np.float32), sigma)
    field_ *= (1.0 + variation.deep_gain * model.groups["deep_gm"]
               + variation.cerebellum_gain * model.groups["cerebellum"]).astype(np.float32)
    return field_


def lesion_weight(level: Level, lesion: Lesion, edge_mm: float = 2.0) -> np.ndarray:
    """Lesion weight in [0, 1] on a model grid, zero outside the lesion's lobe territory."""
    out = np.zeros(level.grid.shape, dtype=np.float32)
    centre = np.asarray(lesion.centre_mm)
    reach = max(lesion.semi_axes_mm) + 4 * edge_mm
    rot = rotation_matrix(lesion.rotation_deg)
    axes = np.asarray(lesion.semi_axes_mm)

    def fn(x, y, z):
        d = np.stack(np.broadcast_arrays(x - centre[0], y - centre[1], z - centre[2]), -1)
        local = d @ rot  # coordinates along the ellipsoid's own axes
        rho = np.sqrt(((local / axes) ** 2).sum(-1))
        return 1.0 / (1.0 + np.exp((rho - 1.0) * axes.mean() / edge_mm))

    sl, w = _patch(level.grid, centre - reach, centre + reach, fn)
    labels = [resources.LOBE_INDEX[r] for r in lesion.regions]
    out[sl] = w * np.isin(level.territory[sl], labels)
    return out


def _layers(model: Level, anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the cranial cavity and of the skull (the rest of the head is scalp/neck)."""
    cav = np.clip(CAVITY_MARGIN_MM + 0.5 - model.cavity_depth, 0.0, 1.0)
    skull_end = CAVITY_MARGIN_MM + anatomy.skull_mm
    skull = (1.0 - cav) * np.clip(skull_end + 0.5 - model.cavity_depth, 0.0, 1.0)
    return cav, skull


def _apply_patches(vol: np.ndarray, model: Level, values: dict[str, float]) -> None:
    for name in ("eyes", "vertebra", "canal", "cord"):
        sl, w = model.patches[name]
        vol[sl] = (1.0 - w) * vol[sl] + w * values[name]


def t1_template(head: HeadModel, anatomy: Anatomy) -> np.ndarray:
    """Noise-free T1w intensity (WM = 1) of one subject's anatomy on the fine model grid."""
    t = anatomy.t1
    model = head.fine
    cav, skull = _layers(model, anatomy)
    gm, wm = model.gm, model.wm
    brain = gm * t["gm"] + wm * t["wm"] + np.clip(1.0 - gm - wm, 0.0, 1.0) * t["csf"]
    s0, s1 = CAVITY_MARGIN_MM, CAVITY_MARGIN_MM + anatomy.skull_mm
    bone = np.interp(model.cavity_depth, [s0, s0 + 1.6, s0 + 2.4, s1 - 2.6, s1 - 1.8, s1],
                     [t["bone"], t["bone"], t["marrow"], t["marrow"], t["bone"], t["bone"]])
    f1 = 1.5 + anatomy.fat_mm
    soft = np.interp(model.skin_depth, [0.0, 1.0, 1.5, 2.5, f1, f1 + 1.0],
                     [0.0, t["skin"], t["skin"], t["fat"], t["fat"], t["muscle"]])
    vol = (cav * brain + skull * bone + (1.0 - cav - skull) * soft).astype(np.float32)
    _apply_patches(vol, model, {"eyes": t["csf"], "vertebra": t["marrow"], "canal": t["csf"],
                                "cord": t["cord"]})
    return vol


def pet_template(head: HeadModel, anatomy: Anatomy, gm_base: float, wm_ratio: float,
                 jitter: np.ndarray | float = 1.0, lesion_w: np.ndarray | None = None,
                 reduction: float = 0.0) -> np.ndarray:
    """FDG activity (Bq/mL) before the PSF on the coarse (2 mm) model grid.

    Parameters
    ----------
    gm_base
        Mean GM concentration (Bq/mL) before regional variation.
    wm_ratio
        WM / GM uptake ratio.
    jitter
        Multiplicative smooth per-subject field on GM (or 1).
    lesion_w, reduction
        Lesion weight map (:func:`lesion_weight`) and fractional GM uptake reduction at its core.
    """
    model = head.coarse
    cav, skull = _layers(model, anatomy)
    gm_up = head.uptake * jitter
    if lesion_w is not None:
        gm_up = gm_up * (1.0 - reduction * lesion_w)
    csf = np.clip(1.0 - model.gm - model.wm, 0.0, 1.0)
    brain = model.gm * gm_up + model.wm * wm_ratio + csf * 0.05
    f1 = 1.5 + anatomy.fat_mm
    soft = np.interp(model.skin_depth, [0.0, 1.0, 1.5, 2.5, f1, f1 + 1.0],
                     [0.0, 0.06, 0.06, 0.03, 0.03, 0.10])
    vol = (cav * brain + skull * 0.03 + (1.0 - cav - skull) * soft).astype(np.float32)
    _apply_patches(vol, model, {"eyes": 0.05, "vertebra": 0.05, "canal": 0.05, "cord": 0.3})
    vol *= np.float32(gm_base)
    return vol


def psf(vol: np.ndarray, grid: Grid, fwhm_mm: float = PSF_FWHM_MM) -> np.ndarray:
    """Isotropic Gaussian point-spread function."""
    return ndimage.gaussian_filter(vol, fwhm_mm * FWHM_TO_SIGMA / grid.voxel_mm,
                                   mode="constant").astype(np.float32)


def smooth_jitter(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float,
                  nodes: int = 24) -> np.ndarray:
    """Smooth multiplicative field ``1 + amplitude·n`` (n: unit-std noise, ~2 cm correlation)."""
    coarse = ndimage.gaussian_filter(rng.standard_normal((nodes,) * 3), 1.0, mode="wrap")
    coarse = np.clip(coarse / coarse.std(), -2.5, 2.5)
    return _upsample((1.0 + amplitude * coarse).astype(np.float32), shape)


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise of std ``sigma`` per channel."""
    re = signal + np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    im = np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)


def pet_noise(pet: np.ndarray, rng: np.random.Generator, relative: float,
              floor: float) -> np.ndarray:
    """Spatially correlated multiplicative noise plus a weak additive floor, kept ≥ 0."""
    def unit(shape):
        n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.7)
        return n / max(float(n.std()), 1e-9)

    noisy = pet * (1.0 + relative * unit(pet.shape)) + floor * unit(pet.shape)
    return np.clip(noisy, 0.0, None).astype(np.float32)


def make_frames(static: np.ndarray, durations: np.ndarray, rng: np.random.Generator,
                relative: float = 0.05, trend: float = 0.03) -> np.ndarray:
    """Split a static image into frames whose duration-weighted mean is exactly ``static``.

    Each frame is ``static·(1 + g_k)`` where ``g_k`` holds a slow linear trend (FDG keeps
    accumulating) and frame noise growing as frames get shorter; ``g`` is re-centred per voxel
    so that ``Σ d_k g_k = 0``.
    """
    d = np.asarray(durations, dtype=np.float64)
    k = len(d)
    if k == 1:
        return static[..., None].astype(np.float32)
    mid = np.cumsum(d) - d / 2
    slope = trend * (mid - (d * mid).sum() / d.sum()) / d.sum()
    # g_k is stored in the output array itself (float32) to keep many-frame runs small.
    out = np.empty(static.shape + (k,), dtype=np.float32)
    centre = np.zeros(static.shape, dtype=np.float64)
    for i in range(k):
        sigma = relative * np.sqrt(d.mean() / d[i])
        noise = np.clip(rng.standard_normal(static.shape, dtype=np.float32), -3, 3)
        out[..., i] = slope[i] + sigma * noise
        centre += d[i] * out[..., i]
    centre /= d.sum()
    base = static.astype(np.float64)
    for i in range(k):
        out[..., i] = base * (1.0 + (out[..., i] - centre))
    return out


def render(level: Level, volumes: np.ndarray, target: Grid, warp: SubjectWarp,
           world_to_mr: np.ndarray | None = None) -> np.ndarray:
    """Pull template-space ``volumes`` onto a subject grid (``world_to_mr``: PET header → MR)."""
    if world_to_mr is None:
        fn = warp.to_template
    else:
        def fn(xyz):
            return warp.to_template(apply_affine(world_to_mr, xyz))
    return pull(volumes, level.grid, target, fn)
