"""What every ghostnest model family shares: timm's model contract, written once.

Every family has the same layout, ``stem -> stages -> head -> global_pool -> drop -> fc``: a stem, an
``nn.Sequential`` of stages (each an ``nn.Sequential`` of blocks), an optional head (ME-NeSt-Ghost's 1x1 convolution,
``nn.Identity`` where there is none), then timm's ``SelectAdaptivePool2d``, dropout and the linear classifier. A
family subclasses :class:`PooledClassifier`, declares its trunk in :meth:`PooledClassifier.stage_plan` (stem width and
stride, each stage's width and stride) and calls :meth:`PooledClassifier.init_classifier` at the end of its
constructor; it then has the whole contract timm's own families have:

- ``feature_info`` (one level per resolution: the last of the stem and stages at each reduction, as timm's
  EfficientNet), ``forward_intermediates`` / ``prune_intermediate_layers`` with timm's signature and semantics,
  and through timm's ``build_model_with_cfg`` (:func:`build_model`) ``features_only=True``, ``out_indices``,
  ``feature_cls`` and the other factory keywords;
- ``set_grad_checkpointing`` (each block checkpointed by timm's ``checkpoint_seq``), ``group_matcher`` (for
  timm's layer-wise learning-rate decay), ``reset_classifier(num_classes, global_pool)``, ``num_classes=0`` for a
  headless feature model, ``global_pool=''`` for unpooled features;
- a ``pretrained_cfg`` per model name (:func:`pretrained_cfg`, registered through the family module's
  ``default_cfgs`` as timm's families do), so that ``timm.data.resolve_data_config`` gives the preprocessing the
  recipes train with.

``forward`` does tensor work only, so torch.fx and TorchScript can follow it; input sizes are checked where inputs
enter (:meth:`PooledClassifier.check_input`, used by training, export and bench).
"""

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Optional, Union

import torch
from timm.layers import SelectAdaptivePool2d, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models._features import feature_take_indices
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

# pooling types SelectAdaptivePool2d takes for any output size ("fast*" ones need an output size of 1)
POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")
FAST_POOL_TYPES = ("fast", "fastavg", "fastmax", "fastavgmax", "fastcatavgmax")
FEATURE_CLASSES = ("list", "dict", "hook", "fx", "getter")  # timm's feature wrappers, by name (feature_cls=...)


class UnknownOptionError(TypeError, ValueError):
    """An option a family does not have: a ``TypeError``, as for any unknown keyword argument (timm's factory
    contract), and a ``ValueError``, which ghostnest's command line prints as one line."""


@dataclass(frozen=True)
class StagePlan:
    """What a family declares about its trunk: the stem's width and stride, and each stage's width and stride."""

    stem_channels: int
    stem_stride: int
    channels: tuple[int, ...]
    strides: tuple[int, ...]

    def feature_info(self) -> list[dict]:
        """timm's ``feature_info``: one level per resolution, the last module (stem or stage) at each reduction,
        with its channels, reduction and module name. ``stage_end`` is its position in ``[stem, *stages]``."""
        modules = [("stem", self.stem_channels, self.stem_stride)]
        modules += [(f"stages.{i}", c, s) for i, (c, s) in enumerate(zip(self.channels, self.strides, strict=True))]
        reductions, r = [], 1
        for _, _, stride in modules:
            r *= stride
            reductions.append(r)
        return [dict(num_chs=c, reduction=reductions[i], module=name, stage_end=i)
                for i, (name, c, _) in enumerate(modules)
                if i + 1 == len(modules) or reductions[i + 1] != reductions[i]]


def pretrained_cfg(input_size: int, min_input_size: int, pool_size: int, mean: Sequence[float], std: Sequence[float],
                   num_classes: int, paper_name: str, **kwargs) -> dict:
    """A family's pretrained cfg (timm's ``PretrainedCfg`` fields) for ``default_cfgs``: no weights are published,
    so there is no ``url``/``hf_hub_id``; the input is what the paper trains at, the normalisation the recipes'."""
    return dict(
        url="", num_classes=num_classes, input_size=(3, input_size, input_size),
        min_input_size=(3, min_input_size, min_input_size), pool_size=(pool_size, pool_size), crop_pct=1.0,
        interpolation="bicubic", mean=tuple(mean), std=tuple(std), first_conv="stem.0", classifier="fc",
        license="mit", paper_name=paper_name, **kwargs)


def timm_cfg_overlay(input_size: int, pool_size: int, mean: Sequence[float], std: Sequence[float],
                     num_classes: int) -> dict:
    """The overlay over one of timm's own models' pretrained cfg (``registry.register_timm_model``) for the setting
    our recipes train it in: the input size (no larger test size), the final map's size, the class count, the data
    set's normalisation, no crop, bicubic resizing."""
    return dict(input_size=(3, input_size, input_size), test_input_size=None, pool_size=(pool_size, pool_size),
                num_classes=num_classes, mean=tuple(mean), std=tuple(std), crop_pct=1.0, interpolation="bicubic")


class PooledClassifier(nn.Module):
    """``stem -> stages -> head -> global_pool -> drop -> fc`` with timm's model interface (module docstring).

    A subclass builds ``self.stem``, ``self.stages`` (an ``nn.Sequential`` of ``nn.Sequential`` stages) and
    ``self.head`` (``nn.Identity()`` if it has none), implements :meth:`stage_plan` and calls
    :meth:`init_classifier` last.
    """

    family_name = "model"  # how messages name the family
    # init_classifier sets num_features (channels of forward_features' output) and head_hidden_size (width of the
    # pooled features, forward_head(..., pre_logits=True)); no class annotations, which TorchScript would read

    @classmethod
    def stage_plan(cls, cfg) -> StagePlan:
        """The trunk of the network config ``cfg`` describes (widths and strides), without building it."""
        raise NotImplementedError

    @classmethod
    def min_input_for(cls, cfg) -> int:
        """The smallest input side of the network ``cfg`` describes (what :meth:`check_input` asks for): by default
        the final reduction, where the last map is 1 x 1 and every feature level has the size its reduction says."""
        return cls.stage_plan(cfg).feature_info()[-1]["reduction"]

    def init_classifier(self, cfg, num_classes: int, in_chans: int, num_features: int, drop_rate: float,
                        global_pool: str = "avg", pool_size: int = 1) -> None:
        """The contract's state: feature levels, pooling, dropout and the classifier (after stem, stages, head).

        ``num_features``: channels of ``forward_features``' output. ``pool_size``: the pool's output size (the
        pooled features are ``num_features * pool_size**2`` wide)."""
        if num_classes < 0:
            raise ValueError(f"num_classes={num_classes} must be >= 0 (0 gives a headless feature model)")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate={drop_rate} must be in [0, 1)")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.feature_info = self.stage_plan(cfg).feature_info()
        self.stage_ends = [f.pop("stage_end") for f in self.feature_info]
        self.min_input_size = self.min_input_for(cfg)
        self.num_features, self.pool_size, self.drop_rate = num_features, pool_size, drop_rate
        self.grad_checkpointing = False
        self.global_pool = self._make_pool(global_pool, num_classes)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def _make_pool(self, pool_type: str, num_classes: int) -> SelectAdaptivePool2d:
        pool_type = pool_type or ""
        if pool_type not in POOL_TYPES and not (pool_type in FAST_POOL_TYPES and self.pool_size == 1):
            valid = POOL_TYPES + (FAST_POOL_TYPES if self.pool_size == 1 else ())
            raise ValueError(f"global_pool={pool_type!r} is not valid for {self.family_name}; choose one of {valid}")
        pool = SelectAdaptivePool2d(output_size=self.pool_size, pool_type=pool_type, flatten=bool(pool_type))
        self.head_hidden_size = self.num_features * pool.feat_mult() * (self.pool_size ** 2 if pool_type else 1)
        return pool

    def check_input(self, shape: Sequence[int]) -> None:
        """``ValueError`` unless ``shape`` is an (N, C, H, W) batch with ``in_chans`` channels and H, W of at least
        ``min_input_size``. Called where inputs enter (training, export, bench), never in ``forward``."""
        shape = tuple(shape)
        if len(shape) != 4 or shape[1] != self.in_chans or min(shape[-2:]) < self.min_input_size:
            raise ValueError(f"{self.family_name} expects (N, {self.in_chans}, H, W) input with H, W >= "
                             f"{self.min_input_size}; got {shape}")

    # ---------------------------------------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x, flatten=True)  # every block a checkpoint segment
        else:
            x = self.stages(x)
        return self.head(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, list[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """timm's ``forward_intermediates``: the feature levels ``indices`` (``None``: all; an int ``n``: the last
        ``n``; a list: those, negative from the end) and, unless ``intermediates_only``, the final features
        (``forward_features``' output when every stage ran). ``stop_early`` stops after the last level taken.
        There is no final norm, so ``norm`` changes nothing."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: {self.family_name} features are NCHW only")
        take_indices, max_index = feature_take_indices(len(self.stage_ends), indices)
        take = [self.stage_ends[i] for i in take_indices]
        last = self.stage_ends[max_index]
        intermediates = []
        x = self.stem(x)
        if 0 in take:
            intermediates.append(x)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:last]
        ran = 0
        for ran, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if ran in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if ran == len(self.stages):
            x = self.head(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, list[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's ``prune_intermediate_layers``: drop the stages after the last level in ``indices``; the head
        convolution goes with them (or with ``prune_norm``/``prune_head``), and with it the classifier and pooling
        (``reset_classifier(0, '')``). Returns the absolute level indices kept."""
        take_indices, max_index = feature_take_indices(len(self.stage_ends), indices)
        end = self.stage_ends[max_index]
        prune_end = prune_norm or prune_head or end < len(self.stages)
        self.stages = self.stages[:end]
        if prune_end:
            self.head = nn.Identity()
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    # ------------------------------------------------------------------------------------------- interface
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups in forward order for timm's layer-wise learning-rate decay: the stem, then each stage
        (``coarse``) or each block, then the head; the classifier is last."""
        return dict(stem=r"^stem", blocks=[(r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)", None),
                                           (r"^head", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of keeping them (timm's ``checkpoint_seq``)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new ``num_classes``-way classifier (0: the model returns pooled features) and, if given, pooling
        (``''``: none, with ``num_classes=0``); the current pooling is kept when ``global_pool`` is None."""
        if num_classes < 0:
            raise ValueError(f"num_classes={num_classes} must be >= 0 (0 removes the classifier)")
        dd = get_device_dtype(self)
        pool = self._make_pool(self.global_pool.pool_type if global_pool is None else global_pool, num_classes)
        self.num_classes, self.global_pool = num_classes, pool
        self.fc = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.global_pool.train(self.training)
        self.fc.train(self.training)


def _check_out_indices(out_indices, levels: int, family: str) -> tuple[int, ...]:
    """``out_indices`` (an int n: the last n levels; a sequence: those, negative from the end) as absolute levels."""
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        if not 1 <= out_indices <= levels:
            raise ValueError(f"out_indices={out_indices}: {family} has {levels} feature levels; an integer n takes "
                             f"the last n, so pass 1 to {levels}")
        return tuple(range(levels - out_indices, levels))
    try:
        values = [int(i) for i in out_indices]
    except (TypeError, ValueError):
        raise ValueError(f"out_indices={out_indices!r} must be an int or a sequence of level indices") from None
    bad = [i for i in values if not -levels <= i < levels]
    if bad or not values:
        raise ValueError(f"out_indices={tuple(values)}: {family} has {levels} feature levels; use indices 0 to "
                         f"{levels - 1} (or -{levels} to -1)")
    return tuple(sorted({i % levels for i in values}))  # the wrappers return levels in the model's order


def _check_feature_cls(feature_cls, family: str):
    if isinstance(feature_cls, str) and (feature_cls.lower() in FEATURE_CLASSES or "hook" in feature_cls.lower()):
        return feature_cls
    if isinstance(feature_cls, type) and issubclass(feature_cls, nn.Module):
        return feature_cls
    raise ValueError(f"feature_cls={feature_cls!r} is not one of timm's feature wrappers for {family}; choose one of "
                     f"{FEATURE_CLASSES} or pass a timm feature class")


def build_model(
    model_cls: type[PooledClassifier],
    config_cls: type,
    variant: str,
    defaults: dict,
    pretrained: bool,
    kwargs: dict,
    normalise: Callable[[str, object], object] = lambda key, value: value,
) -> nn.Module:
    """``model_cls(num_classes, in_chans, config_cls(**defaults | options), global_pool)`` built by timm's
    ``build_model_with_cfg`` with ``variant``'s pretrained cfg, so every factory keyword works as for timm's own
    families: ``features_only``/``out_indices``/``feature_cls``/``feature_cfg``, ``pretrained_cfg(_overlay)``,
    ``pretrained`` (from a cfg that names weights, e.g. ``timm.create_model("local-dir:DIR", pretrained=True)``),
    ``device``/``dtype``. An option the family does not have is an :class:`UnknownOptionError`."""
    family = model_cls.family_name
    kwargs = dict(kwargs)
    timm_args = {k: kwargs.pop(k) for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir",
                                            "pretrained_model_args") if k in kwargs}
    features_only = kwargs.pop("features_only", False)
    feature_options = {k: kwargs.pop(k) for k in ("out_indices", "feature_cls") if k in kwargs}
    feature_cfg = dict(kwargs.pop("feature_cfg", None) or {})
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    model_args = {k: kwargs.pop(k) for k in ("num_classes", "in_chans", "global_pool") if k in kwargs}
    valid = {f.name for f in fields(config_cls)}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise UnknownOptionError(f"unknown {family} option(s) {unknown}; valid options: {sorted(valid)} (and timm's "
                                 "num_classes, in_chans, global_pool, features_only, out_indices, feature_cls)")
    if (feature_options or feature_cfg) and not features_only:
        raise ValueError(f"{sorted(feature_options) or ['feature_cfg']} apply to a feature extractor: pass "
                         "features_only=True too")
    cfg = config_cls(**{key: normalise(key, value) for key, value in {**defaults, **kwargs}.items()})
    if features_only:
        levels = len(model_cls.stage_plan(cfg).feature_info())
        feature_cfg.setdefault("flatten_sequential", True)
        feature_cfg["out_indices"] = _check_out_indices(
            feature_options.get("out_indices", feature_cfg.get("out_indices", levels)), levels, family)
        if "feature_cls" in feature_options or "feature_cls" in feature_cfg:
            feature_cfg["feature_cls"] = _check_feature_cls(
                feature_options.get("feature_cls", feature_cfg.get("feature_cls")), family)
    if pretrained:
        source = resolve_pretrained_cfg(variant, timm_args.get("pretrained_cfg"), timm_args.get("pretrained_cfg_overlay"))
        if not source.has_weights:
            raise ValueError(f"pretrained=True: no pretrained weights are published for {variant}; pass "
                             "pretrained=PATH (a run directory, hub folder or .safetensors file) to "
                             "ghostnest.create_model, or train one with `ghostnest train`")
    with torch.device(device) if device is not None else nullcontext():
        model = build_model_with_cfg(model_cls, variant, pretrained, feature_cfg=feature_cfg,
                                     features_only=features_only, cfg=cfg, **model_args, **timm_args)
    smallest = model_cls.min_input_for(cfg)  # this network's, which options (strides, pool size) change
    model.pretrained_cfg["min_input_size"] = (model_args.get("in_chans", 3), smallest, smallest)
    return model if dtype is None else model.to(dtype=dtype)
