"""Run bids-validator-deno (the BIDS validator, installed from PyPI, works offline)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

EXECUTABLE = "bids-validator-deno"


def validator_executable() -> str | None:
    """Path of ``bids-validator-deno``: on PATH, else beside this Python (an unactivated venv)."""
    found = shutil.which(EXECUTABLE)
    if found:
        return found
    beside = Path(sys.executable).parent / EXECUTABLE
    return str(beside) if beside.is_file() else None


def validation_errors(dataset: Path, timeout: float = 600) -> list[dict]:
    """Error-severity issues that bids-validator-deno reports for a dataset.

    Raises
    ------
    FileNotFoundError
        The validator is not installed.
    """
    exe = validator_executable()
    if exe is None:
        raise FileNotFoundError(f"{EXECUTABLE} is not installed (pip install {EXECUTABLE})")
    proc = subprocess.run([exe, str(dataset), "--format", "json"], capture_output=True,
                          text=True, timeout=timeout)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"{EXECUTABLE} gave no JSON report: {proc.stderr[-2000:]}") from exc
    return [i for i in report["issues"]["issues"] if i.get("severity") == "error"]
