"""Find each participant's T1w and FDG PET with pybids and decide who can run (pre-flight).

Rules (documented in README.md, "Inputs"):

- Units of work are (subject, session) pairs; a subject without sessions is one unit.
- **T1w**: files ``*_T1w.nii[.gz]`` in the same session first, else session-less ones, else any
  other session of the subject (MR and PET are often acquired on different days; the log says so).
  Among several: not contrast-enhanced (no ``ce-``) first, then the *highest* ``run-`` (a repeat is
  usually acquired because the earlier run was unusable), then the file name.
- **PET**: ``*_pet.nii[.gz]`` of the session whose tracer is FDG, from the ``trc-`` entity, else
  the sidecar's ``TracerName`` (spellings such as ``FDG``, ``[18F]FDG``, ``18F-FDG``,
  ``fluorodeoxyglucose`` are recognised). Other tracers are skipped unless ``allow_any_tracer``.
  Among several: the lowest ``run-``, then the file name.
- Headers are read here (cheap) so that empty, non-NIfTI and placeholder files (HTML pages,
  git-annex/LFS pointers, broken links) are reported in the pre-flight table, with the file and
  the fix, instead of failing later.
- PET sidecar checks that do not stop a run are reported as notes and warnings: ``FrameTimesStart``
  not matching the frames or not increasing (only ``FrameDuration`` weights the frames; a
  wrong ``FrameDuration`` stops the subject at image intake), ``Units`` missing, images not
  decay-corrected (a global scale per frame, removed by the intensity normalization).
- ``--participant-label`` given twice (``01`` and ``sub-01``) selects the subject once, as
  fMRIPrep does; an unknown label is a usage error (exit 64); a dataset without ``sub-*``
  folders is an input error (exit 66).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pseudopet_bids.bids.derivatives import subject_key

import nibabel as nib
from nibabel.spatialimages import SpatialImage

from pseudopet_bids.bids.entities import parse_entities
from pseudopet_bids.bids.reuse import Reused, build_layouts, find_reused
from pseudopet_bids.errors import (InputError, NoSelectionError, OutputError, PseudopetError,
                                   UsageError)
from pseudopet_bids.io.intake import describe_unreadable

LOGGER = logging.getLogger(__name__)
NIFTI = [".nii", ".nii.gz"]


@dataclass
class SubjectInputs:
    """What the pipeline needs for one (subject, session) and whether it can run."""

    subject: str
    session: str | None
    t1w: Path | None = None
    pet: Path | None = None
    pet_meta: dict[str, Any] = field(default_factory=dict)
    tracer: str | None = None
    n_frames: int | None = None
    skip_reason: str | None = None
    notes: list[str] = field(default_factory=list)
    reused: Reused = field(default_factory=Reused)
    #: The filter file's query left out images the unit has (its skip reason says which).
    filtered_out: bool = False

    @property
    def runnable(self) -> bool:
        return self.skip_reason is None

    @property
    def key(self) -> str:
        return subject_key(self.subject, self.session)


def is_fdg(name: str | None) -> bool:
    """True when a tracer name denotes [18F]FDG (case and punctuation insensitive).

    Accepted: ``FDG``, ``fdg``, ``[18F]FDG``, ``18F-FDG``, ``F-18 FDG``, ``fluorodeoxyglucose``,
    ``Fludeoxyglucose (18F)`` (the INN), ``2-deoxy-2-[18F]fluoro-D-glucose``. Not FDG: the
    galactose analogue ``[18F]FDGal`` and every tracer without deoxy-fluoro-glucose in its name.
    """
    if not name:
        return False
    text = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if "galactose" in text or "fdgal" in text:
        return False
    bare = re.sub(r"18f|f18", "", text)  # the isotope, wherever it is written
    return "fdg" in bare or ("glucose" in bare and "deoxy" in bare and "flu" in bare)


def _run(path: Path) -> int:
    value = parse_entities(path).get("run", "0")
    return int(value) if value.isdigit() else 0


def choose_t1w(candidates: list[Path]) -> Path:
    """Pick one T1w among several by the documented rule (see module docstring)."""
    return sorted(candidates, key=lambda p: ("ce" in parse_entities(p), -_run(p), p.name))[0]


def choose_pet(candidates: list[Path]) -> Path:
    """Pick one PET among several FDG candidates (lowest run, then name)."""
    return sorted(candidates, key=lambda p: (_run(p), p.name))[0]


#: Query keys the tool sets itself; a filter file changing them could pair one subject's PET
#: with another subject's T1w, or pick files that are not images.
FIXED_QUERY_KEYS = frozenset({"subject", "session", "datatype", "suffix", "extension",
                              "return_type", "scope", "target", "invalid_filters"})


def load_filters(path: Path | None) -> dict[str, dict[str, Any]]:
    """Read a ``--bids-filter-file`` (JSON: ``{"t1w": {...}, "pet": {...}}``, pybids queries)."""
    if path is None:
        return {}
    try:
        filters = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read the BIDS filter file ({exc})", path,
                         'give a JSON object such as {"t1w": {"acquisition": "mprage"}}') from exc
    if not isinstance(filters, dict) or not set(filters) <= {"t1w", "pet"}:
        raise UsageError("the BIDS filter file must be a JSON object with keys 't1w' and/or "
                         "'pet'", path, 'e.g. {"pet": {"reconstruction": "acdyn"}}')
    for kind, query in filters.items():
        if not isinstance(query, dict):
            raise UsageError(f"the filter of {kind!r} must be a JSON object of entities", path,
                             'e.g. {"t1w": {"acquisition": "mprage"}}')
        fixed = sorted(set(query) & FIXED_QUERY_KEYS)
        if fixed:  # these select which subject's files are used: never from a filter
            raise UsageError(f"the filter of {kind!r} may not set {', '.join(fixed)}", path,
                             "select subjects and sessions with --participant-label / "
                             "--session-label; filters choose among a subject's own files "
                             "(acquisition, reconstruction, run, tracer, ...)")
    return filters


def build_layout(bids_dir: Path, database_dir: Path | None = None):
    """Index a BIDS dataset with pybids (no pybids validation; our own validator runs before).

    With ``database_dir`` (``--bids-database-dir``), an existing database is only read, and a
    new one is built in a private folder beside it and renamed into place: participant jobs
    started together (SLURM arrays) never write to one SQLite file at once; the first finished
    is kept, the others use it.
    """
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    def layout(**extra):
        return BIDSLayout(str(bids_dir), validate=False, derivatives=False,
                          indexer=BIDSLayoutIndexer(validate=False, index_metadata=False),
                          **extra)

    try:
        if database_dir is None:
            return layout()
        database_dir = Path(database_dir)
        if not (database_dir / "layout_index.sqlite").exists():
            _build_database(database_dir, layout)
        return layout(database_path=str(database_dir))
    except OSError as exc:
        raise OutputError(f"cannot create the pybids database ({exc.strerror or exc})",
                          database_dir, "choose a writable --bids-database-dir") from exc
    except Exception as exc:
        raise InputError(f"pybids cannot index the dataset ({type(exc).__name__}: {exc})",
                         bids_dir, "check dataset_description.json and the folder layout "
                         "(run bids-validator)") from exc


def _build_database(database_dir: Path, layout) -> None:
    """Index into a private folder, then rename it to ``database_dir`` unless another job did."""
    import os
    import shutil
    import socket

    database_dir.parent.mkdir(parents=True, exist_ok=True)
    private = database_dir.with_name(f".{database_dir.name}.{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(private, ignore_errors=True)
    try:
        layout(database_path=str(private))
        try:
            database_dir.rmdir()  # an empty folder (made by the user): take its place
        except OSError:
            pass  # absent, or not empty
        try:
            os.rename(private, database_dir)
        except OSError:
            if not (database_dir / "layout_index.sqlite").exists():
                raise
            LOGGER.debug("pybids database %s was built by another job", database_dir)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def read_sidecar(path: Path) -> dict[str, Any]:
    """Merged JSON metadata of an image following the BIDS inheritance principle.

    Sidecars are read from the image folder up to the dataset root (``sub-``/``ses-`` levels and
    the root), the closest one winning, matching entities as BIDS prescribes.
    """
    ents = parse_entities(path)
    suffix = path.name.split("_")[-1].split(".")[0]
    meta: dict[str, Any] = {}
    folders = []
    folder = path.parent
    while True:
        folders.append(folder)
        if (folder / "dataset_description.json").exists() or folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(folders):
        for js in sorted(folder.glob(f"*{suffix}.json")):
            js_ents = parse_entities(js)
            if js.name.split("_")[-1] != f"{suffix}.json":
                continue
            if all(ents.get(k) == v for k, v in js_ents.items()):
                try:
                    # utf-8-sig: a byte-order mark (Windows editors) is not an error
                    content = json.loads(js.read_text(encoding="utf-8-sig"))
                except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError
                    raise InputError(f"invalid JSON sidecar ({exc})", js,
                                     "fix the JSON syntax (e.g. with a JSON linter); it must "
                                     "be UTF-8 text") from exc
                if not isinstance(content, dict):
                    raise InputError(f"invalid JSON sidecar (a {type(content).__name__}, not "
                                     "an object of metadata fields)", js,
                                     'write the metadata as one JSON object {"Field": value}')
                meta.update(content)
    return meta


def _rel(path: Path, root: Path | None) -> str:
    """``sub-01/pet/sub-01_pet.nii.gz``: the path inside the dataset, for messages."""
    try:
        return Path(path).relative_to(root).as_posix() if root is not None else str(path)
    except ValueError:
        return str(path)


def _header_shape(path: Path, root: Path | None = None
                  ) -> tuple[tuple[int, ...] | None, str | None]:
    """The image shape from its header, or why the file cannot be used (with the fix)."""
    name = _rel(path, root)
    known = describe_unreadable(path)
    if known is not None:
        return None, f"{name} {known[0]} -> {known[1]}"
    try:
        img = cast(SpatialImage, nib.load(str(path)))  # nibabel types load() as any image
        return tuple(img.header.get_data_shape()), None
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        return None, (f"{name} is not a readable NIfTI ({reason}) -> "
                      "re-export it as NIfTI (e.g. dcm2niix) or re-download it")


def discover(bids_dir: Path, participant_labels: list[str] | None = None,
             session_labels: list[str] | None = None, filters: dict | None = None,
             database_dir: Path | None = None, allow_any_tracer: bool = False,
             derivatives: dict[str, Path] | None = None, report_skipped: bool = True
             ) -> list[SubjectInputs]:
    """Find the inputs of every selected (subject, session) and decide who can run.

    Parameters
    ----------
    bids_dir
        BIDS dataset root.
    participant_labels, session_labels
        Selections (labels without ``sub-``/``ses-``); None selects all.
    filters
        Parsed ``--bids-filter-file``.
    database_dir
        pybids database folder to create or reuse.
    allow_any_tracer
        Accept non-FDG PET (the method is only validated for FDG).
    derivatives
        ``-d/--derivatives`` datasets (name → root) whose anatomical and PET preprocessing is
        reused (:mod:`pseudopet_bids.bids.reuse`).
    report_skipped
        Log one warning per skipped unit with the file and the fix (the participant level);
        training, which uses T1w-only controls, decides itself.

    Returns
    -------
    list of SubjectInputs
        One per (subject, session), runnable or with a skip reason.

    Raises
    ------
    UsageError
        A requested participant label does not exist (exit 64).
    NoSelectionError
        The selection matched no subject/session (exit 18).
    """
    filters = filters or {}
    layout = build_layout(bids_dir, database_dir)
    subjects = sorted(layout.get_subjects())
    if not subjects:
        raise InputError("the dataset holds no participants (no sub-<label> folders with "
                         "images)", bids_dir, "point BIDS_DIR to the root of the dataset that "
                         "contains the sub-<label> folders")
    if participant_labels:
        repeated = sorted({lb for lb in participant_labels if participant_labels.count(lb) > 1})
        if repeated:  # fMRIPrep's rule: a label named twice selects the participant once
            LOGGER.info("participant label(s) given more than once, processed once: %s",
                        ", ".join(repeated))
        unknown = sorted(set(participant_labels) - set(subjects))
        if unknown:
            raise UsageError(f"participant label(s) not in the dataset: {', '.join(unknown)} "
                             f"(found: {', '.join(subjects) or 'none'})", bids_dir,
                             "check --participant-label against the sub-* folders")
        subjects = [s for s in subjects if s in participant_labels]
    deriv_layouts = build_layouts(derivatives) if derivatives else {}
    units: list[SubjectInputs] = []
    for subject in subjects:
        sessions = sorted(layout.get_sessions(subject=subject)) or [None]
        if session_labels:
            sessions = [s for s in sessions if s in session_labels]
        for session in sessions:
            unit = _discover_unit(layout, subject, session, filters, allow_any_tracer)
            if deriv_layouts:
                _attach_reused(unit, deriv_layouts, derivatives or {})
            units.append(unit)
    if not units:
        found = sorted(layout.get_sessions(subject=subjects))
        raise NoSelectionError(
            "the participant/session selection matched nothing (sessions of the selected "
            f"participants: {', '.join(found) or 'none'})", bids_dir,
            "check --participant-label / --session-label / the filter file")
    if report_skipped:
        _warn_skipped(units, Path(layout.root))
    return units


def _orphan_sidecars(root: Path, unit: SubjectInputs, datatype: str, suffix: str) -> list[str]:
    """Sidecars ``*_<suffix>.json`` of the unit without an image beside them."""
    folder = root / f"sub-{unit.subject}" / (f"ses-{unit.session}" if unit.session else "")
    found = []
    for js in sorted((folder / datatype).glob(f"*_{suffix}.json")):
        stem = js.name[:-len(".json")]
        if not any(js.with_name(stem + ext).exists() or js.with_name(stem + ext).is_symlink()
                   for ext in NIFTI):
            found.append(_rel(js, root))
    return found


def _warn_skipped(units: list[SubjectInputs], root: Path) -> None:
    """One warning per skipped unit with what to do about it (the table only says why)."""
    where = {"no PET image": ("pet", "pet", "PET (sub-<label>[_ses-<label>]_pet.nii[.gz])"),
             "no T1w image": ("anat", "T1w", "T1w (sub-<label>[_ses-<label>]_T1w.nii[.gz])")}
    for unit in units:
        if unit.runnable:
            continue
        reason = unit.skip_reason or ""
        if reason in where:
            datatype, suffix, what = where[reason]
            orphans = _orphan_sidecars(root, unit, datatype, suffix)
            folder = _rel(root / f"sub-{unit.subject}" / (f"ses-{unit.session}"
                                                          if unit.session else "") / datatype,
                          root)
            reason += (f" ({', '.join(orphans)}: a sidecar without its image)" if orphans
                       else f" in {folder}/")
            reason += f" -> add the {what}, or leave the participant out (--participant-label)"
        LOGGER.warning("%s skipped: %s", unit.key, reason)


def _files(layout, **query) -> list[Path]:
    return [Path(f.path) for f in layout.get(return_type="object", extension=NIFTI, **query)]


def _discover_unit(layout, subject: str, session: str | None, filters: dict,
                   allow_any_tracer: bool) -> SubjectInputs:
    unit = SubjectInputs(subject=subject, session=session)
    root = Path(layout.root)
    ses_query = {"session": session} if session else {}
    pets = _files(layout, subject=subject, datatype="pet", suffix="pet",
                  **{**ses_query, **filters.get("pet", {})})
    t1_query = {"subject": subject, "datatype": "anat", "suffix": "T1w", **filters.get("t1w", {})}
    t1s = _files(layout, **t1_query, **ses_query)
    if not t1s and session:
        t1s = [p for p in _files(layout, **t1_query) if "ses" not in parse_entities(p)]
        if not t1s:
            t1s = _files(layout, **t1_query)
        if t1s:
            unit.notes.append("T1w taken from another session")
    if len(t1s) > 1:
        unit.notes.append(f"{len(t1s)} T1w images, chose {choose_t1w(t1s).name}")
    if t1s:
        unit.t1w = choose_t1w(t1s)
    fdg: list[Path] = []
    others: list[Path] = []
    tracers = []
    for pet in pets:
        try:
            meta = read_sidecar(pet)
        except InputError as exc:
            unit.skip_reason = unit.skip_reason or str(exc)
            continue
        tracer = parse_entities(pet).get("trc") or meta.get("TracerName")
        tracers.append(str(tracer) if tracer else "unknown: no trc- entity and no TracerName")
        (fdg if is_fdg(tracer) else others).append(pet)
    if allow_any_tracer and not fdg:  # FDG first even when any tracer is allowed
        fdg = others
    if not pets and filters.get("pet") and _files(layout, subject=subject, datatype="pet",
                                                  suffix="pet", **ses_query):
        unit.filtered_out = True
        unit.skip_reason = unit.skip_reason or (
            f"no PET image matches the filter file's \"pet\" query {filters['pet']}")
    elif not pets:
        unit.skip_reason = unit.skip_reason or "no PET image"
    elif not fdg:
        unit.skip_reason = unit.skip_reason or (
            f"PET tracer is not FDG ({', '.join(sorted(set(tracers)))}) in "
            f"{', '.join(_rel(p, root) for p in others)}; "
            "use --allow-any-tracer to run anyway" + (
                ", or add \"TracerName\": \"FDG\" to the JSON sidecar if it is FDG"
                if any(t.startswith("unknown") for t in tracers) else ""))
    else:
        if len(fdg) > 1:
            unit.notes.append(f"{len(fdg)} FDG PET images, chose {choose_pet(fdg).name}")
        unit.pet = choose_pet(fdg)
        try:
            unit.pet_meta = read_sidecar(unit.pet)
        except InputError as exc:
            unit.skip_reason = unit.skip_reason or str(exc)
        unit.tracer = parse_entities(unit.pet).get("trc") or unit.pet_meta.get("TracerName")
    for path in (unit.t1w, unit.pet):
        if path is not None and unit.skip_reason is None:
            shape, unit.skip_reason = _header_shape(path, root)
            if path == unit.pet and shape is not None:
                unit.n_frames = int(shape[3]) if len(shape) > 3 else 1
    if unit.pet is not None and unit.skip_reason is None:
        _check_pet_meta(unit, root)
    if not t1s and filters.get("t1w") and _files(layout, subject=subject, datatype="anat",
                                                 suffix="T1w"):
        unit.filtered_out = unit.skip_reason is None
        unit.skip_reason = unit.skip_reason or (
            f"no T1w image matches the filter file's \"t1w\" query {filters['t1w']}")
    if not t1s:  # decided last: a T1w of a --derivatives dataset may stand in for it
        unit.skip_reason = unit.skip_reason or "no T1w image"
    return unit


def nothing_runnable(units: list[SubjectInputs], bids_dir: Path) -> PseudopetError:
    """The error of a run in which no unit can run: the filter file selected nothing (exit 18)
    when it left out a unit's images, else required inputs are missing (exit 66)."""
    if any(u.filtered_out for u in units):
        return NoSelectionError("the filter file matched no image that a participant needs "
                                "(see the pre-flight table)", bids_dir,
                                "check the --bids-filter-file queries against the file names "
                                "and sidecars")
    return InputError("no participant has the inputs it needs (see the pre-flight table)",
                      bids_dir, "each participant needs a T1w and an FDG PET image")


def _check_pet_meta(unit: SubjectInputs, root: Path) -> None:
    """Notes and warnings about PET metadata that do not stop the run (module docstring)."""
    meta, pet = unit.pet_meta, unit.pet
    assert pet is not None  # called for a unit with a PET
    sidecar = _rel(pet.with_name(pet.name.split(".nii")[0] + ".json"), root)

    def warn(problem: str, fix: str) -> None:
        unit.notes.append(problem)
        LOGGER.warning("%s: %s: %s -> %s", unit.key, sidecar, problem, fix)

    if not meta.get("Units"):
        unit.notes.append("PET Units missing (recorded as n/a; intensities are normalized)")
    if meta.get("ImageDecayCorrected") is False:
        unit.notes.append("PET not decay-corrected (a global scale per frame, removed by the "
                          "intensity normalization)")
    starts = meta.get("FrameTimesStart")
    if starts is None or unit.n_frames is None:
        return
    try:
        starts = [float(x) for x in (starts if isinstance(starts, list) else [starts])]
    except (TypeError, ValueError):
        warn("FrameTimesStart is not a list of numbers", "fix FrameTimesStart (seconds)")
        return
    if len(starts) != unit.n_frames:
        warn(f"FrameTimesStart lists {len(starts)} frame(s) but the image has {unit.n_frames}; "
             "frames are weighted by FrameDuration only",
             "check that the sidecar belongs to this image and fix FrameTimesStart")
    elif any(b <= a for a, b in zip(starts, starts[1:])):
        warn("FrameTimesStart is not increasing; frames are weighted by FrameDuration only",
             "fix FrameTimesStart (start of each frame in seconds, in acquisition order)")


def _attach_reused(unit: SubjectInputs, layouts: dict, datasets: dict[str, Path]) -> None:
    """Find the unit's reusable derivatives; a T1w found only there makes the unit runnable."""
    unit.reused = find_reused(layouts, datasets, unit.subject, unit.session, unit.t1w, unit.pet)
    unit.notes.extend(unit.reused.notes)
    if unit.skip_reason == "no T1w image" and unit.reused.has("t1w"):
        unit.skip_reason = None
    if unit.reused.problem and unit.skip_reason is None:
        unit.skip_reason = unit.reused.problem


def preflight_table(units: list[SubjectInputs]) -> str:
    """A plain-text table: subject × session × inputs → will run / skipped because …"""
    reuse = any(u.reused.files for u in units)
    rows = [("subject", "session", "T1w", "PET", "tracer", "frames")
            + (("reused derivatives",) if reuse else ()) + ("decision",)]
    for u in units:
        rows.append((f"sub-{u.subject}", u.session or "-", u.t1w.name if u.t1w else "-",
                     u.pet.name if u.pet else "-", str(u.tracer or "-"),
                     str(u.n_frames or "-")) + ((u.reused.summary(),) if reuse else ()) + (
                     "will run" + (f" ({'; '.join(u.notes)})" if u.notes else "")
                     if u.runnable else f"skipped: {u.skip_reason}",))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join(lines)
