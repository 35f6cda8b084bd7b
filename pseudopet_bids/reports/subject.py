"""Per-participant visual report: the quality-check figures and ``OUTPUT_DIR/sub-<L>.html``.

:func:`write_subject_report` builds the page **from the files on disk**, so it covers every
session, PET, model and analysis present, whichever job wrote them; it references only figures
that exist, by relative path, and loads nothing from the network.

Figures are made by :mod:`subject_figures` (names there).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.bids.participants import read_participants
from pseudopet_bids.config import RunConfig, flatten_record
from pseudopet_bids.detect.rules import get_rule, parse_analysis_label, rule_order
from pseudopet_bids.io import files
from pseudopet_bids.models.registry import TISSUE
from pseudopet_bids.reports import html as H
from pseudopet_bids.reports import runlog, viewer
from pseudopet_bids.reports.subject_figures import (FRAME_SUFFIX, anat_figure,  # noqa: F401
                                                    pet_figure_path, write_subject_figures)

LOGGER = logging.getLogger(__name__)


# --------------------------------------------------------------------------- on-disk discovery

@dataclass
class _Pet:
    prefix: str
    models: list[str] = field(default_factory=list)
    analyses: list[str] = field(default_factory=list)


@dataclass
class _Unit:
    """One (subject, session) folder on disk."""

    paths: der.SubjectPaths
    pets: list[_Pet] = field(default_factory=list)

    @property
    def session(self) -> str | None:
        return self.paths.session


def _paths(output_dir: Path, subject: str, session: str | None, pet_prefix: str
           ) -> der.SubjectPaths:
    return der.SubjectPaths(output_dir, subject, session, Path(f"{pet_prefix}_pet.nii.gz"))


def discover(output_dir: Path, subject: str) -> list[_Unit]:
    """Sessions, PETs, models and analyses of one subject, from the files on disk."""
    root = Path(output_dir) / f"sub-{subject}"
    folders: list[tuple[str | None, Path]] = []
    if (root / "anat").is_dir() or (root / "pet").is_dir():
        folders.append((None, root))
    for ses in sorted(p for p in root.glob("ses-*") if p.is_dir()):
        folders.append((ses.name[4:], ses))
    units = []
    for session, folder in folders:
        pets: dict[str, _Pet] = {}
        pet_dir = folder / "pet"
        names = sorted(p.name for p in pet_dir.iterdir()) if pet_dir.is_dir() else []
        for name in names:
            found = der.parse_pet_output(name)
            if found is None:
                continue
            pet = pets.setdefault(found.prefix, _Pet(found.prefix))
            if found.kind == "pseudonormal" and found.label not in pet.models:
                pet.models.append(found.label)
            elif found.kind in ("zmap", "clusters") and found.label not in pet.analyses:
                pet.analyses.append(found.label)
        first = next(iter(pets), der.subject_key(subject, session))
        unit = _Unit(_paths(output_dir, subject, session, first), list(pets.values()))
        for pet in unit.pets:
            pet.models.sort()
            pet.analyses.sort(key=analysis_order)
        units.append(unit)
    return units


def analysis_order(analysis: str) -> tuple[str, int, str]:
    """Sort key of analysis labels: by model, then by detection rule in registry order (the
    paper's rule first)."""
    model, rule = parse_analysis_label(analysis)
    return model, rule_order(rule), analysis


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _read_tsv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                           dtype={"region": str, "participant_id": str, "session": str,
                                  "group": str, "focus": str})
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None


def _rel(page_dir: Path, target: Path) -> str:
    return target.resolve().relative_to(page_dir.resolve()).as_posix()


def _figure(page_dir: Path, path: Path | None, caption: str) -> str:
    if path is None or not path.is_file():
        return f'<p class="muted">(figure not available: {H.esc(caption)})</p>'
    return H.figure_html(_rel(page_dir, path), caption)


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


# --------------------------------------------------------------------------- participant info

def _participant_info(output_dir: Path, subject: str, participant, configs: list[Path]
                      ) -> tuple[str | None, tuple[str, ...]]:
    """(group, foci) of a subject: the argument, else ``group/subjects.tsv``, else the input
    dataset's ``participants.tsv`` named in a run config; (None, ()) when unknown."""
    if participant is not None:
        return getattr(participant, "group", None), tuple(getattr(participant, "foci", ()) or ())
    table = _read_tsv(Path(output_dir) / "group" / "subjects.tsv")
    if table is not None and {"participant_id", "group"} <= set(table.columns):
        rows = table[table["participant_id"] == f"sub-{subject}"]
        if len(rows):
            focus = rows.iloc[0].get("focus")
            focus = "" if pd.isna(focus) else str(focus)
            foci = tuple(f for f in focus.split(";") if f and f != "n/a")
            group = rows.iloc[0]["group"]
            return (None if pd.isna(group) else str(group)), foci
    for config in configs:
        bids_dir = _read_toml(config).get("pseudopet", {}).get("bids_dir")
        if bids_dir and (Path(bids_dir) / "participants.tsv").is_file():
            try:
                info = read_participants(Path(bids_dir)).get(subject)
            except Exception:  # an unreadable participants.tsv only loses this summary line
                info = None
            if info is not None:
                return info.group, tuple(info.foci)
            break
    return None, ()


# --------------------------------------------------------------------------- methods

def _model_card(output_dir: Path, model: str) -> dict | None:
    return der.model_cards(output_dir).get(model) or None


def methods_block(output_dir: Path, config: Path | None, model: str) -> str | None:
    """Methods text (HTML) of one analysis from its run config, or None when the citation
    module or the config is unavailable."""
    try:  # optional by design: the reports are written without it (test_group_report.py)
        from pseudopet_bids.reports import citation
    except ImportError:
        return None
    try:
        if config is not None and config.is_file():
            cfg = RunConfig.from_toml(config)
            card = None if model == TISSUE else _model_card(output_dir, model)
            markdown = citation.methods_markdown(cfg, card, citation.software_versions())
            return citation.methods_html(markdown)
        md = Path(output_dir) / "logs" / "CITATION.md"
        if md.is_file():
            return citation.methods_html(md.read_text(encoding="utf-8"))
    except Exception as exc:  # the methods text is optional: never fail the report for it
        LOGGER.warning("methods text not written into the report: %s: %s",
                       type(exc).__name__, exc)
    return None


# --------------------------------------------------------------------------- page sections

def _viewer_block(paths: der.SubjectPaths, pet: _Pet,
                  tables: dict[str, tuple[pd.DataFrame | None, pd.DataFrame]],
                  fallback: list[str]) -> str | None:
    """The interactive viewer of one PET (:mod:`viewer`), or None when its images are
    missing; a failure only loses the viewer, never the report."""
    try:
        return viewer.pet_viewer(paths, pet.models, pet.analyses, tables, "\n".join(fallback))
    except Exception as exc:  # the static figures remain
        LOGGER.warning("interactive viewer of %s not written: %s: %s", pet.prefix,
                       type(exc).__name__, exc)
        return None


CLUSTER_VIEW = (("cluster_id", "rank", 0), ("tier", "confidence", None),
                ("region", "region", None),
                ("region_fraction", "share in region", "pct"), ("volume_mm3", "volume (ml)", "ml"),
                ("peak_zscore", "peak Z", 2), ("mean_zscore", "mean Z", 2),
                ("p_corrected", "corrected p", "p"), ("asymmetry_index", "asymmetry (%)", 1),
                ("asymmetry_z", "asymmetry Z", 2))


def cluster_view(table: pd.DataFrame | None) -> pd.DataFrame:
    """A readable cluster table in rank order: confidence tier, region, volume in ml, Z,
    corrected p, asymmetry, peak coordinates (T1w and template)."""
    if table is None or table.empty:
        return pd.DataFrame()
    out = pd.DataFrame()
    for col, title, kind in CLUSTER_VIEW:
        if col not in table:
            continue
        values = table[col]
        if kind == "pct":
            out[title] = [f"{v:.0%}" if pd.notna(v) else "n/a" for v in values]
        elif kind == "ml":
            out[title] = [f"{v / 1000:.2f}" if pd.notna(v) else "n/a" for v in values]
        elif kind is None:
            out[title] = [str(v) if pd.notna(v) else "n/a" for v in values]
        elif kind == "p":
            out[title] = [("< 0.001" if v < 0.001 else f"{v:.3f}") if pd.notna(v) else "n/a"
                          for v in values]
        else:
            out[title] = [_fmt(float(v), kind) if pd.notna(v) else "n/a" for v in values]
    if "p_method" in table and len(table):
        out["p from"] = [str(v).split(" ")[0] if pd.notna(v) else "n/a"
                         for v in table["p_method"]]
    for cols, title in ((("peak_x_mm", "peak_y_mm", "peak_z_mm"), "peak, T1w (mm)"),
                        (("peak_template_x_mm", "peak_template_y_mm", "peak_template_z_mm"),
                         "peak, template (mm)")):
        if set(cols) <= set(table.columns):
            out[title] = ["(" + ", ".join(_fmt(float(r[c]), 0) if pd.notna(r[c]) else "n/a"
                                           for c in cols) + ")" for _, r in table.iterrows()]
    return out


def _confidence_note(table: pd.DataFrame) -> str:
    """How to read the tiers, and how the p-values were obtained (the fallback said plainly)."""
    methods = sorted({str(v) for v in table.get("p_method", pd.Series(dtype=str)).dropna()})
    text = ("Confidence: <b>high</b> = significant cluster (corrected p ≤ 0.05) and asymmetric "
            "beyond the control range; <b>possible</b> = one of the two; <b>low</b> = neither "
            "(docs/detection.md). Every brain has some clusters at this voxel threshold; "
            "low-confidence clusters are what healthy brains show.")
    if methods:
        text += " Corrected p from: " + "; ".join(H.esc(m) for m in methods) + "."
    if any(m.startswith("random-field") for m in methods):  # text is HTML: not H.note
        return (f'<p class="note">{text} Without healthy controls the random-field p-value and '
                "the fixed asymmetry cut-off are liberal fallbacks: no cluster is rated high, "
                "and a possible cluster is a lead to check, not a finding.</p>")
    return f"<p>{text}</p>"


def _lobe_view(lobes: pd.DataFrame) -> pd.DataFrame:
    """The per-lobe asymmetry table, formatted."""
    return pd.DataFrame({
        "region": lobes["region"].astype(str),
        "asymmetry (%)": [_fmt(float(v), 1) if pd.notna(v) else "n/a"
                          for v in lobes["asymmetry_index"]],
        "asymmetry Z": [_fmt(float(v), 2) if pd.notna(v) else "n/a"
                        for v in lobes["asymmetry_z"]],
        "beyond normal": ["yes" if str(v).lower() == "true" else "no"
                          for v in lobes["asymmetric"]],
        "reference": lobes["reference"].astype(str)})


def _provenance(paths: der.SubjectPaths, analysis: str, model: str, config: Path) -> str:
    side = _read_json(paths.zmap(analysis, ".json")) or _read_json(
        paths.focus_mask(analysis, ".json"))
    toml = _read_toml(config) if config.is_file() else {}
    run = flatten_record(toml.get("pseudopet", {}))
    ref = parse_analysis_label(analysis)[1]
    items: dict[str, object] = {
        "pseudopet version": side.get("pseudopetVersion", run.get("version", "n/a")),
        "model": f"{side.get('Model', model)} (label {model})",
        "model sha256": side.get("ModelSHA256", "n/a"),
        "samples": side.get("NSamples", run.get("n_samples", "n/a")),
        "seed": side.get("Seed", run.get("seed", "n/a")),
        "Z reference": side.get("ZReference", ref),
    }
    if side.get("NormativeModel"):
        items["normative model"] = f"{side['NormativeModel']} ({side.get('NormativeSHA256', '')})"
    for key, label in (("ZThreshold", "Z threshold"),
                       ("ClusterMinVolume_mm3", "minimum cluster volume (mm³)"),
                       ("GMThreshold", "GM threshold"), ("Connectivity", "connectivity"),
                       ("SearchRegion", "search region")):
        if key in side:
            items[label] = side[key]
    norm = side.get("IntensityNormalization")
    if isinstance(norm, dict):
        items["PET normalisation"] = (f"{norm.get('Method', 'n/a')}, scale "
                                      f"{_fmt(norm.get('Scale'), 4)}")
    for key, label in (("skullstrip", "skull stripping"), ("pet_fwhm", "PET FWHM (mm)"),
                       ("device", "device")):
        if key in run:
            items[label] = run[key]
    first = config.read_text(encoding="utf-8").splitlines()[0] if config.is_file() else ""
    match = re.search(r"output hash (\w+)", first)
    if match:
        items["output hash"] = match.group(1)
    items["run config"] = config.relative_to(paths.root).as_posix() if config.is_file() \
        else "missing (the analysis did not finish, or its config was removed)"
    sources = side.get("Sources") or []
    if sources:
        items["inputs"] = "; ".join(str(s) for s in sources)
    software = toml.get("software")
    if isinstance(software, dict) and software:
        items["software"] = ", ".join(f"{k} {v}" for k, v in software.items())
    body = H.key_values(items)
    timings = toml.get("timings_s")
    if isinstance(timings, dict) and timings:
        frame = pd.DataFrame({"step": list(timings),
                              "seconds": [float(v) for v in timings.values()]})
        body += H.table_html(frame, "{:.1f}", caption="Run time per step")
    return body


def _summary_table(units: list[_Unit], foci: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for unit in units:
        for pet in unit.pets:
            paths = _paths(unit.paths.root, unit.paths.subject, unit.session, pet.prefix)
            for analysis in pet.analyses:
                model, reference = parse_analysis_label(analysis)
                table = _read_tsv(paths.clusters(analysis))
                finished = paths.config(analysis).is_file()
                regions = [str(r) for r in table["region"]] if table is not None and \
                    "region" in table else []
                row = {"session": unit.session or "n/a", "PET": pet.prefix,
                       "analysis": analysis, "model": model, "Z reference": reference,
                       "status": "finished" if finished else "incomplete",
                       "clusters": len(regions) if table is not None else "n/a",
                       "regions (top-ranked first)": "; ".join(dict.fromkeys(regions))
                       or "none",
                       "high-confidence clusters": (int((table["tier"] == "high").sum())
                                                    if table is not None and "tier" in table
                                                    else "n/a"),
                       "total volume (ml)": (f"{table['volume_mm3'].sum() / 1000:.2f}"
                                             if table is not None and "volume_mm3" in table
                                             and len(table) else "0"),
                       "min peak Z": (_fmt(float(table["peak_zscore"].min()))
                                      if table is not None and "peak_zscore" in table
                                      and len(table) else "n/a")}
                if foci:
                    row["focus found (any / top-ranked)"] = (
                        f"{'yes' if set(regions) & set(foci) else 'no'} / "
                        f"{'yes' if regions and regions[0] in foci else 'no'}"
                        if regions else "no cluster")
                rows.append(row)
    return pd.DataFrame(rows)


def _registration_figure(page_dir: Path, registered: Path, reference: Path,
                         labels: tuple[str, str], caption: str) -> str:
    """The flicker of a registration (reference and registered image in turn), or the
    registered image alone when the reference frame is missing (outputs of older versions)."""
    if registered.is_file() and reference.is_file():
        return H.flicker_html(_rel(page_dir, reference), labels[0], _rel(page_dir, registered),
                              labels[1], caption + " The two images alternate (the pointer "
                              "over them stops it): anatomy that moves between them is "
                              "misaligned.")
    return _figure(page_dir, registered, caption)


@functools.lru_cache(maxsize=8192)
def _coreg_metric(path: Path, mtime_ns: int) -> float | None:
    """The ``Coregistration.Metric`` of a ``desc-preproc_pet.json`` (cached per version of the
    file: the group level writes every subject's page)."""
    value = _read_json(path).get("Coregistration", {}).get("Metric")
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _folder_coreg_metrics(output_dir: Path) -> dict[Path, float]:
    """Coregistration metric of every PET of an output folder."""
    out = {}
    name = der.PET_OUTPUTS["preproc"].replace(".nii.gz", ".json")
    for path in sorted(Path(output_dir).glob(f"sub-*/pet/*_{name}")) + sorted(
            Path(output_dir).glob(f"sub-*/ses-*/pet/*_{name}")):
        try:
            value = _coreg_metric(path, path.stat().st_mtime_ns)
        except OSError:
            continue
        if value is not None:
            out[path.resolve()] = value
    return out


def coregistration_quality(paths: der.SubjectPaths, folder: dict[Path, float]) -> str:
    """The PET → T1w coregistration's metric (from the preprocessed PET's sidecar) and where it
    lies among the other PETs of the output folder."""
    side_path = der.sidecar(paths.pet(der.PET_OUTPUTS["preproc"]))
    side = _read_json(side_path)
    coreg = side.get("Coregistration")
    if not isinstance(coreg, dict):
        return '<p class="muted">Coregistration quality: not recorded (no preprocessed PET ' \
               "sidecar).</p>"
    value = folder.get(side_path.resolve())
    if value is None:
        return (f"<p>Coregistration quality: no metric ({H.esc(coreg.get('Method', 'n/a'))})."
                "</p>")
    text = (f"<p><b>Coregistration quality</b>: Mattes mutual information "
            f"<b>{value:.3f}</b> between the T1w and the registered PET at 2 mm (ANTs sign: "
            "more negative = more shared information; it depends on the images too, so it is "
            "a screen, not a verdict).")
    others = sorted(v for p, v in folder.items() if p != side_path.resolve())
    if others:
        rank = 1 + sum(v < value for v in others)
        text += (f" The other {len(others)} PET(s) of this output folder: median "
                 f"{float(np.median(others)):.3f}, range {others[0]:.3f} to {others[-1]:.3f}; "
                 f"this one ranks {rank} of {len(others) + 1} (1 = most negative). A value "
                 "much closer to 0 than the others' deserves a look at the flicker.")
    return text + "</p>"


def _about(output_dir: Path, subject: str, run: runlog.RunInfo | None) -> str:
    """fMRIPrep-style "About": the run that last processed the subject, and this page."""
    from datetime import datetime, timezone

    from pseudopet_bids import __version__

    if run is None:
        return H.note(f"No participant-level log in {output_dir / 'logs'} names sub-{subject} "
                      "(the logs were removed, or the outputs were copied without them).")
    cfg = run.settings.get("pseudopet", {})
    flat = flatten_record(cfg) if cfg else {}
    info = run.settings.get("run", {})
    started = info.get("started") or run.stamp
    items: dict[str, object] = {
        "command line": runlog.command_line(run.settings)
        or "not recorded (run by an earlier version)",
        "run started": started,
        "pseudopet version": flat.get("version", cfg.get("version", "n/a")),
        "input (BIDS) folder": flat.get("bids_dir", "n/a"),
        "output folder": str(output_dir),
        "work folder": (f"{flat['work_dir']} (intermediate files reused by reruns; it can be "
                        "removed once the results are final)" if flat.get("work_dir")
                        else "n/a"),
        "host": info.get("host", "n/a"),
        "run log": run.log.relative_to(output_dir).as_posix(),
        "run config": run.config.relative_to(output_dir).as_posix()
        if run.config.is_file() else "missing",
        "this page written": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC by pseudopet "
                             f"{__version__}",
    }
    return H.key_values(items)


def _errors(paths: list[der.SubjectPaths], run: runlog.RunInfo | None) -> tuple[str, int]:
    """fMRIPrep-style "Errors": each (subject, session)'s last recorded error
    (``status.json``) and the warnings and errors that the run log has for the subject;
    returns the HTML and the number of entries."""
    items = []
    for unit in paths:
        status = _read_json(unit.status)
        error = status.get("last_error")
        if status.get("state") == "failed" or isinstance(error, dict):
            error = error if isinstance(error, dict) else {}
            items.append(f'<li><span class="level warn">{H.esc(unit.anat_prefix)} '
                         f"{H.esc(status.get('state', 'failed'))}</span> "
                         f"in stage {H.esc(error.get('stage') or 'n/a')} "
                         f"at {H.esc(error.get('time') or 'n/a')}: "
                         f"{H.esc(error.get('type') or 'error')}: "
                         f"{H.esc(error.get('message') or 'no message')}</li>")
    for msg in run.messages if run is not None else []:
        items.append(f'<li><span class="level warn">{H.esc(msg.level)}</span> '
                     f'<span class="muted">{H.esc(msg.time)}</span> {H.esc(msg.text)}</li>')
    if not items:
        return '<p class="ok">No errors to report.</p>', 0
    where = f" (full log: {H.esc(run.log.name)})" if run is not None else ""
    return (f'<p>Warnings and errors recorded for this participant{where}:</p>'
            f'<ul class="errors">{"".join(items)}</ul>', len(items))


def write_subject_report(output_dir: Path, subject: str, participant=None) -> Path:
    """Write ``OUTPUT_DIR/sub-<subject>.html`` from the subject's files on disk.

    Parameters
    ----------
    output_dir
        The derivatives folder.
    subject
        Label without ``sub-``.
    participant
        Optional record with ``.group`` and ``.foci`` (a
        :class:`~pseudopet_bids.bids.participants.Participant`); otherwise read from
        ``group/subjects.tsv`` or the input ``participants.tsv`` when available.

    Returns
    -------
    Path
        The page (written atomically).
    """
    output_dir = Path(output_dir)
    subject = subject[4:] if subject.startswith("sub-") else subject
    page_path = output_dir / f"sub-{subject}.html"
    units = discover(output_dir, subject)
    configs = sorted((output_dir / "logs").glob(f"sub-{subject}_*config.toml"))
    group, foci = _participant_info(output_dir, subject, participant, configs)
    sessions = [u.session for u in units if u.session]
    pets = [p for u in units for p in u.pets]
    analyses = sorted({a for p in pets for a in p.analyses}, key=analysis_order)
    models = sorted({m for p in pets for m in p.models} | {parse_analysis_label(a)[0]
                                                            for a in analyses})
    summary_table = _summary_table(units, foci)
    n_clusters = int(pd.to_numeric(summary_table.get("clusters", pd.Series(dtype=float)),
                                   errors="coerce").fillna(0).sum()) if len(summary_table) else 0
    referenced: set[Path] = set()
    coreg_metrics = _folder_coreg_metrics(output_dir)
    nav: list[tuple[str, str]] = [("summary", "Summary"), ("anatomy", "Anatomy")]
    body: list[str] = []

    # summary
    run = runlog.latest_participant_run(output_dir, subject)
    errors, n_errors = _errors([u.paths for u in units], run)
    cards = [("group", group or "unknown"), ("clinical focus", ", ".join(foci) or "n/a"),
             ("sessions", len(sessions) or "1 (no session)"), ("PET images", len(pets)),
             ("analyses", len(analyses)), ("clusters (all analyses)", n_clusters),
             ("errors and warnings", n_errors)]
    summary = ['<div class="cards">' + "".join(
        f'<div class="card">{H.esc(k)}<b>{H.esc(v)}</b></div>' for k, v in cards) + "</div>"]
    facts = {"models": ", ".join(models) or "none", "analyses": ", ".join(analyses) or "none"}
    if sessions:
        facts["sessions"] = ", ".join(sessions)
    summary.append(H.key_values(facts))
    if not units or not pets:
        summary.append(H.note(f"No pseudopet outputs found for sub-{subject} in {output_dir}."))
    summary.append(H.table_html(summary_table))
    if (output_dir / "group" / "group.html").is_file():
        summary.append('<p><a href="group/group.html">Group report</a></p>')
    body.append(H.section("summary", "Summary", "\n".join(summary)))

    # anatomy
    anat = []
    for unit in units:
        label = f"session {unit.session}" if unit.session else "anatomy"
        seg = anat_figure(unit.paths, "segmentation")
        tpl = anat_figure(unit.paths, "templatereg")
        tpl_ref = anat_figure(unit.paths, "templatereg" + FRAME_SUFFIX["reference"])
        referenced |= {seg, tpl, tpl_ref}
        anat.append(f"<h3>{H.esc(unit.paths.anat_prefix)} ({H.esc(label)})</h3>")
        anat.append(_figure(output_dir, seg, "Brain mask (red) and grey matter with probability "
                            "≥ 0.5 (blue) on the T1w: the mask must follow the brain surface "
                            "and the grey matter the cortical ribbon."))
        anat.append(_registration_figure(
            output_dir, tpl, tpl_ref, ("template T1w (reference)", "subject T1w, registered"),
            "T1w brain resampled to the template (2 mm), template brain outline (red) and "
            "template edges (green): the sulci, ventricles and outline should line up."))
    body.append(H.section("anatomy", "Anatomy", "\n".join(anat) or
                          '<p class="muted">(no anatomical outputs)</p>'))

    # PETs
    n_viewers = 0
    for unit in units:
        for pet in unit.pets:
            paths = _paths(output_dir, subject, unit.session, pet.prefix)
            anchor = pet.prefix
            nav.append((anchor, pet.prefix))
            parts = []
            fallback: list[str] = []  # the static figures the viewer falls back on
            viewer_tables: dict[str, tuple[pd.DataFrame | None, pd.DataFrame]] = {}
            coreg = pet_figure_path(paths, "coregistration")
            coreg_ref = pet_figure_path(paths, "coregistration" + FRAME_SUFFIX["reference"])
            referenced |= {coreg, coreg_ref}
            parts.append(_registration_figure(
                output_dir, coreg, coreg_ref, ("T1w (reference)", "PET, registered"),
                "PET resampled to the T1w with the T1w brain's edges (Canny) on top: the "
                "cortical ribbon and the ventricles of both should coincide."))
            parts.append(coregistration_quality(paths, coreg_metrics))
            for model in pet.models:
                fig = pet_figure_path(paths, f"{model}Pet")
                referenced.add(fig)
                parts.append(f'<h3 id="{H.esc(anchor)}-{H.esc(model)}">Model '
                             f"{H.esc(model)}: real vs pseudo-normal PET</h3>")
                has_sd = paths.pseudonormal(model, sd=True).is_file()
                parts.append(_figure(output_dir, fig, "Real and pseudo-normal PET on one colour "
                                     "scale (same slices), D = real − pseudo-normal"
                                     + (", and the SD of the stochastic samples" if has_sd
                                        else "") + "."))
                fallback.append(parts[-1])
            for analysis in pet.analyses:
                model, reference = parse_analysis_label(analysis)
                sub_anchor = f"{anchor}-{analysis}"
                against = get_rule(reference).title
                parts.append(f'<h3 id="{H.esc(sub_anchor)}">Analysis {H.esc(analysis)} '
                             f"(model {H.esc(model)}, Z against {against})</h3>")
                zfig = _first_existing(pet_figure_path(paths, f"{analysis}Zmap"),
                                       paths.figure(f"desc-{analysis}Zmap"))
                if zfig is not None:
                    referenced.add(zfig)
                parts.append(_figure(output_dir, zfig, "Negative Z (real below pseudo-normal) "
                                     "over the T1w; surviving clusters outlined, cut through "
                                     "the top-ranked cluster."))
                fallback.append(parts[-1])
                table = _read_tsv(paths.clusters(analysis))
                viewer_tables[analysis] = (table, cluster_view(table))
                if table is None:
                    parts.append(H.note("No cluster table (the analysis did not finish)."))
                elif table.empty:
                    parts.append('<p class="ok">No cluster survived the threshold.</p>')
                else:
                    parts.append(H.table_html(cluster_view(table),
                                              caption=f"Clusters ({analysis}), most likely "
                                                      "real first"))
                    parts.append(_confidence_note(table))
                lobes = _read_tsv(paths.asymmetry(analysis))
                if lobes is not None and not lobes.empty:
                    parts.append(H.table_html(_lobe_view(lobes), caption="Hemispheric asymmetry "
                                              "of the real PET per lobe (negative: less uptake "
                                              "than the homologous lobe)"))
                config = paths.config(analysis)
                parts.append(H.details(f"Provenance of {analysis}",
                                       _provenance(paths, analysis, model, config)))
                methods = methods_block(output_dir, config if config.is_file() else None, model)
                if methods:
                    parts.append(H.details(f"Methods text of {analysis}", methods))
            block = _viewer_block(paths, pet, viewer_tables, fallback)
            if block:
                parts.insert(0, block)
                n_viewers += 1
            title = pet.prefix + (f" (session {unit.session})" if unit.session else "")
            body.append(H.section(anchor, f"PET {title}", "\n".join(parts)))

    # figures found on disk and not shown above (other runs, older names)
    fig_dir = output_dir / f"sub-{subject}" / "figures"
    others = sorted(p for p in fig_dir.glob("*.png")
                    if p.resolve() not in {r.resolve() for r in referenced if r.is_file()}) \
        if fig_dir.is_dir() else []
    if others:
        nav.append(("other-figures", "Other figures"))
        body.append(H.section("other-figures", "Other figures",
                              "\n".join(H.figure_html(_rel(output_dir, p), p.name)
                                        for p in others)))
    nav += [("about", "About"), ("errors", "Errors")]
    body.append(H.section("about", "About", _about(output_dir, subject, run)))
    body.append(H.section("errors", "Errors", errors))
    if n_viewers:  # NiiVue and the viewer script, once per page (docs/reports.md)
        body.append(f"<style>{viewer.CSS}</style>\n{viewer.scripts_html()}")
    text = H.page(f"pseudopet report: sub-{subject}", "\n".join(body), nav)
    files.atomic_write_text(page_path, text)
    return page_path


__all__ = ["write_subject_figures", "write_subject_report", "discover", "cluster_view",
           "analysis_order",
           "anat_figure", "pet_figure_path"]
