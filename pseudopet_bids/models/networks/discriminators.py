"""SynDiff's time-conditioned diffusive discriminator (DDGAN ``Discriminator_large``).

It scores a pair ``(x_t, x_{t+1})``: is ``x_t`` a plausible denoising of ``x_{t+1}`` at step
``t``? (Xiao et al., ICLR 2022; Özbey et al., IEEE TMI 2023.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .layers import (conv2d, dense, downsample_fir, fir_weight, pad_to_multiple,
                     timestep_embedding)
from .layers import fir_kernel as make_fir_kernel

__all__ = ["TimeConditionedDiscriminator", "DownConvBlock"]


class DownConvBlock(nn.Module):
    """Residual conv block with a time bias and optional 2x FIR downsampling.

    ``h = LReLU(Conv(LReLU(x)) + Dense(temb))``, then (downsample) ``h = Conv(h)``; the skip is
    downsampled and 1x1-projected; output ``(h + skip) / sqrt(2)``. As in the reference the
    downsampling sits between the two convs, so the second conv runs at the lower resolution.

    Parameters
    ----------
    in_ch, out_ch
        Input / output channels.
    t_emb_dim
        Time-embedding size.
    downsample
        Halve the resolution.
    fir_kernel
        1D FIR taps.
    """

    kernel: Tensor  #: FIR kernel (a non-persistent buffer)

    def __init__(self, in_ch: int, out_ch: int, t_emb_dim: int, downsample: bool = True,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.downsample = downsample
        self.act = nn.LeakyReLU(0.2)
        self.conv1 = conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = conv2d(out_ch, out_ch, 3, padding=1, init_scale=0.0)
        self.dense_t = dense(t_emb_dim, out_ch)
        self.skip = conv2d(in_ch, out_ch, 1, bias=False)
        self.register_buffer("kernel", make_fir_kernel(fir_kernel), persistent=False)
        self._fir: dict[tuple[Any, ...], Tensor] = {}  # depthwise FIR weights (fir_weight)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(self.act(x)) + self.dense_t(temb)[:, :, None, None]
        h = self.act(h)
        if self.downsample:
            h = downsample_fir(h, self.kernel,
                               weight=fir_weight(self._fir, self.kernel, h.shape[1], h))
            x = downsample_fir(x, self.kernel,
                               weight=fir_weight(self._fir, self.kernel, x.shape[1], x))
        h = self.conv2(h)
        return (h + self.skip(x)) / math.sqrt(2.0)


def _minibatch_stddev(x: Tensor, max_group: int = 4) -> Tensor:
    """Append the mean per-group feature standard deviation as one extra channel.

    Samples ``i`` and ``i + B/G`` share a group (the reference's strided ``view``). The group size
    is the largest divisor of B not above ``min(max_group, B)`` so any batch size works.
    """
    b, c, h, w = x.shape
    group = min(b, max_group)
    while b % group:
        group -= 1
    y = x.view(group, -1, c, h, w)
    y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)      # (B/G, C, H, W)
    y = y.mean(dim=(1, 2, 3), keepdim=True)                 # (B/G, 1, 1, 1)
    y = y.repeat(group, 1, h, w)                            # (B, 1, H, W)
    return torch.cat([x, y], dim=1)


class TimeConditionedDiscriminator(nn.Module):
    """Diffusive discriminator ``D(x_t, t, x_{t+1}) -> (B, 1)`` logits.

    Parameters
    ----------
    in_channels
        Channels of *one* image; ``x_t`` and ``x_{t+1}`` are concatenated, so the first conv
        sees ``2 * in_channels``.
    ndf
        Base width; widths are ``2*ndf`` then ``ndf * min(2**(i+2), 8)`` per block.
    t_emb_dim
        Time-embedding size (sinusoidal, then a 2-layer MLP).
    n_down
        Number of 2x downsampling blocks (6 for 256x256, as ``Discriminator_large``).
    fir_kernel
        1D FIR taps.

    Notes
    -----
    Inputs are padded (reflect, replicate when too small) to a multiple of ``2**n_down`` so any
    size works; the logit is a sum over the final positions, so it is size dependent.
    """

    def __init__(self, in_channels: int, ndf: int = 64, t_emb_dim: int = 128, n_down: int = 6,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.t_emb_dim = t_emb_dim
        self.factor = 2 ** n_down
        self.act = nn.LeakyReLU(0.2)
        self.t_mlp = nn.Sequential(dense(t_emb_dim, t_emb_dim), nn.LeakyReLU(0.2),
                                   dense(t_emb_dim, t_emb_dim))
        ch = 2 * ndf
        self.conv_in = conv2d(2 * in_channels, ch, 1)
        blocks = []
        for i in range(n_down):
            out = ndf * min(2 ** (i + 2), 8)
            blocks.append(DownConvBlock(ch, out, t_emb_dim, downsample=True,
                                        fir_kernel=fir_kernel))
            ch = out
        self.blocks = nn.ModuleList(blocks)
        self.final_conv = conv2d(ch + 1, ch, 3, padding=1)
        self.end_linear = dense(ch, 1)

    def forward(self, x_t: Tensor, t: Tensor, x_tp1: Tensor) -> Tensor:
        """Logits ``(B, 1)`` for ``x_t``, ``x_tp1`` of shape ``(B, in_channels, H, W)``."""
        x = torch.cat([x_t, x_tp1], dim=1)
        x, _ = pad_to_multiple(x, self.factor, mode="reflect")
        temb = self.act(self.t_mlp(timestep_embedding(t, self.t_emb_dim))).to(x.dtype)
        h = self.conv_in(x)
        for blk in self.blocks:
            h = blk(h, temb)
        h = self.act(self.final_conv(_minibatch_stddev(h)))
        return self.end_linear(h.sum(dim=(2, 3)))
