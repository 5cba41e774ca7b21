"""The writeback in Amaranth's simulator: every output row to its bank and word as the RUN
descriptor says (``sparqforge.protocol.RunDescriptor``: matrix rows, or convolution pixels
into every bank), with gaps between rows, and the layer's end and cycle count."""

import random

import pytest
from amaranth.sim import Simulator

from sparqforge.config import AcceleratorConfig
from sparqforge.hw.array_core import ArrayCore
from sparqforge.hw.writeback import Writeback
from sparqforge.protocol import Mode


def make_writeback(config, out_bits=8):
    core = ArrayCore(rows=config.rows, cols=config.cols, max_depth=config.max_depth,
                     groups=config.groups, requant=out_bits == 8,
                     threshold_bits=None if out_bits == 8 else out_bits, out_bits=8,
                     a_signed=False)
    return Writeback(config, o_signature=core.signature.members["o"].signature,
                     out_bits=core.out_bits)


def expected_writes(config, desc, rows):
    """``(bank enables, word, codes)`` of each output row in the order the core emits
    them."""
    writes, index = [], 0
    conv = desc.get("mode", 0) & Mode.CONV
    for nt in range(desc["n_tiles"]):
        for mt in range(desc["m_tiles"]):
            for r in range(config.rows):
                if conv:
                    m = mt * config.rows + r
                    writes.append(((1 << config.rows) - 1,
                                   desc["out_base"] + m * desc["out_stride"] + nt, rows[index]))
                else:
                    writes.append((1 << r, desc["out_base"] + mt * desc["out_stride"] + nt,
                                   rows[index]))
                index += 1
    return writes


@pytest.mark.parametrize("rows,cols,out_bits", [(2, 4, 8), (3, 2, 8), (1, 1, 8), (2, 4, 4)])
@pytest.mark.parametrize("gap", [0.0, 0.5])
@pytest.mark.parametrize("mode", [0, Mode.CONV])
def test_rows_land_in_their_banks_and_words(rows, cols, out_bits, gap, mode):
    config = AcceleratorConfig(rows=rows, cols=cols, act_depth=64, groups=4)
    dut = make_writeback(config, out_bits)
    desc = dict(m_tiles=3, n_tiles=2, out_base=5, out_stride=2 if mode else 4, mode=mode)
    count = desc["m_tiles"] * desc["n_tiles"] * rows
    rng = random.Random(rows * 10 + cols)
    codes = [[rng.randrange(1 << out_bits) for _ in range(cols)] for _ in range(count)]
    writes, events = [], {}

    async def source(ctx):
        for name, value in desc.items():
            ctx.set(getattr(dut.desc, name), value)
        ctx.set(dut.desc.m_last, desc["m_tiles"] - 1)
        ctx.set(dut.desc.n_last, desc["n_tiles"] - 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        assert ctx.get(dut.running)
        for index, row in enumerate(codes):
            while rng.random() < gap:
                await ctx.tick()
            ctx.set(dut.o.valid, 1)
            ctx.set(dut.o.payload.data, row)
            ctx.set(dut.o.payload.last, int(index % rows == rows - 1))
            assert ctx.get(dut.o.ready)
            await ctx.tick()
            ctx.set(dut.o.valid, 0)
        events["last_row"] = ctx.get(dut.cycles)

    async def monitor(ctx):
        cycle = 0
        while "finished" not in events:
            _, _, en, addr, data, finished, running, cycles = await ctx.tick().sample(
                dut.write.en, dut.write.addr, dut.write.data, dut.finished, dut.running,
                dut.cycles)
            cycle += 1
            if en:
                writes.append((en, addr, [int(v) for v in data]))
            if finished:
                assert not running
                events["finished"] = cycle
                events["cycles"] = cycles

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(monitor)
    sim.run()
    assert writes == expected_writes(config, desc, codes)
    # ``cycles`` counts from the start to the last row: one per row without gaps.
    assert events["cycles"] == events["last_row"] >= count
    if gap == 0.0:
        assert events["cycles"] == count


def test_a_swapped_word_order_would_be_caught():
    config = AcceleratorConfig(rows=2, cols=2, act_depth=64, groups=4)
    desc = dict(m_tiles=2, n_tiles=2, out_base=0, out_stride=3)
    rows = [[i, i] for i in range(8)]
    writes = expected_writes(config, desc, rows)
    # Row tiles are stride apart and channel tiles one word apart; the two differ here.
    assert [w for _, w, _ in writes] == [0, 0, 3, 3, 1, 1, 4, 4]
