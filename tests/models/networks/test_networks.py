"""Translation networks: shapes on odd sizes, FIR resampling, AdaGN, init, complexity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pseudopet_bids.models.networks import (AdaptiveGroupNorm, FirDownsample, FirUpsample,
                                            NCSNppGenerator, PatchDiscriminator, ResnetGenerator,
                                            TimeConditionedDiscriminator, count_parameters,
                                            crop_to, downsample_fir, fir_kernel, flops_per_call,
                                            gflops, pad_to_multiple, timestep_embedding,
                                            upsample_fir)

SIZES = [(31, 37), (32, 40), (64, 64)]
NZ = 8


def small_ncsnpp(in_ch: int, out_ch: int, **kw) -> NCSNppGenerator:
    # image_size 64 with ch_mult (1, 2, 2): levels at 64, 32, 16, so attention at 16 occurs.
    args = dict(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,),
                image_size=64, nz=NZ, z_emb_dim=16, n_mlp=1)
    args.update(kw)
    return NCSNppGenerator(in_ch, out_ch, **args)


def small_tdisc(in_ch: int) -> TimeConditionedDiscriminator:
    return TimeConditionedDiscriminator(in_ch, ndf=8, t_emb_dim=16, n_down=3)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_resnet_generator_shape(size, channels):
    net = ResnetGenerator(channels, channels, ngf=8, n_blocks=2)
    y = net(torch.randn(2, channels, *size))
    assert y.shape == (2, channels, *size)
    assert y.abs().max() <= 1.0


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_patch_discriminator_shape(size, channels):
    net = PatchDiscriminator(channels, ndf=8, n_layers=3)
    y = net(torch.randn(2, channels, *size))
    assert y.shape == (2, 1, *net.output_size(*size))
    assert y.shape[-2:] == tuple(s // 8 - 2 for s in size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_ncsnpp_shape_and_range(size, channels):
    net = small_ncsnpp(2 * channels, channels)
    assert net.attn_levels == (False, False, True)
    y = net(torch.randn(2, 2 * channels, *size), torch.tensor([0.0, 3.0]), torch.randn(2, NZ))
    assert y.shape == (2, channels, *size)
    assert torch.isfinite(y).all() and y.abs().max() <= 1.0


def test_generators_saturate_within_tanh_range():
    # At init the outputs are near 0; blow up the last conv so tanh actually saturates.
    res, ncs = ResnetGenerator(1, 1, ngf=8, n_blocks=1), small_ncsnpp(2, 1)
    nn.init.normal_(res.model[-2].weight, std=10.0)
    nn.init.normal_(ncs.conv_out.weight, std=10.0)
    ys = [res(torch.randn(2, 1, 31, 37)),
          ncs(torch.randn(2, 2, 31, 37), torch.tensor([0.0, 3.0]), torch.randn(2, NZ))]
    for y in ys:
        assert y.abs().max() <= 1.0 and y.abs().max() > 0.99
    raw = small_ncsnpp(2, 1, not_use_tanh=True)
    nn.init.normal_(raw.conv_out.weight, std=10.0)
    assert raw(torch.randn(1, 2, 32, 32), torch.tensor([1.0]), torch.randn(1, NZ)).abs().max() > 1


def test_ncsnpp_variants():
    x, t, z = torch.randn(1, 2, 31, 37), torch.tensor([1.0]), torch.randn(1, NZ)
    for kw in [dict(progressive_input="none"), dict(num_res_blocks=2, ch_mult=(1, 2, 2, 2)),
               dict(not_use_tanh=True, skip_rescale=False, ch_mult=(1, 2))]:
        assert small_ncsnpp(2, 1, **kw)(x, t, z).shape == (1, 1, 31, 37)
    with pytest.raises(ValueError):
        small_ncsnpp(2, 1, progressive_input="input_skip")


@pytest.mark.parametrize("size", SIZES + [(20, 9)])
@pytest.mark.parametrize("channels", [1, 3])
def test_time_discriminator_shape(size, channels):
    net = small_tdisc(channels)
    for batch in (1, 3, 6):  # 6 is not a multiple of the stddev group of 4
        x = torch.randn(batch, channels, *size)
        y = net(x, torch.rand(batch) * 4, torch.randn_like(x))
        assert y.shape == (batch, 1)
        assert torch.isfinite(y).all()


# ----------------------------------------------------------------------------------- FIR
def test_fir_kernel_normalised():
    k = fir_kernel((1, 3, 3, 1))
    assert k.shape == (4, 4)
    assert torch.isclose(k.sum(), torch.tensor(1.0))
    assert torch.allclose(k, k.T)


def test_fir_constant_image():
    k = fir_kernel()
    x = torch.full((1, 2, 16, 18), 2.5)
    up = upsample_fir(x, k)
    down = downsample_fir(x, k)
    assert up.shape == (1, 2, 32, 36) and down.shape == (1, 2, 8, 9)
    # Outside the image is zero (as upfirdn2d), so constancy holds away from the borders.
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.tensor(2.5))
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.tensor(2.5))
    rt = upsample_fir(down, k)
    assert rt.shape == x.shape
    assert torch.allclose(rt[..., 4:-4, 4:-4], torch.tensor(2.5))


def test_fir_modules():
    x = torch.randn(2, 4, 16, 12)
    assert FirUpsample(4, with_conv=False)(x).shape == (2, 4, 32, 24)
    assert FirUpsample(4, with_conv=True, out_channels=6)(x).shape == (2, 6, 32, 24)
    assert FirDownsample(4, with_conv=False)(x).shape == (2, 4, 8, 6)
    assert FirDownsample(4, with_conv=True, out_channels=6)(x).shape == (2, 6, 8, 6)
    assert torch.allclose(FirDownsample(4, False)(x), downsample_fir(x, fir_kernel()))


def test_fir_kernel_not_in_state_dict():
    for net in (FirUpsample(4, True), FirDownsample(4, False), small_ncsnpp(2, 1),
                small_tdisc(1)):
        assert any(name.endswith("kernel") for name, _ in net.named_buffers())
        assert not any(key.endswith("kernel") for key in net.state_dict())


# ------------------------------------------------------------------------- other layers
def test_adaptive_group_norm_init_is_group_norm():
    agn = AdaptiveGroupNorm(4, 16, style_dim=8)
    x = torch.randn(3, 16, 5, 7)
    ref = nn.GroupNorm(4, 16, affine=False, eps=1e-6)(x)
    # The reference initialises only the bias (gamma 1, beta 0): identity for a zero style.
    assert torch.allclose(agn(x, torch.zeros(3, 8)), ref, atol=1e-6)
    assert torch.equal(agn.style.bias, torch.cat([torch.ones(16), torch.zeros(16)]))


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0.0, 1.0, 999.0]), 16)
    assert emb.shape == (3, 16)
    assert torch.allclose(emb[0, :8], torch.zeros(8)) and torch.allclose(emb[0, 8:], torch.ones(8))
    assert timestep_embedding(torch.tensor([2]), 17).shape == (1, 17)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant"])
def test_pad_and_crop(mode):
    x = torch.randn(1, 2, 5, 7)
    padded, size = pad_to_multiple(x, 16, mode=mode)  # pad >= size: reflect falls back
    assert padded.shape == (1, 2, 16, 16) and size == (5, 7)
    assert torch.equal(crop_to(padded, size), x)
    same, _ = pad_to_multiple(x, 1)
    assert same is x


# --------------------------------------------------------------------------- backward
def test_backward_ncsnpp_and_time_discriminator():
    gen, disc = small_ncsnpp(2, 1), small_tdisc(1)
    x = torch.randn(2, 2, 31, 37)
    t = torch.tensor([1.0, 2.0])
    fake = gen(x, t, torch.randn(2, NZ))
    loss = gen(x, t, torch.randn(2, NZ)).square().mean() + disc(fake, t, x[:, :1]).mean()
    loss.backward()
    for net in (gen, disc):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


# ------------------------------------------------------------------------- complexity
def test_complexity_linear():
    lin = nn.Linear(3, 4)
    assert count_parameters(lin) == 16
    assert flops_per_call(lin, torch.randn(1, 3)) == 24
    assert gflops(lin, torch.randn(1, 3)) == pytest.approx(24e-9)
    lin.bias.requires_grad_(False)
    assert count_parameters(lin) == 12


# ------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("make, inputs", [
    (lambda: ResnetGenerator(1, 1, ngf=8, n_blocks=1), lambda: (torch.randn(1, 1, 31, 37),)),
    (lambda: PatchDiscriminator(1, ndf=8), lambda: (torch.randn(1, 1, 32, 40),)),
    (lambda: small_ncsnpp(2, 1),
     lambda: (torch.randn(1, 2, 31, 37), torch.tensor([2.0]), torch.randn(1, NZ))),
    (lambda: small_tdisc(1),
     lambda: (torch.randn(2, 1, 31, 37), torch.tensor([1.0, 2.0]), torch.randn(2, 1, 31, 37))),
])
def test_determinism(make, inputs):
    outs, states = [], []
    for _ in range(2):
        torch.manual_seed(123)
        net = make()
        states.append(net.state_dict())
        outs.append(net(*inputs()))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert torch.equal(outs[0], outs[1])
