"""Model presets: the template-aligned model grids, and each model's preset resolved from its
registry entry (network sizes, training defaults).

``paper``
    The published configurations (CycleGAN: Zhu et al. 2017; SynDiff: Özbey et al. 2023) on
    256² axial slices of a 1 mm grid aligned to MNI152NLin2009aSym.
``small``
    CPU-trainable: a 2 mm grid (96 × 120 in-plane, 80 slices), narrow networks, fewer blocks.
``tiny``
    Tests and smoke runs: a 6 mm grid and networks of a few thousand parameters.

Every value here ends up in the model card, so a trained model is fully described by its card.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from pseudopet_bids.models.registry import model_spec, trainable_models

#: Preset names; each also names a model grid (:data:`GRIDS`).
PRESETS = ("paper", "small", "tiny")
#: ``--preset`` value resolved by the device: ``paper`` on a GPU, ``small`` on CPU (the paper
#: networks take 8–20 s per step on 2 CPU cores: 200 000 steps are weeks).
AUTO_PRESET = "auto"


def resolve_preset(requested: str, device_type: str) -> str:
    """The preset to train: ``requested``, or for :data:`AUTO_PRESET` ``paper`` on CUDA and
    ``small`` elsewhere."""
    if requested != AUTO_PRESET:
        return requested
    return "paper" if device_type == "cuda" else "small"


@dataclass(frozen=True)
class ModelGrid:
    """A box in template space (RAS mm) on which models see the data.

    Axial slices are the x–y planes; ``shape`` is (nx, ny, nz). The box is centred on ``centre``
    (template mm); MNI152NLin2009aSym's brain fits in 192 × 240 × 160 mm around (0, −18, 8).
    """

    voxel_mm: float
    shape: tuple[int, int, int]
    centre: tuple[float, float, float] = (0.0, -18.0, 8.0)

    def affine(self) -> np.ndarray:
        """4 × 4 voxel → template RAS mm matrix of the grid."""
        aff = np.diag([self.voxel_mm] * 3 + [1.0])
        half = (np.asarray(self.shape, dtype=float) - 1) / 2 * self.voxel_mm
        aff[:3, 3] = np.asarray(self.centre) - half
        return aff

    def to_dict(self) -> dict[str, Any]:
        return {"voxel_mm": self.voxel_mm, "shape": list(self.shape), "centre": list(self.centre),
                "space": "MNI152NLin2009aSym", "slice_axis": "z (axial)"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelGrid":
        nx, ny, nz = (int(v) for v in d["shape"])
        cx, cy, cz = (float(v) for v in d["centre"])
        return cls(float(d["voxel_mm"]), (nx, ny, nz), (cx, cy, cz))


GRIDS = {
    "paper": ModelGrid(1.0, (256, 256, 192)),
    "small": ModelGrid(2.0, (96, 120, 80)),
    "tiny": ModelGrid(6.0, (32, 40, 28)),
}


def preset(model: str, name: str) -> dict[str, Any]:
    """The full hyper-parameter dict of a trainable ``model`` at preset ``name``.

    Returns a fresh dict with ``grid`` (a :class:`ModelGrid`), the network sizes, the training
    hyper-parameters, ``batch_size`` and ``steps`` (default training length), from the model's
    registry entry (:mod:`pseudopet_bids.models.registry`).
    """
    spec = model_spec(model)
    if not spec.trainable:
        raise ValueError(f"{model!r} is not a trainable model; choose one of "
                         f"{', '.join(trainable_models())}")
    if name not in PRESETS or name not in spec.presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    out = copy.deepcopy({**spec.training, **spec.presets[name]})
    out["grid"] = GRIDS[name]
    return out


def card_hparams(hp: dict[str, Any]) -> dict[str, Any]:
    """JSON-able copy of a preset dict (grid expanded, tuples as lists)."""
    out: dict[str, Any] = {}
    for key, value in hp.items():
        if isinstance(value, ModelGrid):
            out[key] = value.to_dict()
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = value
    return out


def hparams_from_card(d: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`card_hparams`."""
    out = dict(d)
    out["grid"] = ModelGrid.from_dict(d["grid"])
    for key in ("ch_mult", "attn_resolutions", "betas"):
        if key in out:
            out[key] = tuple(out[key])
    return out


__all__ = ["PRESETS", "AUTO_PRESET", "resolve_preset", "ModelGrid", "GRIDS", "preset", "card_hparams",
           "hparams_from_card"]
