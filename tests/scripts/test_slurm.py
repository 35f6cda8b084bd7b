"""The SLURM scripts of scripts/slurm (docs/hpc.md), run for real with bash.

No SLURM here: the scripts read SLURM's variables, which the tests set, and call ``sbatch``,
``scontrol``, ``srun`` and ``pseudopet``, which the tests replace by small fakes put first on
PATH. The fakes record how they were called; the scripts' dry-run mode (``PSEUDOPET_DRY_RUN=1``)
prints the command a job would run. The last test starts the derived torchrun command for real
(1 node x 2 CPU processes, gloo) on a tiny training.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM = REPO / "scripts" / "slurm"
SCRIPTS = ["lib.sh", "participant_array.sbatch", "group.sbatch", "submit.sh",
           "train_torchrun.sbatch"]
#: Settings of the scripts: cleared so that the caller's environment (a CI job under SLURM, a
#: developer's shell) cannot leak into the tests.
CONFIG_VARS = {"BIDS_DIR", "OUTPUT_DIR", "WORK_DIR", "TRAIN_WORK_DIR", "PARTICIPANTS_TSV",
               "CONTAINER", "CONTAINER_RUNTIME", "CONTAINER_NV", "PSEUDOPET_ARGS", "GROUP_ARGS",
               "KEEP_WORK", "PSEUDOPET_DRY_RUN", "PSEUDOPET_SLURM_DIR", "MAX_PARALLEL",
               "PARTICIPANT_GPUS", "EXTRA_SBATCH_ARGS", "ARRAY_JOB_ID", "MODEL", "RESUME",
               "NNODES", "NPROC_PER_NODE", "RDZV_HOST", "RDZV_PORT", "TORCHRUN",
               "CUDA_VISIBLE_DEVICES"}

FAKE_PSEUDOPET = """#!/bin/bash
# fake pseudopet: record the arguments (NUL-separated), then exit with FAKE_RC
printf '%s\\0' "$@" >"$FAKE_DIR/pseudopet.$(date +%s%N).args"
if [[ -n ${FAKE_SLEEP:-} ]]; then exec sleep "$FAKE_SLEEP"; fi
exit "${FAKE_RC:-0}"
"""
FAKE_SBATCH = """#!/bin/bash
# fake sbatch: record the arguments and the job's environment, print a job id (--parsable)
n=$(find "$FAKE_DIR" -name 'sbatch.*.args' | wc -l)
printf '%s\\0' "$@" >"$FAKE_DIR/sbatch.$n.args"
env >"$FAKE_DIR/sbatch.$n.env"
if ((n == 0)); then echo "4242;cluster1"; else echo $((4242 + n)); fi
"""
FAKE_SCONTROL = """#!/bin/bash
# fake scontrol: 'show hostnames LIST' prints FAKE_HOSTS, one per line
printf '%s\\0' "$@" >"$FAKE_DIR/scontrol.args"
[[ $1 == show && $2 == hostnames ]] || exit 1
printf '%s\\n' $FAKE_HOSTS
"""
FAKE_SRUN = """#!/bin/bash
# fake srun: one task on this machine; srun's own options (all --name=value) are dropped
printf '%s\\0' "$@" >"$FAKE_DIR/srun.args"
while (($#)) && [[ $1 == --* ]]; do shift; done
exec "$@"
"""


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def fake(tmp_path) -> Path:
    """A folder of fake commands (pseudopet, sbatch, scontrol, srun) that record their calls."""
    folder = tmp_path / "fake"
    (folder / "bin").mkdir(parents=True)
    for name, text in (("pseudopet", FAKE_PSEUDOPET), ("sbatch", FAKE_SBATCH),
                       ("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN)):
        path = folder / "bin" / name
        path.write_text(text)
        path.chmod(0o755)
    return folder


def script_env(fake: Path, **overrides: str) -> dict[str, str]:
    """The environment of a script run: no SLURM or script settings from outside, fakes first."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k not in CONFIG_VARS}
    env["PATH"] = f"{fake / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["FAKE_DIR"] = str(fake)
    env.update(overrides)
    return env


def run(name: str, env: dict[str, str], *args: str, cwd: Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SLURM / name), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def calls(fake: Path, command: str) -> list[list[str]]:
    """The recorded argument lists of a fake command, in call order."""
    files = sorted(fake.glob(f"{command}.*.args"),
                   key=lambda p: int(p.name.split(".")[1]))
    return [p.read_bytes().decode().split("\0")[:-1] for p in files]


def write_bids(root: Path, participants: str | bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = participants.encode() if isinstance(participants, str) else participants
    (root / "participants.tsv").write_bytes(data)
    return root


def array_env(fake: Path, bids: Path, out: Path, task: int | str, **extra: str) -> dict:
    return script_env(fake, BIDS_DIR=str(bids), OUTPUT_DIR=str(out),
                      SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID=str(task),
                      SLURM_JOB_ID="78", **extra)


def dry_run(name: str, env: dict[str, str]) -> list[str]:
    result = run(name, {**env, "PSEUDOPET_DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr
    return shlex.split(result.stdout.strip().splitlines()[-1])


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_scripts_are_valid_bash():
    for name in SCRIPTS:
        result = subprocess.run(["bash", "-n", str(SLURM / name)], capture_output=True,
                                text=True)
        assert result.returncode == 0, f"{name}: {result.stderr}"
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", "-x", *(f"scripts/slurm/{n}" for n in SCRIPTS)],
                                cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


# --------------------------------------------------------------------------- participant array

TABLES = {
    "plain": ("participant_id\tgroup\tfocus\nsub-01\tcontrol\tn/a\nsub-02\tpatient\t"
              "left-temporal\nsub-03\tcontrol\tn/a\n", ["01", "02", "03"]),
    "column moved": ("age\tgroup\tparticipant_id\tsex\n31\tcontrol\tsub-C01\tF\n"
                     "44\tpatient\tsub-P01\tM\n", ["C01", "P01"]),
    "no sub- prefix": ("participant_id\tgroup\n01\tcontrol\nsub-02\tpatient\n  03 \tcontrol\n",
                       ["01", "02", "03"]),
    "CRLF, BOM, blank lines": ("\ufeffgroup\tparticipant_id\r\n\r\ncontrol\tsub-A\r\n  \r\n"
                               "patient\tsub-B\r\n\r\n\r\ncontrol\tsub-C", ["A", "B", "C"]),
    "listed twice": ("participant_id\nsub-01\nsub-02\nsub-01\n", ["01", "02"]),
}


@pytest.mark.parametrize("table", TABLES, ids=list(TABLES))
def test_task_i_runs_the_ith_participant(tmp_path, fake, table):
    text, labels = TABLES[table]
    bids = write_bids(tmp_path / "bids", text)
    out = tmp_path / "out"
    for task, label in enumerate(labels):
        argv = dry_run("participant_array.sbatch", array_env(fake, bids, out, task))
        assert argv[:4] == ["pseudopet", str(bids), str(out), "participant"]
        assert option(argv, "--participant-label") == label
        assert option(argv, "-w") == f"{tmp_path}/out_work/77_{task}"   # one folder per task
    assert not out.exists()                                             # a dry run writes nothing
    # the task past the end: a clear message and a non-zero exit, nothing run or recorded
    result = run("participant_array.sbatch", array_env(fake, bids, out, len(labels)))
    assert result.returncode == 64
    assert f"array task {len(labels)} has no participant" in result.stderr
    assert f"lists {len(labels)} participant(s)" in result.stderr
    assert not calls(fake, "pseudopet") and not out.exists()


def test_participants_file_errors(tmp_path, fake):
    out = tmp_path / "out"
    bids = write_bids(tmp_path / "bids", "subject\tgroup\nsub-01\tcontrol\n")
    result = run("participant_array.sbatch", array_env(fake, bids, out, 0))
    assert result.returncode == 65 and "no participant_id column" in result.stderr
    write_bids(bids, "participant_id\nsub-01\nsub-0_2\n")
    result = run("participant_array.sbatch", array_env(fake, bids, out, 0))
    assert result.returncode == 65 and "'0_2' is not" in result.stderr
    result = run("participant_array.sbatch",
                 array_env(fake, bids, out, 0, PARTICIPANTS_TSV=str(tmp_path / "none.tsv")))
    assert result.returncode == 66 and "participants file not found" in result.stderr
    env = array_env(fake, bids, out, 0)
    del env["SLURM_ARRAY_TASK_ID"]
    result = run("participant_array.sbatch", env)
    assert result.returncode == 64 and "SLURM_ARRAY_TASK_ID is not set" in result.stderr
    result = run("participant_array.sbatch", array_env(fake, bids, out, "x"))
    assert result.returncode == 64 and "not a non-negative integer" in result.stderr
    assert not calls(fake, "pseudopet")


@pytest.mark.parametrize("rc", [0, 1, 66])
def test_exit_code_is_recorded(tmp_path, fake, rc):
    bids = write_bids(tmp_path / "bids", TABLES["plain"][0])
    out = tmp_path / "out"
    env = array_env(fake, bids, out, 1, FAKE_RC=str(rc), SLURM_CPUS_PER_TASK="8",
                    PSEUDOPET_ARGS="--skip-bids-validation  --model tissue")
    result = run("participant_array.sbatch", env)
    assert result.returncode == rc, result.stderr
    (argv,) = calls(fake, "pseudopet")
    work = tmp_path / "out_work" / "77_1"
    assert argv == [str(bids), str(out), "participant", "--participant-label", "02",
                    "-w", str(work), "--omp-nthreads", "8", "--skip-bids-validation",
                    "--model", "tissue"]
    record = out / "logs" / "slurm" / "77_1_sub-02.exitcode"
    assert record.read_text() == f"{rc}\n"
    assert [p.name for p in record.parent.iterdir()] == [record.name]   # no temporary left
    assert work.exists() == (rc != 0)                                   # kept for inspection
    assert f"exit code {rc} recorded" in result.stderr


def test_exit_code_is_recorded_when_the_job_is_killed(tmp_path, fake):
    """A time limit, scancel or preemption: SLURM sends SIGTERM to every process of the job."""
    bids = write_bids(tmp_path / "bids", TABLES["plain"][0])
    out = tmp_path / "out"
    proc = subprocess.Popen(["bash", str(SLURM / "participant_array.sbatch")],
                            env=array_env(fake, bids, out, 0, FAKE_SLEEP="30"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 20
    while not calls(fake, "pseudopet") and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err
    assert (out / "logs" / "slurm" / "77_0_sub-01.exitcode").read_text() == "143\n"


def test_container_command(tmp_path, fake):
    bids = write_bids(tmp_path / "bids", TABLES["plain"][0])
    out = tmp_path / "out"
    sif = tmp_path / "pseudopet.sif"
    work = f"{tmp_path}/scratch/77_2"
    env = array_env(fake, bids, out, 2, CONTAINER=str(sif), WORK_DIR=str(tmp_path / "scratch"),
                    PSEUDOPET_ARGS="--model syndiff")
    tail = [str(sif), "/data", "/out", "participant", "--participant-label", "03", "-w",
            "/work", "--model", "syndiff"]
    binds = ["-B", f"{bids}:/data:ro", "-B", f"{out}:/out", "-B", f"{work}:/work"]
    # no GPU allocated: no --nv
    assert dry_run("participant_array.sbatch", env) == [
        "apptainer", "run", "--cleanenv", *binds, *tail]
    # a GPU: --nv, and SLURM's choice of GPU survives --cleanenv
    gpu = {**env, "SLURM_GPUS_ON_NODE": "1", "CUDA_VISIBLE_DEVICES": "3"}
    assert dry_run("participant_array.sbatch", gpu) == [
        "apptainer", "run", "--nv", "--cleanenv", "--env", "CUDA_VISIBLE_DEVICES=3", *binds,
        *tail]
    forced = dry_run("participant_array.sbatch", {**gpu, "CONTAINER_NV": "0",
                                                  "CONTAINER_RUNTIME": "singularity"})
    assert forced[:3] == ["singularity", "run", "--cleanenv"]


# --------------------------------------------------------------------------- group job


def record(out: Path, job: int, task: int, label: str, rc: int) -> None:
    folder = out / "logs" / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job}_{task}_sub-{label}.exitcode").write_text(f"{rc}\n")


def test_group_reports_failures_and_aggregates_the_rest(tmp_path, fake):
    bids = write_bids(tmp_path / "bids", "participant_id\tgroup\n" + "".join(
        f"sub-{i:02d}\tcontrol\n" for i in range(1, 5)))
    out = tmp_path / "out"
    record(out, 100, 0, "01", 0)
    record(out, 100, 1, "02", 1)
    record(out, 99, 2, "03", 7)            # an older array's failure ...
    record(out, 100, 2, "03", 0)           # ... superseded (job ids compare as numbers)
    # sub-04: no record (its task was cancelled before it started)
    env = script_env(fake, BIDS_DIR=str(bids), OUTPUT_DIR=str(out), SLURM_JOB_ID="101",
                     ARRAY_JOB_ID="100", GROUP_ARGS="--fid-weights /w.pth")
    result = run("group.sbatch", env)
    assert result.returncode == 0, result.stderr
    assert "(array job 100): 4 participant(s), 2 succeeded, 1 failed, 1 without" in result.stdout
    assert "sub-02 (exit 1, log 100_1)" in result.stdout
    assert "  sub-04\n" in result.stdout
    assert "submit.sh --array 1,3 " in result.stdout
    (argv,) = calls(fake, "pseudopet")
    assert argv == [str(bids), str(out), "group", "-w", f"{tmp_path}/out_work/group_101",
                    "--participant-label", "01", "03", "--fid-weights", "/w.pth"]
    status = (out / "logs" / "slurm" / "participant_status.tsv").read_text().splitlines()
    assert status == ["index\tparticipant_id\tstatus\texit_code\tarray_job_id\ttask_id",
                      "0\tsub-01\tok\t0\t100\t0", "1\tsub-02\tfailed\t1\t100\t1",
                      "2\tsub-03\tok\t0\t100\t2", "3\tsub-04\tmissing\tn/a\tn/a\tn/a"]

    # the failed participants rerun in a later array: everyone is aggregated, no selection
    record(out, 105, 0, "02", 0)
    record(out, 105, 1, "04", 0)
    result = run("group.sbatch", env)
    assert result.returncode == 0, result.stderr
    assert "4 succeeded, 0 failed, 0 without" in result.stdout
    assert "rerun" not in result.stdout
    assert calls(fake, "pseudopet")[-1] == [str(bids), str(out), "group", "-w",
                                            f"{tmp_path}/out_work/group_101", "--fid-weights",
                                            "/w.pth"]


def test_group_stops_when_no_participant_succeeded(tmp_path, fake):
    bids = write_bids(tmp_path / "bids", "participant_id\nsub-01\nsub-02\n")
    out = tmp_path / "out"
    record(out, 100, 0, "01", 1)
    result = run("group.sbatch", script_env(fake, BIDS_DIR=str(bids), OUTPUT_DIR=str(out)))
    assert result.returncode == 1
    assert "no participant succeeded" in result.stderr
    assert "sub-01 (exit 1" in result.stdout and "submit.sh --array 0,1 " in result.stdout
    assert not calls(fake, "pseudopet")


def test_group_exit_code_is_pseudopets(tmp_path, fake):
    bids = write_bids(tmp_path / "bids", "participant_id\nsub-01\n")
    out = tmp_path / "out"
    record(out, 100, 0, "01", 0)
    env = script_env(fake, BIDS_DIR=str(bids), OUTPUT_DIR=str(out), FAKE_RC="16")
    assert run("group.sbatch", env).returncode == 16


# --------------------------------------------------------------------------- submit.sh


def test_submit_chains_array_and_group(tmp_path, fake):
    bids = write_bids(tmp_path / "bids", TABLES["CRLF, BOM, blank lines"][0])
    out = tmp_path / "out"
    result = run("submit.sh", script_env(fake), str(bids), str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    array, group = calls(fake, "sbatch")
    logs = out / "logs" / "slurm"
    assert array == ["--parsable", "--export=ALL", "--array=0-2%20",
                     f"--output={logs}/%A_%a_participant.out", "--gres=gpu:1",
                     str(SLURM / "participant_array.sbatch")]
    assert group == ["--parsable", "--export=ALL,ARRAY_JOB_ID=4242",
                     "--dependency=afterany:4242", f"--output={logs}/%j_group.out",
                     str(SLURM / "group.sbatch")]
    assert logs.is_dir()               # SLURM does not create the folder of --output files
    job_env = dict(line.split("=", 1) for line in
                   (fake / "sbatch.0.env").read_text().splitlines() if "=" in line)
    assert job_env["BIDS_DIR"] == str(bids) and job_env["OUTPUT_DIR"] == str(out)
    assert job_env["PSEUDOPET_SLURM_DIR"] == str(SLURM)   # the jobs' way to lib.sh
    assert "job 4242 (3 participant(s)" in result.stdout and "job 4243" in result.stdout


def test_submit_options(tmp_path, fake):
    bids = write_bids(tmp_path / "bids", TABLES["plain"][0])
    env = script_env(fake, BIDS_DIR=str(bids), OUTPUT_DIR=str(tmp_path / "out"),
                     PARTICIPANT_GPUS="0", EXTRA_SBATCH_ARGS="--account=abc  --partition=cpu")
    result = run("submit.sh", env, "--array", "0,2", "--max-parallel", "0", "--no-group")
    assert result.returncode == 0, result.stderr
    (array,) = calls(fake, "sbatch")
    assert "--array=0,2" in array and "--account=abc" in array and "--partition=cpu" in array
    assert not any(a.startswith("--gres") for a in array)
    result = run("submit.sh", env, "-p", "5")
    assert result.returncode == 0, result.stderr
    assert "--array=0-2%5" in calls(fake, "sbatch")[1]
    assert "--account=abc" in calls(fake, "sbatch")[2]


def test_submit_dry_run_and_errors(tmp_path, fake):
    bids = write_bids(tmp_path / "bids", TABLES["plain"][0])
    env = script_env(fake, BIDS_DIR=str(bids), OUTPUT_DIR=str(tmp_path / "out"))
    result = run("submit.sh", env, "--dry-run", "-p", "4")
    assert result.returncode == 0, result.stderr
    first, second = [shlex.split(line) for line in result.stdout.splitlines()
                     if line.startswith("sbatch")]
    assert "--array=0-2%4" in first and first[-1] == str(SLURM / "participant_array.sbatch")
    assert "--dependency=afterany:<array-job-id>" in second
    assert not calls(fake, "sbatch") and not (tmp_path / "out").exists()
    for args, code, message in (
            (["--array", "1;rm"], 64, "give task indices"),
            (["--frobnicate"], 64, "unknown option"),
            ([str(bids)], 64, "give both BIDS_DIR and OUTPUT_DIR")):
        result = run("submit.sh", env, *args)
        assert result.returncode == code and message in result.stderr, result.stderr
    result = run("submit.sh", {**env, "PARTICIPANTS_TSV": str(tmp_path / "none.tsv")})
    assert result.returncode == 66 and "participants file not found" in result.stderr
    assert not calls(fake, "sbatch")


# --------------------------------------------------------------------------- torchrun


def train_env(fake: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    settings = {"BIDS_DIR": str(tmp_path / "bids"), "OUTPUT_DIR": str(tmp_path / "out"),
                "FAKE_HOSTS": "gpu017 gpu018", "SLURM_JOB_ID": "5123",
                "SLURM_JOB_NODELIST": "gpu[017-018]"}
    return script_env(fake, **{**settings, **extra})


def test_torchrun_launch_line_from_slurm_variables(tmp_path, fake):
    env = train_env(fake, tmp_path, SLURM_NNODES="2", SLURM_GPUS_ON_NODE="4",
                    SLURM_CPUS_PER_TASK="32", PSEUDOPET_ARGS="--preset paper")
    argv = dry_run("train_torchrun.sbatch", env)
    assert argv == [
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
        "--cpus-per-task=32",
        "torchrun", "--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu017:29523", "--rdzv-id=5123", "--max-restarts=0",
        "-m", "pseudopet_bids.cli.run", str(tmp_path / "bids"), str(tmp_path / "out"), "group",
        "-w", f"{tmp_path}/out_work/train", "--train", "--model", "syndiff",
        "--omp-nthreads", "8", "--resume", "--preset", "paper"]
    assert (fake / "scontrol.args").read_bytes().split(b"\0")[:-1] == [
        b"show", b"hostnames", b"gpu[017-018]"]


@pytest.mark.parametrize("slurm,expected", [
    ({"SLURM_JOB_NUM_NODES": "3", "SLURM_GPUS_PER_NODE": "a100:2"},
     ["--nnodes=3", "--nproc-per-node=2"]),
    ({"SLURM_NNODES": "1", "CUDA_VISIBLE_DEVICES": "0,1,2"},
     ["--nnodes=1", "--nproc-per-node=3"]),
    ({"SLURM_NNODES": "2"}, ["--nnodes=2", "--nproc-per-node=1"]),          # no GPU
    ({"SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "4", "NPROC_PER_NODE": "2", "NNODES": "1",
      "RDZV_HOST": "ib-gpu017", "RDZV_PORT": "30000"},
     ["--nnodes=1", "--nproc-per-node=2", "--rdzv-endpoint=ib-gpu017:30000"]),
])
def test_torchrun_settings(tmp_path, fake, slurm, expected):
    argv = dry_run("train_torchrun.sbatch", train_env(fake, tmp_path, **slurm))
    assert set(expected) <= set(argv), argv


def test_torchrun_options_and_container(tmp_path, fake):
    env = train_env(fake, tmp_path, SLURM_NNODES="2", SLURM_GPUS_ON_NODE="4",
                    CONTAINER="/img/pseudopet.sif", MODEL="cyclegan", RESUME="0",
                    TORCHRUN="python3 -m torch.distributed.run")
    argv = dry_run("train_torchrun.sbatch", env)
    start = argv.index("apptainer")
    assert argv[start:start + 10] == [
        "apptainer", "exec", "--nv", "-B", f"{tmp_path}/bids:/data:ro", "-B",
        f"{tmp_path}/out:/out", "-B", f"{tmp_path}/out_work/train:/work", "/img/pseudopet.sif"]
    assert argv[start + 10:start + 14] == ["python3", "-m", "torch.distributed.run",
                                           "--nnodes=2"]
    assert argv[argv.index("pseudopet_bids.cli.run") + 1:] == [
        "/data", "/out", "group", "-w", "/work", "--train", "--model", "cyclegan",
        "--omp-nthreads", "1"]
    env = train_env(fake, tmp_path)
    del env["SLURM_JOB_NODELIST"]
    result = run("train_torchrun.sbatch", {**env, "PSEUDOPET_DRY_RUN": "1"})
    assert result.returncode == 64 and "SLURM_JOB_NODELIST is not set" in result.stderr


@pytest.mark.slow
def test_torchrun_trains_with_gloo_on_cpu(tmp_path, fake):
    """The derived command, run for real: 1 node x 2 CPU processes on a tiny SynDiff."""
    from pseudopet_bids.models import checkpoint as ckpt
    from pseudopet_bids.simulate.cohort import simulate_cohort
    from tests.train.test_trainer import _free_port

    bids = tmp_path / "bids"
    simulate_cohort(bids, n_controls=1, n_patients=0, seed=5, t1_voxel_mm=2.0)
    env = train_env(fake, tmp_path, FAKE_HOSTS="localhost", SLURM_NNODES="1",
                    SLURM_JOB_NODELIST="localhost", SLURM_GPUS_ON_NODE="2",
                    SLURM_CPUS_PER_TASK="2", RDZV_PORT=str(_free_port()),
                    PSEUDOPET_ARGS="--device cpu --preset tiny --train-steps 2 "
                                   "--skip-bids-validation",
                    PYTHONPATH=str(REPO))
    # torchrun and the pseudopet package from this interpreter's environment
    env["PATH"] = f"{env['PATH']}{os.pathsep}{Path(sys.executable).parent}"
    expected = dry_run("train_torchrun.sbatch", env)
    assert "--nproc-per-node=2" in expected and "--rdzv-endpoint=localhost:" + \
        env["RDZV_PORT"] in expected
    try:
        result = run("train_torchrun.sbatch", env, timeout=300)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun training did not finish in 300 s:\n{str(exc.stderr)[-3000:]}")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert (fake / "srun.args").read_bytes().split(b"\0")[:-1] == [
        a.encode() for a in expected[1:]]                # srun got exactly the dry-run line
    card = ckpt.read_card(tmp_path / "out" / "models" / "syndiff")
    assert card["world_size"] == 2 and card["steps_done"] == 2
    assert card["model"] == "syndiff" and card["preset"] == "tiny"
    assert card["training_subjects"]["pet"] == ["sub-C01"]
