"""The type checker passes on the typed core (``[tool.mypy]`` in pyproject.toml).

mypy checks ``detect``, ``models``, ``preproc``, ``io`` and ``synthesis`` (every function there
annotated) and the package modules they import. The cache lives in ``.mypy_cache`` at the
repository root (a temporary folder where that is not writable): about 20-30 s on a cold
cache on 2 cores, 2-3 s warm.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_passes_on_the_typed_packages(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it comes with the [test] extra: "
                    "pip install -e '.[test]')")
    cache = ROOT / ".mypy_cache" if os.access(ROOT, os.W_OK) else tmp_path / "mypy_cache"
    run = subprocess.run([sys.executable, "-m", "mypy", "--config-file",
                          str(ROOT / "pyproject.toml"), "--cache-dir", str(cache)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"mypy found problems:\n{output}"
    assert "Success: no issues found" in output, output
