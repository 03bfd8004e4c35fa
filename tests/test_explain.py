"""`ghostnest explain`: class activation maps from the grad-cam package on every model family, and its bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ghostnest
from ghostnest.cli import main
from ghostnest.explain import METHODS, compute_cams, default_target_layer, explain, resolve_layer
from ghostnest.registry import list_models
from ghostnest.train.checkpoint import save_weights

pytest.importorskip("pytorch_grad_cam", reason="grad-cam is an optional extra: pip install 'ghostnest[explain]'")

CLASSES = ["zero", "one", "two", "three"]
TINY_GMN = {"widths": [8, 16, 16], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1}
TINY_MENEST = {"stages": [["ms", 1, 16, 1, 1], ["ms", 1, 16, 2, 4], ["ms_ghost", 1, 32, 2, 4]], "stem_width": 16,
               "num_features": 64}


def checkpoint(tmp_path, name="ghostmixnet", kwargs=None, size=16):
    torch.manual_seed(0)
    kwargs = TINY_GMN if kwargs is None and name == "ghostmixnet" else (kwargs or {})
    model = ghostnest.create_model(name, num_classes=len(CLASSES), **kwargs)
    path = tmp_path / f"{name}.safetensors"
    save_weights(path, model, {"model": name, "model_kwargs": kwargs, "num_classes": len(CLASSES), "classes": CLASSES,
                               "input_size": size, "mean": [0.5] * 3, "std": [0.25] * 3, "dataset": "fake"})
    return path


def images(tmp_path, n=3, size=20):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + i, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_explain_writes_maps_grid_and_predictions(tmp_path, capsys):
    ckpt, imgs, out = checkpoint(tmp_path), images(tmp_path), tmp_path / "cams"
    assert main(["explain", str(ckpt), str(imgs), "--out", str(out), "--target", "two", "--device", "cpu"]) == 0
    assert "wrote 3 map(s) (gradcam, layer stages.2)" in capsys.readouterr().out
    summary = json.loads((out / "explain.json").read_text())
    assert summary["layer"] == "stages.2" and summary["target"] == "two" and len(summary["images"]) == 3
    for rec in summary["images"]:
        png = out / rec["png"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        probs = [t["probability"] for t in rec["top5"]]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
        assert rec["predicted"] == rec["top5"][0]["class"] and 0 <= rec["target_probability"] <= 1
    assert (out / "grid.png").read_bytes()[:4] == b"\x89PNG"
    # the predictions are predict's (same preprocessing of the same files)
    assert main(["predict", str(ckpt), str(imgs), "--out", str(tmp_path / "p.csv"), "--device", "cpu"]) == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert [r.split(",")[2] for r in rows] == [rec["predicted"] for rec in summary["images"]]


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_maps_in_unit_range(tmp_path, method):
    model = ghostnest.create_model("ghostmixnet", num_classes=4, **TINY_GMN).eval()
    name, layer = resolve_layer(model, None)
    x = torch.randn(2, 3, 16, 16)
    cams = compute_cams(model, layer, x, [0, 3], method)
    assert cams.shape == (2, 16, 16) and cams.min() >= 0 and cams.max() <= 1 + 1e-6 and np.isfinite(cams).all()
    assert not any(h for m in model.modules() for h in (m._forward_hooks, m._backward_hooks) if h)  # hooks released


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_maps_follow_the_evidence_of_the_class(method):
    """Class 0 is scored by a red detector, class 1 by a green one; an image with a red square top-left and a green
    square bottom-right: the map of class 0 lights the red square, that of class 1 the green one."""

    class RedGreen(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1, bias=False))
            with torch.no_grad():
                self.stages[0].weight.zero_()
                self.stages[0].weight[0, 0] = 1.0  # channel 0: red
                self.stages[0].weight[1, 1] = 1.0  # channel 1: green

        def forward(self, x):
            return self.stages(x).mean((2, 3))

    x = torch.zeros(2, 3, 8, 8)
    x[:, 0, :4, :4] = 1.0
    x[:, 1, 4:, 4:] = 1.0
    model = RedGreen().eval()
    cams = compute_cams(model, model.stages[0], x, [0, 1], method)
    assert cams[0, :4, :4].min() > 0.5 and cams[0, 4:, 4:].max() < 0.5
    assert cams[1, 4:, 4:].min() > 0.5 and cams[1, :4, :4].max() < 0.5


# The last stage: GhostMixNet has 3 (its paper's Figure 1), ME-NeSt-Ghost and EfficientNet-V2 6 (S) or 7 (M, L, XL)
LAST_STAGE = {"ghostmixnet": "stages.2", "ghostmixnet_resnet": "stages.2", "ghostmixnet_resnet_se": "stages.2",
              "menest_ghost_s": "stages.5", "menest_ghost_m": "stages.6", "menest_ghost_l": "stages.6",
              "menest_ghost_xl": "stages.6", "efficientnetv2_s": "blocks.5", "efficientnetv2_m": "blocks.6",
              "efficientnetv2_l": "blocks.6", "efficientnetv2_xl": "blocks.6"}


@pytest.mark.parametrize("name", list_models())
def test_default_target_layer_is_the_last_stage_of_every_model(name):
    with torch.device("meta"):
        model = ghostnest.create_model(name)
    layer = default_target_layer(model)
    assert layer in dict(model.named_modules()) and resolve_layer(model, None)[0] == layer
    if name in LAST_STAGE:
        assert layer == LAST_STAGE[name]
    else:  # a model added later (a timm baseline): the last stage timm's feature_info names, or the last of stages
        assert layer.split(".")[0] in ("stages", "blocks", "layers") or layer == model.feature_info[-1]["module"]


@pytest.mark.parametrize("name,kwargs,size", [("menest_ghost_s", TINY_MENEST, 32), ("efficientnetv2_s", {}, 32)])
def test_explain_other_families(tmp_path, name, kwargs, size, device):
    ckpt = checkpoint(tmp_path, name, kwargs, size)
    r = explain(ckpt, [images(tmp_path, n=2)], tmp_path / "out", device=str(device))
    assert r["layer"] == ("stages.2" if name.startswith("menest") else "blocks.5")
    assert len(r["files"]) == 2 and all((tmp_path / "out" / rec["png"]).is_file() for rec in r["images"])


def test_explain_on_cuda_matches_cpu(tmp_path, device):
    if device.type != "cuda":
        pytest.skip("the CUDA comparison runs where CUDA is available")
    ckpt, imgs = checkpoint(tmp_path), images(tmp_path, n=2)
    cpu = explain(ckpt, [imgs], tmp_path / "cpu", device="cpu")
    gpu = explain(ckpt, [imgs], tmp_path / "gpu", device="cuda")
    for a, b in zip(cpu["images"], gpu["images"], strict=True):
        assert a["predicted"] == b["predicted"] and a["confidence"] == pytest.approx(b["confidence"], abs=1e-3)


def test_layer_override_by_module_name(tmp_path):
    r = explain(checkpoint(tmp_path), [images(tmp_path, n=1)], tmp_path / "out", layer="stages.1", device="cpu")
    assert r["layer"] == "stages.1"


@pytest.mark.parametrize("args,expected", [
    (["--method", "gradcamm"], "unknown CAM method 'gradcamm' (did you mean gradcam?)"),
    (["--target", "seven"], "--target 'seven' is not one of the model's 4 classes"),
    (["--target", "4"], "--target '4' is not one of the model's 4 classes"),
    (["--layer", "stages.9"], "no layer 'stages.9' in GhostMixNet; closest: stages.2"),
])
def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, capsys, args, expected):
    ckpt, imgs, out = checkpoint(tmp_path), images(tmp_path, n=1), tmp_path / "out"
    assert main(["explain", str(ckpt), str(imgs), "--out", str(out), "--device", "cpu", *args]) == 2
    assert expected in one_error_line(capsys)
    assert not out.exists()


def test_exported_file_or_file_as_out_dir_is_one_line(tmp_path, capsys):
    ckpt, imgs = checkpoint(tmp_path), images(tmp_path, n=1)
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    assert main(["explain", str(tmp_path / "m.onnx"), str(imgs), "--out", str(tmp_path / "o")]) == 2
    assert "explain needs the PyTorch model" in one_error_line(capsys) and not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("x")
    assert main(["explain", str(ckpt), str(imgs), "--out", str(tmp_path / "file")]) == 2
    assert "is a file; give a directory" in one_error_line(capsys)


def test_not_an_image_is_named_and_nothing_is_written(tmp_path, capsys):
    ckpt, imgs, out = checkpoint(tmp_path), images(tmp_path, n=2), tmp_path / "out"
    (imgs / "broken.png").write_text("not an image")
    assert main(["explain", str(ckpt), str(imgs), "--out", str(out), "--device", "cpu"]) == 2
    assert "broken.png" in one_error_line(capsys) and not out.exists()


def test_missing_grad_cam_says_how_to_install(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # import fails as if not installed
    out = tmp_path / "out"
    assert main(["explain", str(checkpoint(tmp_path)), str(images(tmp_path, n=1)), "--out", str(out)]) == 2
    assert "pip install 'ghostnest[explain]'" in one_error_line(capsys) and not out.exists()
