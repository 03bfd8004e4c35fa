"""Hub folders: `ghostnest export RUN --format hub` writes what timm's hub loader reads; the folder, a run or a
.safetensors file load with `ghostnest.create_model(name, pretrained=PATH)`; eval/predict/export take the folder."""
import json
import shutil

import pytest
import timm
import torch

import ghostnest
from ghostnest.cli import main
from ghostnest.train.checkpoint import load_checkpoint

TINY = ["--set", "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}",
        "--set", "dataset=fake:classes=4,size=16,train=48,test=32", "--set", "batch_size=16",
        "--set", "val_fraction=0.25", "--set", "workers=0", "--set", "epochs=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "run"
    assert main(["train", "--recipe", "quickstart", *TINY, "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def hub(run):
    out = run.parent / "hub"
    assert main(["export", str(run), "--format", "hub", "--out", str(out)]) == 0
    return out


def _test_inputs(meta, path):
    from ghostnest.data.loader import ToModelInput
    from ghostnest.train.evaluate import test_split_of

    _, data, _ = test_split_of(meta, path, None, None)
    return ToModelInput(meta["mean"], meta["std"], meta["input_size"], torch.device("cpu"))(data.test.images)


def test_timm_loads_the_folder_with_the_same_predictions(run, hub):
    assert sorted(p.name for p in hub.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    ref, meta = load_checkpoint(run)
    model = timm.create_model(f"local-dir:{hub}", pretrained=True).eval()
    assert type(model) is type(ref) and model.num_classes == 4
    data = timm.data.resolve_data_config({}, model=model)
    assert data["input_size"] == (3, 16, 16) and list(data["mean"]) == meta["mean"]  # the run's preprocessing
    x = _test_inputs(meta, run)
    with torch.no_grad():
        assert (model(x).argmax(1) != ref(x).argmax(1)).sum().item() == 0  # 0 changed on the run's test split
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
    config = json.loads((hub / "config.json").read_text())
    assert config["architecture"] == "ghostmixnet" and config["label_names"] == meta["classes"]
    assert config["model_args"]["widths"] == [8, 16, 16] and config["ghostnest"]["recipe"] == "quickstart"
    card = (hub / "README.md").read_text()
    assert "library_name: timm" in card and "license: mit" in card and "GhostMixNet: More Features" in card
    assert f"{config['ghostnest']['results']['test_top1']:.2f}%" in card and 'local-dir:hub"' in card


def test_eval_predict_and_export_take_the_folder(run, hub, tmp_path, capsys):
    assert main(["eval", str(hub), "--out", str(tmp_path), "--json"]) == 0
    from_hub = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--out", str(tmp_path), "--json"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert from_hub["top1"] == from_run["top1"] and from_hub["dataset"] == from_run["dataset"]
    assert main(["export", str(hub), "--format", "safetensors", "--out", str(tmp_path / "w.safetensors")]) == 0
    model, meta = load_checkpoint(hub)
    assert meta["model"] == "ghostmixnet" and meta["num_classes"] == 4 and meta["input_size"] == 16


def test_create_model_loads_a_run_a_folder_or_a_safetensors_file(run, hub, tmp_path):
    from safetensors.torch import save_file

    ref, meta = load_checkpoint(run)
    x = _test_inputs(meta, run)
    save_file(ref.state_dict(), tmp_path / "plain.safetensors")  # no metadata: the caller's options say the rest
    sources = [(run, {}), (hub, {}), (run / "best.safetensors", {}),
               (tmp_path / "plain.safetensors", dict(num_classes=4, **meta["model_kwargs"]))]
    with torch.no_grad():
        for path, kwargs in sources:
            model = ghostnest.create_model("ghostmixnet", pretrained=path, **kwargs).eval()
            torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0, msg=str(path))
        features = ghostnest.create_model("ghostmixnet", pretrained=hub, features_only=True).eval()
        torch.testing.assert_close(features(x)[-1], ref.forward_features(x), rtol=0, atol=0)
    assert model.pretrained_cfg["file"] == str(tmp_path / "plain.safetensors")


def test_mismatches_are_one_line_errors(run, hub, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"holds a ghostmixnet, not a menest_ghost_s: call create_model\('ghostmixnet'"):
        ghostnest.create_model("menest_ghost_s", pretrained=hub)
    with pytest.raises(ValueError, match="has 4 classes, not num_classes=7: leave num_classes out"):
        ghostnest.create_model("ghostmixnet", pretrained=run, num_classes=7)
    bad = tmp_path / "bad"
    shutil.copytree(hub, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "num_classes": 10}))
    with pytest.raises(ValueError, match="config.json says 10 classes but model.safetensors holds a 4-class"):
        load_checkpoint(bad)
    (bad / "config.json").write_text(json.dumps({**config, "label_names": ["a", "b"]}))
    with pytest.raises(ValueError, match="names 2 labels for 4 classes"):
        load_checkpoint(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_checkpoint(bad)
    (bad / "config.json").unlink()
    assert main(["eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: hub folder {bad} lacks config.json; write it again with `ghostnest export "
                                "RUN --format hub --out DIR`"]


def test_hub_export_refuses_and_writes_nothing(run, hub, tmp_path, monkeypatch, capsys):
    assert main(["export", str(run), "--format", "hub", "--out", str(hub)]) == 2  # not an empty folder
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main(["export", "ghostmixnet", "--format", "hub", "--out", str(tmp_path / "h")]) == 2
    assert "a hub folder shares a trained model" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "hub", "--fuse", "--out", str(tmp_path / "h")]) == 2
    assert "drop --fuse" in capsys.readouterr().err

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(timm.models, "save_for_hf", broken)
    assert main(["export", str(run), "--format", "hub", "--out", str(tmp_path / "h")]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left behind


def test_predict_and_explain_take_the_folder(run, hub, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
    assert main(["predict", str(hub), str(images), "--out", str(tmp_path / "hub.csv")]) == 0
    assert main(["predict", str(run), str(images), "--out", str(tmp_path / "run.csv")]) == 0
    assert (tmp_path / "hub.csv").read_text() == (tmp_path / "run.csv").read_text()  # the same labels and confidences
    pytest.importorskip("pytorch_grad_cam", reason="explain needs the grad-cam package (the explain extra)")
    assert main(["explain", str(hub), str(images), "--out", str(tmp_path / "cams")]) == 0
    assert (tmp_path / "cams" / "grid.png").is_file() and len(json.loads(
        (tmp_path / "cams" / "explain.json").read_text())["images"]) == 3
