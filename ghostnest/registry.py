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
    fixed_input_size: bool = False  # built for one input size, its ``img_size`` (timm's cfg flag; e.g. CoAtNet)


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
    pretrained cfg: the input size, class count and normalisation this project trains it with (``input_size`` and
    ``num_classes`` are required: the registry lists them).

    A model timm marks ``fixed_input_size`` (e.g. CoAtNet, whose relative position tables are sized when it is built)
    is built for one input size, its ``img_size``: timm takes it from the cfg's ``input_size``, so by default the
    overlay's. Given ``img_size=...``, the model's pretrained cfg says that size too (input and pool size, so
    ``timm.data.resolve_data_config`` and export read it), and its ``check_input`` (the contract's input check, which
    training, export and bench call; ``ghostnest/models/_base.py``) refuses any other size in one line naming the
    ``img_size`` to build it with, instead of a shape error deep inside the network."""
    size = cfg_overlay["input_size"]
    if isinstance(size, int):
        cfg_overlay["input_size"] = size = (3, size, size)
    fixed = bool(getattr(timm.models.get_pretrained_cfg(name), "fixed_input_size", False))

    def build(pretrained: bool = False, **kwargs) -> nn.Module:
        overlay = {**cfg_overlay, **(kwargs.pop("pretrained_cfg_overlay", None) or {})}
        if fixed and kwargs.get("img_size") is not None:  # the cfg follows the size the model is built for
            h, w = _pair(kwargs["img_size"])
            base = overlay["input_size"]
            if "pool_size" in overlay:
                overlay["pool_size"] = (h * overlay["pool_size"][0] // base[-2], w * overlay["pool_size"][1] // base[-1])
            overlay["input_size"] = (base[0], h, w)
        model = timm.create_model(name, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs)
        built_for = fixed_input_size(model)
        if built_for is not None:
            model.check_input = FixedInputCheck(name, built_for, getattr(model, "in_chans", overlay["input_size"][0]))
        return model

    _REGISTRY[name] = ModelInfo(name, family, size[-1], paper_params_m, cfg_overlay["num_classes"], build, "timm",
                                fixed)


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """``(H, W)`` of a model timm marks ``fixed_input_size`` in its pretrained cfg (the ``img_size`` it was built
    with); None for a model that takes any size."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = getattr(model, "img_size", None)
    return _pair(size) if cfg.get("fixed_input_size") and size is not None else None


class FixedInputCheck:
    """``check_input`` of a fixed-size timm model (see :func:`register_timm_model`): a one-line ``ValueError`` for a
    batch that is not ``(N, in_chans, H, W)`` at the size it was built for."""

    def __init__(self, name: str, size: tuple[int, int], in_chans: int = 3):
        self.name, self.size, self.in_chans = name, tuple(size), in_chans

    def __call__(self, shape) -> None:
        shape = tuple(shape)
        if len(shape) != 4 or shape[1] != self.in_chans:
            raise ValueError(f"{self.name} expects (N, {self.in_chans}, H, W) input; got {shape}")
        if shape[-2:] != self.size:
            (h, w), (bh, bw) = shape[-2:], self.size
            raise ValueError(
                f"{self.name} was built for {bh}x{bw} inputs (img_size={bh}: its position tables have that size) but "
                f"got {h}x{w}; build it with img_size={h} (in a recipe: --set model_kwargs.img_size={h})")


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
