"""The train / eval / predict commands end to end on a tiny run, and every bad input: one line, non-zero exit,
and the run directory untouched."""
from __future__ import annotations

import csv
import hashlib
import json

import pytest
import torch

import ghostnest
from ghostnest.cli import main
from ghostnest.train import engine

TINY = ["--set", "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}",
        "--set", "dataset=fake:classes=4,size=16,train=64,test=24", "--set", "batch_size=16",
        "--set", "val_fraction=0.25", "--set", "workers=0"]


def snapshot(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--recipe", "quickstart", *TINY, "--set", "epochs=2", "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    return out


def one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_train_writes_the_run_directory_contract(run):
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"] == "ghostmixnet" and cfg["num_classes"] == 4 and cfg["recipe"] == "quickstart"
    assert cfg["dataset"] == "fake:classes=4,size=16,train=64,test=24"
    # the model's full configuration: the recipe's overrides on top of the published defaults (dropout 0.2)
    assert cfg["model_options"]["widths"] == [8, 16, 16] and cfg["model_options"]["depths"] == [1, 1, 1]
    assert cfg["model_options"]["drop_rate"] == 0.2 and cfg["model_options"]["num_classes"] == 4
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,lr,train_loss,val_loss,val_top1,val_top5,seconds" and len(lines) == 3
    res = json.loads((run / "results.json").read_text())
    assert {"model", "dataset", "params", "test_top1", "test_top5", "best_epoch", "epochs"} <= set(res)
    assert res["epochs"] == 2 and 1 <= res["best_epoch"] <= 2 and 0 <= res["test_top1"] <= 100
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_end_to_end(run, capsys, tmp_path):
    assert main(["eval", str(run), "--json", "--device", "cpu", "--out", str(tmp_path)]) == 0
    r = json.loads(capsys.readouterr().out)
    res = json.loads((run / "results.json").read_text())
    assert r["top1"] == pytest.approx(res["test_top1"]) and r["top5"] == pytest.approx(res["test_top5"])
    assert r["images"] == 24 and set(r["per_class_top1"]) == {f"class_{i}" for i in range(4)}
    matrix = torch.tensor(r["confusion_matrix"])
    assert matrix.sum() == 24 and matrix.trace().item() == round(r["top1"] * 24 / 100)
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["eval", str(run / "last.safetensors"), "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert "top-1" in capsys.readouterr().out


def test_predict_end_to_end(run, tmp_path):
    from PIL import Image

    from ghostnest.data import load_dataset

    data = load_dataset("fake:classes=4,size=16,train=64,test=24")
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(data.test.images[i].permute(1, 2, 0).numpy()).save(folder / f"img{i}.png")
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run / "best.safetensors"), str(folder), "--out", str(out), "--device", "cpu"]) == 0
    with open(out, newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["ID"] for r in got] == [f"img{i}.png" for i in range(5)] and list(got[0]) == ["ID", "label", "name",
                                                                                           "confidence"]
    model, meta = ghostnest.load_checkpoint(run / "best.safetensors")
    mean, std = torch.tensor(meta["mean"]).view(1, 3, 1, 1), torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model((data.test.images[:5].float() / 255 - mean) / std).argmax(1).tolist()
    assert [int(r["label"]) for r in got] == expected
    assert all(r["name"] == f"class_{r['label']}" and 0 < float(r["confidence"]) <= 1 for r in got)


@pytest.mark.parametrize("args, message", [
    (["train", "--recipe", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
    (["train", "--set", "dataset=mnist"], "unknown dataset 'mnist'; accepted: cifar10"),
    (["train", "--set", "model=resnet50"], "unknown model 'resnet50'"),
    (["train", "--set", "epoch=3"], "unknown config key(s): epoch (did you mean epochs?)"),
    (["train", "--set", "lr=fast"], "lr='fast' has the wrong type: expected float"),
    (["train", "--set", "scheduler=step"], "accepted values: cosine, cosine_restarts, constant"),
    (["train", "--device", "tpu"], "accepted values: auto, cpu, cuda"),
    (["train", "--set", "model_kwargs.widht=3", "--set", "epochs=1"], "unknown GhostMixNet option(s) ['widht']"),
    (["train", "--set", "model=efficientnetv2_s", "--set", "model_kwargs.nope=1", "--set", "epochs=1"],
     "model efficientnetv2_s does not accept model_kwargs {'nope': 1}"),
    (["train", "--set", "image_size=16", "--set", "epochs=1"],
     "image_size=16 is below ghostmixnet's smallest input (32 pixels)"),
])
def test_bad_train_input(args, message, capsys, tmp_path):
    out = tmp_path / "never"
    assert main([*args, "--out", str(out)]) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_offline_missing_cifar_through_cli(tmp_path, capsys):
    out, data = tmp_path / "run", tmp_path / "data"
    assert main(["train", "--recipe", "ghostmixnet-cifar10", "--set", "download=false", "--data-dir", str(data),
                 "--out", str(out)]) == 2
    err = one_error_line(capsys)
    assert "cifar-10-batches-py" in err and "cifar-10-python.tar.gz" in err
    assert not out.exists() and not data.exists()


def test_a_run_that_saved_no_checkpoint_says_how_to_start_again(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("recipe: quickstart\n")  # a first attempt that stopped before any checkpoint
    assert main(["train", "--recipe", "quickstart", *TINY, "--out", str(out), "--device", "cpu"]) == 2
    assert "saved no checkpoint yet" in (err := one_error_line(capsys)) and "--auto-resume" in err
    assert (out / "config.yaml").read_text() == "recipe: quickstart\n"


def test_existing_run_is_not_overwritten(run, capsys):
    before = snapshot(run)
    assert main(["train", "--recipe", "quickstart", *TINY, "--out", str(run), "--device", "cpu"]) == 2
    assert "already holds a run; continue it with --resume" in one_error_line(capsys)
    assert main(["train", "--resume", str(run), "--set", "lr=1"]) == 2
    assert "only --set epochs=N" in one_error_line(capsys)
    assert main(["train", "--resume", str(run)]) == 2
    assert "has finished" in one_error_line(capsys)
    assert snapshot(run) == before


def test_bad_checkpoints_and_images(run, capsys, tmp_path):
    before = snapshot(run)
    # a checkpoint of another class count than the data set
    assert main(["eval", str(run), "--dataset", "fake:classes=3,size=16,train=8,test=8", "--device", "cpu"]) == 2
    assert "trained for 4 classes but fake:classes=3" in one_error_line(capsys)
    # corrupt / truncated checkpoint
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((run / "best.safetensors").read_bytes()[:300])
    assert main(["eval", str(cut), "--device", "cpu"]) == 2
    assert "is corrupt or truncated" in one_error_line(capsys)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read")
    assert main(["eval", str(onnx), "--device", "cpu"]) == 2  # an exported file where a checkpoint belongs
    assert "is an exported model file, not a checkpoint" in (err := one_error_line(capsys)) and "--model-file" in err
    with pytest.raises(SystemExit):  # a zero batch is refused by the parser, not met as a range() error
        main(["eval", str(run), "--batch-size", "0", "--device", "cpu"])
    assert "argument --batch-size: must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.safetensors"), str(tmp_path)]) == 2
    assert "does not exist" in one_error_line(capsys)
    # an unreadable image: error names it, no CSV written
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(tmp_path / "broken.png"), "--out", str(out), "--device", "cpu"]) == 2
    assert "cannot read image" in (err := one_error_line(capsys)) and "broken.png" in err
    assert not out.exists()
    assert snapshot(run) == before


def test_nan_loss_through_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(engine, "loss_fn", lambda logits, target, ls: logits.float().sum() * float("nan"))
    out = tmp_path / "run"
    assert main(["train", "--recipe", "quickstart", *TINY, "--set", "epochs=2", "--out", str(out), "--device",
                 "cpu", "--quiet"]) == 2
    err = one_error_line(capsys)
    assert "loss became nan in epoch 1" in err and "no epoch had finished" in err and "--set lr=" in err
    assert not (out / "last.safetensors").exists() and not (out / "results.json").exists()


TINY_MODEL = "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}"


def test_ghostmixnet_recipe_on_a_cifar10_fixture(tmp_path, capsys):
    """The full published pipeline (every transform in a worker, Mixup/CutMix, warm restarts) on CIFAR files."""
    from test_data import _write_cifar10

    _write_cifar10(tmp_path / "data", n=8)
    out = tmp_path / "run"
    assert main(["train", "--recipe", "ghostmixnet-cifar10", "--set", TINY_MODEL, "--set", "epochs=1",
                 "--set", "batch_size=8", "--set", "workers=1", "--set", "download=false", "--set", "threads=1",
                 "--data-dir", str(tmp_path / "data"), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "cifar10" and res["val_is_test"] and res["num_classes"] == 10
    assert len((out / "metrics.csv").read_text().splitlines()) == 2


def test_menest_recipe_on_a_cifar100_fixture(tmp_path):
    """128 px stand-in, resize to the training size, RandAugment magnitude 10, 95:5 split (tiny model and size)."""
    from test_data import _write_cifar100

    _write_cifar100(tmp_path / "data", n=40)
    out = tmp_path / "run"
    assert main(["train", "--recipe", "menest-cifar100", "--set", "model=ghostmixnet", "--set", TINY_MODEL,
                 "--set", "image_size=48", "--set", "epochs=1", "--set", "batch_size=8", "--set", "workers=0",
                 "--set", "download=false", "--set", "threads=1", "--data-dir", str(tmp_path / "data"),
                 "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    model, meta = ghostnest.load_checkpoint(out)
    assert meta["input_size"] == 48 and meta["num_classes"] == 100 and meta["dataset"] == "cifar100_128"
    res = json.loads((out / "results.json").read_text())
    assert res["image_size"] == 48 and not res["val_is_test"]


@pytest.mark.parametrize("recipe, extra, num_classes, drop_rate", [
    ("ghostmixnet-cifar10", [], 10, 0.2),                                       # the published head's dropout
    ("ghostmixnet-cifar10", ["--set", "model_kwargs.drop_rate=0.1"], 10, 0.1),
    ("menest-cifar100", ["--set", "model=menest_ghost_m"], 100, 0.3),           # the size's own default
    ("menest-cifar100", ["--set", "model=efficientnetv2_s"], 100, 0.0),         # timm's: as timm keeps it
])
def test_recipes_show_prints_the_resolved_model_options(recipe, extra, num_classes, drop_rate, capsys):
    assert main(["recipes", "show", recipe, *extra, "--json"]) == 0
    options = json.loads(capsys.readouterr().out)["model_options"]
    assert options["num_classes"] == num_classes and options["drop_rate"] == drop_rate


def test_resume_reads_a_config_with_model_options(run, tmp_path):
    """config.yaml's model_options are derived: a run that has them (and one written before them) resumes."""
    import shutil

    import yaml

    for keep in (True, False):
        copy = tmp_path / f"copy{keep}"
        shutil.copytree(run, copy)
        (copy / "results.json").unlink()
        cfg = yaml.safe_load((copy / "config.yaml").read_text())
        if not keep:
            cfg.pop("model_options")
        (copy / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert main(["train", "--resume", str(copy), "--set", "epochs=3", "--device", "cpu", "--quiet"]) == 0
        assert len((copy / "metrics.csv").read_text().splitlines()) == 4


def test_resume_and_eval_a_run_written_before_the_state_file_held_weights(run, tmp_path, capsys):
    """Runs whose last.state.pt has no weights nor metrics rows (the first format): resume takes the weights from
    last.safetensors and the rows from metrics.csv, then trains on and evaluates as any run."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / "results.json").unlink()
    state = torch.load(old / "last.state.pt", weights_only=True)
    for key in ("model", "rows"):
        state.pop(key)
    torch.save(state, old / "last.state.pt")
    assert main(["train", "--resume", str(old), "--set", "epochs=3", "--device", "cpu", "--quiet"]) == 0
    assert [line.split(",")[0] for line in (old / "metrics.csv").read_text().splitlines()] == ["epoch", "1", "2", "3"]
    capsys.readouterr()
    assert main(["eval", str(old), "--device", "cpu", "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["top1"] <= 100
