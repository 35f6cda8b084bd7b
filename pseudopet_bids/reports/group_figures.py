"""Group report figures (plain matplotlib charts) as PNG bytes: detection and localization
rates with Wilson intervals, translation-metric distributions, singular-value spectra."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from pseudopet_bids.detect.rules import get_rule, parse_analysis_label, rule_order
from pseudopet_bids.models.registry import model_names
from pseudopet_bids.reports.html import png_bytes
from pseudopet_bids.reports.mosaic import DPI, _plt
from pseudopet_bids.reports.subject import analysis_order

MODEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf")

RATE_MEASURES = (("detection_rate", "Detection rate (patients)"),
                 ("localization_accuracy_largest", "Localization, largest cluster"),
                 ("localization_accuracy_any", "Localization, any cluster"),
                 ("controls_with_clusters", "Controls with ≥ 1 cluster"))


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
    """Bar charts per analysis: detection rate, localization accuracy (largest / any cluster),
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
        ax.set_title(label, fontsize=10)
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
        bars = ax.bar(x, np.nan_to_num(values), color=[colors[a] for a in analyses],
                      hatch=hatch, edgecolor="black", linewidth=0.6, width=0.7)
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


__all__ = ["rates_figure", "metric_distributions_figure", "spectra_figure", "model_color"]
