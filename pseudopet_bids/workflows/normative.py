"""Group level ``--build-normative``: the healthy-control normative model of one synthesis model.

Reads the controls' participant outputs of that model (real and pseudo-normal PET on the T1w
grid, grey matter, the T1w → template transforms), forms each control's centred residual, brings
it to the template grid and stores the voxel-wise sums (:mod:`pseudopet_bids.detect.normative`).
Nothing is recomputed from the raw data: the participant level must have run on the controls
with the same model first.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from pseudopet_bids import __version__, resources
from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.config import RunConfig
from pseudopet_bids.detect import normative
from pseudopet_bids.errors import DataError, InputError
from pseudopet_bids.preproc.template_reg import TemplateRegistration
from pseudopet_bids.synthesis.select import choose_model

LOGGER = logging.getLogger(__name__)


def control_residual(paths: der.SubjectPaths, pseudo_file: Path, gm_threshold: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Centred residual of one control from its derivatives, on the 2 mm template grid.

    Returns ``(residual, valid)`` on :func:`normative.grid_reference`.
    """
    load = (lambda path: np.asarray(nib.load(path).dataobj, dtype=np.float32))
    pet_file = paths.pet("space-T1w_desc-preproc_pet.nii.gz")
    gm = normative.normative_gm(load(paths.anat("label-GM_probseg.nii.gz")),
                                load(paths.anat("desc-brain_mask.nii.gz")), gm_threshold)
    scale = float(json.loads(der.sidecar(pet_file).read_text())
                  ["IntensityNormalization"]["Scale"])
    residual = normative.centred_residual((load(pet_file) - load(pseudo_file)) / scale, gm)
    template = resources.TEMPLATE_NAME
    reg = TemplateRegistration.from_files(nib.load(paths.anat("desc-preproc_T1w.nii.gz")),
                                          paths.xfm("T1w", template), paths.xfm(template, "T1w"))
    return normative.residual_to_template(residual, gm, reg)


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
            res_t, valid_t = control_residual(paths, pseudo, gm_threshold)
        except DataError as exc:  # e.g. no grey matter at --gm-threshold
            skipped.append(f"{key} ({exc})")
            continue
        except (OSError, KeyError, ValueError) as exc:
            skipped.append(f"{key} ({type(exc).__name__}: {exc})")
            continue
        stats.add(key, res_t, valid_t)
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
    card = normative.save(folder, stats, card)
    LOGGER.info("normative model of %s from %d controls written to %s (%.0f s)", model,
                card["n_controls"], folder, time.monotonic() - t0)
    return folder
