"""CycleGAN and SynDiff: phases, losses, translation, one optimisation step, a short overfit,
and SynDiff's diffusion schedule and posterior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudopet_bids.models.base import TranslationModel
from pseudopet_bids.models.presets import preset
from pseudopet_bids.models.registry import build_model
from pseudopet_bids.models.syndiff import Diffusion, vp_schedule
from pseudopet_bids.train.trainer import Trainer, TrainSettings

H, W = 32, 40  # the tiny preset's in-plane grid


def _model(kind: str, channels: int = 1, seed: int = 0, **overrides) -> TranslationModel:
    torch.manual_seed(seed)
    hp = preset(kind, "tiny")
    hp.update(overrides)
    return build_model(kind, hp, channels)


def _batch(channels: int, n: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.rand((n, channels, H, W), generator=gen) * 2 - 1
            for name in ("mri", "pet")}


# --------------------------------------------------------------------------- both models


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["cyclegan", "syndiff"])
def test_phases_losses_and_translation(kind, channels):
    model = _model(kind, channels)
    assert model.kind == kind and model.channels == channels
    phases = model.phases()
    assert sorted(p.name for p in phases) == ["D", "G"]
    owned = [m for p in phases for m in p.modules]
    assert len(owned) == len(set(owned))        # no network is updated by two optimizers
    for name in owned:
        assert sum(p.numel() for p in getattr(model, name).parameters()) > 0
    for name in model.inference_modules():
        assert name in owned
    # every trainable network belongs to a phase
    trainable = {n for n, m in model.named_children() if any(True for _ in m.parameters())}
    assert trainable == set(owned)

    batch = _batch(channels)
    for step in (0, 1):                          # SynDiff: step 0 adds the lazy R1 penalty
        ctx: dict = {}
        for phase in phases:
            loss, logs = model.phase_loss(phase.name, batch, ctx, step)
            assert loss.dim() == 0 and torch.isfinite(loss)
            assert loss.requires_grad
            assert logs and all(bool(torch.isfinite(torch.as_tensor(v))) for v in logs.values())
            if kind == "syndiff" and phase.name == "D":
                assert ("R1_pet" in logs) == (step == 0)
    with pytest.raises(ValueError):
        model.phase_loss("X", batch, {}, 0)

    model.eval()
    out = model.translate(batch["mri"], torch.Generator().manual_seed(0))
    assert out.shape == batch["mri"].shape
    assert out.dtype == batch["mri"].dtype
    assert float(out.abs().max()) <= 1.0
    assert not out.requires_grad
    assert float(out.std()) > 0


def test_odd_sizes_translate_to_the_input_shape():
    mri = torch.rand(1, 1, 31, 37) * 2 - 1
    for kind in ("cyclegan", "syndiff"):
        assert _model(kind).eval().translate(mri).shape == mri.shape


# --------------------------------------------------------------------------- SynDiff sampling


def test_syndiff_translate_is_reproducible_by_generator():
    model = _model("syndiff", 1).eval()
    mri = _batch(1)["mri"]
    a = model.translate(mri, torch.Generator().manual_seed(5))
    torch.manual_seed(123)                       # the global RNG plays no part
    b = model.translate(mri, torch.Generator().manual_seed(5))
    c = model.translate(mri, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)   # (an untrained model's samples differ only slightly)


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("channels", [1, 3])
def test_cyclegan_generator_step_lowers_its_loss(channels):
    model = _model("cyclegan", channels)
    batch = _batch(channels, seed=3)
    phase = next(p for p in model.phases() if p.name == "G")
    params = [p for m in phase.modules for p in getattr(model, m).parameters()]
    opt = torch.optim.Adam(params, lr=1e-4, betas=phase.betas)

    def loss_and_logs():
        torch.manual_seed(0)
        return model.phase_loss("G", batch, {}, 0)

    before, logs_before = loss_and_logs()
    opt.zero_grad()
    before.backward()
    assert all(p.grad is not None for p in params)
    opt.step()
    with torch.no_grad():
        after, logs_after = loss_and_logs()
    assert float(after) < float(before.detach())
    assert logs_after["G_cycle"] < logs_before["G_cycle"]


def _overfit_data(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A few head-like slices; the PET is a fixed monotone function of the T1w in the brain."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    mris, pets = [], []
    for i in range(n):
        cy, cx = H / 2 + rng.uniform(-3, 3), W / 2 + rng.uniform(-3, 3)
        r2 = ((yy - cy) / 10) ** 2 + ((xx - cx) / 13) ** 2
        brain = r2 < 1
        texture = np.sin(xx / 3 + i) * np.cos(yy / 4)
        mri = np.where(brain, 0.5 * texture + 0.2 * (1 - r2), -1.0)
        pets.append(np.where(brain, 0.8 * mri + 0.3, -1.0))
        mris.append(mri)
    return (np.stack(mris)[:, None].astype(np.float32),
            np.stack(pets)[:, None].astype(np.float32))


class _FixedSampler:
    """Pairs of the fixed slices, chosen by the step (the models never see the pairing)."""

    def __init__(self, mri: np.ndarray, pet: np.ndarray, batch: int):
        self.mri, self.pet, self.batch_size = mri, pet, batch

    def batch(self, step: int) -> dict[str, np.ndarray]:
        idx = np.random.default_rng(step).choice(len(self.mri), self.batch_size, replace=False)
        return {"mri": self.mri[idx], "pet": self.pet[idx]}


def test_tiny_cyclegan_learns_a_fixed_translation(tmp_path):
    mri, pet = _overfit_data()
    model = _model("cyclegan", 1)
    x, y = torch.from_numpy(mri), torch.from_numpy(pet)
    brain = y > -1

    def errors() -> tuple[float, float]:
        """L1 error on the slices, and the correlation with the target inside the brain."""
        model.eval()
        pred = model.translate(x)
        model.train()
        corr = np.corrcoef(pred[brain].numpy(), y[brain].numpy())[0, 1]
        return float((pred - y).abs().mean()), float(corr)

    initial, initial_corr = errors()
    settings = TrainSettings(steps=150, batch_size=2, device="cpu", channels_last=False,
                             checkpoint_every=10 ** 6, log_every=50)
    card = {"model": "cyclegan", "preset": "tiny", "config_hash": "overfit"}
    Trainer(model, _FixedSampler(mri, pet, 2), settings, tmp_path, card).fit()
    final, final_corr = errors()
    # (over init seeds 0-5: L1 ratio 0.15-0.29; brain correlation from < 0.06 to 0.24-0.79)
    assert final < 0.6 * initial, (initial, final)
    assert final_corr > max(0.15, initial_corr + 0.1), (initial_corr, final_corr)


# --------------------------------------------------------------------------- diffusion math


def test_vp_schedule_is_monotone_and_matches_the_sde_marginal():
    T, bmin, bmax = 4, 0.1, 20.0
    sigmas, a_s = vp_schedule(T, bmin, bmax)
    assert sigmas.shape == a_s.shape == (T + 1,)
    np.testing.assert_allclose(sigmas ** 2 + a_s ** 2, 1.0, rtol=1e-12)
    assert np.all(np.diff(sigmas) > 0) and np.all(np.diff(a_s) < 0)
    assert sigmas[0] == pytest.approx(1e-4)
    # cumulative signal level equals the closed-form marginal of the VP SDE
    eps = 1e-3
    s = np.arange(T + 1) / T * (1 - eps) + eps
    alpha_bar = np.exp(-bmin * s - 0.5 * (bmax - bmin) * s ** 2)
    np.testing.assert_allclose(np.cumprod(a_s ** 2), alpha_bar / alpha_bar[0], rtol=1e-6)
    # more steps: the same end point, finer increments
    sig8, a8 = vp_schedule(8, bmin, bmax)
    assert np.prod(a8 ** 2) == pytest.approx(np.prod(a_s ** 2), rel=1e-6)
    assert sig8[1:].max() < sigmas[1:].max()


def test_diffusion_coefficients_are_consistent():
    d = Diffusion(4, 0.1, 20.0)
    assert d.num_timesteps == 4
    assert torch.all(d.sig_cum[1:] > d.sig_cum[:-1])
    torch.testing.assert_close(d.a_cum ** 2 + d.sig_cum ** 2, torch.ones(5))
    assert not d.state_dict()                   # non-persistent: nothing in checkpoints


def test_q_pairs_statistics():
    d = Diffusion(4, 0.1, 20.0)
    torch.manual_seed(0)
    n = 4096
    for t_val in range(4):
        t = torch.full((n,), t_val, dtype=torch.long)
        # x0 = 0: pure noise of the marginal variance
        x_t, x_tp1 = d.q_pairs(torch.zeros(n, 1, 8, 8), t)
        for x, k in ((x_t, t_val), (x_tp1, t_val + 1)):
            assert float(x.mean()) == pytest.approx(0.0, abs=0.01)
            assert float(x.var()) == pytest.approx(float(d.sig_cum[k] ** 2), rel=0.02,
                                                   abs=1e-6)
        # x0 = c: the signal decays as a_cum, and x_{t+1} | x_t has the one-step law
        c = 0.7
        x_t, x_tp1 = d.q_pairs(torch.full((n, 1, 8, 8), c), t)
        assert float(x_t.mean()) == pytest.approx(c * float(d.a_cum[t_val]), abs=0.01)
        assert float(x_tp1.mean()) == pytest.approx(c * float(d.a_cum[t_val + 1]), abs=0.01)
        resid = x_tp1 - d.a_s[t_val + 1] * x_t
        assert float(resid.std()) == pytest.approx(float(d.sigmas[t_val + 1]), rel=0.02)


def test_posterior_matches_gaussian_conditioning():
    """q(x_t | x_{t+1}, x0) from the joint Gaussian of q_pairs: mean and variance."""
    d = Diffusion(4, 0.1, 20.0)
    a_cum, sig2, a_s = d.a_cum.double(), d.sig_cum.double() ** 2, d.a_s.double()
    for t in range(4):
        c2 = a_s[t + 1] * sig2[t] / sig2[t + 1]
        c1 = a_cum[t] - c2 * a_cum[t + 1]
        var = sig2[t] - c2 ** 2 * sig2[t + 1]
        assert float(d.post_c2[t]) == pytest.approx(float(c2), rel=1e-4, abs=1e-6)
        assert float(d.post_c1[t]) == pytest.approx(float(c1), rel=1e-4, abs=1e-6)
        if t > 0:
            assert float(d.post_logvar[t].exp()) == pytest.approx(float(var), rel=1e-3)


def test_posterior_sample_is_deterministic_at_t0_only():
    d = Diffusion(4, 0.1, 20.0)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 6, 6, generator=gen) * 2 - 1
    x_tp1 = torch.randn(3, 1, 6, 6, generator=gen)
    t0 = torch.zeros(3, dtype=torch.long)
    mean0 = d.post_c1[0] * x0 + d.post_c2[0] * x_tp1
    a = d.posterior_sample(x0, x_tp1, t0, torch.Generator().manual_seed(1))
    b = d.posterior_sample(x0, x_tp1, t0, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    torch.testing.assert_close(a, mean0)
    # at t = 0 the posterior mean is essentially the clean image (tiny first step)
    torch.testing.assert_close(a, x0, atol=1e-3, rtol=0)
    # t > 0: random, and per-sample t picks per-sample noise
    t = torch.tensor([0, 2, 3])
    a = d.posterior_sample(x0, x_tp1, t, torch.Generator().manual_seed(1))
    b = d.posterior_sample(x0, x_tp1, t, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[1], b[1]) and not torch.equal(a[2], b[2])


# --------------------------------------------------------------------------- bf16 autocast


def test_posterior_stays_fp32_under_bf16_autocast():
    """The generator's x̂₀ is bf16 under autocast; the schedule is applied in fp32."""
    diff = Diffusion(4, 0.1, 20.0)
    torch.manual_seed(0)
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    x_tp1 = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0, 1, 3])
    want = diff.posterior_sample(x0.bfloat16().float(), x_tp1, t,
                                 torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = diff.posterior_sample(x0.bfloat16(), x_tp1, t, torch.Generator().manual_seed(5))
        x_t, x_tp1_q = diff.q_pairs(x0.bfloat16(), t)
    assert got.dtype == torch.float32 and x_t.dtype == x_tp1_q.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_r1_penalty_runs_in_fp32_under_bf16_autocast():
    """On lazy steps the real pairs go through the diffusive discriminators in fp32 (the R1
    double backward), the fake pairs and the other steps in the autocast precision."""
    model = build_model("syndiff", preset("syndiff", "tiny"), 1)
    dtypes: list[torch.dtype] = []
    model.disc_diff_pet.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    batch = {"mri": torch.rand(2, 1, 32, 32) * 2 - 1, "pet": torch.rand(2, 1, 32, 32) * 2 - 1}
    assert preset("syndiff", "tiny")["lazy_reg"] > 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = model.phase_loss("D", batch, {}, step=0)          # a lazy R1 step
        assert dtypes == [torch.float32, torch.bfloat16] and "R1_pet" in logs
        dtypes.clear()
        model.phase_loss("D", batch, {}, step=1)                       # no R1
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert torch.isfinite(loss)
