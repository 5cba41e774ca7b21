"""MacArray in Amaranth's simulator: every operand width and signedness, split and packed
products, random stalls; and the packed array's multiplier blocks after synthesis."""

import itertools
import json

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Const, signed
from amaranth.lib import data

from sparqforge.boards.synth import ECP5_GROUPS, XILINX_GROUPS, count_cells, run_yosys
from sparqforge.hw import mac_array
from sparqforge.hw.emit import description
from sparqforge.hw.mac_array import MacArray, packed_port_bits_for
from sparqforge.hw.packed_multiplier import PackedMultiplier
from sparqforge.hw.replica import KEEP_REPLICAS
from sparqforge.hw.sparse_mac_array import SparseMacArray
from sparqforge.sim.check import compare
from sparqforge.sim.mac_array.schedule import corner_layers, dense_schedule, random_layer
from sparqforge.sim.packed_multiplier.stimulus import corner_sets
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
    _random_and_corner_layers(array, rng, n_random=5, n_corner=3)


def _random_and_corner_layers(array, rng, *, n_random, n_corner):
    """Random layers of depth 1 and 9, then the corner layers, through ``array`` (depth 9)
    against the golden model, with random stalls."""
    for k in (1, 9):
        a, w, requant = random_layer(rng, m=3, k=k, n=n_random, **types_of(array))
        result, _ = check_layer(array, a, w, requant, seed=k)
        assert not result, result
    for name, (a, w, requant) in corner_layers(rng, max_depth=9, m=3, n=n_corner,
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


@pytest.mark.parametrize("rows,cols,product_stages,packed",
                         [(2, 2, 1, False), (4, 3, 1, False), (4, 3, 2, False), (4, 3, 3, False),
                          (4, 4, 1, True)])
def test_no_bubbles_between_steps_or_tiles(rows, cols, product_stages, packed):
    # Without stalls, T tiles of K >= rows + 3 beats take T * K cycles plus the pipeline
    # fill and the last drain; any bubble would add cycles.
    array = MacArray(rows=rows, cols=cols, a_bits=8, w_bits=8, max_depth=64, groups=2,
                     product_stages=product_stages, packed_products=packed)
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


# ------------------------------------------------------------------------------------------
# Lane operands (depthwise convolutions): element (r, c) multiplies lane c of row r's beat.

def lane_operand_layer(array, a, w):
    """Raw accumulators of ``array`` (lane operands, no requantizer) on ``a [M, N, K]`` (row
    ``m``'s activations for channel ``n``) and ``w [K, N]``, channel tiles outer, with random
    stalls; and the NumPy reference ``acc[m, n] = sum_k a[m, n, k] * w[k, n]``."""
    rows, cols = array.rows, array.cols
    (m_dim, n_dim, k_dim) = a.shape
    m_tiles, n_tiles = -(-m_dim // rows), -(-n_dim // cols)
    schedule = dense_schedule(rows, cols, np.zeros((m_dim, k_dim), dtype=np.int64), w)
    padded = np.zeros((m_tiles * rows, n_tiles * cols, k_dim), dtype=np.int64)
    padded[:m_dim, :n_dim] = a
    # Beat (nt, mt, k): [rows, cols] of rows mt * rows.., channels nt * cols...
    beats = padded.reshape(m_tiles, rows, n_tiles, cols, k_dim).transpose(2, 0, 4, 1, 3)
    schedule.inputs["a"] = {"value": beats.reshape(-1, rows, cols)}
    got, _ = run_schedule(schedule, description(array, "mac_array"), dut=array, seed=m_dim)
    want = golden.wrap_signed(np.einsum("mnk,kn->mn", a, w), array.acc_bits)
    return want, got


@pytest.mark.parametrize("a_bits,a_signed,w_bits,w_signed,product_stages", [
    (8, False, 8, True, 1), (8, True, 8, True, 1), (4, True, 3, False, 2), (8, False, 8, True, 3)])
def test_lane_operands_give_each_element_its_own_activation(a_bits, a_signed, w_bits,
                                                            w_signed, product_stages):
    array = MacArray(rows=3, cols=4, a_bits=a_bits, a_signed=a_signed, w_bits=w_bits,
                     w_signed=w_signed, max_depth=9, groups=4, requant=False,
                     product_stages=product_stages, lane_operands=True)
    assert array.a.payload.shape() == data.ArrayLayout(data.ArrayLayout(
        MacArray._shape(a_bits, a_signed), 4), 3)
    # The same cycles as without lane operands.
    assert array.core_latency == MacArray(rows=3, cols=4, product_stages=product_stages,
                                          requant=False).core_latency
    rng = np.random.default_rng(a_bits + 10 * product_stages)
    (a_lo, a_hi), (w_lo, w_hi) = (golden.operand_range(a_bits, a_signed),
                                  golden.operand_range(w_bits, w_signed))
    for m_dim, n_dim, k_dim in ((7, 8, 9), (3, 3, 1)):
        a = rng.integers(a_lo, a_hi + 1, (m_dim, n_dim, k_dim))
        w = rng.integers(w_lo, w_hi + 1, (k_dim, n_dim))
        want, got = lane_operand_layer(array, a, w)
        assert not compare(want, got)
    # Full depth at the extremes: most negative (or largest) times most negative.
    a = np.full((3, 4, 9), a_lo if a_signed else a_hi)
    w = np.full((9, 4), w_lo if w_signed else w_hi)
    want, got = lane_operand_layer(array, a, w)
    assert not compare(want, got) and abs(want).max() == 9 * abs(a[0, 0, 0] * w[0, 0])


def test_lane_operands_are_not_a_broadcast():
    # The checker catches an array that gives every element of a row lane 0.
    array = MacArray(rows=2, cols=4, a_bits=8, a_signed=False, max_depth=8, requant=False,
                     lane_operands=True)
    rng = np.random.default_rng(9)
    a, w = rng.integers(0, 256, (2, 4, 5)), rng.integers(-128, 128, (5, 4))
    want, got = lane_operand_layer(array, a, w)
    assert not compare(want, got)
    broadcast = golden.wrap_signed(np.einsum("mk,kn->mn", a[:, 0], w), array.acc_bits)
    assert compare(broadcast, got).count > 0


def test_lane_operands_refuse_shared_operands():
    with pytest.raises(TypeError, match="^Lane operands must be a bool, not 1$"):
        MacArray(rows=2, cols=4, lane_operands=1)
    with pytest.raises(ValueError, match="^Lane operands need an operand per element; packed "
                                         "products share one per column pair$"):
        MacArray(rows=2, cols=4, packed_products=True, lane_operands=True)
    with pytest.raises(ValueError, match="^Lane operands need a dense array"):
        SparseMacArray(n=2, m=4, rows=2, cols=4, lane_operands=True)
    # Off (the default), the beat is one activation per row, as it always was.
    assert MacArray(rows=2, cols=4).a.payload.shape() == data.ArrayLayout(signed(8), 2)


def test_accumulator_width_comes_from_the_golden_model():
    array = MacArray(rows=2, cols=2, a_bits=4, a_signed=False, w_bits=3, max_depth=100)
    assert array.acc_bits == golden.acc_bits(a_bits=4, a_signed=False, w_bits=3, w_signed=True,
                                             max_depth=100)


@pytest.mark.parametrize("product_stages,packed", [(1, False), (2, False), (3, False),
                                                   (1, True)])
def test_reset_in_the_middle_of_a_tile_clears_the_accumulators(product_stages, packed):
    # The elements are reset through a registered copy of the reset, a cycle late; a tile
    # cut short by a reset must leave nothing behind in the accumulators.
    from amaranth.hdl import ClockDomain, Module
    from amaranth.sim import Simulator

    array = MacArray(rows=2, cols=2, a_bits=8, w_bits=8, max_depth=8, requant=False,
                     product_stages=product_stages, packed_products=packed)
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


# ------------------------------------------------------------------------------------------
# Packed products: the two columns of a pair share one packed multiplier on their row's
# activation (hw/packed_multiplier.py); the results are the golden model's, unchanged.

SIGNS = list(itertools.product((True, False), repeat=2))
PACKED_POINTS = [
    # (a_bits, w_bits, a_signed, w_signed, packed_port_bits): "narrowest" is the narrowest
    # packed input that fits, where the lanes overlap most.
    *[(8, 8, a_s, w_s, None) for a_s, w_s in SIGNS],     # ECP5 18 bits: 7 bits of overlap
    *[(4, 4, a_s, w_s, None) for a_s, w_s in SIGNS],     # no overlap
    (8, 8, True, True, 25), (8, 8, False, True, 25),     # DSP48E1: no overlap
    (4, 4, True, True, "narrowest"), (4, 4, False, True, "narrowest"),
    (3, 5, False, True, None), (8, 2, True, True, "narrowest"),
]


def narrowest_port(**types):
    return next(bits for bits in golden.PACKED_PORT_RANGE if _fits(bits, **types))


def _fits(port_bits, **types):
    try:
        golden.packing(**types, lanes=2, port_bits=port_bits)
        return True
    except ValueError:
        return False


def packed_array(a_bits, w_bits, a_signed, w_signed, port, groups=2, **kw):
    types = dict(a_bits=a_bits, w_bits=w_bits, a_signed=a_signed, w_signed=w_signed)
    if port == "narrowest":
        port = narrowest_port(**types)
    return MacArray(rows=2, cols=4, **types, groups=groups, packed_products=True,
                    packed_port_bits=port, **kw)


def check_accumulators(array, a, w, *, stall=0.3, seed=1):
    """Raw accumulators of an array without requantizer against ``golden.matmul``."""
    schedule = dense_schedule(array.rows, array.cols, a, w)
    got, _ = run_schedule(schedule, description(array, "mac_array"), dut=array, stall=stall,
                          seed=seed)
    return compare(golden.matmul(a, w, acc_bits=array.acc_bits), got)


def corner_product_layer(array):
    """``a [M, 1]``, ``w [1, N]``: one beat per tile, whose products are every combination
    of an activation corner (most negative, largest, 0, +-1, next to the extremes) with a
    pair of weight corners in the two columns of a packed pair."""
    a, w = corner_sets(dict(a_bits=array.a_bits, a_signed=array.a_signed,
                            w_bits=array.w_bits, w_signed=array.w_signed, lanes=2))
    a_values = np.unique(a)
    pairs = np.unique(w, axis=0)                  # every corner pair, (w0, w1)
    return a_values[:, None], pairs.reshape(1, -1)


@pytest.mark.parametrize("a_bits,w_bits,a_signed,w_signed,port", PACKED_POINTS)
def test_packed_products(a_bits, w_bits, a_signed, w_signed, port):
    # Random layers, the corner layers (most negative x most negative, full-depth extremes
    # of both signs, all zero, rounding ties) through the requantizer, then the raw
    # accumulators: full depth at maximum magnitude, and every corner operand set of a
    # packed pair; random valid/ready stalls throughout.
    array = packed_array(a_bits, w_bits, a_signed, w_signed, port, max_depth=9)
    # The operand copies and the packed multiplier's three stages: two more cycles than one
    # product stage.
    assert array.product_latency == 4
    assert array.core_latency == MacArray(rows=2, cols=4, product_stages=3).core_latency
    rng = np.random.default_rng(a_bits * 100 + w_bits * 10 + 2 * a_signed + w_signed)
    _random_and_corner_layers(array, rng, n_random=6, n_corner=6)
    # (A tag per column tile: the corner operand sets take up to 25 tiles.)
    raw = packed_array(a_bits, w_bits, a_signed, w_signed, port, max_depth=9, requant=False,
                       groups=32)
    largest = 0
    for name in ("most_negative", "full_depth_extremes"):
        a, w, _ = corner_layers(rng, max_depth=9, m=3, n=6, **types_of(array))[name]
        result = check_accumulators(raw, a, w, seed=2)
        assert not result, f"{name}: {result}"
        largest = max(largest, np.abs(golden.matmul(a, w)).max())
    # Some accumulator held the largest product magnitude times the full depth.
    assert largest == 9 * max(abs(x * y) for x in golden.operand_range(a_bits, a_signed)
                              for y in golden.operand_range(w_bits, w_signed))
    result = check_accumulators(raw, *corner_product_layer(raw), seed=3)
    assert not result, f"corner operand sets: {result}"


class _UncorrectedPackedMultiplier(PackedMultiplier):
    """The packed multiplier with its correction left out: its products are wrong whenever
    one is negative or the lanes overlap."""

    def _correction(self, m):
        lows = [Const(0, 0)] + [Const(0, self.overlap_bits)] * (self.lanes - 1)
        return lows, Const(0, self._packing.unpacked_bits)


def test_packed_checker_catches_an_uncorrected_packing(monkeypatch):
    # The same checks as above on an array whose packed multipliers skip the correction.
    array = packed_array(8, 8, True, True, None, max_depth=9, requant=False, groups=32)
    a, w = corner_product_layer(array)
    assert not check_accumulators(array, a, w, stall=0.0)
    monkeypatch.setattr(mac_array, "PackedMultiplier", _UncorrectedPackedMultiplier)
    broken = packed_array(8, 8, True, True, None, max_depth=9, requant=False, groups=32)
    result = check_accumulators(broken, a, w, stall=0.0)
    assert result.count > 0, result


def test_packed_products_refuse_what_cannot_share_a_multiplier():
    with pytest.raises(ValueError, match="^Packed products pair the columns; the column count "
                                         "must be even, not 3$"):
        MacArray(rows=2, cols=3, packed_products=True)
    with pytest.raises(ValueError, match="^Packed products have their own multiplier pipeline; "
                                         "product stages must be 1 with them, not 3$"):
        MacArray(rows=2, cols=4, packed_products=True, product_stages=3)
    with pytest.raises(TypeError, match="^Packed products must be a bool, not 1$"):
        MacArray(rows=2, cols=4, packed_products=1)
    with pytest.raises(ValueError, match=r"^A packed operand width \(25\) needs packed "):
        MacArray(rows=2, cols=4, packed_port_bits=25)
    with pytest.raises(ValueError, match="need a 17-bit packed multiplier input, not 12"):
        MacArray(rows=2, cols=4, packed_products=True, packed_port_bits=12)
    with pytest.raises(ValueError, match="^Packed products need a dense array: an N:M array "
                                         "selects each column's activations"):
        SparseMacArray(n=2, m=4, rows=2, cols=4, packed_products=True)


def test_the_platform_chooses_the_packed_operand_width():
    from sparqforge.boards.catalog import get_board

    assert packed_port_bits_for(None) == golden.PACKED_PORT_BITS == 18
    assert packed_port_bits_for(get_board("ulx3s-85f").platform()) == 18
    assert packed_port_bits_for(get_board("arty-a7-100").platform()) == 25


# ------------------------------------------------------------------------------------------
# Synthesis: one multiplier block per two elements (the array without its requantizer, whose
# 16 x 16 products take blocks of their own).

def _accelerator_array(rows, cols, **kw):
    """The accelerator's operand types: unsigned 8-bit activations, signed 8-bit weights."""
    return MacArray(rows=rows, cols=cols, a_bits=8, a_signed=False, w_bits=8, max_depth=256,
                    requant=False, **kw)


def _yosys_counts(text, synth, groups):
    # Replica registers kept apart as in the board builds.
    out = run_yosys(f"read_rtlil t.il; {KEEP_REPLICAS}; {synth} -noiopad -top t; "
                    f"tee -q -o stat.json stat -json", {"t.il": text})
    return count_cells(json.loads(out["stat.json"]), groups)


SYNTH_SHAPES = [(2, 4), pytest.param(8, 8, marks=pytest.mark.slow)]


@pytest.mark.parametrize("rows,cols", SYNTH_SHAPES)
def test_packed_array_takes_one_ecp5_multiplier_block_per_two_elements(rows, cols):
    # The form the ULX3S build elaborates: MULT18X18D instances with their registers on.
    from sparqforge.boards.ulx3s import ULX3S_85F

    text = rtlil.convert(_accelerator_array(rows, cols, packed_products=True), name="t",
                         platform=ULX3S_85F(), emit_src=False)
    assert text.count("cell \\MULT18X18D") == rows * cols // 2
    assert _yosys_counts(text, "synth_ecp5", ECP5_GROUPS)["mult18"] == rows * cols // 2
    # Unpacked, every element has a block of its own.
    plain = rtlil.convert(_accelerator_array(rows, cols), name="t", emit_src=False)
    assert _yosys_counts(plain, "synth_ecp5", ECP5_GROUPS)["mult18"] == rows * cols


@pytest.mark.parametrize("rows,cols", SYNTH_SHAPES)
@pytest.mark.parametrize("port_bits", [25, 18])
def test_packed_array_takes_one_dsp48e1_per_two_elements(rows, cols, port_bits):
    # 25 bits (the DSP48E1's A port, what a Xilinx platform chooses): two int8 lanes with no
    # overlap; the ECP5's 18 bits fit the block as well. Flattened as in the board builds
    # (yosys 0.70's abc9 fails in synth_xilinx on the packed multipliers' hierarchy).
    array = _accelerator_array(rows, cols, packed_products=True, packed_port_bits=port_bits)
    text = rtlil.convert(array, name="t", emit_src=False)
    counts = _yosys_counts(text, "synth_xilinx -flatten -family xc7", XILINX_GROUPS)
    assert counts["dsp48e1"] == rows * cols // 2
