"""`ghostnest recipes preview`: the recipe's own training pipeline, drawn as training draws its first batch."""
from __future__ import annotations

import pytest
import torch

import ghostnest.train.trainer as trainer
from ghostnest.cli import main
from ghostnest.data import load_dataset
from ghostnest.train import train
from ghostnest.train.config import resolve_config
from ghostnest.train.preview import build_preview, mixed_label

TINY = {"model_kwargs": {"widths": [8, 8, 8], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1},
        "dataset": "fake:classes=4,size=16,train=64,test=16", "batch_size": 16, "val_fraction": 0.25, "workers": 0,
        "epochs": 1, "threads": 1}
AUGMENT = [{"op": "RandomHorizontalFlip"}, {"op": "RandomCrop", "size": 16, "padding": 3}]


class Captured(Exception):
    pass


def first_training_input(cfg, tmp_path, monkeypatch) -> torch.Tensor:
    """The tensor the model's first training step receives in a real ``train()`` run of ``cfg``."""
    seen = []
    build = trainer._build_model

    def spy(*args, **kwargs):
        model, params = build(*args, **kwargs)

        def hook(module, inputs):
            if module.training:
                seen.append(inputs[0].detach().clone())
                raise Captured

        model.register_forward_pre_hook(hook)
        return model, params

    monkeypatch.setattr(trainer, "_build_model", spy)
    with pytest.raises(Captured):
        train(cfg, out=tmp_path / "run", device="cpu", progress=False)
    return seen[0]


@pytest.mark.parametrize("mix", [{}, {"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}],
                         ids=["augment", "mixup", "cutmix"])
def test_preview_shows_what_training_feeds_the_model(tmp_path, monkeypatch, mix):
    cfg = resolve_config({**TINY, "augment": AUGMENT, "seed": 5, **mix})
    data = load_dataset(cfg.dataset, str(tmp_path))
    p = build_preview(cfg, data, samples=16)
    column = "inputs" if not mix else ("Mixup" if "mixup_alpha" in mix else "CutMix")
    expected = first_training_input(cfg, tmp_path, monkeypatch)
    torch.testing.assert_close(p.model_inputs[column], expected[:16], rtol=0, atol=0)
    assert p.stored is not None and p.inputs.shape == (16, 16, 16, 3)
    assert not torch.equal(p.model_inputs["inputs"], torch.from_numpy(p.stored).permute(0, 3, 1, 2))  # augmented


def test_both_mixers_side_by_side_with_mixed_labels(tmp_path):
    cfg = resolve_config({**TINY, "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "seed": 1})
    data = load_dataset(cfg.dataset, str(tmp_path))
    state = torch.get_rng_state()
    p = build_preview(cfg, data, samples=4)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    assert list(p.mixed) == ["Mixup", "CutMix"] and p.stored is None  # no per-image augmentation: no stored column
    for _, soft, lam in p.mixed.values():
        assert soft.shape == (4, 4) and torch.allclose(soft.sum(1), torch.ones(4))
        assert lam is None or 0 <= lam <= 1
    soft = torch.tensor([0.0, 0.7, 0.0, 0.3])
    assert mixed_label(soft, ["a", "b", "c", "d"]) == "b (0.70) + d (0.30)"
    assert mixed_label(torch.tensor([0.0, 1.0, 0.0, 0.0]), ["a", "b", "c", "d"]) == "b (1.00)"


def test_cli_preview_offline_on_the_embedded_digits(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["recipes", "preview", "ghostmixnet-cifar10", "--set", "dataset=digits", "--set", "workers=0",
                 "--samples", "3", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "3 digits training samples" in said and "(stored image, training input, Mixup, CutMix)" in said
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["recipes", "preview", "quickstart", "--samples", "4", "--out", str(tmp_path / "q.png")]) == 0
    assert "(training input)" in capsys.readouterr().out


@pytest.mark.parametrize("args,expected", [
    (["quickstart", "--out", "DIR"], "must be an image file name ending in .png"),
    (["quickstart", "--out", "x.txt"], "must be an image file name ending in .png"),
    (["quickstart"], "usage: ghostnest recipes preview RECIPE --out FILE.png"),
    (["quickstrat", "--out", "x.png"], "unknown recipe 'quickstrat'. Did you mean: quickstart?"),
    (["ghostmixnet-cifar10", "--set", "download=false", "--data-dir", "EMPTY", "--out", "x.png"], "cifar"),
])
def test_preview_bad_inputs(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    (tmp_path / "EMPTY").mkdir()
    assert main(["recipes", "preview", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR", "EMPTY"]
