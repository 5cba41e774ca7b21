"""The QONNX importer (``sparqforge.sw.qonnx``, ``docs/qonnx.md``).

Small Brevitas models (an MLP, a CNN with BatchNorm, max pooling, a depthwise convolution
and a batch-1 Reshape, a residual block whose two branches one QuantIdentity brings to one
scale, with ReduceMean or GlobalAveragePool) are exported with ``export_qonnx`` and
imported; the bundle's golden output codes are compared with QONNX's own execution
(``execute_onnx`` after ``cleanup_model``) quantized to the same output codes. A hand-built
graph (``onnx.helper``) covers what Brevitas' defaults do not write: every weight rounding
mode, per-channel and 4-bit weights, MatMul with a separate bias Add, average pooling, a
narrow activation range, an asymmetric zero point. Refusals are one line naming the node,
its op_type and the fix.
"""

import warnings

import numpy as np
import pytest

from sparqforge.errors import SparqforgeError, UnsupportedLayerError
from sparqforge.sw.bundle import load as load_bundle, save as save_bundle
from sparqforge.sw.frontend.quantize_graph import fake_quant
from sparqforge.sw.golden import run_network
from sparqforge.sw.qonnx import QonnxError, import_qonnx, load, run_qonnx, translate
from sparqforge.sw.qonnx.quant import ROUNDING_MODES, quant_params, weight_codes

onnx = pytest.importorskip("onnx")
pytest.importorskip("qonnx")
TensorProto, helper, numpy_helper = onnx.TensorProto, onnx.helper, onnx.numpy_helper

QDOMAIN = "qonnx.custom_op.general"


def agreement(bundle, reference, x):
    """``(fraction of equal codes, largest difference)`` between the bundle's golden output
    codes on ``x`` (one batched run) and QONNX's outputs ``reference`` on ``x``
    (:func:`run_qonnx`, one item at a time) quantized to the bundle's output codes with
    QONNX's rounding (half to even)."""
    codes = run_network(bundle.layers, bundle.quantize_input(x))
    out = bundle.output
    want = np.clip(np.round(reference / out["scale"]) + out["zero_point"], 0, 255)
    diff = np.abs(codes - want.reshape(codes.shape))
    return float((diff == 0).mean()), int(diff.max())


# Brevitas models, exported once per module.

def _brevitas_models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import brevitas.nn as qnn
        import torch
        from brevitas.quant import Int8WeightPerChannelFloat
        from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(return_quant_tensor=True)
            self.fc1 = qnn.QuantLinear(20, 32, bias=True)
            self.relu1 = qnn.QuantReLU(return_quant_tensor=True)
            self.fc2 = qnn.QuantLinear(32, 16, bias=True)
            self.relu2 = qnn.QuantReLU(return_quant_tensor=True)
            self.fc3 = qnn.QuantLinear(16, 10, bias=True)

        def forward(self, x):
            x = self.relu1(self.fc1(self.inp(x)))
            return self.fc3(self.relu2(self.fc2(x)))

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(return_quant_tensor=True)
            self.conv1 = qnn.QuantConv2d(3, 8, 3, padding=1, bias=False,
                                         weight_quant=Int8WeightPerChannelFloat)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu1 = qnn.QuantReLU(return_quant_tensor=True)
            self.pool = nn.MaxPool2d(2)
            self.conv2 = qnn.QuantConv2d(8, 8, 3, padding=1, groups=8, bias=False)
            self.bn2 = nn.BatchNorm2d(8)
            self.relu2 = qnn.QuantReLU(return_quant_tensor=True)
            self.fc = qnn.QuantLinear(8 * 4 * 4, 10, bias=True)

        def forward(self, x):
            x = self.pool(self.relu1(self.bn1(self.conv1(self.inp(x)))))
            x = self.relu2(self.bn2(self.conv2(x)))
            return self.fc(torch.flatten(x, 1))

    class ResBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(return_quant_tensor=True)
            self.stem = qnn.QuantConv2d(3, 8, 3, padding=1, bias=False)
            self.bn0 = nn.BatchNorm2d(8)
            self.relu0 = qnn.QuantReLU(return_quant_tensor=True)
            self.conv1 = qnn.QuantConv2d(8, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu1 = qnn.QuantReLU(return_quant_tensor=True)
            self.conv2 = qnn.QuantConv2d(8, 8, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(8)
            self.shared = qnn.QuantIdentity(return_quant_tensor=True)   # one scale for both
            self.relu2 = qnn.QuantReLU(return_quant_tensor=True)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = qnn.QuantLinear(8, 10, bias=True)

        def forward(self, x):
            x = self.relu0(self.bn0(self.stem(self.inp(x))))
            y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            y = self.relu2(self.shared(y) + self.shared(x))
            return self.fc(torch.flatten(self.pool(y), 1))

    return torch, {"mlp": (MLP, (20,)), "cnn": (CNN, (3, 8, 8)), "resnet": (ResBlock, (3, 8, 8))}


def _export(torch, cls, shape, path, seed, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brevitas.export import export_qonnx

    torch.manual_seed(seed)
    model = cls()
    model.train()
    with torch.no_grad():
        for _ in range(8):     # activation ranges and BatchNorm statistics from data
            model(torch.randn(32, *shape))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):     # some negative gammas
                module.weight.copy_(torch.empty_like(module.weight).uniform_(-1.5, 1.5))
                module.bias.copy_(0.2 * torch.randn_like(module.bias))
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, input_t=torch.randn(1, *shape), export_path=str(path), **kwargs)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> path of the exported QONNX file. ``*_legacy``: the TorchScript exporter
    (``dynamo=False``: Flatten and GlobalAveragePool instead of Reshape and ReduceMean)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("brevitas")
        pytest.importorskip("onnxoptimizer")
    torch, models = _brevitas_models()
    folder = tmp_path_factory.mktemp("qonnx")
    found = {}
    for name, (cls, shape) in models.items():
        found[name] = _export(torch, cls, shape, folder / f"{name}.onnx", seed=len(name))
    for name in ("cnn", "resnet"):
        cls, shape = models[name]
        found[f"{name}_legacy"] = _export(torch, cls, shape, folder / f"{name}_legacy.onnx",
                                          seed=len(name), dynamo=False)
    return found


def _inputs(model, count, seed):
    name = model.graph.input[0].name
    shape = model.get_tensor_shape(name)[1:]
    return np.random.default_rng(seed).standard_normal((count, *shape))


@pytest.fixture(scope="module")
def references(exported):
    """name -> (test inputs, QONNX's outputs on them, calibration inputs), computed once
    (QONNX executes node by node, about a millisecond each)."""
    cache = {}

    def get(name):
        if name not in cache:
            model = load(exported[name])
            x = _inputs(model, 100, seed=1)
            cache[name] = x, run_qonnx(model, x), _inputs(model, 64, seed=2)
        return cache[name]
    return get


def _ops(qgraph):
    return [node.op for node in qgraph.graph]


def test_brevitas_writes_what_reference_md_says(exported):
    ops = {name: [n.op_type for n in load(path).graph.node] for name, path in exported.items()}
    assert "Reshape" in ops["cnn"] and "Flatten" in ops["cnn_legacy"]
    assert "ReduceMean" in ops["resnet"] and "GlobalAveragePool" in ops["resnet_legacy"]
    assert "BatchNormalization" in ops["cnn"] and "Gemm" in ops["mlp"]
    model = load(exported["cnn"])
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    assert model.get_initializer(reshape.input[1]).tolist() == [1, 128]    # batch 1 baked in


def test_graphs(exported):
    mlp, _ = translate(exported["mlp"])
    assert _ops(mlp) == ["input", "linear", "linear", "linear", "output"]
    assert [n.attrs.get("clamp") for n in mlp.graph if n.op == "linear"] == [(0.0, None)] * 2 \
        + [None]
    cnn, notes = translate(exported["cnn"])
    # BatchNorm folded, ReLU fused, the batch-1 Reshape a flatten; a depthwise convolution.
    assert _ops(cnn) == ["input", "conv2d", "maxpool", "conv2d", "flatten", "linear", "output"]
    assert cnn.graph["Conv_1"].attrs["groups"] == 8
    assert notes == {"output": "bound", "calibrated": [], "requantizations": []}
    for name in ("resnet", "resnet_legacy"):
        res, notes = translate(exported[name])
        ops = _ops(res)
        # Global average pooling: a depthwise convolution over the whole 8x8 image.
        pool = res.graph["ReduceMean_0" if name == "resnet" else "GlobalAveragePool_0"]
        assert pool.op == "conv2d" and pool.attrs["weight"].shape == (8, 1, 8, 8)
        assert ops.count("add") == 1 and "global_avgpool" not in ops
        (requant,) = notes["requantizations"]
        node = res.graph[requant]
        # The shortcut, already quantized by relu0, requantized to the shared scale.
        assert node.op == "conv2d" and node.attrs["groups"] == 8
        add = next(n for n in res.graph if n.op == "add")
        assert requant in add.inputs and add.attrs["clamp"] == (0.0, None)
        assert res.act[add.inputs[0]].scale == res.act[add.inputs[1]].scale


def test_weights_are_the_quant_codes(exported):
    """Each weight's codes times its per-channel scale is QONNX's dequantized weight with the
    BatchNorm folded in: ``codes * s_w * gamma / sqrt(var + eps)``."""
    model = load(exported["cnn"])
    qgraph, _ = translate(exported["cnn"])
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    quant = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    init = [model.get_initializer(name) for name in quant.input]
    params = quant_params(quant.name, {a.name: helper.get_attribute_value(a)
                                       for a in quant.attribute}, *init[1:])
    assert params.scale.size == 8        # per channel
    gamma, _, _, var = (model.get_initializer(name).astype(np.float64)
                        for name in bn.input[1:])
    fold = gamma / np.sqrt(var + 1e-5)
    want = weight_codes(init[0], params) * params.scale.astype(np.float64) \
        * fold.reshape(-1, 1, 1, 1)
    weight = qgraph.weights["Conv_0"]
    assert np.allclose(weight.dequantize().double().numpy(), want, rtol=1e-6, atol=0)
    assert np.abs(weight.codes.numpy()).max() <= 127 and (fold < 0).any()


#: Measured agreement (docs/qonnx.md), asserted with a margin: (equal fraction, largest
#: difference) with the output range calibrated on other inputs and with the data-free bound.
AGREEMENT = {"mlp": ((0.95, 1), (0.95, 1)), "cnn": ((0.95, 1), (0.95, 1)),
             "cnn_legacy": ((0.95, 1), (0.95, 1)), "resnet": ((0.88, 2), (0.88, 1)),
             "resnet_legacy": ((0.88, 2), (0.88, 1))}


@pytest.mark.parametrize("name", sorted(AGREEMENT))
def test_agreement_with_qonnx(exported, references, name):
    x, reference, calibration = references(name)
    (calibrated_bound, calibrated_max), (bound_bound, bound_max) = AGREEMENT[name]
    bundle = import_qonnx(exported[name], calibration=calibration)
    equal, worst = agreement(bundle, reference, x)
    assert equal >= calibrated_bound and worst <= calibrated_max, (equal, worst)
    bundle = import_qonnx(exported[name])
    equal, worst = agreement(bundle, reference, x)
    assert equal >= bound_bound and worst <= bound_max, (equal, worst)
    assert bundle.info["qonnx"]["output"] == "bound"


def test_graph_level_agreement(exported, references):
    """The translation itself, without the integer pipeline's rounding: the quantized graph
    evaluated in float with every tensor fake-quantized gives QONNX's output codes."""
    x, reference, calibration = references("cnn")
    qgraph, notes = translate(exported["cnn"], calibration=calibration)
    assert notes["output"] == "calibration" and notes["calibrated"] == []
    out = qgraph.act[qgraph.graph.output.inputs[0]]
    codes = np.round(fake_quant(qgraph, x) / out.scale)
    want = np.round(reference / out.scale)
    assert np.mean(codes == want) >= 0.99 and np.abs(codes - want).max() <= 1
    _, notes = translate(exported["resnet"],
                         calibration=_inputs(load(exported["resnet"]), 4, seed=2))
    assert notes["output"] == "calibration" and notes["calibrated"] == ["ReduceMean_0"]


def test_the_comparison_catches_a_wrong_bundle(exported, references):
    x, reference, calibration = references("cnn")
    bundle = import_qonnx(exported["cnn"], calibration=calibration)
    assert agreement(bundle, reference, x)[0] >= 0.95
    last = bundle.layers[-1]
    last["zero_point"] = last["zero_point"] + np.eye(10, dtype=np.int64)[3] * 2   # class 3
    equal, worst = agreement(bundle, reference, x)
    assert equal < 0.91 and worst >= 2


def test_batch_is_not_limited_and_bundle_saves(exported, tmp_path):
    """The exported Reshape fixes a batch of 1; the bundle runs any batch."""
    model = load(exported["cnn"])
    x = _inputs(model, 7, seed=3)
    bundle = import_qonnx(exported["cnn"])
    path = save_bundle(bundle, tmp_path / "cnn.npz")
    again = load_bundle(path)
    assert again.info["qonnx"]["file"] == "cnn.onnx" and again.name == "cnn"
    together = run_network(again.layers, again.quantize_input(x))
    alone = np.concatenate([run_network(again.layers, again.quantize_input(x[i:i + 1]))
                            for i in range(7)])
    assert together.shape == (7, 10) and np.array_equal(together, alone)


# Hand-built graphs (onnx.helper).

class Builder:
    """A small QONNX graph writer: initializers, Quant nodes and plain ONNX nodes."""

    def __init__(self, shape):
        self.nodes, self.inits, self.count = [], [], 0
        self.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *shape])

    def const(self, value, dtype=np.float32):
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op, inputs, domain="", **attrs):
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], domain=domain, **attrs))
        return out

    def quant(self, x, scale, zeropt=0.0, bits=8, signed=1, narrow=0, rounding="ROUND"):
        if not isinstance(x, str):
            x = self.const(x)
        return self.node("Quant", [x, self.const(scale), self.const(zeropt), self.const(bits)],
                         domain=QDOMAIN, signed=signed, narrow=narrow, rounding_mode=rounding)

    def save(self, out, path):
        graph = helper.make_graph(self.nodes, "g", [self.input],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                        helper.make_opsetid(QDOMAIN, 1)])
        onnx.save(model, str(path))
        return path


def _weight(rng, shape, bits, per_channel_axis=None):
    w = rng.standard_normal(shape).astype(np.float32) * 0.3
    top = (1 << (bits - 1)) - 1
    if per_channel_axis is None:
        return w, np.float32(np.abs(w).max() / top)
    axes = tuple(i for i in range(w.ndim) if i != per_channel_axis)
    return w, (np.abs(w).max(axis=axes, keepdims=True) / top).astype(np.float32)


def features_model(path, modes=("FLOOR", "UP", "HALF_DOWN")):
    """Depthwise Conv (4-bit per-channel weights) + bias, Relu, narrow unsigned Quant,
    AveragePool and a finer Quant, 1x1 Conv, signed Quant, Flatten, MatMul (per-column
    scales) + Add bias, an asymmetric output Quant; weights rounded with ``modes``. Scales
    are not simple ratios of each other (as trained ones are not), so exact ties are rare."""
    rng = np.random.default_rng(5)
    b = Builder((2, 6, 6))
    x = b.quant("x", 0.0207)
    w, s = _weight(rng, (2, 1, 3, 3), 4, per_channel_axis=0)
    y = b.node("Conv", [x, b.quant(w, s, bits=4, narrow=1, rounding=modes[0]),
                        b.const(rng.standard_normal(2) * 0.1)],
               group=2, pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    y = b.quant(b.node("Relu", [y]), 0.0119, signed=0, narrow=1)
    y = b.node("AveragePool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.quant(y, 0.00413, signed=0)
    w, s = _weight(rng, (4, 2, 1, 1), 8)
    y = b.node("Conv", [y, b.quant(w, s, narrow=1, rounding=modes[1])], kernel_shape=[1, 1])
    y = b.node("Flatten", [b.quant(y, 0.00311)], axis=1)
    w, s = _weight(rng, (36, 5), 6, per_channel_axis=1)
    y = b.node("MatMul", [y, b.quant(w, s, bits=6, narrow=1, rounding=modes[2])])
    y = b.node("Add", [y, b.const(rng.standard_normal((1, 5)) * 0.05)])
    return b.save(b.quant(y, 0.00397, zeropt=-20.0), path)


def test_hand_built_features(tmp_path):
    path = features_model(tmp_path / "features.onnx")
    qgraph, notes = translate(path)
    assert _ops(qgraph) == ["input", "conv2d", "clamp", "conv2d", "conv2d", "flatten",
                            "linear", "output"]
    assert notes["output"] == "quant"
    assert qgraph.weights["Conv_0"].bits == 4 and qgraph.weights["MatMul_0"].bits == 6
    assert qgraph.bias["MatMul_0"] is not None                 # the Add folded in
    assert qgraph.act["MatMul_0"].zero_point == -20
    model = load(path)
    x = _inputs(model, 100, seed=4)
    reference = run_qonnx(model, x)
    equal, worst = agreement(import_qonnx(path), reference, x)
    assert equal >= 0.75 and worst <= 2, (equal, worst)
    out = qgraph.act["MatMul_0"]
    codes = np.round(fake_quant(qgraph, x) / out.scale)
    assert np.mean(codes == np.round(reference / out.scale)) >= 0.98


def test_requantizations_on_vectors_and_outputs_through_flatten(tmp_path):
    """A second Quant with the same parameters is nothing; one with others on a vector is an
    identity matrix (code 127, scale 1/127); a clamp on codes stays a clamp layer; a
    Conv's unquantized output reaching the output through a Flatten gets the bound."""
    rng = np.random.default_rng(1)
    b = Builder((8,))
    y = b.quant(b.node("MatMul", [b.quant("x", 0.0203),
                                   b.quant(rng.standard_normal((8, 6)), 0.0098)]), 0.0517)
    y = b.quant(b.quant(y, 0.0517), 0.0311, signed=0)
    y = b.node("Clip", [y, b.const(0.1), b.const(2.0)])
    y = b.node("MatMul", [y, b.quant(rng.standard_normal((6, 4)), 0.0101)])
    path = b.save(y, tmp_path / "vector.onnx")
    qgraph, notes = translate(path)
    assert _ops(qgraph) == ["input", "linear", "linear", "clamp", "linear", "output"]
    assert notes["requantizations"] == ["Quant_5"] and notes["output"] == "bound"
    requant = qgraph.weights["Quant_5"]
    assert np.array_equal(requant.codes.numpy(), 127 * np.eye(6, dtype=np.int64))
    model = load(path)
    x = _inputs(model, 200, seed=5)
    equal, worst = agreement(import_qonnx(path), run_qonnx(model, x), x)
    assert equal >= 0.95 and worst <= 1, (equal, worst)

    b = Builder((2, 4, 4))
    y = b.node("Conv", [b.quant("x", 0.0203), b.quant(rng.standard_normal((3, 2, 1, 1)), 0.01)],
               kernel_shape=[1, 1])
    path = b.save(b.node("Flatten", [y]), tmp_path / "conv_out.onnx")
    qgraph, notes = translate(path)
    assert _ops(qgraph) == ["input", "conv2d", "flatten", "output"]
    assert notes["output"] == "bound"


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_weight_codes_follow_every_rounding_mode(mode):
    from qonnx.custom_op.general.quant import quant as int_quant

    rng = np.random.default_rng(0)
    w = np.concatenate([rng.standard_normal(400), np.arange(-9, 10) * 0.25]).astype(np.float32)
    scale = np.float32(0.25 if mode != "ROUND" else 0.01)
    params = quant_params("q", {"rounding_mode": mode, "signed": 1, "narrow": 1},
                          scale, np.float32(0), np.float32(6))
    codes = weight_codes(w, params)
    assert np.array_equal(codes.astype(np.float32) * scale,
                          int_quant(w, scale, np.float32(0), np.float32(6), 1, 1, mode))
    assert codes.min() >= -31 and codes.max() <= 31


# Refusals: one line naming the node, its op_type and the fix.

def _mlp(path, *, act_bits=8, weight_zeropt=0.0, after=None, rounding="ROUND", quant_in=True,
         quant_weight=True, hidden_quant=True):
    rng = np.random.default_rng(0)
    b = Builder((4,))
    x = b.quant("x", 0.02, bits=act_bits, rounding=rounding) if quant_in else "x"
    w = rng.standard_normal((4, 3)).astype(np.float32)
    weight = b.quant(w, 0.01, zeropt=weight_zeropt) if quant_weight else b.const(w)
    y = b.node("MatMul", [x, weight])
    if hidden_quant:
        y = b.quant(y, 0.05)
    if after:
        y = b.node(after, [y])
    return b.save(y, path)


def _two_branches(path):
    rng = np.random.default_rng(0)
    b = Builder((4,))
    x = b.quant("x", 0.02)
    y = [b.quant(b.node("MatMul", [x, b.quant(rng.standard_normal((4, 3)), 0.01)]), 0.05)
         for _ in range(2)]
    return b.save(b.node("Add", y), path)


def _dilated(path):
    b = Builder((1, 6, 6))
    w = np.ones((2, 1, 3, 3), np.float32)
    y = b.node("Conv", [b.quant("x", 0.02), b.quant(w, 0.01)], dilations=[2, 2],
               kernel_shape=[3, 3])
    return b.save(b.quant(y, 0.05), path)


REFUSALS = {
    "sigmoid": (lambda p: _mlp(p, after="Sigmoid"),
                "Node 'Sigmoid_0' (Sigmoid) is not supported; compute it on the host"),
    "act4": (lambda p: _mlp(p, act_bits=4),
             ("Node 'Quant_0' (Quant) quantizes activations to 4 bits; sparqforge's "
              "activations are 8-bit codes: export the activation quantizers with "
              "bit_width=8")),
    "dilation": (_dilated,
                 ("Node 'Conv_0' (Conv) has dilations [2, 2]; sparqforge supports Conv "
                  "with dilation 1")),
    "asymmetric": (lambda p: _mlp(p, weight_zeropt=3.0),
                   ("quantizes the weight of 'MatMul_0' asymmetrically (zero point [3.0]); "
                    "the MAC array multiplies symmetric weights")),
    "float_weight": (lambda p: _mlp(p, quant_weight=False),
                     "Node 'MatMul_0' (MatMul) has a float weight"),
    "floor": (lambda p: _mlp(p, rounding="FLOOR"),
              "rounds activations with FLOOR; sparqforge's requantizer rounds to nearest"),
    "no_input_quant": (lambda p: _mlp(p, quant_in=False),
                       "The network input is not quantized"),
    "unquantized_output": (_two_branches,
                           ("The output of node 'Add_0' (Add) is not quantized; add a Quant "
                            "(QuantIdentity) at the model's output")),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals(tmp_path, case):
    build, message = REFUSALS[case]
    path = build(tmp_path / f"{case}.onnx")
    with pytest.raises(UnsupportedLayerError) as info:
        import_qonnx(path)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_unquantized_hidden_tensor_is_named(tmp_path):
    rng = np.random.default_rng(0)
    b = Builder((4,))
    y = b.node("MatMul", [b.quant("x", 0.02), b.quant(rng.standard_normal((4, 3)), 0.01)])
    y = b.node("MatMul", [b.node("Relu", [y]), b.quant(rng.standard_normal((3, 2)), 0.01)])
    path = b.save(b.quant(y, 0.05), tmp_path / "hidden.onnx")
    with pytest.raises(UnsupportedLayerError, match=r"Node 'MatMul_0' \(MatMul\) gives a tensor "
                                                    r"that no Quant quantizes"):
        translate(path)


def test_bad_files(tmp_path):
    with pytest.raises(QonnxError, match="does not exist"):
        import_qonnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(QonnxError, match="not a readable ONNX model"):
        import_qonnx(tmp_path / "junk.onnx")
    assert issubclass(QonnxError, SparqforgeError)


def test_the_import_command(tmp_path):
    import subprocess
    import sys

    path = features_model(tmp_path / "features.onnx")
    run = subprocess.run([sys.executable, "-m", "sparqforge", "import", str(path), "-o",
                          str(tmp_path / "f.npz")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith(f"imported {path} (QONNX): 6 layers")
    assert load_bundle(tmp_path / "f.npz").input["shape"] == [2, 6, 6]
    missing = subprocess.run([sys.executable, "-m", "sparqforge", "import",
                              str(tmp_path / "none.onnx")], capture_output=True, text=True,
                             cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "does not exist" in missing.stderr and list(tmp_path.glob("none*")) == []
