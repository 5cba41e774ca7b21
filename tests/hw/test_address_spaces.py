"""The address-space decoder in Amaranth's simulator: which addresses exist, against the golden
device model's own rule, on arrays whose column count is and is not a power of two, and
where a committed word goes."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparqforge.config import AcceleratorConfig
from sparqforge.hw.address_spaces import AddressSpaces
from sparqforge.hw.array_core import ArrayCore
from sparqforge.protocol import (ACT_LANES_WORD_BITS, TABLE_SPACES, Space, encode_address,
                                 word_bytes)
from sparqforge.sw.runtime.device_model import DeviceModel


def decoder(config):
    core = ArrayCore(rows=config.rows, cols=config.cols, max_depth=config.max_depth,
                     groups=config.groups, sparsity=config.sparsity, tables=config.tables,
                     threshold_bits=config.threshold_bits if config.tables else None,
                     a_signed=False, lane_operands=config.depthwise)
    return AddressSpaces(config, core_signature=core.signature)


def addresses(config, space, rng):
    """Around every limit and field boundary, and random ones."""
    limit = {Space.ACT: config.rows << config.act_depth_bits, Space.WEIGHT: config.w_depth,
             Space.ACT_ALL: config.act_depth,
             Space.REQUANT: config.groups << config.lane_bits, Space.ACT_TABLE: 256,
             Space.WEIGHT_TABLE: (1 << 15) + 256,
             Space.THRESHOLD: config.groups << (8 + config.lane_bits),
             Space.ADD_TABLE: 4 << 9}[space]
    near = [0, 1, limit - 1, limit, limit + 1, 255, 256, 1 << 15, (1 << 15) + 255]
    return sorted({a for a in near if a >= 0} | set(rng.integers(0, 2 * limit, 200).tolist()))


def lane_addresses(config, rng):
    """``ACT_LANES`` addresses: every lane count and one past, each around the depth."""
    words = [0, 1, config.act_depth - 1, config.act_depth, (1 << ACT_LANES_WORD_BITS) - 1]
    words += rng.integers(0, 2 * config.act_depth, 20).tolist()
    return [(lanes << ACT_LANES_WORD_BITS) | word for lanes in range(config.cols + 2)
            for word in words]


@pytest.mark.parametrize("config", [
    AcceleratorConfig(rows=3, cols=3, sparsity=(1, 3), tables=True, act_depth=16, w_depth=40,
                      groups=5),
    AcceleratorConfig(rows=2, cols=4, tables=True, act_depth=16, w_depth=40, groups=4),
    AcceleratorConfig(rows=1, cols=1, act_depth=16, w_depth=40, groups=3),
], ids=["3_cols", "4_cols", "1_col"])
def test_addressable_words_agree_with_the_golden_device(config):
    dut = decoder(config)
    model = DeviceModel(config)
    rng = np.random.default_rng(config.cols)
    spaces = [Space.ACT, Space.ACT_ALL, Space.ACT_LANES, Space.WEIGHT, Space.REQUANT]
    spaces += list(TABLE_SPACES) if config.tables else []
    spaces += [Space.ADD_TABLE] if config.depthwise else []
    # Spaces this accelerator lacks (the golden device answers SPACE).
    missing = [space for space in Space if space not in spaces]
    assert (Space.ADD_TABLE in missing) == (not config.depthwise)
    cases = [(space, address) for space in spaces if space != Space.ACT_LANES
             for address in addresses(config, space, rng)]
    cases += [(Space.ACT_LANES, address) for address in lane_addresses(config, rng)]
    got = []

    async def bench(ctx):
        for space, address in cases:
            ctx.set(dut.space, space)
            ctx.set(dut.target, address)
            await ctx.tick()
            assert ctx.get(dut.known)
            assert ctx.get(dut.word_bytes) == word_bytes(space, config, address)
            got.append(ctx.get(dut.addressable))
        for space in [*missing, 9]:
            ctx.set(dut.space, space)
            assert not ctx.get(dut.known)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = [bool(model._addressable(space, np.array([address]))[0]) for space, address in cases]
    assert got == want


def test_a_committed_word_goes_to_its_port():
    config = AcceleratorConfig(rows=3, cols=4, tables=True, act_depth=16, groups=4)
    dut = decoder(config)
    seen = {}

    # The banks and zeroed lanes are registered from ``space`` and ``target`` (the executor
    # sets them at least two cycles before a commit): each case waits one clock edge.
    async def bench(ctx):
        ctx.set(dut.word, 0x1122334455)
        ctx.set(dut.commit, 1)
        ctx.set(dut.space, Space.ACT)
        ctx.set(dut.target, encode_address(Space.ACT, config, bank=2, word=7))
        await ctx.tick()
        seen["act"] = (ctx.get(dut.host_write.en), ctx.get(dut.host_write.addr),
                       ctx.get(dut.weight_write.en), ctx.get(dut.cfg_requant.valid))
        ctx.set(dut.space, Space.ACT_ALL)
        ctx.set(dut.target, 9)
        await ctx.tick()
        seen["act_all"] = (ctx.get(dut.host_write.en), ctx.get(dut.host_write.addr),
                           ctx.get(dut.host_write.data.as_value()))
        ctx.set(dut.space, Space.ACT_LANES)
        ctx.set(dut.target, encode_address(Space.ACT_LANES, config, lanes=1, word=6))
        await ctx.tick()
        seen["act_lanes"] = (ctx.get(dut.host_write.en), ctx.get(dut.host_write.addr),
                             ctx.get(dut.host_write.data.as_value()))
        ctx.set(dut.space, Space.THRESHOLD)
        ctx.set(dut.target, encode_address(Space.THRESHOLD, config, group=3, lane=1, index=5))
        await ctx.tick()
        port = dut.cfg_threshold
        seen["threshold"] = (ctx.get(port.valid), ctx.get(port.payload.group),
                             ctx.get(port.payload.lane), ctx.get(port.payload.index),
                             ctx.get(dut.host_write.en))
        ctx.set(dut.commit, 0)
        seen["idle"] = ctx.get(port.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["act"] == (0b100, 7, 0, 0)
    assert seen["act_all"] == (0b111, 9, 0x22334455)
    assert seen["act_lanes"] == (0b111, 6, 0x4455)    # lanes 2 and 3 written 0
    assert seen["threshold"] == (1, 3, 1, 5, 0)
    assert seen["idle"] == 0


def test_an_add_table_entry_goes_to_the_core():
    config = AcceleratorConfig(rows=2, cols=4, act_depth=16, groups=4)
    assert config.depthwise
    dut = decoder(config)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.word, 0xAB_8000_0001)      # the low four bytes: -2 ** 31 + 1
        ctx.set(dut.commit, 1)
        ctx.set(dut.space, Space.ADD_TABLE)
        ctx.set(dut.target, encode_address(Space.ADD_TABLE, config, table=3, input=1,
                                           code=0x5A))
        port = dut.cfg_add
        seen["add"] = (ctx.get(port.valid), ctx.get(port.payload.table),
                       ctx.get(port.payload.input), ctx.get(port.payload.code),
                       ctx.get(port.payload.value), ctx.get(dut.word_bytes),
                       ctx.get(dut.host_write.en), ctx.get(dut.cfg_requant.valid),
                       ctx.get(dut.weight_write.en))
        ctx.set(dut.space, Space.REQUANT)
        seen["requant"] = ctx.get(port.valid), ctx.get(dut.cfg_requant.valid)
        ctx.set(dut.commit, 0)
        ctx.set(dut.space, Space.ADD_TABLE)
        seen["idle"] = ctx.get(port.valid)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert seen["add"] == (1, 3, 1, 0x5A, -(1 << 31) + 1, 4, 0, 0, 0)
    assert seen["requant"] == (0, 1)
    assert seen["idle"] == 0


def test_the_core_must_match_the_configuration():
    config = AcceleratorConfig(rows=2, cols=4, act_depth=16, groups=4)
    core = ArrayCore(rows=2, cols=4, max_depth=config.max_depth, groups=4, a_signed=False)
    with pytest.raises(ValueError, match=r"^An accelerator with depthwise True needs a core "
                                         r"with add tables \(ArrayCore lane_operands=True\)$"):
        AddressSpaces(config, core_signature=core.signature)
