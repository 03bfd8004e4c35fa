"""Export a model out of Python training code: ONNX (fp32, or int8 through :mod:`ghostnest.quantize`),
``torch.export`` and safetensors, each checked on reload.

Every exported file carries the metadata a runtime needs to use it without this package: model name, class names,
input size and the normalisation (mean, std). ONNX keeps it in the model's ``metadata_props``, ``torch.export``
in an extra file inside the archive, safetensors in its header. Files are written atomically: a failed export
leaves no partial file behind.

Imports run one way: this module drives :mod:`ghostnest.quantize` (which never imports it back); the metadata key,
its reader and :class:`OnnxClassifier` belong to :mod:`ghostnest.modelfile` and are re-exported here.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch
from torch import nn

from .fileio import atomic_path
from .modelfile import METADATA_KEY, OnnxClassifier, read_metadata, set_onnx_metadata

__all__ = ["FORMATS", "METADATA_KEY", "OnnxClassifier", "export", "export_int8", "export_model", "load_for_export",
           "read_metadata"]

FORMATS = ("onnx", "torch-export", "safetensors", "hub")  # hub: a folder timm's hub loader reads (ghostnest.hub)
SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2", "safetensors": ".safetensors"}  # each file format's suffix
ONNX_OPSET = 18


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unsupported export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _check_batch(batch: int | str) -> None:
    if batch != "dynamic" and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise ValueError(f"batch={batch!r} must be 'dynamic' or a positive integer")


def _check_suffix(fmt: str, out: str | Path) -> None:
    """``ValueError`` unless ``out`` ends in ``fmt``'s suffix: the suffix is how predict, eval and read_metadata
    tell the formats apart, so an ONNX file named ``.pt2`` would be unreadable by them."""
    suffix = Path(out).suffix.lower()
    if suffix != SUFFIXES[fmt]:
        other = next((f for f, x in SUFFIXES.items() if x == suffix), None)
        what = f"the suffix of {other} files" if other else (f"the suffix {suffix!r}" if suffix else "no suffix")
        raise ValueError(f"--out {out} has {what} but --format {fmt} writes {SUFFIXES[fmt]} files; name it "
                         f"{Path(out).with_suffix(SUFFIXES[fmt])}" + (f" (or use --format {other})" if other else ""))


def _example_input(batch: int | str, input_size: int, in_chans: int = 3) -> tuple[torch.Tensor, int | None]:
    _check_batch(batch)
    if batch == "dynamic":
        return torch.randn(2, in_chans, input_size, input_size), None
    return torch.randn(batch, in_chans, input_size, input_size), batch


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    input_size: int,
    metadata: dict,
    batch: int | str = "dynamic",
) -> Path:
    """Write ``model`` (put in eval mode) to ``out`` in format ``fmt`` with ``metadata`` embedded; return the path."""
    _check_format(fmt)
    if fmt == "hub":
        raise ValueError("a hub folder is written from a run or checkpoint: use export(source, 'hub', out)")
    out = Path(out)
    model = model.eval()
    meta_json = json.dumps({**metadata, "input_size": input_size}, sort_keys=True)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        with atomic_path(out) as tmp:
            save_file(state, str(tmp), metadata={METADATA_KEY: meta_json})
        return out
    x, fixed = _example_input(batch, input_size)
    check = getattr(model, "check_input", None)  # the model's own input check, one line instead of the exporter's
    if check is not None:
        try:
            check(tuple(x[:1].shape))
        except ValueError as e:
            raise ValueError(f"cannot export at input size {input_size}: {e}") from None
    batch_dim = None if fixed else torch.export.Dim("batch", min=1, max=65536)
    if fmt == "torch-export":
        dynamic = None if fixed else ({0: batch_dim},)
        with torch.no_grad():
            program = torch.export.export(model, (x,), dynamic_shapes=dynamic)
        with atomic_path(out) as tmp:
            torch.export.save(program, str(tmp), extra_files={METADATA_KEY: meta_json})
        return out
    # ONNX, through torch's dynamo-based exporter
    import onnx

    from .onnx_graph import rewrite_mish

    dynamic = None if fixed else {"x": {0: batch_dim}}
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        program = torch.onnx.export(
            model, (x,), dynamo=True, dynamic_shapes=dynamic, opset_version=ONNX_OPSET, verbose=False,
            input_names=["x"], output_names=["logits"],
        )
    proto = program.model_proto
    rewrite_mish(proto)  # onnxruntime's own Mish runs through its slow Softplus kernel
    onnx.checker.check_model(proto)
    set_onnx_metadata(proto, meta_json)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return out


def load_for_export(source: str | Path, input_size: int | None = None) -> tuple[nn.Module, dict]:
    """A checkpoint (``.safetensors`` or run directory) or a registered model name -> (eval model, metadata).

    A checkpoint carries its own metadata (model, classes, input size, mean/std). A model *name* gives an untrained
    model (useful to measure a runtime) with numbered classes and its pretrained cfg's input size and normalisation
    (those of its paper's data set).
    """
    from .registry import create_model, model_info, unknown_model_error
    from .train.checkpoint import load_checkpoint

    path = Path(source)
    if path.exists():
        model, meta = load_checkpoint(path)
        meta = {k: v for k, v in meta.items() if k != "format"}
    elif str(source) in _registered_names():
        info = model_info(str(source))
        model = create_model(info.name, num_classes=info.num_classes).eval()
        cfg = model.pretrained_cfg  # the input size and normalisation its recipes train with
        meta = {
            "model": info.name,
            "model_kwargs": {},
            "num_classes": info.num_classes,
            "classes": [str(i) for i in range(info.num_classes)],
            "input_size": int(cfg["input_size"][-1]),
            "mean": list(cfg["mean"]),
            "std": list(cfg["std"]),
            "dataset": None,
            "trained": False,
        }
    else:
        hint = str(unknown_model_error(str(source))).replace("unknown model", "no such model")
        raise ValueError(f"{source} is neither a checkpoint file nor a run directory, and {hint}")
    if input_size:
        meta["input_size"] = int(input_size)
    return model.eval(), meta


def _registered_names() -> list[str]:
    from .registry import list_models

    return list_models()


def export(source: str | Path, fmt: str, out: str | Path, input_size: int | None = None,
           batch: int | str = "dynamic", fuse: bool = False, int8: bool = False, calib_images: int | None = None,
           calib_method: str | None = None, float_layers: str | list[str] | None = None,
           data_dir: str | None = None) -> Path:
    """``ghostnest export``: load ``source`` (checkpoint, run directory or model name) and export it; with
    ``fuse``, the :func:`ghostnest.fuse` inference model (BN folded into convolutions, MixConv groups laid out for
    onnxruntime in an ONNX file, for PyTorch otherwise), with PyTorch's own Mish so the graph stays standard
    operators. Every ONNX file computes Mish by the exact formula of :func:`ghostnest.onnx_graph.rewrite_mish`.

    With ``int8`` (ONNX only), a post-training statically quantized file (:func:`export_int8`):
    fused, calibrated on ``calib_images`` images of the run's training split with ``calib_method``, the layer
    groups ``float_layers`` kept in float."""
    _check_format(fmt)
    if fmt == "hub":
        if fuse or int8 or batch != "dynamic" or input_size is not None:
            raise ValueError("--format hub writes the trained weights as they are, with the run's input size: drop "
                             "--fuse, --int8, --batch and --input")
        from .hub import export_hub

        return export_hub(source, out)
    _check_batch(batch)
    _check_suffix(fmt, out)
    if input_size is not None and input_size < 1:
        raise ValueError(f"--input {input_size} must be a positive image size in pixels (or leave it out for the "
                         "checkpoint's own size)")
    if int8:
        if fmt != "onnx":
            raise ValueError(f"--int8 writes a quantized ONNX file; use --format onnx (not {fmt})")
        return export_int8(source, out, input_size, batch, calib_images=calib_images, method=calib_method,
                           float_layers=float_layers, data_dir=data_dir)
    if calib_images is not None or calib_method is not None or float_layers is not None:
        raise ValueError("--calib-images, --calib-method and --float-layers apply to --int8 exports only")
    model, meta = load_for_export(source, input_size)
    if fuse:
        from .fuse import fuse as fuse_model

        model = fuse_model(model, fast_mish=False, runtime="onnxruntime" if fmt == "onnx" else "torch")
        meta["fused"] = True
    return export_model(model, fmt, out, int(meta.pop("input_size")), meta, batch)


def export_int8(source: str | Path, out: str | Path, input_size: int | None = None, batch: int | str = "dynamic",
                calib_images: int | None = None, method: str | None = None,
                float_layers: str | list[str] | None = None, data_dir: str | None = None) -> Path:
    """``ghostnest export SOURCE --format onnx --int8``: fuse, export fp32 ONNX, calibrate on the run's training
    split and quantize (:mod:`ghostnest.quantize`); write ``out`` atomically (nothing is written if any step
    fails). ``None`` takes the default calibration size, method and float layers."""
    import tempfile

    from .fuse import fuse
    from .quantize import calibration_images, check_method, int8_metadata, parse_float_layers, quantize_onnx
    from .train.checkpoint import resolve_checkpoint_path

    float_layers = parse_float_layers(float_layers)
    method = check_method(method)
    model, meta = load_for_export(source, input_size)
    run_dir = resolve_checkpoint_path(source).parent if Path(source).exists() else None
    calib, facts = calibration_images(meta, run_dir, calib_images, data_dir)
    model = fuse(model, fast_mish=False, runtime="onnxruntime")
    meta["fused"] = True
    size = int(meta.pop("input_size"))
    meta["int8"] = int8_metadata(facts, method, float_layers)
    with tempfile.TemporaryDirectory(prefix="ghostnest-int8-") as tmp:
        fp32 = export_model(model, "onnx", Path(tmp) / "fp32.onnx", size, meta, batch)
        return quantize_onnx(fp32, out, calib, method=method, float_layers=float_layers)
