"""Start-up: the console script answers --version and every --help without importing the package's heavy parts
(torch, timm), `ghostnest models` answers from a cache whose figures equal a real count, and `import ghostnest`
still registers the models with timm. Times are benchmarks (benchmarks/startup.py, docs/architecture.md), not
tests: these tests check what makes the commands fast."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ghostnest
from ghostnest import cli, stats

ROOT = Path(__file__).resolve().parents[1]


def launch(code: str, env: dict | None = None) -> str:
    """Run ``code`` in a fresh interpreter that imports the console script's module, as the script does."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_version_and_every_help_import_neither_torch_nor_the_package():
    commands = [c.__name__[len("add_"):-len("_parser")] for c in cli.COMMANDS]
    code = (
        "import contextlib, io, sys\n"
        "import ghostnest_launcher\n"
        f"for args in [['--version'], ['--help']] + [[c, '--help'] for c in {commands!r}]:\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            ghostnest_launcher.main(args)\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, (args, e.code)\n"
        "    assert buf.getvalue().strip(), args\n"
        "    if args == ['--version']:\n"
        "        print(buf.getvalue().strip())\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision', 'numpy')\n"
        "               or m == 'ghostnest' or (m.startswith('ghostnest.') and m != 'ghostnest.cli'))\n"
        "print(heavy)\n"
    )
    version, heavy = launch(code).strip().splitlines()
    assert version == f"ghostnest {ghostnest.__version__}"
    assert heavy == "[]"


def test_the_launcher_runs_a_command_that_needs_the_package():
    out = launch("import ghostnest_launcher, sys\n"
                 "sys.exit(ghostnest_launcher.main(['recipes', 'show', 'quickstart', '--json']))")
    assert json.loads(out)["model"] == "ghostmixnet"


def test_import_ghostnest_still_registers_the_models_with_timm():
    out = launch("import ghostnest, timm\n"
                 "m = timm.create_model('ghostmixnet', num_classes=10)\n"
                 "print(sum(p.numel() for p in m.parameters()))")
    assert int(out) == 3_041_466


def test_the_export_formats_the_parser_offers_are_exports():
    from ghostnest.export import FORMATS

    assert cli.EXPORT_FORMATS == FORMATS


def test_the_explain_methods_the_parser_offers_are_methods():
    from ghostnest.explain import METHODS

    assert cli.EXPLAIN_METHODS == tuple(METHODS)


def test_models_figures_come_from_a_cache_that_equals_a_real_count(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GHOSTNEST_CACHE", str(tmp_path))
    assert cli.main(["models", "ghostmixnet", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    cached = json.loads((tmp_path / "models-paper.json").read_text())
    assert cached["key"] == cli._models_cache_key() and "menest_ghost_xl" in cached["names"]
    assert set(cached["rows"]) == {"ghostmixnet"}  # only what was asked for is counted

    def no_count(*a, **k):
        raise AssertionError("counted again instead of reading the cache")

    monkeypatch.setattr(stats, "model_stats", no_count)
    assert cli.main(["models", "ghostmixnet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == first
    # the cached figures are those of the real network: real weights, a real forward pass
    model = ghostnest.create_model("ghostmixnet", num_classes=10)
    assert first[0]["params"] == stats.count_params(model) == 3_041_466
    assert first[0]["gflops"] == pytest.approx(stats.count_flops(model, 32) / 1e9, rel=1e-12)


def test_a_stale_cache_is_recounted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GHOSTNEST_CACHE", str(tmp_path))
    stale = {"key": "another source tree", "names": ["ghostmixnet"],
             "rows": {"ghostmixnet": {"name": "ghostmixnet", "params": 1}}}
    (tmp_path / "models-7.json").write_text(json.dumps(stale))
    assert cli.main(["models", "ghostmixnet", "--num-classes", "7", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["params"] == stats.model_stats("ghostmixnet", 7)["params"] != 1 and row["num_classes"] == 7
    assert json.loads((tmp_path / "models-7.json").read_text())["key"] == cli._models_cache_key()


def test_the_cache_key_follows_the_source(tmp_path, monkeypatch):
    fake = tmp_path / "ghostnest"
    (fake / "models").mkdir(parents=True)
    (fake / "cli.py").write_text("")
    (fake / "models" / "m.py").write_text("width = 8\n")
    monkeypatch.setattr(cli, "__file__", str(fake / "cli.py"))
    before = cli._models_cache_key()
    (fake / "models" / "m.py").write_text("width = 16\n")
    assert cli._models_cache_key() != before


def test_models_from_the_cache_import_no_torch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GHOSTNEST_CACHE", str(tmp_path))
    assert cli.main(["models", "ghost*"]) == 0
    capsys.readouterr()
    out = launch("import sys, ghostnest_launcher\n"
                 "ghostnest_launcher.main(['models', 'ghost*', '--json'])\n"
                 "print('torch' in sys.modules)", env={"GHOSTNEST_CACHE": str(tmp_path)})
    rows, torch_loaded = out.rsplit("\n", 2)[0], out.strip().splitlines()[-1]
    assert torch_loaded == "False"
    assert [r["name"] for r in json.loads(rows)] == ["ghostmixnet", "ghostmixnet_resnet", "ghostmixnet_resnet_se"]


def test_eval_uses_the_runs_own_thread_count(tmp_path, monkeypatch):
    from ghostnest.train.evaluate import cpu_threads

    (tmp_path / "config.yaml").write_text("threads: 1\n")
    before = torch.get_num_threads()
    with cpu_threads(None, tmp_path / "best.safetensors"):
        assert torch.get_num_threads() == 1
    with cpu_threads(3, tmp_path / "best.safetensors"):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before


def test_export_help_states_the_quantizers_defaults():
    from ghostnest import quantize

    parser = cli.build_parser()
    export = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "export")[1]
    helps = {a.dest: a.help for a in export._actions}
    assert f"(default {quantize.DEFAULT_CALIB_IMAGES})" in helps["calib_images"]
    assert f"(default {quantize.DEFAULT_CALIB_METHOD})" in helps["calib_method"]
    assert tuple(next(a for a in export._actions if a.dest == "calib_method").choices) == quantize.CALIBRATION_METHODS
    assert f"(default: {','.join(quantize.DEFAULT_FLOAT_LAYERS)})" in helps["float_layers"]
    assert ", ".join(quantize.LAYER_GROUPS) in helps["float_layers"]
    bits = 7 if quantize.REDUCE_RANGE else 8
    assert f"{bits}-bit grid, [-{quantize.WEIGHT_QMAX}, {quantize.WEIGHT_QMAX}]" in helps["int8"]
