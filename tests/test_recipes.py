"""Each recipe resolves to the papers' numbers (asserted explicitly), overrides are checked, and the packaged
recipes are the ones at the repository root."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from ghostnest.cli import main
from ghostnest.data import build_augment, build_mix
from ghostnest.data.datasets import CIFAR10_MEAN, CIFAR10_STD, dataset_size
from ghostnest.train.config import list_recipes, recipe_dir, resolve_config
from ghostnest.train.optim import build_optimizer, build_scheduler

GHOSTMIXNET_ROWS = {  # GhostMixNet, results table: recipe -> (model, transforms?, Mixup/CutMix?)
    "ghostmixnet-cifar10-resnet": ("ghostmixnet_resnet", False, False),
    "ghostmixnet-cifar10-resnet-se": ("ghostmixnet_resnet_se", True, False),
    "ghostmixnet-cifar10-ghost-se": ("ghostmixnet", True, False),
    "ghostmixnet-cifar10": ("ghostmixnet", True, True),
}


def test_recipe_list_and_location():
    names = set(list_recipes())
    assert names == {"quickstart", "finetune", "menest-cifar100", *GHOSTMIXNET_ROWS}
    root = Path(__file__).resolve().parents[1] / "recipes"
    if root.exists():  # a source checkout: recipes/ at the root is the packaged folder
        assert {p.name for p in root.glob("*.yaml")} == {p.name for p in recipe_dir().glob("*.yaml")}


def test_menest_cifar100_is_seed_000_section_4():
    cfg = resolve_config("menest-cifar100")
    assert cfg.model == "menest_ghost_s" and cfg.dataset == "cifar100_128" and dataset_size(cfg.dataset) == 128
    assert cfg.image_size == 256  # "resized to 256x256 for training"
    assert cfg.augment == [{"op": "RandAugment", "num_ops": 2, "magnitude": 10}]
    assert cfg.label_smoothing == 0.1 and cfg.mixup_alpha == 0 and cfg.cutmix_alpha == 0
    assert cfg.optimizer == "adamw" and cfg.lr == 1e-4 and cfg.weight_decay == 1e-6
    assert cfg.scheduler == "cosine" and cfg.eta_min == 1e-6 and cfg.epochs == 100
    assert cfg.val_fraction == 0.05 and not cfg.val_on_test  # 95:5
    (ra,) = build_augment(cfg.augment).transforms
    assert isinstance(ra, v2.RandAugment) and ra.magnitude == 10
    sched = build_scheduler(cfg, build_optimizer(cfg, torch.nn.Linear(2, 2)))
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.T_max == 100
    for _ in range(100):
        sched.optimizer.step(), sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(1e-6)
    other = resolve_config("menest-cifar100", ["model=efficientnetv2_l"])
    assert other.model == "efficientnetv2_l" and other.lr == 1e-4


def test_ghostmixnet_cifar10_is_the_published_run():
    cfg = resolve_config("ghostmixnet-cifar10")
    assert cfg.model == "ghostmixnet" and cfg.dataset == "cifar10" and cfg.val_on_test
    assert cfg.batch_size == 128 and cfg.epochs == 200 and cfg.workers == 2 and cfg.label_smoothing == 0.1
    assert cfg.optimizer == "adamw" and cfg.lr == 1e-3 and cfg.betas == (0.9, 0.999) and cfg.weight_decay == 1e-3
    assert cfg.scheduler == "cosine_restarts" and cfg.restart_epochs == 50 and cfg.restart_mult == 1
    assert cfg.eta_min == 1e-4
    assert (cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mixup_p) == (0.2, 1.0, 0.5)
    flip, crop, persp, post, jitter, auto = build_augment(cfg.augment).transforms
    assert isinstance(flip, v2.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(crop, v2.RandomCrop) and crop.size == (32, 32) and crop.padding == [4, 4, 4, 4]
    assert isinstance(persp, v2.RandomPerspective) and persp.distortion_scale == 0.5 and persp.p == 0.5
    assert isinstance(post, v2.RandomPosterize) and post.bits == 4 and post.p == 0.4
    assert isinstance(jitter, v2.ColorJitter) and jitter.brightness == (0.8, 1.2) and jitter.hue == (-0.1, 0.1)
    assert jitter.contrast == (0.8, 1.2) and jitter.saturation == (0.8, 1.2)
    assert isinstance(auto, v2.AutoAugment) and auto.policy == v2.AutoAugmentPolicy.CIFAR10
    mix = build_mix(cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mixup_p, 10)
    assert mix.p == [0.5, 0.5] and mix.transforms[0]._dist.concentration1.item() == pytest.approx(0.2)
    assert mix.transforms[1]._dist.concentration1.item() == pytest.approx(1.0)
    assert CIFAR10_MEAN == (0.4914, 0.4822, 0.4465) and CIFAR10_STD == (0.2470, 0.2435, 0.2616)
    opt = build_optimizer(cfg, torch.nn.Linear(2, 2))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)
    sched = build_scheduler(cfg, opt)
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)
    assert (sched.T_0, sched.T_mult, sched.eta_min) == (50, 1, 1e-4)
    lrs = []
    for _ in range(101):
        lrs.append(sched.get_last_lr()[0])
        opt.step(), sched.step()
    assert lrs[0] == lrs[50] == lrs[100] == pytest.approx(1e-3) and min(lrs) >= 1e-4  # restarts every 50 epochs


@pytest.mark.parametrize("name", list(GHOSTMIXNET_ROWS))
def test_ablation_rows(name):
    model, transforms, mixing = GHOSTMIXNET_ROWS[name]
    cfg, final = resolve_config(name), resolve_config("ghostmixnet-cifar10")
    assert cfg.model == model
    assert (cfg.augment == final.augment) if transforms else cfg.augment == []
    assert (cfg.mixup_alpha, cfg.cutmix_alpha) == ((0.2, 1.0) if mixing else (0.0, 0.0))
    same = ("dataset", "val_on_test", "epochs", "batch_size", "lr", "betas", "weight_decay", "scheduler",
            "restart_epochs", "eta_min", "label_smoothing")
    assert all(getattr(cfg, k) == getattr(final, k) for k in same)


def test_quickstart_recipe():
    cfg = resolve_config("quickstart")
    assert cfg.model == "ghostmixnet" and cfg.model_kwargs == {} and cfg.dataset == "digits"
    assert cfg.workers == 0 and cfg.epochs <= 3


def test_overrides_and_errors():
    cfg = resolve_config("quickstart", ["model_kwargs.drop_rate=0.1", "lr=3e-4", "betas=[0.8,0.9]", "amp=off"])
    assert cfg.model_kwargs == {"drop_rate": 0.1} and cfg.lr == 3e-4 and cfg.betas == (0.8, 0.9)
    with pytest.raises(ValueError, match=r"unknown config key\(s\): lrate.*Accepted keys: recipe"):
        resolve_config("quickstart", ["lrate=1"])
    with pytest.raises(ValueError, match="epochs='ten' has the wrong type: expected int"):
        resolve_config("quickstart", ["epochs=ten"])
    with pytest.raises(ValueError, match="accepted values: adamw, sgd"):
        resolve_config("quickstart", ["optimizer=lion"])
    with pytest.raises(ValueError, match="unknown recipe 'quickstrat'.*Did you mean: quickstart"):
        resolve_config("quickstrat")
    with pytest.raises(ValueError, match="unknown model 'ghostmix'"):
        resolve_config("quickstart", ["model=ghostmix"])
    with pytest.raises(ValueError, match="expected key=value"):
        resolve_config("quickstart", ["epochs"])


def test_recipes_cli(capsys):
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out
    assert "menest-cifar100" in listed and "ghostmixnet-cifar10-resnet-se" in listed
    assert main(["recipes", "show", "menest-cifar100", "--set", "model=efficientnetv2_s", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model"] == "efficientnetv2_s" and shown["lr"] == 1e-4 and shown["image_size"] == 256
    assert main(["recipes", "show", "quickstart", "--set", "batch_sise=3"]) == 2
    assert "batch_sise (did you mean batch_size?)" in capsys.readouterr().err
