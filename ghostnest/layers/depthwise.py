"""Depthwise convolution with a faster backward on CPU: MixConv's large kernels in training.

The MixConv of ME-NeSt-Ghost (section 3.1.1) runs 5x5, 7x7 and 9x9 depthwise kernels on every feature map, down to the
8 x 8 and 4 x 4 maps of the last stages. oneDNN's depthwise *weight gradient* is its slow case on this project's
CPU: for 240 channels of 8 x 8 with a 9 x 9 kernel it took 18 ms where the forward pass took 0.7 ms
(docs/benchmarks.md, "Speed"). :func:`depthwise_conv2d` keeps oneDNN's forward and computes the backward as

- input gradient: a depthwise convolution of the output gradient with the flipped kernel (for a channel multiplier
  ``m > 1``, summed over each input channel's ``m`` outputs), the transposed convolution written as a forward one;
- weight gradient: one batched matrix product per kernel row ``a``: for every channel, the output gradient
  (``W x N*H``) times the input rows ``a .. a+H-1`` of the zero-padded input (``N*H x W+2p``), whose ``k``
  diagonals summed give that kernel row. Multiply-adds ``N*H*W*(W+2p)*k`` per channel, in large GEMMs, instead of
  oneDNN's direct loop over padding.

The sums are the same as the direct convolution's, in another order: float32 results agree to rounding
(tests/test_speed_paths.py compares both gradients with PyTorch's for every kernel size and multiplier).
Stride 1, odd kernel, "same" padding, no bias (MixConv's case); anything else should call ``F.conv2d``.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module


class _DepthwiseConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, 1, weight.shape[-1] // 2, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        x_dtype, w_dtype = x.dtype, weight.dtype
        # under autocast the forward ran in bf16/fp16 but the backward runs outside it: compute in (at least) float32
        dt = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.promote_types(grad.dtype,
                                                                                                 torch.float32))
        x, weight, grad = x.to(dt), weight.to(dt), grad.to(dt).contiguous()
        n, c, h, w = x.shape
        cm, k = weight.shape[0], weight.shape[-1]
        m, p = cm // c, k // 2
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-2, -1), None, 1, p, 1, cm)
            if m > 1:
                grad_x = grad_x.view(n, c, m, h, w).sum(2)
        if ctx.needs_input_grad[1]:
            xp = F.pad(x.contiguous(), [p, p, p, p]).transpose(0, 1)  # (C, N, H+2p, W+2p)
            g = grad.view(n, c, m, h, w).permute(1, 2, 4, 0, 3).reshape(c, m * w, n * h)  # (C, m*W, N*H)
            rows = []
            for a in range(k):
                r = torch.bmm(g, xp[:, :, a:a + h, :].reshape(c, n * h, w + 2 * p)).view(cm, w, w + 2 * p)
                s = r.stride()  # r[., j, j + b] summed over j is kernel tap (a, b)
                rows.append(r.as_strided((cm, w, k), (s[0], s[1] + s[2], s[2])).sum(1))
            grad_w = torch.stack(rows, 1).unsqueeze(1)
        return (None if grad_x is None else grad_x.to(x_dtype)), (None if grad_w is None else grad_w.to(w_dtype))


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, weight, None, 1, k // 2, 1, channels)`` (stride 1, "same" padding, channel multiplier
    ``weight.shape[0] // channels``) with the CPU-friendly backward described in the module docstring."""
    k = weight.shape[-1]
    if weight.shape[-2] != k or k % 2 == 0 or weight.shape[1] != 1 or weight.shape[0] % x.shape[1]:
        raise ValueError(f"depthwise_conv2d needs an odd square depthwise kernel; got weight {tuple(weight.shape)} "
                         f"for {x.shape[1]} input channels")
    return _DepthwiseConv2d.apply(x, weight)


def same_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, groups: int
                ) -> torch.Tensor:
    """``F.conv2d`` with "same" padding (``k // 2``, odd ``k``) that, at stride 1, leaves out the kernel rows and
    columns that only ever meet padding: on an ``h``-row map a tap more than ``h - 1`` rows from the centre never
    touches the input, so a 9x9 kernel on a 4x4 map is a 7x7 one, and on a 1x1 map its centre tap alone. Exact (the
    same products, without the zeros). MixConv's 9x9 kernels reach the 4x4 maps of the last stage at 128x128 and
    1x1 maps at 32x32, where oneDNN took 1.2 ms a call for 1536 channels of 1x1 (ONEDNN_VERBOSE, 1 thread): the
    fused ME-NeSt-Ghost-S at 32x32, batch 1, went from 153 ms to 63 ms (interleaved; unchanged at 128x128).

    On the meta device nothing is cropped: FLOP counts give the architecture's nominal multiply-adds."""
    k = weight.shape[-1]
    pad = k // 2
    if stride == 1 and x.device.type != "meta" and weight.shape[-2] == k:
        ch, cw = max(0, pad - x.shape[-2] + 1), max(0, pad - x.shape[-1] + 1)
        if ch > 0 or cw > 0:
            weight = weight[:, :, ch:k - ch, cw:k - cw].contiguous()
            if weight.shape[-2] == 1 and weight.shape[-1] == 1 and groups == x.shape[1]:
                # a per-channel scale (PyTorch's native 1x1 depthwise convolution loops over the channels one by one)
                m = weight.shape[0] // groups
                out = (x if m == 1 else x.repeat_interleave(m, dim=1)) * weight.view(1, -1, 1, 1)
                if bias is not None:
                    out = out + bias.view(1, -1, 1, 1)
                return out
            return F.conv2d(x, weight, bias, 1, (pad - ch, pad - cw), 1, groups)
    return F.conv2d(x, weight, bias, stride, pad, 1, groups)


@register_notrace_module  # crops its kernel by the map size: a leaf for torch.fx (timm's tracer)
class SameConv2d(torch.nn.Conv2d):
    """A ``nn.Conv2d`` with "same" padding that runs through :func:`same_conv2d` (dead taps of small maps left
    out); the fused MixConv of :func:`ghostnest.fuse` is one."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = True, device=None, dtype=None):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd for 'same' padding")
        super().__init__(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias,
                         device=device, dtype=dtype)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return same_conv2d(input, weight, bias, self.stride[0], self.groups)
