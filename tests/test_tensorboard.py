"""`log: [csv, tensorboard]`: event files read back with TensorBoard's own reader; resume appends without repeating
a step; off by default; only rank 0 writes."""
from __future__ import annotations

import pytest

from ghostnest.train import train
from ghostnest.train.config import resolve_config
from ghostnest.train.metrics import read_metrics

pytest.importorskip("tensorboard", reason="tensorboard is an optional extra: pip install 'ghostnest[tensorboard]'")

TINY = {"model_kwargs": {"widths": [8, 8, 8], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1},
        "dataset": "fake:classes=4,size=16,train=64,test=16", "batch_size": 16, "val_fraction": 0.25, "workers": 0,
        "epochs": 3, "threads": 1, "log": ["csv", "tensorboard"], "mixup_alpha": 0.2, "cutmix_alpha": 1.0}
SCALARS = ("loss/train", "loss/val", "accuracy/val_top1", "accuracy/val_top5", "lr", "speed/images_per_s",
           "speed/input_wait_pct")


def events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def check_against_metrics(acc, run, epochs):
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    for tag in SCALARS:
        assert [e.step for e in acc.Scalars(tag)] == list(range(1, epochs + 1)), tag  # each epoch once, in order
    for tag, key in (("loss/train", "train_loss"), ("accuracy/val_top1", "val_top1"), ("lr", "lr")):
        assert [e.value for e in acc.Scalars(tag)] == pytest.approx([r[key] for r in rows], rel=1e-5)


def test_tensorboard_events_read_back_and_resume_appends_without_duplicates(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    cfg = resolve_config(dict(TINY))
    assert train(cfg, out=run, device="cpu", progress=False, stop_after=1)["stopped_at"] == 1
    acc = events(run)
    check_against_metrics(acc, run, 1)
    preview = acc.Images("augmentation preview")
    assert len(preview) == 1 and preview[0].step == 0 and preview[0].width > 400 and preview[0].height > 400
    # an interrupted attempt that logged epoch 2 but died before its resume point was saved
    with SummaryWriter(str(run / "tensorboard")) as stale:
        stale.add_scalar("loss/train", 123.0, 2)
    res = train(None, resume=run, device="cpu", progress=False)
    acc = events(run)
    check_against_metrics(acc, run, 3)  # the stale 123.0 at step 2 is purged, step 2 appears once
    assert len(acc.Images("augmentation preview")) == 1  # not drawn again on resume
    final = acc.Scalars("final/test_top1")
    assert len(final) == 1 and final[0].step == 3 and final[0].value == pytest.approx(res["test_top1"])
    assert "_hparams_/session_start_info" in acc.summary_metadata  # the HParams dashboard's record


def test_tensorboard_is_off_by_default_and_only_rank_0_writes(tmp_path, monkeypatch):
    import ghostnest.train.tensorboard as tb

    cfg = resolve_config({**TINY, "log": ["csv"], "epochs": 1})
    train(cfg, out=tmp_path / "plain", device="cpu", progress=False)
    assert not (tmp_path / "plain" / "tensorboard").exists()

    class Rank1:
        main = False

    class Ctx:
        cfg = resolve_config(dict(TINY))
        dist = Rank1()

    assert tb.open_tensorboard(Ctx()) is None


@pytest.mark.parametrize("log,expected", [(["tensorboard"], "csv is always on"), (["csv", "wandb"], "accepted entries")])
def test_bad_log_values(log, expected):
    with pytest.raises(ValueError, match=expected):
        resolve_config({**TINY, "log": log})


def test_images_per_s_counts_only_the_steps_a_resumed_epoch_ran(tmp_path, monkeypatch):
    import os
    import signal

    import ghostnest.train.tensorboard as tb
    from ghostnest.train import engine

    seen, epoch_of = {}, tb.TensorBoardLog.epoch

    def spy(self, row, images, loop_seconds, wait_seconds):
        seen[row["epoch"]] = images
        return epoch_of(self, row, images, loop_seconds, wait_seconds)

    monkeypatch.setattr(tb.TensorBoardLog, "epoch", spy)
    real, calls = engine.loss_fn, {"n": 0}

    def signalled(*a):
        calls["n"] += 1
        if calls["n"] == 5:  # 3 steps of 16 images per epoch: epoch 2, step 2, as if the job were preempted
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a)

    monkeypatch.setattr(engine, "loss_fn", signalled)
    run = tmp_path / "run"
    stopped = train(resolve_config(dict(TINY)), out=run, device="cpu", progress=False)
    assert (stopped["signal"], stopped["step"]) == ("SIGTERM", 2)
    monkeypatch.setattr(engine, "loss_fn", real)
    train(None, resume=run, device="cpu", progress=False)
    assert seen == {1: 48, 2: 16, 3: 48}  # the resumed epoch ran one step of 16 images in its loop, not 48
