"""Shared test utilities."""
import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark_script(name: str):
    """``benchmarks/NAME.py`` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def calibrate_bn(model: torch.nn.Module, size: int, batches: int = 2, batch: int = 16) -> torch.nn.Module:
    """Give every BN running statistics of image-like inputs (per-image brightness and contrast vary), so the
    eval-mode network is well conditioned. A fresh network in eval mode shrinks its signal to ~1e-7 (any parity
    check would pass trivially), and statistics from a few pure-noise images leave the attention BNs, which see
    one pooled value per image, so ill-conditioned that float32 and float64 disagree by percents."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(batches):
            x = torch.randn(batch, 3, size, size, generator=gen)
            model(x * (0.5 + torch.rand(batch, 1, 1, 1, generator=gen)) + torch.randn(batch, 3, 1, 1, generator=gen))
    return model.eval()


def group_norm_instead_of_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Per-sample normalisation: a model whose gradient on a batch is exactly the mean of its halves' gradients.

    BatchNorm's batch statistics make a rank's half batch differ from the whole one (SyncBatchNorm fixes that, but
    PyTorch runs it on GPUs only), so the CPU equivalence test swaps it for GroupNorm(1, C)."""
    for name, child in model.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(model, name, torch.nn.GroupNorm(1, child.num_features))
        else:
            group_norm_instead_of_batch_norm(child)
    return model


def image_folder(root: Path, classes: list[str], per_class: int = 2) -> str:
    """An ImageFolder tree of random 16 x 16 PNGs (``root/train/CLASS/*``, ``root/test/CLASS/*``, seeded) and the
    ``dataset`` value that loads it at 16 pixels."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return f"imagefolder:{root}:16"
