"""Graph passes that keep the function a graph computes (in float64, up to rounding) and
leave fewer, fused nodes for quantization and lowering.

:func:`simplify` runs them in order:

1. :func:`fold_batchnorm`: a ``batchnorm`` whose producer is a ``linear`` or ``conv2d`` read
   by nothing else disappears into that producer's weight and bias, as
   ``torch.nn.utils.fusion.fuse_conv_bn_eval`` / ``fuse_linear_bn_eval`` do: with
   ``a = gamma / sqrt(var + eps)`` (the node's ``scale``) per output channel, ``W' = W * a``
   and ``b' = (b - mean) * a + beta``, computed as ``b * a + shift`` with the node's
   ``shift = beta - mean * a``. A depthwise convolution has one output channel per input
   channel, so the same per-output-channel scaling folds it. Any other ``batchnorm`` stays
   (lowering makes it a per-channel affine layer).
2. :func:`fuse_clamps`: a ``clamp`` from 0 whose producer is a ``linear``, ``conv2d`` or
   ``add`` read by nothing else becomes the producer's ``clamp = (0, high)`` attribute (the
   requantizer clamps); one after another such ``clamp`` merges with it.
3. :func:`remove_identities`: nodes that compute nothing (a ``flatten`` of a vector, a 1x1
   pool with stride 1, a ``clamp`` its input already satisfies, a ``batchnorm`` with scale 1
   and shift 0, a clamp without bounds) and nodes the output does not depend on.

Each pass changes the graph in place and returns it.
"""

__all__ = ["fold_batchnorm", "fuse_clamps", "remove_identities", "simplify"]

import numpy as np

from .graph import MATMUL_OPS

#: Operators that can carry a fused ``clamp`` attribute.
CLAMPED_OPS = ("linear", "conv2d", "add")


def _only_reader(graph, node, name):
    readers = graph.consumers(name)
    return len(readers) == 1 and readers[0] is node


def fold_batchnorm(graph):
    """Fold every ``batchnorm`` into a ``linear`` or ``conv2d`` producer it alone reads."""
    for node in graph:
        if node.op != "batchnorm":
            continue
        producer = graph[node.inputs[0]]
        if (producer.op not in MATMUL_OPS or "clamp" in producer.attrs
                or not _only_reader(graph, node, producer.name)):
            continue
        scale, shift = node.attrs["scale"], node.attrs["shift"]
        weight = producer.attrs["weight"]
        bias = producer.attrs["bias"]
        bias = np.zeros(weight.shape[0]) if bias is None else bias
        producer.attrs["weight"] = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        producer.attrs["bias"] = bias * scale + shift
        graph.bypass(node.name)
    return graph


def _merge(bounds, low, high):
    """The clamp to ``bounds`` then to ``[low, high]`` (both from 0) as one clamp."""
    if bounds is None:
        return low, high
    highs = [h for h in (bounds[1], high) if h is not None]
    return low, (min(highs) if highs else None)


def fuse_clamps(graph):
    """Fuse every ``clamp`` from 0 into a ``linear``, ``conv2d``, ``add`` or ``clamp`` from 0
    that it alone reads."""
    for node in graph:
        if node.op != "clamp" or node.attrs["low"] != 0:
            continue
        producer = graph[node.inputs[0]]
        if not _only_reader(graph, node, producer.name):
            continue
        low, high = node.attrs["low"], node.attrs["high"]
        if producer.op in CLAMPED_OPS:
            producer.attrs["clamp"] = _merge(producer.attrs.get("clamp"), low, high)
        elif producer.op == "clamp" and producer.attrs["low"] == 0:
            producer.attrs["low"], producer.attrs["high"] = _merge(
                (producer.attrs["low"], producer.attrs["high"]), low, high)
        else:
            continue
        graph.bypass(node.name)
    return graph


def _bounds(node):
    """``(low, high)`` the node's output is known to lie in (``None``: unbounded)."""
    if node.op == "clamp":
        return node.attrs["low"], node.attrs["high"]
    if node.op in CLAMPED_OPS and node.attrs.get("clamp") is not None:
        return tuple(node.attrs["clamp"])
    return None, None


def _within(inner, outer):
    """Whether the interval ``inner`` lies inside ``outer`` (``None``: unbounded)."""
    (low, high), (outer_low, outer_high) = inner, outer
    return ((outer_low is None or (low is not None and low >= outer_low))
            and (outer_high is None or (high is not None and high <= outer_high)))


def _is_identity(graph, node):
    if node.op == "flatten":
        return node.shape == graph[node.inputs[0]].shape
    if node.op in ("maxpool", "avgpool"):
        return tuple(node.attrs["kernel"]) == (1, 1) and tuple(node.attrs["stride"]) == (1, 1)
    if node.op == "clamp":
        return _within(_bounds(graph[node.inputs[0]]), (node.attrs["low"], node.attrs["high"]))
    if node.op == "batchnorm":
        return bool(np.all(node.attrs["scale"] == 1) and np.all(node.attrs["shift"] == 0))
    return False


def remove_identities(graph):
    """Remove nodes that compute nothing, then nodes the output does not depend on."""
    for node in graph:
        if node.op not in ("input", "output") and _is_identity(graph, node):
            graph.bypass(node.name)
    needed = {graph.output.name}
    for node in reversed(list(graph)):
        if node.name in needed:
            needed.update(node.inputs)
    for node in reversed(list(graph)):
        if node.name not in needed and node.op != "input":
            graph.remove(node.name)
    return graph


def simplify(graph):
    """:func:`fold_batchnorm`, :func:`fuse_clamps`, :func:`remove_identities`; checked."""
    fold_batchnorm(graph)
    fuse_clamps(graph)
    remove_identities(graph)
    return graph.check()
