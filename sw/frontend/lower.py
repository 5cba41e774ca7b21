"""Lower a :class:`~.quantized.QuantizedGraph` to a version-2 graph bundle
(``docs/bundle.md``): one layer per graph node, named like the node, reading the nodes it
reads (``"input"`` for the network input), in the graph's topological order.

==================  =========================================================================
node                layer
==================  =========================================================================
``linear``          ``matmul`` (:func:`sparqforge.sw.export.matmul_layer`: weight codes,
``conv2d``          columns ``(kh, kw, in)``, tables, the bias rounded half away from zero,
                    requantization or thresholds); a fused clamp from 0 is the ``relu`` flag
                    (its upper bound is in the output quantizer's range); depthwise
                    convolutions have ``conv.groups``
``batchnorm``       ``matmul``: a depthwise 1x1 convolution for an image, a diagonal linear
                    layer for a vector (:func:`~.quantize_graph.as_matmul`)
``add``             ``add`` (:func:`~sparqforge.sw.golden.add_params`; ``relu`` from a fused
                    clamp)
``global_avgpool``  ``global_avgpool`` (:func:`~sparqforge.sw.golden.global_avgpool_params`)
``clamp``           ``clamp`` (:func:`~sparqforge.sw.golden.clamp_params` at its input's
                    scale)
``maxpool``,        as they are (they keep their input's codes, so their quantizer must be
``avgpool``,        their input's; average pooling only on uniform codes)
``flatten``
``input``           the bundle's input quantization (8-bit uniform)
``output``          nothing: the bundle's output quantization is its input's quantizer
==================  =========================================================================

The result is checked with :func:`sparqforge.sw.bundle_check.validate`.
"""

__all__ = ["lower"]

import torch

from ...errors import UnsupportedLayerError
from .. import golden
from ..bundle import Bundle
from ..bundle_check import validate
from ..export import matmul_layer, uniform_params
from .presets import SHARED_OPS, check_outputs, sources
from .quantize_graph import affine_weight, as_matmul


def _same(a, b):
    """Whether two activation quantizers give the same codes the same values."""
    key = ("method", "bits", "signed", "scale", "zero_point", "exponent", "mac_bits")
    return a is b or all(getattr(a, k) == getattr(b, k) for k in key)


def _relu(node, q_out):
    """The ``relu`` flag of a node's fused clamp; its upper bound must be the output
    quantizer's top code (the requantizer clamps there)."""
    clamp = node.attrs.get("clamp")
    if clamp is None:
        return False
    low, high = clamp
    if low != 0:
        raise UnsupportedLayerError(f"Node {node.describe()} has a fused clamp from {low}; "
                                    f"sparqforge fuses clamps from 0 (ReLU, ReLU6)")
    if high is not None and int(q_out.quantize(torch.tensor([float(high)]))[0]) != q_out.qmax:
        raise UnsupportedLayerError(
            f"Node {node.describe()} clamps at {high}, but its output quantizer reaches "
            f"{float(q_out.dequantize(q_out.qmax)):.6g}: calibrate the output's range inside "
            f"[0, {high}] so that the top code is the clamp")
    return True


def _reads(graph, node, index):
    return f"The activations {node.inputs[index]!r} that {node.describe()} reads"


def _matmul(qgraph, node, threshold_bits):
    graph = qgraph.graph
    layer = as_matmul(node)
    qweight = qgraph.weights.get(node.name)
    qweight = affine_weight(node) if qweight is None else qweight
    bias = qgraph.bias.get(node.name, layer.attrs["bias"])
    conv = None
    if layer.op == "conv2d":
        c, h, w = graph[node.inputs[0]].shape
        conv = {"in_channels": c, "in_height": h, "in_width": w,
                "kernel": [int(k) for k in layer.attrs["weight"].shape[2:]],
                "stride": [int(s) for s in layer.attrs["stride"]],
                "padding": [int(p) for p in layer.attrs["padding"]],
                "out_height": node.shape[1], "out_width": node.shape[2],
                "groups": int(layer.attrs["groups"])}
    q_out = qgraph.act[node.name]
    return matmul_layer(node.name, qweight, bias, qgraph.act[node.inputs[0]], q_out, conv=conv,
                        relu=_relu(node, q_out), sparsity=qgraph.sparsity.get(node.name),
                        threshold_bits=threshold_bits)


def _layer(qgraph, node, threshold_bits):
    """The bundle layer of one node (without ``name``, ``inputs`` and ``source``)."""
    graph = qgraph.graph
    q_in = [qgraph.act[name] for name in node.inputs]
    q_out = qgraph.act[node.name]
    if node.op in ("linear", "conv2d", "batchnorm"):
        return _matmul(qgraph, node, threshold_bits)
    if node.op in SHARED_OPS and not _same(q_in[0], q_out):
        raise UnsupportedLayerError(
            f"Node {node.describe()} keeps its input's codes, but its quantizer differs from "
            f"its input's ({q_in[0]!r} to {q_out!r}): give it its input's quantizer")
    if node.op in ("add", "global_avgpool", "clamp", "avgpool"):
        ins = [uniform_params(q, _reads(graph, node, i)) for i, q in enumerate(q_in)]
    if node.op == "add":
        s_out, z_out = uniform_params(q_out, f"The output of {node.describe()}")
        return {"type": "add", **golden.add_params(*ins[0], *ins[1], s_out, z_out,
                                                   relu=_relu(node, q_out))}
    if node.op == "global_avgpool":
        s_out, z_out = uniform_params(q_out, f"The output of {node.describe()}")
        _, h, w = graph[node.inputs[0]].shape
        return {"type": "global_avgpool",
                **golden.global_avgpool_params(*ins[0], s_out, z_out, height=h, width=w)}
    if node.op == "clamp":
        return {"type": "clamp", **golden.clamp_params(*ins[0], node.attrs["low"],
                                                       node.attrs["high"])}
    if node.op in ("maxpool", "avgpool"):
        return {"type": node.op, "kernel": [int(k) for k in node.attrs["kernel"]],
                "stride": [int(s) for s in node.attrs["stride"]]}
    if node.op == "flatten":
        return {"type": "flatten"}
    raise UnsupportedLayerError(f"Node {node.describe()} has no bundle layer")


def _info(qgraph):
    found = sources(qgraph.graph)
    return {"frontend": "graph",
            "weights": {name: [w.method, int(w.bits)] for name, w in qgraph.weights.items()},
            "activations": {name: [q.method, int(q.bits)] for name, q in qgraph.act.items()
                            if found.get(name) == name},
            "sparsity": {name: [int(n), int(m)] for name, (n, m) in qgraph.sparsity.items()}}


def lower(qgraph, *, name=None, threshold_bits=4):
    """A validated version-2 :class:`~sparqforge.sw.bundle.Bundle` of ``qgraph``.

    Parameters
    ----------
    qgraph : QuantizedGraph
        From :func:`~.quantize_graph.quantize_graph` (or an importer).
    name : str, optional
        The bundle's name (``qgraph.name`` by default).
    threshold_bits : int
        The target's threshold code width; power activations must not be wider.

    Returns
    -------
    Bundle

    Raises
    ------
    UnsupportedLayerError
        For a quantization the integer pipeline cannot express: power codes where uniform
        ones are needed (the network input and output, adds, average pools, clamps), a node
        that keeps its input's codes with another quantizer, a fused clamp whose bound is not
        the output quantizer's top, an output that is not a vector, no matmul layer; and
        everything :func:`~sparqforge.sw.export.matmul_layer` refuses.
    BundleError
        If the result does not validate (a bug).
    """
    qgraph.check()
    graph = qgraph.graph
    check_outputs(graph)
    rename = {graph.input.name: golden.NETWORK_INPUT}
    layers = []
    for node in graph:
        if node.op in ("input", "output"):
            continue
        if node.name == golden.NETWORK_INPUT:
            raise UnsupportedLayerError(f"Node {node.describe()} is named like the network "
                                        f"input; rename it")
        layer = _layer(qgraph, node, threshold_bits)
        where = f" at {node.source}" if node.source else ""
        layers.append({"type": layer.pop("type"), "name": node.name,
                       "inputs": [rename.get(i, i) for i in node.inputs],
                       "source": f"{node.op}{where}", **layer})
    in_scale, in_zero = uniform_params(qgraph.act[graph.input.name], "The network input")
    producer = graph[graph.output.inputs[0]]
    out_scale, out_zero = uniform_params(qgraph.act[producer.name], "The network output")
    bundle = Bundle(name=name or qgraph.name,
                    input={"shape": [int(d) for d in graph.input.shape], "scale": in_scale,
                           "zero_point": in_zero},
                    output={"scale": out_scale, "zero_point": out_zero,
                            "classes": int(producer.shape[0])},
                    layers=layers, info=_info(qgraph))
    validate(bundle, f"lowering of {bundle.name}")
    return bundle
