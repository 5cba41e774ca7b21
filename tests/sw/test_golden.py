"""Golden model against independent references: brute force for the accumulator width and a
scalar transliteration of the gemmlowp C reference for requantization."""

import doctest
import importlib
import itertools

import numpy as np
import pytest

from sparqforge.sw import golden
from sparqforge.sw.golden import numerics, requant

golden_mac_array = importlib.import_module("sparqforge.sw.golden.mac_array")

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


@pytest.mark.parametrize("module", [numerics, requant, golden_mac_array])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def c_div(a, b):
    """C integer division (truncates toward zero), on Python ints."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def ref_srdhm(a, b):
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def ref_rdbpot(x, exponent):
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def ref_requantize(acc, bias, multiplier, shift, zero_point, qmin, qmax):
    x = min(max(acc + bias, INT32_MIN), INT32_MAX)
    left, right = max(shift, 0), max(-shift, 0)
    x = min(max(x * (1 << left), INT32_MIN), INT32_MAX)
    y = ref_rdbpot(ref_srdhm(x, multiplier), right) + zero_point
    return min(max(y, qmin), qmax)


def test_acc_bits_is_minimal_and_sufficient_by_brute_force():
    for a_bits, w_bits in itertools.product((2, 3, 4), repeat=2):
        for a_signed, w_signed in itertools.product((False, True), repeat=2):
            a_vals = range(*(lambda lo, hi: (lo, hi + 1))(*golden.operand_range(a_bits, a_signed)))
            w_vals = range(*(lambda lo, hi: (lo, hi + 1))(*golden.operand_range(w_bits, w_signed)))
            products = [a * w for a in a_vals for w in w_vals]
            for depth in (1, 3, 16):
                lo, hi = depth * min(products), depth * max(products)
                bits = golden.acc_bits(a_bits=a_bits, a_signed=a_signed, w_bits=w_bits,
                                       w_signed=w_signed, max_depth=depth)
                assert -(1 << (bits - 1)) <= lo and hi < (1 << (bits - 1))
                assert lo < -(1 << (bits - 2)) or hi >= (1 << (bits - 2)), "not minimal"


def test_max_depth_for_fits_32_bits():
    depth = golden.max_depth_for(a_bits=8, a_signed=True, w_bits=8, w_signed=True)
    kw = dict(a_bits=8, a_signed=True, w_bits=8, w_signed=True)
    assert golden.acc_bits(max_depth=depth, **kw) == 32
    assert golden.acc_bits(max_depth=depth + 1, **kw) == 33


def test_srdhm_and_rdbpot_match_c_reference():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 2000, endpoint=True),
                        [INT32_MIN, INT32_MAX, 0, -1, 1, -3, 3]])
    b = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 2000, endpoint=True),
                        [INT32_MIN, INT32_MAX, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30]])
    got = golden.saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [ref_srdhm(int(x), int(y)) for x, y in zip(a, b)]
    e = rng.integers(0, 32, len(a))
    x = rng.integers(INT32_MIN, INT32_MAX, len(a), endpoint=True)
    assert golden.rounding_divide_by_pot(x, e).tolist() == [
        ref_rdbpot(int(v), int(k)) for v, k in zip(x, e)]


def test_requantize_matches_c_reference_with_ties_and_saturation():
    rng = np.random.default_rng(1)
    n = 4000
    acc = rng.integers(-(1 << 24), 1 << 24, n)
    acc[:50] = rng.integers(-8, 8, 50)              # small values: many rounding ties
    bias = rng.integers(-(1 << 20), 1 << 20, n)
    bias[50:80] = INT32_MAX                         # saturating bias add
    bias[80:110] = INT32_MIN
    multiplier, shift = golden.quantize_multiplier(np.exp(rng.uniform(-14, 3, n)))
    multiplier[:50], shift[:50] = 1 << 30, -rng.integers(0, 3, 50)
    zero_point = rng.integers(-128, 128, n)
    x = golden.add_bias(acc, bias)
    got = golden.requantize(x, multiplier, shift, zero_point=zero_point, qmin=-128, qmax=127)
    want = [ref_requantize(*(int(v) for v in row), -128, 127)
            for row in zip(acc, bias, multiplier, shift, zero_point)]
    assert got.tolist() == want


def test_quantize_multiplier_reconstructs_real():
    real = np.exp(np.random.default_rng(2).uniform(-20, 5, 1000))
    m, s = golden.quantize_multiplier(real)
    assert np.all((m >= 1 << 30) & (m < 1 << 31))
    back = m.astype(float) * 2.0 ** (s.astype(float) - 31)
    assert np.all(np.abs(back - real) <= real * 2.0 ** -30)


def test_quantize_multiplier_rejects_bad_values():
    with pytest.raises(ValueError, match="non-negative"):
        golden.quantize_multiplier(-1.0)
    with pytest.raises(ValueError, match="non-negative"):
        golden.quantize_multiplier(float("nan"))
    with pytest.raises(ValueError, match="too large"):
        golden.quantize_multiplier(2.0 ** 40)
    assert golden.quantize_multiplier(2.0 ** -40) == (0, 0)


def test_mac_array_model_per_channel_relu():
    a = np.array([[1, -2], [3, 4]])
    w = np.array([[2, -1], [1, 5]])
    # acc = [[0, -11], [10, 17]]; multiplier 0.5 then zero point and clamp, hand-computed.
    got = golden.mac_array(a, w, bias=[1, 0], multiplier=[1 << 30, 1 << 30], shift=[0, 0],
                           zero_point=[2, -1], relu=[True, False], out_bits=4, out_signed=True)
    # x = [[1, -11], [11, 17]] -> SRDHM(x, 0.5) = [[1, -5], [6, 9]] (ties toward +inf)
    # + zero point -> [[3, -6], [8, 8]]; clamp to [-8, 7], ReLU channel 0 at 2.
    assert got.tolist() == [[3, -6], [7, 7]]
    relu_bites = golden.mac_array(a, w, bias=[-9, 0], multiplier=[1 << 30] * 2, shift=[0, 0],
                                  zero_point=[2, -1], relu=[True, False], out_bits=4,
                                  out_signed=True)
    # channel 0: x = [-9, 1] -> [-4, 1] + 2 = [-2, 3] -> ReLU clamps -2 up to the zero point 2
    assert relu_bites[:, 0].tolist() == [2, 3]
