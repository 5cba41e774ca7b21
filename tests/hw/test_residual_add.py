"""The residual add stage (hw/residual_add.py) in Amaranth's simulator, against a direct NumPy
reading of ``Mode.ADD`` (``RunDescriptor``: ``acc`` becomes ``T[0][acc & 0xFF] +
T[1][(acc >> 8) & 0xFF]``, 32-bit two's complement): random tables written through ``cfg``,
random and corner accumulators, every table, random gaps and stalls on both streams, the
stated latency and rate; with ``add`` clear, rows pass unchanged at one per cycle."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparqforge.hw.residual_add import ResidualAdd
from sparqforge.protocol import ADD_TABLES

from .test_requantizer import offer_row


def wrap32(values):
    values = np.asarray(values, dtype=np.int64) & 0xFFFFFFFF
    return np.where(values >= 1 << 31, values - (1 << 32), values)


def add_tables(tables, table, acc):
    """The spec: each accumulator through ``tables[table]`` (``[input, code]``)."""
    acc = np.asarray(acc, dtype=np.int64)
    t = tables[table]
    return wrap32(t[0][acc & 0xFF] + t[1][(acc >> 8) & 0xFF])


def random_tables(rng):
    """Entries over the whole int32 range (their sums wrap), some at its limits."""
    tables = rng.integers(-(1 << 31), 1 << 31, (ADD_TABLES, 2, 256))
    tables.reshape(-1)[rng.integers(0, tables.size, 40)] = -(1 << 31)
    tables.reshape(-1)[rng.integers(0, tables.size, 40)] = (1 << 31) - 1
    return tables


def random_rows(rng, count, lanes, acc_bits):
    """Accumulators: random over the whole width and near 16 bits, plus the corners."""
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    corners = [v for v in (0, 255, 256, 65535, 65536, -1, -256, -65280, -65536, lo, hi,
                           0x7F7F, -0x8080) if lo <= v <= hi]
    acc = rng.integers(lo, hi + 1, (count, lanes))
    acc[::3] //= 1 << max(0, acc_bits - 17)
    flat = acc.reshape(-1)
    flat[:len(corners)] = corners[:flat.size]
    flat[rng.integers(0, flat.size, count)] = rng.choice(corners, count)
    return acc


def simulate(dut, tables, batches, *, seed, gaps=0.3, stalls=0.3):
    """Write ``tables`` through ``cfg``, then for each batch ``(add, table, acc, tags,
    lasts)`` stream its rows and wait for all of them. Returns per batch the output rows
    (``data``, ``tag``, ``last``), the cycles each input row was accepted in and each output
    row taken in."""
    rng = random.Random(seed)
    results = []

    async def testbench(ctx):
        for index, value in enumerate(tables.reshape(-1)):
            ctx.set(dut.cfg.valid, 1)
            ctx.set(dut.cfg.payload.code, index & 0xFF)
            ctx.set(dut.cfg.payload.input, (index >> 8) & 1)
            ctx.set(dut.cfg.payload.table, index >> 9)
            ctx.set(dut.cfg.payload.value, int(value))
            await ctx.tick()
        ctx.set(dut.cfg.valid, 0)
        cycle = 0
        for add, table, acc, tags, lasts in batches:
            ctx.set(dut.add, add)
            ctx.set(dut.table, table)
            # (The write pipeline and the output multiplexers' copy of ``add``.)
            await ctx.tick().repeat(3)
            got, accepted, taken = [], [], []
            pending = list(range(len(acc)))
            limit = cycle + 20 * len(acc) * dut.lanes + 100
            while len(got) < len(acc):
                assert cycle < limit, "the stage stopped"
                offer = bool(pending) and rng.random() >= gaps
                ctx.set(dut.i.valid, offer)
                if offer:
                    b = pending[0]
                    offer_row(ctx, dut.i, acc[b], tags[b], lasts[b])
                ready = rng.random() >= stalls
                ctx.set(dut.o.ready, ready)
                if offer and ctx.get(dut.i.ready):
                    pending.pop(0)
                    accepted.append(cycle)
                if ctx.get(dut.o.valid) and ready:
                    payload = ctx.get(dut.o.payload)
                    got.append(([int(v) for v in payload.data], payload.tag, payload.last))
                    taken.append(cycle)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 0)
            # Nothing more comes out.
            for _ in range(dut.latency + 4):
                assert not ctx.get(dut.o.valid)
                await ctx.tick()
                cycle += 1
            results.append((got, accepted, taken))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return results


def batch(rng, dut, add, table, count):
    acc = random_rows(rng, count, dut.lanes, dut.acc_bits)
    tags = rng.integers(0, 1 << dut.tag_bits, count)
    lasts = rng.integers(0, 2, count)
    return add, table, acc, tags, lasts


def check(tables, batches, results):
    for (add, table, acc, tags, lasts), (got, _, _) in zip(batches, results):
        want = add_tables(tables, table, acc) if add else acc
        assert np.array_equal(np.array([data for data, _, _ in got]), want), (add, table)
        assert [tag for _, tag, _ in got] == tags.tolist()
        assert [last for _, _, last in got] == lasts.tolist()


@pytest.mark.parametrize("lanes,acc_bits,tag_bits", [
    (8, 22, 2), (1, 12, 0), (3, 32, 1), (5, 31, 3),
])
def test_rows_through_every_table_under_stalls_equal_the_spec(lanes, acc_bits, tag_bits):
    rng = np.random.default_rng(lanes * 100 + acc_bits)
    dut = ResidualAdd(lanes=lanes, acc_bits=acc_bits, tag_bits=tag_bits)
    tables = random_tables(rng)
    # Every table, in no particular order, and rows passed through between them.
    batches = [batch(rng, dut, 1, 2, 30), batch(rng, dut, 0, 2, 20),
               batch(rng, dut, 1, 0, 30), batch(rng, dut, 1, 3, 20),
               batch(rng, dut, 1, 1, 20), batch(rng, dut, 0, 0, 10)]
    results = simulate(dut, tables, batches, seed=lanes)
    check(tables, batches, results)


@pytest.mark.parametrize("lanes", [2, 6])
def test_a_mostly_stalled_output_holds_every_row(lanes):
    # The output rarely ready: rows wait on ``o`` and, assembled, behind it; the input
    # stops while two rows are held.
    rng = np.random.default_rng(40 + lanes)
    dut = ResidualAdd(lanes=lanes, acc_bits=26, tag_bits=2)
    tables = random_tables(rng)
    batches = [batch(rng, dut, 1, 3, 25)]
    results = simulate(dut, tables, batches, seed=lanes, gaps=0.1, stalls=0.9)
    check(tables, batches, results)


def test_the_checker_catches_another_table_and_a_swapped_input():
    rng = np.random.default_rng(9)
    dut = ResidualAdd(lanes=4, acc_bits=24, tag_bits=1)
    tables = random_tables(rng)
    batches = [batch(rng, dut, 1, 1, 12)]
    results = simulate(dut, tables, batches, seed=3)
    check(tables, batches, results)
    got = np.array([data for data, _, _ in results[0][0]])
    _, _, acc, _, _ = batches[0]
    assert not np.array_equal(got, add_tables(tables, 2, acc))
    assert not np.array_equal(got, add_tables(tables[:, ::-1], 1, acc))


@pytest.mark.parametrize("lanes", [1, 2, 4, 5, 8])
def test_latency_and_rate_with_add(lanes):
    # Without gaps or stalls: the first row after ``latency`` cycles, then one row every
    # ``max(lanes, (lanes + 5) / 2)`` cycles.
    rng = np.random.default_rng(lanes)
    dut = ResidualAdd(lanes=lanes, acc_bits=20, tag_bits=0)
    tables = random_tables(rng)
    batches = [batch(rng, dut, 1, 3, 12)]
    results = simulate(dut, tables, batches, seed=0, gaps=0, stalls=0)
    check(tables, batches, results)
    _, accepted, taken = results[0]
    assert dut.latency == lanes + 4
    assert taken[0] - accepted[0] == dut.latency
    # (Steady state: the first two rows are accepted back to back.)
    assert (taken[-1] - taken[-9]) / 8 == max(lanes, (lanes + 5) / 2)


def test_without_add_rows_pass_unchanged_at_full_rate():
    rng = np.random.default_rng(2)
    dut = ResidualAdd(lanes=4, acc_bits=18, tag_bits=2)
    tables = random_tables(rng)
    batches = [batch(rng, dut, 0, 1, 40)]
    # No gaps, no stalls: a row in and out in every cycle.
    results = simulate(dut, tables, batches, seed=1, gaps=0, stalls=0)
    check(tables, batches, results)
    _, accepted, taken = results[0]
    assert accepted == taken == list(range(accepted[0], accepted[0] + 40))
    # Under stalls: still unchanged, and each row leaves in the cycle it is accepted.
    batches = [batch(rng, dut, 0, 3, 40)]
    results = simulate(dut, tables, batches, seed=2)
    check(tables, batches, results)
    assert results[0][1] == results[0][2]


@pytest.mark.parametrize("kwargs,message", [
    (dict(lanes=0, acc_bits=16), "Lane count must be a positive integer, not 0"),
    (dict(lanes=2, acc_bits=33), "Accumulator width must be an integer in 2..32, not 33"),
    (dict(lanes=2, acc_bits=16, tag_bits=-1),
     "Tag width must be a non-negative integer, not -1"),
])
def test_parameters_are_checked(kwargs, message):
    with pytest.raises(TypeError, match=f"^{message}$"):
        ResidualAdd(**kwargs)
