"""What a run prints: a resumed run says from which epoch and step, its ETA counts whole epochs (a resumed epoch
included), a log file gets progress lines inside an epoch, and one epoch is "1 epoch"."""
from __future__ import annotations

import os
import re
import signal

import torch

from ghostnest.cli import main
from ghostnest.train import engine, progress

TINY = ["--set", "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}",
        "--set", "dataset=fake:classes=4,size=16,train=64,test=24", "--set", "batch_size=16",
        "--set", "val_fraction=0.25", "--set", "workers=0", "--set", "threads=1", "--device", "cpu"]


def test_a_resumed_run_says_where_it_resumes_and_its_eta_counts_the_whole_epoch(tmp_path, monkeypatch, capsys):
    real, calls = engine.loss_fn, {"n": 0}

    def interrupted(*a):
        calls["n"] += 1
        if calls["n"] == 2:  # Ctrl-C at step 2 of 3 of epoch 1
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a)

    monkeypatch.setattr(engine, "loss_fn", interrupted)
    run = tmp_path / "run"
    assert main(["train", *TINY, "--set", "epochs=3", "--out", str(run), "--quiet"]) == 130
    monkeypatch.setattr(engine, "loss_fn", real)
    state = torch.load(run / "last.state.pt", weights_only=True)
    state["mid_epoch"]["seconds"] = 600.0  # as if the first 2 steps had taken 10 minutes before the stop
    torch.save(state, run / "last.state.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"resuming {run} from epoch 1, step 2/3 (0 epochs finished)" in err
    first = next(line for line in err.splitlines() if line.startswith("epoch 1/3"))
    # the resumed epoch took 600 s and more: 2 epochs left are 20 min and more, not the seconds since the resume
    assert float(re.search(r"ETA ([\d.]+) min", first).group(1)) >= 20.0, first
    assert re.search(r"  6\d\d\.\ds  ", first), first


def test_eta_is_the_mean_epoch_times_the_epochs_left():
    assert progress.eta_seconds([100.0], 3) == 300.0
    assert progress.eta_seconds([90.0, 110.0], 1) == 100.0


def test_resume_line_after_finished_epochs():
    line = progress.resume_line("runs/r", 2, 0, 40, 91.25, 2)
    assert line == "resuming runs/r from epoch 3 (2 epochs finished; best val top-1 so far 91.25% (epoch 2))"


def test_a_log_file_gets_progress_lines_inside_an_epoch_and_one_epoch_is_singular(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # every step (30 s in a real run)
    assert main(["train", *TINY, "--set", "epochs=1", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err  # captured: not a terminal, so no tqdm bar and these lines instead
    lines = [line for line in err.splitlines() if re.match(r"epoch 1/1  step \d/3  ", line)]
    assert len(lines) == 3, err
    assert re.fullmatch(r"epoch 1/1  step 3/3  [\d.]+ images/s  loss [\d.]+  ETA [\d.]+ min", lines[-1]), lines
    assert ", 1 epoch on cpu -> " in err and "= 1 process x 16," in err and "1 epochs" not in err


def test_plural():
    assert [progress.plural(n, w) for n, w in ((1, "epoch"), (2, "epoch"), (1, "process"), (2, "process"))] == [
        "1 epoch", "2 epochs", "1 process", "2 processes"]
