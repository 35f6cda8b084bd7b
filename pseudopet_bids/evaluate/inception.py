"""InceptionV3 as used for the Fréchet Inception Distance (FID), without any weight loading.

The network reproduces the FID flavour of InceptionV3: the TensorFlow "2015-12-05" graph
that the original FID code (Heusel et al. 2017) used, as ported to PyTorch by pytorch-fid.
It differs from the ImageNet InceptionV3 shipped with torchvision in four places, all of
which matter for matching published FID values:

* the average pools inside the Mixed_5* (A), Mixed_6b-6e (C) and Mixed_7b (E) blocks ignore
  the zero padding when averaging (TensorFlow ``SAME`` pooling, ``count_include_pad=False``);
* the pool branch of Mixed_7c takes a *max* pool instead of an average pool;
* the classifier has 1008 outputs (it is never evaluated here, but its weights are part of
  the published file, so it is kept to let that file load strictly);
* there is no auxiliary classifier.

Module and parameter names follow torchvision's ``Inception3`` so that the state dict of
pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` loads with ``strict=True``. Loading
files is the job of :mod:`pseudopet_bids.evaluate.fid`; this module does no I/O.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Side of the square image the network was trained on; inputs are resized to it.
INPUT_SIZE = 299
#: Length of the pooled feature vector that FID is computed on.
FEATURE_DIM = 2048
#: Outputs of the (unused) classifier of the TensorFlow 2015-12-05 graph.
NUM_CLASSES = 1008

_Size = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """Convolution without bias, batch normalisation (eps 1e-3) and ReLU.

    Parameters
    ----------
    in_channels, out_channels
        Channels entering and leaving the block.
    kernel_size, stride, padding
        As for :class:`torch.nn.Conv2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Size,
                 stride: _Size = 1, padding: _Size = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply convolution, normalisation and rectification."""
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow, leaves padded zeros out of the mean."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block (Mixed_5b/5c/5d): 1x1, 5x5, double 3x3 and pooled branches.

    Parameters
    ----------
    in_channels
        Channels of the input feature map.
    pool_features
        Channels produced by the pooled branch (output = 224 + ``pool_features``).
    """

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the four branches along the channel axis."""
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_same(x))
        return torch.cat([self.branch1x1(x), b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Mixed_6a).

    Parameters
    ----------
    in_channels
        Channels of the input feature map (output = ``in_channels`` + 480).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the strided convolutions and a strided max pool."""
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], dim=1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b-6e); 768 output channels.

    Parameters
    ----------
    in_channels
        Channels of the input feature map.
    channels_7x7
        Width of the inner layers of the two 7x7 branches.
    """

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row, col = (1, 7), (7, 1)
        pad_row, pad_col = (0, 3), (3, 0)
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, row, padding=pad_row)
        self.branch7x7_3 = BasicConv2d(c7, 192, col, padding=pad_col)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, col, padding=pad_col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, row, padding=pad_row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, col, padding=pad_col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, row, padding=pad_row)
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the four branches along the channel axis."""
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_same(x))
        return torch.cat([self.branch1x1(x), b7, bd, bp], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (Mixed_7a).

    Parameters
    ----------
    in_channels
        Channels of the input feature map (output = ``in_channels`` + 512).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the strided convolutions and a strided max pool."""
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], dim=1)


class FIDInceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs (Mixed_7b, Mixed_7c); 2048 output channels.

    Parameters
    ----------
    in_channels
        Channels of the input feature map.
    max_pool
        Pool branch type: ``False`` for the padding-excluding average pool (Mixed_7b),
        ``True`` for the 3x3 stride-1 max pool of the FID graph's Mixed_7c.
    """

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the four branches (two of them split in two) along channels."""
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], dim=1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], dim=1)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_same(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], dim=1)


class FIDInceptionV3(nn.Module):
    """FID InceptionV3 returning the 2048 pooled features of the last block.

    The weights are random after construction; load the published FID weights with
    :func:`pseudopet_bids.evaluate.fid.load_inception`. Call ``eval()`` before use (batch
    normalisation must use its running statistics).

    Attributes
    ----------
    fc
        The 2048 -> 1008 classifier of the original graph. Not used by :meth:`forward`;
        present only so that the published state dict loads strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(FEATURE_DIM, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled InceptionV3 features of a batch of images.

        Parameters
        ----------
        x
            Float tensor (N, 3, H, W) with intensities in [0, 1]. Any H, W: images are
            resized bilinearly (``align_corners=False``) to 299x299 first.

        Returns
        -------
        torch.Tensor
            (N, 2048) features: the global average of Mixed_7c's output.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 expects (N, 3, H, W) input, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"FIDInceptionV3 expects a float tensor, got {x.dtype}")
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                          align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
