"""ghostnest's models as backbones of other people's models: a feature pyramid for torchvision's detectors.

``timm.create_model(name, features_only=True)`` is the backbone interface of every ghostnest family (the levels
of its ``feature_info``); segmentation_models_pytorch takes it by name (``smp.Unet("tu-menest_ghost_s", ...)``).
torchvision's detection models take a backbone with an ``out_channels`` attribute that returns an ordered dict of
feature maps; :func:`fpn_backbone` is that, torchvision's own ``FeaturePyramidNetwork`` over the feature levels
(the equivalent of ``torchvision.models.detection.backbone_utils.BackboneWithFPN``, whose layer getter needs the
levels as direct children of the model). docs/timm.md, "Backbones", shows both with measured sizes and latency.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from .registry import create_model


class FeaturePyramidBackbone(nn.Module):
    """``body`` (a timm ``features_only`` model) followed by torchvision's ``FeaturePyramidNetwork``: an ordered
    dict of ``out_channels``-wide maps, one per level plus ``"pool"`` (torchvision's ``LastLevelMaxPool``)."""

    def __init__(self, body: nn.Module, out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def fpn_backbone(name: str, out_indices=(1, 2, 3, 4), out_channels: int = 256, **kwargs) -> FeaturePyramidBackbone:
    """A detection backbone for torchvision (``FasterRCNN(fpn_backbone("menest_ghost_s"), num_classes=K)``): model
    ``name``'s feature levels ``out_indices`` (default: reductions 4 to 32 of ME-NeSt-Ghost, as torchvision's
    ResNet-FPN) through a feature pyramid of ``out_channels``. ``kwargs`` go to :func:`ghostnest.create_model`
    (e.g. ``pretrained=RUN``)."""
    return FeaturePyramidBackbone(create_model(name, features_only=True, out_indices=out_indices, **kwargs),
                                  out_channels)
