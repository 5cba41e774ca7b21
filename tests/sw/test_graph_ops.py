"""Graph operators of the golden model against independent references: TFLite's integer ADD
transliterated in plain Python ints (C truncating division), the exact rational mean for
global average pooling, a direct loop convolution for depthwise layers, and float references
within one code."""

import doctest
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from sparqforge.sw import golden
from sparqforge.sw.golden import graph_ops

from .test_golden import INT32_MAX, INT32_MIN, ref_rdbpot, ref_requantize, ref_srdhm


def test_doctests():
    result = doctest.testmod(graph_ops)
    assert result.attempted > 0 and result.failed == 0


# ---- plain-Python references --------------------------------------------------------------

def ref_quantize_multiplier(real):
    """TFLite ``QuantizeMultiplier`` on a Python float: frexp, round half away, renormalise,
    flush below a shift of -31."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = math.floor(q * (1 << 31) + 0.5)   # q > 0: C round, half away from zero
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def ref_mbqm_smaller_than_one(x, multiplier, shift):
    """TFLite ``MultiplyByQuantizedMultiplierSmallerThanOneExp``."""
    assert shift <= 0, "the 8-bit ADD's multipliers are all below one"
    return ref_rdbpot(ref_srdhm(x, multiplier), -shift)


def ref_add(q1, q2, s1, z1, s2, z2, s_out, z_out, relu):
    """TFLite's reference 8-bit ``Add`` for one element, line by line: Prepare's multipliers,
    then ``AddElementwise``'s loop body."""
    left_shift = 20
    twice_max_input_scale = 2 * max(s1, s2)
    m1, shift1 = ref_quantize_multiplier(s1 / twice_max_input_scale)
    m2, shift2 = ref_quantize_multiplier(s2 / twice_max_input_scale)
    m_out, shift_out = ref_quantize_multiplier(twice_max_input_scale
                                               / ((1 << left_shift) * s_out))
    input1_val = -z1 + q1
    input2_val = -z2 + q2
    shifted_input1_val = input1_val * (1 << left_shift)
    shifted_input2_val = input2_val * (1 << left_shift)
    scaled_input1_val = ref_mbqm_smaller_than_one(shifted_input1_val, m1, shift1)
    scaled_input2_val = ref_mbqm_smaller_than_one(shifted_input2_val, m2, shift2)
    raw_sum = scaled_input1_val + scaled_input2_val
    assert INT32_MIN <= raw_sum <= INT32_MAX
    raw_output = ref_mbqm_smaller_than_one(raw_sum, m_out, shift_out) + z_out
    activation_min = z_out if relu else 0
    return min(255, max(activation_min, raw_output))


def round_half_away_fraction(x):
    whole = abs(x.numerator) // x.denominator
    if abs(x) - whole >= Fraction(1, 2):
        whole += 1
    return whole if x >= 0 else -whole


# ---- residual add -------------------------------------------------------------------------

def add_cases(rng, count):
    """Random quantizations, then the named corners."""
    cases = []
    for _ in range(count):
        s1, s2, s_out = np.exp(rng.uniform(np.log(1e-3), np.log(1.0), 3))
        cases.append((float(s1), int(rng.integers(0, 256)), float(s2),
                      int(rng.integers(0, 256)), float(s_out), int(rng.integers(0, 256)),
                      bool(rng.integers(0, 2))))
    for z1, z2, z_out in itertools.product((0, 255), repeat=3):
        cases.append((0.02, z1, 0.05, z2, 0.04, z_out, False))
    cases += [(1.0, 128, 1e-4, 3, 1e-3, 7, False),     # very different scales: input 2
              (1e-4, 0, 1.0, 255, 1e-3, 128, True),    # the smaller scale first
              (0.7, 200, 0.7, 10, 2e-3, 0, False),      # every output saturates
              (0.5, 128, 2.0 ** -40, 0, 0.5, 128, False)]  # input 2's multiplier flushes
    return cases


def codes(rng, n):
    """Random codes with the extremes 0 and 255 in every combination."""
    q1 = np.concatenate([rng.integers(0, 256, n), [0, 0, 255, 255]])
    q2 = np.concatenate([rng.integers(0, 256, n), [0, 255, 0, 255]])
    return q1, q2


def test_add_equals_tflite_reference_and_the_real_sum_within_one_code():
    rng = np.random.default_rng(0)
    for s1, z1, s2, z2, s_out, z_out, relu in add_cases(rng, 60):
        layer = graph_ops.add_params(s1, z1, s2, z2, s_out, z_out, relu)
        q1, q2 = codes(rng, 200)
        got = graph_ops.add_layer(q1, q2, layer)
        want = [ref_add(int(a), int(b), s1, z1, s2, z2, s_out, z_out, relu)
                for a, b in zip(q1, q2)]
        assert got.tolist() == want, (s1, z1, s2, z2, s_out, z_out, relu)
        real = s1 * (q1 - z1) + s2 * (q2 - z2)
        ideal = np.clip(golden.round_half_away(real / s_out) + z_out, z_out if relu else 0,
                        255)
        assert np.max(np.abs(got - ideal)) <= 1, (s1, z1, s2, z2, s_out, z_out, relu)


def test_add_ties_round_away_from_zero():
    # Power-of-two scales make every multiplier exact: the output is the real sum rounded
    # once, and odd sums at half the output scale are ties.
    layer = graph_ops.add_params(0.5, 100, 0.5, 30, 1.0, 128, relu=False)
    q1 = np.arange(90, 111)
    q2 = np.full_like(q1, 31)
    got = graph_ops.add_layer(q1, q2, layer)
    assert got.tolist() == [128 + round_half_away_fraction((int(a) - 99) * Fraction(1, 2))
                            for a in q1]
    assert got[q1 == 100].item() == 129 and got[q1 == 98].item() == 127  # 0.5 -> 1, -0.5 -> -1


def test_add_checker_catches_a_perturbed_layer():
    rng = np.random.default_rng(1)
    layer = graph_ops.add_params(0.03, 120, 0.05, 140, 0.06, 128, relu=False)
    q1, q2 = codes(rng, 100)
    want = [ref_add(int(a), int(b), 0.03, 120, 0.05, 140, 0.06, 128, False)
            for a, b in zip(q1, q2)]
    assert graph_ops.add_layer(q1, q2, layer).tolist() == want
    for key, index in (("multiplier", 0), ("shift", 1), ("zero_point", 2)):
        bad = dict(layer, **{key: layer[key].copy()})
        bad[key][index] += 1 if key != "multiplier" else 1 << 26
        assert graph_ops.add_layer(q1, q2, bad).tolist() != want, key


def test_add_relu_clamps_at_the_output_zero_point():
    layer = graph_ops.add_params(0.1, 128, 0.1, 128, 0.1, 50, relu=True)
    got = graph_ops.add_layer(np.array([0, 128, 255]), np.array([0, 100, 255]), layer)
    assert got.tolist() == [50, 50, 255]


def test_add_params_fields_and_errors():
    params = graph_ops.add_params(0.25, 3, 0.5, 4, 1.0, 5, relu=False)
    assert set(params) == {"multiplier", "shift", "zero_point", "relu", "left_shift"}
    assert params["left_shift"] == 20 and params["relu"] == 0
    m, s = params["multiplier"], params["shift"]
    # 0.25, 0.5 and 1 / 2**20 are powers of two: exact multipliers.
    assert m.tolist() == [1 << 30] * 3 and s.tolist() == [-1, 0, -19]
    with pytest.raises(ValueError, match="Add input 2 scale must be a finite positive number, "
                                         "not 0.0"):
        graph_ops.add_params(0.25, 3, 0.0, 4, 1.0, 5, relu=False)
    with pytest.raises(ValueError, match="Add output zero point must be an integer in 0..255, "
                                         "not 256"):
        graph_ops.add_params(0.25, 3, 0.5, 4, 1.0, 256, relu=False)


# ---- global average pooling ---------------------------------------------------------------

def ref_global_avgpool(x, s_in, z_in, s_out, z_out):
    """Plain-Python requantization of each channel's sum, as the requantizer computes it."""
    b, h, w, c = x.shape
    multiplier, shift = ref_quantize_multiplier(s_in / (h * w * s_out))
    return [[ref_requantize(sum(int(v) for v in x[i, :, :, ch].ravel()), -h * w * z_in,
                            multiplier, shift, z_out, 0, 255) for ch in range(c)]
            for i in range(b)]


@pytest.mark.parametrize("h,w", [(1, 1), (2, 3), (7, 7), (8, 8), (24, 5)])
def test_global_avgpool_equals_reference_and_the_rational_mean(h, w):
    rng = np.random.default_rng(h * 100 + w)
    for trial in range(12):
        s_in = float(np.exp(rng.uniform(np.log(1e-3), 0)))
        s_out = s_in * float(np.exp(rng.uniform(-1.5, 1.5)))
        z_in, z_out = (int(v) for v in rng.integers(0, 256, 2))
        if trial == 0:
            s_out, z_in, z_out = s_in, 0, 0      # the mean of the codes itself
        x = rng.integers(0, 256, (4, h, w, 6))
        x[0], x[1, :, :, 0], x[1, :, :, 1] = 255, 0, z_in   # extremes and the zero point
        layer = graph_ops.global_avgpool_params(s_in, z_in, s_out, z_out, h, w)
        got = graph_ops.global_avgpool_layer(x, layer)
        assert got.tolist() == ref_global_avgpool(x, s_in, z_in, s_out, z_out)
        sums = x.sum(axis=(1, 2))
        ratio = Fraction(s_in) / Fraction(s_out)
        ideal = [[min(255, max(0, z_out + round_half_away_fraction(
            ratio * Fraction(int(total) - h * w * z_in, h * w)))) for total in row]
            for row in sums]
        # gemmlowp rounds twice (the fixed-point multiply, then the shift): one code at most.
        assert np.max(np.abs(got - np.array(ideal))) <= 1


def test_global_avgpool_rounds_as_the_requantizer_does():
    # Two positions: the multiplier 0.5 is (2**30, shift 0), so the fixed-point multiply
    # rounds, ties toward +infinity (-1.5 -> -1). Four positions: 0.25 is (2**30, shift -1),
    # the shift rounds a tie away from zero (-1.5 -> -2), and 0.25 (x = 1) rounds twice,
    # to 1: the one-code difference from the exact mean the test above allows.
    two = graph_ops.global_avgpool_params(1.0, 10, 1.0, 100, 2, 1)
    x = np.array([[[[11]], [[12]]], [[[9]], [[8]]]])     # means 1.5 and -1.5 around z_in
    assert graph_ops.global_avgpool_layer(x, two).tolist() == [[102], [99]]
    four = graph_ops.global_avgpool_params(1.0, 10, 1.0, 100, 2, 2)
    x = np.array([[[[13], [13]], [[10], [10]]], [[[7], [7]], [[10], [10]]],
                  [[[11], [10]], [[10], [10]]]])          # 1.5, -1.5 and 0.25
    assert graph_ops.global_avgpool_layer(x, four).tolist() == [[102], [98], [101]]


def test_global_avgpool_params_errors():
    with pytest.raises(ValueError, match="Global average pooling height must be a positive "
                                         "integer, not 0"):
        graph_ops.global_avgpool_params(0.1, 0, 0.1, 0, 0, 3)
    with pytest.raises(ValueError, match="Global average pooling input zero point"):
        graph_ops.global_avgpool_params(0.1, -1, 0.1, 0, 2, 3)


# ---- depthwise convolution ----------------------------------------------------------------

def loop_depthwise(x, weight, kernel, stride, padding, pad_code):
    """Accumulators ``[B, OH, OW, C]`` of a depthwise convolution by direct loops."""
    b, h, w, c = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    acc = np.zeros((b, oh, ow, c), dtype=np.int64)
    for n, oy, ox, ch in itertools.product(range(b), range(oh), range(ow), range(c)):
        total = 0
        for i, j in itertools.product(range(kh), range(kw)):
            y, xx = oy * sh + i - ph, ox * sw + j - pw
            value = x[n, y, xx, ch] if 0 <= y < h and 0 <= xx < w else pad_code
            total += int(value) * int(weight[ch, i * kw + j])
        acc[n, oy, ox, ch] = total
    return acc


def depthwise_layer(rng, c, h, w, kernel, stride, padding, output="requant"):
    kh, kw = kernel
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    layer = {"type": "matmul", "name": "dw", "inputs": ["input"], "in_features": kh * kw,
             "out_features": c, "weight_bits": 8, "weight": rng.integers(-128, 128, (c, kh * kw)),
             "act_table": None, "weight_table": None, "sparsity": None,
             "pad_code": int(rng.integers(0, 256)),
             "conv": {"in_channels": c, "in_height": h, "in_width": w, "kernel": list(kernel),
                      "stride": list(stride), "padding": list(padding), "out_height": oh,
                      "out_width": ow, "groups": c}, "output": output}
    if output == "requant":
        multiplier, shift = golden.quantize_multiplier(
            np.exp(rng.uniform(np.log(1e-4), np.log(1e-2), c)))
        layer.update(bias=rng.integers(-50_000, 50_000, c), multiplier=multiplier, shift=shift,
                     zero_point=rng.integers(0, 256, c), relu=rng.integers(0, 2, c))
    else:
        layer["thresholds"] = np.sort(rng.integers(-300_000, 300_000, (c, 15)), axis=1)
    return layer


@pytest.mark.parametrize("kernel,stride,padding", [((3, 3), (1, 1), (1, 1)),
                                                   ((3, 3), (2, 2), (1, 1)),
                                                   ((1, 1), (1, 1), (0, 0)),
                                                   ((3, 2), (2, 1), (2, 0)),
                                                   ((5, 5), (1, 2), (2, 2))])
def test_depthwise_equals_a_direct_loop_convolution(kernel, stride, padding):
    rng = np.random.default_rng(sum(kernel) * 10 + sum(stride))
    c, h, w = 5, 7, 6
    layer = depthwise_layer(rng, c, h, w, kernel, stride, padding)
    x = rng.integers(0, 256, (3, h, w, c))
    x[0] = 255                                              # full magnitude, every channel
    acc = loop_depthwise(x, layer["weight"], kernel, stride, padding, layer["pad_code"])
    relu = layer["relu"].astype(bool)
    want = [[ref_requantize(int(a), int(layer["bias"][ch]), int(layer["multiplier"][ch]),
                            int(layer["shift"][ch]), int(layer["zero_point"][ch]),
                            int(layer["zero_point"][ch]) if relu[ch] else 0, 255)
             for ch, a in enumerate(row)] for row in acc.reshape(-1, c)]
    got = graph_ops.depthwise_conv_layer(x, layer)
    assert got.shape == (3, *acc.shape[1:3], c)
    assert got.reshape(-1, c).tolist() == want
    assert len(np.unique(got)) > 20                       # not all clamped
    # The checker sees a swapped kernel orientation (columns (kw, kh) instead of (kh, kw)).
    if kernel[0] == kernel[1] > 1:
        turned = dict(layer, weight=layer["weight"].reshape(c, *kernel).transpose(0, 2, 1)
                      .reshape(c, -1))
        assert not np.array_equal(graph_ops.depthwise_conv_layer(x, turned), got)


def test_depthwise_thresholds_and_operand_tables():
    rng = np.random.default_rng(7)
    c, h, w = 4, 5, 5
    layer = depthwise_layer(rng, c, h, w, (3, 3), (1, 1), (1, 1), output="threshold")
    layer["act_table"] = rng.integers(0, 256, 256)
    layer["weight_table"] = rng.integers(-128, 128, 256)
    layer["weight"] = rng.integers(-8, 8, (c, 9))
    x = rng.integers(0, 16, (2, h, w, c))
    values = layer["act_table"][x]
    pad_value = layer["act_table"][layer["pad_code"]]
    acc = loop_depthwise(values, layer["weight_table"][layer["weight"] & 0xFF], (3, 3), (1, 1),
                         (1, 1), pad_value)
    want = (layer["thresholds"][None, None, None] <= acc[..., None]).sum(axis=-1)
    assert np.array_equal(graph_ops.depthwise_conv_layer(x, layer), want)


def test_depthwise_of_one_channel_is_the_ordinary_convolution():
    rng = np.random.default_rng(8)
    layer = depthwise_layer(rng, 1, 6, 6, (3, 3), (1, 1), (1, 1))
    x = rng.integers(0, 256, (2, 6, 6, 1))
    ordinary = dict(layer, conv=dict(layer["conv"], groups=1))
    assert np.array_equal(golden.apply_layer(ordinary, [x]),
                          graph_ops.depthwise_conv_layer(x, layer))


# ---- clamp --------------------------------------------------------------------------------

def test_clamp_layer_and_params():
    x = np.arange(256)
    params = graph_ops.clamp_params(0.1, 30, 0.0, 6.0)          # ReLU6 on codes
    assert params == {"low": 30, "high": 90}
    got = graph_ops.clamp_layer(x, params)
    assert got.min() == 30 and got.max() == 90 and np.array_equal(got[30:91], x[30:91])
    # The codes the quantizer gives the bounds, clipped to 0..255; None is no bound.
    assert graph_ops.clamp_params(0.1, 30, -5.0, 30.0) == {"low": 0, "high": 255}
    assert graph_ops.clamp_params(0.1, 30, 0.05, None) == {"low": 31, "high": 255}
    assert graph_ops.clamp_params(0.1, 30, None, -0.05) == {"low": 0, "high": 29}
    with pytest.raises(ValueError, match="low <= high"):
        graph_ops.clamp_params(0.1, 30, 1.0, 0.5)
