"""`ghostnest bench`: tiny GhostMixNets timed for real (a few seconds on two shared cores)."""
from __future__ import annotations

import json

import pytest
import torch

from ghostnest import create_model
from ghostnest.bench import RESULT_KEYS, _make_step, _percentile, bench_models
from ghostnest.cli import main

TINY = dict(depths=(1, 1, 1), widths=(8, 16, 32), stem_width=8)


def _check_row(row: dict, batch: int) -> None:
    assert set(RESULT_KEYS) <= set(row)
    assert row["median_ms"] > 0 and row["images_per_s"] > 0
    assert row["images_per_s"] == pytest.approx(batch * 1000 / row["median_ms"])
    assert row["min_ms"] <= row["p25_ms"] <= row["median_ms"] <= row["p75_ms"] <= row["max_ms"]
    assert row["iqr_ms"] == pytest.approx(row["p75_ms"] - row["p25_ms"])
    assert row["gflops"] > 0 and row["params"] > 0
    assert row["peak_mem_mb"] is not None and row["peak_mem_mb"] >= 0
    assert row["first_call_ms"] > 0


def test_bench_infer_two_tiny_models():
    rows = bench_models(
        ["ghostmixnet", "ghostmixnet_resnet"], input_size=32, batch=4, repeats=3, warmup=1, model_kwargs=TINY,
        device="cpu",
    )
    assert [r["name"] for r in rows] == ["ghostmixnet", "ghostmixnet_resnet"]
    for r in rows:
        _check_row(r, 4)
        assert (r["mode"], r["device"], r["input_size"], r["batch"], r["num_classes"]) == ("infer", "cpu", 32, 4, 10)
        assert r["repeats"] == 3 and r["fused"] is False
    assert rows[0]["ratio_to_first"] == 1.0
    assert rows[1]["ratio_to_first"] == pytest.approx(rows[1]["median_ms"] / rows[0]["median_ms"])
    assert rows[0]["min_ratio_to_first"] == 1.0
    assert rows[1]["min_ratio_to_first"] == pytest.approx(rows[1]["min_ms"] / rows[0]["min_ms"])
    # parameters are those of the tiny networks, not the full-size ones
    for r in rows:
        assert r["params"] == sum(p.numel() for p in create_model(r["name"], **TINY).parameters())
    assert rows[0]["params"] < 100_000
    # plain 3x3 convolutions cost more than Ghost modules of the same widths
    assert rows[1]["gflops"] > rows[0]["gflops"]


def test_bench_train_mode_and_options():
    rows = bench_models(
        ["ghostmixnet"], input_size=32, batch=4, mode="train", repeats=2, warmup=1, num_classes=7,
        model_kwargs=TINY, device="cpu", threads=1,
    )
    (r,) = rows
    _check_row(r, 4)
    assert r["mode"] == "train" and r["num_classes"] == 7 and r["threads"] == 1
    assert r["ratio_to_first"] == 1.0
    assert r["mem_kind"].startswith("cpu_")


def test_train_step_updates_weights_and_infer_step_does_not():
    torch.manual_seed(0)
    model = create_model("ghostmixnet", num_classes=3, **TINY)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    before = [p.detach().clone() for p in model.parameters()]
    model.eval()
    _make_step(model, "infer", x, y, torch.device("cpu"), torch.float32)()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.train()
    _make_step(model, "train", x, y, torch.device("cpu"), torch.float32)()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_percentile():
    assert _percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0
    assert _percentile([1.0, 2.0], 0.5) == 1.5
    assert _percentile([7.0], 0.75) == 7.0


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(names=["ghostmixnett"]), "unknown model"),
        (dict(names=["ghostmixnet"], batch=0), "--batch"),
        (dict(names=["ghostmixnet"], repeats=0), "--repeats"),
        (dict(names=["ghostmixnet"], warmup=0), "--warmup"),
        (dict(names=["ghostmixnet"], mode="fit"), "mode"),
        (dict(names=["ghostmixnet"], mode="train", batch=1), "--batch 2"),
        (dict(names=["ghostmixnet"], dtype="fp8"), "dtype"),
        (dict(names=["ghostmixnet"], fuse=True, mode="train", batch=2), "inference only"),
        (dict(names=[]), "model"),
    ],
)
def test_bench_bad_input(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        bench_models(**{"repeats": 1, **kwargs}, model_kwargs=TINY, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
def test_bench_cuda_without_gpu():
    with pytest.raises(ValueError, match="--device cpu"):
        bench_models(["ghostmixnet"], device="cuda")


def test_cli_bench_json(capsys):
    assert main(["bench", "ghostmixnet", "--batch", "1", "--repeats", "1", "--warmup", "1", "--device", "cpu",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1
    for key in ("name", "params", "gflops", "median_ms", "images_per_s", "ratio_to_first"):
        assert key in rows[0]
    assert rows[0]["params"] == 3_041_466 and rows[0]["input_size"] == 32


def test_cli_bench_errors_are_one_line(capsys):
    assert main(["bench", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model") and err.count("\n") == 1
    assert main(["bench", "ghostmixnet", "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err


def test_bench_data_pipeline_with_augmentation_and_mixing():
    from ghostnest.bench import bench_data

    row = bench_data("ghostmixnet-cifar10", ["dataset=fake:size=32,train=256"], batches=3, warmup=1, workers=0,
                     batch=16, device="cpu")
    assert row["recipe"] == "ghostmixnet-cifar10" and row["dataset"].startswith("fake")
    assert row["batch"] == 16 and row["batches"] == 3 and row["mixing"] is True
    assert "AutoAugment" in row["augment"] and row["batches_per_epoch"] == 16
    assert row["images_per_s"] > 0 and row["min_ms"] <= row["median_batch_ms"] <= row["max_ms"]


def test_cli_bench_data(capsys, tmp_path):
    assert main(["bench", "--data", "quickstart", "--repeats", "2", "--warmup", "0", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["dataset"] == "digits" and row["mixing"] is False and row["images_per_s"] > 0
    # the data set is not on disk: one line naming where to put it, exit 2
    assert main(["bench", "--data", "ghostmixnet-cifar10", "--set", f"data_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cifar10") and len([e for e in err if e.startswith("error")]) == 1
    assert main(["bench", "ghostmixnet", "--data", "quickstart"]) == 2
    assert main(["bench", "--data", "no_such_recipe"]) == 2
