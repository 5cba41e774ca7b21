"""MacArray in Amaranth's simulator: every operand width and signedness, random stalls."""

import itertools

import numpy as np
import pytest

from sparqforge.hw.emit import description
from sparqforge.hw.mac_array import MacArray
from sparqforge.sim.check import compare
from sparqforge.sim.mac_array.schedule import corner_layers, dense_schedule, random_layer
from sparqforge.sim.run import run_schedule
from sparqforge.sw import golden

WIDTHS = (2, 3, 4, 8)


def check_layer(array, a, w, requant, *, stall=0.3, seed=1):
    desc = description(array, "mac_array")
    schedule = dense_schedule(array.rows, array.cols, a, w, requant)
    got, cycles = run_schedule(schedule, desc, dut=array, stall=stall, seed=seed)
    want = golden.mac_array(a, w, **requant, out_bits=array.out_bits,
                            out_signed=array.out_signed, acc_bits=array.acc_bits)
    return compare(want, got), cycles


def types_of(array):
    return dict(a_bits=array.a_bits, a_signed=array.a_signed, w_bits=array.w_bits,
                w_signed=array.w_signed, out_bits=array.out_bits, out_signed=array.out_signed)


@pytest.mark.parametrize("a_bits,w_bits", list(itertools.product(WIDTHS, WIDTHS)))
@pytest.mark.parametrize("a_signed,w_signed", list(itertools.product((True, False), repeat=2)))
def test_every_width_and_signedness(a_bits, w_bits, a_signed, w_signed):
    array = MacArray(rows=2, cols=3, a_bits=a_bits, w_bits=w_bits, a_signed=a_signed,
                     w_signed=w_signed, max_depth=9, groups=2)
    rng = np.random.default_rng(a_bits * 100 + w_bits * 10 + 2 * a_signed + w_signed)
    for k in (1, 9):
        a, w, requant = random_layer(rng, m=3, k=k, n=5, **types_of(array))
        result, _ = check_layer(array, a, w, requant, seed=k)
        assert not result, result


def test_corners_full_depth():
    array = MacArray(rows=3, cols=2, a_bits=8, w_bits=8, max_depth=16, groups=2)
    rng = np.random.default_rng(7)
    for name, (a, w, requant) in corner_layers(rng, max_depth=16, m=4, n=3,
                                               **types_of(array)).items():
        result, _ = check_layer(array, a, w, requant)
        assert not result, f"{name}: {result}"


@pytest.mark.parametrize("a_bits,w_bits", [(8, 8), (2, 2), (3, 5), (8, 3)])
@pytest.mark.parametrize("a_signed,w_signed", list(itertools.product((True, False), repeat=2)))
@pytest.mark.parametrize("product_stages", [2, 3])
def test_split_products(a_bits, w_bits, a_signed, w_signed, product_stages):
    # Half- or quarter-width partial products (LUT multipliers) summed in registered
    # stages: the same results, one more cycle per stage.
    array = MacArray(rows=2, cols=3, a_bits=a_bits, w_bits=w_bits, a_signed=a_signed,
                     w_signed=w_signed, max_depth=9, groups=2, product_stages=product_stages)
    assert array.core_latency == 3 + product_stages
    rng = np.random.default_rng(a_bits * 100 + w_bits * 10 + 2 * a_signed + w_signed)
    for k in (1, 9):
        a, w, requant = random_layer(rng, m=3, k=k, n=5, **types_of(array))
        result, _ = check_layer(array, a, w, requant, seed=k)
        assert not result, result
    for name, (a, w, requant) in corner_layers(rng, max_depth=9, m=3, n=3,
                                               **types_of(array)).items():
        result, _ = check_layer(array, a, w, requant)
        assert not result, f"{name}: {result}"


def test_checker_catches_a_perturbed_element():
    array = MacArray(rows=2, cols=2, a_bits=4, w_bits=4, max_depth=8)
    rng = np.random.default_rng(3)
    a, w, requant = random_layer(rng, m=2, k=4, n=2, **types_of(array))
    schedule = dense_schedule(2, 2, a, w, requant)
    got, _ = run_schedule(schedule, description(array, "mac_array"), dut=array)
    want = golden.mac_array(a, w, **requant, out_bits=4, out_signed=True)
    assert not compare(want, got)
    got[1, 0] += 1
    result = compare(want, got)
    assert result.count == 1 and result.first[0][0] == (1, 0)


@pytest.mark.parametrize("rows,cols,product_stages", [(2, 2, 1), (4, 3, 1), (4, 3, 2), (4, 3, 3)])
def test_no_bubbles_between_steps_or_tiles(rows, cols, product_stages):
    # Without stalls, T tiles of K >= rows + 3 beats take T * K cycles plus the pipeline
    # fill and the last drain; any bubble would add cycles.
    array = MacArray(rows=rows, cols=cols, a_bits=8, w_bits=8, max_depth=64, groups=2,
                     product_stages=product_stages)
    k = array.min_tile_beats
    rng = np.random.default_rng(5)
    a, w, requant = random_layer(rng, m=3 * rows, k=k, n=2 * cols, **types_of(array))
    result, cycles = check_layer(array, a, w, requant, stall=0.0)
    assert not result
    tiles = 3 * 2
    config_beats = 2 * cols
    assert cycles <= config_beats + tiles * k + array.latency + rows + 2


def test_parameter_errors_name_the_problem():
    with pytest.raises(TypeError, match=r"Weight width must be an integer in 2\.\.8, not 9"):
        MacArray(rows=2, cols=2, w_bits=9)
    with pytest.raises(TypeError, match=r"Row count must be an integer in 1\.\.64, not 0"):
        MacArray(rows=0, cols=2)
    with pytest.raises(TypeError, match="Activation signedness must be a bool"):
        MacArray(rows=2, cols=2, a_signed=1)
    with pytest.raises(ValueError, match="needs a 33-bit accumulator; .* at most 131071"):
        MacArray(rows=2, cols=2, max_depth=1 << 17)
    with pytest.raises(ValueError, match="Maximum reduction depth must be a positive integer"):
        MacArray(rows=2, cols=2, max_depth=0)


def test_accumulator_width_comes_from_the_golden_model():
    array = MacArray(rows=2, cols=2, a_bits=4, a_signed=False, w_bits=3, max_depth=100)
    assert array.acc_bits == golden.acc_bits(a_bits=4, a_signed=False, w_bits=3, w_signed=True,
                                             max_depth=100)


@pytest.mark.parametrize("product_stages", [1, 2, 3])
def test_reset_in_the_middle_of_a_tile_clears_the_accumulators(product_stages):
    # The elements are reset through a registered copy of the reset, a cycle late; a tile
    # cut short by a reset must leave nothing behind in the accumulators.
    from amaranth.hdl import ClockDomain, Module
    from amaranth.sim import Simulator

    array = MacArray(rows=2, cols=2, a_bits=8, w_bits=8, max_depth=8, requant=False,
                     product_stages=product_stages)
    top = Module()
    top.domains.sync = domain = ClockDomain()
    top.submodules.array = array
    a_tile = np.array([[1, 1], [2, 1]])            # rows x beats
    w_tile = np.array([[3, 1], [4, 1]])            # cols x beats
    want = a_tile @ w_tile.T                       # rows x cols
    rows_out = []

    async def beat(ctx, a, w, last):
        ctx.set(array.a.payload, list(a))
        ctx.set(array.a.valid, 1)
        ctx.set(array.w.payload.data, list(w))
        ctx.set(array.w.payload.last, last)
        ctx.set(array.w.valid, 1)
        await ctx.tick().until(array.a.ready & array.w.ready)
        ctx.set(array.a.valid, 0)
        ctx.set(array.w.valid, 0)

    async def source(ctx):
        for _ in range(3):                          # a tile that never finishes
            await beat(ctx, (100, -7), (-90, 55), 0)
        await ctx.tick()
        ctx.set(domain.rst, 1)
        for _ in range(2):
            await ctx.posedge(domain.clk)   # ``tick`` stops at a domain reset
        ctx.set(domain.rst, 0)
        await ctx.tick()
        for k in range(a_tile.shape[1]):
            await beat(ctx, a_tile[:, k], w_tile[:, k], int(k == a_tile.shape[1] - 1))

    async def sink(ctx):
        ctx.set(array.o.ready, 1)
        for _ in range(40):
            await ctx.posedge(domain.clk)
            if ctx.get(array.o.valid):
                rows_out.append([int(x) for x in ctx.get(array.o.payload.data)])

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    assert rows_out == want.tolist()
