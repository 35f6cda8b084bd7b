"""Temporary files and folders, and the cleanup of those that killed runs left behind.

Names carry their owner so that a cleanup never removes a concurrent job's live temporary:

* ``.<name>.pp-<host>-<pid>-<random>.tmp``: the file of an atomic write
  (:func:`pseudopet_bids.io.files.atomic_write_bytes`);
* ``.staging-<key>.pp-<host>-<pid>``: a participant run's outputs before they are renamed
  into place;
* ``.tmp.pp-<host>-<pid>``: a process's private temporary folder in ``WORK/tmp``
  (:func:`private_tempdir`).

A temporary of this host is stale when its owner process is gone (or the pid now belongs to a
process started after the temporary was last modified); one of another host, or naming no
owner, when nothing in it changed for :data:`STALE_AFTER_S` (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

LOGGER = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
OWNER_MARK = ".pp-"
#: A temporary file or folder of another host (or of an unknown owner) untouched for this long
#: is taken as left by a killed run: an atomic write lasts seconds, a staging folder minutes.
STALE_AFTER_S = 3600.0
#: Slack between a file's mtime and a process start time computed from /proc (1 s resolution).
_START_SLACK_S = 2.0


@functools.lru_cache(maxsize=1)
def host_id() -> str:
    """This host as written into temporary names: the host name and, where known, the pid
    namespace, so that containers sharing a host name but not their pids count as other
    hosts (whose files are judged by age, never by a pid that means something else there)."""
    name = "".join(c if c.isalnum() or c in ".-" else "_" for c in socket.gethostname())
    try:
        namespace = os.readlink("/proc/self/ns/pid").split("[")[-1].rstrip("]")
    except OSError:
        namespace = ""
    return (name or "localhost") + (f".{namespace}" if namespace.isdigit() else "")


def owner_tag() -> str:
    """``.pp-<host>-<pid>``: the owner part of this process's temporary names."""
    return f"{OWNER_MARK}{host_id()}-{os.getpid()}"


def temp_prefix(name: str) -> str:
    """Prefix of the temporary file of ``name`` (``mkstemp`` adds ``<random>.tmp``)."""
    return f".{name[:100]}{owner_tag()}-"


def staging_name(key: str) -> str:
    """Name of the hidden staging folder of one participant run in the output folder."""
    return f".staging-{key}{owner_tag()}"


def temp_owner(name: str) -> tuple[str, int] | None:
    """``(host, pid)`` written into a temporary name; None when it names no owner.

    Staging folders of earlier versions (``.staging-<key>-<pid>``) count as this host's.
    """
    at = name.rfind(OWNER_MARK)
    if at < 0:
        head, _, pid = name.rpartition("-")
        legacy = name.startswith(".staging-") and pid.isdigit()
        return (host_id(), int(pid)) if legacy and head != ".staging" else None
    rest = name[at + len(OWNER_MARK):]
    parts = rest.split("-")
    # files end in -<pid>-<random>.tmp (mkstemp's random part has no "-"), folders in -<pid>
    keep = 2 if rest.endswith(TMP_SUFFIX) else 1
    if len(parts) <= keep:
        return None
    host, pid = "-".join(parts[:-keep]), parts[-keep]
    return (host, int(pid)) if host and pid.isdigit() else None


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _process_info(pid: int) -> tuple[str, float | None] | None:
    """(state letter, start time in epoch seconds) of a process of this host from /proc;
    None when /proc does not know it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    boot = _boot_time()
    try:  # fields[0] is field 3 of proc(5) (state); starttime is field 22, in clock ticks
        start = None if boot is None else boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (ValueError, IndexError, OSError):
        start = None
    return fields[0], start


def _owner_alive(pid: int, mtime: float) -> bool:
    """Whether process ``pid`` of this host may own a temporary last modified at ``mtime``."""
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, another user's
        except (OverflowError, ValueError):
            return False
    info = _process_info(pid)
    if info is None:
        return True  # no /proc: the signal said it exists
    state, start = info
    if state in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    # a pid reused by a process started after the file was last written cannot own it
    return start is None or mtime >= start - _START_SLACK_S


def _newest_mtime(path: Path) -> float:
    """Latest modification time of a file, or of a folder and everything inside it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:
                    continue
    return newest


def left_by_dead_run(path: Path, max_age_s: float = STALE_AFTER_S,
                     now: float | None = None) -> bool:
    """Whether a temporary file or folder was left by a run that no longer exists.

    This host's (by the owner in its name): the owner process is gone, or started after the
    temporary was last modified (pid reused). Another host's, or one naming no owner: nothing
    in it was modified for ``max_age_s``. A live job's temporary is therefore never judged
    stale, whichever host it runs on, as long as it writes at least once in ``max_age_s``.
    """
    path = Path(path)
    try:
        mtime = _newest_mtime(path)
    except OSError:
        return False  # gone already
    owner = temp_owner(path.name)
    if owner is None or owner[0] != host_id():
        return (time.time() if now is None else now) - mtime > max_age_s
    return not _owner_alive(owner[1], mtime)


def is_temporary(name: str, is_dir: bool) -> bool:
    """Whether a name is one of the temporaries above (or an earlier version's)."""
    if not name.startswith("."):
        return False
    if is_dir:
        return OWNER_MARK in name or name.startswith(".staging-")
    return name.endswith(TMP_SUFFIX)


def clean_stale_temporaries(folder: Path, recursive: bool = True,
                            max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary files and folders that killed runs left in ``folder``.

    Parameters
    ----------
    folder
        Folder to look in (nothing happens when it does not exist).
    recursive
        Also look in its sub-folders (temporary folders are judged whole, not entered).
    max_age_s
        Age rule for other hosts' temporaries (:func:`left_by_dead_run`).

    Returns
    -------
    list of Path
        What was removed. Concurrent cleaners are harmless: a temporary already gone is
        skipped.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        path = Path(entry.path)
        if is_temporary(entry.name, is_dir):
            if not left_by_dead_run(path, max_age_s):
                continue
            if is_dir:
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    path.unlink()
                except OSError:
                    pass
            if not os.path.lexists(path):
                removed.append(path)
        elif is_dir and recursive:
            removed += clean_stale_temporaries(path, True, max_age_s)
    return removed


def clean_folders(folders: Iterable[tuple[Path, bool]], who: str) -> list[Path]:
    """:func:`clean_stale_temporaries` of each ``(folder, recursive)``, logging what went."""
    removed = [path for folder, recursive in folders
               for path in clean_stale_temporaries(folder, recursive)]
    if removed:
        LOGGER.info("%s: removed %d temporary file(s) or folder(s) left by killed runs: %s",
                    who, len(removed), ", ".join(str(p) for p in removed[:5]))
    return removed


@contextlib.contextmanager
def private_tempdir(parent: Path) -> Iterator[Path]:
    """Send this process's temporary files (``tempfile``, ``TMPDIR`` of child processes, ANTs)
    to a folder of its own under ``parent`` for the duration of the block.

    The folder is removed at the end; one left by a killed run is removed by
    :func:`clean_stale_temporaries` of ``parent``, which a shared ``WORK/tmp`` of concurrent
    jobs could not tell apart otherwise. The previous settings are restored.
    """
    folder = Path(parent) / f".tmp{owner_tag()}"
    folder.mkdir(parents=True, exist_ok=True)
    saved = (tempfile.tempdir, os.environ.get("TMPDIR"))
    tempfile.tempdir = str(folder)
    os.environ["TMPDIR"] = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(folder, ignore_errors=True)
