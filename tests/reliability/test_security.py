"""Security: no network at run time, no reads or writes outside the given folders, no path
traversal through labels, names or filter files (model loading: tests/models/test_checkpoint.py
proves that nothing is ever unpickled)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pseudopet_bids.cli.run import main
from tests.conftest import make_bids

# Installed in the child Python (sitecustomize): refuses every network call and records every
# path the process opens for writing, creates, renames or removes.
GUARD = r'''
import atexit, json, os, sys
_log = os.environ["PSEUDOPET_AUDIT_LOG"]
_writes, _net = set(), []
_W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def _add(path, dir_fd=None):
    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):  # shutil.rmtree & co. work by dir_fd
        try:
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        except OSError:
            path = "<dir_fd>/" + path
    _writes.add(os.path.abspath(path))

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _W):
            _add(path)
    elif event in ("os.rename", "os.replace", "os.link", "os.symlink"):
        _add(args[1])
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree",
                   "os.chmod"):
        fd = args[-1] if event != "os.truncate" else None
        _add(args[0], fd if isinstance(fd, int) and fd >= 0 else None)
    elif event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
                   "urllib.Request"):
        _net.append(f"{event} {args!r}"[:200])
        raise OSError("network access disabled by the test")

def _dump():
    with open(_log + f".{os.getpid()}", "w") as fh:
        json.dump({"writes": sorted(_writes), "network": _net}, fh)

sys.addaudithook(_hook)
atexit.register(_dump)
'''


def _guarded_env(tmp_path: Path) -> tuple[dict, Path]:
    site = tmp_path / "guard_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "audit.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd()]),
           "PSEUDOPET_AUDIT_LOG": str(log), "HOME": str(tmp_path / "home"),
           "MPLCONFIGDIR": str(tmp_path / "home" / "mpl")}
    return env, log


def _no_network_prefix() -> list[str]:
    """``unshare -rn`` (a network namespace without interfaces) where the kernel allows it; the
    audit-hook guard refuses network calls in any case."""
    try:
        ok = subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        ok = False
    return ["unshare", "-rn"] if ok else []


@pytest.mark.slow
def test_participant_runs_offline_and_writes_only_its_folders(tmp_path):
    from pseudopet_bids.simulate.cohort import simulate_cohort

    bids = tmp_path / "bids"
    simulate_cohort(bids, n_controls=1, n_patients=0, seed=5, t1_voxel_mm=1.5)
    out, work = tmp_path / "out", tmp_path / "work"
    env, log = _guarded_env(tmp_path)
    (tmp_path / "home").mkdir()
    cmd = _no_network_prefix() + [sys.executable, "-m", "pseudopet_bids.cli.run", str(bids),
                                  str(out), "participant", "-w", str(work), "--model", "tissue",
                                  "--omp-nthreads", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(out.glob("sub-C01/pet/*_stat-z_desc-tissue_statmap.nii.gz"))
    records = [json.loads(p.read_text()) for p in tmp_path.glob("audit.json.*")]
    assert records, "the guard did not run"
    assert not [n for r in records for n in r["network"]]
    allowed = [out, work, tmp_path / "home", Path("/dev")]
    records = [{**r, "writes": [w for w in r["writes"] if not w.startswith(str(log))]}
               for r in records]
    outside = sorted({w for r in records for w in r["writes"]
                      if not any(Path(w) == a or a in Path(w).parents for a in allowed)})
    assert not outside, outside
    assert not any(str(bids) in w for r in records for w in r["writes"])  # the input


@pytest.mark.parametrize("args, message", [
    (["--participant-label", "../01"], "must be alphanumeric"),
    (["--participant-label", "01/../../x"], "must be alphanumeric"),
    (["--session-label", ".."], "must be alphanumeric"),
    (["--model-name", "../../evil"], "must be alphanumeric"),
    (["-d", "../x=/tmp"], "NAME in NAME=PATH"),
])
def test_labels_and_names_cannot_traverse(tmp_path, capsys, args, message):
    root = make_bids(tmp_path / "ds", {"01": {}})
    with pytest.raises(SystemExit) as info:
        main([str(root), str(tmp_path / "out"), "participant", *args])
    assert info.value.code == 64 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_filter_file_values_cannot_reach_outside(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {}})
    outside = make_bids(tmp_path / "other", {"02": {}})  # a dataset beside the input
    filters = tmp_path / "f.json"
    filters.write_text(json.dumps({"t1w": {"subject": "../other/sub-02"},
                                   "pet": {"extension": "../../other"}}))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code = main([str(root), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--bids-filter-file", str(filters)])
    assert code == 64  # the tool's own query keys cannot be overridden
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert outside.is_dir() and not (tmp_path / "out").exists()
    # entity values are matched within the dataset only: a path-like value matches nothing
    filters.write_text(json.dumps({"t1w": {"acquisition": "../../other/sub-02"}}))
    before[filters] = filters.read_bytes()
    code = main([str(root), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--bids-filter-file", str(filters)])
    assert code == 18  # the filter selected no T1w
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_participants_tsv_labels_are_never_used_as_paths(tmp_path):
    from pseudopet_bids.bids.derivatives import SubjectPaths

    with pytest.raises(ValueError, match="not a BIDS label"):
        SubjectPaths(tmp_path, "../../etc", None, tmp_path / "sub-01_pet.nii.gz")
    with pytest.raises(ValueError, match="not a BIDS label"):
        SubjectPaths(tmp_path, "01", "a/b", tmp_path / "sub-01_pet.nii.gz")
