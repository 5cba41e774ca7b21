"""Quantize a captured :class:`~.graph.Graph` into a :class:`~.quantized.QuantizedGraph`, and
evaluate the result in float (:func:`fake_quant`: what PyTorch would report for the quantized
model, for accuracy tables).

:func:`quantize_graph` walks the graph in topological order on calibration data, as
:func:`~sparqforge.sw.quantize.quantize_model` walks a sequential model: every node computes
on the *fake-quantized* outputs of the nodes before it (their codes' values), so each layer
is quantized for the inputs it will really see.

* ``linear`` and ``conv2d``: the (BatchNorm-folded) float weight is quantized per output
  channel and symmetric with :func:`~sparqforge.sw.quantize.quantize_weight`; data-driven on
  the node's fake-quantized inputs (Linear rows, Conv2d patches) unless ``data_driven=False``.
  A depthwise convolution is quantized data-free: its output channels see different input
  rows, and :func:`~sparqforge.sw.quantize.quantize_weight` takes one input matrix for all
  channels. A layer that must stay N:M is quantized with its pruning mask, so its zeros stay
  zero (checked).
* ``batchnorm`` that was not folded: a per-channel affine layer whose weight (one value per
  channel) is quantized exactly: code ``+-127``, scale ``|a| / 127`` (:func:`affine_weight`).
* Every tensor gets an :class:`~sparqforge.sw.quantize.ActivationQuantizer` calibrated on
  its values (:mod:`.presets` decides which): 8-bit uniform (unsigned, or signed with a zero
  point: asymmetric), power codes, or the logits' signed asymmetric 8-bit quantizer. A
  producer with a fused clamp is calibrated on clamped values, so its range stays inside the
  clamp (ReLU6: ``[0, 6]``) and the requantizer's top code is the clamp. Max and average
  pooling, flatten and clamp share their input's quantizer (they keep its codes).
"""

__all__ = ["quantize_graph", "fake_quant", "fake_quant_all", "affine_weight", "as_matmul"]

import inspect

import numpy as np
import torch
from torch.nn import functional as F

from ..export import as_batch
from ..nm_format import find_violation
from ..quantize import ActivationQuantizer, QuantizedWeight, quantize_weight
from .evaluate import _node as _evaluate_node
from .graph import Node
from .presets import plan, weight_matrix
from .quantized import QuantizedGraph

#: At most this many values of unfolded convolution patches feed a data-driven weight search
#: (evenly strided over the calibration items beyond it).
_PATCH_VALUES = 1 << 23
#: Whether :func:`quantize_weight` takes an N:M pruning mask (``mask=``). Without one, layers
#: that must stay N:M are quantized data-free, which keeps zeros zero.
# TODO: drop the fallback once every checkout's quantize_weight has ``mask=``.
_MASKED = "mask" in inspect.signature(quantize_weight).parameters


def affine_weight(node):
    """The exact 8-bit quantization of a ``batchnorm`` node's per-channel scale ``a``, as the
    weight of :func:`as_matmul`'s layer: code ``sign(a) * 127`` and scale ``|a| / 127`` per
    channel (code 0 and the placeholder scale 1 where ``a`` is 0)."""
    scale = np.asarray(node.attrs["scale"], dtype=np.float64)
    sign = np.sign(scale).astype(np.int64) * 127
    channels = len(scale)
    codes = np.diag(sign) if len(node.shape) == 1 else sign.reshape(channels, 1, 1, 1)
    step = np.where(scale != 0, np.abs(scale) / 127, 1.0)
    return QuantizedWeight(codes=torch.from_numpy(np.ascontiguousarray(codes)),
                           scale=torch.from_numpy(step), zero_point=0, exponent=None, bits=8,
                           method="uniform", per_channel=True, symmetric=True, mac_bits=8,
                           data_driven=False, dtype=torch.float64)


def as_matmul(node):
    """``node`` as the matmul layer it lowers to: ``linear`` and ``conv2d`` as they are; a
    ``batchnorm`` of an image as a depthwise 1x1 ``conv2d``, of a vector as a diagonal
    ``linear``, with weight ``a`` and bias the node's ``shift``."""
    if node.op != "batchnorm":
        return node
    scale, shift = node.attrs["scale"], node.attrs["shift"]
    if len(node.shape) == 1:
        attrs = {"weight": np.diag(scale), "bias": shift}
        return Node(node.name, "linear", node.inputs, node.shape, attrs, node.source)
    attrs = {"weight": scale.reshape(-1, 1, 1, 1), "bias": shift, "stride": (1, 1),
             "padding": (0, 0), "groups": len(scale)}
    return Node(node.name, "conv2d", node.inputs, node.shape, attrs, node.source)


def _forward(qgraph, node, args):
    """``node``'s float64 output on fake-quantized ``args``, with its dequantized weight."""
    if node.op in ("linear", "conv2d", "batchnorm"):
        layer = as_matmul(node)
        weight = qgraph.weights.get(node.name)
        weight = affine_weight(node) if weight is None else weight
        bias = qgraph.bias.get(node.name, layer.attrs["bias"])
        node = Node(node.name, layer.op, node.inputs, node.shape,
                    dict(layer.attrs, weight=weight.dequantize(torch.float64).numpy(),
                         bias=bias), node.source)
    return _evaluate_node(node, args)


def _fake_quant(quantizer, y):
    return quantizer.fake_quant(torch.from_numpy(np.ascontiguousarray(y))).numpy()


def _patches(node, x):
    """Data-driven weight inputs of a ``linear``/``conv2d``: ``[rows, K]`` in the order of
    ``weight.reshape(out, -1)``."""
    if node.op == "linear":
        return torch.from_numpy(x)
    kh, kw = node.attrs["weight"].shape[2:]
    per_item = x[0].size * kh * kw
    x = x[::max(1, -(-x.shape[0] * per_item // _PATCH_VALUES))]
    cols = F.unfold(torch.from_numpy(np.ascontiguousarray(x)), (kh, kw),
                    padding=node.attrs["padding"], stride=node.attrs["stride"])
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _quantize_weight(node, x, bits, method, sparsity, data_driven, steps):
    weight = torch.from_numpy(np.ascontiguousarray(node.attrs["weight"]))
    depthwise = node.op == "conv2d" and node.attrs["groups"] != 1
    masked = sparsity is not None
    inputs = (_patches(node, x) if data_driven and not depthwise and (_MASKED or not masked)
              else None)
    options = {} if steps is None else {"steps": steps}
    if masked and _MASKED:
        options["mask"] = weight != 0
    qweight = quantize_weight(weight, bits, method, per_channel=True, symmetric=True,
                              inputs=inputs, **options)
    if sparsity is not None:
        bad = find_violation(weight_matrix(qweight.codes.numpy()), *sparsity)
        if bad is not None:
            raise RuntimeError(f"Quantizing {node.describe()} broke its {sparsity[0]}:"
                               f"{sparsity[1]} pattern (output {bad[0]}, group {bad[1]}); "
                               f"this is a bug in the masked weight quantization")
    return qweight


def _quantizer(kind, bits):
    if kind == "power":
        return ActivationQuantizer(bits, "power", signed=False)
    return ActivationQuantizer(8, "uniform", signed=True if kind == "logits" else None,
                               symmetric=False)


def quantize_graph(graph, calib, *, quant="uniform-w8a8", threshold_bits=4, sparsity=None,
                   layers=None, data_driven=True, steps=None, name="model"):
    """Quantize every weight and tensor of ``graph``.

    Parameters
    ----------
    graph : Graph
        A captured graph (:func:`~.capture.capture`), simplified or not.
    calib : numpy.ndarray, torch.Tensor or an iterable of batches
        Calibration inputs ``[N, *graph.input.shape]``, any real dtype (evaluated in
        float64); see :func:`sparqforge.sw.export.as_batch`.
    quant : str
        A preset of :data:`~.presets.PRESETS`: ``"uniform-w8a8"``, ``"power-w4"`` or
        ``"sparse24-w4"`` (:mod:`.presets` says what each means per layer).
    threshold_bits : int
        The target's threshold code width: power activations are no wider.
    sparsity : (int, int), optional
        N:M pattern every accelerator layer must have (the preset's by default).
    layers : dict, optional
        Per-layer weight overrides ``{name: {"bits": b, "method": m}}``.
    data_driven : bool
        Quantize weights on their calibration inputs (else data-free; activations are
        calibrated on ``calib`` either way).
    steps : int, optional
        Straight-through refinement steps of the data-driven weight search (its default if
        ``None``; 0 skips it).
    name : str
        The quantized graph's name.

    Returns
    -------
    QuantizedGraph
        Checked; ``sparsity`` lists the layers that keep the pattern.

    Raises
    ------
    UnsupportedLayerError
        For a graph a bundle cannot hold, or a layer that must be N:M and is not.
    TypeError, ValueError
        For a bad preset or override, or calibration data that is not real numbers, empty,
        NaN or of the wrong shape.
    """
    decided = plan(graph, quant, threshold_bits=threshold_bits, sparsity=sparsity,
                   layers=layers)
    x = as_batch(calib, "Calibration data", dtype=torch.float64,
                 shape=graph.input.shape).numpy()
    qgraph = QuantizedGraph(graph, name=name)
    values = {}
    for node in graph:
        if node.op == "output":
            continue
        args = [values[i] for i in node.inputs]
        if node.op in ("linear", "conv2d"):
            pattern = decided.sparsity.get(node.name)
            qgraph.weights[node.name] = _quantize_weight(node, args[0], *decided.weights[
                node.name], pattern, data_driven, steps)
            qgraph.bias[node.name] = node.attrs["bias"]
            if pattern is not None:
                qgraph.sparsity[node.name] = pattern
        elif node.op == "batchnorm":
            qgraph.weights[node.name] = affine_weight(node)
            qgraph.bias[node.name] = node.attrs["shift"]
            if node.name in decided.sparsity:
                qgraph.sparsity[node.name] = decided.sparsity[node.name]
        y = x if node.op == "input" else _forward(qgraph, node, args)
        source = decided.sources[node.name]
        if source == node.name:
            qgraph.act[node.name] = _quantizer(*decided.acts[source]).calibrate(y)
        else:
            qgraph.act[node.name] = qgraph.act[source]
        values[node.name] = _fake_quant(qgraph.act[node.name], y)
    return qgraph.check()


def fake_quant_all(qgraph, x):
    """Every node's fake-quantized output (float64, ``[B, *shape]``) for inputs ``x``, by
    node name (the ``output`` node's is its input's): see :func:`fake_quant`."""
    graph = qgraph.graph
    x = as_batch(x, "Inputs", dtype=torch.float64, shape=graph.input.shape).numpy()
    values = {}
    for node in graph:
        if node.op == "output":
            values[node.name] = values[node.inputs[0]]
            continue
        args = [values[i] for i in node.inputs]
        y = x if node.op == "input" else _forward(qgraph, node, args)
        values[node.name] = _fake_quant(qgraph.act[node.name], y)
    return values


def fake_quant(qgraph, x):
    """The quantized graph's output for inputs ``x``, computed in float64: every tensor
    fake-quantized by its quantizer, every layer with its dequantized weights, the output
    quantized like the bundle's. What the bundle computes up to the integer pipeline's
    rounding (requantization, add and pooling arithmetic, bias rounding): what PyTorch would
    report for the quantized model.

    Parameters
    ----------
    qgraph : QuantizedGraph
    x : numpy.ndarray, torch.Tensor or an iterable of batches
        ``[B, *graph.input.shape]``, any real dtype.

    Returns
    -------
    numpy.ndarray
        ``[B, *output shape]``, float64: the dequantized output codes.

    Raises
    ------
    TypeError, ValueError
        For inputs that are not real numbers, empty, NaN or of the wrong shape.
    """
    return fake_quant_all(qgraph, x)[qgraph.graph.output.name]
