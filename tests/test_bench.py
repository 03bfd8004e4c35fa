"""`ghostnest bench`: tiny GhostMixNets timed for real (a few seconds on two shared cores)."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import load_benchmark_script

from ghostnest import create_model
from ghostnest.bench import (RESULT_KEYS, bench_models, bench_variants, format_data, format_table, make_step, percentile,
                             spread)
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
    text = format_table(rows)
    assert text.splitlines()[1].startswith("ghostmixnet ") and "ghostmixnet_resnet" in text
    assert "batch 4" in text and "3 interleaved rounds" in text and "compile" not in text


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


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_bench_variants_times_prebuilt_models_in_order(mode):
    torch.manual_seed(0)
    variants = [("tiny", create_model("ghostmixnet", **TINY)), ("tiny+cl", create_model("ghostmixnet", **TINY))]
    rows = bench_variants(variants, 32, 2, 10, mode=mode, device="cpu", channels_last=[False, True], repeats=3,
                          warmup=1)
    assert [r["name"] for r in rows] == ["tiny", "tiny+cl"]
    assert [r["channels_last"] for r in rows] == [False, True]
    for r in rows:
        assert r["mode"] == mode and r["repeats"] == 3 and len(r["times_ms"]) == 3
        assert all(t > 0 for t in r["times_ms"]) and r["first_call_ms"] > 0
        assert r["min_ms"] <= r["p25_ms"] <= r["median_ms"] <= r["p75_ms"] <= r["max_ms"]
        assert r["images_per_s"] == pytest.approx(2 * 1000 / r["median_ms"])
    assert variants[1][1].stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(m.training == (mode == "train") for _, m in variants)
    with pytest.raises(ValueError, match="one per variant"):
        bench_variants(variants, 32, 2, 10, device="cpu", channels_last=[True])


def test_train_step_updates_weights_and_infer_step_does_not():
    torch.manual_seed(0)
    model = create_model("ghostmixnet", num_classes=3, **TINY)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    before = [p.detach().clone() for p in model.parameters()]
    model.eval()
    make_step(model, "infer", x, y, torch.device("cpu"), torch.float32)()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    model.train()
    make_step(model, "train", x, y, torch.device("cpu"), torch.float32)()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_percentile():
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0
    assert percentile([1.0, 2.0], 0.5) == 1.5
    assert percentile([7.0], 0.75) == 7.0
    assert spread([3.0, 1.0, 2.0]) == {"median_ms": 2.0, "p25_ms": 1.5, "p75_ms": 2.5, "iqr_ms": 1.0, "min_ms": 1.0,
                                       "max_ms": 3.0}


def test_cuda_peak_memory_counts_own_weights_not_earlier_allocations(monkeypatch):
    from ghostnest.bench import memory

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    cpu = torch.device("cpu")
    own = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    assert memory.model_bytes(model, cpu) == own and memory.model_bytes(None, cpu) == 0
    # On CUDA: 300 MiB allocated before the step, 10 MiB of it the model's own weights; peak 350 MiB during it.
    monkeypatch.setattr(memory, "model_bytes", lambda m, d: 10 * 2**20)
    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: 300 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 350 * 2**20)
    with memory.PeakMemory(torch.device("cuda"), model) as mem:
        pass
    assert mem.kind == "cuda_peak_allocated" and mem.mb == 60.0


def test_bench_sessions_times_onnxruntime_sessions_interleaved(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from ghostnest.bench import bench_sessions
    from ghostnest.export import export_model

    path = export_model(create_model("ghostmixnet", **TINY).eval(), "onnx", tmp_path / "t.onnx", 32, {"model": "t"})
    sessions = [(name, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])) for name in "ab"]
    rows = bench_sessions(sessions, torch.randn(2, 3, 32, 32), repeats=3, warmup=2)
    assert [r["name"] for r in rows] == ["a", "b"]
    for r in rows:
        assert r["runtime"] == "onnxruntime" and r["batch"] == 2 and len(r["times_ms"]) == 3
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["first_call_ms"] > 0
        assert r["images_per_s"] == pytest.approx(2 * 1000 / r["median_ms"])
    assert rows[0]["ratio_to_first"] == 1.0
    with pytest.raises(ValueError, match="--repeats"):
        bench_sessions(sessions, torch.randn(2, 3, 32, 32), repeats=0)


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
    assert row["augment_on"] == "workers" and row["augment_group"] is None
    on_device = bench_data("ghostmixnet-cifar10", ["dataset=fake:size=32,train=256", "augment_on=device",
                                                   "augment_group=4"], batches=2, warmup=1, batch=16, device="cpu")
    assert (on_device["augment_on"], on_device["augment_group"], on_device["workers"]) == ("device", 4, 0)
    assert "augmented on the device in groups of 4" in format_data(on_device)


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


def test_benchmark_script_plans_every_family_pair_and_renders(tmp_path):
    from ghostnest import list_models

    mod = load_benchmark_script("run_benchmarks")
    cells = mod.plan_cells("cpu", False, None)
    planned = {m for c in cells for m in c["models"]}
    for family in ("ghostmixnet", "menest", "efficientnetv2"):
        assert set(list_models(family=family)) <= planned  # picked up from the registry by family
    for c in cells:
        assert c["models"][0].startswith("efficientnetv2_")  # the reference comes first: ratio_to_first
    gpu = mod.plan_cells("cuda", False, [128, 256])
    assert {c["batch"] for c in gpu} == {128, 256} and not any("skipped" in c for c in gpu)

    def row(name, family, ms, gflops):
        return dict(name=name, family=family, input_size=128, batch=8, params=10**7, gflops=gflops, median_ms=ms,
                    iqr_ms=1.0, min_ms=ms * 0.9, max_ms=ms * 1.1, images_per_s=8000 / ms, peak_mem_mb=12.0,
                    ratio_to_first=ms / 100.0, min_ratio_to_first=ms / 100.0)

    cell = dict(id="infer-s-128-b8", mode="infer", family="menest", input=128, batch=8,
                models=["efficientnetv2_s", "menest_ghost_s"],
                rows=[row("efficientnetv2_s", "efficientnetv2", 100.0, 2.0), row("menest_ghost_s", "menest", 250.0, 1.0)])
    skipped = dict(id="train-xl-256", mode="train", family="menest", input=256, batch=None,
                   models=["efficientnetv2_xl", "menest_ghost_xl"], skipped="too slow here")
    env = dict(cpu="Test CPU", cpu_count=2, usable_cores=2, torch_threads=1, torch="x", timm="y", python="3",
               date_utc="2026-01-01 00:00 UTC", gpu=None)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "cpu-fp32.json").write_text(json.dumps(
        dict(key="cpu-fp32", device="cpu", dtype="fp32", env=env, cells=[cell, skipped], total_seconds=60)))
    (tmp_path / "res" / "cuda-env.json").write_text(json.dumps({"step": "env", "cells": {}}))  # another script's
    doc = mod.render(tmp_path / "res", tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "img")
    text = doc.read_text()
    assert "Test CPU" in text and "GPU tables are pending" in text
    assert "| `menest_ghost_s` |" in text and "**2.50**" in text
    assert "too slow here" in text and "2.5-2.5x the time" in text and "0.50-0.50x its FLOPs" in text
    assert (tmp_path / "docs" / "img" / "bench_ratios.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["bench", "ghostmixnet", "--data", "quickstart"], "--data times a recipe's input pipeline alone"),
    (["bench", "--model-file", "m.onnx", "--data", "quickstart"], "--data times a recipe's input pipeline alone"),
    (["bench", "ghostmixnet", "--set", "batch_size=4"], "--set and --workers apply to --data RECIPE only"),
    (["bench", "ghostmixnet", "--model-file", "m.onnx"], "drop the model names, or drop --model-file"),
    (["bench"], "name one or more models to benchmark"),
])
def test_bench_command_refuses_mixed_benchmarks_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_benchmark_script_records_each_cell_through_the_shared_record(tmp_path, monkeypatch):
    """run_benchmarks.py's loop is cell_records.Record's (as gpu_check's steps): a cell that fails is recorded as
    skipped with its one-line error and the others go on; a spent budget skips the rest; the file is whole."""
    mod = load_benchmark_script("run_benchmarks")
    calls = []

    def fake_bench(models, **kw):
        calls.append(models)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore lines")
        return [dict(name=m, median_ms=10.0 * (i + 1), ratio_to_first=float(i + 1)) for i, m in enumerate(models)]

    monkeypatch.setattr(mod, "bench_models", fake_bench)
    monkeypatch.setattr(mod, "environment", lambda device: {"date_utc": "2026-12-01 00:00 UTC"})
    args = mod.argparse.Namespace(device="cpu", threads=1, quick=True, batch=None, only=["-ghostmixnet-"],
                                  dtype="fp32", channels_last=False, no_fuse=False, compile=False, warmup=1,
                                  budget_min=60.0, no_data=True)
    out = mod.run(args, tmp_path)
    record = json.loads(out.read_text())
    assert [c["id"] for c in record["cells"]] == ["infer-ghostmixnet-32-b32", "train-ghostmixnet-32-b32"]
    first, second = record["cells"]
    assert [r["name"] for r in first["rows"]][0] == "efficientnetv2_s" and first["seconds"] >= 0
    assert second["skipped"] == "failed: CUDA out of memory. Tried to allocate 2 GiB" and "rows" not in second
    assert not list(tmp_path.glob(".*.tmp*"))
    args.budget_min = -1.0  # spent before the first cell
    record = json.loads(mod.run(args, tmp_path).read_text())
    assert all(c["skipped"].startswith("time budget of -1 min used up") for c in record["cells"])
