"""The participant level's progress lines and closing recap (workflows/recap.py)."""

from __future__ import annotations

from pseudopet_bids.workflows import recap
from pseudopet_bids.workflows.recap import FAILED, NOT_RUN, OK, SKIPPED, UnitOutcome


def test_duration():
    assert [recap.duration(s) for s in (0.4, 42, 185, 3725)] == \
        ["0 s", "42 s", "3 min 05 s", "1 h 02 min"]


def test_progress_counts_and_eta_from_processed_units_only():
    progress = recap.RunProgress(total=5, workers=2)
    line = progress.add(UnitOutcome("sub-01", SKIPPED), elapsed=1)
    assert "1 of 5 participants done (1 skipped)" in line and "left" not in line
    assert progress.eta() is None  # a skipped unit says nothing about the time per unit
    progress.add(UnitOutcome("sub-02", OK, 100.0), elapsed=101)
    line = progress.add(UnitOutcome("sub-03", FAILED, 50.0, "boom"), elapsed=151)
    # 2 left on 2 workers: one more round of the mean processed time (75 s)
    assert progress.eta() == 75.0
    assert "3 of 5 participants done (1 failed, 1 skipped)" in line
    assert line.endswith("about 1 min 15 s left") and line.startswith("sub-03 failed in 50 s")
    progress.add(UnitOutcome("sub-04", OK, 60.0), elapsed=200)
    assert progress.eta() == 70.0  # 1 left: one worker, the mean of 100, 50, 60


def test_summary_counts_skipped_units():
    outcomes = [UnitOutcome("sub-01", SKIPPED), UnitOutcome("sub-02", SKIPPED),
                UnitOutcome("sub-03", OK, 5), UnitOutcome("sub-04", NOT_RUN, error="no PET")]
    assert recap.summary_line(outcomes, 65) == (
        "participant level done in 1 min 05 s: 1 ok, 0 failed, 3 skipped (2 finished earlier "
        "with the same settings, 1 without the inputs they need)")


def test_recap_table_reads_cluster_tables(tmp_path):
    table = tmp_path / "c.tsv"
    table.write_text("cluster_id\ttier\tregion\n1\thigh\tleft-temporal\n2\tlow\tother\n")
    empty = tmp_path / "e.tsv"
    empty.write_text("cluster_id\ttier\tregion\n")
    outcomes = [UnitOutcome("sub-01", OK, 125), UnitOutcome("sub-02", SKIPPED),
                UnitOutcome("sub-03", FAILED, 3, "x" * 100),
                UnitOutcome("sub-04", NOT_RUN, error="no PET image"),
                UnitOutcome("sub-05", OK, 1)]
    text = recap.recap_table(outcomes, {"sub-01": table, "sub-02": empty,
                                        "sub-05": tmp_path / "missing.tsv"}, width=20)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["participant", "status", "clusters"]
    assert lines[1].split() == ["sub-01", "ok", "2", "high,", "left-temporal", "2", "min",
                                "05", "s"]
    assert lines[2].split() == ["sub-02", "skipped", "0", "none", "-"]
    assert "x" * 19 + "…" in lines[3] and "x" * 20 not in lines[3]
    assert lines[4].split()[:4] == ["sub-04", "not", "run", "-"] and "no PET image" in lines[4]
    assert lines[5].split()[:4] == ["sub-05", "ok", "-", "-"]  # its table is unreadable
    column = lines[0].index("status")  # the columns are aligned
    assert [line[column:].split()[0] for line in lines] == \
        ["status", "ok", "skipped", "failed", "not", "ok"]
