"""Participant jobs started together into one output folder (SLURM arrays): the shared pybids
database and the dataset-level files must come out whole and identical."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from pseudopet_bids.bids.derivatives import init_output
from pseudopet_bids.bids.discovery import discover
from tests.conftest import make_bids

N_JOBS = 6


def _discover_job(args) -> list[str]:
    root, db = args
    return [str(u.pet) for u in discover(Path(root), database_dir=Path(db))]


def _init_job(args) -> None:
    out, root, name = args
    for _ in range(20):
        init_output(Path(out), Path(root), {name: str(Path(root))} if name else None)


def test_jobs_building_one_database_at_once(tmp_path):
    root = make_bids(tmp_path / "ds", {f"{i:02d}": {} for i in range(1, 4)})
    db = tmp_path / "db"
    with mp.get_context("spawn").Pool(N_JOBS) as pool:
        results = pool.map(_discover_job, [(str(root), str(db))] * N_JOBS)
    assert all(r == results[0] for r in results) and len(results[0]) == 3
    assert (db / "layout_index.sqlite").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "ds"]  # no private leftovers
    assert _discover_job((str(root), str(db))) == results[0]  # the kept database reads fine


def test_dataset_level_files_written_concurrently_stay_whole(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {}})
    out = tmp_path / "out"
    jobs = [(str(out), str(root), None)] * N_JOBS
    with mp.get_context("spawn").Pool(N_JOBS) as pool:
        pool.map(_init_job, jobs)
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and "raw" in desc["DatasetLinks"]
    assert (out / ".bidsignore").read_text().strip()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    # a later run without --derivatives keeps the links earlier runs' sidecars rely on
    init_output(out, root, {"smriprep": str(root)})
    init_output(out, root)
    assert "smriprep" in json.loads((out / "dataset_description.json").read_text())[
        "DatasetLinks"]
