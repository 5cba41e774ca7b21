"""Layer cases shared by the cocotb benches' pytest drivers."""

import numpy as np

from sparqforge.sim.mac_array.schedule import corner_layers, random_layer, random_nm_weights


def types_of(array):
    return dict(a_bits=array.a_bits, a_signed=array.a_signed, w_bits=array.w_bits,
                w_signed=array.w_signed, out_bits=array.out_bits, out_signed=array.out_signed)


def as_case(name, a, w, requant, **extra):
    case = {"name": name, "a": np.asarray(a).tolist(), "w": np.asarray(w).tolist(),
            "requant": {k: np.asarray(v).tolist() for k, v in requant.items()}}
    for key, (a2, w2, requant2) in extra.items():
        case.update({f"{key}_a": np.asarray(a2).tolist(), f"{key}_w": np.asarray(w2).tolist(),
                     f"{key}_requant": {k: np.asarray(v).tolist() for k, v in requant2.items()}})
    return case


def dense_cases(array, seed):
    rng = np.random.default_rng(seed)
    rows, cols = array.rows, array.cols
    named = {"random": random_layer(rng, m=2 * rows + 1, k=17, n=2 * cols + 1,
                                    **types_of(array))}
    named.update(corner_layers(rng, max_depth=array.max_depth, m=rows + 1, n=cols + 1,
                               **types_of(array)))
    return [as_case(name, *layer) for name, layer in named.items()]


def sparse_cases(array, seed):
    """N:M layers (random with all-zero and short groups, extreme values at full depth,
    all-zero weights), each paired with a dense-mode layer for the same instance."""
    rng = np.random.default_rng(seed)
    n, m, rows, cols = array.n, array.m, array.rows, array.cols
    types = types_of(array)
    w_lo, _ = (-(1 << (array.w_bits - 1)), 0) if array.w_signed else (0, 0)
    a_lo = -(1 << (array.a_bits - 1)) if array.a_signed else (1 << array.a_bits) - 1
    full_k = array.max_depth // n * m
    w_random = random_nm_weights(rng, k=3 * m + 1, n_out=cols + 1, n=n, m=m,
                                 w_bits=array.w_bits, w_signed=array.w_signed)
    w_extreme = np.zeros((full_k, cols + 1), dtype=np.int64)
    for g in range(full_k // m):
        w_extreme[g * m + rng.permutation(m)[:n], :] = w_lo or (1 << array.w_bits) - 1
    named = {
        "random": random_layer(rng, m=2 * rows + 1, k=3 * m + 1, n=cols + 1, w=w_random,
                               **types),
        "full_depth_extreme": random_layer(rng, m=rows + 1, k=full_k, n=cols + 1,
                                           a=np.full((rows + 1, full_k), a_lo), w=w_extreme,
                                           **types),
        "all_zero_groups": random_layer(rng, m=rows, k=2 * m, n=cols,
                                        w=np.zeros((2 * m, cols), np.int64), **types),
    }
    return [as_case(name, *layer, dense=random_layer(rng, m=rows + 1, k=2 * n + 1,
                                                     n=cols + 1, **types))
            for name, layer in named.items()]
