"""Ghost module (GhostNet, Han et al. 2020) and its Mix-GhostConv variant.

*GhostMixNet* ("GhostNet", Figure 3) uses it with a 3x3 primary convolution inside GhostMixNet's residual blocks;
ME-NeSt-Ghost (section 3.2.1, Figure 6) replaces the cheap depthwise convolution by a MixConv ("Mix-GhostConv").
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .activations import get_act
from .mixconv import MixConv2d


class GhostModule(nn.Module):
    """Primary convolution to ``ceil(out / ratio)`` intrinsic maps, cheap operation to the rest, concatenated.

    ME-NeSt-Ghost, section 3.2.1: "First a convolution operation is carried out ... and a featuremap of HxWxC/2 is
    generated, on this featuremap a cheap depthwise convolutional operation ... is applied to generate another
    HxWxC/2 featuremap, finally these two featuremaps are then concatenated". The output is trimmed to
    ``out_channels`` when ``ratio`` does not divide it.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: primary convolution kernel (1 in GhostNet and ME-NeSt-Ghost, 3 in GhostMixNet).
        ratio: output / intrinsic channels; must be at least 2 (ratio 1 would be a plain convolution).
        cheap_kernel: an int gives a depthwise ``cheap_kernel`` x ``cheap_kernel`` convolution (GhostNet);
            a sequence gives a :class:`MixConv2d` with those kernel sizes (Mix-GhostConv, ME-NeSt-Ghost, Figure 6).
        stride: stride of the primary convolution.
        act: activation after each part (``None`` for a linear module, as in a projecting Ghost module).
        bn: batch-normalise each part.
        partition: MixConv channel partition, when ``cheap_kernel`` is a sequence.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        ratio: int = 2,
        cheap_kernel: int | Sequence[int] = 3,
        stride: int = 1,
        act: str | None = "relu",
        bn: bool = True,
        partition: str = "equal",
    ):
        super().__init__()
        if not isinstance(ratio, int) or ratio < 2:
            raise ValueError(f"ratio={ratio!r} must be an integer >= 2 (ratio 1 is a plain convolution)")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must be positive")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd and positive")
        self.out_channels = out_channels
        init_channels = math.ceil(out_channels / ratio)
        new_channels = init_channels * (ratio - 1)
        self.trim = init_channels + new_channels != out_channels  # decided here: forward does tensor work only
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_channels, init_channels, kernel_size, stride, kernel_size // 2, bias=not bn),
            nn.BatchNorm2d(init_channels) if bn else nn.Identity(),
            get_act(act),
        )
        if isinstance(cheap_kernel, int):
            if cheap_kernel < 1 or cheap_kernel % 2 == 0:
                raise ValueError(f"cheap_kernel={cheap_kernel} must be odd and positive")
            cheap = nn.Conv2d(
                init_channels, new_channels, cheap_kernel, 1, cheap_kernel // 2, groups=init_channels, bias=not bn
            )
        else:
            cheap = MixConv2d(init_channels, cheap_kernel, 1, partition, multiplier=ratio - 1, bias=not bn)
        self.cheap_operation = nn.Sequential(
            cheap,
            nn.BatchNorm2d(new_channels) if bn else nn.Identity(),
            get_act(act),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)
        return out[:, : self.out_channels] if self.trim else out
