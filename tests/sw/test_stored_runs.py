"""Stored RUN lists on the golden device: a list of layers between two transfers runs as RUNs
the first time, is stored in the device's program slots and is one RUNS command after that,
with the same outputs; lists that do not fit run as RUNs; a restarted device's slots are
stored again; a RUNS whose reply is lost is not sent again (it may have overwritten its
inputs): the batch runs again instead."""

import numpy as np
import pytest

from sparqforge.config import AcceleratorConfig
from sparqforge.errors import RunInterrupted
from sparqforge.protocol import Command, Mode, RunDescriptor, SlipDecoder
from sparqforge.sw import golden
from sparqforge.sw.runtime.device_model import DeviceModel
from sparqforge.sw.runtime.link import (CountingTransport, Device, LoopbackTransport,
                                        RestartingTransport, WrappedTransport)
from sparqforge.sw.runtime.runner import Runner

from .test_network_graph import input_codes
from .test_residual import deep_residual_bundle

CONFIG = AcceleratorConfig(rows=4, cols=8, act_depth=1024, w_depth=2048, groups=32,
                           program_depth=16)


class DropRunsReplies(WrappedTransport):
    """Loses the device's reply to the RUNS commands numbered in ``at`` (0-based): the device
    has executed them."""

    def __init__(self, inner, *, at):
        super().__init__(inner)
        self._at, self.runs, self.dropped = set(at), 0, 0

    def exchange(self, data, *, budget):
        reply = self._inner.exchange(data, budget=budget)
        if any(body[4] == Command.RUNS for body in SlipDecoder().feed(data)):
            self.runs += 1
            if self.runs - 1 in self._at:
                self.dropped += 1
                return b""
        return reply


def _runner(config, wrap=lambda t: t):
    counter = CountingTransport(wrap(LoopbackTransport(DeviceModel(config))))
    device = Device(counter)
    runner = Runner(deep_residual_bundle(), device)
    runner.load()
    return runner, device, counter


def test_lists_run_from_program_slots_after_their_first_time():
    runner, device, counter = _runner(CONFIG)
    codes = input_codes(runner.bundle, 6, seed=1)
    want = golden.run_network(runner.bundle.layers, codes)
    sent = []
    for batch in range(3):
        before = (counter.sent + counter.received, device.run_commands, device.runs_commands)
        got = runner.infer(codes[2 * batch:2 * batch + 2])
        assert np.array_equal(got, want[2 * batch:2 * batch + 2])
        sent.append((counter.sent + counter.received - before[0],
                     device.run_commands - before[1], device.runs_commands - before[2]))
    # The first image: every layer a RUN (then stored); the second image and the next
    # batches: RUNS only, the same number each image, and fewer bytes.
    assert sent[0][1] == len(runner.plans) and sent[0][2] == sent[1][2] / 2 > 0
    assert sent[1][1] == sent[2][1] == 0 and sent[1][2] == sent[2][2] > 0
    assert max(sent[1][0], sent[2][0]) < sent[0][0]   # (SLIP escapes vary with the data)


@pytest.mark.parametrize("depth", [0, 1])
def test_lists_the_slots_cannot_hold_run_as_runs(depth):
    runner, device, _ = _runner(CONFIG.replace(program_depth=depth))
    codes = input_codes(runner.bundle, 4, seed=2)
    for batch in (codes[:2], codes[2:]):
        assert np.array_equal(runner.infer(batch), golden.run_network(runner.bundle.layers,
                                                                      batch))
    # Without slots nothing is stored; one slot holds only a list of one layer.
    assert device.runs_commands == 0 if depth == 0 else device.run_commands > 0


def test_a_lost_runs_reply_repeats_the_batch_instead_of_the_command():
    drops = []

    def wrap(transport):
        drops.append(DropRunsReplies(transport, at=[1]))
        return drops[0]
    runner, device, _ = _runner(CONFIG, wrap)
    codes = input_codes(runner.bundle, 4, seed=3)
    want = golden.run_network(runner.bundle.layers, codes)
    assert np.array_equal(runner.infer(codes[:2]), want[:2])      # stores the lists
    assert np.array_equal(runner.infer(codes[2:]), want[2:])      # RUNS; one reply lost
    assert drops[0].dropped == 1 and runner.restarts == 1


def test_a_runs_command_without_a_reply_is_not_sent_again():
    # A list whose second layer overwrites the first one's input: run twice it would
    # compute from its own output.
    config = CONFIG
    model = DeviceModel(config)
    transport = DropRunsReplies(LoopbackTransport(model), at=[0])
    device = Device(transport)
    device.open()
    first = RunDescriptor(1, 1, 1, 0, 1, 1, 0, 0, 8, 1, 0)
    second = RunDescriptor(1, 1, 1, 8, 1, 1, 0, 0, 0, 1, 0)
    device.run_list([first, second], [1000, 1000])                   # RUNs, then stored
    with pytest.raises(RunInterrupted, match="RUNS got no usable reply"):
        device.run_list([first, second], [1000, 1000])
    assert transport.runs == 1


def test_an_add_run_without_a_reply_is_not_sent_again():
    model = DeviceModel(CONFIG)

    class DropRun(WrappedTransport):
        def exchange(self, data, *, budget):
            reply = self._inner.exchange(data, budget=budget)
            return b"" if any(body[4] == Command.RUN for body in
                              SlipDecoder().feed(data)) else reply
    device = Device(DropRun(LoopbackTransport(model)))
    walk = dict(in_h=1, in_w=1, in_c=1, out_w=1, kh=1, kw=1, sh=1, sw=1)
    add = RunDescriptor(1, 1, 1, 0, 1, 1, int(Mode.CONV | Mode.DEPTHWISE | Mode.ADD), 0, 8, 1,
                        0, **walk)
    with pytest.raises(RunInterrupted, match="RUN got no usable reply"):
        device.run(add, cycles=1000)


def test_a_restarted_device_stores_its_lists_again():
    holder = []

    def wrap(transport):
        holder.append(RestartingTransport(transport, at=[]))
        return holder[0]
    runner, device, counter = _runner(CONFIG, wrap)
    codes = input_codes(runner.bundle, 4, seed=4)
    want = golden.run_network(runner.bundle.layers, codes)
    assert np.array_equal(runner.infer(codes[:2]), want[:2])       # lists stored
    # The device restarts at the next batch's third exchange (its slots cleared).
    holder[0]._at = {holder[0].exchanges + 2}
    runs = device.run_commands
    assert np.array_equal(runner.infer(codes[2:]), want[2:])
    assert holder[0].injected == 1 and runner.restarts == 1
    # After the restart the lists ran as RUNs once more and were stored again.
    assert device.run_commands - runs == len(runner.plans)
