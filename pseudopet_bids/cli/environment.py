"""The process around a run: logging, the output and work folders, temporary files, threads.

Everything here changes the state of the process or the file system outside the outputs; the
command line (``cli/run.py``) calls it before and around a workflow, and :func:`restore` puts
the calling process back as it was (``main()`` is also called from Python).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from pseudopet_bids import resources
from pseudopet_bids.config import RunConfig
from pseudopet_bids.errors import OutputError
from pseudopet_bids.io.files import atomic_write_text

LOGGER = logging.getLogger("pseudopet")
#: Environment variables that fix the threads of ITK (ANTs), OpenMP and MKL.
THREAD_VARIABLES = ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_thread_environment(omp_nthreads: int) -> None:
    """Set the thread variables from ``--omp-nthreads`` unless the environment sets them.

    ITK fixes its thread count at its first use in a process: this must run before any ANTs
    call. The container image leaves these unset, so ``--omp-nthreads`` (default min(cores, 8))
    decides; a value set by the user's environment wins (e.g. a scheduler's per-job limit).

    OpenMP threads (torch: deepbet, the trained models) sleep while they wait, instead of
    spinning: on a machine whose cores are busy with other jobs, spinning threads took the
    brain mask from 4 to 8 s of CPU with 2 threads (``OMP_WAIT_POLICY``, read when torch is
    imported; results do not depend on it).
    """
    for var in THREAD_VARIABLES:
        os.environ.setdefault(var, str(omp_nthreads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def setup_logging(verbosity: int, logfile: Path | None = None) -> None:
    """Console logging (INFO, or DEBUG with -vv) plus a full DEBUG log file."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # only ours: leave e.g. pytest's capture in place
        if getattr(handler, "_pseudopet", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%H:%M:%S"))
    if verbosity < 1:  # keep third-party chatter out of the default console
        console.addFilter(lambda r: r.name.startswith("pseudopet") or r.levelno >= logging.WARNING)
    console._pseudopet = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if logfile is not None:
        fileh = logging.FileHandler(logfile)
        fileh.setLevel(logging.DEBUG)
        fileh.setFormatter(logging.Formatter("%(asctime)s %(name)s [%(levelname)s] %(message)s"))
        fileh._pseudopet = True  # type: ignore[attr-defined]
        root.addHandler(fileh)


def prepare_dirs(cfg: RunConfig, command: list[str] | None = None) -> None:
    """Create the output and work folders and start the run's log file and config (exit 73).

    Called only once the inputs are known to be usable, so a refused run leaves nothing behind;
    when the second folder cannot be made, the folders this call created are removed again.
    The config ends with a ``[run]`` table (``command``: the command line when given, start
    time, host, process), which the participant report shows.
    """
    created: list[Path] = []
    try:
        for folder in (Path(cfg.input.output_dir), Path(cfg.execution.work_dir)):
            missing = [d for d in (folder, *folder.parents) if not d.exists()][::-1]
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create the folder ({exc.strerror})", folder,
                                  "choose a writable location") from exc
            created += missing
            if not os.access(folder, os.W_OK):
                raise OutputError("the folder is not writable", folder,
                                  "choose a writable location")
        use_work_tmp(Path(cfg.execution.work_dir))
    except OutputError:
        for folder in reversed(created):  # deepest first; only what this call made
            try:
                if (folder / "tmp").is_dir():  # made by use_work_tmp
                    (folder / "tmp").rmdir()
                folder.rmdir()
            except OSError:
                pass  # not empty: something else uses it now
        raise
    logdir = Path(cfg.input.output_dir) / "logs"
    # host and pid: jobs of one SLURM array start in the same second on different nodes
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{socket.gethostname()}-{os.getpid()}"
    setup_logging(cfg.execution.verbosity, None)
    logdir.mkdir(parents=True, exist_ok=True)
    setup_logging(cfg.execution.verbosity, logdir / f"pseudopet_{cfg.input.analysis_level}_{stamp}.log")
    atomic_write_text(logdir / f"config_{cfg.input.analysis_level}_{stamp}.toml",
                      cfg.to_toml() + run_table(command))


def run_table(command: list[str] | None) -> str:
    """The ``[run]`` TOML table of a run config: command line, start time (UTC), host, pid."""
    import json
    from datetime import datetime, timezone

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = ["", "[run]"]
    if command:  # JSON strings are valid TOML basic strings
        lines.append("command = [" + ", ".join(json.dumps(str(c)) for c in command) + "]")
    lines += [f"started = {json.dumps(started)}", f"host = {json.dumps(socket.gethostname())}",
              f"pid = {os.getpid()}"]
    return "\n".join(lines) + "\n"


def use_work_tmp(work_dir: Path) -> Path:
    """Send temporary files (ANTs, tempfile) to ``WORK_DIR/tmp`` instead of ``/tmp``.

    In a container with a read-only root file system only the output and work folders are
    writable; on clusters ``/tmp`` is often small and node-local. Child processes inherit it.
    """
    tmp = Path(work_dir) / "tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder ({exc.strerror})", tmp,
                          "choose a writable work folder (-w)") from exc
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    # matplotlib (report figures) needs a writable config/cache folder; under a read-only $HOME
    # (containers, Apptainer) it would warn and rebuild its font cache in a fresh temp folder
    if not matplotlib_config_writable():
        os.environ["MPLCONFIGDIR"] = str(tmp / "matplotlib")
    return tmp


def matplotlib_config_writable() -> bool:
    """Whether matplotlib's config/cache folder (``$MPLCONFIGDIR``, else
    ``~/.config/matplotlib``), or the folder it would be made in, is writable.

    When it is not, matplotlib falls back to a new temporary folder per process, and fails
    (``Matplotlib requires access to a writable cache directory``) where no temporary folder
    is writable either, as under a fully read-only container root.
    """
    mpl = Path(os.environ.get("MPLCONFIGDIR") or Path.home() / ".config" / "matplotlib")
    probe = mpl if mpl.exists() else mpl.parent
    return os.access(probe, os.W_OK)


def saved_tempdir() -> tuple[str | None, str | None]:
    """The process's temporary-folder settings (:func:`use_work_tmp` changes both)."""
    return tempfile.tempdir, os.environ.get("TMPDIR")


def restore_tempdir(saved: tuple[str | None, str | None]) -> None:
    """Undo :func:`use_work_tmp` (``saved`` from :func:`saved_tempdir`)."""
    tempfile.tempdir = saved[0]
    if saved[1] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved[1]


def template_source() -> str:
    """Where the template comes from, logged once (TemplateFlow home, or the packaged copy)."""
    source = resources.template_source()
    if source.startswith("TemplateFlow"):
        LOGGER.info("template %s from %s", resources.TEMPLATE_NAME, source)
    else:
        LOGGER.info("template %s: %s copy (TemplateFlow: %s; nothing is downloaded)",
                    resources.TEMPLATE_NAME, source, resources.templateflow_files()[1])
    return source
