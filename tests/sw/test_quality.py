"""Power-quantization benchmark: key names, the data it runs on, and the project's bars.

Reduced runs (a subset of bit widths and sections) keep this file well under a minute; the
full ``power_metrics()`` runs the same code for every width.
"""

import numpy as np
import pytest
import torch

from sparqforge.sw.quality import (
    BITS, METHODS, SECTIONS, correlated_inputs, heavy_tailed_weights, power_metrics, sqnr_db,
)


def keys(section, bits):
    prefix = {"sqnr": ["power.sqnr_db"], "sqnr_data": ["power.sqnr_db_data"],
              "digits": ["power.digits_acc", "power.digits_acc_datafree"]}[section]
    out = {f"{p}.{m}.w{b}" for p in prefix for m in METHODS for b in bits}
    return out | ({"power.digits_acc.float"} if section == "digits" else set())


def test_heavy_tailed_set():
    weights = heavy_tailed_weights(0)
    assert len(weights) == 3
    assert all(w.shape == (256, 256) and w.dtype == torch.float32 for w in weights)
    # The first matrix without outliers has the same Student-t draws.
    clean = heavy_tailed_weights(0, count=1, outlier_fraction=0)[0].double()
    w = weights[0].double()
    changed = w != clean
    assert int(changed.sum()) == round(256 * 256 * 1e-3)
    k = w[changed].abs() / (clean / 0.02).std() / 0.02
    assert float(k.min()) >= 10 * (1 - 1e-6) and float(k.max()) <= 20 * (1 + 1e-6)
    again = heavy_tailed_weights(0)
    assert all(torch.equal(a, b) for a, b in zip(weights, again))
    assert not torch.equal(weights[0], heavy_tailed_weights(1)[0])


def test_correlated_inputs_share_distribution_not_samples():
    a, b = correlated_inputs(0, 512, 16), correlated_inputs(0, 513, 16)
    assert a.shape == (512, 16) and not torch.equal(a[:10], b[:10])
    ratio = a.double().std(0) / b.double().std(0)
    assert torch.all((ratio > 0.8) & (ratio < 1.25))


def test_sqnr_db():
    ref = torch.tensor([3.0, 4.0])
    assert sqnr_db(ref, torch.tensor([3.0, 3.0])) == pytest.approx(10 * np.log10(25.0))
    assert sqnr_db(ref, ref) == float("inf")


def test_sqnr_bar_power_beats_uniform_by_1db():
    metrics = power_metrics(bits=(3, 4), sections=("sqnr",))
    assert set(metrics) == keys("sqnr", (3, 4))
    for b in (3, 4):
        gain = metrics[f"power.sqnr_db.power.w{b}"] - metrics[f"power.sqnr_db.uniform.w{b}"]
        assert gain >= 1.0, f"W{b}: power beats uniform by only {gain:.2f} dB"


def test_sqnr_data_driven_w4():
    metrics = power_metrics(bits=(4,), sections=("sqnr_data",))
    assert set(metrics) == keys("sqnr_data", (4,))
    # Data-driven power output SQNR beats data-driven uniform on the heavy-tailed matrix.
    assert metrics["power.sqnr_db_data.power.w4"] > metrics["power.sqnr_db_data.uniform.w4"]


def test_digits_w4_bar_and_progress():
    calls = []
    metrics = power_metrics(bits=(4,), sections=("digits",), progress=calls.append)
    assert set(metrics) == keys("digits", (4,))
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in metrics.values())
    assert metrics["power.digits_acc.float"] > 0.9
    drop = metrics["power.digits_acc.float"] - metrics["power.digits_acc.power.w4"]
    assert drop <= 0.01, f"W4 power data-driven is {100 * drop:.2f} points below float"
    assert [c.split(" ")[1] for c in calls] == [f"{i}/5" for i in range(1, 6)]
    assert calls[0].startswith("power: 1/5 digits train (") and calls[-1].endswith(" s)")


def test_sections_and_defaults():
    assert BITS == (2, 3, 4, 8) and SECTIONS == ("sqnr", "sqnr_data", "digits")
    with pytest.raises(ValueError, match=r"Unknown benchmark section\(s\) \['speed'\]"):
        power_metrics(sections=("speed",))
