"""Export: ONNX (checked, run in onnxruntime), torch.export and safetensors, with embedded metadata."""
import pytest
import torch
from safetensors.torch import load_file

import ghostnest
from ghostnest.export import OnnxClassifier, export, export_model, read_metadata
from helpers import calibrate_bn

META = {"model": "ghostmixnet", "class_names": [f"c{i}" for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture(scope="module")
def small_ghostmixnet():
    torch.manual_seed(0)
    model = ghostnest.create_model("ghostmixnet", depths=(1, 1, 1)).eval()
    # non-trivial BN statistics, so a wrong BN handling in the export would show
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def test_onnx_dynamic_batch_parity_and_metadata(small_ghostmixnet, tmp_path):
    path = export_model(small_ghostmixnet, "onnx", tmp_path / "m.onnx", 32, META)
    runner = OnnxClassifier(path)
    assert runner.metadata == {**META, "input_size": 32}
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), small_ghostmixnet(x), atol=1e-4, rtol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind


def test_torch_export_round_trip(small_ghostmixnet, tmp_path):
    path = export_model(small_ghostmixnet, "torch-export", tmp_path / "m.pt2", 32, META)
    program = torch.export.load(str(path))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), small_ghostmixnet(x), atol=1e-5, rtol=1e-5)
    assert read_metadata(path)["class_names"] == META["class_names"]


def test_safetensors_round_trip(small_ghostmixnet, tmp_path):
    path = export_model(small_ghostmixnet, "safetensors", tmp_path / "m.safetensors", 32, META)
    fresh = ghostnest.create_model("ghostmixnet", depths=(1, 1, 1)).eval()
    fresh.load_state_dict(load_file(str(path)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), small_ghostmixnet(x), rtol=0, atol=0)
    assert read_metadata(path)["model"] == "ghostmixnet"


def test_fixed_batch_export(small_ghostmixnet, tmp_path):
    path = export_model(small_ghostmixnet, "onnx", tmp_path / "m.onnx", 32, META, batch=4)
    assert OnnxClassifier(path).session.get_inputs()[0].shape[0] == 4


def test_unsupported_format_and_bad_batch_write_nothing(small_ghostmixnet, tmp_path):
    with pytest.raises(ValueError, match="unsupported export format 'tflite'"):
        export_model(small_ghostmixnet, "tflite", tmp_path / "m.tflite", 32, META)
    with pytest.raises(ValueError, match="batch=0"):
        export_model(small_ghostmixnet, "onnx", tmp_path / "m.onnx", 32, META, batch=0)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_previous_file(small_ghostmixnet, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(ValueError, match="cannot export at input size 8: .*>= 32"):
        export_model(small_ghostmixnet, "onnx", target, 8, META)  # 8x8 is below GhostMixNet's minimum input
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_read_metadata_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="not a readable exported model"):
        read_metadata(bad)


# --- the `export` command on a real (tiny) training run, and `predict` on the exported file ------------------------

TINY = ["--set", "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}",
        "--set", "dataset=fake:classes=4,size=16,train=48,test=16", "--set", "batch_size=16",
        "--set", "val_fraction=0.25", "--set", "workers=0", "--set", "epochs=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from ghostnest.cli import main

    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["train", "--recipe", "quickstart", *TINY, "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    return out


def test_export_checkpoint_carries_its_metadata_and_predicts_the_same(run, tmp_path, capsys):
    import csv

    from PIL import Image

    from ghostnest.cli import main
    from ghostnest.train.checkpoint import load_checkpoint

    model, meta = load_checkpoint(run)
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(onnx_path)]) == 0
    exported = read_metadata(onnx_path)
    for key in ("model", "model_kwargs", "num_classes", "classes", "input_size", "mean", "std"):
        assert exported[key] == meta[key], key
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(OnnxClassifier(onnx_path)(x), model(x), atol=1e-4, rtol=1e-4)

    images = tmp_path / "images"
    images.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(5):
        pixels = torch.randint(0, 256, (20, 20, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(images / f"img{i}.png")
    assert main(["predict", str(run), str(images), "--out", str(tmp_path / "torch.csv"), "--device", "cpu"]) == 0
    assert main(["predict", str(onnx_path), str(images), "--out", str(tmp_path / "onnx.csv")]) == 0
    ours = list(csv.DictReader(open(tmp_path / "torch.csv")))
    theirs = list(csv.DictReader(open(tmp_path / "onnx.csv")))
    assert len(ours) == 5 and [r["ID"] for r in ours] == [r["ID"] for r in theirs]
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert abs(float(a["confidence"]) - float(b["confidence"])) < 1e-4


def test_export_torch_and_safetensors_from_a_run(run, tmp_path):
    from ghostnest.cli import main

    assert main(["export", str(run), "--format", "torch-export", "--out", str(tmp_path / "m.pt2"), "--batch", "2"]) == 0
    program = torch.export.load(str(tmp_path / "m.pt2"))
    assert program.module()(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    assert main(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "w.safetensors")]) == 0
    assert read_metadata(tmp_path / "w.safetensors")["num_classes"] == 4


def test_export_by_model_name_and_errors(tmp_path, capsys):
    from ghostnest.cli import main

    out = tmp_path / "g.safetensors"
    assert main(["export", "ghostmixnet", "--format", "safetensors", "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["model"] == "ghostmixnet" and meta["input_size"] == 32 and meta["trained"] is False
    capsys.readouterr()

    assert main(["export", "ghostmixnett", "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ghostmixnett is neither a checkpoint") and "Did you mean: ghostmixnet" in err
    assert main(["export", "ghostmixnet", "--format", "onnx", "--batch", "0", "--out", str(tmp_path / "y.onnx")]) == 2
    assert "batch=0 must be 'dynamic' or a positive integer" in capsys.readouterr().err
    assert main(["export", "ghostmixnet", "--format", "onnx", "--input", "8", "--out", str(tmp_path / "s.onnx")]) == 2
    err = capsys.readouterr().err  # the model's own check, not the exporter's trace
    assert err.splitlines() == [
        "error: cannot export at input size 8: GhostMixNet expects (N, 3, H, W) input with H, W >= 32; got (1, 3, 8, 8)"]
    with pytest.raises(SystemExit):  # 0 is not "the default size"
        main(["export", "ghostmixnet", "--format", "onnx", "--input", "0", "--out", str(tmp_path / "0.onnx")])
    assert "argument --input: must be a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--input 0 must be a positive image size"):  # the Python API too
        export("ghostmixnet", "onnx", tmp_path / "0.onnx", input_size=0)
    with pytest.raises(SystemExit):  # argparse rejects an unsupported format before anything runs
        main(["export", "ghostmixnet", "--format", "tflite", "--out", str(tmp_path / "z.tflite")])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]  # no partial files


def test_export_checkpoint_of_unknown_model_is_a_clear_error(run, tmp_path, capsys):
    import json

    from safetensors.torch import load_file, save_file

    from ghostnest.cli import main

    src = run / "best.safetensors"
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = json.loads(f.metadata()["ghostnest"])
    meta["model"] = "resnet9000"
    forged = tmp_path / "forged.safetensors"
    save_file(load_file(str(src)), str(forged), metadata={"ghostnest": json.dumps(meta)})
    assert main(["export", str(forged), "--format", "onnx", "--out", str(tmp_path / "f.onnx")]) == 2
    assert "unknown model 'resnet9000'" in capsys.readouterr().err
    assert not (tmp_path / "f.onnx").exists()


def test_menest_ghost_s_onnx_parity(tmp_path):
    torch.manual_seed(0)
    model = calibrate_bn(ghostnest.create_model("menest_ghost_s", num_classes=100), 64)
    path = export_model(model, "onnx", tmp_path / "s.onnx", 64, {"model": "menest_ghost_s"})
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    assert expected.std() > 1e-2  # a real signal
    torch.testing.assert_close(OnnxClassifier(path)(x), expected, atol=1e-4, rtol=1e-4)


def test_export_fuse_flag_matches_unfused(tmp_path):
    from ghostnest.cli import main

    assert main(["export", "ghostmixnet", "--format", "onnx", "--fuse", "--out", str(tmp_path / "f.onnx")]) == 0
    meta = read_metadata(tmp_path / "f.onnx")
    assert meta["fused"] is True
    torch.manual_seed(0)
    model = calibrate_bn(ghostnest.create_model("ghostmixnet"), 32)
    fused_path = export_model(ghostnest.fuse(model, fast_mish=False), "onnx", tmp_path / "g.onnx", 32, META)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    assert expected.std() > 1e-2
    torch.testing.assert_close(OnnxClassifier(fused_path)(x), expected, atol=1e-4, rtol=1e-4)


def test_bench_times_onnxruntime_beside_torch():
    from ghostnest.bench import bench_models

    tiny = {"widths": [8, 16, 16], "stem_width": 8, "depths": [1, 1, 1]}
    rows = bench_models(["ghostmixnet"], input_size=32, batch=2, repeats=2, warmup=1, device="cpu",
                        model_kwargs=tiny, fuse=True, runtime="onnxruntime")
    assert [r["name"] for r in rows] == ["ghostmixnet", "ghostmixnet [onnxruntime]"]
    assert all(r["median_ms"] > 0 and r["images_per_s"] > 0 for r in rows)
    assert rows[0]["ratio_to_first"] == 1.0 and rows[1]["params"] == rows[0]["params"]
    with pytest.raises(ValueError, match="--runtime onnxruntime times CPU fp32 inference"):
        bench_models(["ghostmixnet"], mode="train", device="cpu", runtime="onnxruntime", model_kwargs=tiny)


def test_onnx_export_of_the_onnxruntime_layout_is_exact_and_has_no_softplus(tmp_path):
    """An ONNX file computes Mish by the exact formula (onnxruntime's own Mish runs through a slow Softplus), and the
    MixConv layout for onnxruntime (merged narrow groups, split wide ones) exports and matches the unfused model."""
    import onnx
    import onnxruntime as ort

    from test_fuse import _calibrate_block, _ort_chain

    model = _calibrate_block(_ort_chain(), 3)
    fused = ghostnest.fuse(model, fast_mish=False, runtime="onnxruntime")
    path = export_model(fused, "onnx", tmp_path / "c.onnx", 12, {"model": "chain"}, batch=2)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops.isdisjoint({"Mish", "Softplus"}) and "Exp" in ops
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        expected = model(x)
    assert expected.std() > 1e-2
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)
