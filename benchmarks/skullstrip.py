"""Benchmark of the preprocessing steps on simulated heads; writes ``docs/skullstrip.md``.

Part 1 compares the two brain-mask methods (``deepbet``, ``template``) on raw simulated heads
(Dice against the truth, brain coverage, time). Part 2 runs the rest of ``preproc/`` (T1w →
template SyN, atlas/prior warps, N4 + tissue mixture, PET → T1w rigid, PET resampling) on the
same subjects with the default mask and reports accuracy and time per step. Part 3 is a real-head
sanity check on Colin27 (Debian ``mricron-data``: ``/usr/share/mricron/templates/ch2.nii.gz``)
when it is installed.

Each subject's preprocessing runs in a fresh process so that its time includes model loading and
its peak RSS is its own. Usage::

    python benchmarks/skullstrip.py --n 3 --seed 7 --omp-nthreads 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
COLIN_BET = Path("/usr/share/mricron/templates/ch2bet.nii.gz")


def _ras(img: nib.Nifti1Image, dtype=np.float32) -> nib.Nifti1Image:
    img = nib.as_closest_canonical(img)
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=dtype), img.affine)


def simulate(index: int, seed: int, t1_mm: float, folder: Path) -> None:
    """Render one simulated control and its truth maps into ``folder`` (RAS images)."""
    from pseudopet_bids import resources
    from pseudopet_bids.simulate import phantom, subject

    head = phantom.head_model(1.0 if t1_mm < 2 else 2.0)
    spec = subject.draw_subject(f"sub-C{index:02d}", "control", index, seed, head, t1_mm, 2.0)
    images = subject.render_subject(spec, head)
    taff = resources.load_template("mask").affine
    # truth: template maps pulled through the subject's own pose + warp
    maps = [phantom._onto(resources.load_template(k).get_fdata(dtype=np.float32), taff,
                          head.fine.grid) for k in ("mask", "GM", "WM")]
    maps.append((head.fine.cavity_depth < phantom.CAVITY_MARGIN_MM).astype(np.float32))
    pulled = phantom.render(head.fine, np.stack(maps), spec.t1_grid, spec.warp)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(_ras(images.t1), folder / "t1.nii.gz")
    nib.save(_ras(images.pet), folder / "pet.nii.gz")
    for name, vol in zip(("brain", "GM", "WM", "cavity"), pulled):
        nib.save(_ras(nib.Nifti1Image(vol, spec.t1_grid.affine)), folder / f"truth_{name}.nii.gz")
    ijk = np.argwhere(np.asarray(_ras(nib.Nifti1Image(pulled[0], spec.t1_grid.affine)).dataobj)
                      >= 0.5)[::997]
    t1 = nib.load(folder / "t1.nii.gz")
    xyz = nib.affines.apply_affine(t1.affine, ijk)
    np.savez(folder / "truth.npz", t1_to_pet=np.linalg.inv(spec.pet_to_mr), points=xyz,
             points_template=spec.warp.to_template(xyz))


def _dice(a, b) -> float:
    from pseudopet_bids.preproc._ants import dice

    return dice(a, b)


def _clock():
    return time.perf_counter(), time.process_time()


def _since(t):
    return round(time.perf_counter() - t[0], 2), round(time.process_time() - t[1], 2)


def run_subject(folder: str, omp_nthreads: int, queue) -> None:
    """All preprocessing steps on one simulated subject (in a child process)."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(omp_nthreads)
    from pseudopet_bids import resources
    from pseudopet_bids.preproc.brainmask import brain_mask
    from pseudopet_bids.preproc.coregister import coregister_pet_to_t1, resample_pet_to_t1
    from pseudopet_bids.preproc.segment import segment_tissues
    from pseudopet_bids.preproc.template_reg import register_t1_to_template

    folder = Path(folder)
    t1, pet = nib.load(folder / "t1.nii.gz"), nib.load(folder / "pet.nii.gz")
    t1 = nib.Nifti1Image(np.asarray(t1.dataobj, dtype=np.float32), t1.affine)
    pet = nib.Nifti1Image(np.asarray(pet.dataobj, dtype=np.float32), pet.affine)
    truth = {k: np.asarray(nib.load(folder / f"truth_{k}.nii.gz").dataobj)
             for k in ("brain", "GM", "WM", "cavity")}
    tz = np.load(folder / "truth.npz")
    brain, cavity = truth["brain"] >= 0.5, truth["cavity"] >= 0.5
    tissue = (truth["GM"] + truth["WM"]) >= 0.5
    out: dict = {"shape": list(t1.shape)}
    masks = {}
    for method in ("deepbet", "template"):
        t = _clock()
        m = np.asarray(brain_mask(t1, method, omp_nthreads).dataobj) > 0
        masks[method] = m
        out[f"mask_{method}"] = {"time": _since(t), "dice_brain": _dice(m, brain),
                                 "dice_cavity": _dice(m, cavity),
                                 "coverage": float((m & tissue).sum() / tissue.sum()),
                                 "volume_ml": float(m.sum() * np.prod(t1.header.get_zooms()) / 1e3)}
    mask_img = nib.Nifti1Image(masks["deepbet"].astype(np.uint8), t1.affine)
    with tempfile.TemporaryDirectory() as work:
        t = _clock()
        reg = register_t1_to_template(t1, mask_img, Path(work), seed=0, omp_nthreads=omp_nthreads)
        out["syn"] = {"time": _since(t)}
        t = _clock()
        lobes = reg.to_t1(resources.load_lobe_atlas(), "nearest")
        reg.to_t1(resources.load_aal(), "nearest")
        priors = {k: reg.to_t1(resources.load_template(k), "linear") for k in ("GM", "WM", "CSF")}
        out["atlas_to_t1"] = {"time": _since(t), "n_images": 5}
        warped_gm = np.asarray(priors["GM"].dataobj) >= 0.5
        out["syn"]["dice_gm_warped_template"] = _dice(warped_gm, truth["GM"] >= 0.5)
        err = np.linalg.norm(reg.points_to_template(tz["points"]) - tz["points_template"], axis=1)
        out["syn"]["points_err_mm"] = [float(err.mean()), float(np.percentile(err, 95))]
        del lobes
        t = _clock()
        reg.write(Path(work) / "fwd.nii.gz", Path(work) / "inv.nii.gz")
        out["write_xfm"] = {"time": _since(t),
                            "mb": [round((Path(work) / f).stat().st_size / 1e6, 1)
                                   for f in ("fwd.nii.gz", "inv.nii.gz")]}
    t = _clock()
    tissues = segment_tissues(t1, mask_img, seed=0, priors=priors, omp_nthreads=omp_nthreads)
    out["segment"] = {"time": _since(t)}
    probs = np.stack([np.asarray(tissues[k].dataobj) for k in ("GM", "WM", "CSF")])
    t_gm, t_wm = truth["GM"], truth["WM"]
    t_lab = np.argmax(np.stack([t_gm, t_wm, np.clip(1 - t_gm - t_wm, 0, 1)]), 0)
    lab = np.argmax(probs, 0)
    m = masks["deepbet"] & brain
    out["segment"]["dice_gm"] = _dice((lab == 0) & m, (t_lab == 0) & m)
    out["segment"]["dice_wm"] = _dice((lab == 1) & m, (t_lab == 1) & m)
    out["segment"]["dice_gm_p05"] = _dice(probs[0] >= 0.5, t_gm >= 0.5)
    t = _clock()
    tissues_np = segment_tissues(t1, mask_img, seed=0, priors=None, omp_nthreads=omp_nthreads)
    out["segment_nopriors"] = {"time": _since(t), "dice_gm": _dice(
        (np.asarray(tissues_np["GM"].dataobj) >= 0.5), t_gm >= 0.5)}
    t = _clock()
    res = coregister_pet_to_t1(pet, t1, mask_img, seed=0, omp_nthreads=omp_nthreads)
    out["coreg"] = {"time": _since(t)}
    pts = tz["points"]
    h = np.c_[pts, np.ones(len(pts))].T
    disp = np.linalg.norm((res.t1_to_pet @ h - tz["t1_to_pet"] @ h)[:3], axis=0)
    from scipy.spatial.transform import Rotation

    rel = np.linalg.inv(tz["t1_to_pet"]) @ res.t1_to_pet
    true_motion = tz["t1_to_pet"]
    out["coreg"].update({
        "err_mean_mm": float(disp.mean()), "err_max_mm": float(disp.max()),
        "err_rot_deg": float(np.degrees(Rotation.from_matrix(rel[:3, :3]).magnitude())),
        "header_rot_deg": float(np.degrees(Rotation.from_matrix(true_motion[:3, :3]).magnitude())),
        "header_shift_mm": float(np.linalg.norm(true_motion[:3, 3]))})
    t = _clock()
    resample_pet_to_t1(pet, t1, res)
    out["resample_pet"] = {"time": _since(t)}
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    queue.put(out)


def run_colin(omp_nthreads: int, figure: str | None, queue) -> None:
    """Both mask methods on the real Colin27 head, vs the BET mask shipped beside it."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(omp_nthreads)
    from pseudopet_bids.preproc.brainmask import brain_mask

    t1 = _ras(nib.load(COLIN))
    bet = np.asarray(_ras(nib.load(COLIN_BET)).dataobj) > 0
    out, masks = {}, {}
    for method in ("deepbet", "template"):
        t = _clock()
        m = np.asarray(brain_mask(t1, method, omp_nthreads).dataobj) > 0
        masks[method] = m
        out[method] = {"time": _since(t), "dice_vs_bet": _dice(m, bet),
                       "volume_ml": float(m.sum() / 1e3),
                       "bet_covered": float((m & bet).sum() / bet.sum()),
                       "bet_missed_ml": float((bet & ~m).sum() / 1e3)}
    out["bet_volume_ml"] = float(bet.sum() / 1e3)
    if figure:
        _colin_figure(np.asarray(t1.dataobj), bet, masks, Path(figure))
    queue.put(out)


def _colin_figure(t1: np.ndarray, bet: np.ndarray, masks: dict, path: Path) -> None:
    """Three sagittal slices with the BET (red), deepbet (cyan) and template (yellow) outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5))
    for ax, x in zip(axes, (60, 90, 120)):
        ax.imshow(np.rot90(t1[x]), cmap="gray")
        for m, colour in ((bet, "r"), (masks["deepbet"], "c"), (masks["template"], "y")):
            ax.contour(np.rot90(m[x].astype(float)), [0.5], colors=colour, linewidths=1.0)
        ax.set_title(f"Colin27 sagittal x = {x}: BET red, deepbet cyan, template yellow",
                     fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def _in_child(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def machine() -> dict:
    import ants

    return {**machine_info(), "antspyx": ants.__version__}


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def report(results: list[dict], colin: dict | None, info: dict, args) -> str:
    n = len(results)

    def mean(key, sub, idx=None):
        vals = [r[key][sub] if idx is None else r[key][sub][idx] for r in results]
        return float(np.mean(vals)), float(np.min(vals)), float(np.max(vals))

    lines = ["# Skull stripping and preprocessing benchmark", "",
             f"Generated by `python benchmarks/skullstrip.py --n {args.n} --seed {args.seed} "
             f"--omp-nthreads {args.omp_nthreads}` on {time.strftime('%Y-%m-%d')}.", "",
             "## Machine", "",
             f"- CPU: {info['cpu']}, {info['cores']} cores visible, {info['memory_gib']} GiB",
             f"- Python {info['python']}, torch {info['torch']} (CPU), antspyx {info['antspyx']}",
             f"- threads per step: {args.omp_nthreads} (torch and ITK)",
             f"- load average at start / end: {info['load_avg_start'][0]:.2f} / "
             f"{info['load_avg_end'][0]:.2f} (the machine was shared; wall times are upper "
             "bounds, CPU seconds are given beside them)", "",
             "## Data", "",
             f"{n} simulated controls from `pseudopet_bids.simulate` (seed {args.seed}; T1w "
             f"{args.t1_mm:g} mm, {results[0]['shape']} voxels after reorientation to RAS; raw "
             "heads with scalp, skull, marrow, face, eyes and neck; random pose ±6°, "
             "scale ±6 %, "
             "smooth 2–4 mm warp, bias field, Rician noise; PET 2 mm with a header "
             "disagreement of up to 5° / 10 mm). Truth maps are the template maps pulled "
             "through each subject's own pose and warp.", "",
             "- `brain` truth: the template brain mask (brain + sulcal/ventricular CSF, tight at "
             "the surface).",
             "- `cavity` truth: the simulator's cranial cavity (inner table of the skull).",
             "- coverage: fraction of true brain tissue (GM+WM ≥ 0.5) inside the mask — a "
             "missed piece of cortex is worse than extra CSF.", "",
             "## 1. Brain mask", "",
             "| method | Dice vs brain | Dice vs cavity | coverage | volume (ml) | "
             "wall s (CPU s) |", "|---|---|---|---|---|---|"]
    for method in ("deepbet", "template"):
        key = f"mask_{method}"
        d, c, cov = mean(key, "dice_brain"), mean(key, "dice_cavity"), mean(key, "coverage")
        vol = mean(key, "volume_ml")
        wall, cpu = mean(key, "time", 0), mean(key, "time", 1)
        lines.append(f"| {method} | {d[0]:.4f} ({d[1]:.4f}–{d[2]:.4f}) | {c[0]:.4f} | "
                     f"{cov[0]:.4f} | {vol[0]:.0f} | {wall[0]:.1f} ({cpu[0]:.1f}) |")
    lines += ["", "Per subject:", "", "| subject | method | Dice brain | Dice cavity | "
              "coverage | wall s |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        for method in ("deepbet", "template"):
            k = r[f"mask_{method}"]
            lines.append(f"| {i} | {method} | {k['dice_brain']:.4f} | {k['dice_cavity']:.4f} |"
                         f" {k['coverage']:.4f} | {k['time'][0]} |")
    if colin:
        lines += ["", "### Real head: Colin27", "",
                  "Colin27 (`ch2.nii.gz` of Debian `mricron-data`, 1 mm, a real head with scalp "
                  "and skull). There is no ground truth; the reference is the BET mask shipped "
                  f"beside it (`ch2bet.nii.gz`, {colin['bet_volume_ml']:.0f} ml), which itself "
                  "leaves the CSF out and has a few non-brain streaks.", "",
                  "| method | Dice vs BET | BET voxels covered | BET missed (ml) | volume (ml) | "
                  "wall s |", "|---|---|---|---|---|---|"]
        for method in ("deepbet", "template"):
            c = colin[method]
            lines.append(f"| {method} | {c['dice_vs_bet']:.4f} | {c['bet_covered']:.4f} | "
                         f"{c['bet_missed_ml']:.1f} | {c['volume_ml']:.0f} | {c['time'][0]} |")
        lines += ["", "![Colin27 masks](skullstrip_colin.png)", "",
                  "The template mask is closer to BET's tight outline (higher Dice) but cuts "
                  "into the cortex along the interhemispheric fissure and around the brainstem; "
                  "deepbet follows the inner table of the skull (brain + extracerebral CSF) and "
                  "misses less of the brain BET found."]
    lines += ["", "## 2. Other preprocessing steps (deepbet mask)", "",
              "| step | wall s (CPU s), mean of subjects | accuracy |", "|---|---|---|"]

    def row(name, key, acc):
        w, c = mean(key, "time", 0), mean(key, "time", 1)
        lines.append(f"| {name} | {w[0]:.1f} ({c[0]:.1f}) | {acc} |")

    g = mean("syn", "dice_gm_warped_template")
    p = mean("syn", "points_err_mm", 0)
    p95 = mean("syn", "points_err_mm", 1)
    row("T1w → template (affine + SyN at 2 mm)", "syn",
        f"GM Dice of the warped template GM vs truth {g[0]:.3f}; T1w→template point error "
        f"{p[0]:.2f} mm mean, {p95[0]:.2f} mm p95")
    row("template → T1w: lobes, AAL, GM/WM/CSF priors (5 images)", "atlas_to_t1", "")
    mb = results[0]["write_xfm"]["mb"]
    row("write both displacement fields", "write_xfm", f"{mb[0]} MB + {mb[1]} MB")
    s, swm = mean("segment", "dice_gm"), mean("segment", "dice_wm")
    s5 = mean("segment", "dice_gm_p05")
    row("N4 + tissue mixture with priors", "segment",
        f"GM Dice {s[0]:.3f} ({s[1]:.3f}–{s[2]:.3f}) hard labels in the brain; "
        f"GM≥0.5 Dice {s5[0]:.3f}; WM Dice {swm[0]:.3f}")
    s0 = mean("segment_nopriors", "dice_gm")
    row("(same without priors)", "segment_nopriors", f"GM≥0.5 Dice {s0[0]:.3f}")
    e, emax = mean("coreg", "err_mean_mm"), mean("coreg", "err_max_mm")
    er = mean("coreg", "err_rot_deg")
    hr, hs = mean("coreg", "header_rot_deg"), mean("coreg", "header_shift_mm")
    row("PET → T1w rigid (Mattes MI, 2 mm)", "coreg",
        f"error over brain points {e[0]:.2f} mm mean, {emax[2]:.2f} mm worst, rotation "
        f"{er[0]:.2f}° (worst {er[2]:.2f}°); header disagreement {hr[0]:.1f}° / "
        f"{hs[0]:.1f} mm mean")
    row("PET resampling onto the T1w grid (linear)", "resample_pet", "")
    total = [sum(r[k]["time"][0] for k in ("mask_deepbet", "syn", "atlas_to_t1", "segment",
                                           "coreg", "resample_pet")) for r in results]
    rss = [r["peak_rss_gb"] for r in results]
    lines += ["", f"Sum of the pipeline's steps (deepbet mask, SyN, atlas warps, segmentation, "
              f"coregistration, resampling; without transform writing): {np.mean(total):.1f} s "
              f"wall on average (max {np.max(total):.1f} s). Peak RSS of the process that ran "
              f"both mask methods and all steps: {np.max(rss):.2f} GB.", ""]
    lines += ["## Choice", "",
              "Default: **deepbet**.",
              "",
              "- Both methods keep all true brain tissue on the simulated heads (coverage 1.000).",
              "- The template method wins on Dice against the `brain` truth, but that truth is "
              "the template mask pulled through a warp, so a template-registration method is "
              "favoured by construction; against the cranial cavity deepbet wins.",
              "- On the real Colin27 head the template mask misses cortex at the midline "
              "(figure); deepbet does not. deepbet was trained on thousands of real scans; the "
              "template method has only been checked here, and it needed a rigid stage before "
              "the affine to stop failing on one phantom.",
              "- deepbet is faster and independent of the registration that follows.",
              "",
              "Its extra extracerebral CSF is harmless downstream: the tissue segmentation "
              "labels it CSF and only GM enters the z-maps. `template` stays available "
              "(`brain_mask(..., method='template')`) for heads on which deepbet fails.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="simulated subjects")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--t1-mm", type=float, default=1.0)
    parser.add_argument("--omp-nthreads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "skullstrip.md")
    parser.add_argument("--json", type=Path, default=None, help="also dump raw numbers")
    args = parser.parse_args(argv)
    info = machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="ssbench") as tmp:
        for i in range(1, args.n + 1):
            folder = Path(tmp) / f"s{i}"
            t0 = time.perf_counter()
            _in_child(_simulate_child, str(folder), i, args.seed, args.t1_mm)
            print(f"subject {i}: simulated in {time.perf_counter() - t0:.0f} s", flush=True)
            results.append(_in_child(run_subject, str(folder), args.omp_nthreads))
            print(json.dumps(results[-1]), flush=True)
    figure = str(args.out.parent / "skullstrip_colin.png")
    colin = _in_child(run_colin, args.omp_nthreads, figure) if COLIN.is_file() else None
    if colin:
        print(json.dumps(colin), flush=True)
    info["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(results, colin, info, args))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "subjects": results, "colin": colin},
                                        indent=1))
    print(f"wrote {args.out}")
    return 0


def _simulate_child(folder: str, index: int, seed: int, t1_mm: float, queue) -> None:
    simulate(index, seed, t1_mm, Path(folder))
    queue.put(True)


if __name__ == "__main__":
    sys.exit(main())
