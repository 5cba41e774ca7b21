"""The serial transport against an emulated board on a pseudo-terminal: the golden device
behind a real serial port (pyserial on a pty), whose RUN replies can arrive late."""

import os
import threading
import time

import numpy as np
import pytest

from sparqforge.config import PRESETS
from sparqforge.protocol import Command, RunDescriptor, SlipDecoder, slip_encode
from sparqforge.sw.runtime.device_model import DeviceModel
from sparqforge.sw.runtime.link import Device, SerialTransport

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pty")


class EmulatedBoard(threading.Thread):
    """Reads frames from the pty's master side and answers them with the golden device, one
    at a time. A RUN takes ``run_seconds``; the next RUNs take ``delays`` seconds instead,
    one delay each (a layer that ran longer than the host's deadline)."""

    def __init__(self, config):
        super().__init__(daemon=True)
        self.master, slave = os.openpty()
        self.port = os.ttyname(slave)
        self._slave = slave
        self.model = DeviceModel(config)
        self.delays = []
        self.run_seconds = 0.1
        self.runs = 0
        self._halt = threading.Event()

    def run(self):
        decoder = SlipDecoder()
        os.set_blocking(self.master, False)
        while not self._halt.is_set():
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                time.sleep(0.002)
                continue
            except OSError:
                return
            for body in decoder.feed(data):
                reply = self.model.handle(body)
                if body[4:5] == bytes([Command.RUN]):
                    self.runs += 1
                    time.sleep(self.delays.pop(0) if self.delays else self.run_seconds)
                if reply is not None:
                    os.write(self.master, slip_encode(reply))

    def close(self):
        self._halt.set()
        self.join(timeout=5)
        os.close(self.master)
        os.close(self._slave)


def test_late_run_replies_are_read_past_not_taken_for_the_answer():
    config = PRESETS["int8"].replace(act_depth=32, w_depth=64)
    board = EmulatedBoard(config)
    board.start()
    transport = SerialTransport(board.port, 1_000_000)
    try:
        device = Device(transport)
        device.write(0, 0, np.full((4, config.cols), 3))
        # The first RUN's reply comes after its deadline: the host retries, and the next
        # frame it reads is that late reply, which it must skip for the retry's own (a
        # transport that stops at the first frame is then one reply behind on every retry).
        board.delays = [transport.budget(10) + 0.3]
        descriptor = RunDescriptor(m_tiles=1, n_tiles=1, k_steps=1, a_base=0, a_stride=1,
                                   step=1, mode=0, w_base=0, out_base=16, out_stride=1,
                                   group_base=0)
        assert device.run(descriptor, cycles=10) == 0
        assert device.retransmissions >= 1 and board.runs >= 2
        # Everything after it still works: every later request gets its own reply.
        assert np.array_equal(device.read_act(0, 4), np.full((4, config.cols), 3))
    finally:
        transport.close()
        board.close()
