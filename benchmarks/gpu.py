"""Speed and numerics of the learned models on one GPU (issue 15); writes a markdown table.

Sections (``--sections``; default: all on CUDA, ``train inference`` on the CPU):

* ``train``: training steps/s of CycleGAN and SynDiff through the real trainer
  (``train/trainer.py``) on random slices of the preset's grid: the eager baseline (batch 1,
  no ``torch.compile``) against the optimised setting (``--batch`` slices, compiled on CUDA), in
  the same run, with the slices/s ratio and the peak GPU memory.
* ``inference``: seconds per model-grid volume through ``synthesis.apply.translate_volume``
  (what the participant level runs): CycleGAN, SynDiff with 1 and ``--samples`` samples, and
  SynDiff with its diffusive generator compiled.
* ``agreement``: the same slices translated on CUDA (fp32) and on the CPU (CycleGAN; SynDiff's
  generator on a fixed input: its noise comes from device-specific generators).
* ``drift``: bf16 autocast against fp32 on CUDA, both models.
* ``participant``: one whole participant (``pseudopet … participant``) with a paper-preset
  CycleGAN folder on the GPU, timed from the command line; the network's weights are random
  (its output shifted into the PET range): the speed does not depend on them.
* ``ranks``: a 2-process training on one GPU (gloo, as ``torchrun --nproc-per-node 2``) whose
  ranks must end with identical weights.

The networks are random-initialised: speeds do not depend on the weights. Usage::

    python benchmarks/gpu.py [--device cuda] [--preset paper] [--out docs/gpu_benchmark.md]
    python benchmarks/gpu.py --device cpu --preset tiny --out /tmp/gpu.md   # a check, < 1 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("train", "inference", "agreement", "drift", "participant", "ranks")
CPU_SECTIONS = ("train", "inference")


# --------------------------------------------------------------------------- helpers


class RandomSlices:
    """A sampler of random unpaired slices on the preset's grid (deterministic in the step)."""

    def __init__(self, shape: tuple[int, int], batch: int, seed: int = 0):
        self.shape, self.size, self.seed = shape, batch, seed

    def batch(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        return {k: rng.uniform(-1, 1, (self.size, 1, *self.shape)).astype(np.float32)
                for k in ("mri", "pet")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def _model(kind: str, preset_name: str, seed: int = 0):
    from pseudopet_bids.models.presets import preset
    from pseudopet_bids.models.registry import build_model

    hp = preset(kind, preset_name)
    torch.manual_seed(seed)
    return build_model(kind, hp, 1), hp


def _trained(model, hp) -> Any:
    from pseudopet_bids.synthesis.apply import TrainedModel

    return TrainedModel(model, {}, Path("."), hp["grid"], 0)


# --------------------------------------------------------------------------- sections


def train_rate(kind: str, preset_name: str, device: torch.device, batch: int, compile_: bool,
               steps: int) -> dict[str, Any]:
    """Steps/s over ``steps`` steps after ``steps`` warm-up steps (compilation included in
    the warm-up), through the real trainer."""
    from pseudopet_bids.train.trainer import Trainer, TrainSettings

    model, hp = _model(kind, preset_name)
    shape = tuple(hp["grid"].shape[:2])
    settings = TrainSettings(steps=2 * steps, batch_size=batch, device=str(device),
                             checkpoint_every=10 ** 9, checkpoint_minutes=10 ** 6,
                             log_every=steps, compile=compile_)
    _peak_reset(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, RandomSlices(shape, batch), settings, Path(tmp),
                          {"model": kind, "preset": preset_name, "config_hash": "benchmark"})
        trainer.fit()
    rows = trainer.log_rows
    seconds = rows[-1]["seconds"] - rows[0]["seconds"]
    rate = steps / max(seconds, 1e-9)
    return {"steps_per_s": rate, "slices_per_s": rate * batch, "peak_gb": _peak_gb(device),
            "batch": batch, "compiled": compile_}


def inference_seconds(kind: str, preset_name: str, device: torch.device, n_samples: int,
                      compile_: bool = False, slices: int | None = None,
                      bf16: bool | None = None, repeats: int = 2) -> dict[str, Any]:
    """Seconds per model-grid volume (all slices brain; best of ``repeats`` after one warm-up)."""
    from pseudopet_bids.synthesis.apply import translate_volume

    model, hp = _model(kind, preset_name)
    model = model.to(device).eval()
    if compile_:
        for name in model.inference_modules():
            getattr(model, name).compile()
    shape = hp["grid"].shape
    nz = slices or shape[2]
    rng = np.random.default_rng(1)
    mri = rng.uniform(-1, 1, (*shape[:2], nz)).astype(np.float32)
    mask = np.ones(mri.shape, bool)
    trained = _trained(model, hp)
    _peak_reset(device)
    translate_volume(trained, mri[:, :, :2], mask[:, :, :2], device, n_samples, bf16=bf16)
    times, out = [], None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out, _ = translate_volume(trained, mri, mask, device, n_samples, bf16=bf16)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"seconds": min(times) * shape[2] / nz, "slices": nz, "peak_gb": _peak_gb(device),
            "output": out}


def agreement(preset_name: str, device: torch.device, slices: int = 8) -> list[dict[str, Any]]:
    """CUDA fp32 against CPU fp32 on the same input."""
    rows = []
    model, hp = _model("cyclegan", preset_name)
    cpu = inference_seconds("cyclegan", preset_name, torch.device("cpu"), 1, slices=slices,
                            repeats=1)["output"]
    gpu = inference_seconds("cyclegan", preset_name, device, 1, slices=slices, bf16=False,
                            repeats=1)["output"]
    rows.append({"what": "CycleGAN volume (fp32)", **_diff(gpu, cpu)})
    model, hp = _model("syndiff", preset_name)
    gen = model.gen_diff_pet.eval()
    nx, ny, _ = hp["grid"].shape
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 2, nx, ny, generator=g) * 2 - 1
    t = torch.tensor([0.0, 1.0, 2.0, 3.0])
    z = torch.randn(4, hp["nz"], generator=g)
    with torch.inference_mode():
        want = gen(x, t, z).numpy()
        got = gen.to(device)(x.to(device), t.to(device), z.to(device)).float().cpu().numpy()
    rows.append({"what": "SynDiff generator, one call (fp32)", **_diff(got, want)})
    return rows


def drift(preset_name: str, device: torch.device, slices: int = 16) -> list[dict[str, Any]]:
    """bf16 autocast against fp32 on the same device (SynDiff: same seed, 1 sample)."""
    rows = []
    for kind in ("cyclegan", "syndiff"):
        fp32 = inference_seconds(kind, preset_name, device, 1, slices=slices, bf16=False,
                                 repeats=1)["output"]
        bf16 = inference_seconds(kind, preset_name, device, 1, slices=slices, bf16=True,
                                 repeats=1)["output"]
        rows.append({"what": f"{kind} volume, bf16 vs fp32", **_diff(bf16, fp32)})
    return rows


def _diff(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "corr": float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])}


def participant(device: torch.device, preset_name: str, workdir: Path) -> dict[str, Any]:
    """One simulated patient through ``pseudopet … participant`` with a learned-model folder."""
    from pseudopet_bids.models import checkpoint as ckpt
    from pseudopet_bids.models.presets import card_hparams
    from pseudopet_bids.simulate.cohort import simulate_cohort
    from pseudopet_bids.synthesis.modelspace import SCALING

    bids, out = workdir / "bids", workdir / "out"
    simulate_cohort(bids, 0, 1, seed=3)
    model, hp = _model("cyclegan", preset_name)
    with torch.no_grad():  # random weights whose output lies in the PET range (tanh ~ 0.4)
        model.g_mri2pet.model[-2].bias.fill_(0.4)
    folder = out / "models" / "cyclegan"
    tensors = {k: v for k, v in model.state_dict().items() if k.startswith("g_mri2pet.")}
    sha = ckpt.save_weights(folder / ckpt.WEIGHTS, tensors)
    ckpt.write_card(folder, {
        "model": "cyclegan", "preset": preset_name, "name": "cyclegan",
        "hparams": card_hparams({k: v for k, v in hp.items() if k not in ("steps",
                                                                          "batch_size")}),
        "context_slices": 0, "scaling": SCALING, "weights_sha256": sha,
        "format_version": ckpt.CARD_FORMAT_VERSION, "config_hash": "benchmark",
        "steps_done": 0, "note": "random weights (benchmarks/gpu.py)"})
    cmd = [sys.executable, "-m", "pseudopet_bids", str(bids), str(out), "participant",
           "--model", "cyclegan", "--device", str(device), "--skip-bids-validation",
           "--omp-nthreads", str(min(os.cpu_count() or 1, 8))]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "exit": proc.returncode,
            "log_tail": (proc.stdout + proc.stderr)[-2000:]}


_RANKS = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    import torch
    sys.path.insert(0, {bench!r})
    from gpu import RandomSlices, _model
    from pseudopet_bids.train.trainer import Trainer, TrainSettings, _Distributed

    out, kind, preset_name, device = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    dist = _Distributed(device)
    model, hp = _model(kind, preset_name, seed=dist.rank)
    settings = TrainSettings(steps=4, batch_size=1, device=device, checkpoint_every=10 ** 9)
    sampler = RandomSlices(tuple(hp["grid"].shape[:2]), 1, seed=dist.rank)
    card = {{"model": kind, "preset": preset_name, "config_hash": "benchmark"}}
    Trainer(model, sampler, settings, out / "model", card, dist=dist).fit()
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    (out / f"rank{{dist.rank}}.json").write_text(json.dumps({{"digest": h.hexdigest()}}))
""")


def ranks(kind: str, preset_name: str, device: torch.device, workdir: Path) -> dict[str, Any]:
    """A 2-process training on one device; the ranks must end identical."""
    script = workdir / "ranks.py"
    script.write_text(_RANKS.format(bench=str(Path(__file__).resolve().parent)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, str(script), str(workdir), kind,
                                       preset_name, str(device)], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = [p.communicate(timeout=600)[0] for p in procs]
    digests = []
    for rank in (0, 1):
        path = workdir / f"rank{rank}.json"
        digests.append(json.loads(path.read_text())["digest"] if path.exists() else None)
    return {"identical": digests[0] is not None and digests[0] == digests[1],
            "exit": [p.returncode for p in procs], "log_tail": logs[0][-1500:]}


# --------------------------------------------------------------------------- report


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2 ** 30:.0f} GiB)"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"{torch.get_num_threads()} torch threads"


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> str:
    device = torch.device(args.device)
    sections = args.sections or (SECTIONS if device.type == "cuda" else CPU_SECTIONS)
    lines = [f"# GPU benchmark ({args.preset} preset)", "",
             f"Device: **{device_name(device)}**; torch {torch.__version__}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"`python benchmarks/gpu.py {' '.join(args.argv)}`", ""]
    optimised_compile = device.type == "cuda" and not args.no_compile
    if "train" in sections:
        lines += ["## Training (steps/s through the trainer, random slices)", "",
                  "| model | setting | batch | compiled | steps/s | slices/s | vs baseline "
                  "(slices/s) | peak GPU GB |", "|---|---|---|---|---|---|---|---|"]
        for kind in ("cyclegan", "syndiff"):
            base = train_rate(kind, args.preset, device, 1, False, args.steps)
            log(f"train {kind} baseline: {base}")
            best = train_rate(kind, args.preset, device, args.batch, optimised_compile,
                              args.steps)
            log(f"train {kind} optimised: {best}")
            for name, r in (("eager baseline", base), ("optimised", best)):
                lines.append(f"| {kind} | {name} | {r['batch']} | {r['compiled']} | "
                             f"{_f(r['steps_per_s'])} | {_f(r['slices_per_s'])} | "
                             f"{_f(r['slices_per_s'] / base['slices_per_s'], 2)}× | "
                             f"{_f(r['peak_gb'])} |")
        lines.append("")
    if "inference" in sections:
        lines += ["## Inference (seconds per model-grid volume, `translate_volume`)", "",
                  "| model | samples | compiled | precision | s / volume | peak GPU GB |",
                  "|---|---|---|---|---|---|"]
        prec = "bf16" if device.type == "cuda" else "fp32"
        cases = [("cyclegan", 1, False), ("syndiff", 1, False),
                 ("syndiff", args.samples, False)]
        if optimised_compile:
            cases.append(("syndiff", 1, True))
        for kind, n, comp in cases:
            r = inference_seconds(kind, args.preset, device, n, comp, slices=args.slices)
            log(f"inference {kind} n={n} compiled={comp}: {r['seconds']:.3f} s")
            lines.append(f"| {kind} | {n} | {comp} | {prec} | {_f(r['seconds'])} | "
                         f"{_f(r['peak_gb'])} |")
        lines.append("")
    for name, fn in (("agreement", agreement), ("drift", drift)):
        if name not in sections:
            continue
        title = ("CUDA vs CPU output agreement" if name == "agreement"
                 else "bf16 vs fp32 drift (model scale, [−1, 1])")
        lines += [f"## {title}", "", "| what | max abs | mean abs | correlation |",
                  "|---|---|---|---|"]
        for r in fn(args.preset, device):
            log(f"{name}: {r}")
            lines.append(f"| {r['what']} | {_f(r['max_abs'])} | {_f(r['mean_abs'])} | "
                         f"{_f(r['corr'], 6)} |")
        lines.append("")
    if "participant" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            r = participant(device, args.preset, Path(tmp))
        log(f"participant: {r['seconds']:.1f} s, exit {r['exit']}\n{r['log_tail']}")
        lines += ["## One whole participant (learned-model folder, command line)", "",
                  f"{_f(r['seconds'])} s, exit code {r['exit']} (simulated patient, "
                  f"`--omp-nthreads {min(os.cpu_count() or 1, 8)}`)", ""]
    if "ranks" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            r = ranks("syndiff", args.preset if device.type == "cpu" else "small", device,
                      Path(tmp))
        log(f"ranks: {r}")
        lines += ["## 2 processes on one device (SynDiff, 4 steps)", "",
                  f"ranks identical: **{r['identical']}** (exit codes {r['exit']})", ""]
    text = "\n".join(lines)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return text


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="paper", choices=["tiny", "small", "paper"])
    p.add_argument("--sections", nargs="+", choices=SECTIONS,
                   help="default: all on CUDA, train and inference on the CPU")
    p.add_argument("--batch", type=int, default=4,
                   help="slices per domain per step of the optimised training (default 4)")
    p.add_argument("--steps", type=int, default=10,
                   help="timed training steps (after as many warm-up steps)")
    p.add_argument("--samples", type=int, default=4, help="SynDiff samples (default 4)")
    p.add_argument("--slices", type=int, default=None,
                   help="slices timed per volume (default: the whole grid; scaled to it)")
    p.add_argument("--no-compile", action="store_true", help="optimised runs stay eager")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None, help="markdown file to write")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
