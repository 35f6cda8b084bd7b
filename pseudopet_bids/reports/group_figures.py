"""Group report figures (plain matplotlib charts) as PNG bytes: detection and localization
rates with Wilson intervals, the FROC trade-off between lesion sensitivity and false clusters,
where controls' false clusters fall in template space, translation-metric distributions,
singular-value spectra."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pseudopet_bids.detect.rules import get_rule, parse_analysis_label, rule_order
from pseudopet_bids.models.registry import model_names
from pseudopet_bids.reports.html import png_bytes
from pseudopet_bids.reports.mosaic import DPI, _plt
from pseudopet_bids.reports.subject import analysis_order
from pseudopet_bids.resources import TEMPLATE_NAME

MODEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf")

RATE_MEASURES = (("detection_rate", "Detection rate (patients)"),
                 ("localization_accuracy_top", "Localization, top-ranked cluster"),
                 ("localization_accuracy_any", "Localization, any cluster"),
                 ("controls_with_clusters", "Controls with ≥ 1 cluster"))
#: Measures of false positives (lower is better): their panels are drawn apart, in red.
FALSE_POSITIVE_MEASURES = ("controls_with_clusters", "false_clusters_per_control")
FALSE_POSITIVE_FACE = "#fdecea"
FALSE_POSITIVE_TEXT = "#b71c1c"


#: Bar hatching per detection rule, in registry order (the paper's rule: none).
RULE_HATCHES = ("", "//", "..", "xx", "\\\\", "++")


def model_color(model: str) -> str:
    """A stable colour per model label (the same in every group figure): registered models
    by registry order, other labels (custom model folders) by a hash of the label."""
    model, known = str(model), model_names()
    if model in known and known.index(model) < len(MODEL_COLORS):
        return MODEL_COLORS[known.index(model)]
    offset = min(len(known), len(MODEL_COLORS) - 1)
    index = offset + sum(model.encode()) % (len(MODEL_COLORS) - offset)
    return MODEL_COLORS[index]


def _rule_hatch(analysis: str) -> str:
    return RULE_HATCHES[rule_order(parse_analysis_label(analysis)[1]) % len(RULE_HATCHES)]


def _analysis_colors(analyses: Sequence[str]) -> dict[str, str]:
    return {a: model_color(parse_analysis_label(a)[0]) for a in analyses}


def _empty_axes(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def rates_figure(summary_df: pd.DataFrame) -> bytes:
    """Bar charts per analysis: detection rate, localization accuracy (top-ranked / any cluster),
    controls with clusters (Wilson 95 % CI error bars, ``k/n`` on each bar), and false clusters
    per control."""
    plt = _plt()
    df = summary_df.copy()
    analyses = sorted(df["analysis"].astype(str).unique(), key=analysis_order) if len(df) \
        else []
    colors = _analysis_colors(analyses)
    width = max(11.0, 1.0 + 0.55 * len(analyses) * 5)
    fig, axes = plt.subplots(1, 5, figsize=(min(width, 16.0), 3.6), sharey=False)
    x = np.arange(len(analyses))
    for ax, (measure, label) in zip(axes, list(RATE_MEASURES) + [
            ("false_clusters_per_control", "False clusters per control")]):
        rows = df[df["measure"] == measure].set_index("analysis") if len(df) else df
        if measure in FALSE_POSITIVE_MEASURES:  # not a success rate: say so in colour and words
            ax.set_facecolor(FALSE_POSITIVE_FACE)
            ax.set_title(f"{label}\n(false positives: ↓ better)", fontsize=10,
                         color=FALSE_POSITIVE_TEXT)
        else:
            ax.set_title(f"{label}\n(↑ better)", fontsize=10)
        if not len(analyses):
            _empty_axes(ax, "no analysis")
            continue
        values, lo, hi, text = [], [], [], []
        for a in analyses:
            rec = rows.loc[a] if a in rows.index else None
            v = float(rec["value"]) if rec is not None and pd.notna(rec["value"]) else np.nan
            values.append(v)
            lo.append(float(rec["ci95_low"]) if rec is not None and pd.notna(
                rec.get("ci95_low")) else np.nan)
            hi.append(float(rec["ci95_high"]) if rec is not None and pd.notna(
                rec.get("ci95_high")) else np.nan)
            n = int(rec["n"]) if rec is not None and pd.notna(rec["n"]) else 0
            k = int(rec["count"]) if rec is not None and pd.notna(rec["count"]) else 0
            text.append(f"{k}/{n}" if n else "n = 0")
        values = np.array(values)
        hatch = [_rule_hatch(a) for a in analyses]
        false_pos = measure in FALSE_POSITIVE_MEASURES
        bars = ax.bar(x, np.nan_to_num(values), color=[colors[a] for a in analyses],
                      hatch=hatch, edgecolor=FALSE_POSITIVE_TEXT if false_pos else "black",
                      linewidth=1.2 if false_pos else 0.6, width=0.7,
                      alpha=0.55 if false_pos else 1.0)
        lo_a, hi_a = np.array(lo), np.array(hi)
        ok = np.isfinite(values) & np.isfinite(lo_a) & np.isfinite(hi_a)
        if ok.any():
            yerr = np.clip([values[ok] - lo_a[ok], hi_a[ok] - values[ok]], 0, None)
            ax.errorbar(x[ok], values[ok], yerr=yerr,
                        fmt="none", ecolor="black", capsize=4, linewidth=1)
        top = 1.12 if measure != "false_clusters_per_control" else max(
            1.0, float(np.nanmax(values)) * 1.25 if np.isfinite(values).any() else 1.0)
        ax.set_ylim(0, top)
        for xi, bar, t, v, h in zip(x, bars, text, values, hi):
            ypos = (h if np.isfinite(h) else (v if np.isfinite(v) else 0)) + 0.02 * top
            shown = t if np.isfinite(v) else "n/a\n(n = 0)"
            if measure == "false_clusters_per_control" and np.isfinite(v):
                shown = f"{v:.2g}\n({t})"
            ax.text(xi, ypos, shown, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x)
        ax.set_xlim(-0.5 - 0.4 / len(analyses), len(analyses) - 0.5 + 0.4 / len(analyses))
        ax.set_xticklabels(analyses, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("clusters / control" if measure == "false_clusters_per_control"
                      else "proportion (95 % CI)", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    fig.suptitle("Detection statistics per analysis" + _hatch_legend(analyses), fontsize=11)
    fig.tight_layout()
    return png_bytes(fig, dpi=DPI)


def _hatch_legend(analyses: Sequence[str]) -> str:
    """`` (hatched: Z against the …)`` for the hatched rules among ``analyses``."""
    rules = sorted({parse_analysis_label(a)[1] for a in analyses if _rule_hatch(a)},
                   key=rule_order)
    if not rules:
        return ""
    if len(rules) == 1:
        return f" (hatched: Z against the {get_rule(rules[0]).reference_name})"
    return " (hatching: " + "; ".join(
        f"{RULE_HATCHES[rule_order(r) % len(RULE_HATCHES)]} Z against the "
        f"{get_rule(r).reference_name}" for r in rules) + ")"


#: Line style per detection rule in line charts, in registry order (the paper's rule: solid).
RULE_LINESTYLES = ("-", "--", ":", "-.")
#: Marker of each tier rule's operating point on the FROC (``froc_points.tsv``'s ``rule``).
POINT_MARKERS = {"high": "o", "high+possible": "s"}
#: Colour of a cluster's confidence tier on the false-cluster map (unknown: grey).
TIER_COLORS = {"high": "#d62728", "possible": "#ff7f0e", "low": "#1f77b4"}
SCORE_NAMES = {"z_mass": "cluster mass (z_mass, mm³)", "p_corrected": "corrected p",
               "volume_mm3": "volume (mm³)", "peak_zscore": "peak Z"}


def _rule_linestyle(analysis: str) -> str:
    return RULE_LINESTYLES[rule_order(parse_analysis_label(analysis)[1]) % len(RULE_LINESTYLES)]


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as floats (NaN where missing or not a number)."""
    if column not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(float)


def froc_figure(froc_df: pd.DataFrame, points_df: pd.DataFrame | None = None) -> bytes:
    """FROC curves: lesion sensitivity against false clusters per control (log x), one step
    curve per analysis with its bootstrap 95 % band, and the tier rule's operating points
    (``high``; ``high+possible``) as labelled markers with Wilson 95 % error bars.

    A false-cluster rate of 0 cannot sit on a log axis: those points are drawn at the left
    edge, whose tick reads 0.
    """
    plt = _plt()
    df = froc_df if froc_df is not None else pd.DataFrame()
    points = points_df if points_df is not None else pd.DataFrame()
    fig, ax = plt.subplots(figsize=(10.0, 5.4))
    analyses = sorted(df["analysis"].astype(str).unique(), key=analysis_order) \
        if len(df) and "analysis" in df else []
    if not analyses:
        _empty_axes(ax, "no FROC: the cluster tables lack the score, or there are no\n"
                        "patients with a known focus or no controls")
        fig.tight_layout()
        return png_bytes(fig, dpi=DPI)
    fp_all = np.concatenate([_numbers(df, "false_clusters_per_control"),
                             _numbers(points, "false_clusters_per_control")])
    n_ctrl = np.nanmax(_numbers(df, "n_controls"))
    positive = fp_all[np.isfinite(fp_all) & (fp_all > 0)]
    # the zero column: half a false cluster in the largest control group, below any real rate
    zero_x = 0.5 / n_ctrl if np.isfinite(n_ctrl) and n_ctrl > 0 else 0.05
    if len(positive):
        zero_x = min(zero_x, positive.min() / 2)
    right = max(1.0, 1.8 * positive.max()) if len(positive) else 1.0
    colors = _analysis_colors(analyses)
    for analysis in analyses:
        rows = df[df["analysis"].astype(str) == analysis]
        fp, sens = _numbers(rows, "false_clusters_per_control"), _numbers(rows, "sensitivity")
        order = np.lexsort((sens, fp))
        x = np.where(fp > 0, fp, zero_x)[order]
        # the band belongs to the curve's rows (one per false-cluster rate: on_curve)
        curve = rows["on_curve"].astype(str).str.lower().isin(["true", "1", "1.0"]).to_numpy() \
            if "on_curve" in rows else np.ones(len(rows), bool)
        lo = _numbers(rows, "sensitivity_ci95_low")[order][curve[order]]
        hi = _numbers(rows, "sensitivity_ci95_high")[order][curve[order]]
        # a short stub past the last threshold, so that its level (and band) shows as a step
        stub = x[-1] * 1.12
        band_x = np.append(x[curve[order]], stub)
        lo, hi = np.append(lo, lo[-1:]), np.append(hi, hi[-1:])
        x, sens = np.append(x, stub), np.append(sens[order], sens[order][-1])
        n_p, n_c = np.nanmax(_numbers(rows, "n_patients")), np.nanmax(_numbers(rows, "n_controls"))
        label = f"{analysis}\n({n_p:.0f} patients, {n_c:.0f} controls)"
        ax.step(x, sens, where="post", color=colors[analysis],
                linestyle=_rule_linestyle(analysis), linewidth=1.8, label=label)
        if np.isfinite(lo).any() and np.isfinite(hi).any():
            # hatched like the rule's bars, so that two rules of one model stay apart
            ax.fill_between(band_x, lo, hi, step="post", facecolor=(colors[analysis], 0.12),
                            edgecolor=(colors[analysis], 0.45), hatch=_rule_hatch(analysis),
                            linewidth=0)
        if not len(points) or "analysis" not in points:
            continue
        for rec in points[points["analysis"].astype(str) == analysis].to_dict("records"):
            px, py = _num(rec.get("false_clusters_per_control")), _num(rec.get("sensitivity"))
            if not (np.isfinite(px) and np.isfinite(py)):
                continue
            px = px if px > 0 else zero_x
            plo, phi = _num(rec.get("sensitivity_ci95_low")), _num(rec.get("sensitivity_ci95_high"))
            if np.isfinite(plo) and np.isfinite(phi):
                ax.errorbar([px], [py], yerr=[[max(py - plo, 0)], [max(phi - py, 0)]],
                            fmt="none", ecolor=colors[analysis], elinewidth=0.8, capsize=3,
                            alpha=0.8, zorder=4)
            rule = str(rec.get("rule"))
            ax.scatter([px], [py], marker=POINT_MARKERS.get(rule, "D"), s=55,
                       color=colors[analysis], edgecolor="black", linewidth=0.8, zorder=5)
            ax.annotate(rule, (px, py), xytext=(6, -10 if rule == "high" else 5),
                        textcoords="offset points", fontsize=7, color="#333")
    ax.set_xscale("log")
    ax.set_xlim(zero_x / 1.6, right)
    decades = [10.0 ** k for k in range(int(np.floor(np.log10(zero_x))) + 1,
                                         int(np.ceil(np.log10(right))) + 1)
               if zero_x * 1.5 < 10.0 ** k <= right]
    ax.set_xticks([zero_x] + decades)
    ax.set_xticklabels(["0"] + [f"{d:g}" for d in decades])
    ax.minorticks_off()
    ax.axvline(zero_x * 1.25, color="#999", linewidth=0.6, linestyle=":")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("false clusters per control (clusters / control, log scale)")
    ax.set_ylabel("lesion sensitivity (proportion of patients\nwith a cluster in the focus)")
    scores = sorted(df["score"].astype(str).unique()) if "score" in df else []
    what = ", ".join(SCORE_NAMES.get(s, s) for s in scores) or "cluster score"
    ax.set_title(f"FROC: threshold swept over the {what}\n(band: bootstrap 95 %; markers: tier "
                 "rule operating points, Wilson 95 % CI)", fontsize=10)
    handles, _ = ax.get_legend_handles_labels()
    for rule, marker in POINT_MARKERS.items():
        handles.append(plt.Line2D([], [], marker=marker, color="#555", linestyle="none",
                                  markeredgecolor="black", label=f"tier rule: {rule}"))
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
              frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig, dpi=DPI)


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


@functools.lru_cache(maxsize=1)
def _brain_projections() -> dict[str, tuple[np.ndarray, tuple[float, float, float, float]]]:
    """Maximum-intensity projections of the template brain mask: view → (image for
    ``imshow(origin="lower")``, extent in template mm)."""
    from pseudopet_bids.resources import load_template

    img = load_template("mask")
    data = np.asarray(img.dataobj) > 0.5
    affine = img.affine
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        raise ValueError("template affine is not axis-aligned")
    edges = []
    for i in range(3):
        step, start = float(affine[i, i]), float(affine[i, 3])
        end = start + step * (data.shape[i] - 1)
        if step < 0:  # RAS order left to right, bottom to top
            data = np.flip(data, axis=i)
            start, end, step = end, start, -step
        edges.append((start - step / 2, end + step / 2))
    (x0, x1), (y0, y1), (z0, z1) = edges
    return {"sagittal": (data.max(axis=0).T, (y0, y1, z0, z1)),
            "coronal": (data.max(axis=1).T, (x0, x1, z0, z1)),
            "axial": (data.max(axis=2).T, (x0, x1, y0, y1))}


#: Projection → (horizontal, vertical) template coordinate and axis labels.
MAP_VIEWS = (("sagittal", "peak_template_y_mm", "peak_template_z_mm", "y (mm, P → A)",
              "z (mm, I → S)"),
             ("coronal", "peak_template_x_mm", "peak_template_z_mm", "x (mm, L → R)",
              "z (mm, I → S)"),
             ("axial", "peak_template_x_mm", "peak_template_y_mm", "x (mm, L → R)",
              "y (mm, P → A)"))
#: Marker area (points²) per mm³ of cluster volume: 10 cm³ → 250 pt².
MAP_AREA_PER_MM3 = 0.025


def false_cluster_map_figure(control_clusters_df: pd.DataFrame) -> bytes:
    """Where controls' false clusters fall: per analysis, sagittal, coronal and axial
    maximum-intensity projections of the template brain mask with one marker per control
    cluster at its peak (template mm), marker area ∝ volume, colour by confidence tier."""
    plt = _plt()
    df = control_clusters_df if control_clusters_df is not None else pd.DataFrame()
    analyses = sorted(df["analysis"].astype(str).unique(), key=analysis_order) \
        if len(df) and "analysis" in df else []
    rows = analyses or ["(none)"]
    fig, axes = plt.subplots(len(rows), 3, figsize=(11.5, 3.3 * len(rows) + 0.9),
                             squeeze=False)
    brain = _brain_projections()
    for r, analysis in enumerate(rows):
        part = df[df["analysis"].astype(str) == analysis] if analyses else df.iloc[0:0]
        volume = _numbers(part, "volume_mm3")
        # unknown volume: the area of a 1 cm³ cluster, so the marker is still seen
        area = np.where(np.isfinite(volume), volume, 1000.0) * MAP_AREA_PER_MM3
        tiers = part["tier"].map(lambda t: "n/a" if pd.isna(t) else str(t)).to_numpy() \
            if "tier" in part else np.full(len(part), "n/a")
        color = [TIER_COLORS.get(t, "#7f7f7f") for t in tiers]
        placed = np.all([np.isfinite(_numbers(part, c)) for c in
                         ("peak_template_x_mm", "peak_template_y_mm", "peak_template_z_mm")],
                        axis=0) if len(part) else np.zeros(0, bool)
        for c, (view, hcol, vcol, hlabel, vlabel) in enumerate(MAP_VIEWS):
            ax = axes[r, c]
            image, extent = brain[view]
            ax.imshow(image, origin="lower", extent=extent, cmap="Greys", vmin=0, vmax=4,
                      interpolation="nearest")
            ax.contour(image.astype(float), levels=[0.5], colors="#555", linewidths=0.8,
                       extent=extent, origin="lower")
            if placed.any():
                order = np.argsort(-area[placed])  # big markers below small ones
                ax.scatter(_numbers(part, hcol)[placed][order],
                           _numbers(part, vcol)[placed][order], s=area[placed][order],
                           c=np.array(color)[placed][order], alpha=0.6, edgecolor="black",
                           linewidth=0.6, zorder=3)
            ax.set_aspect("equal")
            ax.set_xlabel(hlabel, fontsize=8)
            ax.set_ylabel(vlabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_title(view, fontsize=9)
        n_ctrl = part["participant_id"].nunique() if "participant_id" in part else 0
        missing = int((~placed).sum())
        title = (f"{analysis}: {len(part)} false cluster(s) in {n_ctrl} control(s)"
                 + (f", {missing} without template coordinates" if missing else "")) \
            if analyses else "no cluster in any control"
        axes[r, 0].annotate(title, (0, 1.16), xycoords="axes fraction", fontsize=10,
                            fontweight="bold")
    handles = [plt.Line2D([], [], marker="o", linestyle="none", markersize=8,
                          markerfacecolor=col, markeredgecolor="black", alpha=0.6,
                          label=f"tier {tier}") for tier, col in TIER_COLORS.items()]
    handles.append(plt.Line2D([], [], marker="o", linestyle="none", markersize=8,
                              markerfacecolor="#7f7f7f", markeredgecolor="black", alpha=0.6,
                              label="tier unknown"))
    for cm3 in (2, 10, 30):
        handles.append(plt.scatter([], [], s=cm3 * 1000 * MAP_AREA_PER_MM3, color="white",
                                   edgecolor="black", label=f"{cm3} cm³"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False, scatterpoints=1, handletextpad=1.4, columnspacing=2.2,
               borderpad=1.2)
    fig.suptitle(f"Controls' false clusters at their peaks in {TEMPLATE_NAME} (brain mask, "
                 "maximum-intensity projection; marker area ∝ volume)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return png_bytes(fig, dpi=DPI)


TRANSLATION_METRICS = (("ssim_brain", "SSIM (brain)", "higher is better"),
                       ("psnr_brain", "PSNR (brain, dB)", "higher is better"),
                       ("rmse_brain", "RMSE (brain)", "lower is better"),
                       ("mae_brain", "MAE (brain)", "lower is better"))


def metric_distributions_figure(translation_df: pd.DataFrame) -> bytes:
    """Per-control translation metrics inside the brain (SSIM, PSNR, RMSE, MAE; [0, 1] PET
    scale) per model: box plots with every control as a point."""
    plt = _plt()
    df = translation_df.copy()
    models = sorted(df["model"].astype(str).unique()) if len(df) else []
    fig, axes = plt.subplots(1, 4, figsize=(max(10.0, 2.2 + 1.0 * len(models) * 4), 3.4))
    rng = np.random.default_rng(0)
    for ax, (col, label, better) in zip(axes, TRANSLATION_METRICS):
        ax.set_title(f"{label}\n({better})", fontsize=9)
        data = [pd.to_numeric(df.loc[df["model"] == m, col], errors="coerce").dropna()
                .to_numpy() if col in df else np.array([]) for m in models]
        if not models or not any(len(d) for d in data):
            _empty_axes(ax, "no data")
            continue
        pos = np.arange(1, len(models) + 1)
        keep = [i for i, d in enumerate(data) if len(d)]
        bp = ax.boxplot([data[i] for i in keep], positions=pos[keep], widths=0.55,
                        patch_artist=True, showfliers=False)
        for patch, i in zip(bp["boxes"], keep):
            patch.set_facecolor(model_color(models[i]))
            patch.set_alpha(0.35)
        for median in bp["medians"]:
            median.set_color("black")
        for i, d in enumerate(data):
            ax.scatter(pos[i] + rng.uniform(-0.12, 0.12, len(d)), d, s=14,
                       color=model_color(models[i]), edgecolor="black",
                       linewidth=0.4, zorder=3)
        ax.set_xticks(pos)
        ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Translation quality per held-out control (PET scaled to [0, 1])", fontsize=11)
    fig.tight_layout()
    return png_bytes(fig, dpi=DPI)


def spectra_figure(spectra_df: pd.DataFrame) -> bytes:
    """Mean normalised singular-value spectra of real (dashed) and synthetic (solid) PET slices
    per model, log y."""
    plt = _plt()
    df = spectra_df.copy()
    models = sorted(df["model"].astype(str).unique()) if len(df) else []
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    if not models:
        _empty_axes(ax, "no spectra")
    for i, model in enumerate(models):
        color = model_color(model)
        for source, style in (("real", "--"), ("synthetic", "-")):
            part = df[(df["model"] == model) & (df["source"] == source)].sort_values(
                "component")
            values = pd.to_numeric(part["value"], errors="coerce").to_numpy()
            keep = np.isfinite(values) & (values > 0)
            if keep.any():
                ax.plot(part["component"].to_numpy()[keep], values[keep], style, color=color,
                        lw=1.6 if source == "synthetic" else 1.2,
                        label=f"{model}: {source}")
    if models:
        ax.set_yscale("log")
        ax.legend(fontsize=8, ncol=max(1, len(models) // 3 + 1))
    ax.set_xlabel("singular value index (component)")
    ax.set_ylabel("singular value / sum (mean over slices)")
    ax.set_title("Singular-value spectra of axial brain slices: real (dashed) vs synthetic",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return png_bytes(fig, dpi=DPI)


__all__ = ["rates_figure", "froc_figure", "false_cluster_map_figure",
           "metric_distributions_figure", "spectra_figure", "model_color"]
