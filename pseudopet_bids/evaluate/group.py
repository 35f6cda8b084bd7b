"""Group aggregation of participants' cluster tables (detection statistics).

Definitions (DESIGN.md §1):

- detection rate: patients with at least one surviving cluster / patients;
- localization accuracy: detected patients whose cluster lies in a clinically reported focus
  region, for the largest cluster and for any cluster / detected patients with a known focus;
- false clusters per control: surviving clusters in controls / controls.

Proportions carry Wilson 95 % confidence intervals.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from pseudopet_bids.bids.derivatives import labelled_outputs
from pseudopet_bids.detect.rules import parse_analysis_label
from pseudopet_bids.io.files import write_tsv
from pseudopet_bids.bids.entities import parse_entities
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.errors import InputError
from pseudopet_bids.resources import LOBE_LABELS

LOGGER = logging.getLogger(__name__)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (NaN, NaN when n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def subject_row(info: Participant, session: str | None, regions: list[str]) -> dict:
    """Detection outcome of one participant from its clusters' regions (largest first)."""
    largest = regions[0] if regions else None
    foci = set(info.foci)
    return {
        "participant_id": f"sub-{info.label}", "session": session or "n/a",
        "group": info.group, "focus": ";".join(info.foci) or "n/a",
        "n_clusters": len(regions), "detected": len(regions) > 0,
        "regions": ";".join(dict.fromkeys(regions)) or "n/a",
        "largest_region": largest or "n/a",
        "localized_largest": (largest in foci) if (largest and foci) else None,
        "localized_any": bool(foci & set(regions)) if (regions and foci) else None,
    }


def collect_subjects(output_dir: Path, participants: dict[str, Participant],
                     labels: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-subject rows and all clusters from every ``*_desc-<analysis>Focus_clusters.tsv``.

    One row per (subject, session, PET, analysis): the analysis label names the model and the
    Z reference (:func:`pseudopet_bids.detect.rules.analysis_label`).
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
        info = participants.get(subject, Participant(label=subject))
        regions = [str(r) for r in table.get("region", pd.Series(dtype=str))]
        ident = {"analysis": analysis, "model": model, "z_reference": reference}
        rows.append({**ident, **subject_row(info, session, regions)})
        for rec in table.to_dict("records"):
            clusters.append({**ident, "participant_id": f"sub-{subject}",
                             "session": session or "n/a", "group": info.group, **rec})
    return pd.DataFrame(rows), pd.DataFrame(clusters)


def _proportion(name: str, k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"measure": name, "count": k, "n": n, "value": k / n if n else float("nan"),
            "ci95_low": lo, "ci95_high": hi}


def _split(subjects: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Patients, controls, and detected patients with a known focus."""
    if subjects.empty:
        return subjects, subjects, subjects
    patients = subjects[subjects["group"] == "patient"]
    controls = subjects[subjects["group"] == "control"]
    detected = patients[patients["detected"].astype(bool) & (patients["focus"] != "n/a")]
    return patients, controls, detected


def summarize_one(subjects: pd.DataFrame) -> pd.DataFrame:
    """Detection rate, localization accuracy, false clusters per control (one analysis)."""
    patients, controls, detected = _split(subjects)
    count = (lambda frame, col: int((frame[col] == True).sum()) if len(frame) else 0)  # noqa: E712
    out = [_proportion("detection_rate", count(patients, "detected"), len(patients)),
           _proportion("localization_accuracy_largest", count(detected, "localized_largest"),
                       len(detected)),
           _proportion("localization_accuracy_any", count(detected, "localized_any"),
                       len(detected)),
           _proportion("controls_with_clusters", count(controls, "detected"), len(controls))]
    n_false = int(controls["n_clusters"].sum()) if len(controls) else 0
    out.append({"measure": "false_clusters_per_control", "count": n_false, "n": len(controls),
                "value": n_false / len(controls) if len(controls) else float("nan"),
                "ci95_low": float("nan"), "ci95_high": float("nan")})
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
    """Per region: patients with that focus, detected, localized (largest / any), and the
    clusters that fell in the region in controls."""
    patients, controls, _ = _split(subjects)
    rows = []
    for region in LOBE_LABELS.values():
        has = patients[patients["focus"].str.split(";").apply(lambda f: region in f)] \
            if len(patients) else patients
        det = has[has["detected"].astype(bool)] if len(has) else has
        lar = int(det["largest_region"].eq(region).sum()) if len(det) else 0
        anyr = int(det["regions"].str.split(";").apply(lambda r: region in r).sum()) \
            if len(det) else 0
        ctrl = int(controls["regions"].str.split(";").apply(lambda r: region in r).sum()) \
            if len(controls) else 0
        d_lo, d_hi = wilson_interval(len(det), len(has))
        a_lo, a_hi = wilson_interval(anyr, len(det))
        rows.append({"region": region, "patients_with_focus": len(has), "detected": len(det),
                     "detection_rate": len(det) / len(has) if len(has) else float("nan"),
                     "detection_ci95_low": d_lo, "detection_ci95_high": d_hi,
                     "localized_largest": lar, "localized_any": anyr,
                     "localization_any_rate": anyr / len(det) if len(det) else float("nan"),
                     "localization_any_ci95_low": a_lo, "localization_any_ci95_high": a_hi,
                     "controls_with_cluster_here": ctrl})
    return pd.DataFrame(rows)


def lobe_breakdown(subjects: pd.DataFrame) -> pd.DataFrame:
    """:func:`lobe_breakdown_one` for every analysis found."""
    return _per_analysis(subjects, lobe_breakdown_one)


def aggregate(output_dir: Path, participants: dict[str, Participant],
              labels: list[str] | None = None) -> pd.DataFrame:
    """Write ``group/subjects.tsv``, ``clusters.tsv``, ``summary.tsv`` and ``lobes.tsv``.

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
    LOGGER.info("aggregated %d participant result(s) over %d analysis(es): %s", len(subjects),
                subjects["analysis"].nunique(), ", ".join(sorted(subjects["analysis"].unique())))
    return summary
