"""Validation of a bundle's content, field by field and as a graph: every value the runtime and
the golden model read is checked for its type (booleans are not numbers), its range and its
agreement with the arrays, and every problem is a :class:`~sparqforge.errors.BundleError`
naming the layer and the field (``layer 2 'conv2' (matmul) conv.kernel``) and what it must be.

Declared widths are verified from the data: a layer's ``weight_bits`` must hold its weight
codes, its ``sparsity`` must be its weights' N:M pattern, a convolution's output size must be
what its input, kernel, stride and padding give. The layer graph (``docs/bundle.md``) must be
well formed: unique names, every input defined before the layer that reads it (so no cycle),
the right number of inputs of the right shapes per type, no layer left unread but the last,
whose output is the declared classes.
"""

__all__ = ["validate", "LAYER_KEYS", "INPUT_COUNT"]

import math

import numpy as np

from ..errors import BundleError
from .golden.network import NETWORK_INPUT
from .golden.graph_ops import ADD_LEFT_SHIFT
from .nm_format import find_violation

INT32 = (-(1 << 31), (1 << 31) - 1)
CODE = (0, 255)
SHIFT = (-31, 30)
_GRAPH = {"type", "name", "inputs"}

#: Keys each layer type may have (``required``, ``optional``).
LAYER_KEYS = {
    "matmul": (_GRAPH | {"in_features", "out_features", "weight_bits", "weight", "output"},
               {"source", "weight_method", "input_method", "act_table", "weight_table",
                "pad_code", "conv", "sparsity", "bias", "multiplier", "shift", "zero_point",
                "relu", "thresholds"}),
    "add": (_GRAPH | {"multiplier", "shift", "zero_point", "relu", "left_shift"}, {"source"}),
    "global_avgpool": (_GRAPH | {"multiplier", "shift", "bias", "zero_point"}, {"source"}),
    "clamp": (_GRAPH | {"low", "high"}, {"source"}),
    "maxpool": (_GRAPH | {"kernel", "stride"}, {"source"}),
    "avgpool": (_GRAPH | {"kernel", "stride"}, {"source"}),
    "flatten": (_GRAPH, {"source"}),
}
#: How many layers each layer type reads.
INPUT_COUNT = {kind: 2 if kind == "add" else 1 for kind in LAYER_KEYS}
_OUTPUT_ARRAYS = {"requant": ("bias", "multiplier", "shift", "zero_point", "relu"),
                  "threshold": ("thresholds",)}
_CONV_KEYS = {"in_channels", "in_height", "in_width", "kernel", "stride", "padding",
              "out_height", "out_width"}


class _Fields:
    """Checks on the fields of one object, each failure naming ``where`` and the field."""

    def __init__(self, where):
        self.where = where

    def fail(self, field, problem):
        raise BundleError(f"{self.where}: {field} {problem}" if field
                          else f"{self.where}: {problem}")

    def integer(self, field, value, lo, hi=None):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo \
                or (hi is not None and value > hi):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.fail(field, f"must be an integer in {span}, not {value!r}")
        return value

    def positive_real(self, field, value):
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value) or value <= 0:
            self.fail(field, f"must be a finite positive number, not {value!r}")
        return value

    def pair(self, field, value, lo):
        if not isinstance(value, list) or len(value) != 2:
            self.fail(field, f"must be a list of two integers >= {lo}, not {value!r}")
        return tuple(self.integer(f"{field}[{i}]", v, lo) for i, v in enumerate(value))

    def array(self, field, value, shape, lo, hi):
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu":
            kind = getattr(value, "dtype", type(value).__name__)
            self.fail(field, f"must be an integer array, not {kind}")
        if tuple(value.shape) != tuple(shape):
            self.fail(field, f"has shape {tuple(value.shape)}, expected {tuple(shape)}")
        if value.size and (int(value.min()) < lo or int(value.max()) > hi):
            self.fail(field, f"has values outside {lo}..{hi}")
        return value

    def keys(self, obj, required, optional=()):
        if not isinstance(obj, dict):
            self.fail("", f"must be an object, not {type(obj).__name__}")
        missing = sorted(required - set(obj))
        if missing:
            self.fail(missing[0], "is missing")
        unknown = sorted(set(obj) - required - set(optional))
        if unknown:
            self.fail(unknown[0], f"is not a field of this object (known: "
                                  f"{sorted(required | set(optional))})")


def _quantization(where, obj, keys):
    f = _Fields(where)
    f.keys(obj, keys)
    f.positive_real("scale", obj["scale"])
    f.integer("zero_point", obj["zero_point"], *CODE)
    return f


def validate(bundle, where="bundle"):
    """Check a bundle's internal consistency (see :func:`sparqforge.sw.bundle.load`): every
    field, and the layer graph. Layers must have ``name`` and ``inputs`` (the loader gives
    version-1 layers theirs).

    Raises
    ------
    BundleError
        The first problem, naming the layer and the field.
    """
    if not isinstance(bundle.name, str):
        raise BundleError(f"{where}: name must be a string, not {bundle.name!r}")
    f = _quantization(f"{where}: input", bundle.input, {"shape", "scale", "zero_point"})
    shape = bundle.input["shape"]
    if not isinstance(shape, list) or len(shape) not in (1, 3):
        f.fail("shape", f"must be [features] or [channels, height, width], not {shape!r}")
    shapes = {NETWORK_INPUT: tuple(f.integer(f"shape[{i}]", v, 1) for i, v in enumerate(shape))}
    f = _quantization(f"{where}: output", bundle.output, {"scale", "zero_point", "classes"})
    classes = f.integer("classes", bundle.output["classes"], 1)
    if not isinstance(bundle.info, dict):
        raise BundleError(f"{where}: info must be an object, not {type(bundle.info).__name__}")
    if not isinstance(bundle.layers, list) or not bundle.layers:
        raise BundleError(f"{where}: layers must be a non-empty list")
    if not any(isinstance(layer, dict) and layer.get("type") == "matmul"
               for layer in bundle.layers):
        raise BundleError(f"{where}: layers hold no matmul layer")
    names = [layer.get("name") if isinstance(layer, dict) else None for layer in bundle.layers]
    read = set()
    for index, layer in enumerate(bundle.layers):
        kind = layer.get("type") if isinstance(layer, dict) else None
        f = _Fields(f"{where}: layer {index} ({kind})")
        if not isinstance(kind, str) or kind not in LAYER_KEYS:
            f.fail("type", f"must be one of {sorted(LAYER_KEYS)}, not {kind!r}")
        f.keys(layer, *LAYER_KEYS[kind])
        name = layer["name"]
        if not isinstance(name, str) or not name:
            f.fail("name", f"must be a non-empty string, not {name!r}")
        f = _Fields(f"{where}: layer {index} {name!r} ({kind})")
        if name == NETWORK_INPUT:
            f.fail("name", f"{NETWORK_INPUT!r} is reserved for the network input")
        if name in shapes:
            f.fail("name", f"is also the name of layer {names.index(name)}; names must be "
                           f"unique")
        if "source" in layer and not isinstance(layer["source"], str):
            f.fail("source", f"must be a string, not {layer['source']!r}")
        inputs = _inputs(f, layer["inputs"], INPUT_COUNT[kind], shapes, names[index:])
        read.update(inputs)
        shapes[name] = _CHECKS[kind](f, layer, [shapes[i] for i in inputs])
    for index, name in enumerate(names[:-1]):
        if name not in read:
            raise BundleError(f"{where}: layer {index} {name!r} ({bundle.layers[index]['type']})"
                              f": no layer reads its output; only the last layer (the "
                              f"network's output) may be unread: remove it or read it")
    if shapes[names[-1]] != (classes,):
        raise BundleError(f"{where}: the network produces {shapes[names[-1]]} (its last "
                          f"layer {names[-1]!r}), the bundle declares {classes} classes")


def _inputs(f, inputs, count, defined, later):
    """Check a layer's ``inputs``: ``count`` names of the network input or earlier layers
    (``later``: the names of this layer and those after it)."""
    plural = "name" if count == 1 else "names"
    if not isinstance(inputs, list) or len(inputs) != count \
            or not all(isinstance(name, str) for name in inputs):
        f.fail("inputs", f"must be a list of {count} layer {plural} ({NETWORK_INPUT!r} for "
                         f"the network input), not {inputs!r}")
    for i, name in enumerate(inputs):
        if name in defined:
            continue
        if name in later:
            f.fail(f"inputs[{i}]", f"{name!r} is not defined before this layer: a layer reads "
                                   f"only the network input and layers listed before it "
                                   f"(topological order; a cycle has none)")
        f.fail(f"inputs[{i}]", f"{name!r} is no layer of the bundle (nor {NETWORK_INPUT!r})")
    return inputs


def _image(f, shape, what):
    if len(shape) != 3:
        f.fail("inputs", f"{what} an image, but its input is {shape}")
    return shape


def _multiplier(f, field, value):
    """A fixed-point multiplier: 0, or in [2**30, 2**31)."""
    values = np.asarray(value, dtype=np.int64)
    if np.any((values != 0) & (values < (1 << 30))):
        f.fail(field, "must be 0 or in 2**30..2**31 - 1 (a normalised fixed-point multiplier)")
    return value


def _add(f, layer, shapes):
    if shapes[0] != shapes[1]:
        f.fail("inputs", f"have shapes {shapes[0]} and {shapes[1]}; an add needs one shape")
    _multiplier(f, "multiplier", f.array("multiplier", layer["multiplier"], (3,), 0, INT32[1]))
    f.array("shift", layer["shift"], (3,), *SHIFT)
    f.array("zero_point", layer["zero_point"], (3,), *CODE)
    f.integer("relu", layer["relu"], 0, 1)
    shift = layer["left_shift"]
    if not isinstance(shift, int) or isinstance(shift, bool) or shift != ADD_LEFT_SHIFT:
        f.fail("left_shift", f"must be {ADD_LEFT_SHIFT} (TFLite's 8-bit add), not {shift!r}")
    return shapes[0]


def _global_avgpool(f, layer, shapes):
    c, h, w = _image(f, shapes[0], "averages")
    _multiplier(f, "multiplier", f.integer("multiplier", layer["multiplier"], 0, INT32[1]))
    f.integer("shift", layer["shift"], *SHIFT)
    f.integer("zero_point", layer["zero_point"], *CODE)
    bias = f.integer("bias", layer["bias"], *INT32)
    if bias % (h * w) or not 0 <= -bias // (h * w) <= 255:
        f.fail("bias", f"must be -{h}*{w} times the input zero point (0..255), not {bias}")
    return (c,)


def _clamp(f, layer, shapes):
    low = f.integer("low", layer["low"], *CODE)
    high = f.integer("high", layer["high"], *CODE)
    if low > high:
        f.fail("low", f"{low} is above high {high}")
    return shapes[0]


def _pool(f, layer, shapes):
    current = _image(f, shapes[0], "pools")
    (kh, kw), (sh, sw) = f.pair("kernel", layer["kernel"], 1), f.pair("stride",
                                                                     layer["stride"], 1)
    if kh > current[1] or kw > current[2]:
        f.fail("kernel", f"{kh}x{kw} is larger than the input {current}")
    return (current[0], (current[1] - kh) // sh + 1, (current[2] - kw) // sw + 1)


def _flatten(f, layer, shapes):
    return (int(np.prod(shapes[0])),)


def _matmul(f, layer, shapes):
    """Check one matmul layer (a depthwise convolution when ``conv.groups`` is the input
    channels); return its output shape."""
    current = shapes[0]
    n = f.integer("out_features", layer["out_features"], 1)
    k = f.integer("in_features", layer["in_features"], 1)
    conv = layer.get("conv")
    if conv is not None:
        g = _Fields(f"{f.where} conv")
        g.keys(conv, _CONV_KEYS, {"groups"})
        c, h, w = (g.integer(name, conv[name], 1)
                   for name in ("in_channels", "in_height", "in_width"))
        if len(current) != 3 or current != (c, h, w):
            g.fail("in_channels", f"and the input size {c}x{h}x{w} are not the input "
                                  f"{current}")
        (kh, kw), (sh, sw) = g.pair("kernel", conv["kernel"], 1), g.pair("stride",
                                                                         conv["stride"], 1)
        ph, pw = g.pair("padding", conv["padding"], 0)
        out = ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
        if min(out) < 1 or (conv["out_height"], conv["out_width"]) != out:
            g.fail("out_height", f"and out_width must be {out[0]} and {out[1]} (from the input, "
                                 f"kernel, stride and padding), not {conv['out_height']!r} and "
                                 f"{conv['out_width']!r}")
        groups = g.integer("groups", conv.get("groups", 1), 1)
        if groups not in (1, c):
            g.fail("groups", f"must be 1 or in_channels {c} (a depthwise convolution), not "
                             f"{groups}")
        if groups != 1:
            if n != c:
                f.fail("out_features", f"{n} is not the {c} channels of a depthwise "
                                       f"convolution")
            if k != kh * kw:
                f.fail("in_features", f"{k} is not kernel {kh}x{kw} (one channel per output "
                                      f"of a depthwise convolution)")
        elif k != kh * kw * c:
            f.fail("in_features", f"{k} is not kernel {kh}x{kw} times {c} channels")
        output = (n,) + out
    else:
        if int(np.prod(current)) != k:
            f.fail("in_features", f"is {k}, but the layer's input has {int(np.prod(current))} "
                                  f"values")
        output = (n,)
    bits = f.integer("weight_bits", layer["weight_bits"], 2, 8)
    weight = f.array("weight", layer["weight"], (n, k), -(1 << (bits - 1)),
                     (1 << (bits - 1)) - 1)
    if layer.get("act_table") is not None:
        f.array("act_table", layer["act_table"], (256,), *CODE)
    if layer.get("weight_table") is not None:
        f.array("weight_table", layer["weight_table"], (256,), -128, 127)
    if layer.get("pad_code") is not None:
        f.integer("pad_code", layer["pad_code"], *CODE)
    elif conv is not None:
        f.fail("pad_code", "is missing (a convolution pads with it)")
    sparsity = layer.get("sparsity")
    if sparsity is not None:
        pattern = f.pair("sparsity", sparsity, 1)
        if not pattern[0] <= pattern[1] or not 2 <= pattern[1] <= 16:
            f.fail("sparsity", f"must be N:M with 0 < N <= M and 2 <= M <= 16, not {sparsity}")
        bad = find_violation(weight, *pattern)
        if bad is not None:
            f.fail("sparsity", f"says {pattern[0]}:{pattern[1]}, but the weights are not "
                               f"(row {bad[0]}, group {bad[1]})")
    mode = layer["output"]
    if not isinstance(mode, str) or mode not in _OUTPUT_ARRAYS:
        f.fail("output", f"must be 'requant' or 'threshold', not {mode!r}")
    other = _OUTPUT_ARRAYS["threshold" if mode == "requant" else "requant"]
    for name in other:
        if layer.get(name) is not None:
            f.fail(name, f"does not belong to a {mode} layer")
    if mode == "requant":
        f.array("bias", layer.get("bias"), (n,), *INT32)
        f.array("multiplier", layer.get("multiplier"), (n,), 0, (1 << 31) - 1)
        f.array("shift", layer.get("shift"), (n,), -31, 30)
        f.array("zero_point", layer.get("zero_point"), (n,), *CODE)
        f.array("relu", layer.get("relu"), (n,), 0, 1)
    else:
        t = layer.get("thresholds")
        count = t.shape[1] if isinstance(t, np.ndarray) and t.ndim == 2 else -1
        if count not in (1, 3, 7, 15, 31, 63, 127, 255):
            f.fail("thresholds", "must be [out_features, 2**bits - 1] integers")
        f.array("thresholds", t, (n, count), *INT32)
        if np.any(np.diff(t.astype(np.int64), axis=1) < 0):
            f.fail("thresholds", "are not sorted ascending")
    return output


_CHECKS = {"matmul": _matmul, "add": _add, "global_avgpool": _global_avgpool, "clamp": _clamp,
           "maxpool": _pool, "avgpool": _pool, "flatten": _flatten}
