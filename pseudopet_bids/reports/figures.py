"""Report figures: quality checks of one subject and the group statistics, as PNG bytes.

Subject figures are slice mosaics drawn with matplotlib directly from the voxel arrays (no
resampling of the 1 mm grid for display): every image of a figure is brought onto the grid of
its first image (the T1w grid for all outputs of the participant workflow), reoriented to the
closest RAS orientation, cropped to the brain's bounding box, and shown in neurological
convention (left hemisphere on the left of axial and coronal slices, anterior to the right of
sagittal slices). Overlays are outlines (``contour``), edge maps (Canny, per displayed slice) or
colour maps with their colour bars. Group figures are in :mod:`group_figures`.

Every function returns PNG bytes (:func:`pseudopet_bids.reports.html.png_bytes`), palette
quantized so that a figure stays well under 200 kB, and closes its figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import nibabel as nib
import numpy as np

from pseudopet_bids.reports.html import png_bytes

DPI = 90
WIDTH_IN = 12.0
MAX_COLORS = 256
MAX_BYTES = 190_000
VIEWS = {0: "sagittal", 1: "coronal", 2: "axial"}
AXIS_LETTER = {0: "x", 1: "y", 2: "z"}
CLUSTER_COLORS = ("#ff2020", "#ffb000", "#ff4df0", "#a6ff00", "#ffffff", "#ff7f50", "#ffe600",
                  "#c77dff", "#7cfc00", "#ff9ec7")
MASK_COLOR = "#ff3b3b"
GM_COLOR = "#26c6ff"
EDGE_COLOR = "#39ff14"


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- volumes and grids

class _Grid:
    """The display grid: the first image's grid reoriented to closest RAS."""

    def __init__(self, ref: nib.spatialimages.SpatialImage):
        self.ref = ref
        self.shape = tuple(int(n) for n in ref.shape[:3])
        self.ornt = nib.orientations.io_orientation(ref.affine)
        self.affine = ref.affine @ nib.orientations.inv_ornt_aff(self.ornt, self.shape)
        self.zooms = tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    def array(self, value, order: int = 1) -> np.ndarray | None:
        """``value`` (image on any grid, or array on the reference grid) on the display grid."""
        if value is None:
            return None
        if isinstance(value, nib.spatialimages.SpatialImage):
            data = np.asarray(value.dataobj, dtype=np.float32)
            data = data.reshape(data.shape[:3]) if data.ndim > 3 and data.size == np.prod(
                data.shape[:3]) else data
            if data.shape[:3] != self.shape or not np.allclose(value.affine, self.ref.affine,
                                                               atol=1e-3):
                data = _resample(data, value.affine, self.shape, self.ref.affine, order)
        else:
            data = np.asarray(value, dtype=np.float32)
            if data.ndim > 3 and data.size == np.prod(data.shape[:3]):
                data = data.reshape(data.shape[:3])
            if data.shape != self.shape:
                raise ValueError(f"array of shape {data.shape} is not on the reference grid "
                                 f"{self.shape}")
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
        return nib.orientations.apply_orientation(data, self.ornt).astype(np.float32)

    def world(self, axis: int, index: float) -> float:
        """RAS mm coordinate (along ``axis``) of a slice, at the centre of the grid."""
        centre = (np.array(self.canonical_shape, float) - 1) / 2
        centre[axis] = index
        return float(nib.affines.apply_affine(self.affine, centre)[axis])

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        shape = [0, 0, 0]
        for src, (dst, _) in enumerate(self.ornt):
            shape[int(dst)] = self.shape[src]
        return tuple(shape)


def _resample(data: np.ndarray, affine: np.ndarray, shape: tuple[int, ...],
              ref_affine: np.ndarray, order: int) -> np.ndarray:
    from scipy import ndimage

    vox = np.linalg.inv(affine) @ ref_affine
    return ndimage.affine_transform(data, vox[:3, :3], vox[:3, 3], output_shape=shape,
                                    order=order, mode="constant", cval=0.0).astype(np.float32)


def _bbox(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` grown by ``margin`` voxels (whole grid when empty)."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.nonzero(mask.any(axis=other))[0]
        out.append(slice(max(0, hit[0] - margin[axis]),
                         min(mask.shape[axis], hit[-1] + 1 + margin[axis])))
    return tuple(out)


def _cuts(mask: np.ndarray, axis: int, n: int, lo: float = 0.1, hi: float = 0.9
          ) -> list[int]:
    """``n`` slice indices evenly spread over the extent of ``mask`` along ``axis``."""
    other = tuple(a for a in range(3) if a != axis)
    hit = np.nonzero(mask.any(axis=other))[0]
    if not len(hit):
        hit = np.array([0, mask.shape[axis] - 1])
    first, last = hit[0], hit[-1]
    span = last - first
    idx = np.rint(np.linspace(first + lo * span, first + hi * span, n)).astype(int)
    return sorted(set(int(i) for i in idx))


def _plane(arr: np.ndarray, axis: int, index: int) -> np.ndarray:
    """2D slice for ``imshow(origin='lower')``: rows = vertical, columns = horizontal."""
    key = [slice(None)] * 3
    key[axis] = int(index)
    return arr[tuple(key)].T


def _plane_zooms(zooms: Sequence[float], axis: int) -> tuple[float, float]:
    """(horizontal, vertical) voxel size of a slice across ``axis``."""
    h, v = [zooms[a] for a in range(3) if a != axis]
    return h, v


def _robust_range(values: np.ndarray, lo: float = 1.0, hi: float = 99.5) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    vmin, vmax = (float(v) for v in np.percentile(values, [lo, hi]))
    return (vmin, vmax) if vmax > vmin else (vmin, vmin + 1.0)


def _subsample(values: np.ndarray, limit: int = 400_000) -> np.ndarray:
    step = max(1, values.size // limit)
    return values[::step]


def _edges(plane: np.ndarray, sigma: float, mask: np.ndarray | None = None,
           factor: float = 1.0) -> np.ndarray:
    """Canny edges of a 2D slice (intensities scaled to [0, 1] by their 99th percentile inside
    ``mask``), computed after zooming the slice by ``factor`` (≤ 1: the display resolution, so
    that the edges are one screen pixel wide); ``sigma`` in pixels of the zoomed slice."""
    from scipy import ndimage
    from skimage import feature

    inside = plane[mask] if mask is not None and mask.any() else plane[plane > 0]
    scale = float(np.percentile(inside, 99)) if inside.size else 0.0
    if scale <= 0:
        return np.zeros((max(1, round(plane.shape[0] * factor)),
                         max(1, round(plane.shape[1] * factor))), bool)
    img = np.clip(plane / scale, 0, 1.2)
    if abs(factor - 1.0) > 0.05:
        img = ndimage.zoom(img, factor, order=1, grid_mode=True, mode="nearest")
        if mask is not None:
            mask = ndimage.zoom(mask.astype(np.float32), factor, order=1, grid_mode=True,
                                mode="nearest") > 0.5
    return feature.canny(img, sigma=sigma, low_threshold=0.05, high_threshold=0.12, mask=mask)


# --------------------------------------------------------------------------- mosaic layout

@dataclass
class _Panel:
    axis: int
    index: int
    label: str = ""
    first: bool = False  # first panel of its row, or of its view in a mixed row


@dataclass
class _Row:
    panels: list[_Panel]
    label: str = ""
    colorbar: dict | None = None  # {"mappable_index": 0, "label": str, "ticks": [...]}
    draw: Callable | None = None  # draw(ax, panel) -> mappable or None
    max_height_in: float = 2.6
    gap_in: float = 0.03  # between panels


@dataclass
class _Mosaic:
    """A figure of rows of slice panels, each row scaled to the figure width."""

    crop: tuple[slice, slice, slice]
    zooms: tuple[float, float, float]
    rows: list[_Row] = field(default_factory=list)

    def aspect(self, axis: int) -> float:
        """width / height of a cropped slice across ``axis`` (mm)."""
        dims = [a for a in range(3) if a != axis]
        w = (self.crop[dims[0]].stop - self.crop[dims[0]].start) * self.zooms[dims[0]]
        h = (self.crop[dims[1]].stop - self.crop[dims[1]].start) * self.zooms[dims[1]]
        return w / max(h, 1e-6)

    def render(self, title: str, legend: list[tuple[str, str]] | None = None,
               width_in: float = WIDTH_IN, facecolor: str = "black") -> bytes:
        plt = _plt()
        left, right = 0.35, 0.9
        title_h = 0.42 + (0.25 if legend else 0.0)
        label_h = 0.18  # panel labels under each row
        usable = width_in - left - right
        heights = []
        for row in self.rows:
            ratios = [self.aspect(p.axis) for p in row.panels]
            gap = row.gap_in
            h = min((usable - gap * (len(ratios) - 1)) / sum(ratios), row.max_height_in)
            heights.append((h, ratios))
        total_h = title_h + sum(h + label_h + 0.08 for h, _ in heights) + 0.05
        fig = plt.figure(figsize=(width_in, total_h), facecolor=facecolor)
        fg = "white" if facecolor == "black" else "black"
        fig.text(0.5, 1 - 0.12 / total_h, title, ha="center", va="top", color=fg, fontsize=12,
                 fontweight="bold")
        if legend:
            from matplotlib.lines import Line2D

            handles = [Line2D([0], [0], color=c, lw=2.5) for _, c in legend]
            fig.legend(handles, [t for t, _ in legend], loc="upper center", ncol=len(legend),
                       bbox_to_anchor=(0.5, 1 - 0.42 / total_h), frameon=False, fontsize=9,
                       labelcolor=fg, handlelength=1.6)
        y = total_h - title_h
        for row, (h, ratios) in zip(self.rows, heights):
            gap = row.gap_in
            y -= h
            widths = [r * h for r in ratios]
            x = left + max(0.0, (usable - sum(widths) - gap * (len(widths) - 1)) / 2)
            mappable = None
            for panel, w in zip(row.panels, widths):
                ax = fig.add_axes((x / width_in, y / total_h, w / width_in, h / total_h))
                ax.set_facecolor(facecolor)
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                m = row.draw(ax, panel) if row.draw else None
                mappable = mappable or m
                ax.set_xlim(0, self._extent(panel.axis)[0])
                ax.set_ylim(0, self._extent(panel.axis)[1])
                if panel.label:
                    fig.text((x + w / 2) / width_in, (y - 0.03) / total_h, panel.label,
                             ha="center", va="top", color=fg, fontsize=8)
                x += w + gap
            if row.label:
                fig.text(0.12 / width_in, (y + h / 2) / total_h, row.label, rotation=90,
                         ha="left", va="center", color=fg, fontsize=9)
            if row.colorbar and mappable is not None:
                cax = fig.add_axes(((width_in - right + 0.12) / width_in,
                                    (y + 0.1 * h) / total_h, 0.14 / width_in,
                                    0.8 * h / total_h))
                cb = fig.colorbar(mappable, cax=cax, ticks=row.colorbar.get("ticks"))
                cb.set_label(row.colorbar.get("label", ""), color=fg, fontsize=8)
                cb.ax.tick_params(colors=fg, labelsize=7)
                cb.outline.set_edgecolor(fg)
            y -= label_h + 0.08
        return png_bytes(fig, dpi=DPI, max_colors=MAX_COLORS, max_bytes=MAX_BYTES)

    def _extent(self, axis: int) -> tuple[float, float]:
        dims = [a for a in range(3) if a != axis]
        return ((self.crop[dims[0]].stop - self.crop[dims[0]].start) * self.zooms[dims[0]],
                (self.crop[dims[1]].stop - self.crop[dims[1]].start) * self.zooms[dims[1]])

    def cropped(self, arr: np.ndarray, axis: int, index: int) -> np.ndarray:
        """The cropped 2D slice of a display-grid array."""
        key = list(self.crop)
        key[axis] = int(index)
        return arr[tuple(key)].T

    def show(self, ax, arr: np.ndarray, panel: _Panel, **kwargs):
        plane = self.cropped(arr, panel.axis, panel.index)
        w, h = self._extent(panel.axis)
        kwargs.setdefault("interpolation", "antialiased")
        return ax.imshow(plane, origin="lower", extent=(0, w, 0, h), aspect="equal", **kwargs)

    def outline(self, ax, arr: np.ndarray, panel: _Panel, color: str, lw: float = 1.0,
                level: float = 0.5) -> None:
        """Contour of a display-grid volume at ``level`` on one panel."""
        self.outline_plane(ax, self.cropped(arr, panel.axis, panel.index), panel, color, lw,
                           level)

    def outline_plane(self, ax, plane: np.ndarray, panel: _Panel, color: str, lw: float = 1.0,
                      level: float = 0.5) -> None:
        """Contour of a cropped 2D slice at ``level``."""
        if plane.min() >= level or plane.max() < level:
            return
        hz, vz = _plane_zooms(self.zooms, panel.axis)
        xs = (np.arange(plane.shape[1]) + 0.5) * hz
        ys = (np.arange(plane.shape[0]) + 0.5) * vz
        ax.contour(xs, ys, plane, levels=[level], colors=[color], linewidths=lw)

    def edge_layer(self, ax, plane: np.ndarray, panel: _Panel, color: str, sigma_mm: float,
                   mask: np.ndarray | None = None, alpha: float = 0.9) -> None:
        """Canny edges of a cropped slice, computed at the panel's screen resolution."""
        from matplotlib.colors import to_rgba

        hz, _ = _plane_zooms(self.zooms, panel.axis)
        pixels = ax.get_window_extent().width * DPI / ax.figure.dpi
        factor = float(np.clip(pixels / max(plane.shape[1], 1), 0.2, 2.0))
        sigma = max(0.8, sigma_mm / hz * factor)
        edges = _edges(plane, sigma, mask, factor)
        rgba = np.zeros(edges.shape + (4,), np.float32)
        rgba[edges] = to_rgba(color, alpha)
        w, h = self._extent(panel.axis)
        ax.imshow(rgba, origin="lower", extent=(0, w, 0, h), aspect="equal",
                  interpolation="nearest")


def _orientation_marks(ax, panel: _Panel, color: str = "white") -> None:
    """``L``/``R`` (``P``/``A`` on sagittal slices) on the first panel of a row."""
    if not panel.first:
        return
    left, right = ("P", "A") if panel.axis == 0 else ("L", "R")
    for x, text, ha in ((0.02, left, "left"), (0.98, right, "right")):
        ax.text(x, 0.98, text, transform=ax.transAxes, ha=ha, va="top", color=color,
                fontsize=8, fontweight="bold", alpha=0.9)


def _view_rows(grid: _Grid, mosaic_mask: np.ndarray, n: int, views: Sequence[int] = (2, 1, 0)
               ) -> list[tuple[int, list[_Panel]]]:
    out = []
    for axis in views:
        panels = [_Panel(axis, i, f"{AXIS_LETTER[axis]} = {grid.world(axis, i):.0f} mm", k == 0)
                  for k, i in enumerate(_cuts(mosaic_mask, axis, n))]
        out.append((axis, panels))
    return out


def _margin(zooms: Sequence[float], mm: float) -> list[int]:
    return [int(np.ceil(mm / z)) for z in zooms]


# --------------------------------------------------------------------------- subject figures

def segmentation_figure(t1: nib.Nifti1Image, mask, gm, n_cuts: int = 7,
                        title: str = "Brain mask and grey matter") -> bytes:
    """T1w with the brain mask (red) and grey matter (probability ≥ 0.5, blue) outlined.

    Parameters
    ----------
    t1
        The T1w image (defines the grid).
    mask, gm
        Brain mask and GM probability, images or arrays on the T1w grid.
    n_cuts
        Slices per view (axial, coronal, sagittal).
    """
    grid = _Grid(t1)
    t1a = grid.array(t1)
    brain = grid.array(mask, order=0) > 0.5
    gma = grid.array(gm)
    ref = brain if brain.any() else t1a > np.percentile(t1a, 50)
    mosaic = _Mosaic(_bbox(ref, _margin(grid.zooms, 12)), grid.zooms)
    vmin, vmax = _robust_range(_subsample(t1a[ref] if ref.any() else t1a.ravel()), 0.5, 99.5)
    gm_bin = (gma >= 0.5).astype(np.float32)
    brain_f = brain.astype(np.float32)

    def draw(ax, panel):
        mosaic.show(ax, t1a, panel, cmap="gray", vmin=vmin, vmax=vmax)
        mosaic.outline(ax, gm_bin, panel, GM_COLOR, lw=0.6)
        mosaic.outline(ax, brain_f, panel, MASK_COLOR, lw=1.1)
        _orientation_marks(ax, panel)

    for axis, panels in _view_rows(grid, ref, n_cuts):
        mosaic.rows.append(_Row(panels, VIEWS[axis], draw=draw))
    return mosaic.render(title, legend=[("brain mask", MASK_COLOR),
                                        ("grey matter (p ≥ 0.5)", GM_COLOR)])


def coregistration_figure(t1: nib.Nifti1Image, pet, mask=None, n_cuts: int = 6,
                          title: str = "PET → T1w coregistration") -> bytes:
    """The PET on the T1w grid with the edges of the T1w brain (Canny) on top.

    Parameters
    ----------
    t1
        The T1w image (defines the grid).
    pet
        The PET resampled onto the T1w grid (image or array); a PET on another grid is
        resampled for display.
    mask
        Optional brain mask: edges are taken on the T1w inside it (dilated by 3 mm) and the
        view is cropped to it; without one, on the whole T1w.
    """
    from scipy import ndimage

    grid = _Grid(t1)
    t1a = grid.array(t1)
    peta = grid.array(pet)
    if mask is not None:
        brain = grid.array(mask, order=0) > 0.5
    else:
        brain = t1a > np.percentile(t1a, 60)
    ref = brain if brain.any() else np.ones_like(t1a, bool)
    edge_mask = ndimage.binary_dilation(ref, iterations=max(1, int(round(3 / min(
        grid.zooms))))) if mask is not None else None
    mosaic = _Mosaic(_bbox(ref, _margin(grid.zooms, 10)), grid.zooms)
    inside = peta[ref] if ref.any() else peta.ravel()
    vmin, vmax = 0.0, _robust_range(_subsample(inside), 1, 99.7)[1]

    def draw(ax, panel):
        im = mosaic.show(ax, peta, panel, cmap="inferno", vmin=vmin, vmax=vmax)
        plane = mosaic.cropped(t1a, panel.axis, panel.index)
        pmask = None if edge_mask is None else mosaic.cropped(edge_mask, panel.axis,
                                                              panel.index)
        mosaic.edge_layer(ax, plane, panel, EDGE_COLOR, 1.5, pmask, alpha=0.9)
        _orientation_marks(ax, panel)
        return im

    for k, (axis, panels) in enumerate(_view_rows(grid, ref, n_cuts)):
        mosaic.rows.append(_Row(panels, VIEWS[axis], draw=draw,
                                colorbar={"label": "PET (image units)"} if k == 0 else None))
    return mosaic.render(title, legend=[("T1w edges (Canny)", EDGE_COLOR)])


def template_figure(t1_in_template: nib.Nifti1Image, template: nib.Nifti1Image,
                    template_mask, n_cuts: int = 7,
                    title: str = "T1w → template registration") -> bytes:
    """The subject's T1w resampled to the template, with the template's brain outline (red)
    and the edges of the template T1w (green) on top.

    ``template`` and ``template_mask`` are brought onto the grid of ``t1_in_template`` (e.g. a
    2 mm version of the template grid).
    """
    grid = _Grid(t1_in_template)
    sub = grid.array(t1_in_template)
    tpl = grid.array(template)
    tmask = grid.array(template_mask, order=0) > 0.5
    ref = tmask if tmask.any() else sub > 0
    mosaic = _Mosaic(_bbox(ref, _margin(grid.zooms, 8)), grid.zooms)
    vmin, vmax = _robust_range(_subsample(sub[ref] if ref.any() else sub.ravel()), 0.5, 99.5)
    tmask_f = tmask.astype(np.float32)

    def draw(ax, panel):
        mosaic.show(ax, sub, panel, cmap="gray", vmin=vmin, vmax=vmax)
        plane = mosaic.cropped(tpl, panel.axis, panel.index)
        pmask = mosaic.cropped(tmask, panel.axis, panel.index)
        mosaic.edge_layer(ax, plane, panel, EDGE_COLOR, 2.0, pmask if pmask.any() else None,
                          alpha=0.75)
        mosaic.outline(ax, tmask_f, panel, MASK_COLOR, lw=1.1)
        _orientation_marks(ax, panel)

    for axis, panels in _view_rows(grid, ref, n_cuts):
        mosaic.rows.append(_Row(panels, VIEWS[axis], draw=draw))
    return mosaic.render(title, legend=[("template brain outline", MASK_COLOR),
                                        ("template T1w edges", EDGE_COLOR)])


def pet_figure(real, pseudo, mask, sd=None, n_cuts: int = 7, units: str = "image units",
               title: str = "Real and pseudo-normal PET") -> bytes:
    """Real and pseudo-normal PET on one colour scale, their difference D = real − pseudo, and
    the SD of the pseudo-normal samples when given; the same axial slices in every row.

    Parameters
    ----------
    real
        The real PET on the T1w grid (image: defines the grid).
    pseudo, mask, sd
        Images or arrays on the same grid (``sd``: SynDiff's sample SD, optional).
    """
    if not isinstance(real, nib.spatialimages.SpatialImage):
        real = nib.Nifti1Image(np.asarray(real, np.float32), np.eye(4))
    grid = _Grid(real)
    ra = grid.array(real)
    pa = grid.array(pseudo)
    brain = grid.array(mask, order=0) > 0.5
    sda = grid.array(sd)
    ref = brain if brain.any() else (ra != 0) | (pa != 0)
    ref = ref if ref.any() else np.ones_like(ra, bool)
    mosaic = _Mosaic(_bbox(ref, _margin(grid.zooms, 4)), grid.zooms)
    both = np.concatenate([_subsample(ra[ref]), _subsample(pa[ref])])
    vmax = _robust_range(both, 1, 99.7)[1]
    diff = np.where(ref, ra - pa, 0.0).astype(np.float32)
    dlim = float(np.percentile(np.abs(_subsample(diff[ref])), 99.5)) or 1.0
    nan_out = lambda a: np.where(ref, a, np.nan).astype(np.float32)  # noqa: E731
    ra, pa, diff = nan_out(ra), nan_out(pa), nan_out(diff)
    panels = [_Panel(2, i, f"z = {grid.world(2, i):.0f} mm", k == 0)
              for k, i in enumerate(_cuts(ref, 2, n_cuts, 0.2, 0.92))]

    def drawer(arr, **kw):
        def draw(ax, panel):
            im = mosaic.show(ax, arr, panel, **kw)
            _orientation_marks(ax, panel)
            return im
        return draw

    rows = [("real PET", ra, dict(cmap="inferno", vmin=0, vmax=vmax), f"PET ({units})"),
            ("pseudo-normal", pa, dict(cmap="inferno", vmin=0, vmax=vmax), f"PET ({units})"),
            ("D = real − pseudo", diff, dict(cmap="RdBu_r", vmin=-dlim, vmax=dlim),
             f"D ({units})")]
    if sda is not None:
        sda = nan_out(sda)
        smax = _robust_range(_subsample(sda[ref]), 1, 99.5)[1]
        rows.append(("SD of samples", sda, dict(cmap="viridis", vmin=0, vmax=smax),
                     f"SD ({units})"))
    for label, arr, kw, cbar in rows:
        mosaic.rows.append(_Row(panels, label, draw=drawer(arr, **kw),
                                colorbar={"label": cbar}, max_height_in=2.0))
    return mosaic.render(title)


def _cluster_sizes(labels: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(labels[labels > 0].astype(int), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def zmap_figure(t1: nib.Nifti1Image, z, labels, z_threshold: float,
                cluster_names: Mapping[int, str] | None = None, n_cuts: int = 7,
                title: str = "Z-map (real − pseudo-normal PET)") -> bytes:
    """The negative part of the Z-map over the T1w with each cluster outlined in its own
    colour; top row: orthogonal cuts through the largest cluster, bottom row: axial slices
    over the clusters' extent (the whole brain when there is none).

    Parameters
    ----------
    t1
        The T1w image (defines the grid).
    z, labels
        Z-map and cluster labels (0 = none, 1..N) on the T1w grid.
    z_threshold
        The detection threshold (positive; clusters are Z < −z_threshold), marked on the
        colour bar.
    cluster_names
        Optional label → name (e.g. the region) for the legend.
    """
    from matplotlib.colors import LinearSegmentedColormap

    grid = _Grid(t1)
    t1a = grid.array(t1)
    za = grid.array(z)
    lab = np.rint(grid.array(labels, order=0)).astype(np.int32)
    sizes = _cluster_sizes(lab)
    head = t1a > np.percentile(t1a, 55)
    zone = (za != 0) | head
    mosaic = _Mosaic(_bbox(za != 0 if (za != 0).any() else zone, _margin(grid.zooms, 12)),
                     grid.zooms)
    vmin_t, vmax_t = _robust_range(_subsample(t1a[mosaic.crop].ravel()), 1, 99.5)
    thr = abs(float(z_threshold))
    below = za[za <= -thr]
    zmin = float(min(-thr - 1.0, np.percentile(below, 1) if below.size else -thr - 1.0))
    neg = np.where(za <= -thr, za, np.nan).astype(np.float32)
    cmap = LinearSegmentedColormap.from_list("zneg", ["#1a1aff", "#0a7cff", "#00d5ff",
                                                      "#aef8ff"])
    colors = {lbl: CLUSTER_COLORS[k % len(CLUSTER_COLORS)]
              for k, lbl in enumerate(sorted(sizes, key=lambda l: -sizes[l]))}
    if sizes:
        largest = max(sizes, key=lambda l: sizes[l])
        vox = np.argwhere(lab == largest)
        centre = vox[np.argmin(((vox - vox.mean(axis=0)) ** 2).sum(axis=1))]
        extent = (lab > 0)
    else:
        largest = None
        brainish = za != 0 if (za != 0).any() else head
        vox = np.argwhere(brainish)
        centre = np.rint(vox.mean(axis=0)).astype(int) if len(vox) else \
            np.array(grid.canonical_shape) // 2
        extent = brainish
    ortho = [_Panel(a, int(centre[a]), f"{AXIS_LETTER[a]} = {grid.world(a, centre[a]):.0f} mm",
                    True) for a in (0, 1, 2)]
    if sizes:
        zcuts = _cuts(extent, 2, n_cuts, 0.0, 1.0)
        if len(zcuts) < 3:  # a thin cluster: show the slices around it
            c = zcuts[0] if zcuts else int(centre[2])
            step = max(1, int(round(4 / grid.zooms[2])))
            zcuts = sorted({min(max(c + k * step, 0), grid.canonical_shape[2] - 1)
                            for k in range(-(n_cuts // 2), n_cuts // 2 + 1)})
    else:
        zcuts = _cuts(extent, 2, n_cuts, 0.15, 0.9)
    axial = [_Panel(2, i, f"z = {grid.world(2, i):.0f} mm", k == 0) for k, i in enumerate(zcuts)]

    def draw(ax, panel):
        mosaic.show(ax, t1a, panel, cmap="gray", vmin=vmin_t, vmax=vmax_t)
        im = mosaic.show(ax, neg, panel, cmap=cmap, vmin=zmin, vmax=-thr,
                         interpolation="nearest", alpha=0.85)
        plane = mosaic.cropped(lab, panel.axis, panel.index)
        for lbl in np.unique(plane[plane > 0]):
            mosaic.outline_plane(ax, (plane == lbl).astype(np.float32), panel,
                                 colors[int(lbl)], lw=1.6 if lbl == largest else 1.2)
        _orientation_marks(ax, panel)
        return im

    cbar = {"label": f"Z (≤ −{thr:g})"}
    mosaic.rows.append(_Row(ortho, "largest cluster" if sizes else "no cluster", draw=draw,
                            colorbar=cbar, max_height_in=3.2, gap_in=0.25))
    mosaic.rows.append(_Row(axial, "axial", draw=draw, max_height_in=2.0))
    legend = []
    for lbl in sorted(sizes, key=lambda l: -sizes[l])[:len(CLUSTER_COLORS)]:
        name = (cluster_names or {}).get(lbl)
        legend.append((f"cluster {lbl}" + (f": {name}" if name else ""), colors[lbl]))
    full = f"{title}; clusters at Z < −{thr:g}" + ("" if sizes else ": none")
    return mosaic.render(full, legend=legend[:6] or None)


__all__ = ["segmentation_figure", "coregistration_figure", "template_figure", "pet_figure",
           "zmap_figure"]
