"""benchmarks/gpu_check.py on a machine without a GPU: the one-line exit 2, --list and its budgets, the tiny CPU
mode writing valid JSON, resumability (a complete step is skipped; a partial one keeps its cells; a spent budget
leaves the step partial), and render writing the GPU section of docs/benchmarks.md with "missing" markers."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import load_benchmark_script


@pytest.fixture(scope="module")
def gc():
    return load_benchmark_script("gpu_check")


def dry(gc, tmp_path, *args):
    return gc.main(["--dry-run", "--results", str(tmp_path / "res"), "--doc", str(tmp_path / "doc.md"), *args])


def test_without_cuda_one_line_and_exit_2(gc, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gc.main(["--results", str(tmp_path), "--step", "env"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_missing_packages_named_at_once_exit_3(gc, tmp_path, monkeypatch, capsys):
    assert gc.missing_packages() == []  # this environment has them all
    real = gc.importlib.util.find_spec
    monkeypatch.setattr(gc.importlib.util, "find_spec", lambda m: None if m in ("timm", "yaml") else real(m))
    assert gc.main(["--results", str(tmp_path), "--step", "env"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks timm, pyyaml;" in err and "-d .whl timm pyyaml" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_list_names_every_step_within_budget(gc, capsys):
    assert gc.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in gc.STEPS:
        assert name in out
    budgets = [b for _, b, _ in gc.STEPS.values()]
    assert max(budgets) < 9 * 60 and sum(budgets) <= 25 * 60


def test_tiny_cpu_steps_write_valid_json_and_complete_steps_are_skipped(gc, tmp_path, capsys):
    assert dry(gc, tmp_path, "--step", "env", "--step", "pipeline") == 0
    for step in ("env", "pipeline"):
        data = json.loads((tmp_path / "res" / f"dryrun-{step}.json").read_text())
        assert data["complete"] and data["dry_run"] and data["device"] == "cpu"
        assert not [k for k, c in data["cells"].items() if "error" in c], data["cells"]
    env = json.loads((tmp_path / "res" / "dryrun-env.json").read_text())
    assert env["cells"]["versions"]["torch"] == torch.__version__
    pipe = json.loads((tmp_path / "res" / "dryrun-pipeline.json").read_text())
    assert all(c["images_per_s"] > 0 for c in pipe["cells"].values())
    capsys.readouterr()
    before = (tmp_path / "res" / "dryrun-env.json").read_text()
    assert dry(gc, tmp_path, "--step", "env") == 0  # complete: skipped, file untouched
    assert "skipped" in capsys.readouterr().out
    assert (tmp_path / "res" / "dryrun-env.json").read_text() == before
    assert dry(gc, tmp_path, "--step", "env", "--force") == 0  # --force measures again
    assert "skipped" not in capsys.readouterr().out


def test_partial_step_keeps_its_cells_and_a_spent_budget_stays_partial(gc, tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    (res / "dryrun-env.json").write_text(json.dumps(
        {"step": "env", "complete": False, "cells": {"environment": {"sentinel": 1}}}))
    assert dry(gc, tmp_path, "--step", "env") == 0
    data = json.loads((res / "dryrun-env.json").read_text())
    assert data["complete"] and data["cells"]["environment"] == {"sentinel": 1} and "versions" in data["cells"]
    ctx = gc.Ctx("cpu", True, tmp_path / "other", tmp_path / "doc.md", force=False)
    rec = gc.Record(ctx, "env", budget_s=-1)  # spent before it starts
    gc.step_env(ctx, rec)
    out = rec.finish()
    assert not out["complete"] and all("not_run" in c for c in out["cells"].values())


def test_render_writes_the_marked_section_with_missing_figures(gc, tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("# Benchmarks\n\nCPU tables stay.\n")
    args = ["--step", "render", "--results", str(tmp_path / "none"), "--doc", str(doc)]
    assert gc.main(args) == 0  # no CUDA needed, no results at all
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nCPU tables stay.\n")
    assert text.count(gc.BEGIN) == 1 and text.count(gc.END) == 1
    assert "GPU figures: not yet measured" in text and "missing" in text
    for step in gc.STEPS:
        if step != "render":
            assert f"`{step}`" in text
    assert "missing" in capsys.readouterr().out
    # a second render replaces the section in place, with what is there now
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "cuda-env.json").write_text(json.dumps(
        {"step": "env", "complete": True, "elapsed_s": 1,
         "cells": {"versions": {"gpu": "NVIDIA H100 80GB HBM3", "torch": "x", "cuda": "13.0"}}}))
    doc.write_text(doc.read_text() + "\nAfter the section.\n")
    assert gc.main(args) == 0
    text = doc.read_text()
    assert text.count(gc.BEGIN) == 1 and "NVIDIA H100 80GB HBM3" in text and text.endswith("After the section.\n")
    assert "- `env`:" not in text and "- `speed`:" in text  # env is measured now, speed still missing


def test_projection_picks_the_fastest_way_to_feed_the_gpu(gc):  # gc puts benchmarks/ on the path for gpu_page
    """CPU workers run beside the GPU (the slower sets the pace); augmentation on the device adds its time to the
    step's. The projection names the fastest measured option and the whole run's time with it."""
    recipe = "ghostmixnet-cifar10"
    res = {"project": {"cells": {recipe: {"images_per_s": 10_000.0}}},
           "pipeline": {"cells": {f"{recipe}/workers=recipe": {"images_per_s": 1_500.0},
                                  f"{recipe}/workers=8": {"images_per_s": 6_000.0},
                                  f"{recipe}/device-augment group=16": {"images_per_s": 40_000.0},
                                  f"{recipe}/device-augment group=1": {"images_per_s": 2_000.0}}}}
    page = load_benchmark_script("gpu_page")  # the page's data and rendering, split out of gpu_check
    row = next(r for r in page.projection(res) if r["run"] == recipe)
    assert row["bound"] == "input pipeline (CPU)" and row["pipeline_img_s"] == 1_500.0
    assert row["best_option"] == "device-augment group=16"  # 8,000 images/s fed, against 6,000 from 8 workers

    def whole_run(rate):  # 200 epochs of 50,000 images, plus validation at a third of a step's cost
        return (50_000 / rate + 10_000 / (3 * 10_000.0)) * 200

    assert row["best_total_s"] == pytest.approx(whole_run(8_000.0))
    assert row["total_s"] == pytest.approx(whole_run(1_500.0))
    assert page.fed_rate(10_000.0, "workers=8", 6_000.0) == 6_000.0
    other = next(r for r in page.projection(res) if r["run"] == "ghostmixnet-cifar10-resnet")
    assert other["best_option"] is None and other["best_total_s"] is None  # nothing measured for it


def test_within_gives_each_step_its_share_of_the_time_left(gc, tmp_path):
    ctx = gc.Ctx("cpu", True, tmp_path, tmp_path / "doc.md", force=False)
    assert gc.share(ctx, "speed", ["speed", "ddp"]) == gc.STEPS["speed"][1]  # no --within: the step's own budget
    own = {n: gc.STEPS[n][1] for n in ("env", "tests", "speed")}
    ctx.deadline = gc.time.monotonic() + 100
    got = gc.share(ctx, "tests", ["tests", "speed"])
    assert got == pytest.approx(100 * own["tests"] / (own["tests"] + own["speed"]), rel=0.01)
    ctx.deadline = gc.time.monotonic() + 10_000  # more time than the budgets: never more than the step's own
    assert gc.share(ctx, "env", ["env", "tests"]) == own["env"]
    ctx.deadline = gc.time.monotonic() - 1  # spent
    assert gc.share(ctx, "env", ["env"]) == 0.0
    # the steps always run in priority order, whatever order --step names them in
    assert list(gc.STEPS)[:3] == ["env", "tests", "speed"] and list(gc.STEPS)[-1] == "render"


def test_within_rejects_a_non_positive_time(gc, tmp_path, capsys):
    assert dry(gc, tmp_path, "--within", "0") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--within 0 must be a positive number of minutes" in err
    assert not (tmp_path / "res").exists()


def test_within_stops_an_overrunning_cell_and_packs_every_results_file(gc, tmp_path, monkeypatch, capsys):
    """The alarm at --within's deadline plus the grace stops a cell that is still running (recorded as not run,
    the cells before it kept); no later step starts; --pack writes all the results files into one tar.gz."""
    import tarfile
    import time

    def slow_step(ctx, rec):
        rec.cell("quick", lambda: {"v": 1})
        rec.cell("slow", lambda: time.sleep(30) or {"v": 2})  # the alarm interrupts the sleep
        rec.cell("never", lambda: {"v": 3})

    monkeypatch.setitem(gc.STEPS, "env", (slow_step, 20, "a step with a cell that overruns"))
    monkeypatch.setattr(gc, "GRACE_S", 0)
    res = tmp_path / "res"
    res.mkdir()
    (res / "dryrun-train.json").write_text(json.dumps({"step": "train", "complete": True, "cells": {}}))
    packed = tmp_path / "out" / "results.tar.gz"
    t = time.monotonic()
    assert dry(gc, tmp_path, "--step", "pipeline", "--step", "env", "--within", "0.02", "--pack", str(packed)) == 0
    assert time.monotonic() - t < 20  # stopped at ~1.2 s, not after the 30 s cell
    out = capsys.readouterr().out
    assert out.index("[env]") < out.index("[pipeline]")  # priority order, not the order given
    assert "[pipeline] not started" in out and not (res / "dryrun-pipeline.json").exists()
    env = json.loads((res / "dryrun-env.json").read_text())
    assert not env["complete"] and env["cells"]["quick"]["v"] == 1
    assert "ran out during this cell" in env["cells"]["slow"]["not_run"] and "never" not in env["cells"]
    with tarfile.open(packed) as tar:
        assert sorted(tar.getnames()) == ["dryrun-env.json", "dryrun-train.json"]
        assert json.load(tar.extractfile("dryrun-env.json")) == env
    assert [p.name for p in packed.parent.iterdir()] == ["results.tar.gz"]  # no temporary file left beside it
    # the next run without --within finishes the step from where it stopped
    monkeypatch.setitem(gc.STEPS, "env", (lambda ctx, rec: [rec.cell(k, lambda: {"v": 9}) for k in
                                          ("quick", "slow", "never")], 20, "again"))
    assert dry(gc, tmp_path, "--step", "env") == 0
    env = json.loads((res / "dryrun-env.json").read_text())
    assert env["complete"] and env["cells"]["quick"]["v"] == 1 and env["cells"]["slow"]["v"] == 9
