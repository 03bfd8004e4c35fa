"""Export: ONNX (checked, run in onnxruntime), torch.export and safetensors, with embedded metadata."""
import pytest
import torch
from safetensors.torch import load_file

import ghostnest
from ghostnest.export import OnnxClassifier, export_model, read_metadata

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
    with pytest.raises(Exception):
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
