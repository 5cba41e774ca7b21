"""Drive a block's streams in Amaranth's Python simulator, with random stalls.

The fast verification tier: the same packed beats as the compiled harness and cocotb, fed
by one async testbench per stream. Input streams of a higher phase start once every stream
of a lower phase is done (configuration before data).
"""

__all__ = ["run_streams"]

import random

from amaranth.sim import Simulator

from .ports import beats_to_ints, ints_to_beats


def run_streams(dut, desc, inputs, expect, *, stall=0.3, phases=None, seed=1,
                max_cycles=200_000, vcd=None):
    """Simulate ``dut`` on packed input beats and collect packed output beats.

    Returns ``(outputs, cycles)``: output stream name to ``(beats, words)`` uint32 arrays
    and the cycle count when the last expected output beat arrived.

    Raises
    ------
    TimeoutError
        If the expected beats do not all arrive within ``max_cycles``.
    """
    phases = phases or {}
    order = sorted({phases.get(name, 0) for name in inputs})
    done_phase = {p: 0 for p in order}
    pending = {p: sum(1 for n in inputs if phases.get(n, 0) == p) for p in order}
    collected = {name: [] for name in expect}
    state = {"cycles": 0, "finished": False}

    def phase_ready(phase):
        return all(done_phase[p] == pending[p] for p in order if p < phase)

    def sender(name, values, rng):
        port = getattr(dut, name)
        phase = phases.get(name, 0)

        async def bench(ctx):
            while not phase_ready(phase):
                await ctx.tick()
            for value in values:
                while rng.random() < stall:
                    await ctx.tick()
                ctx.set(port.valid, 1)
                ctx.set(port.payload.as_value(), value)
                await ctx.tick().until(port.ready)
                ctx.set(port.valid, 0)
            done_phase[phase] += 1
        return bench

    def receiver(name, count, rng):
        port = getattr(dut, name)
        mask = (1 << desc["ports"][name]["width"]) - 1

        async def bench(ctx):
            for _ in range(count):
                while rng.random() < stall:
                    await ctx.tick()
                ctx.set(port.ready, 1)
                payload, = await ctx.tick().sample(port.payload.as_value()).until(port.valid)
                collected[name].append(int(payload) & mask)
                ctx.set(port.ready, 0)
        return bench

    async def clock_watch(ctx):
        while not state["finished"]:
            await ctx.tick()
            state["cycles"] += 1
            if state["cycles"] > max_cycles:
                raise TimeoutError(f"Simulation did not finish in {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    master = random.Random(seed)
    for name, words in inputs.items():
        sim.add_testbench(sender(name, beats_to_ints(words), random.Random(master.random())))
    receivers = [receiver(name, count, random.Random(master.random()))
                 for name, count in expect.items()]
    for bench in receivers:
        sim.add_testbench(bench)
    sim.add_testbench(clock_watch, background=True)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    state["finished"] = True
    outputs = {name: ints_to_beats(values, desc["ports"][name]["width"])
               for name, values in collected.items()}
    return outputs, state["cycles"]
