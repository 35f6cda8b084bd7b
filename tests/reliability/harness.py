"""Run one bad-input case and check its outcome with one shared assertion (:func:`check`).

What every case must show (the issue's contract):

- the documented exit code;
- a specific message: for a refusal or a warning, a log line at WARNING or above (or the raised
  error of a function-level case) that names the file (its path inside the case folder) and
  carries the fix;
- no traceback: no ``Traceback`` on stderr or in a WARNING+ record, no record with exception
  info, no "unexpected error" (the generic catch-all of ``workflows/participant.py``);
- no partial output. A run refused at dataset level (exit 16, 18, 64, 66, 73) leaves the output
  and work folders exactly as they were (absent when they were absent: ``prepare_dirs`` runs
  only after every dataset-level check). Any other run leaves only the run's bookkeeping in
  OUTPUT_DIR (``dataset_description.json``, ``.bidsignore``, ``logs/`` with run logs, configs
  and ``<key>_status.json``), no ``sub-*`` folder or report of a participant that did not
  finish, no ``.staging-*`` folder and no temporary ``*.tmp`` file; WORK_DIR holds nothing but
  ``tmp/``. Participants that failed have a status file saying ``failed``;
- the input untouched: the tree (names, types, modes, sizes, mtimes, content hashes, symlink
  targets) is identical before and after, and no write, create, rename, remove or chmod was even
  attempted under it (Python audit hook). The hook sees what Python code does; the snapshot
  catches what native code (ITK) might do.

The participant workflow is replaced by :func:`probe` in most cases: real discovery, real image
intake, and when intake refuses an input the real workflow takes over (so the failure, its
status file and its clean-up are the real ones). A unit that passes intake stops there: the
one real end-to-end run with good and broken subjects is the slow test.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pseudopet_bids.errors import PseudopetError

REFUSED = frozenset({16, 18, 64, 66, 73})
BOOKKEEPING = frozenset({"dataset_description.json", ".bidsignore", "README.md", "logs"})
_W_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WATCHED: list[tuple[tuple[str, ...], list[str]]] = []  # (roots, hits) of the active watches
_HOOKED = False


# --------------------------------------------------------------------------- the input


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything observable about a tree, without following symlinks."""
    state: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if path.is_symlink():
                target = os.readlink(path)
                content = _digest(path) if path.exists() and path.is_file() else None
                state[rel] = ("link", target, content)
            elif path.is_dir():
                state[rel] = ("dir", st.st_mode)
            else:
                state[rel] = ("file", st.st_mode, st.st_size, st.st_mtime_ns, _digest(path))
    state["."] = ("root", Path(root).lstat().st_mode)
    return state


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _audit(event: str, args: tuple) -> None:
    """Audit hook: record mutating file-system calls under a watched root (never raises: an
    exception in an audit hook would break the operation it watches)."""
    if not _WATCHED:
        return
    try:
        _record(event, args)
    except Exception:  # noqa: BLE001 - e.g. abspath() when the working folder is gone
        pass


def _record(event: str, args: tuple) -> None:
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and bool(flags & _W_FLAGS))
        paths = [path] if writing else []
    elif event in ("os.rename", "os.replace", "os.link", "os.symlink"):
        paths = list(args[:2])
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree",
                   "os.chmod", "os.chown", "os.utime", "shutil.copyfile", "shutil.move"):
        paths = list(args[:2]) if event.startswith("shutil.c") else [args[0]]
    else:
        return
    for path in paths:
        if isinstance(path, (str, bytes, os.PathLike)):
            text = os.path.abspath(os.fsdecode(path))
            for roots, hits in _WATCHED:
                if any(text == r or text.startswith(r + os.sep) for r in roots):
                    hits.append(f"{event} {text}")


class InputWatch:
    """Context manager: snapshot the input and record every attempt to modify it."""

    def __init__(self, root: Path):
        global _HOOKED
        if not _HOOKED:  # audit hooks cannot be removed: one, idle unless a watch is active
            sys.addaudithook(_audit)
            _HOOKED = True
        self.root = Path(root)
        self.before = snapshot(self.root)
        self.writes: list[str] = []

    def __enter__(self) -> "InputWatch":
        roots = {os.path.abspath(self.root), os.path.realpath(self.root)}
        self._entry = (tuple(roots), self.writes)
        _WATCHED.append(self._entry)
        return self

    def __exit__(self, *exc) -> None:
        _WATCHED.remove(self._entry)
        self.after = snapshot(self.root)


# --------------------------------------------------------------------------- running a case


@dataclass
class Scenario:
    """What a case builder sets up and what its run must show beyond the case's exit code.

    ``args`` are added after ``BIDS OUT participant`` (``argv`` replaces the whole command);
    ``file``/``fix`` must appear in a WARNING+ message (or the raised error); ``ran`` are unit
    keys that must pass intake (the probe), ``failed`` unit keys whose status file must say
    failed; ``verify`` does case-specific checks on the :class:`Run`; ``call`` replaces the
    command by a function call (function-level cases); ``patch`` sets attributes for the run
    (e.g. no GPU).
    """

    root: Path
    args: list[str] = field(default_factory=list)
    argv: list[str] | None = None
    file: str | None = None
    fix: str | None = None
    ran: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)  # subjects the real workflow completes
    verify: Callable[["Run"], None] | None = None
    call: Callable[[], Any] | None = None
    pipeline: str = "probe"  # or "real": the participant workflow as shipped
    validate: bool = False   # run bids-validator-deno (else --skip-bids-validation)
    out: Path | None = None
    work: Path | None = None
    patch: dict[str, Any] = field(default_factory=dict)  # "module.attr" -> value, for the run


@dataclass
class Run:
    """What one case did."""

    exit_code: int
    records: list[logging.LogRecord]
    stderr: str
    out: Path
    work: Path
    out_before: dict | None
    work_before: dict | None
    watch: InputWatch
    probed: dict[str, Any] = field(default_factory=dict)
    error: PseudopetError | None = None
    value: Any = None

    def notices(self, level: int = logging.WARNING) -> list[str]:
        """What the user is told: log records at ``level`` or above, stderr, the raised error."""
        found = [r.getMessage() for r in self.records if r.levelno >= level]
        found += [self.stderr] if self.stderr else []
        return found + ([str(self.error)] if self.error is not None else [])

    def text(self, level: int = logging.WARNING) -> str:
        return "\n".join(self.notices(level))

    @property
    def messages(self) -> str:
        """Warnings and errors (the messages that must name the file and the fix)."""
        return self.text(logging.WARNING)


def probe(record: dict[str, Any]) -> Callable:
    """A stand-in for ``participant.run_participant``: real intake, then stop (module doc)."""
    from pseudopet_bids.workflows import participant

    real = participant.run_participant

    def run_participant(unit, cfg, info):
        from pseudopet_bids.bids.inputs import load_inputs

        try:
            images = load_inputs(unit)
        except PseudopetError:
            return real(unit, cfg, info)  # the real failure: message, status file, clean-up
        record[unit.key] = {"unit": unit, "images": images, "participant": info}

    return run_participant


def _tree(folder: Path) -> dict | None:
    return snapshot(folder) if folder.exists() else None


def run_case(scenario: Scenario, tmp_path: Path, caplog, capsys, monkeypatch) -> Run:
    """Run a scenario: the command line in-process, or its function-level call."""
    from pseudopet_bids.cli.run import main

    out = scenario.out or tmp_path / "out"
    work = scenario.work or tmp_path / "work"
    probed: dict[str, Any] = {}
    if scenario.pipeline == "probe":
        monkeypatch.setattr("pseudopet_bids.workflows.participant.run_participant", probe(probed))
    for target, value in scenario.patch.items():
        monkeypatch.setattr(target, value)
    argv = scenario.argv or [str(scenario.root), str(out), "participant", "-w", str(work),
                             "--omp-nthreads", "1", "--model", "tissue",
                             *([] if scenario.validate else ["--skip-bids-validation"]),
                             *scenario.args]
    out_before, work_before = _tree(out), _tree(work)
    caplog.set_level(logging.DEBUG)
    error, value = None, None
    with InputWatch(scenario.root) as watch:
        if scenario.call is not None:
            from pseudopet_bids.cli.environment import setup_logging

            setup_logging(0)  # the console handler of the CLI, on this test's stderr
            try:
                value = scenario.call()
                code = 0
            except PseudopetError as exc:
                error, code = exc, exc.exit_code
        else:
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
    return Run(code, list(caplog.records), capsys.readouterr().err, out, work, out_before,
               work_before, watch, probed, error, value)


# --------------------------------------------------------------------------- the check

#: Lines with which Python itself introduces a traceback that does not come from the code that
#: is running: an exception in a finaliser (garbage of an earlier test), in another thread, or
#: in a logging handler left by an earlier test. They are not the run's output.
_FOREIGN = ("Exception ignored in", "Exception in thread", "--- Logging error ---")


def _own_tracebacks(stderr: str) -> list[str]:
    """The tracebacks on stderr (with 1500 characters of context each), foreign ones left out."""
    import warnings

    shown, start = [], 0
    while (i := stderr.find("Traceback", start)) >= 0:
        before = stderr[:i].rstrip("\n").rsplit("\n", 1)[-1]
        context = stderr[max(0, i - 1500):i + 1500]
        if before.startswith(_FOREIGN):  # kept visible in the test report, for the record
            warnings.warn(f"a traceback from outside the run on stderr:\n{context}")
        else:
            shown.append(context)
        start = i + 1
    return shown



def check(case, scenario: Scenario, run: Run) -> None:
    """The one assertion of every case (see the module docstring)."""
    where = f"[{case.id}]"
    assert run.exit_code == case.exit, (
        f"{where} exit {run.exit_code}, expected {case.exit}\n{run.messages[-3000:]}")
    text = run.messages
    if case.message:  # warnings and errors, or the INFO line of a logged decision
        log = run.text(logging.INFO)
        assert case.message in log, f"{where} message {case.message!r} not in:\n{log[-3000:]}"
    if scenario.file:  # one message names both the file and the fix
        naming = [m for m in run.notices() if scenario.file in m]
        assert naming, f"{where} no message names {scenario.file!r}:\n{text[-3000:]}"
        if scenario.fix:
            assert any(scenario.fix in m for m in naming), (
                f"{where} the message naming the file lacks the fix {scenario.fix!r}:\n"
                + "\n".join(naming))
    elif scenario.fix:
        assert scenario.fix in text, f"{where} no message carries the fix {scenario.fix!r}"
    if case.exit == 0 and scenario.call is None:
        errors = [r.getMessage() for r in run.records if r.levelno >= logging.ERROR]
        assert not errors, f"{where} a run that succeeds logged errors: {errors}"
    # no traceback
    shown = _own_tracebacks(run.stderr)
    assert not shown, f"{where} traceback on stderr:\n" + "\n----\n".join(shown)
    loud = [r for r in run.records if r.levelno >= logging.WARNING]
    assert not [r for r in loud if r.exc_info], f"{where} a WARNING+ record carries a traceback"
    said = "\n".join([r.getMessage() for r in loud] + ([str(run.error)] if run.error else []))
    assert "Traceback" not in said and "unexpected error" not in text, f"{where}\n{text[-3000:]}"
    # no partial output
    if scenario.call is None:
        _check_outputs(where, scenario, run)
    # the input untouched
    assert not run.watch.writes, f"{where} tried to modify the input: {run.watch.writes[:5]}"
    changed = {k for k in set(run.watch.before) | set(run.watch.after)
               if run.watch.before.get(k) != run.watch.after.get(k)}
    assert not changed, f"{where} the input changed: {sorted(changed)[:10]}"
    # the units that should have passed intake did
    missing = scenario.ran - set(run.probed)
    assert not missing, f"{where} these units did not reach processing: {missing}"
    if scenario.verify is not None:
        scenario.verify(run)


def _check_outputs(where: str, scenario: Scenario, run: Run) -> None:
    if run.exit_code in REFUSED:
        assert _tree(run.out) == run.out_before, f"{where} a refused run changed {run.out}"
        assert _tree(run.work) == run.work_before, f"{where} a refused run changed {run.work}"
        return
    if run.out_before is not None:
        return  # a case that reuses an output folder checks it itself
    done = scenario.finished
    allowed = BOOKKEEPING | {f"sub-{s}" for s in done} | {f"sub-{s}.html" for s in done}
    top = {p.name for p in run.out.iterdir()}
    assert top <= allowed, f"{where} partial output in {run.out}: {sorted(top - allowed)}"
    logs = ("pseudopet_participant_", "config_participant_", "sub-") + (
        ("CITATION",) if done else ())
    for path in run.out.rglob("*"):
        assert not path.name.startswith(".staging") and not path.name.endswith(".tmp"), (
            f"{where} leftover {path}")
        if path.parent.name == "logs" and path.is_file():
            assert path.name.startswith(logs), f"{where} unexpected log file {path.name}"
    if run.work.exists():  # scratch: temporary files, and the caches of units that got there
        extra = {p.name for p in run.work.iterdir()} - {"tmp"} - scenario.failed - {
            k for k in _keys(run) if k.split("_")[0][4:] in done}
        assert not extra, f"{where} work folder holds {sorted(extra)}"
    import json

    for key in scenario.failed:
        status = json.loads((run.out / "logs" / f"{key}_status.json").read_text())
        assert status["state"] == "failed", f"{where} {key}: status {status['state']}"


def _keys(run: Run) -> set[str]:
    """Unit keys that have a status file (the units the workflow started)."""
    folder = run.out / "logs"
    return {p.name[:-len("_status.json")] for p in folder.glob("*_status.json")} \
        if folder.is_dir() else set()
