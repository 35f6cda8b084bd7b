"""Pages of the clinical PDF report as matplotlib figures (pure: arrays and tables in, figures
out; :mod:`pdf_report` writes them).

Pages: intended use · summary (clusters by confidence tier, the clinical focus) · one page
per cluster (T1w, real PET, pseudo-normal PET and Z in three planes through the cluster's
peak, with its table row) · provenance (versions, model, thresholds, Z reference, timings).
Every image carries the patient directions of its edges (:mod:`planes`).

The figures are :class:`matplotlib.figure.Figure` objects made without ``pyplot``: no global
figure registry, nothing to close, safe in worker processes.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, LinearSegmentedColormap
from matplotlib.figure import Figure

from pseudopet_bids.models.tissue import mask_box
from pseudopet_bids.reports import planes

#: A4 portrait, inches.
PAGE_SIZE = (8.27, 11.69)
#: Clusters listed per summary page.
ROWS_PER_SUMMARY_PAGE = 28
Z_LIMIT = 5.0
#: Colour map of the deficit -Z (threshold → strongest): the report's deficit scale.
ZMAP_CMAP = LinearSegmentedColormap.from_list(
    "pseudopet_deficit", [tuple(c / 255 for c in rgb) for _, rgb in planes.Z_DEFICIT_STOPS])
#: Voxels kept around the brain on the cluster pages.
CROP_MARGIN = 4
TIER_TEXT = {
    "high": "significant against healthy brains and asymmetric beyond the control range",
    "possible": "one of the two: significant or asymmetric",
    "low": "neither significant nor asymmetric: most likely normal variation",
}
INTENDED_USE = (
    "RESEARCH USE ONLY. Not a medical device; not for diagnosis or treatment decisions.",
    "What the method does: it predicts from the T1-weighted MRI the FDG PET that a healthy brain "
    "of this anatomy would show (the pseudo-normal PET), subtracts it from the measured PET and "
    "expresses the difference as Z-scores over grey matter. Connected regions where the measured "
    "uptake is lower than predicted beyond the Z threshold and larger than the minimum volume are "
    "reported as clusters of relative hypometabolism, each assigned to the lobe holding most of "
    "its voxels.",
    "What it can say: where this PET is lower than the model expects, how strong and how large "
    "that difference is, how often a healthy brain shows a cluster this extreme (corrected p) and "
    "whether the region is asymmetric against the other hemisphere. Clusters are ranked by a "
    "confidence tier (high / possible / low).",
    "What it cannot say: it does not identify an epileptogenic zone, a lesion type or a cause. "
    "Hypometabolism also follows seizures, medication, atrophy, partial-volume effects, "
    "misregistration and normal variation; bilateral or diffuse deficits may be missed; a "
    "cluster far from the clinical hypothesis is not evidence against it. The method was "
    "validated on simulated data only. Every cluster must be read on the images by a qualified "
    "reader together with the clinical, EEG and imaging findings.",
)


@dataclass(frozen=True)
class ReportContext:
    """What the pages say about one (subject, session, PET, analysis).

    ``table`` is the cluster table (``*_desc-<analysis>Focus_clusters.tsv`` columns) in rank
    order; ``settings``, ``versions`` and ``timings`` are shown as they are on the
    provenance page.
    """

    subject: str
    session: str | None
    analysis: str
    pet_name: str
    model_label: str
    model_sha256: str
    z_reference: str
    table: pd.DataFrame
    group: str = "unknown"
    foci: tuple[str, ...] = ()
    convention: str = "radiological"
    pet_units: str = ""
    z_threshold: float = 1.65  #: the analysis's threshold: Z images show Z < -z_threshold
    settings: Mapping[str, object] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def title(self) -> str:
        ses = f", session {self.session}" if self.session else ""
        return f"sub-{self.subject}{ses} · analysis {self.analysis}"


@dataclass(frozen=True)
class ReportVolumes:
    """The images of the cluster pages: arrays on one RAS-ordered grid (the T1w grid).

    ``labels`` holds the cluster ids of the table (``desc-<analysis>Focus_dseg``).
    """

    t1: np.ndarray
    pet: np.ndarray
    pseudo: np.ndarray
    z: np.ndarray
    labels: np.ndarray
    affine: np.ndarray

    @property
    def voxel_sizes(self) -> tuple[float, float, float]:
        sizes = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(sizes[0]), float(sizes[1]), float(sizes[2])

    def voxel_of(self, xyz_mm: Sequence[float]) -> tuple[int, int, int]:
        """The voxel nearest to a scanner position (mm), clipped to the grid."""
        ijk = np.linalg.inv(self.affine) @ np.append(np.asarray(xyz_mm, float), 1.0)
        upper = np.asarray(self.t1.shape[:3]) - 1
        idx = np.clip(np.rint(ijk[:3]), 0, upper).astype(int)
        return int(idx[0]), int(idx[1]), int(idx[2])


# --------------------------------------------------------------------------- helpers

def _page(ctx: ReportContext, heading: str, page_label: str) -> Figure:
    fig = Figure(figsize=PAGE_SIZE)
    fig.text(0.06, 0.965, heading, fontsize=16, weight="bold", va="top")
    fig.text(0.06, 0.935, ctx.title, fontsize=10, va="top", color="#333333")
    fig.text(0.06, 0.02, "pseudopet · RESEARCH USE ONLY · not for diagnosis", fontsize=7,
             color="#666666")
    fig.text(0.94, 0.02, page_label, fontsize=7, color="#666666", ha="right")
    return fig


def _paragraphs(fig: Figure, texts: Sequence[str], top: float, width: int = 92,
                size: float = 10.0) -> float:
    """Write wrapped paragraphs from ``top`` down; returns the height used (figure units)."""
    y = top
    line = size / 72 * 1.45 / PAGE_SIZE[1]
    for text in texts:
        lines = textwrap.wrap(text, width) or [""]
        fig.text(0.06, y, "\n".join(lines), fontsize=size, va="top", linespacing=1.45)
        y -= line * (len(lines) + 0.8)
    return top - y


def _fmt(value: object, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    try:
        return format(float(value), spec)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


def _focus_match(region: str, foci: tuple[str, ...]) -> str:
    if not foci:
        return ""
    return "yes" if region in foci else "no"


def focus_text(ctx: ReportContext) -> str:
    """The clinical focus line of the summary (``participants.tsv`` ``focus``)."""
    if ctx.foci:
        return f"Clinical focus (participants.tsv): {', '.join(ctx.foci)}"
    if ctx.group == "control":
        return "Group (participants.tsv): healthy control; no clinical focus"
    return "Clinical focus: not given in participants.tsv"


# --------------------------------------------------------------------------- pages

def intended_use_page(ctx: ReportContext) -> Figure:
    """Page 1: what the report is for and what the method can and cannot say."""
    fig = _page(ctx, "Pseudo-normal FDG PET: focus report", "intended use")
    fig.text(0.06, 0.89, "Intended use", fontsize=13, weight="bold", va="top")
    used = _paragraphs(fig, INTENDED_USE, 0.86)
    y = 0.86 - used - 0.02
    fig.text(0.06, y, "How to read the pages", fontsize=13, weight="bold", va="top")
    _paragraphs(fig, (
        f"Images are shown in {ctx.convention} convention; every image is labelled with the "
        "patient directions of its edges (R/L, A/P, S/I).",
        "Z-scores below zero mean lower uptake than predicted. Tiers: " + "; ".join(
            f"{tier} = {text}" for tier, text in TIER_TEXT.items()) + ".",
    ), y - 0.03)
    return fig


def summary_pages(ctx: ReportContext) -> Iterator[Figure]:
    """The cluster list by confidence tier (several pages when it is long)."""
    table = ctx.table
    chunks = [table.iloc[i:i + ROWS_PER_SUMMARY_PAGE]
              for i in range(0, len(table), ROWS_PER_SUMMARY_PAGE)] or [table]
    counts = table["tier"].value_counts() if len(table) else pd.Series(dtype=int)
    for n, chunk in enumerate(chunks, 1):
        fig = _page(ctx, "Summary", f"summary {n}/{len(chunks)}")
        lines = [focus_text(ctx),
                 f"PET: {ctx.pet_name}", f"Model: {ctx.model_label}; Z reference: "
                 f"{ctx.z_reference}",
                 f"{len(table)} cluster(s): " + (", ".join(
                     f"{int(counts.get(t, 0))} {t}" for t in TIER_TEXT) if len(table) else
                     "no cluster passed the thresholds")]
        fig.text(0.06, 0.90, "\n".join(lines), fontsize=10, va="top", linespacing=1.6)
        if len(chunk):
            _cluster_list(fig, chunk, ctx.foci)
        fig.text(0.06, 0.06, "Ranked by tier, then by cluster mass. Volume in ml; p: "
                 "cluster-level corrected p; asymmetry: hemispheric asymmetry index of the real "
                 "PET in the cluster (%).", fontsize=7.5, color="#333333", wrap=True)
        yield fig


def _cluster_list(fig: Figure, chunk: pd.DataFrame, foci: tuple[str, ...]) -> None:
    ax = fig.add_axes((0.06, 0.1, 0.88, 0.66))
    ax.axis("off")
    header = ["#", "tier", "region", "ml", "peak Z", "mean Z", "p corr.", "asym. %"]
    if foci:
        header.append("in focus")
    rows = []
    for r in chunk.itertuples():
        row = [str(r.cluster_id), str(r.tier), str(r.region), _fmt(r.volume_mm3 / 1000, ".1f"),
               _fmt(r.peak_zscore), _fmt(r.mean_zscore), _fmt(r.p_corrected, ".3g"),
               _fmt(getattr(r, "asymmetry_index", None), "+.1f")]
        if foci:
            row.append(_focus_match(str(r.region), foci))
        rows.append(row)
    # relative widths: the region names ("right-occipital", "other") need the most room
    base = {"#": 0.5, "tier": 1.0, "region": 1.7, "in focus": 0.9}
    widths = [base.get(h, 1.0) for h in header]
    widths = [w / sum(widths) for w in widths]
    tab = ax.table(cellText=rows, colLabels=header, loc="upper left", cellLoc="left",
                   colLoc="left", colWidths=widths)
    tab.auto_set_font_size(False)
    tab.set_fontsize(8.5)
    tab.scale(1.0, 1.35)
    colors = {"high": "#f8c9c9", "possible": "#fde9c4", "low": "#eeeeee"}
    for i, r in enumerate(chunk.itertuples(), 1):
        for j in range(len(header)):
            tab[i, j].set_facecolor(colors.get(str(r.tier), "white"))


def cluster_page(ctx: ReportContext, vol: ReportVolumes, row: pd.Series, number: int,
                 total: int, shown: _Display | None = None) -> Figure:
    """One cluster: its table row and the four images in three planes through its peak."""
    cid = int(row["cluster_id"])
    fig = _page(ctx, f"Cluster {cid}: {row['region']} ({row['tier']} confidence)",
                f"cluster {number}/{total}")
    peak = vol.voxel_of((row["peak_x_mm"], row["peak_y_mm"], row["peak_z_mm"]))
    facts = [
        f"Region: {row['region']} ({_fmt(100 * float(row['region_fraction']), '.0f')} % of "
        f"the cluster)   Volume: {_fmt(row['volume_mm3'] / 1000, '.1f')} ml "
        f"({int(row['n_voxels'])} voxels)",
        f"Peak Z: {_fmt(row['peak_zscore'])}   Mean Z: {_fmt(row['mean_zscore'])}   "
        f"Corrected p: {_fmt(row['p_corrected'], '.3g')} ({row.get('p_method', 'n/a')})",
        f"Asymmetry: {_fmt(row.get('asymmetry_index'), '+.1f')} % "
        f"(Z {_fmt(row.get('asymmetry_z'))})   Tier: {row['tier']}",
        f"Peak: scanner ({_fmt(row['peak_x_mm'], '.0f')}, {_fmt(row['peak_y_mm'], '.0f')}, "
        f"{_fmt(row['peak_z_mm'], '.0f')}) mm; template "
        f"({_fmt(row.get('peak_template_x_mm'), '.0f')}, "
        f"{_fmt(row.get('peak_template_y_mm'), '.0f')}, "
        f"{_fmt(row.get('peak_template_z_mm'), '.0f')}) mm",
    ]
    if ctx.foci:
        facts.append(f"Clinical focus: {', '.join(ctx.foci)} "
                     f"(this cluster {'lies' if row['region'] in ctx.foci else 'does not lie'} "
                     "in it)")
    fig.text(0.06, 0.91, "\n".join(facts), fontsize=9, va="top", linespacing=1.5)
    _image_grid(fig, vol, shown or _display(vol, ctx.z_threshold), cid, peak, ctx.convention,
                ctx.pet_units)
    return fig


def brain_box(vol: ReportVolumes, margin: int = CROP_MARGIN) -> tuple[slice, slice, slice]:
    """The bounding box of the brain (where the pseudo-normal PET or Z is non-zero) plus
    ``margin`` voxels: the images show the brain, not the neck and the empty field of view."""
    brain = (vol.pseudo != 0) | (vol.z != 0)
    if not brain.any():
        return slice(None), slice(None), slice(None)
    x, y, z = mask_box(brain, margin)
    return x, y, z


@dataclass(frozen=True)
class _Display:
    """The cropped volumes and their display windows, computed once per report."""

    box: tuple[slice, slice, slice]
    rows: tuple[tuple[str, np.ndarray, str | Colormap, tuple[float, float]], ...]
    labels: np.ndarray


def _display(vol: ReportVolumes, threshold: float) -> _Display:
    box = brain_box(vol)
    brain = vol.pseudo[box] != 0
    pet, pseudo, t1 = vol.pet[box], vol.pseudo[box], vol.t1[box]
    pet_window = planes.window(np.concatenate([pet[brain], pseudo[brain]]))
    z = vol.z[box]
    # the deficit -Z where Z < -threshold, on the report's deficit scale (brighter = stronger)
    deficit = np.where(z < -threshold, -z, 0.0).astype(np.float32)
    return _Display(box, (("T1w", t1, "gray", planes.window(t1)),
                          ("real PET", pet, "hot", pet_window),
                          ("pseudo-normal PET", pseudo, "hot", pet_window),
                          (f"Z < -{threshold:g} (as -Z)", deficit, ZMAP_CMAP,
                           (threshold, max(Z_LIMIT, threshold + 1.0)))),
                    vol.labels[box])


def _image_grid(fig: Figure, vol: ReportVolumes, shown: _Display, cid: int,
                peak: tuple[int, int, int], convention: str, units: str) -> None:
    rows = shown.rows
    t1 = rows[0][1]
    peak = tuple(int(np.clip(p - (b.start or 0), 0, n - 1)) for p, b, n in zip(
        peak, shown.box, t1.shape))  # type: ignore[assignment]
    outline = shown.labels == cid
    top, height = 0.75, 0.172
    for r, (name, data, cmap, (lo, hi)) in enumerate(rows):
        y = top - (r + 1) * height
        image = None
        for c, plane_name in enumerate(planes.PLANES):
            ax = fig.add_axes((0.06 + c * 0.285, y, 0.27, height - 0.012))
            index = peak[planes.PLANES[plane_name]]
            if name.startswith("Z"):  # Z over the T1w, only where it was computed
                ax.imshow(planes.plane(t1, plane_name, index, convention), cmap="gray",
                          vmin=rows[0][3][0], vmax=rows[0][3][1], interpolation="nearest",
                          aspect=planes.pixel_aspect(vol.voxel_sizes, plane_name))
                zs = planes.plane(data, plane_name, index, convention)
                image = ax.imshow(np.ma.masked_where(zs == 0, zs), cmap=cmap, vmin=lo, vmax=hi,
                                  interpolation="nearest",
                                  aspect=planes.pixel_aspect(vol.voxel_sizes, plane_name))
            else:
                image = ax.imshow(planes.plane(data, plane_name, index, convention), cmap=cmap,
                                  vmin=lo, vmax=hi, interpolation="nearest",
                                  aspect=planes.pixel_aspect(vol.voxel_sizes, plane_name))
            mask = planes.plane(outline, plane_name, index, convention)
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors="#00e5ff", linewidths=0.8)
            _label_edges(ax, planes.edges(plane_name, convention))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(plane_name, fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
        if image is not None:
            cax = fig.add_axes((0.915, y + 0.02, 0.012, height - 0.05))
            bar = fig.colorbar(image, cax=cax)
            bar.ax.tick_params(labelsize=6)
            if name.endswith("PET") and units:
                bar.set_label(units, fontsize=6)


def _label_edges(ax: Axes, e: planes.Edges) -> None:
    # yellow on a dark box: readable on the grey T1w and on the hot PET colours alike (a
    # stroke path effect would turn the letters into paths, which pdftotext cannot read)
    style: dict[str, Any] = {"fontsize": 8, "color": "#ffff66", "weight": "bold",
                             "transform": ax.transAxes,
                             "bbox": {"boxstyle": "round,pad=0.15", "fc": "black", "ec": "none",
                                      "alpha": 0.7}}
    ax.text(0.02, 0.5, e.left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, e.right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, e.top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, e.bottom, ha="center", va="bottom", **style)


def provenance_page(ctx: ReportContext) -> Figure:
    """Versions, model and its sha256, thresholds, Z reference and timings."""
    fig = _page(ctx, "Provenance", "provenance")
    blocks = [
        ("Model", [f"{ctx.model_label}", f"sha256 {ctx.model_sha256 or 'n/a'}"]),
        ("Detection", [f"Z reference: {ctx.z_reference}"]
         + [f"{k}: {v}" for k, v in ctx.settings.items()]),
        ("Software", [f"{k} {v}" for k, v in ctx.versions.items()]),
        ("Timings (s)", [f"{k}: {v:.1f}" for k, v in ctx.timings.items()]),
    ]
    y = 0.89
    for heading, lines in blocks:
        fig.text(0.06, y, heading, fontsize=11, weight="bold", va="top")
        text = "\n".join(textwrap.shorten(line, 110) for line in lines) or "n/a"
        fig.text(0.08, y - 0.022, text, fontsize=8, va="top", linespacing=1.45,
                 family="monospace")
        y -= 0.022 + (len(lines) * 8 * 1.45 / 72) / PAGE_SIZE[1] + 0.025
    return fig


def report_pages(ctx: ReportContext, vol: ReportVolumes) -> Iterator[Figure]:
    """Every page in order (a generator: one page in memory at a time)."""
    yield intended_use_page(ctx)
    yield from summary_pages(ctx)
    shown = _display(vol, ctx.z_threshold) if len(ctx.table) else None
    for n, (_, row) in enumerate(ctx.table.iterrows(), 1):
        yield cluster_page(ctx, vol, row, n, len(ctx.table), shown)
    yield provenance_page(ctx)
