"""Residual adds on the device: the add table's encoding against TFLite's ADD for every pair of
codes, and residual networks whose adds run in image segments on the golden device (every
output code the golden model's), with shortcuts kept in the banks, spilled to the host and
compacted when the banks are full, and tables shared by more adds than the device holds."""

import numpy as np
import pytest

from sparqforge.cli.models_bench import run_bundle
from sparqforge.config import AcceleratorConfig
from sparqforge.protocol import ADD_TABLES, Mode
from sparqforge.sw import golden
from sparqforge.sw.golden import graph_ops
from sparqforge.sw.runtime import image_segments
from sparqforge.sw.runtime.planning import CompileError, ceil_div
from sparqforge.sw.runtime.residual import TAP_WEIGHTS, add_table

from .test_network_graph import _bundle, conv, input_codes, linear

#: (s1, z1, s2, z2, s_out, z_out, relu): scales far apart and alike, zero points at the ends.
ADDS = [(0.05, 130, 0.04, 120, 0.06, 100, False), (0.5, 128, 0.25, 0, 0.5, 100, True),
        (0.001, 0, 0.3, 255, 0.4, 250, False), (0.1, 255, 0.1, 255, 0.4, 255, False),
        (0.02, 7, 0.021, 250, 0.0004, 128, False)]


@pytest.mark.parametrize("params", ADDS)
def test_the_add_table_is_tflite_add_for_every_pair_of_codes(params):
    layer = graph_ops.add_params(*params)
    a, b = (x.ravel() for x in np.meshgrid(np.arange(256), np.arange(256)))
    # What the device computes: the walk's accumulator of the tap weights, the two table
    # lookups, then the requantizer's output (no bias).
    acc = np.array(TAP_WEIGHTS[:2]).sum() * a + np.array(TAP_WEIGHTS[2:]).sum() * b
    table = add_table(layer)
    total = table[0][acc & 0xFF] + table[1][(acc >> 8) & 0xFF]
    got = golden.requantize_layer(
        total, bias=0, multiplier=layer["multiplier"][2], shift=layer["shift"][2],
        zero_point=layer["zero_point"][2], relu=bool(layer["relu"]), out_bits=8,
        out_signed=False)
    want = graph_ops.add_layer(a, b, layer)
    assert len(np.unique(want)) > 50
    assert np.array_equal(got, want)


def deep_residual_bundle(seed=5, channels=8, size=8, blocks=2, classes=7, kernel=3):
    """A stem, then ``blocks`` blocks of conv -> conv -> add(shortcut) with a fused ReLU, the
    last with a 1x1 stride-2 convolution on the shortcut; global pooling, linear. The
    blocks' convolutions are ``kernel`` x ``kernel`` ("same" padding)."""
    rng = np.random.default_rng(seed)
    layers = [conv(rng, "stem", ["input"], 3, size, size, channels)]
    x = "stem"
    window = {"kernel": (kernel, kernel), "padding": (kernel // 2, kernel // 2)}
    for k in range(blocks):
        last = k == blocks - 1
        stride = 2 if last else 1
        inner = (size - 1) // stride + 1
        c1 = conv(rng, f"b{k}c1", [x], channels, size, size, channels, stride=(stride, stride),
                  **window)
        c2 = conv(rng, f"b{k}c2", [f"b{k}c1"], channels, inner, inner, channels, relu=False,
                  **window)
        layers += [c1, c2]
        shortcut = x
        if last:
            layers.append(conv(rng, f"b{k}sc", [x], channels, size, size, channels,
                               kernel=(1, 1), stride=(2, 2), padding=(0, 0), relu=False))
            shortcut = f"b{k}sc"
        first = layers[-1] if last else c2
        add = graph_ops.add_params(0.05, int(c2["zero_point"][0]), 0.04 + 0.01 * k,
                                   int(first["zero_point"][0]), 0.06, 90, relu=True)
        layers.append({"type": "add", "name": f"add{k}", "inputs": [f"b{k}c2", shortcut],
                       **add})
        x, size = f"add{k}", inner
    layers += [{"type": "global_avgpool", "name": "pool", "inputs": [x],
                **graph_ops.global_avgpool_params(0.06, 90, 0.02, 30, size, size)},
               linear(rng, "fc", ["pool"], channels, classes)]
    return _bundle("deep-residual", (3, layers[0]["conv"]["in_height"],
                                     layers[0]["conv"]["in_width"]), layers, classes)


def residual_block_bundle(size=8, kernel=3, seed=5):
    """The stem and the first block of :func:`deep_residual_bundle`: the network's output is
    the add's image, every code of it."""
    layers = deep_residual_bundle(size=size, kernel=kernel, seed=seed).layers[:4]
    return _bundle("block", (3, size, size), layers, size * size * 8)


def _adds(bundle):
    return [i for i, layer in enumerate(bundle.layers) if layer["type"] == "add"]


@pytest.mark.parametrize("depth,spilled,banded", [(1024, 0, 0), (128, 0, 1), (128, 64, 0)],
                         ids=["room", "bands", "spill"])
def test_residual_blocks_run_on_the_device(depth, spilled, banded, monkeypatch):
    if spilled:
        # The fallback when a block cannot run in bands: the shortcut through the host.
        monkeypatch.setattr(image_segments._Segment, "_residual_block", lambda *_: None)
    bundle = deep_residual_bundle()
    codes = input_codes(bundle, 3, seed=1)
    want = golden.run_network(bundle.layers, codes)
    assert len(np.unique(want)) > 4
    config = AcceleratorConfig(rows=4, cols=8, act_depth=depth, w_depth=2048, groups=32)
    got, runner, _ = run_bundle(bundle, codes, config, backend="golden", batch=2)
    assert np.array_equal(got, want)
    # The whole network is one segment; every add is a RUN through the tables.
    assert runner.schedule == [("device", list(range(len(bundle.layers))))]
    assert all(runner.plans[i].mode & Mode.ADD for i in _adds(bundle))
    assert all(row["where"] == "device" for row in runner.report())
    # 8x8x8 images take 64 words. In 1024 words every image stays. In 128 the first
    # block's three images do not fit together: it runs in bands of rows (the second block
    # shrinks the image), or its shortcut (64 words) is read back while its second
    # convolution runs, and written again for the add; once per image.
    assert runner.spilled_words == spilled * len(codes)
    assert runner.banded_blocks == banded * len(codes)
    assert runner.compactions == 0


#: Residual blocks whose three images do not fit the banks, though any two do: (map size,
#: kernel, act_depth). 10x10 maps make bands whose last is shorter; 5x5 kernels reach two
#: rows into the neighbouring bands.
BLOCKS = [(8, 3, 128), (10, 3, 256), (16, 3, 512), (16, 5, 512), (10, 5, 256)]


@pytest.mark.parametrize("size,kernel,depth", BLOCKS + [(8, 5, 128)])
def test_residual_blocks_run_in_bands_when_their_images_do_not_fit(size, kernel, depth):
    # The network ends with the first block's add: every code of its image is compared.
    bundle = residual_block_bundle(size, kernel, seed=size + kernel)
    codes = input_codes(bundle, 2, seed=kernel)
    want = golden.run_network(bundle.layers, codes)
    assert len(np.unique(want)) > 30 and not np.array_equal(want[0], want[1])
    config = AcceleratorConfig(rows=4, cols=8, act_depth=depth, w_depth=4096, groups=32)
    image = size * size * ceil_div(8, config.cols)
    assert 2 * image <= depth < 3 * image
    got, runner, _ = run_bundle(bundle, codes, config, backend="golden")
    assert np.array_equal(got, want)
    if (size, kernel, depth) in BLOCKS:
        assert runner.banded_blocks == len(codes)
        assert runner.spilled_words == runner.compactions == 0
    else:
        # 8x8 maps in 128 words leave room for bands of at most 2 rows; with 5x5 kernels
        # band k + 2 would read rows of band k that its add has overwritten: the shortcut
        # goes through the host instead.
        assert runner.banded_blocks == 0
        assert runner.spilled_words > 0


def test_images_are_laid_out_afresh_when_the_banks_are_fragmented(monkeypatch):
    # Without putting each output at the other end of the banks from its input, the stem's
    # 128-word output lands after its 64-word input and leaves two 64-word holes in 256
    # words: the first convolution's output fits neither, and the stem's output is moved.
    # (Its residual blocks would run in bands: the shortcut is spilled instead.)
    take = image_segments._Segment._take
    monkeypatch.setattr(image_segments._Segment, "_take",
                        lambda self, size, top=False: take(self, size))
    monkeypatch.setattr(image_segments._Segment, "_residual_block", lambda *_: None)
    bundle = deep_residual_bundle(channels=16)
    codes = input_codes(bundle, 2, seed=6)
    config = AcceleratorConfig(rows=4, cols=8, act_depth=256, w_depth=2048, groups=32)
    got, runner, _ = run_bundle(bundle, codes, config, backend="golden")
    assert runner.compactions > 0
    assert np.array_equal(got, golden.run_network(bundle.layers, codes))


def test_more_adds_than_tables_share_them():
    bundle = deep_residual_bundle(blocks=ADD_TABLES + 2, seed=9)
    codes = input_codes(bundle, 2, seed=2)
    want = golden.run_network(bundle.layers, codes)
    config = AcceleratorConfig(rows=4, cols=8, act_depth=1024, w_depth=4096, groups=64)
    got, runner, _ = run_bundle(bundle, codes, config, backend="golden")
    assert np.array_equal(got, want)
    slots = [runner.add_tables.slots[i] for i in _adds(bundle)]
    assert slots == [k % ADD_TABLES for k in range(ADD_TABLES + 2)]


@pytest.mark.parametrize("changes", [{"packed_products": True}, {"conv": False}])
def test_adds_stay_on_the_host_without_depthwise_columns(changes):
    bundle = deep_residual_bundle()
    codes = input_codes(bundle, 2, seed=3)
    config = AcceleratorConfig(rows=4, cols=8, act_depth=1024, w_depth=2048, groups=32,
                               **changes)
    got, runner, _ = run_bundle(bundle, codes, config, backend="golden")
    assert np.array_equal(got, golden.run_network(bundle.layers, codes))
    assert all(("host", i) in runner.schedule for i in _adds(bundle))


def test_a_depthwise_layer_in_parts_reads_each_part_s_channels():
    # 40 channels are 5 channel tiles; 2 channel groups make the layer run in 3 parts,
    # each of which must read its own tiles' words of every pixel.
    rng = np.random.default_rng(4)
    dw = conv(rng, "dw", ["input"], 40, 5, 5, 40, depthwise=True)
    bundle = _bundle("dw-parts", (40, 5, 5), [
        dw, {"type": "global_avgpool", "name": "pool", "inputs": ["dw"],
             **graph_ops.global_avgpool_params(0.06, 100, 0.02, 30, 5, 5)},
        linear(rng, "fc", ["pool"], 40, 6)], 6)
    codes = input_codes(bundle, 2, seed=5)
    config = AcceleratorConfig(rows=4, cols=8, act_depth=512, w_depth=512, groups=2)
    got, runner, _ = run_bundle(bundle, codes, config, backend="golden")
    assert len(runner.plans[0].parts) == 3
    assert np.array_equal(got, golden.run_network(bundle.layers, codes))


def test_tables_that_could_overflow_the_sum_are_refused():
    # Multipliers no TFLite ADD has (input scales far above the output's twice): entries
    # near 2**31 whose sum would wrap in the device's 32-bit adder.
    layer = dict(graph_ops.add_params(0.05, 128, 0.04, 0, 0.06, 100, relu=False),
                 name="add", shift=np.array([8, 8, -18]))
    with pytest.raises(CompileError, match="Add 'add': its rescaled inputs can overflow"):
        add_table(layer)
