"""The reusable layers: shapes, partitions, parameter counts against hand computation, and construction errors."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ghostnest.layers import (
    ChannelShuffle,
    GhostModule,
    MixConv2d,
    SplitAttention,
    SqueezeExcite,
    get_act,
    split_channels,
)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --- MixConv (ME-NeSt-Ghost, section 3.1.1) ---------------------------------------------------------------------------------


def test_split_channels_paper_examples():
    assert split_channels(32, 4, "equal") == [8, 8, 8, 8]
    assert split_channels(32, 4, "exponential") == [16, 8, 4, 4]
    assert split_channels(30, 4, "equal") == [9, 7, 7, 7]


@given(channels=st.integers(1, 512), groups=st.integers(1, 6), partition=st.sampled_from(["equal", "exponential"]))
@settings(max_examples=200, deadline=None)
def test_split_channels_covers_all_channels(channels, groups, partition):
    too_few = channels < groups or (partition == "exponential" and channels < 2 ** (groups - 1))
    if too_few:
        with pytest.raises(ValueError, match=f"channels={channels}"):
            split_channels(channels, groups, partition)
        return
    split = split_channels(channels, groups, partition)
    assert sum(split) == channels and len(split) == groups and min(split) >= 1


@pytest.mark.parametrize("stride,size", [(1, 16), (2, 16), (2, 15), (2, 17), (3, 11)])
def test_mixconv_shape_and_groups(stride, size):
    m = MixConv2d(32, (3, 5, 7, 9), stride=stride)
    y = m(torch.randn(2, 32, size, size + 2))
    assert y.shape == (2, 32, math.ceil(size / stride), math.ceil((size + 2) / stride))
    assert [c.kernel_size[0] for c in m.convs] == [3, 5, 7, 9]
    # depthwise: 8 channels each of k*k weights
    assert n_params(m) == 8 * (9 + 25 + 49 + 81)


def test_mixconv_groups_are_independent():
    """Perturbing one group's input channels changes only that group's outputs (it is depthwise per group)."""
    torch.manual_seed(0)
    m = MixConv2d(8, (3, 5), multiplier=2).eval()
    x = torch.randn(1, 8, 9, 9)
    base = m(x)
    x2 = x.clone()
    x2[:, 5] += 1.0  # channel 5 is in the second group (4..7)
    diff = (m(x2) - base).abs().flatten(2).amax(-1)[0]
    changed = (diff > 0).nonzero().flatten().tolist()
    assert changed == [10, 11]  # multiplier 2: input channel c -> outputs 2c, 2c+1


def test_mixconv_matches_plain_depthwise_with_one_kernel():
    torch.manual_seed(0)
    m = MixConv2d(6, (5,))
    ref = nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False)
    ref.weight.data.copy_(m.convs[0].weight.data)
    x = torch.randn(2, 6, 8, 8)
    torch.testing.assert_close(m(x), ref(x))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(channels=3, kernel_sizes=(3, 5, 7, 9)), "fewer than the 4 MixConv groups"),
        (dict(channels=8, kernel_sizes=(3, 4)), "odd"),
        (dict(channels=8, partition="log"), "partition"),
        (dict(channels=3, kernel_sizes=(3, 5, 7), partition="exponential"), "exponential"),
        (dict(channels=8, multiplier=0), "multiplier"),
    ],
)
def test_mixconv_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixConv2d(**kwargs)


# --- GhostModule (GhostNet; ME-NeSt-Ghost, section 3.2.1 / Figure 6; *GhostMixNet*) ---------------------------------------------------


@pytest.mark.parametrize("out", [16, 17, 5])
@pytest.mark.parametrize("ratio", [2, 3])
def test_ghost_module_shapes(out, ratio):
    m = GhostModule(8, out, kernel_size=1, ratio=ratio)
    y = m(torch.randn(2, 8, 7, 7))
    assert y.shape == (2, out, 7, 7)


def test_ghost_module_param_count_matches_hand_count():
    # in 64 -> out 128, primary 3x3, ratio 2: 64 intrinsic maps, 64 ghost maps from a 3x3 depthwise conv
    m = GhostModule(64, 128, kernel_size=3, ratio=2, cheap_kernel=3)
    assert n_params(m) == 64 * 64 * 9 + 2 * 64 + 64 * 9 + 2 * 64


def test_ghost_module_first_half_is_primary_output():
    torch.manual_seed(0)
    m = GhostModule(4, 8, act=None).eval()
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(m(x)[:, :4], m.primary_conv(x))


def test_mix_ghost_conv_uses_mixconv_cheap_op():
    m = GhostModule(16, 64, cheap_kernel=(3, 5, 7, 9))
    assert isinstance(m.cheap_operation[0], MixConv2d)
    assert m.cheap_operation[0].splits == [8, 8, 8, 8]
    assert m(torch.randn(1, 16, 9, 9)).shape == (1, 64, 9, 9)


def test_ghost_module_stride_on_odd_input():
    m = GhostModule(8, 12, kernel_size=3, stride=2, cheap_kernel=(3, 5))
    assert m(torch.randn(1, 8, 15, 17)).shape == (1, 12, 8, 9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(ratio=1), "ratio=1 must be an integer >= 2"),
        (dict(kernel_size=2), "kernel_size"),
        (dict(cheap_kernel=4), "cheap_kernel"),
        (dict(out_channels=6, cheap_kernel=(3, 5, 7, 9)), "fewer than the 4 MixConv groups"),
    ],
)
def test_ghost_module_errors(kwargs, match):
    args = dict(in_channels=8, out_channels=16) | kwargs
    with pytest.raises(ValueError, match=match):
        GhostModule(**args)


# --- SE, Split-Attention, shuffle, activations ------------------------------------------------------------------


def test_squeeze_excite_widths():
    assert SqueezeExcite(64, reduction=16).fc1.out_channels == 4
    assert SqueezeExcite(64, squeeze_channels=10).fc1.out_channels == 10
    se = SqueezeExcite(32, reduction=4)
    x = torch.rand(2, 32, 6, 6)
    y = se(x)
    assert y.shape == x.shape
    # the gate is in (0, 1) and per channel: y / x is constant over space
    ratio = y / x
    assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), atol=1e-5)
    assert (ratio > 0).all() and (ratio < 1).all()
    with pytest.raises(ValueError, match="squeeze_channels"):
        SqueezeExcite(8, squeeze_channels=0)


def test_split_attention_radix2_is_convex_combination_of_splits():
    torch.manual_seed(0)
    sa = SplitAttention(16, radix=2, min_inner=8).eval()
    a, b = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    y = sa(torch.cat([a, b], 1))
    assert y.shape == (2, 16, 5, 5)
    # weights are per (sample, channel) and sum to one: y = w*a + (1-w)*b with w in (0, 1)
    w = (y - b) / (a - b)
    assert torch.allclose(w, w[..., :1, :1].expand_as(w), atol=1e-4)
    assert ((w > 0) & (w < 1)).all()


@pytest.mark.parametrize("radix,cardinality", [(2, 1), (3, 1), (2, 4), (4, 2)])
def test_split_attention_layouts_agree(radix, cardinality):
    """channel_major (split r of channel c at c * radix + r, what MSBlock's MixConv emits) equals split_major
    (ResNeSt's order) on the same splits, in train and eval mode, output and gradients; and it matches a
    straightforward reading of ResNeSt's formula."""
    torch.manual_seed(radix * 10 + cardinality)
    sm = SplitAttention(16, radix, cardinality, reduction=4, min_inner=8)
    cm = SplitAttention(16, radix, cardinality, reduction=4, min_inner=8, layout="channel_major")
    cm.load_state_dict(sm.state_dict())
    splits = torch.randn(3, radix, 16, 5, 4, dtype=torch.float64)
    sm, cm = sm.double(), cm.double()
    for train in (True, False):
        sm.train(train), cm.train(train)
        xs = splits.reshape(3, radix * 16, 5, 4).requires_grad_()
        xc = splits.transpose(1, 2).reshape(3, 16 * radix, 5, 4).requires_grad_()
        ys, yc = sm(xs), cm(xc)
        assert torch.allclose(ys, yc, atol=1e-12)
        gs, = torch.autograd.grad(ys.square().sum(), xs)
        gc, = torch.autograd.grad(yc.square().sum(), xc)
        assert torch.allclose(gs.view(3, radix, 16, 5, 4).transpose(1, 2).reshape(3, -1, 5, 4), gc, atol=1e-12)
    # ResNeSt: gap = pool(sum of splits); attention over the radix per (cardinal group, channel); weighted sum
    gap = splits.sum(1).mean((2, 3), keepdim=True)
    logits = sm.fc2(sm.act1(sm.bn1(sm.fc1(gap)))).view(3, cardinality, radix, 16 // cardinality)
    a = logits.softmax(2).transpose(1, 2).reshape(3, radix, 16, 1, 1)
    assert torch.allclose(ys, (splits * a).sum(1), atol=1e-12)
    for model, x in ((sm, xs), (cm, xc)):  # channels_last input (no view of the channels across pixels)
        assert torch.allclose(model(x.detach().contiguous(memory_format=torch.channels_last)), ys, atol=1e-12)
    with pytest.raises(ValueError, match="layout"):
        SplitAttention(16, layout="interleaved")


def test_split_attention_radix1_is_sigmoid_gate():
    sa = SplitAttention(8, radix=1, min_inner=4).eval()
    x = torch.rand(1, 8, 4, 4) + 0.1
    gate = sa(x) / x
    assert ((gate > 0) & (gate < 1)).all()


def test_split_attention_cardinality_and_inner_width():
    sa = SplitAttention(32, radix=2, cardinality=4, reduction=4, min_inner=8)
    assert sa.fc1.out_channels == 16 and sa.fc1.groups == 4
    assert sa(torch.randn(2, 64, 3, 3)).shape == (2, 32, 3, 3)
    with pytest.raises(ValueError, match="cardinality"):
        SplitAttention(30, cardinality=4)
    with pytest.raises(RuntimeError):  # forward does tensor work only: a wrong input is torch's shape error
        sa(torch.randn(1, 32, 3, 3))


def test_channel_shuffle_permutation():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert ChannelShuffle(6, 2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert ChannelShuffle(6, 3)(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    # torch's own implementation agrees
    torch.testing.assert_close(ChannelShuffle(6, 3)(x), nn.ChannelShuffle(3)(x))
    with pytest.raises(ValueError, match="not divisible by shuffle groups=4"):
        ChannelShuffle(6, 4)


def test_activation_factory():
    assert isinstance(get_act("mish"), nn.Mish)
    assert isinstance(get_act("silu"), nn.SiLU)
    assert isinstance(get_act(None), nn.Identity)
    with pytest.raises(ValueError, match="act='swishy'"):
        get_act("swishy")
