"""SynDiff's diffusive generator: an NCSN++ U-Net with adaptive group norm (AdaGN).

Özbey et al., "Unsupervised medical image translation with adversarial diffusion models",
IEEE TMI 2023 (icon-lab/SynDiff ``backbones/ncsnpp_generator_adagn.py``), itself the DDGAN
generator (Xiao et al., ICLR 2022) built on NCSN++ (Song et al., ICLR 2021). It predicts
``x_0`` from ``x_t`` (plus the conditioning image on extra channels), the timestep ``t`` and a
latent ``z`` that enters every residual block through AdaGN, which makes the reverse step a
multimodal (GAN) rather than Gaussian distribution.

Configuration fixed to SynDiff's: BigGAN residual blocks with FIR resampling, positional time
embedding, progressive input 'residual' (or 'none'), progressive output 'none'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from .layers import (AdaptiveGroupNorm, FirDownsample, conv2d, crop_to, dense, downsample_fir,
                     fir_weight,
                     group_count, pad_to_multiple, timestep_embedding, upsample_fir)
from .layers import fir_kernel as make_fir_kernel

__all__ = ["NCSNppGenerator", "ResnetBlockBigGANAdaGN", "AttnBlock", "PixelNorm"]

_SQRT2 = math.sqrt(2.0)


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit RMS (StyleGAN mapping-network input)."""

    def forward(self, z: Tensor) -> Tensor:
        return z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ResnetBlockBigGANAdaGN(nn.Module):
    """BigGAN-style residual block with AdaGN, time bias and optional FIR up/down.

    ``h = Conv(SiLU(AdaGN(x)) resampled) + Dense(SiLU(temb)); h = Conv(Drop(SiLU(AdaGN(h))))``;
    the skip is resampled the same way and 1x1-projected when shape changes. The second conv
    starts near zero so each block starts close to its skip path.

    Parameters
    ----------
    in_ch, out_ch
        Input / output channels.
    temb_dim, zemb_dim
        Sizes of the time and latent embeddings.
    up, down
        2x FIR upsample or downsample inside the block (mutually exclusive).
    dropout
        Dropout before the second conv.
    fir_kernel
        1D FIR taps.
    skip_rescale
        Divide the sum by sqrt(2) to keep the variance constant.
    """

    kernel: Tensor  #: FIR kernel (a non-persistent buffer, with up or down only)

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, zemb_dim: int, up: bool = False,
                 down: bool = False, dropout: float = 0.0,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a block cannot both upsample and downsample")
        self.up, self.down, self.skip_rescale = up, down, skip_rescale
        self.act = nn.SiLU()
        self.norm0 = AdaptiveGroupNorm(group_count(in_ch), in_ch, zemb_dim)
        self.conv0 = conv2d(in_ch, out_ch, 3, padding=1)
        self.dense_t = dense(temb_dim, out_ch)
        self.norm1 = AdaptiveGroupNorm(group_count(out_ch), out_ch, zemb_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = conv2d(out_ch, out_ch, 3, padding=1, init_scale=0.0)
        self.skip = conv2d(in_ch, out_ch, 1) if (in_ch != out_ch or up or down) else None
        if up or down:
            self.register_buffer("kernel", make_fir_kernel(fir_kernel), persistent=False)
        self._fir: dict[tuple[Any, ...], Tensor] = {}  # depthwise FIR weights (fir_weight)

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return upsample_fir(x, self.kernel,
                                weight=fir_weight(self._fir, self.kernel, x.shape[1], x, 4.0))
        if self.down:
            return downsample_fir(x, self.kernel,
                                  weight=fir_weight(self._fir, self.kernel, x.shape[1], x))
        return x

    def forward(self, x: Tensor, temb: Tensor, zemb: Tensor) -> Tensor:
        h = self.act(self.norm0(x, zemb))
        h = self.conv0(self._resample(h))
        x = self._resample(x)
        h = h + self.dense_t(self.act(temb))[:, :, None, None]
        h = self.conv1(self.dropout(self.act(self.norm1(h, zemb))))
        if self.skip is not None:
            x = self.skip(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class AttnBlock(nn.Module):
    """Spatial self-attention over all H*W positions with a residual connection.

    Parameters
    ----------
    channels
        Feature channels (single head, as NCSN++ ``AttnBlockpp``).
    skip_rescale
        Divide the residual sum by sqrt(2).
    """

    def __init__(self, channels: int, skip_rescale: bool = True) -> None:
        super().__init__()
        self.skip_rescale = skip_rescale
        self.norm = nn.GroupNorm(group_count(channels), channels, eps=1e-6)
        self.q = conv2d(channels, channels, 1)
        self.k = conv2d(channels, channels, 1)
        self.v = conv2d(channels, channels, 1)
        self.proj = conv2d(channels, channels, 1, init_scale=0.0)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x)
        q = self.q(h).flatten(2)  # (B, C, N)
        k = self.k(h).flatten(2)
        v = self.v(h).flatten(2)
        # Explicit bmm rather than SDPA so FLOP counting sees the attention cost on every backend.
        w = torch.bmm(q.transpose(1, 2), k) * (c ** -0.5)  # (B, N, N)
        w = torch.softmax(w, dim=-1)
        out = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hgt, wid)
        out = self.proj(out)
        return (x + out) / _SQRT2 if self.skip_rescale else x + out


class NCSNppGenerator(nn.Module):
    """SynDiff / DDGAN NCSN++ generator ``G(x_t, t, z) -> x_0``.

    Parameters
    ----------
    in_channels
        Input channels (SynDiff: noisy target + source image = 2).
    out_channels
        Output channels.
    nf
        Base width.
    ch_mult
        Width multiplier per resolution level; level ``i`` is at ``1 / 2**i`` of the input size.
    num_res_blocks
        Residual blocks per level on the way down (one more on the way up).
    attn_resolutions
        Resolutions (in units of ``image_size``) that get self-attention; level ``i`` has
        resolution ``image_size // 2**i``. The decision is made per level at construction, so
        other input sizes keep the same attention levels.
    image_size
        Nominal training image size, used only to place attention.
    nz
        Latent size.
    z_emb_dim
        Size of the latent embedding fed to AdaGN.
    n_mlp
        Hidden layers of the latent mapping network (after the input layer).
    dropout
        Dropout in the residual blocks.
    fir_kernel
        1D FIR taps for all resampling.
    skip_rescale
        Divide residual sums by sqrt(2).
    progressive_input
        ``"residual"`` (SynDiff) adds a conv-downsampled input pyramid at each level;
        ``"none"`` disables it.
    not_use_tanh
        Return raw outputs instead of ``tanh``.
    """

    def __init__(self, in_channels: int, out_channels: int, nf: int = 64,
                 ch_mult: Sequence[int] = (1, 1, 2, 2, 4, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), image_size: int = 256, nz: int = 100,
                 z_emb_dim: int = 256, n_mlp: int = 3, dropout: float = 0.0,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True,
                 progressive_input: str = "residual", not_use_tanh: bool = False) -> None:
        super().__init__()
        if progressive_input not in ("residual", "none"):
            raise ValueError(f"progressive_input must be 'residual' or 'none', "
                             f"got {progressive_input!r}")
        self.nf = nf
        self.num_levels = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.not_use_tanh = not_use_tanh
        self.skip_rescale = skip_rescale
        self.progressive_input = progressive_input
        self.factor = 2 ** (self.num_levels - 1)
        self.attn_levels = tuple(image_size // 2 ** i in set(attn_resolutions)
                                 for i in range(self.num_levels))
        self.act = nn.SiLU()
        temb_dim = 4 * nf

        def block(cin: int, cout: int, **kw: bool) -> ResnetBlockBigGANAdaGN:
            return ResnetBlockBigGANAdaGN(cin, cout, temb_dim, z_emb_dim, dropout=dropout,
                                          fir_kernel=fir_kernel, skip_rescale=skip_rescale, **kw)

        self.time_mlp = nn.Sequential(dense(nf, temb_dim), nn.SiLU(), dense(temb_dim, temb_dim))
        mapping: list[nn.Module] = [PixelNorm(), dense(nz, z_emb_dim), nn.SiLU()]
        for _ in range(n_mlp):
            mapping += [dense(z_emb_dim, z_emb_dim), nn.SiLU()]
        self.z_transform = nn.Sequential(*mapping)

        # Down path. skip_ch records the channels of every tensor pushed on the skip stack.
        self.conv_in = conv2d(in_channels, nf, 3, padding=1)
        skip_ch = [nf]
        ch = nf
        pyramid_ch = in_channels
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        self.pyramid_down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(block(ch, nf * mult))
                ch = nf * mult
                attns.append(AttnBlock(ch, skip_rescale) if self.attn_levels[i] else nn.Identity())
                skip_ch.append(ch)
            self.down_blocks.append(blocks)
            self.down_attn.append(attns)
            if i != self.num_levels - 1:
                self.downsamplers.append(block(ch, ch, down=True))
                if progressive_input == "residual":
                    # Fused FIR blur + stride-2 3x3 conv of the running input pyramid.
                    self.pyramid_down.append(FirDownsample(pyramid_ch, True, ch, fir_kernel))
                    pyramid_ch = ch
                skip_ch.append(ch)

        self.mid = nn.ModuleList([block(ch, ch), AttnBlock(ch, skip_rescale), block(ch, ch)])

        # Up path: num_res_blocks + 1 blocks per level, each consuming one skip tensor.
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i in reversed(range(self.num_levels)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(block(ch + skip_ch.pop(), nf * ch_mult[i]))
                ch = nf * ch_mult[i]
            self.up_blocks.append(blocks)
            self.up_attn.append(AttnBlock(ch, skip_rescale) if self.attn_levels[i]
                                else nn.Identity())
            if i != 0:
                self.upsamplers.append(block(ch, ch, up=True))
        assert not skip_ch, "skip-connection bookkeeping is unbalanced"

        self.norm_out = nn.GroupNorm(group_count(ch), ch, eps=1e-6)
        self.conv_out = conv2d(ch, out_channels, 3, padding=1, init_scale=0.0)

    def forward(self, x: Tensor, t: Tensor, z: Tensor) -> Tensor:
        """Predict ``(B, out_channels, H, W)`` from ``x`` (B, in_channels, H, W).

        Parameters
        ----------
        x
            Input in [-1, 1] (``x_t`` concatenated with the conditioning image).
        t
            ``(B,)`` float timestep indices.
        z
            ``(B, nz)`` latent.
        """
        x, size = pad_to_multiple(x, self.factor, mode="reflect")
        temb = self.time_mlp(timestep_embedding(t, self.nf))
        temb = temb.to(x.dtype)
        zemb = self.z_transform(z.to(x.dtype))

        pyramid = x
        hs = [self.conv_in(x)]
        for i in range(self.num_levels):
            # nn.ModuleList is not generic: its items read as Module, these are ModuleLists
            level = zip(cast(nn.ModuleList, self.down_blocks[i]),
                        cast(nn.ModuleList, self.down_attn[i]))
            for blk, attn in level:
                hs.append(attn(blk(hs[-1], temb, zemb)))
            if i != self.num_levels - 1:
                h = self.downsamplers[i](hs[-1], temb, zemb)
                if self.progressive_input == "residual":
                    # The combined features become the next pyramid level (NCSN++ 'residual').
                    pyramid = self.pyramid_down[i](pyramid)
                    pyramid = (pyramid + h) / _SQRT2 if self.skip_rescale else pyramid + h
                    h = pyramid
                hs.append(h)

        h = self.mid[0](hs[-1], temb, zemb)
        h = self.mid[1](h)
        h = self.mid[2](h, temb, zemb)

        for j, (blocks, attn) in enumerate(zip(self.up_blocks, self.up_attn)):
            for blk in cast(nn.ModuleList, blocks):
                h = blk(torch.cat([h, hs.pop()], dim=1), temb, zemb)
            h = attn(h)
            if j < len(self.upsamplers):
                h = self.upsamplers[j](h, temb, zemb)

        h = self.conv_out(self.act(self.norm_out(h)))
        h = crop_to(h, size)
        return h if self.not_use_tanh else torch.tanh(h)
