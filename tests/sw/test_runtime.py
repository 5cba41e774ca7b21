"""The runtime on the golden device model: compiled programs equal the golden network,
the protocol survives dropped, corrupted and duplicated bytes, and errors are clear."""

import copy
import struct

import numpy as np
import pytest

from sparqforge.config import PRESETS
from sparqforge.errors import DeviceRestarted, LinkError
from sparqforge.protocol import (REQUESTS, Command, RunDescriptor, Space, Status,
                                 encode_address, frame, slip_encode, SlipDecoder, unframe_reply)
from sparqforge.sw import golden
from sparqforge.sw.runtime.device_model import DeviceModel
from sparqforge.sw.runtime.link import Device, FaultyTransport, LoopbackTransport
from sparqforge.sw.runtime.runner import CompileError, Runner


@pytest.fixture(scope="module")
def demo_info():
    return PRESETS["demo"]


def golden_device(info):
    return Device(LoopbackTransport(DeviceModel(info)))


@pytest.mark.parametrize("kind,scheme", [("mlp", "uniform-w8a8"), ("mlp", "power-w4"),
                                         ("mlp", "sparse24-w4"), ("cnn", "uniform-w8a8"),
                                         ("cnn", "power-w4")])
def test_compiled_program_equals_golden_network(kind, scheme, bundles, trained, demo_info):
    bundle = bundles(kind, scheme)
    codes = bundle.quantize_input(trained[1][2][:120].numpy())
    runner = Runner(bundle, golden_device(demo_info))
    runner.load()
    got = runner.infer(codes, batch=50)
    assert np.array_equal(got, golden.run_network(bundle.layers, codes))
    if scheme == "sparse24-w4":
        assert all(plan.sparse for plan in runner.plans.values())


def test_small_activation_banks_split_batches_into_chunks(bundles, trained):
    bundle = bundles("mlp", "uniform-w8a8")
    info = PRESETS["int8"].replace(act_depth=32)
    codes = bundle.quantize_input(trained[1][2][:100].numpy())
    runner = Runner(bundle, golden_device(info))
    runner.load()
    assert np.array_equal(runner.infer(codes), golden.run_network(bundle.layers, codes))
    assert runner.runs > 3  # 16 words per half bank: 8 images of 8 words per chunk


# Host-to-device frames are up to a kilobyte; replies are mostly six bytes.
@pytest.mark.parametrize("directions,rate", [(("out",), 0.0005), (("in",), 0.01),
                                             (("out", "in"), 0.0005)])
def test_faults_are_detected_and_retried(directions, rate, bundles, trained, demo_info):
    bundle = bundles("mlp", "uniform-w8a8")
    codes = bundle.quantize_input(trained[1][2][:64].numpy())
    faulty = FaultyTransport(LoopbackTransport(DeviceModel(demo_info)), rate=rate, seed=3,
                             directions=directions)
    device = Device(faulty, retries=20)
    runner = Runner(bundle, device)
    runner.load()
    assert np.array_equal(runner.infer(codes), golden.run_network(bundle.layers, codes))
    assert faulty.injected > 0 and device.retransmissions > 0


def test_a_dead_link_raises_instead_of_hanging(demo_info):
    device = Device(FaultyTransport(LoopbackTransport(DeviceModel(demo_info)), rate=0.9,
                                    seed=1), retries=4)
    with pytest.raises(LinkError, match="INFO failed after 4 attempts"):
        device.info()


def reply(model, body):
    seq, status, session, data = unframe_reply(model.handle(body))
    return Status(status), data


def test_device_model_statuses(demo_info):
    model = DeviceModel(demo_info)
    assert reply(model, frame(1, Command.WRITE, struct.pack("<BI", 0, 0)))[0] == Status.SESSION
    assert reply(model, frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(77)))[0] == Status.OK
    assert reply(model, frame(1, Command.INFO))[0] == Status.OK
    assert reply(model, frame(2, 0x7E))[0] == Status.COMMAND
    assert reply(model, frame(3, Command.WRITE, struct.pack("<BI", 9, 0) + b"x"))[0] \
        == Status.SPACE
    assert reply(model, frame(4, Command.WRITE, struct.pack("<BI", Space.WEIGHT, 1 << 20)
                              + bytes(demo_info.weight_bytes)))[0] == Status.RANGE
    assert reply(model, frame(5, Command.WRITE, struct.pack("<BI", Space.ACT, 0) + b"abc"))[0] \
        == Status.LENGTH
    bad_step = RunDescriptor(1, 1, 1, 0, 1, 3, 0, 0, 0, 1, 0)
    assert reply(model, frame(6, Command.RUN, bad_step.pack()))[0] == Status.RANGE
    damaged = bytearray(frame(7, Command.INFO))
    damaged[4] ^= 4
    assert reply(model, bytes(damaged)) == (Status.CRC, b"")
    assert reply(model, frame(6, Command.READ, REQUESTS[Command.READ].pack(0, 0, 1)))[0] \
        == Status.STALE


def test_slip_framing_survives_special_bytes():
    body = bytes(range(256)) * 3
    framed = frame(9, Command.WRITE, body)
    assert SlipDecoder().feed(slip_encode(framed)) == [framed]


def test_compile_errors_name_the_layer_and_the_fix(bundles):
    no_tables = PRESETS["int8"]
    with pytest.raises(CompileError, match="uses power-exponent tables or thresholds; generate "
                                           "the accelerator with tables"):
        Runner(bundles("mlp", "power-w4"), golden_device(no_tables))
    tiny = PRESETS["int8"].replace(w_depth=32)
    with pytest.raises(CompileError, match="Layer '1' needs 64 weight words for one channel "
                                           "tile; the accelerator holds 32"):
        Runner(bundles("mlp", "uniform-w8a8"), golden_device(tiny))


def test_weights_that_do_not_fit_together_are_streamed(bundles, trained):
    # The MLP's layers need 8 + 4 + 2 channel groups; with 8 they fit one at a time: each
    # layer's weights and parameters are written before it runs, and the results are the same.
    from sparqforge.sw.runtime.link import CountingTransport

    bundle = bundles("mlp", "uniform-w8a8")
    codes = bundle.quantize_input(trained[1][2][:40].numpy())
    traffic = {}
    for name, config in (("resident", PRESETS["int8"]),
                         ("streamed", PRESETS["int8"].replace(groups=8)),
                         # Layer '1' alone needs 8 groups: it runs in two parts of 4.
                         ("in parts", PRESETS["int8"].replace(groups=4, w_depth=300))):
        counter = CountingTransport(LoopbackTransport(DeviceModel(config)))
        runner = Runner(bundle, Device(counter))
        runner.load()
        assert np.array_equal(runner.infer(codes, batch=10),
                              golden.run_network(bundle.layers, codes))
        assert runner.resident == (name == "resident")
        traffic[name] = counter.sent
    # Streaming writes every layer's weights for every batch of 10.
    assert traffic["streamed"] > traffic["resident"] + 3 * 512 * 8
    assert traffic["in parts"] > traffic["resident"] + 3 * 512 * 8


def test_a_device_restart_mid_inference_is_recovered_or_refused(bundles, trained, demo_info):
    # A restart between any two requests (before loading ends, between layers, between
    # batches): the runner sees the session change at the next reply, opens and loads the
    # device again and repeats the batch; every run equals a clean one.
    from sparqforge.sw.runtime.link import RestartingTransport

    bundle = bundles("mlp", "power-w4")
    codes = bundle.quantize_input(trained[1][2][:96].numpy())
    want = golden.run_network(bundle.layers, codes)
    clean = RestartingTransport(LoopbackTransport(DeviceModel(demo_info)), at=())
    runner = Runner(bundle, Device(clean))
    runner.load()
    runner.infer(codes, batch=32)
    total = clean.exchanges
    rng = np.random.default_rng(0)
    points = sorted(set(rng.integers(1, total, 30).tolist()))
    recovered = 0
    for point in points:
        transport = RestartingTransport(LoopbackTransport(DeviceModel(demo_info)), at=[point])
        runner = Runner(bundle, Device(transport))
        runner.load()
        got = runner.infer(codes, batch=32)
        assert transport.injected == 1 and runner.restarts <= 1, point
        assert np.array_equal(got, want), point
        recovered += runner.restarts
    # (A restart before the session was first opened needs no recovery.)
    assert recovered >= len(points) - 2
    # A device that restarts again and again: one clear error, not a wrong answer.
    transport = RestartingTransport(LoopbackTransport(DeviceModel(demo_info)),
                                    at=range(3, 10 ** 6, 3))
    runner = Runner(bundle, Device(transport))
    with pytest.raises(DeviceRestarted, match="restarted"):
        runner.load()
        runner.infer(codes, batch=32)
    assert runner.restarts == 3


def test_without_session_checks_a_restart_would_be_silent(bundles, trained, demo_info):
    # What the session check guards against: the same restart, with the device's session
    # forced back to the host's nonce, runs on cleared memories and gives wrong codes.
    bundle = bundles("mlp", "uniform-w8a8")
    codes = bundle.quantize_input(trained[1][2][:32].numpy())
    transport = LoopbackTransport(DeviceModel(demo_info))
    device = Device(transport)
    runner = Runner(bundle, device)
    runner.load()
    transport.restart()
    transport.model.session = device.session
    got = runner.infer(codes)
    assert not np.array_equal(got, golden.run_network(bundle.layers, codes))


def test_operand_widths_are_checked_from_the_arrays(bundles):
    # An 8-bit-activation bundle on a 4-bit-activation accelerator: refused before any RUN.
    bundle = bundles("mlp", "uniform-w8a8")
    a4 = PRESETS["int8"].replace(a_bits=4)
    with pytest.raises(CompileError, match="takes 8-bit activation codes; the accelerator's "
                                           "activations are 4-bit"):
        Runner(bundle, golden_device(a4))
    # 8-bit weights that claim 4 bits, on an 8-bit-activation, 4-bit-weight accelerator:
    # the runner judges the weights themselves, whatever the bundle declares.
    claimed = copy.deepcopy(bundle)
    for layer in claimed.matmul_layers():
        layer["weight_bits"] = 4
    w4 = PRESETS["int8"].replace(w_bits=4)
    with pytest.raises(CompileError, match=r"weights need 8-bit signed operands \(the bundle "
                                           r"declares 4-bit weights\)"):
        Runner(claimed, golden_device(w4))
    # A 4-bit-weight bundle fits the same accelerator.
    Runner(bundles("mlp", "sparse24-w4"), golden_device(w4.replace(sparsity=(2, 4))))


def test_words_of_the_wrong_length_are_refused_before_sending(demo_info):
    # The device cuts a WRITE's data into words of the length its space and address give; a
    # host that meant another length would fill the memories with shifted bytes.
    model = DeviceModel(demo_info)
    device = Device(LoopbackTransport(model))
    lanes = encode_address(Space.ACT_LANES, demo_info, lanes=2, word=5)
    with pytest.raises(ValueError, match="ACT_LANES words at address .* are 3 bytes"):
        device.write(Space.ACT_LANES, lanes, np.ones((4, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="ACT words"):
        device.write(Space.ACT, 0, np.ones((4, demo_info.cols + 1), dtype=np.uint8))
    assert not model.act.any()
    device.write(Space.ACT_LANES, lanes, np.full((4, 3), 7, dtype=np.uint8))
    assert (model.act[:, 5:9, :3] == 7).all() and not model.act[:, 5:9, 3:].any()
