"""The runtime on graph bundles: device segments are chains of matmul layers, everything else
runs on the host, the result equals the golden network bit for bit, and the per-layer report
accounts for every MAC and every device cycle."""

import numpy as np
import pytest

from sparqforge.backends import open_device
from sparqforge.config import PRESETS
from sparqforge.sw import golden
from sparqforge.sw.bundle_check import validate
from sparqforge.sw.runtime.runner import Runner, layer_macs

from .test_network_graph import (BUILDERS, branching_bundle, input_codes, residual_bundle,
                                 separable_bundle)


def golden_device():
    return open_device("golden", PRESETS["demo"])


#: MACs per inference of each hand-built network, from its architecture.
NETWORK_MACS = {
    # conv1 3x3x3 -> 8 and conv2 3x3x8 -> 8 over 8x8 positions, fc1 8 -> 16, fc2 16 -> 10
    "residual": 27 * 8 * 64 + 72 * 8 * 64 + 8 * 16 + 16 * 10,
    # depthwise 3x3 on 4 channels and pointwise 4 -> 8 over 8x8, fc 8*4*4 -> 10
    "separable": 9 * 4 * 64 + 4 * 8 * 64 + 128 * 10,
    # the same with a stride-2 depthwise: 4x4 positions, fc 8*2*2 -> 10
    "separable-s2": 9 * 4 * 16 + 4 * 8 * 16 + 32 * 10,
    "branching": 16 * 12 + 12 * 12 + 12 * 12 + 12 * 10,
}

SCHEDULES = {
    "residual": [("device", [0]), ("device", [1]), ("host", 2), ("host", 3), ("host", 4),
                 ("device", [5, 6])],
    "separable": [("host", 0), ("device", [1]), ("host", 2), ("host", 3), ("device", [4])],
    # fc1 has two readers: fc2 starts a segment of its own; fc3 -> fc4 is one segment.
    "branching": [("device", [0]), ("device", [1]), ("host", 2), ("device", [3, 4])],
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_graph_bundles_run_on_the_device_as_the_golden_network(kind):
    bundle = BUILDERS[kind]()
    validate(bundle)
    codes = input_codes(bundle, 11, seed=5)
    runner = Runner(bundle, golden_device())
    runner.load()
    got = runner.infer(codes, batch=4)
    want = golden.run_network(bundle.layers, codes)
    assert np.array_equal(got, want)
    assert len(np.unique(want)) > 5
    if kind in SCHEDULES:
        assert runner.schedule == SCHEDULES[kind]
    report = runner.report()
    assert [row["name"] for row in report] == [layer["name"] for layer in bundle.layers]
    assert sum(row["macs"] for row in report) == NETWORK_MACS[kind]
    for row, layer in zip(report, bundle.layers):
        device = layer["type"] == "matmul" and not golden.is_depthwise(layer)
        assert row["type"] == layer["type"]
        assert row["where"] == ("device" if device else "host")
        assert (row["macs"] > 0) == (layer["type"] == "matmul")
        # The golden device model counts no cycles: every layer reports 0 here (see the
        # attribution test below, and the Verilator benches, for real counts).
        assert row["cycles"] == 0


def test_cycles_are_attributed_to_the_layer_of_each_run():
    # A device whose RUNs report m_tiles * n_tiles * k_steps cycles: each layer's share is the
    # sum over its RUNs, per image; host layers have none.
    bundle = residual_bundle()
    device = golden_device()
    real_run = device.run
    seen = []

    def run(descriptor, **kwargs):
        real_run(descriptor, **kwargs)
        cycles = descriptor.m_tiles * descriptor.n_tiles * descriptor.k_steps
        seen.append((descriptor.w_base, cycles))
        return cycles
    device.run = run
    runner = Runner(bundle, device)
    runner.load()
    codes = input_codes(bundle, 9, seed=1)
    runner.infer(codes, batch=5)
    runner.infer(codes[:3])
    per_layer = {plan.index: sum(c for base, c in seen if base == plan.w_base)
                 for plan in runner.plans.values()}
    report = runner.report()
    for index, row in enumerate(report):
        assert row["cycles"] == pytest.approx(per_layer.get(index, 0) / 12)
        assert (row["cycles"] > 0) == (row["where"] == "device")
    assert sum(row["cycles"] for row in report) == pytest.approx(runner.cycles / 12)
    assert runner.images == 12


def test_intermediate_tensors_are_freed_after_their_last_reader():
    # conv1 is read by conv2 and the add: it lives until the add has run.
    runner = Runner(residual_bundle(), golden_device())
    assert runner._last_use == {"input": 0, "conv1": 2, "conv2": 2, "add": 3, "relu": 4,
                                "pool": 5}


def test_a_depthwise_only_network_runs_on_the_host():
    bundle = separable_bundle()
    runner = Runner(bundle, golden_device())
    assert sorted(runner.plans) == [1, 4]
    assert [row["where"] for row in runner.report()] == ["host", "device", "host", "host",
                                                        "device"]
    assert runner.report()[0]["macs"] == layer_macs(bundle.layers[0]) == 9 * 4 * 64


def test_a_chain_breaks_where_a_layer_has_another_reader():
    bundle = branching_bundle()
    runner = Runner(bundle, golden_device())
    runner.load()
    codes = input_codes(bundle, 6)
    assert np.array_equal(runner.infer(codes), golden.run_network(bundle.layers, codes))
    # One RUN per device layer and chunk: fc1, fc2, fc3 and fc4.
    assert runner.runs == 4


@pytest.mark.parametrize("kind,scheme", [("cnn", "uniform-w8a8"), ("mlp", "power-w4")])
def test_sequential_digits_bundles_still_equal_the_golden_network(kind, scheme, bundles,
                                                                  trained):
    bundle = bundles(kind, scheme)
    codes = bundle.quantize_input(trained[1][2][:40].numpy())
    runner = Runner(bundle, golden_device())
    runner.load()
    assert np.array_equal(runner.infer(codes, batch=16), golden.run_network(bundle.layers,
                                                                            codes))
    report = runner.report()
    assert [row["where"] == "device" for row in report] \
        == [layer["type"] == "matmul" for layer in bundle.layers]
    assert sum(row["macs"] for row in report) == sum(
        layer["weight"].size * (layer["conv"]["out_height"] * layer["conv"]["out_width"]
                                if layer.get("conv") else 1)
        for layer in bundle.matmul_layers())
