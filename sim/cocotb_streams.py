"""cocotb 2 driver for every stream of a block at once, with random valid/ready stalls.

One coroutine handles all streams cycle by cycle (drive at the falling edge, sample the
handshakes once combinational logic has settled), the same discipline as the compiled
harness: a source holds ``valid`` and its payload until the beat is taken, a sink drops
``ready`` at random. Input streams of a higher phase start after lower phases finish.
"""

__all__ = ["StreamBench", "start_and_reset", "check_cases"]

import random

from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


class StreamBench:
    """Run packed beats through ``dut``'s streams.

    Parameters
    ----------
    dut : cocotb handle of the top level.
    desc : dict
        Block description (for the stream names and directions).
    inputs : dict
        Input stream name to a list of payload ints.
    expect : dict
        Output stream name to the number of beats to collect.
    stall : float
        Probability that a stream stalls in a cycle.
    phases : dict
        Input stream name to phase.
    """

    def __init__(self, dut, desc, inputs, expect, *, stall=0.3, phases=None, seed=1):
        self._dut = dut
        self._inputs = {name: list(values) for name, values in inputs.items()}
        self._expect = dict(expect)
        self._stall = stall
        self._phases = phases or {}
        self._rng = random.Random(seed)
        self.outputs = {name: [] for name in expect}
        self.cycles = 0

    def _port(self, name, member):
        return getattr(self._dut, f"{name}__{member}")

    async def run(self, max_cycles=200_000):
        clk = self._dut.clk
        index = {name: 0 for name in self._inputs}
        holding = {name: False for name in self._inputs}
        for name in self._inputs:
            self._port(name, "valid").value = 0
        while True:
            await FallingEdge(clk)
            live = [self._phases.get(n, 0) for n, v in self._inputs.items() if index[n] < len(v)]
            phase = min(live, default=0)
            for name, values in self._inputs.items():
                if (not holding[name] and index[name] < len(values)
                        and self._phases.get(name, 0) <= phase
                        and self._rng.random() >= self._stall):
                    holding[name] = True
                    self._port(name, "payload").value = values[index[name]]
                self._port(name, "valid").value = int(holding[name])
            ready_out = {name: self._rng.random() >= self._stall for name in self._expect}
            for name, ready in ready_out.items():
                self._port(name, "ready").value = int(ready)
            await ReadOnly()
            for name in self._inputs:
                if holding[name] and self._port(name, "ready").value == 1:
                    holding[name] = False
                    index[name] += 1
            for name, ready in ready_out.items():
                got = self.outputs[name]
                if ready and self._port(name, "valid").value == 1 and len(got) < self._expect[name]:
                    got.append(self._port(name, "payload").value.to_unsigned())
            await RisingEdge(clk)
            self.cycles += 1
            done = (all(index[n] == len(v) for n, v in self._inputs.items())
                    and all(len(self.outputs[n]) == c for n, c in self._expect.items()))
            if done:
                return self.outputs
            if self.cycles >= max_cycles:
                raise TimeoutError(f"Streams did not finish in {max_cycles} cycles: "
                                   f"{ {n: len(v) for n, v in self.outputs.items()} } of "
                                   f"{self._expect} output beats")


async def start_and_reset(dut, cycles=3):
    """Start a 100 MHz clock on ``dut.clk`` and pulse ``dut.rst``."""
    from cocotb import start_soon
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles

    start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0


async def check_cases(dut, config, make_case):
    """Run every case of a bench configuration and compare element by element.

    ``make_case(case)`` returns ``(schedule, expected)``, where ``expected`` is the golden
    result (a matrix, or a list of matrices for a chained schedule). With ``perturb`` set in
    the configuration, one result element is changed before comparing, to show the checker
    fails. Raises AssertionError naming every mismatching case.
    """
    import numpy as np

    from .check import compare
    from .ports import ints_to_beats, pack, unpack, beats_to_ints

    desc = config["desc"]
    await start_and_reset(dut)
    failures = []
    for number, case in enumerate(config["cases"]):
        schedule, expected = make_case(case)
        inputs = {name: beats_to_ints(pack(desc["ports"][name], fields, schedule.counts[name]))
                  for name, fields in schedule.inputs.items()}
        bench = StreamBench(dut, desc, inputs, {schedule.out_port: schedule.out_beats},
                            stall=config["stall"], phases=schedule.phases, seed=number + 1)
        outputs = await bench.run()
        words = ints_to_beats(outputs[schedule.out_port],
                              desc["ports"][schedule.out_port]["width"])
        got = schedule.assemble(unpack(desc["ports"][schedule.out_port], words))
        pairs = list(zip(expected, got)) if isinstance(got, list) else [(expected, got)]
        if config.get("perturb"):
            pairs[0][1][0, 0] += 1
        for part, (want, have) in enumerate(pairs):
            result = compare(np.asarray(want), have)
            dut._log.info(f"{case['name']}[{part}]: {result} ({bench.cycles} cycles)")
            if result:
                failures.append(f"{case['name']}[{part}]: {result}")
    assert not failures, "; ".join(failures)
