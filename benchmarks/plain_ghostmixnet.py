"""GhostMixNet written plainly in eager PyTorch: the baseline of the speed target for GhostMixNet training
(``benchmarks/speed.py``, target 4: ours at least 1.3x its training images per second).

The *GhostMixNet* paper, sections "Methodology" and "Residual Layers", as docs/reference.md records the
published network: stem 3x3 conv 3->64 + BN + ReLU; three stages of four residual Ghost blocks (64/128/256 channels,
first strides 1/2/2); each block GhostModule -> BN -> ReLU -> GhostModule -> BN -> Squeeze-Excitation
(squeeze to out // 16) -> + shortcut (identity or 1x1 conv + BN) -> ReLU; each GhostModule a 3x3 primary conv to
half the channels (+ BN, optional ReLU) and a 3x3 depthwise cheap conv on those (+ BN, optional ReLU),
concatenated; head: 4x4 average pool, flatten (1024), dropout 0.2, linear. 3,041,466 parameters at 10 classes.

Nothing here is tuned: no fusion, no channels_last, no compile, one module per operation. It is deliberately
independent of ``ghostnest.models.ghostmixnet``; :func:`load_ghostnest_weights` copies a ghostnest ``ghostmixnet``'s
weights into it (every tensor, by a fixed key renaming), and tests/test_speed_paths.py checks that the two then
give identical outputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PlainGhostModule(nn.Module):
    def __init__(self, inp, oup, relu):
        super().__init__()
        self.oup = oup
        init = (oup + 1) // 2
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, init, 3, 1, 1, bias=False),
            nn.BatchNorm2d(init),
            nn.ReLU(inplace=True) if relu else nn.Sequential(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init, init, 3, 1, 1, groups=init, bias=False),
            nn.BatchNorm2d(init),
            nn.ReLU(inplace=True) if relu else nn.Sequential(),
        )

    def forward(self, x):
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)
        return out[:, : self.oup, :, :]


class PlainStridedGhostModule(PlainGhostModule):
    """The first Ghost module of a block carries the block's stride in its primary convolution."""

    def __init__(self, inp, oup, relu, stride):
        super().__init__(inp, oup, relu)
        init = (oup + 1) // 2
        self.primary_conv[0] = nn.Conv2d(inp, init, 3, stride, 1, bias=False)


class PlainSE(nn.Module):
    def __init__(self, channels, squeeze):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.relu(self.fc1(s))
        s = torch.sigmoid(self.fc2(s))
        return x * s


class PlainGhostBlock(nn.Module):
    def __init__(self, inp, oup, stride):
        super().__init__()
        self.conv1 = PlainStridedGhostModule(inp, oup, True, stride)
        self.bn1 = nn.BatchNorm2d(oup)
        self.conv2 = PlainGhostModule(oup, oup, False)
        self.bn2 = nn.BatchNorm2d(oup)
        self.se = PlainSE(oup, oup // 16)
        self.shortcut = nn.Sequential()
        if stride != 1 or inp != oup:
            self.shortcut = nn.Sequential(nn.Conv2d(inp, oup, 1, stride, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.se(out)
        out = out + self.shortcut(x)
        return F.relu(out)


class PlainGhostMixNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, inp = [], 64
        for width, stride in ((64, 1), (128, 2), (256, 2)):
            blocks = []
            for i in range(4):
                blocks.append(PlainGhostBlock(inp, width, stride if i == 0 else 1))
                inp = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.dropout = nn.Dropout(0.2)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, 4)
        out = torch.flatten(out, 1)
        return self.linear(self.dropout(out))


def ghostnest_key(key: str) -> str:
    """The ghostnest ``ghostmixnet`` state_dict key of this network's ``key`` (block internals share names)."""
    for mine, theirs in (("conv1.", "stem.0."), ("bn1.", "stem.1."), ("layer1.", "stages.0."),
                         ("layer2.", "stages.1."), ("layer3.", "stages.2."), ("linear.", "fc.")):
        if key.startswith(mine):
            return theirs + key[len(mine):]
    return key


def load_ghostnest_weights(plain: PlainGhostMixNet, ours: nn.Module) -> PlainGhostMixNet:
    """Copy a ghostnest ``ghostmixnet``'s parameters and buffers into ``plain`` (every tensor, shapes checked)."""
    src = ours.state_dict()
    dst = plain.state_dict()
    missing = sorted(set(map(ghostnest_key, dst)) ^ set(src))
    if missing:
        raise ValueError(f"state_dict keys do not correspond: {missing[:5]}")
    with torch.no_grad():
        for key, value in dst.items():
            theirs = src[ghostnest_key(key)]
            if value.shape != theirs.shape:
                raise ValueError(f"shape mismatch: {key} {tuple(value.shape)} vs {tuple(theirs.shape)}")
            value.copy_(theirs)
    return plain


if __name__ == "__main__":
    print(sum(p.numel() for p in PlainGhostMixNet().parameters()))
