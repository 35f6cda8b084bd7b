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
import functools
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
from pseudopet_bids.config import RunConfig  # noqa: E402
from pseudopet_bids.detect import asymmetry, normative  # noqa: E402
from pseudopet_bids.detect.clusters import find_clusters  # noqa: E402
from pseudopet_bids.detect.confidence import ClusterInputs, Evidence, rank_clusters  # noqa: E402
from pseudopet_bids.detect.regions import cluster_table  # noqa: E402
from pseudopet_bids.evaluate.group import (froc, froc_operating_points,  # noqa: E402
                                           wilson_interval)
from pseudopet_bids.reports.group_figures import froc_figure  # noqa: E402
from pseudopet_bids.workflows.normative import (build_evidence, control_arrays,  # noqa: E402
                                                control_residual, rule_zmaps)

RULES = ("subject", "controls", "asymmetry")
RULE_TITLES = {"subject": "paper's rule (Z over own GM)", "controls": "normative Z",
               "asymmetry": "asymmetry Z"}


def subject_files(out: Path, model: str) -> dict[str, tuple[der.SubjectPaths, Path]]:
    """key → (paths, pseudo-normal PET file) of every subject with outputs of ``model``."""
    found = {}
    for pseudo, label in der.labelled_outputs(out, "pseudonormal"):
        if label == model:
            paths = der.SubjectPaths.of(out, pseudo)
            found[paths.anat_prefix] = (paths, pseudo)
    return found


def load_subject(paths: der.SubjectPaths, pseudo: Path, model: str, cfg: RunConfig) -> dict:
    """One subject's arrays (read when needed: 50 subjects at 1 mm do not fit in memory)."""
    arrays = control_arrays(paths, pseudo, model, cfg.detection.gm_threshold)
    img = nib.load(arrays.zmap)
    z = np.asarray(img.dataobj, np.float32)
    lobes = np.asarray(nib.load(paths.anat("desc-lobes_dseg.nii.gz")).dataobj, np.int16)
    return {"arrays": arrays, "z": z, "search": z != 0, "lobes": lobes, "affine": img.affine,
            "voxel_sizes": tuple(float(v) for v in img.header.get_zooms()[:3])}


def score_all(files: dict[str, tuple[der.SubjectPaths, Path]], controls: list[str],
              model: str, cfg: RunConfig) -> pd.DataFrame:
    """Cluster tables of every subject and rule (one data frame, ``rule`` column), and the
    paper's rule without controls (``subject-nocontrols``: random-field p, fixed AI)."""
    det = cfg.detection
    ref = normative.grid_reference()
    stats = normative.NormativeStats.empty(ref.shape[:3], ref.affine)
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, (paths, pseudo) in files.items():
        s = load_subject(paths, pseudo, model, cfg)
        a = s["arrays"]
        maps[key] = asymmetry.subject_asymmetry(a.pet, a.gm, a.registration)
        if key in controls:
            stats.add(key, *control_residual(a))
    # the controls' clusters under each rule, leave-one-out: as group --build-normative does
    nulls, reference = build_evidence(
        cfg, stats, {k: functools.partial(control_arrays, *files[k], model,
                                          cfg.detection.gm_threshold) for k in controls},
        {k: maps[k] for k in controls})
    assert reference is not None
    rows = []
    for key in files:
        s = load_subject(*files[key], model, cfg)
        reg = s["arrays"].registration
        volume = float(np.prod(s["voxel_sizes"]))
        zmaps = rule_zmaps(s["arrays"], s["z"], s["search"], key, stats, maps[key], reference)
        for rule, z, evidence in [*((r, zmaps[r], Evidence(nulls[r], reference)) for r in RULES),
                                  ("subject-nocontrols", zmaps["subject"], Evidence())]:
            labels, clusters = find_clusters(z, s["search"], volume, threshold=det.z_threshold,
                                             min_volume_mm3=det.cluster_min_volume,
                                             connectivity=det.connectivity)
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
        print(f"  {key} scored", flush=True)
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


def group_frames(clusters: pd.DataFrame, truth: pd.DataFrame, model: str
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The benchmark's clusters and subjects as the group level's tables (one analysis per
    rule), for :func:`pseudopet_bids.evaluate.group.froc`."""
    from pseudopet_bids.detect.rules import analysis_label

    labels = {rule: analysis_label(model, rule) for rule in RULES}
    labels["subject-nocontrols"] = analysis_label(model, "subject") + " (no controls)"
    subjects = pd.concat([truth.assign(analysis=label, session="n/a")
                          for label in labels.values()], ignore_index=True)
    subjects = subjects[["analysis", "participant_id", "session", "group", "focus"]]
    frame = clusters.assign(analysis=clusters["rule"].map(labels), participant_id=clusters["key"],
                            session="n/a")
    return frame, subjects


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--truth", type=Path, required=True, help="simulator truth folder")
    parser.add_argument("--model", default="tissue", help="model label of the outputs")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "detection_benchmark.md")
    parser.add_argument("--cache", type=Path, help="keep the cluster tables here (TSV)")
    parser.add_argument("--from-cache", action="store_true",
                        help="read the cluster tables from --cache instead of scoring again "
                             "(to rewrite the report)")
    args = parser.parse_args()
    t0 = time.monotonic()
    cfg = RunConfig()
    truth = pd.read_csv(args.truth / "truth.tsv", sep="\t", na_values=["n/a"])
    truth["key"] = truth["participant_id"]
    truth["focus"] = truth["focus"].fillna("n/a")
    files = subject_files(args.output_dir, args.model)
    truth = truth[truth["key"].isin(files)]
    controls = truth[truth["group"] == "control"]["key"].tolist()
    print(f"{len(files)} subjects ({len(controls)} controls)", flush=True)
    if args.from_cache:
        clusters = pd.read_csv(args.cache, sep="\t")
    else:
        clusters = score_all(files, controls, args.model, cfg)
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
        f"({machine.get('cpu', '')}, {machine.get('cores', '')} cores) "
        + ("from the cluster tables cached by an earlier run of it (`--from-cache`)"
           if args.from_cache else f"in {(time.monotonic() - t0) / 60:.1f} min")
        + f", from the participant outputs of `{args.model}`.",
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
              "of the table (tier, then criteria met, then cluster mass); *largest*: the paper's order. Counts "
              "k/n with Wilson 95 % intervals.", "",
              "## Breakdown by depth, volume, location and extent of the focus", "",
              "Top-ranked cluster in the true lobe / a high-tier cluster in the true lobe, per "
              "rule (calibrated on controls).", "",
              "| by | value | patients | " + " | ".join(RULE_TITLES[r] for r in RULES) + " |",
              "|---|---|---|" + "---|" * len(RULES)]
    tables = [breakdown(clusters, truth, rule) for rule in RULES]
    for i, r in enumerate(tables[0].itertuples()):
        cells = [f"{t.iloc[i, 3].split(' (')[0]} / {t.iloc[i, 4].split(' = ')[0]}"
                 for t in tables]
        lines.append(f"| {r.by} | {r.value} | {r.patients} | " + " | ".join(cells) + " |")
    frame, subjects_frame = group_frames(clusters, truth, args.model)
    curves = froc(frame, subjects_frame, "z_mass", n_boot=500, seed=0)
    points = froc_operating_points(frame, subjects_frame)
    figure = args.output.with_name("detection_froc.png")
    figure.write_bytes(froc_figure(curves, points))
    lines += ["", "## FROC", "", f"![FROC]({figure.name})", "",
              "Each curve sweeps a threshold on the cluster mass of one analysis' clusters "
              "(voxel threshold Z < −1.65, clusters ≥ 1500 mm³): lesion sensitivity (a cluster "
              "in a focus lobe) against false clusters per control, bootstrap 95 % band; the "
              "markers are the tier rule's operating points (`pseudopet_bids.evaluate.group."
              "froc`, the group level's own function).", ""]
    table = points.assign(sens=[f"{k}/{n}" for k, n in zip(points["patients_hit"],
                                                              points["n_patients"])]) \
        if len(points) and "patients_hit" in points else points
    if len(table):
        lines += ["| analysis | clusters reported | lesion sensitivity | false clusters per "
                  "control |", "|---|---|---|---|"]
        for r in table.to_dict("records"):
            lines.append(f"| {r['analysis']} | {r.get('rule', '')} | {r.get('sens', '')} "
                         f"({r.get('sensitivity', float('nan')):.2f}) | "
                         f"{r.get('false_clusters_per_control', float('nan')):.2f} |")
        lines.append("")
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"minutes": round((time.monotonic() - t0) / 60, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
