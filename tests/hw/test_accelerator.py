"""The whole accelerator top in Amaranth's simulator: SLIP frames built from
``sparqforge.protocol`` go in through ``rx`` with random gaps, replies leave ``tx`` under
random stalls, and every reply equals the golden device model's, a RUN's results included."""

import random
import re
from dataclasses import replace

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparqforge.config import AcceleratorConfig
from sparqforge.errors import ConfigError
from sparqforge.hw.accelerator import Accelerator
from sparqforge.protocol import (CRC_BYTES, REQUESTS, WEIGHT_TABLE_ALL_BIT, Command, DeviceInfo,
                                 Mode, RunDescriptor, SlipDecoder, Space, Status,
                                 encode_address, frame, slip_encode)
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


def _random_layer(config, rng, k_steps):
    """Random weight words for ``k_steps`` beats (valid N:M indices on a sparse array) and
    one group's requantization records."""
    weights = rng.integers(0, 256, (k_steps, config.weight_bytes))
    if config.sparse:
        codes, _ = layouts.unpack_weight_words(weights, config)
        index = np.sort(np.argsort(rng.random(codes.shape[:-1] + (config.m,)))
                        [..., :config.n], -1)
        weights = layouts.pack_weight_words(codes, index, config)
    multiplier, shift = golden.quantize_multiplier(rng.uniform(1e-3, 1e-2, config.cols))
    records = layouts.pack_requant(rng.integers(-500, 500, config.cols), multiplier, shift,
                                   rng.integers(0, 20, config.cols), [1, 0] * (config.cols // 2))
    return weights, records


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
    weights, records = _random_layer(config, rng, k_steps)
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
    assert check_replies(config, bodies, replies) == [Status.OK] * 8 + [Status.RANGE,
                                                                        Status.COMMAND]
    assert replies[0][9 + 4:-CRC_BYTES] == DeviceInfo.of(config).pack()
    # The RUN computed something: the output words are not all zero.
    assert any(replies[6][9:-CRC_BYTES]) or any(replies[7][9:-CRC_BYTES])


def test_settle_covers_the_core_pipeline():
    for config in (AcceleratorConfig(), AcceleratorConfig(sparsity=(2, 4), tables=True,
                                                          product_stages=3),
                   AcceleratorConfig(packed_products=True)):
        accel = Accelerator(config, gated=True)
        assert accel.settle > accel.core.latency


def test_packed_products_flow_from_the_configuration():
    # Packed products: the same INFO fields but one, two cycles more per tile (as with three
    # product stages), half the multipliers.
    plain, packed = AcceleratorConfig(), AcceleratorConfig(packed_products=True)
    array = Accelerator(packed).core.array
    assert array.packed_products and array.product_stages == 1
    assert array.core_latency == Accelerator(plain).core.array.core_latency + 2
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


def conv_layer(config, rng, seq, *, in_shape, kernel, stride, padding, step, mode, out_base,
               pad_code=3):
    """OPEN, the image into every bank (ACT_ALL), weights and parameters, a convolution RUN
    and READs of its output from the first and the last bank."""
    h, w, c = in_shape
    words = -(-c // config.cols)
    k_steps = kernel[0] * kernel[1] * c // step
    out_h = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    out_w = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    m_tiles = -(-out_h * out_w // config.rows)
    weights, records = _random_layer(config, rng, k_steps)
    pixels = m_tiles * config.rows
    desc = RunDescriptor.convolution(
        in_shape=in_shape, kernel=kernel, stride=stride, padding=padding, pad_code=pad_code,
        a_base=0, words=words, m_tiles=m_tiles, n_tiles=1, k_steps=k_steps, step=step,
        mode=mode | Mode.CONV, w_base=0, out_base=out_base, out_stride=1, group_base=1)
    return [
        write(seq, Space.ACT_ALL, 0, rng.integers(0, 256, (h * w * words, config.cols))),
        write(seq + 1, Space.WEIGHT, 0, weights),
        write(seq + 2, Space.REQUANT, encode_address(Space.REQUANT, config, group=1), records),
        frame(seq + 3, Command.RUN, desc.pack()),
        frame(seq + 4, Command.READ, REQUESTS[Command.READ].pack(Space.ACT, out_base, pixels)),
        frame(seq + 5, Command.READ, REQUESTS[Command.READ].pack(
            Space.ACT, encode_address(Space.ACT, config, bank=config.rows - 1, word=out_base),
            pixels)),
    ], desc


def refused(desc, seq, **changes):
    fields = {name: getattr(desc, name) for name in RunDescriptor.FIELDS}
    return frame(seq, Command.RUN, RunDescriptor(**{**fields, **changes}).pack())


def check_replies(config, bodies, replies):
    """Every reply equals the golden device's (a RUN's cycle count aside: the model has
    none, the hardware's is not zero)."""
    model = DeviceModel(config)
    assert len(replies) == len(bodies)
    for body, reply in zip(bodies, replies):
        want = model.handle(body)
        if body[4] == Command.RUN and reply[4] == Status.OK:
            assert reply[:9] == want[:9] and reply[9:-CRC_BYTES] != bytes(4), body.hex()
        else:
            assert reply == want, (body.hex(), reply.hex(), want.hex())
    return [reply[4] for reply in replies]


CONV_CONFIGS = {
    "dense": AcceleratorConfig(rows=2, cols=4, act_depth=64, w_depth=64, groups=2,
                               max_depth=64, frame_bytes=128),
    "sparse": AcceleratorConfig(rows=3, cols=4, sparsity=(2, 4), act_depth=64, w_depth=64,
                                groups=2, max_depth=64, frame_bytes=160),
}


@pytest.mark.parametrize("name", CONV_CONFIGS)
def test_a_convolution_through_the_link_equals_the_golden_device(name):
    config = CONV_CONFIGS[name]
    rng = np.random.default_rng(2)
    if config.sparse:
        geometry = dict(in_shape=(3, 4, 4), kernel=(3, 2), stride=(1, 2), padding=(1, 1),
                        step=4, mode=Mode.SPARSE)
    else:
        geometry = dict(in_shape=(4, 5, 3), kernel=(3, 3), stride=(1, 1), padding=(1, 1),
                        step=1, mode=0)
    layer, desc = conv_layer(config, rng, 2, out_base=32, **geometry)
    # A second layer on the first one's output (stride 2, no padding), as a network would.
    out_h = (geometry["in_shape"][0] + 2 * geometry["padding"][0] - geometry["kernel"][0]) \
        // geometry["stride"][0] + 1
    out_w = desc.out_w
    second = RunDescriptor.convolution(
        in_shape=(out_h, out_w, config.cols), kernel=(2, 2), stride=(2, 2), padding=(0, 0),
        pad_code=0, a_base=32, words=1, m_tiles=2, n_tiles=1,
        k_steps=4 * config.cols // desc.step, step=desc.step, mode=desc.mode, w_base=0,
        out_base=56, out_stride=1, group_base=1)
    bad = [refused(desc, 20, in_c=0), refused(desc, 21, kw=0), refused(desc, 22, out_w=0)]
    if config.sparse:
        bad += [refused(desc, 23, in_c=6),                        # step 4 does not divide it
                refused(desc, 24, step=2, mode=Mode.CONV, in_c=5)]
    bodies = [frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(0xC0FFEE)), *layer,
              frame(8, Command.RUN, second.pack()),
              frame(9, Command.READ, REQUESTS[Command.READ].pack(Space.ACT, 56, 4)),
              frame(10, Command.READ, REQUESTS[Command.READ].pack(Space.ACT_ALL, 56, 4)),
              *bad]
    replies = exchange(Accelerator(config), bodies)
    statuses = check_replies(config, bodies, replies)
    assert statuses == [Status.OK] * 9 + [Status.SPACE] + [Status.RANGE] * len(bad)
    # The layers computed something: the output words are not all zero, nor all equal.
    assert len(set(replies[5][9:-CRC_BYTES])) > 2 and len(set(replies[8][9:-CRC_BYTES])) > 1
    # Every bank holds every pixel: the first bank's words are the last bank's.
    assert replies[5][9:-CRC_BYTES] == replies[6][9:-CRC_BYTES]


def test_an_accelerator_without_the_walk_refuses_a_convolution():
    config = AcceleratorConfig(rows=2, cols=4, act_depth=64, w_depth=64, groups=2,
                               max_depth=64, frame_bytes=128, conv=False)
    rng = np.random.default_rng(3)
    layer, desc = conv_layer(config, rng, 2, in_shape=(2, 3, 4), kernel=(1, 1), stride=(1, 1),
                             padding=(0, 0), step=1, mode=0, out_base=16)
    plain = {name: getattr(desc, name) for name in RunDescriptor.FIELDS}
    bodies = [frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(0xC0FFEE)), *layer[:4],
              frame(6, Command.RUN, RunDescriptor(**{**plain, "mode": 0}).pack())]
    replies = exchange(Accelerator(config), bodies)
    statuses = check_replies(config, bodies, replies)
    # ACT_ALL exists on every accelerator; the convolution does not.
    assert statuses == [Status.OK] * 4 + [Status.RANGE, Status.OK]


#: A dense accelerator with the depthwise walk; 12 channels are two words of 8 lanes.
DW_CONFIG = AcceleratorConfig(rows=2, cols=8, act_depth=128, w_depth=128, groups=4,
                              max_depth=64, frame_bytes=640)


def test_a_depthwise_convolution_through_the_link_equals_the_golden_device():
    config = DW_CONFIG
    assert config.depthwise
    rng = np.random.default_rng(4)
    (h, w, c), words = (5, 5, 12), 2
    image = np.zeros((h * w, words * config.cols), dtype=np.int64)
    image[:, :c] = rng.integers(0, 256, (h * w, c))
    multiplier, shift = golden.quantize_multiplier(rng.uniform(1e-3, 1e-2, 4 * config.cols))
    records = layouts.pack_requant(rng.integers(-500, 500, 4 * config.cols), multiplier, shift,
                                   rng.integers(0, 20, 4 * config.cols),
                                   rng.integers(0, 2, 4 * config.cols))
    # 3x3, padding 1: 25 output pixels (13 row tiles of 2), 9 taps, two channel tiles.
    dw = RunDescriptor.convolution(
        in_shape=(h, w, 1), kernel=(3, 3), stride=(1, 1), padding=(1, 1), pad_code=7,
        a_base=0, words=words, m_tiles=13, n_tiles=2, k_steps=9, step=1,
        mode=Mode.CONV | Mode.DEPTHWISE, w_base=0, out_base=60, out_stride=2, group_base=0)
    # An ordinary convolution on its output (16 channels, two words a pixel), stride 2.
    conv = RunDescriptor.convolution(
        in_shape=(h, w, 2 * config.cols), kernel=(2, 2), stride=(2, 2), padding=(0, 0),
        pad_code=0, a_base=60, words=words, m_tiles=2, n_tiles=1, k_steps=64, step=1,
        mode=Mode.CONV, w_base=32, out_base=120, out_stride=1, group_base=2)
    read = REQUESTS[Command.READ]
    bodies = [
        frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(0xC0FFEE)),
        write(2, Space.ACT_ALL, 0, image.reshape(-1, config.cols)),
        write(3, Space.WEIGHT, 0, rng.integers(0, 256, (18, config.weight_bytes))),
        write(4, Space.WEIGHT, 32, rng.integers(0, 256, (64, config.weight_bytes))),
        write(5, Space.REQUANT, 0, records),
        frame(6, Command.RUN, dw.pack()),
        frame(7, Command.READ, read.pack(Space.ACT, 60, 52)),
        frame(8, Command.READ, read.pack(Space.ACT, encode_address(
            Space.ACT, config, bank=1, word=60), 52)),
        frame(9, Command.RUN, conv.pack()),
        frame(10, Command.READ, read.pack(Space.ACT, 120, 4)),
        # Refused: DEPTHWISE without CONV, two channels per tap, an unknown mode bit.
        refused(dw, 11, mode=Mode.DEPTHWISE),
        refused(dw, 12, in_c=2),
        refused(dw, 13, mode=Mode.CONV | Mode.DEPTHWISE | 128),
    ]
    replies = exchange(Accelerator(config), bodies)
    statuses = check_replies(config, bodies, replies)
    assert statuses == [Status.OK] * 10 + [Status.RANGE] * 3
    out = np.frombuffer(replies[6][9:-CRC_BYTES], dtype=np.uint8).reshape(26, 2, config.cols)
    # Every channel computed something (not all equal), in every bank alike.
    assert all(len(set(out[:25, nt, j])) > 2 for nt in range(2) for j in range(4))
    assert replies[6][9:-CRC_BYTES] == replies[7][9:-CRC_BYTES]
    assert len(set(replies[9][9:-CRC_BYTES])) > 2


@pytest.mark.parametrize("config", [
    AcceleratorConfig(rows=2, cols=4, act_depth=64, w_depth=64, groups=2, max_depth=64,
                      frame_bytes=128, packed_products=True),
    AcceleratorConfig(rows=2, cols=4, sparsity=(2, 4), act_depth=64, w_depth=64, groups=2,
                      max_depth=64, frame_bytes=128),
], ids=["packed", "sparse"])
def test_an_accelerator_without_depthwise_refuses_it(config):
    assert config.conv and not config.depthwise
    desc = RunDescriptor.convolution(
        in_shape=(3, 3, 1), kernel=(3, 3), stride=(1, 1), padding=(1, 1), pad_code=0,
        a_base=0, words=1, m_tiles=5, n_tiles=1, k_steps=9, step=1,
        mode=Mode.CONV | Mode.DEPTHWISE, w_base=0, out_base=32, out_stride=1, group_base=0)
    # (A matrix RUN after it: the device runs layers, just not depthwise ones.)
    bodies = [frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(0xC0FFEE)),
              frame(2, Command.RUN, desc.pack()),
              refused(desc, 3, mode=0, step=config.n if config.sparse else 1)]
    replies = exchange(Accelerator(config), bodies)
    assert check_replies(config, bodies, replies) == [Status.OK, Status.RANGE, Status.OK]


def test_operand_tables_refuse_depthwise_but_run_convolutions():
    # Dense with tables: no depthwise mode (each lane would need its own activation table
    # port), convolutions through the tables as usual.
    config = AcceleratorConfig(rows=2, cols=4, tables=True, act_depth=64, w_depth=64,
                               groups=2, max_depth=64, frame_bytes=320)
    assert config.conv and not config.depthwise
    rng = np.random.default_rng(5)
    multiplier, shift = golden.quantize_multiplier(rng.uniform(1e-3, 1e-2, 2 * config.cols))
    records = layouts.pack_requant(rng.integers(-500, 500, 2 * config.cols), multiplier, shift,
                                   rng.integers(0, 20, 2 * config.cols), [1] * 2 * config.cols)
    desc = RunDescriptor.convolution(
        in_shape=(3, 4, 1), kernel=(3, 3), stride=(1, 1), padding=(1, 1), pad_code=9,
        a_base=0, words=2, m_tiles=6, n_tiles=2, k_steps=9, step=1,
        mode=Mode.CONV | Mode.DEPTHWISE | Mode.ACT_TABLE | Mode.WEIGHT_TABLE, w_base=0,
        out_base=32, out_stride=2, group_base=0)
    bodies = [
        frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(0xC0FFEE)),
        write(2, Space.ACT_TABLE, 0, rng.integers(0, 256, (256, 1))),
        write(3, Space.WEIGHT_TABLE, 1 << WEIGHT_TABLE_ALL_BIT, rng.integers(0, 256, (256, 1))),
        write(4, Space.ACT_ALL, 0, rng.integers(0, 256, (24, config.cols))),
        write(5, Space.WEIGHT, 0, rng.integers(0, 256, (18, config.weight_bytes))),
        write(6, Space.REQUANT, 0, records),
        frame(7, Command.RUN, desc.pack()),
        frame(8, Command.READ, REQUESTS[Command.READ].pack(Space.ACT, 32, 24)),
        # The same walk as an ordinary convolution: the selected lane in every column.
        frame(9, Command.RUN, replace(desc, mode=Mode.CONV | Mode.ACT_TABLE, n_tiles=1,
                                      out_base=0).pack()),
        frame(10, Command.READ, REQUESTS[Command.READ].pack(Space.ACT, 0, 12)),
    ]
    replies = exchange(Accelerator(config), bodies)
    assert check_replies(config, bodies, replies) == [Status.OK] * 6 + [Status.RANGE] \
        + [Status.OK] * 3
    assert len(set(replies[9][9:-CRC_BYTES])) > 2


#: A depthwise accelerator small enough for the add tables' test: 4 lanes, 22-bit sums.
ADD_CONFIG = AcceleratorConfig(rows=2, cols=4, act_depth=64, w_depth=64, groups=2,
                               max_depth=64, frame_bytes=640)


def add_table_writes(config, rng, seq, tables):
    """WRITEs of ``tables`` (``{table: [2, 256] entries}``) into ``Space.ADD_TABLE``, as
    many entries per frame as fit."""
    per_frame = (config.frame_bytes - 16 - 8) // 4
    bodies = []
    for table, entries in tables.items():
        words = np.asarray(entries, dtype="<i4").reshape(-1).view(np.uint8).reshape(-1, 4)
        base = encode_address(Space.ADD_TABLE, config, table=table)
        for start in range(0, len(words), per_frame):
            bodies.append(write(seq + len(bodies), Space.ADD_TABLE, base + start,
                                words[start:start + per_frame]))
    return bodies


def test_a_residual_add_through_the_link_equals_the_golden_device():
    # acc = a - 256 * b for images A and B: the depthwise walk over two image rows (A's,
    # then B's, ``tap_row`` apart), two taps on the same word (``a_stride`` 0) with weights
    # [1, 0] on A and [-128, -128] on B; the add table then maps acc's low byte (a) and
    # next byte (-b) to entries whose sum the requantizer takes.
    config = ADD_CONFIG
    assert config.depthwise
    rng = np.random.default_rng(6)
    pixels, words = 6, 2                     # 8 channels: two words of 4 lanes a pixel
    a_base, b_base, out_base = 0, 16, 40
    image_a = rng.integers(0, 256, (pixels * words, config.cols))
    image_b = rng.integers(0, 256, (pixels * words, config.cols))
    image_a[0], image_b[0] = 255, 255        # corners: acc = 255 - 65280 and ...
    image_a[1], image_b[1] = 0, 0            # ... acc = 0
    taps = np.array([1, 0, -128, -128])
    weights = np.repeat(np.tile(taps, words)[:, None], config.cols, axis=1) & 0xFF
    tables = {t: rng.integers(-30000, 30000, (2, 256)) for t in range(3)}
    tables[1][0, rng.integers(0, 256, 4)] = [2 ** 31 - 1, -2 ** 31, 2 ** 31 - 1, -2 ** 31]
    multiplier, shift = golden.quantize_multiplier(rng.uniform(2e-3, 5e-3, 2 * config.cols))
    records = layouts.pack_requant(rng.integers(-500, 500, 2 * config.cols), multiplier, shift,
                                   rng.integers(100, 150, 2 * config.cols),
                                   rng.integers(0, 2, 2 * config.cols))
    desc = RunDescriptor(
        m_tiles=pixels // config.rows, n_tiles=words, k_steps=4, a_base=a_base, a_stride=0,
        step=1, mode=Mode.CONV | Mode.DEPTHWISE | Mode.ADD, w_base=0, out_base=out_base,
        out_stride=words, group_base=0, in_h=2, in_w=pixels + 1, in_c=1, out_w=pixels,
        origin=a_base, x_step=words, row_step=words, tap_row=(b_base - a_base) % 65536,
        kh=2, kw=2, sh=1, sw=1, ph=0, pw=0, pad_code=0, table=1)
    read = REQUESTS[Command.READ]
    table_writes = add_table_writes(config, rng, 6, tables)
    seq = 6 + len(table_writes)
    outputs = pixels * words
    bodies = [
        frame(1, Command.OPEN, REQUESTS[Command.OPEN].pack(0xC0FFEE)),
        write(2, Space.ACT_ALL, a_base, image_a),
        write(3, Space.ACT_ALL, b_base, image_b),
        write(4, Space.WEIGHT, 0, weights),
        write(5, Space.REQUANT, 0, records),
        *table_writes,
        frame(seq, Command.RUN, desc.pack()),
        frame(seq + 1, Command.READ, read.pack(Space.ACT, out_base, outputs)),
        frame(seq + 2, Command.READ, read.pack(Space.ACT, encode_address(
            Space.ACT, config, bank=1, word=out_base), outputs)),
        # Another table; the same walk without ADD (the stage passes rows through).
        refused(desc, seq + 3, table=2, out_base=out_base + outputs),
        frame(seq + 4, Command.READ, read.pack(Space.ACT, out_base + outputs, outputs)),
        refused(desc, seq + 5, mode=Mode.CONV | Mode.DEPTHWISE, out_base=out_base - outputs),
        frame(seq + 6, Command.READ, read.pack(Space.ACT, out_base - outputs, outputs)),
        # Refused: a table that does not exist, ADD without the depthwise walk.
        refused(desc, seq + 7, table=4),
        refused(desc, seq + 8, mode=Mode.CONV | Mode.ADD),
    ]
    replies = exchange(Accelerator(config), bodies)
    statuses = check_replies(config, bodies, replies)
    assert statuses == [Status.OK] * (len(bodies) - 2) + [Status.RANGE] * 2
    first = len(table_writes) + 6
    out = [replies[first + k][9:-CRC_BYTES] for k in (0, 3, 5)]
    # The layers computed something, in every bank alike, and the table mattered.
    assert all(len(set(words)) > 4 for words in out[:2])
    assert out[0] == replies[first + 1][9:-CRC_BYTES]
    assert out[0] != out[1] and out[0] != out[2]
