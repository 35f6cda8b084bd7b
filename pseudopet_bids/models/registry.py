"""Model registry: name → class, and building a model from a preset or a model card."""

from __future__ import annotations

from typing import Any

from pseudopet_bids.models.base import TranslationModel


def model_class(kind: str) -> type[TranslationModel]:
    """The :class:`TranslationModel` subclass registered as ``kind``."""
    if kind == "cyclegan":
        from pseudopet_bids.models.cyclegan import CycleGAN

        return CycleGAN
    if kind == "syndiff":
        from pseudopet_bids.models.syndiff import SynDiff

        return SynDiff
    raise ValueError(f"unknown model {kind!r}; choose cyclegan or syndiff")


def build_model(kind: str, hparams: dict[str, Any], channels: int) -> TranslationModel:
    """Instantiate ``kind`` with the given hyper-parameters (see ``models/presets.py``).

    ``channels`` is ``2k + 1`` for ``k`` through-plane context slices.
    """
    return model_class(kind)(hparams, channels)
