"""N:M structured-sparse MAC array (SAT / BDWP style) that also runs dense layers."""

__all__ = ["SparseMacArray"]

from amaranth.hdl import Mux, Signal, unsigned
from amaranth.lib import data

from ..sw.nm_format import check_nm, index_bits
from .mac_array import MacArray, split_product


class SparseMacArray(MacArray):
    """``rows`` x ``cols`` MAC array whose elements each have ``n`` multipliers and consume
    one compressed N:M weight group per beat.

    Sparse mode (beat's ``dense`` bit clear): an activation beat carries ``m`` consecutive
    activations per row (one group of the reduction axis); a weight beat carries, per
    column, the group's ``n`` kept weights and their positions ``0 .. m-1`` in the group.
    Element ``(r, c)`` multiplies each kept weight with the activation its index selects
    and adds the ``n`` products, so a tile of reduction depth ``K`` takes ``ceil(K / m)``
    beats instead of ``K``.

    Dense mode (``dense`` set): the same instance runs an ordinary layer ``n`` reduction
    steps per beat. Activation lanes ``0 .. n-1`` hold ``n`` consecutive activations and
    weight ``j`` of each column is taken as belonging to lane ``j``; indices are ignored.
    The mode is a per-beat bit, so dense and sparse tiles mix freely on one instance. Its
    cost is one ``ceil(log2 m)``-bit 2:1 multiplexer per kept weight per column: the
    effective index is formed once per column and shared by the column's elements.

    Everything else (streams, tags, drain, requantizer, latency, numerics) is as in
    :class:`~sparqforge.hw.mac_array.MacArray`; ``max_depth`` counts products.

    Parameters
    ----------
    n, m : int
        Sparsity pattern N:M, ``0 < n <= m <= 16``.
    **kwargs
        As for :class:`~sparqforge.hw.mac_array.MacArray`.

    Attributes
    ----------
    a : In(stream)
        ``rows`` x ``m`` activation lanes.
    w : In(stream)
        ``data`` (``cols`` x ``n`` of ``value``, ``index``), ``dense``, ``tag``, ``last``.
    """

    def __init__(self, *, n, m, **kwargs):
        check_nm(n, m)
        if kwargs.get("packed_products"):
            raise ValueError("Packed products need a dense array: an N:M array selects each "
                             "column's activations, so the columns of a row share no operand")
        if kwargs.get("lane_operands"):
            raise ValueError("Lane operands need a dense array: an N:M array selects its "
                             "activations from a row's group")
        self._n, self._m = n, m
        super().__init__(**kwargs)

    n = property(lambda self: self._n)
    m = property(lambda self: self._m)

    @property
    def index_bits(self):
        return index_bits(self._m)

    @property
    def params(self):
        return {**super().params, "n": self._n, "m": self._m}

    def _a_layout(self):
        lane = data.ArrayLayout(self._shape(self._a_bits, self._a_signed), self._m)
        return data.ArrayLayout(lane, self._rows)

    def _w_layout(self):
        kept = data.StructLayout({
            "value": self._shape(self._w_bits, self._w_signed),
            "index": unsigned(self.index_bits),
        })
        return data.StructLayout({
            "data": data.ArrayLayout(data.ArrayLayout(kept, self._n), self._cols),
            "dense": unsigned(1),
            "tag": unsigned(self.tag_bits),
            "last": unsigned(1),
        })

    def _column_terms(self, m, w, col):
        terms = []
        for j in range(self._n):
            kept = w.data[col][j]
            index = Signal(self.index_bits, name=f"index_{col}_{j}")
            m.d.comb += index.eq(Mux(w.dense, j, kept.index))
            terms.append((index, kept.value))
        return terms

    def _contribution(self, a, terms, row):
        return sum(a[row][index] * value for index, value in terms)

    def _partials(self, a, terms, row):
        return [partial for index, value in terms
                for partial in split_product(a[row][index], value, self._w_bits, self._w_signed,
                                             self._pieces)]
