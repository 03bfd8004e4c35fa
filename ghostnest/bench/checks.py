"""Argument checks shared by the benchmarks: modes, dtypes, positive counts, the device."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..devices import resolve_device

MODES = ("infer", "train")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype for ``fp32``/``bf16``/``fp16``; ``ValueError`` if this device cannot run it under autocast."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    tdtype = DTYPES[dtype]
    if tdtype is torch.float32:
        return tdtype
    if device.type == "cuda":
        if tdtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"bf16 is not supported on {torch.cuda.get_device_name(device)}; use --dtype fp16 or --dtype fp32"
            )
        return tdtype
    # CPU: probe a tiny convolution under autocast (support depends on the build and the CPU's instructions).
    try:
        with torch.autocast("cpu", dtype=tdtype):
            F.conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3))
    except (RuntimeError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{dtype} autocast is not supported on this CPU build ({first}); use --dtype fp32") from None
    return tdtype


def check_positive(**values: int) -> None:
    """``ValueError`` naming the command-line flag for any value that is not a positive integer."""
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            fix = "--" + key.replace("_", "-")
            raise ValueError(f"{key} must be a positive integer, got {value!r}; pass {fix} 1 or more")


def check_run(mode: str, batch: int, repeats: int, warmup: int, input_size: int, num_classes: int, device: str,
              dtype: str) -> tuple[torch.device, torch.dtype]:
    """Checks shared by ``bench_models`` and ``bench_variants``; the resolved device and torch dtype."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    check_positive(batch=batch, repeats=repeats, input=input_size, num_classes=num_classes)
    if not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"warmup must be at least 1 (the first step measures memory), got {warmup!r}; pass --warmup 1")
    dev = resolve_device(device)
    tdtype = check_dtype(dtype, dev)
    if mode == "train" and batch < 2:
        raise ValueError("--mode train needs --batch 2 or more (BatchNorm cannot train on a single image)")
    return dev, tdtype
