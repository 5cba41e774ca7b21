"""One rounding rule, half away from zero, wherever a float becomes an integer code: the NumPy
helper of the golden model, its torch twin in the quantizer, the bundle's input codes and the
exported biases. References use ``decimal`` (exact), never the helper under test.

The corner is ``0.49999999999999994``, the largest float64 below 0.5: ``floor(|x| + 0.5)``
rounds the addition up to 1.0 and returns 1.
"""

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
import torch
from torch import nn

from sparqforge.sw import golden, quantize
from sparqforge.sw.bundle import Bundle
from sparqforge.sw.export import export_model
from sparqforge.sw.golden.numerics import round_half_away
from sparqforge.sw.quantize import quantize_model
from sparqforge.sw.quantize.tables import _round_half_away_t

BELOW_HALF = 0.49999999999999994
CORNERS = [BELOW_HALF, -BELOW_HALF, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5]


def half_away(v):
    """Exact reference: ``decimal`` ROUND_HALF_UP rounds ties away from zero."""
    return int(Decimal(float(v)).to_integral_value(rounding=ROUND_HALF_UP))


def samples():
    rng = np.random.default_rng(0)
    halves = np.arange(-40, 41) + 0.5
    return np.concatenate([
        CORNERS, halves, np.nextafter(halves, 0), np.nextafter(halves, np.inf),
        [0.0, -0.0, 3.0, -7.0, 2.0 ** 52 + 1, -(2.0 ** 52 + 1), 2.0 ** 53, 1e300, -1e300],
        rng.normal(scale=100, size=500), rng.integers(-1000, 1000, size=200) / 4])


def test_the_corner_is_what_it_claims():
    assert BELOW_HALF == np.nextafter(0.5, 0) and BELOW_HALF + 0.5 == 1.0


def test_numpy_helper_matches_decimal():
    x = samples()
    assert round_half_away(x).tolist() == [half_away(v) for v in x]


def test_one_helper_everywhere():
    assert quantize.round_half_away is round_half_away
    assert golden.round_half_away is round_half_away


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_twin_matches_numpy_helper(dtype):
    x = torch.from_numpy(samples()).to(dtype)
    got = _round_half_away_t(x)
    assert got.dtype == dtype
    # Rounding a float32 value in float64 gives the same integer (both are exact), so the
    # NumPy helper on the widened values is the reference.
    want = round_half_away(x.to(torch.float64).numpy())
    assert np.array_equal(got.to(torch.float64).numpy(), want)
    assert _round_half_away_t(torch.tensor([BELOW_HALF], dtype=torch.float64)).item() == 0.0


def test_helpers_agree_with_infinities_and_nan():
    x = np.array([np.inf, -np.inf, np.nan])
    np.testing.assert_array_equal(round_half_away(x), x)
    np.testing.assert_array_equal(_round_half_away_t(torch.from_numpy(x)).numpy(), x)


@pytest.mark.parametrize("scale", [1.0, 0.25, 2.0 ** -8])
def test_bundle_input_codes_round_half_away(scale):
    """``x / scale`` lands exactly on the corners (scales are powers of two)."""
    values = np.array(CORNERS)
    bundle = Bundle(name="t", input={"shape": [len(values)], "scale": scale, "zero_point": 128},
                    output={"scale": 1.0, "zero_point": 0, "classes": 1})
    x = values * scale
    assert np.array_equal(x / scale, values)
    codes = bundle.quantize_input(x[None])
    assert codes.tolist() == [[128 + half_away(v) for v in values]]
    assert codes[0, 0] == 128  # floor(|x| + 0.5) gives 129


def test_bundle_input_codes_clip_after_rounding():
    bundle = Bundle(name="t", input={"shape": [4], "scale": 1.0, "zero_point": 0},
                    output={"scale": 1.0, "zero_point": 0, "classes": 1})
    assert bundle.quantize_input([[-0.5, BELOW_HALF, 254.5, 300.0]]).tolist() == [[0, 0, 255,
                                                                                    255]]


def test_export_bias_rounds_half_away():
    """A float64 layer whose input and weight scales are set to powers of two, so that
    ``bias / (s_in * s_w)`` is exactly each corner; the bundle bias must be its rounding."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, len(CORNERS))).double()
    x = torch.rand(64, 1, 2, 2, dtype=torch.float64)
    qmodel = quantize_model(model, bits=8, method="uniform", act_bits=8, act_calib=x)
    layer = qmodel.layers["1"]
    assert layer.input_quantizer.signed is False and layer.input_quantizer.zero_point == 0
    layer.input_quantizer.scale = 2.0 ** -7
    layer.weight.scale = torch.full((len(CORNERS),), 2.0 ** -5, dtype=torch.float64)
    scale = 2.0 ** -12
    layer.bias = torch.tensor(CORNERS, dtype=torch.float64) * scale
    assert (layer.bias.numpy() / scale).tolist() == CORNERS
    exported = export_model(qmodel, x, name="bias")
    bias = exported.matmul_layers()[0]["bias"]
    assert bias.tolist() == [half_away(v) for v in CORNERS]
    assert bias[0] == 0  # floor(|x| + 0.5) gives 1
