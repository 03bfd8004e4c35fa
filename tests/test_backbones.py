"""Real downstream clients of the backbone interface: segmentation_models_pytorch's U-Net over our encoders
(``tu-NAME``) and a torchvision detector over a feature pyramid of ``features_only`` levels."""
import pytest
import torch

import ghostnest
from ghostnest.backbones import fpn_backbone

smp = pytest.importorskip("segmentation_models_pytorch", reason="the segmentation extra: pip install -e .[segmentation]")

TINY_MENEST = dict(stages=(("ms", 1, 8, 1, 1), ("ms", 1, 16, 2, 2), ("ms_ghost", 1, 16, 2, 2),
                           ("ms_ghost", 1, 24, 2, 2), ("ms_ghost", 1, 32, 2, 2)), stem_width=8, num_features=48)


def _forward_backward(model, x):
    model.train()
    out = model(x)
    outs = list(out.values()) if isinstance(out, dict) else [out]
    sum(o.float().square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    return out


def test_smp_unet_over_menest_ghost_s():
    torch.manual_seed(0)
    unet = smp.Unet("tu-menest_ghost_s", encoder_weights=None, classes=3)
    assert unet.encoder.out_channels == [3, 24, 48, 64, 160, 256]  # the input, then reductions 2 to 32
    # forward and backward through the same layout with narrow stages (the full S takes seconds a pass on 2 cores;
    # benchmarks/backbones.py times it), encoder options passed through smp to timm
    tiny = smp.Unet("tu-menest_ghost_s", encoder_weights=None, classes=3, decoder_channels=(32, 16, 16, 8, 8),
                    **TINY_MENEST)
    assert tiny.encoder.out_channels == [3, 8, 16, 16, 24, 32]
    assert _forward_backward(tiny, torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)


def test_smp_unet_over_ghostmixnet():
    torch.manual_seed(0)
    # GhostMixNet has three levels (reductions 1, 2, 4): smp's "VGG-style" encoders, encoder_depth 2
    unet = smp.Unet("tu-ghostmixnet", encoder_weights=None, classes=2, encoder_depth=2, decoder_channels=(16, 8),
                    depths=(1, 1, 1), widths=(8, 16, 16), stem_width=8)
    assert unet.encoder.out_channels == [8, 16, 16]
    assert _forward_backward(unet, torch.randn(2, 3, 32, 32)).shape == (2, 2, 32, 32)
    with pytest.raises(ValueError, match="GhostMixNet has 3 feature levels"):  # the default depth asks for 6
        smp.Unet("tu-ghostmixnet", encoder_weights=None, classes=2)


def test_torchvision_detector_over_a_feature_pyramid():
    from torchvision.models.detection import FasterRCNN

    torch.manual_seed(0)
    backbone = fpn_backbone("menest_ghost_s", out_channels=32, **TINY_MENEST)
    assert backbone.body.feature_info.reduction() == [4, 8, 16, 32]
    detector = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64, rpn_batch_size_per_image=16,
                          box_batch_size_per_image=16)
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 8.0, 60.0, 50.0]]), "labels": torch.tensor([2])}]
    detector.train()
    losses = detector(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is not None for p in backbone.body.parameters())
    detector.eval()
    with torch.no_grad():
        found = detector(images)
    assert len(found) == 2 and set(found[0]) == {"boxes", "labels", "scores"}
    with pytest.raises(ValueError, match="GhostMixNet has 3 feature levels"):
        ghostnest.backbones.fpn_backbone("ghostmixnet")  # levels 1-4 do not exist: pass out_indices=(0, 1, 2)
    assert fpn_backbone("ghostmixnet", out_indices=(0, 1, 2), depths=(1, 1, 1)).out_channels == 256
