"""Translation networks for the learned models: CycleGAN (ResNet generator, PatchGAN) and
SynDiff (NCSN++ diffusive generator, time-conditioned discriminator).

Pure 2D ``nn.Module`` s on ``(B, C, H, W)`` slices, no I/O, no compiled extensions; every
network accepts odd spatial sizes (pad, run, crop).
"""

from .complexity import count_parameters, flops_per_call, gflops
from .discriminators import DownConvBlock, TimeConditionedDiscriminator
from .layers import (AdaptiveGroupNorm, FirDownsample, FirUpsample, crop_to, downsample_fir,
                     fir_kernel, init_weights, pad_to_multiple, timestep_embedding, upsample_fir)
from .ncsnpp import AttnBlock, NCSNppGenerator, PixelNorm, ResnetBlockBigGANAdaGN
from .resnet import PatchDiscriminator, ResnetGenerator

__all__ = [
    "AdaptiveGroupNorm", "AttnBlock", "DownConvBlock", "FirDownsample", "FirUpsample",
    "NCSNppGenerator", "PatchDiscriminator", "PixelNorm", "ResnetBlockBigGANAdaGN",
    "ResnetGenerator", "TimeConditionedDiscriminator",
    "count_parameters", "crop_to", "downsample_fir", "fir_kernel", "flops_per_call", "gflops",
    "init_weights", "pad_to_multiple", "timestep_embedding", "upsample_fir",
]
