"""Quantization-aware fine-tuning: train a model while it sees the int8 rounding its exported file will do.

``ghostnest train --qat RUN`` continues a trained run for a few epochs with :func:`prepare_qat` applied, then
``ghostnest export NEW_RUN --format onnx --int8`` quantizes the fine-tuned weights exactly as it quantizes any run
(docs/deployment.md, "Quantization-aware fine-tuning"). Fake quantization follows the int8 export's scheme
(:mod:`ghostnest.quantize`):

- **weights** of every convolution and linear layer except the classifier: per output channel, symmetric int8
  (``[-127, 127]``, scale = max |w| / 127), computed from the current weights at every step, as the exporter
  computes it from the final ones. Per-channel symmetric rounding is unchanged by a per-channel factor, so rounding
  a convolution's weights before BN is folded into them is the rounding of the folded weights the file holds.
- **activations** entering those layers (and each MixConv as a whole): per tensor, asymmetric uint8, the range a
  moving average of the batch min/max (PyTorch's ``FakeQuantize`` with ``MovingAverageMinMaxObserver``). The range
  is observed in training mode only; evaluation uses the last range.
- the classifier, and everything :data:`ghostnest.quantize.DEFAULT_FLOAT_LAYERS` keeps float (Mish), stay float.

Gradients pass straight through the rounding (PyTorch's fake-quantize operators). The model keeps its parameter
names: its ``state_dict`` holds plain ``weight`` tensors (the weights before rounding), so checkpoints written
during QAT load into the ordinary model, and ``--resume`` works as for any run. The activation ranges are not in
the checkpoint: a resumed QAT run observes them again from its first batches.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver
from torch.nn.utils import parametrize

from .layers.mixconv import MixConv2d

_PARAM = ".parametrizations.weight.original"


class WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric int8 fake quantization of a weight (the parametrization :func:`prepare_qat`
    puts on ``module.weight``)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            scale = (w.detach().float().abs().flatten(1).amax(1) / 127.0).clamp_min(1e-12)
        zero = torch.zeros(scale.shape, dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w.float(), scale, zero, 0, -127, 127).to(w.dtype)


def _activation_fake_quant() -> FakeQuantize:
    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                        qscheme=torch.per_tensor_affine, averaging_constant=0.01)


def _input_hook(fq: FakeQuantize):
    def hook(module: nn.Module, args: tuple):
        x = args[0]
        if fq.scale.device != x.device:
            fq.to(x.device)
        fq.observer_enabled[0] = int(module.training)  # ranges follow training batches only
        return (fq(x.float()).to(x.dtype), *args[1:])

    return hook


def _state_dict_hook(module, state_dict, prefix, local_metadata):
    """Plain ``weight`` names in ``state_dict()``: checkpoints of a QAT model load into the ordinary model."""
    for key in [k for k in state_dict if k.endswith(_PARAM)]:
        state_dict[key[: -len(_PARAM)] + ".weight"] = state_dict.pop(key)


def _load_hook(module, state_dict, prefix, *args):
    """The reverse of :func:`_state_dict_hook` for ``load_state_dict`` (resuming a QAT run)."""
    for name in module._qat_layers:
        key = f"{prefix}{name}.weight"
        if key in state_dict:
            state_dict[f"{prefix}{name}{_PARAM}"] = state_dict.pop(key)


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
    if getattr(model, "_qat_layers", None) is not None:
        raise ValueError("the model is already prepared for quantization-aware training")
    names = qat_layers(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no convolution or linear layer to quantize")
    modules = dict(model.named_modules())
    inside_mixconv = {f"{name}.{child}" for name, m in modules.items() if isinstance(m, MixConv2d)
                      for child, _ in m.named_modules() if child}
    observed = [n for n in names if n not in inside_mixconv]
    observed += [name for name, m in modules.items() if isinstance(m, MixConv2d)]
    model._qat_fake_quant = {}  # plain dict: not submodules, so not in state_dict; moved to the input's device
    for name in names:
        parametrize.register_parametrization(modules[name], "weight", WeightFakeQuant())
    for name in observed:
        fq = _activation_fake_quant()
        model._qat_fake_quant[name] = fq
        modules[name].register_forward_pre_hook(_input_hook(fq))
    model._qat_layers = names
    model.register_state_dict_post_hook(_state_dict_hook)
    model.register_load_state_dict_pre_hook(_load_hook)
    return model
