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
from pseudopet_bids.bids.entities import parse_entities
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.config import RunConfig
from pseudopet_bids.detect import normative
from pseudopet_bids.errors import InputError

LOGGER = logging.getLogger(__name__)


def control_residual(pet_file: Path, pseudo_file: Path, gm_threshold: float
                     ) -> tuple[np.ndarray, np.ndarray, object]:
    """Centred residual of one control from its derivatives, on the 2 mm template grid.

    Returns ``(residual, valid)`` on :func:`normative.grid_reference` and the registration.
    """
    from pseudopet_bids.preproc.template_reg import TemplateRegistration

    pet_dir = pet_file.parent
    ents = parse_entities(pet_file)
    anat_prefix = f"sub-{ents['sub']}" + (f"_ses-{ents['ses']}" if "ses" in ents else "")
    anat = pet_dir.parent / "anat"
    t1 = nib.load(anat / f"{anat_prefix}_desc-preproc_T1w.nii.gz")
    gm = normative.normative_gm(np.asarray(nib.load(anat / f"{anat_prefix}_label-GM_probseg.nii.gz")
                                 .dataobj),
                      np.asarray(nib.load(anat / f"{anat_prefix}_desc-brain_mask.nii.gz").dataobj),
                      gm_threshold)
    scale = float(json.loads(pet_file.with_name(pet_file.name.replace(".nii.gz", ".json"))
                             .read_text())["IntensityNormalization"]["Scale"])
    real = np.asarray(nib.load(pet_file).dataobj, dtype=np.float32)
    pseudo = np.asarray(nib.load(pseudo_file).dataobj, dtype=np.float32)
    residual = normative.centred_residual((real - pseudo) / scale, gm)
    template = resources.TEMPLATE_NAME
    reg = TemplateRegistration.from_files(
        t1, anat / f"{anat_prefix}_from-T1w_to-{template}_mode-image_xfm.nii.gz",
        anat / f"{anat_prefix}_from-{template}_to-T1w_mode-image_xfm.nii.gz")
    res_t, valid_t = normative.residual_to_template(residual, gm, reg)
    return res_t, valid_t, reg


def build_normative(cfg: RunConfig, participants: dict[str, Participant]) -> Path:
    """Build ``OUTPUT_DIR/models/normative-<model>/`` from the controls' outputs.

    Raises
    ------
    InputError
        Fewer than :data:`normative.MIN_CONTROLS` controls have outputs of this model (exit 66).
    """
    from pseudopet_bids.participant import labels_for, model_sha256, resolve_model

    out = Path(cfg.output_dir)
    model_dir = resolve_model(cfg)
    model, _ = labels_for(cfg, model_dir)
    sha = model_sha256(model_dir)
    controls = {label for label, p in participants.items() if p.group == "control"}
    ref = normative.grid_reference()
    stats = normative.NormativeStats.empty(ref.shape[:3], ref.affine)
    skipped: list[str] = []
    t0 = time.monotonic()
    for pseudo in sorted(out.glob(f"sub-*/**/pet/*_desc-{model}Pseudonormal_pet.nii.gz")):
        ents = parse_entities(pseudo)
        if ents.get("sub") not in controls:
            continue
        key = f"sub-{ents['sub']}" + (f"_ses-{ents['ses']}" if "ses" in ents else "")
        sidecar = json.loads(pseudo.with_name(pseudo.name.replace(".nii.gz", ".json")).read_text())
        if sidecar.get("ModelSHA256") != sha:
            skipped.append(f"{key} (made with other {model} weights)")
            continue
        if key in stats.controls:
            skipped.append(f"{key} (a second PET of the same session; the first one is used)")
            continue
        pet = Path(str(pseudo).replace(f"_desc-{model}Pseudonormal_pet", "_desc-preproc_pet"))
        try:
            res_t, valid_t, _ = control_residual(pet, pseudo, cfg.gm_threshold)
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
                         f"run the participant level with --model {cfg.model} on the controls "
                         "(participants.tsv group = control) first")
    card = {"name": folder.name, "kind": "normative", "model": model,
            "model_sha256": sha, "template": resources.TEMPLATE_NAME,
            "gm_threshold": cfg.gm_threshold, "pseudopet_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "residual": "D = (real - pseudo-normal PET) / GM-median scale, minus its GM median"}
    card = normative.save(folder, stats, card)
    LOGGER.info("normative model of %s from %d controls written to %s (%.0f s)", model,
                card["n_controls"], folder, time.monotonic() - t0)
    return folder
