"""Users' own PyTorch models compiled to bundles: capture, graph quantization, lowering and
``sparqforge.compile``; and export_model's sparsity rule and calibration dtypes.

A corpus of small user-style models (Conv-BN-ReLU, a residual block with a strided 1x1
shortcut, a depthwise-separable block with ReLU6, an MLP with BatchNorm1d and Dropout, a
functional module with fan-out, global average pooling heads) is compiled in each preset on
random data. Every bundle validates and runs on the golden model, and agrees with the
quantized graph evaluated in float (``fake_quant``): layer by layer on the same input codes
within one code, and end to end in argmax and in the dequantized logits.

The bounds (measured over five seeds of this corpus when written: argmax agreement >= 0.967,
mean logit error <= 0.27 codes, largest <= 2 codes with 8-bit activations and <= 18 codes,
7 % of the range, with 4-bit power activations, where one power code flipping at a rounding
tie moves a logit by many codes) are what the integer pipeline's rounding allows: bias
rounding, the fixed-point multipliers and the adds' and pools' integer arithmetic each move a
code by at most one.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparqforge
from sparqforge.errors import UnsupportedLayerError
from sparqforge.sw import digits, golden
from sparqforge.sw.bundle_check import validate
from sparqforge.sw.export import export_model
from sparqforge.sw.frontend import (PRESETS, capture, fake_quant, fake_quant_all, lower,
                                    quantize_graph)
from sparqforge.sw.prune import prune_model
from sparqforge.sw.quantize import ActivationQuantizer, quantize_model
from sparqforge.sw.schemes import SCHEMES


# The corpus.

class ConvBnRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class Residual(nn.Module):
    """A stem, then ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` with a strided 3x3 and
    a strided 1x1 + BN shortcut, an AdaptiveAvgPool2d(1) head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.conv1 = nn.Conv2d(8, 16, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.shortcut = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))
        return self.fc(torch.flatten(self.pool(out), 1))


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 + BN + ReLU6, pointwise 1x1 + BN + ReLU6, a mean head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                                nn.BatchNorm2d(8), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.pw(self.dw(self.stem(x))).mean(dim=(2, 3)))


def mlp():
    """A BatchNorm1d on the input (nothing to fold it into: a diagonal layer), folded ones."""
    return nn.Sequential(nn.BatchNorm1d(20), nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(32, 16, bias=False), nn.BatchNorm1d(16),
                         nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 10))


class Functional(nn.Module):
    """``y`` feeds two convs and an add; an add with a fused ReLU6; a BatchNorm after an add
    (a depthwise 1x1 layer); a clamp after a max pool (a clamp layer); an average pool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 1)
        self.post = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        y = F.relu(self.conv(x))
        z = self.left(y) + y
        z = F.relu6(z + self.right(y))
        z = torch.clamp(F.max_pool2d(self.post(z), 2), min=0)
        return self.fc(F.avg_pool2d(z, 2).flatten(1))


CORPUS = {"conv_bn_relu": (ConvBnRelu, (3, 8, 8)), "residual": (Residual, (3, 8, 8)),
          "depthwise": (DepthwiseSeparable, (3, 8, 8)), "mlp": (mlp, (20,)),
          "functional": (Functional, (3, 8, 8))}
#: Models with a tensor that only matmul layers read after a ReLU (power codes there).
HAS_POWER = ("conv_bn_relu", "residual", "depthwise", "mlp")


def make(kind, seed=0):
    """A corpus model in eval mode with random BatchNorm statistics and affine parameters."""
    torch.manual_seed(seed)
    model = CORPUS[kind][0]()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def inputs(kind, count, seed):
    """Random items; images get a random mean per item and channel, so that what a global
    average pool keeps differs between items (i.i.d. pixels would average it away and leave
    logits that hardly depend on the input, where argmax is a coin toss)."""
    shape = CORPUS[kind][1]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(count, *shape, generator=g)
    return x + 1.5 * torch.randn(count, shape[0], 1, 1, generator=g) if len(shape) == 3 else x


@pytest.fixture(scope="module")
def compiled():
    """(kind, preset) -> (model, quantized graph, bundle), each compiled once."""
    cache = {}

    def get(kind, quant):
        if (kind, quant) not in cache:
            model = make(kind)
            if quant == "sparse24-w4":
                prune_model(model, 2, 4)
            graph = capture(model, inputs(kind, 2, 0))
            qgraph = quantize_graph(graph, inputs(kind, 48, 1), quant=quant, name=kind)
            cache[kind, quant] = model, qgraph, lower(qgraph)
        return cache[kind, quant]
    return get


def bundle_codes(quantizer, values):
    """The bundle's codes of fake-quantized values (channels-last for images)."""
    codes = quantizer.quantize(torch.from_numpy(values)).numpy()
    codes = codes + 128 if quantizer.method == "uniform" and quantizer.signed else codes
    return codes.transpose(0, 2, 3, 1) if codes.ndim == 4 else codes


def layer_errors(qgraph, bundle, x):
    """``{layer: (largest code difference, fraction of codes that differ)}`` between each
    golden layer and the fake-quantized graph, the layer fed the fake-quantized input codes."""
    values = fake_quant_all(qgraph, x)
    codes = {"input": bundle_codes(qgraph.act["input"], values["input"])}
    errors = {}
    for layer in bundle.layers:
        name = layer["name"]
        codes[name] = bundle_codes(qgraph.act[name], values[name])
        out = golden.apply_layer(layer, [codes[i] for i in layer["inputs"]])
        diff = np.abs(out - codes[name])
        errors[name] = (int(diff.max()), float(np.mean(diff > 0)))
    return errors


def end_to_end(qgraph, bundle, x):
    """Argmax agreement, and the largest and mean logit difference relative to the range of
    the fake-quantized logits, between the golden model and ``fake_quant``."""
    expected = fake_quant(qgraph, x)
    got = bundle.dequantize_output(golden.run_network(bundle.layers,
                                                      bundle.quantize_input(x.numpy())))
    span = float(expected.max() - expected.min())
    diff = np.abs(got - expected) / span
    return float(np.mean(got.argmax(1) == expected.argmax(1))), diff.max(), diff.mean()


def check_agreement(qgraph, bundle, x, quant):
    for name, (largest, fraction) in layer_errors(qgraph, bundle, x).items():
        assert largest <= 1 and fraction <= 0.15, (name, largest, fraction)
    agreement, largest, mean = end_to_end(qgraph, bundle, x)
    assert agreement >= 0.95
    assert mean <= 0.5 / 255                                    # half a code on average
    assert largest <= (0.1 if quant == "power-w4" else 3 / 255)


@pytest.mark.parametrize("quant", sorted(PRESETS))
@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_corpus_compiles_and_the_golden_model_agrees_with_fake_quant(compiled, kind, quant):
    model, qgraph, bundle = compiled(kind, quant)
    validate(bundle)
    x = inputs(kind, 200, 2)
    check_agreement(qgraph, bundle, x, quant)
    matmuls = bundle.matmul_layers()
    if quant == "sparse24-w4":
        # Every layer the accelerator runs is marked (the validator checked the codes);
        # depthwise layers run on the host and stay dense.
        assert all((layer["sparsity"] == [2, 4]) != golden.is_depthwise(layer)
                   for layer in matmuls)
    if quant == "power-w4":
        assert any(layer["weight_method"] == "power" for layer in matmuls)
        assert any(layer["output"] == "threshold" for layer in matmuls) == (kind in HAS_POWER)
    if quant == "uniform-w8a8":
        with torch.no_grad():
            reference = model(x).numpy()
        assert np.mean(fake_quant(qgraph, x).argmax(1) == reference.argmax(1)) >= 0.95


def test_the_agreement_check_catches_a_wrong_layer(compiled):
    _, qgraph, bundle = compiled("residual", "uniform-w8a8")
    x = inputs("residual", 200, 2)
    check_agreement(qgraph, bundle, x, "uniform-w8a8")
    layer = next(layer for layer in bundle.layers if layer["name"] == "conv2")
    original = layer["bias"]
    layer["bias"] = original + 2 * np.abs(original).max() + 1000
    try:
        with pytest.raises(AssertionError):
            check_agreement(qgraph, bundle, x, "uniform-w8a8")
        assert layer_errors(qgraph, bundle, x)["conv2"][0] > 1
    finally:
        layer["bias"] = original


def test_presets_are_the_examples_schemes():
    assert set(PRESETS) == set(SCHEMES)


# sparqforge.compile.

def same_bundle(a, b):
    assert (a.input, a.output) == (b.input, b.output) and len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers):
        assert set(x) == set(y)
        for key in x:
            if isinstance(x[key], np.ndarray):
                assert np.array_equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


def test_compile_takes_numpy_torch_any_float_dtype_and_iterables():
    model = make("mlp")
    x = inputs("mlp", 64, 1)
    reference = sparqforge.compile(model, x[:2], calib=x, name="mlp")
    assert reference.info["quant"] == "uniform-w8a8" and reference.name == "mlp"
    for example, calib in ((x[:2].numpy(), x.numpy()), (x[:2].double(), x.double().numpy()),
                           (x[:2].half().numpy(), x),
                           (x[:2], torch.utils.data.DataLoader(
                               torch.utils.data.TensorDataset(x, torch.zeros(64)),
                               batch_size=16))):
        same_bundle(sparqforge.compile(model, example, calib=calib, name="mlp"), reference)
    # float16 calibration data is rounded to float16: a valid bundle, slightly different.
    validate(sparqforge.compile(model, x[:2], calib=x.half(), name="mlp"))
    # Without calib, activations are calibrated on the example and weights are data-free.
    bundle = sparqforge.compile(model, x)
    assert bundle.name == "Sequential"


def test_compile_takes_an_exported_program(tmp_path):
    model = make("residual")
    x = inputs("residual", 32, 1)
    reference = sparqforge.compile(model, x[:2], calib=x, name="r")
    program = torch.export.export(model, (x[:2],))
    same_bundle(sparqforge.compile(program, x[:2], calib=x, name="r"), reference)
    torch.export.save(program, tmp_path / "r.pt2")
    loaded = torch.export.load(tmp_path / "r.pt2")
    same_bundle(sparqforge.compile(loaded, x[:2].numpy(), calib=x, name="r"), reference)
    with pytest.raises(UnsupportedLayerError, match=r"the exported program takes a "
                                                    r"floating-point tensor \[B, 3, 8, 8\]"):
        sparqforge.compile(program, torch.rand(2, 3, 6, 6))


def test_import_sparqforge_does_not_import_torch():
    code = ("import sys, sparqforge; assert 'torch' not in sys.modules; "
            "f = sparqforge.compile; assert 'torch' not in sys.modules; print(f.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "sparqforge.api"


def test_power_activations_follow_the_threshold_unit_and_overrides_apply():
    graph = capture(make("mlp"), inputs("mlp", 2, 0))
    x = inputs("mlp", 48, 1)
    methods = {}
    for bits in (4, 3, 0):
        qgraph = quantize_graph(graph, x, quant="power-w4", threshold_bits=bits, steps=0,
                                layers={"9": {"bits": 8, "method": "uniform"}})
        methods[bits] = {name: (q.method, q.bits) for name, q in qgraph.act.items()}
        assert (qgraph.weights["1"].method, qgraph.weights["9"].method) == ("power", "uniform")
        assert qgraph.weights["9"].bits == 8
        validate(lower(qgraph, threshold_bits=bits))
    assert methods[4]["1"] == ("power", 4) and methods[3]["5"] == ("power", 3)
    assert all(method == "uniform" for method, _ in methods[0].values())
    # The network input and output are 8-bit uniform in every case.
    assert methods[4]["input"] == methods[4]["9"] == ("uniform", 8)


def test_a_briefly_trained_digits_mlp_keeps_its_accuracy():
    x_train, y_train, x_test, y_test = digits.load_digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(),
                          nn.Dropout(0.1), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                          nn.Linear(32, 10))
    digits.train(model, x_train, y_train, epochs=6)
    float_accuracy = digits.evaluate(model, x_test, y_test)
    bundle = sparqforge.compile(model, x_train[:1], calib=x_train[:256], name="digits")
    codes = golden.run_network(bundle.layers, bundle.quantize_input(x_test.numpy()))
    golden_accuracy = float(np.mean(codes.argmax(1) == y_test.numpy()))
    assert float_accuracy > 0.9
    assert golden_accuracy >= float_accuracy - 0.01


# Refusals.

def test_sparse_preset_refuses_a_dense_model():
    model = make("conv_bn_relu")
    with pytest.raises(UnsupportedLayerError, match=(
            r"^Layer 'features.0' \(conv2d\) at test_compile.py:\d+ is dense: its weights are not "
            r"2:4 sparse \(output 0, group 0 holds \d nonzeros\), and sparse24-w4 runs every "
            r"Linear and Conv2d 2:4 sparse; prune the model first: "
            r"sparqforge.sw.prune.NMSparsifier\(model, 2, 4, method='srste'\), fine-tune, then "
            r"finalize\(\)")):
        sparqforge.compile(model, inputs("conv_bn_relu", 8, 0), quant="sparse24-w4")
    # Pruning all but the classifier names the classifier.
    prune_model(model, 2, 4, layers=["features.0", "features.4"])
    with pytest.raises(UnsupportedLayerError,
                       match=r"^Layer 'classifier.1' \(linear\) at test_compile.py:\d+ is dense"):
        sparqforge.compile(model, inputs("conv_bn_relu", 8, 0), quant="sparse24-w4")


class Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))  # line: sigmoid


def test_unsupported_layers_are_refused_by_the_capture():
    with pytest.raises(UnsupportedLayerError, match=r"^Operation 'sigmoid' \(aten.sigmoid\) at "
                                                    r"test_compile.py:\d+ is not supported; "
                                                    r"sparqforge supports Linear, Conv2d"):
        sparqforge.compile(Sigmoid().eval(), torch.rand(2, 4))
    image = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    with pytest.raises(UnsupportedLayerError, match=r"The model returns an image \[B, 4, 6, 6\] "
                                                    r"\(from '0' \(conv2d\)\); .*flatten it"):
        sparqforge.compile(image, torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError, match="needs a torch.nn.Module or a torch.export"):
        sparqforge.compile(lambda x: x, torch.rand(2, 4))


@pytest.mark.parametrize("calib,error,message", [
    (np.zeros((4, 20), dtype=np.complex64), TypeError, "must hold real numbers, not complex64"),
    (torch.zeros(4, 20, dtype=torch.bool), TypeError, "must hold real numbers, not torch.bool"),
    (np.zeros((0, 20)), ValueError, r"is empty \(shape \[0, 20\]\); pass at least one item"),
    ([], ValueError, "is an empty iterable"),
    (np.zeros((4, 21)), ValueError, r"has shape \[4, 21\]; the model takes \[N, 20\]"),
    (np.full((4, 20), np.nan), ValueError, "holds NaN or infinity"),
    ("data.npy", TypeError, "must be a NumPy array, a torch tensor or an iterable of batches"),
])
def test_bad_calibration_data_is_refused(calib, error, message):
    with pytest.raises(error, match=f"^Calibration data .*{message}"):
        sparqforge.compile(make("mlp"), inputs("mlp", 2, 0), calib=calib)


def test_bad_presets_and_overrides_are_refused():
    graph = capture(make("mlp"), inputs("mlp", 2, 0))
    x = inputs("mlp", 8, 1)
    with pytest.raises(ValueError, match=r"Quantization must be one of \['power-w4', "):
        quantize_graph(graph, x, quant="int4")
    with pytest.raises(ValueError, match=r"Layer override 'fc' names no Linear or Conv2d node; "
                                         r"the graph's are \['1', '5', '9'\]"):
        quantize_graph(graph, x, layers={"fc": {"bits": 8}})
    with pytest.raises(ValueError, match=r"must be a dict of 'bits' and/or 'method'"):
        quantize_graph(graph, x, layers={"1": {"width": 8}})
    with pytest.raises(ValueError, match=r"Preset 'sparse24-w4' runs 2:4 sparse, not 1:4"):
        quantize_graph(graph, x, quant="sparse24-w4", sparsity=(1, 4))


def test_lowering_refuses_quantizers_the_integer_layers_cannot_follow(compiled):
    _, qgraph, _ = compiled("depthwise", "uniform-w8a8")
    original = dict(qgraph.act)
    try:
        # ReLU6 fused into 'dw.0': a range beyond 6 would not clamp at 6.
        qgraph.act["dw.0"] = ActivationQuantizer(8, symmetric=False).calibrate(
            torch.tensor([0.0, 9.0]))
        with pytest.raises(UnsupportedLayerError, match=r"'dw.0' \(conv2d\).* clamps at 6.0, "
                                                        r"but its output quantizer reaches 9"):
            lower(qgraph)
    finally:
        qgraph.act.update(original)
    _, qgraph, _ = compiled("conv_bn_relu", "power-w4")
    original = dict(qgraph.act)
    try:
        qgraph.act["features.3"] = ActivationQuantizer(8).calibrate(torch.rand(10))
        with pytest.raises(UnsupportedLayerError, match=r"'features.3' \(maxpool\).* keeps its "
                                                        r"input's codes, but its quantizer"):
            lower(qgraph)
    finally:
        qgraph.act.update(original)


# export_model: N:M sparsity is never dropped in silence; calibration in any float dtype.

@pytest.fixture(scope="module")
def digits_data():
    return digits.load_digits()


def test_export_refuses_sparsity_a_layer_does_not_have(digits_data):
    x = digits_data[0][:64]
    model = digits.make_model("mlp")
    prune_model(model, 2, 4, layers=["1", "3"])
    qmodel = quantize_model(model, bits=4, method="uniform", act_bits=8, act_calib=x)
    # Before: layers '1' and '3' were marked and '5' silently ran dense.
    with pytest.raises(UnsupportedLayerError, match=(
            r"^Layer '5': sparsity 2:4 was asked for, but its weight codes are not 2:4 \(output "
            r"\d+, group \d+ keeps \d nonzeros\), and sparqforge does not run a layer dense in "
            r"silence: prune the model to 2:4 first \(sparqforge.sw.prune.NMSparsifier")):
        export_model(qmodel, x, name="half", sparsity=(2, 4))
    prune_model(model, 2, 4)
    qmodel = quantize_model(model, bits=4, method="uniform", act_bits=8, act_calib=x)
    bundle = export_model(qmodel, x, name="sparse", sparsity=(2, 4))
    assert [layer["sparsity"] for layer in bundle.matmul_layers()] == [[2, 4]] * 3
    assert export_model(qmodel, x, name="dense").matmul_layers()[0]["sparsity"] is None


def test_export_takes_calibration_data_in_any_float_dtype(digits_data):
    x = digits_data[0][:64]
    model = digits.make_model("cnn")
    qmodel = quantize_model(model, bits=8, method="uniform", act_bits=8, act_calib=x)
    reference = export_model(qmodel, x, name="cnn")
    # Before: float64 data met float32 weights (RuntimeError: mat1 and mat2 must have the
    # same dtype), and NumPy arrays reached nn.Flatten (TypeError: flatten()).
    for calib in (x.numpy(), x.double().numpy(), x.double()):
        same_bundle(export_model(qmodel, calib, name="cnn"), reference)
    with pytest.raises(TypeError, match="Calibration data must hold real numbers"):
        export_model(qmodel, x.numpy().astype(np.complex64), name="cnn")
