"""Per-subject preprocessing: brain mask, tissues, template registration, PET→T1w coregistration.

Each step is a swappable function of its own module; this module only orders them, times them,
and hands their results on as one :class:`Preprocessed` record (arrays on the T1w grid).
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import nibabel as nib
import numpy as np

from pseudopet_bids import __version__, resources
from pseudopet_bids.bids.inputs import UnitImages
from pseudopet_bids.config import PreprocConfig
from pseudopet_bids.errors import ProcessingError
from pseudopet_bids.io.files import atomic_write_bytes, atomic_write_text, npz_bytes, sha256_file
from pseudopet_bids.preproc._ants import mask_box
from pseudopet_bids.preproc.brainmask import brain_mask
from pseudopet_bids.preproc.coregister import (RigidResult, coregister_pet_to_t1,
                                               resample_pet_to_t1)
from pseudopet_bids.preproc.segment import segment_tissues
from pseudopet_bids.preproc.template_reg import TemplateRegistration, register_t1_to_template
from pseudopet_bids.progress import PREPROCESSING_STAGES, SubjectStatus
from pseudopet_bids.progress import timed as _timed

LOGGER = logging.getLogger(__name__)

_T = TypeVar("_T")


def timed(timings: dict[str, float], step: str, key: str, status: SubjectStatus | None = None
          ) -> AbstractContextManager[None]:
    """:func:`pseudopet_bids.progress.timed` logging under this module's logger."""
    return _timed(timings, step, key, status, logger=LOGGER)


@dataclass
class Preprocessed:
    """Everything the synthesis and detection steps need, on the T1w grid (RAS).

    Attributes
    ----------
    t1
        The T1w as read (RAS, float32): defines the ``T1w`` space of the derivatives.
    mask
        Brain mask (bool).
    tissues
        ``GM``, ``WM``, ``CSF`` probability maps (float32).
    pet
        The static PET resampled onto the T1w grid (original units); None for a T1w-only
        training control.
    lobes, aal
        Lobe labels and AAL labels brought from the template (int16).
    registration
        The T1w→template registration (consumers use it through
        :class:`pseudopet_bids.preproc.registration.Registration`).
    coregistration
        The PET→T1w rigid registration result (None without a PET).
    timings
        Seconds per step.
    cache_written
        When :func:`preprocess_cached` writes its cache in the background: that write (its
        ``result()`` waits for it and raises its error); None otherwise.
    """

    t1: nib.Nifti1Image
    mask: np.ndarray
    tissues: dict[str, np.ndarray]
    pet: np.ndarray | None
    lobes: np.ndarray
    aal: np.ndarray
    registration: TemplateRegistration
    coregistration: RigidResult | None
    timings: dict[str, float] = field(default_factory=dict)
    cache_written: Future[None] | None = field(default=None, repr=False, compare=False)

    @property
    def affine(self) -> np.ndarray:
        return self.t1.affine

    @property
    def voxel_sizes(self) -> tuple[float, float, float]:
        x, y, z = (float(v) for v in self.t1.header.get_zooms()[:3])
        return x, y, z


def preprocess(images: UnitImages, workdir: Path, preproc: PreprocConfig, seed: int,
               omp_nthreads: int = 1, key: str = "subject",
               status: SubjectStatus | None = None) -> Preprocessed:
    """Run the preprocessing steps of one subject.

    Parameters
    ----------
    images
        The unit's checked RAS images (:func:`pseudopet_bids.bids.inputs.load_inputs`): the
        T1w, the static PET or None (T1w-only training control: no coregistration), the
        results reused from ``--derivatives`` (the steps they cover are not run, and the log
        says so), and the files they came from (named in error messages).
    workdir
        Folder for intermediate transform files of this subject.
    preproc
        The preprocessing settings (``skullstrip``: ``deepbet`` or ``template``, see
        ``preproc/brainmask.py``).
    seed
        Random seed passed to every step.
    omp_nthreads
        Threads for ANTs and torch.
    key
        Name used in log lines.
    status
        Progress record of the run (``status.json``), told about every step.
    """
    t1, pet, provided = images.t1, images.pet, images.provided
    t1_path, pet_path, skullstrip = images.t1_path, images.pet_path, preproc.skullstrip
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    if provided.mask is not None:
        mask_img = _reused(timings, "brain mask", key, provided.sources["mask"], provided.mask,
                           status)
    else:
        with timed(timings, "brain mask", key, status):
            mask_img = brain_mask(t1, method=skullstrip, omp_nthreads=omp_nthreads)
    mask = np.asarray(mask_img.dataobj) > 0
    brain_ml = mask.sum() * np.prod(t1.header.get_zooms()[:3]) / 1000.0
    LOGGER.info("%s: brain mask volume %.0f ml", key, brain_ml)
    if not 500 <= brain_ml <= 2500:
        raise ProcessingError(f"the brain mask has an implausible volume ({brain_ml:.0f} ml); "
                              "the T1w may be partial, not a head, or badly oriented",
                              t1_path, "check the T1w image; try --skullstrip template")
    if provided.xfm is not None:
        registration = _reused(timings, "T1w to template registration", key,
                               provided.sources["xfm_forward"],
                               reused_registration(t1, mask, *provided.xfm), status)
    else:
        with timed(timings, "T1w to template registration", key, status):
            registration = register_t1_to_template(t1, mask_img, workdir, seed=seed,
                                                   omp_nthreads=omp_nthreads)
    with timed(timings, "atlas to T1w", key, status):
        aal = np.asarray(registration.to_t1(resources.load_aal(), "nearest").dataobj
                         ).astype(np.int16)
        lobes = resources.aal_to_lobes(aal)
        priors = {k: registration.to_t1(resources.load_template(k), "linear")
                  for k in ("GM", "WM", "CSF")}
    if provided.tissues is not None:
        tissue_imgs = _reused(timings, "tissue segmentation", key, provided.sources["GM"],
                              provided.tissues, status)
    else:
        with timed(timings, "tissue segmentation", key, status):
            tissue_imgs = segment_tissues(t1, mask_img, seed=seed, priors=priors)
    tissues = {k: np.asarray(v.dataobj, dtype=np.float32) for k, v in tissue_imgs.items()}
    if pet is None:
        return Preprocessed(t1=t1, mask=mask, tissues=tissues, pet=None, lobes=lobes, aal=aal,
                            registration=registration, coregistration=None, timings=timings)
    if provided.pet_in_t1w:  # already in T1w space: resampled by the identity
        coreg = _reused(timings, "PET to T1w coregistration", key, provided.sources["pet"],
                        RigidResult(t1_to_pet=np.eye(4)), status)
    else:
        with timed(timings, "PET to T1w coregistration", key, status):
            coreg = coregister_pet_to_t1(pet, t1, mask_img, seed=seed,
                                         omp_nthreads=omp_nthreads)
    pet_t1 = np.asarray(resample_pet_to_t1(pet, t1, coreg).dataobj, dtype=np.float32)
    check_pet_coverage(pet_t1, mask, key, pet_path)
    return Preprocessed(t1=t1, mask=mask, tissues=tissues, pet=pet_t1, lobes=lobes, aal=aal,
                        registration=registration, coregistration=coreg, timings=timings)


#: Below this share of the brain inside the PET's field of view the subject is refused; between
#: it and :data:`FULL_PET_COVERAGE` it runs with a warning, and grey matter without PET signal is
#: left out of the detection (zero uptake there would read as hypometabolism).
MIN_PET_COVERAGE = 0.5
FULL_PET_COVERAGE = 0.95


def check_pet_coverage(pet_t1: np.ndarray, mask: np.ndarray, key: str,
                       pet_path: Path | None = None) -> float:
    """Share of the brain mask where the PET (on the T1w grid) has signal; refuse too little.

    Raises
    ------
    ProcessingError
        No signal in the brain (PET and T1w do not overlap), or less than
        :data:`MIN_PET_COVERAGE` of it.
    """
    covered = float((pet_t1[mask] > 0).mean()) if mask.any() else 0.0
    if covered == 0.0:
        raise ProcessingError("after coregistration the PET has no signal inside the brain "
                              "mask; PET and T1w do not overlap", pet_path,
                              "check that PET and T1w belong to the same subject and cover "
                              "the brain")
    if covered < MIN_PET_COVERAGE:
        raise ProcessingError(f"the PET covers only {covered:.0%} of the brain (field of view "
                              f"or coregistration); at least {MIN_PET_COVERAGE:.0%} is needed",
                              pet_path, "give a PET covering the brain, and check its header "
                              "(orientation, origin) against the T1w")
    if covered < FULL_PET_COVERAGE:
        LOGGER.warning("%s: the PET covers %.0f%% of the brain; grey matter outside its field "
                       "of view is left out of the detection", key, 100 * covered)
    return covered


def _reused(timings: dict[str, float], step: str, key: str, source: str, value: _T,
            status: SubjectStatus | None = None) -> _T:
    """Log, time-stamp and report a step whose result came from a derivative dataset."""
    LOGGER.info("%s: %s reused from %s", key, step, source)
    timings[f"{step} (reused)"] = 0.0
    if status is not None:
        status.skip_stages([step], f"reused from {source}")
    return value


#: A reused template transform must bring the template's brain onto the subject's brain mask
#: at least this well (Dice); a wrong subject, direction or template gives far less.
MIN_REUSED_XFM_DICE = 0.6


def reused_registration(t1: nib.Nifti1Image, mask: np.ndarray, forward: Path, inverse: Path
                        ) -> TemplateRegistration:
    """A :class:`TemplateRegistration` from a derivative dataset's transform pair, checked.

    Raises
    ------
    ProcessingError
        The template brain mask brought onto the T1w through ``inverse`` overlaps the subject's
        brain mask with Dice < :data:`MIN_REUSED_XFM_DICE`.
    """
    reg = TemplateRegistration.from_files(t1, forward, inverse)
    reg.brain_box = mask_box(mask, t1.affine, 20.0)
    try:
        warped = np.asarray(reg.to_t1(resources.load_template("mask"), "linear").dataobj) > 0.5
    except Exception as exc:  # ITK raises RuntimeError for unreadable/incompatible files
        raise ProcessingError(f"the reused template transform cannot be applied ({exc})",
                              inverse, "check the file, or drop --derivatives") from exc
    dice = 2.0 * float((warped & mask).sum()) / max(1.0, float(warped.sum() + mask.sum()))
    if dice < MIN_REUSED_XFM_DICE:
        raise ProcessingError(f"the reused template transform does not align the template with "
                              f"this T1w (brain Dice {dice:.2f} < {MIN_REUSED_XFM_DICE}): wrong "
                              "subject, direction or template?", inverse,
                              "give the transforms made from this T1w, or drop --derivatives")
    reg.metric = dice
    return reg


CACHE_VERSION = 2


def input_hash(t1: nib.Nifti1Image, pet: nib.Nifti1Image | None, seed: int,
               skullstrip: str, provided: str = "") -> str:
    """The preprocessing cache key: image data and headers, seed, method, version, and the
    fingerprint of the files reused from ``--derivatives`` (``Provided.fingerprint``)."""
    h = hashlib.sha256(f"{CACHE_VERSION}|{__version__}|{seed}|{skullstrip}|{provided}|"
                       f"{resources.template_source()}".encode())
    for img in (t1, pet):
        if img is None:
            h.update(b"none")
            continue
        h.update(np.ascontiguousarray(img.affine, dtype=np.float64).tobytes())
        h.update(str(img.shape).encode())
        h.update(np.ascontiguousarray(np.asarray(img.dataobj, dtype=np.float32)).tobytes())
    return h.hexdigest()


def preprocess_cached(images: UnitImages, workdir: Path, preproc: PreprocConfig, seed: int,
                      omp_nthreads: int = 1, key: str = "subject",
                      status: SubjectStatus | None = None, digest: str | None = None,
                      background: bool = False) -> Preprocessed:
    """:func:`preprocess`, reusing the results kept in ``workdir/preproc`` when valid.

    The cache is keyed by a hash of the image data and headers, the seed, the skull-stripping
    method and the software version, and is shared by the group level (training on controls)
    and the participant level (``digest``: :func:`input_hash` when the caller already has it).
    Arrays are stored as ``.npz`` (fixed zip dates: equal arrays, equal bytes) and read back
    without pickle. The manifest seals the cache: it is removed before anything is recomputed
    and written last, and it records the sha256 of the ANTs transform files (written in place
    by ANTs), so a run killed at any point never leaves a cache that reads as valid with files
    of another run.

    With ``background``, a new cache is written by a thread of its own (compressing the arrays,
    about 2.5 s of CPU for a 1 mm T1w, releases the GIL) while the caller goes on;
    ``pre.cache_written.result()`` waits for it and raises its error (call it before the
    subject counts as done).
    """
    t1 = images.t1
    cache = Path(workdir) / "preproc"
    manifest = cache / "manifest.json"
    digest = digest or input_hash(t1, images.pet, seed, preproc.skullstrip,
                                  images.provided.fingerprint)
    if manifest.exists():
        try:
            info = json.loads(manifest.read_text())
            if info["hash"] == digest and all(
                    Path(p).is_file() and sha256_file(Path(p)) == sha
                    for p, sha in zip(info["transforms"], info["sha256"], strict=True)):
                with np.load(cache / "arrays.npz", allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                x, y, z = (slice(a, b) for a, b in info["reg"]["brain_box"])
                reg = TemplateRegistration(
                    t1_affine=np.asarray(info["reg"]["t1_affine"]),
                    t1_shape=tuple(info["reg"]["t1_shape"]), forward=info["reg"]["forward"],
                    inverse=info["reg"]["inverse"],
                    inverse_invert=list(info["reg"]["inverse_invert"]),
                    metric=info["reg"]["metric"],
                    brain_box=(x, y, z))
                coreg = None if info["coreg"] is None else RigidResult(
                    t1_to_pet=np.asarray(info["coreg"]["t1_to_pet"]),
                    metric=info["coreg"]["metric"], starts=info["coreg"]["starts"])
                LOGGER.info("%s: preprocessing reused from %s", key, cache)
                if status is not None:
                    status.skip_stages(PREPROCESSING_STAGES,
                                       f"reused from the preprocessing cache {cache}")
                return Preprocessed(
                    t1=t1, mask=arrays["mask"], pet=arrays.get("pet"),
                    tissues={k: arrays[k] for k in ("GM", "WM", "CSF")},
                    lobes=arrays["lobes"], aal=arrays["aal"], registration=reg,
                    coregistration=coreg, timings={"preprocessing (cached)": 0.0})
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            LOGGER.info("%s: preprocessing cache unusable (%s): recomputing", key, exc)
    # unsealed before the registration rewrites its transform files in the work folder
    manifest.unlink(missing_ok=True)
    pre = preprocess(images, workdir, preproc, seed, omp_nthreads, key, status)
    if background:
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preproc-cache")
        pre.cache_written = writer.submit(_write_cache, pre, cache, digest)
        writer.shutdown(wait=False)  # its thread ends with this write
    else:
        _write_cache(pre, cache, digest)
    return pre


def _write_cache(pre: Preprocessed, cache: Path, digest: str) -> None:
    """Write the arrays of ``pre`` and then the manifest that seals them (see
    :func:`preprocess_cached`)."""
    arrays = {"mask": pre.mask, "lobes": pre.lobes, "aal": pre.aal, **pre.tissues}
    if pre.pet is not None:
        arrays["pet"] = pre.pet
    atomic_write_bytes(cache / "arrays.npz", npz_bytes(arrays, compress=True))
    reg = pre.registration
    assert reg.brain_box is not None  # set by both ways of making a registration (above)
    transforms = list(reg.forward) + list(reg.inverse)
    info = {"hash": digest, "transforms": transforms,
            "sha256": [sha256_file(Path(p)) for p in transforms],
            "reg": {"t1_affine": np.asarray(reg.t1_affine).tolist(),
                    "t1_shape": list(reg.t1_shape), "forward": list(reg.forward),
                    "inverse": list(reg.inverse), "inverse_invert": list(reg.inverse_invert),
                    "metric": float(reg.metric),
                    "brain_box": [[s.start, s.stop] for s in reg.brain_box]},
            "coreg": None if pre.coregistration is None else {
                "t1_to_pet": np.asarray(pre.coregistration.t1_to_pet).tolist(),
                "metric": float(pre.coregistration.metric),
                "starts": [float(v) for v in pre.coregistration.starts]}}
    atomic_write_text(cache / "manifest.json", json.dumps(info))
