"""``sparqforge bench soak`` scaled down: random layers with random link stalls on the
Verilated accelerators against the golden device model, and inferences over a faulty link;
plus proof that both checks can fail."""

import numpy as np
import pytest

from sparqforge.cli import soak
from sparqforge.config import PRESETS
from sparqforge.hw.accelerator import Accelerator
from sparqforge.protocol import (Command, SlipDecoder, Space, reply_frame, slip_encode,
                                 unframe_reply)
from sparqforge.sim.link_model import LinkModel
from sparqforge.sw import golden
from sparqforge.sw.runtime.device_model import DeviceModel
from sparqforge.sw.runtime.link import Device, LoopbackTransport, PipeTransport, Transport

pytestmark = pytest.mark.sim


def test_random_layers_with_link_stalls_match_the_golden_device():
    report = soak.run_soak(1000, seed=3)
    assert report["soak.vectors"] >= 1000 and report["soak.layers"] >= 9
    assert report["soak.mismatches"] == 0
    assert report["soak.stall_max"] > 0.2
    assert report["soak.sessions_ungated"] == len(soak.SOAK_CONFIGS)
    # The outputs are not all clamped to one value: the comparison has something to see.
    assert report["soak.mid_range_fraction"] > 0.3


def test_the_soak_reports_a_perturbed_golden_result():
    def tamper(layer, words):
        if layer == 0:
            words[0, 0, 0] ^= 1     # bank 0, first word: row 0 of channel tile 0
        return words

    configs = {"dense_2x4": soak.SOAK_CONFIGS["dense_2x4"]}
    report = soak.run_soak(1, configs=configs, seed=4, tamper=tamper)
    assert report["soak.mismatches"] == 1


def test_link_stalls_change_timing_not_replies():
    config = soak.SOAK_CONFIGS["dense_2x4"]
    executable = LinkModel(Accelerator(config, gated=True)).build()
    rng = np.random.default_rng(5)
    words = rng.integers(0, 256, (200, config.cols))
    results = []
    for args in ((), ("--stall", "0.5", "--seed", "9"), ("--stall", "0.5", "--seed", "9",
                                                         "--no-gating")):
        transport = PipeTransport(executable, args)
        device = Device(transport, nonces=[0x5EED])
        device.write(Space.ACT, 3, words)
        results.append((device.read_act(0, 256).tolist(), transport.cycles))
        transport.close()
    (plain, plain_cycles), (stalled, stalled_cycles), (ungated, ungated_cycles) = results
    assert plain == stalled == ungated
    assert plain[3:203] == words.tolist()
    assert stalled_cycles > plain_cycles and ungated_cycles == stalled_cycles


def test_inferences_over_a_faulty_link_are_right_or_fail_loudly():
    report = soak.run_faults(rates=(1e-4, 1e-2), trials=1, restart_trials=1, images=8,
                             epochs=2)
    assert report["faults.inferences"] == 12
    assert report["faults.silent_wrong"] == 0 and report["faults.other_errors"] == 0
    assert report["faults.clean"] > 0 and report["faults.clean_errors"] > 0
    assert report["faults.injected_bytes"] > 0 and report["faults.injected_restarts"] > 0
    assert report["faults.retransmissions"] > 0


class _Forging(Transport):
    """The golden device, with one data byte of every READ reply changed and its CRC made
    good again: damage no link check can see."""

    def __init__(self, config):
        self._inner = LoopbackTransport(DeviceModel(config))

    def exchange(self, data, *, budget):
        reading = any(body[4] == Command.READ for body in SlipDecoder().feed(data))
        out = []
        for body in SlipDecoder().feed(self._inner.exchange(data, budget=budget)):
            seq, status, session, payload = unframe_reply(body)
            if reading and payload:
                payload = bytes([payload[0] ^ 0x40]) + payload[1:]
            out.append(slip_encode(reply_frame(seq, status, session, payload)))
        return b"".join(out)


def test_a_forged_reply_is_reported_as_silent_wrong():
    config = PRESETS["demo"]
    bundles, x_test = soak._fault_bundles(2, 0)
    bundle = bundles["uniform-w8a8"]
    codes = bundle.quantize_input(x_test[:8])
    want = golden.run_network(bundle.layers, codes)
    clean = soak._inference(LoopbackTransport(DeviceModel(config)), bundle, codes, want,
                            iter([1, 2]))
    forged = soak._inference(_Forging(config), bundle, codes, want, iter([1, 2]))
    assert clean[0] == "clean" and forged[0] == "silent_wrong"
