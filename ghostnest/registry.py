"""Model registry: every model is built by name, and ours are registered with timm's registry too.

``ghostnest.create_model(name)`` builds any model listed by ``ghostnest.list_models()``. Our own models are also
registered with ``timm.models.register_model``, so after ``import ghostnest`` the call
``timm.create_model("ghostmixnet", num_classes=10)`` works. The EfficientNet-V2 baselines are timm's own models,
listed here so that they sit beside ours in every table; they are built by timm, never re-implemented.

This module is a leaf: it imports no model module. The model families register themselves when imported, and
``import ghostnest`` imports them all (``ghostnest/__init__.py``), so every name is listed once the package is.
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import timm
from torch import nn

# Keys timm's factory passes to every entrypoint that our builders do not use.
_TIMM_FACTORY_KEYS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model without building it."""

    name: str
    family: str  # "ghostmixnet", "menest" or "efficientnetv2"
    input_size: int  # default (square) input resolution: the paper's
    paper_params_m: float | None  # parameter count the paper reports, in millions (None if it reports none)
    num_classes: int  # class count of the paper's data set (10 for CIFAR-10, 100 for CIFAR-100)
    builder: Callable[..., nn.Module]
    source: str  # "ghostnest" or "timm"


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(family: str, input_size: int, num_classes: int, paper_params_m: float | None = None):
    """Decorator for a ghostnest model entrypoint ``fn(pretrained=False, **kwargs) -> nn.Module``."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        timm.models.register_model(fn)
        _REGISTRY[fn.__name__] = ModelInfo(
            fn.__name__, family, input_size, paper_params_m, num_classes, fn, "ghostnest"
        )
        return fn

    return decorator


def register_timm_model(
    name: str, family: str, input_size: int, num_classes: int, paper_params_m: float | None = None,
    defaults: dict | None = None,
) -> None:
    """List one of timm's own models beside ours (built by ``timm.create_model``, with ``defaults`` as keyword
    arguments unless the caller gives them, e.g. ``img_size`` for a model whose size is fixed at construction).

    A model timm marks ``fixed_input_size`` (its ``pretrained_cfg``) refuses any other input size with a one-line
    ``ValueError`` naming the ``img_size`` to build it with, instead of a shape error deep inside the network."""

    def build(pretrained: bool = False, **kwargs) -> nn.Module:
        model = timm.create_model(name, pretrained=pretrained, **{**(defaults or {}), **kwargs})
        if getattr(model, "pretrained_cfg", {}).get("fixed_input_size") and hasattr(model, "img_size"):
            model.register_forward_pre_hook(_FixedInputSize(name, tuple(model.img_size)))
        return model

    _REGISTRY[name] = ModelInfo(name, family, input_size, paper_params_m, num_classes, build, "timm")


class _FixedInputSize:
    """Forward pre-hook of a fixed-size timm model: a one-line ``ValueError`` for an input of another size."""

    def __init__(self, name: str, size: tuple[int, int]):
        self.name, self.size = name, size

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if x is not None and getattr(x, "ndim", 0) == 4 and tuple(x.shape[-2:]) != self.size:
            h, w = x.shape[-2:]
            raise ValueError(
                f"{self.name} was built for {self.size[0]}x{self.size[1]} inputs (img_size={self.size[0]}: its "
                f"relative position tables have that size) but got {h}x{w}; build it with img_size={h} (in a recipe: "
                f"--set model_kwargs.img_size={h})")


def builder_kwargs(pretrained: bool, kwargs: dict) -> dict:
    """Drop the keys timm's factory adds; refuse ``pretrained=True`` (no weights are published)."""
    if pretrained:
        raise ValueError(
            "pretrained=True: no pretrained weights are published for ghostnest models; "
            "train one with `ghostnest train` and load it with `ghostnest.load_checkpoint`"
        )
    return {k: v for k, v in kwargs.items() if k not in _TIMM_FACTORY_KEYS}


def unknown_model_error(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ValueError(f"unknown model {name!r}.{hint} Run `ghostnest models` to list all {len(_REGISTRY)} models.")


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; ``ValueError`` naming the nearest known names if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_model_error(name) from None


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Names of all registered models matching a shell-style ``pattern`` (and ``family``), in registration order."""
    return [
        n for n, info in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (family is None or info.family == family)
    ]


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build model ``name`` (``num_classes=...`` and any of its constructor options as keyword arguments)."""
    return model_info(name).builder(pretrained=pretrained, **kwargs)
