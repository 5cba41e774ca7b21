"""SlicedMemory (hw/sliced_memory.py): one memory's behaviour from side-by-side slices, and
no logic after the block RAMs on an ECP5."""

import json

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparqforge.boards.synth import ECP5_GROUPS, count_cells, run_yosys
from sparqforge.hw.emit import to_rtlil
from sparqforge.hw.sliced_memory import SlicedMemory, block_ram_bits


@pytest.mark.parametrize("width,slice_bits", [(64, 16), (20, 8), (8, 8), (9, 4)])
def test_reads_return_the_word_written_before(width, slice_bits):
    depth = 16
    mem = SlicedMemory(width=width, depth=depth, slice_bits=slice_bits)
    rng = np.random.default_rng(width + slice_bits)
    model = [0] * depth
    errors = []

    async def bench(ctx):
        for _ in range(400):
            raddr, waddr = (int(v) for v in rng.integers(0, depth, 2))
            wdata = int(rng.integers(0, 1 << width, dtype=np.uint64)) & ((1 << width) - 1)
            wen = bool(rng.integers(0, 2))
            if rng.random() < 0.2:
                raddr = waddr     # a read of the word being written returns the old word
            ctx.set(mem.read.addr, raddr)
            ctx.set(mem.write.addr, waddr)
            ctx.set(mem.write.data, wdata)
            ctx.set(mem.write.en, wen)
            await ctx.tick()
            if ctx.get(mem.read.data) != model[raddr]:
                errors.append((raddr, model[raddr], ctx.get(mem.read.data)))
            if wen:
                model[waddr] = wdata

    sim = Simulator(mem)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:3]


def test_block_ram_widths():
    assert [block_ram_bits(d) for d in (16, 512, 513, 1024, 2048, 4096, 8192, 16384)] == \
        [36, 36, 18, 18, 9, 4, 2, 1]


def test_ecp5_block_rams_without_logic_after_them():
    # A 1024 x 64 memory in 16-bit slices: four DP16KD and nothing else (no multiplexer
    # between cascaded block RAMs, no read/write collision logic).
    text = to_rtlil(SlicedMemory(width=64, depth=1024, slice_bits=16), "t")
    out = run_yosys("read_rtlil t.il; synth_ecp5 -noiopad -top t; "
                    "tee -q -o stat.json stat -json", {"t.il": text})
    counts = count_cells(json.loads(out["stat.json"]), ECP5_GROUPS)
    assert counts["dp16kd"] == 4
    assert counts["lut4"] == 0 and counts["ff"] == 0
