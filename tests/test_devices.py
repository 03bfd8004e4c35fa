"""The checks that have a device dimension, on every device present (tests/conftest.py: ``cpu`` always, ``cuda``
where available, skipped otherwise): layers (MixConv implementations, Ghost module, Split-Attention layouts),
fuse parity, bf16 autocast forward parity (tolerance ``BF16_RTOL``), quantization-aware training steps, the
recipes' augmentation on the device (``augment_on: device``), and
training + resume exactness.

The CPU cases are deliberately small (other test files check the same on CPU at larger sizes); on a GPU they
check that the CUDA kernels (cuDNN, bf16 autocast, channels_last in training) give the same results.
fp32 comparisons on CUDA run with TF32 off (``fp32()``), so they compare rounding, not TF32's 10-bit mantissa.
"""
from __future__ import annotations

import contextlib
import csv

import pytest
import torch
from conftest import FP32_RTOL, autocast_dtype
from helpers import calibrate_bn

import ghostnest
from ghostnest.layers import GhostModule, MixConv2d, SplitAttention
from ghostnest.layers.mixconv import MIXCONV_IMPLS, set_mixconv_impl
from ghostnest.train import resolve_config, train
from ghostnest.train import checkpoint as ckpt

TINY_GMN = {"widths": [8, 16, 16], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1}
TINY_MENEST = (("ms", 1, 8, 1, 1), ("ms", 2, 16, 2, 4), ("ms_ghost", 2, 16, 2, 4), ("ms_ghost", 1, 24, 1, 6))


@contextlib.contextmanager
def fp32(device: torch.device):
    """Full fp32 on CUDA (TF32 off for cuDNN convolutions and matmuls); nothing to change on CPU."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def close(out: torch.Tensor, ref: torch.Tensor, rtol: float) -> None:
    err = (out.float() - ref.float()).abs().max().item()
    scale = max(1.0, ref.abs().max().item())
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol} x {scale:.3g}"


# ------------------------------------------------------------------------------------------------------ layers
@pytest.mark.parametrize("stride,multiplier", [(1, 1), (2, 2)])
def test_mixconv_impls_match_split(device, stride, multiplier):
    torch.manual_seed(0)
    ref = MixConv2d(12, (3, 5, 7), stride=stride, multiplier=multiplier, impl="split").to(device)
    x = torch.randn(2, 12, 9, 9, device=device, requires_grad=True)
    with fp32(device):
        y_ref = ref(x)
        g_ref, = torch.autograd.grad(y_ref.square().sum(), x)
        for impl in MIXCONV_IMPLS:
            y = set_mixconv_impl(ref, impl)(x)
            g, = torch.autograd.grad(y.square().sum(), x)
            close(y, y_ref, FP32_RTOL)
            close(g, g_ref, FP32_RTOL)


def test_ghost_module_matches_float64_cpu(device):
    torch.manual_seed(0)
    m = GhostModule(8, 22, kernel_size=3, cheap_kernel=(3, 5, 7, 9), stride=2).train()
    x = torch.randn(3, 8, 11, 11)
    want = m.double()(x.double())
    with fp32(device):
        got = m.float().to(device)(x.to(device))
    close(got.cpu(), want, FP32_RTOL)


def test_split_attention_layouts_agree(device):
    torch.manual_seed(0)
    radix, channels = 2, 16
    sm = SplitAttention(channels, radix, 2, reduction=4, min_inner=8).to(device)
    cm = SplitAttention(channels, radix, 2, reduction=4, min_inner=8, layout="channel_major").to(device)
    cm.load_state_dict(sm.state_dict())
    splits = torch.randn(3, radix, channels, 5, 4, device=device)
    with fp32(device):
        for mode in (True, False):
            sm.train(mode), cm.train(mode)
            ys = sm(splits.reshape(3, radix * channels, 5, 4))
            yc = cm(splits.transpose(1, 2).reshape(3, channels * radix, 5, 4))
            close(yc, ys, FP32_RTOL)


# ------------------------------------------------------------------------------------------------- fuse, bf16
def _small(name: str):
    torch.manual_seed(0)
    if name == "menest":
        model, size = ghostnest.create_model("menest_ghost_s", num_classes=10, stages=TINY_MENEST, num_features=64), 32
    else:
        model, size = ghostnest.create_model("ghostmixnet", num_classes=10, **TINY_GMN), 16
    return calibrate_bn(model, size), size  # BN statistics of image-like data, so the check is not trivial


@pytest.mark.parametrize("name", ["menest", "ghostmixnet"])
def test_fuse_parity(device, name):
    model, size = _small(name)
    model = model.to(device)
    x = torch.randn(4, 3, size, size, device=device)
    with fp32(device), torch.no_grad():
        ref = model(x)
        out = ghostnest.fuse(model)(x)
    assert ref.std() > 1e-2
    close(out, ref, FP32_RTOL)


@pytest.mark.parametrize("name", ["menest", "ghostmixnet"])
@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_bf16_autocast_forward_parity(device, name, fused):
    dtype, rtol = autocast_dtype(device)
    if dtype is None:
        pytest.skip(f"no bf16 autocast on this {device.type} build")
    model, size = _small(name)
    model = model.to(device)
    x = torch.randn(4, 3, size, size, device=device)
    with fp32(device), torch.no_grad():
        ref = model(x)
        fast = ghostnest.fuse(model) if fused else model
        with torch.autocast(device.type, dtype=dtype):
            low = fast(x)
    assert low.dtype == dtype  # the classifier ran under autocast
    close(low, ref, rtol)


@pytest.mark.parametrize("name", ["menest", "ghostmixnet"])
def test_qat_steps_on_device(device, name):
    """Quantization-aware training (ghostnest.train.qat) on the device, on CUDA under bf16 autocast as the recipes train
    there (the trainer never autocasts on the CPU): the fake-quantized model trains (finite gradients, falling loss)
    and keeps plain state_dict names; the activation ranges live on the device of the input."""
    from ghostnest.train.qat import prepare_qat

    model, size = _small(name)
    model = prepare_qat(model.to(device).train())
    dtype = autocast_dtype(device)[0] if device.type == "cuda" else None
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(8, 3, size, size, device=device), torch.randint(0, 10, (8,), device=device)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(fq.scale.device.type == device.type for fq in model.qat_observers.values())
    assert not any("parametrizations" in k for k in model.state_dict())


# ---------------------------------------------------------------------------------------- input augmentation
@pytest.mark.parametrize("recipe", ["ghostmixnet-cifar10", "menest-cifar100"])
def test_device_augment_runs_every_recipe_op_on_the_device(device, recipe):
    """augment_on=device: the papers' recipes' v2 ops (and the resizes before them) run on this device's uint8
    batch and keep it uint8, of the training size, on the device."""
    from ghostnest.data.loader import DeviceAugment, build_augment, resize_steps
    from ghostnest.train.config import load_recipe

    spec = load_recipe(recipe)
    sizes = resize_steps(32, 128 if recipe.startswith("menest") else 32, spec.get("image_size") or 32)
    augment = DeviceAugment(sizes, build_augment(spec["augment"]), group=2)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, device=device)
    for _ in range(3):  # several draws: AutoAugment / RandAugment pick other ops each time
        out = augment(images)
        assert out.device.type == device.type and out.dtype == torch.uint8
        assert out.shape == (4, 3, sizes[-1] if sizes else 32, sizes[-1] if sizes else 32)


# -------------------------------------------------------------------------------------------- training, resume
def _rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


@contextlib.contextmanager
def deterministic(device: torch.device):
    """On CUDA, deterministic kernels (cuDNN and atomics-free reductions) so that two runs can agree bit for bit."""
    if device.type != "cuda":
        yield
        return
    import os

    old_env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
            yield
    finally:
        torch.use_deterministic_algorithms(old)
        if old_env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = old_env


@pytest.mark.parametrize("qat", [False, True], ids=["float", "qat"])
def test_train_and_resume_exact(device, qat, tmp_path):
    """A run stopped after epoch 1 and resumed ends bit-identical to the uninterrupted run (on CUDA: under the
    recipe's AMP and channels_last, with deterministic kernels); a QAT run too (its activation ranges resume)."""
    cfg = {"recipe": "tiny", "model": "ghostmixnet", "model_kwargs": TINY_GMN,
           "dataset": "fake:classes=4,size=16,train=64,test=16", "val_fraction": 0.25, "workers": 0, "epochs": 2,
           "batch_size": 16, "lr": 3e-3, "label_smoothing": 0.1, "threads": 1, "qat": qat,
           "augment": [{"op": "RandomCrop", "size": 16, "padding": 2}], "mixup_alpha": 0.2, "cutmix_alpha": 1.0}
    full, part = tmp_path / "full", tmp_path / "part"
    with deterministic(device):
        res = train(resolve_config(cfg), full, device=str(device), progress=False)
        stopped = train(resolve_config(cfg), part, device=str(device), progress=False, stop_after=1)
        assert stopped["stopped_at"] == 1
        train(None, resume=part, device=str(device), progress=False)
    assert res["device"].startswith(device.type)
    assert _rows(full) == _rows(part)
    wa, _ = ckpt.read_checkpoint(full / "last.safetensors")
    wb, _ = ckpt.read_checkpoint(part / "last.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
