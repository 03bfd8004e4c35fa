"""Model timing: latency, throughput and peak memory of several torch models, measured in one process.

:func:`bench_models` builds every model by name, warms each one up, then times them with the interleaved protocol
of :mod:`ghostnest.bench.loop`; :func:`bench_variants` times models built by the caller (e.g. one network in
several configurations, as ``benchmarks/speed.py`` does) with the same loop. What one step is (infer or train,
autocast dtype) is in :mod:`ghostnest.bench.step`; ``channels_last`` converts model and input to NHWC; ``compile``
wraps the model with ``torch.compile`` (the compile time is in ``first_call_ms``, not in the median).

Peak memory (``peak_mem_mb``) is measured during the first warm-up step of each model, which runs alone (see
:mod:`ghostnest.bench.memory` for what is counted on CUDA and on the CPU).

FLOPs (``gflops``, per image, multiply-add = 2 FLOPs) and parameters come from :mod:`ghostnest.stats`, counted on
the ``meta`` device for one forward pass at the benchmark's input size; they are the same in train mode (a
training step costs roughly three times the forward FLOPs).

Fused fast path: with ``fuse=True`` infer mode runs every model through ``ghostnest.fuse(model)`` (BN folded into
the convolutions, MixConv merged, Mish as one compiled kernel; timm's EfficientNet-V2 has its conv + BatchNormAct2d
pairs folded by the same function, so both sides of a comparison get the same treatment). ``ghostnest bench`` does
so by default in infer mode and ``--no-fuse`` times the plain models; the result rows carry a ``fused`` field. The
first fused call of an ME-NeSt-Ghost compiles the Mish kernel (seconds; in ``first_call_ms``).
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..registry import create_model, model_info
from ..stats import count_flops, count_params
from .checks import check_positive, check_run
from .loop import Case, case_rows, first_call, interleave
from ..fuse import fuse as fuse_model
from .runtimes import onnxruntime_case
from .step import make_step, prepare_model

# Keys every row returned by bench_models has (tests and the --json output rely on them).
RESULT_KEYS = (
    "name", "family", "mode", "device", "dtype", "input_size", "batch", "num_classes", "channels_last",
    "compiled", "fused", "params", "gflops", "median_ms", "p25_ms", "p75_ms", "iqr_ms", "min_ms", "max_ms",
    "images_per_s", "ratio_to_first", "min_ratio_to_first", "ratio_p25", "ratio_p75", "peak_mem_mb", "mem_kind",
    "first_call_ms", "repeats", "warmup", "threads",
)
RUNTIMES = ("torch", "onnxruntime")

_GFLOPS_CACHE: dict = {}


def _gflops(name: str, input_size: int, num_classes: int, kwargs: dict) -> float:
    """Forward GFLOPs per image, counted on meta (cached: counting a large ME-NeSt-Ghost takes seconds)."""
    key = (name, input_size, num_classes, repr(sorted(kwargs.items())))
    if key not in _GFLOPS_CACHE:
        with torch.device("meta"):
            meta_model = create_model(name, num_classes=num_classes, **kwargs)
        _GFLOPS_CACHE[key] = count_flops(meta_model, input_size) / 1e9
    return _GFLOPS_CACHE[key]


@contextlib.contextmanager
def _num_threads(threads: int | None):
    """``torch.set_num_threads(threads)`` for the block (nothing if ``None``), restored afterwards."""
    if threads is not None:
        check_positive(threads=threads)
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _check_models(fuse: bool, runtime: str, mode: str, dtype: str, compile: bool,
                  dev: torch.device) -> None:
    """Checks of ``bench_models``' own options (the shared ones are in :func:`~ghostnest.bench.checks.check_run`)."""
    if fuse and mode != "infer":
        raise ValueError("fusion applies to inference only; drop --fuse for --mode train")
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; use torch or onnxruntime")
    if runtime == "onnxruntime" and (mode != "infer" or dev.type != "cpu" or dtype != "fp32" or compile):
        raise ValueError("--runtime onnxruntime times CPU fp32 inference: use --mode infer --device cpu --dtype fp32, "
                         "without --compile")


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
    grad_checkpointing: bool = False,
) -> list[dict]:
    """Time ``names`` interleaved in this process; one result dict per model (keys :data:`RESULT_KEYS`), in order.

    ``input_size`` and ``num_classes`` default to the *first* model's paper setting (so a table compares all
    models on the same input); ``model_kwargs`` are passed to every ``create_model`` call (tests use them to build
    tiny networks). ``ratio_to_first`` is each model's median divided by the first model's; ``min_ratio_to_first``
    is the same ratio of the fastest steps, a check on the median ratio when the machine is shared: where the two
    disagree, one model caught more interference. ``threads`` sets ``torch.set_num_threads`` for the run (default:
    leave PyTorch's setting, one thread per core). ``progress``, if given, is called with a short line before each
    model is built and when timing starts. ``runtime="onnxruntime"`` times, beside each PyTorch model, its ONNX
    export run by onnxruntime on the CPU (rows named ``NAME [onnxruntime]``; infer mode, fp32, CPU only), so
    deployment speed is a measured figure. ``grad_checkpointing`` (train mode) times, after each model, the same
    model with ``set_grad_checkpointing()`` (rows named ``NAME +grad-ckpt``): peak memory and step time with and
    without. Raises ``ValueError`` for an unknown model, a bad size/count, or a device or dtype this machine cannot
    run.
    """
    names = list(names)
    if not names:
        raise ValueError("no model given; name one or more models (see `ghostnest models`)")
    infos = [model_info(n) for n in names]  # ValueError naming close matches for an unknown name
    input_size = input_size if input_size is not None else infos[0].input_size
    num_classes = num_classes if num_classes is not None else infos[0].num_classes
    dev, tdtype = check_run(mode, batch, repeats, warmup, input_size, num_classes, device, dtype)
    _check_models(fuse, runtime, mode, dtype, compile, dev)
    if grad_checkpointing and mode != "train":
        raise ValueError("--grad-checkpointing saves activation memory in training: add --mode train")
    kwargs = dict(model_kwargs or {})
    say = progress or (lambda _msg: None)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def builder(name: str, info, checkpointing: bool = False):
        label = f"{name} +grad-ckpt" if checkpointing else name
        # a model built for one input size (CoAtNet's position tables) is built for the size timed, as a recipe
        # would build it with --set model_kwargs.img_size=SIZE
        own = {"img_size": input_size, **kwargs} if info.fixed_input_size else kwargs

        def build() -> tuple[nn.Module, dict, nn.Module]:
            say(f"building {label}")
            gflops = _gflops(name, input_size, num_classes, own)
            torch.manual_seed(seed)
            model = create_model(name, num_classes=num_classes, **own)
            check = getattr(model, "check_input", None)  # the model's own size check, one line
            if check is not None:
                check((batch, 3, input_size, input_size))
            if checkpointing:
                model.set_grad_checkpointing(True)
            extra = dict(family=info.family, compiled=compile, fused=fuse, params=count_params(model), gflops=gflops)
            onnx_model = None
            if runtime == "onnxruntime" and fuse:  # the ONNX file gets the layout fused for onnxruntime
                onnx_model = fuse_model(model.eval(), fast_mish=False, runtime="onnxruntime")
            model = prepare_model(model.to(dev, memory_format=memory_format), mode, fuse)
            return (torch.compile(model) if compile else model), extra, onnx_model or model

        return label, channels_last, build

    with _num_threads(threads):
        rows = _run(
            builders=[builder(name, info, ckpt) for name, info in zip(names, infos, strict=True)
                      for ckpt in ((False, True) if grad_checkpointing else (False,))],
            input_size=input_size,
            batch=batch, num_classes=num_classes, mode=mode, dev=dev, dtype=dtype, tdtype=tdtype, repeats=repeats,
            warmup=warmup, seed=seed, say=say, compile=compile, runtime=runtime,
        )
    return [{key: row[key] for key in RESULT_KEYS} for row in rows]


def _check_variants(variants: list, channels_last: bool | Sequence[bool]) -> list[bool]:
    """``ValueError`` for a malformed variant list; the channels_last flag of each variant."""
    if not variants:
        raise ValueError("no variant given; pass one or more (name, model) pairs")
    for item in variants:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], nn.Module)):
            raise ValueError(f"each variant must be a (name, nn.Module) pair, got {item!r:.80}")
    flags = [channels_last] * len(variants) if isinstance(channels_last, bool) else [bool(c) for c in channels_last]
    if len(flags) != len(variants):
        raise ValueError(f"channels_last has {len(flags)} flags for {len(variants)} variants; give one per variant")
    return flags


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
    ``params`` counts the model as given. ``peak_mem_mb`` is measured as in :func:`bench_models` (on CUDA: this
    variant's weights and what its step allocates, not the other variants' weights). Raises ``ValueError`` as
    :func:`bench_models` does.
    """
    variants = list(variants)
    flags = _check_variants(variants, channels_last)
    dev, tdtype = check_run(mode, batch, repeats, warmup, input_size, num_classes, device, dtype)

    def builder(name: str, model: nn.Module, cl: bool):
        def build() -> tuple[nn.Module, dict, nn.Module]:
            model.to(dev)
            if cl:
                model.to(memory_format=torch.channels_last)
            model.train(mode == "train")
            return model, {"params": count_params(model)}, model

        return name, cl, build

    with _num_threads(threads):
        return _run(
            builders=[builder(name, model, cl) for (name, model), cl in zip(variants, flags, strict=True)],
            input_size=input_size,
            batch=batch, num_classes=num_classes, mode=mode, dev=dev, dtype=dtype, tdtype=tdtype, repeats=repeats,
            warmup=warmup, seed=seed, say=progress or (lambda _msg: None),
        )


def _warm_up(case: Case, dev: torch.device, batch: int, input_size: int, compile: bool) -> Case:
    """The case's first step, alone: first-call time and peak memory; errors turned into one-line ``ValueError``s."""
    try:
        return first_call(case, dev)
    except torch.cuda.OutOfMemoryError:
        raise ValueError(
            f"{case.name}: out of GPU memory at batch {batch}, input {input_size}; use a smaller --batch or --input"
        ) from None
    except Exception as exc:  # noqa: BLE001  (compile failures surface here as backend errors)
        if not compile:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{case.name}: torch.compile failed ({msg}); run without --compile") from None


def _run(*, builders, input_size, batch, num_classes, mode, dev, dtype, tdtype, repeats, warmup, seed, say,
         compile=False, runtime="torch") -> list[dict]:
    """The one timing loop behind :func:`bench_models` and :func:`bench_variants`, arguments already checked.

    ``builders`` are ``(name, channels_last, build)``; ``build()`` returns the model ready to time, extra fields
    for its row and the network an onnxruntime row exports (the timed model, or the one fused for onnxruntime),
    and is called just before that model's first warm-up step, which runs alone (first-call time and peak
    memory). The remaining warm-up and the ``repeats`` timed rounds then run interleaved, the starting model
    rotating each round.
    """
    gen = torch.Generator().manual_seed(seed)
    x_cpu = torch.randn(batch, 3, input_size, input_size, generator=gen)
    y = torch.randint(0, num_classes, (batch,), generator=gen).to(dev)
    inputs: dict[bool, torch.Tensor] = {}
    cases: list[Case] = []
    for name, channels_last, build in builders:
        if channels_last not in inputs:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            inputs[channels_last] = x_cpu.to(dev).contiguous(memory_format=fmt)
        model, extra, onnx_model = build()
        step = make_step(model, mode, inputs[channels_last], y, dev, tdtype)
        say(f"warming up {name}")
        cases.append(_warm_up(Case(name, step, channels_last, extra, model), dev, batch, input_size, compile))
        if runtime == "onnxruntime":
            cases.append(onnxruntime_case(cases[-1], onnx_model, x_cpu, input_size, say))

    say(f"timing {len(cases)} model(s) x {repeats} rounds, interleaved")
    interleave(cases, warmup, repeats)
    common = {"mode": mode, "device": str(dev), "dtype": dtype, "input_size": input_size, "num_classes": num_classes}
    rows = case_rows(cases, batch, repeats, warmup, common)
    del cases
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return rows
