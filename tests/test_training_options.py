"""timm's training options beyond the papers' recipes (docs/training.md, "Training options"): weight EMA, warmup,
gradient accumulation, clipping, layer-wise learning-rate decay, activation checkpointing and a new head for a
fine-tune. Each is off by default; each is checked against its definition, and a run with all of them on resumes
exactly from inside an epoch. Bad values are one-line errors that write nothing."""
from __future__ import annotations

import contextlib
import csv
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from timm.utils import ModelEmaV3
from torch import nn

from helpers import group_norm_instead_of_batch_norm, image_folder

from ghostnest.cli import main
from ghostnest.models.ghostmixnet import GhostMixNet
from ghostnest.train import checkpoint as ckpt
from ghostnest.train import engine, optim, resolve_config, train, trainer

TINY = {"widths": [8, 16, 16], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1}
ALL_OPTIONS = {"ema_decay": 0.99, "warmup_epochs": 1, "warmup_lr": 1e-5, "accum_steps": 2, "clip_grad": 0.5,
               "layer_decay": 0.7}


def config(**extra):
    base = {"recipe": "tiny", "model": "ghostmixnet", "model_kwargs": TINY,
            "dataset": "fake:classes=4,size=16,train=96,test=32", "val_fraction": 0.25, "workers": 0, "epochs": 2,
            "batch_size": 16, "lr": 3e-3, "weight_decay": 1e-3, "label_smoothing": 0.1, "mixup_alpha": 0.2,
            "threads": 1}
    return resolve_config({**base, **extra})


def rows(run):
    with open(Path(run) / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


# --- gradient accumulation ---------------------------------------------------------------------------------------

def _step_context(model, k: int, label_smoothing: float = 0.1, ddp: bool = False):
    cfg = SimpleNamespace(accum_steps=k, label_smoothing=label_smoothing)
    return SimpleNamespace(cfg=cfg, opt=torch.optim.SGD(model.parameters(), lr=0.1), step_model=model,
                           scaler=torch.amp.GradScaler("cuda", enabled=False), autocast=contextlib.nullcontext,
                           dist=SimpleNamespace(enabled=ddp))


def test_four_micro_batches_give_the_gradients_of_one_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    x = torch.randn(32, 3, 12, 12)
    hard = torch.randint(0, 5, (32,))
    mixed = 0.7 * nn.functional.one_hot(hard, 5).float() + 0.3 * nn.functional.one_hot(hard.roll(1), 5).float()
    for y in (hard, mixed):  # class indices, and the soft targets of Mixup/CutMix
        grads, losses = [], []
        for k in (1, 4):
            losses.append(engine._forward_backward(_step_context(model, k), x, y))
            grads.append([p.grad.clone() for p in model.parameters()])
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_ddp_synchronises_once_per_optimizer_step():
    entered = []
    model = nn.Linear(4, 3)
    model.no_sync = lambda: contextlib.nullcontext(entered.append(1))  # DDP's context, counted
    engine._forward_backward(_step_context(model, 4, ddp=True), torch.randn(8, 4), torch.randint(0, 3, (8,)))
    assert len(entered) == 3  # micro-batches 1-3 skip the all-reduce; the 4th synchronises


def test_accumulation_trains_like_the_whole_batch(tmp_path, monkeypatch):
    """Without BatchNorm (whose statistics are per micro-batch) the run with 4 micro-batches is the run with one,
    up to float rounding."""
    create = trainer.create_recipe_model
    monkeypatch.setattr(trainer, "create_recipe_model", lambda *a, **k: group_norm_instead_of_batch_norm(create(*a, **k)))
    train(config(), tmp_path / "one", device="cpu", progress=False)
    train(config(accum_steps=4), tmp_path / "four", device="cpu", progress=False)
    for a, b in zip(rows(tmp_path / "one"), rows(tmp_path / "four"), strict=True):
        for key in ("train_loss", "val_loss", "val_top1"):
            assert math.isclose(float(a[key]), float(b[key]), rel_tol=1e-4, abs_tol=1e-5), (key, a, b)


# --- warmup, EMA, clipping, layer decay ---------------------------------------------------------------------------

def test_warmup_rises_per_step_and_hands_over_to_the_schedule():
    cfg = config(warmup_epochs=2, warmup_lr=1e-4, epochs=4)
    model = nn.Linear(2, 2)
    opt = optim.build_optimizer(cfg, model)
    sched = optim.build_scheduler(cfg, opt)
    n, seen = 5, []
    for epoch in range(4):
        for step in range(n):
            optim.set_step_lr(opt, sched, optim.warmup_factor(cfg, epoch * n + step, n))
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
        optim.set_step_lr(opt, sched, 1.0)
        sched.step()
    reference = optim.build_scheduler(cfg, optim.build_optimizer(cfg, nn.Linear(2, 2)))  # the schedule alone
    scheduled = []
    for _ in range(4):
        scheduled.append(reference.get_last_lr()[0])
        reference.optimizer.step(), reference.step()
    # a factor on the schedule, rising per step from warmup_lr / lr to 1 over the first 2 epochs (10 steps)
    for update, lr in enumerate(seen):
        factor = 1e-4 / 3e-3 + (1 - 1e-4 / 3e-3) * update / 10 if update < 10 else 1.0
        assert lr == pytest.approx(scheduled[update // n] * factor, rel=1e-12), update
    assert seen[0] == pytest.approx(1e-4) and all(b > a for a, b in zip(seen[:4], seen[1:5], strict=True))
    assert seen[10:] == [scheduled[2]] * 5 + [scheduled[3]] * 5  # after warmup: exactly the schedule without it
    assert optim.warmup_factor(config(), 0, n) == 1.0  # off by default


def test_ema_is_timms_and_validated_beside_the_model(tmp_path):
    run = tmp_path / "run"
    res = train(config(ema_decay=0.9), run, device="cpu", progress=False)
    header = open(run / "metrics.csv").readline().strip().split(",")
    assert header[-3:] == ["ema_val_loss", "ema_val_top1", "ema_val_top5"]
    state = torch.load(run / "last.state.pt", weights_only=True)
    live, ema = state["model"], state["ema"]
    assert live.keys() == ema.keys() and any(not torch.equal(live[k], ema[k]) for k in live)
    _, meta = ckpt.read_checkpoint(run / "best.safetensors")
    assert meta["weights"] in ("live", "ema") and res["best_weights"] == meta["weights"] == state["best_weights"]
    assert res["best_val_top1"] == max(max(float(r["val_top1"]), float(r["ema_val_top1"])) for r in rows(run))


def test_clipping_is_timms_dispatch_after_unscaling():
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    model(torch.randn(16, 8)).pow(2).sum().mul(100).backward()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    optim.clip_gradients(config(clip_grad=0.5), model, opt, scaler)
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert total == pytest.approx(0.5, rel=1e-4)
    optim.clip_gradients(config(clip_grad=0.01, clip_mode="value"), model, opt, scaler)
    assert max(p.grad.abs().max() for p in model.parameters()) <= 0.01 + 1e-9


def test_layer_decay_groups_come_from_timms_factory():
    import ghostnest

    cfg = config(layer_decay=0.5)
    model = ghostnest.create_model("ghostmixnet", num_classes=4, **TINY)
    opt = optim.build_optimizer(cfg, model)
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs[-1] == pytest.approx(3e-3) and lrs[0] == pytest.approx(3e-3 * 0.5 ** (len(lrs) - 1))
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model.stem[0].weight)]["lr"] == lrs[0] and by_param[id(model.fc.weight)]["lr"] == lrs[-1]
    assert by_param[id(model.stem[1].weight)]["weight_decay"] == 0.0  # timm: no decay on norm weights and biases
    assert isinstance(opt, torch.optim.AdamW)
    sgd = optim.build_optimizer(config(layer_decay=0.5, optimizer="sgd"), model)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]


# --- every option at once: a stop inside an epoch (inside warmup and between micro-batches) resumes exactly -------

def test_all_options_resume_exactly_from_inside_an_epoch(tmp_path, monkeypatch):
    cfg = config(**ALL_OPTIONS, augment=[{"op": "RandomCrop", "size": 16, "padding": 2}])
    train(cfg, tmp_path / "full", device="cpu", progress=False)
    real, calls = engine.loss_fn, {"n": 0}

    class Stop(BaseException):  # kill -9: nothing after it runs
        pass

    def crash(*a):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 1 (in warmup), step 3, its 2nd micro-batch: after the step-2 checkpoint
            raise Stop
        return real(*a)

    monkeypatch.setattr(engine, "loss_fn", crash)
    with pytest.raises(Stop):
        train(resolve_config({**vars(cfg), "checkpoint_steps": 2}), tmp_path / "part", device="cpu", progress=False)
    monkeypatch.setattr(engine, "loss_fn", real)
    state = torch.load(tmp_path / "part" / "last.state.pt", weights_only=True)
    assert (state["epoch"], state["mid_epoch"]["step"]) == (0, 2) and state["ema"] is not None
    train(None, resume=tmp_path / "part", device="cpu", progress=False)
    assert rows(tmp_path / "part") == rows(tmp_path / "full")
    a = torch.load(tmp_path / "full" / "last.state.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.state.pt", weights_only=True)
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


def test_a_stop_signal_between_micro_batches_saves_after_the_step_and_resumes_exactly(tmp_path, monkeypatch):
    import os
    import signal

    cfg = config(accum_steps=4, ema_decay=0.9)
    train(cfg, tmp_path / "full", device="cpu", progress=False)
    real, calls = engine.loss_fn, {"n": 0}

    def signalled(*a):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 1, step 2, its 2nd of 4 micro-batches: as if the job were preempted here
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a)

    monkeypatch.setattr(engine, "loss_fn", signalled)
    stopped = train(cfg, tmp_path / "part", device="cpu", progress=False)
    assert stopped["signal"] == "SIGTERM" and stopped["step"] == 2  # the step's accumulation finished first
    assert calls["n"] == 8
    monkeypatch.setattr(engine, "loss_fn", real)
    train(None, resume=tmp_path / "part", device="cpu", progress=False)
    assert rows(tmp_path / "part") == rows(tmp_path / "full")


def test_paper_recipes_switch_every_option_off():
    from ghostnest.train.config import list_recipes

    for name in set(list_recipes()) - {"finetune"}:
        cfg = resolve_config(name)
        assert (cfg.ema_decay, cfg.warmup_epochs, cfg.accum_steps, cfg.clip_grad, cfg.layer_decay,
                cfg.grad_checkpointing) == (None, 0, 1, None, None, False), name


# --- a fine-tune on new classes gets a new head; activation checkpointing ----------------------------------------

def test_init_from_other_classes_keeps_the_body_and_makes_a_new_head(tmp_path):
    base = tmp_path / "base"
    train(config(epochs=1), base, device="cpu", progress=False)
    built = []
    create = trainer.create_recipe_model

    def keep(*a, **k):
        built.append(create(*a, **k))
        return built[-1]

    trainer.create_recipe_model = keep
    try:  # other classes (3 instead of 4): the body loads, the head is new
        trainer._build_model(config(init_from=str(base), dataset="fake:classes=3,size=16,train=48"), 3,
                             SimpleNamespace(world=1, device=torch.device("cpu")), classes=["a", "b", "c"])
    finally:
        trainer.create_recipe_model = create
    weights, _ = ckpt.read_checkpoint(base / "best.safetensors")
    model = built[-1]
    assert torch.equal(model.stem[0].weight, weights["stem.0.weight"]) and model.fc.out_features == 3


def test_the_finetune_recipe_runs_from_the_command_line(tmp_path, monkeypatch):
    """``--recipe finetune`` end to end, as docs/training.md runs it: a trained run, a new ImageFolder data set of
    other classes, the model's own ``group_matcher`` for layer decay, EMA, warmup and clipping."""
    import yaml

    base = tmp_path / "base"
    train(config(epochs=1), base, device="cpu", progress=False)
    dataset = image_folder(tmp_path / "new", ["five", "six", "seven"], per_class=8)
    built = []
    monkeypatch.setattr(trainer, "build_optimizer", lambda cfg, model: built.append(optim.build_optimizer(cfg, model))
                        or built[-1])
    out = tmp_path / "ft"
    assert main(["train", "--recipe", "finetune", "--set", f"init_from={base}", "--set",
                 f"dataset={dataset}", "--set", f"model_kwargs={TINY}", "--set", "epochs=1",
                 "--set", "batch_size=8", "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["layer_decay"], cfg["ema_decay"], cfg["warmup_epochs"], cfg["clip_grad"]) == (0.75, 0.998, 1, 1.0)
    scales = sorted({round(g["lr_scale"], 6) for g in built[0].param_groups})
    blocks = sum(TINY["depths"])  # the stem, one group per block, the head: a decayed rate for each below the top
    assert len(scales) == blocks + 2 and scales[0] == pytest.approx(0.75 ** (blocks + 1)) and scales[-1] == 1.0
    weights, _ = ckpt.read_checkpoint(out / "best.safetensors")
    assert weights["fc.weight"].shape[0] == 3  # a new three-way head
    assert set(rows(out)[0]) >= {"val_top1", "ema_val_top1"}


def test_grad_checkpointing_calls_the_models_switch(monkeypatch):
    calls = []
    monkeypatch.setattr(GhostMixNet, "set_grad_checkpointing", lambda self, enable=True: calls.append(enable),
                        raising=False)
    trainer._build_model(config(grad_checkpointing=True), 4, SimpleNamespace(world=1, device=torch.device("cpu")))
    assert calls == [True]


# --- bad inputs: one line each, nothing written -------------------------------------------------------------------

@pytest.mark.parametrize("setting, message", [
    ("accum_steps=3", "accum_steps=3 does not divide batch_size=16"),
    ("warmup_epochs=-1", "warmup_epochs=-1 must be >= 0"),
    ("ema_decay=1.5", "ema_decay=1.5 must be in (0, 1)"),
    ("ema_decay=0", "ema_decay=0.0 must be in (0, 1)"),
    ("clip_mode=median", "clip_mode='median' is not accepted; accepted values: norm, value, agc"),
    ("clip_grad=-1", "clip_grad=-1.0 must be > 0"),
    ("layer_decay=1.5", "layer_decay=1.5 must be in (0, 1]"),
])
def test_bad_option_values_are_one_line_errors(setting, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--set", "batch_size=16", "--set", setting, "--out", str(out), "--device", "cpu",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize("setting, missing", [("layer_decay=0.75", "group_matcher"),
                                              ("grad_checkpointing=true", "set_grad_checkpointing")])
def test_options_a_model_does_not_support_are_one_line_errors(setting, missing, tmp_path, capsys, monkeypatch):
    class Bare(nn.Module):  # a model without timm's grouping / checkpointing interface
        def __init__(self, num_classes):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

        def forward(self, x):
            return self.body(x)

    monkeypatch.setattr(trainer, "create_recipe_model", lambda cfg, n: Bare(n))
    out = tmp_path / "run"
    assert main(["train", "--set", "dataset=fake:classes=4,size=16,train=32", "--set", setting, "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and missing in err, err
    assert not out.exists()


def test_accumulation_that_does_not_divide_a_ranks_batch_is_refused(tmp_path):
    from ghostnest.train.distributed import Dist

    with pytest.raises(ValueError, match=r"does not divide the batch of each of the 2 process\(es\) \(16 / 2 = 8\)"):
        trainer.build_context(config(accum_steps=16), tmp_path / "run", Dist(torch.device("cpu"), 0, 2), None,
                              False, False, False)
    assert not (tmp_path / "run").exists()


def test_ema_model_is_timms_model_ema_v3(tmp_path):
    from ghostnest.train.distributed import Dist

    ctx = trainer.build_context(config(ema_decay=0.5), tmp_path / "run", Dist(torch.device("cpu")), None, False,
                                False, False)
    assert isinstance(ctx.ema, ModelEmaV3) and ctx.ema.use_warmup and ctx.ema.decay == 0.5
