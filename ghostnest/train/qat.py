"""Quantization-aware fine-tuning: train a model while it sees the int8 rounding its exported file will do.

``ghostnest train --qat RUN`` continues a trained run for a few epochs with :func:`prepare_qat` applied, then
``ghostnest export NEW_RUN --format onnx --int8`` quantizes the fine-tuned weights exactly as it quantizes any run
(docs/deployment.md, "Quantization-aware fine-tuning"). Fake quantization follows the int8 export's scheme
(:mod:`ghostnest.quantize`):

- **weights** of every convolution and linear layer except the classifier: per output channel, symmetric int8 on
  the export's grid (``[-64, 64]``, scale = max |w| / 64: :data:`WEIGHT_QMAX`, the 7-bit range
  that CPUs without VNNI need), computed from the current weights at every step, as the exporter
  computes it from the final ones. Per-channel symmetric rounding is unchanged by a per-channel factor, so rounding
  a convolution's weights before BN is folded into them is the rounding of the folded weights the file holds.
- **activations** entering those layers (and each MixConv as a whole): per tensor, asymmetric uint8, the range a
  moving average of the batch min/max (PyTorch's ``FusedMovingAvgObsFakeQuantize``, torch.ao's default for QAT,
  its operator called directly so that ``torch.compile`` traces the whole model without a graph break). The range
  is observed in training mode only; evaluation uses the last range.
- the classifier, and everything :data:`ghostnest.quantize.DEFAULT_FLOAT_LAYERS` keeps float (Mish), stay float.

Gradients pass straight through the rounding (PyTorch's fake-quantize operators). The model keeps its parameter
names: its ``state_dict`` holds plain ``weight`` tensors (the weights before rounding), so checkpoints written
during QAT load into the ordinary model. The activation ranges live in ``model.qat_observers`` (a submodule, so
they move with ``.to()`` and DDP keeps every rank on rank 0's ranges, as it does BN statistics) but are left out of
``state_dict``: the training state file carries them (:func:`observer_state`), so ``--resume`` of a QAT run
repeats the uninterrupted run exactly.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.ao.quantization import FusedMovingAvgObsFakeQuantize, MovingAverageMinMaxObserver
from torch.nn.utils import parametrize

from ..layers.mixconv import MixConv2d

# The int8 weight grid, one fact for this module and the int8 export (ghostnest.quantize, which imports it from here):
# weights quantized to [-64, 64] (onnxruntime's reduce_range) instead of [-127, 127]. onnxruntime's u8s8 kernels on
# x86 CPUs without VNNI (AVX2, plain AVX-512) sum pairs of uint8 x int8 products in int16 (vpmaddubsw), which
# saturates once 2 x 255 x |w| passes 32,767; a file may be exported on one CPU and run on another, so every file
# is written for the CPUs that saturate, and quantization-aware training rounds to the same grid.
REDUCE_RANGE = True
WEIGHT_QMAX = 64 if REDUCE_RANGE else 127

_PARAM = ".parametrizations.weight.original"
OBSERVERS = "qat_observers"  # the submodule holding the activation fake-quantize modules, one per observed layer


class WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric fake quantization of a weight to the int8 export's grid
    (``[-WEIGHT_QMAX, WEIGHT_QMAX]``; the parametrization :func:`prepare_qat` puts on ``module.weight``)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            scale = (w.detach().float().abs().flatten(1).amax(1) / WEIGHT_QMAX).clamp_min(1e-12)
        zero = torch.zeros(scale.shape, dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w.float(), scale, zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX).to(w.dtype)


def _activation_fake_quant() -> FusedMovingAvgObsFakeQuantize:
    return FusedMovingAvgObsFakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                         dtype=torch.quint8, qscheme=torch.per_tensor_affine, averaging_constant=0.01)


def _input_hook(fq: FusedMovingAvgObsFakeQuantize):
    obs = fq.activation_post_process

    def hook(module: nn.Module, args: tuple):
        x = args[0]
        fq.observer_enabled.fill_(int(module.training))  # ranges follow training batches only
        # the module's own ATen operator, called directly: torch.compile skips torch.ao's module code (a graph
        # break at every layer) but traces the operator
        y = torch.fused_moving_avg_obs_fake_quant(x.float(), fq.observer_enabled, fq.fake_quant_enabled,
                                                  obs.min_val, obs.max_val, fq.scale, fq.zero_point,
                                                  obs.averaging_constant, obs.quant_min, obs.quant_max, 0, False,
                                                  False)
        return (y.to(x.dtype), *args[1:])

    return hook


def _state_dict_hook(module, state_dict, prefix, local_metadata):
    """Plain ``weight`` names and no observers in ``state_dict()``: checkpoints of a QAT model load into the
    ordinary model."""
    for key in [k for k in state_dict if k.endswith(_PARAM)]:
        state_dict[key[: -len(_PARAM)] + ".weight"] = state_dict.pop(key)
    for key in [k for k in state_dict if k.startswith(f"{prefix}{OBSERVERS}.")]:
        del state_dict[key]


def _load_hook(module, state_dict, prefix, *args):
    """The reverse of :func:`_state_dict_hook` for ``load_state_dict`` (resuming a QAT run)."""
    for name in module._qat_layers:
        key = f"{prefix}{name}.weight"
        if key in state_dict:
            state_dict[f"{prefix}{name}{_PARAM}"] = state_dict.pop(key)


def _load_post_hook(module, incompatible_keys):
    """Plain weights (which hold no observers) load strictly into a QAT model: its observers keep their ranges."""
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if f".{OBSERVERS}." not in f".{k}"]


def observer_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The activation ranges of a :func:`prepare_qat` model (on the CPU), or ``None`` for an ordinary model: what the
    training state file keeps beside ``state_dict`` so that a resumed QAT run goes on exactly."""
    observers = getattr(model, OBSERVERS, None)
    if observers is None:
        return None
    return {k: v.detach().cpu() for k, v in observers.state_dict().items()}


def load_observer_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restore :func:`observer_state` into a model prepared the same way."""
    getattr(model, OBSERVERS).load_state_dict(state)


def qat_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose weights :func:`prepare_qat` fake-quantizes: every ``nn.Conv2d`` and ``nn.Linear``
    except the classifier (``model.get_classifier()``, kept in float as in the int8 export)."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    return [name for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not classifier]


def prepare_qat(model: nn.Module) -> nn.Module:
    """Put fake int8 quantization into ``model`` in place (see the module docstring) and return it.

    Call it on the model on its device, before building the optimizer. ``ValueError`` if the model has no layer to
    quantize or was prepared already.
    """
    if hasattr(model, OBSERVERS):
        raise ValueError("the model is already prepared for quantization-aware training")
    names = qat_layers(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no convolution or linear layer to quantize")
    modules = dict(model.named_modules())
    inside_mixconv = {f"{name}.{child}" for name, m in modules.items() if isinstance(m, MixConv2d)
                      for child, _ in m.named_modules() if child}
    observed = [n for n in names if n not in inside_mixconv]
    observed += [name for name, m in modules.items() if isinstance(m, MixConv2d)]
    for name in names:
        parametrize.register_parametrization(modules[name], "weight", WeightFakeQuant())
    observers = nn.ModuleDict()  # keyed by layer name, "." written as ":" (a module name cannot hold a dot)
    for name in observed:
        fq = _activation_fake_quant().to(next(modules[name].parameters()).device)
        observers[name.replace(".", ":")] = fq
        modules[name].register_forward_pre_hook(_input_hook(fq))
    model.add_module(OBSERVERS, observers)
    model._qat_layers = names
    model.register_state_dict_post_hook(_state_dict_hook)
    model.register_load_state_dict_pre_hook(_load_hook)
    model.register_load_state_dict_post_hook(_load_post_hook)
    return model
