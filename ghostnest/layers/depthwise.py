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
from __future__ import annotations

import torch
import torch.nn.functional as F


class _DepthwiseConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, 1, weight.shape[-1] // 2, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        cm, k = weight.shape[0], weight.shape[-1]
        m, p = cm // c, k // 2
        grad = grad.contiguous()
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
        return grad_x, grad_w


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, weight, None, 1, k // 2, 1, channels)`` (stride 1, "same" padding, channel multiplier
    ``weight.shape[0] // channels``) with the CPU-friendly backward described in the module docstring."""
    k = weight.shape[-1]
    if weight.shape[-2] != k or k % 2 == 0 or weight.shape[1] != 1 or weight.shape[0] % x.shape[1]:
        raise ValueError(f"depthwise_conv2d needs an odd square depthwise kernel; got weight {tuple(weight.shape)} "
                         f"for {x.shape[1]} input channels")
    return _DepthwiseConv2d.apply(x, weight)
