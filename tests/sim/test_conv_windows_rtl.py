"""Convolution windows on the Verilated accelerator: small networks whose convolutions,
depthwise convolutions and average pooling run on the window walk (whole, or in bands of
output rows when their images exceed the banks), every output code the golden model's, and
the runner's schedule keeps the depthwise layers on the device."""

import numpy as np
import pytest

from sparqforge.cli.models_bench import run_bundle
from sparqforge.config import AcceleratorConfig
from sparqforge.protocol import Mode
from sparqforge.sw import golden

from ..sw.test_conv_windows import conv_chain_bundle
from ..sw.test_network_graph import input_codes, separable_bundle
from ..sw.test_residual import deep_residual_bundle

pytestmark = pytest.mark.sim

#: A small dense accelerator with the depthwise walk (one Verilator build for every case).
CONFIG = AcceleratorConfig(rows=4, cols=8, act_depth=512, w_depth=1024, groups=16)

#: name -> (bundle, the indices of its depthwise layers: convolutions and pooling, the
#: indices of the layers too large for the banks, which run in bands of output rows).
BUNDLES = {
    # Four convolutions, global average pooling (a depthwise RUN of weights 1), a linear layer.
    "conv_chain": (conv_chain_bundle, [4], []),
    # A depthwise convolution of 12 channels (two channel tiles, the second half in the
    # image), a pointwise one, a 2x2 average pooling; stride 1 and 2.
    "separable_s1": (lambda: separable_bundle(channels=12, stride=1), [0, 2], []),
    "separable_s2": (lambda: separable_bundle(channels=12, stride=2), [0, 2], []),
    # The same on images larger than the banks: the first layers run in row bands.
    "conv_chain_bands": (lambda: conv_chain_bundle(size=24), [4], [0, 1, 2]),
    "separable_bands": (lambda: separable_bundle(channels=12, size=16, stride=1), [0, 2],
                        [0, 1]),
    # Residual blocks: adds through the add tables (depthwise RUNs, Mode.ADD) in one
    # segment; on 16x16 maps the first block's shortcut is spilled to the host and back.
    "residual": (deep_residual_bundle, [3, 7, 8], []),
    "residual_spill": (lambda: deep_residual_bundle(size=16, blocks=3, seed=7),
                       [3, 6, 10, 11], []),
}


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_windows_on_the_rtl_equal_the_golden_model(name):
    assert CONFIG.depthwise
    build, depthwise, banded = BUNDLES[name]
    bundle = build()
    codes = input_codes(bundle, 2, seed=len(name))
    want = golden.run_network(bundle.layers, codes)
    assert len(np.unique(want)) > 3
    got, runner, _ = run_bundle(bundle, codes, CONFIG, backend="verilator")
    assert np.array_equal(got, want)
    # The depthwise layers ran on the device, on the window walk.
    planned = sorted(index for index, plan in runner.plans.items()
                     if plan.mode & Mode.DEPTHWISE and plan.image)
    on_device = {index for kind, item in runner.schedule if kind == "device" for index in item}
    assert planned == depthwise and set(depthwise) <= on_device
    assert all(runner.layer_cycles[index] > 0 for index in depthwise)
    assert sorted(index for index, plan in runner.plans.items() if plan.band_rows) == banded
    assert (runner.spilled_words > 0) == name.endswith("spill")
