"""The ONNX operators the QONNX importer translates, one handler each.

A handler takes the :class:`~.translate.Translation` (its helpers: ``data`` for a tensor
input, ``const``/``optional`` for a constant one, ``weight`` for a quantized weight,
``item_shape``, ``emit`` to add a graph node, ``alias``, ``refuse``), the ONNX node and its
attributes as a dict. :data:`HANDLERS` maps each supported ``op_type`` to its handler;
everything else is refused by the translation.
"""

__all__ = ["HANDLERS"]

import numpy as np

from .translation import Value, _dims


def _text(value, default):
    value = default if value is None else value
    return value.decode() if isinstance(value, bytes) else str(value)


def _window(tr, node, attrs, kernel, layer):
    """``(stride, padding)`` of a Conv or pool; refuse dilation, asymmetric padding and
    automatic padding other than VALID."""
    dilations = list(attrs.get("dilations", [1, 1]))
    if any(d != 1 for d in dilations):
        raise tr.refuse(node, f"has dilations {dilations}",
                        f"sparqforge supports {layer} with dilation 1: export the model "
                        f"without dilation")
    auto_pad = _text(attrs.get("auto_pad"), "NOTSET")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if auto_pad not in ("NOTSET", "VALID"):
        raise tr.refuse(node, f"has auto_pad {auto_pad}",
                        "sparqforge needs explicit pads: export with padding given as numbers")
    if auto_pad == "VALID":
        pads = [0, 0, 0, 0]
    if len(pads) != 4 or pads[:2] != pads[2:]:
        raise tr.refuse(node, f"has asymmetric pads {pads}",
                        f"sparqforge supports {layer} with the same padding on both sides")
    if len(kernel) != 2:
        raise tr.refuse(node, f"has a {len(kernel)}-d kernel", "sparqforge supports 2-d ones")
    return tuple(int(s) for s in attrs.get("strides", [1, 1])), (int(pads[0]), int(pads[1]))


def _conv(tr, node, attrs):
    x = tr.data(node, 0, rank=3)
    codes, scale, bits, narrow = tr.weight(node, 1, out_axis=0)
    stride, padding = _window(tr, node, attrs, codes.shape[2:], "Conv")
    channels, groups = x.shape[0], int(attrs.get("group", 1))
    if groups != 1 and not (groups == channels and codes.shape[:2] == (channels, 1)):
        raise tr.refuse(node, f"has group={groups} on {channels} channels",
                        "sparqforge supports groups=1 and depthwise convolutions (groups = "
                        "input channels = output channels)")
    bias = tr.optional(node, 2, "bias")
    out = codes.shape[0]
    weight = codes * scale.reshape(-1, 1, 1, 1)
    tr.codes[node.name] = (codes, bits, narrow)
    tr.emit(node, "conv2d", [x.node], tr.item_shape(node), weight=weight,
            bias=None if bias is None else np.broadcast_to(
                np.asarray(bias, np.float64).ravel(), (out,)).copy(),
            stride=stride, padding=padding, groups=groups)


def _bias_vector(tr, node, bias, out):
    bias = np.asarray(bias, dtype=np.float64)
    if bias.size == 1:
        return np.full(out, float(bias.ravel()[0]))
    if bias.size == out and max(bias.shape, default=1) == out:
        return bias.ravel().copy()
    raise tr.refuse(node, f"adds a bias of shape {list(bias.shape)} to {out} outputs",
                    "sparqforge supports one bias per output channel")


def _linear(tr, node, codes, scale, bits, narrow, bias):
    x = tr.data(node, 0, rank=1)
    if codes.shape[1] != x.shape[0]:
        raise tr.refuse(node, f"multiplies {x.shape[0]} features by a [{codes.shape[1]}, "
                              f"{codes.shape[0]}] weight", "export the model again")
    tr.codes[node.name] = (codes, bits, narrow)
    tr.emit(node, "linear", [x.node], (codes.shape[0],), weight=codes * scale[:, None],
            bias=None if bias is None else _bias_vector(tr, node, bias, codes.shape[0]))


def _gemm(tr, node, attrs):
    if int(attrs.get("transA", 0)):
        raise tr.refuse(node, "has transA=1", "export the layer as x @ W.T (transA=0)")
    trans_b = int(attrs.get("transB", 0))
    codes, scale, bits, narrow = tr.weight(node, 1, out_axis=0 if trans_b else 1)
    bias = tr.optional(node, 2, "bias")
    if bias is not None:
        bias = float(attrs.get("beta", 1.0)) * np.asarray(bias, dtype=np.float64)
    _linear(tr, node, codes, scale * float(attrs.get("alpha", 1.0)), bits, narrow, bias)


def _matmul(tr, node, attrs):
    codes, scale, bits, narrow = tr.weight(node, 1, out_axis=1)
    if codes.ndim != 2:
        raise tr.refuse(node, f"has a {codes.ndim}-d weight", "sparqforge supports 2-d ones")
    _linear(tr, node, codes, scale, bits, narrow, None)


def _add(tr, node, attrs):
    data = [name in tr.values for name in node.input]
    if all(data):
        a, b = tr.data(node, 0), tr.data(node, 1)
        if a.shape != b.shape:
            raise tr.refuse(node, f"adds tensors of shapes {_dims(a.shape)} and "
                                  f"{_dims(b.shape)}", "sparqforge adds tensors of one shape")
        tr.emit(node, "add", [a.node, b.node], a.shape)
        return
    index = data.index(True) if any(data) else 0
    v = tr.value(node, index)
    bias = tr.const(node, 1 - index, "addend")
    producer = tr.graph[v.node]
    readers = tr.model.find_consumers(node.input[index])
    if (producer.op not in ("linear", "conv2d") or v.node in tr.act or "clamp" in producer.attrs
            or len(readers) != 1 or v.shape != producer.shape):
        raise tr.refuse(node, "adds a constant to a tensor that is not the output of a Conv, "
                              "Gemm or MatMul alone",
                        "sparqforge adds constants only as the bias of the layer before")
    out = producer.shape[0]
    vector = _bias_vector(tr, node, np.squeeze(bias) if bias.ndim > 1 else bias, out)
    old = producer.attrs["bias"]
    producer.attrs["bias"] = vector if old is None else old + vector
    tr.tensors[v.node] = node.output[0]
    tr.alias(node, v)


def _relu(tr, node, attrs):
    x = tr.value(node, 0)
    value = tr.emit(node, "clamp", [x.node], tr.graph[x.node].shape, low=0.0, high=None)
    tr.alias(node, Value(value.node, x.shape))


def _clip(tr, node, attrs):
    x = tr.value(node, 0)
    low = tr.optional(node, 1, "minimum") if len(node.input) > 1 else attrs.get("min")
    high = tr.optional(node, 2, "maximum") if len(node.input) > 2 else attrs.get("max")
    low, high = (None if b is None else float(np.asarray(b).ravel()[0]) for b in (low, high))
    value = tr.emit(node, "clamp", [x.node], tr.graph[x.node].shape, low=low, high=high)
    tr.alias(node, Value(value.node, x.shape))


def _batchnorm(tr, node, attrs):
    if int(attrs.get("training_mode", 0)) or any(node.output[1:]):
        raise tr.refuse(node, "is in training mode", "export the model in eval mode")
    x = tr.data(node, 0)
    gamma, beta, mean, var = (np.asarray(tr.const(node, i, role), dtype=np.float64)
                              for i, role in ((1, "scale"), (2, "bias"), (3, "mean"),
                                              (4, "variance")))
    scale = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    tr.emit(node, "batchnorm", [x.node], x.shape, scale=scale, shift=beta - mean * scale)


def _pool(op):
    def handler(tr, node, attrs):
        x = tr.data(node, 0, rank=3)
        if len(node.output) > 1 and node.output[1]:
            raise tr.refuse(node, "also returns indices", "export MaxPool without indices")
        kernel = tuple(int(k) for k in attrs["kernel_shape"])
        stride, padding = _window(tr, node, attrs, kernel, node.op_type)
        if padding != (0, 0):
            raise tr.refuse(node, f"pads by {list(padding)}",
                            f"sparqforge supports {node.op_type} without padding")
        shape = tr.item_shape(node)
        floor = tuple((n - k) // s + 1 for n, k, s in zip(x.shape[1:], kernel, stride))
        if shape[1:] != floor:
            raise tr.refuse(node, "has windows that run past the input (ceil_mode)",
                            "export with ceil_mode=0 or an input that the windows tile")
        if op == "maxpool":
            tr.emit(node, op, [x.node], shape, kernel=kernel, stride=stride)
        else:
            tr.average(node, x, shape, kernel, stride)
    return handler


def _global_pool(tr, node, keepdims=True):
    x = tr.data(node, 0, rank=3)
    channels = x.shape[0]
    tr.average(node, x, (channels, 1, 1), x.shape[1:], (1, 1))
    if not keepdims:
        tr.emit(node, "flatten", [node.name], (channels,), name=f"{node.name}.flatten")


def _global_average_pool(tr, node, attrs):
    _global_pool(tr, node)


def _reduce_mean(tr, node, attrs):
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = tr.const(node, 1, "axes")
    rank = len(tr.value(node, 0).shape) + 1
    axes = sorted({int(a) % rank for a in np.asarray(axes).ravel()}) if axes is not None \
        else None
    if rank != 4 or axes != [2, 3]:
        raise tr.refuse(node, f"takes the mean over axes {axes} of a rank-{rank} tensor",
                        "sparqforge supports the mean over height and width of an image "
                        "(global average pooling)")
    _global_pool(tr, node, keepdims=bool(int(attrs.get("keepdims", 1))))


def _flatten_to(tr, node, v, shape):
    """The value ``v`` seen as per-item ``shape`` (a flatten node from an image)."""
    held = tr.graph[v.node].shape
    if shape == held or (len(shape) == 3 and shape == held + (1, 1)):
        tr.alias(node, Value(v.node, shape))
    elif len(shape) == 1 and len(held) == 3 and v.shape == held:
        tr.emit(node, "flatten", [v.node], shape)
    elif len(shape) == 1 and len(held) == 1:
        tr.alias(node, Value(v.node, held))
    else:
        raise tr.refuse(node, f"reshapes {_dims((tr.batch,) + v.shape)} to "
                              f"{_dims((tr.batch,) + shape)}",
                        "sparqforge supports flattening an image to [N, features] "
                        "(x.flatten(1))")


def _flatten(tr, node, attrs):
    v = tr.value(node, 0)
    axis = int(attrs.get("axis", 1)) % (len(v.shape) + 1)
    if axis != 1:
        raise tr.refuse(node, f"flattens from axis {axis}",
                        "sparqforge supports flattening from axis 1 (x.flatten(1))")
    _flatten_to(tr, node, v, (int(np.prod(v.shape)),))


def _reshape(tr, node, attrs):
    v = tr.value(node, 0)
    tr.const(node, 1, "shape")
    _flatten_to(tr, node, v, tr.item_shape(node))


def _identity(tr, node, attrs):
    name = node.input[0]
    if name in tr.values:
        tr.alias(node, tr.values[name])
    elif name in tr.consts:
        tr.consts[node.output[0]] = tr.consts[name]
    elif name in tr.quant_consts:
        tr.quant_consts[node.output[0]] = tr.quant_consts[name]
    else:
        raise tr.refuse(node, f"reads {name!r}, which nothing computes", "export it again")


def _constant(tr, node, attrs):
    from onnx import numpy_helper

    if "value" not in attrs:
        raise tr.refuse(node, "holds no tensor value", "export the model again")
    tr.consts[node.output[0]] = numpy_helper.to_array(attrs["value"])


def _quant(tr, node, attrs):
    tr.quant_node(node, attrs)


#: ONNX ``op_type`` -> handler.
HANDLERS = {
    "Quant": _quant, "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "Add": _add,
    "Relu": _relu, "Clip": _clip, "BatchNormalization": _batchnorm,
    "MaxPool": _pool("maxpool"), "AveragePool": _pool("avgpool"),
    "GlobalAveragePool": _global_average_pool, "ReduceMean": _reduce_mean,
    "Flatten": _flatten, "Reshape": _reshape, "Identity": _identity, "Dropout": _identity,
    "Constant": _constant,
}
