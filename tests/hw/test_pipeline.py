"""queued_pipeline (hw/pipeline.py) in Amaranth's simulator: every beat out once and in order
under long and random output stalls, and full rate at the stated latency when the output is
ready. Named stages (``Stages``): statements placed and values carried by stage name, in the
simulator and statement by statement, and every unknown or forgotten stage name an error."""

import random

import pytest
from amaranth.hdl import Module, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from sparqforge.hw.pipeline import QUEUE_LATENCY, Stages, queued_pipeline

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


# Named stages (``Stages``): a pipeline built by stage name, with values carried by name.

NAMES = ("load", "double", "wait", "add", "out")


class _NamedPipeline(wiring.Component):
    """``2 * x + 3`` per beat through the named stages ``NAMES``; the beat's tag is carried
    register by register, ``x * 2`` through ``double`` and ``wait`` (which holds nothing
    else), and ``last`` (registered in ``load``) in one packed register from ``double`` on.
    Statements are added out of stage order. With ``early``, ``add`` reads the doubled
    value one stage early (a perturbation the test must catch)."""
    i: In(stream.Signature(data.StructLayout({"x": unsigned(8), "tag": unsigned(4),
                                               "last": unsigned(1)})))
    o: Out(stream.Signature(data.StructLayout({"y": unsigned(10), "tag": unsigned(4),
                                                "last": unsigned(1)})))

    stages = Stages(*NAMES)

    def __init__(self, *, early=False):
        self._early = early
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        stages = self.stages
        _, out = queued_pipeline(m, self.i, self.o, stages)
        x, y, last_in = Signal(8), Signal(10), Signal()
        steps = stages.statements()
        tag = steps.carry(self.i.payload.tag, "tag")
        doubled = steps.carry(x * 2, "doubled", start="double", stop="add")
        last = steps.carry(last_in, "lasts", start="double", packed=True)
        steps.add("out", out.y.eq(y))
        steps.add("add", y.eq((doubled.at("double") if self._early else doubled.before("add"))
                              + 3))
        steps.add("wait")
        steps.add("double")
        steps.add("load", x.eq(self.i.payload.x), last_in.eq(self.i.payload.last))
        m.d.sync += steps
        m.d.comb += [out.tag.eq(tag.at(stages.final)), out.last.eq(last.at(stages.final))]
        return m


@pytest.mark.parametrize("early", [False, True])
def test_named_stages_keep_carried_values_with_their_beat(early):
    dut = _NamedPipeline(early=early)
    rng = random.Random(5)
    sent = [(rng.randrange(256), rng.randrange(16), rng.randrange(2)) for _ in range(80)]
    got, accepted, emitted = [], [], []

    async def testbench(ctx):
        pending = list(sent)
        for cycle in range(2000):
            offer = bool(pending) and rng.random() < 0.7
            ctx.set(dut.i.valid, offer)
            if offer:
                x, tag, last = pending[0]
                ctx.set(dut.i.payload.x, x)
                ctx.set(dut.i.payload.tag, tag)
                ctx.set(dut.i.payload.last, last)
            ctx.set(dut.o.ready, cycle < 30 or rng.random() < 0.6)
            if offer and ctx.get(dut.i.ready):
                pending.pop(0)
                accepted.append(cycle)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append((ctx.get(dut.o.payload.y), ctx.get(dut.o.payload.tag),
                            ctx.get(dut.o.payload.last)))
                emitted.append(cycle)
            await ctx.tick()
            if len(got) == len(sent):
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    want = [(2 * x + 3, tag, last) for x, tag, last in sent]
    if early:   # the checker sees a value read a stage early
        assert [y for y, _, _ in got] != [y for y, _, _ in want]
        return
    assert got == want
    # The first beat came out after the named stages and the queue (the output was ready).
    assert emitted[0] - accepted[0] == len(NAMES) + QUEUE_LATENCY


def test_stage_statements_come_out_stage_by_stage_with_carried_loads_last():
    stages = Stages("a", "b", "c", numbered_from=1)
    x, y = Signal(4, name="x"), Signal(4, name="y")
    steps = stages.statements()
    steps.add("c", y.eq(3))
    v = steps.carry(x + 1, "v", start="b")
    steps.add("b", y.eq(2))
    steps.add("a", y.eq(1))
    order = [(repr(s.lhs), repr(s.rhs)) for s in steps]
    assert order == [("(sig y)", "(const 1'd1)"),
                     ("(sig y)", "(const 2'd2)"), ("(sig v_2)", repr(Value.cast(x + 1))),
                     ("(sig y)", "(const 2'd3)"), ("(sig v_3)", "(sig v_2)")]
    assert v.before("b") is not None and repr(v.before("c")) == "(sig v_2)"
    assert [stages.number(s) for s in stages] == [1, 2, 3]
    assert stages.previous("c", 2) == "a" and stages.distance("a", "c") == 2


def test_carried_registers_only_where_asked():
    stages = Stages("s0", "s1", "s2", "s3")
    tag = Signal(3, name="t")
    full = stages.carry(tag, "tag", reset_less=True)
    assert [r.name for r in (full.at(s) for s in stages)] == ["tag_0", "tag_1", "tag_2",
                                                              "tag_3"]
    assert full.before("s0") is tag and full.at("s0").reset_less
    # Up to but not including ``stop``: the value is available entering ``stop``.
    part = stages.carry(tag, "p", stop="s2")
    assert len(part.statements) == 2 and part.before("s2") is part.at("s1")
    with pytest.raises(ValueError, match=r"Stage must be one that carries 'p', not 's2'"):
        part.at("s2")
    with pytest.raises(ValueError, match=r"Stage must be one that carries 'p', not 's2'"):
        part.before("s3")
    # ``stop`` equal to ``start``: no register, the value itself entering that stage.
    none = stages.carry(tag, "n", stop="s0")
    assert none.statements == [] and none.before("s0") is tag
    packed = stages.carry(Signal(2), "lasts", start="s1", packed=True)
    [load] = packed.statements
    assert load.lhs.name == "lasts" and len(load.lhs) == 6
    assert repr(packed.at("s3")) == "(slice (sig lasts) 4:6)"


def test_unknown_or_misordered_stage_names_raise():
    stages = Stages("load", "add", "out")
    message = r"Stage must be one of load, add, out, not 'ad'"
    for call in (lambda: stages.position("ad"), lambda: stages.number("ad"),
                 lambda: stages.previous("ad"), lambda: stages.distance("load", "ad"),
                 lambda: stages.carry(Signal(), "x", start="ad"),
                 lambda: stages.carry(Signal(), "x").at("ad"),
                 lambda: stages.carry(Signal(), "x").before("ad"),
                 lambda: stages.statements().add("ad")):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=r"Stage 'add' must have 2 stages before it, not 1"):
        stages.previous("add", 2)
    with pytest.raises(ValueError, match=r"Stage 'load' must not come before 'out'"):
        stages.carry(Signal(), "x", start="out", stop="load")
    with pytest.raises(ValueError, match=r"Stage names must be unique, not repeated: add"):
        Stages("load", "add", "add")
    with pytest.raises(ValueError, match=r"at least one stage"):
        Stages()
    with pytest.raises(TypeError, match=r"Stage name must be a non-empty string, not 3"):
        Stages("load", 3)


def test_a_stage_left_without_statements_raises():
    # A stage added to the list but given no statements would shift every later stage by a
    # cycle; it must be named, with no statements, to say it holds nothing of its own.
    stages = Stages("load", "new", "out")
    steps = stages.statements()
    steps.add("load", Signal().eq(1))
    steps.add("out", Signal().eq(1))
    with pytest.raises(ValueError, match=r"Every stage must have statements added .*, not new"):
        list(steps)
    steps.add("new")
    assert len(list(steps)) == 2
