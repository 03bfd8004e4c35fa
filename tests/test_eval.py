"""`ghostnest eval` says which weights it used: a stopped run is named unfinished, with the weights' epoch and step,
and --checkpoint best|last chooses; results on another data set go to their own files, and class names that differ
are named (the same names in another order are mapped by name)."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from helpers import image_folder

from ghostnest.cli import main
from ghostnest.train import engine
from ghostnest.train import evaluate

TINY = ["--set", "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}",
        "--set", "dataset=fake:classes=4,size=16,train=64,test=24", "--set", "batch_size=16",
        "--set", "val_fraction=0.25", "--set", "workers=0", "--set", "threads=1", "--device", "cpu", "--quiet"]


def stopped_run(tmp_path, monkeypatch, at_call: int) -> Path:
    """A 3-epoch run (3 steps an epoch) stopped by Ctrl-C during loss computation ``at_call``."""
    real, calls = engine.loss_fn, {"n": 0}

    def interrupted(*a):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a)

    monkeypatch.setattr(engine, "loss_fn", interrupted)
    run = tmp_path / f"stopped{at_call}"
    assert main(["train", *TINY, "--set", "epochs=3", "--out", str(run)]) == 130
    monkeypatch.setattr(engine, "loss_fn", real)
    return run


def test_a_run_stopped_in_its_first_epoch_is_evaluated_on_its_last_weights_and_says_so(tmp_path, monkeypatch,
                                                                                        capsys):
    run = stopped_run(tmp_path, monkeypatch, at_call=2)  # Ctrl-C at step 2 of 3 of epoch 1: no best yet
    assert not (run / "best.safetensors").exists()
    capsys.readouterr()
    assert main(["eval", str(run), "--json", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    r = json.loads(out.out)
    assert (r["weights"], r["epoch"], r["step"], r["run_finished"]) == ("last.safetensors", 0, 2, False)
    warning = out.err.strip()
    assert warning.startswith("warning: ") and "\n" not in warning
    for part in ("is an unfinished run", "evaluating last.safetensors", "step 2 of 3 of epoch 1 of 3",
                 "no best.safetensors yet", f"ghostnest train --resume {run}"):
        assert part in warning, part
    assert r["notes"] == [warning[len("warning: "):]]
    assert main(["eval", str(run), "--checkpoint", "best", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "has no best.safetensors yet" in err and "--checkpoint last" in err
    assert main(["eval", str(run / "last.safetensors"), "--checkpoint", "last", "--device", "cpu"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_stopped_run_with_a_best_epoch_names_both(tmp_path, monkeypatch, capsys):
    run = stopped_run(tmp_path, monkeypatch, at_call=5)  # epoch 2, step 2: epoch 1's best exists
    capsys.readouterr()
    assert main(["eval", str(run), "--device", "cpu", "--out", str(tmp_path / "e1")]) == 0
    out = capsys.readouterr()
    assert "evaluating best.safetensors, the weights saved after epoch 1 of 3" in out.err
    assert "(best.safetensors: epoch 1)" in out.out
    assert main(["eval", str(run), "--checkpoint", "last", "--json", "--device", "cpu", "--out",
                 str(tmp_path / "e2")]) == 0
    out = capsys.readouterr()
    r = json.loads(out.out)
    assert (r["weights"], r["epoch"], r["step"]) == ("last.safetensors", 1, 2)
    assert "step 2 of 3 of epoch 2 of 3, in the middle of that epoch" in out.err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "run"
    assert main(["train", *TINY, "--set", "epochs=1", "--out", str(run)]) == 0
    return run


def test_eval_on_another_dataset_writes_its_own_files_and_names_differing_classes(finished, tmp_path, capsys):
    own = {p.name: p.read_bytes() for p in finished.iterdir()}
    other = "fake:classes=4,size=16,train=8,test=16,seed=1"
    assert main(["eval", str(finished), "--dataset", other, "--json", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    r = json.loads(out.out)
    assert r["dataset"] == other and r["trained_on"] == "fake:classes=4,size=16,train=64,test=24"
    assert Path(r["confusion_png"]).name == "confusion-fake-classes=4-size=16-train=8-test=16-seed=1.png"
    assert (finished / "eval-fake-classes=4-size=16-train=8-test=16-seed=1.json").is_file()
    assert r["notes"] == [] and out.err == ""  # same class names
    assert all(own[name] == (finished / name).read_bytes() for name in own)  # nothing of the run's replaced

    folder = image_folder(tmp_path / "pets", ["cat", "class_1", "dog", "eel"])
    assert main(["eval", str(finished), "--dataset", folder, "--device", "cpu"]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: class names differ between the checkpoint and") and "\n" not in err
    assert "at 3 of 4 indices" in err and "0: 'class_0' vs 'cat'" in err and "'class_2' vs 'dog'" in err
    assert not (finished / "eval.json").exists() and not (finished / "confusion.png").exists()

    assert main(["eval", str(finished), "--device", "cpu"]) == 0  # its own data set: the plain names
    assert (finished / "eval.json").is_file() and (finished / "confusion.png").is_file()


def test_the_same_class_names_in_another_order_are_mapped_by_name(tmp_path):
    folder = image_folder(tmp_path / "ab", ["a", "b"], per_class=3)  # ImageFolder sorts: a=0, b=1
    meta = {"dataset": "x", "num_classes": 2, "classes": ["b", "a"]}  # the checkpoint says b=0, a=1
    name, data, notes = evaluate.test_split_of(meta, Path("ckpt"), folder, None)
    assert data.test.labels.tolist() == [1, 1, 1, 0, 0, 0] and data.classes == ["b", "a"]
    assert "in another order" in notes[0]


def test_output_names():
    out = Path("/r")
    assert evaluate.output_names(out, "digits", "digits") == (out / "confusion.png", out / "eval.json")
    assert evaluate.output_names(out, "cifar10", "digits", "m.int8.") == (out / "m.int8.confusion-cifar10.png",
                                                                  out / "m.int8.eval-cifar10.json")
    long = "imagefolder:/data/" + "x" * 200 + "/set:64"
    png, _ = evaluate.output_names(out, long, "digits")
    other, _ = evaluate.output_names(out, long + "1", "digits")
    assert len(png.name) < 120 and png.name.endswith(".png") and png.name != other.name
