"""The bad-input corpus (tests/reliability/corpus.py): one test id per case, one shared check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_bids
from tests.reliability.corpus import CASES
from tests.reliability.harness import InputWatch, check, run_case

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("case_id", [
    pytest.param(cid, marks=pytest.mark.slow) if case.level == "slow" else cid
    for cid, case in CASES.items()])
def test_case(case_id, tmp_path, caplog, capsys, monkeypatch):
    case = CASES[case_id]
    scenario = case.build(tmp_path)
    run = run_case(scenario, tmp_path, caplog, capsys, monkeypatch)
    check(case, scenario, run)


def test_the_corpus_covers_every_class():
    from tests.reliability.corpus import CLASSES

    counts = {cls: sum(c.cls == cls for c in CASES.values()) for cls in CLASSES}
    assert len(CASES) >= 60 and min(counts.values()) >= 5, counts


def test_docs_table_is_up_to_date():
    proc = subprocess.run([sys.executable, "scripts/reliability_table.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stderr + "\nregenerate it: "
                                  "python scripts/reliability_table.py")


def test_the_input_watch_sees_every_kind_of_modification(tmp_path):
    """The harness itself: attempted writes are recorded, changes are seen by the snapshot."""
    root = make_bids(tmp_path / "ds", {"01": {}})
    t1 = root / "sub-01/anat/sub-01_T1w.nii.gz"
    with InputWatch(root) as watch:
        t1.read_bytes()  # reading is fine
        (root / "new.txt").write_text("x")
        os.replace(root / "new.txt", root / "renamed.txt")
        (root / "folder").mkdir()
        os.chmod(t1, 0o600)
        (root / "renamed.txt").unlink()
    events = {w.split()[0] for w in watch.writes}
    assert {"open", "os.rename", "os.mkdir", "os.chmod", "os.remove"} <= events  # replace: rename
    changed = {k for k in set(watch.before) | set(watch.after)
               if watch.before.get(k) != watch.after.get(k)}
    assert changed == {"folder", "sub-01/anat/sub-01_T1w.nii.gz"}
    with InputWatch(root) as quiet:
        t1.read_bytes()
    assert not quiet.writes
