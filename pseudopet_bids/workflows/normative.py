"""Group level ``--build-normative``: the healthy-control normative model of one synthesis model.

Reads the controls' participant outputs of that model (real and pseudo-normal PET on the T1w
grid, grey matter, the T1w → template transforms), forms each control's centred residual, brings
it to the template grid and stores the voxel-wise sums (:mod:`pseudopet_bids.detect.normative`).
Nothing is recomputed from the raw data: the participant level must have run on the controls
with the same model first.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import nibabel as nib
import numpy as np

from pseudopet_bids import __version__, resources
from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.config import RunConfig
from pseudopet_bids.detect import asymmetry, calibration, normative
from pseudopet_bids.detect.clusters import find_clusters
from pseudopet_bids.detect.rules import analysis_label
from pseudopet_bids.errors import DataError, InputError
from pseudopet_bids.preproc.registration import Registration
from pseudopet_bids.preproc.template_reg import TemplateRegistration
from pseudopet_bids.synthesis.select import choose_model
from pseudopet_bids.workflows.evidence import detection_settings

LOGGER = logging.getLogger(__name__)


@dataclass
class ControlArrays:
    """What the build reads of one control's derivatives (T1w grid, normalised PET units)."""

    diff: np.ndarray  #: D = (real − pseudo-normal) / scale
    pet: np.ndarray  #: real PET / scale
    gm: np.ndarray  #: :func:`normative.normative_gm`
    registration: TemplateRegistration
    zmap: Path  #: the paper's-rule Z-map of this model (its non-zero voxels = the search)


def control_arrays(paths: der.SubjectPaths, pseudo_file: Path, model: str, gm_threshold: float
                   ) -> ControlArrays:
    """Read one control's derivatives (:class:`ControlArrays`)."""
    load = (lambda path: np.asarray(nib.load(path).dataobj, dtype=np.float32))
    pet_file = paths.pet("space-T1w_desc-preproc_pet.nii.gz")
    gm = normative.normative_gm(load(paths.anat("label-GM_probseg.nii.gz")),
                                load(paths.anat("desc-brain_mask.nii.gz")), gm_threshold)
    scale = float(json.loads(der.sidecar(pet_file).read_text())
                  ["IntensityNormalization"]["Scale"])
    pet = load(pet_file) / scale
    template = resources.TEMPLATE_NAME
    reg = TemplateRegistration.from_files(nib.load(paths.anat("desc-preproc_T1w.nii.gz")),
                                          paths.xfm("T1w", template), paths.xfm(template, "T1w"))
    return ControlArrays(pet - load(pseudo_file) / scale, pet, gm, reg,
                         paths.zmap(analysis_label(model, "subject")))


def control_residual(arrays: ControlArrays) -> tuple[np.ndarray, np.ndarray]:
    """Centred residual of one control on the 2 mm template grid: ``(residual, valid)`` on
    :func:`normative.grid_reference`."""
    residual = normative.centred_residual(arrays.diff, arrays.gm)
    return normative.residual_to_template(residual, arrays.gm, arrays.registration)


def control_search(arrays: ControlArrays, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray,
                                                                   tuple[float, ...]]:
    """The control's paper's-rule Z-map, its searched grey matter (where Z ≠ 0) and voxel
    sizes, checked against the detection settings of the build.

    Raises
    ------
    ValueError
        No such Z-map, or one made with another grey-matter threshold or search region.
    """
    if not arrays.zmap.is_file():
        raise ValueError(f"no Z-map of the paper's rule ({arrays.zmap.name})")
    side = json.loads(der.sidecar(arrays.zmap).read_text())
    det = cfg.detection
    if (side.get("GMThreshold") != det.gm_threshold
            or side.get("SearchRegion") != det.search_region):
        raise ValueError(f"{arrays.zmap.name} was made with --gm-threshold "
                         f"{side.get('GMThreshold')} --search-region {side.get('SearchRegion')}")
    img = nib.load(arrays.zmap)
    z = np.asarray(img.dataobj, dtype=np.float32)
    return z, z != 0, tuple(float(v) for v in img.header.get_zooms()[:3])


def control_clusters(z: np.ndarray, search: np.ndarray, voxel_sizes: tuple[float, ...],
                     cfg: RunConfig, registration: Registration,
                     ai: tuple[np.ndarray, np.ndarray] | None,
                     reference: asymmetry.AsymmetryReference | None, key: str
                     ) -> tuple[list[float], list[float]]:
    """Masses and asymmetry Z (leave-one-out; NaN without asymmetry maps) of the clusters of
    one control's Z-map, with the build's detection settings."""
    det = cfg.detection
    volume = float(np.prod(voxel_sizes))
    labels, clusters = find_clusters(z, search, volume, threshold=det.z_threshold,
                                     min_volume_mm3=det.cluster_min_volume,
                                     connectivity=det.connectivity)
    masses = [float(m) for m in calibration.cluster_masses(z, labels, len(clusters),
                                                           det.z_threshold, volume)]
    zs = [float("nan")] * len(clusters)
    if ai is not None and reference is not None and clusters:
        zs = [asymmetry.region_asymmetry(*ai, vox, reference, key)[1]
              for vox in asymmetry.cluster_voxels(labels, len(clusters), registration)]
    return masses, zs


def rule_zmaps(arrays: ControlArrays, z: np.ndarray, search: np.ndarray, key: str,
               stats: normative.NormativeStats,
               ai: tuple[np.ndarray, np.ndarray] | None,
               reference: asymmetry.AsymmetryReference | None) -> dict[str, np.ndarray]:
    """One subject's Z-map under each rule that the controls calibrate: the paper's ``z``
    (read from its derivatives), the normative Z and, with asymmetry maps, the asymmetry Z
    (leave-one-out when ``key`` is one of the controls)."""
    zmaps = {"subject": z, "controls": normative.zmap_against_controls(
        arrays.diff, arrays.gm, search, arrays.registration, stats, key)[0]}
    if reference is not None and ai is not None:
        zmaps["asymmetry"] = asymmetry.asymmetry_zmap(*ai, reference, arrays.registration,
                                                      search, key)[0]
    return zmaps


def build_evidence(cfg: RunConfig, stats: normative.NormativeStats,
                   controls: Mapping[str, Callable[[], ControlArrays]],
                   maps: dict[str, tuple[np.ndarray, np.ndarray]]
                   ) -> tuple[dict[str, calibration.ClusterNull],
                              asymmetry.AsymmetryReference | None]:
    """The controls' cluster calibration of every rule, and their asymmetry reference.

    ``controls`` reads each control's arrays when needed (all of them at 1 mm would not fit
    in memory); ``maps`` are their asymmetry maps (:func:`asymmetry.subject_asymmetry`).
    Each control is scored as a new subject would be, leave-one-out for the rules that
    compare with the controls (docs/detection.md).
    """
    reference = asymmetry.AsymmetryReference.from_maps(maps) if maps else None
    settings = detection_settings(cfg)
    nulls = {rule: calibration.ClusterNull({**settings, "rule": rule})
             for rule in ("subject", "controls", "asymmetry")}
    for key, load in controls.items():
        arrays = load()
        try:
            z, search, voxel_sizes = control_search(arrays, cfg)
        except (ValueError, OSError) as exc:
            LOGGER.warning("cluster calibration: skipped %s (%s)", key, exc)
            continue
        zmaps = rule_zmaps(arrays, z, search, key, stats, maps.get(key), reference)
        for rule, zmap in zmaps.items():
            nulls[rule].masses[key], nulls[rule].asymmetry_z[key] = control_clusters(
                zmap, search, voxel_sizes, cfg, arrays.registration, maps.get(key), reference,
                key)
        LOGGER.info("cluster calibration: %s has %s clusters (paper's rule, normative, "
                    "asymmetry)", key, "/".join(str(len(n.masses.get(key, [])))
                                                for n in nulls.values()))
    return {k: v for k, v in nulls.items() if v.masses}, reference


def build_normative(cfg: RunConfig, participants: dict[str, Participant]) -> Path:
    """Build ``OUTPUT_DIR/models/normative-<model>/`` from the controls' outputs.

    Raises
    ------
    InputError
        Fewer than :data:`normative.MIN_CONTROLS` controls have outputs of this model (exit 66).
    """
    out = Path(cfg.input.output_dir)
    choice = choose_model(out, cfg.synthesis.model)
    model, sha = choice.label, choice.sha256
    gm_threshold = cfg.detection.gm_threshold
    controls = {label for label, p in participants.items() if p.group == "control"}
    ref = normative.grid_reference()
    stats = normative.NormativeStats.empty(ref.shape[:3], ref.affine)
    skipped: list[str] = []
    read: dict[str, Callable[[], ControlArrays]] = {}
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    t0 = time.monotonic()
    for pseudo, label in der.labelled_outputs(out, "pseudonormal"):
        paths = der.SubjectPaths.of(out, pseudo)
        if label != model or paths.subject not in controls:
            continue
        key = paths.anat_prefix
        if json.loads(der.sidecar(pseudo).read_text()).get("ModelSHA256") != sha:
            skipped.append(f"{key} (made with other {model} weights)")
            continue
        if key in stats.controls:
            skipped.append(f"{key} (a second PET of the same session; the first one is used)")
            continue
        try:
            arrays = control_arrays(paths, pseudo, model, gm_threshold)
            res_t, valid_t = control_residual(arrays)
        except DataError as exc:  # e.g. no grey matter at --gm-threshold
            skipped.append(f"{key} ({exc})")
            continue
        except (OSError, KeyError, ValueError) as exc:
            skipped.append(f"{key} ({type(exc).__name__}: {exc})")
            continue
        stats.add(key, res_t, valid_t)
        read[key] = functools.partial(control_arrays, paths, pseudo, model, gm_threshold)
        try:
            maps[key] = asymmetry.subject_asymmetry(arrays.pet, arrays.gm, arrays.registration)
        except DataError as exc:
            LOGGER.warning("asymmetry maps: skipped %s (%s)", key, exc)
        del arrays  # read again for the calibration: one control's volumes at a time
        LOGGER.info("normative %s: added %s (%d voxels)", model, key, int(valid_t.sum()))
    for why in skipped:
        LOGGER.warning("normative %s: skipped %s", model, why)
    folder = out / "models" / normative.folder_name(model)
    if len(stats.controls) < normative.MIN_CONTROLS:
        raise InputError(f"the normative model of {model} needs at least "
                         f"{normative.MIN_CONTROLS} healthy controls with participant outputs of "
                         f"this model; found {len(stats.controls)}", out,
                         f"run the participant level with --model {cfg.synthesis.model} on the "
                         "controls (participants.tsv group = control) first")
    card = {"name": folder.name, "kind": "normative", "model": model,
            "model_sha256": sha, "template": resources.TEMPLATE_NAME,
            "gm_threshold": gm_threshold, "pseudopet_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "residual": "D = (real - pseudo-normal PET) / GM-median scale, minus its GM median"}
    nulls, reference = build_evidence(cfg, stats, read, maps)
    if len(read) < calibration.MIN_CONTROLS:
        LOGGER.warning("normative %s: %d controls; cluster p-values need %d to be calibrated on "
                       "controls (until then the participant level uses the random-field "
                       "fallback)", model, len(read), calibration.MIN_CONTROLS)
    card["evidence_sha256"] = normative.save_evidence(folder, nulls, reference)
    card["cluster_calibration"] = {
        "settings": detection_settings(cfg) | {"rule": sorted(nulls)},
        "controls": {rule: len(null.masses) for rule, null in nulls.items()},
        "clusters_per_control": {rule: round(sum(map(len, null.masses.values()))
                                             / max(len(null.masses), 1), 3)
                                 for rule, null in nulls.items()},
        "min_controls": calibration.MIN_CONTROLS}
    card = normative.save(folder, stats, card)
    LOGGER.info("normative model of %s from %d controls written to %s (%.0f s)", model,
                card["n_controls"], folder, time.monotonic() - t0)
    return folder
