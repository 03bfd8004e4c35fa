"""`ghostnest report` on fake run directories written in the `ghostnest train` format."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import ghostnest.report as report
from ghostnest.cli import main
from ghostnest.report import PAPER_ROWS, load_run, write_report
from ghostnest.report.runs import mixing as _mixing

HEADER = "epoch,lr,train_loss,val_loss,val_top1,val_top5,seconds\n"
# Counting the big models on meta takes seconds each on a shared CPU; the GhostMixNets are counted for real.
FAKE_STATS = {"params": 12_345_678, "gflops": 4.321, "input_size": 128}


@pytest.fixture(autouse=True)
def fast_stats(monkeypatch):
    def stats(model, num_classes=None):
        if model.startswith("ghostmixnet"):
            return report.registry_stats(model, num_classes)
        return dict(FAKE_STATS, name=model)

    monkeypatch.setattr(report.render, "_stats", stats)


def make_run(root: Path, name: str, model: str, dataset="cifar100", epochs=3, results: dict | None = None,
             extra_config: str = "") -> Path:
    d = root / name
    d.mkdir()
    (d / "config.yaml").write_text(
        f"model: {model}\ndataset: {dataset}\nnum_classes: 100\nrecipe: test_recipe\n{extra_config}"
    )
    lines = [f"{e},0.001,{3.0 - 0.5 * e},{3.2 - 0.5 * e},{10.0 * e},{25.0 * e},12.5\n" for e in range(1, epochs + 1)]
    (d / "metrics.csv").write_text(HEADER + "".join(lines))
    if results is not None:
        (d / "results.json").write_text(json.dumps(results))
    return d


def table_row(md: str, label: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in table")


# columns: Model, Ours: model, Params (ours), Params (paper), GFLOPs, Top-1 (ours), Top-1 (paper), Best val, Run, Notes
OURS, PAPER = 5, 6


def test_report_two_runs(tmp_path):
    done = make_run(tmp_path, "menest_s_run", "menest_ghost_s", results={
        "model": "menest_ghost_s", "dataset": "cifar100", "params": 21_000_123, "test_top1": 61.25,
        "test_top5": 85.5, "best_epoch": 3, "epochs": 3})
    unfinished = make_run(tmp_path, "effnet_s_run", "efficientnetv2_s", epochs=2,
                          extra_config="model_kwargs: {drop_rate: 0.1}\n")
    out = tmp_path / "out"
    res = write_report([done, unfinished], out)

    md = (out / "table.md").read_text()
    s = table_row(md, "ME-NeSt-Ghost-S")
    assert s[OURS] == "61.25%" and s[PAPER] == "80.3%" and s[2] == "21.00M" and s[3] == "21M"
    assert "menest_s_run" in s[8] and "30.00% (ep 3)" == s[7]
    e = table_row(md, "EffNet-V2-S")
    assert e[OURS] == "" and e[PAPER] == "79.6%" and "unfinished" in e[9]
    assert 'model_kwargs {"drop_rate": 0.1}' in e[9] and "model_kwargs" not in s[9]
    assert "20.00% (ep 2)" == e[7]  # best *val* accuracy is shown, in its own column
    # models without runs: parameters/FLOPs from the registry, accuracy empty, paper numbers beside them
    xl = table_row(md, "ME-NeSt-Ghost-XL")
    assert xl[OURS] == "" and xl[PAPER] == "81.7%" and xl[2] == "12.35M" and xl[3] == "172M" and xl[4] == "4.32 @128"
    g = table_row(md, "GhostNet+SE+Image Transforms+CutMix/Mixup")
    assert g[2] == "3.04M" and g[4] == "0.89 @32" and g[OURS] == "" and g[PAPER] == "95.5%"
    for row in PAPER_ROWS:
        assert f"{row.top1:.1f}%" in md and f"{row.params_m:g}M" in md
    assert "official 10,000-image test set" in md

    data = json.loads((out / "report.json").read_text())
    by_label = {r["label"]: r for r in data["menest"]}
    assert by_label["ME-NeSt-Ghost-S"]["comparable"] is True
    assert by_label["EffNet-V2-S"]["test_top1"] is None
    assert all(by_label[k]["test_top1"] is None for k in ("ME-NeSt-Ghost-M", "EffNet-V2-L", "EffNet-V2-XL"))

    assert (out / "figure7.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "figure7.svg").read_bytes()[:2000]
    for name in ("menest_s_run", "effnet_s_run"):
        assert (out / "curves" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert len(res["curves"]) == 2 and res["runs"] == 2


def test_report_without_runs_lists_every_paper_row_and_no_accuracy(tmp_path):
    write_report([], tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = data["menest"] + data["ghostmixnet"]
    assert len(rows) == len(PAPER_ROWS)
    assert all(r["test_top1"] is None and r["best_val_top1"] is None and r["run"] is None for r in rows)
    assert all(r["params"] is not None and r["gflops"] is not None for r in rows)
    assert (tmp_path / "out" / "figure7.svg").exists()


def test_report_marks_corrupt_runs_and_other_datasets(tmp_path, capsys):
    bad_header = make_run(tmp_path, "bad_header", "efficientnetv2_m")
    (bad_header / "metrics.csv").write_text("epoch,lr,loss\n1,0.1,2.0\n")
    bad_results = make_run(tmp_path, "bad_results", "menest_ghost_l")
    (bad_results / "results.json").write_text("{not json")
    bad_value = make_run(tmp_path, "bad_value", "menest_ghost_m")
    (bad_value / "metrics.csv").write_text(HEADER + "1,0.001,2.0,2.1,abc,40,10\n")
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    digits = make_run(tmp_path, "digits_run", "ghostmixnet", dataset="digits", extra_config="mixup_alpha: 0.0\n",
                      results={"model": "ghostmixnet", "dataset": "digits", "params": 3041466, "test_top1": 97.0,
                               "test_top5": 100.0, "best_epoch": 3, "epochs": 3})
    out = tmp_path / "out"
    assert main(["report", str(bad_header), str(bad_results), str(bad_value), str(no_config), str(digits),
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "bad_header" in err and "no_config" in err

    md = (out / "table.md").read_text()
    assert "**problem**: metrics.csv header" in table_row(md, "EffNet-V2-M")[9]
    assert "**problem**: results.json unusable" in table_row(md, "ME-NeSt-Ghost-L")[9]
    assert table_row(md, "ME-NeSt-Ghost-L")[OURS] == ""
    assert "val_top1='abc' is not a number" in table_row(md, "ME-NeSt-Ghost-M")[9]
    assert "**unreadable**: config.yaml missing" in md
    # a digits run of GhostMixNet without mixing: placed in the no-mixing row, in parentheses, not comparable
    g = table_row(md, "GhostNet+SE+Image Transforms")
    assert g[OURS] == "(97.00%)" and "not comparable" in g[9]
    data = json.loads((out / "report.json").read_text())
    assert [r["comparable"] for r in data["ghostmixnet"] if r["run"]] == [False]


def test_report_copies_trainer_curves_when_metrics_are_missing(tmp_path):
    run = make_run(tmp_path, "xl_run", "menest_ghost_xl", results={
        "model": "menest_ghost_xl", "dataset": "cifar100_128", "params": 186_000_000, "test_top1": 70.5,
        "test_top5": 90.0, "best_epoch": 9, "epochs": 10})
    (run / "metrics.csv").unlink()
    png = b"\x89PNG\r\n\x1a\nnot really a plot"
    (run / "curves.png").write_bytes(png)
    out = tmp_path / "out"
    res = write_report([run], out)
    assert (out / "curves" / "xl_run.png").read_bytes() == png and len(res["curves"]) == 1
    row = table_row((out / "table.md").read_text(), "ME-NeSt-Ghost-XL")
    assert row[OURS] == "70.50%" and "**problem**: metrics.csv missing" in row[9] and row[7] == ""


def test_report_bad_arguments(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run directory") and err.count("\n") == 1
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        write_report([], tmp_path / "afile")


def test_load_run_reads_contract(tmp_path):
    run = load_run(make_run(tmp_path, "r", "menest_ghost_s", epochs=4))
    assert run.model == "menest_ghost_s" and run.dataset == "cifar100" and run.recipe == "test_recipe"
    assert [m["epoch"] for m in run.metrics] == [1, 2, 3, 4] and run.best_val == (40.0, 4)
    assert not run.finished and run.test_top1 is None and run.problems == []


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"mixup_alpha": 0.2, "cutmix_alpha": 1.0}, True),
        ({"mixup_alpha": 0.0, "cutmix_alpha": 1.0}, True),
        ({"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "mixup_p": 0.5}, False),  # `ghostnest train`'s keys
        ({"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mixup_p": 0.5}, True),
        ({"lr": 0.1}, None),
    ],
)
def test_mixing_detection(config, expected):
    assert _mixing(config) is expected


def test_mixing_of_the_packaged_ghostmixnet_recipes():
    import dataclasses

    from ghostnest.train.config import resolve_config

    def mixing(recipe):
        return _mixing(dataclasses.asdict(resolve_config(recipe)))

    assert mixing("ghostmixnet-cifar10") is True
    assert mixing("ghostmixnet-cifar10-ghost-se") is False
