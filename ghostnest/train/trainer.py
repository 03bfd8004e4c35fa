"""``train()``, the public entry: open the run directory, join the process group, build the :class:`RunContext`
(data pipeline, model, optimizer, resume state) and hand it to :func:`.engine.fit`.

``train_command()`` is what ``ghostnest train`` calls: it also makes the ``--resume`` / ``--auto-resume`` decisions.
Recipes (``ghostnest/recipes/*.yaml``) decide everything; see docs/training.md for the run-directory contract
(:mod:`.rundir`).
"""
from __future__ import annotations

import gc
import os
from pathlib import Path

import torch
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel as DDP

from ..data import build_train_pipeline, default_data_dir, load_dataset
from ..fileio import WriteError
from ..layers.fused import use_fast_mish
from ..registry import fixed_input_size
from ..stats import count_params
from .checkpoint import load_into, read_checkpoint, resolve_checkpoint_path
from .config import TrainConfig, config_to_dict, parse_overrides, resolve_config
from .distributed import Dist, peer_failure, setup
from .engine import RunContext, fit, write_failed
from .metrics import write_metrics
from .model import classifier_keys, create_recipe_model, model_options
from .optim import autocast_for, build_optimizer, build_scheduler
from .progress import plural, resume_line
from .qat import prepare_qat
from .resume import ResumeState, finished_epochs, load_resume_state
from .rundir import auto_resume_plan, open_run, read_run_config, write_config
from .stop import StopRequest


class PeerLost(ValueError):
    """Distributed training: another rank died or stopped answering within ``dist_timeout``."""


def train(cfg: TrainConfig | None = None, out: str | Path | None = None, device: str = "auto",
          resume: str | Path | None = None, progress: bool = True, stop_after: int | None = None,
          resume_epochs: int | None = None, restart_unstarted: bool = False) -> dict:
    """Train ``cfg`` into run directory ``out`` (or continue the run in ``resume``); returns results.json's dict.

    Under torchrun (``RANK``/``WORLD_SIZE`` set) every process calls this; they train together with DDP and only
    rank 0 writes. SIGTERM/SIGINT save a checkpoint at the next step boundary and return
    ``{"stopped_at": epoch, "step": k, "signal": "SIGTERM", ...}``. ``stop_after=k`` stops cleanly after epoch k
    (used to test ``resume``). ``resume_epochs`` changes the epoch count of a resumed run. ``restart_unstarted``
    lets ``out`` be a run that never finished a checkpoint (``--auto-resume``: a job killed in its first epoch
    starts again).
    """
    cfg, run = open_run(cfg, out, resume, resume_epochs, restart_unstarted)  # every rank reads; nothing written
    threads = torch.get_num_threads()
    dist = setup(device, cfg.dist_timeout)  # one process, or this rank of torchrun's group
    ctx = None
    try:
        with StopRequest() as stop:
            ctx = build_context(cfg, run, dist, stop, resume is not None, resume_epochs is not None,
                                progress and dist.main)
            return fit(ctx, stop_after)
    except WriteError as exc:  # the disk is full, read-only, ...: one line naming the file and what is kept
        saved = ctx.saved if ctx is not None else (f"epoch {finished_epochs(run)}" if resume is not None else None)
        raise write_failed(run, exc, saved) from None
    except (torch.distributed.DistError, RuntimeError) as exc:
        if not dist.enabled or not peer_failure(exc):
            raise
        raise PeerLost(f"rank {dist.rank} lost contact with the other processes ({str(exc).splitlines()[0][:160]}); "
                       f"another rank probably crashed or hung: see its log. The last checkpoint in {run} is kept; "
                       f"continue with: ghostnest train --resume {run}") from None
    finally:
        if dist.enabled:
            # The DDP wrapper goes before the process group does. Freed afterwards, when this frame ends, its
            # Reducer drops the last reference to the destroyed group, whose destructor then joins the gloo
            # threads while holding the GIL one of them waits for: a rank that never exits (seen with torch 2.11).
            ctx = None
            gc.collect()
        dist.close()
        torch.set_num_threads(threads)  # a recipe's `threads` applies to its run only


def build_context(cfg: TrainConfig, run: Path, dist: Dist, stop: StopRequest, resuming: bool, epochs_changed: bool,
                  progress: bool) -> RunContext:
    """Data, model, optimizer, schedule and resume state of the run; rank 0 writes config.yaml."""
    dev = dist.device
    if cfg.threads and dev.type == "cpu":
        torch.set_num_threads(cfg.threads)
    if cfg.sync_bn and dist.world > 1 and dev.type != "cuda":
        raise ValueError("sync_bn=true needs GPUs: PyTorch's SyncBatchNorm does not run on CPU; drop --set "
                         "sync_bn=true for CPU (gloo) runs")
    torch.manual_seed(cfg.seed)
    data_dir = cfg.data_dir or default_data_dir()
    with dist.local_main_first():  # each node's rank 0 downloads first
        data = load_dataset(cfg.dataset, data_dir, download=cfg.download)
    if cfg.num_classes is not None and cfg.num_classes != data.num_classes:
        raise ValueError(f"num_classes={cfg.num_classes} but {cfg.dataset} has {data.num_classes} classes; "
                         "drop --set num_classes (it defaults to the data set's count)")
    pipe = build_train_pipeline(cfg, data, dev, dist.rank, dist.world)
    if pipe.batches.batch_size % cfg.accum_steps:
        raise ValueError(f"accum_steps={cfg.accum_steps} does not divide the batch of each of the {dist.world} "
                         f"process(es) ({cfg.batch_size} / {dist.world} = {pipe.batches.batch_size}); choose "
                         "accum_steps or a batch_size so that batch_size / processes / accum_steps is whole")
    model, params = _build_model(cfg, data.num_classes, dist, init=not resuming, classes=data.classes)
    smallest = getattr(model, "min_input_size", 1)  # checked here, before the run directory is written
    if pipe.image_size < smallest:
        raise ValueError(f"image_size={pipe.image_size} is below {cfg.model}'s smallest input ({smallest} pixels); "
                         f"set --set image_size={smallest} or more")
    fixed = fixed_input_size(model)
    if fixed is not None and fixed != (pipe.image_size, pipe.image_size):  # e.g. CoAtNet (models/coatnet.py)
        raise ValueError(f"{cfg.model} is built for {fixed[0]}x{fixed[1]} inputs (img_size) but this run trains at "
                         f"{pipe.image_size}x{pipe.image_size}; add --set model_kwargs.img_size={pipe.image_size}")
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay is not None else None
    autocast, amp_dtype = autocast_for(cfg, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    meta = {"model": cfg.model, "model_kwargs": cfg.model_kwargs, "num_classes": data.num_classes,
            "classes": data.classes, "input_size": pipe.image_size, "mean": list(data.mean), "std": list(data.std),
            "dataset": cfg.dataset, "recipe": cfg.recipe}
    state = ResumeState()
    if resuming:
        state = load_resume_state(run, model, opt, sched, scaler, meta, ema)
        if epochs_changed and isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR):
            sched.T_max = cfg.epochs
        if dist.main:  # a kill can land between the state file and metrics.csv, or leave a temporary file
            write_metrics(run / "metrics.csv", state.rows)
            for tmp in run.glob(".*.tmp*"):
                tmp.unlink(missing_ok=True)
    elif dist.main:
        run.mkdir(parents=True, exist_ok=True)
    if dist.main:
        write_config(run, {**config_to_dict(cfg), "num_classes": data.num_classes, "image_size": pipe.image_size,
                           "data_dir": str(data_dir), "model_options": model_options(model)})
    step_model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None) if dist.enabled else model
    step_model = torch.compile(step_model) if cfg.compile else step_model
    ctx = RunContext(cfg, run, dist, stop, data, pipe, model, step_model, opt, sched, scaler, autocast, meta,
                     params, state, progress, ema)
    if resuming:
        ctx.saved = f"epoch {state.epoch}" + (f", step {state.mid_epoch['step']}" if state.mid_epoch else "")
    if resuming and state.epoch >= cfg.epochs:
        ctx.log(f"{run}: all {plural(cfg.epochs, 'epoch')} done; evaluating the best checkpoint")
    _log_start(ctx, amp_dtype)
    if resuming and state.epoch < cfg.epochs:
        ctx.log(resume_line(run, state.epoch, (state.mid_epoch or {}).get("step", 0), len(pipe.batches),
                            state.best_top1, state.best_epoch))
    return ctx


def _build_model(cfg: TrainConfig, num_classes: int, dist: Dist, init: bool = True,
                 classes: list[str] | None = None) -> tuple[torch.nn.Module, int]:
    """The recipe's model on the device (fast Mish, SyncBatchNorm, channels_last, activation checkpointing, fake
    quantization as asked) and its parameter count; with ``init``, ``cfg.init_from``'s weights (a resumed run loads
    its own afterwards), its classifier too where it was trained on the same ``classes``."""
    model = create_recipe_model(cfg, num_classes)
    params = count_params(model)
    if cfg.init_from and init:
        _load_initial_weights(model, cfg, classes)
    if cfg.grad_checkpointing:
        if not callable(getattr(model, "set_grad_checkpointing", None)):
            raise ValueError(f"grad_checkpointing=true: {cfg.model} has no set_grad_checkpointing() (timm's model "
                             "interface); drop --set grad_checkpointing for this model")
        model.set_grad_checkpointing(True)
    use_fast_mish(model)  # Mish as one compiled kernel (ME-NeSt-Ghost); GHOSTNEST_FAST_MISH=0 keeps F.mish
    if cfg.sync_bn and dist.world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same state_dict keys as BatchNorm
    if cfg.channels_last and dist.device.type == "cuda":
        model = model.to(dist.device, memory_format=torch.channels_last)
    else:
        model = model.to(dist.device)
    if cfg.qat:
        prepare_qat(model)  # fake int8 rounding of weights and layer inputs; state_dict keeps plain names
    return model, params


def _load_initial_weights(model: torch.nn.Module, cfg: TrainConfig, classes: list[str] | None = None) -> None:
    """``cfg.init_from``'s weights into ``model`` (a new run's starting point; a resumed run loads its own). The
    classifier comes along only when the checkpoint was trained on the same class names (``classes``; e.g. a QAT
    fine-tune of its own run); on other classes (a fine-tune on a new data set) the model keeps its new head."""
    try:
        path = resolve_checkpoint_path(cfg.init_from)
    except FileNotFoundError:
        raise FileNotFoundError(f"init_from={cfg.init_from}: no such run directory or checkpoint; pass --set "
                                "init_from=RUN_DIR (a trained run) or a .safetensors checkpoint") from None
    tensors, meta = read_checkpoint(path)
    if meta.get("model") != cfg.model:
        raise ValueError(f"init_from={cfg.init_from} holds a {meta.get('model')} checkpoint but this run trains "
                         f"{cfg.model}; start from a {cfg.model} run (or --set model={meta.get('model')}) or drop "
                         "--set init_from")
    if classes is None or list(meta.get("classes", [])) == list(classes):
        load_into(model, tensors, path, meta)
        return
    head = classifier_keys(model)
    if not head:
        raise ValueError(f"init_from={cfg.init_from} was trained on other classes and {cfg.model} has no "
                         "get_classifier() to replace; fine-tune it on the same classes")
    body = {k: v for k, v in tensors.items() if k not in head}
    load_into(model, body, path, meta, keep=head)


def _log_start(ctx: RunContext, amp_dtype) -> None:
    cfg, dist, pipe, data = ctx.cfg, ctx.dist, ctx.pipe, ctx.data
    ctx.log(f"{cfg.recipe}: {cfg.model} ({ctx.params:,} params) on {data.name} {pipe.image_size}px, "
            f"{len(pipe.train_split)} train / {len(pipe.val_split)} val{' (= test set)' if cfg.val_on_test else ''} "
            f"/ {len(data.test)} test, {plural(cfg.epochs, 'epoch')} on {dist.device}"
            f"{f' ({amp_dtype})' if amp_dtype else ''} -> {ctx.run}")
    per_rank = pipe.batches.batch_size
    accum = (f" ({cfg.accum_steps} micro-batches of {per_rank // cfg.accum_steps})" if cfg.accum_steps > 1 else "")
    ctx.log(f"global batch {cfg.batch_size} = {plural(dist.world, 'process')} x {per_rank}{accum}, lr {cfg.lr:g} "
            f"(the recipe's values: batch_size is the global batch)"
            f"{', SyncBatchNorm' if cfg.sync_bn and dist.world > 1 else ''}{f', {dist.backend}' if dist.enabled else ''}")
    options = []
    if cfg.ema_decay is not None:
        options.append(f"weight EMA {cfg.ema_decay:g} (timm ModelEmaV3, decay warm-up)")
    if cfg.warmup_epochs:
        options.append(f"warmup {cfg.warmup_epochs} epoch(s) from lr {cfg.warmup_lr:g}")
    if cfg.clip_grad is not None:
        options.append(f"gradient clipping {cfg.clip_mode} {cfg.clip_grad:g}")
    if cfg.layer_decay is not None:
        options.append(f"layer decay {cfg.layer_decay:g} over {len(ctx.opt.param_groups)} parameter groups")
    if cfg.grad_checkpointing:
        options.append("activation checkpointing")
    if options:
        ctx.log("training options: " + ", ".join(options))


# Quantization-aware fine-tuning (``--qat RUN``): epochs and the fraction of the run's learning rate, unless set.
QAT_EPOCHS = 2
QAT_LR_FACTOR = 0.1


def qat_config(run: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """The configuration of ``ghostnest train --qat RUN``: ``RUN``'s own (recipe, data, augmentation, model) starting
    from its best weights with fake int8 quantization, for :data:`QAT_EPOCHS` epochs at :data:`QAT_LR_FACTOR`
    times its learning rate, without a weight EMA (which QAT does not take); ``overrides`` (``KEY=VALUE``) apply
    last."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not a ghostnest run directory (no config.yaml); --qat fine-tunes a "
                                "trained run")
    base = read_run_config(run)
    data = {**config_to_dict(base), "init_from": str(resolve_checkpoint_path(run)), "qat": True, "ema_decay": None,
            "epochs": QAT_EPOCHS, "lr": base.lr * QAT_LR_FACTOR,
            "description": f"quantization-aware fine-tuning of {run}"}
    return resolve_config(data, list(overrides))


def train_command(recipe: str | None = None, overrides: list[str] = (), out=None, resume=None,
                  auto_resume: bool = False, device: str = "auto", data_dir: str | None = None,
                  progress: bool = True, qat: str | None = None) -> dict | None:
    """``ghostnest train``: start a run from ``recipe`` + ``overrides`` (``KEY=VALUE``), or ``--resume`` one, or
    fine-tune the run ``qat`` with fake int8 quantization (:func:`qat_config`; into ``out``, default ``RUN-qat``).

    ``auto_resume`` (with ``out``): continue ``out`` if it holds a checkpoint, else start it; ``None`` if it had
    already finished (results.json), after printing so on rank 0. Returns :func:`train`'s dict."""
    new_run_overrides = list(overrides) + ([f"data_dir={data_dir}"] if data_dir else [])  # not for --resume
    if qat:
        if recipe or resume or auto_resume:
            raise ValueError("--qat RUN takes its configuration from RUN; drop --recipe, --resume and --auto-resume "
                             "(continue a stopped QAT run with --resume QAT_RUN)")
        cfg = qat_config(qat, new_run_overrides)
        return train(cfg, out=out if out is not None else f"{str(qat).rstrip('/')}-qat", device=device,
                     progress=progress)
    extra = parse_overrides(overrides)
    if auto_resume:  # the same command starts a run and, after a preemption or requeue, continues it
        plan = auto_resume_plan(out, resume)
        if plan == "done":
            if int(os.environ.get("RANK", 0)) == 0:
                print(f"{out}: finished earlier (results.json); nothing to do")
            return None
        if plan == "resume":  # the run's own configuration; only a longer epoch count carries over
            resume, recipe = out, None
            extra = {"epochs": extra["epochs"]} if extra.get("epochs") else {}
    if resume:
        if recipe or set(extra) - {"epochs"}:
            raise ValueError(f"--resume takes the configuration from {resume}/config.yaml; drop --recipe and "
                             "--set (only --set epochs=N, to train longer, is accepted)")
        return train(None, resume=resume, device=device, progress=progress, resume_epochs=extra.get("epochs"))
    cfg = resolve_config(recipe or "quickstart", new_run_overrides)
    return train(cfg, out=out, device=device, progress=progress, restart_unstarted=auto_resume)
