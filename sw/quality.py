"""Quality benchmark: power-exponent weight codes against the uniform baseline.

:func:`power_metrics` returns a flat ``{name: float}`` dict (``sparqforge bench power --json``
prints it). Three sections, each seeded and deterministic:

``sqnr`` -- ``power.sqnr_db.<uniform|power>.w<b>``
    Data-free, per-channel weight SQNR ``10 log10(sum w^2 / sum (w - what)^2)`` pooled over
    a synthetic heavy-tailed set (:func:`heavy_tailed_weights`: three ``[256, 256]``
    matrices of Student-t entries, ``df = 3``, with 0.1 % of the entries replaced by
    outliers of 10-20 standard deviations).
``sqnr_data`` -- ``power.sqnr_db_data.<uniform|power>.w<b>``
    Data-driven, per-channel *output* SQNR ``10 log10(||X W^T||^2 / ||X (W - What)^T||^2)``
    of the first matrix of that set, quantized with 1,024 calibration rows and scored on
    1,024 held-out rows of the same input distribution (:func:`correlated_inputs`).
``digits`` -- ``power.digits_acc.float``, ``power.digits_acc.<m>.w<b>``,
    ``power.digits_acc_datafree.<m>.w<b>``
    Test-split accuracy (a fraction in ``[0, 1]``) of :class:`sparqforge.sw.digits.DigitsMLP`
    trained with :func:`sparqforge.sw.digits.train`, in float and fake-quantized with ``b``-bit
    weights and 8-bit uniform activations; weights data-driven on 512 training images, or
    data-free (those images then only set the activation ranges).
"""

__all__ = ["BITS", "METHODS", "SECTIONS", "heavy_tailed_weights", "correlated_inputs",
           "sqnr_db", "power_metrics"]

import time

import numpy as np
import torch

from . import digits
from .quantize import quantize_model, quantize_weight

#: Weight widths the benchmark reports.
BITS = (2, 3, 4, 8)
#: Weight quantization methods compared.
METHODS = ("uniform", "power")
#: Benchmark sections, in the order they run.
SECTIONS = ("sqnr", "sqnr_data", "digits")

_CALIB_ROWS = 1024
_DIGITS_CALIB = 512


def heavy_tailed_weights(seed=0, *, count=3, shape=(256, 256), df=3.0, outlier_fraction=1e-3,
                         outlier_sigmas=(10.0, 20.0)):
    """Synthetic heavy-tailed weight matrices (float32 tensors).

    Entries are Student-t with ``df`` degrees of freedom scaled by 0.02; a fraction
    ``outlier_fraction`` of each matrix (rounded to whole entries) is replaced by
    ``+-k * sigma`` with ``k`` uniform in ``outlier_sigmas`` and ``sigma`` the standard
    deviation of the Student-t entries.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        w = rng.standard_t(df, size=shape)
        sigma = w.std()
        n = int(round(w.size * outlier_fraction))
        where = rng.choice(w.size, n, replace=False)
        w.flat[where] = rng.choice([-1.0, 1.0], n) * rng.uniform(*outlier_sigmas, n) * sigma
        out.append(torch.from_numpy((0.02 * w).astype(np.float32)))
    return out


def correlated_inputs(seed, rows, features):
    """Calibration-style inputs ``[rows, features]`` (float32) with unequal, correlated features.

    Each feature has its own scale (log-normal, ``sigma = 1``) and features are mixed by
    ``I + M / sqrt(features)`` with ``M`` Gaussian; the mixing and the scales depend only on
    ``seed``, the rows on ``(seed, rows)``, so two calls with different ``rows`` share
    the distribution but not the samples.
    """
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.normal(0.0, 1.0, features))
    mix = np.eye(features) + rng.normal(size=(features, features)) / np.sqrt(features)
    samples = np.random.default_rng([seed, rows]).normal(size=(rows, features))
    return torch.from_numpy(((samples * scales) @ mix).astype(np.float32))


def sqnr_db(reference, approx):
    """``10 log10(sum ref^2 / sum (ref - approx)^2)`` in float64 (inf for an exact match)."""
    ref = torch.as_tensor(reference).to(torch.float64)
    err = ref - torch.as_tensor(approx).to(torch.float64)
    noise = float((err ** 2).sum())
    signal = float((ref ** 2).sum())
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


def _sqnr(seed, bits, step):
    weights = heavy_tailed_weights(seed)
    out = {}
    for b in bits:
        for method in METHODS:
            signal = noise = 0.0
            for w in weights:
                what = quantize_weight(w, b, method).dequantize(torch.float64)
                signal += float((w.double() ** 2).sum())
                noise += float(((w.double() - what) ** 2).sum())
            out[f"power.sqnr_db.{method}.w{b}"] = 10.0 * np.log10(signal / noise)
            step(f"sqnr {method} w{b}")
    return out


def _sqnr_data(seed, bits, step):
    w = heavy_tailed_weights(seed)[0]
    x_calib = correlated_inputs(seed, _CALIB_ROWS, w.shape[1])
    x_test = correlated_inputs(seed, _CALIB_ROWS + 1, w.shape[1])
    out = {}
    for b in bits:
        for method in METHODS:
            what = quantize_weight(w, b, method, inputs=x_calib).dequantize(torch.float64)
            xt = x_test.double()
            out[f"power.sqnr_db_data.{method}.w{b}"] = sqnr_db(xt @ w.double().T, xt @ what.T)
            step(f"sqnr_data {method} w{b}")
    return out


def _digits(seed, bits, step):
    x_train, y_train, x_test, y_test = digits.load_digits(seed=seed)
    model = digits.train(digits.make_model("mlp", seed=seed), x_train, y_train, seed=seed)
    out = {"power.digits_acc.float": digits.evaluate(model, x_test, y_test)}
    step("digits train")
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    calib = x_train[order[:_DIGITS_CALIB]]
    for b in bits:
        for method in METHODS:
            for key, data in (("digits_acc", {"calib": calib}),
                              ("digits_acc_datafree", {"act_calib": calib})):
                quantized = quantize_model(model, bits=b, method=method, act_bits=8,
                                           act_method="uniform", **data)
                acc = digits.evaluate(quantized.fake_quant_model(), x_test, y_test)
                out[f"power.{key}.{method}.w{b}"] = acc
                step(f"{key} {method} w{b}")
    return out


def power_metrics(seed=0, progress=None, *, bits=BITS, sections=SECTIONS):
    """Run the power-quantization quality benchmark.

    Parameters
    ----------
    seed : int
        Seeds the synthetic data, the digits split, training and calibration subset.
    progress : callable, optional
        Called with one line of text after each unit of work, with counts and elapsed time:
        ``"power: 6/33 sqnr power w4 (12.3 s)"``.
    bits : sequence of int
        Weight widths (default :data:`BITS`); a subset gives a faster, partial run.
    sections : sequence of str
        Any of :data:`SECTIONS` (default: all).

    Returns
    -------
    dict of str to float
        The keys described in the module docstring, for the chosen bits and sections.

    Raises
    ------
    ValueError
        For an unknown section.

    Notes
    -----
    Runs with one PyTorch intra-op thread (restored afterwards): the tensors are small, and
    on a shared two-core machine a second thread made element-wise kernels far slower.
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"Unknown benchmark section(s) {unknown}; choose from {list(SECTIONS)}")
    bits = tuple(bits)
    per_bits = len(bits) * len(METHODS)
    units = {"sqnr": per_bits, "sqnr_data": per_bits, "digits": 1 + 2 * per_bits}
    total = sum(units[s] for s in sections)
    done = 0
    start = time.perf_counter()

    def step(label):
        nonlocal done
        done += 1
        if progress is not None:
            progress(f"power: {done}/{total} {label} ({time.perf_counter() - start:.1f} s)")

    runners = {"sqnr": _sqnr, "sqnr_data": _sqnr_data, "digits": _digits}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = {}
        for section in SECTIONS:
            if section in sections:
                metrics.update(runners[section](seed, bits, step))
    finally:
        torch.set_num_threads(threads)
    return {key: float(value) for key, value in metrics.items()}
