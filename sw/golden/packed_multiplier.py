"""Golden model of ``hw.packed_multiplier.PackedMultiplier``: the products ``a * w_j`` of one
shared operand with 2 or 4 lane operands, from one wide multiplication of ``a`` by the packed
``w_0 + w_1 * 2**S + ...``, unpacked with the correction that makes every lane exact.

:func:`packing` derives the shift and every width (the one place they are derived);
:func:`packed_multiplier` computes as the hardware does; :func:`lane_products` is the plain
reference the tests hold both to. ``docs/numerics.md`` ("Packed products") has the proof.
"""

__all__ = ["PACKED_PORT_BITS", "PACKED_PORT_RANGE", "PACKED_LANES", "Packing", "packing",
           "lane_products", "packed_multiplier"]

from typing import NamedTuple

import numpy as np

from .numerics import check_operand, operand_range, product_range, signed_bits_for

#: Signed width of the multiplier input that takes the packed operand: an ECP5 MULT18X18D.
#: (A Xilinx DSP48E1 takes 25 bits on its A port, a DSP48E2 27.)
PACKED_PORT_BITS = 18
#: Packed-input widths accepted (narrow ones force overlapping lanes, for tests).
PACKED_PORT_RANGE = range(8, 28)
#: Lanes (products per multiplication) a packed multiplier computes.
PACKED_LANES = (2, 4)


class Packing(NamedTuple):
    """How ``lanes`` products share one multiplication (see :func:`packing`)."""

    lanes: int
    #: Lane ``j``'s operand is packed at bit ``j * shift``.
    shift: int
    #: Width of one product, the narrowest holding every product; signed when any is < 0.
    product_bits: int
    product_signed: bool
    #: Low bits of each upper product that overlap the product below in the wide product
    #: (``product_bits - shift`` when positive); computed beside the multiplier.
    overlap_bits: int
    #: Signed width of the packed operand.
    packed_bits: int

    @property
    def field_starts(self):
        """Where each lane's field starts in the corrected wide product: lane 0's (its whole
        product) at 0, lane ``j``'s (its product without the ``overlap_bits`` low bits) at
        ``j * shift + overlap_bits``."""
        return tuple(0 if j == 0 else j * self.shift + self.overlap_bits
                     for j in range(self.lanes))

    @property
    def field_bits(self):
        """Width of each lane's field: ``product_bits``, less ``overlap_bits`` above lane 0."""
        return tuple(self.product_bits - (j > 0) * self.overlap_bits for j in range(self.lanes))

    @property
    def bias(self):
        """Constant added to the wide product so that every field holds its value in offset
        binary (the top bit of each signed field, 0 for unsigned products): no field is then
        negative, and none borrows from the field above."""
        if not self.product_signed:
            return 0
        return sum(1 << (start + bits - 1)
                   for start, bits in zip(self.field_starts, self.field_bits))

    @property
    def unpacked_bits(self):
        """Bits of the wide product the fields occupy (up to the top of the last field)."""
        return self.field_starts[-1] + self.field_bits[-1]


def _packed_range(w_bits, w_signed, lanes, shift):
    w_lo, w_hi = operand_range(w_bits, w_signed)
    scale = sum(1 << (j * shift) for j in range(lanes))
    return w_lo * scale, w_hi * scale


def _kind(bits, signed):
    return f"{'signed' if signed else 'unsigned'} {bits}-bit"


def packing(*, a_bits, a_signed, w_bits, w_signed, lanes, port_bits=PACKED_PORT_BITS):
    """The shift and widths of ``lanes`` products ``a * w_j`` packed into one multiplication
    whose packed input is a signed ``port_bits``-bit port.

    The shift ``S`` is the largest at most ``product_bits`` whose packed operand fits the
    port, and at least ``ceil(product_bits / 2)`` so that each product overlaps only the one
    below it; ``overlap_bits = product_bits - S`` low bits of every upper product are then
    computed beside the multiplier.

    >>> packing(a_bits=8, a_signed=True, w_bits=8, w_signed=True, lanes=2)
    Packing(lanes=2, shift=9, product_bits=16, product_signed=True, overlap_bits=7, packed_bits=18)
    >>> packing(a_bits=8, a_signed=True, w_bits=8, w_signed=True, lanes=2, port_bits=25)
    Packing(lanes=2, shift=16, product_bits=16, product_signed=True, overlap_bits=0, packed_bits=25)
    >>> packing(a_bits=4, a_signed=False, w_bits=4, w_signed=True, lanes=4)
    Packing(lanes=4, shift=4, product_bits=8, product_signed=True, overlap_bits=4, packed_bits=17)
    >>> packing(a_bits=8, a_signed=True, w_bits=4, w_signed=True, lanes=4)
    Traceback (most recent call last):
    ...
    ValueError: 4 lanes of signed 8-bit x signed 4-bit products need a 23-bit packed \
multiplier input, not 18; use 2 lanes or narrower operands

    Raises
    ------
    TypeError
        On an operand type, lane count or port width of the wrong type or out of range.
    ValueError
        If the packed operand cannot fit ``port_bits`` signed bits.
    """
    check_operand("Activation", a_bits, a_signed)
    check_operand("Weight", w_bits, w_signed)
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes not in PACKED_LANES:
        raise TypeError(f"Lane count must be 2 or 4, not {lanes!r}")
    if (not isinstance(port_bits, int) or isinstance(port_bits, bool)
            or port_bits not in PACKED_PORT_RANGE):
        raise TypeError(f"Multiplier input width must be an integer in 8..27, "
                        f"not {port_bits!r}")
    p_lo, p_hi = product_range(a_bits, a_signed, w_bits, w_signed)
    product_signed = p_lo < 0
    product_bits = signed_bits_for(p_lo, p_hi) if product_signed else p_hi.bit_length()
    shortest = -(-product_bits // 2)

    def packed_bits(shift):
        return signed_bits_for(*_packed_range(w_bits, w_signed, lanes, shift))

    fits = [s for s in range(shortest, product_bits + 1) if packed_bits(s) <= port_bits]
    if not fits:
        raise ValueError(f"{lanes} lanes of {_kind(a_bits, a_signed)} x "
                         f"{_kind(w_bits, w_signed)} products need a "
                         f"{packed_bits(shortest)}-bit packed multiplier input, not "
                         f"{port_bits}; use 2 lanes or narrower operands")
    shift = max(fits)
    return Packing(lanes=lanes, shift=shift, product_bits=product_bits,
                   product_signed=product_signed, overlap_bits=product_bits - shift,
                   packed_bits=packed_bits(shift))


def lane_products(a, w):
    """The plain reference: ``a[...] * w[..., j]`` for every lane ``j``, in int64.

    >>> lane_products(np.array([-128, 3]), np.array([[-128, 127], [-1, 0]])).tolist()
    [[16384, -16256], [-3, 0]]
    """
    return np.asarray(a, dtype=np.int64)[..., None] * np.asarray(w, dtype=np.int64)


def _check_codes(name, x, bits, signed):
    lo, hi = operand_range(bits, signed)
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"{name} codes must lie in {lo}..{hi}, not {x.min()}..{x.max()}")


def packed_multiplier(a, w, *, a_bits, a_signed, w_bits, w_signed, lanes,
                      port_bits=PACKED_PORT_BITS, correct=True):
    """``a * w[..., j]`` for each lane as :class:`PackedMultiplier` computes it: one product
    ``P = a * (w_0 + w_1 * 2**S + ...)`` unpacked into ``lanes`` fields.

    With the :func:`packing` ``S = shift``, ``k = overlap_bits`` and ``B = product_bits``,
    ``P = p_0 + p_1 * 2**S + ...`` holds the products ``p_j``; the correction makes each
    exact for every operand set:

    - when ``S < B`` the low ``k`` bits of each upper product overlap the top of the product
      below; they are computed beside the multiplier (``l_j = a * w_j mod 2**k`` needs only
      the low ``k`` bits of ``a`` and ``w_j``) and subtracted at ``j * S``, which leaves
      lane 0's product and every ``p_j >> k`` in disjoint fields (``field_starts``);
    - a negative product borrows from the field above it (two's complement), so for signed
      products :attr:`Packing.bias` adds half of each field's range: every field then holds
      its product in offset binary, non-negative, and no field borrows;

    and then ``p_j = ((field_j - half_j) << k) + l_j``.

    ``correct=False`` is the naive unpacking (each product the ``B``-bit field of ``P`` at
    ``j * S``), wrong wherever a lower product is negative or products overlap; it exists to
    show that the correction is needed.

    Parameters
    ----------
    a : array [...]
        Shared operand codes.
    w : array [..., lanes]
        Lane operand codes.
    a_bits, a_signed, w_bits, w_signed, lanes, port_bits :
        As for :func:`packing`.

    Returns
    -------
    array [..., lanes] of int64 products.

    >>> kw = dict(a_bits=8, a_signed=True, w_bits=8, w_signed=True, lanes=2)
    >>> a, w = np.array([-128, 5, 127]), np.array([[-128, -128], [-1, 3], [127, -128]])
    >>> packed_multiplier(a, w, **kw).tolist()
    [[16384, 16384], [-5, 15], [16129, -16256]]
    >>> packed_multiplier(a, w, **kw, correct=False).tolist()
    [[16384, 16416], [7675, 14], [16129, -16225]]
    """
    spec = packing(a_bits=a_bits, a_signed=a_signed, w_bits=w_bits, w_signed=w_signed,
                   lanes=lanes, port_bits=port_bits)
    a = np.asarray(a, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    if w.shape[-1:] != (lanes,):
        raise ValueError(f"Lane operands must have {lanes} lanes in the last axis, "
                         f"not shape {w.shape}")
    _check_codes("Activation", a, a_bits, a_signed)
    _check_codes("Weight", w, w_bits, w_signed)
    s, k = spec.shift, spec.overlap_bits
    offsets = np.arange(lanes, dtype=np.int64) * s
    product = a * (w << offsets).sum(axis=-1)       # the one multiplication
    if not correct:
        b = spec.product_bits
        fields = (product[..., None] >> offsets) & ((1 << b) - 1)
        if spec.product_signed:
            fields = np.where(fields >> (b - 1), fields - (1 << b), fields)
        return fields
    # The low k bits of every upper product, from the low k bits of its operands alone.
    low = ((a[..., None] & ((1 << k) - 1)) * (w & ((1 << k) - 1))) & ((1 << k) - 1)
    low[..., 0] = 0
    z = product - (low << offsets).sum(axis=-1) + spec.bias
    starts = np.array(spec.field_starts, dtype=np.int64)
    widths = np.array(spec.field_bits, dtype=np.int64)
    fields = (z[..., None] >> starts) & ((np.int64(1) << widths) - 1)
    if spec.product_signed:
        fields -= np.int64(1) << (widths - 1)
    return (fields << (starts - offsets)) + low
