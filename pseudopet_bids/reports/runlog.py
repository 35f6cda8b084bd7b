"""What the run logs say about one participant: the run that last processed it (command line,
date, version, folders) and its warnings and errors, for the report's "About" and "Errors"
sections.

Every run writes ``OUTPUT_DIR/logs/pseudopet_<level>_<stamp>.log`` (the full log) and
``config_<level>_<stamp>.toml`` (its settings, with a ``[run]`` table: command line, start
time, host); a participant's lines in the log start with or name its key (``sub-01``,
``sub-01_ses-1``). :func:`latest_participant_run` finds the newest participant run whose log
names the subject. Parsing (:func:`parse_log_line`, :func:`subject_messages`) is pure; the
file access is in :func:`latest_participant_run` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: ``setup_logging``'s file format: ``2026-01-02 03:04:05,678 logger.name [LEVEL] message``.
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,\d+)? (\S+) \[([A-Z]+)\] (.*)$")
#: Levels reported in the "Errors" section.
REPORTED_LEVELS = ("WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class LogMessage:
    """One line of a run log."""

    time: str
    logger: str
    level: str
    text: str


@dataclass
class RunInfo:
    """A run that processed a participant, and what its log says about that participant.

    Attributes
    ----------
    config, log
        The run's ``config_participant_<stamp>.toml`` and its log file.
    settings
        The config's tables (``pseudopet`` settings, ``run``: command, started, host).
    messages
        The participant's log lines at WARNING level or above, in order.
    """

    config: Path
    log: Path
    settings: dict[str, Any] = field(default_factory=dict)
    messages: list[LogMessage] = field(default_factory=list)

    @property
    def stamp(self) -> str:
        """``<date>-<time>-<host>-<pid>`` of the file names."""
        return self.log.stem.split("_", 2)[-1]


def parse_log_line(line: str) -> LogMessage | None:
    """A log file line as a :class:`LogMessage`, or None (a traceback or continuation line)."""
    match = _LINE.match(line.rstrip("\n"))
    if match is None:
        return None
    return LogMessage(*match.groups())


def names_subject(text: str, subject: str) -> bool:
    """True when a message names ``sub-<subject>`` (``sub-01``, ``sub-01_ses-1…``, not
    ``sub-011``)."""
    return re.search(rf"(?<![\w-])sub-{re.escape(subject)}(?![A-Za-z0-9])", text) is not None


def subject_messages(lines: Iterable[str], subject: str,
                     levels: Iterable[str] = REPORTED_LEVELS) -> tuple[bool, list[LogMessage]]:
    """Whether any line of a log names the subject, and its lines at ``levels``.

    Repeated identical messages are kept once (a subject's error is also repeated in the
    run's closing summary).
    """
    wanted, named, out, seen = set(levels), False, [], set()
    for line in lines:
        msg = parse_log_line(line)
        if msg is None or not names_subject(msg.text, subject):
            continue
        named = True
        text = msg.text.strip()
        if msg.level in wanted and (msg.level, text) not in seen:
            seen.add((msg.level, text))
            out.append(msg)
    return named, out


def _may_include(settings: dict[str, Any], subject: str) -> bool:
    """False when the run's ``--participant-label`` list leaves the subject out."""
    table = settings.get("pseudopet", {})
    labels = table.get("input", table).get("participant_label") or []
    return not labels or subject in labels


def latest_participant_run(output_dir: Path, subject: str) -> RunInfo | None:
    """The newest participant-level run of ``output_dir`` whose log names ``sub-<subject>``,
    with that subject's warnings and errors; None when no log names it (e.g. logs removed)."""
    logs = Path(output_dir) / "logs"
    subject = subject[4:] if subject.startswith("sub-") else subject
    for log in sorted(logs.glob("pseudopet_participant_*.log"), reverse=True):
        config = logs / f"config_participant_{log.stem.split('_', 2)[-1]}.toml"
        try:
            settings = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            settings = {}
        if not _may_include(settings, subject):
            continue  # a job of a job array: only its own participants are in its log
        try:
            with log.open(encoding="utf-8", errors="replace") as handle:
                named, messages = subject_messages(handle, subject)
        except OSError:
            continue
        if named:
            return RunInfo(config, log, settings, messages)
    return None


def command_line(settings: dict[str, Any]) -> str | None:
    """The recorded command line (``[run] command``), shell-quoted; None when not recorded
    (runs of earlier versions)."""
    import shlex

    command = settings.get("run", {}).get("command")
    if isinstance(command, list) and command:
        return shlex.join(str(part) for part in command)
    return None


__all__ = ["LogMessage", "RunInfo", "parse_log_line", "names_subject", "subject_messages",
           "latest_participant_run", "command_line"]
