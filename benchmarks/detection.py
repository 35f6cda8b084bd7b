"""Detection benchmark on a simulated cohort: the paper's rule against the confidence tiers.

Reads the participant outputs of the paper's rule (``pseudopet BIDS OUT participant``, any
model) and the simulator's truth, and scores every subject as the pipeline does, with the
package's own functions, for three detection rules (the paper's Z over the subject's own grey
matter, the normative Z, the voxel-wise asymmetry Z). Everything that compares with controls
is leave-one-out: a control is never part of its own calibration, normative model or
asymmetry reference, so the evaluated controls are disjoint from the controls that calibrate
them. Writes ``docs/detection_benchmark.md`` and ``docs/detection_froc.png``.

Usage::

    pseudopet-simulate /tmp/c/bids --controls 20 --patients 30 --seed 2027 \\
        --difficulty ladder --uptake-pattern template --nprocs 2
    pseudopet /tmp/c/bids /tmp/c/out participant --nprocs 2 --omp-nthreads 1
    python benchmarks/detection.py /tmp/c/bids /tmp/c/out --truth /tmp/c/bids_truth
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402

from pseudopet_bids.bids import derivatives as der  # noqa: E402
from pseudopet_bids.bids.participants import read_participants  # noqa: E402
from pseudopet_bids.config import RunConfig  # noqa: E402
from pseudopet_bids.detect import asymmetry, calibration, normative  # noqa: E402
from pseudopet_bids.detect.clusters import find_clusters  # noqa: E402
from pseudopet_bids.detect.confidence import ClusterInputs, Evidence, rank_clusters  # noqa: E402
from pseudopet_bids.detect.regions import cluster_table  # noqa: E402
from pseudopet_bids.evaluate.group import wilson_interval  # noqa: E402
from pseudopet_bids.workflows.normative import (control_arrays, control_clusters,  # noqa: E402
                                                control_residual)

RULES = ("subject", "controls", "asymmetry")
RULE_TITLES = {"subject": "paper's rule (Z over own GM)", "controls": "normative Z",
               "asymmetry": "asymmetry Z"}


def load_subjects(out: Path, model: str, cfg: RunConfig) -> dict[str, dict]:
    """Every subject's arrays needed for scoring (key → dict)."""
    subjects = {}
    for pseudo, label in der.labelled_outputs(out, "pseudonormal"):
        if label != model:
            continue
        paths = der.SubjectPaths.of(out, pseudo)
        arrays = control_arrays(paths, pseudo, model, cfg.detection.gm_threshold)
        img = nib.load(arrays.zmap)
        z = np.asarray(img.dataobj, np.float32)
        lobes = np.asarray(nib.load(paths.anat("desc-lobes_dseg.nii.gz")).dataobj, np.int16)
        subjects[paths.anat_prefix] = {
            "subject": paths.subject, "arrays": arrays, "z": z, "search": z != 0,
            "lobes": lobes, "affine": img.affine,
            "voxel_sizes": tuple(float(v) for v in img.header.get_zooms()[:3])}
    return subjects


def score_all(subjects: dict[str, dict], controls: list[str], cfg: RunConfig,
              use_controls: bool) -> pd.DataFrame:
    """Cluster tables of every subject and rule (one data frame, ``rule`` column)."""
    det = cfg.detection
    stats = None
    reference = None
    maps = {}
    for key, s in subjects.items():
        maps[key] = asymmetry.subject_asymmetry(s["arrays"].pet, s["arrays"].gm,
                                                s["arrays"].registration)
    if use_controls:
        ref = normative.grid_reference()
        stats = normative.NormativeStats.empty(ref.shape[:3], ref.affine)
        for key in controls:
            stats.add(key, *control_residual(subjects[key]["arrays"]))
        reference = asymmetry.AsymmetryReference.from_maps({k: maps[k] for k in controls})
    zmaps: dict[str, dict[str, np.ndarray]] = {rule: {} for rule in RULES}
    for key, s in subjects.items():
        zmaps["subject"][key] = s["z"]
        if use_controls:
            a = s["arrays"]
            zmaps["controls"][key] = normative.zmap_against_controls(
                a.diff, a.gm, s["search"], a.registration, stats, key)[0]
            zmaps["asymmetry"][key] = asymmetry.asymmetry_zmap(
                *maps[key], reference, a.registration, s["search"], key)[0]
    rows = []
    for rule in RULES if use_controls else ("subject",):
        null = None
        if use_controls:
            null = calibration.ClusterNull({"rule": rule})
            for k in controls:
                s = subjects[k]
                null.masses[k], null.asymmetry_z[k] = control_clusters(
                    zmaps[rule][k], s["search"], s["voxel_sizes"], cfg,
                    s["arrays"].registration, maps[k], reference, k)
        evidence = Evidence(null, reference)
        for key, s in subjects.items():
            z = zmaps[rule][key]
            volume = float(np.prod(s["voxel_sizes"]))
            labels, clusters = find_clusters(z, s["search"], volume, threshold=det.z_threshold,
                                             min_volume_mm3=det.cluster_min_volume,
                                             connectivity=det.connectivity)
            reg = s["arrays"].registration
            table = cluster_table(z, labels, clusters, s["lobes"], s["affine"],
                                  reg.points_to_template)
            ranked, _, _ = rank_clusters(table, ClusterInputs(
                z=z, labels=labels, search=s["search"], voxel_sizes=s["voxel_sizes"],
                threshold=det.z_threshold, ai=maps[key][0], ai_valid=maps[key][1],
                cluster_voxels=asymmetry.cluster_voxels(labels, len(clusters), reg), key=key),
                evidence)
            ranked.insert(0, "rule", rule)
            ranked.insert(1, "key", key)
            ranked["size_rank"] = ranked["volume_mm3"].rank(ascending=False, method="first")
            rows.append(ranked)
    return pd.concat(rows, ignore_index=True)


def _rate(k: int, n: int) -> str:
    if n == 0:
        return "n/a"
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} = {k / n:.0%} ({lo:.0%}–{hi:.0%})"


def evaluate(clusters: pd.DataFrame, truth: pd.DataFrame, rule: str) -> dict[str, object]:
    """Operating points of one rule: the paper's (every cluster, largest first) and the
    tiers' (high; high or possible), with the top-ranked cluster's localization."""
    c = clusters[clusters["rule"] == rule]
    ctrl = truth[truth["group"] == "control"]["key"].tolist()
    pats = truth[truth["group"] == "patient"]
    qual = pats[(pats["reduction"] >= 0.15) & (pats["focus_volume_mm3"] >= 8000)]
    out: dict[str, object] = {}
    by_key = {k: g for k, g in c.groupby("key")}

    def top_in_focus(keys: pd.DataFrame, order: str, tiers: tuple[str, ...] | None) -> int:
        hits = 0
        for _, p in keys.iterrows():
            g = by_key.get(p["key"])
            if g is None or g.empty:
                continue
            if tiers is not None:
                g = g[g["tier"].isin(tiers)]
                if g.empty:
                    continue
            first = g.sort_values(order).iloc[0]
            hits += first["region"] in str(p["focus"]).split(";")
        return hits

    n_ctrl = len(ctrl)
    all_c = c[c["key"].isin(ctrl)]
    out["paper_false_per_control"] = len(all_c) / n_ctrl if n_ctrl else float("nan")
    out["high_per_control"] = int((all_c["tier"] == "high").sum()) / n_ctrl if n_ctrl else \
        float("nan")
    out["possible_or_high_per_control"] = int(all_c["tier"].isin(("high", "possible")).sum()) \
        / n_ctrl if n_ctrl else float("nan")
    out["controls_with_high"] = _rate(int(all_c[all_c["tier"] == "high"]["key"].nunique()),
                                      n_ctrl)
    for name, group in (("qualifying", qual), ("all", pats)):
        out[f"top_size_{name}"] = _rate(top_in_focus(group, "size_rank", None), len(group))
        out[f"top_rank_{name}"] = _rate(top_in_focus(group, "cluster_id", None), len(group))
        out[f"high_in_focus_{name}"] = _rate(top_in_focus(group, "cluster_id", ("high",)),
                                             len(group))
    return out


def breakdown(clusters: pd.DataFrame, truth: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Top-ranked cluster in the true lobe, by depth, volume and location of the focus."""
    c = clusters[clusters["rule"] == rule]
    pats = truth[truth["group"] == "patient"].copy()
    top = c[c["cluster_id"] == 1].set_index("key")
    pats["top_ok"] = [bool(k in top.index and top.loc[k, "region"] in str(f).split(";"))
                      for k, f in zip(pats["key"], pats["focus"])]
    pats["high_ok"] = [bool(k in top.index and top.loc[k, "tier"] == "high"
                            and top.loc[k, "region"] in str(f).split(";"))
                       for k, f in zip(pats["key"], pats["focus"])]
    pats["depth"] = pd.cut(pats["reduction"], [0, 0.15, 0.25, 1.0],
                           labels=["8-15 %", "15-25 %", "25-35 %"])
    pats["volume"] = pd.cut(pats["focus_volume_mm3"], [0, 8000, 20000, 1e9],
                            labels=["2-8 cm3", "8-20 cm3", "20-40 cm3"])
    rows = []
    for column in ("depth", "volume", "location", "extent"):
        for value, g in pats.groupby(column, observed=True):
            rows.append({"by": column, "value": str(value), "patients": len(g),
                         "top-ranked in true lobe": _rate(int(g["top_ok"].sum()), len(g)),
                         "high tier in true lobe": _rate(int(g["high_ok"].sum()), len(g))})
    return pd.DataFrame(rows)


def froc_points(clusters: pd.DataFrame, truth: pd.DataFrame, rule: str) -> pd.DataFrame:
    """FROC of one rule: sweep a threshold on the cluster mass; sensitivity = patients with a
    cluster above it in a focus lobe, false clusters = control clusters above it per control.
    """
    c = clusters[clusters["rule"] == rule]
    ctrl = set(truth[truth["group"] == "control"]["key"])
    pats = truth[truth["group"] == "patient"]
    foci = dict(zip(pats["key"], pats["focus"].astype(str).str.split(";")))
    hit = c[c["key"].isin(foci)].apply(lambda r: r["region"] in foci[r["key"]], axis=1) \
        if len(c) else pd.Series(dtype=bool)
    best = c[c["key"].isin(foci)][hit.astype(bool)].groupby("key")["z_mass"].max() \
        if len(c) else pd.Series(dtype=float)
    false = np.sort(c[c["key"].isin(ctrl)]["z_mass"].to_numpy())
    rows = []
    for t in np.unique(np.concatenate([[0.0], c["z_mass"].to_numpy(), [np.inf]])):
        rows.append({"rule": rule, "threshold": t,
                     "sensitivity": float((best >= t).sum()) / max(len(foci), 1),
                     "false_per_control": float((false >= t).sum()) / max(len(ctrl), 1)})
    return pd.DataFrame(rows)


def froc_figure(curves: pd.DataFrame, points: dict[str, dict], path: Path) -> None:
    """FROC curves of the rules with their operating points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    colours = {"subject": "#1f77b4", "controls": "#2ca02c", "asymmetry": "#d62728"}
    for rule, g in curves.groupby("rule", sort=False):
        g = g.sort_values("false_per_control")
        ax.step(np.maximum(g["false_per_control"], 0.01), g["sensitivity"], where="post",
                color=colours.get(str(rule)), label=RULE_TITLES.get(str(rule), str(rule)))
        p = points.get(str(rule), {})
        for name, marker in (("paper", "o"), ("high", "*"), ("possible", "s")):
            if name in p:
                ax.plot(max(p[name][0], 0.01), p[name][1], marker, color=colours.get(str(rule)),
                        ms=9 if marker == "*" else 6, mec="black", mew=0.6)
    ax.set_xscale("log")
    ax.set_xlim(0.01, 10)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false clusters per control (log; 0 drawn at 0.01)")
    ax.set_ylabel("patients with a cluster in the true lobe")
    ax.set_title("FROC: threshold on cluster mass\n"
                 "● every cluster (paper's rule)  ★ high tier  ■ high or possible tier",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def operating_points(clusters: pd.DataFrame, truth: pd.DataFrame, rule: str
                     ) -> dict[str, tuple[float, float]]:
    """(false clusters per control, sensitivity) of: every cluster; high; high or possible."""
    c = clusters[clusters["rule"] == rule]
    ctrl = set(truth[truth["group"] == "control"]["key"])
    pats = truth[truth["group"] == "patient"]
    foci = dict(zip(pats["key"], pats["focus"].astype(str).str.split(";")))
    out = {}
    for name, tiers in (("paper", ("high", "possible", "low")), ("high", ("high",)),
                        ("possible", ("high", "possible"))):
        sel = c[c["tier"].isin(tiers)]
        fp = int(sel["key"].isin(ctrl).sum()) / max(len(ctrl), 1)
        found = {k for k, r in zip(sel["key"], sel["region"]) if k in foci and r in foci[k]}
        out[name] = (fp, len(found) / max(len(foci), 1))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--truth", type=Path, required=True, help="simulator truth folder")
    parser.add_argument("--model", default="tissue", help="model label of the outputs")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "detection_benchmark.md")
    parser.add_argument("--cache", type=Path, help="keep the cluster tables here (TSV)")
    args = parser.parse_args()
    t0 = time.monotonic()
    cfg = RunConfig()
    participants = read_participants(args.bids_dir)
    truth = pd.read_csv(args.truth / "truth.tsv", sep="\t", na_values=["n/a"])
    truth["key"] = truth["participant_id"]
    truth["focus"] = truth["focus"].fillna("n/a")
    subjects = load_subjects(args.output_dir, args.model, cfg)
    truth = truth[truth["key"].isin(subjects)]
    controls = truth[truth["group"] == "control"]["key"].tolist()
    print(f"{len(subjects)} subjects ({len(controls)} controls) read in "
          f"{time.monotonic() - t0:.0f} s", flush=True)
    with_controls = score_all(subjects, controls, cfg, True)
    without = score_all(subjects, controls, cfg, False)
    without["rule"] = "subject-nocontrols"
    clusters = pd.concat([with_controls, without], ignore_index=True)
    if args.cache:
        clusters.to_csv(args.cache, sep="\t", index=False)
    print(f"scored in {time.monotonic() - t0:.0f} s", flush=True)

    n_p = int((truth["group"] == "patient").sum())
    pats = truth[truth["group"] == "patient"]
    n_q = int(((pats["reduction"] >= 0.15) & (pats["focus_volume_mm3"] >= 8000)).sum())
    machine = machine_info()
    lines = [
        "# Detection benchmark: the paper's rule and the confidence tiers", "",
        f"Generated by `python benchmarks/detection.py` on {time.strftime('%Y-%m-%d')} "
        f"({machine.get('cpu', '')}, {machine.get('cores', '')} cores) in "
        f"{(time.monotonic() - t0) / 60:.1f} min, from the participant outputs of `{args.model}`.",
        "",
        f"Cohort: `{args.bids_dir}` — {len(controls)} controls, {n_p} patients "
        f"({n_q} with a deficit ≥ 15 % and a focus ≥ 8 cm³), simulated with "
        "`--difficulty ladder --uptake-pattern template`. Leave-one-out throughout: a control "
        "is never in its own calibration, normative model or asymmetry reference.", "",
        "## Operating points", "",
        "| rule | clusters per control (paper: all) | high-tier per control | high or possible "
        "per control | controls with a high-tier cluster | top-ranked in true lobe, "
        "qualifying | largest in true lobe, qualifying | top-ranked in true lobe, all | "
        "high tier in true lobe, all |",
        "|---|---|---|---|---|---|---|---|---|"]
    for rule in (*RULES, "subject-nocontrols"):
        e = evaluate(clusters, truth, rule)
        title = RULE_TITLES.get(rule, "paper's rule, no controls (random-field p, fixed AI)")
        lines.append(f"| {title} | {e['paper_false_per_control']:.2f} | "
                     f"{e['high_per_control']:.2f} | {e['possible_or_high_per_control']:.2f} | "
                     f"{e['controls_with_high']} | {e['top_rank_qualifying']} | "
                     f"{e['top_size_qualifying']} | {e['top_rank_all']} | "
                     f"{e['high_in_focus_all']} |")
    lines += ["", "*Qualifying*: deficit ≥ 15 % and focus ≥ 8 cm³. *Top-ranked*: cluster 1 "
              "of the table (tier, then cluster mass); *largest*: the paper's order. Counts "
              "k/n with Wilson 95 % intervals.", "",
              "## Breakdown (paper's rule with tiers, calibrated on controls)", ""]
    table = breakdown(clusters, truth, "subject")
    lines.append("| by | value | patients | top-ranked in true lobe | high tier in true lobe |")
    lines.append("|---|---|---|---|---|")
    for r in table.itertuples():
        lines.append(f"| {r.by} | {r.value} | {r.patients} | {r[4]} | {r[5]} |")
    curves = pd.concat([froc_points(clusters, truth, r) for r in RULES], ignore_index=True)
    points = {r: operating_points(clusters, truth, r) for r in RULES}
    figure = args.output.with_name("detection_froc.png")
    froc_figure(curves, points, figure)
    lines += ["", "## FROC", "", f"![FROC]({figure.name})", "",
              "Each curve sweeps a threshold on the cluster mass of the rule's clusters "
              "(voxel threshold Z < −1.65, clusters ≥ 1500 mm³); the dots are the operating "
              "points of every cluster (the paper's reading), the high tier and the high or "
              "possible tiers.", ""]
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"minutes": round((time.monotonic() - t0) / 60, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
