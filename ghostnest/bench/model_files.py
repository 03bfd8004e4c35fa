"""Exported model files (fp32 or int8 ONNX) timed in onnxruntime, interleaved with the same network in PyTorch.

:func:`bench_model_files` is what a ``ghostnest bench --model-file A.onnx --model-file B.int8.onnx`` command calls;
``benchmarks/int8.py`` calls it directly for the deployment table of docs/benchmarks.md.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .checks import check_positive
from .loop import Case, case_rows, first_call, interleave
from .runtimes import session_case


def _torch_case(meta: dict, x: torch.Tensor) -> Case:
    """The network a file was exported from, built from its metadata (its weights do not change the time), fused
    as ``ghostnest export --fuse/--int8`` exports it, timed in PyTorch (fp32, eval, inference mode)."""
    from ..fuse import fuse
    from ..train.checkpoint import build_from_meta

    model = fuse(build_from_meta(meta))

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return first_call(Case(f"{meta['model']} [torch fp32, fused]", step, False, {"file": None, "bytes": None,
                                                                               "precision": "fp32"}, model))


def bench_model_files(files: Sequence[str | Path], batch: int = 1, threads: int | None = 1, repeats: int = 20,
                      warmup: int = 3, with_torch: bool = True,
                      progress: Callable[[str], None] | None = None) -> list[dict]:
    """Time exported ONNX ``files`` (fp32 and/or int8, one input size) in onnxruntime, interleaved round robin
    (and, with ``with_torch``, the first file's network in PyTorch first), at ``batch`` images with ``threads``
    threads (``None``: every core) for both runtimes. One row per case, as ``bench_sessions`` writes them, plus
    ``file``, ``bytes`` (size on disk) and ``precision`` (fp32 or int8); ratios are to the first row."""
    from ..modelfile import OnnxClassifier

    files = [Path(f) for f in files]
    if not files:
        raise ValueError("no model file given; pass one or more exported .onnx files")
    check_positive(batch=batch, repeats=repeats, warmup=warmup)
    say = progress or (lambda _msg: None)
    runners = [OnnxClassifier(f, threads=threads) for f in files]
    sizes = {int(r.metadata["input_size"]) for r in runners}
    if len(sizes) != 1:
        raise ValueError(f"the model files take different input sizes ({', '.join(map(str, sorted(sizes)))}); "
                         "time files of one input size together")
    size = sizes.pop()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        cases = []
        if with_torch:
            say(f"building {runners[0].metadata['model']} in PyTorch")
            cases.append(_torch_case(runners[0].metadata, x))
        for f, r in zip(files, runners, strict=True):
            say(f"warming up {f.name}")
            extra = {"file": str(f), "bytes": f.stat().st_size, "precision": "int8" if r.int8 else "fp32"}
            cases.append(session_case(f"{f.name} [onnxruntime]", r.session, x, extra))
        say(f"timing {len(cases)} case(s) x {repeats} rounds, interleaved")
        interleave(cases, warmup, repeats)
        rows = case_rows(cases, batch, repeats, warmup, {"device": "cpu", "input_size": size})
    finally:
        torch.set_num_threads(previous)
    fields: dict[str, dict] = {}  # per network: files exported from one network share its counts
    for row, r in zip(rows, ([runners[0]] if with_torch else []) + runners, strict=True):
        row["runtime"] = "onnxruntime" if row["file"] else "torch"
        row["threads"] = threads or previous
        key = repr((r.metadata["model"], r.metadata["num_classes"], r.metadata.get("model_kwargs", {})))
        if key not in fields:
            fields[key] = _model_fields(r.metadata, size)
        row.update(fields[key])
        if row["precision"] == "int8":
            row["dtype"] = "int8"
    return rows


def _model_fields(meta: dict, size: int) -> dict:
    """The fields ``ghostnest.bench.format_table`` prints besides the timings, for a file's network."""
    from ..stats import count_params
    from ..train.checkpoint import build_from_meta
    from .timing import _gflops

    name, classes, kwargs = meta["model"], int(meta["num_classes"]), meta.get("model_kwargs", {})
    with torch.device("meta"):
        params = count_params(build_from_meta(meta))
    return {"params": params, "gflops": _gflops(name, size, classes, kwargs), "mode": "infer", "dtype": "fp32",
            "compiled": False, "fused": True, "num_classes": classes}
