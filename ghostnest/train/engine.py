"""The training engine, top to bottom (airbench / torchvision reference style).

:func:`fit` runs the epochs; :func:`train_one_epoch` is one pass of
``to device -> preprocess -> mix -> autocast forward -> loss -> backward -> step``; :func:`evaluate` measures loss,
top-1 and top-5. Everything they need is in one :class:`RunContext` (built by :mod:`.trainer`).

The same engine runs in one process or as one rank of ``torchrun`` (docs/distributed.md): ``step_model`` is the
model wrapped in DDP, each rank takes its share of every global batch, metrics are summed over the ranks and rank 0
alone writes. SIGTERM / SIGINT save a checkpoint at the next step boundary (every 10th step under torchrun, where
agreeing on the flag is a collective); resume continues exactly, even inside an epoch (:mod:`.resume`).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import ImageData, TrainPipeline, eval_batches
from ..data.loader import ToModelInput, epoch_seed
from .checkpoint import load_into, read_checkpoint, save_weights
from .config import TrainConfig
from .distributed import Dist
from .metrics import plot_curves, write_metrics
from .optim import loss_fn
from .progress import StepLog, eta_seconds
from .resume import ResumeState, save_resume_state
from .rundir import write_results
from .stop import StopRequest

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
    input_wait: tuple[float, float] = (0.0, 0.0)  # the last epoch: seconds waiting for batches, seconds in the loop
    input_hint_given: bool = False

    def log(self, msg: str) -> None:
        if self.progress:
            tqdm.write(msg, file=sys.stderr)

    def title(self) -> str:
        return f"{self.cfg.recipe}: {self.cfg.model} on {self.cfg.dataset}"


@torch.no_grad()
def evaluate(model, split, preprocess: ToModelInput, batch_size: int, autocast, num_classes: int,
             with_preds: bool = False, reduce=None):
    """Mean cross entropy (no smoothing), top-1 and top-5 accuracy in percent; optionally the predictions.

    ``reduce`` (``Dist.sum``) adds up the sums of every rank's shard of the data set before the division."""
    model.eval()
    k = min(5, num_classes)
    device = preprocess.device
    loss_sum, top1, top5 = (torch.zeros((), device=device) for _ in range(3))
    preds = []
    for images, labels in eval_batches(split, batch_size, device):
        with autocast():
            logits = model(preprocess(images))
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


def train_one_epoch(ctx: RunContext, epoch: int, lr: float) -> tuple[float | None, int, float]:
    """Train epoch ``epoch`` (0-based), from where a mid-epoch resume point left it.

    Returns (mean training loss, 0, start time), or (None, step, start time) when a stop signal ended the epoch at
    ``step`` (its checkpoint is saved)."""
    cfg, dist, pipe = ctx.cfg, ctx.dist, ctx.pipe
    mid, ctx.resume.mid_epoch = ctx.resume.mid_epoch, None
    step = mid["step"] if mid else 0
    t0 = time.time() - (mid["seconds"] if mid else 0.0)
    _seed_epoch(ctx, epoch, mid)
    ctx.model.train()
    loss_sum = torch.full((), mid["loss_sum"] if mid else 0.0, device=dist.device)
    n = len(pipe.batches)
    bar = tqdm(total=n, initial=step, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, file=sys.stderr,
               disable=not (ctx.progress and sys.stderr.isatty()), dynamic_ncols=True)  # no bar in a log file
    steplog = StepLog(ctx.progress and not sys.stderr.isatty(), ctx.log, epoch, cfg.epochs, n, step, cfg.batch_size)
    order_seed, worker_seed = epoch_seed(cfg.seed, epoch) + 1, epoch_seed(cfg.seed, epoch) + 2 * dist.rank + 1
    wait, t_loop = [0.0], time.perf_counter()
    for images, labels in _timed(pipe.batches.epoch(order_seed, worker_seed, skip=step), wait):
        x, y = pipe.preprocess(images), labels  # to the device, float, resized, normalised
        if pipe.mix is not None:
            x, y = pipe.mix(x, y)
        with ctx.autocast():
            logits = ctx.step_model(x)
        loss = loss_fn(logits, y, cfg.label_smoothing)
        ctx.opt.zero_grad(set_to_none=True)
        ctx.scaler.scale(loss).backward()  # DDP averages the gradients over the ranks here
        ctx.scaler.step(ctx.opt)
        ctx.scaler.update()
        loss_sum += loss.detach()
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
    mean_loss = dist.sum([loss_sum.item()])[0] / dist.world / max(step, 1)  # (waits for the device's last step)
    ctx.input_wait = (wait[0], time.perf_counter() - t_loop)
    return mean_loss, 0, t0


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
    torch.manual_seed(epoch_seed(ctx.cfg.seed, epoch) + 2 * dist.rank + 7919 * (mid["step"] if mid else 0))


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
                      ctx.sched, ctx.scaler, dist.world)


def fit(ctx: RunContext, stop_after: int | None = None) -> dict:
    """Train from ``ctx.resume`` to ``cfg.epochs``, then test the best checkpoint; results.json's dict. A stop
    signal (or ``stop_after`` epochs) returns early with ``stopped_at``."""
    cfg, dist, state = ctx.cfg, ctx.dist, ctx.resume
    start = state.epoch
    try:
        for epoch in range(start, cfg.epochs):
            lr = ctx.opt.param_groups[0]["lr"]
            train_loss, stopped_step, t0 = train_one_epoch(ctx, epoch, lr)
            if stopped_step:
                return _stopped(ctx, epoch, stopped_step)
            ctx.sched.step()
            dist.broadcast_buffers(ctx.model)  # rank 0's BatchNorm statistics, as DDP's next forward would send
            val = evaluate(ctx.model, ctx.pipe.val_shard, ctx.pipe.eval_preprocess, cfg.eval_batch_size,
                           ctx.autocast, ctx.data.num_classes, reduce=dist.sum)
            if not math.isfinite(val["loss"]):
                raise _diverged(f"validation loss became {val['loss']} in epoch {epoch + 1}", ctx)
            done = epoch + 1
            row = {"epoch": done, "lr": lr, "train_loss": train_loss, "val_loss": val["loss"],
                   "val_top1": val["top1"], "val_top5": val["top5"], "seconds": round(time.time() - t0, 3)}
            is_best = _record_epoch(ctx, row)
            eta = eta_seconds([r["seconds"] for r in state.rows[start - done:]], cfg.epochs - done)
            ctx.log(f"epoch {done}/{cfg.epochs}  lr {lr:.2e}  train_loss {train_loss:.4f}  val_loss "
                    f"{val['loss']:.4f}  val_top1 {val['top1']:.2f}%  val_top5 {val['top5']:.2f}%  "
                    f"{row['seconds']:.1f}s{_input_note(ctx, done)}{'  *best*' if is_best else ''}  ETA "
                    f"{eta / 60:.1f} min")
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


def _record_epoch(ctx: RunContext, row: dict) -> bool:
    """Best weights (if best), the resume point, metrics.csv; is it the best epoch so far?"""
    state, done = ctx.resume, row["epoch"]
    is_best = row["val_top1"] > state.best_top1
    if is_best:
        state.best_top1, state.best_epoch = row["val_top1"], done
        if ctx.dist.main:
            save_weights(ctx.run / "best.safetensors", ctx.model, {**ctx.meta, "epoch": done,
                                                                    "val_top1": row["val_top1"]})
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
        "train_seconds": round(sum(r["seconds"] for r in state.rows), 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_results(ctx.run, results)
    ctx.log(f"test top-1 {test['top1']:.2f}%  top-5 {test['top5']:.2f}%  (best epoch {state.best_epoch}, "
            f"{results['train_seconds']:.0f}s of training) -> {ctx.run}/results.json")
    return {**results, "run_dir": str(ctx.run), "rank": dist.rank}
