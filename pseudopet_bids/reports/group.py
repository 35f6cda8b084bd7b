"""Group visual report: ``OUTPUT_DIR/group/group.html`` and its figures.

Built from the group tables (``group/summary.tsv``, ``lobes.tsv``, ``subjects.tsv``,
``froc.tsv``, ``froc_points.tsv``, ``control_clusters.tsv`` and, when the translation
evaluation ran, ``translation.tsv``, ``translation_summary.tsv``, ``spectra.tsv``): a
side-by-side comparison of the analyses (model × Z reference), bar charts with Wilson 95 %
confidence intervals, the trade-off between lesion sensitivity and false clusters (FROC) with
the confidence tiers' operating points, where controls' false clusters fall, the breakdown by
region, every subject with a link to its own report, translation quality on held-out controls,
and the methods text. Figures go to ``group/figures/``; the page references them by relative
path and loads nothing from the network.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pseudopet_bids.detect.rules import get_rule, parse_analysis_label, rule_names
from pseudopet_bids.io import files
from pseudopet_bids.models.registry import model_names, model_spec
from pseudopet_bids.reports import group_figures as F
from pseudopet_bids.reports import html as H
from pseudopet_bids.reports.subject import analysis_order, methods_block

LOGGER = logging.getLogger(__name__)

MEASURE_NAMES = {
    "detection_rate": "Detection rate (patients with ≥ 1 cluster)",
    "localization_accuracy_top": "Localization accuracy, top-ranked cluster",
    "localization_accuracy_any": "Localization accuracy, any cluster",
    "localization_top_all_patients": "Top-ranked cluster in the focus (all patients with a "
                                     "known focus)",
    "patients_with_high_tier_in_focus": "Patients with a high-tier cluster in the focus",
    "controls_with_clusters": "Controls with ≥ 1 cluster (false positives: lower is better)",
    "false_clusters_per_control": "False clusters per control (lower is better)",
    "high_tier_clusters_per_control": "High-tier clusters per control (lower is better)",
}
#: Measures of tables written by older versions: shown under these names when present.
LEGACY_MEASURE_NAMES = {
    "localization_accuracy_largest": "Localization accuracy, largest cluster (older table)",
}
#: Events per control rather than proportions: no interval.
PER_CONTROL_MEASURES = ("false_clusters_per_control", "high_tier_clusters_per_control")
METRIC_NAMES = (("ssim_brain", "SSIM brain"), ("psnr_brain", "PSNR brain (dB)"),
                ("rmse_brain", "RMSE brain"), ("mae_brain", "MAE brain"),
                ("ssim_image", "SSIM image"), ("psnr_image", "PSNR image (dB)"),
                ("slice_ssim_brain", "slice SSIM brain"))


#: Columns read as text (a session label "1" must not become 1.0).
TEXT_COLUMNS = ("analysis", "model", "z_reference", "participant_id", "session", "group",
                "focus", "regions", "top_region", "top_tier", "tier", "region", "measure",
                "source", "rule", "score", "direction")


def _text(values: pd.Series) -> pd.Series:
    """Strings, with missing values as ``n/a``."""
    return values.map(lambda v: "n/a" if pd.isna(v) else str(v))


def _read(path: Path) -> pd.DataFrame | None:
    """A TSV as a data frame (``n/a`` → NaN), or None when missing or unreadable."""
    if not Path(path).is_file():
        return None
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                           dtype={c: str for c in TEXT_COLUMNS})
    except (OSError, ValueError, pd.errors.EmptyDataError) as exc:
        LOGGER.warning("group report: %s unreadable (%s)", path, exc)
        return None


def _num(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out


def _cell(rec: pd.Series | None, measure: str) -> str:
    if rec is None:
        return "n/a"
    value, n, k = _num(rec.get("value")), _num(rec.get("n")), _num(rec.get("count"))
    counts = f" ({k:.0f}/{n:.0f})" if np.isfinite(n) and np.isfinite(k) else ""
    if not np.isfinite(value):
        return f"n/a (n = {n:.0f})" if np.isfinite(n) else "n/a"
    if measure in PER_CONTROL_MEASURES:
        return f"{value:.2f}{counts}"
    lo, hi = _num(rec.get("ci95_low")), _num(rec.get("ci95_high"))
    ci = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{value:.2f}{ci}{counts}"


def comparison_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows = measures, columns = analyses, cells ``value [95 % CI] (k/n)``."""
    analyses = sorted(summary["analysis"].astype(str).unique(), key=analysis_order)
    measures = list(MEASURE_NAMES) + [m for m in summary["measure"].astype(str).unique()
                                      if m not in MEASURE_NAMES]
    rows = []
    for measure in measures:
        row = {"measure": MEASURE_NAMES.get(measure, LEGACY_MEASURE_NAMES.get(measure, measure))}
        for analysis in analyses:
            sel = summary[(summary["analysis"].astype(str) == analysis)
                          & (summary["measure"] == measure)]
            row[analysis] = _cell(sel.iloc[0] if len(sel) else None, measure)
        rows.append(row)
    return pd.DataFrame(rows)


def _analysis_header(summary: pd.DataFrame) -> pd.DataFrame:
    """Analysis, model and Z reference of every analysis (a small key table)."""
    cols = [c for c in ("analysis", "model", "z_reference") if c in summary]
    key = summary[cols].drop_duplicates()
    key = key.iloc[sorted(range(len(key)), key=lambda i: analysis_order(str(key.iloc[i, 0])))]
    if "z_reference" in key:
        key = key.assign(z_reference=key["z_reference"].map(
            {name: get_rule(name).reference_name for name in rule_names()}
        ).fillna(key["z_reference"]))
    return key.rename(columns={"z_reference": "Z reference"})


def lobe_tables(lobes: pd.DataFrame) -> str:
    """One table per analysis: patients with a focus in each region, detected, localized."""
    parts = []
    # lobes.tsv of an older version counted the largest cluster instead of the top-ranked one
    top, top_name = ("localized_top", "top-ranked") if "localized_top" in lobes \
        else ("localized_largest", "largest")
    for analysis in sorted(lobes["analysis"].astype(str).unique(), key=analysis_order):
        rows = lobes[lobes["analysis"].astype(str) == analysis]
        view = pd.DataFrame({
            "region": rows["region"].astype(str),
            "patients with focus": rows["patients_with_focus"].astype(int),
            "detected [95 % CI]": [
                f"{int(d)}/{int(n)} = {r:.2f} [{lo:.2f}, {hi:.2f}]" if n > 0 and np.isfinite(r)
                else f"{int(d)}/{int(n)}"
                for d, n, r, lo, hi in zip(rows["detected"], rows["patients_with_focus"],
                                           rows["detection_rate"].map(_num),
                                           rows["detection_ci95_low"].map(_num),
                                           rows["detection_ci95_high"].map(_num))],
            f"localized: {top_name} / any": [f"{int(a)} / {int(b)}" for a, b in
                                             zip(rows[top], rows["localized_any"])],
            "localization (any) [95 % CI]": [
                f"{r:.2f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(r) else "n/a"
                for r, lo, hi in zip(rows["localization_any_rate"].map(_num),
                                     rows["localization_any_ci95_low"].map(_num),
                                     rows["localization_any_ci95_high"].map(_num))],
            "controls with a cluster here": rows["controls_with_cluster_here"].astype(int),
        })
        parts.append(H.details(f"Regions: {analysis}", H.table_html(view),
                               open_=len(parts) == 0))
    return "\n".join(parts) or '<p class="muted">(no region breakdown)</p>'


def subjects_table(subjects: pd.DataFrame, output_dir: Path, page_dir: Path) -> str:
    """Rows = (participant, session), columns = group, focus and one column per analysis
    (``clusters: regions``, ✓ when a cluster lies in the focus); participants link to their
    report when it exists."""
    analyses = sorted(subjects["analysis"].astype(str).unique())
    subjects = subjects.assign(participant_id=_text(subjects["participant_id"]),
                               session=_text(subjects["session"]),
                               analysis=_text(subjects["analysis"]))
    keys = subjects[["participant_id", "session"]].drop_duplicates()
    keys = keys.sort_values(["participant_id", "session"])
    head = ["participant", "session", "group", "focus"] + analyses
    out = ["<table><thead><tr>" + "".join(f'<th class="text">{H.esc(h)}</th>' for h in head)
           + "</tr></thead><tbody>"]
    for pid, ses in keys.itertuples(index=False):
        rows = subjects[(subjects["participant_id"] == pid) & (subjects["session"] == ses)]
        first = rows.iloc[0]
        page = output_dir / f"{pid}.html"
        href = Path(os.path.relpath(page, page_dir)).as_posix()
        name = f'<a href="{H.esc(href)}">{H.esc(pid)}</a>' if page.is_file() else H.esc(pid)
        cells = [name, H.esc(ses)] + [H.esc("n/a" if pd.isna(first.get(c)) else first.get(c))
                                      for c in ("group", "focus")]
        for analysis in analyses:
            sel = rows[rows["analysis"] == analysis]
            if not len(sel):
                cells.append('<span class="muted">not run</span>')
                continue
            rec = sel.iloc[0]
            count = _num(rec.get("n_clusters"))
            n = int(count) if np.isfinite(count) else 0
            regions = "n/a" if pd.isna(rec.get("regions")) else str(rec.get("regions"))
            text = f"{n}" + (f": {regions.replace(';', ', ')}" if n and regions != "n/a" else "")
            loc = rec.get("localized_any")
            mark = ""
            if str(loc).lower() in ("true", "1", "1.0"):
                mark = ' <span class="ok" title="a cluster lies in the focus">✓ focus</span>'
            elif str(loc).lower() in ("false", "0", "0.0"):
                mark = ' <span class="warn" title="no cluster in the focus">✗ focus</span>'
            cls = "warn" if n and str(rec.get("group")) == "control" else ""
            cells.append(f'<span class="{cls}">{H.esc(text)}</span>{mark}')
        out.append("<tr>" + "".join(f'<td class="text">{c}</td>' for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def operating_points_table(points: pd.DataFrame) -> pd.DataFrame:
    """The tier rule's operating points (``group/froc_points.tsv``): per analysis and rule,
    sensitivity ``value [Wilson 95 % CI] (k/n)`` and false clusters per control ``(k/n)``."""
    rows = []
    order = sorted(range(len(points)), key=lambda i: (
        analysis_order(str(points["analysis"].iloc[i])), str(points["rule"].iloc[i])))
    for rec in (points.iloc[i] for i in order):
        sens = {"value": rec.get("sensitivity"), "n": rec.get("n_patients"),
                "count": rec.get("patients_hit"), "ci95_low": rec.get("sensitivity_ci95_low"),
                "ci95_high": rec.get("sensitivity_ci95_high")}
        false = {"value": rec.get("false_clusters_per_control"), "n": rec.get("n_controls"),
                 "count": rec.get("false_clusters")}
        rows.append({"analysis": rec.get("analysis"),
                     "clusters reported": "tier " + str(rec.get("rule")).replace("+", " or "),
                     "lesion sensitivity [95 % CI] (k/n)": _cell(pd.Series(sens), "sensitivity"),
                     "false clusters per control (k/n)": _cell(
                         pd.Series(false), "false_clusters_per_control")})
    return pd.DataFrame(rows)


def _tradeoff_section(froc: pd.DataFrame | None, points: pd.DataFrame | None,
                      fig_dir: Path, group_dir: Path) -> str:
    """The FROC figure with what it shows, and the tier rule's operating points."""
    if froc is None:
        return H.note("No FROC table (group/froc.tsv): run the group level again with this "
                      "version (pseudopet BIDS OUT group).")
    if froc.empty or "analysis" not in froc:
        return H.note("No FROC curve: the cluster tables have no cluster mass (z_mass; "
                      "tables written by an older version: run the participant level again), "
                      "or there is no patient with a known focus or no control.")
    out = ['<p>Each curve is a free-response ROC (FROC) of one analysis. A threshold on the '
           "cluster mass (<code>z_mass</code>: over the cluster's voxels, the sum of how far "
           "−Z goes past the Z threshold, times the voxel volume, in mm³) keeps only the "
           "clusters at least that strong; sweeping it from the strongest cluster down to the "
           "weakest traces the <b>lesion sensitivity</b> (patients with a known focus who have "
           "a kept cluster in a focus region / those patients) against the <b>false clusters "
           "per control</b> (kept clusters in controls / controls). Higher and further left is "
           "better; the right end of a curve reports every cluster. The shaded band is a "
           "bootstrap 95 % band of the sensitivity at each false-cluster rate (patients and "
           "controls resampled separately). On the log axis a rate of 0 sits at the left edge."
           "</p>",
           "<p>The dots are the operating points of the confidence-tier rule: reporting only "
           "the clusters of tier <i>high</i> (circles), or those of tier <i>high</i> or "
           "<i>possible</i> (squares), with Wilson 95 % intervals. A dot above its analysis' "
           "curve means the tiers keep more lesions for the same false clusters than a "
           "threshold on the cluster mass alone.</p>"]
    fig = _write_figure(fig_dir, "froc.png", F.froc_figure, froc, points)
    if fig is not None:
        out.append(H.figure_html(_rel(group_dir, fig), "FROC per analysis: lesion sensitivity "
                                 "against false clusters per control (log scale), bootstrap "
                                 "95 % band, tier rule operating points."))
    if points is not None and len(points) and "analysis" in points:
        out.append(H.table_html(operating_points_table(points),
                                caption="Operating points of the confidence-tier rule"))
    else:
        out.append(H.note("No tier operating points (group/froc_points.tsv): the cluster "
                          "tables have no tier column (written by an older version)."))
    return "\n".join(out)


def _false_cluster_section(ctrl: pd.DataFrame | None, fig_dir: Path, group_dir: Path) -> str:
    """The map of controls' clusters in template space."""
    if ctrl is None:
        return H.note("No table of control clusters (group/control_clusters.tsv): run the "
                      "group level again with this version.")
    if ctrl.empty:
        return H.note("No control has a cluster in any analysis (or there are no controls).")
    out = ["<p>Every cluster found in a healthy control is a false cluster. Each marker is one "
           "of them, at its peak in template space, over maximum-intensity projections of the "
           "template brain mask; its area is proportional to the cluster's volume and its "
           "colour is its confidence tier. False clusters that recur in the same place in "
           "several controls point at a systematic error of the model or of the Z reference "
           "rather than at chance. The full list is group/control_clusters.tsv.</p>"]
    fig = _write_figure(fig_dir, "control_clusters.png", F.false_cluster_map_figure, ctrl)
    if fig is not None:
        out.append(H.figure_html(_rel(group_dir, fig), "Controls' false clusters in template "
                                 "space per analysis (sagittal, coronal, axial projections; "
                                 "marker area ∝ volume, colour = tier)."))
    return "\n".join(out)


def translation_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Model, number of controls, ``mean ± sd`` of each metric, FID and spectrum distance."""
    rows = []
    for rec in summary.to_dict("records"):
        row = {"model": rec.get("model"), "controls": rec.get("n_controls")}
        for key, name in METRIC_NAMES:
            mean, sd = _num(rec.get(f"{key}_mean")), _num(rec.get(f"{key}_sd"))
            if not np.isfinite(mean):
                if f"{key}_mean" in rec:
                    row[name] = "n/a"
                continue
            row[name] = f"{mean:.3g}" + (f" ± {sd:.2g}" if np.isfinite(sd) else "")
        fid = _num(rec.get("fid"))
        row["FID"] = f"{fid:.3g}" if np.isfinite(fid) else "n/a"
        dist = _num(rec.get("spectrum_distance"))
        row["spectrum distance (L1)"] = f"{dist:.3g}" if np.isfinite(dist) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def _write_figure(fig_dir: Path, name: str, make, *args) -> Path | None:
    try:
        path = fig_dir / name
        files.atomic_write_bytes(path, make(*args))
        return path
    except Exception as exc:  # a figure must not cost the whole report
        LOGGER.warning("group report: figure %s not made: %s: %s", name,
                       type(exc).__name__, exc)
        return None


def _methods(output_dir: Path, analyses: list[str]) -> str | None:
    """The run's ``logs/CITATION.md`` as HTML, else the methods text of each analysis' run
    config; None without the citation module."""
    try:  # optional by design: the reports are written without it (test_group_report.py)
        from pseudopet_bids.reports import citation
    except ImportError:
        return None
    md = output_dir / "logs" / "CITATION.md"
    try:
        if md.is_file():
            return citation.methods_html(md.read_text(encoding="utf-8"))
    except Exception as exc:
        LOGGER.warning("group report: CITATION.md not rendered: %s", exc)
    parts = []
    for analysis in analyses:
        config = next(iter(sorted((output_dir / "logs").glob(f"*_desc-{analysis}_config.toml"))),
                      None)
        if config is None:
            continue
        block = methods_block(output_dir, config, parse_analysis_label(analysis)[0])
        if block:
            parts.append(H.details(f"Methods text of {analysis}", block, open_=not parts))
    return "\n".join(parts) or None


def write_group_report(output_dir: Path) -> Path:
    """Write ``OUTPUT_DIR/group/group.html`` (and ``group/figures/*.png``) from the group
    tables; missing optional tables give a note, never an error.

    Returns
    -------
    Path
        The page (written atomically).
    """
    output_dir = Path(output_dir)
    group_dir = output_dir / "group"
    fig_dir = group_dir / "figures"
    page_path = group_dir / "group.html"
    summary = _read(group_dir / "summary.tsv")
    lobes = _read(group_dir / "lobes.tsv")
    subjects = _read(group_dir / "subjects.tsv")
    translation = _read(group_dir / "translation.tsv")
    tsummary = _read(group_dir / "translation_summary.tsv")
    spectra = _read(group_dir / "spectra.tsv")
    froc = _read(group_dir / "froc.tsv")
    points = _read(group_dir / "froc_points.tsv")
    ctrl_clusters = _read(group_dir / "control_clusters.tsv")

    analyses: list[str] = []
    for table in (summary, subjects, lobes):
        if table is not None and "analysis" in table:
            analyses += [str(a) for a in table["analysis"].dropna().unique()]
    analyses = sorted(dict.fromkeys(analyses), key=analysis_order)
    models = list(dict.fromkeys([parse_analysis_label(a)[0] for a in analyses]
                                + ([str(m) for m in tsummary["model"].dropna().unique()]
                                   if tsummary is not None and "model" in tsummary else [])))
    nav = [("overview", "Overview"), ("detection", "Detection"), ("tradeoff", "Trade-off"),
           ("falseclusters", "False clusters"), ("regions", "Regions"),
           ("subjects", "Subjects"), ("translation", "Translation quality")]
    body = []

    # overview
    over = []
    if subjects is not None and {"participant_id", "group"} <= set(subjects.columns):
        people = subjects.drop_duplicates(["participant_id", "session"])
        counts = people["group"].astype(str).value_counts()
        cards = [("patients", int(counts.get("patient", 0))),
                 ("controls", int(counts.get("control", 0))),
                 ("unknown group", int(counts.get("unknown", 0))),
                 ("analyses", len(analyses)), ("models", len(models))]
        over.append('<div class="cards">' + "".join(
            f'<div class="card">{H.esc(k)}<b>{H.esc(v)}</b></div>' for k, v in cards) + "</div>")
        if not counts.get("patient", 0):
            over.append(H.note("No patients: detection rate and localization accuracy are "
                               "undefined (n/a)."))
        if not counts.get("control", 0):
            over.append(H.note("No controls: false clusters per control are undefined (n/a)."))
    over.append(H.key_values({"analyses": ", ".join(analyses) or "none",
                              "models": ", ".join(models) or "none",
                              "output folder": str(output_dir)}))
    if summary is not None and len(summary):
        over.append(H.table_html(_analysis_header(summary)))
    body.append(H.section("overview", "Overview", "\n".join(over)))

    # detection statistics
    det = []
    if summary is None or summary.empty or "measure" not in summary:
        det.append(H.note("No group summary (group/summary.tsv): run the group level first "
                          "(pseudopet BIDS OUT group)."))
    else:
        det.append(H.table_html(comparison_table(summary),
                                caption="Analyses side by side: value [Wilson 95 % CI] (k/n)"))
        fig = _write_figure(fig_dir, "rates.png", F.rates_figure, summary)
        if fig is not None:
            det.append(H.figure_html(_rel(group_dir, fig),
                                     "Detection rate and localization accuracy per analysis "
                                     "(higher is better), and, on red panels, the false "
                                     "positives: controls with clusters and false clusters per "
                                     "control (lower is better). Error bars: Wilson 95 % CI; "
                                     "k/n above each bar."))
    body.append(H.section("detection", "Detection statistics", "\n".join(det)))

    # the trade-off between sensitivity and false clusters, and where the false ones fall
    body.append(H.section("tradeoff", "Trade-off between sensitivity and false clusters",
                          _tradeoff_section(froc, points, fig_dir, group_dir)))
    body.append(H.section("falseclusters", "Where controls' false clusters fall",
                          _false_cluster_section(ctrl_clusters, fig_dir, group_dir)))

    # regions
    body.append(H.section("regions", "Breakdown by region",
                          lobe_tables(lobes) if lobes is not None and len(lobes)
                          and "analysis" in lobes
                          else H.note("No region breakdown (group/lobes.tsv).")))

    # subjects
    body.append(H.section("subjects", "Subjects",
                          subjects_table(subjects, output_dir, group_dir)
                          if subjects is not None and len(subjects) and "analysis" in subjects
                          else H.note("No per-subject table (group/subjects.tsv).")))

    # translation quality: learned models only (a model fitted to each subject's own PET,
    # the tissue baseline, does not translate the MRI: its numbers would read as a score)
    fitted = sorted({m for t in (tsummary, translation, spectra) if t is not None
                     and "model" in t for m in t["model"].dropna().astype(str)
                     if m in model_names() and not model_spec(m).trainable})
    tsummary, translation, spectra = (_learned_only(t) for t in (tsummary, translation, spectra))
    tr = [H.note(f"Not shown for the {', '.join(model_spec(m).title for m in fitted)}: "
                 "it is fitted to each subject's own PET, so these measures would say how "
                 "much of the real PET its tissue pattern explains, not how well a PET is "
                 "predicted from the MRI alone (the numbers stay in "
                 "group/translation_summary.tsv).")] if fitted else []
    if tsummary is None or tsummary.empty:
        if not fitted:
            tr.append(H.note("No translation metrics: group/translation_summary.tsv is missing "
                             "or empty. They are computed at the group level from held-out "
                             "healthy controls with a real PET (controls not used to train "
                             "the model)."))
    else:
        tr.append(H.table_html(translation_table(tsummary), caption="Per model: mean ± SD over "
                               "held-out controls, PET scaled to [0, 1]"))
        fids = pd.to_numeric(tsummary.get("fid", pd.Series(dtype=float)), errors="coerce")
        if not np.isfinite(fids).any():
            tr.append(H.note("FID not computed: it needs InceptionV3 weights given with "
                             "--fid-weights at the group level."))
    if translation is not None and len(translation):
        fig = _write_figure(fig_dir, "translation_metrics.png", F.metric_distributions_figure,
                            translation)
        if fig is not None:
            tr.append(H.figure_html(_rel(group_dir, fig), "Per-control translation metrics "
                                    "inside the brain (one point per held-out control)."))
    elif tsummary is not None and len(tsummary):
        tr.append(H.note("No per-control metrics (group/translation.tsv)."))
    if spectra is not None and len(spectra):
        fig = _write_figure(fig_dir, "spectra.png", F.spectra_figure, spectra)
        if fig is not None:
            tr.append(H.figure_html(_rel(group_dir, fig), "Mean normalised singular-value "
                                    "spectra of axial brain slices, real (dashed) and "
                                    "synthetic (solid), per model."))
    elif tsummary is not None and len(tsummary):
        tr.append(H.note("No spectra (group/spectra.tsv)."))
    body.append(H.section("translation", "Translation quality (held-out controls)",
                          "\n".join(tr)))

    methods = _methods(output_dir, analyses)
    if methods:
        nav.append(("methods", "Methods"))
        body.append(H.section("methods", "Methods", methods))

    text = H.page("pseudopet group report", "\n".join(body), nav)
    files.atomic_write_text(page_path, text)
    return page_path


def _learned_only(table: pd.DataFrame | None) -> pd.DataFrame | None:
    """Rows of a translation table whose model is learned (not a registered model that is
    fitted to each subject, like the tissue baseline); None stays None."""
    if table is None or "model" not in table:
        return table
    fitted = {m for m in model_names() if not model_spec(m).trainable}
    return table[~table["model"].astype(str).isin(fitted)].reset_index(drop=True)


def _rel(page_dir: Path, target: Path) -> str:
    return target.resolve().relative_to(page_dir.resolve()).as_posix()


__all__ = ["write_group_report", "comparison_table", "subjects_table", "lobe_tables",
           "translation_table", "operating_points_table"]
