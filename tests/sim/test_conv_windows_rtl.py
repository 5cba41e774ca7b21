"""Convolution windows on the Verilated accelerator: small networks whose convolutions,
depthwise convolutions and average pooling run on the window walk (whole, or in bands of
output rows when their images exceed the banks), every output code the golden model's, and
the runner's schedule keeps the depthwise layers on the device."""

from dataclasses import replace

import numpy as np
import pytest

from sparqforge.cli.models_bench import run_bundle
from sparqforge.config import AcceleratorConfig
from sparqforge.protocol import Mode
from sparqforge.sw import golden

from ..sw.test_conv_windows import conv_chain_bundle
from ..sw.test_network_graph import input_codes, separable_bundle
from ..sw.test_residual import deep_residual_bundle, residual_block_bundle

pytestmark = pytest.mark.sim

#: A small dense accelerator with the depthwise walk and program slots (one Verilator build
#: for every case).
CONFIG = AcceleratorConfig(rows=4, cols=8, act_depth=512, w_depth=1024, groups=16,
                           program_depth=32)

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
    # segment. On 16x16 maps a block's three images exceed the banks: the first two blocks
    # run in bands of rows (the network, and one block alone, whose output image is
    # compared code by code); with 7x7 kernels bands cannot, and the shortcut is spilled
    # to the host and back.
    "residual": (deep_residual_bundle, [3, 7, 8], []),
    "residual_bands": (lambda: deep_residual_bundle(size=16, blocks=3, seed=7),
                       [3, 6, 10, 11], []),
    "residual_block_bands": (lambda: residual_block_bundle(size=16, seed=7), [3], []),
    "residual_spill": (lambda: deep_residual_bundle(size=16, blocks=3, seed=7, kernel=7),
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
    got, runner, _ = run_bundle(bundle, codes, CONFIG, backend="verilator", warm_up=True)
    assert np.array_equal(got, want)
    assert np.array_equal(runner.warm_up_output, want[:1])
    # After the warm-up every list of layers ran from the program slots (they hold them all),
    # and each RUNS' layers took the cycles they took as RUNs (the client checks).
    assert runner.device.runs_commands > 0
    assert runner.device.run_commands == 0
    # The depthwise layers ran on the device, on the window walk.
    planned = sorted(index for index, plan in runner.plans.items()
                     if plan.mode & Mode.DEPTHWISE and plan.image)
    on_device = {index for kind, item in runner.schedule if kind == "device" for index in item}
    assert planned == depthwise and set(depthwise) <= on_device
    assert all(runner.layer_cycles[index] > 0 for index in depthwise)
    assert sorted(index for index, plan in runner.plans.items() if plan.band_rows) == banded
    assert (runner.spilled_words > 0) == name.endswith("spill")
    assert (runner.banded_blocks > 0) == (name.startswith("residual")
                                          and name.endswith("bands"))


def test_stored_descriptors_changed_behind_the_host_stop_the_inference():
    from sparqforge.backends import open_device
    from sparqforge.errors import LinkError
    from sparqforge.protocol import PROGRAM_BYTE_BITS, Space
    from sparqforge.sw.runtime.runner import Runner

    bundle = conv_chain_bundle()
    codes = input_codes(bundle, 3, seed=11)
    want = golden.run_network(bundle.layers, codes)
    device = open_device("verilator", CONFIG, quiet=True)
    try:
        runner = Runner(bundle, device)
        runner.load()
        assert np.array_equal(runner.infer(codes[:2]), want[:2])    # stored, then RUNS
        assert device.runs_commands > 0
        # A stored layer of more than one row tile gets one tile less: a valid layer that
        # would leave old outputs in the banks. Its cycles give it away.
        slot, first = next((slot, descriptors[0])
                           for slot, descriptors in device.stored_lists.items()
                           if descriptors[0].m_tiles > 1)
        changed = replace(first, m_tiles=first.m_tiles - 1)
        device.write(Space.PROGRAM, slot << PROGRAM_BYTE_BITS,
                     np.frombuffer(changed.pack(), dtype=np.uint8).reshape(-1, 1))
        with pytest.raises(LinkError, match="do not hold what this host stored"):
            runner.infer(codes[2:])
        # An empty layer in the slot instead: the device refuses the RUNS.
        device.write(Space.PROGRAM, (slot << PROGRAM_BYTE_BITS) + 4, [[0], [0]])
        with pytest.raises(LinkError, match="rejected RUNS: RANGE"):
            runner.infer(codes[2:])
    finally:
        device.close()
