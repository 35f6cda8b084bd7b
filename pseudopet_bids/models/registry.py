"""Synthesis-model registry: the single source of truth for the models pseudopet knows.

Each entry (:class:`ModelSpec`) gives the name used on the command line and in file names, how
to load its class, its presets (network sizes and training length per preset), its shared
training hyper-parameters, whether its translation is stochastic, its methods text for the
citation boilerplate, and its rank in ``--model auto``. The parser's choices, ``auto``
selection, the presets, reports, the citation text and the Boutiques descriptor read this
registry; adding a model is one new module plus one :func:`register_model` call.

This module imports no torch: the class of a model is loaded only when one is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pseudopet_bids.config import SynthesisConfig

if TYPE_CHECKING:  # pragma: no cover
    from pseudopet_bids.models.base import TranslationModel

#: Citation templates shipped with the package.
BOILERPLATE = Path(__file__).resolve().parents[1] / "data" / "boilerplate"
#: The non-learned baseline: no training, no model folder.
TISSUE = "tissue"


@dataclass(frozen=True)
class ModelSpec:
    """One synthesis model.

    Attributes
    ----------
    name
        ``--model`` value, default model-folder name and architecture name in model cards.
    title
        Name for people (reports, logs).
    loader
        Returns the model class (a :class:`~pseudopet_bids.models.base.TranslationModel`
        subclass; for the non-learned baseline, its predictor class). Heavy imports go here.
    methods
        Citation template: a file (``${placeholders}`` as in ``CITATION.md.tmpl``) or the text.
    presets
        Preset name → network sizes, ``batch_size`` and ``steps`` (trainable models only).
    training
        Hyper-parameters shared by all presets (losses, optimiser).
    stochastic
        Whether several samples of one subject differ (``--n-samples``, SD map).
    auto_rank
        Higher is preferred by ``--model auto`` when several trained models exist.
    trainable
        False for the non-learned baseline.
    options
        Constructor arguments of a non-learned model from the run's synthesis settings.
    references
        Short references recorded in the model cards of trained models.
    """

    name: str
    title: str
    loader: Callable[[], type]
    methods: Path | str
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False
    auto_rank: int = 0
    trainable: bool = True
    options: Callable[[SynthesisConfig], dict[str, Any]] = field(default=lambda _cfg: {})
    references: tuple[str, ...] = ()

    def methods_text(self) -> str:
        """The citation template's text."""
        if isinstance(self.methods, Path):
            return self.methods.read_text(encoding="utf-8")
        return self.methods


_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add (or replace) a model in the registry; returns it.

    Raises
    ------
    ValueError
        The name is not lower-case letters and digits (it becomes part of file names and
        command lines), or clashes with ``auto``.
    """
    if not (spec.name.isascii() and spec.name.isalnum() and spec.name.islower()) \
            or spec.name == "auto":
        raise ValueError(f"model name {spec.name!r}: use lower-case letters and digits, "
                         "not 'auto'")
    _MODELS[spec.name] = spec
    return spec


def unregister_model(name: str) -> None:
    """Remove a model (tests register toy models and remove them again)."""
    _MODELS.pop(name, None)


def model_names() -> tuple[str, ...]:
    """Every registered model, the non-learned baseline first."""
    return tuple(_MODELS)


def trainable_models() -> tuple[str, ...]:
    """Models that ``group --train`` can train, in registry order."""
    return tuple(n for n, s in _MODELS.items() if s.trainable)


def model_spec(name: str) -> ModelSpec:
    """The entry of ``name``.

    Raises
    ------
    ValueError
        No such model.
    """
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of "
                         f"{', '.join(model_names())}") from None


def auto_order() -> tuple[str, ...]:
    """Trainable models in the order ``--model auto`` prefers them."""
    return tuple(sorted(trainable_models(), key=lambda n: -_MODELS[n].auto_rank))


def model_class(kind: str) -> type[TranslationModel]:
    """The :class:`TranslationModel` subclass registered as ``kind``."""
    spec = model_spec(kind)
    if not spec.trainable:
        raise ValueError(f"{kind!r} is not a trainable model; choose one of "
                         f"{', '.join(trainable_models())}")
    return spec.loader()


def build_model(kind: str, hparams: dict[str, Any], channels: int) -> TranslationModel:
    """Instantiate ``kind`` with the given hyper-parameters (see ``models/presets.py``).

    ``channels`` is ``2k + 1`` for ``k`` through-plane context slices.
    """
    return model_class(kind)(hparams, channels)


# --------------------------------------------------------------------------- built-in models
# The loaders import their model module when a model is built: this registry is read by the
# command-line parser (``pseudopet --help`` must not import torch, which CycleGAN and SynDiff
# need; the tissue model's scipy.optimize/linalg would add ~50 ms to it too).
def _tissue() -> type:
    from pseudopet_bids.models.tissue import TissueModel

    return TissueModel


def _cyclegan() -> type:
    from pseudopet_bids.models.cyclegan import CycleGAN

    return CycleGAN


def _syndiff() -> type:
    from pseudopet_bids.models.syndiff import SynDiff

    return SynDiff


register_model(ModelSpec(
    name=TISSUE, title="tissue baseline", loader=_tissue,
    methods=BOILERPLATE / "model_tissue.md.tmpl", trainable=False,
    # One GM uptake per AAL left/right pair: the normal regional pattern at gyral scale, while a
    # deficit covering most of one gyrus or lobe (common in temporal lobe epilepsy) is not
    # absorbed into its own coefficient: the other hemisphere shares it.
    options=lambda syn: dict(pet_fwhm_mm=syn.pet_fwhm, symmetric=True, granularity="aal")))

register_model(ModelSpec(
    name="cyclegan", title="CycleGAN", loader=_cyclegan,
    methods=BOILERPLATE / "model_cyclegan.md.tmpl", auto_rank=1,
    references=("Zhu et al. ICCV 2017 (CycleGAN)",),
    presets={
        "paper": dict(ngf=64, n_blocks=9, ndf=64, n_layers=3, batch_size=1, steps=200_000),
        "small": dict(ngf=16, n_blocks=6, ndf=16, n_layers=3, batch_size=4, steps=3000),
        "tiny": dict(ngf=4, n_blocks=1, ndf=4, n_layers=2, batch_size=2, steps=20),
    },
    # Zhu et al. 2017
    training=dict(lambda_cycle=10.0, lambda_identity=0.5, pool_size=50, lr=2e-4,
                  betas=(0.5, 0.999), gan_loss="lsgan")))

register_model(ModelSpec(
    name="syndiff", title="SynDiff", loader=_syndiff,
    methods=BOILERPLATE / "model_syndiff.md.tmpl", stochastic=True, auto_rank=2,
    # its non-diffusive module is a CycleGAN
    references=("Zhu et al. ICCV 2017 (CycleGAN)", "Ozbey et al. IEEE TMI 2023 (SynDiff)"),
    presets={
        "paper": dict(nf=64, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                      attn_resolutions=(16,), nz=100, z_emb_dim=256, n_mlp=3, t_emb_dim=256,
                      ndf_diff=64, n_down_disc=6, ngf_nd=64, n_blocks_nd=6, ndf_nd=64,
                      batch_size=1, steps=200_000),
        "small": dict(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(12,),
                      nz=32, z_emb_dim=64, n_mlp=2, t_emb_dim=64, ndf_diff=16, n_down_disc=3,
                      ngf_nd=16, n_blocks_nd=4, ndf_nd=16, batch_size=4, steps=1000),
        "tiny": dict(nf=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
                     nz=4, z_emb_dim=8, n_mlp=1, t_emb_dim=8, ndf_diff=4, n_down_disc=2,
                     ngf_nd=4, n_blocks_nd=1, ndf_nd=4, batch_size=2, steps=20),
    },
    # Özbey et al. 2023, icon-lab/SynDiff defaults
    # source: what the diffusive generator is conditioned on at inference (models/syndiff.py)
    training=dict(num_timesteps=4, beta_min=0.1, beta_max=20.0, lambda_l1=0.5, r1_gamma=1.0,
                  lazy_reg=10, lr_g=1.6e-4, lr_d=1e-4, lr_min=1e-5, betas=(0.5, 0.9),
                  ema_decay=0.999, source="real")))
