"""``benchmarks/gpu.py`` runs on the CPU with the tiny preset and writes its table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about 15 s of CPU (two models trained and translated at the tiny preset)
def test_gpu_benchmark_runs_on_the_cpu_with_the_tiny_preset(tmp_path):
    out = tmp_path / "gpu.md"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu",
                          "--preset", "tiny", "--steps", "2", "--slices", "4", "--samples", "2",
                          "--threads", "1", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# GPU benchmark (tiny preset)")
    assert "Device: **CPU:" in text and "1 torch threads" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    train = [r.split("|")[1:-1] for r in rows if r.startswith(("| cyclegan | eager",
                                                                 "| cyclegan | optimised",
                                                                 "| syndiff | eager",
                                                                 "| syndiff | optimised"))]
    assert len(train) == 4
    for cells in train:
        steps_per_s, slices_per_s = float(cells[4]), float(cells[5])
        assert steps_per_s > 0 and slices_per_s == pytest.approx(steps_per_s * int(cells[2]),
                                                                 rel=0.01)
        assert cells[7].strip() == "–"                       # no GPU memory on the CPU
    assert [c[6].strip() for c in train if "eager" in c[1]] == ["1×", "1×"]
    inference = [r.split("|")[1:-1] for r in rows
                 if re.match(r"\| (cyclegan|syndiff) \| \d+ \| False \| fp32", r)]
    assert [(c[0].strip(), c[1].strip()) for c in inference] == [
        ("cyclegan", "1"), ("syndiff", "1"), ("syndiff", "2")]
    assert all(float(c[4]) > 0 for c in inference)
    # the GPU-only sections are left out on the CPU, not faked
    assert "agreement" not in text and "drift" not in text and "ranks identical" not in text


@pytest.mark.slow  # two processes importing torch: about 30 s on a busy 2-core VM
def test_gpu_benchmark_two_process_section_runs_on_the_cpu(tmp_path):
    out = tmp_path / "ranks.md"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu",
                          "--preset", "tiny", "--sections", "ranks", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ranks identical: **True** (exit codes [0, 0])" in out.read_text(), run.stdout[-3000:]
