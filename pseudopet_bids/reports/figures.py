"""Report figures: quality checks of one subject and the group statistics, as PNG bytes.

Subject figures are slice mosaics drawn with matplotlib directly from the voxel arrays (no
resampling of the 1 mm grid for display): every image of a figure is brought onto the grid of
its first image (the T1w grid for all outputs of the participant workflow), reoriented to the
closest RAS orientation, cropped to the brain's bounding box, and shown in neurological
convention (left hemisphere on the left of axial and coronal slices, anterior to the right of
sagittal slices). Overlays are outlines (``contour``), edge maps (Canny, per displayed slice) or
colour maps with their colour bars. The registration figures come in two frames of one
layout (the registered image, the reference image) that the report shows in turn. Group figures
are in :mod:`group_figures`.

Every function returns PNG bytes (:func:`pseudopet_bids.reports.html.png_bytes`), palette
quantized so that a figure stays well under 200 kB, and closes its figure.
"""

from __future__ import annotations

from typing import Mapping

import nibabel as nib
import numpy as np

from pseudopet_bids.reports import planes
from pseudopet_bids.reports.mosaic import (AXIS_LETTER, CLUSTER_COLORS, EDGE_COLOR, GM_COLOR,
                                           MASK_COLOR, VIEWS, _bbox, _cuts, _Grid, _margin,
                                           _Mosaic, _orientation_marks, _Panel, _robust_range,
                                           _Row, _subsample, _view_rows)


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


#: The two frames of a registration flicker: the registered (moving) image, the reference.
FRAMES = ("registered", "reference")


def _check_frame(frame: str) -> None:
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {', '.join(FRAMES)}, not {frame!r}")


def coregistration_figure(t1: nib.Nifti1Image, pet, mask=None, n_cuts: int = 6,
                          title: str = "PET → T1w coregistration",
                          frame: str = "registered") -> bytes:
    """The PET on the T1w grid with the edges of the T1w brain (Canny) on top.

    ``frame="reference"`` draws the T1w under the same edges instead, with the same layout and
    pixel size: shown in turn (a flicker), the two frames make a misregistration move.

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

    _check_frame(frame)
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
    if frame == "reference":
        shown, cmap, unit = t1a, "gray", "T1w (image units)"
        vmin, vmax = _robust_range(_subsample(t1a[ref] if ref.any() else t1a.ravel()),
                                   0.5, 99.5)
    else:
        shown, cmap, unit = peta, "inferno", "PET (image units)"
        inside = peta[ref] if ref.any() else peta.ravel()
        vmin, vmax = 0.0, _robust_range(_subsample(inside), 1, 99.7)[1]

    def draw(ax, panel):
        im = mosaic.show(ax, shown, panel, cmap=cmap, vmin=vmin, vmax=vmax)
        plane = mosaic.cropped(t1a, panel.axis, panel.index)
        pmask = None if edge_mask is None else mosaic.cropped(edge_mask, panel.axis,
                                                              panel.index)
        mosaic.edge_layer(ax, plane, panel, EDGE_COLOR, 1.5, pmask, alpha=0.9)
        _orientation_marks(ax, panel)
        return im

    for k, (axis, panels) in enumerate(_view_rows(grid, ref, n_cuts)):
        mosaic.rows.append(_Row(panels, VIEWS[axis], draw=draw,
                                colorbar={"label": unit} if k == 0 else None))
    return mosaic.render(title, legend=[("T1w edges (Canny)", EDGE_COLOR)], tight=False)


def template_figure(t1_in_template: nib.Nifti1Image, template: nib.Nifti1Image,
                    template_mask, n_cuts: int = 7,
                    title: str = "T1w → template registration",
                    frame: str = "registered") -> bytes:
    """The subject's T1w resampled to the template, with the template's brain outline (red)
    and the edges of the template T1w (green) on top.

    ``template`` and ``template_mask`` are brought onto the grid of ``t1_in_template`` (e.g. a
    2 mm version of the template grid). ``frame="reference"`` draws the template T1w under
    the same outlines instead, with the same layout and pixel size (the flicker's other frame).
    """
    _check_frame(frame)
    grid = _Grid(t1_in_template)
    sub = grid.array(t1_in_template)
    tpl = grid.array(template)
    tmask = grid.array(template_mask, order=0) > 0.5
    ref = tmask if tmask.any() else sub > 0
    mosaic = _Mosaic(_bbox(ref, _margin(grid.zooms, 8)), grid.zooms)
    shown = tpl if frame == "reference" else sub
    vmin, vmax = _robust_range(_subsample(shown[ref] if ref.any() else shown.ravel()),
                               0.5, 99.5)
    tmask_f = tmask.astype(np.float32)

    def draw(ax, panel):
        mosaic.show(ax, shown, panel, cmap="gray", vmin=vmin, vmax=vmax)
        plane = mosaic.cropped(tpl, panel.axis, panel.index)
        pmask = mosaic.cropped(tmask, panel.axis, panel.index)
        mosaic.edge_layer(ax, plane, panel, EDGE_COLOR, 2.0, pmask if pmask.any() else None,
                          alpha=0.75)
        mosaic.outline(ax, tmask_f, panel, MASK_COLOR, lw=1.1)
        _orientation_marks(ax, panel)

    for axis, panels in _view_rows(grid, ref, n_cuts):
        mosaic.rows.append(_Row(panels, VIEWS[axis], draw=draw))
    return mosaic.render(title, legend=[("template brain outline", MASK_COLOR),
                                        ("template T1w edges", EDGE_COLOR)], tight=False)


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
    colour; top row: orthogonal cuts through cluster 1 (the top-ranked), bottom row: axial slices
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
    # from the most negative Z (vmin) to the threshold: the strongest deficits brightest
    # (yellow), the weakest dark red, so that they stand out most on the grey T1w
    cmap = LinearSegmentedColormap.from_list(
        "zneg", [tuple(c / 255 for c in rgb) for _, rgb in reversed(planes.Z_DEFICIT_STOPS)])
    # labels are ranks (1 = top-ranked cluster: detect/confidence.py)
    colors = {lbl: CLUSTER_COLORS[k % len(CLUSTER_COLORS)] for k, lbl in enumerate(sorted(sizes))}
    if sizes:
        largest = min(sizes)
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

    cbar = {"label": f"Z (≤ −{thr:g}; brighter = stronger deficit)"}
    mosaic.rows.append(_Row(ortho, f"cluster {largest} (top-ranked)" if sizes else "no cluster",
                            draw=draw,
                            colorbar=cbar, max_height_in=3.2, gap_in=0.25))
    mosaic.rows.append(_Row(axial, "axial", draw=draw, max_height_in=2.0))
    legend = []
    for lbl in sorted(sizes)[:len(CLUSTER_COLORS)]:
        name = (cluster_names or {}).get(lbl)
        legend.append((f"cluster {lbl}" + (f": {name}" if name else ""), colors[lbl]))
    full = f"{title}; clusters at Z < −{thr:g}" + ("" if sizes else ": none")
    return mosaic.render(full, legend=legend[:6] or None)


__all__ = ["segmentation_figure", "coregistration_figure", "template_figure", "pet_figure",
           "zmap_figure", "FRAMES"]
