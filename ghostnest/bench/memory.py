"""Peak memory of one benchmark step: CUDA's allocator peak, or the growth of the process's resident set.

- CUDA (``mem_kind="cuda_peak_allocated"``): ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``, minus what was allocated before the step *other than the model's own tensors*: so
  the figure is the model's weights and buffers, plus what the step allocates (activations; in train mode
  gradients and AdamW state), and not other models' weights, the input batch, the CUDA context nor
  cached-but-free blocks.
- CPU (``mem_kind="cpu_rss_growth"``): the growth of the resident set during the step: ``VmHWM`` (peak resident
  set, from ``/proc/self/status``) after the step minus ``VmRSS`` before it, with the peak reset beforehand by
  writing ``5`` to ``/proc/self/clear_refs`` (Linux), and free memory handed back to the OS first (glibc
  ``malloc_trim``). This counts activations, gradients and optimizer state created by the step, *not* the weights
  built before it. Memory the allocator still holds (freed blocks it did not return, thread-local caches) can be
  reused uncounted, so a model measured after another may read low; pages count in whole 4 KiB units once
  touched. Without ``clear_refs`` (not Linux, or not permitted) the figure falls back to the growth of
  ``resource.getrusage().ru_maxrss``, which cannot be reset and so reads 0 for any model that stays below an
  earlier peak; ``mem_kind`` then says ``"cpu_maxrss_growth"``. Read CPU figures as rough.
"""
from __future__ import annotations

import gc
import resource
import sys

import torch
from torch import nn


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Give the C allocator's free memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere), so that the
    next step's allocations show up as resident-set growth instead of silently reusing memory freed earlier."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _maxrss_kib() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB on Linux


def model_bytes(model: nn.Module | None, device: torch.device) -> int:
    """Bytes of ``model``'s parameters and buffers that live on ``device`` (each tensor's storage counted once)."""
    if model is None:
        return 0
    seen, total = set(), 0
    for t in (*model.parameters(), *model.buffers()):
        if t.device.type != device.type or t.untyped_storage().data_ptr() in seen:
            continue
        seen.add(t.untyped_storage().data_ptr())
        total += t.untyped_storage().nbytes()
    return total


class PeakMemory:
    """Peak memory of one step, as a context manager: ``with PeakMemory(dev, model) as mem: step()``; ``mem.mb``.

    ``model`` (optional) is the model the step runs: on CUDA its weights count towards the figure even though
    they were allocated before the step, while everything else allocated before it does not (see the module
    docstring for what is counted on each device).
    """

    def __init__(self, device: torch.device, model: nn.Module | None = None):
        self.device = device
        self.model = model
        self.mb: float | None = None
        self.kind = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device) - model_bytes(self.model, self.device)
            self.kind = "cuda_peak_allocated"
            return self
        gc.collect()
        _malloc_trim()
        self._rss0 = _proc_status_kib("VmRSS")
        if self._rss0 is not None and _reset_peak_rss():
            self.kind = "cpu_rss_growth"
        else:
            self.kind = "cpu_maxrss_growth"
            self._rss0 = _maxrss_kib()
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = max(0, torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self.kind == "cpu_rss_growth":
            peak = _proc_status_kib("VmHWM")
            self.mb = max(0, (peak or 0) - self._rss0) / 1024
        else:
            self.mb = max(0, _maxrss_kib() - self._rss0) / 1024
