"""Eight participant jobs started at once into one output folder (a SLURM array): all finish,
every subject's outputs are whole, and the dataset-level files are valid and complete.

Eight full pipelines would take ~6 min of CPU here, so the eight subjects are copies of one
simulated patient under eight labels, and each job's work folder holds that patient's
preprocessing (the cache is keyed by the image data, not the label). Each job then runs
intake, synthesis, detection, the staged writing of its derivatives, its report and the
shared files: dataset_description.json, .bidsignore, logs/CITATION.*, the pybids database,
i.e. everything jobs of one output folder share.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.io import temporaries as T
from tests.conftest import assert_bids_valid

pytestmark = pytest.mark.slow
N_JOBS = 8
FAST = ["--skip-bids-validation", "--omp-nthreads", "1", "--model", "tissue"]


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "TMPDIR"}
    env.update(ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    return env


def _cli(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "pseudopet_bids.cli.run", *args],
                                stdout=fh, stderr=subprocess.STDOUT, env=_env())


def _copy_subject(bids: Path, label: str) -> None:
    """sub-P01's files under ``sub-<label>`` (same images: same preprocessing cache key)."""
    for src in (bids / "sub-P01").rglob("*"):
        if src.is_file():
            dst = bids / f"sub-{label}" / src.relative_to(bids / "sub-P01").parent / \
                src.name.replace("sub-P01", f"sub-{label}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def _copy_cache(work: Path, target: Path, label: str) -> None:
    """The preprocessing cache of sub-P01 as ``target``'s cache of ``sub-<label>``, with the
    transform paths of its manifest moved along."""
    src, dst = work / "sub-P01", target / f"sub-{label}"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("modelgrid-*"))
    manifest = dst / "preproc" / "manifest.json"
    manifest.write_text(manifest.read_text().replace(str(src), str(dst)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from pseudopet_bids.simulate.cohort import simulate_cohort

    base = tmp_path_factory.mktemp("concurrency")
    bids = base / "bids"
    simulate_cohort(bids, n_controls=0, n_patients=1, seed=21, t1_voxel_mm=3.0)
    warm = _cli([str(bids), str(base / "warm"), "participant", "-w", str(base / "work"), *FAST],
                base / "warm.log")
    assert warm.wait(timeout=600) == 0, (base / "warm.log").read_text()[-3000:]
    labels = [f"P{k:02d}" for k in range(1, N_JOBS + 1)]
    table = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    rows = [table.iloc[0].to_dict() | {"participant_id": f"sub-{label}"} for label in labels]
    pd.DataFrame(rows).to_csv(bids / "participants.tsv", sep="\t", index=False)
    for label in labels:
        if label != "P01":
            _copy_subject(bids, label)
        _copy_cache(base / "work", base / f"work_{label}", label)
    return base, bids, labels


def test_eight_participant_jobs_at_once_into_one_output_folder(dataset):
    from pseudopet_bids.bids.derivatives import BIDSIGNORE, SubjectPaths
    from pseudopet_bids.config import RunConfig
    from pseudopet_bids.workflows.outputs import expected_outputs
    from pseudopet_bids.reports.citation import (cards_in_output, write_citation,
                                                 z_references_in_output)
    from pseudopet_bids.reports.html import check_links

    base, bids, labels = dataset
    out, db = base / "out", base / "bids_db"
    t0 = time.monotonic()
    jobs = {label: _cli([str(bids), str(out), "participant", "--participant-label", label,
                         "-w", str(base / f"work_{label}"), "--bids-database-dir", str(db),
                         *FAST], base / f"job_{label}.log") for label in labels}
    codes = {label: job.wait(timeout=900) for label, job in jobs.items()}
    print(f"\n{N_JOBS} jobs in {time.monotonic() - t0:.0f} s")
    logs = {label: (base / f"job_{label}.log").read_text() for label in labels}
    assert codes == {label: 0 for label in labels}, {k: logs[k][-2000:] for k in codes
                                                     if codes[k]}
    assert all("preprocessing reused" in text for text in logs.values())

    # every subject whole, and equal to the same images processed alone
    warm = SubjectPaths(base / "warm", "P01", None, bids / "sub-P01" / "pet" /
                        "sub-P01_trc-FDG_pet.nii.gz")
    for label in labels:
        pet = next((bids / f"sub-{label}" / "pet").glob("*_pet.nii.gz"))
        paths = SubjectPaths(out, label, None, pet)
        for path, alone in zip(expected_outputs(paths, "tissue", "tissue"),
                               expected_outputs(warm, "tissue", "tissue")):
            if path.name.endswith(".nii.gz"):
                assert np.array_equal(np.asarray(nib.load(path).dataobj),
                                      np.asarray(nib.load(alone).dataobj)), path
            else:
                assert path.read_text() == alone.read_text(), path
        assert RunConfig.from_toml(paths.config("tissue")).input.participant_label
        assert json.loads(paths.status.read_text())["state"] == "finished"
        assert check_links(out / f"sub-{label}.html") == []

    # dataset-level files: valid, complete, as one job alone writes them
    for name in ("dataset_description.json", ".bidsignore"):
        assert (out / name).read_bytes() == (base / "warm" / name).read_bytes(), name
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == \
        "derivative"
    assert (out / ".bidsignore").read_text() == BIDSIGNORE
    citation = {p.name: p.read_text() for p in (out / "logs").glob("CITATION.*")}
    assert set(citation) == {"CITATION.md", "CITATION.bib"}
    cfg = RunConfig.from_toml(next((out / "logs").glob("sub-*_desc-tissue_config.toml")))
    write_citation(out, cfg, cards_in_output(out), z_references_in_output(out))
    assert citation == {p.name: p.read_text() for p in (out / "logs").glob("CITATION.*")}
    assert (db / "layout_index.sqlite").is_file()
    assert_bids_valid(out)
    leftovers = [p for root in (out, db, *(base / f"work_{k}" for k in labels))
                 for p in root.rglob("*") if T.is_temporary(p.name, p.is_dir())]
    assert leftovers == []
    assert sorted(p.name for p in base.iterdir() if p.name.startswith(".")) == []
