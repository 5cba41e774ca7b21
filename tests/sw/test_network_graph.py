"""Bundles as layer graphs: hand-built graph bundles (a residual block, a depthwise-separable
block, a branching MLP) validate and evaluate by name; version-1 chains still mean what they
meant; every malformed graph is one BundleError naming the layer; the loader fuzzed on a graph
bundle refuses or runs."""

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparqforge.errors import BundleError
from sparqforge.sw import bundle as bundle_io
from sparqforge.sw import golden
from sparqforge.sw.bundle import Bundle
from sparqforge.sw.bundle_check import validate
from sparqforge.sw.golden import graph_ops

from .test_bundle_integrity import equal, loads_cleanly, members, mutate, mutate_arrays, write

# ---- hand-built graph bundles with random integer parameters ------------------------------


def _requant(rng, n, k, relu):
    # A multiplier that maps a typical accumulator of K random products to about 40 codes.
    real = 40.0 / (np.sqrt(k) * 74 * 147) * rng.uniform(0.5, 2.0, n)
    multiplier, shift = golden.quantize_multiplier(real)
    return {"output": "requant", "bias": rng.integers(-3000, 3000, n),
            "multiplier": multiplier, "shift": shift,
            "zero_point": np.full(n, int(rng.integers(64, 192))),
            "relu": np.full(n, int(relu))}


def linear(rng, name, inputs, k, n, *, relu=False):
    return {"type": "matmul", "name": name, "inputs": inputs, "in_features": k,
            "out_features": n, "weight_bits": 8, "weight": rng.integers(-128, 128, (n, k)),
            "act_table": None, "weight_table": None, "sparsity": None, "conv": None,
            **_requant(rng, n, k, relu)}


def conv(rng, name, inputs, c, h, w, n, *, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
         relu=True, depthwise=False):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    k = kh * kw if depthwise else kh * kw * c
    layer = linear(rng, name, inputs, k, c if depthwise else n, relu=relu)
    layer["pad_code"] = int(rng.integers(0, 256))
    layer["conv"] = {"in_channels": c, "in_height": h, "in_width": w, "kernel": list(kernel),
                     "stride": list(stride), "padding": list(padding),
                     "out_height": (h + 2 * ph - kh) // sh + 1,
                     "out_width": (w + 2 * pw - kw) // sw + 1}
    if depthwise:
        layer["conv"]["groups"] = c
    return layer


def _bundle(name, shape, layers, classes):
    return Bundle(name=name, input={"shape": list(shape), "scale": 0.02, "zero_point": 128},
                  output={"scale": 0.1, "zero_point": 128, "classes": classes}, layers=layers)


def residual_bundle(seed=0, channels=8, size=8, classes=10):
    """conv -> conv -> add with the first conv's output -> ReLU clamp -> global average
    pooling -> linear -> linear."""
    rng = np.random.default_rng(seed)
    conv1 = conv(rng, "conv1", ["input"], 3, size, size, channels)
    conv2 = conv(rng, "conv2", ["conv1"], channels, size, size, channels, relu=False)
    add = graph_ops.add_params(0.05, int(conv2["zero_point"][0]), 0.04,
                               int(conv1["zero_point"][0]), 0.06, 100, relu=False)
    layers = [conv1, conv2,
              {"type": "add", "name": "add", "inputs": ["conv2", "conv1"], **add},
              {"type": "clamp", "name": "relu", "inputs": ["add"], "low": 100, "high": 255},
              {"type": "global_avgpool", "name": "pool", "inputs": ["relu"],
               **graph_ops.global_avgpool_params(0.06, 100, 0.02, 30, size, size)},
              linear(rng, "fc1", ["pool"], channels, 16, relu=True),
              linear(rng, "fc2", ["fc1"], 16, classes)]
    return _bundle("residual", (3, size, size), layers, classes)


def separable_bundle(seed=1, channels=4, size=8, stride=1, classes=10):
    """depthwise conv -> pointwise conv -> avgpool -> flatten -> linear."""
    rng = np.random.default_rng(seed)
    dw = conv(rng, "dw", ["input"], channels, size, size, channels, stride=(stride, stride),
              depthwise=True)
    inner = dw["conv"]["out_height"]
    pw = conv(rng, "pw", ["dw"], channels, inner, inner, 8, kernel=(1, 1), padding=(0, 0))
    pooled = inner // 2
    layers = [dw, pw,
              {"type": "avgpool", "name": "avgpool", "inputs": ["pw"], "kernel": [2, 2],
               "stride": [2, 2]},
              {"type": "flatten", "name": "flatten", "inputs": ["avgpool"]},
              linear(rng, "fc", ["flatten"], 8 * pooled * pooled, classes)]
    return _bundle("separable", (channels, size, size), layers, classes)


def branching_bundle(seed=2, features=16, width=12, classes=10):
    """fc1 -> fc2 -> add(fc2, fc1) -> fc3 -> fc4: fc1 has two readers."""
    rng = np.random.default_rng(seed)
    fc1 = linear(rng, "fc1", ["input"], features, width, relu=True)
    fc2 = linear(rng, "fc2", ["fc1"], width, width)
    add = graph_ops.add_params(0.03, int(fc2["zero_point"][0]), 0.05,
                               int(fc1["zero_point"][0]), 0.05, 90, relu=True)
    layers = [fc1, fc2, {"type": "add", "name": "sum", "inputs": ["fc2", "fc1"], **add},
              linear(rng, "fc3", ["sum"], width, width, relu=True),
              linear(rng, "fc4", ["fc3"], width, classes)]
    return _bundle("branching", (features,), layers, classes)


BUILDERS = {"residual": residual_bundle, "separable": separable_bundle,
            "separable-s2": lambda: separable_bundle(stride=2), "branching": branching_bundle}


def input_codes(bundle, images, seed=0):
    shape = bundle.input["shape"]
    codes = np.random.default_rng(seed).integers(0, 256, (images, *shape))
    return codes.transpose(0, 2, 3, 1) if codes.ndim == 4 else codes


# ---- evaluation ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_graph_bundles_validate_and_round_trip(kind, tmp_path):
    bundle = BUILDERS[kind]()
    validate(bundle)
    loaded = bundle_io.load(bundle_io.save(bundle, tmp_path / f"{kind}.npz"))
    codes = input_codes(bundle, 5)
    out = golden.run_network(bundle.layers, codes)
    assert out.shape == (5, 10)
    assert np.array_equal(golden.run_network(loaded.layers, codes), out)
    assert [layer["inputs"] for layer in loaded.layers] \
        == [layer["inputs"] for layer in bundle.layers]


def test_run_network_is_the_composition_of_the_operators():
    bundle = residual_bundle()
    conv1, conv2, add, clamp, pool, fc1, fc2 = bundle.layers
    x = input_codes(bundle, 6)
    a = golden.apply_layer(conv1, [x])
    b = golden.apply_layer(conv2, [a])
    s = graph_ops.add_layer(b, a, add)
    y = graph_ops.global_avgpool_layer(graph_ops.clamp_layer(s, clamp), pool)
    want = golden.matmul_layer(golden.matmul_layer(y, fc1), fc2)
    got = golden.run_network(bundle.layers, x)
    assert np.array_equal(got, want)
    assert len(np.unique(got)) > 10 and np.all(s >= 0)        # not all clamped
    # The add reads its inputs in order: swapped, the network computes something else.
    swapped = copy.deepcopy(bundle.layers)
    swapped[2]["inputs"] = ["conv1", "conv2"]
    assert not np.array_equal(golden.run_network(swapped, x), got)


def test_depthwise_separable_network_runs_the_depthwise_layer():
    bundle = separable_bundle()
    x = input_codes(bundle, 4)
    dw = bundle.layers[0]
    assert golden.is_depthwise(dw) and not golden.is_depthwise(bundle.layers[1])
    h = golden.apply_layer(dw, [x])
    assert np.array_equal(h, graph_ops.depthwise_conv_layer(x, dw))
    assert h.shape == (4, 8, 8, 4)


def test_version_1_chains_mean_what_they_meant(bundles):
    # A layer list without names and inputs is a chain; with them spelled out, the same.
    bundle = bundles("cnn", "uniform-w8a8")
    assert [layer["inputs"] for layer in bundle.layers] \
        == [["input"]] + [[layer["name"]] for layer in bundle.layers[:-1]]
    chain = [{key: value for key, value in layer.items() if key not in ("name", "inputs")}
             for layer in bundle.layers]
    codes = input_codes(bundle, 7)
    assert np.array_equal(golden.run_network(chain, codes),
                          golden.run_network(bundle.layers, codes))
    assert golden.layer_graph(chain)[:2] == [("layer0", ["input"]), ("layer1", ["layer0"])]


def test_a_version_1_file_is_upgraded_to_a_chain(bundles, tmp_path):
    saved = bundle_io.save(bundles("mlp", "uniform-w8a8"), tmp_path / "mlp.npz")
    meta, arrays = members(saved)
    meta["version"] = 1
    meta.pop("digest")
    for layer in meta["layers"]:
        layer.pop("inputs")
    meta["layers"][1].pop("name")
    write(saved, meta, arrays, digest=False)
    loaded = bundle_io.load(saved)
    names = [layer["name"] for layer in loaded.layers]
    assert names[1] == "layer1"
    assert [layer["inputs"] for layer in loaded.layers] == [["input"]] + [[n] for n in
                                                                          names[:-1]]
    # A version-2 file without a graph was written before graphs: export it again.
    meta["version"] = 2
    write(saved, meta, arrays, digest=True)
    with pytest.raises(BundleError, match="has no layer graph"):
        bundle_io.load(saved)


# ---- malformed graphs ---------------------------------------------------------------------

def _insert(m, index, layer):
    m["layers"].insert(index, layer)


def _flatten_before_pool(m):
    _insert(m, 4, {"type": "flatten", "name": "flat", "inputs": ["relu"]})
    m["layers"][5]["inputs"] = ["flat"]


def _set(layer, key, value):
    return lambda m, a: m["layers"][layer].__setitem__(key, value)


def _set_array(layer, key, index, value):
    def edit(m, a):
        name = m["layers"][layer][key]["array"]
        a[name] = a[name].copy()
        a[name][index] = value
    return edit


# Edits of a saved residual bundle (layers: conv1, conv2, add, relu, pool, fc1, fc2).
CASES = {
    "a cycle via an input named later": (_set(1, "inputs", ["add"]),
                                         r"layer 1 'conv2' \(matmul\): inputs\[0\] 'add' is "
                                         r"not defined before this layer"),
    "a layer reading itself": (_set(3, "inputs", ["relu"]),
                               r"'relu' \(clamp\): inputs\[0\] 'relu' is not defined before"),
    "an undefined input": (_set(2, "inputs", ["conv2", "conv9"]),
                           r"'add' \(add\): inputs\[1\] 'conv9' is no layer of the bundle"),
    "a duplicate name": (_set(1, "name", "conv1"),
                         r"layer 1 'conv1' \(matmul\): name is also the name of layer 0"),
    "a layer named input": (_set(0, "name", "input"),
                            "name 'input' is reserved for the network input"),
    "an empty name": (_set(3, "name", ""), r"layer 3 \(clamp\): name must be a non-empty"),
    "inputs missing": (lambda m, a: m["layers"][3].pop("inputs"),
                       r"layer 3 \(clamp\): inputs is missing"),
    "inputs as a string": (_set(3, "inputs", "add"),
                           "inputs must be a list of 1 layer name"),
    "an input that is not a string": (_set(3, "inputs", [2]),
                                      "inputs must be a list of 1 layer name"),
    "an add with one input": (_set(2, "inputs", ["conv2"]),
                              r"'add' \(add\): inputs must be a list of 2 layer names"),
    "an add with three inputs": (_set(2, "inputs", ["conv2", "conv1", "conv1"]),
                                 "inputs must be a list of 2 layer names"),
    "an add of mismatched shapes": (_set(2, "inputs", ["conv2", "input"]),
                                    r"inputs have shapes \(8, 8, 8\) and \(3, 8, 8\); an add "
                                    r"needs one shape"),
    "a dangling layer": (lambda m, a: _insert(m, 3, {"type": "clamp", "name": "extra",
                                                     "inputs": ["conv1"], "low": 0,
                                                     "high": 255}),
                         r"layer 3 'extra' \(clamp\): no layer reads its output"),
    "the last layer shape": (lambda m, a: m["output"].__setitem__("classes", 9),
                             r"the network produces \(10,\) \(its last layer 'fc2'\), the "
                             r"bundle declares 9 classes"),
    "global average pooling of a vector": (lambda m, a: _flatten_before_pool(m),
                                           r"'pool' \(global_avgpool\): inputs averages an "
                                           r"image, but its input is \(512,\)"),
    "a global average pooling bias": (_set(4, "bias", -63),
                                      r"bias must be -8\*8 times the input zero point"),
    "a global average pooling multiplier": (_set(4, "multiplier", 12345),
                                            r"multiplier must be 0 or in 2\*\*30"),
    "a global average pooling shift": (_set(4, "shift", 31),
                                       r"shift must be an integer in -31\.\.30, not 31"),
    "an add left shift of 19": (_set(2, "left_shift", 19),
                                "left_shift must be 20 .TFLite's 8-bit add., not 19"),
    "an add relu of 2": (_set(2, "relu", 2), r"relu must be an integer in 0\.\.1, not 2"),
    "a boolean add relu": (_set(2, "relu", True), r"relu must be an integer in 0\.\.1, not True"),
    "an add multiplier below 2**30": (_set_array(2, "multiplier", 1, 5),
                                      r"'add' \(add\): multiplier must be 0 or in 2\*\*30"),
    "an add zero point 256": (_set_array(2, "zero_point", 0, 256),
                              r"zero_point has values outside 0\.\.255"),
    "an add shift -32": (_set_array(2, "shift", 2, -32), r"shift has values outside -31\.\.30"),
    "an add multiplier of two values": (
        lambda m, a: a.__setitem__(m["layers"][2]["multiplier"]["array"],
                                   np.array([1 << 30, 1 << 30])),
        r"multiplier has shape \(2,\), expected \(3,\)"),
    "a clamp low above high": (_set(3, "high", 99), "low 100 is above high 99"),
    "a clamp high of 256": (_set(3, "high", 256), r"high must be an integer in 0\.\.255"),
    "an unknown add field": (_set(2, "scale", 1.0), "scale is not a field of this object"),
}


@pytest.fixture
def saved(tmp_path):
    return bundle_io.save(residual_bundle(), tmp_path / "residual.npz")


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_malformed_graph_is_one_error_naming_the_layer(saved, case):
    edit, message = CASES[case]
    meta, arrays = members(saved)
    edit(meta, arrays)
    write(saved, meta, arrays, digest=True)
    with pytest.raises(BundleError, match=message):
        bundle_io.load(saved)


def test_the_graph_cases_start_from_a_valid_bundle(saved):
    meta, arrays = members(saved)
    write(saved, meta, arrays, digest=True)
    assert equal(bundle_io.load(saved), bundle_io.load(saved))
    assert [layer["name"] for layer in meta["layers"]] == ["conv1", "conv2", "add", "relu",
                                                           "pool", "fc1", "fc2"]


DEPTHWISE_CASES = {
    "groups neither 1 nor the channels": (
        lambda layer: layer["conv"].__setitem__("groups", 2),
        r"layer 0 'dw' \(matmul\) conv: groups must be 1 or in_channels 4"),
    "a boolean groups": (lambda layer: layer["conv"].__setitem__("groups", True),
                         r"conv: groups must be an integer in >= 1, not True"),
    "more outputs than channels": (
        lambda layer: layer.update(out_features=8, weight=np.zeros((8, 9), np.int64)),
        "out_features 8 is not the 4 channels of a depthwise convolution"),
    "an ordinary convolution's columns": (
        lambda layer: layer.update(in_features=36, weight=np.zeros((4, 36), np.int64)),
        "in_features 36 is not kernel 3x3 .one channel per output"),
    "a weight of the wrong width": (lambda layer: layer.update(weight=np.zeros((4, 8),
                                                                                np.int64)),
                                    r"weight has shape \(4, 8\), expected \(4, 9\)"),
}


@pytest.mark.parametrize("case", sorted(DEPTHWISE_CASES))
def test_depthwise_layers_are_checked(case):
    edit, message = DEPTHWISE_CASES[case]
    bundle = separable_bundle()
    edit(bundle.layers[0])
    with pytest.raises(BundleError, match=message):
        validate(bundle)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_crafted_graph_bundles_are_refused_or_run(saved, data):
    # The integrity fuzz, on a graph: edits with the digest recomputed are refused with a
    # BundleError or give a network the golden model runs.
    meta, arrays = members(saved)
    target = saved.with_name("crafted.npz")
    if data.draw(st.booleans()):
        write(target, mutate(meta, data), arrays, digest=True)
    else:
        write(target, meta, mutate_arrays(arrays, data), digest=True)
    loaded = loads_cleanly(target)
    if loaded is not None:
        out = golden.run_network(loaded.layers, input_codes(loaded, 2))
        assert out.shape == (2, loaded.output["classes"])
