"""``ghostnest bench``: which of the three benchmarks a command line asks for, checked, and run.

- model names: :func:`~ghostnest.bench.timing.bench_models` (PyTorch, or onnxruntime with ``runtime``);
- ``model_files``: :func:`~ghostnest.bench.model_files.bench_model_files` (exported fp32/int8 ONNX files);
- ``data``: :func:`~ghostnest.bench.data.bench_data` (a recipe's input pipeline alone).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence


def bench_command(models: Sequence[str] = (), *, model_files: Sequence[str] = (), data: str | None = None,
                  overrides: Sequence[str] = (), workers: int | None = None, batch: int | None = None,
                  repeats: int = 10, warmup: int = 2, threads: int | None = None, device: str = "auto",
                  progress: Callable[[str], None] | None = None, **model_options) -> tuple[str, list[dict] | dict]:
    """``("data", row)`` for ``data``, else ``("models", rows)``; ``ValueError`` naming the flag to drop when the
    options mix the three benchmarks. ``model_options`` go to ``bench_models`` (input_size, mode, dtype, ...)."""
    if data:
        if models or model_files:
            raise ValueError("--data times a recipe's input pipeline alone; drop the model names and --model-file, "
                             "or drop --data")
        return "data", _bench_data(data, overrides, workers, batch, repeats, warmup, device, progress)
    if overrides or workers is not None:
        raise ValueError("--set and --workers apply to --data RECIPE only")
    if model_files:
        from .model_files import bench_model_files

        if models:
            raise ValueError("--model-file times exported ONNX files (their network in PyTorch first); drop the "
                             "model names, or drop --model-file")
        return "models", bench_model_files(model_files, batch=1 if batch is None else batch, threads=threads,
                                           repeats=repeats, warmup=warmup, progress=progress)
    if not models:
        raise ValueError("name one or more models to benchmark, e.g. `ghostnest bench menest_ghost_s efficientnetv2_s`"
                         ", time exported files with --model-file FILE.onnx, or a recipe's input pipeline with --data "
                         "RECIPE")
    from .timing import bench_models

    return "models", bench_models(list(models), batch=8 if batch is None else batch, repeats=repeats, warmup=warmup,
                                  threads=threads, device=device, progress=progress, **model_options)


def _bench_data(recipe, overrides, workers, batch, repeats, warmup, device, progress) -> dict:
    from .data import bench_data

    return bench_data(recipe, list(overrides), batches=repeats, warmup=warmup, device=device, workers=workers,
                      batch=batch, progress=progress)
