"""CycleGAN networks (Zhu et al., ICCV 2017): ResNet generator and 70x70 PatchGAN.

Architectures follow junyanz/pytorch-CycleGAN-and-pix2pix (``ResnetGenerator``,
``NLayerDiscriminator``) with its default instance norm and 'normal' (N(0, 0.02)) init.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .layers import crop_to, init_weights, pad_to_multiple

__all__ = ["ResnetGenerator", "PatchDiscriminator"]


def _norm_factory(norm: str) -> tuple[Callable[[int], nn.Module], bool]:
    """Norm-layer constructor and whether convs before it need a bias."""
    if norm == "instance":
        # No affine / running stats, as the reference; the conv bias carries the shift.
        return (lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)), True
    if norm == "batch":
        return (lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)), False
    if norm == "none":
        return (lambda c: nn.Identity()), True
    raise ValueError(f"unknown norm {norm!r} (expected 'instance', 'batch' or 'none')")


class _ResidualBlock(nn.Module):
    """Reflect-padded 3x3 conv -> norm -> ReLU -> 3x3 conv -> norm, plus identity skip."""

    def __init__(self, channels: int, norm_layer: Callable[[int], nn.Module], bias: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator (``resnet_9blocks`` by default).

    c7s1-ngf, ``n_downsampling`` stride-2 convs, ``n_blocks`` residual blocks, as many
    transposed convs back up, c7s1-out, tanh. Inputs of any size are reflect-padded to a
    multiple of ``2**n_downsampling`` and the output is cropped back.

    Parameters
    ----------
    in_channels, out_channels
        Input / output image channels.
    ngf
        Width of the first layer.
    n_blocks
        Number of residual blocks at the bottleneck.
    n_downsampling
        Number of stride-2 stages.
    norm
        ``"instance"`` (reference default), ``"batch"`` or ``"none"``.
    """

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9,
                 n_downsampling: int = 2, norm: str = "instance") -> None:
        super().__init__()
        norm_layer, bias = _norm_factory(norm)
        self.factor = 2 ** n_downsampling
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias),
            norm_layer(ngf), nn.ReLU(True),
        ]
        for i in range(n_downsampling):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias),
                       norm_layer(2 * c), nn.ReLU(True)]
        c = ngf * self.factor
        layers += [_ResidualBlock(c, norm_layer, bias) for _ in range(n_blocks)]
        for i in range(n_downsampling):
            c = ngf * 2 ** (n_downsampling - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1,
                                          bias=bias),
                       norm_layer(c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self, 0.02)

    def forward(self, x: Tensor) -> Tensor:
        """Translate ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)`` in [-1, 1]."""
        x, size = pad_to_multiple(x, self.factor, mode="reflect")
        return crop_to(self.model(x), size)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (70x70 receptive field for ``n_layers=3``).

    Returns raw logits per patch (no sigmoid), for LSGAN or logistic losses. With 4x4 kernels,
    padding 1, ``n_layers`` stride-2 convs and two stride-1 convs, each side shrinks as
    ``s -> s // 2`` per stride-2 conv and ``s -> s - 1`` per stride-1 conv; instance norm needs
    more than one pixel before the last conv, so sides should be at least ~24 for ``n_layers=3``.

    Parameters
    ----------
    in_channels
        Input channels (e.g. the image, or source and image concatenated for a pix2pix D).
    ndf
        Width of the first layer.
    n_layers
        Number of stride-2 convolutions.
    norm
        ``"instance"`` (CycleGAN default), ``"batch"`` or ``"none"``.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3,
                 norm: str = "instance") -> None:
        super().__init__()
        norm_layer, bias = _norm_factory(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
                       norm_layer(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
                   norm_layer(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        self.n_layers = n_layers
        init_weights(self, 0.02)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the logit map for an ``height x width`` input."""
        def side(s: int) -> int:
            for _ in range(self.n_layers):
                s = s // 2  # k4 s2 p1: floor((s + 2 - 4) / 2) + 1
            return s - 2    # two k4 s1 p1 convs
        return side(height), side(width)

    def forward(self, x: Tensor) -> Tensor:
        """Patch logits ``(B, 1, h', w')`` for ``(B, in_channels, H, W)``."""
        return self.model(x)
