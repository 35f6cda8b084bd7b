"""Progress reporting: status.json arithmetic and writes, the stage timer, bars and log lines."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from pseudopet_bids import progress
from pseudopet_bids.progress import (DEFAULT_STAGE_WEIGHTS, PREPROCESSING_STAGES,
                                     UNKNOWN_STAGE_WEIGHT, ProgressReporter, SubjectStatus,
                                     format_hms, is_stale, iterate, participant_stages,
                                     stage_weight, timed)


class FakeClock:
    """Monotonic seconds that only move when told; ``wall`` gives matching UTC datetimes."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc) + timedelta(seconds=self.t)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_status(tmp_path, clock, stages, **kw) -> SubjectStatus:
    return SubjectStatus(tmp_path / "logs" / "sub-01_ses-1_status.json", "01", "1", stages,
                         clock=clock, wall_clock=clock.wall, **kw)


def on_disk(status: SubjectStatus) -> dict:
    return json.loads(status.path.read_text())


def test_default_weights_cover_every_participant_stage():
    for model in ("tissue", "cyclegan", "syndiff"):
        for name in participant_stages(model):
            assert stage_weight(name) != UNKNOWN_STAGE_WEIGHT or name in DEFAULT_STAGE_WEIGHTS
    assert stage_weight("pseudo-normal PET (syndiff)") == DEFAULT_STAGE_WEIGHTS[
        "pseudo-normal PET"]
    assert stage_weight("something new") == UNKNOWN_STAGE_WEIGHT
    assert stage_weight("pseudo-normal PET (syndiff)",
                        {"pseudo-normal PET (syndiff)": 60.0}) == 60.0
    assert participant_stages("tissue")[1:6] == list(PREPROCESSING_STAGES)


def test_queued_file_and_fields(tmp_path, clock):
    status = make_status(tmp_path, clock, ["a", "b"])
    data = on_disk(status)
    assert data["state"] == "queued" and data["subject"] == "01" and data["session"] == "1"
    assert data["stage"] is None and data["stage_index"] == 0 and data["n_stages"] == 2
    assert data["fraction_done"] == 0.0 and data["eta_s"] is None and data["started"] is None
    assert data["last_error"] is None and data["schema_version"] == 1
    assert data["pid"] > 0 and data["hostname"] and data["pseudopet_version"]
    assert data["stages"] == [{"name": n, "state": "pending", "seconds": None, "reason": None}
                              for n in ("a", "b")]
    assert data["updated"] == "2024-05-01T12:01:40+00:00"


def test_fraction_and_eta_arithmetic(tmp_path, clock):
    status = make_status(tmp_path, clock, [("a", 1.0), ("b", 3.0)])
    status.start_stage("a")
    assert status.eta() is None  # nothing done yet: no pace
    clock.t += 10
    status.finish_stage("a")
    assert status.fraction_done() == pytest.approx(0.25)
    assert status.eta() == pytest.approx(30.0)  # 3 weight units left at 10 s per unit
    status.start_stage("b")
    clock.t += 15
    status.progress(0.5)
    # worked 1 + 1.5 = 2.5 of 4 in 25 s: 1.5 units left at 10 s per unit
    assert status.fraction_done() == pytest.approx(0.625)
    assert status.eta() == pytest.approx(15.0)
    assert status.elapsed() == pytest.approx(25.0)
    status.done()
    clock.t += 100
    data = on_disk(status)
    assert data["state"] == "finished" and data["fraction_done"] == 1.0 and data["eta_s"] == 0
    assert data["elapsed_s"] == 25.0  # frozen at the end
    assert [s["seconds"] for s in data["stages"]] == [10.0, 15.0]
    assert data["started"] == "2024-05-01T12:01:40+00:00"


def test_stage_order_and_unplanned_stage(tmp_path, clock):
    status = make_status(tmp_path, clock, ["a", "b", "c"])
    with timed({}, "a", "sub-01", status):
        pass
    status.start_stage("extra")  # not planned: goes after the last stage begun
    data = on_disk(status)
    assert [s["name"] for s in data["stages"]] == ["a", "extra", "b", "c"]
    assert data["stage"] == "extra" and data["stage_index"] == 2 and data["n_stages"] == 4
    status.start_stage("b")  # starting the next stage closes the one still running
    data = on_disk(status)
    assert [s["state"] for s in data["stages"]] == ["done", "done", "running", "pending"]
    assert data["stage_index"] == 3 and data["state"] == "running"


def test_skip_stages_count_as_done_but_not_as_pace(tmp_path, clock):
    status = make_status(tmp_path, clock, participant_stages("tissue"))
    status.start_stage("image intake")
    clock.t += 1
    status.finish_stage("image intake")
    status.skip_stages(PREPROCESSING_STAGES, "reused from the preprocessing cache")
    total = sum(stage_weight(s) for s in participant_stages("tissue"))
    pre = sum(DEFAULT_STAGE_WEIGHTS[s] for s in PREPROCESSING_STAGES)
    w_in = DEFAULT_STAGE_WEIGHTS["image intake"]
    assert status.fraction_done() == pytest.approx((w_in + pre) / total)
    assert status.eta() is None  # under 1 % of the work was done in this run: no pace yet
    data = on_disk(status)
    skipped = [s for s in data["stages"] if s["state"] == "skipped"]
    assert [s["name"] for s in skipped] == list(PREPROCESSING_STAGES)
    assert all(s["seconds"] == 0.0 and "cache" in s["reason"] for s in skipped)
    assert data["stage"] == "PET to T1w coregistration" and data["stage_index"] == 6
    with timed({}, "pseudo-normal PET (tissue)", "sub-01", status):
        clock.t += 9
    # pace from the stages that ran (intake + synthesis in 10 s), not from the instant skips
    worked = w_in + DEFAULT_STAGE_WEIGHTS["pseudo-normal PET"]
    assert status.eta() == pytest.approx(10.0 / worked * (total - worked - pre))


def test_timed_failure_keeps_error_and_stage(tmp_path, clock, caplog):
    status = make_status(tmp_path, clock, ["brain mask", "tissue segmentation", "detection"])
    timings: dict[str, float] = {}
    with timed(timings, "brain mask", "sub-01", status):
        clock.t += 2
    err = ValueError("the segmentation diverged")
    with caplog.at_level(logging.INFO), pytest.raises(ValueError) as raised:
        with timed(timings, "tissue segmentation", "sub-01", status):
            clock.t += 4
            raise err
    assert raised.value is err and "tissue segmentation" not in timings
    status.fail(err)  # the caller around the whole run reports the same error again
    data = on_disk(status)
    assert data["state"] == "failed" and data["stage"] == "tissue segmentation"
    assert data["last_error"]["type"] == "ValueError"
    assert data["last_error"]["message"] == "the segmentation diverged"
    assert data["last_error"]["stage"] == "tissue segmentation"
    assert data["last_error"]["time"].endswith("+00:00")
    assert [(s["state"], s["seconds"]) for s in data["stages"]] == [
        ("done", pytest.approx(0.0, abs=1)), ("failed", 4.0), ("pending", None)]
    assert not any("done in" in r.getMessage() and "segmentation" in r.getMessage()
                   for r in caplog.records)
    status.fail("worker lost")  # another error later replaces it, stage from the status
    assert on_disk(status)["last_error"] == {"type": "Error", "message": "worker lost",
                                             "stage": "tissue segmentation",
                                             "time": data["last_error"]["time"]}


def test_failure_before_any_stage(tmp_path, clock):
    status = make_status(tmp_path, clock, ["a"])
    status.fail(RuntimeError("no model"))
    data = on_disk(status)
    assert data["state"] == "failed" and data["last_error"]["stage"] is None
    assert data["elapsed_s"] == 0.0


def test_progress_writes_are_rate_limited(tmp_path, clock):
    status = make_status(tmp_path, clock, ["a", "b"], min_interval_s=2.0)
    status.start_stage("a")
    before = status.n_writes
    for i in range(1000):  # 10 s of updates every 10 ms
        clock.t += 0.01
        status.progress(i / 1000)
    assert status.n_writes - before <= 6  # one per 2 s, not one per update
    assert on_disk(status)["fraction_done"] > 0
    n = status.n_writes
    status.finish_stage("a")
    status.start_stage("b")  # stage changes are always written
    assert status.n_writes == n + 2


def test_file_is_always_complete_json(tmp_path):
    status = SubjectStatus(tmp_path / "s.json", "01", None, ["a", "b"], min_interval_s=0.0)
    status.start_stage("a")
    stop = threading.Event()

    def update() -> None:
        for i in range(300):
            status.progress(i / 300)
        stop.set()

    worker = threading.Thread(target=update)
    worker.start()
    reads = 0
    while not stop.is_set() or reads == 0:
        data = json.loads(status.path.read_text())  # never partial: written by rename
        assert data["stage"] == "a"
        reads += 1
    worker.join()
    assert status.n_writes > 100 and reads > 0
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_unwritable_status_does_not_raise(tmp_path, clock, caplog):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING, logger="pseudopet_bids.progress"):
        status = SubjectStatus(blocker / "sub-01_status.json", "01", None, ["a"],
                               min_interval_s=0.0, clock=clock, wall_clock=clock.wall)
        with timed({}, "a", "sub-01", status):
            for i in range(5):
                clock.t += 1
                status.progress(i / 5)
        status.fail(OSError("disk gone"))
        status.done()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "status file" in warnings[0].getMessage()
    assert status.n_writes == 0 and status.state == "finished"


def test_in_memory_status_writes_nothing(tmp_path, clock):
    status = SubjectStatus(None, "01", None, ["a"], clock=clock, wall_clock=clock.wall)
    status.start_stage("a")
    status.done()
    assert status.snapshot()["state"] == "finished" and status.n_writes == 0


def test_skipped_subject(tmp_path, clock):
    status = make_status(tmp_path, clock, ["a", "b"])
    status.skipped("finished with the same settings")
    data = on_disk(status)
    assert data["state"] == "skipped" and data["fraction_done"] == 1.0
    assert data["reason"] == "finished with the same settings"
    assert {s["state"] for s in data["stages"]} == {"skipped"}


def test_done_marks_unrun_stages(tmp_path, clock):
    status = make_status(tmp_path, clock, ["a", "b"])
    status.start_stage("a")
    status.done()
    stages = on_disk(status)["stages"]
    assert stages[0]["state"] == "done"
    assert stages[1] == {"name": "b", "state": "skipped", "seconds": 0.0, "reason": "not run"}


def test_timed_logs_the_former_lines(caplog):
    from pseudopet_bids.preproc import pipeline

    def messages(timer) -> list[str]:
        caplog.clear()
        timings: dict[str, float] = {}
        with caplog.at_level(logging.INFO):
            with timer(timings, "brain mask", "sub-01_ses-1"):
                pass
        assert set(timings) == {"brain mask"}
        return [r.getMessage() for r in caplog.records]

    new = messages(timed)
    assert new == messages(pipeline.timed)
    assert new == ["sub-01_ses-1: brain mask ...", "sub-01_ses-1: brain mask done in 0.0 s"]


def test_timed_uses_the_given_logger(caplog):
    logger = logging.getLogger("pseudopet_bids.preproc.pipeline")
    with caplog.at_level(logging.INFO):
        with timed({}, "detection", "sub-01", logger=logger):
            pass
    assert {r.name for r in caplog.records} == {"pseudopet_bids.preproc.pipeline"}


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_iterate_logs_lines_without_terminal(monkeypatch, caplog, tmp_path, clock):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    status = make_status(tmp_path, clock, ["pseudo-normal PET (cyclegan)"])
    status.start_stage("pseudo-normal PET (cyclegan)")
    seen = []
    with caplog.at_level(logging.INFO, logger="pseudopet_bids.progress"):
        for z in iterate(range(100), desc="sub-01: synthesis", status=status,
                         min_interval_s=10.0, unit="slices", clock=clock):
            clock.t += 1.0
            seen.append(z)
            if z == 49:
                assert status.fraction_done() == pytest.approx(0.49)
    assert seen == list(range(100))
    lines = [r.getMessage() for r in caplog.records]
    assert 9 <= len(lines) <= 11  # one per 10 s of a 100 s loop, plus the last
    assert lines[0].startswith("sub-01: synthesis: 10/100 slices (10 %)")
    assert "1.00 slices/s" in lines[0] and "elapsed 0:00:10" in lines[0]
    assert "ETA 0:01:30" in lines[0]
    assert lines[-1].startswith("sub-01: synthesis: 100/100 slices (100 %)")
    assert status.fraction_done() == pytest.approx(1.0)
    assert "synthesis" not in sys.stderr.getvalue()  # no bar


def test_short_loop_logs_nothing(caplog, clock):
    with caplog.at_level(logging.INFO, logger="pseudopet_bids.progress"):
        assert list(iterate([1, 2, 3], desc="quick", tty=False, clock=clock)) == [1, 2, 3]
    assert not caplog.records


def test_iterate_uses_tqdm_on_a_terminal(monkeypatch, caplog):
    fake = FakeTTY()
    monkeypatch.setattr(sys, "stderr", fake)
    with caplog.at_level(logging.INFO, logger="pseudopet_bids.progress"):
        out = list(iterate(range(7), desc="sub-01: synthesis", min_interval_s=0.0,
                           unit="slices"))
    assert out == list(range(7))
    assert not caplog.records  # the bar replaces the log lines
    assert "sub-01: synthesis" in fake.getvalue() and "7/7" in fake.getvalue()


def test_reporter_training_style_lines(caplog, clock):
    """What the trainer needs: resume offset, a line every 5 %, losses, no time throttle."""
    with caplog.at_level(logging.INFO, logger="pseudopet_bids.progress"):
        with ProgressReporter(200, "training", unit="steps", initial=100, min_interval_s=0.0,
                              every_fraction=0.05, tty=False, clock=clock) as bar:
            for step in range(101, 201):
                clock.t += 0.5
                bar.update_to(step, {"G": 0.1, "D": 0.25})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10
    assert lines[0] == ("training: 110/200 steps (55 %)  G 0.1000  D 0.2500  2.00 steps/s  "
                        "elapsed 0:00:05  ETA 0:00:45")


def test_reporter_early_eta_and_at_most_max_interval_apart(caplog, clock):
    """A slow training (a CPU paper preset): a line after the first steps with an ETA, then
    never more than max_interval_s apart although 5 % of the steps takes far longer."""
    with caplog.at_level(logging.INFO, logger="pseudopet_bids.progress"):
        with ProgressReporter(1000, "training", unit="steps", min_interval_s=0.0,
                              every_fraction=0.05, tty=False, clock=clock, max_interval_s=120.0,
                              first_at=5) as bar:
            for step in range(1, 31):
                clock.t += 20.0
                bar.update_to(step)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("training: 5/1000 steps") and "ETA 5:31:40" in lines[0]
    # then every 6 steps (120 s): 11, 17, 23, 29
    assert [line.split()[1] for line in lines[1:]] == ["11/1000", "17/1000", "23/1000",
                                                        "29/1000"]


def test_disabled_reporter_is_silent_but_feeds_status(caplog, clock, tmp_path):
    status = make_status(tmp_path, clock, ["a"])
    status.start_stage("a")
    with caplog.at_level(logging.INFO, logger="pseudopet_bids.progress"):
        bar = ProgressReporter(10, "rank 1", status=status, enabled=False, min_interval_s=0.0,
                               clock=clock)
        clock.t += 5
        bar.update(5)
    assert not caplog.records and status.fraction_done() == pytest.approx(0.5)


def test_is_stale():
    me = SubjectStatus(None, "01", None, ["a"])
    me.start_stage("a")
    assert is_stale(me.snapshot()) is False
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert is_stale({**me.snapshot(), "pid": dead.pid}) is True
    assert is_stale({**me.snapshot(), "hostname": "elsewhere.invalid"}) is None
    me.done()
    assert is_stale({**me.snapshot(), "pid": dead.pid}) is False


def test_format_hms():
    assert format_hms(0) == "0:00:00"
    assert format_hms(90061) == "25:01:01"  # past a day: no wrap-around
    assert format_hms(None) == "?" and format_hms(float("nan")) == "?"


def test_module_imports_no_torch():
    code = ("import sys, pseudopet_bids.progress; "
            "sys.exit(int('torch' in sys.modules or 'pandas' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert progress.SCHEMA_VERSION == 1
