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
import os
from collections.abc import Callable
from dataclasses import dataclass

import timm
from torch import nn

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


def register_model(family: str, paper_params_m: float | None = None, *, input_size: int | None = None,
                   num_classes: int | None = None):
    """Decorator for a ghostnest model entrypoint ``fn(pretrained=False, **kwargs) -> nn.Module``.

    Registers it with timm's registry, which reads the model's pretrained cfg from its module's ``default_cfgs``
    (timm's convention); the default input size and class count listed here are that cfg's (``input_size`` and
    ``num_classes``, if given, must agree with it)."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        timm.models.register_model(fn)
        cfg = timm.models.get_pretrained_cfg(fn.__name__)
        if cfg is None:
            raise ValueError(f"{fn.__module__} declares no pretrained cfg for {fn.__name__}: add it to the module's "
                             "default_cfgs (ghostnest.models._base.pretrained_cfg) before the entrypoint")
        if (input_size, num_classes) != (input_size and cfg.input_size[-1], num_classes and cfg.num_classes):
            raise ValueError(f"{fn.__name__}: input_size={input_size}, num_classes={num_classes} disagree with its "
                             f"pretrained cfg ({cfg.input_size}, {cfg.num_classes} classes)")
        _REGISTRY[fn.__name__] = ModelInfo(fn.__name__, family, cfg.input_size[-1], paper_params_m, cfg.num_classes,
                                           fn, "ghostnest")
        return fn

    return decorator


def register_timm_model(name: str, family: str, paper_params_m: float | None = None, **cfg_overlay) -> None:
    """List one of timm's own models beside ours (built by ``timm.create_model``), with ``cfg_overlay`` over its
    pretrained cfg: the input size, class count and normalisation this project trains it with."""

    def build(pretrained: bool = False, **kwargs) -> nn.Module:
        overlay = {**cfg_overlay, **(kwargs.pop("pretrained_cfg_overlay", None) or {})}
        return timm.create_model(name, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs)

    size = cfg_overlay["input_size"]
    if isinstance(size, int):
        cfg_overlay["input_size"] = size = (3, size, size)
    input_size, num_classes = size[-1], cfg_overlay["num_classes"]
    _REGISTRY[name] = ModelInfo(name, family, input_size, paper_params_m, num_classes, build, "timm")


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


def create_model(name: str, pretrained: bool | str | os.PathLike = False, **kwargs) -> nn.Module:
    """Build model ``name`` (``num_classes=...`` and any of its constructor options as keyword arguments).

    ``pretrained=PATH`` loads trained weights (through timm's loader, before any ``features_only`` wrapping): a run
    directory, a checkpoint or exported ``.safetensors`` file, a hub folder, or a plain ``.safetensors`` state dict.
    The checkpoint's options and class count are used unless given; a different architecture or class count is a
    ``ValueError`` naming the right call."""
    info = model_info(name)
    if not isinstance(pretrained, (str, os.PathLike)):
        return info.builder(pretrained=pretrained, **kwargs)
    from .weights import pretrained_overlay

    overlay = pretrained_overlay(pretrained, name, kwargs)
    try:
        model = info.builder(pretrained=True, pretrained_cfg_overlay={**kwargs.pop("pretrained_cfg_overlay", {}),
                                                                      **overlay}, **kwargs)
    except RuntimeError as exc:  # timm's strict load_state_dict
        lines = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in lines[1:3]) or lines[0]
        raise ValueError(f"{pretrained} does not fit {name} with options {kwargs} ({detail}); build it with the "
                         "options it was trained with") from None
    return model
