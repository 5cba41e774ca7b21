"""The ATen operators :func:`~.capture.capture` translates, one handler each.

A handler takes the capture (its helpers: ``value``/``data`` for a tensor argument, ``const``
for a parameter, ``item_shape``, ``emit`` to add a graph node, ``refuse`` for an error naming
the operation) and the ``torch.fx`` node, and returns the node's :data:`Value` (an alias of
its input for operators the graph does not need). :data:`HANDLERS` maps each supported ATen
overload packet to its handler; everything else is refused by the capture.
"""

__all__ = ["HANDLERS", "SUPPORTED", "Value", "Const", "Items", "short_name"]

import operator
from collections import namedtuple

import numpy as np
import torch

#: What sparqforge captures, as refusals name it (one line).
SUPPORTED = ("Linear, Conv2d (dilation 1, groups 1 or depthwise), BatchNorm1d/2d, ReLU, ReLU6, "
             "Hardtanh(0, h), clamp(min=0), residual add, MaxPool2d, AvgPool2d, "
             "AdaptiveAvgPool2d(1), mean(dim=(2, 3)), flatten/view to [B, features], "
             "Dropout, Identity")

#: A tensor computed from the input: the graph node holding it and its per-item shape as
#: PyTorch sees it (which differs from the node's shape only after a global average pool
#: with ``keepdim``: ``(C, 1, 1)`` for a node of shape ``(C,)``).
Value = namedtuple("Value", "node shape")
#: A parameter, buffer or constant tensor of the model (``name``: its state-dict key).
Const = namedtuple("Const", "name tensor")
#: An operator's tuple result (BatchNorm's); ``None`` for elements nothing may read.
Items = namedtuple("Items", "items")

aten = torch.ops.aten

#: Short names for node names where the ATen name is obscure.
_SHORT = {"_native_batch_norm_legit_no_training": "batchnorm", "batch_norm": "batchnorm",
          "adaptive_avg_pool2d": "avgpool", "native_dropout": "dropout"}


def short_name(fx):
    """``relu``, ``add``, ``conv2d``...: the operator part of a node's name."""
    packet = getattr(fx.target, "overloadpacket", fx.target)
    name = getattr(packet, "__name__", str(packet))
    return _SHORT.get(name, name.lstrip("_"))


def _arguments(fx):
    """``fx``'s arguments by schema name, defaults filled in."""
    out = {}
    for index, argument in enumerate(fx.target._schema.arguments):
        if index < len(fx.args) and not argument.kwarg_only:
            out[argument.name] = fx.args[index]
        elif argument.name in fx.kwargs:
            out[argument.name] = fx.kwargs[argument.name]
        elif argument.has_default_value():
            out[argument.name] = argument.default_value
    return out


def _pair(value):
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in (value * 2 if len(value) == 1 else value))
    return int(value), int(value)


def _image(cap, fx, arg, layer):
    x = cap.data(fx, arg)
    if len(x.shape) != 3:
        raise cap.refuse(fx, f"reads a [B, {x.shape[0]}] tensor; sparqforge supports {layer} "
                             f"only on images [B, C, H, W]")
    return x


# Layers with weights.

def _conv2d(cap, fx):
    args = _arguments(fx)
    x = _image(cap, fx, args["input"], "Conv2d")
    weight = cap.const(fx, args["weight"], "weight")
    bias = None if args["bias"] is None else cap.const(fx, args["bias"], "bias")
    stride, dilation, groups = _pair(args["stride"]), _pair(args["dilation"]), int(args["groups"])
    channels, (out, _, kh, kw) = x.shape[0], weight.shape
    if dilation != (1, 1):
        raise cap.refuse(fx, f"has dilation={dilation}; sparqforge supports only undilated "
                             f"convolutions: use dilation=1")
    if groups != 1 and groups != channels:
        raise cap.refuse(fx, f"has groups={groups} for {channels} input channels; sparqforge "
                             f"supports groups=1 and depthwise convolutions (groups = "
                             f"in_channels = out_channels)")
    if groups != 1 and out != channels:
        raise cap.refuse(fx, f"is depthwise with {out} output channels for {channels} inputs "
                             f"(channel multiplier {out // channels}); sparqforge supports a "
                             f"channel multiplier of 1: use out_channels=in_channels and a 1x1 "
                             f"convolution after it")
    padding = args["padding"]
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        totals = [d * (k - 1) for d, k in zip(dilation, (kh, kw))]
        if any(total % 2 for total in totals):
            raise cap.refuse(fx, f"has padding='same' with kernel {(kh, kw)}, which needs "
                                 f"asymmetric padding; sparqforge pads symmetrically: use an "
                                 f"odd kernel size or integer padding")
        padding = tuple(total // 2 for total in totals)
    else:
        padding = _pair(padding)
    return cap.emit(fx, "conv2d", [x.node], cap.item_shape(fx), weight=weight, bias=bias,
                    stride=stride, padding=padding, groups=groups)


def _linear(cap, fx):
    args = _arguments(fx)
    x = cap.data(fx, args["input"])
    if len(x.shape) != 1:
        raise cap.refuse(fx, f"applies to the last axis of a {_dims(x.shape)} tensor; "
                             f"sparqforge supports Linear on [B, features]: flatten first "
                             f"(x.flatten(1))")
    weight = cap.const(fx, args["weight"], "weight")
    bias = None if args["bias"] is None else cap.const(fx, args["bias"], "bias")
    return cap.emit(fx, "linear", [x.node], cap.item_shape(fx), weight=weight, bias=bias)


def _batchnorm(cap, fx):
    args = _arguments(fx)
    if args.get("training") or args.get("running_mean") is None:
        return _batch_statistics(cap, fx)
    x = cap.data(fx, args["input"])
    mean = cap.const(fx, args["running_mean"], "running mean")
    var = cap.const(fx, args["running_var"], "running variance")
    gamma = (np.ones_like(mean) if args["weight"] is None
             else cap.const(fx, args["weight"], "weight"))
    beta = np.zeros_like(mean) if args["bias"] is None else cap.const(fx, args["bias"], "bias")
    scale = gamma / np.sqrt(var + float(args["eps"]))
    value = cap.emit(fx, "batchnorm", [x.node], x.shape, scale=scale, shift=beta - mean * scale)
    # aten.batch_norm returns the tensor; _native_batch_norm_legit_no_training a tuple of it
    # and the saved statistics (empty in eval mode), which nothing may read.
    return value if fx.target is aten.batch_norm.default else Items((value, None, None))


def _batch_statistics(cap, fx):
    raise cap.refuse(fx, "normalises with the batch's statistics (BatchNorm in training mode "
                         "or with track_running_stats=False); sparqforge supports BatchNorm "
                         "with running statistics in eval mode: use track_running_stats=True "
                         "and call model.eval()")


def _getitem(cap, fx):
    source, index = fx.args
    found = cap.values.get(source)
    if isinstance(found, Items) and isinstance(index, int) and found.items[index] is not None:
        return found.items[index]
    raise cap.refuse(fx, f"takes element {index!r} of {getattr(source, 'name', source)!r}; "
                         f"sparqforge supports {SUPPORTED}")


# Activations.

def _clamp(cap, fx, low, high):
    x = cap.data(fx, fx.args[0])
    if low is None or float(low) != 0 or (high is not None and not float(high) > 0):
        raise cap.refuse(fx, f"clamps to [{low}, {high}]; sparqforge supports clamps from 0 to "
                             f"a positive bound or none: ReLU, ReLU6, Hardtanh(0, h), "
                             f"clamp(min=0[, max=h])")
    return cap.emit(fx, "clamp", [x.node], x.shape, low=0.0,
                    high=None if high is None else float(high))


def _relu(cap, fx):
    return _clamp(cap, fx, 0, None)


def _relu6(cap, fx):
    return _clamp(cap, fx, 0, 6)


def _hardtanh(cap, fx):
    args = _arguments(fx)
    return _clamp(cap, fx, args["min_val"], args["max_val"])


def _clamp_op(cap, fx):
    if fx.target not in (aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default):
        raise cap.refuse(fx, "clamps to tensor bounds; sparqforge supports clamps to numbers: "
                             "clamp(min=0[, max=h])")
    args = _arguments(fx)
    return _clamp(cap, fx, args.get("min"), args.get("max"))


# Adds, pools and reshapes.

def _add(cap, fx):
    args = _arguments(fx)
    if fx.target is not aten.add.Tensor or not isinstance(args["other"], torch.fx.Node):
        raise cap.refuse(fx, f"adds the constant {args['other']!r}; sparqforge supports adds "
                             f"of two tensors computed from the input (residual adds)")
    if args.get("alpha", 1) != 1:
        raise cap.refuse(fx, f"has alpha={args['alpha']}; sparqforge supports residual adds "
                             f"x + y: use alpha=1")
    x, y = cap.data(fx, args["self"]), cap.data(fx, args["other"])
    if x.shape != y.shape:
        raise cap.refuse(fx, f"adds {_dims(x.shape)} and {_dims(y.shape)}; sparqforge supports "
                             f"adds of two tensors of one shape (no broadcasting)")
    return cap.emit(fx, "add", [x.node, y.node], x.shape)


def _pool(cap, fx, op):
    args = _arguments(fx)
    x = _image(cap, fx, args["self"], "pooling")
    kernel = _pair(args["kernel_size"])
    stride = _pair(args["stride"]) if args["stride"] else kernel
    problems = [f"padding={_pair(args['padding'])}: use padding=0"
                if _pair(args["padding"]) != (0, 0) else "",
                "ceil_mode=True: use ceil_mode=False" if args["ceil_mode"] else "",
                f"dilation={_pair(args.get('dilation', 1))}: use dilation=1"
                if _pair(args.get("dilation", 1)) != (1, 1) else "",
                f"divisor_override={args['divisor_override']}: leave it None"
                if args.get("divisor_override") is not None else ""]
    problems = [p for p in problems if p]
    if problems:
        raise cap.refuse(fx, f"has {problems[0]}; sparqforge supports pooling over whole "
                             f"windows without padding, ceil_mode, dilation or divisor_override")
    return cap.emit(fx, op, [x.node], cap.item_shape(fx), kernel=kernel, stride=stride)


def _max_pool2d(cap, fx):
    return _pool(cap, fx, "maxpool")


def _avg_pool2d(cap, fx):
    return _pool(cap, fx, "avgpool")


def _adaptive_avg_pool2d(cap, fx):
    args = _arguments(fx)
    x = _image(cap, fx, args["self"], "pooling")
    if _pair(args["output_size"]) != (1, 1):
        raise cap.refuse(fx, f"pools to {list(_pair(args['output_size']))}; sparqforge "
                             f"supports adaptive average pooling to 1 (global average pooling)")
    value = cap.emit(fx, "global_avgpool", [x.node], x.shape[:1])
    return Value(value.node, cap.item_shape(fx))


def _mean(cap, fx):
    args = _arguments(fx)
    x = cap.data(fx, args["self"])
    dims = args.get("dim")
    dims = None if dims is None else sorted(int(d) % 4 for d in dims)
    if len(x.shape) != 3 or dims != [2, 3] or args.get("dtype") is not None:
        raise cap.refuse(fx, f"averages over dimensions {args.get('dim')} of a "
                             f"{_dims(x.shape)} tensor; sparqforge supports means over height "
                             f"and width: mean(dim=(2, 3)) or mean(dim=(-2, -1)) of an image")
    value = cap.emit(fx, "global_avgpool", [x.node], x.shape[:1])
    return Value(value.node, cap.item_shape(fx))


def _reshape(cap, fx):
    # A reshape keeps the row-major order of an item's values, so a chain of them ending in
    # [B, features] is the channel-major flatten of the tensor the chain started from, and
    # one ending in that tensor's own shape is no operation: intermediate shapes are kept in
    # the Value only (``data`` refuses an operation on them).
    x = cap.value(fx, fx.args[0])
    shape = cap.item_shape(fx, reshape=True)
    node = cap.graph[x.node]
    if len(shape) == 1 and len(node.shape) == 3:
        return cap.emit(fx, "flatten", [x.node], shape, short="flatten")
    return Value(x.node, shape)


# Operators the graph does not need.

def _alias(cap, fx):
    return cap.value(fx, fx.args[0])


def _convert(cap, fx):
    source, result = fx.args[0].meta.get("val"), fx.meta.get("val")
    if getattr(source, "dtype", None) != getattr(result, "dtype", None):
        raise cap.refuse(fx, f"converts {getattr(source, 'dtype', '?')} to "
                             f"{getattr(result, 'dtype', '?')}; sparqforge supports models "
                             f"computing in one floating-point type")
    return _alias(cap, fx)


def _dropout(cap, fx):
    args = _arguments(fx)
    if args["train"]:
        raise cap.refuse(fx, "is dropout in training mode; sparqforge captures inference: "
                             "F.dropout(x, p) defaults to training=True, so pass "
                             "training=self.training or use nn.Dropout, and call model.eval()")
    return _alias(cap, fx)


def _pad(cap, fx):
    raise cap.refuse(fx, f"pads explicitly (F.pad, or a Conv2d padding_mode other than "
                         f"'zeros'); sparqforge supports {SUPPORTED}, with zero padding given "
                         f"as the Conv2d's padding")


def _dims(shape):
    return "[B, " + ", ".join(str(d) for d in shape) + "]"


HANDLERS = {
    aten.conv2d: _conv2d,
    aten.linear: _linear,
    aten._native_batch_norm_legit_no_training: _batchnorm,
    aten.batch_norm: _batchnorm,
    aten._native_batch_norm_legit: _batch_statistics,
    aten.native_batch_norm: _batch_statistics,
    operator.getitem: _getitem,
    aten.relu: _relu,
    aten.relu6: _relu6,
    aten.hardtanh: _hardtanh,
    aten.clamp: _clamp_op,
    aten.clamp_min: _clamp_op,
    aten.clamp_max: _clamp_op,
    aten.add: _add,
    aten.max_pool2d: _max_pool2d,
    aten.avg_pool2d: _avg_pool2d,
    aten.adaptive_avg_pool2d: _adaptive_avg_pool2d,
    aten.mean: _mean,
    aten.view: _reshape,
    aten.reshape: _reshape,
    aten._unsafe_view: _reshape,
    aten.flatten: _reshape,
    aten.squeeze: _reshape,
    aten.unsqueeze: _reshape,
    aten.clone: _alias,
    aten.alias: _alias,
    aten.detach: _alias,
    aten.contiguous: _alias,
    aten.lift_fresh_copy: _alias,
    aten._to_copy: _convert,
    aten.to: _convert,
    aten.dropout: _dropout,
    aten.native_dropout: _dropout,
    aten.feature_dropout: _dropout,
    aten.alpha_dropout: _dropout,
    aten.pad: _pad,
    aten.constant_pad_nd: _pad,
    aten.reflection_pad2d: _pad,
    aten.replication_pad2d: _pad,
    aten._pad_circular: _pad,
}
