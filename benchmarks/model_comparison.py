"""Trained models vs the tissue baseline on simulated cohorts: training time, synthesis
quality on unseen controls, detection statistics. Writes ``docs/model_comparison.md``.

Two independent simulated cohorts are used so that nothing is evaluated on its training data:

* ``TRAIN_BIDS`` (e.g. 10 controls): ``group --train`` for each model (``--preset small``);
* ``TEST_BIDS`` (e.g. 10 controls + 10 patients): ``participant`` with ``--model tissue`` and
  with each trained model (``--model PATH``), one output folder per model and one shared work
  folder (preprocessing computed once), then ``group``.

Synthesis quality is measured on the test controls on their T1w grid inside the brain mask:
real and pseudo-normal PET are divided by the real PET's grey-matter median, scaled to [0, 1] by
``PET_MAX`` (``synthesis/modelspace.py``) and compared with SSIM (scikit-image, 3D, brain box),
PSNR and MAE.

Usage::

    pseudopet-simulate /tmp/eval/train_bids --controls 10 --seed 2026 --t1-voxel-size 1.5
    pseudopet-simulate /tmp/eval/test_bids --controls 10 --patients 10 --seed 7 \\
        --t1-voxel-size 1.5
    python benchmarks/model_comparison.py /tmp/eval --stages train test report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import run_logged  # noqa: E402
MODELS = ("cyclegan", "syndiff")


def train(base: Path, preset: str, nprocs: int, threads: int, steps: dict[str, int | None]
          ) -> dict:
    """group --train for each model on the training cohort; wall times in seconds."""
    times = {}
    for model in MODELS:
        args = ["pseudopet", str(base / "train_bids"), str(base / "train_out"), "group",
                "--train", "--model", model, "--preset", preset, "--nprocs", str(nprocs),
                "--omp-nthreads", str(threads), "--skip-bids-validation",
                "--val-every", "250"]
        if steps.get(model):
            args += ["--train-steps", str(steps[model])]
        times[model] = run_logged(args, base / "train.log")
    return times


def test(base: Path, nprocs: int) -> dict:
    """participant + group on the test cohort for tissue and each trained model."""
    times = {}
    work = base / "test_work"
    for model in ("tissue",) + MODELS:
        spec = model if model == "tissue" else str(base / "train_out" / "models" / model)
        out = base / f"test_out_{model}"
        times[model] = run_logged(["pseudopet", str(base / "test_bids"), str(out), "participant",
                             "--model", spec, "-w", str(work), "--nprocs", str(nprocs),
                             "--omp-nthreads", "1", "--skip-bids-validation"],
                            base / "test.log")
        run_logged(["pseudopet", str(base / "test_bids"), str(out), "group",
              "--skip-bids-validation"], base / "test.log")
    return times


def synthesis_quality(out: Path, participants: pd.DataFrame) -> pd.DataFrame:
    """SSIM / PSNR / MAE of pseudo-normal vs real PET on the controls (module docstring)."""
    from pseudopet_bids.evaluate.translation import volume_metrics
    from pseudopet_bids.synthesis.modelspace import PET_MAX

    rows = []
    for pid in participants.loc[participants["group"] == "control", "participant_id"]:
        pet_dir, anat = out / pid / "pet", out / pid / "anat"
        real = nib.load(next(pet_dir.glob("*_desc-preproc_pet.nii.gz"))).get_fdata()
        pseudo = nib.load(next(pet_dir.glob("*_desc-*Pseudonormal_pet.nii.gz"))).get_fdata()
        mask = np.asarray(nib.load(next(anat.glob("*_desc-brain_mask.nii.gz"))).dataobj) > 0
        gm = nib.load(next(anat.glob("*_label-GM_probseg.nii.gz"))).get_fdata() >= 0.5
        ref = float(np.median(real[gm & mask]))
        m = volume_metrics(np.clip(real / ref / PET_MAX, 0, 1) * mask,
                           np.clip(pseudo / ref / PET_MAX, 0, 1) * mask, mask)
        rows.append({"participant_id": pid, "ssim": m["ssim_brain"], "psnr": m["psnr_brain"],
                     "mae": m["mae_brain"]})
    return pd.DataFrame(rows)


def threshold_rows(base: Path, thresholds=(1.65, 1.96, 2.33)) -> list[str]:
    """Detection statistics per model and Z threshold (``benchmarks/detection.py``)."""
    from detection import subject_rows

    from pseudopet_bids.bids.participants import read_participants
    from pseudopet_bids.evaluate.group import summarize

    participants = read_participants(base / "test_bids")
    truth = base / "test_bids_truth"
    rows = []
    for model in ("tissue",) + MODELS:
        out = base / f"test_out_{model}"
        if not out.exists():
            continue
        for thr in thresholds:
            subjects = subject_rows(out, participants, truth if truth.exists() else None, thr,
                                    1500.0)
            s = summarize(subjects).set_index("measure")
            pats = subjects[subjects["group"] == "patient"]

            def k_of_n(name: str) -> str:
                return f"{int(s.loc[name, 'count'])}/{int(s.loc[name, 'n'])}"

            hits = f"{int(pats['lesion_hit'].sum())}/{len(pats)}" if truth.exists() else "n/a"
            rows.append(f"| {model} | {thr:.2f} | {k_of_n('detection_rate')} | "
                        f"{k_of_n('localization_accuracy_top')} | {hits} | "
                        f"{k_of_n('controls_with_clusters')} | "
                        f"{s.loc['false_clusters_per_control', 'value']:.2f} |")
    return rows


def report(base: Path, times: dict) -> str:
    participants = pd.read_csv(base / "test_bids" / "participants.tsv", sep="\t")
    lines = ["| model | detection rate | localization (top-ranked) | localization (any) | "
             "false clusters / control | controls with clusters | SSIM | PSNR (dB) | MAE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in ("tissue",) + MODELS:
        out = base / f"test_out_{model}"
        if not (out / "group" / "summary.tsv").exists():
            continue
        s = pd.read_csv(out / "group" / "summary.tsv", sep="\t").set_index("measure")

        def frac(m: str) -> str:
            r = s.loc[m]
            return (f"{int(r['count'])}/{int(r['n'])} ({r['value']:.2f}; "
                    f"{r['ci95_low']:.2f}–{r['ci95_high']:.2f})")

        q = synthesis_quality(out, participants)
        lines.append(f"| {model} | {frac('detection_rate')} | "
                     f"{frac('localization_accuracy_top')} | "
                     f"{frac('localization_accuracy_any')} | "
                     f"{s.loc['false_clusters_per_control', 'value']:.1f} | "
                     f"{frac('controls_with_clusters')} | {q['ssim'].mean():.3f} ± "
                     f"{q['ssim'].std():.3f} | {q['psnr'].mean():.2f} | {q['mae'].mean():.4f} |")
    lines += ["", "### Detection at other Z thresholds (clusters re-formed from the written Z-maps)",
              "", "| model | Z threshold | detection | localization (top-ranked) | lesion hit | "
              "controls with clusters | false clusters / control |",
              "|---|---|---|---|---|---|---|"]
    lines += threshold_rows(base)
    cards = {}
    for model in MODELS:
        card_path = base / "train_out" / "models" / model / "model.json"
        if card_path.exists():
            cards[model] = json.loads(card_path.read_text())
    train_lines = ["| model | preset | steps | training (s) | MRI / PET slices | "
                   "validation SSIM | validation PSNR |", "|---|---|---|---|---|---|---|"]
    for model, card in cards.items():
        v = card.get("validation", {})
        train_lines.append(f"| {model} | {card['preset']} | {card['steps_done']} | "
                           f"{card['training_seconds']:.0f} | {card['n_slices']['mri']} / "
                           f"{card['n_slices']['pet']} | {v.get('ssim', float('nan')):.3f} | "
                           f"{v.get('psnr', float('nan')):.2f} |")
    return "\n".join(["### Training (group --train, TRAIN cohort)", "",
                      *train_lines, "", "### Test cohort (participant + group)", "", *lines,
                      "", "Wall times of the commands (s): " + json.dumps(times)])


def main() -> int:
    from _machine import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="folder holding train_bids and test_bids")
    parser.add_argument("--stages", nargs="+", default=["train", "test", "report"],
                        choices=["train", "test", "report"])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--cyclegan-steps", type=int)
    parser.add_argument("--syndiff-steps", type=int)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "model_comparison.md")
    args = parser.parse_args()
    times_file = args.base / "times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    if "train" in args.stages:
        times["train"] = train(args.base, args.preset, args.nprocs, args.threads,
                               {"cyclegan": args.cyclegan_steps,
                                "syndiff": args.syndiff_steps})
        times_file.write_text(json.dumps(times))
    if "test" in args.stages:
        times["test"] = test(args.base, args.nprocs)
        times_file.write_text(json.dumps(times))
    if "report" in args.stages:
        text = report(args.base, times)
        header = (Path(args.doc).read_text().split("<!-- results -->")[0]
                  if Path(args.doc).exists() else "# Model comparison\n\n")
        machine = json.dumps(machine_info())
        Path(args.doc).write_text(header + "<!-- results -->\n" + text +
                                  f"\n\nMachine: `{machine}`\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
