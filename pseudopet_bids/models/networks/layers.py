"""Shared building blocks: FIR resampling, embeddings, adaptive norm, padding and initialisers.

The FIR resampling reproduces the semantics of ``upfirdn2d`` (StyleGAN2, NCSN++): zero-insertion
upsampling, zero padding, true convolution with a separable, normalised FIR kernel, then
subsampling. It is written with ``F.pad`` and depthwise ``F.conv2d`` so it runs anywhere torch
runs (CPU, CUDA, MPS) without compiled extensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "fir_kernel", "upsample_fir", "downsample_fir", "FirUpsample", "FirDownsample",
    "timestep_embedding", "AdaptiveGroupNorm", "pad_to_multiple", "crop_to",
    "init_weights", "variance_scaling_", "group_count", "conv2d", "dense",
]


# --------------------------------------------------------------------------------------------
# FIR resampling
# --------------------------------------------------------------------------------------------
def fir_kernel(taps: Sequence[float] = (1, 3, 3, 1)) -> Tensor:
    """Normalised 2D FIR kernel built as the outer product of 1D ``taps``.

    Parameters
    ----------
    taps
        1D filter taps, e.g. ``(1, 3, 3, 1)`` (binomial, as StyleGAN2 / NCSN++).

    Returns
    -------
    Tensor
        ``(k, k)`` float32 kernel summing to 1.
    """
    k1 = torch.as_tensor(list(taps), dtype=torch.float32)
    if k1.ndim != 1 or k1.numel() == 0:
        raise ValueError("taps must be a non-empty 1D sequence")
    k2 = torch.outer(k1, k1)
    return k2 / k2.sum()


def _depthwise(kernel: Tensor, channels: int, like: Tensor) -> Tensor:
    """The flipped kernel as a depthwise convolution weight for ``channels`` channels (upfirdn2d
    is a true convolution; conv2d correlates, hence the flip)."""
    weight = kernel.flip((0, 1)).to(dtype=like.dtype, device=like.device)
    return weight[None, None].expand(channels, 1, *weight.shape).contiguous()


def fir_weight(cache: dict[tuple[Any, ...], Tensor], kernel: Tensor, channels: int,
               like: Tensor, gain: float = 1.0) -> Tensor:
    """The depthwise weight of ``kernel * gain`` for ``channels`` channels on ``like``'s device,
    built once per (channels, device, gain) in ``cache`` (a module's dict) instead of per call."""
    key = (channels, like.device, gain)
    if key not in cache:
        cache[key] = _depthwise(kernel * gain, channels, kernel.to(like.device))
    return cache[key]


def _upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1,
               pad: tuple[int, int] = (0, 0), weight: Tensor | None = None) -> Tensor:
    """Upsample by zero insertion, pad with zeros, convolve with ``kernel``, subsample
    (``weight``: its :func:`_depthwise` form when the caller keeps one)."""
    b, c, h, w = x.shape
    if up > 1:
        # Zero insertion: each sample followed by (up - 1) zeros along H and W.
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (p0, p1, p0, p1))
    if weight is None or weight.shape[0] != c or weight.device != x.device:
        weight = _depthwise(kernel, c, x)
    elif weight.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        weight = weight.to(x.dtype)
    # A strided depthwise conv equals full filtering followed by [::down] subsampling.
    return F.conv2d(x, weight, stride=down, groups=c)


def upsample_fir(x: Tensor, kernel: Tensor, factor: int = 2, weight: Tensor | None = None
                 ) -> Tensor:
    """FIR upsampling ``(B, C, H, W) -> (B, C, factor*H, factor*W)`` (``upsample_2d``).

    The kernel is scaled by ``factor**2`` so a constant image keeps its value away from the
    borders (outside the image is zero, as in the reference).
    """
    k = kernel * (factor ** 2)
    p = k.shape[0] - factor
    return _upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2), weight=weight)


def downsample_fir(x: Tensor, kernel: Tensor, factor: int = 2, weight: Tensor | None = None
                   ) -> Tensor:
    """FIR anti-aliased downsampling ``(B, C, H, W) -> (B, C, H//factor, W//factor)``."""
    p = kernel.shape[0] - factor
    return _upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2), weight=weight)


class FirUpsample(nn.Module):
    """2x FIR upsampling, optionally followed by a 3x3 convolution (NCSN++ ``Upsample``).

    Parameters
    ----------
    channels
        Input channels.
    with_conv
        Apply a 3x3 convolution after upsampling.
    out_channels
        Output channels of the convolution (defaults to ``channels``; ignored without conv).
    taps
        1D FIR taps.
    """

    kernel: Tensor  #: FIR kernel (a non-persistent buffer)
    weight: Tensor  #: its depthwise convolution weight (a non-persistent buffer)

    def __init__(self, channels: int, with_conv: bool, out_channels: int | None = None,
                 taps: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        out_channels = out_channels or channels
        # Non-persistent: a fixed filter must not end up in checkpoints.
        self.register_buffer("kernel", fir_kernel(taps), persistent=False)
        # the depthwise weight, built once (not per call); moves with the module
        self.register_buffer("weight", _depthwise(self.kernel * 4, channels, self.kernel),
                             persistent=False)
        self.conv = conv2d(channels, out_channels, 3, padding=1) if with_conv else None

    def forward(self, x: Tensor) -> Tensor:
        h = upsample_fir(x, self.kernel, weight=self.weight)
        return self.conv(h) if self.conv is not None else h


class FirDownsample(nn.Module):
    """2x FIR downsampling, optionally fused with a stride-2 3x3 convolution.

    With ``with_conv`` it matches StyleGAN2's ``conv_downsample_2d``: blur with padding chosen
    for the conv footprint, then a valid stride-2 3x3 convolution (``H -> H/2`` for even H).

    Parameters
    ----------
    channels
        Input channels.
    with_conv
        Fuse a stride-2 3x3 convolution with the blur.
    out_channels
        Output channels of the convolution (defaults to ``channels``; ignored without conv).
    taps
        1D FIR taps.
    """

    kernel: Tensor  #: FIR kernel (a non-persistent buffer)
    weight: Tensor  #: its depthwise convolution weight (a non-persistent buffer)

    def __init__(self, channels: int, with_conv: bool, out_channels: int | None = None,
                 taps: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.register_buffer("kernel", fir_kernel(taps), persistent=False)
        self.register_buffer("weight", _depthwise(self.kernel, channels, self.kernel),
                             persistent=False)
        self.conv = conv2d(channels, out_channels, 3, stride=2, padding=0) if with_conv else None

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is None:
            return downsample_fir(x, self.kernel, weight=self.weight)
        p = (self.kernel.shape[0] - 2) + (self.conv.kernel_size[0] - 1)
        return self.conv(_upfirdn2d(x, self.kernel, pad=((p + 1) // 2, p // 2),
                                    weight=self.weight))


# --------------------------------------------------------------------------------------------
# Embeddings and normalisation
# --------------------------------------------------------------------------------------------
def timestep_embedding(t: Tensor, dim: int, max_positions: int = 10000) -> Tensor:
    """Sinusoidal timestep embedding (DDPM / NCSN++ ``get_timestep_embedding``).

    Parameters
    ----------
    t
        ``(B,)`` timesteps (any numeric dtype; used as float).
    dim
        Embedding size (>= 4); an odd size is zero-padded by one.
    max_positions
        Longest wavelength scale.

    Returns
    -------
    Tensor
        ``(B, dim)`` float32 embedding ``[sin(t f_i), cos(t f_i)]``.
    """
    if t.ndim != 1:
        raise ValueError(f"t must be 1D (B,), got shape {tuple(t.shape)}")
    half = dim // 2
    if half < 2:
        raise ValueError("dim must be >= 4")
    scale = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -scale)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


def group_count(channels: int, max_groups: int = 32) -> int:
    """GroupNorm group count ``min(channels // 4, 32)`` as NCSN++, made valid for any width.

    Falls back to the largest smaller divisor of ``channels`` when the reference count does not
    divide it (where the reference would raise), so it equals the reference whenever it works.
    """
    g = max(1, min(channels // 4, max_groups))
    while channels % g:
        g -= 1
    return g


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm whose scale and shift are predicted from a style vector (DDGAN AdaGN).

    ``out = gamma(s) * GroupNorm(x) + beta(s)`` with ``[gamma, beta] = Linear(s)``. As in the
    reference only the bias is initialised (gamma bias 1, beta bias 0), so the block is the
    identity modulation for a zero style and a random perturbation of it otherwise.

    Parameters
    ----------
    num_groups
        GroupNorm groups.
    channels
        Feature channels.
    style_dim
        Size of the style (latent embedding) vector.
    """

    def __init__(self, num_groups: int, channels: int, style_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels, affine=False, eps=1e-6)
        self.style = dense(style_dim, 2 * channels)
        with torch.no_grad():
            self.style.bias[:channels] = 1.0
            self.style.bias[channels:] = 0.0

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        gamma, beta = self.style(style)[:, :, None, None].chunk(2, dim=1)
        return gamma * self.norm(x) + beta


# --------------------------------------------------------------------------------------------
# Odd-size support
# --------------------------------------------------------------------------------------------
def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect") -> tuple[Tensor, tuple[int, int]]:
    """Pad right/bottom so H and W are multiples of ``multiple``.

    Parameters
    ----------
    x
        ``(B, C, H, W)`` tensor.
    multiple
        Target divisor (the network's total downsampling factor).
    mode
        ``"reflect"``, ``"replicate"`` or ``"constant"`` (zeros). Reflect padding needs
        ``pad < size``; otherwise replicate is used.

    Returns
    -------
    tuple
        Padded tensor and the original ``(H, W)`` for :func:`crop_to`.
    """
    if mode not in ("reflect", "replicate", "constant"):
        raise ValueError(f"unknown padding mode {mode!r}")
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop the top-left ``size = (H, W)`` window (undoes :func:`pad_to_multiple`)."""
    h, w = size
    return x[..., :h, :w]


# --------------------------------------------------------------------------------------------
# Initialisers and layer factories
# --------------------------------------------------------------------------------------------
def variance_scaling_(tensor: Tensor, scale: float = 1.0) -> Tensor:
    """In-place uniform ``fan_avg`` variance scaling (NCSN++ ``default_init``).

    ``scale == 0`` maps to 1e-10 as in the reference: the layer starts (almost) at zero, which
    makes residual branches start near the identity while gradients still reach the weights.
    """
    scale = 1e-10 if scale == 0 else scale
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0 * scale / max(1.0, (fan_in + fan_out) / 2.0))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def conv2d(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
           bias: bool = True, init_scale: float = 1.0) -> nn.Conv2d:
    """``nn.Conv2d`` with variance-scaling weights and zero bias (NCSN++ / DDGAN init)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias)
    variance_scaling_(conv.weight, init_scale)
    if conv.bias is not None:  # bias=True
        nn.init.zeros_(conv.bias)
    return conv


def dense(in_features: int, out_features: int, init_scale: float = 1.0) -> nn.Linear:
    """``nn.Linear`` with variance-scaling weights and zero bias (NCSN++ / DDGAN init)."""
    lin = nn.Linear(in_features, out_features)
    variance_scaling_(lin.weight, init_scale)
    nn.init.zeros_(lin.bias)
    return lin


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN 'normal' initialisation, applied recursively.

    Conv / transposed conv / linear weights ~ N(0, gain), biases 0; BatchNorm weights
    ~ N(1, gain), biases 0 (junyanz/pytorch-CycleGAN-and-pix2pix ``init_weights``).

    Returns
    -------
    nn.Module
        The same module, for chaining.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module
