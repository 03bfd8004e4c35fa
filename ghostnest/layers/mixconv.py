"""Mixed depthwise convolution (MixConv), seed 000 section 3.1.1 and Figure 2 (Tan & Le, 2019b)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def split_channels(channels: int, num_groups: int, partition: str = "equal") -> list[int]:
    """Split ``channels`` into ``num_groups`` groups (seed 000, 3.1.1).

    ``"equal"``: every group gets the same count, the remainder goes to the first group (32 over 4 -> 8,8,8,8).
    ``"exponential"``: the i-th group gets a 2^-(i+1) share, the last group the rest (32 over 4 -> 16,8,4,4).
    """
    if num_groups < 1:
        raise ValueError(f"kernel_sizes must hold at least one kernel size, got {num_groups} groups")
    if channels < num_groups:
        raise ValueError(
            f"channels={channels} is fewer than the {num_groups} MixConv groups; "
            f"use at least {num_groups} channels or fewer kernel sizes"
        )
    if partition == "equal":
        split = [channels // num_groups] * num_groups
        split[0] += channels - sum(split)
    elif partition == "exponential":
        split = [channels // 2 ** (i + 1) for i in range(num_groups - 1)]
        split.append(channels - sum(split))
        if min(split) < 1:
            raise ValueError(
                f"channels={channels} is too few for an exponential partition over {num_groups} groups "
                f"(gives {split}); use at least {2 ** (num_groups - 1)} channels or partition='equal'"
            )
    else:
        raise ValueError(f"partition={partition!r} is not valid; choose 'equal' or 'exponential'")
    return split


class MixConv2d(nn.Module):
    """Mixed depthwise convolution: channel groups convolved with different kernel sizes, then concatenated.

    Implements seed 000, section 3.1.1 ("Mixed-Depthwise Convolutions") and Figure 2. Each group is a depthwise
    convolution (``groups == group channels``) with "same" padding, so every group has the same output size for
    any stride and any (odd or even) input size.

    Args:
        channels: input channels.
        kernel_sizes: one odd kernel size per group (default 3, 5, 7, 9 as in the paper).
        stride: spatial stride, shared by all groups.
        partition: ``"equal"`` (the paper's choice) or ``"exponential"``.
        multiplier: channel multiplier; the output has ``channels * multiplier`` channels, each input channel's
            outputs staying inside its group.
        bias: add a bias per output channel.
    """

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int] = (3, 5, 7, 9),
        stride: int = 1,
        partition: str = "equal",
        multiplier: int = 1,
        bias: bool = False,
    ):
        super().__init__()
        kernel_sizes = [int(k) for k in kernel_sizes]
        if any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes={kernel_sizes} must all be odd and positive (e.g. 3, 5, 7, 9)")
        if multiplier < 1:
            raise ValueError(f"multiplier={multiplier} must be a positive integer")
        if stride < 1:
            raise ValueError(f"stride={stride} must be a positive integer")
        self.in_channels = channels
        self.out_channels = channels * multiplier
        self.kernel_sizes = kernel_sizes
        self.stride = stride
        self.multiplier = multiplier
        self.splits = split_channels(channels, len(kernel_sizes), partition)
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c * multiplier, k, stride, padding=k // 2, groups=c, bias=bias)
            for c, k in zip(self.splits, kernel_sizes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        return torch.cat([conv(part) for conv, part in zip(self.convs, x.split(self.splits, dim=1))], dim=1)

    def extra_repr(self) -> str:
        return f"splits={self.splits}, kernel_sizes={self.kernel_sizes}, stride={self.stride}, multiplier={self.multiplier}"
