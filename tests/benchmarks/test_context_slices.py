"""benchmarks/context_slices.py: reading trained model folders and the table it writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "context_slices.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("context_slices", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_model(folder: Path, context: int, ssims: list[float]) -> None:
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps(
        {"context_slices": context, "steps_done": 500, "training_seconds": 600.0 + 60 * context}))
    rows = ["step,ssim,psnr,mae"] + [f"{250 * (i + 1)},{s},{20 + i},{0.05 - 0.01 * i}"
                                     for i, s in enumerate(ssims)]
    (folder / "validation_log.csv").write_text("\n".join(rows) + "\n")


def test_reads_runs_and_writes_one_row_per_context(bench, tmp_path, monkeypatch):
    for k, ssims in {0: [0.70, 0.80], 2: [0.72, 0.83], 1: [0.71]}.items():
        fake_model(tmp_path / f"out_k{k}" / "models" / "cyclegan", k, ssims)
    monkeypatch.setattr(bench, "train", lambda *a, **k: pytest.fail("finished runs retrained"))
    out = tmp_path / "ctx.md"
    assert bench.main([str(tmp_path / "bids"), str(tmp_path), "--contexts", "0", "1", "2",
                       "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and
            line[2].isdigit()]
    assert [r.split("|")[1].strip() for r in rows] == ["0 (1)", "1 (3)", "2 (5)"]
    assert "0.8300" in rows[2] and "| 11.0 |" in rows[1] and "–" in rows[1]
    assert rows[0].rstrip().endswith("| 21.00 | 0.0400 |")
