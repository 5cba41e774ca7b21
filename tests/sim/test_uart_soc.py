"""The board system (UART + accelerator) in Verilator: the host runtime drives it through
the UART harness, which serializes every byte into 8N1 bits at a small divisor, and a whole
network comes back bit for bit."""

import numpy as np
import pytest

from sparqforge.config import AcceleratorConfig
from sparqforge.hw.soc import Soc
from sparqforge.protocol import (Command, DeviceInfo, SlipDecoder, Status, frame,
                                 slip_encode, unframe_reply)
from sparqforge.sim.uart_model import UartLinkModel
from sparqforge.sw import golden
from sparqforge.sw.runtime.link import Device, PipeTransport
from sparqforge.sw.runtime.runner import Runner

pytestmark = pytest.mark.sim

# 4x4 int8 with room for the digits MLP (64-64-32-10): 1632 weight words, 27 groups; two
# product stages as in the large ECP5 references. clk_freq = 16 * baud: 16 clock cycles
# per bit.
CONFIG = AcceleratorConfig(rows=4, cols=4, act_depth=256, w_depth=2048, groups=32,
                           max_depth=1024, frame_bytes=1088, product_stages=2)


@pytest.fixture(scope="module")
def soc_model():
    soc = Soc(CONFIG, clk_freq=1_600_000, baud=100_000)
    assert soc.divisor == 16
    model = UartLinkModel(soc)
    model.build()
    return soc, model


def test_uart_soc_runs_a_network_bit_exactly(soc_model, bundles, trained):
    soc, model = soc_model
    _, (_, _, x_test, _) = trained
    transport = PipeTransport(model.executable)
    device = Device(transport)
    try:
        assert device.info() == soc.info
        bundle = bundles("mlp", "uniform-w8a8")
        runner = Runner(bundle, device)
        runner.load()
        codes = bundle.quantize_input(np.asarray(x_test[:24]))
        out = runner.infer(codes)
        ref = golden.run_network(bundle.layers, codes)
        np.testing.assert_array_equal(out, ref)
        assert device.retransmissions == 0
        # Every byte really crossed the UART: at least ten bit times per byte loaded.
        weight_bytes = sum(plan.n_tiles * plan.k_steps for plan in runner.plans.values()) \
            * soc.config.weight_bytes
        assert transport.cycles > weight_bytes * 10 * soc.divisor
    finally:
        device.close()


def test_uart_soc_answers_a_damaged_frame_with_a_crc_error(soc_model):
    soc, model = soc_model
    transport = PipeTransport(model.executable)
    try:
        good = frame(5, Command.INFO)
        damaged = bytearray(good)
        damaged[4] ^= 0x04
        replies = []
        for body in (bytes(damaged), good):
            raw = transport.exchange(slip_encode(body), budget=2_000_000)
            replies += [unframe_reply(reply) for reply in SlipDecoder().feed(raw)]
        assert [(seq, status, session) for seq, status, session, _ in replies] == [
            (5, Status.CRC, 0), (5, Status.OK, 0)]
        # INFO's reply is exactly what the protocol says this configuration reports.
        assert replies[1][3] == DeviceInfo.of(CONFIG).pack()
    finally:
        transport.close()
