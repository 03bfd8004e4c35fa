"""Mixed depthwise convolution (MixConv), ME-NeSt-Ghost, section 3.1.1 and Figure 2 (Tan & Le, 2019b)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import SameConv2d, depthwise_conv2d, same_conv2d

# How MixConv2d runs its groups; every choice gives the same output (tests/test_speed_paths.py).
#   "split":  one depthwise convolution per kernel group on a channel slice, outputs concatenated (the plain
#             reading of ME-NeSt-Ghost, Figure 2).
#   "single": all groups in ONE depthwise convolution whose smaller kernels are zero-padded to the largest
#             (centred, so "same" padding and any stride give identical outputs); no split, no concatenation.
#   "repeat": for a channel multiplier m > 1, the input channels are repeated m times first, so every group is a
#             plain depthwise convolution (groups == channels), which oneDNN runs far faster on CPU than a
#             depthwise convolution with a channel multiplier; groups still split and concatenated.
#   "rowgrad": as "split", but every stride-1 group with a kernel of at least ROWGRAD_MIN_KERNEL runs through
#             :func:`~ghostnest.layers.depthwise.depthwise_conv2d`: oneDNN's forward, and a backward built from
#             batched matrix products (oneDNN's depthwise weight gradient is its slow case for large kernels).
#   "matmul": for small maps (at most SMALL_MAP pixels): the whole MixConv as one batched matrix product, one
#             (H_out*W_out x H*W) matrix per output channel gathered from its (zero-padded) kernel; exact (the same
#             sums, without the taps that only ever see padding).
#   "auto":   the choice measured fastest on CPU (docs/benchmarks.md, "Speed"). In inference (no gradient):
#             "single" for m == 1 and "repeat" for m > 1. In training (the weights need gradients) on CPU:
#             "matmul" on maps of at most SMALL_MAP pixels, else "rowgrad" for m <= ROWGRAD_MAX_MULTIPLIER, else
#             "split" (ME-NeSt-Ghost-S step, 128x128, batch 16, MixConv forward + backward summed per layer shape:
#             4.5 s all "split", 3.5 s with "matmul" on maps <= 8x8, 2.6 s "rowgrad" everywhere; per shape "matmul"
#             was faster still on 4x4 maps and "split" for multiplier 8). Training elsewhere (GPU): "split" (unmeasured
#             there: benchmarks/gpu_check.py --step mixconv times the alternatives).
MIXCONV_IMPLS = ("auto", "split", "single", "repeat", "rowgrad", "matmul")
SMALL_MAP = 16  # pixels (4 x 4): where "auto" uses "matmul" in training
ROWGRAD_MIN_KERNEL = 5  # oneDNN's own weight gradient is fast for 3x3 kernels
ROWGRAD_MAX_MULTIPLIER = 2  # with 8 outputs per channel, "split" was faster (measured)
_DEFAULT_IMPL = ["auto"]


def set_default_mixconv_impl(impl: str) -> str:
    """Set how MixConv2d modules without their own ``impl`` run (``"auto"`` by default); returns the old value."""
    if impl not in MIXCONV_IMPLS:
        raise ValueError(f"impl={impl!r} is not valid; choose one of {MIXCONV_IMPLS}")
    old, _DEFAULT_IMPL[0] = _DEFAULT_IMPL[0], impl
    return old


def split_channels(channels: int, num_groups: int, partition: str = "equal") -> list[int]:
    """Split ``channels`` into ``num_groups`` groups (ME-NeSt-Ghost, section 3.1.1).

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

    Implements ME-NeSt-Ghost, section 3.1.1 ("Mixed-Depthwise Convolutions") and Figure 2. Each group is a depthwise
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
            SameConv2d(c, c * multiplier, k, stride, groups=c, bias=bias)
            for c, k in zip(self.splits, kernel_sizes, strict=True)
        )
        self.impl: str | None = None  # None: the process default (set_default_mixconv_impl); not in state_dict

    def resolved_impl(self, pixels: int | None = None) -> str:
        """The implementation this module runs now (on maps of ``pixels`` = H * W, if known): its own ``impl``,
        else the default, with "auto" resolved."""
        impl = self.impl or _DEFAULT_IMPL[0]
        if impl not in MIXCONV_IMPLS:
            raise ValueError(f"impl={impl!r} is not valid; choose one of {MIXCONV_IMPLS}")
        if impl == "auto":
            if self.convs[0].weight.device.type == "meta":
                impl = "split"  # shape/FLOP counting: the architecture's multiply-adds, not the zero-padded taps
            elif torch.is_grad_enabled() and self.convs[0].weight.requires_grad:
                # training: oneDNN's depthwise backward is slower for both merged convolutions (measured on CPU)
                if self.convs[0].weight.device.type != "cpu":
                    impl = "split"
                elif pixels is not None and pixels <= SMALL_MAP:
                    impl = "matmul"
                else:
                    impl = "rowgrad" if self.multiplier <= ROWGRAD_MAX_MULTIPLIER else "split"
            else:
                impl = "repeat" if self.multiplier > 1 else "single"
        if (impl == "repeat" and self.multiplier == 1) or (impl == "rowgrad" and self.stride != 1):
            impl = "split"
        return impl

    def merged_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight (and bias) of the single depthwise convolution equal to this MixConv: each group's kernel
        zero-padded (centred) to the largest kernel size, stacked in output-channel order."""
        kmax = max(self.kernel_sizes)
        weight = torch.cat([F.pad(c.weight, [(kmax - c.kernel_size[0]) // 2] * 4) for c in self.convs], dim=0)
        bias = torch.cat([c.bias for c in self.convs]) if self.convs[0].bias is not None else None
        return weight, bias

    def _gather_index(self, h: int, w: int, k: int) -> tuple[torch.Tensor, int, int]:
        """For maps of h x w and a k x k kernel: index (H_out*W_out, h*w) into the flattened kernel, k*k where the
        tap falls outside it (that entry is a zero), and the output size."""
        key = (h, w, k)
        cache = self.__dict__.setdefault("_index_cache", {})
        if key not in cache:
            s, pad = self.stride, k // 2
            ho, wo = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
            oy = torch.arange(ho).view(ho, 1, 1, 1) * s - pad
            ox = torch.arange(wo).view(1, wo, 1, 1) * s - pad
            dy = torch.arange(h).view(1, 1, h, 1) - oy
            dx = torch.arange(w).view(1, 1, 1, w) - ox
            valid = (dy >= 0) & (dy < k) & (dx >= 0) & (dx < k)
            idx = torch.where(valid, dy * k + dx, torch.full_like(dy * dx, k * k)).reshape(ho * wo, h * w)
            cache[key] = (idx, ho, wo)
        return cache[key]

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        weight, bias = self.merged_weight()
        k = weight.shape[-1]
        idx, ho, wo = self._gather_index(h, w, k)
        taps = torch.cat([weight.flatten(1), weight.new_zeros(weight.shape[0], 1)], dim=1)  # (C', k*k + 1)
        mat = taps[:, idx.to(x.device)]  # (C', HoWo, HW)
        xs = x.reshape(n, c, 1, h * w).expand(n, c, self.multiplier, h * w).reshape(n, -1, h * w)
        out = torch.bmm(mat, xs.permute(1, 2, 0))  # (C', HoWo, N)
        out = out.permute(2, 0, 1).reshape(n, -1, ho, wo)
        return out if bias is None else out + bias.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        impl = self.resolved_impl(x.shape[-2] * x.shape[-1])
        if impl == "matmul":
            return self._matmul(x)
        if impl == "single":
            weight, bias = self.merged_weight()
            return same_conv2d(x, weight, bias, self.stride, self.in_channels)
        if impl == "repeat":
            m = self.multiplier  # each group's slice repeated straight into a contiguous tensor: one copy
            return torch.cat([
                same_conv2d(part.repeat_interleave(m, dim=1), conv.weight, conv.bias, self.stride, part.shape[1] * m)
                for conv, part in zip(self.convs, x.split(self.splits, dim=1), strict=True)
            ], dim=1)
        group = self._rowgrad_group if impl == "rowgrad" else nn.Conv2d.__call__  # "split" or "rowgrad"
        return torch.cat([group(conv, part) for conv, part in zip(self.convs, x.split(self.splits, dim=1), strict=True)], dim=1)

    @staticmethod
    def _rowgrad_group(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """One kernel group under "rowgrad" (stride 1; resolved_impl falls back to "split" otherwise)."""
        if conv.kernel_size[0] < ROWGRAD_MIN_KERNEL:
            return conv(x)
        out = depthwise_conv2d(x, conv.weight)
        return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"impl={self.impl or _DEFAULT_IMPL[0]}, splits={self.splits}, kernel_sizes={self.kernel_sizes}, stride={self.stride}, multiplier={self.multiplier}"
