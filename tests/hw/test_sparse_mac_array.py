"""SparseMacArray in Amaranth's simulator: N:M patterns x widths, sparse and dense mode on
one instance, against two independent golden paths, with random stalls."""

import itertools

import numpy as np
import pytest

from sparqforge.hw.emit import description
from sparqforge.hw.sparse_mac_array import SparseMacArray
from sparqforge.sim.check import compare
from sparqforge.sim.mac_array.schedule import (chain, random_layer, random_nm_weights,
                                               sparse_dense_schedule, sparse_schedule)
from sparqforge.sim.run import run_schedule
from sparqforge.sw import golden, nm_format

PATTERNS = [(1, 2), (2, 4), (1, 4), (2, 8), (4, 8)]
WIDTHS = (2, 3, 4, 8)


def types_of(array):
    return dict(a_bits=array.a_bits, a_signed=array.a_signed, w_bits=array.w_bits,
                w_signed=array.w_signed, out_bits=array.out_bits, out_signed=array.out_signed)


def sparse_case(rng, array, *, m_dim, k_dim, n_dim):
    w = random_nm_weights(rng, k=k_dim, n_out=n_dim, n=array.n, m=array.m, w_bits=array.w_bits,
                          w_signed=array.w_signed)
    a, _, requant = random_layer(rng, m=m_dim, k=k_dim, n=n_dim, w=w, **types_of(array))
    values, indices = nm_format.compress(w.T, array.n, array.m)
    return a, w, values, indices, requant


def expect(array, a, values, indices, requant):
    return golden.sparse_mac_array(a, values, indices, n=array.n, m=array.m, **requant,
                                   out_bits=array.out_bits, out_signed=array.out_signed,
                                   acc_bits=array.acc_bits)


def _mixed_modes(n, m, a_bits, w_bits, product_stages=1):
    seed = n * 1000 + m * 100 + a_bits * 10 + w_bits
    rng = np.random.default_rng(seed)
    signs = rng.integers(0, 2, 2).astype(bool)
    array = SparseMacArray(n=n, m=m, rows=2, cols=3, a_bits=a_bits, w_bits=w_bits,
                           a_signed=bool(signs[0]), w_signed=bool(signs[1]), max_depth=24,
                           groups=4, product_stages=product_stages)
    a, w, values, indices, requant = sparse_case(rng, array, m_dim=3, k_dim=2 * m + 1, n_dim=4)
    a2, w2, requant2 = random_layer(rng, m=3, k=5, n=4, **types_of(array))
    schedule = chain(
        sparse_schedule(2, 3, n, m, a, values, indices, requant),
        sparse_dense_schedule(2, 3, n, m, a2, w2, requant2, filler=rng, tag_offset=2),
    )
    (got_sparse, got_dense), _ = run_schedule(schedule, description(array, "sparse"),
                                             dut=array, seed=seed)
    assert not (r := compare(expect(array, a, values, indices, requant), got_sparse)), r
    want_dense = golden.mac_array(a2, w2, **requant2, out_bits=array.out_bits,
                                  out_signed=array.out_signed, acc_bits=array.acc_bits)
    assert not (r := compare(want_dense, got_dense)), r


@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("a_bits,w_bits", list(itertools.product(WIDTHS, WIDTHS)))
def test_sparse_and_dense_mode_mixed_on_one_instance(n, m, a_bits, w_bits):
    _mixed_modes(n, m, a_bits, w_bits)


@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("a_bits,w_bits", [(8, 8), (3, 2)])
@pytest.mark.parametrize("product_stages", [2, 3])
def test_split_products(n, m, a_bits, w_bits, product_stages):
    # Half- or quarter-width partial products of every kept weight, summed in registered
    # stages.
    _mixed_modes(n, m, a_bits, w_bits, product_stages=product_stages)


def test_golden_sparse_path_agrees_with_dense_matmul_on_decompressed_weights():
    rng = np.random.default_rng(11)
    for n, m in PATTERNS:
        w = random_nm_weights(rng, k=37, n_out=9, n=n, m=m, w_bits=8, w_signed=True)
        a = rng.integers(-128, 128, (5, 37))
        values, indices = nm_format.compress(w.T, n, m)
        dense = nm_format.decompress(values, indices, n, m, in_features=37).T
        assert np.array_equal(dense, w)
        assert np.array_equal(golden.sparse_matmul(a, values, indices, n=n, m=m),
                              golden.matmul(a, dense))


def test_full_depth_maximum_magnitude_and_all_zero_groups():
    array = SparseMacArray(n=2, m=4, rows=2, cols=2, a_bits=8, w_bits=8, max_depth=16,
                           groups=2)
    rng = np.random.default_rng(3)
    k = 32  # 8 groups of 2 kept products each: exactly max_depth products
    w = np.zeros((k, 3), dtype=np.int64)
    w[0::4, 0], w[1::4, 0] = -128, -128      # channel 0: most negative x most negative
    w[2::4, 1], w[3::4, 1] = 127, -128       # channel 1: mixed extremes
    a = np.full((3, k), -128)                # channel 2 stays all zero
    _, _, requant = random_layer(rng, m=3, k=k, n=3, a=a, w=w, **types_of(array))
    values, indices = nm_format.compress(w.T, 2, 4)
    got, _ = run_schedule(sparse_schedule(2, 2, 2, 4, a, values, indices, requant),
                          description(array, "sparse"), dut=array)
    assert not (r := compare(expect(array, a, values, indices, requant), got)), r


def test_sparse_mode_cuts_beats_by_m_over_n():
    # Without stalls each mode runs one beat per cycle, plus a fixed overhead (parameter
    # writes, pipeline fill, last drain); sparse mode needs M/N times fewer beats.
    array = SparseMacArray(n=2, m=8, rows=2, cols=2, a_bits=4, w_bits=4, max_depth=256,
                           groups=2)
    rng = np.random.default_rng(5)
    a, w, values, indices, requant = sparse_case(rng, array, m_dim=4, k_dim=128, n_dim=4)
    desc = description(array, "sparse")
    sparse = sparse_schedule(2, 2, 2, 8, a, values, indices, requant)
    dense = sparse_dense_schedule(2, 2, 2, 8, a, w, requant)
    assert dense.counts["w"] == 4 * sparse.counts["w"]
    overhead = sparse.counts["cfg"] + array.latency + array.rows + 2
    for schedule in (sparse, dense):
        _, cycles = run_schedule(schedule, desc, dut=array, stall=0.0)
        assert cycles <= schedule.counts["w"] + overhead


def test_bad_pattern_is_rejected_with_the_project_message():
    with pytest.raises(ValueError, match=r"N:M sparsity requires 0 < N <= M, not 3:2"):
        SparseMacArray(n=3, m=2, rows=2, cols=2)
