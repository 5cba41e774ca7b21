"""Two or four products that share one operand, from one multiplier block."""

__all__ = ["PackedMultiplier", "packed_port_bits_for"]

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..sw.golden import PACKED_PORT_BITS, packing
from .registered_multiplier import RegisteredMultiplier


#: Signed width of the packed operand on a Xilinx platform (the A port of a DSP48E1, and of
#: the wider DSP48E2): two int8 lanes then need no overlap correction.
XILINX_PACKED_PORT_BITS = 25
_XILINX_DSP_FAMILIES = ("series7", "ultrascale", "ultrascaleplus")


def packed_port_bits_for(platform):
    """Packed operand width for ``platform``: :data:`XILINX_PACKED_PORT_BITS` on a Xilinx
    7-series or UltraScale platform, else the ECP5 MULT18X18D's 18 bits (also the width for
    simulation and for synthesis without a platform)."""
    if getattr(platform, "family", None) in _XILINX_DSP_FAMILIES:
        return XILINX_PACKED_PORT_BITS
    return PACKED_PORT_BITS


def _shape(bits, is_signed):
    return signed(bits) if is_signed else unsigned(bits)


def _tree_sum(terms):
    """The sum of ``terms`` as a balanced tree of adders (depth ``ceil(log2(len))``)."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [sum(terms[i:i + 2]) for i in range(0, len(terms), 2)]
    return terms[0]


class PackedMultiplier(wiring.Component):
    """``lanes`` products ``p[j] = a * w[j]`` of one shared operand ``a``, from one
    multiplication of ``a`` by the packed ``w[0] + w[1] * 2**S + ...`` (``S`` =
    :attr:`shift`), unpacked with the correction that makes every product exact for every
    operand set; bit-exact with :func:`sparqforge.sw.golden.packed_multiplier`
    (``docs/numerics.md``, "Packed products").

    The multiplication is a :class:`RegisteredMultiplier`: on an ECP5 with the default
    ``port_bits`` (18) it is one MULT18X18D with its input and output registers on, so two
    int8 products cost one multiplier block (elsewhere, or with a wider ``port_bits``, the
    same registers in Amaranth and an inferred multiplier). The packing is an adder in front
    of the block's operand register. The correction runs beside the block in LUTs: the low
    :attr:`overlap_bits` of each upper product (those that overlap the product below when
    ``S`` is narrower than a product), from the operands' low bits as a tree of adders of
    AND terms (a multiplication there would be mapped to a second multiplier block), are
    subtracted from a constant that turns every signed field into offset binary, so that no
    field borrows from the one above; one adder after the block's output register adds that
    registered offset to the wide product.

    Latency :attr:`latency` = 3 cycles: operand registers (in the multiplier block), product
    register (in the block), unpacked products. A new operand set every cycle; every
    register loads every cycle and has no reset; there is no handshake. Products are exact
    (no rounding, no overflow: each ``p[j]`` is :attr:`product_bits` wide, the narrowest
    type holding every product of the operand types).

    Parameters
    ----------
    a_bits, a_signed : int, bool
        Shared operand (activation) width, 2..8, and signedness.
    w_bits, w_signed : int, bool
        Lane operand (weight) width, 2..8, and signedness.
    lanes : int
        Products per multiplication: 2, or 4 where the packed operand still fits.
    port_bits : int
        Signed width of the multiplier input that takes the packed operand, 8..27: 18 for
        an ECP5 MULT18X18D (default), 25 for a Xilinx DSP48E1 (whose wider port leaves no
        overlap at 8 bits). Narrower values force overlapping lanes (for tests).

    Attributes
    ----------
    a : In(a_bits)
        Shared operand.
    w : In(data.ArrayLayout(w_bits, lanes))
        Lane operands.
    p : Out(data.ArrayLayout(product_bits, lanes))
        ``a * w[j]`` of the operands of :attr:`latency` cycles before; signed when any
        product can be negative.

    Raises
    ------
    TypeError
        On an operand type, lane count or port width of the wrong type or out of range.
    ValueError
        If the packed operand does not fit ``port_bits`` (four lanes of wide operands).
    """

    def __init__(self, *, a_bits=8, a_signed=True, w_bits=8, w_signed=True, lanes=2,
                 port_bits=PACKED_PORT_BITS):
        self._packing = packing(a_bits=a_bits, a_signed=a_signed, w_bits=w_bits,
                                w_signed=w_signed, lanes=lanes, port_bits=port_bits)
        self._a_bits, self._a_signed = a_bits, a_signed
        self._w_bits, self._w_signed = w_bits, w_signed
        self._port_bits = port_bits
        product = _shape(self._packing.product_bits, self._packing.product_signed)
        super().__init__({
            "a": In(_shape(a_bits, a_signed)),
            "w": In(data.ArrayLayout(_shape(w_bits, w_signed), lanes)),
            "p": Out(data.ArrayLayout(product, lanes)),
        })

    a_bits = property(lambda self: self._a_bits)
    a_signed = property(lambda self: self._a_signed)
    w_bits = property(lambda self: self._w_bits)
    w_signed = property(lambda self: self._w_signed)
    lanes = property(lambda self: self._packing.lanes)
    port_bits = property(lambda self: self._port_bits)
    #: Lane ``j``'s operand sits at bit ``j * shift`` of the packed operand.
    shift = property(lambda self: self._packing.shift)
    #: Signed width of the packed operand (at most ``port_bits``).
    packed_bits = property(lambda self: self._packing.packed_bits)
    #: Width of each product.
    product_bits = property(lambda self: self._packing.product_bits)
    product_signed = property(lambda self: self._packing.product_signed)
    #: Low bits of each upper product computed beside the multiplier.
    overlap_bits = property(lambda self: self._packing.overlap_bits)
    #: Cycles from an operand set to its products.
    latency = property(lambda self: 1 + RegisteredMultiplier.latency)

    @property
    def params(self):
        """Generator parameters, as passed to the constructor."""
        return {"a_bits": self._a_bits, "a_signed": self._a_signed, "w_bits": self._w_bits,
                "w_signed": self._w_signed, "lanes": self.lanes, "port_bits": self._port_bits}

    def elaborate(self, platform):
        m = Module()
        spec = self._packing
        s, lanes = spec.shift, spec.lanes

        mul = RegisteredMultiplier(self.a.shape(), signed(spec.packed_bits))
        m.submodules.multiplier = mul
        # The packed operand's value, not a concatenation of the weights' bits: a negative
        # lower weight borrows from the one above, and the product of the sum is the sum of
        # the shifted products.
        m.d.comb += [mul.a.eq(self.a),
                     mul.b.eq(sum(self.w[j] << (j * s) for j in range(lanes)))]

        lows, offset = self._correction(m)

        # Stage 3: the corrected wide product holds every field in its place; a signed
        # field is read out of offset binary by inverting its top bit.
        fields = Signal(spec.unpacked_bits, name="fields")
        m.d.comb += fields.eq(mul.p + offset)
        result = Signal(lanes * spec.product_bits, name="result", reset_less=True)
        for j, (start, bits) in enumerate(zip(spec.field_starts, spec.field_bits)):
            field = fields[start:start + bits]
            if spec.product_signed:
                field = Cat(field[:-1], ~field[-1])
            lane = result[j * spec.product_bits:(j + 1) * spec.product_bits]
            m.d.sync += lane.eq(Cat(lows[j], field))
        m.d.comb += self.p.eq(result)
        return m

    def _correction(self, m):
        """The correction, in ``m``: the low ``overlap_bits`` of every lane's product,
        aligned with the multiplier's product (empty for lane 0, whose field holds its whole
        product), and the offset that one adder adds to the product."""
        spec = self._packing
        s, k, lanes = spec.shift, spec.overlap_bits, spec.lanes
        if not k:
            return [Const(0, 0)] * lanes, Const(spec.bias, spec.unpacked_bits)
        # The low k bits of every upper product (the low bits of a two's complement product
        # depend only on the operands' low bits), as a tree of AND terms: stage 1 registers
        # its first level (pairs of terms), right after the operands, which arrive over
        # long routes (a row's or a column's broadcast); stage 2 finishes the tree and
        # subtracts the results, at their places, from the offset-binary bias, so that one
        # adder corrects every lane. (The whole tree in stage 1 was the critical path of a
        # packed 8x8 array on the ULX3S: 6 to 7 logic levels behind those routes.)
        a_low = Signal(k, name="a_low")
        m.d.comb += a_low.eq(self.a)    # sign- or zero-extended when k > a_bits
        low_1, low_2 = [], []
        for j in range(1, lanes):
            w_low = Signal(k, name=f"w_low_{j}")
            m.d.comb += w_low.eq(self.w[j])
            terms = [Mux(w_low[i], a_low[:k - i] << i, 0) for i in range(k)]
            pairs = []
            for n in range(0, k, 2):
                pair = Signal(k, name=f"low_{j}_s1_{n // 2}", reset_less=True)
                m.d.sync += pair.eq(sum(terms[n:n + 2]))    # modulo 2**k, as the product
                pairs.append(pair)
            low = Signal(k, name=f"low_{j}")
            m.d.comb += low.eq(_tree_sum(pairs))
            low_1.append(low)
            low_2.append(Signal(k, name=f"low_{j}_s2", reset_less=True))
            m.d.sync += low_2[-1].eq(low)
        placed = Cat(*(part for j, low in enumerate(low_1, start=1)
                       for part in (Const(0, s - (k if j > 1 else 0)), low)))
        offset = Signal(spec.unpacked_bits, name="offset", reset_less=True)
        m.d.sync += offset.eq(spec.bias - placed)
        return [Const(0, 0), *low_2], offset
