"""From a translated QONNX graph to a :class:`~..frontend.quantized.QuantizedGraph`:
BatchNorm folding and activation fusion (:func:`~..frontend.passes.simplify`, with the
quantizers following the nodes they merge), the weights as
:class:`~..quantize.QuantizedWeight`, and a quantizer for every tensor no ``Quant`` fixed
(``docs/qonnx.md``).
"""

__all__ = ["finish", "output_bound"]

import numpy as np

from ...errors import UnsupportedLayerError
from ..frontend.graph import MATMUL_OPS, GraphError
from ..frontend.passes import simplify
from ..frontend.quantized import QuantizedGraph
from ..quantize import ActivationQuantizer
from .quant import quantized_weight
from .translation import PRESERVING


def _follow_merges(tr):
    """Move each bypassed node's quantizer onto the node that now computes its output. The
    bypassed node's quantizer wins when the producer had no other reader (a folded
    BatchNorm or fused Relu: the producer now computes exactly the bypassed output);
    otherwise the two must agree."""
    for removed, producer, only in tr.graph.merges:
        if removed in tr.tensors:
            tr.tensors[producer] = tr.tensors[removed]
        if removed not in tr.act:
            continue
        quantizer, key = tr.act.pop(removed), tr.keys.pop(removed)
        if producer in tr.act and tr.keys[producer] != key and not only:
            raise GraphError(f"Node {removed!r} was bypassed onto {producer!r}, which is "
                             f"quantized differently")
        tr.act[producer], tr.keys[producer] = quantizer, key
    for name in list(tr.act):
        if name not in tr.graph:
            del tr.act[name], tr.keys[name]


def _weights(tr):
    """QuantizedWeight and float bias of every matmul node: the integer codes of its
    ``Quant`` with one scale per output channel, read back from the (possibly BatchNorm-
    folded) float weight, ``W' = codes * scale * a`` exactly up to float64 rounding."""
    weights, bias = {}, {}
    for node in tr.graph:
        if node.op not in MATMUL_OPS:
            continue
        codes, bits, _ = tr.codes[node.name]
        folded = node.attrs["weight"].reshape(codes.shape[0], -1)
        flat = codes.reshape(codes.shape[0], -1).astype(np.float64)
        power = (flat * flat).sum(axis=1)
        scale = np.where(power > 0, (folded * flat).sum(axis=1) / np.maximum(power, 1), 1.0)
        error = np.abs(folded - scale[:, None] * flat).max(initial=0.0)
        if error > 1e-9 * max(np.abs(folded).max(initial=0.0), 1e-300):
            raise GraphError(f"Node {node.name!r}: the folded weight is not its codes times "
                             f"one scale per channel (error {error:.3g})")
        lowest = -(1 << (bits - 1))
        if np.any((scale < 0)[:, None] & (flat == lowest)):
            raise UnsupportedLayerError(
                f"Node {node.name!r} ({tr.op_types[node.name]}) has a weight code {lowest} in "
                f"a channel that a BatchNormalization with negative scale negates, and "
                f"{-lowest} is not a {bits}-bit code; export the weights with narrow range "
                f"(narrow=1, Brevitas' default)")
        weights[node.name] = quantized_weight(codes, scale, bits)
        bias[node.name] = node.attrs["bias"]
    return weights, bias


def output_bound(graph, act, weights, bias, name):
    """A quantizer for the output of matmul node ``name`` that never saturates: the
    extremes of ``W x + b`` over every input in the input quantizer's range, per channel
    (interval arithmetic); unsigned after a fused ReLU, else signed symmetric."""
    node = graph[name]
    source = act[node.inputs[0]]
    low = source.scale * (source.qmin - source.zero_point)
    high = source.scale * (source.qmax - source.zero_point)
    qweight = weights[name]
    w = qweight.codes.numpy().reshape(len(qweight.scale), -1) * qweight.scale.numpy()[:, None]
    b = bias[name] if bias[name] is not None else np.zeros(len(w))
    top = b + np.maximum(w * low, w * high).sum(axis=1)
    bottom = b + np.minimum(w * low, w * high).sum(axis=1)
    clamp = node.attrs.get("clamp")
    quantizer = ActivationQuantizer(bits=8, method="uniform", signed=clamp is None,
                                    symmetric=True, clipping="max")
    if clamp is not None:
        reach = max(float(top.max()), 0.0)
        if clamp[1] is not None:
            reach = min(reach, float(clamp[1]))
        return quantizer.calibrate(np.array([0.0, reach]))
    reach = max(float(np.abs(top).max()), float(np.abs(bottom).max()))
    return quantizer.calibrate(np.array([-reach, reach]))


def _unquantized(tr, node):
    readers = ", ".join(repr(r.name) for r in tr.graph.consumers(node.name)) or "nothing"
    return UnsupportedLayerError(
        f"Node {node.name!r} ({tr.op_types.get(node.name, node.op)}) gives a tensor that no "
        f"Quant quantizes (read by {readers}); sparqforge keeps 8-bit codes between layers: "
        f"quantize it (a QuantReLU or QuantIdentity after it, or the layer's output_quant)")


def _calibrated(values, like):
    """An 8-bit quantizer for ``values`` (their largest magnitude), signed like ``like``
    (``None``: signed exactly when the values are)."""
    signed = None if like is None else like.signed
    quantizer = ActivationQuantizer(bits=8, method="uniform", signed=signed, symmetric=True,
                                    clipping="max")
    return quantizer.calibrate(np.asarray(values, dtype=np.float64))


def _feeds_output(graph, node):
    """Whether ``node`` is read only by the output, directly or through clamps, max pools
    and flattens (which keep its codes)."""
    readers = graph.consumers(node.name)
    return len(readers) == 1 and (readers[0].op == "output" or (
        readers[0].op in PRESERVING and _feeds_output(graph, readers[0])))


def _give(tr, name, quantizer):
    tr.act[name], tr.keys[name] = quantizer, ("own", name)


def finish(tr, *, name, observe=None):
    """Simplify ``tr.graph`` and return ``(QuantizedGraph, notes)``.

    Every tensor no ``Quant`` fixes gets a quantizer here: a clamp, max pool or flatten its
    input's; an average pool (global or not) its input's, or with ``observe`` one
    calibrated on its values; the last layer's output (read by nothing but the output,
    directly or through clamps, max pools and flattens) one calibrated on its values (with
    ``observe``) or :func:`output_bound`; anything else is refused. ``observe(tensors)``
    returns QONNX's values of the named ONNX tensors on the calibration inputs. ``notes``
    maps ``output`` to where the output's quantization came from (``"quant"``,
    ``"calibration"`` or ``"bound"``), ``calibrated`` to the other nodes calibrated and
    ``requantizations`` to the requantization nodes added.
    """
    graph = simplify(tr.graph)
    _follow_merges(tr)
    weights, bias = _weights(tr)
    notes = {"output": "quant", "calibrated": [],
             "requantizations": [r for r in tr.requants if r in graph]}
    pending = [node for node in graph if node.name not in tr.act and node.op != "output"]
    observed = {}
    if observe is not None:
        wanted = [tr.tensors[node.name] for node in pending
                  if node.op not in PRESERVING and node.name in tr.tensors]
        observed = observe(wanted) if wanted else {}
    for node in pending:
        if node.name in tr.act:
            continue
        if node.op == "input":
            raise UnsupportedLayerError(
                "The network input is not quantized (no Quant reads it); sparqforge takes "
                "8-bit input codes: add an 8-bit input quantizer (QuantIdentity) at the "
                "start of the model")
        seen = observed.get(tr.tensors.get(node.name))
        source = tr.act.get(node.inputs[0])
        if node.op in PRESERVING and source is not None:
            tr.set_act(node.name, node.inputs[0])
        elif node.name in tr.averages and source is not None:
            if seen is None:
                tr.set_act(node.name, node.inputs[0])
            else:
                _give(tr, node.name, _calibrated(seen, source))
                notes["calibrated"].append(node.name)
        elif not _feeds_output(graph, node):
            raise _unquantized(tr, node)
        elif seen is not None:
            _give(tr, node.name, _calibrated(seen, None))
            notes["output"] = "calibration"
        elif node.op in MATMUL_OPS:
            _give(tr, node.name, output_bound(graph, tr.act, weights, bias, node.name))
            notes["output"] = "bound"
        else:
            raise UnsupportedLayerError(
                f"The output of node {node.name!r} ({tr.op_types.get(node.name, node.op)}) is "
                f"not quantized; add a Quant (QuantIdentity) at the model's output or give "
                f"calibration inputs")
    for node in graph:
        if node.op in PRESERVING and tr.keys.get(node.name) != tr.keys.get(node.inputs[0]):
            raise GraphError(f"Node {node.name!r} ({node.op}) is quantized unlike its input")
    qgraph = QuantizedGraph(graph, act=tr.act, weights=weights, bias=bias, name=name)
    return qgraph.check(), notes
