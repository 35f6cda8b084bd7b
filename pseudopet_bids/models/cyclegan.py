"""CycleGAN for unpaired T1w → FDG PET translation.

Zhu, Park, Isola, Efros. "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks", ICCV 2017 (reference code: junyanz/pytorch-CycleGAN-and-pix2pix). Two ResNet
generators (MRI→PET, PET→MRI), two 70×70 PatchGAN discriminators, least-squares GAN loss, cycle
consistency λ = 10 in both directions, identity loss 0.5·λ, image pools of 50 fakes for the
discriminators, Adam (2e-4, β1 0.5), constant learning rate for the first half of training and a
linear decay to 0 over the second half. Hyper-parameters come from ``models/presets.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pseudopet_bids.models.base import Phase, TranslationModel, adversarial_loss
from pseudopet_bids.models.networks import PatchDiscriminator, ResnetGenerator


class ImagePool(nn.Module):
    """History of generated images shown to a discriminator (Shrivastava et al. 2017).

    Until the pool is full every fake is stored and returned; afterwards each fake is, with
    probability 1/2, swapped for a stored one. The pool lives in tensors so that checkpoints
    restore it exactly (resumed training then equals uninterrupted training).
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)
        self.images: torch.Tensor | None = None
        self.count = 0

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        images = images.detach()
        if self.images is None:
            self.images = torch.zeros((self.size,) + tuple(images.shape[1:]),
                                      dtype=images.dtype, device=images.device)
        out = []
        for image in images:
            if self.count < self.size:
                self.images[self.count] = image
                self.count += 1
                out.append(image)
            elif float(torch.rand(())) > 0.5:
                idx = int(torch.randint(0, self.size, ()))
                out.append(self.images[idx].clone())
                self.images[idx] = image
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> dict[str, Any]:
        return {"count": self.count, "images": None if self.images is None
                else self.images.detach().cpu()}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        self.count = int(state["count"])
        images = state["images"]
        self.images = None if images is None else images.to(device)


class CycleGAN(TranslationModel):
    """CycleGAN with MRI → PET as the direction used at inference (see module docstring)."""

    kind = "cyclegan"

    def __init__(self, hparams: dict[str, Any], channels: int = 1):
        super().__init__(hparams, channels)
        hp = self.hparams
        c = self.channels
        self.g_mri2pet = ResnetGenerator(c, c, ngf=hp["ngf"], n_blocks=hp["n_blocks"])
        self.g_pet2mri = ResnetGenerator(c, c, ngf=hp["ngf"], n_blocks=hp["n_blocks"])
        self.d_pet = PatchDiscriminator(c, ndf=hp["ndf"], n_layers=hp["n_layers"])
        self.d_mri = PatchDiscriminator(c, ndf=hp["ndf"], n_layers=hp["n_layers"])
        self.pool_pet = ImagePool(hp["pool_size"])
        self.pool_mri = ImagePool(hp["pool_size"])

    def phases(self) -> list[Phase]:
        hp = self.hparams
        betas = tuple(hp["betas"])
        return [Phase("G", ("g_mri2pet", "g_pet2mri"), hp["lr"], betas, "linear-half"),
                Phase("D", ("d_pet", "d_mri"), hp["lr"], betas, "linear-half")]

    def inference_modules(self) -> tuple[str, ...]:
        return ("g_mri2pet",)

    def phase_loss(self, phase: str, batch: dict[str, torch.Tensor], ctx: dict[str, Any],
                   step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hp = self.hparams
        gan = hp["gan_loss"]
        mri, pet = batch["mri"], batch["pet"]
        l1 = nn.functional.l1_loss
        if phase == "G":
            fake_pet = self.g_mri2pet(mri)
            fake_mri = self.g_pet2mri(pet)
            rec_mri = self.g_pet2mri(fake_pet)
            rec_pet = self.g_mri2pet(fake_mri)
            adv = (adversarial_loss(self.d_pet(fake_pet), True, gan)
                   + adversarial_loss(self.d_mri(fake_mri), True, gan))
            cycle = l1(rec_mri, mri) + l1(rec_pet, pet)
            loss = adv + hp["lambda_cycle"] * cycle
            logs = {"G_adv": adv.detach(), "G_cycle": cycle.detach()}
            if hp["lambda_identity"] > 0:
                idt = l1(self.g_mri2pet(pet), pet) + l1(self.g_pet2mri(mri), mri)
                loss = loss + hp["lambda_cycle"] * hp["lambda_identity"] * idt
                logs["G_idt"] = idt.detach()
            ctx["fake_pet"], ctx["fake_mri"] = fake_pet.detach(), fake_mri.detach()
            return loss, logs
        if phase == "D":
            fake_pet = self.pool_pet.query(ctx["fake_pet"])
            fake_mri = self.pool_mri.query(ctx["fake_mri"])
            d_pet = 0.5 * (adversarial_loss(self.d_pet(pet), True, gan)
                           + adversarial_loss(self.d_pet(fake_pet), False, gan))
            d_mri = 0.5 * (adversarial_loss(self.d_mri(mri), True, gan)
                           + adversarial_loss(self.d_mri(fake_mri), False, gan))
            return d_pet + d_mri, {"D_pet": d_pet.detach(), "D_mri": d_mri.detach()}
        raise ValueError(f"unknown phase {phase!r}")

    @torch.no_grad()
    def translate(self, mri: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        return self.g_mri2pet(mri)

    def extra_state(self) -> dict[str, Any]:
        return {"pool_pet": self.pool_pet.state(), "pool_mri": self.pool_mri.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        device = next(self.parameters()).device
        self.pool_pet.load(state["pool_pet"], device)
        self.pool_mri.load(state["pool_mri"], device)
