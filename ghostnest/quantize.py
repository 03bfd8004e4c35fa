"""Post-training static int8 quantization of an exported ONNX classifier (``ghostnest export --int8``).

The recipe, each step chosen by measurement (docs/deployment.md has the figures):

1. :func:`ghostnest.fuse` folds every BatchNorm that follows a convolution into it, so the exported fp32 graph has
   fewer float operators left between the quantized convolutions.
2. Calibration images come from the run's own *training* split (the validation images the run held out are not
   used), run through the run's exact evaluation preprocessing: the same resize steps, the same mean and std.
3. onnxruntime's quantizer (``quantize_static``) writes a QDQ graph with per-channel symmetric int8 weights and
   uint8 activations (the u8s8 kernels onnxruntime runs on x86 CPUs), after its own graph pre-processing
   (``quant_pre_process``: shape inference and graph optimisation). The weights use 7 of the 8 bits
   (:data:`REDUCE_RANGE`): on x86 CPUs without VNNI those kernels add pairs of uint8 x int8 products in 16 bits,
   which full-range weights overflow (measured in docs/deployment.md).
4. Some layer groups may stay in float (``float_layers``): Squeeze-Excitation gates, the classifier, Split-Attention
   (its softmax) and Mish. Which ones do by default was measured per group on trained runs (accuracy, agreement
   with fp32, latency): see :data:`DEFAULT_FLOAT_LAYERS` and docs/deployment.md.

The int8 file carries the fp32 export's metadata plus an ``int8`` entry with the calibration facts.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_path
from .modelfile import METADATA_KEY, set_onnx_metadata
from .onnx_graph import rewrite_for_int8, unshare_initializers
from .train.qat import REDUCE_RANGE, WEIGHT_QMAX

# Layer groups that may be kept in float; each maps an ONNX node of the exported graph by the PyTorch module it came
# from (the exporter's ``namespace`` metadata) or by its operator.
LAYER_GROUPS = ("se", "classifier", "attention", "mish")
DEFAULT_FLOAT_LAYERS: tuple[str, ...] = ("classifier", "mish")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_CALIB_IMAGES = 512
DEFAULT_CALIB_METHOD = "minmax"
CALIB_BATCH = 32
CALIB_SEED = 0


def parse_float_layers(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"se,classifier"`` (or a list; ``"none"`` or empty for none) -> a checked tuple of layer groups."""
    if text is None:
        return DEFAULT_FLOAT_LAYERS
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t and t != "none"]
    bad = [t for t in items if t not in LAYER_GROUPS]
    if bad:
        raise ValueError(f"unknown layer group(s) {', '.join(bad)} for float layers; choose from "
                         f"{', '.join(LAYER_GROUPS)} (comma-separated) or 'none'")
    return tuple(dict.fromkeys(items))


def node_groups(node, hidden_fc: frozenset[str] = frozenset()) -> set[str]:
    """The layer groups (of :data:`LAYER_GROUPS`) an ONNX node belongs to: none, one, or two (a Mish inside a
    Squeeze-Excitation is in ``se`` and in ``mish``; either keeps it in float).

    A ``Gemm``/``MatMul`` is in ``classifier``, unless it is one of ``hidden_fc`` (:func:`hidden_fc_nodes`: the
    fully connected layers before the classifier, such as ConvNeXt's MLPs, which are quantized as convolutions
    are). The products of two activations (Split-Attention's weighted sum, self-attention) stay with the
    classifier group, in float by default: docs/deployment.md."""
    if node.op_type in ("Gemm", "MatMul"):
        return set() if node.name in hidden_fc else {"classifier"}
    scope = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    groups = set()
    if "SqueezeExcite" in scope or ".se." in scope or ".se:" in scope:
        groups.add("se")
    elif "SplitAttention" in scope or node.op_type == "Softmax":
        groups.add("attention")
    if node.op_type in ("Mish", "Softplus", "Tanh") or "mish" in scope.rsplit("/", 1)[-1].lower():
        groups.add("mish")
    return groups


def hidden_fc_nodes(model) -> frozenset[str]:
    """Names of the fully connected nodes of ``model`` (an ``onnx.ModelProto``) before its classifier: every
    ``Gemm``/``MatMul`` by a weight (an initializer) but the graph's last one, the classifier. None in GhostMixNet
    and ME-NeSt-Ghost; ConvNeXt's MLP layers in ConvNeXt-T/S."""
    weights = {i.name for i in model.graph.initializer}
    fc = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul") and n.input[1] in weights]
    return frozenset(fc[:-1])


def nodes_in_groups(model, groups: Iterable[str]) -> list[str]:
    """Names of the nodes of ``model`` (an ``onnx.ModelProto``) in any of ``groups``."""
    groups, hidden = set(groups), hidden_fc_nodes(model)
    return [n.name for n in model.graph.node if node_groups(n, hidden) & groups]


# --- calibration data ------------------------------------------------------------------------------------------

def training_split(meta: dict, run_dir: Path | None, data_dir: str | None = None):
    """(data set, the run's training split): the split the run trained on (its held-out validation images
    excluded, as in training), read from the run's ``config.yaml`` where there is one."""
    from .data import default_data_dir, load_dataset
    from .data.pipeline import split_train_val
    from .train.rundir import read_run_config

    name = meta.get("dataset")
    if not name:
        raise ValueError(f"{meta.get('model', 'this model')} has no training data set recorded (an untrained model "
                         "or a checkpoint without one); --int8 calibrates on a run's training split: export a run "
                         "directory or its checkpoint")
    cfg = read_run_config(run_dir) if run_dir is not None and (run_dir / "config.yaml").is_file() else None
    data = load_dataset(name, data_dir or (cfg and cfg.data_dir) or default_data_dir(), download=False)
    if data.num_classes != int(meta["num_classes"]):
        raise ValueError(f"the checkpoint has {meta['num_classes']} classes but its data set {name} has "
                         f"{data.num_classes}; it cannot be calibrated on it")
    return data, split_train_val(cfg, data)[0] if cfg is not None else data.train


def calibration_images(meta: dict, run_dir: Path | None, n: int | None, data_dir: str | None = None,
                       seed: int = CALIB_SEED) -> tuple[torch.Tensor, dict]:
    """``n`` preprocessed images (``None``: :data:`DEFAULT_CALIB_IMAGES`) drawn (seeded) from the run's training
    split, and the facts to record."""
    from .train.evaluate import eval_preprocess

    n = DEFAULT_CALIB_IMAGES if n is None else n
    if n < 1:
        raise ValueError(f"--calib-images {n} must be a positive number of images")
    data, train = training_split(meta, run_dir, data_dir)
    take = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    preprocess = eval_preprocess(data, meta, torch.device("cpu"))  # exactly as `ghostnest eval` feeds the checkpoint
    x = torch.cat([preprocess(train.images[take[i:i + 256]]) for i in range(0, len(take), 256)])
    facts = {"dataset": meta["dataset"], "split": "train", "images": int(len(take)), "of": len(train), "seed": seed}
    return x, facts


class _Reader:
    """onnxruntime's ``CalibrationDataReader`` over a float tensor, ``CALIB_BATCH`` images at a time."""

    def __init__(self, x: torch.Tensor, input_name: str, batch: int, fixed: bool = False):
        if fixed and len(x) % batch:  # a fixed-batch graph takes whole batches only: cycle the images to fill one
            x = torch.cat([x, x[torch.arange(batch - len(x) % batch) % len(x)]])
        self.chunks = [x[i:i + batch].numpy().astype(np.float32) for i in range(0, len(x), batch)]
        self.input_name, self.i = input_name, 0

    def get_next(self):
        if self.i >= len(self.chunks):
            return None
        self.i += 1
        return {self.input_name: self.chunks[self.i - 1]}

    def rewind(self):
        self.i = 0


def quantize_onnx(fp32: str | Path, out: str | Path, calib: torch.Tensor, *, method: str = DEFAULT_CALIB_METHOD,
                  float_layers: Iterable[str] = DEFAULT_FLOAT_LAYERS, rewrite: bool = True, pre_process: bool = True,
                  reduce_range: bool = REDUCE_RANGE, activation_symmetric: bool = False, extra: dict | None = None) -> Path:
    """Quantize the fp32 ONNX file ``fp32`` into ``out`` (QDQ, per-channel int8 weights, 7-bit unless
    ``reduce_range=False`` (:data:`REDUCE_RANGE`), uint8 activations)
    calibrated on ``calib`` (preprocessed images); nodes of ``float_layers`` stay float. ``out`` is written
    atomically; metadata is copied from ``fp32``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    check_method(method)
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    float_layers = tuple(float_layers)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="ghostnest-int8-") as tmp:
        src = Path(fp32)
        model = onnx.load(str(src))
        if rewrite:
            rewrite_for_int8(model)
            src = Path(tmp) / "rewritten.onnx"
            onnx.save(model, str(src))
        scoped = model
        if pre_process:
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            src = pre
        model = onnx.load(str(src))
        if not any(p.key == "namespace" for n in model.graph.node for p in n.metadata_props):
            named = {n.name: n for n in scoped.graph.node}  # the pre-processing dropped the node scopes
            for n in model.graph.node:
                if n.name in named:
                    n.metadata_props.extend(named[n.name].metadata_props)
        exclude = nodes_in_groups(model, float_layers)
        if unshare_initializers(model, exclude):
            src = Path(tmp) / "unshared.onnx"
            onnx.save(model, str(src))
        inp = model.graph.input[0]
        fixed = inp.type.tensor_type.shape.dim[0].dim_value  # 0 when the batch dimension is dynamic
        options = {"ActivationSymmetric": activation_symmetric, "WeightSymmetric": True, **(extra or {})}
        if method == "percentile":
            options.setdefault("CalibPercentile", 99.999)
        q = Path(tmp) / "int8.onnx"
        quantize_static(
            str(src), str(q), _Reader(calib, inp.name, fixed or CALIB_BATCH, bool(fixed)), quant_format=QuantFormat.QDQ,
            per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=exclude, calibrate_method=calibrate,
            extra_options=options,
        )
        qmodel = onnx.load(str(q))
        props = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
        del qmodel.metadata_props[:]
        if METADATA_KEY in props:
            set_onnx_metadata(qmodel, props[METADATA_KEY])
        with atomic_path(out) as tmp_out:
            onnx.save(qmodel, str(tmp_out))
    return out


def check_method(method: str | None) -> str:
    """A calibration method of :data:`CALIBRATION_METHODS` (``None``: :data:`DEFAULT_CALIB_METHOD`)."""
    method = DEFAULT_CALIB_METHOD if method is None else method
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    return method


def int8_metadata(facts: dict, method: str, float_layers: Iterable[str]) -> dict:
    """The ``int8`` entry an int8 file's metadata adds to the fp32 export's: the scheme, the calibration facts
    (:func:`calibration_images`), the float layer groups and the quantizer's version."""
    return {
        "format": "QDQ", "weights": f"int8 per-channel symmetric, [-{WEIGHT_QMAX}, {WEIGHT_QMAX}]",
        "activations": "uint8 per-tensor",
        "calibration": {**facts, "method": method, "preprocessing": "the run's eval preprocessing"},
        "float_layers": list(float_layers), "quantizer": _quantizer_version(),
    }


def _quantizer_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


__all__ = ["quantize_onnx", "calibration_images", "check_method", "int8_metadata", "parse_float_layers",
           "node_groups", "hidden_fc_nodes", "nodes_in_groups", "rewrite_for_int8", "LAYER_GROUPS", "DEFAULT_FLOAT_LAYERS",
           "DEFAULT_CALIB_IMAGES", "REDUCE_RANGE", "WEIGHT_QMAX"]
