"""The training engine, top to bottom (airbench / torchvision reference style).

:func:`fit` runs the epochs; :func:`train_one_epoch` is one pass of
``to device -> preprocess -> mix -> autocast forward -> loss -> backward -> step``; after each epoch
:func:`.evaluate.evaluate` measures loss, top-1 and top-5 on the validation split. Everything they need is in one :class:`RunContext` (built by :mod:`.trainer`).

The same engine runs in one process or as one rank of ``torchrun`` (docs/distributed.md): ``step_model`` is the
model wrapped in DDP, each rank takes its share of every global batch, metrics are summed over the ranks and rank 0
alone writes. SIGTERM / SIGINT save a checkpoint at the next step boundary (every 10th step under torchrun, where
agreeing on the flag is a collective); resume continues exactly, even inside an epoch (:mod:`.resume`).
"""
from __future__ import annotations

import contextlib
import errno
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import ImageData, TrainPipeline
from ..data.loader import epoch_seeds
from .checkpoint import load_into, read_checkpoint, save_weights
from .config import TrainConfig, config_to_dict
from .distributed import Dist
from .evaluate import evaluate
from .metrics import plot_curves, write_metrics
from .optim import clip_gradients, loss_fn, set_step_lr, warmup_factor
from .progress import StepLog, eta_seconds
from .resume import ResumeState, save_resume_state
from .rundir import write_results
from .stop import StopRequest
from .tensorboard import open_tensorboard

LOSS_EVERY = 10  # steps between the running-loss check (a collective under torchrun), and the stop-flag check there


class TrainingDiverged(ValueError):
    """The loss became NaN/inf; training stopped and the last good checkpoint was kept."""


@dataclass
class RunContext:
    """One training run: configuration, where it writes, the model and its optimizer, the data, the progress."""

    cfg: TrainConfig
    run: Path
    dist: Dist
    stop: StopRequest
    data: ImageData
    pipe: TrainPipeline
    model: torch.nn.Module  # the bare model: checkpoints and evaluation
    step_model: torch.nn.Module  # what the training step calls: the model in DDP and/or torch.compile
    opt: torch.optim.Optimizer
    sched: object
    scaler: torch.amp.GradScaler
    autocast: Callable
    meta: dict  # checkpoint metadata: model, classes, input size, mean/std, ...
    params: int
    resume: ResumeState
    progress: bool
    ema: torch.nn.Module | None = None  # timm's ModelEmaV3 of ``model`` (``ema_decay``), or None
    saved: str | None = None  # the last resume point written ("epoch 3", "epoch 4, step 20"), None before the first
    input_wait: tuple[float, float] = (0.0, 0.0)  # the last epoch: seconds waiting for batches, seconds in the loop
    loop_steps: int = 0  # the last epoch: steps this process ran in that loop (fewer after a mid-epoch resume)
    input_hint_given: bool = False

    def log(self, msg: str) -> None:
        if self.progress:
            tqdm.write(msg, file=sys.stderr)

    def title(self) -> str:
        return f"{self.cfg.recipe}: {self.cfg.model} on {self.cfg.dataset}"


def train_one_epoch(ctx: RunContext, epoch: int, lr: float) -> tuple[float | None, int, float]:
    """Train epoch ``epoch`` (0-based), from where a mid-epoch resume point left it.

    Returns (mean training loss, 0, start time), or (None, step, start time) when a stop signal ended the epoch at
    ``step`` (its checkpoint is saved)."""
    cfg, dist, pipe = ctx.cfg, ctx.dist, ctx.pipe
    mid, ctx.resume.mid_epoch = ctx.resume.mid_epoch, None
    step = first = mid["step"] if mid else 0
    t0 = time.time() - (mid["seconds"] if mid else 0.0)
    _seed_epoch(ctx, epoch, mid)
    ctx.model.train()
    loss_sum = torch.full((), mid["loss_sum"] if mid else 0.0, device=dist.device)
    n = len(pipe.batches)
    bar = tqdm(total=n, initial=step, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, file=sys.stderr,
               disable=not (ctx.progress and sys.stderr.isatty()), dynamic_ncols=True)  # no bar in a log file
    steplog = StepLog(ctx.progress and not sys.stderr.isatty(), ctx.log, epoch, cfg.epochs, n, step, cfg.batch_size)
    order_seed, worker_seed, _ = epoch_seeds(cfg.seed, epoch, dist.rank)
    wait, t_loop = [0.0], time.perf_counter()
    warming = cfg.warmup_epochs > epoch
    for images, labels in _timed(pipe.batches.epoch(order_seed, worker_seed, skip=step), wait):
        x, y = pipe.preprocess(images), labels  # to the device, float, resized, normalised
        if pipe.mix is not None:
            x, y = pipe.mix(x, y)
        update = epoch * n + step  # optimizer steps before this one, over the whole run
        if warming:
            set_step_lr(ctx.opt, ctx.sched, warmup_factor(cfg, update, n))
        loss_sum += _forward_backward(ctx, x, y)
        if cfg.clip_grad is not None:
            clip_gradients(cfg, ctx.model, ctx.opt, ctx.scaler)
        ctx.scaler.step(ctx.opt)
        ctx.scaler.update()
        if ctx.ema is not None:
            ctx.ema.update(ctx.model, step=update + 1)
        step += 1
        bar.update(1)
        if step % LOSS_EVERY == 0 or step == n:
            running = dist.sum([loss_sum.item()])[0] / dist.world / step  # progress and the NaN check, all ranks
            if not math.isfinite(running):
                raise _diverged(f"loss became {running} in epoch {epoch + 1} (step {step})", ctx)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}")
            steplog.loss = running
        steplog.update(step)  # a line every LOG_EVERY_S seconds in a log file
        if step < n:
            stopping, every = _stop_or_save(ctx, step)
            if stopping or every:
                save_checkpoint(ctx, epoch, step, loss_sum, time.time() - t0)
            if stopping:
                bar.close()
                return None, step, t0
    bar.close()
    if warming:
        set_step_lr(ctx.opt, ctx.sched, 1.0)  # the scheduler steps from its own rates
    mean_loss = dist.sum([loss_sum.item()])[0] / dist.world / max(step, 1)  # (waits for the device's last step)
    ctx.input_wait, ctx.loop_steps = (wait[0], time.perf_counter() - t_loop), step - first
    return mean_loss, 0, t0


def _forward_backward(ctx: RunContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradients of the mean loss over the batch ``x``, ``y`` (this rank's share of the global batch), in
    ``accum_steps`` equal micro-batches: each one's mean loss divided by ``accum_steps``, so their gradients add up to
    the whole batch's (with label smoothing and mixed targets alike, the loss being a mean over images). Under DDP
    only the last micro-batch synchronises the gradients (``no_sync`` before it). Returns the batch's loss."""
    cfg = ctx.cfg
    k = cfg.accum_steps
    ctx.opt.zero_grad(set_to_none=True)
    if k == 1:
        with ctx.autocast():
            logits = ctx.step_model(x)
        loss = loss_fn(logits, y, cfg.label_smoothing)
        ctx.scaler.scale(loss).backward()  # DDP averages the gradients over the ranks here
        return loss.detach()
    total = torch.zeros((), device=x.device)
    no_sync = getattr(ctx.step_model, "no_sync", None) if ctx.dist.enabled else None
    for i, (xi, yi) in enumerate(zip(x.chunk(k), y.chunk(k), strict=True)):
        with no_sync() if no_sync is not None and i < k - 1 else contextlib.nullcontext():
            with ctx.autocast():
                logits = ctx.step_model(xi)
            loss = loss_fn(logits, yi, cfg.label_smoothing) / k
            ctx.scaler.scale(loss).backward()  # DDP averages over the ranks at the last micro-batch
        total += loss.detach()
    return total


def _timed(batches, wait: list[float]):
    """Yield from ``batches``, adding to ``wait[0]`` the seconds the training loop spent waiting for each batch."""
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        wait[0] += time.perf_counter() - t
        yield item


INPUT_WAIT_HINT = 0.3  # share of an epoch's training loop spent waiting for batches above which the log says so


def _input_note(ctx: RunContext, epoch: int) -> str:
    """``  input wait N%`` for the epoch log when the loop waited for its batches at least 10% of the time; the first
    time it is at least :data:`INPUT_WAIT_HINT` with per-image augmentation, a line on how to feed it faster."""
    waited, loop = ctx.input_wait
    share = waited / loop if loop > 0 else 0.0
    if share >= INPUT_WAIT_HINT and ctx.pipe.augment is not None and not ctx.input_hint_given:
        ctx.input_hint_given = True
        where = (f"--set workers=N (now {ctx.cfg.workers}; this machine has {os.cpu_count()} CPU cores) or "
                 "--set augment_on=device" if ctx.cfg.augment_on == "workers" else
                 "a larger --set augment_group (images per draw of the augmentation's random parameters)")
        ctx.log(f"the training loop waited for its input batches {share:.0%} of epoch {epoch}: the per-image "
                f"augmentation is slower than the model's steps; {where} may feed it faster (docs/training.md)")
    return f"  input wait {share:.0%}" if share >= 0.1 else ""


def _seed_epoch(ctx: RunContext, epoch: int, mid: dict | None) -> None:
    """Dropout, mixing (and augmentation without workers) of this epoch on this rank: the RNG exactly where a stop
    left it, else seeded from (seed, epoch, rank)."""
    dist = ctx.dist
    if mid and mid["world_size"] == dist.world:
        torch.set_rng_state(mid["rng"][dist.rank]["cpu"])
        if dist.device.type == "cuda" and mid["rng"][dist.rank]["cuda"] is not None:
            torch.cuda.set_rng_state(mid["rng"][dist.rank]["cuda"], dist.device)
        return
    if mid:
        ctx.log(f"resuming inside epoch {epoch + 1} at another world size ({mid['world_size']} -> {dist.world}): "
                "same batches, new random draws for the rest of the epoch")
    torch.manual_seed(epoch_seeds(ctx.cfg.seed, epoch, dist.rank)[2] + 7919 * (mid["step"] if mid else 0))


def _stop_or_save(ctx: RunContext, step: int) -> tuple[bool, bool]:
    """(stop now, save now for ``checkpoint_steps``) after ``step``. Under torchrun the ranks agree on the stop flag
    with a collective, so they ask only at the steps where the loss is summed anyway, and at checkpoint steps."""
    every = bool(ctx.cfg.checkpoint_steps) and step % ctx.cfg.checkpoint_steps == 0
    if ctx.dist.enabled and not (every or step % LOSS_EVERY == 0):
        return False, False
    return ctx.stop.requested(ctx.dist), every


def save_checkpoint(ctx: RunContext, done: int, step: int = 0, loss_sum=None, seconds: float = 0.0) -> None:
    """last.safetensors, then last.state.pt (the resume point) after epoch ``done`` [+ ``step`` steps]."""
    dist, mid = ctx.dist, None
    if step:  # inside an epoch: what the rest of it needs to run exactly as it would have
        rng = {"cpu": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(dist.device) if dist.device.type == "cuda" else None}
        mid = {"step": step, "loss_sum": dist.sum([loss_sum.item()])[0] / dist.world, "seconds": seconds,
               "rng": dist.gather(rng), "world_size": dist.world}
    if not dist.main:
        return
    save_weights(ctx.run / "last.safetensors", ctx.model, {**ctx.meta, "epoch": done, "step": step,
                                                            "epoch_steps": len(ctx.pipe.batches)})
    save_resume_state(ctx.run / "last.state.pt", replace(ctx.resume, epoch=done, mid_epoch=mid), ctx.model, ctx.opt,
                      ctx.sched, ctx.scaler, dist.world, ctx.ema)
    ctx.saved = f"epoch {done}" + (f", step {step}" if step else "")


def fit(ctx: RunContext, stop_after: int | None = None) -> dict:
    """Train from ``ctx.resume`` to ``cfg.epochs``, then test the best checkpoint; results.json's dict. A stop
    signal (or ``stop_after`` epochs) returns early with ``stopped_at``. With ``log: [csv, tensorboard]`` rank 0
    also writes TensorBoard event files (:mod:`.tensorboard`)."""
    board = open_tensorboard(ctx)
    try:
        res = _fit(ctx, stop_after, board)
        if board is not None and "test_top1" in res:
            board.final(config_to_dict(ctx.cfg), res, ctx.cfg.epochs)
        return res
    finally:
        if board is not None:
            board.close()


def _fit(ctx: RunContext, stop_after: int | None, board) -> dict:
    cfg, dist, state = ctx.cfg, ctx.dist, ctx.resume
    start = state.epoch
    try:
        for epoch in range(start, cfg.epochs):
            lr = _epoch_lr(ctx, epoch)
            train_loss, stopped_step, t0 = train_one_epoch(ctx, epoch, lr)
            if stopped_step:
                return _stopped(ctx, epoch, stopped_step)
            ctx.sched.step()
            done = epoch + 1
            row = {"epoch": done, "lr": lr, "train_loss": train_loss}
            for prefix, model in (("", ctx.model), ("ema_", ctx.ema.module if ctx.ema is not None else None)):
                if model is None:
                    continue
                dist.broadcast_buffers(model)  # rank 0's BatchNorm statistics, as DDP's next forward would send
                val = evaluate(model, ctx.pipe.val_shard, ctx.pipe.eval_preprocess, cfg.eval_batch_size,
                               ctx.autocast, ctx.data.num_classes, reduce=dist.sum)
                if not math.isfinite(val["loss"]):
                    raise _diverged(f"{prefix.replace('_', ' ')}validation loss became {val['loss']} in epoch "
                                    f"{done}", ctx)
                row.update({f"{prefix}val_loss": val["loss"], f"{prefix}val_top1": val["top1"],
                            f"{prefix}val_top5": val["top5"]})
            row["seconds"] = round(time.time() - t0, 3)
            if board is not None:  # before the resume point: a kill in between repeats the epoch, purged on resume
                board.epoch(row, ctx.loop_steps * ctx.pipe.batches.batch_size * dist.world, ctx.input_wait[1],
                            ctx.input_wait[0])
            is_best = _record_epoch(ctx, row)
            eta = eta_seconds([r["seconds"] for r in state.rows[start - done:]], cfg.epochs - done)
            ema_note = (f"  ema val_top1 {row['ema_val_top1']:.2f}%" if ctx.ema is not None else "")
            ctx.log(f"epoch {done}/{cfg.epochs}  lr {lr:.2e}  train_loss {train_loss:.4f}  val_loss "
                    f"{row['val_loss']:.4f}  val_top1 {row['val_top1']:.2f}%  val_top5 {row['val_top5']:.2f}%"
                    f"{ema_note}  {row['seconds']:.1f}s{_input_note(ctx, done)}"
                    f"{_best_note(ctx) if is_best else ''}  ETA {eta / 60:.1f} min")
            if done < cfg.epochs and ctx.stop.requested(dist):
                return _stopped(ctx, done)
            if stop_after is not None and stop_after <= done < cfg.epochs:
                ctx.log(f"stopped after epoch {done}; continue with: ghostnest train --resume {ctx.run}")
                return {"stopped_at": done, "run_dir": str(ctx.run), "rank": dist.rank}
    except KeyboardInterrupt:  # a second Ctrl-C: no time to save
        print(f"interrupted; the last checkpoint is kept. Continue with: ghostnest train --resume {ctx.run}",
              file=sys.stderr)
        raise
    finally:
        if state.rows and dist.main:
            with contextlib.suppress(Exception):
                plot_curves(ctx.run / "curves.png", state.rows, ctx.title())
    return evaluate_best(ctx) if dist.main else {"run_dir": str(ctx.run), "rank": dist.rank}


def _epoch_lr(ctx: RunContext, epoch: int) -> float:
    """The learning rate of epoch ``epoch``'s last optimizer step (the highest group's, with ``layer_decay``): the
    scheduled one, times the warmup factor in warmup epochs."""
    n = len(ctx.pipe.batches)
    return max(ctx.sched.get_last_lr()) * warmup_factor(ctx.cfg, (epoch + 1) * n - 1, n)


def _best_note(ctx: RunContext) -> str:
    return "  *best*" + (f" ({ctx.resume.best_weights} weights)" if ctx.ema is not None else "")


def _record_epoch(ctx: RunContext, row: dict) -> bool:
    """Best weights (if best), the resume point, metrics.csv; is it the best epoch so far? With an EMA, the best
    of the live and the EMA weights competes (the live ones on a tie), and the checkpoint says which it holds."""
    state, done = ctx.resume, row["epoch"]
    weights, top1 = "live", row["val_top1"]
    if ctx.ema is not None and row["ema_val_top1"] > top1:
        weights, top1 = "ema", row["ema_val_top1"]
    is_best = top1 > state.best_top1
    if is_best:
        state.best_top1, state.best_epoch, state.best_weights = top1, done, weights
        if ctx.dist.main:
            model = ctx.ema.module if weights == "ema" else ctx.model
            extra = {"weights": weights} if ctx.ema is not None else {}
            save_weights(ctx.run / "best.safetensors", model, {**ctx.meta, "epoch": done, "val_top1": top1, **extra})
    state.rows.append(row)
    state.epoch = done
    save_checkpoint(ctx, done)  # the resume point: a kill before it repeats this epoch, after it never
    if ctx.dist.main:
        write_metrics(ctx.run / "metrics.csv", state.rows)
    return is_best


def _stopped(ctx: RunContext, done: int, step: int = 0) -> dict:
    where = f"epoch {done + 1}, step {step}/{len(ctx.pipe.batches)}" if step else f"the end of epoch {done}"
    if ctx.dist.main:
        print(f"{ctx.stop.name}: saved a checkpoint at {where}; continue with: ghostnest train --resume {ctx.run}",
              file=sys.stderr)
    return {"stopped_at": done, "step": step, "signal": ctx.stop.name, "run_dir": str(ctx.run),
            "rank": ctx.dist.rank}


class WriteFailed(OSError):
    """A file of the run could not be written (disk full, read-only, no permission); training stopped, the last
    resume point is kept. The message is the one line ``ghostnest train`` prints."""


FIXES = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (the disk quota is full)",
         errno.EROFS: "make the file system writable", errno.EACCES: "fix the folder's permissions",
         errno.EPERM: "fix the folder's permissions", errno.EFBIG: "raise the file size limit (ulimit -f)"}


def write_failed(run: Path, exc: OSError, saved: str | None) -> WriteFailed:
    """The one-line error for ``exc`` (a :class:`ghostnest.fileio.WriteError`) in run ``run``: the file, the cause,
    what is kept (``saved``: the last resume point written, None if none) and how to go on."""
    cause = exc.strerror or str(exc)
    fix = FIXES.get(exc.errno, "remove the cause")
    where = exc.filename or run
    if saved is None:
        return WriteFailed(f"could not write {where}: {cause}; training stopped before any checkpoint was saved. "
                           f"{fix[0].upper()}{fix[1:]} and start the run again (remove {run} or choose another --out)")
    return WriteFailed(f"could not write {where}: {cause}; training stopped and the last good checkpoint "
                       f"({run}/last.state.pt, {saved}) is kept. {fix[0].upper()}{fix[1:]} and continue with: "
                       f"ghostnest train --resume {run}")


def _diverged(what: str, ctx: RunContext) -> TrainingDiverged:
    rows = ctx.resume.rows
    kept = (f"the last good checkpoint ({ctx.run}/last.safetensors, epoch {rows[-1]['epoch']}) is kept" if rows
            else "no epoch had finished, so there is no checkpoint to keep")
    return TrainingDiverged(f"{what}: training diverged and was stopped; {kept}. Start a new run with a lower "
                            "learning rate (--set lr=...) or without fp16 (--set amp=fp32)")


def evaluate_best(ctx: RunContext) -> dict:
    """Test accuracy of best.safetensors (rank 0), written to results.json."""
    cfg, dist, state = ctx.cfg, ctx.dist, ctx.resume
    tensors, _ = read_checkpoint(ctx.run / "best.safetensors")
    load_into(ctx.model, tensors, ctx.run / "best.safetensors", ctx.meta)
    test = evaluate(ctx.model, ctx.data.test, ctx.pipe.eval_preprocess, cfg.eval_batch_size, ctx.autocast,
                    ctx.data.num_classes)
    results = {
        "model": cfg.model, "dataset": cfg.dataset, "recipe": cfg.recipe, "num_classes": ctx.data.num_classes,
        "params": ctx.params, "test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["loss"],
        "best_epoch": state.best_epoch, "best_val_top1": state.best_top1, "epochs": cfg.epochs,
        "val_is_test": cfg.val_on_test, "image_size": ctx.pipe.image_size, "device": str(dist.device),
        "world_size": dist.world, "global_batch": cfg.batch_size, "sync_bn": cfg.sync_bn and dist.world > 1,
        **({"best_weights": state.best_weights} if ctx.ema is not None else {}),
        "train_seconds": round(sum(r["seconds"] for r in state.rows), 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_results(ctx.run, results)
    plot_curves(ctx.run / "curves.png", state.rows, ctx.title(), test_top1=test["top1"])  # now with the test top-1
    ctx.log(f"test top-1 {test['top1']:.2f}%  top-5 {test['top5']:.2f}%  (best epoch {state.best_epoch}, "
            f"{results['train_seconds']:.0f}s of training) -> {ctx.run}/results.json")
    return {**results, "run_dir": str(ctx.run), "rank": dist.rank}
