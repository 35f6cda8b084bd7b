"""What the terminal says about a participant-level run as a whole: one progress line per
finished participant (done of N, ETA) and the closing recap table.

Formatting only, plus :func:`cluster_summary`, which reads one cluster table; the participant
flow (:mod:`.participant`) feeds the outcomes in.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

#: Outcome of one unit: processed now, skipped as finished earlier, failed, or not runnable.
OK, SKIPPED, FAILED, NOT_RUN = "ok", "skipped", "failed", "not run"


@dataclass(frozen=True)
class UnitOutcome:
    """How one (subject, session) ended in this run.

    Attributes
    ----------
    key
        ``sub-L[_ses-S]``.
    status
        :data:`OK`, :data:`SKIPPED` (finished earlier with the same settings), :data:`FAILED`
        or :data:`NOT_RUN` (refused at pre-flight).
    seconds
        Wall time spent on it in this run.
    error
        The failure or the pre-flight reason (empty otherwise).
    """

    key: str
    status: str
    seconds: float = 0.0
    error: str = ""


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class RunProgress:
    """Participants done of the run's total and the time left.

    The ETA is the mean wall time of the participants processed in this run (skipped ones
    take no time and are left out) times the ones left, divided among the parallel workers.
    """

    total: int
    workers: int = 1
    outcomes: list[UnitOutcome] = field(default_factory=list)

    def add(self, outcome: UnitOutcome, elapsed: float) -> str:
        """Record ``outcome`` and return the progress line (``elapsed``: seconds since the
        participants started)."""
        self.outcomes.append(outcome)
        done = len(self.outcomes)
        counts = {s: sum(o.status == s for o in self.outcomes) for s in (FAILED, SKIPPED)}
        extra = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        line = (f"{outcome.key} {outcome.status}"
                + (f" in {duration(outcome.seconds)}" if outcome.status != SKIPPED else "")
                + f" | {done} of {self.total} participants done"
                + (f" ({extra})" if extra else "") + f", {duration(elapsed)} elapsed")
        eta = self.eta()
        if eta is not None:
            line += f", about {duration(eta)} left"
        return line

    def eta(self) -> float | None:
        """Seconds left, or None when nothing was processed yet (or nothing is left)."""
        left = self.total - len(self.outcomes)
        timed = [o.seconds for o in self.outcomes if o.status in (OK, FAILED)]
        if left <= 0 or not timed:
            return None
        per_unit = sum(timed) / len(timed)
        return per_unit * math.ceil(left / max(1, min(self.workers, left)))


def cluster_summary(table: Path) -> tuple[str, str]:
    """``(number of clusters, top-ranked cluster as "tier, region")`` from a cluster table;
    ``("-", "-")`` when it cannot be read (a failed or removed analysis)."""
    try:
        with open(table, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, csv.Error, UnicodeDecodeError):
        return "-", "-"
    if not rows:
        return "0", "none"
    top = rows[0]
    return str(len(rows)), f"{top.get('tier', 'n/a')}, {top.get('region', 'n/a')}"


def summary_line(outcomes: list[UnitOutcome], seconds: float) -> str:
    """``done in T: N ok, N failed, N skipped (N finished earlier, N without inputs)``."""
    count = {s: sum(o.status == s for o in outcomes) for s in (OK, FAILED, SKIPPED, NOT_RUN)}
    return (f"participant level done in {duration(seconds)}: {count[OK]} ok, {count[FAILED]} "
            f"failed, {count[SKIPPED] + count[NOT_RUN]} skipped ({count[SKIPPED]} finished "
            f"earlier with the same settings, {count[NOT_RUN]} without the inputs they need)")


def recap_table(outcomes: list[UnitOutcome], tables: dict[str, Path], width: int = 60
                ) -> str:
    """The closing table: participant, status, clusters, top-ranked cluster, time.

    Parameters
    ----------
    outcomes
        In the order to show.
    tables
        Key → the analysis' cluster table (read for ok and skipped units).
    width
        Longest error or reason shown in the "top cluster" column (the log has it in full).
    """
    rows = [("participant", "status", "clusters", "top cluster (tier, region) / reason", "time")]
    for o in outcomes:
        if o.status in (OK, SKIPPED) and o.key in tables:
            n, top = cluster_summary(tables[o.key])
        else:
            reason = " ".join(o.error.split())
            n, top = "-", reason if len(reason) <= width else reason[:width - 1] + "…"
        rows.append((o.key, o.status, n, top,
                     duration(o.seconds) if o.status in (OK, FAILED) else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1]
                     for r in rows)
