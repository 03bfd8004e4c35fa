"""Mixed depthwise convolution (MixConv), ME-NeSt-Ghost, section 3.1.1 and Figure 2 (Tan & Le, 2019b)."""
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
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


def check_mixconv_impl(impl: str) -> str:
    """``impl`` if it names a MixConv implementation, else a ``ValueError`` listing them."""
    if impl not in MIXCONV_IMPLS:
        raise ValueError(f"impl={impl!r} is not valid; choose one of {MIXCONV_IMPLS}")
    return impl


def set_mixconv_impl(model: nn.Module, impl: str) -> nn.Module:
    """Run every :class:`MixConv2d` of ``model`` through ``impl`` (one of :data:`MIXCONV_IMPLS`); returns ``model``.

    The one way to choose MixConv's implementation: each module is built with ``"auto"`` and keeps what this sets
    (:func:`ghostnest.fuse` pins the inference one). Not part of the state dict; a deep copy keeps it."""
    check_mixconv_impl(impl)
    for m in model.modules():
        if isinstance(m, MixConv2d):
            m.impl = impl
    return model


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


@register_notrace_module  # its implementation is picked from the map size: a leaf for torch.fx (timm's tracer)
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
        impl: how the groups run, one of :data:`MIXCONV_IMPLS` (``"auto"``: the measured fastest for the mode,
            device and map size; every choice gives the same output). :func:`set_mixconv_impl` changes it for a
            whole model.
    """

    __constants__ = ["small_map", "rowgrad_max_multiplier"]  # TorchScript reads class constants, not globals
    small_map = SMALL_MAP
    rowgrad_max_multiplier = ROWGRAD_MAX_MULTIPLIER

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int] = (3, 5, 7, 9),
        stride: int = 1,
        partition: str = "equal",
        multiplier: int = 1,
        bias: bool = False,
        impl: str = "auto",
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
        self.impl = check_mixconv_impl(impl)  # not in the state dict

    def resolved_impl(self, pixels: Optional[int] = None) -> str:
        """The implementation this module runs now (on maps of ``pixels`` = H * W, if known): its ``impl`` with
        "auto" resolved. Under TorchScript the custom-autograd paths ("rowgrad", "matmul") run as "split"."""
        impl = self.impl
        if impl == "auto":
            weight = self.convs[0].weight
            if weight.device.type == "meta":
                impl = "split"  # shape/FLOP counting: the architecture's multiply-adds, not the zero-padded taps
            elif torch.is_grad_enabled() and weight.requires_grad:
                # training: oneDNN's depthwise backward is slower for both merged convolutions (measured on CPU)
                if weight.device.type != "cpu":
                    impl = "split"
                elif pixels is not None and pixels <= self.small_map:
                    impl = "matmul"
                elif self.multiplier <= self.rowgrad_max_multiplier:
                    impl = "rowgrad"
                else:
                    impl = "split"
            elif self.multiplier > 1:
                impl = "repeat"
            else:
                impl = "single"
        if torch.jit.is_scripting():
            if impl == "rowgrad" or impl == "matmul":
                impl = "split"
        if (impl == "repeat" and self.multiplier == 1) or (impl == "rowgrad" and self.stride != 1):
            impl = "split"
        return impl

    def merged_weight(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Weight (and bias) of the single depthwise convolution equal to this MixConv: each group's kernel
        zero-padded (centred) to the largest kernel size, stacked in output-channel order."""
        kmax = max(self.kernel_sizes)
        weights: list[torch.Tensor] = []
        biases: list[torch.Tensor] = []
        for conv in self.convs:
            p = (kmax - conv.kernel_size[0]) // 2
            weights.append(F.pad(conv.weight, [p, p, p, p]))
            bias = conv.bias
            if bias is not None:
                biases.append(bias)
        return torch.cat(weights, dim=0), (torch.cat(biases) if len(biases) > 0 else None)

    @torch.jit.unused
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

    @torch.jit.unused
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

    @torch.jit.unused
    def _rowgrad(self, x: torch.Tensor) -> torch.Tensor:
        """"split", with every group of a kernel of at least ROWGRAD_MIN_KERNEL through depthwise_conv2d (stride 1;
        resolved_impl falls back to "split" otherwise)."""
        outs = []
        for conv, part in zip(self.convs, x.split(self.splits, dim=1), strict=True):
            if conv.kernel_size[0] < ROWGRAD_MIN_KERNEL:
                outs.append(conv(part))
            else:
                out = depthwise_conv2d(part, conv.weight)
                outs.append(out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1))
        return torch.cat(outs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        impl = self.resolved_impl(x.shape[-2] * x.shape[-1])
        if impl == "matmul":
            return self._matmul(x)
        if impl == "rowgrad":
            return self._rowgrad(x)
        if impl == "single":
            weight, bias = self.merged_weight()
            return same_conv2d(x, weight, bias, self.stride, self.in_channels)
        parts = x.split(self.splits, dim=1)
        outs: list[torch.Tensor] = []
        for i, conv in enumerate(self.convs):
            if impl == "repeat":  # each group's slice repeated straight into a contiguous tensor: one copy
                part = parts[i].repeat_interleave(self.multiplier, dim=1)
                outs.append(same_conv2d(part, conv.weight, conv.bias, self.stride, part.shape[1]))
            else:  # "split"
                outs.append(conv(parts[i]))
        return torch.cat(outs, dim=1)

    def extra_repr(self) -> str:
        return (f"impl={self.impl}, splits={self.splits}, kernel_sizes={self.kernel_sizes}, stride={self.stride}, "
                f"multiplier={self.multiplier}")
