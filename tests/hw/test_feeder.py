"""The feeder in Amaranth's simulator: every beat of a layer, in order, against the RUN
descriptor's addressing (``sparqforge.protocol.RunDescriptor``: matrix rows, convolution and
depthwise windows), with random stalls on both core streams and the memories modelled with their
documented three-cycle read latency."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparqforge.config import AcceleratorConfig
from sparqforge.hw.array_core import ArrayCore
from sparqforge.hw.feeder import Feeder
from sparqforge.protocol import Mode

from .test_conv_walk import DEPTHWISE, GEOMETRIES, element, pixels

#: Cycles from an address on ``act_addr`` / ``weight_addr`` to its word on the data inputs
#: (the memories' address register, the block RAM, the data register).
MEMORY_LATENCY = 3


def make_feeder(config):
    core = ArrayCore(rows=config.rows, cols=config.cols, a_bits=config.a_bits, a_signed=False,
                     w_bits=config.w_bits, w_signed=True, max_depth=config.max_depth,
                     groups=config.groups, sparsity=config.sparsity, tables=config.tables,
                     threshold_bits=config.threshold_bits if config.tables else None,
                     packed_products=config.packed_products, lane_operands=config.depthwise)
    return Feeder(config, a_signature=core.signature.members["a"].signature.flip(),
                  w_signature=core.signature.members["w"].signature.flip(),
                  tag_bits=core.tag_bits)


def a_elems(config):
    """Activation lanes per row of a beat: a group (sparse), a lane per column (depthwise)."""
    return config.m if config.sparse else config.cols if config.depthwise else 1


def beat_lanes(config, a):
    """A beat's activation lanes as ``[rows, a_elems]``."""
    nested = config.sparse or config.depthwise
    return np.array([[int(v) for v in (row if nested else [row])] for row in a.data])


def expected_beats(config, desc, act, weights):
    """Each beat's activation lanes (``[rows, a_elems]``) and weight word, tag and last. On a
    ``depthwise`` accelerator every lane of a row carries its selected lane, or in
    ``Mode.DEPTHWISE`` the word's lane of the same index (each column its own channel)."""
    conv = desc["mode"] & Mode.CONV
    depthwise = desc["mode"] & Mode.DEPTHWISE
    walk = pixels(desc, desc["m_tiles"] * config.rows) if conv else None
    beats = []
    for nt in range(desc["n_tiles"]):
        for mt in range(desc["m_tiles"]):
            for s in range(desc["k_steps"]):
                lane = s * desc["step"]
                word = desc["a_base"] + mt * desc["a_stride"] + lane // config.cols
                lanes = np.zeros((config.rows, a_elems(config)), dtype=np.int64)
                for e in range(min(desc["step"], a_elems(config))):
                    if not conv:
                        lanes[:, e] = act[:, word, lane % config.cols + e]
                        continue
                    # A window: each row its own word, or padding.
                    for r in range(config.rows):
                        w, c, inside = element(desc, config.cols, walk[mt * config.rows + r],
                                               lane + e, nt)
                        lanes[r, e] = act[r, w % 64, c] if inside else desc["pad_code"]
                        if depthwise:
                            lanes[r] = act[r, w % 64] if inside else desc["pad_code"]
                if config.depthwise and not depthwise:
                    lanes[:] = lanes[:, :1]
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
            history.append(([ctx.get(dut.act_addr[r]) for r in range(config.rows)],
                            ctx.get(dut.weight_addr)))
            if len(history) > MEMORY_LATENCY:
                a_addr, w_addr = history[-1 - MEMORY_LATENCY]
                ctx.set(dut.act_data, [[int(v) for v in act[r, a_addr[r] % 64]]
                                       for r in range(config.rows)])
                ctx.set(dut.weight_data, int(weights[w_addr % 256]))

    async def control(ctx):
        for name, value in desc.items():
            if hasattr(dut.desc, name):
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
    # Without the depthwise walk a row's beat is one lane.
    (AcceleratorConfig(rows=2, cols=4, act_depth=64, groups=4, conv=False), 1, 0),
    (AcceleratorConfig(rows=2, cols=4, act_depth=64, groups=4, packed_products=True), 1, 0),
])
@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_every_beat_of_a_layer_in_order(config, step, mode, stall):
    desc = dict(m_tiles=2, n_tiles=2, k_steps=5, a_base=3, a_stride=4, step=step, mode=mode,
                w_base=7, out_base=0, out_stride=0, group_base=1)
    act, weights, got_a, got_w, flags = run_feeder(config, desc, stall=stall)
    want = expected_beats(config, desc, act, weights)
    assert len(got_a) == len(got_w) == len(want)
    for index, (a, w, (lanes, word, tag, last)) in enumerate(zip(got_a, got_w, want)):
        assert np.array_equal(beat_lanes(config, a), lanes), index
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


#: Windows of the walk's geometries that the feeder's sparse and dense arrays take.
CONV_CASES = [g for g in GEOMETRIES if g[0] in ("3x3_pad1", "stride2", "1x1_k_steps_below_rows",
                                                  "step2_sparse_array", "step4_one_row",
                                                  "in_c_above_cols_out_w_above_rows")] \
    + DEPTHWISE


@pytest.mark.parametrize("name,config,d", CONV_CASES, ids=[g[0] for g in CONV_CASES])
@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_every_beat_of_a_convolution_in_order(name, config, d, stall):
    mode = d["mode"] | (Mode.SPARSE if d["step"] == 4 else 0)
    desc = {**d, "mode": mode, "pad_code": 0x5A, "w_base": 7, "group_base": 1}
    act, weights, got_a, got_w, _ = run_feeder(config, desc, stall=stall)
    want = expected_beats(config, desc, act, weights)
    assert len(got_a) == len(got_w) == len(want)
    for index, (a, w, (lanes, word, tag, last)) in enumerate(zip(got_a, got_w, want)):
        data = beat_lanes(config, a)
        assert np.array_equal(data, lanes), (index, data, lanes)
        assert w.data.as_value().value == word, index
        assert (w.tag, w.last) == (tag, last), index
    if d["ph"] or d["pw"]:
        # Some rows were padding.
        walk = pixels(desc, desc["m_tiles"] * config.rows)
        assert not all(element(desc, config.cols, p, e)[2] for p in walk for e in range(4))


def beat_cycles(config, desc):
    """Cycles from ``start`` to the first beat and from the first beat to the last, with the
    core always ready."""
    cycles = {}
    dut = make_feeder(config)

    async def bench(ctx):
        for field, value in desc.items():
            if hasattr(dut.desc, field):
                ctx.set(getattr(dut.desc, field), value)
        ctx.set(dut.a.ready, 1)
        ctx.set(dut.w.ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        beats, cycle, first = 0, 0, None
        while beats < desc["n_tiles"] * desc["m_tiles"] * desc["k_steps"]:
            _, _, valid = await ctx.tick().sample(dut.a.valid)
            cycle += 1
            if valid:
                first = cycle if first is None else first
                beats += 1
        cycles["first"], cycles["all"] = first, cycle - first + 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return cycles["first"], cycles["all"]


@pytest.mark.parametrize("name", ["3x3_pad1", "stride2", "dw_3x3_pad1"])
def test_a_convolution_streams_as_fast_as_a_matrix(name):
    # Tiles of at least ``rows`` beats: the walk costs its start (filling the first tile's
    # pixels, ``rows + 1`` cycles, and its address stage) and nothing per tile.
    _, config, d = next(g for g in GEOMETRIES + DEPTHWISE if g[0] == name)
    conv_first, conv_all = beat_cycles(config, d)
    matrix_first, matrix_all = beat_cycles(config, {**d, "mode": 0})
    assert conv_all <= matrix_all
    assert conv_first <= matrix_first + config.rows + 2


def test_a_depthwise_beat_is_not_a_broadcast():
    # The check above is not vacuous for depthwise layers: the same walk read as an
    # ordinary convolution (the selected lane in every column, no channel tile offset)
    # differs from what the feeder sends.
    _, config, d = DEPTHWISE[0]
    desc = {**d, "pad_code": 0x5A}
    act, weights, got_a, _, _ = run_feeder(config, desc, stall=0.0)
    plain = expected_beats(config, {**desc, "mode": Mode.CONV}, act, weights)
    assert all(np.array_equal(beat_lanes(config, a), lanes) for a, (lanes, *_) in
               zip(got_a, expected_beats(config, desc, act, weights)))
    assert not all(np.array_equal(beat_lanes(config, a), lanes) for a, (lanes, *_) in
                   zip(got_a, plain))
