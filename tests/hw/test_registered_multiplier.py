"""RegisteredMultiplier (hw/registered_multiplier.py): the product two cycles later, and on
an ECP5 a MULT18X18D whose own registers hold the operands and the product."""

import json
import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from sparqforge.boards.synth import ECP5_GROUPS, count_cells, run_yosys
from sparqforge.boards.ulx3s import ULX3S_85F
from sparqforge.hw.registered_multiplier import RegisteredMultiplier

SHAPES = [(signed(16), unsigned(16)), (unsigned(16), unsigned(15)), (signed(8), signed(8)),
          (unsigned(3), signed(5))]


def _values(shape, rng, count):
    low, high = (-(1 << shape.width - 1), (1 << shape.width - 1) - 1) if shape.signed \
        else (0, (1 << shape.width) - 1)
    return np.concatenate([[low, high, 0, low, high], rng.integers(low, high + 1, count)])


@pytest.mark.parametrize("a_shape,b_shape", SHAPES)
def test_product_two_cycles_later(a_shape, b_shape):
    mul = RegisteredMultiplier(a_shape, b_shape)
    assert mul.latency == 2
    rng = np.random.default_rng(a_shape.width * 100 + b_shape.width)
    a = _values(a_shape, rng, 200)
    b = np.concatenate([_values(b_shape, rng, 200)[:5][::-1], _values(b_shape, rng, 200)[5:]])
    got = []

    async def bench(ctx):
        for x, y in zip(a, b):
            ctx.set(mul.a, int(x))
            ctx.set(mul.b, int(y))
            await ctx.tick()
            got.append(ctx.get(mul.p))
        for _ in range(2):
            await ctx.tick()
            got.append(ctx.get(mul.p))

    sim = Simulator(mul)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # ``got[t]`` is read after tick t + 1: the product of the operands set before tick t.
    expected = a.astype(np.int64) * b.astype(np.int64)
    assert got[1:len(a) + 1] == expected.tolist()


def test_ecp5_form_uses_the_blocks_registers():
    mul = RegisteredMultiplier(signed(16), unsigned(16))
    text = rtlil.convert(mul, name="t", platform=ULX3S_85F(), emit_src=False)
    cell = text[text.index("cell \\MULT18X18D"):]
    cell = cell[:cell.index("\n  end")]
    for port in ("INPUTA", "INPUTB", "OUTPUT"):
        assert re.search(rf'parameter \\REG_{port}_CLK "CLK0"', cell), port
    assert 'parameter \\REG_PIPELINE_CLK "NONE"' in cell
    # Synthesis keeps the registers in the block: one MULT18X18D, no fabric flip-flops.
    out = run_yosys("read_rtlil t.il; synth_ecp5 -noiopad -top t; "
                    "tee -q -o stat.json stat -json", {"t.il": text})
    counts = count_cells(json.loads(out["stat.json"]), ECP5_GROUPS)
    assert counts["mult18"] == 1 and counts["ff"] == 0


def test_without_the_ecp5_the_registers_are_fabric_flip_flops():
    mul = RegisteredMultiplier(signed(16), unsigned(16))
    text = rtlil.convert(mul, name="t", emit_src=False)
    assert "MULT18X18D" not in text
    out = run_yosys("read_rtlil t.il; synth_ecp5 -noiopad -top t; "
                    "tee -q -o stat.json stat -json", {"t.il": text})
    counts = count_cells(json.loads(out["stat.json"]), ECP5_GROUPS)
    # Both operands and the (at most 32 significant bits of the) product.
    assert counts["ff"] >= 16 + 16 + 32
