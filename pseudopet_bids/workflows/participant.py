"""Participant level: intake → preprocessing → pseudo-normal PET → Z-map → clusters → outputs.

This module is the flow only: each step is a function of its own package (``bids``, ``preproc``,
``synthesis``, ``detect``), the derivatives are declared in :mod:`.outputs`, and the reports
come from :mod:`pseudopet_bids.reports`.

Outputs of one (subject, session) are first written to a hidden staging folder inside the
output folder, then renamed into place, and the per-subject config (``logs/<key>_config.toml``)
is written last: its presence with a matching output hash marks the subject as finished (an
earlier record is removed before the first final file is replaced). A failed or killed run
therefore never leaves a finished-looking set of derivatives; its staging folder and temporary
files are removed by the next run (``io/temporaries.py``), and its preprocessing, when it
got that far, is reused from the work folder (docs/reliability.md).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
import warnings
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.bids.discovery import (SubjectInputs, discover, load_filters, nothing_runnable,
                                          preflight_table)
from pseudopet_bids.bids.inputs import input_files, load_inputs
from pseudopet_bids.bids.participants import Participant, read_participants
from pseudopet_bids.config import RunConfig, SynthesisConfig
from pseudopet_bids.detect import asymmetry
from pseudopet_bids.detect.clusters import find_clusters
from pseudopet_bids.detect.confidence import ClusterInputs, Evidence, rank_clusters
from pseudopet_bids.detect.normative import normative_gm
from pseudopet_bids.detect.regions import cluster_table
from pseudopet_bids.detect.rules import (DetectionRule, RuleInputs, RuleReference,
                                         analysis_label, get_rule)
from pseudopet_bids.detect.search import detection_mask
from pseudopet_bids.detect.zmap import difference_map
from pseudopet_bids.device import (configure_determinism, needs_spawn, resolve_device,
                                   set_threads, used_device, worker_pool)
from pseudopet_bids.errors import (EXIT_OK, EXIT_PARTICIPANT_FAILED,
                                   PseudopetError, UsageError, naming_inputs)
from pseudopet_bids.io.files import atomic_write_text
from pseudopet_bids.io.temporaries import TMP_SUFFIX, clean_folders, private_tempdir, staging_name
from pseudopet_bids.models.registry import model_spec
from pseudopet_bids.preproc.normalize import normalize_pet
from pseudopet_bids.preproc.pipeline import Preprocessed, preprocess_cached
from pseudopet_bids.progress import SubjectStatus, participant_stages, timed
from pseudopet_bids.reports.citation import (cards_in_output, write_citation,
                                             z_references_in_output)
from pseudopet_bids.reports.subject import write_subject_report
from pseudopet_bids.reports.subject_figures import write_subject_figures
from pseudopet_bids.synthesis.apply import load_trained, synthesize_subject
from pseudopet_bids.synthesis.calibrate import calibrate_to_subject
from pseudopet_bids.synthesis.select import ModelChoice, choose_model
from pseudopet_bids.workflows import clinical, outputs, recap
from pseudopet_bids.workflows.evidence import resolve_evidence
from pseudopet_bids.workflows.recap import RunProgress

LOGGER = logging.getLogger(__name__)
#: Peak memory of one participant with the tissue model, rounded up (docs/performance.md).
GB_PER_PARTICIPANT = 3.0
#: Longest wait for the QC figures drawn by a process of their own (about 6 s of CPU); past it
#: they are left out, as a figure that fails (QC figures never fail the subject).
FIGURES_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Analysis:
    """What a participant-level run computes for every unit: the synthesis model, the
    detection rule and its reference, and the label of their outputs."""

    model: ModelChoice
    rule: DetectionRule
    reference: RuleReference | None
    label: str
    evidence: Evidence = Evidence()
    evidence_note: str = ""


def resolve_analysis(cfg: RunConfig, announce: bool = True) -> tuple[RunConfig, Analysis]:
    """Choose the model and the detection rule of a run and load what the rule needs.

    ``announce``: log how ``--model auto`` chose (the run does once; each participant, which
    resolves the analysis again in its own process, does not).

    Returns the config with the identities of what makes the outputs filled in (the trained
    weights' and the rule reference's sha256: part of the output hash) and the analysis.

    Raises
    ------
    InputError
        ``--model`` names no trained model (exit 66).
    UsageError
        The rule's reference is missing or does not match, or the model cannot serve the
        rule (exit 64).
    """
    model = choose_model(Path(cfg.input.output_dir), cfg.synthesis.model, announce)
    rule = get_rule(cfg.detection.z_reference)
    if rule.needs_samples and not (model_spec(model.architecture).stochastic
                                   and cfg.synthesis.n_samples > 1):
        raise UsageError(f"--z-reference {rule.name} needs {rule.needs[0]}; the model is "
                         f"{model.label} with --n-samples {cfg.synthesis.n_samples}", None,
                         "use --model syndiff (a trained SynDiff) with --n-samples 4, or "
                         "another --z-reference")
    if model.trained:  # the weights are part of what made the outputs
        cfg = cfg.replace(model_sha256=model.sha256)
    reference = None
    if rule.prepare is not None:
        reference = rule.prepare(Path(cfg.input.output_dir), model.label, model.sha256,
                                 cfg.synthesis.model)
        cfg = cfg.replace(normative_sha256=reference.sha256)
    evidence, note = resolve_evidence(cfg, model)
    cfg = cfg.replace(calibration_sha256=evidence.sha256)
    return cfg, Analysis(model, rule, reference, analysis_label(model.label, rule.name),
                         evidence, note)


# --------------------------------------------------------------------------- the run
def run_participant_level(cfg: RunConfig, prepare_output: Callable[[RunConfig], None]) -> int:
    """Discover, print the pre-flight table, process each runnable unit.

    ``prepare_output`` creates the output and work folders (exit 73): it is called once every
    input is known to be usable, so a refused run leaves nothing behind.
    """
    bids = Path(cfg.input.bids_dir)
    participants = read_participants(bids)
    inp = cfg.input
    units = discover(bids, inp.participant_label or None, inp.session_label or None,
                     load_filters(Path(inp.bids_filter_file) if inp.bids_filter_file else None),
                     Path(inp.bids_database_dir) if inp.bids_database_dir else None,
                     inp.allow_any_tracer, {k: Path(v) for k, v in inp.derivatives.items()})
    LOGGER.info("pre-flight:\n%s", preflight_table(units))
    runnable = [u for u in units if u.runnable]
    if not runnable:
        raise nothing_runnable(units, bids)
    _, analysis = resolve_analysis(cfg)  # fail before any work when the model is missing
    LOGGER.info("%s", analysis.evidence_note)
    # --device cuda without a GPU: usage error now, whatever the model; the record (config,
    # report) names the device really used (the tissue model runs on the CPU)
    device = used_device(cfg.execution.device, analysis.model.trained)
    if device != cfg.execution.device:
        LOGGER.info("device: %s (--device %s%s)", device, cfg.execution.device,
                    "" if analysis.model.trained else f"; the {analysis.model.label} model "
                    "runs on the CPU")
    cfg = cfg.replace(device=device)
    clinical.check_references(cfg, runnable)  # --dicom-reference: a wrong series, exit 66
    if analysis.model.trained:
        assert analysis.model.folder is not None
        # the whole model folder is checked (card, weights sha256, architecture) before any
        # output exists: a broken model is one clear error (66), not one failure per subject
        card = load_trained(analysis.model.folder, torch.device("cpu")).card
        LOGGER.info("model: %s (%s, %s preset, %s steps)", analysis.model.folder,
                    card["model"], card["preset"], card.get("steps_done"))
    prepare_output(cfg)
    der.init_output(Path(inp.output_dir), bids, inp.derivatives)
    t0 = time.monotonic()
    nprocs = cfg.execution.nprocs
    mem_gb = cfg.execution.mem_gb
    if mem_gb and nprocs > 1:
        fit = max(1, int(mem_gb // GB_PER_PARTICIPANT))
        if fit < nprocs:
            LOGGER.warning("--mem %.1f GB fits %d participant(s) at a time (about %.0f GB each): "
                           "using --nprocs %d", mem_gb, fit, GB_PER_PARTICIPANT, fit)
            nprocs = fit
    progress = RunProgress(len(runnable), min(nprocs, len(runnable)))

    def finished(outcome: recap.UnitOutcome) -> None:
        LOGGER.info("%s", progress.add(outcome, time.monotonic() - t0))

    if nprocs > 1 and len(runnable) > 1:
        # spawned when a learned model may go to a GPU: CUDA is already initialised here
        spawn = needs_spawn(cfg.execution.device, analysis.model.trained)
        with worker_pool(nprocs, spawn) as pool:
            futures = [pool.submit(run_unit, u, cfg, participants) for u in runnable]
            for future in as_completed(futures):
                finished(future.result())
    else:
        for unit in runnable:
            finished(run_unit(unit, cfg, participants))
    return finish_run(units, progress.outcomes, cfg, analysis.label, time.monotonic() - t0)


def finish_run(units: list[SubjectInputs], outcomes: list[recap.UnitOutcome], cfg: RunConfig,
               label: str, seconds: float) -> int:
    """Log the summary line, the recap table and where the outputs are; the exit code."""
    out = Path(cfg.input.output_dir)
    by_key = {o.key: o for o in outcomes}
    ordered = [by_key.get(u.key) or recap.UnitOutcome(u.key, recap.NOT_RUN,
                                                      error=u.skip_reason or "")
               for u in units]
    tables = {u.key: der.SubjectPaths(out, u.subject, u.session, u.pet).clusters(label)
              for u in units if u.pet is not None}
    failed = [o for o in ordered if o.status == recap.FAILED]
    LOGGER.info("%s\n%s\noutputs in %s: reports sub-<label>.html, cluster tables "
                "sub-<label>/[ses-<label>/]pet/*_desc-%sFocus_clusters.tsv, logs in logs/; "
                "work folder %s (preprocessing cache: reruns reuse it; remove it when no "
                "rerun is needed)", recap.summary_line(ordered, seconds),
                recap.recap_table(ordered, tables), out, label, cfg.execution.work_dir)
    for o in failed:
        LOGGER.error("  %s: %s", o.key, o.error)
    return EXIT_PARTICIPANT_FAILED if failed else EXIT_OK


def run_unit(unit: SubjectInputs, cfg: RunConfig, participants: dict[str, Participant]
             ) -> recap.UnitOutcome:
    """Run one unit and report how it ended: one unit's failure never stops the others;
    unexpected errors keep their traceback in the log file."""
    t0 = time.monotonic()

    def ended(status: str, error: str = "") -> recap.UnitOutcome:
        return recap.UnitOutcome(unit.key, status, time.monotonic() - t0, error)

    try:
        skipped = run_participant(unit, cfg, participants.get(unit.subject))
        return ended(recap.SKIPPED if skipped else recap.OK)
    except PseudopetError as exc:
        LOGGER.error("%s failed: %s", unit.key, exc)
        return ended(recap.FAILED, str(exc))
    except Exception as exc:  # noqa: BLE001 - keep other participants running
        LOGGER.debug("%s traceback", unit.key, exc_info=True)
        LOGGER.error("%s failed with an unexpected error: %s: %s (see the log file in "
                     "OUTPUT_DIR/logs; please report it)", unit.key, type(exc).__name__, exc)
        return ended(recap.FAILED, f"{type(exc).__name__}: {exc}")


def clean_stale(out: Path, work_dir: Path, paths: der.SubjectPaths, key: str) -> list[Path]:
    """Remove what killed runs of this subject left: staging folders and temporary files in
    the output folder, ``logs/``, the subject's folder, its work folder and ``WORK/tmp``
    (never a concurrent job's live ones: :mod:`pseudopet_bids.io.temporaries`)."""
    work = Path(work_dir)
    return clean_folders(((out, False), (out / "logs", False), (out / f"sub-{paths.subject}", True),
                          (work / key, True), (work / "tmp", False)), key)


def run_participant(unit: SubjectInputs, cfg: RunConfig, participant: Participant | None
                    ) -> bool:
    """Process one (subject, session) and write its derivatives (see module docstring).

    Its progress is kept in ``logs/<key>_status.json`` (:class:`SubjectStatus`). Returns
    whether it was skipped (finished earlier with the same settings).
    """
    out = Path(cfg.input.output_dir)
    final = der.SubjectPaths(out, unit.subject, unit.session, unit.pet)
    cfg, analysis = resolve_analysis(cfg, announce=False)
    model_lbl = analysis.model.label
    clean_stale(out, Path(cfg.execution.work_dir), final, unit.key)
    done, why = outputs.is_finished(final, cfg, model_lbl, analysis.label)
    status = SubjectStatus(final.status, unit.subject, unit.session,
                           participant_stages(analysis.model.architecture))
    if done and not cfg.execution.force:
        LOGGER.info("%s: %s skipped, %s (use --force to redo)", unit.key, analysis.label, why)
        if _report_outdated(out, unit.subject, final.config(analysis.label)):
            # the run that finished the analysis was killed while writing its report
            write_reports(out, cfg, unit.subject, participant)
        status.skipped(why)
        return True
    if final.config(analysis.label).exists():
        LOGGER.info("%s: redoing, %s", unit.key, "--force given" if done else why)
    try:
        # WORK/tmp is shared by the participants of a run: a folder of this process's own lets
        # a later run tell what a killed one left there (temporaries.py); a problem in the data
        # found by a processing step (errors.DataError) is reported naming the file concerned
        with (private_tempdir(Path(cfg.execution.work_dir) / "tmp"),
              naming_inputs(input_files(unit))):
            _process(unit, cfg, participant, status, analysis)
    except BaseException as exc:
        status.fail(exc)
        raise
    status.done()
    return False


def _process(unit: SubjectInputs, cfg: RunConfig, participant: Participant | None,
             status: SubjectStatus, analysis: Analysis) -> None:
    """The work of :func:`run_participant` once it is known to be needed."""
    out = Path(cfg.input.output_dir)
    final = der.SubjectPaths(out, unit.subject, unit.session, unit.pet)
    ex = cfg.execution
    set_threads(ex.omp_nthreads)
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    with timed(timings, "image intake", unit.key, status):
        images = load_inputs(unit)
    for note in unit.notes:
        LOGGER.info("%s: %s", unit.key, note)
    # with several threads, the preprocessing cache is compressed while the model runs
    pre = preprocess_cached(images, Path(ex.work_dir) / unit.key, cfg.preproc, ex.seed,
                            ex.omp_nthreads, unit.key, status=status,
                            background=ex.omp_nthreads > 1)
    timings.update(pre.timings)
    search = detection_mask(pre, cfg.detection)
    model = analysis.model
    with timed(timings, f"pseudo-normal PET ({model.architecture})", unit.key, status):
        assert pre.pet is not None  # a runnable unit has a PET
        reference = search if cfg.synthesis.normalization == "gm-median" else pre.mask
        pet_norm, scale, norm_info = normalize_pet(pre.pet, reference,
                                                   method=cfg.synthesis.normalization)
        pseudo_sd = None
        n_samples = 1
        if not model.trained:
            # a non-learned model, fitted to the subject's own PET (models/registry.py)
            spec = model_spec(model.architecture)
            predictor = spec.loader()(**spec.options(cfg.synthesis))
            # BLAS on one thread (the tissue fit: a 75k x 65 weighted Gram matrix per
            # reweighting): OpenBLAS threads spin while they wait, and on 2 cores busy with
            # other work 2 threads took 56 s of CPU instead of 5; one thread also gives the
            # same bits whatever --omp-nthreads
            with threadpool_limits(limits=1, user_api="blas"):
                pseudo_norm, model_info = predictor.predict(pet_norm, pre.tissues, pre.mask,
                                                            pre.voxel_sizes, aal_labels=pre.aal)
        else:
            assert model.folder is not None
            device = resolve_device(ex.device)
            configure_determinism(device, ex.deterministic)
            trained = load_trained(model.folder, device)
            LOGGER.info("%s: model %s (%s, %s preset) on %s", unit.key, model.folder,
                        trained.name, trained.card.get("preset"), device)
            pseudo_norm, pseudo_sd, model_info = synthesize_subject(
                trained, pre, search, device, cfg.synthesis.n_samples, ex.seed, status,
                unit.key)
            pseudo_norm, pseudo_sd, model_info["Calibration"] = calibrate_prediction(
                cfg.synthesis, pseudo_norm, pseudo_sd, pet_norm, pre, unit.key)
            if pseudo_sd is not None:
                n_samples = cfg.synthesis.n_samples
    det = cfg.detection
    with timed(timings, "detection", unit.key, status):
        diff = difference_map(pet_norm, pseudo_norm)
        z, z_info = analysis.rule.score(RuleInputs(
            diff=diff, pet=pet_norm, search=search, gm_prob=pre.tissues["GM"], brain=pre.mask,
            gm_threshold=det.gm_threshold, registration=pre.registration, key=unit.key,
            reference=analysis.reference, pseudo_sd=pseudo_sd))
        labels, clusters = find_clusters(z, search, float(np.prod(pre.voxel_sizes)),
                                         threshold=det.z_threshold,
                                         min_volume_mm3=det.cluster_min_volume,
                                         connectivity=det.connectivity)
        table = cluster_table(z, labels, clusters, pre.lobes, pre.affine,
                              pre.registration.points_to_template)
        # hemispheric asymmetry of the real PET (template space) and each cluster's confidence
        ai, ai_valid = asymmetry.subject_asymmetry(
            pet_norm, normative_gm(pre.tissues["GM"], pre.mask, det.gm_threshold),
            pre.registration)
        table, labels, confidence_info = rank_clusters(table, ClusterInputs(
            z=z, labels=labels, search=search, voxel_sizes=pre.voxel_sizes,
            threshold=det.z_threshold, ai=ai, ai_valid=ai_valid,
            cluster_voxels=asymmetry.cluster_voxels(labels, len(clusters), pre.registration),
            key=unit.key), analysis.evidence)
        lobes_asymmetry = asymmetry.lobe_table(ai, ai_valid, analysis.evidence.asymmetry,
                                               unit.key)
        del ai, ai_valid
    LOGGER.info("%s: %d cluster(s) >= %.0f mm3 at Z < -%.2f, by rank%s", unit.key,
                len(clusters), det.cluster_min_volume, det.z_threshold,
                "".join(f"\n    {r.cluster_id}. {r.tier} confidence, {r.region}: "
                        f"{r.volume_mm3 / 1000:.1f} ml, peak Z {r.peak_zscore:.2f}, corrected "
                        f"p {r.p_corrected:.3g}, asymmetry {r.asymmetry_index:+.1f} %"
                        for r in table.itertuples()))
    result = outputs.SubjectResult(
        images=images, pre=pre, pet=pet_norm * scale, pseudo=pseudo_norm * scale,
        pseudo_sd=None if pseudo_sd is None else pseudo_sd * scale, scale=scale,
        norm_info=norm_info, model_name=model.architecture, model_sha256=model.sha256,
        model_info=model_info, n_samples=n_samples, z=z, z_info={**z_info, **confidence_info},
        labels=labels, table=table, lobes_asymmetry=lobes_asymmetry)
    del pet_norm, pseudo_norm, pseudo_sd, diff  # 3 volumes less in memory while writing
    staging = out / staging_name(unit.key)
    try:
        with timed(timings, "writing derivatives", unit.key, status):
            spaths = der.SubjectPaths(staging, unit.subject, unit.session, unit.pet)
            items = outputs.subject_derivatives(spaths, result, cfg, unit, model.label,
                                                analysis.label)
            figure_args = (spaths, pre, result.pet, result.pseudo, result.pseudo_sd, z, labels,
                           model.label, analysis.label, det.z_threshold)
            if pre.cache_written is not None:
                pre.cache_written.result()  # its error, if any, fails the subject as before
            # with several threads, the QC figures are drawn by a process of their own while
            # the images are written; each file's bytes are the same either way
            drawer = _start_aside(write_subject_figures, figure_args) \
                if ex.omp_nthreads > 1 else None
            if drawer is None:
                outputs.write_derivatives(items, pre.affine, threads=ex.omp_nthreads)
                write_subject_figures(*figure_args)
            else:
                try:
                    outputs.write_derivatives(items, pre.affine, threads=ex.omp_nthreads)
                except BaseException:
                    drawer.kill()
                    raise
                finally:
                    _join_aside(drawer, staging, unit.key)
            with timed(timings, "clinical report", unit.key):  # PDF, --dicom-export
                clinical.write_clinical_outputs(spaths, result, cfg, unit, participant,
                                                model.label, analysis.label,
                                                analysis.rule.reference_name, timings)
            # the record of an earlier run goes first: killed while the final files are being
            # replaced, the analysis must not look finished with a mix of old and new files
            final.config(analysis.label).unlink(missing_ok=True)
            outputs.commit(staging, out)
        timings["total"] = round(time.monotonic() - t_start, 2)
        atomic_write_text(final.config(analysis.label), outputs.analysis_record(cfg, timings))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with timed(timings, "reports", unit.key, status):
        write_reports(out, cfg, unit.subject, participant)
    LOGGER.info("%s: finished in %.0f s", unit.key, timings["total"])


def calibrate_prediction(syn: SynthesisConfig, pseudo: np.ndarray, sd: np.ndarray | None,
                         pet: np.ndarray, pre: Preprocessed, key: str
                         ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """``--calibration`` of a learned prediction (:mod:`pseudopet_bids.synthesis.calibrate`):
    (pseudo-normal PET, its sample SD scaled alike, the sidecar record)."""
    if syn.calibration == "none":
        return pseudo, sd, {"Method": "none"}
    with threadpool_limits(limits=1, user_api="blas"):  # small Gram matrices; same bits always
        calibrated, gain, info = calibrate_to_subject(pseudo, pet, pre.tissues, pre.mask,
                                                      pre.voxel_sizes, pre.aal, syn.pet_fwhm)
    LOGGER.info("%s: prediction calibrated to the subject's PET, gains %s", key,
                ", ".join(f"{k.removeprefix('gm:')} {v:.2f}" for k, v in info["Gains"].items()))
    return calibrated, None if sd is None else (sd * gain).astype(np.float32), info


def _start_aside(draw: Callable[..., object], args: tuple[object, ...]
                 ) -> multiprocessing.process.BaseProcess | None:
    """Start ``draw(*args)`` in a forked child process; None where there is no fork (not
    Linux) or this process may not have children (a daemonic worker): the caller draws.

    matplotlib holds the GIL most of the time: drawn by a thread, the figures kept the writer
    threads waiting (writing the derivatives took as long as one after the other). A forked
    child has a GIL of its own and shares the volumes with this process (copy-on-write, not
    copied). It is started before the writer threads; the threads that exist then (BLAS, ITK
    and OpenMP pools) are idle. It dies with this process (a killed run leaves no process
    writing into its staging folder).
    """
    if not sys.platform.startswith("linux") or multiprocessing.current_process().daemon:
        return None
    child = multiprocessing.get_context("fork").Process(
        target=_aside, args=(os.getpid(), draw, args), name="pseudopet-figures", daemon=True)
    with warnings.catch_warnings():
        # Python >= 3.12 warns about forking a process that has threads (the idle pools above)
        warnings.simplefilter("ignore", DeprecationWarning)
        child.start()
    return child


def _aside(parent: int, draw: Callable[..., object], args: tuple[object, ...]) -> None:
    """The child of :func:`_start_aside`: SIGKILL when the parent ends (Linux
    ``PR_SET_PDEATHSIG``), then ``draw(*args)``."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent ended before the line above
        os._exit(1)
    draw(*args)


def _join_aside(child: multiprocessing.process.BaseProcess, staging: Path, key: str) -> None:
    """Wait for the figures' process (:data:`FIGURES_TIMEOUT_S` at most); when it did not
    end well, say so and remove the temporary file it may have left in the staging folder."""
    child.join(FIGURES_TIMEOUT_S)
    if child.is_alive():
        child.kill()
        child.join()
    if child.exitcode != 0:
        LOGGER.warning("%s: QC figures not all drawn (their process ended with exit code %s)",
                       key, child.exitcode)
        for tmp in staging.rglob(f"*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)


def write_reports(out: Path, cfg: RunConfig, subject: str, participant: Participant | None
                  ) -> None:
    """The subject's HTML report and the folder's citation boilerplate, both rebuilt from what
    is on disk (so they cover every model and session) and written atomically.

    A failure here is logged and does not fail the subject: its derivatives are complete.
    """
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
