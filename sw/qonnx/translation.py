"""A cleaned QONNX model, node by node, into a sparqforge :class:`~..frontend.graph.Graph`
and the quantizers its ``Quant`` nodes give each graph node (``docs/qonnx.md``).

Graph nodes are named after the ONNX nodes that made them (``Conv_0``, ``Quant_6``: the
names ``qonnx.util.cleanup.cleanup_model`` gives). A tensor computed from the input is a
:data:`Value`: the graph node that holds it and its per-item shape as ONNX sees it (which
differs from the node's only after a global average pool keeps its ``[C, 1, 1]`` shape).
A ``Quant`` on such a tensor gives the tensor's graph node its quantizer, or, when the node
already has another one, adds a *requantization* node (a depthwise 1x1 convolution with
weight 1, or an identity matrix on a vector) that carries the new one.
"""

__all__ = ["SUPPORTED", "PRESERVING", "REQUANT_CODE", "Value", "TrackingGraph", "Translation"]

from collections import namedtuple

import numpy as np

from ...errors import UnsupportedLayerError
from ..frontend.graph import Graph, Node
from .quant import activation_quantizer, fake_quant, per_channel, quant_params, weight_codes

#: What the importer translates, as refusals name it (one line).
SUPPORTED = ("Quant (weights: signed, zero point 0, 2..8 bits, per tensor or per output "
             "channel; activations: 8 bits, per tensor), Conv (dilation 1, symmetric padding, "
             "groups 1 or depthwise), Gemm, MatMul, Add, Relu, Clip, BatchNormalization, "
             "MaxPool, AveragePool (no padding), GlobalAveragePool, ReduceMean over height and "
             "width, Flatten, Reshape to [N, features], Identity, Dropout")

#: Operators whose output codes are their input's codes at the input's scale (the bundle's
#: clamp, max pooling and flatten layers): they share their input's quantizer.
PRESERVING = ("clamp", "maxpool", "flatten")

#: The weight code of a requantization node (scale ``1 / REQUANT_CODE``): the largest 8-bit
#: narrow code.
REQUANT_CODE = 127

#: A tensor computed from the input: its graph node and its per-item shape in ONNX.
Value = namedtuple("Value", "node shape")

_FIXES = {
    "Sigmoid": "compute it on the host from the output codes, or use Relu",
    "Tanh": "compute it on the host from the output codes, or use Relu",
    "Softmax": "drop it from the exported model and take the argmax of the logits",
    "BipolarQuant": "export 2..8-bit weights and 8-bit activations with Quant",
    "Trunc": "use AvgPool/AdaptiveAvgPool2d with an 8-bit QuantIdentity after it instead of "
             "TruncAvgPool2d",
    "Concat": "sparqforge graphs have no concatenation; restructure the model",
}


def _attrs(node):
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _dims(shape):
    return "[" + ", ".join(str(d) for d in shape) + "]"


class TrackingGraph(Graph):
    """A :class:`~..frontend.graph.Graph` that records every node a pass bypasses, so that
    its quantizer can follow its output onto the node that now computes it: ``merges`` is
    ``[(bypassed, producer, producer_had_only_this_reader)]`` in order."""

    def __init__(self, nodes=()):
        self.merges = []
        super().__init__(nodes)

    def bypass(self, name):
        producer = self[name].inputs[0]
        self.merges.append((name, producer, len(self.consumers(producer)) == 1))
        super().bypass(name)


class Translation:
    """The translation of one cleaned QONNX model (a ``qonnx`` ``ModelWrapper``).

    After :meth:`run`: ``graph`` (a :class:`TrackingGraph`, not yet simplified), ``act``
    (graph node -> :class:`~..quantize.ActivationQuantizer`), ``keys`` (graph node -> the
    :meth:`~.quant.QuantParams.key` of its quantization), ``codes`` (matmul node ->
    ``(integer weight codes, bits, narrow)``), ``op_types`` (graph node -> ONNX op type),
    ``tensors`` (graph node -> the ONNX tensor that holds its output), ``requants`` (the
    requantization nodes added) and ``averages`` (average pools, as depthwise convolutions).
    """

    def __init__(self, model, source=""):
        self.model = model
        self.source = source
        self.graph = TrackingGraph()
        self.act, self.keys, self.codes, self.op_types, self.tensors = {}, {}, {}, {}, {}
        self.requants, self.averages = [], []
        self.values, self.consts, self.quant_consts = {}, {}, {}
        self.batch = None

    # Messages.

    def refuse(self, node, problem, fix=None):
        """``Node 'Conv_0' (Conv) <problem>; <fix>`` as an UnsupportedLayerError."""
        fix = fix or f"sparqforge imports {SUPPORTED}"
        return UnsupportedLayerError(" ".join(f"Node {node.name!r} ({node.op_type}) {problem}; "
                                              f"{fix}".split()))

    # Inputs of a node.

    def value(self, node, index):
        """The :data:`Value` of input ``index``: a tensor computed from the network input."""
        name = node.input[index]
        if name in self.values:
            return self.values[name]
        raise self.refuse(node, f"reads the constant {name!r} as data",
                          "sparqforge computes on tensors derived from the network input "
                          "(constants only as weights, biases and BatchNorm parameters)")

    def data(self, node, index, rank=None):
        """Like :meth:`value`, refusing a reshaped view and, with ``rank``, another rank
        (3: an image ``[N, C, H, W]``, 1: a vector ``[N, features]``)."""
        v = self.value(node, index)
        held = self.graph[v.node].shape
        if v.shape != held:
            raise self.refuse(node, f"reads {node.input[index]!r} of shape "
                                    f"{_dims((self.batch,) + v.shape)}, a view of a "
                                    f"{_dims((self.batch,) + held)} tensor",
                              "sparqforge supports it only flattened to [N, features]")
        if rank is not None and len(v.shape) != rank:
            want = "an image [N, C, H, W]" if rank == 3 else "a vector [N, features]"
            raise self.refuse(node, f"reads a tensor of shape {_dims((self.batch,) + v.shape)}",
                              f"sparqforge supports {node.op_type} on {want}")
        return v

    def const(self, node, index, role):
        """A constant input as a NumPy array (as stored, or fake-quantized by a Quant)."""
        name = node.input[index] if index < len(node.input) else ""
        if name in self.consts:
            return self.consts[name]
        if name in self.quant_consts:
            values, params = self.quant_consts[name]
            return fake_quant(values, params)
        raise self.refuse(node, f"computes its {role} from the input",
                          f"sparqforge needs the {role} as a constant (an initializer)")

    def optional(self, node, index, role):
        """Like :meth:`const`, ``None`` for an absent input."""
        if index >= len(node.input) or not node.input[index]:
            return None
        return self.const(node, index, role)

    def weight(self, node, index, out_axis):
        """``(codes, per-channel scale, bits, narrow)`` of a quantized weight input, codes
        with output channels moved to axis 0."""
        name = node.input[index]
        if name in self.consts:
            raise self.refuse(node, f"has a float weight {name!r} (no Quant on it)",
                              "quantize the weights in the model (QuantConv2d, QuantLinear or "
                              "a Quant node on the initializer)")
        if name not in self.quant_consts:
            raise self.refuse(node, "computes its weight from the input",
                              "sparqforge needs weights as quantized initializers")
        values, params = self.quant_consts[name]
        quant = UnsupportedLayerError
        where = f"Node {params.node!r} (Quant) quantizes the weight of {node.name!r}"
        if not params.signed:
            raise quant(f"{where} as unsigned codes; the MAC array multiplies signed weights: "
                        f"export the weights with a signed quantizer")
        if np.any(params.zeropt != 0):
            raise quant(f"{where} asymmetrically (zero point "
                        f"{np.asarray(params.zeropt).ravel()[:4].tolist()}); the MAC array "
                        f"multiplies symmetric weights: export the weights with a symmetric "
                        f"quantizer (zero point 0, e.g. Int8WeightPerTensorFloat)")
        if params.bits > 8:
            raise quant(f"{where} to {params.bits} bits; sparqforge's weights have 2..8 bits: "
                        f"export them with weight_bit_width <= 8")
        scale = per_channel(params.scale, values.shape, out_axis)
        if scale is None:
            raise quant(f"{where} with scales that vary along its input axis; sparqforge "
                        f"supports one scale per tensor or per output channel")
        codes = np.moveaxis(weight_codes(values, params), out_axis, 0)
        return codes, scale, params.bits, params.narrow

    # Outputs of a node.

    def item_shape(self, node, index=0):
        """The per-item shape of output ``index``; refuse one whose first axis is not the
        network's batch axis."""
        shape = self.model.get_tensor_shape(node.output[index])
        if not shape or len(shape) < 2 or shape[0] != self.batch:
            raise self.refuse(node, f"gives a tensor of shape {shape} from an input batch of "
                                    f"{self.batch}",
                              "sparqforge supports tensors [N, features] and [N, C, H, W] "
                              "whose first axis is the batch")
        return tuple(int(d) for d in shape[1:])

    def emit(self, node, op, inputs, shape, name=None, **attrs):
        """Add a graph node for ``node`` (named ``name`` or like the ONNX node) and make it
        the value of the node's first output."""
        graph_node = self.graph.add(Node(name or node.name, op, list(inputs), tuple(shape),
                                         attrs, self.source))
        self.op_types[graph_node.name] = node.op_type
        self.tensors[graph_node.name] = node.output[0]
        value = Value(graph_node.name, graph_node.shape)
        self.values[node.output[0]] = value
        if op in PRESERVING and inputs[0] in self.act:
            self.set_act(graph_node.name, inputs[0])
        return value

    def alias(self, node, value):
        """The node's first output is ``value`` (an operator the graph does not need)."""
        self.values[node.output[0]] = value
        return value

    # Quantizers.

    def set_act(self, name, like):
        """Give node ``name`` the quantizer of node ``like``."""
        self.act[name], self.keys[name] = self.act[like], self.keys[like]

    def _assign(self, name, quantizer, key):
        self.act[name], self.keys[name] = quantizer, key
        node = self.graph[name]
        # Quantizing after a clamp, max pool or flatten equals doing so before it (they are
        # monotone or move values), so the producer takes the same quantizer.
        if node.op in PRESERVING and node.inputs[0] not in self.act:
            self._assign(node.inputs[0], quantizer, key)

    def quantize(self, node, v, params):
        """A ``Quant`` ``node`` on the tensor :data:`Value` ``v``."""
        quantizer = activation_quantizer(params)
        name = v.node
        held = self.graph[name]
        if name not in self.act and held.op in PRESERVING and held.inputs[0] in self.act:
            self.set_act(name, held.inputs[0])
        if name not in self.act:
            self._assign(name, quantizer, params.key())
        elif self.keys[name] != params.key():
            name = self.requantize(node, v)
            self.act[name], self.keys[name] = quantizer, params.key()
        out = self.alias(node, Value(name, v.shape))
        if params.narrow:
            # The bundle's codes reach both ends of 8 bits; a clamp layer keeps the narrow
            # range's missing code out.
            scale, zero = quantizer.scale, quantizer.zero_point
            low = scale * (params.qmin - zero) if params.signed else None
            high = None if params.signed else scale * (params.qmax - zero)
            out = self.emit(node, "clamp", [out.node], self.graph[out.node].shape,
                            name=f"{node.name}.narrow", low=low, high=high)
            self.values[node.output[0]] = Value(out.node, v.shape)

    def average(self, node, x, shape, kernel, stride):
        """Average pooling (global: a kernel of the whole image) as a depthwise convolution
        with weight ``1 / (kh * kw)``, held as code 127 and scale ``1 / (127 * kh * kw)``.
        Its mean is requantized once, to whatever quantizer its output gets (a ``Quant``
        after it, calibration, or its input's), where the bundle's ``avgpool`` layer would
        round it to its input's scale first; and its accumulator is 127 times the sum of
        codes, which leaves the fixed-point multiply 7 more fraction bits than the bundle's
        ``global_avgpool`` layer has before its final rounding (``docs/qonnx.md``)."""
        channels = x.shape[0]
        weight = np.full((channels, 1) + tuple(kernel), 1.0 / (kernel[0] * kernel[1]))
        self.emit(node, "conv2d", [x.node], shape, weight=weight, bias=None, stride=stride,
                  padding=(0, 0), groups=channels)
        self.codes[node.name] = (np.full(weight.shape, REQUANT_CODE, dtype=np.int64), 8, True)
        self.averages.append(node.name)

    def requantize(self, node, v):
        """A node that requantizes ``v``'s codes to another scale: a depthwise 1x1
        convolution with weight 1 on an image, an identity matrix on a vector."""
        shape = self.graph[v.node].shape
        if len(shape) == 3:
            weight = np.ones((shape[0], 1, 1, 1))
            attrs = {"stride": (1, 1), "padding": (0, 0), "groups": shape[0]}
            op = "conv2d"
        else:
            weight, attrs, op = np.eye(shape[0]), {}, "linear"
        graph_node = self.graph.add(Node(node.name, op, [v.node], shape,
                                         {"weight": weight, "bias": None, **attrs},
                                         self.source))
        self.op_types[node.name] = "Quant"
        self.tensors[node.name] = node.output[0]
        # Weight 1 as code 127 with scale 1/127: the accumulator is 127 times the input code,
        # which leaves the fixed-point multiply 7 more fraction bits before its final
        # rounding (with code 1 its first rounding would drop them all).
        self.codes[node.name] = (REQUANT_CODE * weight.astype(np.int64), 8, True)
        self.requants.append(node.name)
        return graph_node.name

    # The model.

    def run(self):
        """Translate every node; returns ``self``."""
        from onnx import numpy_helper

        from .operators import HANDLERS

        graph = self.model.graph
        for init in graph.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
        inputs = [i for i in graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise UnsupportedLayerError(
                f"The model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                f"sparqforge models take exactly one tensor")
        shape = self.model.get_tensor_shape(inputs[0].name)
        if not shape or len(shape) not in (2, 4) or not all(shape):
            raise UnsupportedLayerError(
                f"The model input {inputs[0].name!r} has shape {shape}; sparqforge models "
                f"take one tensor [N, features] or [N, C, H, W] of fixed item shape")
        self.batch = shape[0]
        item = tuple(int(d) for d in shape[1:])
        self.graph.add(Node("input", "input", [], item, {}, self.source))
        self.op_types["input"] = "input"
        self.tensors["input"] = inputs[0].name
        self.values[inputs[0].name] = Value("input", item)
        for node in graph.node:
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise self.refuse(node, "is not supported",
                                  _FIXES.get(node.op_type, f"sparqforge imports {SUPPORTED}"))
            handler(self, node, _attrs(node))
        if len(graph.output) != 1:
            raise UnsupportedLayerError(
                f"The model has {len(graph.output)} outputs; sparqforge models return one "
                f"tensor: export only the tensor the accelerator should compute")
        out = self.values.get(graph.output[0].name)
        if out is None:
            raise UnsupportedLayerError(
                f"The model output {graph.output[0].name!r} is a constant; sparqforge models "
                f"return a tensor computed from the input")
        self.graph.add(Node("output", "output", [out.node], self.graph[out.node].shape, {},
                            self.source))
        return self

    def quant_node(self, node, attrs):
        """A ``Quant`` node: on a constant it quantizes a weight or bias, else activations."""
        scale, zeropt, bits = (self.const(node, i, role) for i, role in
                               ((1, "scale"), (2, "zero point"), (3, "bit width")))
        params = quant_params(node.name, attrs, scale, zeropt, bits)
        if node.input[0] in self.consts:
            self.quant_consts[node.output[0]] = (self.consts[node.input[0]], params)
        elif node.input[0] in self.quant_consts:
            values, first = self.quant_consts[node.input[0]]
            self.quant_consts[node.output[0]] = (fake_quant(values, first), params)
        else:
            self.quantize(node, self.value(node, 0), params)
