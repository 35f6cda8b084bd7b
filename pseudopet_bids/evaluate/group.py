"""Group aggregation of participants' cluster tables (detection statistics).

Definitions (DESIGN.md §1):

- detection rate: patients with at least one surviving cluster / patients;
- localization accuracy: detected patients whose cluster lies in a clinically reported focus
  region, for the top-ranked cluster (``cluster_id`` 1: highest confidence tier, then the
  strongest) and for any cluster / detected patients with a known focus;
- localization of the top-ranked cluster over all patients: patients whose top-ranked cluster
  lies in a focus region / patients with a known focus (an undetected patient counts as a miss);
- patients with a high-tier cluster in the focus: / patients with a known focus;
- false clusters per control: surviving clusters in controls / controls; high-tier clusters
  per control: the same for clusters of tier ``high``;
- FROC curve (:func:`froc`): lesion sensitivity against false clusters per control as a cluster
  score threshold sweeps over the clusters' scores, with bootstrap 95 % bands; the tier rule's
  operating points (:func:`froc_operating_points`) place the confidence tiers on it.

Proportions carry Wilson 95 % confidence intervals. A table written before the tiers and cluster
statistics existed lacks those columns: the measures that need them are ``n/a`` there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pseudopet_bids.bids.derivatives import labelled_outputs
from pseudopet_bids.detect.rules import parse_analysis_label
from pseudopet_bids.io.files import write_tsv
from pseudopet_bids.bids.entities import parse_entities
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.errors import InputError
from pseudopet_bids.resources import LOBE_LABELS

LOGGER = logging.getLogger(__name__)

#: Sign that turns a cluster score into a *strength* (larger = stronger) for :func:`froc`:
#: the cluster mass and the size grow with the evidence, while a corrected p-value and the
#: (negative) Z of a hypometabolic cluster shrink with it. Thresholds are swept over strengths
#: and reported back in the score's own units (``score >= t`` for +1, ``score <= t`` for -1).
SCORE_SIGN: dict[str, int] = {"z_mass": 1, "volume_mm3": 1, "n_voxels": 1,
                              "p_corrected": -1, "peak_zscore": -1, "mean_zscore": -1}

#: The tier rule's operating points: the tiers whose clusters each rule reports.
TIER_RULES: dict[str, tuple[str, ...]] = {"high": ("high",),
                                          "high+possible": ("high", "possible")}

#: Columns of ``group/control_clusters.tsv`` (the false-cluster map), in order.
CONTROL_CLUSTER_COLUMNS: tuple[str, ...] = (
    "analysis", "model", "z_reference", "participant_id", "session", "cluster_id", "tier",
    "region", "region_fraction", "volume_mm3", "n_voxels", "peak_zscore", "z_mass",
    "p_corrected", "peak_template_x_mm", "peak_template_y_mm", "peak_template_z_mm")

#: New column name → its name in tables written before the renaming.
LEGACY_COLUMNS: dict[str, str] = {
    "peak_zscore": "peak_z", "mean_zscore": "mean_z", "peak_x_mm": "peak_x",
    "peak_y_mm": "peak_y", "peak_template_x_mm": "peak_template_x",
    "peak_template_y_mm": "peak_template_y", "peak_template_z_mm": "peak_template_z"}

FROC_COLUMNS: tuple[str, ...] = (
    "analysis", "model", "z_reference", "score", "direction", "threshold", "n_patients",
    "n_controls", "patients_hit", "sensitivity", "sensitivity_ci95_low",
    "sensitivity_ci95_high", "false_clusters", "false_clusters_per_control", "on_curve")
POINT_COLUMNS: tuple[str, ...] = (
    "analysis", "model", "z_reference", "rule", "n_patients", "n_controls", "patients_hit",
    "sensitivity", "sensitivity_ci95_low", "sensitivity_ci95_high", "false_clusters",
    "false_clusters_per_control")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (NaN, NaN when n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _tier(value: object) -> str | None:
    """A tier cell as ``high``/``possible``/``low``…, None when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    return None if text in ("", "n/a", "nan") else text


def subject_row(info: Participant, session: str | None, regions: list[str],
                tiers: Sequence[str | None] | None = None) -> dict:
    """Detection outcome of one participant from its clusters (top-ranked first).

    Parameters
    ----------
    info
        The participant (group, foci).
    session
        Session label, None without sessions.
    regions
        Region of every cluster, in ``cluster_id`` order (1 = top-ranked).
    tiers
        Confidence tier of every cluster, in the same order; None for a table without tiers
        (then ``top_tier`` is ``n/a`` and the tier counts are unknown unless there is no
        cluster).

    Returns
    -------
    dict
        ``top_region``/``localized_top`` describe ``cluster_id`` 1; ``n_high`` counts high-tier
        clusters and ``localized_high`` says whether one lies in a focus region (None:
        unknown, or no known focus).
    """
    top = regions[0] if regions else None
    foci = set(info.foci)
    known = [_tier(t) for t in tiers] if tiers is not None else None
    if known is not None and len(known) != len(regions):
        raise ValueError(f"{len(known)} tiers for {len(regions)} clusters")
    tiers_known = known is not None and None not in known
    # no cluster: nothing can be high-tier, even in a table without a tier column
    n_high = sum(t == "high" for t in known) if tiers_known else (0 if not regions else None)
    if not foci:
        localized_high = None
    elif not regions:
        localized_high = False
    elif tiers_known:
        localized_high = any(t == "high" and r in foci for t, r in zip(known, regions))
    else:
        localized_high = None
    return {
        "participant_id": f"sub-{info.label}", "session": session or "n/a",
        "group": info.group, "focus": ";".join(info.foci) or "n/a",
        "n_clusters": len(regions), "detected": len(regions) > 0,
        "regions": ";".join(dict.fromkeys(regions)) or "n/a",
        "top_region": top or "n/a",
        "top_tier": (known[0] or "n/a") if (known and regions) else "n/a",
        "n_high": n_high,
        "localized_top": (top in foci) if (top and foci) else None,
        "localized_any": bool(foci & set(regions)) if (regions and foci) else None,
        "localized_high": localized_high,
    }


def collect_subjects(output_dir: Path, participants: dict[str, Participant],
                     labels: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-subject rows and all clusters from every ``*_desc-<analysis>Focus_clusters.tsv``.

    One row per (subject, session, PET, analysis): the analysis label names the model and the
    Z reference (:func:`pseudopet_bids.detect.rules.analysis_label`). Clusters are taken in
    ``cluster_id`` order, so the first is the top-ranked one.
    """
    rows, clusters = [], []
    for tsv, analysis in labelled_outputs(output_dir, "clusters"):
        ents = parse_entities(tsv)
        subject = ents.get("sub")
        if labels and subject not in labels:
            continue
        model, reference = parse_analysis_label(analysis)
        session = ents.get("ses")
        table = pd.read_csv(tsv, sep="\t", na_values=["n/a"])
        if "cluster_id" in table and len(table):
            table = table.sort_values("cluster_id", kind="stable").reset_index(drop=True)
        info = participants.get(subject, Participant(label=subject))
        regions = [str(r) for r in table.get("region", pd.Series(dtype=str))]
        tiers = list(table["tier"]) if "tier" in table else None
        ident = {"analysis": analysis, "model": model, "z_reference": reference}
        rows.append({**ident, **subject_row(info, session, regions, tiers)})
        for rec in table.to_dict("records"):
            clusters.append({**ident, "participant_id": f"sub-{subject}",
                             "session": session or "n/a", "group": info.group, **rec})
    return pd.DataFrame(rows), pd.DataFrame(clusters)


def _proportion(name: str, k: int | None, n: int) -> dict:
    """A proportion with its Wilson interval; ``k`` None (unknown) gives NaN values."""
    if k is None:
        return {"measure": name, "count": float("nan"), "n": n, "value": float("nan"),
                "ci95_low": float("nan"), "ci95_high": float("nan")}
    lo, hi = wilson_interval(k, n)
    return {"measure": name, "count": k, "n": n, "value": k / n if n else float("nan"),
            "ci95_low": lo, "ci95_high": hi}


def _rate(name: str, total: float | None, n: int) -> dict:
    """Events per subject (no interval); ``total`` None (unknown) gives NaN."""
    value = total / n if (total is not None and n) else float("nan")
    return {"measure": name, "count": float("nan") if total is None else total, "n": n,
            "value": value, "ci95_low": float("nan"), "ci95_high": float("nan")}


def _flag(value: object) -> bool | None:
    """A True/False/None cell, also as read back from a TSV."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    return True if text in ("true", "1", "1.0") else False if text in ("false", "0", "0.0") \
        else None


def _split(subjects: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Patients, controls, and detected patients with a known focus."""
    if subjects.empty:
        return subjects, subjects, subjects
    patients = subjects[subjects["group"] == "patient"]
    controls = subjects[subjects["group"] == "control"]
    detected = patients[patients["detected"].astype(bool) & (patients["focus"] != "n/a")]
    return patients, controls, detected


def summarize_one(subjects: pd.DataFrame) -> pd.DataFrame:
    """Detection rate, localization accuracy, tier measures and false clusters per control
    (one analysis); measures whose columns are missing or unknown are NaN."""
    patients, controls, detected = _split(subjects)
    with_focus = patients[patients["focus"] != "n/a"] if len(patients) else patients

    def count(frame: pd.DataFrame, col: str, unknown_is_false: bool = False) -> int | None:
        """Rows where ``col`` is True; None when some row is unknown (or the column absent)."""
        if not len(frame):
            return 0
        if col not in frame:
            return None
        flags = [_flag(v) for v in frame[col]]
        if None in flags and not unknown_is_false:
            return None
        return sum(f is True for f in flags)

    def total(frame: pd.DataFrame, col: str) -> float | None:
        if not len(frame):
            return 0
        if col not in frame:
            return None
        values = pd.to_numeric(frame[col], errors="coerce")
        return None if values.isna().any() else int(values.sum())

    out = [_proportion("detection_rate", count(patients, "detected"), len(patients)),
           # localized_* are None for undetected patients, who are not in `detected`
           _proportion("localization_accuracy_top", count(detected, "localized_top"),
                       len(detected)),
           _proportion("localization_accuracy_any", count(detected, "localized_any"),
                       len(detected)),
           # over all patients with a focus: an undetected patient (None) is a miss
           _proportion("localization_top_all_patients",
                       count(with_focus, "localized_top", unknown_is_false=True),
                       len(with_focus)),
           _proportion("patients_with_high_tier_in_focus", count(with_focus, "localized_high"),
                       len(with_focus)),
           _proportion("controls_with_clusters", count(controls, "detected"), len(controls)),
           _rate("false_clusters_per_control", total(controls, "n_clusters"), len(controls)),
           _rate("high_tier_clusters_per_control", total(controls, "n_high"), len(controls))]
    return pd.DataFrame(out)


def _per_analysis(subjects: pd.DataFrame, fn) -> pd.DataFrame:
    """``fn`` applied to each analysis' rows, with analysis/model/z_reference columns first."""
    if subjects.empty or "analysis" not in subjects:
        return fn(subjects)
    parts = []
    for analysis, rows in subjects.groupby("analysis", sort=True):
        model, reference = parse_analysis_label(str(analysis))
        table = fn(rows)
        table.insert(0, "z_reference", reference)
        table.insert(0, "model", model)
        table.insert(0, "analysis", analysis)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def summarize(subjects: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarize_one` for every analysis (model × Z reference) found."""
    return _per_analysis(subjects, summarize_one)


def lobe_breakdown_one(subjects: pd.DataFrame) -> pd.DataFrame:
    """Per region: patients with that focus, detected, localized (top-ranked / any), and the
    clusters that fell in the region in controls."""
    patients, controls, _ = _split(subjects)
    rows = []
    for region in LOBE_LABELS.values():
        has = patients[patients["focus"].str.split(";").apply(lambda f: region in f)] \
            if len(patients) else patients
        det = has[has["detected"].astype(bool)] if len(has) else has
        top = int(det["top_region"].eq(region).sum()) if len(det) else 0
        anyr = int(det["regions"].str.split(";").apply(lambda r: region in r).sum()) \
            if len(det) else 0
        ctrl = int(controls["regions"].str.split(";").apply(lambda r: region in r).sum()) \
            if len(controls) else 0
        d_lo, d_hi = wilson_interval(len(det), len(has))
        a_lo, a_hi = wilson_interval(anyr, len(det))
        rows.append({"region": region, "patients_with_focus": len(has), "detected": len(det),
                     "detection_rate": len(det) / len(has) if len(has) else float("nan"),
                     "detection_ci95_low": d_lo, "detection_ci95_high": d_hi,
                     "localized_top": top, "localized_any": anyr,
                     "localization_any_rate": anyr / len(det) if len(det) else float("nan"),
                     "localization_any_ci95_low": a_lo, "localization_any_ci95_high": a_hi,
                     "controls_with_cluster_here": ctrl})
    return pd.DataFrame(rows)


def lobe_breakdown(subjects: pd.DataFrame) -> pd.DataFrame:
    """:func:`lobe_breakdown_one` for every analysis found."""
    return _per_analysis(subjects, lobe_breakdown_one)


# --- FROC: the trade-off between lesion sensitivity and false clusters ---------------------

def _text(values: pd.Series) -> pd.Series:
    """Strings with missing values as ``n/a`` (a session read from a TSV is NaN or a number)."""
    return values.map(lambda v: "n/a" if pd.isna(v) else str(v))


def _units(subjects: pd.DataFrame) -> tuple[list[tuple[tuple[str, str], set[str]]],
                                             list[tuple[str, str]]]:
    """Patients with a known focus as ``((participant, session), foci)`` and controls as
    ``(participant, session)``: the denominators of the FROC (one unit per subject and
    session, whether it has clusters or not)."""
    if subjects.empty:
        return [], []
    subj = subjects.assign(participant_id=_text(subjects["participant_id"]),
                           session=_text(subjects["session"]), focus=_text(subjects["focus"]))
    subj = subj.drop_duplicates(["participant_id", "session"])
    patients = [((p, s), set(f.split(";"))) for p, s, g, f in
                subj[["participant_id", "session", "group", "focus"]].itertuples(index=False)
                if g == "patient" and f != "n/a"]
    controls = [(p, s) for p, s, g in
                subj[["participant_id", "session", "group"]].itertuples(index=False)
                if g == "control"]
    return patients, controls


def _of_analysis(clusters: pd.DataFrame, analysis: str) -> pd.DataFrame:
    """The clusters of one analysis with text keys (empty frame when there are none)."""
    if clusters.empty or "analysis" not in clusters:
        return pd.DataFrame(columns=["participant_id", "session", "region"])
    part = clusters[clusters["analysis"].astype(str) == analysis]
    if not len(part):
        return pd.DataFrame(columns=["participant_id", "session", "region"])
    region = _text(part["region"]) if "region" in part else "n/a"
    return part.assign(participant_id=_text(part["participant_id"]),
                       session=_text(part["session"]), region=region)


def _scorable(clusters: pd.DataFrame, subjects: pd.DataFrame, what: str):
    """``(analysis, patients, controls, its clusters)`` of every analysis with patients of a
    known focus and controls (the others are skipped, saying so for ``what``)."""
    analyses = sorted(subjects["analysis"].astype(str).unique()) \
        if len(subjects) and "analysis" in subjects else []
    for analysis in analyses:
        patients, controls = _units(subjects[subjects["analysis"].astype(str) == analysis])
        if not patients or not controls:
            LOGGER.info("%s of %s skipped: %d patient(s) with a known focus, %d control(s)",
                        what, analysis, len(patients), len(controls))
            continue
        yield analysis, patients, controls, _of_analysis(clusters, analysis)


def _strengths(part: pd.DataFrame, column: str, sign: int, patients, controls
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per patient with a focus, the strongest in-focus cluster (−inf: none); per control,
    the strengths of its clusters. ``column`` holds the values to rank (strength = sign × it)."""
    values = sign * pd.to_numeric(part[column], errors="coerce").to_numpy(float) \
        if len(part) else np.zeros(0)
    keys = list(zip(part["participant_id"], part["session"]))
    regions = list(part["region"])
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    best = np.full(len(patients), -np.inf)
    for j, (key, foci) in enumerate(patients):
        hits = [values[i] for i in by_key.get(key, []) if regions[i] in foci
                and np.isfinite(values[i])]
        if hits:
            best[j] = max(hits)
    per_control = []
    for key in controls:
        vals = np.array([values[i] for i in by_key.get(key, [])], float)
        per_control.append(vals[np.isfinite(vals)])
    return best, per_control


def _vertical_band(best: np.ndarray, per_control: list[np.ndarray], counts: np.ndarray,
                   n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap 95 % band of the sensitivity at fixed false-cluster rates.

    Patients and controls are resampled separately. In each replicate the sensitivity at the
    rate ``counts[j] / n_controls`` is the best one reachable with at most ``counts[j]`` false
    clusters: with the replicate's control strengths sorted down as c₁ ≥ c₂ ≥ …, a threshold
    above c_{K+1} admits K of them, so it is the share of patients whose best in-focus
    strength exceeds c_{K+1}.
    """
    if n_boot <= 0:
        nan = np.full(len(counts), np.nan)
        return nan, nan.copy()
    n_p, n_c = len(best), len(per_control)
    sens = np.empty((n_boot, len(counts)))
    for b in range(n_boot):
        sample = best[rng.integers(0, n_p, n_p)]
        picked = rng.integers(0, n_c, n_c)
        ctrl = np.sort(np.concatenate([per_control[i] for i in picked] + [np.zeros(0)]))[::-1]
        bound = np.full(len(counts), -np.inf)
        inside = counts < len(ctrl)
        bound[inside] = ctrl[counts[inside]]
        sens[b] = (sample[None, :] > bound[:, None]).mean(axis=1)
    low, high = np.percentile(sens, [2.5, 97.5], axis=0)
    return low, high


def froc(clusters: pd.DataFrame, subjects: pd.DataFrame, score: str = "z_mass",
         n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Free-response ROC curve of every analysis: lesion sensitivity against false clusters
    per control as a threshold on a cluster score sweeps over the clusters' scores.

    Parameters
    ----------
    clusters
        All clusters (``group/clusters.tsv``): analysis, participant_id, session, region and
        the ``score`` column.
    subjects
        Per-subject rows (``group/subjects.tsv``): the denominators, so that subjects without
        clusters count.
    score
        The cluster score to threshold, a key of :data:`SCORE_SIGN`. Its sign gives the
        direction: for ``z_mass`` clusters with ``score >= threshold`` are kept, for
        ``p_corrected`` those with ``score <= threshold``.
    n_boot
        Bootstrap replicates of the confidence band (0: no band).
    seed
        Seed of ``numpy.random.default_rng``, started afresh for each analysis so that an
        analysis' band does not depend on which other analyses the folder holds.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FROC_COLUMNS`, one row per threshold from the strictest (±inf: no
        cluster kept) to the most lenient: ``sensitivity`` = patients with a known focus having
        a kept cluster in a focus region / those patients (``patients_hit`` / ``n_patients``);
        ``false_clusters_per_control`` = kept clusters in controls / controls. ``on_curve``
        marks the most lenient threshold of each false-cluster count: the FROC curve's
        sensitivity at that rate (a stricter threshold with the same count finds fewer
        lesions for no fewer false clusters). ``sensitivity_ci95_low``/``_high``: percentile
        bootstrap band of the curve at that false-cluster rate, given on the ``on_curve``
        rows (NaN on the others). An analysis without patients with a known focus, without
        controls, or whose clusters lack the score (tables from before the score existed) is
        left out, with a log message.
    """
    if score not in SCORE_SIGN:
        raise ValueError(f"unknown cluster score {score!r}; choose from {sorted(SCORE_SIGN)}")
    sign = SCORE_SIGN[score]
    parts = []
    for analysis, patients, controls, part in _scorable(clusters, subjects, "FROC"):
        if len(part) and (score not in part or part[score].isna().all()):
            LOGGER.info("FROC of %s skipped: its cluster tables have no %s column (written "
                        "by an older version; rerun the participant level)", analysis, score)
            continue
        if len(part) and part[score].isna().any():
            LOGGER.warning("FROC of %s: %d cluster(s) without %s left out", analysis,
                           int(part[score].isna().sum()), score)
        best, per_control = _strengths(part, score, sign, patients, controls)
        all_ctrl = np.concatenate(per_control + [np.zeros(0)])
        # thresholds: the strengths that can move the curve, strictest first
        levels = np.unique(np.concatenate([best[np.isfinite(best)], all_ctrl]))[::-1]
        levels = np.concatenate([[np.inf], levels])
        hits = (best[None, :] >= levels[:, None]).sum(axis=1)
        counts = (all_ctrl[None, :] >= levels[:, None]).sum(axis=1)
        # a stricter threshold with as many false clusters as a more lenient one finds fewer
        # lesions for nothing: the curve at each false-cluster rate is the most lenient one's
        on_curve = np.append(counts[1:] != counts[:-1], True)
        low, high = np.full(len(levels), np.nan), np.full(len(levels), np.nan)
        low[on_curve], high[on_curve] = _vertical_band(best, per_control, counts[on_curve],
                                                       n_boot, np.random.default_rng(seed))
        model, reference = parse_analysis_label(analysis)
        parts.append(pd.DataFrame({
            "analysis": analysis, "model": model, "z_reference": reference, "score": score,
            "direction": ">=" if sign > 0 else "<=", "threshold": sign * levels,
            "n_patients": len(patients), "n_controls": len(controls), "patients_hit": hits,
            "sensitivity": hits / len(patients), "sensitivity_ci95_low": low,
            "sensitivity_ci95_high": high, "false_clusters": counts,
            "false_clusters_per_control": counts / len(controls), "on_curve": on_curve}))
    if not parts:
        return pd.DataFrame(columns=list(FROC_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(FROC_COLUMNS)]


def froc_operating_points(clusters: pd.DataFrame, subjects: pd.DataFrame) -> pd.DataFrame:
    """Operating points of the confidence-tier rule, to mark on the FROC curve.

    Per analysis and rule of :data:`TIER_RULES` (report the ``high`` clusters; the ``high``
    and ``possible`` ones): sensitivity (Wilson 95 % CI) and false clusters per control with
    the same denominators as :func:`froc`. Analyses whose clusters have no tiers (older
    tables), no patient with a known focus or no control are left out.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`POINT_COLUMNS`.
    """
    rows = []
    for analysis, patients, controls, part in _scorable(clusters, subjects,
                                                        "tier operating points"):
        tiers = part["tier"].map(_tier) if len(part) and "tier" in part else None
        if len(part) and (tiers is None or tiers.isna().any()):
            LOGGER.info("tier operating points of %s skipped: clusters without a tier (tables "
                        "written by an older version)", analysis)
            continue
        model, reference = parse_analysis_label(analysis)
        for rule, kept in TIER_RULES.items():
            # a kept cluster has strength 1, any other −inf: thresholding at 1 applies the rule
            flags = part.assign(_kept=tiers.isin(kept).astype(float).replace(0.0, -np.inf)) \
                if len(part) else part.assign(_kept=pd.Series(dtype=float))
            best, per_control = _strengths(flags, "_kept", 1, patients, controls)
            k = int(np.isfinite(best).sum())
            false = int(sum(np.isfinite(c).sum() for c in per_control))
            lo, hi = wilson_interval(k, len(patients))
            rows.append({"analysis": analysis, "model": model, "z_reference": reference,
                         "rule": rule, "n_patients": len(patients),
                         "n_controls": len(controls), "patients_hit": k,
                         "sensitivity": k / len(patients), "sensitivity_ci95_low": lo,
                         "sensitivity_ci95_high": hi, "false_clusters": false,
                         "false_clusters_per_control": false / len(controls)})
    return pd.DataFrame(rows, columns=list(POINT_COLUMNS))


def control_clusters(clusters: pd.DataFrame) -> pd.DataFrame:
    """Every control's cluster (the false-cluster map): columns
    :data:`CONTROL_CLUSTER_COLUMNS`, old column names (``peak_template_x`` …) read as the new
    ones, columns an older table lacks left empty (NaN)."""
    if clusters.empty or "group" not in clusters:
        return pd.DataFrame(columns=list(CONTROL_CLUSTER_COLUMNS))
    ctrl = clusters[clusters["group"] == "control"].copy()
    for new, old in LEGACY_COLUMNS.items():
        if old in ctrl:
            ctrl[new] = ctrl[new].fillna(ctrl[old]) if new in ctrl else ctrl[old]
    for col in CONTROL_CLUSTER_COLUMNS:
        if col not in ctrl:
            ctrl[col] = np.nan
    return ctrl[list(CONTROL_CLUSTER_COLUMNS)].reset_index(drop=True)


def aggregate(output_dir: Path, participants: dict[str, Participant],
              labels: list[str] | None = None) -> pd.DataFrame:
    """Write the group tables under ``OUTPUT_DIR/group/``: ``subjects.tsv``, ``clusters.tsv``,
    ``summary.tsv``, ``lobes.tsv``, ``froc.tsv`` (:func:`froc` of ``z_mass``),
    ``froc_points.tsv`` (:func:`froc_operating_points`) and ``control_clusters.tsv``
    (:func:`control_clusters`).

    Raises
    ------
    InputError
        No participant results were found (exit 66).
    """
    output_dir = Path(output_dir)
    subjects, clusters = collect_subjects(output_dir, participants, labels)
    if subjects.empty:
        raise InputError("no participant results (*_desc-<model>Focus_clusters.tsv) found",
                         output_dir, "run the participant level first")
    summary = summarize(subjects)
    group_dir = output_dir / "group"
    write_tsv(group_dir / "subjects.tsv", subjects)
    write_tsv(group_dir / "clusters.tsv", clusters)
    write_tsv(group_dir / "summary.tsv", summary)
    write_tsv(group_dir / "lobes.tsv", lobe_breakdown(subjects))
    write_tsv(group_dir / "froc.tsv", froc(clusters, subjects))
    write_tsv(group_dir / "froc_points.tsv", froc_operating_points(clusters, subjects))
    write_tsv(group_dir / "control_clusters.tsv", control_clusters(clusters))
    LOGGER.info("aggregated %d participant result(s) over %d analysis(es): %s", len(subjects),
                subjects["analysis"].nunique(), ", ".join(sorted(subjects["analysis"].unique())))
    return summary
