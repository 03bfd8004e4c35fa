"""Channel attention: Squeeze-Excitation and Split-Attention."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation

from .activations import get_act


class SqueezeExcite(SqueezeExcitation):
    """Squeeze-Excitation (Hu et al.): global average pool, 1x1 conv down, activation, 1x1 conv up, sigmoid gate.

    ME-NeSt-Ghost, section 3.2.2, and *GhostMixNet*, "Squeeze and Excitation Block" (which uses
    ``torchvision.ops.SqueezeExcitation``; this class *is* that module, with a friendlier constructor).

    Give either ``squeeze_channels`` explicitly or ``reduction`` (squeeze = ``channels // reduction``, at least 1).
    """

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        squeeze_channels: int | None = None,
        act: str = "relu",
    ):
        if channels < 1:
            raise ValueError(f"channels={channels} must be positive")
        if squeeze_channels is None:
            if reduction <= 0:
                raise ValueError(f"reduction={reduction} must be positive")
            squeeze_channels = max(1, int(channels // reduction))
        if squeeze_channels < 1:
            raise ValueError(f"squeeze_channels={squeeze_channels} must be at least 1")
        act_layer = type(get_act(act))
        super().__init__(channels, squeeze_channels, activation=act_layer)


class SplitAttention(nn.Module):
    """Split-Attention over ``radix`` splits within ``cardinality`` groups (ResNeSt, Zhang et al. 2020).

    ME-NeSt-Ghost, section 3.1.2 and Figure 3: "input featuremap is first divided into r=2 groups ... A global pooling
    layer then aggregates over the spatial dimensions ... 2 1x1 convolutions with number of groups = cardinality
    are added after the pooling layer to predict the attention weights for each split." With radix 2 and
    cardinality 1 this is an SK-unit; with radix 1 it degenerates to SE-like sigmoid gating.

    Input: ``(N, radix * channels, H, W)``, the ``radix`` splits stacked along channels: ``layout="split_major"``
    (ResNeSt's order, split ``r`` of channel ``c`` at ``r * channels + c``) or ``layout="channel_major"`` (at
    ``c * radix + r``: the order in which a depthwise convolution with channel multiplier ``radix`` emits its
    outputs, which MSBlock feeds in directly, so no transposing copy of the largest tensor is needed).
    Both layouts give the same output for the same weights.
    Output: ``(N, channels, H, W)``, the attention-weighted sum of the splits.

    Args:
        channels: channels of one split (= output channels); divisible by ``cardinality``.
        radix: number of splits.
        cardinality: number of cardinal groups.
        reduction: the attention's inner width is ``channels * radix // reduction`` ...
        min_inner: ... but at least ``min_inner`` (ResNeSt uses 32), rounded up to a multiple of ``cardinality``.
        act: activation between the two 1x1 convolutions.
        layout: ``"split_major"`` or ``"channel_major"`` (see above).
    """

    def __init__(
        self,
        channels: int,
        radix: int = 2,
        cardinality: int = 1,
        reduction: int = 4,
        min_inner: int = 32,
        act: str = "relu",
        layout: str = "split_major",
    ):
        super().__init__()
        if layout not in ("split_major", "channel_major"):
            raise ValueError(f"layout={layout!r} must be 'split_major' or 'channel_major'")
        if radix < 1:
            raise ValueError(f"radix={radix} must be >= 1")
        if cardinality < 1 or channels % cardinality:
            raise ValueError(f"channels={channels} must be divisible by cardinality={cardinality} (>= 1)")
        if reduction < 1:
            raise ValueError(f"reduction={reduction} must be >= 1")
        inner = max(channels * radix // reduction, min_inner, 1)
        inner = -(-inner // cardinality) * cardinality
        self.channels, self.radix, self.cardinality, self.layout = channels, radix, cardinality, layout
        self.fc1 = nn.Conv2d(channels, inner, 1, groups=cardinality)
        self.bn1 = nn.BatchNorm2d(inner)
        self.act1 = get_act(act)
        self.fc2 = nn.Conv2d(inner, channels * radix, 1, groups=cardinality)

    def fuse_pairs(self) -> list[tuple[str, str]]:
        """(conv, BN) children that :func:`ghostnest.fuse` folds."""
        return [("fc1", "bn1")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape  # c == radix * channels (the block that feeds it is built so)
        if self.radix == 1:
            attn = self.fc2(self.act1(self.bn1(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
            return x * attn.sigmoid()
        # the pooled sum of the splits, without materialising the sum (pooling is linear)
        if self.layout == "channel_major":
            gap = x.reshape(n, self.channels, self.radix * h * w).mean(2) * self.radix  # a view unless channels_last
        else:
            gap = x.reshape(n, self.radix, self.channels, h * w).mean(3).sum(1)
        attn = self.fc2(self.act1(self.bn1(self.fc1(gap.view(n, self.channels, 1, 1)))))
        # (N, card, radix, C/card) -> softmax over the radix
        attn = attn.view(n, self.cardinality, self.radix, -1).softmax(dim=2)
        if self.layout == "channel_major":  # out[n, c] = sum_r attn[n, c, r] * x[n, c * radix + r]
            # contiguous: at batch 1 the reshape is a strided view, and CPU bmm on it is ~20x slower (per-matrix copies)
            attn = attn.permute(0, 1, 3, 2).reshape(n * self.channels, 1, self.radix).contiguous()
            return torch.bmm(attn, x.reshape(n * self.channels, self.radix, h * w)).view(n, self.channels, h, w)
        attn = attn.transpose(1, 2).reshape(n, self.radix, self.channels, 1, 1)
        return (x.view(n, self.radix, self.channels, h, w) * attn).sum(dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, radix={self.radix}, cardinality={self.cardinality}, layout={self.layout}"


class ChannelShuffle(nn.Module):
    """Channel shuffle (ShuffleNet, Zhang et al. 2017), applied after the skip connection in ME-NeSt-Ghost (Figures 1, 4).

    Validates ``groups`` against ``channels`` at construction; the shuffle itself is a view/transpose, which
    autograd, ``torch.compile`` and ONNX export all handle.
    """

    def __init__(self, channels: int, groups: int = 2):
        super().__init__()
        if groups < 1 or channels % groups:
            raise ValueError(
                f"channels={channels} is not divisible by shuffle groups={groups}; "
                f"use groups that divide {channels} or disable the shuffle"
            )
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return x
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
