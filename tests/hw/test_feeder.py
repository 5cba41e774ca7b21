"""The feeder in Amaranth's simulator: every beat of a layer, in order, against the RUN
descriptor's addressing (``sparqforge.protocol.RunDescriptor``), with random stalls on both
core streams and the memories modelled with their documented three-cycle read latency."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparqforge.config import AcceleratorConfig
from sparqforge.hw.array_core import ArrayCore
from sparqforge.hw.feeder import Feeder
from sparqforge.protocol import Mode

#: Cycles from an address on ``act_addr`` / ``weight_addr`` to its word on the data inputs
#: (the memories' address register, the block RAM, the data register).
MEMORY_LATENCY = 3


def make_feeder(config):
    core = ArrayCore(rows=config.rows, cols=config.cols, a_bits=config.a_bits, a_signed=False,
                     w_bits=config.w_bits, w_signed=True, max_depth=config.max_depth,
                     groups=config.groups, sparsity=config.sparsity, tables=config.tables,
                     threshold_bits=config.threshold_bits if config.tables else None)
    return Feeder(config, a_signature=core.signature.members["a"].signature.flip(),
                  w_signature=core.signature.members["w"].signature.flip(),
                  tag_bits=core.tag_bits)


def expected_beats(config, desc, act, weights):
    """Each beat's activation lanes (``[rows, a_elems]``) and weight word, tag and last."""
    a_elems = config.m if config.sparse else 1
    beats = []
    for nt in range(desc["n_tiles"]):
        for mt in range(desc["m_tiles"]):
            for s in range(desc["k_steps"]):
                lane = s * desc["step"]
                word = desc["a_base"] + mt * desc["a_stride"] + lane // config.cols
                lanes = np.zeros((config.rows, a_elems), dtype=np.int64)
                for e in range(min(desc["step"], a_elems)):
                    lanes[:, e] = act[:, word, lane % config.cols + e]
                beats.append((lanes, int(weights[desc["w_base"] + nt * desc["k_steps"] + s]),
                              desc["group_base"] + nt, int(s == desc["k_steps"] - 1)))
    return beats


def run_feeder(config, desc, *, stall, seed=0):
    rng = np.random.default_rng(seed)
    act = rng.integers(0, 256, (config.rows, 64, config.cols))
    weights = rng.integers(0, 1 << min(config.weight_bits, 62), 256)
    dut = make_feeder(config)
    beats_a, beats_w = [], []
    total = desc["n_tiles"] * desc["m_tiles"] * desc["k_steps"]
    flags = {}

    async def memories(ctx):
        history = []
        while True:
            await ctx.tick()
            history.append((ctx.get(dut.act_addr), ctx.get(dut.weight_addr)))
            if len(history) > MEMORY_LATENCY:
                a_addr, w_addr = history[-1 - MEMORY_LATENCY]
                ctx.set(dut.act_data, [[int(v) for v in act[r, a_addr % 64]]
                                       for r in range(config.rows)])
                ctx.set(dut.weight_data, int(weights[w_addr % 256]))

    async def control(ctx):
        for name, value in desc.items():
            ctx.set(getattr(dut.desc, name), value)
        ctx.set(dut.desc.k_last, desc["k_steps"] - 1)
        ctx.set(dut.desc.m_last, desc["m_tiles"] - 1)
        ctx.set(dut.desc.n_last, desc["n_tiles"] - 1)
        await ctx.tick().repeat(MEMORY_LATENCY + 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)

    def receiver(port, out, stall_rng):
        async def bench(ctx):
            while len(out) < total:
                ready = stall_rng.random() >= stall
                ctx.set(port.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
                if valid and ready:
                    out.append(payload)
            ctx.set(port.ready, 0)
            # Nothing more arrives after the layer's last beat.
            for _ in range(20):
                _, _, valid = await ctx.tick().sample(port.valid)
                assert not valid
            flags["mode"] = ctx.get(dut.mode)
        return bench

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(memories, background=True)
    sim.add_testbench(control, background=True)
    sim.add_testbench(receiver(dut.a, beats_a, random.Random(seed + 1)))
    sim.add_testbench(receiver(dut.w, beats_w, random.Random(seed + 2)))
    sim.run()
    return act, weights, beats_a, beats_w, flags


@pytest.mark.parametrize("config,step,mode", [
    (AcceleratorConfig(rows=2, cols=4, act_depth=64, groups=4), 1, 0),
    (AcceleratorConfig(rows=3, cols=4, sparsity=(2, 4), act_depth=64, groups=4), 2, 0),
    (AcceleratorConfig(rows=3, cols=4, sparsity=(2, 4), act_depth=64, groups=4), 4,
     Mode.SPARSE),
    (AcceleratorConfig(rows=2, cols=8, sparsity=(2, 8), tables=True, act_depth=64, groups=4),
     8, Mode.SPARSE | Mode.THRESHOLD | Mode.ACT_TABLE),
    (AcceleratorConfig(rows=1, cols=1, act_depth=64, groups=4), 1, 0),
])
@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_every_beat_of_a_layer_in_order(config, step, mode, stall):
    desc = dict(m_tiles=2, n_tiles=2, k_steps=5, a_base=3, a_stride=4, step=step, mode=mode,
                w_base=7, out_base=0, out_stride=0, group_base=1)
    act, weights, got_a, got_w, flags = run_feeder(config, desc, stall=stall)
    want = expected_beats(config, desc, act, weights)
    assert len(got_a) == len(got_w) == len(want)
    for index, (a, w, (lanes, word, tag, last)) in enumerate(zip(got_a, got_w, want)):
        data = np.array([[int(v) for v in (row if config.sparse else [row])]
                         for row in a.data])
        assert np.array_equal(data, lanes), index
        assert w.data.as_value().value == word, index
        assert (w.tag, w.last) == (tag, last), index
        if config.sparse:
            assert w.dense == int(not mode & Mode.SPARSE)
        if config.tables:
            assert a.bypass == int(not mode & Mode.ACT_TABLE)
            assert w.bypass == int(not mode & Mode.WEIGHT_TABLE)
    assert flags["mode"] == int(bool(mode & Mode.THRESHOLD))


def test_a_perturbed_expectation_is_caught():
    # The check above is not vacuous: one beat's weight word off by one is a mismatch.
    config = AcceleratorConfig(rows=2, cols=4, act_depth=64, groups=4)
    desc = dict(m_tiles=1, n_tiles=1, k_steps=3, a_base=0, a_stride=1, step=1, mode=0,
                w_base=0, out_base=0, out_stride=0, group_base=0)
    act, weights, _, got_w, _ = run_feeder(config, desc, stall=0.0)
    want = expected_beats(config, desc, act, weights + np.eye(1, 256, 1, dtype=np.int64)[0])
    assert [w.data.as_value().value for w in got_w] != [word for _, word, _, _ in want]
