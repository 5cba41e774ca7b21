"""PackedMultiplier (hw/packed_multiplier.py): two or four products sharing one operand from
one multiplier, exact for every operand set. The hardware is compared with the golden model
(``golden.packed_multiplier``) and with plain products; the golden packing with plain
products at every parameter point."""

import json
import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Const, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from sparqforge.boards.synth import ECP5_GROUPS, count_cells, run_yosys
from sparqforge.boards.ulx3s import ULX3S_85F
from sparqforge.hw.packed_multiplier import PackedMultiplier
from sparqforge.sim.packed_multiplier.stimulus import (corner_sets, every_set, operand_sets,
                                                       pack_lanes, unpack_lanes)
from sparqforge.sw import golden

SIGNS = {"s_s": (True, True), "s_u": (True, False), "u_s": (False, True), "u_u": (False, False)}


def _types(name, a_bits, w_bits):
    a_signed, w_signed = SIGNS[name]
    return dict(a_bits=a_bits, a_signed=a_signed, w_bits=w_bits, w_signed=w_signed)


def narrowest_port(**types):
    """The narrowest packed input that fits: the most overlap between lanes."""
    for port_bits in golden.PACKED_PORT_RANGE:
        try:
            golden.packing(**types, port_bits=port_bits)
            return port_bits
        except ValueError:
            pass
    raise AssertionError(f"nothing fits {types}")


def simulate(mul, a, w):
    """``mul``'s products for the operand sets ``a [N]``, ``w [N, lanes]``, fed one set per
    cycle in one simulation; ``[N, lanes]`` int64."""
    w_words = pack_lanes(w, mul.w_bits)
    words = []

    async def bench(ctx):
        for t in range(len(a) + mul.latency - 1):
            if t < len(a):
                ctx.set(mul.a, int(a[t]))
                ctx.set(mul.w.as_value(), w_words[t])
            await ctx.tick()
            # After tick t + 1 the output holds the products of the set of tick
            # t + 1 - latency.
            if t >= mul.latency - 1:
                words.append(ctx.get(mul.p.as_value()))

    sim = Simulator(mul)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return unpack_lanes(words, mul.product_bits, mul.lanes, mul.product_signed)


def assert_products(got, expected, a, w):
    wrong = np.argwhere(got != expected)
    assert not len(wrong), f"{len(wrong)} wrong products, e.g. " + "; ".join(
        f"a={a[i]} w[{j}]={w[i, j]}: got {got[i, j]}, expected {expected[i, j]}"
        for i, j in wrong[:5])


def check_hardware(mul, a, w):
    """Simulate, then compare with the golden model and with plain products."""
    got = simulate(mul, a, w)
    assert_products(got, golden.packed_multiplier(a, w, **mul.params), a, w)
    assert_products(got, golden.lane_products(a, w), a, w)


# ------------------------------------------------------------------------------------------
# Parameters and widths


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(a_bits=9), TypeError, "Activation width must be an integer in 2..8, not 9"),
    (dict(w_bits=1), TypeError, "Weight width must be an integer in 2..8, not 1"),
    (dict(w_signed=1), TypeError, "Weight signedness must be a bool, not 1"),
    (dict(lanes=3), TypeError, "Lane count must be 2 or 4, not 3"),
    (dict(lanes=2.0), TypeError, "Lane count must be 2 or 4, not 2.0"),
    (dict(port_bits=28), TypeError,
     "Multiplier input width must be an integer in 8..27, not 28"),
    (dict(lanes=4), ValueError,
     "4 lanes of signed 8-bit x signed 8-bit products need a 33-bit packed multiplier "
     "input, not 18; use 2 lanes or narrower operands"),
    (dict(a_bits=5, a_signed=False, w_bits=4, lanes=4), ValueError,
     "4 lanes of unsigned 5-bit x signed 4-bit products need a 20-bit packed multiplier "
     "input, not 18; use 2 lanes or narrower operands"),
])
def test_parameters_are_checked(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        PackedMultiplier(**kwargs)


def test_widths_and_latency_are_read_only_properties():
    mul = PackedMultiplier()
    # Two int8 products in the 18-bit input: shifted by 9, so 7 low bits of the upper
    # product overlap the lower one.
    assert (mul.latency, mul.packed_bits, mul.product_bits, mul.shift, mul.overlap_bits) \
        == (3, 18, 16, 9, 7)
    assert mul.params == dict(a_bits=8, a_signed=True, w_bits=8, w_signed=True, lanes=2,
                              port_bits=18)
    for name in ("latency", "packed_bits", "product_bits", "shift", "lanes"):
        with pytest.raises(AttributeError):
            setattr(mul, name, 1)
    wide = PackedMultiplier(port_bits=25)
    assert (wide.packed_bits, wide.shift, wide.overlap_bits) == (25, 16, 0)
    four = PackedMultiplier(a_bits=4, w_bits=4, lanes=4)
    assert (four.packed_bits, four.product_bits, four.shift) == (17, 8, 4)
    # The hardware takes its widths from the golden model's one derivation.
    assert golden.packing(**mul.params) == mul._packing


def test_every_two_lane_point_fits_the_18_bit_input():
    for a_bits in golden.OPERAND_BITS:
        for w_bits in golden.OPERAND_BITS:
            for name in SIGNS:
                assert golden.packing(**_types(name, a_bits, w_bits), lanes=2).packed_bits <= 18


# ------------------------------------------------------------------------------------------
# The golden model against plain products


def _distinct_packings(types, lanes):
    """``{packing: port_bits}`` for every shift some port width gives."""
    found = {}
    for port_bits in golden.PACKED_PORT_RANGE:
        try:
            found.setdefault(golden.packing(**types, lanes=lanes, port_bits=port_bits),
                             port_bits)
        except ValueError:
            pass
    return found


@pytest.mark.parametrize("lanes", [2, 4])
@pytest.mark.parametrize("signs", sorted(SIGNS))
def test_golden_packing_is_exact_at_every_point(signs, lanes):
    # Every width pair and every shift a port width gives (overlap from none to half a
    # product): every operand set where there are at most 2**14, else every combination of
    # corner values plus random sets.
    rng = np.random.default_rng(lanes)
    points = 0
    for a_bits in golden.OPERAND_BITS:
        for w_bits in golden.OPERAND_BITS:
            types = _types(signs, a_bits, w_bits)
            params = dict(types, lanes=lanes)
            if (1 << a_bits) * (1 << w_bits) ** lanes <= 1 << 14:
                a, w = every_set(params)
            else:
                a, w = operand_sets(params, seed=int(rng.integers(1 << 30)), count=300,
                                    inner=lanes == 2)
            for port_bits in _distinct_packings(types, lanes).values():
                got = golden.packed_multiplier(a, w, **params, port_bits=port_bits)
                assert_products(got, golden.lane_products(a, w), a, w)
                points += 1
    assert points >= 49


@pytest.mark.slow
@pytest.mark.parametrize("signs", ["s_s", "u_s"])
def test_golden_int8_pair_is_exact_for_every_operand_set(signs):
    # The ECP5 configuration: all 2**24 sets of a, w0, w1, 32 values of a at a time (3 to
    # 6 s each here, with the machine shared).
    params = dict(_types(signs, 8, 8), lanes=2)
    a_lo, a_hi = golden.operand_range(8, params["a_signed"])
    w_lo, w_hi = golden.operand_range(8, params["w_signed"])
    w0, w1 = np.meshgrid(np.arange(w_lo, w_hi + 1), np.arange(w_lo, w_hi + 1))
    w = np.stack([w0.ravel(), w1.ravel()], axis=-1)
    for a_first in range(a_lo, a_hi + 1, 32):
        a = np.arange(a_first, a_first + 32)[:, None].repeat(len(w), axis=1)
        wa = np.broadcast_to(w, a.shape + (2,))
        got = golden.packed_multiplier(a, wa, **params)
        assert np.array_equal(got, golden.lane_products(a, wa))


@pytest.mark.parametrize("types,port_bits,needed", [
    (_types("s_s", 8, 8), 18, True),    # overlap and negative products
    (_types("s_s", 8, 8), 25, True),    # negative products: the borrow
    (_types("u_u", 8, 8), 18, True),    # overlap
    (_types("u_u", 8, 8), 25, False),   # neither: the plain fields are the products
], ids=["int8_overlap_borrow", "int8_borrow", "uint8_overlap", "uint8_neither"])
def test_golden_without_the_correction(types, port_bits, needed):
    a, w = operand_sets(dict(types, lanes=2), seed=3, count=1000)
    naive = golden.packed_multiplier(a, w, **types, lanes=2, port_bits=port_bits,
                                     correct=False)
    assert np.array_equal(naive, golden.lane_products(a, w)) is not needed


# ------------------------------------------------------------------------------------------
# The hardware against the golden model


@pytest.mark.parametrize("port", ["18", "narrowest"])
@pytest.mark.parametrize("signs", sorted(SIGNS))
def test_every_operand_set_at_4_bits(signs, port):
    # Every a, w0, w1. At 18 bits the 4-bit products do not overlap; at the narrowest
    # packed input they overlap by half a product.
    types = _types(signs, 4, 4)
    port_bits = 18 if port == "18" else narrowest_port(**types, lanes=2)
    mul = PackedMultiplier(**types, lanes=2, port_bits=port_bits)
    assert (mul.overlap_bits > 0) == (port != "18")
    check_hardware(mul, *every_set(mul.params))


@pytest.mark.parametrize("port_bits", [18, 25])
@pytest.mark.parametrize("signs", sorted(SIGNS))
def test_random_and_corner_sets_at_8_bits(signs, port_bits):
    # Every combination of the corners (most negative x most negative, maximum x maximum,
    # zeros, +-1 and the values next to the extremes) and random sets.
    mul = PackedMultiplier(**_types(signs, 8, 8), port_bits=port_bits)
    check_hardware(mul, *operand_sets(mul.params, seed=port_bits, count=2000))


@pytest.mark.parametrize("a_bits,w_bits", [(2, 8), (8, 2)])
@pytest.mark.parametrize("signs", ["s_s", "u_s"])
def test_overlap_wider_than_an_operand(signs, a_bits, w_bits):
    # At the narrowest packed input the overlap (5 bits) is wider than the 2-bit operand,
    # whose low bits are then its sign extension.
    types = _types(signs, a_bits, w_bits)
    mul = PackedMultiplier(**types, port_bits=narrowest_port(**types, lanes=2))
    assert mul.overlap_bits > min(a_bits, w_bits)
    check_hardware(mul, *operand_sets(mul.params, seed=a_bits, count=1000))


@pytest.mark.parametrize("signs", sorted(SIGNS))
def test_four_lanes(signs):
    # At 4 bits: every combination of the corners and random sets (16**5 sets in all); at
    # 2 bits every set.
    mul = PackedMultiplier(**_types(signs, 4, 4), lanes=4)
    assert mul.packed_bits <= 18
    check_hardware(mul, *operand_sets(mul.params, seed=4, count=2000, inner=False))
    small = PackedMultiplier(**_types(signs, 2, 2), lanes=4)
    check_hardware(small, *every_set(small.params))


class _Uncorrected(PackedMultiplier):
    """The packed multiplier with its correction left out."""

    def _correction(self, m):
        lows = [Const(0, 0)] + [Const(0, self.overlap_bits)] * (self.lanes - 1)
        return lows, Const(0, self._packing.unpacked_bits)


def test_the_checker_catches_a_missing_correction():
    mul = PackedMultiplier()
    a, w = corner_sets(mul.params)
    check_hardware(mul, a, w)
    with pytest.raises(AssertionError, match="wrong products"):
        check_hardware(_Uncorrected(), a, w)
    # And a single wrong product.
    expected = golden.packed_multiplier(a, w, **mul.params)
    expected[len(a) // 2, 1] += 1
    with pytest.raises(AssertionError, match="^1 wrong products"):
        assert_products(simulate(mul, a, w), expected, a, w)


# ------------------------------------------------------------------------------------------
# The ECP5 form


class _Top(wiring.Component):
    """A packed multiplier behind plain ports: with its own ``data.View`` ports at the top,
    wires named ``p[0]`` beside the port ``p`` make yosys 0.70's abc9 fail in synth_ecp5."""

    def __init__(self, **params):
        self._mul = PackedMultiplier(**params)
        super().__init__({"a": In(self._mul.a.shape()), "w": In(len(self._mul.w.as_value())),
                          "p": Out(len(self._mul.p.as_value()))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.packed = mul = self._mul
        m.d.comb += [mul.a.eq(self.a), mul.w.as_value().eq(self.w),
                     self.p.eq(mul.p.as_value())]
        return m


@pytest.mark.parametrize("params", [dict(), dict(a_bits=4, w_bits=4, lanes=4)],
                         ids=["int8_x2", "int4_x4"])
def test_ecp5_form_is_one_multiplier_block_with_its_registers(params):
    text = rtlil.convert(_Top(**params), name="t", platform=ULX3S_85F(), emit_src=False)
    assert text.count("cell \\MULT18X18D") == 1
    cell = text[text.index("cell \\MULT18X18D"):]
    cell = cell[:cell.index("\n  end")]
    for port in ("INPUTA", "INPUTB", "OUTPUT"):
        assert re.search(rf'parameter \\REG_{port}_CLK "CLK0"', cell), port
    # The low products beside it are adders, not multiplications mapped to more blocks.
    out = run_yosys("read_rtlil t.il; synth_ecp5 -noiopad -top t; "
                    "tee -q -o stat.json stat -json", {"t.il": text})
    assert count_cells(json.loads(out["stat.json"]), ECP5_GROUPS)["mult18"] == 1
