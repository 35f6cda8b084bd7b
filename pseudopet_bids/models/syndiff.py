"""SynDiff: adversarial diffusion for unpaired T1w → FDG PET translation.

Özbey, Dalmaz, Dar, Bedel, Özturk, Güngör, Çukur. "Unsupervised Medical Image Translation with
Adversarial Diffusion Models", IEEE TMI 2023 (reference code: icon-lab/SynDiff), building on the
denoising diffusion GAN of Xiao, Kreis, Vahdat (ICLR 2022).

* Diffusive module, per direction: a conditional NCSN++ generator predicts the clean target
  x̂₀ from the noisy target x_{t+1} concatenated with the source image, the time step and a latent
  z; the next sample x_t is drawn from the analytic posterior q(x_t | x_{t+1}, x̂₀). Only
  ``num_timesteps`` = 4 large steps of a variance-preserving schedule (β_min 0.1, β_max 20) are
  used, which is why an adversarial projector is needed: a time-conditioned discriminator judges
  (x_t, x_{t+1}) pairs, with the non-saturating logistic loss and a lazy R1 penalty (γ = 1 every
  10 steps) on real pairs.
* Non-diffusive module: a CycleGAN-like pair of ResNet generators with PatchGAN discriminators
  produces, from each unpaired real image, an estimate of it in the other domain; that estimate is
  the *source* the diffusive generator is conditioned on while it learns to reconstruct the real
  image — so the unpaired problem is trained as a paired one.
* Losses: adversarial terms of both modules + 0.5·(L1 cycle of the non-diffusive module + L1
  reconstruction x̂₀ vs the real image). Adam β = (0.5, 0.9), lr_G 1.6e-4, lr_D 1e-4, cosine decay
  to 1e-5; EMA 0.999 of the diffusive generators' weights (applied by the trainer).
* Inference: x_T ~ N(0, I); ``num_timesteps`` reverse steps, each one generator call conditioned
  on the real T1w plus a posterior sample.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from pseudopet_bids.models.base import Phase, TranslationModel, adversarial_loss
from pseudopet_bids.models.networks import (NCSNppGenerator, PatchDiscriminator,
                                            ResnetGenerator, TimeConditionedDiscriminator)

#: Inference sources of the diffusive generator (:meth:`SynDiff.inference_source`).
SOURCES = ("real", "cycle")


def vp_schedule(num_timesteps: int, beta_min: float, beta_max: float, eps: float = 1e-3
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per-step σ and α = √(1 − β) of the discretised variance-preserving SDE.

    Marginal variance at continuous time s ∈ [eps, 1]: 1 − exp(−β_min s − ½(β_max − β_min)s²),
    sampled at ``num_timesteps + 1`` points; β_k = 1 − ᾱ_k / ᾱ_{k−1}, with β_0 = 1e-8.
    Returns arrays of length ``num_timesteps + 1`` (index 0 is the clean image).
    """
    s = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    s = s * (1.0 - eps) + eps
    var = 1.0 - np.exp(-beta_min * s - 0.5 * (beta_max - beta_min) * s ** 2)
    alpha_bars = 1.0 - var
    betas = np.concatenate([[1e-8], 1.0 - alpha_bars[1:] / alpha_bars[:-1]])
    return np.sqrt(betas), np.sqrt(1.0 - betas)


class Diffusion(nn.Module):
    """Forward (q) and posterior coefficients of the schedule, as non-persistent buffers."""

    a_s: torch.Tensor
    sigmas: torch.Tensor
    a_cum: torch.Tensor
    sig_cum: torch.Tensor
    post_c1: torch.Tensor
    post_c2: torch.Tensor
    post_logvar: torch.Tensor

    def __init__(self, num_timesteps: int, beta_min: float, beta_max: float):
        super().__init__()
        sigmas, a_s = vp_schedule(num_timesteps, beta_min, beta_max)
        a_cum = np.cumprod(a_s)
        sig_cum = np.sqrt(1.0 - a_cum ** 2)
        betas = sigmas[1:] ** 2          # posterior uses the steps 1..T
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.concatenate([[1.0], ac[:-1]])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        coefs = {"a_s": a_s, "sigmas": sigmas, "a_cum": a_cum, "sig_cum": sig_cum,
                 "post_c1": betas * np.sqrt(ac_prev) / (1.0 - ac),
                 "post_c2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
                 "post_logvar": np.log(np.clip(post_var, 1e-20, None))}
        for name, value in coefs.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32),
                                 persistent=False)
        self.num_timesteps = num_timesteps

    # The schedule is applied in fp32 whatever the generator's precision: under bf16 autocast
    # the generator's x̂₀ is bf16, and coefficients such as 1 − ᾱ near 0 lose their digits in
    # bf16 (8 bits of mantissa).
    @staticmethod
    def _at(coef: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return coef[t].float().view(-1, *([1] * (x.dim() - 1)))

    def q_pairs(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, x_{t+1}) drawn from the forward process for clean images ``x0`` (fp32)."""
        x0 = x0.float()
        x_t = self._at(self.a_cum, t, x0) * x0 + self._at(self.sig_cum, t, x0) * \
            torch.randn_like(x0)
        x_tp1 = self._at(self.a_s, t + 1, x0) * x_t + self._at(self.sigmas, t + 1, x0) * \
            torch.randn_like(x0)
        return x_t, x_tp1

    def posterior_sample(self, x0: torch.Tensor, x_tp1: torch.Tensor, t: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t ~ q(x_t | x_{t+1}, x0) in fp32; deterministic (the mean) at t = 0."""
        x0, x_tp1 = x0.float(), x_tp1.float()
        mean = self._at(self.post_c1, t, x0) * x0 + self._at(self.post_c2, t, x0) * x_tp1
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        nonzero = (t != 0).to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return mean + nonzero * torch.exp(0.5 * self._at(self.post_logvar, t, x0)) * noise


class SynDiff(TranslationModel):
    """SynDiff with MRI → PET as the direction used at inference (see module docstring)."""

    kind = "syndiff"
    ema_modules = ("gen_diff_pet", "gen_diff_mri")
    stochastic = True

    def __init__(self, hparams: dict[str, Any], channels: int = 1):
        super().__init__(hparams, channels)
        hp = self.hparams
        c = self.channels
        self.ema_decay = hp["ema_decay"]
        if self.source not in SOURCES:
            raise ValueError(f"SynDiff source {self.source!r}: choose one of {', '.join(SOURCES)}")
        size = int(hp["grid"].shape[0]) if hasattr(hp["grid"], "shape") else 256

        def diffusive() -> NCSNppGenerator:
            return NCSNppGenerator(2 * c, c, nf=hp["nf"], ch_mult=tuple(hp["ch_mult"]),
                                   num_res_blocks=hp["num_res_blocks"],
                                   attn_resolutions=tuple(hp["attn_resolutions"]),
                                   image_size=size, nz=hp["nz"], z_emb_dim=hp["z_emb_dim"],
                                   n_mlp=hp["n_mlp"])

        self.gen_diff_pet = diffusive()
        self.gen_diff_mri = diffusive()
        self.gen_nd_mri2pet = ResnetGenerator(c, c, ngf=hp["ngf_nd"], n_blocks=hp["n_blocks_nd"])
        self.gen_nd_pet2mri = ResnetGenerator(c, c, ngf=hp["ngf_nd"], n_blocks=hp["n_blocks_nd"])
        self.disc_diff_pet = TimeConditionedDiscriminator(c, ndf=hp["ndf_diff"],
                                                          t_emb_dim=hp["t_emb_dim"],
                                                          n_down=hp["n_down_disc"])
        self.disc_diff_mri = TimeConditionedDiscriminator(c, ndf=hp["ndf_diff"],
                                                          t_emb_dim=hp["t_emb_dim"],
                                                          n_down=hp["n_down_disc"])
        self.disc_nd_pet = PatchDiscriminator(c, ndf=hp["ndf_nd"])
        self.disc_nd_mri = PatchDiscriminator(c, ndf=hp["ndf_nd"])
        self.diffusion = Diffusion(hp["num_timesteps"], hp["beta_min"], hp["beta_max"])

    def phases(self) -> list[Phase]:
        hp = self.hparams
        betas = tuple(hp["betas"])
        return [Phase("D", ("disc_diff_pet", "disc_diff_mri", "disc_nd_pet", "disc_nd_mri"),
                      hp["lr_d"], betas, "cosine", hp["lr_min"]),
                Phase("G", ("gen_diff_pet", "gen_diff_mri", "gen_nd_mri2pet", "gen_nd_pet2mri"),
                      hp["lr_g"], betas, "cosine", hp["lr_min"])]

    @property
    def source(self) -> str:
        """What the diffusive generator is conditioned on at inference (:data:`SOURCES`;
        cards written before the choice existed: ``real``)."""
        return str(self.hparams.get("source", "real"))

    def inference_modules(self) -> tuple[str, ...]:
        if self.source == "cycle":
            return ("gen_diff_pet", "gen_nd_mri2pet", "gen_nd_pet2mri")
        return ("gen_diff_pet",)

    def export_modules(self) -> tuple[str, ...]:
        # the non-diffusive generators are small (a tenth of the diffusive one at ``small``)
        # and let the same weights be used with either source
        return ("gen_diff_pet", "gen_nd_mri2pet", "gen_nd_pet2mri")

    def inference_source(self, mri: torch.Tensor) -> torch.Tensor:
        """The image the diffusive generator is conditioned on for T1w slices ``mri``.

        ``real``: the T1w itself (Özbey et al.). ``cycle``: the T1w taken through the
        non-diffusive module and back, T1w → PET → T1w. In training the PET generator is
        conditioned on the non-diffusive module's T1w *estimate from a PET*; the cycled T1w is
        such an estimate, so inference sees the kind of source the generator learned from
        (docs/model_comparison.md measures both).
        """
        if self.source == "cycle":
            return self.gen_nd_pet2mri(self.gen_nd_mri2pet(mri))
        return mri

    def _latent(self, batch: int, like: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((batch, self.hparams["nz"]), generator=generator, device=like.device,
                           dtype=like.dtype)

    def _timesteps(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.randint(0, self.diffusion.num_timesteps, (batch,), device=device)

    def _diffusive_fake(self, gen: nn.Module, x_tp1: torch.Tensor, source: torch.Tensor,
                        t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = gen(torch.cat([x_tp1, source], dim=1), t.float(), self._latent(len(t), x_tp1))
        return x0, self.diffusion.posterior_sample(x0, x_tp1, t)

    def phase_loss(self, phase: str, batch: dict[str, torch.Tensor], ctx: dict[str, Any],
                   step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hp = self.hparams
        mri, pet = batch["mri"], batch["pet"]
        domains = (("mri", mri, self.gen_diff_mri, self.disc_diff_mri, self.disc_nd_mri),
                   ("pet", pet, self.gen_diff_pet, self.disc_diff_pet, self.disc_nd_pet))
        if phase == "D":
            with torch.no_grad():  # paired estimates: source for each real image
                est = {"pet": self.gen_nd_mri2pet(mri), "mri": self.gen_nd_pet2mri(pet)}
            loss = torch.zeros((), device=mri.device)
            logs: dict[str, torch.Tensor] = {}
            lazy = hp["r1_gamma"] > 0 and step % hp["lazy_reg"] == 0
            for name, real, gen, disc, disc_nd in domains:
                other = "pet" if name == "mri" else "mri"
                t = self._timesteps(len(real), real.device)
                x_t, x_tp1 = self.diffusion.q_pairs(real, t)
                x_t = x_t.detach().requires_grad_(lazy)
                # on the lazy R1 steps the real pairs go through the discriminator in fp32: the
                # penalty's double backward in bf16 loses the small gradients it measures
                with torch.autocast(real.device.type, enabled=False) if lazy else nullcontext():
                    # and eagerly (``_call_impl``): a compiled network has no double backward
                    d_real = (disc._call_impl if lazy else disc)(x_t, t.float(), x_tp1)
                err = adversarial_loss(d_real, True, "logistic")
                if lazy:
                    grad, = torch.autograd.grad(d_real.float().sum(), x_t, create_graph=True)
                    r1 = grad.flatten(1).norm(2, dim=1).pow(2).mean()
                    err = err + hp["r1_gamma"] / 2 * r1
                    logs[f"R1_{name}"] = r1.detach()
                with torch.no_grad():
                    _, x_pos = self._diffusive_fake(gen, x_tp1, est[other], t)
                err = err + adversarial_loss(disc(x_pos, t.float(), x_tp1), False, "logistic")
                err_nd = (adversarial_loss(disc_nd(real), True, "logistic")
                          + adversarial_loss(disc_nd(est[name]), False, "logistic"))
                logs[f"D_diff_{name}"], logs[f"D_nd_{name}"] = err.detach(), err_nd.detach()
                loss = loss + err + err_nd
            return loss, logs
        if phase == "G":
            est = {"pet": self.gen_nd_mri2pet(mri), "mri": self.gen_nd_pet2mri(pet)}
            cyc = {"mri": self.gen_nd_pet2mri(est["pet"]), "pet": self.gen_nd_mri2pet(est["mri"])}
            adv = torch.zeros((), device=mri.device)
            adv_nd = torch.zeros((), device=mri.device)
            l1_cycle = torch.zeros((), device=mri.device)
            l1_rec = torch.zeros((), device=mri.device)
            for name, real, gen, disc, disc_nd in domains:
                other = "pet" if name == "mri" else "mri"
                t = self._timesteps(len(real), real.device)
                _, x_tp1 = self.diffusion.q_pairs(real, t)
                x0, x_pos = self._diffusive_fake(gen, x_tp1, est[other], t)
                adv = adv + adversarial_loss(disc(x_pos, t.float(), x_tp1), True, "logistic")
                adv_nd = adv_nd + adversarial_loss(disc_nd(est[name]), True, "logistic")
                l1_cycle = l1_cycle + nn.functional.l1_loss(cyc[name], real)
                l1_rec = l1_rec + nn.functional.l1_loss(x0, real)
            loss = adv + adv_nd + hp["lambda_l1"] * (l1_cycle + l1_rec)
            return loss, {"G_adv": adv.detach(), "G_adv_nd": adv_nd.detach(),
                          "G_cycle": l1_cycle.detach(), "G_rec": l1_rec.detach()}
        raise ValueError(f"unknown phase {phase!r}")

    @torch.no_grad()
    def translate(self, mri: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        """One stochastic sample: ``num_timesteps`` reverse steps from noise, given the T1w
        (through :meth:`inference_source`)."""
        source = self.inference_source(mri)
        x = torch.randn(mri.shape, generator=generator, device=mri.device, dtype=mri.dtype)
        for k in reversed(range(self.diffusion.num_timesteps)):
            t = torch.full((len(mri),), k, device=mri.device, dtype=torch.long)
            x0 = self.gen_diff_pet(torch.cat([x, source], dim=1), t.float(),
                                   self._latent(len(mri), mri, generator))
            x = self.diffusion.posterior_sample(x0, x, t, generator)
        return x.clamp(-1.0, 1.0)
