"""Messages that used to mislead: each says what was wrong with what the user gave, in one line, and writes nothing."""
from __future__ import annotations

import dataclasses
import tempfile

import pytest

from ghostnest import fileio
from ghostnest.cli import main
from ghostnest.train.config import KEY_ALIASES, TrainConfig


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_predict_refuses_a_pt2_file_as_predict(tmp_path, capsys):
    pt2 = tmp_path / "model.pt2"
    pt2.write_bytes(b"PK")
    assert main(["predict", str(pt2), str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 2
    err = one_error_line(capsys)
    assert "model.pt2 is a torch.export file: predict takes a run directory" in err and ".onnx" in err
    assert "predict takes one directly" not in err
    assert main(["eval", str(pt2), "--device", "cpu"]) == 2  # eval's message names both commands' ways correctly
    err = one_error_line(capsys)
    assert "not a checkpoint" in err and "eval's --model-file" in err and "predict takes one directly" not in err
    assert not (tmp_path / "p.csv").exists()


def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("not a folder")
    out = tmp_path / "run"
    assert main(["train", "--set", "dataset=cifar10", "--data-dir", str(readme), "--out", str(out)]) == 2
    err = one_error_line(capsys)
    assert f"the data folder {readme} is a file, not a folder" in err and "--data-dir" in err
    assert "README.md/cifar-10-batches-py" not in err and not out.exists()


@pytest.mark.parametrize("fmt, name, message", [
    ("onnx", "m.pt2", "--out {out} has the suffix of torch-export files but --format onnx writes .onnx files; name it "
                      "{stem}.onnx (or use --format torch-export)"),
    ("torch-export", "m.onnx", "has the suffix of onnx files but --format torch-export writes .pt2 files"),
    ("onnx", "model", "has no suffix but --format onnx writes .onnx files; name it {stem}.onnx"),
])
def test_export_refuses_an_out_file_of_another_format(tmp_path, capsys, fmt, name, message):
    out = tmp_path / name
    assert main(["export", "ghostmixnet", "--format", fmt, "--out", str(out)]) == 2
    stem = str(out.with_suffix(""))
    assert message.format(out=out, stem=stem) in one_error_line(capsys)
    assert not out.exists()


def test_an_unwritable_out_names_the_path_given_not_the_temporary_file(tmp_path, capsys, monkeypatch):
    def refused(prefix, suffix, dir):  # what a read-only folder does (root, running the suite, may write anyway)
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}k2j3h{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    out = tmp_path / "ro" / "w.safetensors"
    with pytest.raises(fileio.WriteError, match=r"cannot write .*w.safetensors: Permission denied"):
        fileio.atomic_write_text(out, "x")
    assert main(["export", "ghostmixnet", "--format", "safetensors", "--out", str(out)]) == 2
    err = one_error_line(capsys)
    assert f"cannot write {out}: Permission denied" in err and ".tmp" not in err and "k2j3h" not in err


@pytest.mark.parametrize("key, nearest", [("learning_rate", "lr"), ("min-lr", "eta_min"), ("num_workers", "workers"),
                                          ("epoch", "epochs"), ("Weight_Decay", "weight_decay")])
def test_an_unknown_config_key_names_the_nearest(capsys, tmp_path, key, nearest):
    assert main(["train", "--set", f"{key}=1", "--out", str(tmp_path / "never")]) == 2
    assert f"unknown config key(s): {key} (did you mean {nearest}?)" in one_error_line(capsys)


def test_every_alias_names_a_config_key():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(KEY_ALIASES.values()) <= fields and not set(KEY_ALIASES) & fields
