"""queued_pipeline (hw/pipeline.py) in Amaranth's simulator: every beat out once and in order
under long and random output stalls, and full rate at the stated latency when the output is
ready."""

import random

import pytest
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from sparqforge.hw.pipeline import QUEUE_LATENCY, queued_pipeline

STAGES = 5


class _AddPipeline(wiring.Component):
    """Adds ``STAGES`` to each 8-bit beat, one per stage."""
    i: In(stream.Signature(unsigned(8)))
    o: Out(stream.Signature(unsigned(8)))

    def elaborate(self, platform):
        m = Module()
        _, out = queued_pipeline(m, self.i, self.o, STAGES)
        value = self.i.payload
        for s in range(STAGES):
            stage = Signal(8, name=f"stage_{s}")
            m.d.sync += stage.eq(value + 1)
            value = stage
        m.d.comb += out.eq(value)
        return m


def _run(ready_at, beats=60, *, gaps=0.0, seed=1):
    """Send ``beats`` values, with the output ready in the cycles ``ready_at(cycle)`` says;
    return (outputs, cycle of each output)."""
    dut = _AddPipeline()
    rng = random.Random(seed)
    sent, got, times = list(range(beats)), [], []

    async def testbench(ctx):
        cycle, pending = 0, list(sent)
        while len(got) < beats and cycle < 20 * beats + 200:
            offer = bool(pending) and rng.random() >= gaps
            ctx.set(dut.i.valid, offer)
            if offer:
                ctx.set(dut.i.payload, pending[0])
            ctx.set(dut.o.ready, ready_at(cycle))
            if offer and ctx.get(dut.i.ready):
                pending.pop(0)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append(ctx.get(dut.o.payload))
                times.append(cycle)
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return [(v - STAGES) % 256 for v in got], times


def test_full_rate_and_latency_when_output_ready():
    got, times = _run(lambda cycle: True)
    assert got == list(range(60))
    assert times[0] == STAGES + QUEUE_LATENCY
    assert times == list(range(times[0], times[0] + 60))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_and_random_output_stalls_lose_nothing(seed):
    rng = random.Random(100 + seed)
    pattern = [cycle >= 40 and rng.random() < 0.6 for cycle in range(4000)]
    got, _ = _run(lambda cycle: pattern[cycle], gaps=0.3, seed=seed)
    assert got == list(range(60))
