"""Requantizer (hw/requantizer.py) in Amaranth's simulator: bit-exact with the golden model
(per-lane parameter sets selected by the tag, so every table read lands in its stage) under
random input gaps and output stalls, at the latency its named stages add up to; a stage list
that disagrees with the declared stage count, or a stage left without statements, fails to
elaborate."""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from sparqforge.hw.pipeline import QUEUE_LATENCY, Stages
from sparqforge.hw.requantizer import Requantizer
from sparqforge.sw import golden


def offer_row(ctx, port, accumulators, tag, last):
    """Put one row of accumulators (one per lane), its tag and ``last`` on stream ``port``."""
    for lane, value in enumerate(accumulators):
        ctx.set(port.payload.data[lane], int(value))
    ctx.set(port.payload.tag, int(tag))
    ctx.set(port.payload.last, int(last))


def random_params(rng, channels, out_bits, out_signed):
    """Per-channel parameters covering both int32 saturations, left and right shifts over
    their whole range, zero multipliers and ReLU."""
    q_lo, q_hi = golden.operand_range(out_bits, out_signed)
    multiplier = rng.integers(1 << 30, 1 << 31, channels)
    multiplier[rng.random(channels) < 0.1] = 0
    bias = rng.integers(-(1 << 20), 1 << 20, channels)
    bias = np.where(rng.random(channels) < 0.2,
                    rng.choice([golden.INT32_MIN, golden.INT32_MAX], channels), bias)
    return {"bias": bias, "multiplier": multiplier, "shift": rng.integers(-31, 32, channels),
            "zero_point": rng.integers(q_lo, q_hi + 1, channels),
            "relu": rng.integers(0, 2, channels)}


def simulate(dut, params, acc, tags, last, *, seed, gaps=0.3, stalls=0.4):
    """Write ``params`` through ``cfg``, then stream the beats; returns the output beats
    ``(data, last)`` and the cycles from accepting the first beat to its output."""
    rng = random.Random(seed)
    channels = len(params["bias"])
    got, accepted, emitted = [], [], []

    async def testbench(ctx):
        for n in range(channels):
            ctx.set(dut.cfg.valid, 1)
            ctx.set(dut.cfg.payload.lane, n % dut.lanes)
            ctx.set(dut.cfg.payload.group, n // dut.lanes)
            for name, values in params.items():
                ctx.set(getattr(dut.cfg.payload.param, name), int(values[n]))
            await ctx.tick()
        ctx.set(dut.cfg.valid, 0)
        await ctx.tick().repeat(2)
        pending, cycle = list(range(len(acc))), 0
        while len(got) < len(acc) and cycle < 40 * len(acc) + 200:
            # The first beat goes in with the output ready, to time it.
            offer = bool(pending) and (not accepted or rng.random() >= gaps)
            ctx.set(dut.i.valid, offer)
            if offer:
                b = pending[0]
                offer_row(ctx, dut.i, acc[b], tags[b], last[b])
            ctx.set(dut.o.ready, not emitted or rng.random() >= stalls)
            if offer and ctx.get(dut.i.ready):
                pending.pop(0)
                accepted.append(cycle)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append(([ctx.get(dut.o.payload.data[lane]) for lane in range(dut.lanes)],
                            ctx.get(dut.o.payload.last)))
                emitted.append(cycle)
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return got, emitted[0] - accepted[0]


@pytest.mark.parametrize("lanes,acc_bits,out_bits,out_signed,groups", [
    (3, 25, 8, False, 4), (1, 12, 4, True, 1), (2, 32, 2, True, 3),
])
def test_bit_exact_per_lane_and_group_at_the_stated_latency(lanes, acc_bits, out_bits,
                                                            out_signed, groups):
    rng = np.random.default_rng(lanes * 100 + acc_bits)
    dut = Requantizer(lanes=lanes, acc_bits=acc_bits, out_bits=out_bits,
                      out_signed=out_signed, groups=groups)
    params = random_params(rng, lanes * groups, out_bits, out_signed)
    beats = 60
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    acc = rng.integers(lo, hi + 1, (beats, lanes)) // rng.choice([1, 256, 65536], (beats, 1))
    acc[0], acc[1] = lo, hi
    tags = rng.integers(0, groups, beats)
    last = rng.integers(0, 2, beats)
    got, latency = simulate(dut, params, acc, tags, last, seed=lanes)
    channel = tags[:, None] * lanes + np.arange(lanes)[None, :]
    want = golden.requantize_layer(acc, **{k: v[channel] for k, v in params.items()},
                                   out_bits=out_bits, out_signed=out_signed)
    assert np.array_equal(np.array([data for data, _ in got]), want)
    assert [flag for _, flag in got] == last.tolist()
    assert latency == dut.latency == len(Requantizer.pipeline_stages) + QUEUE_LATENCY


def test_the_checker_catches_a_parameter_set_read_for_another_group():
    rng = np.random.default_rng(7)
    dut = Requantizer(lanes=2, acc_bits=16, out_bits=8, out_signed=True, groups=2)
    params = random_params(rng, 4, 8, True)
    acc = rng.integers(-(1 << 15), 1 << 15, (30, 2))
    tags = rng.integers(0, 2, 30)
    got, _ = simulate(dut, params, acc, tags, np.zeros(30, np.int64), seed=1)
    wrong = (1 - tags)[:, None] * 2 + np.arange(2)[None, :]
    want = golden.requantize_layer(acc, **{k: v[wrong] for k, v in params.items()},
                                   out_bits=8, out_signed=True)
    assert not np.array_equal(np.array([data for data, _ in got]), want)


def test_latency_counts_the_named_stages():
    stages = Requantizer.pipeline_stages
    assert Requantizer.stages == len(stages) == 18
    assert Requantizer.latency == len(stages) + QUEUE_LATENCY
    assert stages.first == "acc" and stages.final == "clamp"


def test_a_stage_list_that_disagrees_with_the_stage_count_fails_to_elaborate():
    # A stage added to the list while ``stages`` / ``latency`` (class constants, read by the
    # blocks around the requantizer without elaborating it) keep their old values.
    class Longer(Requantizer):
        pipeline_stages = Stages(*Requantizer.pipeline_stages, "extra")

    with pytest.raises(AssertionError, match=r"latency must count every stage"):
        Fragment.get(Longer(lanes=1, acc_bits=12), None)

    # With the count updated, the new stage must still be given its statements.
    class Counted(Longer):
        stages = len(Longer.pipeline_stages)
        latency = stages + QUEUE_LATENCY

    with pytest.raises(ValueError, match=r"Every stage must have statements added .*, not "
                                         r"extra"):
        Fragment.get(Counted(lanes=1, acc_bits=12), None)
