"""docs/quickstart-own-data.md stays true: its ``bash`` commands run, in order, on a cohort.

The page's placeholders ``/data/bids`` and ``/data/out`` become temporary folders; ``pseudopet``
runs as ``python -m pseudopet_bids`` of this interpreter. Each command must exit 0 and leave the
outputs the page says it leaves.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pseudopet_bids.bids.validator import validator_executable

pytestmark = pytest.mark.slow
PAGE = Path(__file__).resolve().parents[1] / "docs" / "quickstart-own-data.md"
RUNNABLE = ("pseudopet", "bids-validator-deno")


def page_commands(text: str) -> list[list[str]]:
    """The command lines of the page's ``bash`` blocks (``console`` blocks are examples)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                commands.append(shlex.split(line))
    return commands


def test_page_lists_the_steps_in_order():
    commands = page_commands(PAGE.read_text())
    assert all(c[0] in RUNNABLE for c in commands)
    levels = [(c[3], *c[4:]) for c in commands if c[0] == "pseudopet"]
    assert [lv[0] for lv in levels] == ["participant", "group", "participant", "group"]
    assert "--build-normative" in levels[1] and "--z-reference" in levels[2]
    assert "STEP" not in PAGE.read_text()  # every measured time was filled in


def test_page_commands_run_on_a_simulated_cohort(tmp_path):
    from pseudopet_bids.simulate.cohort import simulate_cohort

    bids, out = tmp_path / "bids", tmp_path / "out"
    simulate_cohort(bids, n_controls=4, n_patients=1, seed=5, t1_voxel_mm=2.0)
    places = {"/data/bids": str(bids), "/data/out": str(out)}
    for command in page_commands(PAGE.read_text()):
        argv = [places.get(a, a) for a in command]
        if argv[0] == "pseudopet":
            argv = [sys.executable, "-m", "pseudopet_bids", *argv[1:]]
        else:
            exe = validator_executable()
            if exe is None:
                pytest.skip("bids-validator-deno is not installed (pip install '.[test]')")
            argv = [str(exe), *argv[1:]]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"{' '.join(command)}:\n{proc.stderr[-3000:]}"

    # what the page promises after the steps
    for sub in ("sub-C01", "sub-P01"):
        pet = out / sub / "pet"
        assert list(pet.glob("*_desc-tissueFocus_clusters.tsv"))
        assert list(pet.glob("*_desc-tissueNormFocus_clusters.tsv"))
        assert (out / f"{sub}.html").is_file()
    assert (Path(f"{out}_work")).is_dir()
    summary = pd.read_csv(out / "group" / "summary.tsv", sep="\t")
    assert {"tissue", "tissueNorm"} <= set(summary["analysis"])
    assert (out / "group" / "group.html").is_file()
