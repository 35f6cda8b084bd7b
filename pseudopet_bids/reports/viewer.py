"""Interactive offline viewer of one PET in the participant report (NiiVue, WebGL2).

The page embeds everything it shows: the vendored NiiVue bundle (``data/niivue``, BSD-2-Clause,
recorded in ``data/SOURCES.md``), this viewer's own script (``data/viewer/viewer.js``) and the
volumes as base64 gzipped NIfTI-1, so it works from ``file://`` with no network. Volumes are
cropped to the brain mask's bounding box (plus a margin), the PET images averaged onto a 2 mm
grid (:data:`PET_VOXEL_MM`), and all quantised to 8 bits with ``scl_slope``/``scl_inter``
(the Z-map as the deficit −Z, shown from the analysis's threshold up); :func:`quantise` bounds
the round-trip error to half a quantisation step.

Pure functions (:func:`quantise`, :func:`crop_box`, :func:`nifti_gz`, :func:`viewer_html`) build
the section; :func:`pet_viewer` reads the subject's derivatives from disk (the I/O edge).
Where WebGL2 is missing the script shows a message and the static figures instead.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from pseudopet_bids.models.tissue import mask_box
from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.reports import html as H

LOGGER = logging.getLogger(__name__)

#: quantisation kinds: numpy dtype and whether zero must stay exactly zero (signed maps)
DTYPES: dict[str, tuple[type[np.integer], bool]] = {"uint8": (np.uint8, False),
                                                   "int16": (np.int16, True)}
#: margin around the brain mask kept in the cropped volumes (mm)
CROP_MARGIN_MM = 12.0
#: voxel size (mm) at which PET images are embedded: their resolution is coarser than this, so
#: block averages of the T1w-grid PET lose nothing visible and take an eighth of the bytes at
#: 1 mm (NiiVue resamples overlays onto the T1w through their affines)
PET_VOXEL_MM = 2.0
#: upper percentile of the brain's intensities that maps to the top of the 8-bit range: the
#: few brighter voxels (vessels, fat) saturate rather than compress the brain's contrast
CLIP_PERCENTILE = 99.8


@dataclass(frozen=True)
class Quantised:
    """Integer voxel values with the NIfTI scaling that restores them
    (``value = stored * slope + inter``)."""

    values: np.ndarray
    slope: float
    inter: float

    def restore(self) -> np.ndarray:
        """The float values the viewer sees."""
        return self.values.astype(np.float64) * self.slope + self.inter


def quantise(data: np.ndarray, dtype: str = "uint8", lo: float | None = None,
             hi: float | None = None) -> Quantised:
    """Quantise ``data`` onto an integer type with a linear scale.

    Parameters
    ----------
    data
        Finite float values (NaN is stored as 0 after scaling, i.e. as ``inter``).
    dtype
        ``"uint8"`` (range ``[lo, hi]`` onto 0…255) or ``"int16"`` (symmetric about zero:
        ``inter = 0`` so that zero, the background of a Z-map, stays exactly zero).
    lo, hi
        The range to keep (default: the data's range); values outside it are clipped.

    Returns
    -------
    Quantised
        Within ``[lo, hi]`` the restored values differ from ``data`` by at most ``slope / 2``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown quantisation {dtype!r}; one of {', '.join(DTYPES)}")
    kind, symmetric = DTYPES[dtype]
    info = np.iinfo(kind)
    arr = np.nan_to_num(np.asarray(data, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo = float(arr.min()) if lo is None else float(lo)
    hi = float(arr.max()) if hi is None else float(hi)
    if hi < lo:
        raise ValueError(f"empty quantisation range [{lo}, {hi}]")
    if symmetric:
        top = max(abs(lo), abs(hi))
        slope = top / info.max if top > 0 else 1.0
        inter = 0.0
        stored = np.clip(np.rint(np.clip(arr, lo, hi) / slope), -info.max, info.max)
    else:
        slope = (hi - lo) / info.max if hi > lo else 1.0
        inter = lo
        stored = np.clip(np.rint((np.clip(arr, lo, hi) - lo) / slope), 0, info.max)
    return Quantised(stored.astype(kind), float(slope), float(inter))


def crop_box(mask: np.ndarray, zooms: tuple[float, ...], margin_mm: float = CROP_MARGIN_MM
             ) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin_mm`` (clipped to the volume); the whole
    volume when the mask is empty."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    return mask_box(mask, tuple(int(np.ceil(margin_mm / max(float(z), 1e-6)))
                                for z in zooms[:mask.ndim]))


def cropped_affine(affine: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """The affine of ``volume[box]``: the same world coordinates for every kept voxel."""
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] = affine[:3, :3] @ np.array([s.start for s in box], dtype=np.float64) \
        + affine[:3, 3]
    return out


def downsample(data: np.ndarray, affine: np.ndarray, factor: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Means of ``factor``³ voxel blocks (a trailing partial block dropped) and the affine
    of the coarser grid (its voxel centres at the blocks' centres)."""
    if factor <= 1:
        return data, np.asarray(affine, dtype=np.float64)
    n = [s // factor for s in data.shape[:3]]
    if min(n) < 1:
        raise ValueError(f"cannot downsample a {data.shape} volume by {factor}")
    blocks = data[:n[0] * factor, :n[1] * factor, :n[2] * factor].reshape(
        n[0], factor, n[1], factor, n[2], factor)
    out = np.asarray(affine, dtype=np.float64) @ np.diag([factor, factor, factor, 1.0])
    out[:3, 3] = affine[:3, :3] @ np.full(3, (factor - 1) / 2.0) + affine[:3, 3]
    return blocks.mean(axis=(1, 3, 5)), out


def nifti_gz(q: Quantised, affine: np.ndarray, description: str = "") -> bytes:
    """A gzipped NIfTI-1 file (bytes) holding ``q`` with its ``scl_slope``/``scl_inter``;
    sform and qform both set to ``affine`` (NiiVue reads the sform)."""
    img = nib.Nifti1Image(q.values, affine)
    img.header.set_data_dtype(q.values.dtype)
    img.header.set_slope_inter(q.slope, q.inter)
    img.header["descrip"] = description[:79].encode("ascii", "replace")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    # mtime=0: the same volume gives the same bytes (reproducible pages)
    return gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)


def read_nifti_gz(blob: bytes) -> nib.Nifti1Image:
    """Read back :func:`nifti_gz` bytes (for tests and checks)."""
    return nib.Nifti1Image.from_bytes(gzip.decompress(blob))


# --------------------------------------------------------------------------- assets

@lru_cache(maxsize=None)
def _asset(*parts: str) -> str:
    text = resources.files("pseudopet_bids").joinpath("data", *parts).read_text(encoding="utf-8")
    low = text.lower()
    # inlined in a classic <script>: these sequences would end or re-mode the element early
    if "</script" in low or "<!--" in low:
        raise RuntimeError(f"pseudopet_bids/data/{'/'.join(parts)} cannot be inlined in a "
                           "<script> element (it contains '</script' or '<!--')")
    return text


def scripts_html() -> str:
    """The ``<script>`` elements every page with viewers needs once: NiiVue and the viewer."""
    return (f"<script>{_asset('niivue', 'niivue.umd.js')}</script>\n"
            f"<script>{_asset('viewer', 'viewer.js')}</script>\n")


# --------------------------------------------------------------------------- page section

@dataclass(frozen=True)
class Layer:
    """One embedded volume and how the viewer shows it."""

    key: str
    label: str
    kind: str  # "base", "pet" (one of them shown at a time) or "z" (one analysis at a time:
    # the deficit −Z where Z < 0, else 0)
    blob: bytes
    cal_min: float
    cal_max: float
    colormap: str
    threshold: float | None = None


@dataclass(frozen=True)
class ClusterRow:
    """A row of the viewer's cluster table: its text cells and the peak in T1w mm."""

    cells: dict[str, str]
    peak_mm: tuple[float, float, float] | None


def _layer_json(layer: Layer) -> dict:
    return {"key": layer.key, "label": layer.label, "kind": layer.kind,
            "b64": base64.b64encode(layer.blob).decode("ascii"),
            "cal_min": layer.cal_min, "cal_max": layer.cal_max, "colormap": layer.colormap,
            "threshold": layer.threshold}


def _cluster_table(analysis: str, rows: list[ClusterRow] | None, visible: bool) -> str:
    hidden = "" if visible else " hidden"
    if rows is None:
        return (f'<p class="pp-clusters muted" data-analysis="{H.esc(analysis)}"{hidden}>'
                "No cluster table (the analysis did not finish).</p>")
    if not rows:
        return (f'<p class="pp-clusters muted" data-analysis="{H.esc(analysis)}"{hidden}>'
                "No cluster survived the threshold.</p>")
    heads = list(rows[0].cells)
    out = [f'<table class="pp-clusters" data-analysis="{H.esc(analysis)}"{hidden}>',
           "<caption>Clusters of " + H.esc(analysis) + ": click a row to go to its peak"
           "</caption><thead><tr>" + "".join(f"<th>{H.esc(h)}</th>" for h in heads)
           + "</tr></thead><tbody>"]
    for row in rows:
        peak = ("" if row.peak_mm is None else
                ' data-peak="' + ",".join(f"{v:.2f}" for v in row.peak_mm) + '" tabindex="0"')
        out.append(f"<tr{peak}>" + "".join(f"<td>{H.esc(row.cells[h])}</td>" for h in heads)
                   + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def viewer_html(viewer_id: str, title: str, layers: list[Layer],
                clusters: dict[str, list[ClusterRow] | None], fallback: str) -> str:
    """The HTML of one viewer: controls, canvas, cluster tables, embedded data, fallback.

    Parameters
    ----------
    viewer_id
        Unique element id on the page.
    title
        Shown above the viewer.
    layers
        The T1w (``kind="base"``, first), PET images (``"pet"``) and Z-maps (``"z"``, key =
        analysis label).
    clusters
        Analysis label → cluster rows (peaks in T1w mm); None: no cluster table.
    fallback
        HTML shown instead of the canvas where WebGL2 (or JavaScript) is missing: the static
        figures.
    """
    if not layers or layers[0].kind != "base":
        raise ValueError("a viewer needs the T1w as its first layer")
    pets = [layer for layer in layers if layer.kind == "pet"]
    zs = [layer for layer in layers if layer.kind == "z"]
    vid = H.esc(viewer_id)
    pet_radio = "".join(
        f'<label><input type="radio" name="{vid}-pet" value="{H.esc(p.key)}"'
        f'{" checked" if k == 0 else ""}> {H.esc(p.label)}</label> '
        for k, p in enumerate([Layer("", "none", "pet", b"", 0, 0, "")] + pets))
    z_options = "".join(f'<option value="{H.esc(z.key)}"{" selected" if k == 0 else ""}>'
                        f"{H.esc(z.label)}</option>"
                        for k, z in enumerate(zs)) + '<option value="">none</option>'
    tables = "".join(_cluster_table(z.key, clusters.get(z.key), k == 0)
                     for k, z in enumerate(zs))
    data = json.dumps({"id": viewer_id, "layers": [_layer_json(x) for x in layers]},
                      separators=(",", ":"))
    return f"""<div class="pp-viewer" id="{vid}">
<h3>{H.esc(title)}</h3>
<div class="pp-controls">
<span>PET overlay: {pet_radio}</span>
<label>opacity <input type="range" class="pp-opacity" min="0" max="100" value="60"></label>
<label>Z map: <select class="pp-z">{z_options}</select></label>
<label><input type="checkbox" class="pp-radio" checked> radiological convention</label>
<label>view <select class="pp-layout"><option value="multi" selected>three planes</option>
<option value="axial">axial</option><option value="coronal">coronal</option>
<option value="sagittal">sagittal</option></select></label>
</div>
<p class="pp-convention muted"></p>
<div class="pp-stage"><canvas class="pp-canvas" width="960" height="560"></canvas></div>
<p class="pp-status muted" aria-live="polite">Loading the interactive viewer…</p>
<p class="muted">Colour bars, left to right: the PET overlay shown (its units; real and
pseudo-normal on one scale), then the deficit −Z from the analysis's threshold (brighter =
stronger). Only Z below zero is shown.</p>
<p>Crosshair: <output class="pp-pos">n/a</output></p>
{tables}
<div class="pp-fallback" hidden>
<p class="warn">This browser has no WebGL2, so the interactive viewer cannot run here; the static
figures below show the same images.</p>
{fallback}
</div>
<noscript><p class="warn">JavaScript is off: the interactive viewer cannot run; see the
static figures of this section.</p></noscript>
<script type="application/json" class="pp-viewer-data">{data}</script>
</div>"""


CSS = """
.pp-viewer{border:1px solid #ccd;border-radius:6px;padding:8px 12px;margin:12px 0}
.pp-controls{display:flex;flex-wrap:wrap;gap:6px 18px;align-items:center;font-size:14px}
.pp-stage{background:#000;width:100%;max-width:1100px;height:560px}
.pp-canvas{width:100%;height:100%;display:block}
.pp-clusters tr[data-peak]{cursor:pointer}
.pp-clusters tr[data-peak]:hover,.pp-clusters tr.pp-active{background:#dde8ff}
.pp-nowebgl .pp-stage,.pp-nowebgl .pp-controls{display:none}
"""


# --------------------------------------------------------------------------- from disk

def _load(path: Path) -> nib.Nifti1Image | None:
    try:
        img = nib.load(str(path))
        return img if isinstance(img, nib.Nifti1Image) else None
    except (OSError, ValueError, nib.filebasedimages.ImageFileError):
        return None


def _volume(img: nib.Nifti1Image, box: tuple[slice, ...]) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:  # a dynamic PET: the viewer shows the frame average
        data = data.mean(axis=3)
    return data[box]


def _threshold(paths: der.SubjectPaths, analysis: str) -> float | None:
    try:
        side = json.loads(paths.zmap(analysis, ".json").read_text(encoding="utf-8"))
        return abs(float(side["ZThreshold"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cluster_rows(table: pd.DataFrame | None, view: pd.DataFrame) -> list[ClusterRow]:
    """Rows of the readable cluster table ``view`` with the peaks (``peak_[xyz]_mm``) of the
    cluster TSV ``table`` (same order)."""
    if table is None or table.empty:
        return []
    cols = ("peak_x_mm", "peak_y_mm", "peak_z_mm")
    rows = []
    for k in range(len(view)):
        peak = None
        if set(cols) <= set(table.columns):
            vals = [float(table.iloc[k][c]) for c in cols]
            peak = (vals[0], vals[1], vals[2]) if all(np.isfinite(vals)) else None
        rows.append(ClusterRow({str(c): str(view.iloc[k][c]) for c in view.columns}, peak))
    return rows


def pet_viewer(paths: der.SubjectPaths, models: list[str], analyses: list[str],
               tables: dict[str, tuple[pd.DataFrame | None, pd.DataFrame]], fallback: str
               ) -> str | None:
    """The viewer section of one PET from its files on disk, or None when the T1w or the PET
    on the T1w grid is missing or unreadable.

    ``tables`` maps each analysis to (cluster TSV, its readable view); the view's rows are
    shown, the TSV's peaks are where a click on a row moves the crosshair.
    """
    t1 = _load(paths.anat("desc-preproc_T1w.nii.gz"))
    pet = _load(paths.pet(der.PET_OUTPUTS["preproc"]))
    if t1 is None or pet is None:
        return None
    mask_img = _load(paths.anat("desc-brain_mask.nii.gz"))
    shape = t1.shape[:3]
    mask = (np.asarray(mask_img.dataobj) > 0) if mask_img is not None and \
        mask_img.shape[:3] == shape else np.ones(shape, bool)
    box = crop_box(mask, tuple(float(z) for z in t1.header.get_zooms()[:3]))
    affine = cropped_affine(t1.affine, box)
    brain = mask[box]

    def same_grid(img: nib.Nifti1Image) -> bool:
        return img.shape[:3] == shape and np.allclose(img.affine, t1.affine, atol=1e-3)

    t1a = _volume(t1, box)
    t_lo, t_hi = (float(v) for v in np.percentile(t1a[brain] if brain.any() else t1a,
                                                  [0.5, CLIP_PERCENTILE]))
    layers = [Layer("t1w", "T1w", "base", nifti_gz(quantise(t1a, "uint8", min(0.0, t_lo),
                                                            t_hi), affine, "T1w"),
                    max(t_lo, 0.0), t_hi, "gray")]
    # real and pseudo-normal PET on one scale, as in the static figures
    peta = _volume(pet, box) if same_grid(pet) else None
    if peta is None:
        LOGGER.warning("viewer: %s is not on the T1w grid; no viewer", pet.get_filename())
        return None
    p_hi = float(np.percentile(peta[brain] if brain.any() else peta, CLIP_PERCENTILE))
    p_lo = min(0.0, float(peta.min()))
    factor = max(1, int(PET_VOXEL_MM // min(float(z) for z in t1.header.get_zooms()[:3])))

    def pet_blob(data: np.ndarray, what: str) -> bytes:
        small, small_affine = downsample(data, affine, factor)
        return nifti_gz(quantise(small, "uint8", p_lo, p_hi), small_affine, what)

    layers.append(Layer("pet", "real PET", "pet", pet_blob(peta, "real PET"), 0.0, p_hi,
                        "inferno"))
    for model in models:
        img = _load(paths.pseudonormal(model))
        if img is None or not same_grid(img):
            continue
        layers.append(Layer(f"pseudo-{model}", f"pseudo-normal ({model})", "pet",
                            pet_blob(_volume(img, box), f"pseudo-normal {model}"), 0.0, p_hi,
                            "inferno"))
    clusters: dict[str, list[ClusterRow] | None] = {}
    for analysis in analyses:
        img = _load(paths.zmap(analysis))
        if img is None or not same_grid(img):
            continue
        thr = _threshold(paths, analysis) or 0.0
        # the deficit −Z where Z < 0 (what the analysis detects; positive Z stored as 0), so that
        # one colormap and colour bar run from the threshold up to the strongest deficit
        deficit = np.maximum(-_volume(img, box), 0.0)
        top = float(deficit.max())
        layers.append(Layer(analysis, f"{analysis}: −Z ≥ {thr:g}", "z",
                            nifti_gz(quantise(deficit, "uint8", 0.0, top), affine,
                                     f"-Z {analysis}"),
                            thr, max(thr + 1.0, top), "pp_zdeficit", thr))
        table, view = tables.get(analysis, (None, pd.DataFrame()))
        clusters[analysis] = None if table is None else cluster_rows(table, view)
    title = f"Interactive viewer: {paths.pet_prefix}"
    return viewer_html(f"viewer-{paths.pet_prefix}", title, layers, clusters, fallback)


__all__ = ["Quantised", "quantise", "crop_box", "cropped_affine", "downsample", "nifti_gz",
           "read_nifti_gz", "Layer", "ClusterRow", "viewer_html", "scripts_html", "cluster_rows", "pet_viewer",
           "CSS"]
