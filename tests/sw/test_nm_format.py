"""Compressed N:M format (sparqforge.sw.nm_format): exact round trip, explicit-zero padding,
validation messages and the PyTorch 2:4 metadata mapping.

Expected values come from loops written here, not from the module under test.
"""

import itertools

import numpy as np
import pytest

from sparqforge.sw import nm_format
from sparqforge.sw.nm_format import NMFormatError

PATTERNS = [(1, 2), (2, 4), (1, 4), (2, 8), (4, 8), (3, 4), (1, 16)]


def widths_for(m):
    """Multiples of M and every awkward remainder kind: 1, M-1, a middle one, below M."""
    return sorted({3 * m, 3 * m + 1, 3 * m + m - 1, 2 * m + m // 2, 1, m - 1} - {0})


def random_nm(rng, rows, width, n, m, *, dtype=np.int64):
    """An N:M matrix built group by group: 0..N nonzeros at random positions."""
    w = np.zeros((rows, width), dtype=dtype)
    for r in range(rows):
        for start in range(0, width, m):
            length = min(m, width - start)
            count = int(rng.integers(0, min(n, length) + 1))
            pos = rng.choice(length, size=count, replace=False)
            w[r, start + pos] = rng.integers(1, 100, size=count) * rng.choice([-1, 1], count)
    return w


def reference_compress(w, n, m):
    """Slow reference: per group, nonzero positions, then the lowest free positions."""
    rows, width = w.shape
    groups = -(-width // m)
    values = np.zeros((rows, groups * n), dtype=w.dtype)
    indices = np.zeros((rows, groups * n), dtype=np.int64)
    for r in range(rows):
        for g in range(groups):
            group = [w[r, g * m + p] if g * m + p < width else 0 for p in range(m)]
            nonzero = [p for p in range(m) if group[p] != 0]
            assert len(nonzero) <= n
            free = [p for p in range(m) if group[p] == 0][:n - len(nonzero)]
            kept = sorted(nonzero + free)
            indices[r, g * n:(g + 1) * n] = kept
            values[r, g * n:(g + 1) * n] = [group[p] for p in kept]
    return values, indices


@pytest.mark.parametrize("n,m", PATTERNS)
def test_roundtrip_exact_all_widths(n, m):
    rng = np.random.default_rng(1000 * n + m)
    for width in widths_for(m):
        w = random_nm(rng, 7, width, n, m)
        values, indices = nm_format.compress(w, n, m)
        groups = -(-width // m)
        assert values.shape == indices.shape == (7, groups * n)
        # Every stored pair points at its own weight; nothing else is nonzero.
        rebuilt = np.zeros((7, groups * m), dtype=w.dtype)
        for r, j in itertools.product(range(7), range(groups * n)):
            rebuilt[r, (j // n) * m + indices[r, j]] = values[r, j]
        np.testing.assert_array_equal(rebuilt[:, :width], w)
        assert not rebuilt[:, width:].any()
        np.testing.assert_array_equal(
            nm_format.decompress(values, indices, n, m, in_features=width), w)
        padded = nm_format.decompress(values, indices, n, m)
        assert padded.shape == (7, groups * m) and not padded[:, width:].any()


@pytest.mark.parametrize("n,m", PATTERNS)
def test_compress_matches_reference_layout(n, m):
    rng = np.random.default_rng(7 + n * m)
    w = random_nm(rng, 9, 5 * m + 3, n, m)
    values, indices = nm_format.compress(w, n, m)
    ref_values, ref_indices = reference_compress(w, n, m)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(values, ref_values)


def test_float_values_survive_bit_exact():
    rng = np.random.default_rng(3)
    w = random_nm(rng, 4, 30, 2, 8).astype(np.float32) * np.float32(0.1234567)
    values, indices = nm_format.compress(w, 2, 8)
    out = nm_format.decompress(values, indices, 2, 8, in_features=30)
    assert out.dtype == np.float32
    assert np.array_equal(out.view(np.int32), w.view(np.int32))


def test_underfull_groups_keep_explicit_zeros_at_lowest_free_positions():
    w = np.array([
        [0, 0, 0, 5, 0, 0, 0, 0],   # one nonzero at 3: zero at 0 joins it; empty group: 0, 1
        [7, 0, 0, 0, 0, 0, 9, 0],   # nonzero at 0: zero at 1; nonzero at 2 of group 1: zero at 0
        [0, 4, 0, 0, 0, 0, 0, 0],   # nonzero at 1: zero at 0
    ])
    values, indices = nm_format.compress(w, 2, 4)
    assert indices.tolist() == [[0, 3, 0, 1], [0, 1, 0, 2], [0, 1, 0, 1]]
    assert values.tolist() == [[0, 5, 0, 0], [7, 0, 0, 9], [0, 4, 0, 0]]
    # 4:8 with a single nonzero at 5 and padding (width 6): zeros at 0, 1, 2.
    values, indices = nm_format.compress(np.array([[0, 0, 0, 0, 0, -3]]), 4, 8)
    assert indices.tolist() == [[0, 1, 2, 5]] and values.tolist() == [[0, 0, 0, -3]]


def _valid_indices(rows, groups, n, m, rng):
    picks = [np.sort(rng.choice(m, size=n, replace=False)) for _ in range(rows * groups)]
    return np.array(picks).reshape(rows, groups * n)


@pytest.mark.parametrize("bad,why", [
    ([1, 1], "duplicate or not ascending"),
    ([3, 1], "duplicate or not ascending"),
    ([0, 4], "out of range 0..3"),
    ([-1, 2], "out of range 0..3"),
])
def test_validate_rejects_and_names_the_group(bad, why):
    rng = np.random.default_rng(0)
    indices = _valid_indices(4, 5, 2, 4, rng)
    values = np.ones_like(indices)
    nm_format.validate(values, indices, 2, 4)          # the clean pair passes
    indices[2, 3 * 2:3 * 2 + 2] = bad                  # row 2, group 3
    with pytest.raises(NMFormatError, match=rf"^Row 2, group 3: indices \[{bad[0]}, {bad[1]}\] "
                                            rf"are {why}"):
        nm_format.validate(values, indices, 2, 4)
    with pytest.raises(NMFormatError, match="Row 2, group 3"):
        nm_format.decompress(values, indices, 2, 4)


def test_validate_reports_the_first_bad_group_and_shapes():
    indices = np.array([[0, 1, 2, 3], [1, 0, 3, 3]])
    with pytest.raises(NMFormatError, match=r"^Row 1, group 0:"):
        nm_format.validate(np.zeros_like(indices), indices, 2, 4)
    with pytest.raises(NMFormatError, match=r"must be equal \[out, groups \* 2\] matrices"):
        nm_format.validate(np.zeros((2, 4)), np.zeros((2, 3), dtype=np.int64), 2, 4)
    with pytest.raises(NMFormatError, match=r"must be equal"):
        nm_format.validate(np.zeros((2, 3)), np.zeros((2, 3), dtype=np.int64), 2, 4)


def test_compress_rejects_too_many_nonzeros_naming_row_and_group():
    w = np.zeros((3, 12), dtype=np.int64)
    w[1, 8:11] = [1, 2, 3]                             # row 1, group 2: 3 nonzeros
    w[2, 0:4] = [1, 1, 1, 1]                           # a later row, also bad
    assert nm_format.find_violation(w, 2, 4) == (1, 2, 3)
    with pytest.raises(NMFormatError, match=r"^Row 1, group 2 \(inputs 8\.\.11\) has 3 "
                                            r"nonzeros, more than N=2 of 2:4; prune it first"):
        nm_format.compress(w, 2, 4)
    w[1, 10] = 0
    w[2, 0:2] = 0
    assert nm_format.find_violation(w, 2, 4) is None
    nm_format.compress(w, 2, 4)


def test_check_nm_messages():
    with pytest.raises(ValueError, match=r"^N:M sparsity requires 0 < N <= M, not 5:4$"):
        nm_format.check_nm(5, 4)
    with pytest.raises(ValueError, match=r"2 <= M <= 16, not 1:32"):
        nm_format.check_nm(1, 32)
    with pytest.raises(TypeError, match="integers"):
        nm_format.check_nm(2.0, 4)
    assert [nm_format.index_bits(m) for m in (2, 4, 8, 16, 5)] == [1, 2, 3, 4, 3]


def test_torch_2_4_meta_nibbles_and_round_trip():
    pairs = list(itertools.combinations(range(4), 2))  # every valid (idx0, idx1)
    rng = np.random.default_rng(5)
    choice = rng.integers(0, len(pairs), size=(6, 10))
    indices = np.array([[v for c in row for v in pairs[c]] for row in choice])
    meta = nm_format.to_torch_2_4_meta(indices)
    assert meta.dtype == np.uint8 and meta.shape == (6, 10)
    expected = [[pairs[c][0] | (pairs[c][1] << 2) for c in row] for row in choice]
    assert meta.tolist() == expected
    idx0, idx1 = meta & 3, meta >> 2
    assert (idx0 < idx1).all()
    np.testing.assert_array_equal(nm_format.from_torch_2_4_meta(meta), indices)
    assert sorted({i | (j << 2) for i, j in pairs}) == [4, 8, 9, 12, 13, 14]
    with pytest.raises(NMFormatError, match="Row 0, group 0"):
        nm_format.to_torch_2_4_meta(np.array([[2, 1]]))
    with pytest.raises(NMFormatError, match="Row 0, group 1"):
        nm_format.from_torch_2_4_meta(np.array([[4, 5]]))     # nibble 5 = (1, 1)


def test_torch_2_4_meta_matches_pytorch_cutlass_conversion():
    """Full 2:4 groups: values and nibbles equal PyTorch's own conversion (CPU, fp16)."""
    torch = pytest.importorskip("torch")
    conv = pytest.importorskip("torch.sparse._semi_structured_conversions")
    if not hasattr(conv, "_calculate_meta_reordering_scatter_offsets"):
        pytest.skip("this torch has no CUTLASS meta reordering helper")
    rng = np.random.default_rng(11)
    rows, width = 32, 64
    w = np.zeros((rows, width), dtype=np.float16)
    for r, g in itertools.product(range(rows), range(width // 4)):
        pos = rng.choice(4, size=2, replace=False)
        w[r, g * 4 + pos] = rng.integers(1, 9, size=2) * rng.choice([-1, 1], 2)
    sparse, meta_reordered = conv.sparse_semi_structured_from_dense_cutlass(torch.from_numpy(w))
    offsets = conv._calculate_meta_reordering_scatter_offsets(
        rows, meta_reordered.shape[1], meta_reordered.dtype, "cpu")
    words = torch.gather(meta_reordered.view(-1), 0, offsets).view(rows, -1)
    words = words.numpy().astype(np.int64) & 0xFFFF
    torch_nibbles = np.stack([(words >> (4 * i)) & 15 for i in range(4)], axis=2)
    values, indices = nm_format.compress(w, 2, 4)
    np.testing.assert_array_equal(values, sparse.numpy())
    np.testing.assert_array_equal(nm_format.to_torch_2_4_meta(indices),
                                  torch_nibbles.reshape(rows, -1))
