"""N:M-pruned models keep their pattern through data-driven quantization (``mask=`` of
quantize_weight, ``sparsity=`` of quantize_model), and the presets of quantize_model."""

import numpy as np
import pytest
import torch
from torch import nn

from sparqforge.errors import UnsupportedLayerError
from sparqforge.sw import digits, nm_format, prune
from sparqforge.sw.export import export_model
from sparqforge.sw.quantize import presets, quantize_model, quantize_weight, unfold_inputs


def violation(codes, n=2, m=4):
    """The first group of the codes' (conv-permuted) matrix with more than ``n`` nonzeros."""
    return nm_format.find_violation(prune.weight_matrix(codes).numpy(), n, m)


def objective(weight, qweight, x):
    """The layer-output error ``||X W^T - X What^T||^2 / N`` on the layer's input rows."""
    w = weight.detach().to(torch.float64).reshape(weight.shape[0], -1)
    what = qweight.dequantize(torch.float64).reshape(w.shape)
    return float(((x.to(torch.float64) @ (w - what).T) ** 2).sum() / len(x))


@pytest.fixture(scope="module")
def data():
    return digits.load_digits()


@pytest.fixture(scope="module")
def pruned(data):
    """Briefly trained digits MLP and CNN, every Linear/Conv2d one-shot pruned to 2:4."""
    models = {}
    for kind in ("mlp", "cnn"):
        model = digits.train(digits.make_model(kind), data[0], data[1], epochs=4)
        prune.prune_model(model, 2, 4)
        models[kind] = model
    return models


def layer_inputs(qmodel, x):
    """The input rows each Linear/Conv2d saw in quantize_model (after its input quantizer,
    through the quantized layers before it), by name."""
    model = qmodel.fake_quant_model()
    seen = {}
    for name in qmodel.layers:
        inner = getattr(model, name).layer
        inner.register_forward_pre_hook(
            lambda mod, args, name=name: seen.__setitem__(name, unfold_inputs(mod, args[0])))
    with torch.no_grad():
        model(x)
    return seen


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["uniform", "power"])
def test_data_driven_quantization_keeps_every_layer_2_4(pruned, data, kind, method):
    model, calib = pruned[kind], data[0][:128]
    qmodel = quantize_model(model, bits=4, method=method, act_bits=8, calib=calib, steps=30)
    for name, qlayer in qmodel.layers.items():
        weight = getattr(model, name).weight
        assert violation(qlayer.weight.codes) is None, (kind, method, name)
        assert qlayer.sparsity == (2, 4)
        assert torch.equal(qlayer.weight.mask, weight != 0)
        assert not qlayer.weight.codes[weight == 0].any()
        assert qlayer.weight.data_driven
    # And the accelerator runs every layer in sparse mode.
    bundle = export_model(qmodel, calib, name=f"{kind}-sparse", sparsity=(2, 4))
    assert all(layer["sparsity"] == [2, 4] for layer in bundle.matmul_layers())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_without_the_mask_data_driven_codes_break_the_pattern(pruned, data, kind):
    # What quantize_model did before masks (sparsity=None): the error feedback and the
    # refinement move pruned codes off zero, so the checks above are not vacuous.
    qmodel = quantize_model(pruned[kind], bits=4, method="uniform", act_bits=8,
                            calib=data[0][:128], steps=30, sparsity=None)
    broken = [name for name, ql in qmodel.layers.items() if violation(ql.weight.codes)]
    assert broken, "every layer stayed 2:4 without a mask"
    assert all(ql.sparsity is None and ql.weight.mask is None
               for ql in qmodel.layers.values())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["uniform", "power"])
def test_masked_data_driven_beats_masked_data_free_on_the_layer_objective(pruned, data, kind,
                                                                          method):
    model, calib = pruned[kind], data[0][:128]
    qmodel = quantize_model(model, bits=4, method=method, act_bits=8, calib=calib, steps=30)
    inputs = layer_inputs(qmodel, calib)
    gains = []
    for name, qlayer in qmodel.layers.items():
        weight = getattr(model, name).weight
        free = quantize_weight(weight, 4, method, mask=weight != 0)
        assert violation(free.codes) is None
        driven, baseline = (objective(weight, q, inputs[name]) for q in (qlayer.weight, free))
        assert driven <= baseline * (1 + 1e-9), (name, driven, baseline)
        gains.append(driven / baseline)
    # Not merely "no worse": the searches did something on the pruned layers.
    assert min(gains) < 0.5, gains


@pytest.mark.parametrize("method", ["uniform", "power"])
def test_the_mask_zeroes_codes_of_a_dense_weight_and_the_kept_ones_compensate(method):
    # A mask over weights that are not zero (pruning and quantization at once): the codes are
    # zero outside the mask, and the data-driven search compensates for the pruned weights
    # (it beats pruning first and quantizing the rest data-free on the output error).
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(16, 32, generator=gen, dtype=torch.float64)
    # Correlated inputs (32 features from 8 factors, plus noise), as layer inputs are: a
    # pruned weight's contribution can then be carried by the kept ones.
    x = (torch.randn(512, 8, generator=gen, dtype=torch.float64)
         @ torch.randn(8, 32, generator=gen, dtype=torch.float64)
         + 0.1 * torch.randn(512, 32, generator=gen, dtype=torch.float64))
    mask = prune.nm_mask(w, 2, 4)
    driven = quantize_weight(w, 4, method, inputs=x, mask=mask, steps=50)
    free = quantize_weight(w * mask, 4, method, mask=mask)
    for q in (driven, free):
        assert not q.codes[~mask].any() and violation(q.codes) is None
    assert objective(w, driven, x) < 0.5 * objective(w, free, x)
    # The data-free search ignores what the mask drops: the same as on the pruned weight.
    assert torch.equal(quantize_weight(w, 4, method, mask=mask).codes, free.codes)


def test_mask_errors():
    w = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"Mask must have the weight's shape \[4, 8\], not "
                                         r"\[4, 4\]"):
        quantize_weight(w, 4, "uniform", mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="Mask must hold booleans"):
        quantize_weight(w, 4, "uniform", mask=torch.ones(4, 8))
    with pytest.raises(TypeError, match="Mask must be a boolean torch tensor or NumPy array"):
        quantize_weight(w, 4, "uniform", mask=[[True] * 8] * 4)
    with pytest.raises(ValueError, match="use symmetric=True with a mask"):
        quantize_weight(w, 4, "uniform", symmetric=False, mask=w != 0)
    # A NumPy mask works like a tensor.
    mask = prune.nm_mask(w, 2, 4)
    q = quantize_weight(w, 4, "power", mask=mask.numpy())
    assert torch.equal(q.mask, mask) and not q.codes[~mask].any()


def test_auto_keeps_only_the_pruned_layers(data):
    model = digits.train(digits.make_model("mlp"), data[0], data[1], epochs=2)
    dense = quantize_model(model, bits=4, method="uniform", act_bits=8, calib=data[0][:64],
                           steps=5)
    assert all(ql.sparsity is None and ql.weight.mask is None for ql in dense.layers.values())
    prune.prune_model(model, 2, 8, layers=["3"])
    prune.prune_model(model, 1, 4, layers=["5"])
    partly = quantize_model(model, bits=4, method="power", act_bits=8, calib=data[0][:64],
                            steps=5)
    assert {n: ql.sparsity for n, ql in partly.layers.items()} == {
        "1": None, "3": (2, 8), "5": (1, 4)}
    assert violation(partly.layers["3"].weight.codes, 2, 8) is None
    assert violation(partly.layers["5"].weight.codes, 1, 4) is None
    # An explicit pattern: every layer must have it (as the accelerator runs the model).
    with pytest.raises(UnsupportedLayerError, match=r"Layer '1' \(Linear\) is dense: its "
                                                    r"weights are not 2:8 sparse \(output 0, "
                                                    r"group 0 holds 8 nonzeros\), and "
                                                    r"sparsity=\(2, 8\) asks to run every"):
        quantize_model(model, act_bits=8, calib=data[0][:64], sparsity=(2, 8))
    prune.prune_model(model, 2, 8, layers=["1"])
    explicit = quantize_model(model, bits=4, method="power", act_bits=8, calib=data[0][:64],
                              steps=5, sparsity=(2, 8))
    assert {n: ql.sparsity for n, ql in explicit.layers.items()} == {
        "1": (2, 8), "3": (2, 8), "5": (2, 8)}
    assert all(violation(ql.weight.codes, 2, 8) is None for ql in explicit.layers.values())
    with pytest.raises(ValueError, match="N:M sparsity requires 0 < N <= M, not 5:4"):
        quantize_model(model, act_bits=8, calib=data[0][:64], sparsity=(5, 4))
    with pytest.raises(ValueError, match="sparsity must be 'auto', None or a pattern"):
        quantize_model(model, act_bits=8, calib=data[0][:64], sparsity="2:4")


# -- presets ---------------------------------------------------------------------------------

def test_presets_are_the_example_schemes():
    from sparqforge.sw.schemes import SCHEMES

    assert presets.PRESETS == SCHEMES
    for name in SCHEMES:
        assert set(presets.expand(name, 3)) == {"bits", "method", "act_bits", "act_method",
                                                 "sparsity"}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_power_w4_preset_builds_the_per_layer_lists(data, kind):
    model = digits.train(digits.make_model(kind), data[0], data[1], epochs=2)
    settings = presets.expand("power-w4", model)
    assert settings["act_bits"] == [8, 4, 4]
    assert settings["act_method"] == ["uniform", "power", "power"]
    calib = data[0][:64]
    by_preset = quantize_model(model, preset="power-w4", calib=calib, steps=5)
    by_hand = quantize_model(model, bits=4, method="power", act_bits=[8, 4, 4],
                             act_method=["uniform", "power", "power"], calib=calib, steps=5)
    for name, ql in by_preset.layers.items():
        other = by_hand.layers[name]
        assert torch.equal(ql.weight.codes, other.weight.codes)
        assert ql.weight.method == "power" and ql.weight.bits == 4
        assert (ql.input_quantizer.method, ql.input_quantizer.bits) == (
            other.input_quantizer.method, other.input_quantizer.bits)
    methods = [ql.input_quantizer.method for ql in by_preset.layers.values()]
    assert methods == ["uniform", "power", "power"]
    # The bundle the example exports with this scheme.
    export_model(by_preset, calib, name="preset")


def test_sparse24_preset(pruned, data):
    qmodel = quantize_model(pruned["cnn"], preset="sparse24-w4", calib=data[0][:64], steps=5)
    for ql in qmodel.layers.values():
        assert (ql.weight.method, ql.weight.bits, ql.sparsity) == ("uniform", 4, (2, 4))
        assert violation(ql.weight.codes) is None
    partly = digits.make_model("cnn")
    prune.prune_model(partly, 2, 4, layers=["0", "3"])
    with pytest.raises(UnsupportedLayerError, match=r"Layer '7' \(Linear\) is dense: .* and "
                                                    r"preset 'sparse24-w4' runs every Linear "
                                                    r"and Conv2d 2:4 sparse; prune the model "
                                                    r"first: sparqforge.sw.prune.NMSparsifier"):
        quantize_model(partly, preset="sparse24-w4", calib=data[0][:64])


def test_preset_errors(data):
    model = digits.make_model("mlp")
    with pytest.raises(ValueError, match=r"preset='power-w4' sets bits, method, act_bits, "
                                         r"act_method and sparsity; pass the preset or bits, "
                                         r"act_bits, not both"):
        quantize_model(model, preset="power-w4", bits=4, act_bits=8, calib=data[0][:8])
    with pytest.raises(ValueError, match=r"Quantization preset must be one of \['power-w4', "
                                         r"'sparse24-w4', 'uniform-w8a8'\], not 'w4'"):
        quantize_model(model, preset="w4", calib=data[0][:8])
    with pytest.raises(ValueError, match="at least one Linear or Conv2d"):
        presets.expand("power-w4", nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="torch.nn.Module or a layer count, not str"):
        presets.expand("power-w4", "mlp")


def test_digits_schemes_still_export(bundles):
    # sw/digits.py builds the power-w4 lists by hand and quantizes sparse24-w4 data-free;
    # both still give the bundles they did (2:4 in every layer for the sparse scheme).
    assert all(layer["sparsity"] == [2, 4]
               for layer in bundles("mlp", "sparse24-w4").matmul_layers())
    assert [layer["input_method"] for layer in bundles("cnn", "power-w4").matmul_layers()] == [
        "uniform", "power", "power"]
    assert np.all([layer["weight_method"] == "power"
                   for layer in bundles("cnn", "power-w4").matmul_layers()])
