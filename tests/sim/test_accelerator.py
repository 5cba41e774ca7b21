"""The Verilated accelerator against the golden device model: random programs, whole
networks bit for bit, protocol error replies, fault injection, clock gating."""

import struct

import numpy as np
import pytest

from sparqforge.config import PRESETS, AcceleratorConfig
from sparqforge.hw.accelerator import Accelerator
from sparqforge.protocol import (WEIGHT_TABLE_ALL_BIT, Command, RunDescriptor, SlipDecoder,
                                 Space, Status, frame, slip_encode, unframe_reply)
from sparqforge.sim.link_model import LinkModel
from sparqforge.sw import golden
from sparqforge.sw.runtime import layouts
from sparqforge.sw.runtime.device_model import DeviceModel
from sparqforge.sw.runtime.link import Device, FaultyTransport, LoopbackTransport, PipeTransport
from sparqforge.sw.runtime.runner import Runner

pytestmark = pytest.mark.sim

SMALL = {
    "dense_2x4": AcceleratorConfig(rows=2, cols=4, act_depth=64, w_depth=64, groups=4),
    "sparse_tables_3x4": AcceleratorConfig(rows=3, cols=4, sparsity=(2, 4), tables=True,
                                           act_depth=64, w_depth=64, groups=4,
                                           product_stages=2),
    # Two columns' products from one packed multiplier; with operand tables.
    "packed_tables_2x4": AcceleratorConfig(rows=2, cols=4, tables=True, packed_products=True,
                                           act_depth=64, w_depth=64, groups=4),
}


def devices(config):
    accel = Accelerator(config, gated=True)
    rtl = Device(PipeTransport(LinkModel(accel).build()), budget_cycles=10 ** 7)
    gold = Device(LoopbackTransport(DeviceModel(config)))
    return rtl, gold, config


def random_state(rng, info):
    """Random memories, tables and thresholds (indices valid and ascending)."""
    acts = rng.integers(0, 256, (info.rows * info.act_depth, info.cols))
    words = rng.integers(0, 256, (info.w_depth, info.weight_bytes))
    if info.m:
        codes, idx = layouts.unpack_weight_words(words, info)
        idx = np.sort(np.argsort(rng.random(idx.shape[:-1] + (info.m,)))[..., :info.n], -1)
        words = layouts.pack_weight_words(codes, idx, info)
    multiplier, shift = golden.quantize_multiplier(rng.uniform(1e-5, 1e-2, 4 * info.cols))
    records = layouts.pack_requant(rng.integers(-5000, 5000, 4 * info.cols), multiplier, shift,
                                   rng.integers(0, 50, 4 * info.cols),
                                   rng.integers(0, 2, 4 * info.cols))
    writes = [(Space.ACT, 0, acts), (Space.WEIGHT, 0, words), (Space.REQUANT, 0, records)]
    if info.tables:
        writes += [(Space.ACT_TABLE, 0, rng.integers(0, 256, (256, 1))),
                   (Space.WEIGHT_TABLE, 1 << WEIGHT_TABLE_ALL_BIT,
                    rng.integers(0, 256, (256, 1))),
                   (Space.WEIGHT_TABLE, 2 << 8, rng.integers(0, 256, (256, 1)))]
        count = (1 << info.threshold_bits) - 1
        for group in range(4):
            for lane in range(info.cols):
                t = np.sort(rng.integers(-30000, 30000, count)).astype("<i4")
                writes.append((Space.THRESHOLD, ((group * 4 + lane) << 8),
                               t.view(np.uint8).reshape(count, 4)))
    return writes


@pytest.mark.parametrize("name", sorted(SMALL))
def test_random_programs_match_the_golden_device(name):
    rtl, gold, info = devices(SMALL[name])
    rng = np.random.default_rng(len(name))
    for space, addr, words in random_state(rng, info):
        for device in (rtl, gold):
            device.write(space, addr, words)
    modes = [0]
    if info.m:
        modes = [0, RunDescriptor.MODE_SPARSE]
    if info.tables:
        modes = [m | extra for m in modes for extra in (0, 2, 4, 8, 14)]
    for trial in range(14):
        mode = modes[trial % len(modes)]
        step = 1 if not info.m else (info.m if mode & RunDescriptor.MODE_SPARSE else info.n)
        d = RunDescriptor(m_tiles=int(rng.integers(1, 4)), n_tiles=int(rng.integers(1, 3)),
                          k_steps=int(rng.integers(1, 9)), a_base=int(rng.integers(0, 10)),
                          a_stride=int(rng.integers(1, 4)), step=step, mode=mode,
                          w_base=int(rng.integers(0, 20)), out_base=40, out_stride=3,
                          group_base=int(rng.integers(0, 2)))
        cycles = rtl.run(d)
        gold.run(d)
        assert cycles > 0
        assert np.array_equal(rtl.read_act(0, info.rows * info.act_depth),
                              gold.read_act(0, info.rows * info.act_depth)), (trial, d)
    rtl.close()


def test_protocol_errors_match_the_golden_device():
    rtl, gold, info = devices(SMALL["dense_2x4"])
    rtl.open()
    gold.open()
    requests = [
        (Command.INFO, b""),
        (0x7E, b""),
        (Command.WRITE, struct.pack("<BI", 9, 0) + b"x"),
        (Command.WRITE, struct.pack("<BI", Space.WEIGHT, 1 << 20) + bytes(info.weight_bytes)),
        (Command.WRITE, struct.pack("<BI", Space.ACT, 0) + b"abc"),
        # The first word fits, the second runs past the end of the weight memory.
        (Command.WRITE, struct.pack("<BI", Space.WEIGHT, info.w_depth - 1)
         + bytes(2 * info.weight_bytes)),
        (Command.WRITE, struct.pack("<BI", Space.REQUANT, info.groups * info.cols - 1)
         + bytes(2 * 10)),
        (Command.WRITE, struct.pack("<BI", Space.THRESHOLD, 0) + bytes(4)),
        (Command.READ, struct.pack("<BIH", Space.WEIGHT, 0, 1)),
        (Command.READ, struct.pack("<BIH", Space.ACT, 0, 4000)),
        (Command.RUN, RunDescriptor(1, 1, 1, 0, 1, 3, 0, 0, 0, 1, 0).pack()),
        (Command.RUN, RunDescriptor(1, 9, 1, 0, 1, 1, 0, 0, 0, 1, 0).pack()),
        (Command.RUN, b"short"),
    ]
    for command, payload in requests:
        assert rtl.raw(command, payload) == gold.raw(command, payload), (command, payload)
    # A damaged frame gets a CRC reply and changes nothing.
    damaged = bytearray(frame(77, Command.WRITE, struct.pack("<BI", Space.ACT, 0) + bytes(4)))
    damaged[10] ^= 1
    reply = SlipDecoder().feed(rtl.transport.exchange(slip_encode(bytes(damaged)),
                                                      budget=10 ** 6))
    assert [unframe_reply(body)[:2] for body in reply] == [(77, Status.CRC)]
    rtl.close()


@pytest.fixture(scope="module")
def demo_model():
    return LinkModel(Accelerator(PRESETS["demo"], gated=True)).build()


@pytest.mark.parametrize("kind,scheme", [("mlp", "sparse24-w4"), ("cnn", "power-w4")])
def test_networks_are_bit_exact_with_the_golden_model(kind, scheme, bundles, trained,
                                                      demo_model):
    bundle = bundles(kind, scheme)
    codes = bundle.quantize_input(trained[1][2][:96].numpy())
    _check_network(bundle, codes, Device(PipeTransport(demo_model)), batch=48)


def _check_network(bundle, codes, device, *, batch):
    """Load and run ``bundle`` on ``device``: every output code the golden model's."""
    runner = Runner(bundle, device)
    runner.load()
    got = runner.infer(codes, batch=batch)
    device.close()
    assert np.array_equal(got, golden.run_network(bundle.layers, codes))
    assert runner.cycles > 0


def test_clock_gating_changes_nothing(bundles, trained, demo_model):
    bundle = bundles("mlp", "power-w4")
    codes = bundle.quantize_input(trained[1][2][:40].numpy())
    results = []
    for args in ((), ("--no-gating",)):
        transport = PipeTransport(demo_model, args)
        runner = Runner(bundle, Device(transport, nonces=[0x5EED]))
        runner.load()
        results.append((runner.infer(codes), runner.cycles, transport.cycles))
        transport.close()
    (out_a, device_a, sim_a), (out_b, device_b, sim_b) = results
    assert np.array_equal(out_a, out_b) and device_a == device_b and sim_a == sim_b


def test_faults_on_the_rtl_link_are_recovered(bundles, trained, demo_model):
    bundle = bundles("mlp", "uniform-w8a8")
    codes = bundle.quantize_input(trained[1][2][:64].numpy())
    faulty = FaultyTransport(PipeTransport(demo_model), rate=0.0005, seed=5)
    device = Device(faulty, retries=20)
    runner = Runner(bundle, device)
    runner.load()
    got = runner.infer(codes)
    device.close()
    assert np.array_equal(got, golden.run_network(bundle.layers, codes))
    assert faulty.injected > 0 and device.retransmissions > 0


def test_a_device_restart_mid_inference_on_the_rtl_is_recovered(bundles, trained, demo_model):
    # The harness resets the Verilated device between requests (as a power cycle or
    # reconfiguration would): the runner sees the device's session drop to 0 at the next
    # reply, opens and loads it again, and the results equal the golden model's.
    from sparqforge.sw.runtime.link import RestartingTransport

    bundle = bundles("cnn", "uniform-w8a8")
    codes = bundle.quantize_input(trained[1][2][:24].numpy())
    want = golden.run_network(bundle.layers, codes)
    for point in (5, 40, 120):
        transport = RestartingTransport(PipeTransport(demo_model), at=[point])
        runner = Runner(bundle, Device(transport))
        runner.load()
        got = runner.infer(codes, batch=12)
        transport.close()
        assert transport.injected == 1 and runner.restarts == 1, point
        assert np.array_equal(got, want), point


def test_a_packed_device_runs_the_same_bundles_bit_exact(bundles, trained):
    # The runtime checks a bundle against the device's INFO, which reports packed products;
    # nothing in a bundle depends on them, and the results are the golden model's.
    config = AcceleratorConfig(rows=4, cols=4, packed_products=True, groups=32)
    bundle = bundles("cnn", "uniform-w8a8")
    codes = bundle.quantize_input(trained[1][2][:24].numpy())
    device = Device(PipeTransport(LinkModel(Accelerator(config, gated=True)).build()))
    assert device.info().config == config
    _check_network(bundle, codes, device, batch=12)
