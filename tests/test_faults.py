"""Training that survives faults: SIGTERM / Ctrl-C save at the next step and the run resumes exactly; kill -9 at
any moment leaves a readable checkpoint and a whole metrics.csv, and resume finishes the run as if nothing had
happened (same metrics rows once each, same final weights)."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ghostnest.cli import main
from ghostnest.train import checkpoint as ckpt
from ghostnest.train import engine, resume, rundir, trainer

TINY = ["--set", "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}",
        "--set", "batch_size=16", "--set", "val_fraction=0.25", "--set", "threads=1", "--set", "epochs=3",
        "--device", "cpu", "--quiet"]
# every source of randomness a resume must line up: shuffling, per-image augmentation, Mixup/CutMix, dropout
RANDOM = ["--set", "augment=[{op: RandomCrop, size: 16, padding: 2}, {op: RandomHorizontalFlip}]",
          "--set", "mixup_alpha=0.2", "--set", "cutmix_alpha=1.0", "--set", "dataset=fake:classes=4,size=16,train=96"]
# long enough epochs (38 steps) for a signal from outside to land inside one
LONG = ["--set", "dataset=fake:classes=4,size=16,train=800,test=32", "--set", "workers=0"]


def rows(run):
    with open(Path(run) / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def same_weights(a, b):
    wa, _ = ckpt.read_checkpoint(Path(a) / "last.safetensors")
    wb, _ = ckpt.read_checkpoint(Path(b) / "last.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("sig, workers, code", [(signal.SIGTERM, 0, 0), (signal.SIGINT, 1, 130)])
def test_signal_saves_mid_epoch_and_resume_is_exact(tmp_path, monkeypatch, capsys, sig, workers, code):
    args = [*TINY, *RANDOM, "--set", f"workers={workers}"]
    assert main(["train", *args, "--out", str(tmp_path / "full")]) == 0
    real, calls = engine.loss_fn, {"n": 0}

    def signalled(*a):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2 (4 steps an epoch), step 2: as if the cluster preempted the job here
            os.kill(os.getpid(), sig)
        return real(*a)

    monkeypatch.setattr(engine, "loss_fn", signalled)
    run = tmp_path / "stopped"
    capsys.readouterr()
    assert main(["train", *args, "--out", str(run)]) == code
    err = capsys.readouterr().err
    assert f"{sig.name}: saved a checkpoint at epoch 2, step 2/4" in err and f"--resume {run}" in err
    assert calls["n"] == 6 and len(rows(run)) == 1 and not (run / "results.json").exists()
    state = torch.load(run / "last.state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["mid_epoch"]["step"] == 2
    monkeypatch.setattr(engine, "loss_fn", real)
    assert main(["train", "--resume", str(run), "--quiet", "--device", "cpu"]) == 0
    assert rows(run) == rows(tmp_path / "full")  # epochs 1-3 once each, the same numbers
    assert same_weights(run, tmp_path / "full")


DEVICE_AUGMENT = {"augment": [{"op": "RandomCrop", "size": 16, "padding": 2}, {"op": "RandomHorizontalFlip"}],
                  "augment_on": "device", "augment_group": 2}


@pytest.mark.parametrize("extra", [{}, {"qat": True}, DEVICE_AUGMENT], ids=["float", "qat", "device-augment"])
def test_checkpoint_steps_resume_inside_an_epoch(tmp_path, extra):
    from ghostnest.train import resolve_config, train

    cfg = dict(recipe="tiny", model="ghostmixnet", dataset="fake:classes=4,size=16,train=96", val_fraction=0.25,
               workers=0, epochs=2, batch_size=16, threads=1, mixup_alpha=0.2, **extra,
               model_kwargs={"widths": [8, 16, 16], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1})
    train(resolve_config(cfg), tmp_path / "full", device="cpu", progress=False)
    part = tmp_path / "part"
    real = engine.loss_fn
    calls = {"n": 0}

    def crash(*a):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2, step 4 of 4: after the step-3 checkpoint
            raise RuntimeError("power cut")
        return real(*a)

    engine.loss_fn = crash
    try:
        with pytest.raises(RuntimeError, match="power cut"):
            train(resolve_config({**cfg, "checkpoint_steps": 3}), part, device="cpu", progress=False)
    finally:
        engine.loss_fn = real
    state = torch.load(part / "last.state.pt", weights_only=True)
    assert (state["epoch"], state["mid_epoch"]["step"]) == (1, 3)
    train(None, resume=part, device="cpu", progress=False)
    assert rows(part) == rows(tmp_path / "full") and same_weights(part, tmp_path / "full")


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs (no ``except Exception`` catches it)."""


def test_a_crash_between_any_two_writes_loses_nothing(tmp_path, monkeypatch):
    """Stop the run before each of its file writes in turn (each write itself is atomic): resume always ends with
    every epoch once in metrics.csv and the uninterrupted run's weights."""
    from ghostnest.train import resolve_config, train

    cfg = dict(recipe="tiny", model="ghostmixnet", dataset="fake:classes=4,size=16,train=64", val_fraction=0.25,
               workers=0, epochs=2, batch_size=16, threads=1, mixup_alpha=0.2,
               model_kwargs={"widths": [8, 16, 16], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1})
    writes = {"n": 0, "crash_at": None}

    def counted(fn):
        def write(*a, **k):
            writes["n"] += 1
            if writes["n"] == writes["crash_at"]:
                raise Crash
            return fn(*a, **k)
        return write

    for module in (engine, resume, rundir, trainer):  # every module of the engine that writes a file
        for name in ("save_weights", "save_state", "write_metrics", "atomic_write_text"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counted(getattr(module, name)))
    train(resolve_config(cfg), tmp_path / "full", device="cpu", progress=False)
    total = writes["n"]
    assert total >= 8  # config, 2 x (best?, last, state, metrics), results
    resumed = 0
    for k in range(2, total + 1):
        run = tmp_path / f"crash{k}"
        writes.update(n=0, crash_at=k)
        with pytest.raises(Crash):
            train(resolve_config(cfg), run, device="cpu", progress=False)
        writes["crash_at"] = None
        if not (run / "last.state.pt").exists():  # before the first checkpoint: nothing to resume
            assert not (run / "metrics.csv").exists()
            continue
        if (run / "results.json").exists():
            continue
        train(None, resume=run, device="cpu", progress=False)
        assert rows(run) == rows(tmp_path / "full") and same_weights(run, tmp_path / "full"), k
        resumed += 1
    assert resumed >= 4


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "full"
    assert main(["train", *TINY, *LONG, "--out", str(out)]) == 0
    return out


def start(run, *extra):
    return subprocess.Popen([sys.executable, "-m", "ghostnest", "train", *TINY, *LONG, "--out", str(run), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc, run, timeout=600):  # generous: a loaded machine may take minutes
    deadline = time.time() + timeout
    while not (run / "last.state.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)


def test_kill9_mid_epoch_then_resume(tmp_path, uninterrupted):
    run = tmp_path / "run"
    proc = start(run)
    try:
        wait_for_checkpoint(proc, run)  # epoch 1 is saved; epoch 2 is running
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL and not (run / "results.json").exists()
    # whatever the moment: the checkpoint is whole and metrics.csv has whole lines only
    state = torch.load(run / "last.state.pt", weights_only=True)
    assert state["epoch"] in (1, 2) and state["mid_epoch"] is None
    ckpt.read_checkpoint(run / "last.safetensors")
    lines = (run / "metrics.csv").read_text().split("\n")
    assert lines[-1] == "" and all(len(line.split(",")) == 7 for line in lines[:-1])
    assert main(["train", "--resume", str(run), "--quiet", "--device", "cpu"]) == 0
    assert [r["epoch"] for r in rows(run)] == ["1", "2", "3"]
    assert rows(run) == rows(uninterrupted) and same_weights(run, uninterrupted)


def test_sigterm_from_outside_exits_0_and_resumes(tmp_path, uninterrupted, capsys):
    """A preempted job script, requeued: the same command (with --auto-resume) starts, continues, finishes."""
    run = tmp_path / "run"
    proc = start(run, "--auto-resume")
    try:
        wait_for_checkpoint(proc, run)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM: saved a checkpoint at" in err and f"ghostnest train --resume {run}" in err
    assert not (run / "results.json").exists()
    assert main(["train", *TINY, *LONG, "--out", str(run), "--auto-resume"]) == 0
    assert rows(run) == rows(uninterrupted) and same_weights(run, uninterrupted)
    capsys.readouterr()
    assert main(["train", *TINY, *LONG, "--out", str(run), "--auto-resume"]) == 0  # requeued once too often
    assert "finished earlier" in capsys.readouterr().out and rows(run) == rows(uninterrupted)
    # killed before its first checkpoint: config.yaml alone; --auto-resume starts it again (without: refused)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text((run / "config.yaml").read_text())
    assert main(["train", *TINY, *LONG, "--set", "epochs=1", "--out", str(fresh)]) == 2
    assert main(["train", *TINY, *LONG, "--set", "epochs=1", "--out", str(fresh), "--auto-resume"]) == 0
    assert [r["epoch"] for r in rows(fresh)] == ["1"]
