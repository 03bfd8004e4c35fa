"""Step time and peak memory of a training step with and without activation checkpointing (``grad_checkpointing:
true``, docs/training.md, "Training options").

    python benchmarks/grad_checkpointing.py                                  # the models below, CPU
    python benchmarks/grad_checkpointing.py efficientnetv2_s --input 128 --batch 16 --device cuda

For each model, two copies with the same weights, one with ``set_grad_checkpointing(True)``, timed interleaved
by :func:`ghostnest.bench.bench_variants` in train mode (forward, loss, backward, AdamW step): median step time
and the peak memory of the step (on CPU the growth of the resident set: rough; on CUDA the allocator's peak).
Models without ``set_grad_checkpointing`` are listed as such.
"""
from __future__ import annotations

import argparse
import copy
import sys

MODELS = ("efficientnetv2_s", "menest_ghost_s", "ghostmixnet")  # the names measured by default, in order


def measure(name: str, input_size: int | None, batch: int, device: str, repeats: int, threads: int | None) -> list:
    import ghostnest
    from ghostnest.bench import bench_variants

    info = ghostnest.model_info(name)
    model = ghostnest.create_model(name, num_classes=info.num_classes)
    if not callable(getattr(model, "set_grad_checkpointing", None)):
        return [{"name": name, "missing": "no set_grad_checkpointing()"}]
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing(True)
    return bench_variants([(name, model), (f"{name} + grad_checkpointing", checkpointed)],
                          input_size or info.input_size, batch, info.num_classes, mode="train", device=device,
                          repeats=repeats, warmup=2, threads=threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--input", type=int, default=None, help="input size (default: the model's paper size)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    print("| model | input, batch | step (median) | peak memory of the step | memory kind |")
    print("| --- | --- | ---: | ---: | --- |")
    for name in args.models:
        for row in measure(name, args.input, args.batch, args.device, args.repeats, args.threads):
            if "missing" in row:
                print(f"| {row['name']} | | {row['missing']} | | |")
                continue
            print(f"| {row['name']} | {row['input_size']}, {row['batch']} | {row['median_ms']:.0f} ms | "
                  f"{row['peak_mem_mb']:.0f} MB | {row['mem_kind']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
