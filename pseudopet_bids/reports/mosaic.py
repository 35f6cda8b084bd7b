"""Slice-mosaic machinery of the subject figures: display grid (closest RAS of the first image),
cuts, edges, outlines and a row/panel layout rendered with matplotlib (see :mod:`figures`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import nibabel as nib
import numpy as np

from pseudopet_bids.reports.html import png_bytes

DPI = 90
WIDTH_IN = 12.0
MAX_COLORS = 256
MAX_BYTES = 190_000
VIEWS = {0: "sagittal", 1: "coronal", 2: "axial"}
AXIS_LETTER = {0: "x", 1: "y", 2: "z"}
#: Cluster outlines of the Z-map: cool colours, apart from its red-to-yellow Z scale.
CLUSTER_COLORS = ("#00e5ff", "#39ff14", "#ff4df0", "#ffffff", "#4d8bff", "#b388ff", "#00ffa6",
                  "#9ec9ff", "#d9d9ff", "#00b3b3")
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
        finite = np.isfinite(data)
        if not finite.all():  # NaN and ±inf to 0 (np.nan_to_num: 4 passes and a copy)
            data = np.where(finite, data, np.float32(0.0))
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
               width_in: float = WIDTH_IN, facecolor: str = "black", tight: bool = True
               ) -> bytes:
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
        try:
            return png_bytes(fig, dpi=DPI, max_colors=MAX_COLORS, max_bytes=MAX_BYTES,
                             tight=tight)
        finally:
            # rendering consumes the rows: their draw functions close over this mosaic and the
            # figure's volumes, a reference cycle that kept those volumes (about 300 MB for a
            # 1 mm T1w) in memory until the next garbage collection
            self.rows.clear()

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
