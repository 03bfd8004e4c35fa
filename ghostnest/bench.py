"""Speed benchmarks: latency, throughput and peak memory of several models, measured in one process.

:func:`bench_models` builds every model, warms each one up, then times them *interleaved* (round robin, the
starting model rotating each round: A B C, B C A, C A B, ...), so that a slow-down from other work on the
machine (a shared CPU, a GPU's clock) falls on all models alike instead of on whichever ran last. It reports the
median and the spread (quartiles, min, max) of the time per batch, not the mean: on a shared machine single
batches can be several times slower than usual, and the median ignores them. :func:`bench_variants` times models
built by the caller (e.g. one network in several configurations, as ``benchmarks/speed.py`` does) with the same
loop.

What one timed step is:

- ``mode="infer"``: ``model.eval()`` and ``torch.inference_mode()``, one forward pass of a batch.
- ``mode="train"``: one full optimizer step: forward, cross-entropy loss against random labels, backward and an
  ``AdamW`` step (``zero_grad(set_to_none=True)`` first), the model in train mode (BatchNorm and dropout active).

``dtype="bf16"``/``"fp16"`` runs the step under ``torch.autocast`` (weights stay fp32, as in mixed-precision
training; fp16 training on CUDA uses a ``GradScaler``). ``channels_last`` converts model and input to NHWC;
``compile`` wraps the model with ``torch.compile`` (the compile time is in ``first_call_ms``, not in the median).

Peak memory (``peak_mem_mb``), measured during the first warm-up step of each model, which runs alone:

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``: tensors allocated through
  PyTorch's caching allocator during the step, *including* the weights (and in train mode gradients and AdamW
  state) that were already there; not the CUDA context nor cached-but-free blocks. ``mem_kind="cuda_peak_allocated"``.
- CPU: the growth of the process's resident set during the step: ``VmHWM`` (peak resident set, from
  ``/proc/self/status``) after the step minus ``VmRSS`` before it, with the peak reset beforehand by writing ``5``
  to ``/proc/self/clear_refs`` (Linux), and free memory handed back to the OS first (glibc ``malloc_trim``). This
  counts activations, gradients and optimizer state created by the step, *not* the weights built before it.
  ``mem_kind="cpu_rss_growth"``. Its limits: memory the allocator still holds (e.g. freed blocks it did not
  return, or thread-local caches) can be reused uncounted, so a model measured after another may read low;
  pages count in whole 4 KiB units once touched. Without ``clear_refs`` (not Linux, or not permitted) the figure falls
  back to the growth of ``resource.getrusage().ru_maxrss``, which cannot be reset and so reads 0 for any model
  that stays below an earlier peak; ``mem_kind`` then says ``"cpu_maxrss_growth"``. Read CPU figures as rough.

FLOPs (``gflops``, per image, multiply-add = 2 FLOPs) and parameters come from :mod:`ghostnest.stats`, counted on
the ``meta`` device for one forward pass at the benchmark's input size; they are the same in train mode (a
training step costs roughly three times the forward FLOPs).

:func:`bench_data` (``ghostnest bench --data RECIPE``) times a recipe's training input pipeline alone: the data
set, per-image augmentation in the recipe's DataLoader workers, batching, per-batch resize/normalisation and
Mixup/CutMix, exactly as ``ghostnest train`` builds them, with no model.

Fused fast path (issue 7): with ``fuse=True`` infer mode runs every model through ``ghostnest.fuse(model)`` (BN
folded into the convolutions, MixConv merged, Mish as one compiled kernel; timm's EfficientNet-V2 has its
conv + BatchNormAct2d pairs folded by the same function, so both sides of a comparison get the same treatment).
``ghostnest bench`` does so by default in infer mode and ``--no-fuse`` times the plain models; the result rows carry
a ``fused`` field. The first fused call of an ME-NeSt-Ghost compiles the Mish kernel (seconds; in ``first_call_ms``).
"""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .devices import resolve_device
from .registry import create_model, model_info
from .stats import count_flops, count_params

MODES = ("infer", "train")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Keys every row returned by bench_models has (tests and the --json output rely on them).
RESULT_KEYS = (
    "name", "family", "mode", "device", "dtype", "input_size", "batch", "num_classes", "channels_last",
    "compiled", "fused", "params", "gflops", "median_ms", "p25_ms", "p75_ms", "iqr_ms", "min_ms", "max_ms",
    "images_per_s", "ratio_to_first", "min_ratio_to_first", "peak_mem_mb", "mem_kind", "first_call_ms", "repeats", "warmup", "threads",
)


# --------------------------------------------------------------------------------------------------- validation
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


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            fix = "--" + key.replace("_", "-")
            raise ValueError(f"{key} must be a positive integer, got {value!r}; pass {fix} 1 or more")


# ------------------------------------------------------------------------------------------------------ memory
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


class _PeakMemory:
    """Peak memory of one step (see the module docstring for what is counted on each device)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mb: float | None = None
        self.kind = ""

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
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
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.kind == "cpu_rss_growth":
            peak = _proc_status_kib("VmHWM")
            self.mb = max(0, (peak or 0) - self._rss0) / 1024
        else:
            self.mb = max(0, _maxrss_kib() - self._rss0) / 1024


# ------------------------------------------------------------------------------------------------------ setup
@dataclass
class _Case:
    """One model under test: the model, its step function, its timings and fixed fields of its result row."""

    name: str
    model: nn.Module
    step: Callable[[], None]
    channels_last: bool
    extra: dict
    times_ms: list = field(default_factory=list)
    first_call_ms: float = 0.0
    peak_mem_mb: float | None = None
    mem_kind: str = ""


def _onnxruntime_case(case: _Case, x: torch.Tensor, input_size: int, say) -> _Case:
    """The ONNX export of ``case.model`` (as timed: fused or not) run by onnxruntime with torch's thread count."""
    import tempfile

    from .export import OnnxClassifier, export_model

    say(f"exporting {case.name} to ONNX")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(case.model, "onnx", f"{tmp}/{case.name}.onnx", input_size, {"model": case.name})
        session = OnnxClassifier(path, threads=torch.get_num_threads())
    onnx_case = _Case(f"{case.name} [onnxruntime]", case.model, lambda: session(x), case.channels_last,
                      dict(case.extra))
    t0 = time.perf_counter()
    onnx_case.step()
    onnx_case.first_call_ms = (time.perf_counter() - t0) * 1e3
    onnx_case.mem_kind = "not measured"
    return onnx_case


_GFLOPS_CACHE: dict = {}


def _gflops(name: str, input_size: int, num_classes: int, kwargs: dict) -> float:
    """Forward GFLOPs per image, counted on meta (cached: counting a large ME-NeSt-Ghost takes seconds)."""
    key = (name, input_size, num_classes, repr(sorted(kwargs.items())))
    if key not in _GFLOPS_CACHE:
        with torch.device("meta"):
            meta_model = create_model(name, num_classes=num_classes, **kwargs)
        _GFLOPS_CACHE[key] = count_flops(meta_model, input_size) / 1e9
    return _GFLOPS_CACHE[key]


def prepare_model(model: nn.Module, mode: str, fuse: bool = False) -> nn.Module:
    """Put ``model`` in the state the benchmark times: eval or train mode, and (issue 7) the fused fast path.

    With ``fuse`` (infer mode only) the model is replaced by ``ghostnest.fuse(model)``, an eval-only fused copy
    (the CLI's default in infer mode; ``--no-fuse`` turns it off). Fusion never applies to train mode.
    """
    model.train(mode == "train")
    if fuse:
        if mode != "infer":
            raise ValueError("fusion applies to inference only; drop --fuse for --mode train")
        import ghostnest

        fuse_fn = getattr(ghostnest, "fuse", None)
        if fuse_fn is None:
            raise ValueError("the fused fast path (ghostnest.fuse) is not available yet; run without fusion")
        model = fuse_fn(model)
    return model


def _make_step(
    model: nn.Module,
    mode: str,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    tdtype: torch.dtype,
) -> Callable[[], None]:
    amp = (
        torch.autocast(device.type, dtype=tdtype)
        if tdtype is not torch.float32
        else contextlib.nullcontext()
    )
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    if mode == "infer":

        def infer_step() -> None:
            with torch.inference_mode(), amp:
                model(x)
            sync()

        return infer_step

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    scaler = torch.amp.GradScaler(device.type) if (tdtype is torch.float16 and device.type == "cuda") else None

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = F.cross_entropy(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        sync()

    return train_step


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# ------------------------------------------------------------------------------------------------------- main
def _check_run(mode: str, batch: int, repeats: int, warmup: int, input_size: int, num_classes: int, device: str,
               dtype: str) -> tuple[torch.device, torch.dtype]:
    """Checks shared by :func:`bench_models` and :func:`bench_variants`; the resolved device and torch dtype."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    _check_positive(batch=batch, repeats=repeats, input=input_size, num_classes=num_classes)
    if not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"warmup must be at least 1 (the first step measures memory), got {warmup!r}; pass --warmup 1")
    dev = resolve_device(device)
    tdtype = check_dtype(dtype, dev)
    if mode == "train" and batch < 2:
        raise ValueError("--mode train needs --batch 2 or more (BatchNorm cannot train on a single image)")
    return dev, tdtype


@contextlib.contextmanager
def _num_threads(threads: int | None):
    """``torch.set_num_threads(threads)`` for the block (nothing if ``None``), restored afterwards."""
    if threads is not None:
        _check_positive(threads=threads)
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def bench_models(
    names: Sequence[str],
    input_size: int | None = None,
    batch: int = 8,
    mode: str = "infer",
    device: str = "auto",
    dtype: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    repeats: int = 10,
    warmup: int = 2,
    num_classes: int | None = None,
    model_kwargs: dict | None = None,
    fuse: bool = False,
    threads: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    runtime: str = "torch",
) -> list[dict]:
    """Time ``names`` interleaved in this process; one result dict per model, in the order given.

    ``input_size`` and ``num_classes`` default to the *first* model's paper setting (so a table compares all
    models on the same input); ``model_kwargs`` are passed to every ``create_model`` call (tests use them to build
    tiny networks). ``min_ratio_to_first`` is the same ratio of the fastest steps, a check on the median ratio
    when the machine is shared: where the two disagree, one model caught more interference. ``threads`` sets ``torch.set_num_threads`` for the run (default: leave PyTorch's setting, one
    thread per core). ``ratio_to_first`` is each model's median divided by the first model's. ``progress``, if
    given, is called with a short line before each model is built and when timing starts.
    ``runtime="onnxruntime"`` times, beside each PyTorch model, its ONNX export run by onnxruntime on the CPU
    (rows named ``NAME [onnxruntime]``; infer mode, fp32, CPU only), so deployment speed is a measured figure.
    Raises ``ValueError`` for an unknown model, a bad size/count, or a device or dtype this machine cannot run.
    """
    names = list(names)
    if not names:
        raise ValueError("no model given; name one or more models (see `ghostnest models`)")
    infos = [model_info(n) for n in names]  # ValueError naming close matches for an unknown name
    input_size = input_size if input_size is not None else infos[0].input_size
    num_classes = num_classes if num_classes is not None else infos[0].num_classes
    dev, tdtype = _check_run(mode, batch, repeats, warmup, input_size, num_classes, device, dtype)
    if fuse and mode != "infer":
        raise ValueError("fusion applies to inference only; drop --fuse for --mode train")
    if runtime not in ("torch", "onnxruntime"):
        raise ValueError(f"unknown runtime {runtime!r}; use torch or onnxruntime")
    if runtime == "onnxruntime" and (mode != "infer" or dev.type != "cpu" or dtype != "fp32" or compile):
        raise ValueError("--runtime onnxruntime times CPU fp32 inference: use --mode infer --device cpu --dtype fp32, "
                         "without --compile")
    kwargs = dict(model_kwargs or {})
    say = progress or (lambda _msg: None)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def builder(name: str, family: str):
        def build() -> tuple[nn.Module, dict]:
            say(f"building {name}")
            gflops = _gflops(name, input_size, num_classes, kwargs)
            torch.manual_seed(seed)
            model = create_model(name, num_classes=num_classes, **kwargs)
            extra = dict(family=family, compiled=compile, fused=fuse, params=count_params(model), gflops=gflops)
            model = prepare_model(model.to(dev, memory_format=memory_format), mode, fuse)
            return (torch.compile(model) if compile else model), extra

        return name, channels_last, build

    with _num_threads(threads):
        rows = _run(
            builders=[builder(name, info.family) for name, info in zip(names, infos)], input_size=input_size,
            batch=batch, num_classes=num_classes, mode=mode, dev=dev, dtype=dtype, tdtype=tdtype, repeats=repeats,
            warmup=warmup, seed=seed, say=say, compile=compile, runtime=runtime,
        )
    return [{key: row[key] for key in RESULT_KEYS} for row in rows]


def bench_variants(
    variants: Sequence[tuple[str, nn.Module]],
    input_size: int,
    batch: int,
    num_classes: int,
    mode: str = "infer",
    device: str = "auto",
    dtype: str = "fp32",
    channels_last: bool | Sequence[bool] = False,
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Time prebuilt ``(name, model)`` pairs interleaved, as :func:`bench_models` does; one row per pair, in order.

    For comparing one network in several configurations (fused or not, another kernel): each model is timed as
    given, only moved to ``device`` (and to channels_last where asked) and put in train or eval mode per ``mode``;
    fuse or compile it beforehand. ``channels_last`` is one flag for all or one per variant; a channels_last
    variant gets a channels_last copy of the input. All variants get the same random batch (and, in train mode,
    labels below ``num_classes``) and each its own ``AdamW``. Rows carry the keys of :data:`RESULT_KEYS` except
    ``family``, ``compiled``, ``fused`` and ``gflops``, plus ``times_ms`` (the timed rounds in the order run);
    ``params`` counts the model as given. ``peak_mem_mb`` is measured as in :func:`bench_models`, but with every
    variant already built (on CUDA it includes all of their weights). Raises ``ValueError`` as
    :func:`bench_models` does.
    """
    variants = list(variants)
    if not variants:
        raise ValueError("no variant given; pass one or more (name, model) pairs")
    for item in variants:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], nn.Module)):
            raise ValueError(f"each variant must be a (name, nn.Module) pair, got {item!r:.80}")
    flags = [channels_last] * len(variants) if isinstance(channels_last, bool) else [bool(c) for c in channels_last]
    if len(flags) != len(variants):
        raise ValueError(f"channels_last has {len(flags)} flags for {len(variants)} variants; give one per variant")
    dev, tdtype = _check_run(mode, batch, repeats, warmup, input_size, num_classes, device, dtype)

    def builder(name: str, model: nn.Module, cl: bool):
        def build() -> tuple[nn.Module, dict]:
            model.to(dev)
            if cl:
                model.to(memory_format=torch.channels_last)
            model.train(mode == "train")
            return model, {"params": count_params(model)}

        return name, cl, build

    with _num_threads(threads):
        return _run(
            builders=[builder(name, model, cl) for (name, model), cl in zip(variants, flags)], input_size=input_size,
            batch=batch, num_classes=num_classes, mode=mode, dev=dev, dtype=dtype, tdtype=tdtype, repeats=repeats,
            warmup=warmup, seed=seed, say=progress or (lambda _msg: None),
        )


def _run(*, builders, input_size, batch, num_classes, mode, dev, dtype, tdtype, repeats, warmup, seed, say,
         compile=False, runtime="torch") -> list[dict]:
    """The one timing loop behind :func:`bench_models` and :func:`bench_variants`, arguments already checked.

    ``builders`` are ``(name, channels_last, build)``; ``build()`` returns the model ready to time and extra fields
    for its row, and is called just before that model's first warm-up step, which runs alone (first-call time and
    peak memory). The remaining warm-up and the ``repeats`` timed rounds then run interleaved, the starting model
    rotating each round.
    """
    gen = torch.Generator().manual_seed(seed)
    x_cpu = torch.randn(batch, 3, input_size, input_size, generator=gen)
    y_cpu = torch.randint(0, num_classes, (batch,), generator=gen)
    y = y_cpu.to(dev)
    inputs: dict[bool, torch.Tensor] = {}

    cases: list[_Case] = []
    for name, channels_last, build in builders:
        model, extra = build()
        if channels_last not in inputs:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            inputs[channels_last] = x_cpu.to(dev).contiguous(memory_format=fmt)
        step = _make_step(model, mode, inputs[channels_last], y, dev, tdtype)
        case = _Case(name, model, step, channels_last, extra)
        # First warm-up step alone: memory, and (with compile) the compilation.
        say(f"warming up {name}")
        try:
            with _PeakMemory(dev) as mem:
                t0 = time.perf_counter()
                step()
                case.first_call_ms = (time.perf_counter() - t0) * 1e3
        except torch.cuda.OutOfMemoryError:
            raise ValueError(
                f"{name}: out of GPU memory at batch {batch}, input {input_size}; use a smaller --batch or --input"
            ) from None
        except Exception as exc:  # noqa: BLE001  (compile failures surface here as backend errors)
            if not compile:
                raise
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{name}: torch.compile failed ({msg}); run without --compile") from None
        case.peak_mem_mb, case.mem_kind = mem.mb, mem.kind
        cases.append(case)
        if runtime == "onnxruntime":
            cases.append(_onnxruntime_case(case, x_cpu, input_size, say))

    # Remaining warm-up, interleaved like the timed rounds.
    for _ in range(warmup - 1):
        for case in cases:
            case.step()

    say(f"timing {len(cases)} model(s) x {repeats} rounds, interleaved")
    n = len(cases)
    for r in range(repeats):
        for k in range(n):
            case = cases[(r + k) % n]
            t0 = time.perf_counter()
            case.step()
            case.times_ms.append((time.perf_counter() - t0) * 1e3)

    rows = []
    for case in cases:
        ts = sorted(case.times_ms)
        med = statistics.median(ts)
        p25, p75 = _percentile(ts, 0.25), _percentile(ts, 0.75)
        rows.append(
            {
                "name": case.name,
                "mode": mode,
                "device": str(dev),
                "dtype": dtype,
                "input_size": input_size,
                "batch": batch,
                "num_classes": num_classes,
                "channels_last": case.channels_last,
                "median_ms": med,
                "p25_ms": p25,
                "p75_ms": p75,
                "iqr_ms": p75 - p25,
                "min_ms": ts[0],
                "max_ms": ts[-1],
                "images_per_s": batch * 1e3 / med,
                "ratio_to_first": 0.0,
                "min_ratio_to_first": 0.0,
                "peak_mem_mb": case.peak_mem_mb,
                "mem_kind": case.mem_kind,
                "first_call_ms": case.first_call_ms,
                "repeats": repeats,
                "warmup": warmup,
                "threads": torch.get_num_threads(),
                "times_ms": case.times_ms,
                **case.extra,
            }
        )
    first, first_min = rows[0]["median_ms"], rows[0]["min_ms"]
    for row in rows:
        row["ratio_to_first"] = row["median_ms"] / first
        row["min_ratio_to_first"] = row["min_ms"] / first_min
    del cases
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------- input pipeline
def bench_data(
    recipe: str,
    overrides: list[str] | dict | None = None,
    batches: int = 20,
    warmup: int = 2,
    device: str = "auto",
    workers: int | None = None,
    batch: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Images/s of a recipe's training input pipeline alone: no model.

    Builds exactly what ``ghostnest train`` builds for ``recipe`` (with ``--set``-style ``overrides``): the data
    set, the train/validation split, the per-image augmentation run by ``workers`` DataLoader processes (the
    recipe's count unless given), the per-batch resize and normalisation on the device, and Mixup/CutMix. It then
    pulls ``warmup`` batches (worker start-up, reported as ``startup_s``) and times the next ``batches``.
    A recipe whose data set is not on disk raises the data loader's one-line error (an ``OSError``); to time the
    augmentation without the data, override the data set, e.g. ``overrides=["dataset=fake:size=32,train=4096"]``.
    """
    from .data import TrainBatches, build_augment, build_mix, default_data_dir, load_dataset, train_val_split
    from .data.loader import Normalize, resize_steps
    from .train.config import resolve_config

    _check_positive(batches=batches)
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be 0 or more, got {warmup!r}; pass --warmup 0 or more")
    extra = dict(overrides) if isinstance(overrides, dict) else {}
    if isinstance(overrides, list):
        from .train.config import parse_overrides

        extra = parse_overrides(overrides)
    if workers is not None:
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers!r}; pass --workers 0 or more")
        extra["workers"] = workers
    if batch is not None:
        _check_positive(batch=batch)
        extra["batch_size"] = batch
    cfg = resolve_config(recipe, extra)
    dev = resolve_device(device)
    say = progress or (lambda _msg: None)
    say(f"loading {cfg.dataset}")
    data = load_dataset(cfg.dataset, cfg.data_dir or default_data_dir(), download=False)
    size = cfg.image_size or data.size
    if cfg.val_on_test:
        train_split = data.train
    else:
        train_split, _ = train_val_split(data.train, cfg.val_fraction, cfg.split_seed)
    augment = build_augment(cfg.augment)
    sizes = resize_steps(data.train.images.shape[-1], data.size, size)
    loader = TrainBatches(train_split, sizes, cfg.batch_size, augment, cfg.workers, dev)
    norm = Normalize(data.mean, data.std, sizes, dev, cfg.channels_last and dev.type == "cuda")
    mix = build_mix(cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mixup_p, data.num_classes)
    per_epoch = len(loader)
    if per_epoch < 1:
        raise ValueError(f"{cfg.dataset} has {len(train_split)} training images, fewer than one batch of "
                         f"{cfg.batch_size}; pass a smaller --batch")
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    def stream():
        epoch = 0
        while True:  # the next epoch starts new workers, as in training
            yield from loader.epoch(epoch)
            epoch += 1

    say(f"timing {warmup} warm-up + {batches} batches of {cfg.batch_size} with {cfg.workers} worker(s)")
    times, n_images = [], 0
    it = stream()
    t_start = time.perf_counter()
    t_prev = t_start
    startup = None
    for i in range(warmup + batches):
        images, labels = next(it)
        x, y = norm(images), labels
        if mix is not None:
            x, y = mix(x, y)
        sync()
        now = time.perf_counter()
        if i == 0:
            startup = now - t_start
        if i >= warmup:
            times.append((now - t_prev) * 1e3)
            n_images += x.shape[0]
        t_prev = now
    total_s = sum(times) / 1e3
    ts = sorted(times)
    return {
        "recipe": cfg.recipe,
        "dataset": data.name,
        "device": str(dev),
        "image_size": size,
        "stored_size": int(data.train.images.shape[-1]),
        "batch": cfg.batch_size,
        "workers": cfg.workers if augment is not None else 0,
        "augment": [op.get("op") for op in cfg.augment],
        "mixing": mix is not None,
        "batches": batches,
        "warmup": warmup,
        "batches_per_epoch": per_epoch,
        "startup_s": startup,
        "images_per_s": n_images / total_s if total_s > 0 else float("inf"),
        "median_batch_ms": statistics.median(ts),
        "p25_ms": _percentile(ts, 0.25),
        "p75_ms": _percentile(ts, 0.75),
        "min_ms": ts[0],
        "max_ms": ts[-1],
        "threads": torch.get_num_threads(),
    }


def format_data(row: dict) -> str:
    """A few plain-text lines for a :func:`bench_data` result."""
    aug = ", ".join(row["augment"]) or "none"
    return "\n".join([
        f"recipe {row['recipe']}: {row['dataset']} -> {row['image_size']}px (stored {row['stored_size']}px), "
        f"batch {row['batch']}, {row['workers']} worker(s), device {row['device']}",
        f"per-image augmentation: {aug}; Mixup/CutMix: {'yes' if row['mixing'] else 'no'}",
        f"{row['images_per_s']:,.1f} images/s; median {row['median_batch_ms']:.1f} ms per batch "
        f"(IQR {row['p25_ms']:.1f}-{row['p75_ms']:.1f}, min-max {row['min_ms']:.1f}-{row['max_ms']:.1f}) over "
        f"{row['batches']} batches after {row['warmup']} warm-up; first batch after {row['startup_s']:.2f} s",
    ])


# ------------------------------------------------------------------------------------------------ environment
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def environment(device: str = "auto") -> dict:
    """Where a benchmark ran: CPU model and core counts, GPU, versions, and the UTC date and time."""
    import timm

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    env = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gpu": None,
    }
    if resolve_device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def format_table(rows: list[dict]) -> str:
    """A plain-text table of :func:`bench_models` rows, for the terminal."""
    head = (
        f"{'model':<24} {'params':>12} {'GFLOPs':>8} {'median ms':>10} {'IQR ms':>8} {'min-max ms':>17} "
        f"{'img/s':>9} {'peak MiB':>9} {'ratio':>6}"
    )
    lines = [head]
    for r in rows:
        mem = f"{r['peak_mem_mb']:.0f}" if r["peak_mem_mb"] is not None else "-"
        lines.append(
            f"{r['name']:<24} {r['params']:>12,} {r['gflops']:>8.3f} {r['median_ms']:>10.1f} {r['iqr_ms']:>8.1f} "
            f"{r['min_ms']:>8.1f}-{r['max_ms']:<8.1f} {r['images_per_s']:>9.1f} {mem:>9} {r['ratio_to_first']:>6.2f}"
        )
    r0 = rows[0]
    extras = [x for x, on in (("channels_last", r0["channels_last"]), ("torch.compile", r0["compiled"]),
                              ("fused", r0["fused"])) if on]
    first = ", ".join(f"{r['name']} {r['first_call_ms'] / 1e3:.1f} s" for r in rows)
    lines.append(
        f"mode {r0['mode']}, device {r0['device']}, {r0['dtype']}{''.join(', ' + x for x in extras)}, "
        f"input {r0['input_size']}, batch {r0['batch']}, {r0['num_classes']} classes, {r0['repeats']} interleaved "
        f"rounds after {r0['warmup']} warm-up, {r0['threads']} thread{'s' if r0['threads'] != 1 else ''}; "
        f"GFLOPs per image (forward); peak memory: {r0['mem_kind']}; ratio = median / first model's median"
        + (f"; first call (compile): {first}" if r0["compiled"] else "")
    )
    return "\n".join(lines)
