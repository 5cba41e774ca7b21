"""Convolutions on the device's window walk, on the golden device model: a ``Mode.CONV`` RUN
computes what host im2col followed by a matrix product computes (checked against the golden
model's own im2col, an independent implementation of the windows); malformed geometry is
refused; a chain of convolutions runs as one image segment whose link traffic is the input
and the output only."""

import numpy as np
import pytest

from sparqforge.backends import open_device
from sparqforge.cli.models_bench import run_bundle
from sparqforge.config import AcceleratorConfig
from sparqforge.protocol import (REQUESTS, Command, Mode, RunDescriptor, Space, Status, frame,
                                 unframe_reply)
from sparqforge.sw import golden
from sparqforge.sw.golden import graph_ops
from sparqforge.sw.runtime import layouts
from sparqforge.sw.runtime.device_model import DeviceModel
from sparqforge.sw.runtime.runner import Runner
from sparqforge.sw.runtime.windows import pool_layer

from .test_network_graph import _bundle, conv, input_codes, linear, separable_bundle

CONFIG = AcceleratorConfig(rows=4, cols=8, act_depth=1024, w_depth=2048, groups=16)

#: (h, w, c, kernel, stride, padding, channels out)
GEOMETRIES = [
    (7, 5, 3, (3, 3), (1, 1), (1, 1), 8),      # out_w 5 > rows 4
    (9, 6, 10, (3, 3), (2, 2), (1, 1), 5),     # stride 2, in_c > cols and not a multiple
    (12, 7, 1, (10, 4), (2, 2), (4, 1), 8),    # DS-CNN's first layer's shape
    (4, 4, 17, (1, 1), (1, 1), (0, 0), 3),     # 1x1, k_steps 17
    (3, 2, 2, (2, 1), (1, 1), (0, 0), 9),      # out_w 2 < rows, k_steps 4 == rows
    (6, 6, 4, (5, 5), (1, 3), (2, 0), 16),     # unequal strides, padding on one axis only
]


def _load_layer(model, rng, k, n):
    """Random weights for a ``k``-deep layer of ``n`` channels from word and group 0; the
    weights and requantization parameters as the golden model takes them."""
    cols = model.config.cols
    n_tiles = -(-n // cols)
    weights = rng.integers(-128, 128, (n, k))
    padded = np.zeros((n_tiles * cols, k), dtype=np.int64)
    padded[:n] = weights
    beats = padded.reshape(n_tiles, cols, k).transpose(0, 2, 1).reshape(-1, cols, 1)
    model.weights[:n_tiles * k] = layouts.pack_weight_words(beats, np.zeros_like(beats),
                                                            model.config)
    multiplier, shift = golden.quantize_multiplier(rng.uniform(2e-4, 2e-3, n_tiles * cols))
    params = {"bias": rng.integers(-2000, 2000, n_tiles * cols), "multiplier": multiplier,
              "shift": shift, "zero_point": rng.integers(0, 200, n_tiles * cols),
              "relu": rng.integers(0, 2, n_tiles * cols)}
    for key, value in params.items():
        model.requant[key][:n_tiles] = value.reshape(n_tiles, cols)
    return weights, {key: value[:n] for key, value in params.items()}


def _image(rng, h, w, c):
    """A random image ``[h, w, c]`` and its pixels as the banks store them (``[h * w,
    words * cols]``, channels past ``c`` zero)."""
    image = rng.integers(0, 256, (h, w, c))
    stored = np.zeros((h * w, -(-c // CONFIG.cols) * CONFIG.cols), dtype=np.int64)
    stored[:, :c] = image.reshape(h * w, c)
    return image, stored


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g[:3])))
def test_a_window_run_equals_host_im2col(geometry):
    h, w, c, kernel, stride, padding, n = geometry
    rng = np.random.default_rng(h * w + c)
    model = DeviceModel(CONFIG)
    cols, rows = CONFIG.cols, CONFIG.rows
    words = -(-c // cols)
    image, stored = _image(rng, h, w, c)
    # Through the protocol: one WRITE into every bank.
    model.handle(frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(7)))
    reply = model.handle(frame(2, Command.WRITE, REQUESTS[Command.WRITE].pack(Space.ACT_ALL, 40)
                               + stored.astype(np.uint8).tobytes()))
    assert unframe_reply(reply)[1] == Status.OK
    assert all(np.array_equal(model.act[b, 40:40 + h * w * words].reshape(h * w, -1), stored)
               for b in range(rows))
    kh, kw = kernel
    k = kh * kw * c
    weights, params = _load_layer(model, rng, k, n)
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    m_tiles, n_tiles = -(-oh * ow // rows), -(-n // cols)
    pad_code = int(rng.integers(0, 256))
    run = RunDescriptor.convolution(
        in_shape=(h, w, c), kernel=kernel, stride=stride, padding=padding, pad_code=pad_code,
        a_base=40, words=words, m_tiles=m_tiles, n_tiles=n_tiles, k_steps=k, step=1,
        mode=Mode.CONV, w_base=0, out_base=500, out_stride=n_tiles, group_base=0)
    reply = model.handle(frame(3, Command.RUN, run.pack()))
    assert unframe_reply(reply)[1] == Status.OK
    patches = golden.im2col(image[None], kernel=kernel, stride=stride, padding=padding,
                            pad_code=pad_code)
    want = golden.requantize_layer(
        patches @ weights.T, bias=params["bias"], multiplier=params["multiplier"],
        shift=params["shift"], zero_point=params["zero_point"],
        relu=params["relu"].astype(bool), out_bits=8, out_signed=False)
    assert len(np.unique(want)) > 3
    for bank in range(rows):
        out = model.act[bank, 500:500 + oh * ow * n_tiles].reshape(oh * ow, n_tiles * cols)
        assert np.array_equal(out[:, :n], want), bank


@pytest.mark.parametrize("change", [
    {"in_c": 0}, {"kw": 0}, {"out_w": 0}, {"mode": Mode.CONV | 64},
    {"mode": Mode.DEPTHWISE}, {"mode": Mode.CONV | Mode.DEPTHWISE, "in_c": 2},
])
def test_malformed_window_runs_are_refused(change):
    fields = dict(m_tiles=1, n_tiles=1, k_steps=9, a_base=0, a_stride=1, step=1,
                  mode=Mode.CONV, w_base=0, out_base=100, out_stride=1, group_base=0)
    good = RunDescriptor.convolution(in_shape=(3, 3, 1), kernel=(3, 3), stride=(1, 1),
                                     padding=(1, 1), pad_code=0, a_base=0, words=1,
                                     **{k: v for k, v in fields.items()
                                        if k not in ("a_base", "a_stride")})
    for descriptor, status in ((good, Status.OK),
                               (RunDescriptor(**{**good.__dict__, **change}), Status.RANGE)):
        model = DeviceModel(CONFIG)
        model.handle(frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(7)))
        reply = model.handle(frame(2, Command.RUN, descriptor.pack()))
        assert unframe_reply(reply)[1] == status


def test_an_accelerator_without_the_walk_refuses_window_runs():
    descriptor = RunDescriptor.convolution(
        in_shape=(3, 3, 1), kernel=(3, 3), stride=(1, 1), padding=(1, 1), pad_code=0,
        a_base=0, words=1, m_tiles=3, n_tiles=1, k_steps=9, step=1, mode=Mode.CONV,
        w_base=0, out_base=100, out_stride=1, group_base=0)
    for conv_walk, status in ((True, Status.OK), (False, Status.RANGE)):
        model = DeviceModel(AcceleratorConfig(rows=4, cols=8, conv=conv_walk))
        model.handle(frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(7)))
        assert unframe_reply(model.handle(frame(2, Command.RUN, descriptor.pack())))[1] == status


def conv_chain_bundle(seed=3, size=12, classes=6):
    """Four convolutions in a chain (3x3, stride-2 3x3, 1x1, 10x4 stride 2 with unequal
    padding), global average pooling, a linear layer."""
    rng = np.random.default_rng(seed)
    c1 = conv(rng, "c1", ["input"], 3, size, size - 2, 8)
    c2 = conv(rng, "c2", ["c1"], 8, size, size - 2, 12, stride=(2, 2))
    h2, w2 = c2["conv"]["out_height"], c2["conv"]["out_width"]
    c3 = conv(rng, "c3", ["c2"], 12, h2, w2, 9, kernel=(1, 1), padding=(0, 0))
    c4 = conv(rng, "c4", ["c3"], 9, h2, w2, 16, kernel=(10, 4), stride=(2, 2),
              padding=(4, 1))
    h4, w4 = c4["conv"]["out_height"], c4["conv"]["out_width"]
    layers = [c1, c2, c3, c4,
              {"type": "global_avgpool", "name": "pool", "inputs": ["c4"],
               **graph_ops.global_avgpool_params(0.06, 100, 0.02, 30, h4, w4)},
              linear(rng, "fc", ["pool"], 16, classes)]
    return _bundle("chain", (3, size, size - 2), layers, classes)


def test_a_convolution_chain_stays_on_the_device():
    bundle = conv_chain_bundle()
    codes = input_codes(bundle, 5, seed=2)
    want = golden.run_network(bundle.layers, codes)
    assert len(np.unique(want)) > 5
    results = {}
    for conv_walk in (True, False):
        config = AcceleratorConfig(rows=4, cols=8, act_depth=2048, conv=conv_walk)
        got, runner, link = run_bundle(bundle, codes, config, backend="golden")
        assert np.array_equal(got, want), conv_walk
        results[conv_walk] = runner.schedule, link
    schedule, link = results[True]
    # The convolutions, the pooling and the linear layer after it: one segment.
    assert schedule == [("device", [0, 1, 2, 3, 4, 5])]
    assert results[False][0][0] == ("device", [0])
    # The walk sends each image once and reads the classes back; im2col sends every
    # layer's unrolled input and reads every output.
    assert link * 5 < results[False][1], (link, results[False][1])


def test_convolutions_too_large_for_the_banks_run_in_row_bands():
    bundle = conv_chain_bundle()
    codes = input_codes(bundle, 3, seed=4)
    runner = Runner(bundle, open_device("golden", AcceleratorConfig(rows=4, cols=8,
                                                                    act_depth=128)))
    # c1 reads a 120-word image and writes 120 words: more than 128 together. A band of 5
    # of its 12 output rows reads 7 input rows (70 words) and writes 52 (50 rounded up to
    # the 4 rows). c2 (stride 2) takes 3 of its 5 rows a band; c3, c4 and the pooling fit
    # and chain with the linear layer.
    assert [runner.plans[i].image for i in range(5)] == [True] * 5
    assert [runner.plans[i].band_rows for i in range(5)] == [5, 3, 0, 0, 0]
    assert runner.schedule == [("device", [0]), ("device", [1]), ("device", [2, 3, 4, 5])]
    runner.load()
    assert np.array_equal(runner.infer(codes, batch=2), golden.run_network(bundle.layers, codes))
    # Three bands for c1 and two for c2, per image; one RUN for each later layer.
    assert runner.runs == 3 * (3 + 2 + 4)


def test_a_convolution_whose_one_output_row_does_not_fit_is_lowered_by_im2col():
    # A 3x3 convolution over a 4 x 120 image: one output row reads 3 input rows (360
    # words) and writes 120; 256 words hold neither, but im2col's rows of 2 words fit.
    rng = np.random.default_rng(8)
    c1 = conv(rng, "c1", ["input"], 1, 4, 120, 8)
    bundle = _bundle("wide", (1, 4, 120), [
        c1, {"type": "global_avgpool", "name": "pool", "inputs": ["c1"],
             **graph_ops.global_avgpool_params(0.06, 100, 0.02, 30, 4, 120)},
        linear(rng, "fc", ["pool"], 8, 5)], 5)
    codes = input_codes(bundle, 2, seed=1)
    runner = Runner(bundle, open_device("golden", AcceleratorConfig(
        rows=4, cols=8, act_depth=256, w_depth=8192, groups=16)))
    assert not runner.plans[0].image and runner.plans[0].band_rows == 0
    runner.load()
    assert np.array_equal(runner.infer(codes), golden.run_network(bundle.layers, codes))


@pytest.mark.parametrize("geometry", [
    (9, 7, 12, (3, 3), (2, 2), (1, 1)),        # two channel tiles, the second partly used
    (6, 5, 8, (3, 3), (1, 1), (1, 1)),
    (12, 5, 16, (10, 4), (1, 1), (4, 1)),
], ids=lambda g: "x".join(map(str, g[:3])))
def test_a_depthwise_run_equals_the_golden_depthwise_layer(geometry):
    h, w, c, kernel, stride, padding = geometry
    rng = np.random.default_rng(c + h)
    model = DeviceModel(CONFIG)
    cols, rows = CONFIG.cols, CONFIG.rows
    words = -(-c // cols)
    image, stored = _image(rng, h, w, c)
    model.act[:, 8:8 + h * w * words] = stored.reshape(-1, cols)[None]
    kh, kw = kernel
    weights, params = _load_layer(model, rng, kh * kw, c)
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    pad_code = int(rng.integers(0, 256))
    run = RunDescriptor.convolution(
        in_shape=(h, w, 1), kernel=kernel, stride=stride, padding=padding, pad_code=pad_code,
        a_base=8, words=words, m_tiles=-(-oh * ow // rows), n_tiles=words, k_steps=kh * kw,
        step=1, mode=Mode.CONV | Mode.DEPTHWISE, w_base=0, out_base=600, out_stride=words,
        group_base=0)
    model.run(run)
    layer = {"weight": weights, "pad_code": pad_code, "output": "requant", **params,
             "conv": {"kernel": list(kernel), "stride": list(stride), "padding": list(padding),
                      "out_height": oh, "out_width": ow, "groups": c}}
    want = golden.depthwise_conv_layer(image[None], layer)[0].reshape(oh * ow, c)
    assert len(np.unique(want)) > 3
    out = model.act[rows - 1, 600:600 + oh * ow * words].reshape(oh * ow, words * cols)
    assert np.array_equal(out[:, :c], want)


@pytest.mark.parametrize("changes", [{"packed_products": True}, {"sparsity": (2, 4)},
                                     {"conv": False}])
def test_depthwise_runs_need_columns_of_their_own(changes):
    config = AcceleratorConfig(rows=4, cols=8, **changes)
    assert not config.depthwise
    descriptor = RunDescriptor.convolution(
        in_shape=(3, 3, 1), kernel=(3, 3), stride=(1, 1), padding=(1, 1), pad_code=0,
        a_base=0, words=1, m_tiles=3, n_tiles=1, k_steps=9, step=1,
        mode=Mode.CONV | Mode.DEPTHWISE, w_base=0, out_base=100, out_stride=1, group_base=0)
    model = DeviceModel(config)
    model.handle(frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(7)))
    assert unframe_reply(model.handle(frame(2, Command.RUN, descriptor.pack())))[1] \
        == Status.RANGE


@pytest.mark.parametrize("stride", [1, 2])
def test_a_separable_block_runs_on_the_device_when_columns_are_free(stride):
    bundle = separable_bundle(channels=12, stride=stride)
    codes = input_codes(bundle, 4, seed=7)
    want = golden.run_network(bundle.layers, codes)
    for changes, schedule in (
            ({}, [("device", [0, 1, 2]), ("host", 3), ("device", [4])]),
            ({"packed_products": True},
             [("host", 0), ("device", [1]), ("host", 2), ("host", 3), ("device", [4])])):
        config = AcceleratorConfig(rows=4, cols=8, act_depth=512, **changes)
        runner = Runner(bundle, open_device("golden", config))
        assert runner.schedule == schedule
        runner.load()
        assert np.array_equal(runner.infer(codes, batch=3), want), changes


@pytest.mark.parametrize("count", [1, 2, 3, 4, 6, 9, 16, 25, 49, 64, 100, 125])
def test_an_average_is_the_requantized_sum_for_every_sum(count):
    """Average pooling runs as a depthwise sum and its requantization: the same code as the
    golden model's rounded mean for every sum a window of ``count`` codes can have."""
    layer = pool_layer({"type": "avgpool", "name": "pool", "inputs": ["x"],
                        "kernel": [count, 1], "stride": [1, 1]}, (count, 1, 1))
    sums = np.arange(255 * count + 1)
    got = golden.layer_output(sums[:, None], layer)[:, 0]
    # Windows of ``count`` codes (a column of the image) that sum to each s.
    x = np.clip(sums[:, None] - 255 * np.arange(count)[None], 0, 255)
    want = golden.avg_pool(x.reshape(len(sums), count, 1, 1), kernel=(count, 1),
                           stride=(1, 1))
    assert np.array_equal(x.sum(axis=1), sums)
    assert np.array_equal(got, want.reshape(-1))
