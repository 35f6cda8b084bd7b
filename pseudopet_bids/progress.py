"""Progress of a run: stage timing, a per-subject ``status.json``, bars or log lines.

* :func:`timed` wraps a stage: logs ``key: step ...`` / ``key: step done in X s``, stores the
  duration and reports start, end or failure to a :class:`SubjectStatus`.
* :class:`SubjectStatus` writes the state of one (subject, session) run atomically to a JSON
  file (stage, weighted fraction done, elapsed, ETA, last error; docs/progress.md).
* :class:`ProgressReporter` / :func:`iterate`: progress inside a long stage, as a tqdm bar on a
  terminal or throttled log lines otherwise, fed into the status.
No torch or pandas import at module import: the CLI and status readers use this module.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from pseudopet_bids import __version__

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1  # run states: queued running finished failed skipped

#: Expected seconds per stage, used as relative weights of the fraction done. Measured for one
#: simulated subject (T1w 1 mm, PET 2 mm, tissue model, 2 threads) in docs/performance.md;
#: ``reports`` (HTML page + citation, written after the stages) is an estimate from the gap
#: between the wall time and the stage total there. ``pseudo-normal PET`` is matched by prefix,
#: its full name carries the model (``pseudo-normal PET (tissue)``); trained models run from
#: seconds (GPU) to minutes (CPU, docs/models_benchmark.md): pass ``weights`` to override.
DEFAULT_STAGE_WEIGHTS: dict[str, float] = {
    "image intake": 0.3, "brain mask": 2.4, "T1w to template registration": 8.4,
    "atlas to T1w": 4.0, "tissue segmentation": 3.7, "PET to T1w coregistration": 4.2,
    "pseudo-normal PET": 4.4, "detection": 0.4, "writing derivatives": 7.5, "reports": 2.0}
#: Weight of a stage that is in no weight table (an unplanned step is assumed short).
UNKNOWN_STAGE_WEIGHT = 1.0
#: The stages of ``preproc.pipeline.preprocess``, in order (skipped together on a cache hit).
PREPROCESSING_STAGES = ("brain mask", "T1w to template registration", "atlas to T1w",
                        "tissue segmentation", "PET to T1w coregistration")
#: No ETA before this share of the weighted work was done in this run (too noisy earlier).
MIN_ETA_FRACTION = 0.01


def participant_stages(model_name: str) -> list[str]:
    """The stages of a participant run in order, as :func:`timed` names them (``model_name``:
    ``tissue`` or the trained model's name, part of the synthesis stage's name)."""
    return ["image intake", *PREPROCESSING_STAGES, f"pseudo-normal PET ({model_name})",
            "detection", "writing derivatives", "reports"]


def stage_weight(name: str, weights: Mapping[str, float] | None = None) -> float:
    """Weight of a stage: the exact name, else the longest key that prefixes it, else
    :data:`UNKNOWN_STAGE_WEIGHT`."""
    table = DEFAULT_STAGE_WEIGHTS if weights is None else {**DEFAULT_STAGE_WEIGHTS, **weights}
    if name in table:
        return max(0.0, float(table[name]))
    prefixes = [k for k in table if name.startswith(k)]
    return max(0.0, float(table[max(prefixes, key=len)])) if prefixes else UNKNOWN_STAGE_WEIGHT


class SubjectStatus:
    """State of one (subject, session) run, mirrored to a JSON file (schema: docs/progress.md).

    Every change is written at once, except :meth:`progress` (at most every ``min_interval_s``).
    Writes are atomic (temporary file + rename); a failed write is logged once as a warning and
    never raises: the status must not break the run it describes. Thread-safe.

    Parameters
    ----------
    path
        The status file (``OUTPUT_DIR/logs/sub-<L>[_ses-<S>]_status.json``), or None to keep
        the state in memory only. Written once at construction (state ``queued``).
    subject, session
        Labels without ``sub-``/``ses-``.
    stages, weights
        Planned stages in order, as names or ``(name, weight)`` pairs; name weights come from
        :func:`stage_weight` with ``weights`` overriding :data:`DEFAULT_STAGE_WEIGHTS`. An
        unplanned stage is inserted after the last stage that has begun.
    min_interval_s
        Least time between two writes caused by :meth:`progress`.
    clock, wall_clock
        Monotonic seconds (durations) and aware UTC datetimes (timestamps); for tests.
    """

    def __init__(self, path: str | Path | None, subject: str, session: str | None = None,
                 stages: Iterable[str | tuple[str, float]] = (),
                 weights: Mapping[str, float] | None = None, min_interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.path = None if path is None else Path(path)
        self.subject, self.session, self.state = subject, session, "queued"
        self.min_interval_s, self.n_writes = float(min_interval_s), 0
        self._weights, self._clock, self._wall = dict(weights or {}), clock, wall_clock
        self._lock = threading.RLock()
        self._stages: list[dict[str, Any]] = [
            self._new_stage(*((item, None) if isinstance(item, str) else item))
            for item in stages]
        self._current: int | None = None  # index of the stage running or last begun
        self._within = 0.0  # fraction of the current stage
        self._t0: float | None = None
        self._t_end: float | None = None  # freezes elapsed once the run is over
        self._last_write: float | None = None
        self._started: str | None = None
        self._reason: str | None = None
        self._last_error: dict[str, Any] | None = None
        self._warned, self._host = False, socket.gethostname()
        self._write(force=True)

    def start(self) -> None:
        """Start the run's clock (idempotent; :meth:`start_stage` implies it)."""
        with self._lock:
            self._start()
            self._write(force=True)

    def start_stage(self, name: str) -> None:
        """Begin ``name``; a stage still running is counted as done."""
        with self._lock:
            self._start()
            now = self._clock()
            if self._current is not None and self._stages[self._current]["state"] == "running":
                self._close_stage(self._current, "done", None, now)
            i = self._index(name)
            self._stages[i].update(state="running", seconds=None, reason=None, t0=now)
            self._current, self._within = i, 0.0
            self.state, self._t_end = "running", None  # also after a failure that was handled
            self._write(force=True)

    def progress(self, fraction: float) -> None:
        """Share (0–1) of the current stage done; written at most every ``min_interval_s``."""
        with self._lock:
            if self._current is None or self._stages[self._current]["state"] != "running":
                return
            self._within = min(1.0, max(0.0, float(fraction)))
            self._write(force=False)

    def finish_stage(self, name: str, seconds: float | None = None) -> None:
        """Mark ``name`` done after ``seconds`` (default: the time since its start)."""
        with self._lock:
            self._start()
            i = self._index(name)
            self._close_stage(i, "done", seconds, self._clock())
            self._current = i
            self._write(force=True)

    def skip_stages(self, names: Iterable[str], reason: str) -> None:
        """Count stages as done without running them (reused from a cache or from other
        derivatives): they add to the fraction done but not to the rate behind the ETA."""
        with self._lock:
            self._start()
            for name in names:
                i = self._index(name)
                self._stages[i].update(state="skipped", seconds=0.0, reason=reason, t0=None)
                cur = self._current
                if cur is None or (self._stages[cur]["state"] != "running" and i > cur):
                    self._current = i
            self._write(force=True)

    def fail(self, error: BaseException | str, stage: str | None = None) -> None:
        """Record a failure: state ``failed``, ``last_error`` with its type, message and stage.

        The same error reported again (a stage's :func:`timed` first, then the caller around
        the whole run) keeps the first record, which names the stage more precisely.
        """
        with self._lock:
            kind = type(error).__name__ if isinstance(error, BaseException) else "Error"
            message = str(error) or kind
            if self.state == "failed" and (self._last_error or {}).get("message") == message:
                return
            now = self._clock()
            if self._current is not None and self._stages[self._current]["state"] == "running":
                self._close_stage(self._current, "failed", None, now)
            if stage is None and self._current is not None:
                stage = self._stages[self._current]["name"]
            self._last_error = {"type": kind, "message": message, "stage": stage,
                                "time": self._timestamp()}
            self.state, self._t_end = "failed", now if self._t0 is not None else None
            self._write(force=True)

    def done(self) -> None:
        """The run finished: state ``finished``, fraction 1; a stage still running is done,
        planned stages that never ran are marked skipped (``not run``)."""
        with self._lock:
            self._start()
            now = self._clock()
            for i, st in enumerate(self._stages):
                if st["state"] == "running":
                    self._close_stage(i, "done", None, now)
                elif st["state"] == "pending":
                    st.update(state="skipped", seconds=0.0, reason="not run")
            self.state, self._t_end = "finished", now
            self._write(force=True)

    def skipped(self, reason: str) -> None:
        """Nothing to do (e.g. already finished with the same settings): state ``skipped``."""
        with self._lock:
            for st in self._stages:
                if st["state"] in ("pending", "running"):
                    st.update(state="skipped", seconds=0.0, reason=reason, t0=None)
            self.state, self._reason = "skipped", reason
            self._t_end = self._clock() if self._t0 is not None else None
            self._write(force=True)

    def fraction_done(self) -> float:
        """Weighted share of the work done, including the current stage's fraction."""
        with self._lock:
            if self.state in ("finished", "skipped"):
                return 1.0
            done, _, total = self._weights_done()
            return min(1.0, done / total) if total > 0 else 0.0

    def elapsed(self) -> float:
        """Seconds since the run started (frozen once it finished, failed or was skipped)."""
        with self._lock:
            if self._t0 is None:
                return 0.0
            return (self._t_end if self._t_end is not None else self._clock()) - self._t0

    def eta(self) -> float | None:
        """Seconds left: the remaining weight at the pace of the work done in this run (stages
        skipped from a cache do not count as pace). None until meaningful; 0 when over."""
        with self._lock:
            if self.state != "running":
                return 0.0 if self.state in ("finished", "skipped") else None
            done, worked, total = self._weights_done()
            elapsed = self.elapsed()
            if total <= 0 or worked < MIN_ETA_FRACTION * total or elapsed <= 0:
                return None
            return max(0.0, elapsed * (total - done) / worked)

    def snapshot(self) -> dict[str, Any]:
        """The status as written to the file."""
        with self._lock:
            cur = None if self._current is None else self._stages[self._current]
            eta = self.eta()
            return {
                "schema_version": SCHEMA_VERSION, "subject": self.subject,
                "session": self.session, "state": self.state,
                "stage": None if cur is None else cur["name"],
                "stage_index": 0 if self._current is None else self._current + 1,
                "n_stages": len(self._stages),
                "stages": [{"name": s["name"], "state": s["state"],
                            "seconds": None if s["seconds"] is None else round(s["seconds"], 2),
                            "reason": s["reason"]} for s in self._stages],
                "fraction_done": round(self.fraction_done(), 4),
                "elapsed_s": round(self.elapsed(), 1),
                "eta_s": None if eta is None else round(eta, 1),
                "started": self._started, "updated": self._timestamp(),
                "pid": os.getpid(), "hostname": self._host,
                "last_error": None if self._last_error is None else dict(self._last_error),
                "reason": self._reason, "pseudopet_version": __version__}

    def _new_stage(self, name: str, weight: float | None) -> dict[str, Any]:
        w = stage_weight(name, self._weights) if weight is None else max(0.0, float(weight))
        return {"name": name, "weight": w, "state": "pending", "seconds": None, "reason": None,
                "t0": None}

    def _index(self, name: str) -> int:
        for i, st in enumerate(self._stages):
            if st["name"] == name:
                return i
        # unplanned: after the last stage that has begun, so the list stays in run order
        begun = [i for i, s in enumerate(self._stages) if s["state"] != "pending"]
        at = begun[-1] + 1 if begun else 0
        self._stages.insert(at, self._new_stage(name, None))
        if self._current is not None and self._current >= at:
            self._current += 1
        return at

    def _start(self) -> None:
        if self._t0 is None:
            self._t0, self._started = self._clock(), self._timestamp()
        self.state = "running" if self.state == "queued" else self.state

    def _close_stage(self, i: int, state: str, seconds: float | None, now: float) -> None:
        st = self._stages[i]
        if seconds is None:
            seconds = now - st["t0"] if st["t0"] is not None else 0.0
        st.update(state=state, seconds=float(seconds), t0=None)
        self._within = 0.0 if i == self._current else self._within

    def _weights_done(self) -> tuple[float, float, float]:
        """(weight done incl. skipped, weight worked in this run, total weight)."""
        by = {k: sum(s["weight"] for s in self._stages if s["state"] == k)
              for k in ("done", "skipped", "running")}
        # only the current stage runs; its fraction counts as work done in this run
        worked = by["done"] + by["running"] * self._within
        return by["skipped"] + worked, worked, sum(s["weight"] for s in self._stages)

    def _timestamp(self) -> str:
        return self._wall().astimezone(timezone.utc).isoformat(timespec="seconds")

    def _write(self, force: bool) -> None:
        if self.path is None:
            return
        now = self._clock()
        if not force and self._last_write is not None \
                and now - self._last_write < self.min_interval_s:
            return
        self._last_write = now  # also after a failure: no retry at every progress call
        try:
            # lazy: io.files imports pandas, and this module must not (module docstring,
            # tests/test_progress.py::test_module_imports_no_torch)
            from pseudopet_bids.io.files import atomic_write_text

            atomic_write_text(self.path, json.dumps(self.snapshot(), indent=2) + "\n")
            self.n_writes += 1
        except Exception as exc:  # noqa: BLE001 - a status file must never fail the run
            if not self._warned:
                LOGGER.warning("status file %s not written (%s: %s); the run goes on without "
                               "it", self.path, type(exc).__name__, exc)
                self._warned = True
            else:
                LOGGER.debug("status file %s not written: %s", self.path, exc)


def is_stale(status: Mapping[str, Any]) -> bool | None:
    """Whether a ``running``/``queued`` status was left by a killed process: True when its
    ``pid`` is gone on this host; False when the run is over or the pid is alive (possibly
    reused: look at ``updated``); None on another host (cannot tell)."""
    if status.get("state") not in ("running", "queued"):
        return False
    if status.get("hostname") != socket.gethostname():
        return None
    try:
        os.kill(int(status["pid"]), 0)  # signal 0: existence check only
    except ProcessLookupError:
        return True
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    except PermissionError:  # another user's live process
        pass
    return False


@contextmanager
def timed(timings: dict[str, float], step: str, key: str,
          status: SubjectStatus | None = None, logger: logging.Logger | None = None
          ) -> Iterator[None]:
    """Log the start and duration of a stage, store its duration, report it to ``status``.

    Logs ``"<key>: <step> ..."`` and ``"<key>: <step> done in <s> s"`` (the format of the
    former ``preproc.pipeline.timed``) to ``logger`` (default: this module's) and sets
    ``timings[step]`` (seconds, 2 decimals). An exception is recorded in ``status`` as a
    failure of ``step`` and propagates unchanged.
    """
    log = logger or LOGGER
    log.info("%s: %s ...", key, step)
    if status is not None:
        status.start_stage(step)
    t0 = time.monotonic()
    try:
        yield
    except BaseException as exc:
        if status is not None:
            status.fail(exc, stage=step)
        raise
    timings[step] = round(time.monotonic() - t0, 2)
    if status is not None:
        status.finish_stage(step, timings[step])
    log.info("%s: %s done in %.1f s", key, step, timings[step])


def stderr_is_tty() -> bool:
    """Whether stderr is an interactive terminal (False when closed or replaced)."""
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def format_hms(seconds: float | None) -> str:
    """``H:MM:SS`` with unbounded hours (``?`` for None/NaN/inf)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


class ProgressReporter:
    """Progress of a counted loop: a tqdm bar on a terminal, plain log lines otherwise.

    A log line (percent, postfix values, rate, elapsed, ETA) is written when at least
    ``min_interval_s`` seconds and, if given, ``every_fraction`` of ``total`` have passed since
    the previous one, and once at the end of a loop that ran at least ``min_interval_s``.
    Every update also feeds ``status.progress``.

    Parameters
    ----------
    total, unit
        Expected count (None: no percent nor ETA) and its unit (``it``, ``steps``, ``slices``).
    desc
        Starts the bar and the lines (e.g. ``"sub-01: synthesis"``).
    status, logger
        :class:`SubjectStatus` whose current stage this loop is; where lines go.
    min_interval_s, every_fraction
        Throttles of the log lines (see above).
    max_interval_s
        A line is also written when this long has passed since the previous one, whatever
        ``every_fraction`` says (long loops: a training at 5 % steps may be hours apart).
    first_at
        Also write a line when the count reaches this value: an early rate and ETA.
    initial
        Count already done (a resumed training); the rate counts from here.
    enabled, tty, leave
        ``enabled=False``: neither bar nor lines (non-main ranks; the status is still fed);
        ``tty`` forces bar/lines (default :func:`stderr_is_tty`); keep the finished bar.
    clock
        Monotonic seconds (injectable for tests).
    """

    def __init__(self, total: int | None, desc: str = "", *, status: SubjectStatus | None = None,
                 logger: logging.Logger | None = None, min_interval_s: float = 10.0,
                 every_fraction: float | None = None, initial: int = 0, unit: str = "it",
                 enabled: bool = True, tty: bool | None = None, leave: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 max_interval_s: float | None = None, first_at: int | None = None):
        self.total, self.desc, self.unit, self.status = total, desc, unit, status
        self.enabled, self.logger = enabled, logger or LOGGER
        self.min_interval_s, self.every_fraction = float(min_interval_s), every_fraction
        self.max_interval_s, self.first_at = max_interval_s, first_at
        self.n = self._start = self._last_n = int(initial)
        self._clock, self._t0 = clock, clock()
        self._last_t = self._t0
        self.bar = None
        if enabled and (stderr_is_tty() if tty is None else tty):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                            dynamic_ncols=True, leave=leave)

    def update(self, n: int = 1, postfix: Mapping[str, float] | None = None) -> None:
        """Count ``n`` more."""
        self.update_to(self.n + n, postfix)

    def update_to(self, done: int, postfix: Mapping[str, float] | None = None) -> None:
        """Set the count to ``done`` (absolute), with optional values to show (losses)."""
        self.n = int(done)
        if self.status is not None and self.total:
            self.status.progress(self.n / self.total)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.n - self.bar.n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.3f}" for k, v in postfix.items()})
            return
        now = self._clock()
        if self._line_due(now):
            self._log_line(now, postfix)

    def close(self) -> None:
        """Close the bar (if any)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line_due(self, now: float) -> bool:
        if self.n == self._last_n:
            return False
        if self.total is not None and self.n >= self.total:  # last line of a long-enough loop
            return now - self._t0 >= self.min_interval_s
        if self.first_at is not None and self._last_n < self.first_at <= self.n:
            return True
        if self.max_interval_s is not None and now - self._last_t >= self.max_interval_s:
            return True
        return now - self._last_t >= self.min_interval_s and (
            self.every_fraction is None or not self.total
            or self.n - self._last_n >= self.every_fraction * self.total)

    def _log_line(self, now: float, postfix: Mapping[str, float] | None) -> None:
        rate = (self.n - self._start) / (now - self._t0) if now > self._t0 else 0.0
        count = (f"{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f} %)"
                 if self.total else f"{self.n} {self.unit}")
        eta = (self.total - self.n) / rate if self.total and rate > 0 else None
        parts = [f"{self.desc}: {count}" if self.desc else count,
                 *(f"{k} {v:.4f}" for k, v in (postfix or {}).items()),
                 f"{rate:.2f} {self.unit}/s", f"elapsed {format_hms(now - self._t0)}",
                 f"ETA {format_hms(eta)}"]
        self.logger.info("%s", "  ".join(parts))
        self._last_t, self._last_n = now, self.n


def iterate(iterable: Iterable[T], total: int | None = None, desc: str = "",
            status: SubjectStatus | None = None, logger: logging.Logger | None = None,
            min_interval_s: float = 10.0, unit: str = "it", **kwargs: Any) -> Iterator[T]:
    """Yield the items of ``iterable`` while reporting progress (:class:`ProgressReporter`).

    ``total`` defaults to ``len(iterable)`` when it has one; an item counts as done when the
    next one is asked for. Other keyword arguments go to :class:`ProgressReporter`.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with ProgressReporter(total, desc, status=status, logger=logger,
                          min_interval_s=min_interval_s, unit=unit, **kwargs) as reporter:
        for item in iterable:
            yield item
            reporter.update(1)
