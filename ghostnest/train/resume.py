"""The resume point of a run: ``RUN_DIR/last.state.pt``, read into one :class:`ResumeState` and written from it.

The file holds the weights (a weight-EMA run's EMA weights too, and a QAT run's activation ranges), optimizer,
scheduler, grad-scaler and RNG states, the number of finished epochs, the best validation top-1 so far (and whether
the live or the EMA weights reached it) and the metrics rows. A run stopped inside an epoch (SIGTERM, ``checkpoint_steps``)
also holds ``mid_epoch``: the step, the running loss sum, the seconds spent and every rank's RNG state, so the rest
of the epoch runs exactly as it would have. Runs written before the state file held the weights take them from
``last.safetensors`` (the legacy path of :func:`load_resume_state`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import load_into, read_checkpoint, save_state
from .metrics import read_metrics
from .qat import load_observer_state, observer_state


@dataclass
class ResumeState:
    """Where training stands: what a fresh run starts from, and what ``last.state.pt`` restores."""

    epoch: int = 0  # finished epochs
    best_top1: float = -1.0
    best_epoch: int = 0
    rows: list[dict] = field(default_factory=list)  # metrics.csv's rows, one per finished epoch
    mid_epoch: dict | None = None  # stopped inside epoch ``epoch + 1``: step, loss_sum, seconds, rng, world_size
    best_weights: str = "live"  # which weights best.safetensors holds: the model's ("live") or its EMA's ("ema")


def read_state(run: Path, mmap: bool = False) -> dict:
    """The contents of ``run/last.state.pt`` (``mmap``: tensors left on disk until used); ``ValueError`` for a
    corrupt or truncated file."""
    try:
        return torch.load(Path(run) / "last.state.pt", map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise ValueError(f"{run}/last.state.pt is corrupt or truncated ({type(exc).__name__}); the run cannot be "
                         f"resumed: evaluate {run}/best.safetensors or train again") from None


def finished_epochs(run: Path) -> int:
    """The number of finished epochs the resume point ``run/last.state.pt`` holds (read without loading weights)."""
    return int(read_state(run, mmap=True)["epoch"])


def load_resume_state(run: Path, model, opt, sched, scaler, meta: dict, ema=None) -> ResumeState:
    """Restore ``model``/``opt``/``sched``/``scaler`` (and the weight EMA ``ema``) from ``run/last.state.pt`` and
    return the rest of it."""
    state = read_state(run)
    if "model" in state:  # the state file alone is the resume point (its weights were saved with it)
        load_into(model, state["model"], run / "last.state.pt", meta)
    else:  # legacy: runs written before the state file held the weights
        tensors, wmeta = read_checkpoint(run / "last.safetensors")
        if wmeta.get("epoch") != state["epoch"]:
            raise ValueError(f"{run}/last.safetensors (epoch {wmeta.get('epoch')}) and last.state.pt (epoch "
                             f"{state['epoch']}) disagree; the run was cut off between the two writes. Resume "
                             "is not safe: evaluate best.safetensors or train again")
        load_into(model, tensors, run / "last.safetensors", wmeta)
    if state.get("qat_observers") is not None and observer_state(model) is not None:
        load_observer_state(model, state["qat_observers"])  # a QAT run's activation ranges (older runs: observed anew)
    if ema is not None:
        if state.get("ema") is None:
            raise ValueError(f"{run}/last.state.pt holds no EMA weights although the run's config has ema_decay; the "
                             "run cannot be resumed exactly: evaluate its best.safetensors or train again")
        ema.module.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    epoch = state["epoch"]
    rows = state.get("rows", [r for r in read_metrics(run / "metrics.csv") if r["epoch"] <= epoch])
    mid = state.get("mid_epoch", state.get("partial"))  # "partial": the key of runs written before 2026-12
    return ResumeState(epoch, state["best_top1"], state["best_epoch"], rows, mid, state.get("best_weights", "live"))


def save_resume_state(path: Path, resume: ResumeState, model, opt, sched, scaler, world: int, ema=None) -> None:
    """Write ``resume`` and the training state to ``path`` atomically (the file layout old runs also have)."""
    save_state(path, {
        "epoch": resume.epoch, "mid_epoch": resume.mid_epoch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "qat_observers": observer_state(model),  # None unless a QAT run (ghostnest.train.qat)
        "ema": None if ema is None else {k: v.detach().cpu() for k, v in ema.module.state_dict().items()},
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
        "best_top1": resume.best_top1, "best_epoch": resume.best_epoch, "best_weights": resume.best_weights,
        "rows": resume.rows, "world_size": world,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })
