"""ghostnest.fuse: the fused eval-only copy equals the unfused model in eval mode (fp32, 1e-4).

BN statistics are calibrated first (tests/helpers.py) and every reference output must have a real spread, so a
comparison cannot pass because the signal vanished.
"""
import pytest
import torch
from torch import nn

import ghostnest
from ghostnest.layers import GhostModule, MixConv2d, set_mixconv_impl
from ghostnest.layers.fused import FastMish, FusedGhostModule
from ghostnest.models.ghostmixnet import GhostBlock, GhostMixNetConfig
from ghostnest.models.menest import MENeStConfig, MSBlock, MSGhostBlock

from helpers import calibrate_bn

TOL = 1e-4
TINY = (("ms", 1, 8, 1, 1), ("ms", 2, 16, 2, 4), ("ms_ghost", 2, 16, 2, 4), ("ms_ghost", 1, 24, 1, 6))


def _check(model, x, size=None):
    if size is not None:
        calibrate_bn(model, size)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        fused = ghostnest.fuse(model)
        out = fused(x)
    assert ref.std() > 1e-2, f"reference output has no spread ({ref.std().item():.2e})"
    err = (out - ref).abs().max().item()
    assert err <= TOL * max(1.0, ref.abs().max().item()), f"max error {err}"
    return fused


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def _calibrate_block(block, channels, size=12):
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    block.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(2):
            block(torch.randn(16, channels, size, size, generator=gen) * (0.5 + torch.rand(16, 1, 1, 1, generator=gen)))
    return block.eval()


BLOCKS = {
    "ms_exp1": (lambda: MSBlock(8, 8, 1, 1, MENeStConfig()), 8),
    "ms_exp4_s2": (lambda: MSBlock(8, 16, 2, 4, MENeStConfig()), 8),
    "ms_radix1": (lambda: MSBlock(8, 16, 1, 2, MENeStConfig(radix=1)), 8),
    "ms_ghost": (lambda: MSGhostBlock(16, 16, 1, 4, MENeStConfig()), 16),
    "ms_ghost_s2_odd": (lambda: MSGhostBlock(16, 24, 2, 3, MENeStConfig(se_from="mid")), 16),
    "ghostmix_block": (lambda: GhostBlock(16, 32, 2, GhostMixNetConfig()), 16),
    "ghostmix_block_odd": (lambda: GhostBlock(16, 21, 1, GhostMixNetConfig(se=False)), 16),
    "resnet_block": (lambda: GhostBlock(16, 16, 1, GhostMixNetConfig(ghost=False)), 16),
    "mix_ghost_linear_seq": (lambda: nn.Sequential(GhostModule(8, 22, cheap_kernel=(3, 5, 7, 9), act=None),
                                                   nn.BatchNorm2d(22)), 8),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_fused_block_equals_unfused(name):
    torch.manual_seed(0)
    make, channels = BLOCKS[name]
    block = _calibrate_block(make(), channels)
    x = torch.randn(3, channels, 12, 12) * 2
    fused = _check(block, x)
    remaining = _bns(fused)
    # only the BN after GhostMixNet's activated Ghost module (bn1) may stay
    assert all(bn is getattr(fused, "bn1", None) for bn in remaining)


@pytest.mark.parametrize("impl", ["split", "single", "repeat", "auto"])
def test_fuse_every_mixconv_impl(impl):
    torch.manual_seed(0)
    model = set_mixconv_impl(ghostnest.create_model("menest_ghost_s", num_classes=10, stages=TINY, num_features=64), impl)
    fused = _check(model, torch.randn(2, 3, 32, 32), size=32)
    assert not _bns(fused)


@pytest.mark.parametrize("name,size", [("menest_ghost_s", 64), ("efficientnetv2_s", 64), ("ghostmixnet", 32),
                                       ("ghostmixnet_resnet", 32), ("ghostmixnet_resnet_se", 32)])
def test_fused_model_equals_unfused(name, size):
    torch.manual_seed(0)
    model = ghostnest.create_model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = _check(model, torch.randn(2, 3, size, size), size=size)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith(("running_mean", "running_var",
                                                                                   "num_batches_tracked")))
    bns = _bns(fused)
    if name == "ghostmixnet":
        assert len(bns) == 12  # each block's BN after the ReLU of its first Ghost module
        assert sum(isinstance(m, FusedGhostModule) for m in fused.modules()) == 12
    else:
        assert not bns
    if name.startswith("menest"):
        assert any(isinstance(m, FastMish) for m in fused.modules())
        assert not any(isinstance(m, nn.Mish) for m in fused.modules())


@pytest.mark.parametrize("name", ghostnest.list_models())
def test_fuse_works_on_every_registered_model(name):
    """Structure on the meta device (no compute): every BN that follows a convolution is gone."""
    with torch.device("meta"):
        model = ghostnest.create_model(name)
        fused = ghostnest.fuse(model)
    expected = 12 if name == "ghostmixnet" else 0
    if ghostnest.model_info(name).family == "coatnet":
        # timm's MBConv blocks keep the BNs that no convolution feeds directly: the pre-norm on the block input,
        # and (coatnet_0_rw and up) the BN after the early Squeeze-Excitation
        left = [n for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
        assert left and all(n.endswith(".pre_norm") or n.endswith(".norm2") for n in left)
        for n in left:
            parent = fused.get_submodule(n.rsplit(".", 1)[0])
            kids = list(parent._modules)
            before = parent._modules[kids[kids.index(n.rsplit(".", 1)[1]) - 1]]
            assert not isinstance(before, nn.Conv2d), n
        expected = len(left)
    assert len(_bns(fused)) == expected
    assert not any(p.requires_grad for p in fused.parameters())


def test_fused_model_is_eval_only_and_keeps_channels_last():
    torch.manual_seed(0)
    model = ghostnest.create_model("ghostmixnet_resnet", depths=(1, 1, 1))
    calibrate_bn(model, 32)
    model = model.to(memory_format=torch.channels_last)
    fused = ghostnest.fuse(model)
    with pytest.raises(RuntimeError, match="eval-only"):
        fused.train()
    fused.eval()
    assert not fused.training
    assert fused.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        err = (fused(x) - model.eval()(x)).abs().max().item()
    assert err < TOL
    assert model.training is False and isinstance(model.stem[1], nn.BatchNorm2d)  # original left intact


def test_cli_bench_infer_is_fused_by_default_and_no_fuse_turns_it_off(capsys):
    import json

    from ghostnest.cli import main

    common = ["bench", "ghostmixnet_resnet", "--batch", "1", "--repeats", "1", "--warmup", "1", "--device", "cpu",
              "--json"]
    assert main(common) == 0
    assert json.loads(capsys.readouterr().out)[0]["fused"] is True
    assert main(common + ["--no-fuse"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["fused"] is False
    assert main(common + ["--mode", "train", "--batch", "2"]) == 0  # training is never fused
    assert json.loads(capsys.readouterr().out)[0]["fused"] is False


@pytest.mark.parametrize("name", ["menest_ghost_s", "ghostmixnet", "ghostmixnet_resnet", "efficientnetv2_s"])
def test_every_batchnorm_is_declared_to_fuse(name):
    """Each block names its conv -> BN pairs (``fuse_pairs``) or the BNs it keeps (``fuse_keeps``)."""
    from ghostnest.fuse import undeclared_batchnorms

    with torch.device("meta"):
        model = ghostnest.create_model(name)
    assert undeclared_batchnorms(model) == []


def test_undeclared_batchnorm_is_detected():
    from ghostnest.fuse import undeclared_batchnorms

    class Block(nn.Module):  # holds a BN but declares no pair
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.norm = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.norm(self.conv(x))

    model = nn.Sequential(nn.Conv2d(3, 4, 1), Block())
    assert undeclared_batchnorms(model) == ["1"]
    assert len(_bns(ghostnest.fuse(model, fast_mish=False))) == 1


def _ort_chain():
    """A stem and two blocks whose MixConvs cover both onnxruntime layouts: narrow groups (merged, with a repeat for
    a channel multiplier) and groups of 16 or more channels (kept split)."""
    torch.manual_seed(0)
    cfg = MENeStConfig()
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), MSBlock(8, 64, 1, 1, cfg), MSGhostBlock(64, 64, 1, 4, cfg))


def test_fuse_for_onnxruntime_lays_out_mixconv_by_group_width():
    from ghostnest.fuse import ORT_DEPTHWISE_VECTOR, RepeatChannels

    model = _calibrate_block(_ort_chain(), 3)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        ref = model(x)
        fused = ghostnest.fuse(model, fast_mish=False, runtime="onnxruntime")
        out = fused(x)
    assert ref.std() > 1e-2
    torch.testing.assert_close(out, ref, atol=TOL * max(1.0, ref.abs().max().item()), rtol=0)
    kept = [m for m in fused.modules() if isinstance(m, MixConv2d)]
    narrow = [m for m in model.modules()
              if isinstance(m, MixConv2d) and any(c * m.multiplier % ORT_DEPTHWISE_VECTOR for c in m.splits)]
    assert kept and narrow  # both layouts occur in this chain
    assert all(m.impl in ("split", "repeat") and all(c * m.multiplier % ORT_DEPTHWISE_VECTOR == 0 for c in m.splits)
               for m in kept)
    repeats = [m for m in fused.modules() if isinstance(m, RepeatChannels)]
    assert len(repeats) == sum(m.multiplier > 1 for m in narrow) > 0
    assert len(kept) + len(narrow) == sum(isinstance(m, MixConv2d) for m in model.modules())
    with pytest.raises(ValueError, match="runtime='tflite' is not valid"):
        ghostnest.fuse(model, runtime="tflite")
