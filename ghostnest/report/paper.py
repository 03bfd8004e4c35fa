"""The papers' numbers: ME-NeSt-Ghost's Table 5 (CIFAR-100) and GhostMixNet's results table (CIFAR-10).

Accuracies are written here; the parameter counts the papers report are the registry's ``paper_params_m``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper's results table, as printed there."""

    table: str  # key of PAPER_TABLES
    label: str  # the row's name in the paper
    model: str  # our registry name for that model
    top1: float  # accuracy the paper reports, percent
    mixing: bool | None = None  # GhostMixNet rows: trained with CutMix/Mixup (None: not a distinction)

    @property
    def params_m(self) -> float:
        """Parameters the paper reports, millions: the registry's ``paper_params_m`` (written once, there)."""
        from ..registry import model_info

        return model_info(self.model).paper_params_m


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    source: str
    dataset: str  # normalised data set name the paper used (see _norm_dataset)
    dataset_label: str
    acc_label: str  # what the paper's accuracy column measures
    families: tuple[str, ...]
    note: str = ""


# The papers' accuracies live here and nowhere else (their parameter counts live in the registry).
PAPER_TABLES = {
    "menest": PaperTable(
        key="menest",
        title="ME-NeSt-Ghost vs EfficientNet-V2 on CIFAR-100",
        source="ME-NeSt-Ghost, Table 5: top-1 accuracy on the CIFAR-100 test set, 128x128 images",
        dataset="cifar100",
        dataset_label="CIFAR-100",
        acc_label="Top-1 (paper)",
        families=("menest", "efficientnetv2"),
        note=(
            "The paper trained on CIFAR-100 super-resolved to 128x128 with the CAI neural API (ME-NeSt-Ghost, "
            "section 2). `ghostnest train`'s `cifar100_128` is CIFAR-100 upsampled bicubically instead (that set is not "
            "available here), so part of any gap can come from the data alone. Both are scored on the CIFAR-100 "
            "test set, so such runs are set beside the paper's numbers."
        ),
    ),
    "ghostmixnet": PaperTable(
        key="ghostmixnet",
        title="GhostMixNet and its ablations on CIFAR-10",
        source="GhostMixNet, results table: 'Val Acc.', 32x32 images",
        dataset="cifar10",
        dataset_label="CIFAR-10",
        acc_label="Val Acc. (paper)",
        families=("ghostmixnet",),
        note=(
            "The GhostMixNet paper's 'Val Acc.' is accuracy on CIFAR-10's official 10,000-image test set (its "
            "published code uses that set for validation), so it is set beside our *test* top-1. Its 'Test Acc.' "
            "column is on a course competition's private images and is not reproduced."
        ),
    ),
}

PAPER_ROWS = (
    PaperRow("menest", "ME-NeSt-Ghost-S", "menest_ghost_s", 80.3),
    PaperRow("menest", "EffNet-V2-S", "efficientnetv2_s", 79.6),
    PaperRow("menest", "ME-NeSt-Ghost-M", "menest_ghost_m", 80.8),
    PaperRow("menest", "EffNet-V2-M", "efficientnetv2_m", 80.4),
    PaperRow("menest", "ME-NeSt-Ghost-L", "menest_ghost_l", 81.2),
    PaperRow("menest", "EffNet-V2-L", "efficientnetv2_l", 80.7),
    PaperRow("menest", "ME-NeSt-Ghost-XL", "menest_ghost_xl", 81.7),
    PaperRow("menest", "EffNet-V2-XL", "efficientnetv2_xl", 81.4),
    PaperRow("ghostmixnet", "ResNet", "ghostmixnet_resnet", 91.4),
    PaperRow("ghostmixnet", "ResNet+SE+Image Transforms", "ghostmixnet_resnet_se", 94.3),
    PaperRow("ghostmixnet", "GhostNet+SE+Image Transforms", "ghostmixnet", 95.1, mixing=False),
    PaperRow("ghostmixnet", "GhostNet+SE+Image Transforms+CutMix/Mixup", "ghostmixnet", 95.5, mixing=True),
)


@dataclass(frozen=True)
class FutureRow:
    """A model of the ME-NeSt-Ghost paper's future work (section 6): proposed there, never trained, no paper number."""

    question: int  # 1: modern CNN-transformer hybrids, 2: self-attention for Split-Attention, 3: ResNet-style
    label: str
    model: str  # our registry name
    compare: str  # the ME-NeSt-Ghost size it is set against (registry name)


# The three experiments of section 6, a group of rows apart from Table 5 (docs/training.md says how to run them).
FUTURE_QUESTIONS = {
    1: "ME-NeSt-Ghost against modern CNNs with self-attention (ConvNeXt, CoAtNet)",
    2: "Split-Attention replaced by transformer self-attention",
    3: "the MS and MS-Ghost blocks in ResNet's 4 stages",
}
FUTURE_ROWS = (
    FutureRow(1, "ConvNeXt-nano", "convnext_nano", "menest_ghost_s"),
    FutureRow(1, "ConvNeXt-T", "convnext_tiny", "menest_ghost_s"),
    FutureRow(1, "ConvNeXt-S", "convnext_small", "menest_ghost_m"),
    FutureRow(1, "CoAtNet-nano (rw)", "coatnet_nano_rw_224", "menest_ghost_s"),
    FutureRow(1, "CoAtNet-0 (rw)", "coatnet_0_rw_224", "menest_ghost_s"),
    FutureRow(1, "CoAtNet-1 (rw)", "coatnet_1_rw_224", "menest_ghost_m"),
    FutureRow(1, "CoAtNet-2 (rw)", "coatnet_2_rw_224", "menest_ghost_m"),
    FutureRow(2, "ME-NeSt-Ghost-TSA-S", "menest_ghost_tsa_s", "menest_ghost_s"),
    FutureRow(2, "ME-NeSt-Ghost-TSA-M", "menest_ghost_tsa_m", "menest_ghost_m"),
    FutureRow(3, "ResNet-style ME-NeSt-Ghost-S", "menest_ghost_resnet_s", "menest_ghost_s"),
    FutureRow(3, "ResNet-style ME-NeSt-Ghost-M", "menest_ghost_resnet_m", "menest_ghost_m"),
)

FAMILY_LABELS = {"menest": "ME-NeSt-Ghost", "efficientnetv2": "EfficientNet-V2", "ghostmixnet": "GhostMixNet"}
FAMILY_COLORS = {"menest": "tab:red", "efficientnetv2": "tab:blue", "ghostmixnet": "tab:green"}


def norm_dataset(name: str | None) -> str:
    """'CIFAR-100', 'cifar100_128', 'cifar_100' -> 'cifar100'; anything else lower-cased without punctuation."""
    s = re.sub(r"[^a-z0-9]", "", str(name or "").lower())
    for known in ("cifar100", "cifar10"):
        if s.startswith(known):
            return known
    return s
