"""ThresholdUnit (hw/threshold_unit.py): its named stages (a comparison per code bit, then
the code) give its latency, in Amaranth's simulator too, and a stage added to the list
without statements fails to elaborate. Bit-exactness against the golden model is in
test_power_units.py."""

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from sparqforge.hw.pipeline import QUEUE_LATENCY, Stages
from sparqforge.hw.threshold_unit import ThresholdUnit


def first_output_cycle(dut):
    """Cycles from accepting one beat (``last`` set) to its output, the output ready."""
    seen = {}

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.last, 1)
        assert ctx.get(dut.i.ready)
        for cycle in range(50):
            if ctx.get(dut.o.valid):
                seen["cycle"], seen["last"] = cycle, ctx.get(dut.o.payload.last)
                return
            await ctx.tick()
            ctx.set(dut.i.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert seen["last"] == 1
    return seen["cycle"]


@pytest.mark.parametrize("code_bits,groups", [(1, 1), (2, 3), (4, 2), (8, 1)])
def test_latency_counts_the_named_stages(code_bits, groups):
    dut = ThresholdUnit(lanes=2, acc_bits=12, code_bits=code_bits, groups=groups)
    stages = dut.pipeline_stages
    assert list(stages) == [f"compare_{s}" for s in range(code_bits)] + ["code"]
    assert dut.stages == len(stages) == code_bits + 1
    assert dut.latency == len(stages) + QUEUE_LATENCY == first_output_cycle(dut)


def test_a_stage_added_without_statements_fails_to_elaborate():
    class Longer(ThresholdUnit):
        @property
        def pipeline_stages(self):
            return Stages(*super().pipeline_stages, "extra", numbered_from=1)

    dut = Longer(lanes=1, acc_bits=12, code_bits=2)
    assert dut.latency == 4 + QUEUE_LATENCY
    with pytest.raises(ValueError, match=r"Every stage must have statements added .*, not "
                                         r"extra"):
        Fragment.get(dut, None)
