"""Learned models vs the tissue baseline on simulated cohorts: training time, synthesis
quality on unseen controls, detection (FROC). Writes ``docs/model_comparison.md``.

Two independent simulated cohorts are used so that nothing is evaluated on its training data:

* ``TRAIN_BIDS`` (e.g. 12 controls): ``group --train`` for each model (``--preset small``);
* ``TEST_BIDS`` (e.g. 10 controls + 12 patients): ``participant`` for every variant of
  :data:`VARIANTS` (the tissue baseline; each learned model with and without the subject
  calibration), one output folder per variant and one shared work folder (preprocessing
  computed once), then ``group``.

Synthesis quality is measured on the test controls on their T1w grid inside the brain mask:
real and pseudo-normal PET are divided by the real PET's grey-matter median, scaled to [0, 1] by
``PET_MAX`` (``synthesis/modelspace.py``) and compared with SSIM (scikit-image, 3D, brain box),
PSNR and MAE. Detection: the group level's FROC (``group/froc.tsv``: lesion sensitivity against
false clusters per control as a threshold on the cluster mass sweeps), read at fixed
false-cluster rates and at fixed sensitivities; for SynDiff also with the uncertainty-aware Z
(``spread``: D over sqrt(sigma_GM^2 + sample variance), re-scored from the written maps).

Usage::

    pseudopet-simulate /tmp/mc/train_bids --controls 12 --seed 2026 --t1-voxel-size 1.5 \
        --difficulty ladder --uptake-pattern template
    pseudopet-simulate /tmp/mc/test_bids --controls 20 --patients 30 --seed 2027 \
        --difficulty ladder --uptake-pattern template
    python benchmarks/model_comparison.py /tmp/mc --stages train test report \
        --test-labels C01 ... C10 P01 ... P12
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import run_logged  # noqa: E402
MODELS = ("cyclegan", "syndiff")


@dataclass(frozen=True)
class Variant:
    """One participant-level configuration compared: a model and its options."""

    model: str  #: ``tissue`` or a trained model's name under TRAIN_OUT/models
    calibration: str = "none"
    title: str = ""

    def args(self, n_samples: int) -> list[str]:
        if self.model == "tissue":
            return []
        extra = ["--calibration", self.calibration]
        return extra + (["--n-samples", str(n_samples)] if self.model == "syndiff" else [])


VARIANTS = {
    "tissue": Variant("tissue", title="tissue baseline (fitted to the subject's PET)"),
    "cyclegan": Variant("cyclegan", "none", "CycleGAN"),
    "cyclegan+cal": Variant("cyclegan", "compartments", "CycleGAN, calibrated"),
    "syndiff": Variant("syndiff", "none", "SynDiff"),
    "syndiff+cal": Variant("syndiff", "compartments", "SynDiff, calibrated"),
}
#: False clusters per control at which the FROC's sensitivity is read, and sensitivities at
#: which its false-cluster rate is read.
FP_RATES = (0.1, 0.25, 0.5, 1.0)
SENSITIVITIES = (0.8, 0.9)


def train(base: Path, preset: str, nprocs: int, threads: int, steps: dict[str, int | None],
          n_samples: int) -> dict:
    """group --train for each model on the training cohort (work folder BASE/train_work, which
    ``benchmarks/syndiff_sampling.py`` reads); wall times in seconds."""
    times = {}
    for model in MODELS:
        args = ["pseudopet", str(base / "train_bids"), str(base / "train_out"), "group",
                "--train", "--model", model, "--preset", preset, "--nprocs", str(nprocs),
                "--omp-nthreads", str(threads), "--skip-bids-validation",
                "--val-every", "500", "-w", str(base / "train_work")]
        if model == "syndiff":  # validated on the mean of the samples used at inference
            args += ["--n-samples", str(n_samples)]
        if steps.get(model):
            args += ["--train-steps", str(steps[model])]
        times[model] = run_logged(args, base / "train.log")
    return times


def model_spec(base: Path, model: str, source: str | None) -> str:
    """``--model`` of a variant: ``tissue``, or the trained folder (for SynDiff with another
    inference ``source`` than its card's: a copy whose card says so, same weights)."""
    if model == "tissue":
        return model
    folder = base / "train_out" / "models" / model
    card = json.loads((folder / "model.json").read_text())
    if model != "syndiff" or source is None or card["hparams"].get("source", "real") == source:
        return str(folder)
    copy = base / f"models_source-{source}" / model
    if not copy.exists():
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("state", "logs"))
        card["hparams"]["source"] = source
        (copy / "model.json").write_text(json.dumps(card, indent=2, sort_keys=True))
    return str(copy)


def test(base: Path, variants: list[str], nprocs: int, labels: list[str], n_samples: int,
         source: str | None, work: Path) -> dict:
    """participant + group on the test cohort for each variant; wall seconds."""
    times = {}
    for name in variants:
        v = VARIANTS[name]
        out = base / f"test_out_{name}"
        label_args = ["--participant-label", *labels] if labels else []
        times[name] = run_logged(["pseudopet", str(base / "test_bids"), str(out), "participant",
                                  "--model", model_spec(base, v.model, source), "-w", str(work),
                                  "--nprocs", str(nprocs), "--omp-nthreads", "1",
                                  "--skip-bids-validation", *v.args(n_samples), *label_args],
                                 base / "test.log")
        run_logged(["pseudopet", str(base / "test_bids"), str(out), "group",
                    "--skip-bids-validation", *label_args], base / "test.log")
    return times


def smooth_in_mask(volume: np.ndarray, mask: np.ndarray, fwhm_mm: float,
                   voxel_sizes: tuple[float, ...]) -> np.ndarray:
    """``volume`` smoothed with an isotropic Gaussian of ``fwhm_mm`` inside ``mask``
    (:func:`pseudopet_bids.detect.normative.smooth_within`), 0 outside."""
    from pseudopet_bids.detect.normative import smooth_within

    if fwhm_mm <= 0:
        return volume
    return smooth_within(volume, mask, [fwhm_mm / v for v in voxel_sizes])


def synthesis_quality(out: Path, participants: pd.DataFrame,
                      extra_fwhm_mm: float = 0.0) -> pd.DataFrame:
    """SSIM / PSNR / MAE of pseudo-normal vs real PET on the controls (module docstring);
    ``extra_fwhm_mm``: smooth the pseudo-normal PET first (:func:`smooth_in_mask`)."""
    from pseudopet_bids.evaluate.translation import volume_metrics
    from pseudopet_bids.synthesis.modelspace import PET_MAX

    rows = []
    for pid in participants.loc[participants["group"] == "control", "participant_id"]:
        pet_dir, anat = out / pid / "pet", out / pid / "anat"
        real = nib.load(next(pet_dir.glob("*_desc-preproc_pet.nii.gz"))).get_fdata()
        pseudo_img = nib.load(next(pet_dir.glob("*_desc-*Pseudonormal_pet.nii.gz")))
        mask = np.asarray(nib.load(next(anat.glob("*_desc-brain_mask.nii.gz"))).dataobj) > 0
        pseudo = smooth_in_mask(pseudo_img.get_fdata(), mask, extra_fwhm_mm,
                                tuple(float(z) for z in pseudo_img.header.get_zooms()[:3]))
        gm = nib.load(next(anat.glob("*_label-GM_probseg.nii.gz"))).get_fdata() >= 0.5
        ref = float(np.median(real[gm & mask]))
        m = volume_metrics(np.clip(real / ref / PET_MAX, 0, 1) * mask,
                           np.clip(pseudo / ref / PET_MAX, 0, 1) * mask, mask)
        rows.append({"participant_id": pid, "ssim": m["ssim_brain"], "psnr": m["psnr_brain"],
                     "mae": m["mae_brain"]})
    return pd.DataFrame(rows)


def spread_clusters(out: Path, label: str) -> pd.DataFrame:
    """Clusters of the uncertainty-aware Z, re-scored from a stochastic model's written maps.

    ``Z = (D − mean_GM D) / sqrt(std_GM(D)² + s²)`` with ``s`` the voxel-wise SD of the
    averaged samples (``desc-<model>Pseudonormalsd_pet``), over the same search region (where
    the written Z is not 0) and with the same cluster thresholds as the paper's rule.
    """
    from pseudopet_bids.bids import derivatives as der
    from pseudopet_bids.config import RunConfig
    from pseudopet_bids.detect.calibration import cluster_masses
    from pseudopet_bids.detect.clusters import find_clusters
    from pseudopet_bids.detect.regions import cluster_table
    from pseudopet_bids.detect.zmap import zmap

    det = RunConfig().detection
    rows = []
    for pseudo_file, found in der.labelled_outputs(out, "pseudonormal"):
        if found != label:
            continue
        paths = der.SubjectPaths.of(out, pseudo_file)
        sd_file = paths.pseudonormal(label, sd=True)
        if not sd_file.exists():
            raise SystemExit(f"{sd_file}: no SD map (run SynDiff with --n-samples > 1)")
        zimg = nib.load(paths.zmap(label))
        z0 = np.asarray(zimg.dataobj, np.float32)
        search = z0 != 0
        load = (lambda f: np.asarray(nib.load(f).dataobj, np.float64))
        diff = load(paths.pet("space-T1w_desc-preproc_pet.nii.gz")) - load(pseudo_file)
        z = zmap(diff, search, load(sd_file))  # what --z-reference spread computes
        voxel = float(np.prod(zimg.header.get_zooms()[:3]))
        labels, clusters = find_clusters(z, search, voxel, threshold=det.z_threshold,
                                         min_volume_mm3=det.cluster_min_volume,
                                         connectivity=det.connectivity)
        lobes = np.asarray(nib.load(paths.anat("desc-lobes_dseg.nii.gz")).dataobj, np.int16)
        table = cluster_table(z, labels, clusters, lobes, zimg.affine, None)
        table["z_mass"] = cluster_masses(z, labels, len(clusters), det.z_threshold, voxel)
        table["participant_id"] = f"sub-{paths.subject}"
        rows.append(table)
    frame = pd.concat(rows, ignore_index=True)
    return frame.assign(analysis=f"{label}Spread", session="n/a")


def froc_rows(name: str, froc: pd.DataFrame) -> dict[str, str]:
    """The FROC of one analysis read at :data:`FP_RATES` and :data:`SENSITIVITIES`."""
    curve = froc[froc["on_curve"].astype(str).isin(("True", "true", "1"))]
    row = {"variant": name}
    for rate in FP_RATES:
        ok = curve[curve["false_clusters_per_control"] <= rate + 1e-9]
        best = ok.sort_values("sensitivity").iloc[-1] if len(ok) else None
        row[f"sens@{rate:g}"] = ("0" if best is None else
                                 f"{int(best['patients_hit'])}/{int(best['n_patients'])}")
    for target in SENSITIVITIES:
        ok = curve[curve["sensitivity"] >= target - 1e-9]
        row[f"fp@{target:g}"] = (f"{ok['false_clusters_per_control'].min():.2f}" if len(ok)
                                 else "not reached")
    return row


def froc_table(base: Path, variants: list[str]) -> list[str]:
    """FROC read-outs per variant (paper's rule), plus SynDiff's uncertainty-aware Z."""
    from pseudopet_bids.evaluate.group import froc

    rows = []
    for name in variants:
        group = base / f"test_out_{name}" / "group"
        if not (group / "froc.tsv").exists():
            continue
        table = pd.read_csv(group / "froc.tsv", sep="\t")
        table = table[table["z_reference"] == "subject"]
        rows.append(froc_rows(name, table))
        out = base / f"test_out_{name}"
        if VARIANTS[name].model == "syndiff" and any(out.rglob("*Pseudonormalsd_pet.nii.gz")):
            label = str(table["analysis"].iloc[0])
            subjects = pd.read_csv(group / "subjects.tsv", sep="\t", dtype={"session": str})
            subjects = subjects[subjects["analysis"] == label]
            clusters = spread_clusters(out, label)
            spread = froc(clusters, subjects.assign(analysis=f"{label}Spread", session="n/a"))
            rows.append(froc_rows(f"{name}, uncertainty-aware Z", spread))
    head = ["variant", *(f"sensitivity at ≤ {r:g} false / control" for r in FP_RATES),
            *(f"false / control at sensitivity ≥ {t:g}" for t in SENSITIVITIES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(v) for v in r.values()) + " |")
    return lines


def report(base: Path, variants: list[str], times: dict) -> str:
    participants = pd.read_csv(base / "test_bids" / "participants.tsv", sep="\t")
    lines = ["| variant | detection rate | localization (top-ranked) | false clusters / "
             "control | controls with clusters | SSIM | PSNR (dB) | MAE |",
             "|---|---|---|---|---|---|---|---|"]
    for name in variants:
        out = base / f"test_out_{name}"
        if not (out / "group" / "summary.tsv").exists():
            continue
        s = pd.read_csv(out / "group" / "summary.tsv", sep="\t")
        s = s[s["z_reference"] == "subject"].set_index("measure") if "z_reference" in s \
            else s.set_index("measure")

        def frac(m: str) -> str:
            r = s.loc[m]
            return (f"{int(r['count'])}/{int(r['n'])} ({r['value']:.2f}; "
                    f"{r['ci95_low']:.2f}–{r['ci95_high']:.2f})")

        tested = participants[participants["participant_id"].isin(
            [p.name for p in out.glob("sub-*") if p.is_dir()])]
        q = synthesis_quality(out, tested)
        lines.append(f"| {name} | {frac('detection_rate')} | "
                     f"{frac('localization_accuracy_top')} | "
                     f"{s.loc['false_clusters_per_control', 'value']:.2f} | "
                     f"{frac('controls_with_clusters')} | {q['ssim'].mean():.3f} ± "
                     f"{q['ssim'].std():.3f} | {q['psnr'].mean():.2f} | {q['mae'].mean():.4f} |")
    cards = {}
    for model in MODELS:
        card_path = base / "train_out" / "models" / model / "model.json"
        if card_path.exists():
            cards[model] = json.loads(card_path.read_text())
    train_lines = ["| model | preset | steps | training (min) | MRI / PET slices | "
                   "validation SSIM | validation PSNR |", "|---|---|---|---|---|---|---|"]
    for model, card in cards.items():
        v = card.get("validation", {})
        train_lines.append(f"| {model} | {card['preset']} | {card['steps_done']} | "
                           f"{card['training_seconds'] / 60:.1f} | {card['n_slices']['mri']} / "
                           f"{card['n_slices']['pet']} | {v.get('ssim', float('nan')):.3f} | "
                           f"{v.get('psnr', float('nan')):.2f} |")
    return "\n".join(["### Training (group --train, TRAIN cohort)", "",
                      *train_lines, "", "### Test cohort: synthesis and detection at the "
                      "defaults (Z < −1.65, ≥ 1500 mm³, paper's rule)", "", *lines, "",
                      "### Test cohort: FROC (cluster mass swept; lesion hit = a kept cluster "
                      "in a focus lobe)", "", *froc_table(base, variants), "",
                      "Wall times of the commands (s): " + json.dumps(times)])


def main() -> int:
    from _machine import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="folder holding train_bids and test_bids")
    parser.add_argument("--stages", nargs="+", default=["train", "test", "report"],
                        choices=["train", "test", "report"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--preset", default="small")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--cyclegan-steps", type=int)
    parser.add_argument("--syndiff-steps", type=int)
    parser.add_argument("--n-samples", type=int, default=4, help="SynDiff samples averaged")
    parser.add_argument("--syndiff-source", choices=["real", "cycle"],
                        help="SynDiff inference source (default: the model card's)")
    parser.add_argument("--test-labels", nargs="*", default=[],
                        help="test participants (default: all)")
    parser.add_argument("--test-work", type=Path, help="work folder of the test cohort "
                        "(default: BASE/test_work; reuse one with the preprocessing cached)")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "model_comparison.md")
    args = parser.parse_args()
    times_file = args.base / "times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    if "train" in args.stages:
        times["train"] = train(args.base, args.preset, args.nprocs, args.threads,
                               {"cyclegan": args.cyclegan_steps,
                                "syndiff": args.syndiff_steps}, args.n_samples)
        times_file.write_text(json.dumps(times))
    if "test" in args.stages:
        times.setdefault("test", {}).update(test(
            args.base, args.variants, args.nprocs, args.test_labels, args.n_samples,
            args.syndiff_source, args.test_work or args.base / "test_work"))
        times_file.write_text(json.dumps(times))
    if "report" in args.stages:
        text = report(args.base, args.variants, times)
        header = (Path(args.doc).read_text().split("<!-- results -->")[0]
                  if Path(args.doc).exists() else "# Model comparison\n\n")
        machine = json.dumps(machine_info())
        Path(args.doc).write_text(header + "<!-- results -->\n" + text +
                                  f"\n\nMachine: `{machine}`\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
