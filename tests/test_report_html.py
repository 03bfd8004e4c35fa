"""`ghostnest report` writes index.html: every section filled, every image on disk, and the page renders cleanly in
headless Chromium (skipped, with the reason, where Chromium is not installed: `apt-get install -y chromium`)."""
from __future__ import annotations

import re
import shutil

import pytest

import ghostnest.report as report
from ghostnest.cli import main
from ghostnest.report import write_report
from ghostnest.report.browser import check_page, find_chromium
from ghostnest.train import train
from ghostnest.train.config import resolve_config

TINY = {"model_kwargs": {"widths": [8, 8, 8], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1},
        "dataset": "fake:classes=4,size=16,train=64,test=24", "batch_size": 16, "val_fraction": 0.25, "workers": 0,
        "epochs": 1, "threads": 1}
NO_CHROMIUM = "Chromium is not installed (apt-get install -y chromium; `make test` installs it where it can)"


def _stats(model, num_classes=None):
    if model.startswith("ghostmixnet"):
        return report.registry_stats(model, num_classes)
    return {"params": 12_345_678, "gflops": 4.321, "input_size": 128, "name": model}


@pytest.fixture(autouse=True, scope="module")
def fast_stats():
    """Counting the big models on meta takes seconds each on a shared CPU; the GhostMixNets are counted for real."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report.render, "_stats", _stats)
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train(resolve_config(dict(TINY)), out=root / "done", device="cpu", progress=False)
    unfinished = root / "unfinished"
    unfinished.mkdir()
    for name in ("config.yaml", "metrics.csv"):
        shutil.copy(root / "done" / name, unfinished / name)
    return root


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = write_report([runs / "done", runs / "unfinished"], out, device="cpu")
    return out, result


def test_index_html_has_every_section_and_its_images(page):
    out, result = page
    html = (out / "index.html").read_text()
    assert result["html"] == out / "index.html" and result["no_results"] == ["unfinished"]
    for src in re.findall(r'<img src="([^"]+)"', html):
        assert (out / src).is_file(), src
    assert {"figure7.png", "curves/done.png", "runs/done/confusion.png", "runs/done/worst.png"} <= set(
        re.findall(r'<img src="([^"]+)"', html))
    for heading in ("Results against the papers", "Figure 7", "Run done", "Run unfinished", "Training curves",
                    "Per-class accuracy", "Confusion matrix", "Worst-classified test images", "Recipe"):
        assert heading in html
    assert "no results yet (unfinished: no results.json)" in html and "Not available: no checkpoint" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    for name in ("class_0", "class_3"):
        assert f"<span class=name>{name}</span>" in html


def test_index_html_renders_cleanly_in_headless_chromium(page):
    if find_chromium() is None:
        pytest.skip(NO_CHROMIUM)
    out, _ = page
    assert check_page(out / "index.html") == []


def test_the_browser_check_fails_on_a_missing_image_a_script_error_and_an_empty_section(page, tmp_path):
    if find_chromium() is None:
        pytest.skip(NO_CHROMIUM)
    out, _ = page
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "runs" / "done" / "worst.png").unlink()
    html = (broken / "index.html").read_text()
    html = html.replace("</body>", '<section id="hollow"><h2>Hollow</h2> </section>'
                        "<script>document.body.dataset.x = undefinedName.length;</script></body>")
    (broken / "index.html").write_text(html)
    problems = check_page(broken / "index.html")
    assert any("image does not load: runs/done/worst.png" in p for p in problems), problems
    assert any(p.startswith("script error") and "undefinedName" in p for p in problems), problems
    assert "empty section: hollow" in problems
    assert len(problems) == 3 and sorted(p.name for p in broken.iterdir() if p.name.startswith(".")) == []


def test_report_cli_names_runs_without_results_and_reports_the_others(runs, tmp_path, capsys):
    assert main(["report", str(runs / "done"), str(runs / "unfinished"), "--out", str(tmp_path / "r"),
                 "--no-eval"]) == 0
    captured = capsys.readouterr()
    assert "warning: run unfinished has no results yet (no results.json)" in captured.err
    assert "done" not in captured.err and (tmp_path / "r" / "index.html").is_file()
    assert "not analysed (--no-eval)" in (tmp_path / "r" / "index.html").read_text()


def test_report_check_without_chromium_is_one_line_and_writes_nothing(runs, tmp_path, capsys, monkeypatch):
    import ghostnest.report.browser as browser

    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    out = tmp_path / "r"
    assert main(["report", str(runs / "done"), "--out", str(out), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --check needs Chromium") and "\n" not in err and not out.exists()
