"""Shared fixtures: the device dimension.

``device`` (fixture) and ``DEVICES`` (for ``pytest.mark.parametrize("device", DEVICES)``) give ``cpu`` always and
``cuda`` where ``torch.cuda.is_available()``; on a machine without CUDA the ``cuda`` cases are collected and
skipped with a reason, so nothing else changes on CPU. Every ``cuda`` case carries the ``cuda`` marker:
``pytest -m cuda`` runs exactly those (benchmarks/gpu_check.py's ``tests`` step), ``-m "not cuda"`` the rest.

``autocast_dtype(device)`` is the low-precision autocast a check runs under on that device, with the tolerance
such a check states: bf16 keeps 8 bits of mantissa (relative rounding 2**-8 = 0.4% per operation), and errors
grow over a network's depth, so outputs under bf16 autocast are compared with the fp32 outputs to
``BF16_RTOL`` of the output's scale (max |fp32 output|).
"""
from __future__ import annotations

import pytest
import torch

CUDA = torch.cuda.is_available()
_NO_CUDA = "CUDA is not available on this machine (torch.cuda.is_available() is False)"

# max |low-precision - fp32| <= BF16_RTOL * max(1, max |fp32|): bf16 autocast, a few layers to a small network
BF16_RTOL = 0.05
FP32_RTOL = 1e-4  # fp32 on CUDA: cuDNN's algorithms (and TF32 where enabled) differ from the CPU's in rounding

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason=_NO_CUDA)]),
]


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs on a CUDA device (skipped where none is available)")


def pytest_collection_modifyitems(config, items):
    # cases parametrized over a device by hand ("...[cuda]", "...-cuda-...") get the marker too
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is not None and any(str(v).startswith("cuda") for k, v in spec.params.items() if k == "device"):
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """``torch.device("cpu")``, and ``torch.device("cuda")`` where available (skipped otherwise)."""
    return torch.device(request.param)


def autocast_dtype(device: torch.device | str) -> tuple[torch.dtype | None, float]:
    """(dtype, relative tolerance) of the low-precision autocast checks on ``device``: bf16 on CUDA where the GPU
    supports it (``BF16_RTOL``); on CPU bf16 too when this build runs a bf16 convolution under autocast, else
    ``(None, 0.0)`` (the caller skips)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return (torch.bfloat16, BF16_RTOL) if torch.cuda.is_bf16_supported() else (None, 0.0)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3))
    except (RuntimeError, NotImplementedError):
        return None, 0.0
    return torch.bfloat16, BF16_RTOL


@pytest.fixture(autouse=True, scope="session")
def _suite_cache(tmp_path_factory):
    """`ghostnest models` keeps its figures in a cache (``ghostnest.cli.model_rows``): the suite gets its own, not
    the user's ``~/.cache/ghostnest`` (subprocesses inherit it)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GHOSTNEST_CACHE", str(tmp_path_factory.mktemp("ghostnest-cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _torch_threads():
    """Each test starts with torch's thread count as the suite found it: a test that calls the training internals
    or a benchmark script in-process sets it (``threads: 1``) without a ``train()`` around it to restore it, and the
    tests after it would otherwise run on 1 thread (where float summation orders differ from a lone run's)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
