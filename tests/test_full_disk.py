"""A file system that refuses a write (full, read-only, no permission, a file size limit) ends training with one
line naming the file, the cause and ``--resume``; the last good checkpoint is kept and the resumed run finishes
exactly as an uninterrupted one."""
from __future__ import annotations

import csv
import errno
import os
import resource
import signal
from pathlib import Path

import pytest
import torch

from ghostnest import fileio
from ghostnest.cli import main
from ghostnest.train import engine

TINY = ["--set", "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}",
        "--set", "dataset=fake:classes=4,size=16,train=96,test=32", "--set", "batch_size=16",
        "--set", "val_fraction=0.25", "--set", "threads=1", "--set", "epochs=3", "--set", "workers=0",
        "--device", "cpu", "--quiet"]


def rows(run):
    with open(Path(run) / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def same_weights(a, b):
    wa = torch.load(Path(a) / "last.state.pt", weights_only=True)["model"]
    wb = torch.load(Path(b) / "last.state.pt", weights_only=True)["model"]
    return all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("full") / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    return run


def test_a_real_file_size_limit_in_epoch_2_keeps_epoch_1_and_resume_finishes(tmp_path, monkeypatch, capsys,
                                                                              uninterrupted):
    """The kernel refuses the writes (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) from epoch 2 on: safetensors'
    own writer meets it first. One line, epoch 1's checkpoint intact, and --resume once the limit is lifted."""
    run = tmp_path / "run"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    real = engine.write_metrics

    def then_limit(path, rows_):  # after epoch 1 is completely written: no file may grow past 1 KB any more
        real(path, rows_)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))

    monkeypatch.setattr(engine, "write_metrics", then_limit)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
    try:
        code = main(["train", *TINY, "--out", str(run)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: could not write {run}/") and "File too large" in err
    assert f"last good checkpoint ({run}/last.state.pt, epoch 1) is kept" in err and f"--resume {run}" in err
    assert "Raise the file size limit" in err
    assert not list(run.glob(".*.tmp*"))  # no half-written temporary file left
    monkeypatch.setattr(engine, "write_metrics", real)
    assert main(["train", "--resume", str(run), "--quiet", "--device", "cpu"]) == 0
    assert rows(run) == rows(uninterrupted) and same_weights(run, uninterrupted)


@pytest.mark.parametrize("name, code, cause, fix", [
    ("metrics.csv", errno.ENOSPC, "No space left on device", "Free some space"),
    ("last.state.pt", errno.EROFS, "Read-only file system", "Make the file system writable"),
    ("results.json", errno.EACCES, "Permission denied", "Fix the folder's permissions"),
])
def test_each_kind_of_refused_write_is_one_line(name, code, cause, fix, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real, calls = os.replace, {"n": 0}

    def refuse(src, dst):  # the second time this file is written (epoch 2), the file system says no
        if Path(dst).name == name:
            calls["n"] += 1
            if calls["n"] == 2 or name == "results.json":
                raise OSError(code, os.strerror(code))
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", refuse)
    assert main(["train", *TINY, "--set", "epochs=2", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"could not write {run / name}: {cause}" in err and fix in err, err
    kept = "epoch 2" if name in ("metrics.csv", "results.json") else "epoch 1"  # metrics.csv follows the state
    assert f"({run}/last.state.pt, {kept}) is kept" in err and f"ghostnest train --resume {run}" in err
    monkeypatch.setattr(fileio.os, "replace", real)
    assert main(["train", "--resume", str(run), "--quiet", "--device", "cpu"]) == 0
    assert [r["epoch"] for r in rows(run)] == ["1", "2"] and (run / "results.json").is_file()


def test_a_refused_first_write_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", full)
    assert main(["train", *TINY, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"could not write {run}/config.yaml: No space left on device" in err, err
    assert "before any checkpoint was saved" in err and "--resume" not in err


def test_other_errors_inside_a_write_pass_unchanged(tmp_path):
    with pytest.raises(TypeError, match="not bytes"), fileio.atomic_path(tmp_path / "x.txt"):
        raise TypeError("not bytes")
    assert not list(tmp_path.iterdir())
    with pytest.raises(fileio.WriteError) as info, fileio.atomic_path(tmp_path / "y.bin"):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "y.bin")
