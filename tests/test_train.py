"""The training loop: loss goes down, resume repeats an uninterrupted run exactly, checkpoints round-trip,
a NaN loss stops training and keeps the last good checkpoint, writes are atomic."""
from __future__ import annotations

import csv
import os

import pytest
import torch

import ghostnest
from ghostnest import fileio
from ghostnest.train import TrainingDiverged, resolve_config, train
from ghostnest.train import checkpoint as ckpt
from ghostnest.train import engine, optim, trainer

TINY = {"widths": [8, 16, 16], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1}


def tiny_config(**extra):
    base = {"recipe": "tiny", "model": "ghostmixnet", "model_kwargs": TINY,
            "dataset": "fake:classes=4,size=16,train=96,test=32", "val_fraction": 0.25, "workers": 0,
            "epochs": 3, "batch_size": 16, "lr": 3e-3, "weight_decay": 1e-3, "label_smoothing": 0.1,
            "scheduler": "cosine", "threads": 1}
    return resolve_config({**base, **extra})


def rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_training_lowers_the_loss(tmp_path):
    res = train(tiny_config(epochs=4), tmp_path / "run", device="cpu", progress=False)
    losses = [float(r["train_loss"]) for r in rows(tmp_path / "run")]
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0]
    assert res["epochs"] == 4 and 0 <= res["test_top1"] <= 100 and res["params"] == sum(
        p.numel() for p in ghostnest.create_model("ghostmixnet", num_classes=4, **TINY).parameters())


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    # augmentation and Mixup/CutMix included, so every source of randomness must line up after the restart
    extra = {"augment": [{"op": "RandomCrop", "size": 16, "padding": 2}, {"op": "RandomHorizontalFlip"}],
             "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "epochs": 3}
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny_config(**extra), full, device="cpu", progress=False)
    stopped = train(tiny_config(**extra), part, device="cpu", progress=False, stop_after=1)
    assert stopped["stopped_at"] == 1 and len(rows(part)) == 1 and not (part / "results.json").exists()
    train(None, resume=part, device="cpu", progress=False)
    a, b = rows(full), rows(part)
    for key in ("epoch", "lr", "train_loss", "val_loss", "val_top1", "val_top5"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    wa, _ = ckpt.read_checkpoint(full / "last.safetensors")
    wb, _ = ckpt.read_checkpoint(part / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="has finished"):
        train(None, resume=part, device="cpu", progress=False)
    files = {f.name: f.read_bytes() for f in part.iterdir()}
    for epochs, message in ((3, "has finished 3 epoch"), (2, "has finished 3 epoch"), (0, "must be a positive")):
        with pytest.raises(ValueError, match=message):  # --set epochs=N that trains nothing more
            train(None, resume=part, device="cpu", progress=False, resume_epochs=epochs)
    assert {f.name: f.read_bytes() for f in part.iterdir()} == files  # the finished run is left as it was
    longer = train(None, resume=part, device="cpu", progress=False, resume_epochs=4)  # --set epochs=4
    assert longer["epochs"] == 4 and [r["epoch"] for r in rows(part)] == ["1", "2", "3", "4"]
    assert [r["train_loss"] for r in rows(part)[:3]] == [r["train_loss"] for r in rows(full)]  # history kept


def test_checkpoint_roundtrip_and_metadata(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(epochs=1), run, device="cpu", progress=False)
    model, meta = ghostnest.load_checkpoint(run)
    assert not model.training
    assert meta["model"] == "ghostmixnet" and meta["model_kwargs"] == TINY and meta["num_classes"] == 4
    assert meta["classes"] == [f"class_{i}" for i in range(4)] and meta["input_size"] == 16
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["std"] == [0.25, 0.25, 0.25] and meta["epoch"] == 1
    state = torch.load(run / "last.state.pt", weights_only=True)
    assert state["epoch"] == 1 and {"optimizer", "scheduler", "rng_cpu", "best_top1"} <= set(state)
    files = sorted(p.name for p in run.iterdir())
    assert files == ["best.safetensors", "config.yaml", "curves.png", "last.safetensors", "last.state.pt",
                     "metrics.csv", "results.json"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = engine.loss_fn
    calls = {"n": 0}

    def poisoned(logits, target, ls):
        calls["n"] += 1
        out = real(logits, target, ls)
        return out * float("nan") if calls["n"] > 4 else out  # epoch 1 has 4 steps, epoch 2 diverges

    monkeypatch.setattr(engine, "loss_fn", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 2.*epoch 1\) is kept.*--set lr="):
        train(tiny_config(), run, device="cpu", progress=False)
    assert [r["epoch"] for r in rows(run)] == ["1"] and not (run / "results.json").exists()
    _, meta = ckpt.read_checkpoint(run / "last.safetensors")
    assert meta["epoch"] == 1
    model, _ = ghostnest.load_checkpoint(run / "last.safetensors")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    fileio.atomic_write_bytes(path, b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        fileio.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_marked_block_is_replaced_in_place_and_appended_when_missing(tmp_path):
    doc = tmp_path / "doc.md"
    fileio.write_marked_block(doc, "int8", "first table")  # no file yet: the block alone
    assert doc.read_text() == "<!-- int8:begin -->\nfirst table\n<!-- int8:end -->\n"
    doc.write_text("# Title\n\n" + doc.read_text() + "\nAfter.\n<!-- gpu:begin -->\ngpu\n<!-- gpu:end -->\n")
    fileio.write_marked_block(doc, "int8", "\nsecond table\n")
    fileio.write_marked_block(doc, "new-block", "added")
    assert doc.read_text() == ("# Title\n\n<!-- int8:begin -->\nsecond table\n<!-- int8:end -->\n\nAfter.\n"
                               "<!-- gpu:begin -->\ngpu\n<!-- gpu:end -->\n\n"
                               "<!-- new-block:begin -->\nadded\n<!-- new-block:end -->\n")


def test_wrong_checkpoint_is_rejected(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(epochs=1), run, device="cpu", progress=False)
    tensors, meta = ckpt.read_checkpoint(run / "best.safetensors")
    other = ghostnest.create_model("ghostmixnet", num_classes=7, **TINY)
    ckpt.save_weights(tmp_path / "other.safetensors", other, {**meta, "num_classes": 4})  # lies about classes
    with pytest.raises(ValueError, match="does not fit model ghostmixnet with 4 classes"):
        ghostnest.load_checkpoint(tmp_path / "other.safetensors")
    data = (run / "best.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        ghostnest.load_checkpoint(tmp_path / "cut.safetensors")


def test_resume_refuses_a_corrupt_state_file(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(epochs=2), run, device="cpu", progress=False, stop_after=1)
    state = run / "last.state.pt"
    state.write_bytes(state.read_bytes()[:50])
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(ValueError, match="last.state.pt is corrupt or truncated.*cannot be resumed"):
        train(None, resume=run, device="cpu", progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_autocast_choice():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert optim.autocast_for(tiny_config(amp="bf16"), cuda)[1] == torch.bfloat16
    assert optim.autocast_for(tiny_config(amp="fp16"), cuda)[1] == torch.float16
    assert optim.autocast_for(tiny_config(amp="off"), cuda)[1] is None  # YAML `off` -> fp32
    assert optim.autocast_for(tiny_config(amp="bf16"), cpu)[1] is None  # never on CPU


def test_menest_trains_through_the_fast_paths(tmp_path, monkeypatch):
    """ME-NeSt-Ghost through the loop: compiled Mish (FastMish) and the CPU MixConv training paths (custom-backward
    "rowgrad" on 16x16 and 8x8 maps, "matmul" on 4x4) train, and resume repeats the uninterrupted run exactly."""
    from ghostnest.layers import MixConv2d
    from ghostnest.layers.fused import FastMish

    seen = {"impls": set(), "fast_mish": 0}
    real_forward = MixConv2d.forward

    def spy(self, x):
        seen["impls"].add(self.resolved_impl(x.shape[-2] * x.shape[-1]))
        return real_forward(self, x)

    real_use_fast_mish = trainer.use_fast_mish

    def spy_mish(model):
        out = real_use_fast_mish(model)
        seen["fast_mish"] += sum(isinstance(m, FastMish) for m in out.modules())
        return out

    monkeypatch.setattr(MixConv2d, "forward", spy)
    monkeypatch.setattr(trainer, "use_fast_mish", spy_mish)
    small = {"stages": [["ms", 1, 8, 1, 1], ["ms_ghost", 1, 16, 2, 2], ["ms_ghost", 1, 16, 2, 2]], "stem_width": 8,
             "num_features": 32}
    cfg = dict(model="menest_ghost_s", model_kwargs=small, epochs=2, batch_size=16, lr=3e-3,
               dataset="fake:classes=4,size=32,train=96,test=32")
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny_config(**cfg), full, device="cpu", progress=False)
    assert {"rowgrad", "matmul"} <= seen["impls"] and seen["fast_mish"] > 0
    train(tiny_config(**cfg), part, device="cpu", progress=False, stop_after=1)
    train(None, resume=part, device="cpu", progress=False)
    assert [r["train_loss"] for r in rows(full)] == [r["train_loss"] for r in rows(part)]
    losses = [float(r["train_loss"]) for r in rows(full)]
    assert all(loss == loss and loss < 10 for loss in losses)  # finite


def test_a_slow_input_pipeline_is_named_in_the_log(tmp_path, monkeypatch, capsys):
    """The epoch log shows how long the loop waited for its batches, and says once how to feed it faster."""
    import time

    from ghostnest.data import loader

    real, clock, real_clock = loader._Augmented.__getitem__, [0.0], time.perf_counter

    def slow(self, i):  # 50 ms of augmentation per image on the loop's clock, far slower than the tiny model's step
        clock[0] += 0.05  # (no real sleep: the share cannot fall with the machine's load)
        return real(self, i)

    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + clock[0])
    monkeypatch.setattr(loader._Augmented, "__getitem__", slow)
    cfg = tiny_config(epochs=2, augment=[{"op": "RandomHorizontalFlip"}], workers=0)
    train(cfg, tmp_path / "run", device="cpu", progress=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and all("input wait" in line for line in lines)
    assert int(lines[0].split("input wait ")[1].split("%")[0]) >= 30
    assert err.count("waited for its input batches") == 1 and "--set workers=N (now 0;" in err
    assert "augment_on=device" in err
