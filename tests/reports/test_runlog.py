"""Run-log parsing for the participant report's "About" and "Errors" sections."""

from __future__ import annotations

import tomllib

from pseudopet_bids.cli.environment import run_table
from pseudopet_bids.reports import runlog


def test_parse_log_line():
    msg = runlog.parse_log_line("2026-01-02 03:04:05,678 pseudopet_bids.x [WARNING] sub-01: hm\n")
    assert msg == runlog.LogMessage("2026-01-02 03:04:05", "pseudopet_bids.x", "WARNING",
                                    "sub-01: hm")
    assert runlog.parse_log_line('  File "x.py", line 3, in f') is None


def test_names_subject_is_exact():
    assert runlog.names_subject("sub-01: x", "01")
    assert runlog.names_subject("sub-01_ses-2_trc-FDG: figure", "01")
    assert runlog.names_subject("in /out/sub-01/figures", "01")
    assert not runlog.names_subject("sub-011: x", "01")
    assert not runlog.names_subject("xsub-01: x", "01")


def test_subject_messages_levels_and_repeats():
    lines = ["2026-01-02 03:04:05,1 a [INFO] sub-01: stage",
             "2026-01-02 03:04:06,1 a [ERROR] sub-01 failed: bad PET",
             "2026-01-02 03:04:07,1 a [ERROR] sub-01 failed: bad PET",
             "2026-01-02 03:04:08,1 a [WARNING] sub-02: other"]
    named, msgs = runlog.subject_messages(lines, "01")
    assert named and [m.text for m in msgs] == ["sub-01 failed: bad PET"]
    assert runlog.subject_messages(lines[:1], "01") == (True, [])
    assert runlog.subject_messages(lines, "03") == (False, [])


def test_run_table_is_toml_with_the_command():
    table = tomllib.loads(run_table(["pseudopet", "/a b", 'q"uote', "participant"]))["run"]
    assert table["command"] == ["pseudopet", "/a b", 'q"uote', "participant"]
    assert runlog.command_line({"run": table}) == "pseudopet '/a b' 'q\"uote' participant"
    assert "started" in table and "host" in table and isinstance(table["pid"], int)
    assert "command" not in tomllib.loads(run_table(None))["run"]
    assert runlog.command_line({}) is None


def test_latest_participant_run_without_logs(tmp_path):
    assert runlog.latest_participant_run(tmp_path, "01") is None
