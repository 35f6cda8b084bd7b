"""``participants.tsv``: groups (control / patient) and clinical foci (DESIGN.md §3)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pseudopet_bids.errors import InputError
from pseudopet_bids.resources import REGIONS

LOGGER = logging.getLogger(__name__)

CONTROL_WORDS = {"control", "controls", "healthy", "hc", "healthy control", "healthy_control"}
PATIENT_WORDS = {"patient", "patients", "pt", "epilepsy"}
MISSING = {"", "n/a", "na", "nan", "none", "unknown"}


@dataclass(frozen=True)
class Participant:
    """One row of ``participants.tsv`` as the pipeline uses it.

    Attributes
    ----------
    label
        Subject label without ``sub-``.
    group
        ``control``, ``patient`` or ``unknown``.
    foci
        Clinical foci as region names (``left-temporal`` …), empty when unknown.
    """

    label: str
    group: str = "unknown"
    foci: tuple[str, ...] = field(default_factory=tuple)


def parse_group(value: object) -> str:
    """Map a ``group`` cell to ``control``/``patient``/``unknown`` (case-insensitive)."""
    text = str(value).strip().lower() if value is not None else ""
    if text in CONTROL_WORDS:
        return "control"
    if text in PATIENT_WORDS:
        return "patient"
    return "unknown"


def parse_focus(value: object, path: Path | None = None, label: str = "") -> tuple[str, ...]:
    """Parse a ``focus`` cell: ``<left|right>-<lobe>`` entries separated by ``;``.

    Raises
    ------
    InputError
        An entry is neither ``n/a`` nor one of the eight regions.
    """
    text = "" if value is None else str(value).strip()
    if text.lower() in MISSING:
        return ()
    foci = []
    for part in text.split(";"):
        item = part.strip().lower().replace("_", "-").replace(" ", "-")
        if not item or item in MISSING:
            continue
        if item not in REGIONS:
            raise InputError(f"participant sub-{label}: focus {part.strip()!r} is not one of "
                             f"{', '.join(REGIONS)}", path,
                             "write the focus as <left|right>-<frontal|temporal|parietal|"
                             "occipital>, several separated by ';', or n/a")
        foci.append(item)
    return tuple(foci)


def read_participants(bids_dir: Path) -> dict[str, Participant]:
    """Read ``participants.tsv`` of a BIDS dataset.

    A missing file or missing columns are allowed (everyone becomes ``unknown``); a malformed
    focus is an error because it would silently corrupt the group statistics.

    Parameters
    ----------
    bids_dir
        Root of the BIDS dataset.

    Returns
    -------
    dict
        Subject label (without ``sub-``) → :class:`Participant`.
    """
    path = Path(bids_dir) / "participants.tsv"
    if not path.exists():
        LOGGER.info("%s not found: groups and foci unknown", path)
        return {}
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"cannot parse participants.tsv ({exc})", path,
                         "make it a tab-separated table with a participant_id column") from exc
    if "participant_id" not in table.columns:
        raise InputError("participants.tsv has no participant_id column", path,
                         "add the participant_id column (sub-<label>)")
    out: dict[str, Participant] = {}
    repeated: set[str] = set()
    for _, row in table.iterrows():
        label = str(row["participant_id"]).strip()
        label = label[4:] if label.startswith("sub-") else label
        group = parse_group(row.get("group", ""))
        foci = parse_focus(row.get("focus", ""), path, label)
        entry = Participant(label=label, group=group, foci=foci)
        if label in out and out[label] != entry:
            # e.g. one row per session (OpenNeuro ds004513) is fine; disagreeing rows would
            # put a participant in two groups of the statistics
            raise InputError(f"participant sub-{label} has several rows that disagree on group "
                             f"or focus ({out[label].group} {'; '.join(out[label].foci)} vs "
                             f"{group} {'; '.join(foci)})", path,
                             "keep one group and focus per participant")
        if label in out:
            repeated.add(label)
        out[label] = entry
    if repeated:
        LOGGER.info("%s: several rows for %s (same group and focus)", path,
                    ", ".join(f"sub-{lb}" for lb in sorted(repeated)))
    return out
