"""Is the input a raw BIDS dataset? Its ``dataset_description.json``, and bids-validator-deno
(the BIDS validator, installed from PyPI, works offline)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pseudopet_bids.errors import InputError, UsageError, ValidationError

LOGGER = logging.getLogger(__name__)

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
    return validation_issues(dataset, "error", timeout)


def validation_issues(dataset: Path, severity: str, timeout: float = 600) -> list[dict]:
    """Issues of one severity (``error``, ``warning``) that bids-validator-deno reports.

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
    return [i for i in report["issues"]["issues"] if i.get("severity") == severity]


def validate_dataset(bids_dir: Path, run_validator: bool = True) -> None:
    """Check that the input is a BIDS dataset and run bids-validator-deno when asked.

    Without a readable ``dataset_description.json`` (missing, not JSON, not an object) the
    input is refused: with exit 16 when validating, 66 (inputs missing) with
    ``--skip-bids-validation``. A derivatives dataset (``DatasetType: derivative``) given as the
    input is a usage error (64): its files would be taken for raw images. Validator errors, and
    a validator that crashes or gives no report, give exit 16.
    """
    error = ValidationError if run_validator else InputError
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise error("dataset_description.json is missing: this is not a BIDS dataset",
                    bids_dir, "add dataset_description.json (Name, BIDSVersion) "
                    "or point to the dataset root")
    try:
        content = json.loads(description.read_text(encoding="utf-8-sig"))  # BOM tolerated
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise error(f"dataset_description.json is not valid JSON ({exc})", description,
                    'fix it: a UTF-8 JSON object such as {"Name": "My study", '
                    '"BIDSVersion": "1.10.0"}') from exc
    if not isinstance(content, dict):
        raise error("dataset_description.json is not a JSON object", description,
                    'write it as {"Name": "My study", "BIDSVersion": "1.10.0"}')
    if str(content.get("DatasetType", "raw")).lower() == "derivative":
        raise UsageError("the input is a derivatives dataset (DatasetType \"derivative\"), "
                         "not raw BIDS", bids_dir, "give the raw BIDS dataset as BIDS_DIR; "
                         "reuse preprocessed data with -d NAME=PATH")
    if not run_validator:
        return
    t0 = time.monotonic()
    try:
        errors = validation_errors(bids_dir)
    except FileNotFoundError:
        LOGGER.warning("bids-validator-deno not found: input not validated "
                       "(pip install bids-validator-deno, or --skip-bids-validation)")
        return
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, TypeError) as exc:
        # no usable report (crash, timeout, unexpected JSON): not a verdict on the data
        raise ValidationError(f"bids-validator-deno did not produce a report "
                              f"({type(exc).__name__}: {str(exc)[:300]})", bids_dir,
                              "run bids-validator-deno on the dataset yourself, or rerun with "
                              "--skip-bids-validation") from exc
    if errors:
        LOGGER.error("bids-validator-deno reported %d error(s) (fix them, or rerun with "
                     "--skip-bids-validation):\n%s", len(errors),
                     "\n".join(f"  {e.get('code')}: {e.get('location', '')} "
                               f"{e.get('subCode') or ''}" for e in errors[:30]))
        raise ValidationError("the input dataset failed BIDS validation", bids_dir,
                              "fix the reported errors, or rerun with --skip-bids-validation")
    LOGGER.info("BIDS validation passed (%.1f s)", time.monotonic() - t0)
