"""SynDiff at inference: what the diffusive generator is conditioned on, and how many samples
are averaged. Writes ``docs/syndiff_sampling.md``.

In training, SynDiff's PET generator is conditioned on the non-diffusive module's T1w
*estimate made from a real PET*; at inference the paper conditions it on the real T1w. This
benchmark measures whether that mismatch matters: on the held-out validation controls of a
trained model (paired, on the model grid, as ``group --train`` validates), it translates each
T1w with the generator conditioned on

* ``real``: the T1w itself (Özbey et al. 2023), and
* ``cycle``: the T1w taken through the non-diffusive module and back (T1w → PET → T1w), an
  image of the kind the generator was trained on,

for 1, 4 and 8 averaged samples, and reports SSIM / PSNR / MAE against the real PET (the
validation metrics of ``model.json``) and the inference time per control. It also scores the
non-diffusive module's own prediction (``nd``: the CycleGAN-like generator T1w → PET), which
conditions nothing at inference but shows how mature the module is.

Usage, after ``pseudopet TRAIN OUT group --train --model syndiff -w WORK``::

    python benchmarks/syndiff_sampling.py OUT/models/syndiff WORK
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402

from pseudopet_bids.models import checkpoint as ckpt  # noqa: E402
from pseudopet_bids.models.presets import hparams_from_card  # noqa: E402
from pseudopet_bids.models.registry import build_model  # noqa: E402
from pseudopet_bids.synthesis.apply import TrainedModel, translate_volume  # noqa: E402
from pseudopet_bids.workflows.training import paired_metrics  # noqa: E402

SAMPLES = (1, 4, 8)


def validation_volumes(card: dict, work: Path) -> list[dict[str, np.ndarray]]:
    """The model-grid arrays of the card's validation controls, from the training cache."""
    found = []
    for key in card["training_subjects"]["validation"]:
        cached = sorted((work / key).glob("modelgrid-*.npz"))
        if not cached:
            raise SystemExit(f"{work / key}: no model-grid cache; pass the training's -w folder")
        with np.load(cached[0], allow_pickle=False) as z:
            found.append({k: z[k] for k in ("mri", "mask", "pet")})
    return found


class _NonDiffusive(torch.nn.Module):
    """The non-diffusive module's T1w → PET generator, as a deterministic model."""

    stochastic = False

    def __init__(self, generator: torch.nn.Module):
        super().__init__()
        self.generator = generator

    @torch.no_grad()
    def translate(self, mri: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        return self.generator(mri).clamp(-1.0, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="a trained SynDiff folder (models/NAME)")
    parser.add_argument("work_dir", type=Path, help="the training's work folder (-w)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "syndiff_sampling.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    card, tensors = ckpt.load_model_dir(args.model_dir, "cpu")
    if card["model"] != "syndiff":
        raise SystemExit(f"{args.model_dir}: a {card['model']} model, not SynDiff")
    missing = {"gen_nd_mri2pet", "gen_nd_pet2mri"} - {k.split(".")[0] for k in tensors}
    if missing:
        raise SystemExit(f"{args.model_dir}: the weights lack {sorted(missing)} (trained by an "
                         "earlier release); retrain to compare the sources")
    context = int(card["context_slices"])
    vols = validation_volumes(card, args.work_dir)
    device = torch.device("cpu")
    rows = []
    for source in ("real", "cycle", "nd"):
        hp = {**hparams_from_card(card["hparams"]), "source": "real" if source == "nd"
              else source}
        model = build_model("syndiff", hp, 2 * context + 1)
        model.load_state_dict(tensors, strict=False)
        model.eval()
        runner = _NonDiffusive(model.gen_nd_mri2pet).eval() if source == "nd" else model
        for n in (1,) if source == "nd" else SAMPLES:
            trained = TrainedModel(runner, card, args.model_dir, hp["grid"], context)  # type: ignore[arg-type]
            t0 = time.monotonic()
            metrics = []
            for v in vols:
                pred, _ = translate_volume(trained, v["mri"], v["mask"], device, n, args.seed)
                metrics.append(paired_metrics(v["pet"], pred, v["mask"]))
            seconds = (time.monotonic() - t0) / len(vols)
            row = {"source": source, "samples": n, "seconds_per_control": round(seconds, 1),
                   **{k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = machine_info()
    lines = ["# SynDiff inference: conditioning source and averaged samples", "",
             f"Generated by `python benchmarks/syndiff_sampling.py` on "
             f"{time.strftime('%Y-%m-%d')} ({machine['cpu']}, {args.threads} threads) for "
             f"`{card.get('name')}` ({card.get('preset')} preset, {card.get('steps_done')} "
             f"steps, {card.get('training_seconds', 0) / 60:.0f} min of training), on its "
             f"{len(vols)} held-out validation controls "
             f"({', '.join(card['training_subjects']['validation'])}); metrics as the model "
             "card's validation (model grid, real PET vs prediction on [0, 1]).", "",
             "| conditioned on | samples averaged | SSIM | PSNR (dB) | MAE | s / control |",
             "|---|---|---|---|---|---|"]
    names = {"real": "real T1w (paper)", "cycle": "cycled T1w (T1w → PET → T1w)",
             "nd": "— (non-diffusive module's own T1w → PET)"}
    for r in rows:
        lines.append(f"| {names[r['source']]} | {r['samples']} | {r['ssim']:.4f} | "
                     f"{r['psnr']:.2f} | {r['mae']:.4f} | {r['seconds_per_control']} |")
    lines += ["", f"Machine: `{json.dumps(machine)}`", ""]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
