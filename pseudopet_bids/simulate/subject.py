"""One synthetic subject: its random draws (pose, anatomy, dose, focus) and its images (no I/O).

Geometry of a subject
    ``template_to_mr`` (4×4) places the template head in the MR scanner: rotations ±6°, scales
    ±6 % per axis, translations ±8 mm. A smooth random displacement of a few mm (``warp``) is
    added on the template side, so the MR-world → template map is
    ``y = y0 + u(y0)``, ``y0 = inv(template_to_mr) @ x``.
    The PET header disagrees with the MR header by a rigid ``pet_to_mr`` (rotations ±5°,
    translations ±10 mm): a point at PET-header mm ``p`` holds the tissue found at MR-header mm
    ``pet_to_mr @ p``.
Random streams
    Everything is drawn from ``numpy.random.default_rng([seed, group, index])`` (draws) and
    ``[seed, group, index, 1]`` (image noise), so a subject does not depend on the cohort size.
    The difficulty ladder draws its focus and benign variation from ``[seed, group, index, 2]``
    (the classic draws, and so the classic cohorts' files, are unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

from pseudopet_bids import resources
from pseudopet_bids.simulate import phantom
from pseudopet_bids.simulate.geometry import (Grid, SubjectWarp, apply_affine, compose_affine,
                                              oriented_grid, pull, random_displacement,
                                              smooth_field_on_grid)

GROUP_CODE = {"control": 0, "patient": 1}
#: ``classic``: one 20-35 % focus in a random lobe, no benign variation (earlier cohorts' bytes);
#: ``ladder``: the difficulty ladder of :mod:`phantom` (depth, volume, location, variation).
DIFFICULTIES: tuple[str, ...] = ("classic", "ladder")
T1_FOV_MM = (224.0, 256.0, 256.0)         # x, y, z extent of the MR field of view
PET_FOV_MM = (256.0, 256.0, 224.0)
T1_ORIENTATIONS = ("RAS", "LAS", "LPS", "PIL")   # PIL: sagittal slices, as many MPRAGEs
PET_ORIENTATIONS = ("RAS", "LPS")
HEAD_CENTRE_MM = (0.0, -20.0, -5.0)       # template point at the MR FOV centre (± 5 mm)
BRAIN_CENTRE_MM = (0.0, -18.0, 10.0)      # template point at the PET FOV centre (± 8 mm)
T1_WM_VALUE = 1000.0                       # stored WM intensity before gain and bias
SCAN_START_S = 1800.0                      # PET starts 30 min after injection
SCAN_DURATION_S = 600.0
PET_NOISE = 0.05


@dataclass(frozen=True)
class SubjectSpec:
    """Every random choice made for one subject (enough to re-render it)."""

    participant_id: str
    group: str
    seed: tuple[int, ...]
    age: int
    sex: str
    anatomy: phantom.Anatomy
    pose: dict[str, list[float]]
    template_to_mr: np.ndarray
    warp: SubjectWarp
    warp_max_mm: float
    t1_grid: Grid
    t1_orientation: str
    t1_gain: float
    t1_noise: float
    bias_coeffs: np.ndarray
    pet_grid: Grid
    pet_orientation: str
    pet_rigid: dict[str, list[float]]
    pet_to_mr: np.ndarray
    injected_mbq: float
    gm_base: float
    wm_ratio: float
    durations: np.ndarray
    time_zero: str
    lesion: phantom.Lesion | None
    #: benign variation of the normal pattern (difficulty ``ladder``), None otherwise
    variation: phantom.UptakeVariation | None = None


@dataclass(frozen=True)
class SubjectImages:
    """Rendered images of a subject; the lesion mask is on the T1w grid."""

    t1: nib.Nifti1Image
    pet: nib.Nifti1Image
    lesion: nib.Nifti1Image | None
    lesion_volume_mm3: float | None
    lesion_centroid_mm: list[float] | None


def frame_durations(frames: int) -> np.ndarray:
    """Whole-second frame durations summing to about :data:`SCAN_DURATION_S`, growing later."""
    if frames < 1:
        raise ValueError("frames must be >= 1")
    weights = np.linspace(1.0, 2.0, frames) if frames > 1 else np.ones(1)
    return np.maximum(1.0, np.round(SCAN_DURATION_S * weights / weights.sum()))


def draw_subject(participant_id: str, group: str, index: int, seed: int,
                 head: phantom.HeadModel, t1_voxel_mm: float, pet_voxel_mm: float,
                 frames: int = 1, difficulty: str = "classic") -> SubjectSpec:
    """Draw one subject.

    Parameters
    ----------
    participant_id
        ``sub-<label>``.
    group
        ``control`` or ``patient`` (patients get a lesion in a random lobe).
    index, seed
        Position within the group and cohort seed: the random stream is
        ``default_rng([seed, GROUP_CODE[group], index])``.
    head
        Head model (:func:`phantom.head_model`).
    t1_voxel_mm, pet_voxel_mm
        Isotropic voxel sizes of the stored images.
    frames
        Number of PET frames.
    difficulty
        One of :data:`DIFFICULTIES`.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty {difficulty!r}: use one of {', '.join(DIFFICULTIES)}")
    key = (int(seed), GROUP_CODE[group], int(index))
    rng = np.random.default_rng(key)
    age = int(rng.integers(18, 61))
    sex = str(rng.choice(["F", "M"]))
    anatomy = phantom.draw_anatomy(rng)
    pose = {"rotation_deg": rng.uniform(-6, 6, 3).tolist(),
            "scale": rng.uniform(0.94, 1.06, 3).tolist(),
            "translation_mm": rng.uniform(-8, 8, 3).tolist()}
    to_mr = compose_affine(pose["rotation_deg"], pose["scale"], pose["translation_mm"])
    warp_max = float(rng.uniform(2.0, 4.0))
    coeffs, lattice = random_displacement(rng, phantom.MODEL_BOUNDS, warp_max)
    warp = SubjectWarp(to_mr, coeffs, lattice)

    t1_orient = str(rng.choice(T1_ORIENTATIONS))
    t1_centre = apply_affine(to_mr, np.array([HEAD_CENTRE_MM]))[0] + rng.uniform(-5, 5, 3)
    t1_grid = oriented_grid(T1_FOV_MM, t1_voxel_mm, t1_orient, t1_centre)
    t1_gain = float(rng.uniform(0.8, 1.25))
    t1_noise = float(rng.uniform(0.015, 0.03))
    bias = rng.normal(0.0, 0.06, 9)

    rigid = {"rotation_deg": rng.uniform(-5, 5, 3).tolist(),
             "translation_mm": rng.uniform(-10, 10, 3).tolist()}
    pet_to_mr = compose_affine(rigid["rotation_deg"], [1, 1, 1], rigid["translation_mm"])
    pet_orient = str(rng.choice(PET_ORIENTATIONS))
    brain_mr = apply_affine(to_mr, np.array([BRAIN_CENTRE_MM]))
    pet_centre = apply_affine(np.linalg.inv(pet_to_mr), brain_mr)[0] + rng.uniform(-8, 8, 3)
    pet_grid = oriented_grid(PET_FOV_MM, pet_voxel_mm, pet_orient, pet_centre)
    dose = float(rng.uniform(160.0, 240.0))
    # Brain concentration follows the dose (and body weight). 14 kBq/mL of pure GM at 200 MBq
    # reads 8-15 kBq/mL in the GM of the blurred image, as in real scans.
    gm_base = float(14000.0 * dose / 200.0 * rng.uniform(0.9, 1.1))
    wm_ratio = float(rng.uniform(0.30, 0.40))
    minutes = int(rng.integers(8 * 60, 14 * 60))
    time_zero = f"{minutes // 60:02d}:{minutes % 60:02d}:00"

    lesion = None
    variation = None
    if difficulty == "ladder":
        ladder = np.random.default_rng((*key, 2))
        variation = phantom.draw_variation(ladder)
        gm_base *= variation.global_factor
        if group == "patient":
            lesion = phantom.draw_ladder_lesion(ladder, head)
    elif group == "patient":
        region = str(rng.choice(resources.REGIONS))
        lesion = phantom.draw_lesion(rng, head, region)
    return SubjectSpec(participant_id, group, key, age, sex, anatomy, pose, to_mr, warp, warp_max,
                       t1_grid, t1_orient, t1_gain, t1_noise, bias, pet_grid, pet_orient, rigid,
                       pet_to_mr, dose, gm_base, wm_ratio, frame_durations(frames), time_zero,
                       lesion, variation)


def _bias_field(spec: SubjectSpec) -> np.ndarray:
    centre = spec.t1_grid.to_world(((np.array(spec.t1_grid.shape) - 1) / 2.0)[None])[0]

    def fn(xyz):
        u = (xyz - centre) / 100.0
        x, y, z = u.T
        terms = np.stack([x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1)
        return np.exp(terms @ spec.bias_coeffs)

    return smooth_field_on_grid(spec.t1_grid, fn)


def _lesion_mask(spec: SubjectSpec, head: phantom.HeadModel) -> np.ndarray:
    """Lesioned GM (weight ≥ 0.5 and GM ≥ 0.5) pulled onto the T1w grid, only near the lesion."""
    les = spec.lesion
    if les is None:
        raise ValueError(f"{spec.participant_id} has no lesion")
    fine = head.fine
    weight = phantom.lesion_weight(fine, les)
    target = ((weight >= 0.5) & (fine.gm >= 0.5)).astype(np.float32)
    del weight
    # The T1w sub-box holding the lesion: its template box through the pose, padded for the warp.
    reach = max(les.semi_axes_mm) + 8.0
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    world = apply_affine(spec.template_to_mr, np.asarray(les.centre_mm) + reach * corners)
    ijk = spec.t1_grid.to_voxel(world)
    pad = (spec.warp_max_mm + 4.0) / spec.t1_grid.voxel_mm
    lo = np.clip(np.floor(ijk.min(0) - pad), 0, None).astype(int)
    hi = np.minimum(np.ceil(ijk.max(0) + pad).astype(int) + 1, spec.t1_grid.shape)
    mask = np.zeros(spec.t1_grid.shape, dtype=np.uint8)
    if np.any(hi <= lo):
        return mask
    shift = np.eye(4)
    shift[:3, 3] = lo
    sub = Grid(tuple(int(v) for v in hi - lo), spec.t1_grid.affine @ shift)
    part = pull(target[None], fine.grid, sub, spec.warp.to_template)[0]
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = part >= 0.5
    return mask


def _header(img: nib.Nifti1Image) -> nib.Nifti1Image:
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return img


def render_subject(spec: SubjectSpec, head: phantom.HeadModel) -> SubjectImages:
    """Render the T1w (int16), the FDG PET (float32 Bq/mL, 3D or 4D) and the lesion mask."""
    rng = np.random.default_rng((*spec.seed, 1))

    # T1w: template intensities pulled through the pose and warp, bias field, Rician noise.
    vol = phantom.t1_template(head, spec.anatomy)
    t1 = phantom.render(head.fine, vol[None], spec.t1_grid, spec.warp)[0]
    del vol
    scale = np.float32(T1_WM_VALUE * spec.t1_gain)
    t1 *= _bias_field(spec) * scale
    t1 = phantom.rician(t1, float(scale) * spec.t1_noise, rng)
    t1_img = _header(nib.Nifti1Image(np.clip(np.rint(t1), 0, 32767).astype(np.int16),
                                     spec.t1_grid.affine))
    t1_img.header.set_slope_inter(1.0, 0.0)
    del t1

    # PET: regional FDG pattern (+ lesion) at 2 mm, PSF, pulled through the rigid offset.
    lesion_img, volume, centroid = None, None, None
    weight = None
    if spec.lesion is not None:
        weight = phantom.lesion_weight(head.coarse, spec.lesion)
        mask = _lesion_mask(spec, head)
        voxel_volume = float(np.prod(spec.t1_grid.voxel_mm))
        volume = float(mask.sum()) * voxel_volume
        if mask.any():
            centroid = spec.t1_grid.to_world(np.argwhere(mask).mean(0)[None])[0].tolist()
        lesion_img = _header(nib.Nifti1Image(mask, spec.t1_grid.affine))
    jitter = phantom.smooth_jitter(rng, head.coarse.grid.shape, 0.03)
    if spec.variation is not None:
        jitter = jitter * phantom.variation_field(head, spec.variation)
    act = phantom.pet_template(head, spec.anatomy, spec.gm_base, spec.wm_ratio, jitter, weight,
                               spec.lesion.reduction if spec.lesion else 0.0)
    act = phantom.psf(act, head.coarse.grid)
    pet = phantom.render(head.coarse, act[None], spec.pet_grid, spec.warp, spec.pet_to_mr)[0]
    pet = phantom.pet_noise(pet, rng, PET_NOISE, 0.005 * spec.gm_base)
    if len(spec.durations) > 1:
        pet = phantom.make_frames(pet, spec.durations, rng, PET_NOISE)
    pet_img = _header(nib.Nifti1Image(pet, spec.pet_grid.affine))
    if pet.ndim == 4:
        pet_img.header.set_zooms(tuple(spec.pet_grid.voxel_mm) + (float(spec.durations[0]),))
    return SubjectImages(t1_img, pet_img, lesion_img, volume, centroid)


def truth_record(spec: SubjectSpec, images: SubjectImages) -> dict:
    """JSON-able ground truth of one subject (transforms, parameters, lesion)."""
    def mat(m: np.ndarray) -> list[list[float]]:
        return [[float(v) for v in row] for row in m]

    lesion = None
    if spec.lesion is not None:
        les = spec.lesion
        lesion = {"region": les.region, "centre_template_mm": list(les.centre_mm),
                  "semi_axes_mm": list(les.semi_axes_mm), "rotation_deg": list(les.rotation_deg),
                  "reduction": les.reduction, "volume_mm3": images.lesion_volume_mm3,
                  "centroid_t1w_mm": images.lesion_centroid_mm,
                  "mask": f"{spec.participant_id}_desc-lesion_mask.nii.gz",
                  "definition": "T1w voxels where the lesion weight >= 0.5 and GM >= 0.5; the "
                                "PET GM uptake is multiplied by 1 - reduction * weight"}
        if les.location:  # the ladder's foci
            lesion.update({"location": les.location, "regions": list(les.regions),
                           "focus_volume_mm3": les.volume_mm3})
    return {
        "participant_id": spec.participant_id, "group": spec.group, "rng_key": list(spec.seed),
        "age": spec.age, "sex": spec.sex,
        "template": resources.TEMPLATE_NAME,
        "template_to_mr": {"matrix": mat(spec.template_to_mr), **spec.pose,
                           "definition": "x_mr = M @ y (template mm -> T1w header mm), then the "
                                         "nonlinear warp: y = y0 + u(y0), y0 = inv(M) @ x_mr"},
        "warp": {"max_displacement_mm": spec.warp_max_mm, "lattice_spacing_mm": 10.0},
        "t1w": {"orientation": spec.t1_orientation, "shape": list(spec.t1_grid.shape),
                "affine": mat(spec.t1_grid.affine), "dtype": "int16",
                "wm_value": T1_WM_VALUE * spec.t1_gain, "noise_sigma_rel_wm": spec.t1_noise,
                "tissue_intensity_rel_wm": spec.anatomy.t1, "skull_mm": spec.anatomy.skull_mm,
                "bias_coefficients": spec.bias_coeffs.tolist()},
        "pet": {"orientation": spec.pet_orientation, "shape": list(spec.pet_grid.shape),
                "affine": mat(spec.pet_grid.affine), "units": "Bq/mL",
                "pet_to_t1w": {"matrix": mat(spec.pet_to_mr), **spec.pet_rigid,
                               "definition": "x_t1w = M @ p_pet (PET header mm -> T1w header "
                                             "mm of the same tissue point)"},
                "t1w_to_pet": mat(np.linalg.inv(spec.pet_to_mr)),
                "injected_mbq": spec.injected_mbq, "gm_base_bq_ml": spec.gm_base,
                "wm_to_gm": spec.wm_ratio, "csf_to_gm": 0.05,
                "psf_fwhm_mm": phantom.PSF_FWHM_MM, "noise_rel": PET_NOISE,
                "frame_durations_s": spec.durations.tolist()},
        "lesion": lesion,
        **({"uptake_variation": {**vars(spec.variation), "definition": (
            "GM uptake x (1 + a/2) in the left and x (1 - a/2) in the right territory of each "
            "lobe (a = asymmetry), deep nuclei x (1 + deep_gain), cerebellum x (1 + "
            "cerebellum_gain); gm_base already includes global_factor")}}
           if spec.variation is not None else {}),
    }
