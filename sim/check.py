"""Element-by-element comparison of a block's results with the golden model."""

__all__ = ["Mismatch", "compare"]

from dataclasses import dataclass

import numpy as np


@dataclass
class Mismatch:
    """Result of :func:`compare`: ``count`` differing elements, the first few listed."""
    count: int
    total: int
    first: list

    def __bool__(self):
        return self.count > 0

    def __str__(self):
        if not self.count:
            return f"all {self.total} elements equal"
        listed = ", ".join(f"{idx}: expected {e}, got {g}" for idx, e, g in self.first)
        return f"{self.count} of {self.total} elements differ ({listed})"


def compare(expected, got, *, limit=5):
    """Compare two integer arrays element by element (shapes must agree)."""
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape != got.shape:
        return Mismatch(max(expected.size, got.size), expected.size,
                        [("shape", expected.shape, got.shape)])
    where = np.argwhere(expected != got)
    first = [(tuple(int(i) for i in idx), int(expected[tuple(idx)]), int(got[tuple(idx)]))
             for idx in where[:limit]]
    return Mismatch(len(where), expected.size, first)
