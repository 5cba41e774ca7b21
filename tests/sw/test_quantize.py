"""Weight and activation quantizers: definitions, optimality, numerical safety, whole models.

Every expected value is recomputed here from the definitions in ``docs/quantization.md``
(tables with ``decimal`` rounding, dequantized values, brute-force nearest levels), not taken
from the module under test.
"""

import doctest
import importlib
import math
import pkgutil
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
import torch
from torch import nn

from sparqforge.errors import UnsupportedLayerError
from sparqforge.sw import digits
from sparqforge.sw import quantize as qz
from sparqforge.sw.quantize import datafree, search
from sparqforge.sw.quantize import (
    EXPONENT_RANGE, ActivationQuantizer, FakeQuantLayer, power_act_table, power_table,
    quantize_model, quantize_weight, round_half_away, unfold_inputs,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------
# Independent reference computations
# ------------------------------------------------------------------------------------------

def half_away(v):
    return int(Decimal(v).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def ref_weight_table(bits, a, mac_bits=8):
    """{q: T[q]} for q in [-Q, Q], straight from the definition."""
    q_max, t_max = 2 ** (bits - 1) - 1, 2 ** (mac_bits - 1) - 1
    out = {}
    for q in range(-q_max, q_max + 1):
        mag = half_away(t_max * (abs(q) / q_max) ** (1 / a))
        out[q] = mag if q >= 0 else -mag
    return out


def ref_act_table(bits, a, mac_bits=8):
    c_max, a_max = 2 ** bits - 1, 2 ** mac_bits - 1
    return [half_away(a_max * (c / c_max) ** (1 / a)) for c in range(c_max + 1)]


def ref_power_values(qw):
    """alpha_c * T[q] / T_max for every code of a power QuantizedWeight, float64 [C, K]."""
    table = ref_weight_table(qw.bits, qw.exponent, qw.mac_bits)
    t_max = 2 ** (qw.mac_bits - 1) - 1
    codes = qw.codes.reshape(qw.codes.shape[0], -1).numpy()
    t = np.vectorize(table.__getitem__)(codes).astype(np.float64)
    return channel_scale(qw)[:, None] * t / t_max


def channel_scale(qw):
    s = qw.scale.numpy().astype(np.float64)
    return s if qw.per_channel else np.full(qw.codes.shape[0], float(s))


def ref_levels(qw):
    """All representable values per channel, [C, L]."""
    scale = channel_scale(qw)
    if qw.method == "power":
        table = ref_weight_table(qw.bits, qw.exponent, qw.mac_bits)
        t_max = 2 ** (qw.mac_bits - 1) - 1
        return scale[:, None] * np.array(sorted(table.values()), dtype=np.float64)[None] / t_max
    if qw.symmetric:
        q_max = 2 ** (qw.bits - 1) - 1
        return scale[:, None] * np.arange(-q_max, q_max + 1)[None]
    zp = qw.zero_point.numpy() if qw.per_channel else np.full(len(scale), int(qw.zero_point))
    return scale[:, None] * (np.arange(2 ** qw.bits)[None] - zp[:, None])


def assert_nearest(w2, values, levels):
    """Every value is a nearest representable level of its weight (brute force)."""
    best = np.abs(w2[:, :, None] - levels[:, None, :]).min(axis=2)
    got = np.abs(w2 - values)
    assert np.all(got <= best * (1 + 1e-12) + 1e-300), "a weight is not at its nearest level"


def heavy(seed, shape=(24, 40), outliers=3):
    rng = np.random.default_rng(seed)
    w = 0.05 * rng.standard_t(3, size=shape)
    idx = rng.choice(w.size, outliers, replace=False)
    w.flat[idx] = rng.choice([-1, 1], outliers) * 15 * w.std()
    return torch.from_numpy(w.astype(np.float32))


def output_error(x, w, what):
    x, w, what = (torch.as_tensor(t).to(torch.float64).reshape(len(t), -1) for t in (x, w, what))
    return float(((x @ w.T - x @ what.T) ** 2).sum())


# ------------------------------------------------------------------------------------------
# Rounding and tables
# ------------------------------------------------------------------------------------------

def test_doctests():
    """Every module of the package; a run that attempts no example fails (the tables carry
    two, and testmod on the package alone would find none since the split)."""
    attempted = {}
    for info in pkgutil.iter_modules(qz.__path__, qz.__name__ + "."):
        result = doctest.testmod(importlib.import_module(info.name))
        assert result.failed == 0, info.name
        attempted[info.name] = result.attempted
    assert attempted[qz.__name__ + ".tables"] >= 2
    assert sum(attempted.values()) > 0


def test_package_exports_the_public_names():
    assert set(qz.__all__) == {
        "EXPONENT_RANGE", "round_half_away", "power_table", "power_act_table",
        "QuantizedWeight", "quantize_weight", "unfold_inputs", "ActivationQuantizer",
        "FakeQuantLayer", "QuantizedLayer", "QuantizedModel", "quantize_model"}
    for name in qz.__all__:
        assert getattr(qz, name) is not None


def test_round_half_away():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.49999999999999994, -2.4999999, 3.0, 0.0])
    assert round_half_away(x).tolist() == [half_away(v) for v in x]


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("a", [1e-6, 0.05, 0.3, 0.5, 1 - 1e-12, 1.0, 1.7, 4.0, 1e6])
def test_power_table_matches_definition(bits, a):
    for mac_bits in sorted({bits, 8}):
        table = power_table(bits, a, mac_bits)
        ref = ref_weight_table(bits, a, mac_bits)
        assert table.dtype == np.int64 and table.shape == (2 ** bits,)
        for q, t in ref.items():
            assert table[q & (2 ** bits - 1)] == t
        assert table[2 ** (bits - 1)] == 0  # pattern of -2**(b-1): never produced
        q_max = 2 ** (bits - 1) - 1
        assert table[q_max] == 2 ** (mac_bits - 1) - 1


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("a", [1e-6, 0.4, 1.0, 2.5])
def test_power_act_table_matches_definition(bits, a):
    table = power_act_table(bits, a)
    assert table.dtype == np.int64 and table.tolist() == ref_act_table(bits, a)


@pytest.mark.parametrize("exponent", [0, -1.0, float("nan"), float("inf"), "x", None])
def test_bad_exponent(exponent):
    with pytest.raises(ValueError, match="Power exponent must be a finite number > 0"):
        power_table(4, exponent)


def test_table_width_errors():
    with pytest.raises(TypeError, match="Weight width must be an integer in 2..8, not 9"):
        power_table(9, 0.5)
    with pytest.raises(ValueError, match="MAC operand width must be at least the weight width"):
        power_table(6, 0.5, mac_bits=4)


# ------------------------------------------------------------------------------------------
# Weights: definitions and optimality
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("per_channel", [True, False])
def test_power_weight_definition_and_nearest(bits, per_channel):
    w = heavy(bits)
    qw = quantize_weight(w, bits, "power", per_channel)
    q_max = 2 ** (bits - 1) - 1
    assert qw.codes.dtype == torch.int64 and qw.codes.shape == w.shape
    assert int(qw.codes.min()) >= -q_max and int(qw.codes.max()) <= q_max
    assert np.array_equal(qw.table, power_table(bits, qw.exponent, 8))
    assert EXPONENT_RANGE[0] <= qw.exponent <= EXPONENT_RANGE[1]
    values = qw.dequantize(torch.float64).numpy()
    np.testing.assert_allclose(values, ref_power_values(qw), rtol=1e-15, atol=0)
    assert qw.dequantize().dtype == torch.float32
    assert_nearest(w.double().numpy(), values, ref_levels(qw))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_uniform_weight_definition_and_nearest(bits, symmetric, per_channel):
    w = heavy(10 + bits)
    qw = quantize_weight(w, bits, "uniform", per_channel, symmetric)
    assert qw.table is None and qw.exponent is None
    codes = qw.codes.numpy()
    lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    assert codes.min() >= lo and codes.max() <= hi
    scale = channel_scale(qw)[:, None]
    if symmetric:
        assert qw.zero_point == 0
        expected = scale * codes
    else:
        zp = qw.zero_point.numpy() if per_channel else np.full(len(scale), int(qw.zero_point))
        assert np.all((0 <= zp) & (zp <= 2 ** bits - 1))
        expected = scale * (codes - zp[:, None])
    values = qw.dequantize(torch.float64).numpy()
    np.testing.assert_allclose(values, expected, rtol=1e-15, atol=0)
    assert_nearest(w.double().numpy(), values, ref_levels(qw))


def test_nearest_checker_catches_a_perturbed_code():
    w = heavy(0)
    qw = quantize_weight(w, 4, "power")
    values = qw.dequantize(torch.float64).numpy()
    levels = ref_levels(qw)
    row, col = 3, 7
    others = levels[row][np.abs(levels[row] - values[row, col]) > 0]
    values[row, col] = others[np.argmin(np.abs(others - values[row, col]))]
    with pytest.raises(AssertionError, match="nearest level"):
        assert_nearest(w.double().numpy(), values, levels)


def max_scaled(w, bits, symmetric):
    """Plain max scaling (no clipping search), per channel."""
    if symmetric:
        q_max = 2 ** (bits - 1) - 1
        s = np.abs(w).max(axis=1, keepdims=True) / q_max
        return s * np.clip(round_half_away(w / s), -q_max, q_max)
    c_max = 2 ** bits - 1
    lo = np.minimum(w.min(axis=1, keepdims=True), 0)
    hi = np.maximum(w.max(axis=1, keepdims=True), 0)
    s = (hi - lo) / c_max
    zp = np.clip(round_half_away(-lo / s), 0, c_max)
    return s * (np.clip(round_half_away(w / s) + zp, 0, c_max) - zp)


@pytest.mark.parametrize("symmetric", [True, False])
def test_uniform_mse_clipping_beats_max_scaling(symmetric):
    w = 0.05 * np.random.default_rng(5).standard_t(3, size=(32, 128))
    qw = quantize_weight(w, 3, "uniform", symmetric=symmetric)
    ours = float(((w - qw.dequantize(torch.float64).numpy()) ** 2).sum())
    assert ours < 0.85 * float(((w - max_scaled(w, 3, symmetric)) ** 2).sum())


def test_uniform_clipping_is_near_brute_force_optimum():
    w = 0.05 * np.random.default_rng(6).standard_t(3, size=(16, 128))
    qw = quantize_weight(w, 3, "uniform")
    ours = ((w - qw.dequantize(torch.float64).numpy()) ** 2).sum(axis=1)
    top = np.abs(w).max(axis=1, keepdims=True)
    best = np.full(len(w), np.inf)
    for r in np.linspace(0.02, 1.0, 2000):
        s = top * r / 3
        err = ((w - s * np.clip(round_half_away(w / s), -3, 3)) ** 2).sum(axis=1)
        best = np.minimum(best, err)
    assert np.all(ours <= best * 1.01)


def test_power_beats_uniform_on_heavy_tails():
    w = heavy(7, shape=(64, 128), outliers=8)
    errs = {m: float(((w - quantize_weight(w, 4, m).dequantize()) ** 2).sum())
            for m in ("uniform", "power")}
    assert errs["power"] < errs["uniform"]


def test_power_per_tensor_and_per_channel_shapes():
    w = heavy(1, shape=(6, 3, 3, 3))
    pc = quantize_weight(w, 4, "power", per_channel=True)
    pt = quantize_weight(w, 4, "power", per_channel=False)
    assert pc.scale.shape == (6,) and pt.scale.shape == ()
    assert pc.codes.shape == pt.codes.shape == w.shape
    assert pc.zero_point == 0 and pt.zero_point == 0
    ua = quantize_weight(w, 4, "uniform", per_channel=True, symmetric=False)
    assert ua.zero_point.shape == (6,) and ua.zero_point.dtype == torch.int64
    ut = quantize_weight(w, 4, "uniform", per_channel=False, symmetric=False)
    assert ut.zero_point.shape == () and ut.scale.shape == ()
    # Per channel can only do better: each channel's search includes the per-tensor choice.
    err = {k: float(((w - q.dequantize()) ** 2).sum()) for k, q in (("pc", pc), ("pt", pt))}
    assert err["pc"] <= err["pt"]


def test_numpy_input_and_fixed_exponent():
    w = heavy(2).numpy()
    qw = quantize_weight(w, 3, "power", exponent=0.5)
    assert qw.exponent == 0.5
    assert np.array_equal(qw.table, [0, 14, 56, 127, 0, -127, -56, -14])
    assert_nearest(w.astype(np.float64), qw.dequantize(torch.float64).numpy(), ref_levels(qw))


# ------------------------------------------------------------------------------------------
# Weights: data-driven
# ------------------------------------------------------------------------------------------

def correlated(seed, n, k):
    rng = np.random.default_rng(seed)
    mix = np.eye(k) + rng.normal(size=(k, k)) / np.sqrt(k)
    return torch.from_numpy((rng.normal(size=(n, k)) * np.exp(rng.normal(size=k))) @ mix)


@pytest.mark.parametrize("method", ["power", "uniform"])
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("per_channel", [True, False])
def test_data_driven_beats_data_free_on_output(method, bits, per_channel):
    w = heavy(20 + bits, shape=(32, 48))
    x = correlated(bits, 256, 48)
    free = quantize_weight(w, bits, method, per_channel)
    driven = quantize_weight(w, bits, method, per_channel, inputs=x)
    assert driven.data_driven and not free.data_driven
    e_free = output_error(x, w, free.dequantize(torch.float64))
    e_driven = output_error(x, w, driven.dequantize(torch.float64))
    assert e_driven <= e_free * (1 + 1e-9)
    assert e_driven < 0.8 * e_free  # and clearly better on correlated inputs
    if method == "power":
        np.testing.assert_allclose(driven.dequantize(torch.float64).numpy(),
                                   ref_power_values(driven), rtol=1e-15, atol=0)
        q_max = 2 ** (bits - 1) - 1
        assert int(driven.codes.abs().max()) <= q_max


def test_data_driven_moves_codes_beyond_neighbours():
    """Codes are learned over the whole grid, not only rounded up or down."""
    w = heavy(3, shape=(32, 64))
    x = correlated(3, 512, 64)
    free = quantize_weight(w, 4, "power", exponent=0.5)
    driven = quantize_weight(w, 4, "power", exponent=0.5, inputs=x, steps=0)
    assert driven.exponent == 0.5
    assert torch.equal(driven.scale, free.scale)
    assert int((driven.codes - free.codes).abs().max()) >= 2


def test_data_driven_learns_exponent():
    w = heavy(4, shape=(32, 64))
    x = correlated(4, 512, 64)
    free = quantize_weight(w, 4, "power")
    driven = quantize_weight(w, 4, "power", inputs=x)
    assert driven.exponent != free.exponent
    assert EXPONENT_RANGE[0] <= driven.exponent <= EXPONENT_RANGE[1]


def test_bad_inputs_shape():
    with pytest.raises(ValueError, match=r"Calibration inputs must be \[N, 40\]"):
        quantize_weight(heavy(0), 4, inputs=torch.zeros(5, 39))


# ------------------------------------------------------------------------------------------
# Numerical safety
# ------------------------------------------------------------------------------------------

def assert_finite(qw):
    assert torch.isfinite(qw.scale).all() and bool((qw.scale > 0).all())
    assert torch.isfinite(qw.dequantize(torch.float64)).all()
    if qw.exponent is not None:
        assert math.isfinite(qw.exponent) and qw.exponent > 0


def corner_weights():
    rng = np.random.default_rng(0)
    base = rng.standard_t(3, size=(8, 16))
    zero_channel = base.copy()
    zero_channel[2] = 0
    outliers = base.copy()
    outliers[0, 0], outliers[5, 3] = 1e6, -3e7
    return {
        "all_zero": np.zeros((4, 16)),
        "zero_channel": zero_channel,
        "constant": np.full((4, 16), 0.3),
        "constant_negative_channel": np.where(np.arange(4)[:, None] == 1, -2.0, 0.5)
        * np.ones((4, 16)),
        "huge_outliers": outliers,
        "huge_scale": base * 1e30,
        "tiny_scale": base * 1e-30,
        "one_nonzero": np.eye(1, 16 * 4).reshape(4, 16) * 5.0,
    }


@pytest.mark.parametrize("case", sorted(corner_weights()))
@pytest.mark.parametrize("method,symmetric", [("power", True), ("uniform", True),
                                              ("uniform", False)])
@pytest.mark.parametrize("data", [False, True])
def test_corner_cases_stay_finite(case, method, symmetric, data):
    w = torch.from_numpy(corner_weights()[case])
    x = correlated(1, 64, 16) if data else None
    if case == "huge_scale" and data:
        x = x * 1e-100  # keep X W^T representable; the Gram matrix is still tiny
    for per_channel in (True, False):
        qw = quantize_weight(w, 4, method, per_channel, symmetric, inputs=x, steps=20)
        assert_finite(qw)
        values = qw.dequantize(torch.float64).numpy()
        if case in ("all_zero", "zero_channel"):
            rows = slice(None) if case == "all_zero" else 2
            assert np.all(values[rows] == 0)
            if per_channel and method == "power":
                assert np.all(qw.scale.numpy()[rows] == 1.0)
        if case.startswith("constant") and not data and per_channel:
            np.testing.assert_allclose(values, w.numpy(), rtol=1e-12)
        if not data:
            assert_nearest(w.numpy(), values, ref_levels(qw))


@pytest.mark.parametrize("exponent", [1e-6, EXPONENT_RANGE[0], 1 - 1e-9, 1.0, 1 + 1e-9, 1e6])
@pytest.mark.parametrize("data", [False, True])
def test_forced_exponents_stay_finite(exponent, data):
    w = torch.from_numpy(corner_weights()["zero_channel"])
    x = correlated(2, 64, 16) if data else None
    qw = quantize_weight(w, 4, "power", inputs=x, exponent=exponent, steps=20)
    assert qw.exponent == exponent
    assert_finite(qw)
    if not data:
        assert_nearest(w.numpy(), qw.dequantize(torch.float64).numpy(), ref_levels(qw))


@pytest.mark.parametrize("theta", [-1e4, -60.0, -5.0, 0.0, 5.0, 60.0, 1e4])
@pytest.mark.parametrize("bits", [3, 8])
def test_exponent_reparametrisation_gradients_are_finite(theta, bits):
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    a = float(search._exponent_from_theta(th.detach()))
    assert EXPONENT_RANGE[0] * (1 - 1e-12) <= a <= EXPONENT_RANGE[1] * (1 + 1e-12)
    q_max = 2 ** (bits - 1) - 1
    codes = torch.arange(-q_max, q_max + 1)
    levels = search._power_levels_t(codes, th, bits, 8)
    # The forward value is the integer table exactly.
    table = power_table(bits, a, 8)
    assert torch.equal(levels * 127, torch.from_numpy(table[codes.numpy() & (2 ** bits - 1)])
                       .to(torch.float64))
    (levels * torch.linspace(-3, 3, len(codes), dtype=torch.float64)).sum().backward()
    assert torch.isfinite(th.grad)


@pytest.mark.parametrize("start", [EXPONENT_RANGE[0], 1 - 1e-9, 1.0, EXPONENT_RANGE[1]])
def test_refinement_from_extreme_exponents_is_finite(start):
    w2 = corner_weights()["huge_outliers"].copy()
    w2[2] = 0
    x = correlated(3, 64, 16).numpy()
    problem = search._Problem(w2, x.T @ x / len(x), method="power", bits=4, mac_bits=8,
                          symmetric=True, per_channel=True)
    alpha = np.abs(w2).max(axis=1)
    alpha[alpha == 0] = 1.0
    codes = datafree._power_codes(w2, alpha, 4, start, 8)
    sol = (codes, alpha, np.zeros(8, dtype=np.int64), start)
    refined = search._refine_ste(problem, sol, learn_exponent=True, steps=30)
    assert np.all(np.isfinite(refined[1])) and math.isfinite(refined[3])
    assert problem.cost(refined) <= problem.cost(sol)


def test_refinement_guard_catches_a_non_finite_gradient(monkeypatch):
    """The finiteness check inside the optimiser works (so the tests above mean something)."""
    original = search._power_levels_t

    def poisoned(codes, theta, bits, mac_bits):
        return original(codes, theta, bits, mac_bits) + 0 * torch.sqrt(theta - 1e9)

    monkeypatch.setattr(search, "_power_levels_t", poisoned)
    w2 = np.random.default_rng(0).normal(size=(4, 8))
    problem = search._Problem(w2, np.eye(8), method="power", bits=4, mac_bits=8, symmetric=True,
                          per_channel=True)
    codes, alpha, a = datafree._power_datafree(w2, 4, 8, None, True)
    with pytest.raises(FloatingPointError, match="Non-finite"):
        search._refine_ste(problem, (codes, alpha, np.zeros(4, dtype=np.int64), a),
                       learn_exponent=True, steps=3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_rejected(bad):
    w = torch.ones(3, 4)
    w[1, 2] = bad
    with pytest.raises(ValueError, match="Weight contains NaN or inf"):
        quantize_weight(w, 4)


def test_weight_argument_errors():
    w = torch.ones(3, 4)
    with pytest.raises(TypeError, match="Weight width must be an integer in 2..8, not 1"):
        quantize_weight(w, 1)
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_weight(w, 4, "log")
    with pytest.raises(ValueError, match="Power codes are always symmetric"):
        quantize_weight(w, 4, "power", symmetric=False)
    with pytest.raises(ValueError, match=r"output channels on dim 0, not shape \(4,\)"):
        quantize_weight(torch.ones(4), 4)
    with pytest.raises(TypeError, match="torch tensor or NumPy array, not list"):
        quantize_weight([[1.0]], 4)


# ------------------------------------------------------------------------------------------
# Activations
# ------------------------------------------------------------------------------------------

def relu_data(seed, n=4000):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_t(3, size=n), 0)
    x[:3] = [40.0, 55.0, 0.0]
    return torch.from_numpy(x)


def test_uniform_activation_unsigned_after_relu():
    x = relu_data(0)
    aq = ActivationQuantizer(8).calibrate(x)
    assert aq.signed is False and aq.zero_point == 0 and (aq.qmin, aq.qmax) == (0, 255)
    codes = aq.quantize(x)
    assert codes.dtype == torch.int64 and codes.min() >= 0 and codes.max() <= 255
    values = aq.dequantize(codes, torch.float64)
    np.testing.assert_allclose(values.numpy(), aq.scale * codes.numpy(), rtol=1e-15)
    levels = aq.scale * np.arange(256, dtype=np.float64)
    assert_nearest(x.numpy()[None], values.numpy()[None], levels[None])
    assert torch.equal(aq.fake_quant(x), values)


def test_activation_mse_clipping_beats_max():
    x = relu_data(1)
    err = {}
    for clip in ("mse", "max", "percentile"):
        aq = ActivationQuantizer(4, clipping=clip, percentile=99.0).calibrate(x)
        err[clip] = float(((x - aq.fake_quant(x)) ** 2).sum())
    assert err["mse"] < 0.8 * err["max"]
    assert err["mse"] <= err["percentile"]
    aq = ActivationQuantizer(4, clipping="percentile", percentile=99.0).calibrate(x)
    assert aq.scale == pytest.approx(np.percentile(x.numpy(), 99.0) / 15, rel=1e-12)
    aq = ActivationQuantizer(4, clipping="max").calibrate(x)
    assert aq.scale == pytest.approx(55.0 / 15, rel=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
def test_uniform_activation_signed(symmetric):
    x = torch.from_numpy(np.random.default_rng(2).normal(0.5, 1.0, 3000))
    aq = ActivationQuantizer(6, symmetric=symmetric).calibrate(x)
    assert aq.signed is True and (aq.qmin, aq.qmax) == (-32, 31)
    assert (aq.zero_point == 0) == symmetric
    codes = aq.quantize(x)
    assert codes.min() >= -32 and codes.max() <= 31
    levels = aq.scale * (np.arange(-32, 32) - aq.zero_point)
    values = aq.dequantize(codes, torch.float64).numpy()
    np.testing.assert_allclose(values, aq.scale * (codes.numpy() - aq.zero_point), rtol=1e-15)
    inside = (x.numpy() >= levels[0]) & (x.numpy() <= levels[-1])
    assert_nearest(x.numpy()[None, inside], values[None, inside], levels[None])


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_power_activation_definition(bits):
    x = relu_data(3)
    aq = ActivationQuantizer(bits, "power").calibrate(x)
    assert aq.signed is False and aq.zero_point == 0
    assert aq.table.tolist() == ref_act_table(bits, aq.exponent)
    codes = aq.quantize(x)
    assert codes.min() >= 0 and codes.max() <= 2 ** bits - 1
    values = aq.dequantize(codes, torch.float64).numpy()
    expected = aq.scale * np.array(ref_act_table(bits, aq.exponent))[codes.numpy()] / 255
    np.testing.assert_allclose(values, expected, rtol=1e-15)
    levels = aq.scale * np.array(ref_act_table(bits, aq.exponent), dtype=np.float64) / 255
    assert_nearest(x.numpy()[None], values[None], levels[None])
    if bits <= 4:
        uniform = ActivationQuantizer(bits).calibrate(x)
        err = {k: float(((x - q.fake_quant(x)) ** 2).sum()) for k, q in
               (("power", aq), ("uniform", uniform))}
        assert err["power"] < err["uniform"]


def test_power_activation_rejects_negative_data():
    x = torch.tensor([-0.3, 0.2, 1.0])
    with pytest.raises(ValueError, match=r"negative values \(min -0.3\)"):
        ActivationQuantizer(4, "power").calibrate(x)
    aq = ActivationQuantizer(4, "power", signed=False).calibrate(x)
    assert int(aq.quantize(torch.tensor([-5.0]))) == 0
    with pytest.raises(ValueError, match="Power activation codes are unsigned"):
        ActivationQuantizer(4, "power", signed=True)


@pytest.mark.parametrize("method", ["uniform", "power"])
def test_activation_corner_cases(method):
    for data in (torch.zeros(100), torch.full((50,), 3.0), torch.tensor([0.0, 1e30]),
                 torch.tensor([1e-30, 2e-30])):
        aq = ActivationQuantizer(4, method).calibrate(data)
        assert math.isfinite(aq.scale) and aq.scale > 0
        out = aq.fake_quant(data.double())
        assert torch.isfinite(out).all()
    aq = ActivationQuantizer(4, method).calibrate(torch.full((50,), 3.0))
    assert torch.allclose(aq.fake_quant(torch.full((5,), 3.0)), torch.full((5,), 3.0))
    with pytest.raises(RuntimeError, match="not calibrated"):
        ActivationQuantizer(4, method).quantize(torch.ones(2))
    with pytest.raises(ValueError, match="NaN or inf"):
        ActivationQuantizer(4, method).calibrate(torch.tensor([1.0, float("nan")]))


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------

def test_unfold_inputs_matches_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)).double()
    x = torch.randn(4, 3, 9, 8, dtype=torch.float64)
    y = conv(x)
    rows = unfold_inputs(conv, x)
    y2 = rows @ conv.weight.reshape(5, -1).T + conv.bias
    assert torch.allclose(y2, y.permute(0, 2, 3, 1).reshape(-1, 5))


def test_unfold_inputs_valid_padding_is_zero_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    valid = nn.Conv2d(3, 4, 3, padding="valid").double()
    zero = nn.Conv2d(3, 4, 3, padding=0).double()
    assert torch.equal(unfold_inputs(valid, x), unfold_inputs(zero, x))


@pytest.mark.parametrize("layer,message", [
    (nn.Conv2d(4, 4, 3, groups=2), r"Cannot unfold inputs of a Conv2d with groups=2; only "
                                   r"groups=1 convolutions"),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"),
     r"Cannot unfold inputs of a Conv2d with padding_mode='circular'; F.unfold pads with "
     r"zeros: use padding_mode='zeros'"),
    (nn.Conv2d(4, 4, 3, padding="same"),
     r"Cannot unfold inputs of a Conv2d with padding='same'; give the padding as integers"),
    (nn.ReLU(), r"Cannot unfold inputs of ReLU; only Linear and Conv2d layers have quantizable "
                r"weights"),
])
def test_unfold_inputs_refusals(layer, message):
    with pytest.raises(UnsupportedLayerError, match=message):
        unfold_inputs(layer, torch.zeros(1, 4, 6, 6))


def test_conv_weight_data_driven():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, padding=1).double()
    x = torch.relu(torch.randn(8, 4, 6, 6, dtype=torch.float64))
    rows = unfold_inputs(conv, x)
    free = quantize_weight(conv.weight, 3, "power")
    driven = quantize_weight(conv.weight, 3, "power", inputs=rows)
    assert driven.codes.shape == conv.weight.shape and driven.scale.shape == (6,)
    w = conv.weight.detach()
    assert output_error(rows, w, driven.dequantize()) <= output_error(rows, w, free.dequantize())


def mlp():
    torch.manual_seed(0)
    return digits.make_model("mlp")


def test_model_fake_quant_matches_manual_pipeline():
    model = mlp()
    x = torch.rand(64, 1, 8, 8)
    qm = quantize_model(model, bits=4, method="power", calib=x)
    assert list(qm.layers) == ["1", "3", "5"]
    # Recompute layer by layer from the stored quantizers and weights.
    h = x.flatten(1)
    for name, relu in (("1", True), ("3", True), ("5", False)):
        layer = qm.layers[name]
        assert layer.weight.data_driven and layer.input_quantizer.signed is False
        h = layer.input_quantizer.fake_quant(h) @ layer.weight.dequantize().T + layer.bias
        h = torch.relu(h) if relu else h
    fq = qm.fake_quant_model()
    assert isinstance(fq[1], FakeQuantLayer)
    assert torch.allclose(fq(x), h, atol=1e-5)
    # The original model is untouched.
    assert not isinstance(model[1], FakeQuantLayer)


def test_model_uses_quantized_upstream_activations():
    model = mlp()
    x = torch.rand(64, 1, 8, 8)
    qm = quantize_model(model, bits=3, method="uniform", act_bits=6, calib=x)
    first = qm.layers["1"]
    upstream = torch.relu(first.fake_quant_layer()(x.flatten(1)))
    expected = ActivationQuantizer(6).calibrate(upstream)
    assert qm.layers["3"].input_quantizer.scale == pytest.approx(expected.scale, rel=1e-12)
    float_upstream = torch.relu(model[1](x.flatten(1)))
    assert ActivationQuantizer(6).calibrate(float_upstream).scale != expected.scale


def test_model_data_free_and_activation_options():
    model = mlp()
    x = torch.rand(64, 1, 8, 8)
    qm = quantize_model(model, bits=4, act_calib=x)
    assert not any(layer.weight.data_driven for layer in qm.layers.values())
    free = quantize_weight(model[3].weight, 4, "power")
    assert torch.equal(qm.layers["3"].weight.codes, free.codes)
    qp = quantize_model(model, bits=4, act_method="power", act_bits=4, act_calib=x)
    assert all(layer.input_quantizer.method == "power" for layer in qp.layers.values())
    qn = quantize_model(model, bits=4, act_bits=None)
    assert all(layer.input_quantizer is None for layer in qn.layers.values())
    y = qn.fake_quant_model()(x)
    assert torch.isfinite(y).all()
    with pytest.raises(ValueError, match="Activation quantization needs calibration inputs"):
        quantize_model(model, bits=4)
    with pytest.raises(ValueError, match="not both"):
        quantize_model(model, bits=4, calib=x, act_calib=x)


def test_cnn_model_conv_support():
    model = digits.make_model("cnn")
    x = torch.rand(32, 1, 8, 8)
    qm = quantize_model(model, bits=4, method="power", calib=x, per_channel=False)
    assert list(qm.layers) == ["0", "3", "7"]
    assert qm.layers["3"].weight.codes.shape == (16, 8, 3, 3)
    assert qm.layers["3"].weight.scale.shape == ()
    fq = qm.fake_quant_model()
    with torch.no_grad():
        y, ref = fq(x), model(x)
    assert y.shape == ref.shape and torch.isfinite(y).all()
    assert torch.allclose(fq[3].layer.weight, qm.layers["3"].weight.dequantize())


@pytest.mark.parametrize("layer,name", [(nn.Sigmoid(), "Sigmoid"), (nn.BatchNorm1d(4),
                                                                       "BatchNorm1d")])
def test_unsupported_layer(layer, name):
    model = nn.Sequential(nn.Linear(4, 4), layer, nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=rf"Layer '1' \({name}\) is not supported"):
        quantize_model(model, bits=4, act_bits=None)
    assert issubclass(UnsupportedLayerError, TypeError)


def test_unsupported_models_and_convs():
    with pytest.raises(TypeError, match="needs an nn.Sequential, not Linear"):
        quantize_model(nn.Linear(4, 4), act_bits=None)
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError, match=r"Layer '0' \(Conv2d\) has groups=2"):
        quantize_model(grouped, act_bits=None)
