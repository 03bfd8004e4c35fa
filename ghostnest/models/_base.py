"""What every ghostnest model family shares: the pooled classifier head (timm's interface) and the builder that
turns keyword options into the family's config dataclass, rejecting unknown ones."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import torch
from torch import nn

from ..registry import builder_kwargs


class PooledClassifier(nn.Module):
    """Head of both families: ``pool -> flatten -> dropout -> fc``, with timm's classifier interface.

    Subclasses set ``self.pool``, ``self.drop``, ``self.num_features`` (features after flattening) and
    ``self.fc``, and implement ``forward_features``.
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new ``num_classes``-way classifier (0 removes it: the model then returns pooled features)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def build_model(
    model_cls: Callable[..., nn.Module],
    config_cls: type,
    family: str,
    defaults: dict,
    pretrained: bool,
    kwargs: dict,
    default_classes: int,
    normalise: Callable[[str, object], object] = lambda key, value: value,
) -> nn.Module:
    """``model_cls(num_classes, in_chans, config_cls(**defaults | kwargs))``; unknown options name the valid ones."""
    kwargs = builder_kwargs(pretrained, kwargs)
    num_classes = kwargs.pop("num_classes", default_classes)
    in_chans = kwargs.pop("in_chans", 3)
    valid = {f.name for f in fields(config_cls)}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown {family} option(s) {unknown}; valid options: {sorted(valid)}")
    values = {key: normalise(key, value) for key, value in {**defaults, **kwargs}.items()}
    return model_cls(num_classes, in_chans, config_cls(**values))
