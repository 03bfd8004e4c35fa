"""Training configuration: one typed dataclass, filled from a recipe YAML and ``--set key=value`` overrides.

A recipe (``ghostnest/recipes/NAME.yaml``, also reachable as ``recipes/`` at the repository root) is a paper
experiment written out in full. ``resolve_config(recipe, overrides)`` reads it, applies the overrides (values
parsed as YAML: ``--set lr=3e-4``, ``--set betas=[0.9,0.99]``, ``--set model_kwargs.drop_rate=0.1``) and checks
every key and type, naming the key and its accepted values when something is wrong.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml


@dataclass
class TrainConfig:
    """Everything one training run depends on. ``None`` means "take it from the data set / model"."""

    recipe: str = "custom"
    description: str = ""
    # model (any name of `ghostnest models`; model_kwargs go to its constructor)
    model: str = "ghostmixnet"
    model_kwargs: dict = field(default_factory=dict)
    # data
    dataset: str = "digits"
    data_dir: str | None = None  # None: $GHOSTNEST_DATA or ./data
    download: bool = True
    num_classes: int | None = None  # None: the data set's class count
    image_size: int | None = None  # training/eval resolution; None: the data set's own size
    val_fraction: float = 0.05  # held out of the training split (ME-NeSt-Ghost, section 2: 95:5)
    val_on_test: bool = False  # validate on the official test split instead (the published GhostMixNet run)
    split_seed: int = 0
    augment: list = field(default_factory=list)  # per-image torchvision.transforms.v2 ops: [{op: Name, **kwargs}]
    mixup_alpha: float = 0.0  # per-batch v2.MixUp (0 = off)
    cutmix_alpha: float = 0.0  # per-batch v2.CutMix (0 = off)
    mixup_p: float = 0.5  # probability of MixUp when both are on (else CutMix)
    workers: int = 2  # DataLoader workers for per-image augmentation
    augment_on: str = "workers"  # or "device": the augment ops run on the batch on the training device (a GPU)
    augment_group: int = 1  # augment_on=device: images per draw of random parameters (1: per image, as the workers)
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 256
    label_smoothing: float = 0.0
    optimizer: str = "adamw"
    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    eta_min: float = 0.0
    restart_epochs: int = 50  # cosine_restarts: T_0
    restart_mult: int = 1  # cosine_restarts: T_mult
    # execution
    amp: str = "auto"  # CUDA autocast: auto (bf16 where supported, else fp16), bf16, fp16, fp32 (off); never on CPU
    channels_last: bool = True  # CUDA only
    compile: bool = False
    threads: int | None = None  # CPU threads for this run (None: PyTorch's default, one per core)
    seed: int = 0
    # distributed (torchrun) and faults; see docs/distributed.md. batch_size above is the global batch
    sync_bn: bool = False  # BatchNorm statistics over the global batch (SyncBatchNorm; GPUs only)
    dist_timeout: float = 600.0  # seconds a collective may wait for a peer before the rank fails
    checkpoint_steps: int = 0  # also checkpoint every N steps inside an epoch (0: at epoch ends and on SIGTERM)
    log: list = field(default_factory=lambda: ["csv"])  # metrics.csv always; add tensorboard for event files
    # fine-tuning (`ghostnest train --qat RUN` sets both; docs/deployment.md)
    init_from: str | None = None  # start from these weights: a .safetensors checkpoint, or a run (its best one)
    qat: bool = False  # fake int8 quantization while training (ghostnest.train.qat), for a run to export with --int8
    # timm's training options beyond the papers (docs/training.md, "Training options"); each off by default
    ema_decay: float | None = None  # weight EMA (timm's ModelEmaV3, its decay warm-up on), validated beside the model
    warmup_epochs: int = 0  # linear learning-rate warmup over the first N epochs, stepped per optimizer step
    warmup_lr: float = 0.0  # the learning rate warmup starts from
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimizer step (batch_size stays the global batch)
    clip_grad: float | None = None  # gradient clipping (timm's dispatch_clip_grad, after the grad scaler's unscale)
    clip_mode: str = "norm"  # norm (total L2 norm), value (each element) or agc (adaptive, timm's)
    layer_decay: float | None = None  # layer-wise lr decay through timm's optimizer factory (needs group_matcher)
    grad_checkpointing: bool = False  # activation checkpointing (model.set_grad_checkpointing): less memory, slower


CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "scheduler": ("cosine", "cosine_restarts", "constant"),
    "amp": ("auto", "bf16", "fp16", "fp32"),
    "augment_on": ("workers", "device"),
    "clip_mode": ("norm", "value", "agc"),
}
POSITIVE = ("epochs", "batch_size", "eval_batch_size", "restart_epochs", "restart_mult", "augment_group",
            "accum_steps")
# The names other trainers give our keys (timm's train.py, torchvision's references, Hugging Face's Trainer), for the
# "did you mean" of an unknown key: spelling alone does not lead from learning_rate to lr.
KEY_ALIASES = {
    "learning_rate": "lr", "base_lr": "lr", "min_lr": "eta_min", "lr_min": "eta_min", "wd": "weight_decay",
    "batch": "batch_size", "bs": "batch_size", "per_device_train_batch_size": "batch_size",
    "num_epochs": "epochs", "num_train_epochs": "epochs", "max_epochs": "epochs", "num_workers": "workers",
    "smoothing": "label_smoothing", "opt": "optimizer", "sched": "scheduler", "lr_scheduler": "scheduler",
    "arch": "model", "model_name": "model", "data": "dataset", "dataset_name": "dataset", "data_path": "data_dir",
    "data_root": "data_dir", "root": "data_dir", "img_size": "image_size", "input_size": "image_size",
    "resolution": "image_size", "size": "image_size", "mixup": "mixup_alpha", "cutmix": "cutmix_alpha",
    "precision": "amp", "val_split": "val_fraction", "classes": "num_classes", "model_args": "model_kwargs",
}


def nearest_key(key: str, fields) -> str | None:
    """The accepted key a mistyped or foreign ``key`` most likely means (:data:`KEY_ALIASES`, then spelling)."""
    import difflib

    norm = str(key).replace("-", "_").lower()
    alias = KEY_ALIASES.get(norm, norm if norm in fields else None)
    if alias in fields:
        return alias
    match = difflib.get_close_matches(norm, list(fields), n=1)
    return match[0] if match else None


def recipe_dir() -> Path:
    return Path(str(resources.files("ghostnest") / "recipes"))


def list_recipes() -> dict[str, str]:
    """Recipe name -> first line of its description."""
    out = {}
    for path in sorted(recipe_dir().glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        out[path.stem] = str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""
    return out


def load_recipe(name: str) -> dict:
    """The raw mapping of recipe ``name`` (a packaged recipe name, or a path to a YAML file)."""
    path = Path(name)
    if not (name.endswith((".yaml", ".yml")) and path.is_file()):
        path = recipe_dir() / f"{name}.yaml"
        if not path.is_file():
            import difflib

            names = list(list_recipes())
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown recipe {name!r}.{hint} Available: {', '.join(names)} (or a path to a .yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"recipe {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a mapping of key: value")
    data.setdefault("recipe", path.stem)
    return data


def parse_overrides(items: list[str]) -> dict:
    """``["lr=1e-4", "model_kwargs.drop_rate=0.1"]`` -> ``{"lr": 1e-4, "model_kwargs": {"drop_rate": 0.1}}``."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {p} is not a mapping")
        node[parts[-1]] = value
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _type_name(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args) + " or null"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value, tp):
    """Check ``value`` against the field type ``tp``; ints are accepted for floats, lists for tuples."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if tp is tuple and isinstance(value, list):
        value = [_coerce(f"{key}[{i}]", v, float) for i, v in enumerate(value)]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
        list: isinstance(value, list),
        tuple: isinstance(value, (list, tuple)),
    }[tp]
    if not ok:
        raise ValueError(f"{key}={value!r} has the wrong type: expected {_type_name(tp)}")
    if tp is float:
        return float(value)
    if tp is tuple:
        return tuple(float(v) for v in value)
    return value


def resolve_config(recipe: str | dict, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Recipe + overrides -> a checked :class:`TrainConfig` (``ValueError`` naming any bad key or value)."""
    data = load_recipe(recipe) if isinstance(recipe, str) else dict(recipe)
    extra = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    data = _merge(data, extra)
    return config_from_dict(data)


def config_from_dict(data: dict) -> TrainConfig:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        hints_txt = "; ".join(f"{k} (did you mean {m}?)" if (m := nearest_key(k, fields)) else k for k in unknown)
        raise ValueError(f"unknown config key(s): {hints_txt}. Accepted keys: {', '.join(fields)}")
    if data.get("amp") in (False, "off", "none"):  # YAML reads a bare `off` as false
        data = {**data, "amp": "fp32"}
    values = {k: _coerce(k, v, hints[k]) for k, v in data.items()}
    cfg = TrainConfig(**values)
    for key, choices in CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ValueError(f"{key}={getattr(cfg, key)!r} is not accepted; accepted values: {', '.join(choices)}")
    for key in POSITIVE:
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}={getattr(cfg, key)} must be a positive integer")
    if cfg.lr <= 0:
        raise ValueError(f"lr={cfg.lr} must be > 0")
    if not 0 <= cfg.label_smoothing < 1:
        raise ValueError(f"label_smoothing={cfg.label_smoothing} must be in [0, 1)")
    if not 0 <= cfg.mixup_p <= 1:
        raise ValueError(f"mixup_p={cfg.mixup_p} must be in [0, 1]")
    if cfg.mixup_alpha < 0 or cfg.cutmix_alpha < 0:
        raise ValueError("mixup_alpha and cutmix_alpha must be >= 0 (0 turns them off)")
    if not cfg.val_on_test and not 0 < cfg.val_fraction < 1:
        raise ValueError(f"val_fraction={cfg.val_fraction} must be in (0, 1), or set val_on_test=true")
    if len(cfg.betas) != 2:
        raise ValueError(f"betas={list(cfg.betas)} must be two numbers, e.g. [0.9, 0.999]")
    if cfg.workers < 0:
        raise ValueError(f"workers={cfg.workers} must be >= 0")
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"threads={cfg.threads} must be a positive integer or null")
    if cfg.dist_timeout <= 0:
        raise ValueError(f"dist_timeout={cfg.dist_timeout} must be > 0 (seconds)")
    if cfg.checkpoint_steps < 0:
        raise ValueError(f"checkpoint_steps={cfg.checkpoint_steps} must be >= 0 (0: at epoch ends only)")
    if cfg.image_size is not None and cfg.image_size < 1:
        raise ValueError(f"image_size={cfg.image_size} must be a positive integer or null")
    _check_log(cfg.log)
    _check_training_options(cfg)
    for i, op in enumerate(cfg.augment):
        if not isinstance(op, dict) or "op" not in op:
            raise ValueError(
                f"augment[{i}]={op!r} must be a mapping with an 'op' key, e.g. {{op: RandomHorizontalFlip}}")
    from ..data import check_dataset_name
    from ..data.loader import build_augment
    from ..registry import model_info

    check_dataset_name(cfg.dataset)
    model_info(cfg.model)
    build_augment(cfg.augment)
    return cfg


LOG_SINKS = ("csv", "tensorboard")


def _check_log(log: list) -> None:
    """``log``: where per-epoch metrics go. ``csv`` (metrics.csv, which resume and ``report`` read) is always on and
    must be listed; ``tensorboard`` needs the optional extra installed."""
    unknown = [s for s in log if s not in LOG_SINKS]
    if unknown or "csv" not in log:
        raise ValueError(f"log={log!r}: accepted entries are {', '.join(LOG_SINKS)}, and csv is always on "
                         "(metrics.csv, read by resume and report): e.g. log: [csv, tensorboard]")
    if "tensorboard" in log:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError("log: [csv, tensorboard] needs the tensorboard package: pip install "
                             "'ghostnest[tensorboard]'")


def _check_training_options(cfg: TrainConfig) -> None:
    """The options beyond the papers (EMA, warmup, accumulation, clipping, layer decay): one line per mistake."""
    if cfg.ema_decay is not None and not 0 < cfg.ema_decay < 1:
        raise ValueError(f"ema_decay={cfg.ema_decay} must be in (0, 1), e.g. 0.9998 (null turns the EMA off)")
    if cfg.ema_decay is not None and cfg.qat:
        raise ValueError("ema_decay and qat=true do not go together (the EMA copy would share the fake-quantization "
                         "observers of the model); drop --set ema_decay for a QAT run")
    if cfg.warmup_epochs < 0:
        raise ValueError(f"warmup_epochs={cfg.warmup_epochs} must be >= 0 (0: no warmup)")
    if not 0 <= cfg.warmup_lr <= cfg.lr:
        raise ValueError(f"warmup_lr={cfg.warmup_lr} must be in [0, lr={cfg.lr}]: warmup rises from it to lr")
    if cfg.batch_size % cfg.accum_steps:
        raise ValueError(f"accum_steps={cfg.accum_steps} does not divide batch_size={cfg.batch_size}; each optimizer "
                         "step splits the batch into accum_steps equal micro-batches: choose a divisor")
    if cfg.clip_grad is not None and cfg.clip_grad <= 0:
        raise ValueError(f"clip_grad={cfg.clip_grad} must be > 0 (null turns clipping off)")
    if cfg.layer_decay is not None and not 0 < cfg.layer_decay <= 1:
        raise ValueError(f"layer_decay={cfg.layer_decay} must be in (0, 1], e.g. 0.75 (null turns it off)")


def config_to_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["betas"] = list(cfg.betas)
    return d


# Keys of config.yaml that are derived from the configuration, not part of it (read back, they are ignored).
DERIVED_KEYS = ("model_options",)
