"""The whole accelerator top in Amaranth's simulator: SLIP frames built from
``sparqforge.protocol`` go in through ``rx`` with random gaps, replies leave ``tx`` under
random stalls, and every reply equals the golden device model's, a RUN's results included."""

import random
import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparqforge.config import AcceleratorConfig
from sparqforge.errors import ConfigError
from sparqforge.hw.accelerator import Accelerator
from sparqforge.protocol import (CRC_BYTES, REQUESTS, Command, DeviceInfo, Mode, RunDescriptor,
                                 SlipDecoder, Space, Status, encode_address, frame,
                                 slip_encode)
from sparqforge.sw import golden
from sparqforge.sw.runtime import layouts
from sparqforge.sw.runtime.device_model import DeviceModel


def exchange(accel, bodies, *, stall=0.3, seed=0, max_cycles=200_000):
    """Send each body as a SLIP frame and return the reply bodies (one per request)."""
    replies, rng = [], random.Random(seed)

    async def host(ctx):
        decoder = SlipDecoder()
        for body in bodies:
            for byte in slip_encode(body):
                while rng.random() < stall:
                    await ctx.tick()
                ctx.set(accel.rx.valid, 1)
                ctx.set(accel.rx.payload, byte)
                await ctx.tick().until(accel.rx.ready)
                ctx.set(accel.rx.valid, 0)
            # Stop and wait: the reply comes before the next request.
            got = []
            for _ in range(max_cycles):
                ready = rng.random() >= stall
                ctx.set(accel.tx.ready, ready)
                _, _, valid, byte = await ctx.tick().sample(accel.tx.valid, accel.tx.payload)
                if valid and ready:
                    got += decoder.feed(bytes([byte]))
                    if got:
                        break
            else:
                raise TimeoutError(f"no reply to {body.hex()}")
            ctx.set(accel.tx.ready, 0)
            replies.extend(got)
        await ctx.tick().repeat(4)
        assert ctx.get(accel.idle)

    sim = Simulator(accel)
    sim.add_clock(1e-8)
    sim.add_testbench(host)
    sim.run()
    return replies


def write(seq, space, addr, words):
    return frame(seq, Command.WRITE, REQUESTS[Command.WRITE].pack(space, addr)
                 + np.asarray(words, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("config", [
    AcceleratorConfig(rows=2, cols=4, act_depth=16, w_depth=16, groups=2, max_depth=64,
                      frame_bytes=128),
    AcceleratorConfig(rows=2, cols=4, sparsity=(2, 4), act_depth=16, w_depth=16, groups=2,
                      max_depth=64, frame_bytes=128, product_stages=3),
    AcceleratorConfig(rows=2, cols=4, act_depth=16, w_depth=16, groups=2, max_depth=64,
                      frame_bytes=128, packed_products=True),
], ids=["dense", "sparse", "packed"])
def test_a_layer_through_the_link_equals_the_golden_device(config):
    rng = np.random.default_rng(1)
    k_steps, step = 3, (config.m if config.sparse else 1)
    mode = Mode.SPARSE if config.sparse else 0
    weights = rng.integers(0, 256, (k_steps, config.weight_bytes))
    if config.sparse:
        codes, _ = layouts.unpack_weight_words(weights, config)
        index = np.sort(np.argsort(rng.random(codes.shape[:-1] + (config.m,)))
                        [..., :config.n], -1)
        weights = layouts.pack_weight_words(codes, index, config)
    multiplier, shift = golden.quantize_multiplier(rng.uniform(1e-3, 1e-2, config.cols))
    records = layouts.pack_requant(rng.integers(-500, 500, config.cols), multiplier, shift,
                                   rng.integers(0, 20, config.cols), [1, 0] * (config.cols // 2))
    bodies = [
        frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(0xC0FFEE)),
        write(2, Space.ACT, 0, rng.integers(0, 256, (4, config.cols))),
        write(3, Space.ACT, encode_address(Space.ACT, config, bank=1), rng.integers(
            0, 256, (4, config.cols))),
        write(4, Space.WEIGHT, 0, weights),
        write(5, Space.REQUANT, encode_address(Space.REQUANT, config, group=1), records),
        frame(6, Command.RUN, RunDescriptor(
            m_tiles=1, n_tiles=1, k_steps=k_steps, a_base=0, a_stride=config.cols,
            step=step, mode=mode, w_base=0, out_base=8, out_stride=1, group_base=1).pack()),
        frame(7, Command.READ, REQUESTS[Command.READ].pack(Space.ACT, 8, 1)),
        frame(8, Command.READ, REQUESTS[Command.READ].pack(
            Space.ACT, encode_address(Space.ACT, config, bank=1, word=8), 1)),
        frame(9, Command.RUN, RunDescriptor(1, 1, 1, 0, 1, 5, 0, 0, 8, 1, 0).pack()),
        frame(10, 0x55),
    ]
    replies = exchange(Accelerator(config), bodies)
    model = DeviceModel(config)
    assert len(replies) == len(bodies)
    for body, reply in zip(bodies, replies):
        want = model.handle(body)
        if body[4] == Command.RUN and reply[4] == Status.OK:
            assert reply[:9] == want[:9] and reply[9:-CRC_BYTES] != bytes(4), body.hex()
        else:
            assert reply == want, (body.hex(), reply.hex(), want.hex())
    assert replies[0][9 + 4:-CRC_BYTES] == DeviceInfo.of(config).pack()
    assert [reply[4] for reply in replies] == [Status.OK] * 8 + [Status.RANGE, Status.COMMAND]
    # The RUN computed something: the output words are not all zero.
    assert any(replies[6][9:-CRC_BYTES]) or any(replies[7][9:-CRC_BYTES])


def test_settle_covers_the_core_pipeline():
    for config in (AcceleratorConfig(), AcceleratorConfig(sparsity=(2, 4), tables=True,
                                                          product_stages=3),
                   AcceleratorConfig(packed_products=True)):
        accel = Accelerator(config, gated=True)
        assert accel.settle > accel.core.latency


def test_packed_products_flow_from_the_configuration():
    # Packed products: the same INFO fields but one, one cycle more per tile (as with two
    # product stages), half the multipliers.
    plain, packed = AcceleratorConfig(), AcceleratorConfig(packed_products=True)
    array = Accelerator(packed).core.array
    assert array.packed_products and array.product_stages == 1
    assert array.core_latency == Accelerator(plain).core.array.core_latency + 1
    assert DeviceInfo.unpack(DeviceInfo.of(packed).pack()).config == packed
    assert DeviceInfo.of(packed).pack() != DeviceInfo.of(plain).pack()
    assert AcceleratorConfig.from_json(packed.to_json()) == packed
    assert packed.describe() == "8x8 int8, packed products"
    # Dense with operand tables: the tables map codes to operands before the array.
    assert Accelerator(AcceleratorConfig(tables=True, packed_products=True)).core.array \
        .packed_products


@pytest.mark.parametrize("changes,message", [
    (dict(packed_products=1), "packed_products (two products per multiplier) must be true or "
                              "false, not 1"),
    (dict(cols=6, rows=2, packed_products=True, sparsity=(2, 3)),
     "packed_products needs a dense array: an N:M array selects each column's activations, "
     "so the columns of a row share no operand; use sparsity null"),
    (dict(cols=5, packed_products=True), "packed_products pairs the columns of each row; use "
                                         "an even cols, not 5"),
    (dict(packed_products=True, product_stages=3),
     "packed_products has its own multiplier pipeline; use product_stages 1, not 3"),
])
def test_packed_products_refuse_what_cannot_work(changes, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        AcceleratorConfig(**changes)


def test_the_accelerator_takes_a_configuration():
    with pytest.raises(TypeError, match="Accelerator takes an AcceleratorConfig"):
        Accelerator({"rows": 2})
    with pytest.raises(ConfigError, match="max_depth 1000000 needs a 36-bit accumulator; the accelerator allows 31 bits, so use a max_depth of at most 32896"):
        AcceleratorConfig(max_depth=1_000_000)
