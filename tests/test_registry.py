"""Building by name: ghostnest's registry, timm's registry, the `models` command."""
import json

import pytest
import timm
import torch

import ghostnest
from ghostnest.cli import main
from ghostnest.stats import count_flops, count_params, model_stats


def test_list_models_has_every_family():
    names = ghostnest.list_models()
    for n in ["ghostmixnet", "ghostmixnet_resnet", "ghostmixnet_resnet_se", "efficientnetv2_s", "efficientnetv2_xl"]:
        assert n in names
    assert ghostnest.list_models("ghostmixnet*") == ["ghostmixnet", "ghostmixnet_resnet", "ghostmixnet_resnet_se"]
    assert set(ghostnest.list_models(family="efficientnetv2")) == {f"efficientnetv2_{s}" for s in "s m l xl".split()}


def test_timm_create_model_builds_the_same_model():
    torch.manual_seed(0)
    ours = ghostnest.create_model("ghostmixnet", num_classes=7)
    torch.manual_seed(0)
    theirs = timm.create_model("ghostmixnet", num_classes=7)
    assert type(ours) is type(theirs) and count_params(ours) == count_params(theirs)
    for (na, a), (nb, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert na == nb and torch.equal(a, b)
    assert "ghostmixnet" in timm.list_models("ghostmixnet*")


def test_baselines_come_from_timm():
    with torch.device("meta"):
        m = ghostnest.create_model("efficientnetv2_s", num_classes=100)
    assert type(m).__module__.startswith("timm.")
    assert count_params(m) == 20_305_588


def test_unknown_name_lists_nearest():
    with pytest.raises(ValueError, match="Did you mean: ghostmixnet"):
        ghostnest.create_model("ghostmixnett")
    with pytest.raises(ValueError, match="unknown model 'zzz'"):
        ghostnest.create_model("zzz")


def test_pretrained_is_refused_clearly():
    with pytest.raises(ValueError, match="no pretrained weights"):
        ghostnest.create_model("ghostmixnet", pretrained=True)


def test_flops_are_counted_by_torch_and_scale_with_input():
    m = ghostnest.create_model("ghostmixnet", depths=(1, 1, 1)).eval()
    f32, f64 = count_flops(m, 32), count_flops(m, 64)
    # the convolutional trunk scales with the pixel count; the head does not
    assert 3.5 < f64 / f32 < 4.0
    # stem conv alone, by hand: 2 * (3*9) MACs * 64 channels * 32*32 pixels
    stem = torch.nn.Sequential(m.stem[0])
    with torch.utils.flop_counter.FlopCounterMode(display=False) as fc:
        stem(torch.zeros(1, 3, 32, 32))
    assert fc.get_total_flops() == 2 * 27 * 64 * 32 * 32


def test_model_stats_on_meta_matches_real_build():
    s = model_stats("ghostmixnet")
    assert s["params"] == 3_041_466 and s["input_size"] == 32 and s["num_classes"] == 10
    assert s["gflops"] == pytest.approx(count_flops(ghostnest.create_model("ghostmixnet"), 32) / 1e9)


def test_models_command_json(capsys):
    assert main(["models", "ghostmixnet*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["ghostmixnet", "ghostmixnet_resnet", "ghostmixnet_resnet_se"]
    for r in rows:
        assert {"name", "params", "gflops", "input_size"} <= set(r) and r["params"] > 0 and r["gflops"] > 0


def test_models_command_table_and_errors(capsys):
    assert main(["models", "efficientnetv2_s"]) == 0
    out = capsys.readouterr().out
    assert "20,305,588" in out and "128" in out
    assert main(["models", "nothing*"]) == 2
    assert "no model matches" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "ghostnest", "models", "ghostmixnet", "--json"], capture_output=True, text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["params"] == 3_041_466


def test_import_ghostnest_loads_no_training_bench_report_or_export_code():
    import subprocess
    import sys

    code = (
        "import sys, ghostnest\n"
        "heavy = ('ghostnest.train', 'ghostnest.bench', 'ghostnest.report', 'ghostnest.export')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
        "assert callable(ghostnest.fuse) and callable(ghostnest.load_checkpoint)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry_imports_no_model_module():
    import ast
    from pathlib import Path

    import ghostnest.registry

    tree = ast.parse(Path(ghostnest.registry.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if "models" in m.split(".") or m.startswith(".")], imported
