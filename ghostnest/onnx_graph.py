"""Exact rewrites of exported ONNX graphs into operators onnxruntime runs fast (and quantizes).

:func:`rewrite_mish` is applied to every ONNX export (fp32 and int8); :func:`rewrite_for_int8` adds the rewrites
that let onnxruntime's quantizer keep a whole ME-NeSt-Ghost or GhostMixNet graph in int8 between the convolutions.
Each rewrite is checked against the graph it replaces in tests/test_quantize.py; docs/deployment.md has the
measurements behind them.
"""
from __future__ import annotations

import numpy as np


def _per_channel(arr) -> bool:
    return arr is not None and arr.ndim in (3, 4) and all(d == 1 for d in arr.shape[-2:]) and \
        (arr.ndim == 3 or arr.shape[0] == 1)


def rewrite_for_int8(model) -> dict[str, int]:
    """Rewrite, in place and exactly, the float operators of an exported fp32 graph that onnxruntime's QDQ
    quantizer would leave in float (each costing a dequantize, a float kernel, a quantize and layout transposes)
    into operators it quantizes:

    - ``BatchNormalization`` (a BN that no convolution precedes, e.g. GhostMixNet's BN after the activated Ghost
      module) -> a depthwise 1x1 ``Conv`` with the BN's per-channel scale and shift;
    - ``Mul`` by a per-channel constant followed by ``Add`` of one (the fused linear Ghost module's folded BN)
      -> a depthwise 1x1 ``Conv``;
    - ``ReduceMean`` over the spatial axes with ``keepdims`` (the Squeeze-Excitation squeeze) -> ``GlobalAveragePool``;
    - ``Mish`` (which onnxruntime expands to ``Softplus``, whose CPU kernel took over half of ME-NeSt-Ghost-S's time)
      -> ``x * n / (n + 2)`` with ``n = e (e + 2)``, ``e = exp(min(x, 20))``: the identity
      ``tanh(softplus(x)) = n / (n + 2)`` (exact; above 20 both are 1 in float32), kept in float (group ``mish``).

    Returns how many of each were rewritten.
    """
    return _rewrite(model, ("BatchNormalization", "Mul", "Mish", "ReduceMean"))


def rewrite_mish(model) -> int:
    """Rewrite every ``Mish`` of an exported graph, in place and exactly, as :func:`rewrite_for_int8` does (the
    formula of :func:`ghostnest.layers.fused.mish_formula`); returns how many. Every ONNX export gets this:
    onnxruntime runs its own ``Mish`` through ``Softplus``, whose CPU kernel made ME-NeSt-Ghost-S's fp32 file 2.4x
    slower (docs/deployment.md)."""
    return _rewrite(model, ("Mish",))["Mish"]


def _rewrite(model, ops: tuple[str, ...]) -> dict[str, int]:
    import onnx

    rewriter = _Rewriter(model.graph, ops)
    nodes = []
    for node in model.graph.node:
        if id(node) in rewriter.drop:
            continue
        nodes.extend(rewriter.rewrite(node) or [node])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(rewriter.new_inits)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.checker.check_model(model)
    return rewriter.counts


class _Rewriter:
    """The exact rewrites of :func:`rewrite_for_int8` and :func:`rewrite_mish`, one method each; ``rewrite(node)``
    returns the replacement nodes, or ``None`` to keep ``node``. Only operators in ``ops`` are rewritten."""

    MISH_CLIP, MISH_TWO = "ghostnest.mish.clip", "ghostnest.mish.two"

    def __init__(self, graph, ops: tuple[str, ...]):
        self.ops = ops
        self.inits = {i.name: i for i in graph.initializer}
        self.consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self.new_inits, self.drop = [], set()
        self.counts = {"BatchNormalization": 0, "Mul+Add": 0, "ReduceMean": 0, "Mish": 0}

    def const(self, name):
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def rewrite(self, n) -> list | None:
        method = {"BatchNormalization": self.batchnorm, "Mul": self.mul_add, "Mish": self.mish,
                  "ReduceMean": self.reduce_mean}.get(n.op_type) if n.op_type in self.ops else None
        return method(n) if method else None

    def depthwise(self, node_name, x, y, scale, shift, source):
        from onnx import helper, numpy_helper

        c = scale.shape[0]
        w_name, b_name = f"{node_name}.dw_weight", f"{node_name}.dw_bias"
        self.new_inits.append(numpy_helper.from_array(scale.reshape(c, 1, 1, 1).astype(np.float32), w_name))
        self.new_inits.append(numpy_helper.from_array(shift.reshape(c).astype(np.float32), b_name))
        conv = helper.make_node("Conv", [x, w_name, b_name], [y], name=node_name, group=c, kernel_shape=[1, 1],
                                strides=[1, 1], pads=[0, 0, 0, 0])
        conv.metadata_props.extend(source.metadata_props)
        return conv

    def batchnorm(self, n):
        if len(n.output) != 1 or not all(i in self.inits for i in n.input[1:5]):
            return None
        gamma, beta, mean, var = (self.const(i).astype(np.float64) for i in n.input[1:5])
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        self.counts["BatchNormalization"] += 1
        return [self.depthwise(n.name, n.input[0], n.output[0], scale, beta - mean * scale, n)]

    def mul_add(self, n):
        if n.output[0] in self.outputs or len(self.consumers.get(n.output[0], [])) != 1:
            return None
        x, s = (n.input[0], self.const(n.input[1])) if n.input[1] in self.inits else (n.input[1],
                                                                                         self.const(n.input[0]))
        add = self.consumers[n.output[0]][0]
        if not _per_channel(s) or add.op_type != "Add":
            return None
        b = self.const(add.input[1] if add.input[0] == n.output[0] else add.input[0])
        if not _per_channel(b) or b.shape != s.shape:
            return None
        self.drop.add(id(add))
        self.counts["Mul+Add"] += 1
        scale, shift = s.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
        return [self.depthwise(add.name, x, add.output[0], scale, shift, n)]

    def mish(self, n):
        from onnx import helper, numpy_helper

        if not self.counts["Mish"] and self.MISH_CLIP not in self.inits:
            for name, value in ((self.MISH_CLIP, 20.0), (self.MISH_TWO, 2.0)):
                self.new_inits.append(numpy_helper.from_array(np.array(value, np.float32), name))
        x, y, p = n.input[0], n.output[0], f"{n.name}.mish"
        scope = next((m.value for m in n.metadata_props if m.key == "namespace"), "")
        two = self.MISH_TWO
        steps = [("Min", [x, self.MISH_CLIP], f"{p}.clip"), ("Exp", [f"{p}.clip"], f"{p}.e"),
                 ("Add", [f"{p}.e", two], f"{p}.e2"), ("Mul", [f"{p}.e", f"{p}.e2"], f"{p}.n"),
                 ("Add", [f"{p}.n", two], f"{p}.d"), ("Div", [f"{p}.n", f"{p}.d"], f"{p}.t"),
                 ("Mul", [x, f"{p}.t"], y)]
        nodes = []
        for op, ins, out in steps:
            node = helper.make_node(op, ins, [out], name=n.name if out == y else out)
            node.metadata_props.add(key="namespace", value=f"{scope}/mish")
            nodes.append(node)
        self.counts["Mish"] += 1
        return nodes

    def reduce_mean(self, n):
        from onnx import helper

        if len(n.input) != 2 or n.input[1] not in self.inits:
            return None
        axes = sorted(int(a) % 4 for a in self.const(n.input[1]).reshape(-1))
        keep = next((a.i for a in n.attribute if a.name == "keepdims"), 1)
        if axes != [2, 3] or keep != 1:
            return None
        gap = helper.make_node("GlobalAveragePool", [n.input[0]], list(n.output), name=n.name)
        gap.metadata_props.extend(n.metadata_props)
        self.counts["ReduceMean"] += 1
        return [gap]


def unshare_initializers(model, nodes) -> int:
    """Give each node named in ``nodes`` its own copy of every initializer it shares with a node outside them;
    returns how many copies were made.

    onnxruntime's graph optimisation (in ``quant_pre_process``) merges equal scalar constants, e.g. the ``2`` of a
    Mish formula kept in float with the ``2`` of a quantized ``Mul``. The quantizer then quantizes the shared
    constant for the quantized node, and the float node reads it back through a ``DequantizeLinear`` at run time
    (two per Mish in ME-NeSt-Ghost-S, 284 in all), with a rounded value.
    """
    nodes = set(nodes)
    inits = {i.name: i for i in model.graph.initializer}
    users: dict[str, set[bool]] = {}
    for n in model.graph.node:
        for i in n.input:
            if i in inits:
                users.setdefault(i, set()).add(n.name in nodes)
    shared = {name for name, kinds in users.items() if kinds == {True, False}}
    copies = 0
    for n in model.graph.node:
        if n.name not in nodes:
            continue
        for k, i in enumerate(n.input):
            if i in shared:
                copy = type(inits[i])()
                copy.CopyFrom(inits[i])
                copy.name = f"{i}.float.{n.name}"
                model.graph.initializer.append(copy)
                n.input[k] = copy.name
                copies += 1
    return copies
