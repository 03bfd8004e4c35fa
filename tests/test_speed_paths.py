"""The speed paths: every fast training/inference path equals the plain eager path (fp32, 1e-4).

MixConv implementations (split / single zero-padded kernel / repeated input), the compiled Mish, the blocks and a
small ME-NeSt-Ghost in train and eval mode, and the plain GhostMixNet baseline of benchmarks/.
"""
import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ghostnest

from ghostnest.layers import GhostModule, MixConv2d
from ghostnest.layers.fused import SMALL_MISH, FastMish, fast_mish_enabled, mish_formula, use_fast_mish
from ghostnest.layers.depthwise import depthwise_conv2d
from ghostnest.layers.mixconv import MIXCONV_IMPLS, set_mixconv_impl
from ghostnest.models.menest import MENeStConfig, MSBlock, MSGhostBlock

from helpers import calibrate_bn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from plain_ghostmixnet import PlainGhostMixNet, load_ghostnest_weights  # noqa: E402

TOL = 1e-4
TINY = (("ms", 1, 8, 1, 1), ("ms", 1, 16, 2, 2), ("ms_ghost", 2, 16, 2, 2), ("ms_ghost", 1, 24, 1, 3))


def _forward_backward(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out.detach(), x.grad, grads


def _assert_close(a, b, what):
    assert a.shape == b.shape, what
    err = (a - b).abs().max().item()
    assert err <= TOL * max(1.0, b.abs().max().item()), f"{what}: max error {err}"


def _zero_in_exact_arithmetic(model, x) -> set[str]:
    """Parameters whose gradient is zero in exact arithmetic (a bias right before a training-mode BatchNorm, which
    subtracts it again): float64 finds them. In float32 their gradients are summation noise whose size follows the
    terms summed (1.5e-4 for ME-NeSt's attention fc1 bias on 2 threads), so no path can match another's to 1e-4."""
    m64 = copy.deepcopy(set_mixconv_impl(model, "split")).double()
    grads = _forward_backward(m64, x.double())[2]
    return {n for n, g in grads.items() if g.abs().max().item() < 1e-9}


@pytest.mark.parametrize("multiplier", [1, 2, 4])
@pytest.mark.parametrize("stride,size", [(1, 9), (2, 10), (2, 7)])
def test_mixconv_impls_equal_forward_and_backward(multiplier, stride, size):
    torch.manual_seed(0)
    m = MixConv2d(10, (3, 5, 7, 9), stride, multiplier=multiplier, bias=True)
    x = torch.randn(2, 10, size, size)
    ref = _forward_backward(set_mixconv_impl(m, "split"), x)
    for impl in ("single", "repeat", "rowgrad", "matmul", "auto"):
        out, gx, grads = _forward_backward(set_mixconv_impl(m, impl), x)
        _assert_close(out, ref[0], f"{impl} output")
        _assert_close(gx, ref[1], f"{impl} input grad")
        for n, g in grads.items():
            _assert_close(g, ref[2][n], f"{impl} grad {n}")


def test_mixconv_impl_is_chosen_once_and_auto_resolves_per_mode():
    m1, m8 = MixConv2d(8, (3, 5)), MixConv2d(8, (3, 5), multiplier=8)
    # training (weights need gradients) on CPU: the custom backward for multiplier <= 2, split beyond
    assert m1.resolved_impl() == "rowgrad" and m8.resolved_impl() == "split"
    assert MixConv2d(8, (3, 5), stride=2).resolved_impl() == "split"  # rowgrad is stride-1 only
    with torch.no_grad():
        assert m1.resolved_impl() == "single" and m8.resolved_impl() == "repeat"
    model = torch.nn.Sequential(m1, torch.nn.Identity(), torch.nn.Sequential(m8))
    assert set_mixconv_impl(model, "split") is model  # one call sets every MixConv of a model
    assert m1.resolved_impl() == m8.resolved_impl() == "split"
    assert MixConv2d(8, (3, 5), impl="repeat").impl == "repeat"  # or chosen when it is built
    with pytest.raises(ValueError, match="not valid"):
        set_mixconv_impl(model, "fastest")
    with pytest.raises(ValueError, match="not valid"):
        MixConv2d(8, (3, 5), impl="fastest")
    set_mixconv_impl(model, "auto")
    assert set(MIXCONV_IMPLS) == {"auto", "split", "single", "repeat", "rowgrad", "matmul"}
    assert m1.resolved_impl(16) == "matmul" and m1.resolved_impl(17) == "rowgrad"
    assert m8.resolved_impl(16) == "matmul" and m8.resolved_impl(64) == "split"
    assert "convs.0.weight" in m8.state_dict() and len(m8.state_dict()) == 2  # impl is not state


def test_depthwise_conv2d_backward_under_bf16_autocast():
    """Under CPU bf16 autocast (``ghostnest bench --mode train --dtype bf16``) the forward runs in bf16 and the
    backward outside autocast: it computes in float32 and returns gradients in the inputs' dtypes, close to fp32's."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, 8, requires_grad=True)
    w = torch.randn(12, 1, 5, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = depthwise_conv2d(x, w)
    assert out.dtype == torch.bfloat16
    gx, gw = torch.autograd.grad(out.float().square().sum(), (x, w))
    ref = torch.autograd.grad(F.conv2d(x, w, None, 1, 2, 1, 6).square().sum(), (x, w))
    assert gx.dtype == gw.dtype == torch.float32
    for got, want in zip((gx, gw), ref, strict=True):
        assert (got - want).abs().max() <= 0.05 * want.abs().max()


@pytest.mark.parametrize("multiplier", [1, 2, 8])
@pytest.mark.parametrize("k,size", [(3, 6), (5, 4), (7, 9), (9, 8), (9, 3)])
def test_depthwise_conv2d_custom_backward_equals_pytorch(multiplier, k, size):
    """depthwise_conv2d's hand-written backward (matrix products per kernel row) against PyTorch's own, also where
    the kernel is larger than the map and with a non-square map."""
    torch.manual_seed(k * size + multiplier)
    x = torch.randn(3, 5, size, size + 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5 * multiplier, 1, k, k, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 5 * multiplier, size, size + 2, dtype=torch.float64)
    ref = torch.autograd.grad(F.conv2d(x, w, None, 1, k // 2, 1, 5), (x, w), g)
    out = depthwise_conv2d(x, w)
    got = torch.autograd.grad(out, (x, w), g)
    _assert_close(out, F.conv2d(x, w, None, 1, k // 2, 1, 5), "output")
    _assert_close(got[0], ref[0], "input grad")
    _assert_close(got[1], ref[1], "weight grad")
    assert torch.autograd.gradcheck(depthwise_conv2d, (x[:1, :, :4, :5].detach().requires_grad_(),
                                                       w[:, :, :3, :3].contiguous().detach().requires_grad_()))
    with pytest.raises(ValueError, match="odd square depthwise kernel"):
        depthwise_conv2d(x, w[:, :, :2, :2])


def test_mish_formula_and_compiled_mish_equal_mish():
    x = torch.cat([torch.linspace(-60, 60, 2001), torch.randn(999) * 5]).view(3, 1000)
    _assert_close(mish_formula(x), F.mish(x), "mish formula")
    small = x[:, :SMALL_MISH // 3 - 1]  # below the threshold: F.mish itself, bit for bit
    assert torch.equal(FastMish()(small), F.mish(small))
    x = x.repeat(1, SMALL_MISH // 3000 + 1)  # above it: the compiled kernel
    x = x.clone().requires_grad_(True)
    y = FastMish()(x)
    _assert_close(y, F.mish(x), "FastMish")
    (gx,) = torch.autograd.grad(y.sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.mish(x2).sum(), x2)
    _assert_close(gx, ref, "FastMish grad")
    assert isinstance(fast_mish_enabled(), bool)


def _blocks():
    cfg = MENeStConfig()
    return {
        "ms_radix2_exp1": (MSBlock(8, 8, 1, 1, cfg), 8),
        "ms_radix2_exp4_s2": (MSBlock(8, 16, 2, 4, cfg), 8),
        "ms_ghost_exp4": (MSGhostBlock(16, 16, 1, 4, cfg), 16),
        "ms_ghost_s2_odd": (MSGhostBlock(16, 24, 2, 3, cfg), 16),
        "ghost_mix": (GhostModule(8, 22, cheap_kernel=(3, 5, 7, 9), act="mish"), 8),
    }


@pytest.mark.parametrize("name", list(_blocks()))
def test_blocks_fast_path_equals_plain_in_train_and_eval(name):
    torch.manual_seed(0)
    block, channels = _blocks()[name]
    x = torch.randn(4, channels, 12, 12)
    x = x * (0.5 + torch.rand(4, 1, 1, 1))
    block.train()
    ref = _forward_backward(set_mixconv_impl(block, "split"), x)
    fast = use_fast_mish(set_mixconv_impl(block, "auto"))
    out, gx, grads = _forward_backward(fast, x)
    _assert_close(out, ref[0], "train output")
    _assert_close(gx, ref[1], "train input grad")
    for n, g in grads.items():
        _assert_close(g, ref[2][n], f"grad {n}")
    block.eval()
    with torch.no_grad():
        plain = set_mixconv_impl(block, "split")(x)
        assert plain.std() > 1e-2
        _assert_close(set_mixconv_impl(block, "auto")(x), plain, "eval output")


def test_small_menest_fast_path_equals_plain_train_and_eval():
    torch.manual_seed(0)
    model = ghostnest.create_model("menest_ghost_s", num_classes=10, stages=TINY, num_features=64,
                                   drop_rate=0.0, drop_path_rate=0.0)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    zero = _zero_in_exact_arithmetic(model, x)
    assert all(n.endswith(".bias") for n in zero) and zero, zero
    ref = _forward_backward(set_mixconv_impl(model, "split"), x)
    use_fast_mish(set_mixconv_impl(model, "auto"))
    out, gx, grads = _forward_backward(model, x)
    _assert_close(out, ref[0], "train logits")
    _assert_close(gx, ref[1], "train input grad")
    for n, g in grads.items():
        if n in zero:  # both paths give noise around 0: bounded, not compared
            assert max(g.abs().max().item(), ref[2][n].abs().max().item()) <= 1e-3, n
        else:
            _assert_close(g, ref[2][n], f"grad {n}")
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)  # the same fast path in channels_last
    out, gx, grads = _forward_backward(cl, x.contiguous(memory_format=torch.channels_last))
    _assert_close(out, ref[0], "channels_last train logits")
    _assert_close(gx, ref[1], "channels_last train input grad")
    # (parameter gradients in channels_last differ from NCHW's by float32 summation order, up to ~2e-4 on tiny ones)
    calibrate_bn(model, 32)
    with torch.no_grad():
        fast = model(x)
        plain = set_mixconv_impl(model, "split")
        for parent in plain.modules():  # back to nn.Mish
            for n, c in list(parent._modules.items()):
                if isinstance(c, FastMish):
                    parent._modules[n] = torch.nn.Mish()
        ref_eval = plain(x)
    assert ref_eval.std() > 1e-2
    _assert_close(fast, ref_eval, "eval logits")


def test_plain_ghostmixnet_baseline_matches_ours():
    ours = ghostnest.create_model("ghostmixnet")
    plain = PlainGhostMixNet()
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in ours.parameters()) == 3_041_466
    load_ghostnest_weights(plain, ours)
    x = torch.randn(4, 3, 32, 32)
    for mode in (True, False):
        ours.train(mode)
        plain.train(mode)
        torch.manual_seed(1)
        a = ours(x)
        torch.manual_seed(1)
        b = plain(x)
        assert torch.equal(a, b), f"train={mode}: max difference {(a - b).abs().max().item()}"
    calibrate_bn(ours, 32)
    load_ghostnest_weights(plain, ours)
    plain.eval()
    with torch.no_grad():
        a, b = ours(x), plain(x)
    assert a.std() > 1e-2 and torch.equal(a, b)


def test_mixconv_auto_counts_the_architecture_on_meta():
    """FLOP counts run on the meta device: "auto" must not count the zero-padded taps of the merged kernel."""
    with torch.device("meta"):
        m = MixConv2d(8, (3, 5, 7, 9), multiplier=2)
    with torch.no_grad():
        assert m.resolved_impl() == "split"


@pytest.mark.parametrize("k", [3, 5, 9])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_same_conv2d_leaves_out_dead_taps_exactly(k, multiplier):
    """Maps smaller than the kernel's reach (1x1 up to wider than it, non-square too): the cropped convolution (or
    per-channel scale, where only the centre tap is left) equals the full "same" convolution, forward and backward;
    on the meta device the FLOP count stays the full kernel's."""
    from torch.utils.flop_counter import FlopCounterMode

    from ghostnest.layers.depthwise import SameConv2d, same_conv2d

    torch.manual_seed(0)
    c = 6
    weight = torch.randn(c * multiplier, 1, k, k, requires_grad=True)
    bias = torch.randn(c * multiplier)
    for h, w in [(1, 1), (2, 2), (3, 5), (4, 4), (k + 2, k + 2)]:
        x = torch.randn(2, c, h, w, requires_grad=True)
        want = F.conv2d(x, weight, bias, 1, k // 2, 1, c)
        got = same_conv2d(x, weight, bias, 1, c)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        g = torch.randn_like(want)
        torch.testing.assert_close(torch.autograd.grad(got, (x, weight), g),
                                   torch.autograd.grad(want, (x, weight), g), atol=1e-4, rtol=1e-4)
    conv = SameConv2d(c, c * multiplier, k, groups=c, device="meta")
    with FlopCounterMode(display=False) as counter:
        conv(torch.empty(1, c, 1, 1, device="meta"))
    assert counter.get_total_flops() == 2 * c * multiplier * k * k
    with pytest.raises(ValueError, match="must be odd"):
        SameConv2d(c, c, 4, groups=c)
