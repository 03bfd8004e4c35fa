"""The run directory: its name, the checks before a run starts or resumes, config.yaml and results.json.

    RUN_DIR/config.yaml        resolved configuration (model, dataset, num_classes, recipe, ...)
    RUN_DIR/metrics.csv        one row per epoch (:mod:`.metrics`)
    RUN_DIR/last.safetensors   weights after the latest epoch (or stop)
    RUN_DIR/last.state.pt      the resume point (:mod:`.resume`)
    RUN_DIR/best.safetensors   weights of the best validation top-1
    RUN_DIR/results.json       at the end: test accuracy of the best checkpoint, params, best_epoch, ...
    RUN_DIR/curves.png         training curves
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import yaml

from ..fileio import atomic_write_text
from .config import DERIVED_KEYS, TrainConfig, config_from_dict, config_to_dict
from .resume import finished_epochs


def default_run_dir(recipe: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(recipe).stem}-{stamp}"


def open_run(cfg: TrainConfig | None, out, resume, resume_epochs: int | None,
             restart_unstarted: bool) -> tuple[TrainConfig, Path]:
    """(configuration, run directory) of a new run in ``out`` or of the run ``resume`` continues; nothing is
    written. ``restart_unstarted``: ``out`` may hold a run that never saved a checkpoint (it starts again)."""
    if resume is None:
        run = Path(out) if out is not None else default_run_dir(cfg.recipe)
        if (run / "config.yaml").exists() and not (restart_unstarted and not (run / "last.state.pt").exists()):
            if not (run / "last.state.pt").exists():
                raise ValueError(f"{run} holds a run that saved no checkpoint yet: if it is still running choose "
                                 "another --out; if it stopped, add --auto-resume to start it again there")
            raise ValueError(f"{run} already holds a run; continue it with --resume {run} or choose another --out")
        return cfg, run
    run = Path(resume)
    if not (run / "config.yaml").is_file() or not (run / "last.state.pt").is_file():
        raise FileNotFoundError(f"{run} is not a resumable run: it needs config.yaml, last.safetensors and "
                                "last.state.pt (written after the first finished epoch)")
    cfg = read_run_config(run)
    finished = (run / "results.json").is_file()
    if resume_epochs is not None:
        cfg = config_from_dict({**config_to_dict(cfg), "epochs": resume_epochs})  # checked as any recipe value
        done = finished_epochs(run)
        if cfg.epochs < done or (finished and cfg.epochs == done):
            raise ValueError(f"{run} has finished {done} epoch(s), so --set epochs={cfg.epochs} trains nothing more; "
                             f"pass --set epochs=N with N > {done} to train longer (the run is left as it is)")
    elif finished:
        raise ValueError(f"{run} has finished (results.json exists); to train longer pass --set epochs=N")
    return cfg, run


def read_run_config(run: Path) -> TrainConfig:
    """The configuration a run recorded in ``run/config.yaml`` (its derived keys left out): the one reader of that
    file. ``FileNotFoundError`` without it, ``ValueError`` naming what is wrong with it."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; is {run} a ghostnest run directory?")
    try:
        saved = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not a mapping of key: value")
    try:
        return config_from_dict({k: v for k, v in saved.items() if k not in DERIVED_KEYS})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def write_config(run: Path, resolved: dict) -> None:
    atomic_write_text(run / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))


def write_results(run: Path, results: dict) -> None:
    atomic_write_text(run / "results.json", json.dumps(results, indent=2) + "\n")


def auto_resume_plan(out, resume) -> str:
    """What ``--auto-resume --out RUN_DIR`` does: ``"done"`` (results.json exists), ``"resume"`` (a checkpoint
    exists) or ``"start"``. ``ValueError`` without ``out`` or with ``resume``."""
    if resume or not out:
        raise ValueError("--auto-resume needs --out RUN_DIR (not --resume): it continues RUN_DIR if it holds a "
                         "checkpoint, else starts it")
    run = Path(out)
    if (run / "results.json").is_file():
        return "done"
    return "resume" if (run / "last.state.pt").is_file() else "start"
