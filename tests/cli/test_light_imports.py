"""``pseudopet --help`` and ``--version`` stay light: the heavy libraries are imported only
behind the CLI edge (``cli/run.py`` imports the workflows once the command line is valid)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Top-level modules the light path must not import (pybids is the top-level ``bids``).
HEAVY = ("torch", "ants", "bids", "matplotlib", "deepbet", "templateflow")

SCRIPT = """
import json, sys
from pseudopet_bids.cli.run import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
else:
    code = None
with open(sys.argv[1], "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_no_heavy_library(flag, tmp_path):
    out = tmp_path / "modules.json"
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(out), flag],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    record = json.loads(out.read_text())
    assert record["code"] == 0, run.stderr
    assert "pseudopet" in run.stdout  # the usage text or the version was printed
    modules = record["modules"]
    assert "pseudopet_bids.cli.parser" in modules  # the check looked at the real path
    leaked = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not leaked, f"pseudopet {flag} imported {leaked[:10]}"
    assert not [m for m in modules if m.startswith("pseudopet_bids.workflows")]


@pytest.mark.parametrize("module", ["pseudopet_bids.workflows.participant",
                                    "pseudopet_bids.workflows.group"])
def test_workflows_import_matplotlib_only_when_drawing(module):
    """matplotlib reads ``$MPLCONFIGDIR`` once, when imported. The CLI imports the workflows
    before ``prepare_dirs`` points that at the work folder (the only writable place under a
    read-only container root), so an import at module level fails the container run."""
    code = (f"import sys, {module}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')[:5])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"importing {module} imported {run.stdout.strip()}"
