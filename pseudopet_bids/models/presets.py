"""Model presets: network sizes, the template-aligned model grid and the training defaults.

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

MODELS = ("cyclegan", "syndiff")
PRESETS = ("paper", "small", "tiny")


@dataclass(frozen=True)
class ModelGrid:
    """A box in template space (RAS mm) on which models see the data.

    Axial slices are the x–y planes; ``shape`` is (nx, ny, nz). The box is centred on ``centre``
    (template mm); MNI152NLin2009aSym's brain fits in 192 × 240 × 160 mm around (0, −18, 8).
    """

    voxel_mm: float
    shape: tuple[int, int, int]
    centre: tuple[float, float, float] = (0.0, -18.0, 8.0)

    def affine(self):
        """4 × 4 voxel → template RAS mm matrix of the grid."""
        import numpy as np

        aff = np.diag([self.voxel_mm] * 3 + [1.0])
        half = (np.asarray(self.shape, dtype=float) - 1) / 2 * self.voxel_mm
        aff[:3, 3] = np.asarray(self.centre) - half
        return aff

    def to_dict(self) -> dict[str, Any]:
        return {"voxel_mm": self.voxel_mm, "shape": list(self.shape), "centre": list(self.centre),
                "space": "MNI152NLin2009aSym", "slice_axis": "z (axial)"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelGrid":
        return cls(float(d["voxel_mm"]), tuple(int(v) for v in d["shape"]),
                   tuple(float(v) for v in d["centre"]))


GRIDS = {
    "paper": ModelGrid(1.0, (256, 256, 192)),
    "small": ModelGrid(2.0, (96, 120, 80)),
    "tiny": ModelGrid(6.0, (32, 40, 28)),
}

_CYCLEGAN = {
    "paper": dict(ngf=64, n_blocks=9, ndf=64, n_layers=3, batch_size=1, steps=200_000),
    "small": dict(ngf=16, n_blocks=6, ndf=16, n_layers=3, batch_size=4, steps=3000),
    "tiny": dict(ngf=4, n_blocks=1, ndf=4, n_layers=2, batch_size=2, steps=20),
}
#: Shared CycleGAN training hyper-parameters (Zhu et al. 2017).
CYCLEGAN_TRAINING = dict(lambda_cycle=10.0, lambda_identity=0.5, pool_size=50, lr=2e-4,
                         betas=(0.5, 0.999), gan_loss="lsgan")

_SYNDIFF = {
    "paper": dict(nf=64, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,),
                  nz=100, z_emb_dim=256, n_mlp=3, t_emb_dim=256, ndf_diff=64, n_down_disc=6,
                  ngf_nd=64, n_blocks_nd=6, ndf_nd=64, batch_size=1, steps=200_000),
    "small": dict(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(12,),
                  nz=32, z_emb_dim=64, n_mlp=2, t_emb_dim=64, ndf_diff=16, n_down_disc=3,
                  ngf_nd=16, n_blocks_nd=4, ndf_nd=16, batch_size=4, steps=1000),
    "tiny": dict(nf=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
                 nz=4, z_emb_dim=8, n_mlp=1, t_emb_dim=8, ndf_diff=4, n_down_disc=2,
                 ngf_nd=4, n_blocks_nd=1, ndf_nd=4, batch_size=2, steps=20),
}
#: Shared SynDiff training hyper-parameters (Özbey et al. 2023, icon-lab/SynDiff defaults).
SYNDIFF_TRAINING = dict(num_timesteps=4, beta_min=0.1, beta_max=20.0, lambda_l1=0.5,
                        r1_gamma=1.0, lazy_reg=10, lr_g=1.6e-4, lr_d=1e-4, lr_min=1e-5,
                        betas=(0.5, 0.9), ema_decay=0.999)


def preset(model: str, name: str) -> dict[str, Any]:
    """The full hyper-parameter dict of ``model`` (cyclegan/syndiff) at preset ``name``.

    Returns a fresh dict with ``grid`` (a :class:`ModelGrid`), the network sizes, the training
    hyper-parameters, ``batch_size`` and ``steps`` (default training length).
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    table, training = ((_CYCLEGAN, CYCLEGAN_TRAINING) if model == "cyclegan"
                       else (_SYNDIFF, SYNDIFF_TRAINING))
    out = copy.deepcopy({**training, **table[name]})
    out["grid"] = GRIDS[name]
    return out


def card_hparams(hp: dict[str, Any]) -> dict[str, Any]:
    """JSON-able copy of a preset dict (grid expanded, tuples as lists)."""
    out = {}
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


__all__ = ["MODELS", "PRESETS", "ModelGrid", "GRIDS", "preset", "card_hparams",
           "hparams_from_card"]
