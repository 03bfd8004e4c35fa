"""GhostMixNet (the *GhostMixNet* paper) and its ablation baselines: exact published count, shapes, gradients, options."""
import pytest
import torch
from safetensors.torch import load, save

import ghostnest
from ghostnest.models.ghostmixnet import GhostBlock, GhostMixNetConfig
from ghostnest.stats import count_params


def test_published_parameter_count():
    # docs/reference.md: GhostMixNet(num_classes=10) of the published code has 3,041,466 parameters
    assert count_params(ghostnest.create_model("ghostmixnet", num_classes=10)) == 3_041_466


def test_published_structure():
    m = ghostnest.create_model("ghostmixnet")
    assert [len(s) for s in m.stages] == [4, 4, 4]
    first = m.stages[1][0]
    assert first.conv1.primary_conv[0].kernel_size == (3, 3) and first.conv1.primary_conv[0].stride == (2, 2)
    assert first.se.fc1.out_channels == 128 // 16
    assert isinstance(first.shortcut[0], torch.nn.Conv2d) and isinstance(m.stages[0][0].shortcut, torch.nn.Identity)
    assert m.fc.in_features == 1024 and m.drop.p == 0.2


@pytest.mark.parametrize(
    "name,paper_m", [("ghostmixnet", 3.0), ("ghostmixnet_resnet", 4.6), ("ghostmixnet_resnet_se", 4.9)]
)
def test_ablation_counts_within_5_percent(name, paper_m):
    with torch.device("meta"):
        n = count_params(ghostnest.create_model(name, num_classes=10))
    assert abs(n / (paper_m * 1e6) - 1) <= 0.05, n


def test_ablation_rows_differ_only_in_what_they_ablate():
    with torch.device("meta"):
        plain = ghostnest.create_model("ghostmixnet_resnet")
        se = ghostnest.create_model("ghostmixnet_resnet_se")
    assert count_params(plain) == 4_704_842 and count_params(se) == 4_741_290
    assert isinstance(plain.stages[0][0].se, torch.nn.Identity)
    assert isinstance(se.stages[0][0].conv1, torch.nn.Conv2d)


@pytest.mark.parametrize("size,classes", [(32, 10), (40, 3), (64, 100), (33, 7)])
def test_shapes_for_input_sizes_and_class_counts(size, classes):
    m = ghostnest.create_model("ghostmixnet", num_classes=classes, depths=(1, 1, 1)).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, size, size)).shape == (2, classes)


def test_adaptive_pool_equals_published_avgpool_at_32():
    m = ghostnest.create_model("ghostmixnet", depths=(1, 1, 1)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape[-2:] == (8, 8)
        published = torch.nn.functional.avg_pool2d(feats, 4).flatten(1)
        torch.testing.assert_close(m.forward_head(feats, pre_logits=True), published)


def test_too_small_input_is_a_clear_error_where_inputs_enter():
    m = ghostnest.create_model("ghostmixnet", depths=(1, 1, 1))
    with pytest.raises(ValueError, match="H, W >= 32"):
        m.check_input((1, 3, 16, 16))
    m.check_input((1, 3, 32, 32))
    assert m.min_input_size == m.pretrained_cfg["min_input_size"][-1] == 32


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = ghostnest.create_model("ghostmixnet", num_classes=5, depths=(2, 1, 1))
    loss = torch.nn.functional.cross_entropy(m(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_eval_mode_is_deterministic_and_train_mode_drops():
    torch.manual_seed(0)
    m = ghostnest.create_model("ghostmixnet", depths=(1, 1, 1), drop_rate=0.5)
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)
        m.train()
        assert not torch.equal(m(x), m(x))  # dropout differs between calls


def test_state_dict_round_trip_through_safetensors():
    torch.manual_seed(0)
    a = ghostnest.create_model("ghostmixnet", depths=(1, 1, 1)).eval()
    torch.manual_seed(1)
    b = ghostnest.create_model("ghostmixnet", depths=(1, 1, 1)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
        b.load_state_dict(load(save(a.state_dict())))
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_options_for_user_ablations():
    m = ghostnest.create_model(
        "ghostmixnet", depths=[2, 2], widths=[32, 48], strides=[1, 2], ghost_ratio=3, se=False, act="mish",
        drop_rate=0.0,
    )
    assert len(m.stages) == 2 and m.stages[1][0].conv1.out_channels == 48
    assert isinstance(m.stages[0][0].se, torch.nn.Identity) and isinstance(m.stem[2], torch.nn.Mish)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depths=(4, 4)), "one entry per stage"),
        (dict(ghost_ratio=1), "ratio=1"),
        (dict(act="swishy"), "swishy"),
        (dict(num_classes=-1), "num_classes"),
        (dict(drop_rate=1.5), "drop_rate"),
        (dict(dropout=0.1), "unknown GhostMixNet option"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ghostnest.create_model("ghostmixnet", **kwargs)


def test_ghost_block_identity_shortcut_adds_input():
    cfg = GhostMixNetConfig(se=False)
    blk = GhostBlock(8, 8, 1, cfg).eval()
    for p in blk.bn2.parameters():  # zero the residual branch's last BN: the block becomes relu(x)
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), torch.relu(x))
