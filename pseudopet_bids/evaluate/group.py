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

from pseudopet_bids.bids.derivatives import write_tsv
from pseudopet_bids.bids.entities import parse_entities
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.errors import InputError

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
    """Per-subject rows and all clusters from ``*_desc-focus_clusters.tsv`` files."""
    rows, clusters = [], []
    for tsv in sorted(Path(output_dir).glob("sub-*/**/pet/*_desc-focus_clusters.tsv")):
        ents = parse_entities(tsv)
        subject = ents.get("sub")
        if labels and subject not in labels:
            continue
        session = ents.get("ses")
        table = pd.read_csv(tsv, sep="\t", na_values=["n/a"])
        info = participants.get(subject, Participant(label=subject))
        regions = [str(r) for r in table.get("region", pd.Series(dtype=str))]
        rows.append(subject_row(info, session, regions))
        for rec in table.to_dict("records"):
            clusters.append({"participant_id": f"sub-{subject}", "session": session or "n/a",
                             "group": info.group, **rec})
    return pd.DataFrame(rows), pd.DataFrame(clusters)


def summarize(subjects: pd.DataFrame) -> pd.DataFrame:
    """Detection rate, localization accuracy and false clusters per control, with Wilson CIs."""
    out = []
    patients = subjects[subjects["group"] == "patient"] if len(subjects) else subjects
    controls = subjects[subjects["group"] == "control"] if len(subjects) else subjects

    def add(name: str, k: int, n: int) -> None:
        lo, hi = wilson_interval(k, n)
        out.append({"measure": name, "count": k, "n": n,
                    "value": k / n if n else float("nan"), "ci95_low": lo, "ci95_high": hi})

    add("detection_rate", int(patients["detected"].sum()) if len(patients) else 0, len(patients))
    detected = patients[patients["detected"] & (patients["focus"] != "n/a")] \
        if len(patients) else patients
    add("localization_accuracy_largest",
        int((detected["localized_largest"] == True).sum()) if len(detected) else 0,  # noqa: E712
        len(detected))
    add("localization_accuracy_any",
        int((detected["localized_any"] == True).sum()) if len(detected) else 0,  # noqa: E712
        len(detected))
    add("controls_with_clusters", int(controls["detected"].sum()) if len(controls) else 0,
        len(controls))
    n_false = int(controls["n_clusters"].sum()) if len(controls) else 0
    out.append({"measure": "false_clusters_per_control", "count": n_false, "n": len(controls),
                "value": n_false / len(controls) if len(controls) else float("nan"),
                "ci95_low": float("nan"), "ci95_high": float("nan")})
    return pd.DataFrame(out)


def aggregate(output_dir: Path, participants: dict[str, Participant],
              labels: list[str] | None = None) -> pd.DataFrame:
    """Write ``group/subjects.tsv``, ``group/clusters.tsv`` and ``group/summary.tsv``.

    Raises
    ------
    InputError
        No participant results were found (exit 66).
    """
    output_dir = Path(output_dir)
    subjects, clusters = collect_subjects(output_dir, participants, labels)
    if subjects.empty:
        raise InputError("no participant results (*_desc-focus_clusters.tsv) found",
                         output_dir, "run the participant level first")
    summary = summarize(subjects)
    group_dir = output_dir / "group"
    write_tsv(group_dir / "subjects.tsv", subjects)
    write_tsv(group_dir / "clusters.tsv", clusters)
    write_tsv(group_dir / "summary.tsv", summary)
    LOGGER.info("aggregated %d participant result(s)", len(subjects))
    return summary
