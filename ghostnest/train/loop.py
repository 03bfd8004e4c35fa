"""The training loop, top to bottom (airbench style): data on the device, one epoch = one pass of
``normalise -> mix -> forward -> loss -> backward -> step``, validation, an atomic checkpoint, one metrics row.

The same loop runs in one process or as one rank of ``torchrun`` (docs/distributed.md): the model is wrapped in
DDP, each rank takes its share of every global batch, metrics are summed over the ranks, rank 0 alone writes.
SIGTERM / SIGINT save a checkpoint at the next step boundary; resume continues exactly, even inside an epoch.

Recipes (``ghostnest/recipes/*.yaml``) decide everything; see docs/training.md for the run-directory contract:

    RUN_DIR/config.yaml        resolved configuration (model, dataset, num_classes, recipe, ...)
    RUN_DIR/metrics.csv        epoch,lr,train_loss,val_loss,val_top1,val_top5,seconds   (one row per epoch)
    RUN_DIR/last.safetensors   weights after the latest epoch (or stop)
    RUN_DIR/last.state.pt      the resume point: weights, optimizer, scheduler, RNG, epoch [+ step], metrics rows
    RUN_DIR/best.safetensors   weights of the best validation top-1
    RUN_DIR/results.json       at the end: test accuracy of the best checkpoint, params, best_epoch, ...
    RUN_DIR/curves.png         training curves
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from ..data import build_augment, build_mix, default_data_dir, eval_batches, load_dataset, train_val_split
from ..data.loader import Normalize, epoch_seed, resize_steps
from ..fileio import atomic_write_bytes, atomic_write_text
from ..layers.fused import use_fast_mish
from ..registry import create_model
from ..stats import count_params
from .checkpoint import load_into, read_checkpoint, save_state, save_weights
from .config import TrainConfig, config_from_dict, config_to_dict
from .distributed import Dist, ShardedBatches, StopRequest, peer_failure, setup
from .metrics import plot_curves, read_metrics, write_metrics

class TrainingDiverged(ValueError):
    """The loss became NaN/inf; training stopped and the last good checkpoint was kept."""


class PeerLost(ValueError):
    """Distributed training: another rank died or stopped answering within ``dist_timeout``."""


def autocast_for(cfg: TrainConfig, device: torch.device):
    """bf16 (or fp16) autocast on CUDA; full fp32 on CPU."""
    if device.type != "cuda" or cfg.amp == "fp32":
        return contextlib.nullcontext, None
    dtype = torch.float16 if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()) \
        else torch.bfloat16
    return (lambda: torch.autocast("cuda", dtype=dtype)), dtype


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=True)


def build_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer):
    """Stepped once per epoch. ``cosine``: CosineAnnealingLR(T_max=epochs, eta_min) (seed 000 section 4);
    ``cosine_restarts``: CosineAnnealingWarmRestarts(T_0, T_mult, eta_min) (seed 004, facts.md)."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=cfg.eta_min)
    if cfg.scheduler == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=cfg.restart_epochs, T_mult=cfg.restart_mult, eta_min=cfg.eta_min)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def loss_fn(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Label-smoothing cross entropy; ``target`` is class indices or (mixed) class probabilities."""
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)


@torch.no_grad()
def evaluate(model, split, norm: Normalize, batch_size: int, autocast, num_classes: int, with_preds: bool = False,
             reduce=None):
    """Mean cross entropy (no smoothing), top-1 and top-5 accuracy in percent; optionally the predictions.

    ``reduce`` (``Dist.sum``) adds up the sums of every rank's shard of the data set before the division."""
    model.eval()
    k = min(5, num_classes)
    loss_sum = torch.zeros((), device=norm.device)
    top1 = torch.zeros((), device=norm.device)
    top5 = torch.zeros((), device=norm.device)
    preds = []
    for images, labels in eval_batches(split, batch_size, norm.device):
        with autocast():
            logits = model(norm(images))
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        topk = logits.topk(k, dim=1).indices
        top1 += (topk[:, 0] == labels).sum()
        top5 += (topk == labels[:, None]).any(dim=1).sum()
        if with_preds:
            preds.append(topk[:, 0].cpu())
    sums = [loss_sum.item(), top1.item(), top5.item(), len(split)]
    loss_sum, top1, top5, n = reduce(sums) if reduce is not None else sums
    n = max(n, 1)
    out = {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}
    if with_preds:
        out["preds"] = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return out


def default_run_dir(recipe: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(recipe).stem}-{stamp}"


def _log(msg: str, progress: bool) -> None:
    if progress:
        tqdm.write(msg, file=sys.stderr)


def _diverged(what: str, run: Path, rows: list[dict]) -> TrainingDiverged:
    kept = (f"the last good checkpoint ({run}/last.safetensors, epoch {rows[-1]['epoch']}) is kept" if rows
            else "no epoch had finished, so there is no checkpoint to keep")
    return TrainingDiverged(f"{what}: training diverged and was stopped; {kept}. Start a new run with a lower "
                            "learning rate (--set lr=...) or without fp16 (--set amp=fp32)")


def train(cfg: TrainConfig | None = None, out: str | Path | None = None, device: str = "auto",
          resume: str | Path | None = None, progress: bool = True, stop_after: int | None = None,
          resume_epochs: int | None = None, restart_unstarted: bool = False) -> dict:
    """Train ``cfg`` into run directory ``out`` (or continue the run in ``resume``); returns results.json's dict.

    Under torchrun (``RANK``/``WORLD_SIZE`` set) every process calls this; they train together with DDP and only
    rank 0 writes. SIGTERM/SIGINT save a checkpoint at the next step boundary and return
    ``{"stopped_at": epoch, "step": k, "signal": "SIGTERM", ...}``. ``stop_after=k`` stops cleanly after epoch k
    (used to test ``resume``). ``restart_unstarted`` lets ``out`` be a run that never finished a checkpoint
    (``--auto-resume``: a job killed in its first epoch starts again).
    """
    threads = torch.get_num_threads()
    try:
        return _train(cfg, out, device, resume, progress, stop_after, resume_epochs, restart_unstarted)
    finally:
        torch.set_num_threads(threads)  # a recipe's `threads` applies to its run only


def _train(cfg, out, device, resume, progress, stop_after, resume_epochs, restart_unstarted) -> dict:
    # --- run directory and configuration (read by every rank; nothing is written yet) ------------------------
    if resume is not None:
        run = Path(resume)
        if not (run / "config.yaml").is_file() or not (run / "last.state.pt").is_file():
            raise FileNotFoundError(f"{run} is not a resumable run: it needs config.yaml, last.safetensors and "
                                    "last.state.pt (written after the first finished epoch)")
        cfg = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
        if resume_epochs is not None:
            cfg.epochs = resume_epochs
        if (run / "results.json").is_file() and resume_epochs is None:
            raise ValueError(f"{run} has finished (results.json exists); to train longer pass --set epochs=N")
    else:
        run = Path(out) if out is not None else default_run_dir(cfg.recipe)
        if (run / "config.yaml").exists() and not (restart_unstarted and not (run / "last.state.pt").exists()):
            raise ValueError(f"{run} already holds a run; continue it with --resume {run} or choose another --out")
    d = setup(device, cfg.dist_timeout)  # one process, or this rank of torchrun's group
    try:
        with StopRequest() as stop:
            return _fit(cfg, run, d, stop, resume, progress and d.main, stop_after, resume_epochs)
    except (torch.distributed.DistError, RuntimeError) as exc:
        if not d.enabled or not peer_failure(exc):
            raise
        raise PeerLost(f"rank {d.rank} lost contact with the other processes ({str(exc).splitlines()[0][:160]}); "
                       f"another rank probably crashed or hung: see its log. The last checkpoint in {run} is kept; "
                       f"continue with: ghostnest train --resume {run}") from None
    finally:
        d.close()


def _fit(cfg: TrainConfig, run: Path, d: Dist, stop: StopRequest, resume, progress, stop_after, resume_epochs):
    dev = d.device
    if cfg.threads and dev.type == "cpu":
        torch.set_num_threads(cfg.threads)
    if cfg.sync_bn and d.world > 1 and dev.type != "cuda":
        raise ValueError("sync_bn=true needs GPUs: PyTorch's SyncBatchNorm does not run on CPU; drop --set "
                         "sync_bn=true for CPU (gloo) runs")
    torch.manual_seed(cfg.seed)

    # --- data (seed 000 section 2 / seed 004 "Data"); each node's rank 0 downloads first ----------------------
    data_dir = cfg.data_dir or default_data_dir()
    with d.local_main_first():
        data = load_dataset(cfg.dataset, data_dir, download=cfg.download)
    if cfg.num_classes is not None and cfg.num_classes != data.num_classes:
        raise ValueError(f"num_classes={cfg.num_classes} but {cfg.dataset} has {data.num_classes} classes; "
                         "drop --set num_classes (it defaults to the data set's count)")
    num_classes = data.num_classes
    size = cfg.image_size or data.size
    if cfg.val_on_test:
        train_split, val_split = data.train, data.test  # the published GhostMixNet run validates on the test set
    else:
        train_split, val_split = train_val_split(data.train, cfg.val_fraction, cfg.split_seed)
    resolved = {**config_to_dict(cfg), "num_classes": num_classes, "image_size": size, "data_dir": str(data_dir)}
    # this rank's share of each global batch (per-image v2 augmentation only where the recipe asks for it)
    augment = build_augment(cfg.augment)
    sizes = resize_steps(data.train.images.shape[-1], data.size, size)
    batches = ShardedBatches(train_split, sizes, cfg.batch_size, augment, cfg.workers, dev, d.rank, d.world)

    # --- model, optimizer, schedule --------------------------------------------------------------------------
    try:
        model = create_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs)
    except TypeError as exc:  # timm's models reject unknown constructor options with a TypeError
        raise ValueError(f"model {cfg.model} does not accept model_kwargs {cfg.model_kwargs} ({exc}); fix or drop "
                         "the --set model_kwargs.* options") from None
    params = count_params(model)
    use_fast_mish(model)  # Mish as one compiled kernel (ME-NeSt-Ghost); GHOSTNEST_FAST_MISH=0 keeps F.mish
    if cfg.sync_bn and d.world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same state_dict keys as BatchNorm
    channels_last = cfg.channels_last and dev.type == "cuda"
    model = model.to(dev, memory_format=torch.channels_last) if channels_last else model.to(dev)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)
    autocast, amp_dtype = autocast_for(cfg, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    meta = {"model": cfg.model, "model_kwargs": cfg.model_kwargs, "num_classes": num_classes,
            "classes": data.classes, "input_size": size, "mean": list(data.mean), "std": list(data.std),
            "dataset": cfg.dataset, "recipe": cfg.recipe}

    start_epoch, best_top1, best_epoch, rows, partial = 0, -1.0, 0, [], None
    if resume is not None:
        try:
            state = torch.load(run / "last.state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{run}/last.state.pt is corrupt or truncated ({type(exc).__name__}); the run cannot be "
                             f"resumed: evaluate {run}/best.safetensors or train again") from None
        if "model" in state:  # the state file alone is the resume point (its weights were saved with it)
            load_into(model, state["model"], run / "last.state.pt", meta)
        else:  # runs written before the state file held the weights
            tensors, wmeta = read_checkpoint(run / "last.safetensors")
            if wmeta.get("epoch") != state["epoch"]:
                raise ValueError(f"{run}/last.safetensors (epoch {wmeta.get('epoch')}) and last.state.pt (epoch "
                                 f"{state['epoch']}) disagree; the run was cut off between the two writes. Resume "
                                 "is not safe: evaluate best.safetensors or train again")
            load_into(model, tensors, run / "last.safetensors", wmeta)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_top1, best_epoch = state["epoch"], state["best_top1"], state["best_epoch"]
        partial = state.get("partial")  # set when the run stopped inside an epoch (SIGTERM, checkpoint_steps)
        if resume_epochs is not None and isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR):
            sched.T_max = cfg.epochs
        rows = state.get("rows", [r for r in read_metrics(run / "metrics.csv") if r["epoch"] <= start_epoch])
        if start_epoch >= cfg.epochs and not (run / "results.json").is_file():
            _log(f"{run}: all {cfg.epochs} epochs done; evaluating the best checkpoint", progress)
        if d.main:  # a kill can land between the state file and metrics.csv, or leave a temporary file
            write_metrics(run / "metrics.csv", rows)
            for tmp in run.glob(".*.tmp*"):
                tmp.unlink(missing_ok=True)
    elif d.main:
        run.mkdir(parents=True, exist_ok=True)
    if d.main:
        atomic_write_text(run / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    step_model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None) if d.enabled else model
    step_model = torch.compile(step_model) if cfg.compile else step_model

    # --- normalisation, mixing, validation shard ----------------------------------------------------------------
    norm = Normalize(data.mean, data.std, sizes, dev, channels_last)  # evaluation: resize + normalise per batch
    # training batches with per-image augmentation arrive already resized by the loader workers
    train_norm = Normalize(data.mean, data.std, () if augment else sizes, dev, channels_last)
    mix = build_mix(cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mixup_p, num_classes)
    val_shard = val_split.subset(torch.tensor_split(torch.arange(len(val_split)), d.world)[d.rank]) \
        if d.enabled else val_split
    _log(f"{cfg.recipe}: {cfg.model} ({params:,} params) on {data.name} {size}px, {len(train_split)} train / "
         f"{len(val_split)} val{' (= test set)' if cfg.val_on_test else ''} / {len(data.test)} test, "
         f"{cfg.epochs} epochs on {dev}{f' ({amp_dtype})' if amp_dtype else ''} -> {run}", progress)
    _log(f"global batch {cfg.batch_size} = {d.world} process(es) x {batches.batch_size}, lr {cfg.lr:g} (the "
         f"recipe's values: batch_size is the global batch){', SyncBatchNorm' if cfg.sync_bn and d.world > 1 else ''}"
         f"{f', {d.backend}' if d.enabled else ''}", progress)

    def checkpoint(done: int, step: int = 0, loss_sum=None, seconds: float = 0.0) -> None:
        """last.safetensors, then last.state.pt (the resume point) after epoch ``done`` [+ ``step`` steps]."""
        part = None
        if step:  # inside an epoch: what the rest of it needs to run exactly as it would have
            rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
            part = {"step": step, "loss_sum": d.sum([loss_sum.item()])[0] / d.world, "seconds": seconds,
                    "rng": d.gather(rng), "world_size": d.world}
        if not d.main:
            return
        save_weights(run / "last.safetensors", model, {**meta, "epoch": done, "step": step})
        save_state(run / "last.state.pt", {
            "epoch": done, "partial": part, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "best_top1": best_top1, "best_epoch": best_epoch, "rows": rows, "world_size": d.world,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        })

    def stopped(done: int, step: int = 0) -> dict:
        where = f"epoch {done + 1}, step {step}/{len(batches)}" if step else f"the end of epoch {done}"
        if d.main:
            print(f"{stop.name}: saved a checkpoint at {where}; continue with: ghostnest train --resume {run}",
                  file=sys.stderr)
            if rows:
                plot_curves(run / "curves.png", rows, f"{cfg.recipe}: {cfg.model} on {cfg.dataset}")
        return {"stopped_at": done, "step": step, "signal": stop.name, "run_dir": str(run), "rank": d.rank}

    # --- epochs ------------------------------------------------------------------------------------------------
    t_run = time.time()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            skip = partial["step"] if partial else 0
            t0 = time.time() - (partial["seconds"] if partial else 0.0)
            if partial and partial["world_size"] == d.world:  # the RNG exactly where the stop left it
                torch.set_rng_state(partial["rng"][d.rank]["cpu"])
                if dev.type == "cuda" and partial["rng"][d.rank]["cuda"] is not None:
                    torch.cuda.set_rng_state(partial["rng"][d.rank]["cuda"], dev)
            else:  # dropout, mixing (and augmentation without workers) of this epoch, on this rank
                if partial:
                    _log(f"resuming inside epoch {epoch + 1} at another world size ({partial['world_size']} -> "
                         f"{d.world}): same batches, new random draws for the rest of the epoch", progress)
                torch.manual_seed(epoch_seed(cfg.seed, epoch) + 2 * d.rank + 7919 * skip)
            model.train()
            lr = opt.param_groups[0]["lr"]
            loss_sum, steps = torch.full((), partial["loss_sum"] if partial else 0.0, device=dev), skip
            partial = None
            bar = tqdm(total=len(batches), initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       file=sys.stderr, disable=not progress, dynamic_ncols=True)
            order_seed, worker_seed = epoch_seed(cfg.seed, epoch) + 1, epoch_seed(cfg.seed, epoch) + 2 * d.rank + 1
            for images, labels in batches.epoch(order_seed, worker_seed, skip):
                x, y = train_norm(images), labels
                if mix is not None:
                    x, y = mix(x, y)
                with autocast():
                    logits = step_model(x)
                loss = loss_fn(logits, y, cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # DDP averages the gradients over the ranks here
                scaler.step(opt)
                scaler.update()
                loss_sum += loss.detach()
                steps += 1
                if steps % 10 == 0 or steps == len(batches):
                    running = d.sum([loss_sum.item()])[0] / d.world / steps  # progress and the NaN check, all ranks
                    if not math.isfinite(running):
                        raise _diverged(f"loss became {running} in epoch {epoch + 1} (step {steps})", run, rows)
                    bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
                every = cfg.checkpoint_steps and steps % cfg.checkpoint_steps == 0
                if steps < len(batches) and (stop.requested(d) or every):
                    checkpoint(epoch, steps, loss_sum, time.time() - t0)
                    if stop.signum is not None:
                        bar.close()
                        return stopped(epoch, steps)
            bar.close()
            sched.step()
            d.broadcast_buffers(model)  # BatchNorm statistics of rank 0, as DDP's next forward would broadcast them
            val = evaluate(model, val_shard, norm, cfg.eval_batch_size, autocast, num_classes, reduce=d.sum)
            if not math.isfinite(val["loss"]):
                raise _diverged(f"validation loss became {val['loss']} in epoch {epoch + 1}", run, rows)
            done = epoch + 1
            train_loss = d.sum([loss_sum.item()])[0] / d.world / max(steps, 1)
            row = {"epoch": done, "lr": lr, "train_loss": train_loss, "val_loss": val["loss"],
                   "val_top1": val["top1"], "val_top5": val["top5"], "seconds": round(time.time() - t0, 3)}
            is_best = val["top1"] > best_top1
            if is_best:
                best_top1, best_epoch = val["top1"], done
                if d.main:
                    save_weights(run / "best.safetensors", model, {**meta, "epoch": done, "val_top1": val["top1"]})
            rows.append(row)
            checkpoint(done)  # the resume point: a kill before it repeats this epoch, after it never
            if d.main:
                write_metrics(run / "metrics.csv", rows)
            eta = (time.time() - t_run) / (done - start_epoch) * (cfg.epochs - done)
            _log(f"epoch {done}/{cfg.epochs}  lr {lr:.2e}  train_loss {row['train_loss']:.4f}  val_loss "
                 f"{val['loss']:.4f}  val_top1 {val['top1']:.2f}%  val_top5 {val['top5']:.2f}%  "
                 f"{row['seconds']:.1f}s{'  *best*' if is_best else ''}  ETA {eta / 60:.1f} min", progress)
            if done < cfg.epochs and stop.requested(d):
                return stopped(done)
            if stop_after is not None and done >= stop_after and done < cfg.epochs:
                if d.main:
                    plot_curves(run / "curves.png", rows, f"{cfg.recipe}: {cfg.model} on {cfg.dataset}")
                _log(f"stopped after epoch {done}; continue with: ghostnest train --resume {run}", progress)
                return {"stopped_at": done, "run_dir": str(run), "rank": d.rank}
    except KeyboardInterrupt:  # a second Ctrl-C: no time to save
        print(f"interrupted; the last checkpoint is kept. Continue with: ghostnest train --resume {run}",
              file=sys.stderr)
        raise
    finally:
        if rows and d.main:
            with contextlib.suppress(Exception):
                plot_curves(run / "curves.png", rows, f"{cfg.recipe}: {cfg.model} on {cfg.dataset}")

    # --- test accuracy of the best checkpoint (rank 0; the others are done) ----------------------------------
    if not d.main:
        return {"run_dir": str(run), "rank": d.rank}
    tensors, _ = read_checkpoint(run / "best.safetensors")
    load_into(model, tensors, run / "best.safetensors", meta)
    test = evaluate(model, data.test, norm, cfg.eval_batch_size, autocast, num_classes)
    results = {
        "model": cfg.model, "dataset": cfg.dataset, "recipe": cfg.recipe, "num_classes": num_classes,
        "params": params, "test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["loss"],
        "best_epoch": best_epoch, "best_val_top1": best_top1, "epochs": cfg.epochs,
        "val_is_test": cfg.val_on_test, "image_size": size, "device": str(dev),
        "world_size": d.world, "global_batch": cfg.batch_size, "sync_bn": cfg.sync_bn and d.world > 1,
        "train_seconds": round(sum(r["seconds"] for r in rows), 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(run / "results.json", json.dumps(results, indent=2) + "\n")
    _log(f"test top-1 {test['top1']:.2f}%  top-5 {test['top5']:.2f}%  (best epoch {best_epoch}, "
         f"{results['train_seconds']:.0f}s of training) -> {run}/results.json", progress)
    return {**results, "run_dir": str(run), "rank": d.rank}
