"""The interface every trainable translation model offers to the trainer and to synthesis.

A model is a plain ``nn.Module`` holding all its networks. Training is described as a list of
:class:`Phase` objects — one optimizer each (e.g. discriminators, then generators) — and one loss
function per phase; the generic trainer (``train/trainer.py``) owns the loop, devices, AMP,
gradient accumulation, EMA, data parallelism and checkpoints, so no model carries its own copy
of a training loop. Domain ``mri`` is the T1w, domain ``pet`` the FDG PET; both are images in
[−1, 1] with the same number of channels (``2k + 1`` with ``k`` context slices).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Phase:
    """One optimisation phase of a training step.

    Attributes
    ----------
    name
        Optimizer name (``G``, ``D``), also the key of its loss in the logs.
    modules
        Names of the sub-modules whose parameters this phase updates.
    lr, betas
        Adam settings.
    schedule
        ``linear-half`` (constant, then linear decay to 0 over the second half of training;
        CycleGAN) or ``cosine`` (cosine decay to ``lr_min``; SynDiff).
    lr_min
        Final learning rate of the cosine schedule.
    """

    name: str
    modules: tuple[str, ...]
    lr: float
    betas: tuple[float, float]
    schedule: str
    lr_min: float = 0.0


class TranslationModel(nn.Module):
    """Base class of the unpaired MRI → PET models (see module docstring)."""

    #: registry name (``cyclegan``, ``syndiff``)
    kind: str = ""
    #: sub-modules whose weights are averaged by the trainer's EMA, and the decay
    ema_modules: tuple[str, ...] = ()
    ema_decay: float | None = None
    #: whether the translation is stochastic (several samples are meaningful)
    stochastic: bool = False

    def __init__(self, hparams: dict[str, Any], channels: int):
        super().__init__()
        self.hparams = dict(hparams)
        self.channels = int(channels)

    def phases(self) -> list[Phase]:
        """The optimisation phases of one step, in order."""
        raise NotImplementedError

    def phase_loss(self, phase: str, batch: dict[str, torch.Tensor], ctx: dict[str, Any],
                   step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of ``phase`` on one (micro-)batch.

        Parameters
        ----------
        phase
            A :attr:`Phase.name`.
        batch
            ``{"mri": (B, C, H, W), "pet": (B, C, H, W)}``, unpaired.
        ctx
            A dict shared by the phases of one step for this micro-batch (e.g. the generator
            phase leaves its fakes for the discriminator phase).
        step
            The global step (0-based), for lazy regularisation.

        Returns
        -------
        loss, logs
            The scalar to back-propagate and named detached scalar tensors for the log (kept
            on the device: the trainer reads them once per logging interval, not per step).
        """
        raise NotImplementedError

    @torch.no_grad()
    def translate(self, mri: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        """Pseudo-normal PET slices for T1w slices ``mri`` (B, C, H, W) in [−1, 1]."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Training-only state that is not a parameter (e.g. image pools), for checkpoints."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

    def inference_modules(self) -> tuple[str, ...]:
        """Sub-modules needed by :meth:`translate` (the others are training-only)."""
        raise NotImplementedError

    def export_modules(self) -> tuple[str, ...]:
        """Sub-modules whose weights a trained model folder keeps: :meth:`inference_modules`,
        plus any that another inference setting of the same weights would need."""
        return self.inference_modules()


def adversarial_loss(logits: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """GAN loss on discriminator outputs.

    ``lsgan``: least squares to 1 (real) or 0 (fake) (Mao et al. 2017; CycleGAN's default).
    ``logistic``: the non-saturating logistic loss, softplus(−D) for real and softplus(D) for
    fake (SynDiff / DDGAN).
    """
    if kind == "lsgan":
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return torch.mean((logits - target) ** 2)
    if kind == "logistic":
        return nn.functional.softplus(-logits if real else logits).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")
