"""Model size and speed per preset: parameters, GFLOPs per slice, training steps/s, inference
slices/s, on CPU (and CUDA when present). Writes ``docs/models_benchmark.md``.

* Parameters and GFLOPs (``models/networks/complexity.py``; one multiply-add = 2 FLOPs, only
  convolutions and matrix products counted) per network for one slice of the preset's grid.
* Training: seconds per optimisation step of the full model (all phases, the preset's batch),
  median of a few steps after warm-up, random data on the preset's grid.
* Inference: a whole model-grid volume (``paper``: 192 slices of 256 × 256) through
  ``synthesis.apply.translate_volume`` — exactly what the participant level runs; SynDiff with
  one sample (4 reverse steps).

Usage::

    python benchmarks/models.py --presets tiny small paper [--device cuda] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def sizes(kind: str, preset_name: str) -> list[dict]:
    """Parameters and GFLOPs per slice of each network of ``kind`` at ``preset_name``."""
    from pseudopet_bids.models.networks.complexity import count_parameters, flops_per_call
    from pseudopet_bids.models.presets import preset
    from pseudopet_bids.models.registry import build_model

    hp = preset(kind, preset_name)
    torch.manual_seed(0)
    model = build_model(kind, hp, 1).eval()
    nx, ny, _ = hp["grid"].shape
    x = torch.zeros(1, 1, nx, ny)
    t = torch.zeros(1)
    rows = []
    for name, net in model.named_children():
        params = count_parameters(net)
        if params == 0:
            continue
        if name.startswith("gen_diff"):
            args = (torch.zeros(1, 2, nx, ny), t, torch.zeros(1, hp["nz"]))
        elif name.startswith("disc_diff"):
            args = (x, t, x)
        else:
            args = (x,)
        rows.append({"model": kind, "preset": preset_name, "network": name,
                     "params_M": round(params / 1e6, 3),
                     "gflops_per_slice": round(flops_per_call(net, *args) / 1e9, 3)})
    return rows


def train_speed(kind: str, preset_name: str, device: torch.device, steps: int = 4) -> float:
    """Median seconds per training step (all phases) on random data."""
    from pseudopet_bids.models.presets import preset
    from pseudopet_bids.models.registry import build_model

    hp = preset(kind, preset_name)
    torch.manual_seed(0)
    model = build_model(kind, hp, 1).to(device).to(memory_format=torch.channels_last)
    nx, ny, _ = hp["grid"].shape
    b = hp["batch_size"]
    opts = {ph.name: torch.optim.Adam([p for m in ph.modules for p in
                                       getattr(model, m).parameters()], lr=ph.lr)
            for ph in model.phases()}
    times = []
    for step in range(steps + 1):
        batch = {k: (torch.rand(b, 1, nx, ny, device=device) * 2 - 1).contiguous(
            memory_format=torch.channels_last) for k in ("mri", "pet")}
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ctx: dict = {}
        for ph in model.phases():
            opts[ph.name].zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss, _ = model.phase_loss(ph.name, batch, ctx, step + 1)
            loss.backward()
            opts[ph.name].step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def inference_speed(kind: str, preset_name: str, device: torch.device,
                    max_slices: int | None = None) -> tuple[float, int, int]:
    """Seconds to translate one whole model-grid volume, its slices, and the slices timed.

    With ``max_slices`` only that many slices are translated and the time is scaled to the
    whole volume (slice batches are independent, so the time is linear in the slice count).
    """
    from pseudopet_bids.models.presets import preset
    from pseudopet_bids.models.registry import build_model
    from pseudopet_bids.synthesis.apply import TrainedModel, translate_volume

    hp = preset(kind, preset_name)
    torch.manual_seed(0)
    model = build_model(kind, hp, 1).to(device).eval()
    grid = hp["grid"]
    timed = grid.shape[2] if max_slices is None else min(max_slices, grid.shape[2])
    shape = grid.shape[:2] + (timed,)
    mri = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    mask = np.ones(shape, bool)
    trained = TrainedModel(model, {}, Path("."), grid, 0)
    translate_volume(trained, mri[:, :, :2], mask[:, :, :2], device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    translate_volume(trained, mri, mask, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * grid.shape[2] / timed, grid.shape[2], timed


def main() -> int:
    from _machine import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "paper"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-train", nargs="*", default=[],
                        help="model:preset pairs whose training speed is not measured")
    parser.add_argument("--max-slices", type=int, default=24,
                        help="SynDiff paper on CPU: time this many slices, scale to the volume")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "models_benchmark.md")
    args = parser.parse_args()
    from pseudopet_bids.device import flush_denormals

    torch.set_num_threads(args.threads)
    flush_denormals()
    device = torch.device(args.device)
    size_rows, speed_rows = [], []
    for preset_name in args.presets:
        for kind in ("cyclegan", "syndiff"):
            size_rows += sizes(kind, preset_name)
            step = (float("nan") if f"{kind}:{preset_name}" in args.skip_train
                    else train_speed(kind, preset_name, device))
            limit = args.max_slices if (kind == "syndiff" and preset_name == "paper") else None
            secs, n, timed = inference_speed(kind, preset_name, device, limit)
            speed_rows.append({"model": kind, "preset": preset_name, "s_per_step": step,
                               "volume_s": secs, "slices": n, "timed_slices": timed,
                               "slices_per_s": n / secs})
            print(json.dumps(speed_rows[-1]), flush=True)
    lines = ["| model | preset | network | parameters (M) | GFLOPs / slice |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['preset']} | {r['network']} | {r['params_M']:.3f} | "
              f"{r['gflops_per_slice']:.3f} |" for r in size_rows]
    lines += ["", f"Speed on `{device}` ({args.threads} threads):", "",
              "| model | preset | s / training step | volume inference (s) | slices | "
              "slices timed | slices / s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['preset']} | {r['s_per_step']:.3f} | {r['volume_s']:.1f} | "
              f"{r['slices']} | {r['timed_slices']} | {r['slices_per_s']:.2f} |"
              for r in speed_rows]
    text = "\n".join(lines)
    doc = Path(args.doc)
    head = doc.read_text().split("<!-- results -->")[0] if doc.exists() else \
        "# Model sizes and speed\n\n"
    doc.write_text(head + "<!-- results -->\n" + text +
                   f"\n\nMachine: `{json.dumps(machine_info())}`\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
