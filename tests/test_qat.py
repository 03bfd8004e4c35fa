"""Quantization-aware fine-tuning (ghostnest.train.qat, ``ghostnest train --qat RUN``): the fake-quantized weights
lie on the int8 export's grid, the model keeps its parameter names and trains, and the CLI path from a trained run to an
int8 file, with its bad inputs."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

import ghostnest
from ghostnest.cli import main
from ghostnest.train.checkpoint import read_checkpoint
from ghostnest.train.qat import WEIGHT_QMAX, prepare_qat, qat_layers

TINY = dict(widths=(8, 16, 16), stem_width=8, depths=(1, 1, 1))
SMALL = ["--set", "model_kwargs={widths: [16, 32, 32], stem_width: 16, depths: [1, 1, 1], pool_size: 1}",
         "--set", "image_size=16", "--set", "lr=3e-3", "--set", "threads=2"]


def test_weights_are_rounded_on_the_int8_grid_and_names_are_kept():
    torch.manual_seed(0)
    model = ghostnest.create_model("ghostmixnet", num_classes=10, **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_qat(model)
    names = qat_layers(model)
    assert names and "fc" not in names  # the classifier stays float, as in the int8 export
    assert model.fc.weight is model.fc.weight  # a plain parameter, not recomputed
    after = model.state_dict()
    assert list(after) != [] and set(after) == set(before)  # checkpoints load into the ordinary model
    assert all(torch.equal(before[k], after[k]) for k in before)  # the weights before rounding
    conv = dict(model.named_modules())[names[0]]
    w, raw = conv.weight, before[f"{names[0]}.weight"]
    qmax = WEIGHT_QMAX  # the int8 export's weight grid (7 bits: [-64, 64]), one fact for QAT and the export
    scale = raw.abs().flatten(1).amax(1) / qmax
    steps = w / scale.view(-1, *[1] * (w.dim() - 1))
    assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= qmax + 1e-3
    assert (steps.abs().amax(dim=tuple(range(1, w.dim()))) > qmax - 1e-3).all()  # each channel's max on the edge
    assert not torch.equal(w, raw)  # rounding changed something
    with pytest.raises(ValueError, match="already prepared"):
        prepare_qat(model)


def test_qat_model_trains_and_loads_plain_weights():
    torch.manual_seed(0)
    model = prepare_qat(ghostnest.create_model("ghostmixnet", num_classes=10, **TINY))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    model.train()
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    fq = next(iter(model.qat_observers.values()))
    model.eval()
    scale = fq.scale.clone()
    with torch.no_grad():
        model(x * 10)  # evaluation does not move the observed ranges
    assert torch.equal(fq.scale, scale)
    plain = ghostnest.create_model("ghostmixnet", num_classes=10, **TINY)
    plain.load_state_dict(model.state_dict())
    model.load_state_dict(plain.state_dict())  # and back: resuming a QAT run
    with torch.no_grad():
        a, b = model(x), plain.eval()(x)
    assert not torch.equal(a, b) and (a.argmax(1) == b.argmax(1)).float().mean() > 0.5


def test_qat_model_compiles_as_one_graph():
    """``compile: true`` with ``qat: true``: the fake quantization traces (fullgraph fails on any graph break), the
    compiled training step moves the observed ranges, and the compiled model computes what the eager one does."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = prepare_qat(ghostnest.create_model("ghostmixnet", num_classes=10, **TINY))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(8, 3, 32, 32)
    model.train()
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    fq = next(iter(model.qat_observers.values()))
    assert torch.isfinite(fq.activation_post_process.min_val) and fq.scale.item() != 1.0  # observed in the graph
    model.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qat") / "run"
    assert main(["train", "--recipe", "quickstart", *SMALL, "--set", "epochs=1", "--out", str(out), "--device",
                 "cpu", "--quiet"]) == 0
    return out


def test_qat_cli_fine_tunes_a_run_and_exports_int8(run, capsys):
    assert main(["train", "--qat", str(run), "--set", "epochs=1", "--device", "cpu", "--quiet"]) == 0
    qrun = run.parent / "run-qat"
    cfg = yaml.safe_load((qrun / "config.yaml").read_text())
    base = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["qat"] is True and cfg["init_from"] == str(run / "best.safetensors")
    assert cfg["epochs"] == 1 and cfg["lr"] == pytest.approx(base["lr"] * 0.1)
    assert cfg["model_kwargs"] == base["model_kwargs"] and cfg["image_size"] == base["image_size"]
    res = json.loads((qrun / "results.json").read_text())
    assert res["test_top1"] > 50  # started from the trained weights: one epoch at a tenth of the lr keeps them
    tensors, meta = read_checkpoint(qrun / "best.safetensors")
    assert not any("parametrizations" in k for k in tensors)
    model, _ = ghostnest.load_checkpoint(qrun)  # the ordinary model
    assert not hasattr(model, "_qat_layers")
    out = qrun.parent / "q.int8.onnx"
    assert main(["export", str(qrun), "--format", "onnx", "--int8", "--calib-images", "64", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(qrun), "--model-file", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "int8" and report["top1"] > 50 and report["images"] == 360
    # a QAT run resumes from its own checkpoint (the QAT model loads plain names), without init_from's file
    best = run / "best.safetensors"
    best.rename(run / "moved")
    try:
        assert main(["train", "--resume", str(qrun), "--set", "epochs=2", "--device", "cpu", "--quiet"]) == 0
    finally:
        (run / "moved").rename(best)
    res = json.loads((qrun / "results.json").read_text())
    assert res["epochs"] == 2 and len((qrun / "metrics.csv").read_text().splitlines()) == 3


def test_qat_bad_inputs_are_one_line_errors(run, tmp_path, capsys):
    assert main(["train", "--qat", str(tmp_path / "nope"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {tmp_path / 'nope'} is not a ghostnest run directory")
    assert main(["train", "--qat", str(run), "--recipe", "quickstart", "--quiet"]) == 2
    assert "--qat RUN takes its configuration from RUN" in capsys.readouterr().err
    assert main(["train", "--recipe", "quickstart", "--set", "model=menest_ghost_s", "--set",
                 f"init_from={run}", "--out", str(tmp_path / "x"), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a ghostmixnet checkpoint but this run trains menest_ghost_s" in err[0]
    assert not (tmp_path / "x").exists()
