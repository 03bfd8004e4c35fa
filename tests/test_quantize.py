"""int8 deployment: post-training static quantization (``ghostnest export --int8``), evaluation of exported files
(``ghostnest eval RUN --model-file``), prediction with int8 files, and the bad inputs of each.

One small GhostMixNet is trained for 2 epochs on the real digits data (a few seconds); every test reuses it.
"""
import csv
import json

import onnx
import pytest
import torch

import ghostnest
from ghostnest.cli import main
from ghostnest.export import OnnxClassifier, export_model, read_metadata
from ghostnest.quantize import nodes_in_groups, rewrite_for_int8
from helpers import calibrate_bn, load_benchmark_script

SMALL = ["--set", "model_kwargs={widths: [16, 32, 32], stem_width: 16, depths: [1, 1, 1], pool_size: 1}",
         "--set", "image_size=16", "--set", "epochs=2", "--set", "lr=3e-3", "--set", "threads=2"]
# Agreement floor of int8 with the fp32 checkpoint on the 360 digits test images: PTQ of this small network changes
# 0-2 predictions in practice (docs/deployment.md); 98% leaves room for onnxruntime builds that round differently.
AGREEMENT_FLOOR = 0.98
# the IR version of the graphs built by hand below: onnx's own default follows the newest onnx (IR 14 in onnx 1.23),
# which older onnxruntime releases refuse (1.30, on the GPU image, reads up to IR 13); opset 18 needs IR 8 or more
IR_VERSION = 10


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantize") / "run"
    assert main(["train", "--recipe", "quickstart", *SMALL, "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def files(run, tmp_path_factory):
    """(fp32 file, int8 file) exported from ``run``."""
    d = tmp_path_factory.mktemp("files")
    assert main(["export", str(run), "--format", "onnx", "--fuse", "--out", str(d / "m.onnx")]) == 0
    assert main(["export", str(run), "--format", "onnx", "--int8", "--calib-images", "256",
                 "--out", str(d / "m.int8.onnx")]) == 0
    return d / "m.onnx", d / "m.int8.onnx"


def test_int8_metadata_round_trip_and_size(run, files):
    fp32, int8 = files
    meta, qmeta = read_metadata(fp32), read_metadata(int8)
    assert {k: v for k, v in qmeta.items() if k != "int8"} == meta  # the fp32 export's metadata, unchanged
    q = qmeta["int8"]
    assert q["format"] == "QDQ" and q["float_layers"] == ["classifier", "mish"]
    assert q["calibration"]["dataset"] == "digits" and q["calibration"]["split"] == "train"
    assert q["calibration"]["images"] == 256 and q["calibration"]["method"] == "minmax"
    assert q["calibration"]["of"] == 1293  # the run's training split: its 144 validation images held out
    assert OnnxClassifier(int8).int8 and not OnnxClassifier(fp32).int8
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops
    # 0.29x on the full-size GhostMixNet; in a network this small the per-node overhead (names, scales) weighs more
    assert int8.stat().st_size < 0.8 * fp32.stat().st_size


def test_eval_model_file_reports_like_the_checkpoint(run, files, capsys):
    fp32, int8 = files
    assert main(["eval", str(run), "--device", "cpu", "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--model-file", str(fp32), "--json"]) == 0
    r32 = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--model-file", str(int8), "--json"]) == 0
    r8 = json.loads(capsys.readouterr().out)
    for r in (r32, r8):
        assert set(ref) - {"checkpoint"} <= set(r)  # the same report: top-1, top-5, per class, confusion matrix
        assert r["images"] == ref["images"] == 360 and r["checkpoint_top1"] == pytest.approx(ref["top1"])
    assert r32["precision"] == "fp32" and r8["precision"] == "int8" and r8["int8"]["calibration"]["images"] == 256
    assert r32["predictions_differ"] == 0 and r32["top1"] == pytest.approx(ref["top1"])
    # parity of the int8 graph with fp32 on real digits: top-1 agreement above the floor
    assert ref["top1"] > 70  # a trained network (94% in 2 epochs), so agreement means something
    assert 1 - r8["predictions_differ"] / r8["images"] >= AGREEMENT_FLOOR
    assert abs(r8["top1"] - ref["top1"]) <= 100 * (1 - AGREEMENT_FLOOR)
    assert (int8.parent / "m.int8.eval.json").is_file() and (int8.parent / "m.int8.confusion.png").is_file()
    assert main(["eval", str(run), "--model-file", str(int8)]) == 0
    text = capsys.readouterr().out
    assert "(int8, onnxruntime)" in text and "test predictions differ from the fp32 checkpoint" in text


def test_predict_with_int8_file(run, files, tmp_path):
    from PIL import Image

    from ghostnest.data import load_dataset

    test = load_dataset("digits").test
    images = tmp_path / "images"
    images.mkdir()
    for i in range(8):
        Image.fromarray(test.images[i].permute(1, 2, 0).numpy()).save(images / f"d{i}.png")
    fp32, int8 = files
    assert main(["predict", str(fp32), str(images), "--out", str(tmp_path / "a.csv")]) == 0
    assert main(["predict", str(int8), str(images), "--out", str(tmp_path / "b.csv")]) == 0
    a, b = (list(csv.DictReader(open(tmp_path / f))) for f in ("a.csv", "b.csv"))
    assert [r["ID"] for r in a] == [r["ID"] for r in b] and len(b) == 8
    assert sum(x["label"] == y["label"] for x, y in zip(a, b, strict=True)) >= 7


def test_int8_from_a_checkpoint_file_with_options(run, tmp_path):
    out = tmp_path / "c.int8.onnx"
    assert main(["export", str(run / "best.safetensors"), "--format", "onnx", "--int8", "--calib-images", "64",
                 "--calib-method", "percentile", "--float-layers", "se,classifier", "--batch", "4",
                 "--out", str(out)]) == 0
    q = read_metadata(out)["int8"]
    assert q["calibration"]["images"] == 64 and q["calibration"]["method"] == "percentile"
    assert q["float_layers"] == ["se", "classifier"]
    assert q["weights"] == "int8 per-channel symmetric, [-64, 64]"  # the 7-bit grid (ghostnest.quantize.REDUCE_RANGE)
    runner = OnnxClassifier(out)
    assert runner.fixed_batch == 4 and runner(torch.randn(6, 3, 16, 16)).shape == (6, 10)  # split and padded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.int8.onnx"]


def test_bad_inputs_are_one_line_errors_and_write_nothing(run, files, tmp_path, capsys):
    fp32, _ = files

    def error(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        return err

    assert "use --format onnx" in error(["export", str(run), "--format", "torch-export", "--int8",
                                         "--out", str(tmp_path / "a.pt2")])
    assert "no training data set recorded" in error(["export", "ghostmixnet", "--format", "onnx", "--int8",
                                                      "--out", str(tmp_path / "b.onnx")])
    assert "apply to --int8 exports only" in error(["export", str(run), "--format", "onnx", "--calib-images", "8",
                                                     "--out", str(tmp_path / "c.onnx")])
    assert "unknown layer group" in error(["export", str(run), "--format", "onnx", "--int8", "--float-layers", "fc",
                                           "--out", str(tmp_path / "d.onnx")])
    assert "--calib-images 0" in error(["export", str(run), "--format", "onnx", "--int8", "--calib-images", "0",
                                        "--out", str(tmp_path / "e.onnx")])
    # a run whose data set is not on disk (and cannot be downloaded: download is off for calibration)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(run / "best.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["ghostnest"])
    forged = tmp_path / "ckpt" / "cifar.safetensors"
    forged.parent.mkdir()
    save_file(load_file(str(run / "best.safetensors")), str(forged),
              metadata={"ghostnest": json.dumps({**meta, "dataset": "cifar10"})})
    error(["export", str(forged), "--format", "onnx", "--int8", "--data-dir", str(tmp_path / "nodata"),
           "--out", str(tmp_path / "f.onnx")])
    # corrupt model file, and files made for another class count or input size
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    assert "not a readable exported model" in error(["eval", str(run), "--model-file", str(bad)])
    other = onnx.load(str(fp32))
    entry = next(p for p in other.metadata_props if p.key == "ghostnest")
    entry.value = json.dumps({**json.loads(entry.value), "num_classes": 4})
    onnx.save(other, str(tmp_path / "four.onnx"))
    assert "exported for 4 classes" in error(["eval", str(run), "--model-file", str(tmp_path / "four.onnx")])
    entry.value = json.dumps({**json.loads(entry.value), "num_classes": 10, "input_size": 40})
    onnx.save(other, str(tmp_path / "big.onnx"))
    assert "takes 40x40 images" in error(["eval", str(run), "--model-file", str(tmp_path / "big.onnx")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "big.onnx", "ckpt", "four.onnx"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["cifar.safetensors"]


def test_rewrite_for_int8_is_exact_and_groups_are_found(tmp_path):
    torch.manual_seed(0)
    model = calibrate_bn(ghostnest.create_model("ghostmixnet", widths=(16, 32, 32), stem_width=16,
                                                depths=(1, 1, 1)), 32)
    path = export_model(ghostnest.fuse(model, fast_mish=False), "onnx", tmp_path / "f.onnx", 32, {"model": "g"})
    proto = onnx.load(str(path))
    # per SE: mean, conv, relu, conv, sigmoid, mul
    assert nodes_in_groups(proto, ["classifier"]) and len(nodes_in_groups(proto, ["se"])) == 3 * 6
    counts = rewrite_for_int8(proto)
    assert counts == {"BatchNormalization": 3, "Mul+Add": 3, "ReduceMean": 3, "Mish": 0}
    assert {n.op_type for n in proto.graph.node}.isdisjoint({"BatchNormalization", "ReduceMean"})
    onnx.save(proto, str(tmp_path / "r.onnx"))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    assert expected.std() > 1e-2
    torch.testing.assert_close(OnnxClassifier(tmp_path / "f.onnx")(x), expected, atol=1e-4, rtol=1e-4)
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_mish_rewrite_is_exact():
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Mish", ["x"], ["y"], name="m")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 50])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 50])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION)
    x = np.linspace(-60, 60, 300, dtype=np.float32).reshape(1, 2, 3, 50)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert rewrite_for_int8(proto)["Mish"] == 1 and "Mish" not in {n.op_type for n in proto.graph.node}
    assert set(nodes_in_groups(proto, ["mish"])) == {n.name for n in proto.graph.node}
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isfinite(got).all()


def test_bench_model_files_times_fp32_and_int8_beside_torch(files):
    from ghostnest.bench.model_files import bench_model_files

    fp32, int8 = files
    rows = bench_model_files([fp32, int8], batch=2, threads=1, repeats=2, warmup=1)
    assert [r["runtime"] for r in rows] == ["torch", "onnxruntime", "onnxruntime"]
    assert [r["precision"] for r in rows] == ["fp32", "fp32", "int8"]
    assert rows[2]["bytes"] == int8.stat().st_size and all(r["images_per_s"] > 0 for r in rows)
    from ghostnest.bench import format_table

    assert "m.int8.onnx [onnxruntime]" in format_table(rows)  # what `ghostnest bench` prints
    with pytest.raises(ValueError, match="no model file"):
        bench_model_files([])


def test_bench_cli_times_model_files(files, capsys):
    from ghostnest.cli import main

    fp32, int8 = files
    assert main(["bench", "--model-file", str(fp32), "--model-file", str(int8), "--batch", "2", "--threads", "1",
                 "--repeats", "2", "--warmup", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["precision"] for r in rows] == ["fp32", "fp32", "int8"] and rows[0]["ratio_to_first"] == 1.0
    assert main(["bench", "ghostmixnet", "--model-file", str(fp32)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "drop the model names" in err and "\n" not in err


def test_menest_blocks_quantize_with_mish_in_float_and_no_dequantized_constants(tmp_path):
    """ME-NeSt-Ghost blocks (Split-Attention, SE with Mish inside, Mix-GhostConv) through the whole int8 path: every
    Mish node stays float, including the one inside the Squeeze-Excitation (groups ``se`` and ``mish`` both hold
    it), no float node reads a constant through a ``DequantizeLinear`` (constants that onnxruntime's optimiser
    merged are copied apart first), the weights lie on the 7-bit grid, and the int8 output follows the fp32 one in
    onnxruntime's own int8 kernels (with full 8-bit weights they overflow their 16-bit sums on CPUs without VNNI:
    a mean error of 23% of the output here, against 5%)."""
    import numpy as np
    import onnxruntime as ort

    from ghostnest.quantize import WEIGHT_QMAX, node_groups, quantize_onnx
    from test_fuse import _calibrate_block, _ort_chain

    model = _calibrate_block(_ort_chain(), 3)
    fused = ghostnest.fuse(model, fast_mish=False, runtime="onnxruntime")
    fp32 = export_model(fused, "onnx", tmp_path / "c.onnx", 12, {"model": "chain"}, batch=2)
    proto = onnx.load(str(fp32))
    assert any(node_groups(n) == {"se", "mish"} for n in proto.graph.node)
    calib = torch.randn(16, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    q = onnx.load(str(quantize_onnx(fp32, tmp_path / "c.int8.onnx", calib)))
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    inner = {o for n in q.graph.node for o in n.output if ".mish." in o}  # the formula's intermediate tensors
    assert inner and not inner & quantized
    inits = {i.name for i in q.graph.initializer}
    const_dq = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    float_nodes = [n for n in q.graph.node if n.op_type in ("Min", "Exp", "Add", "Div", "Mul") and ".mish" in n.name]
    assert float_nodes and not any(set(n.input) & const_dq for n in float_nodes)
    weights = [onnx.numpy_helper.to_array(i) for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == WEIGHT_QMAX
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2)).numpy()
    want, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                 for p in (fp32, tmp_path / "c.int8.onnx"))
    assert np.abs(got - want).mean() < 0.1 * np.abs(want).mean()


def test_unshare_initializers_copies_constants_for_float_nodes_only():
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from ghostnest.onnx_graph import unshare_initializers

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["a"], name="quantized"),
         helper.make_node("Add", ["a", "two"], ["y"], name="float")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION)
    assert unshare_initializers(proto, {"float"}) == 1
    nodes = {n.name: n for n in proto.graph.node}
    assert nodes["quantized"].input[1] == "two" and nodes["float"].input[1] != "two"
    assert unshare_initializers(proto, {"float"}) == 0  # nothing shared any more
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.array([1, 2, 3], np.float32)})[0]
    np.testing.assert_array_equal(got, [4, 6, 8])


def test_int8_runtimes_table_from_results(tmp_path, capsys):
    """benchmarks/int8_runtimes.py renders its table (ratio ME-NeSt-Ghost-S over EfficientNet-V2-S per runtime and
    precision, '-' for a missing case, the skipped runtimes named) from a results file into a marked block."""
    mod = load_benchmark_script("int8_runtimes")

    def row(model, dtype, runtime, ms):
        return dict(name=f"{model} {dtype} [{runtime}]", model=model, dtype=dtype, runtime=runtime, median_ms=ms,
                    iqr_ms=0.1, min_ms=ms, first_call_ms=ms)

    res = dict(cpu="Test CPU", date="2026-01-01", versions={"torch": "2.x", "onnxruntime": "1.y"},
               skipped=["openvino"], rows=[row("menest_ghost_s", "fp32", "onnxruntime", 30.0),
                                           row("efficientnetv2_s", "fp32", "onnxruntime", 20.0),
                                           row("menest_ghost_s", "int8", "onnxruntime", 25.0),
                                           row("efficientnetv2_s", "int8", "inductor", 12.0)])
    results, doc = tmp_path / "r.json", tmp_path / "doc.md"
    results.write_text(json.dumps(res))
    assert mod.main(["--from-results", str(results), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("<!-- int8-runtimes:begin -->") and "onnxruntime 1.y" in text
    assert "| onnxruntime | 30.0 | 20.0 | 1.50x | 25.0 | - | - |" in text
    assert "| inductor | - | - | - | - | 12.0 | - |" in text
    assert "Not measured (package not installed): openvino." in text
    assert "1.50x" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        mod.main(["--repeats", "0"])
