"""A multiplier with registered operands and a registered product."""

__all__ = ["RegisteredMultiplier"]

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .replica import replica_signal

#: Operand width of one ECP5 multiplier block (MULT18X18D), signed.
ECP5_OPERAND_BITS = 18


def _signed_bits(shape):
    """Bits of the narrowest signed value holding every value of ``shape``."""
    return shape.width if shape.signed else shape.width + 1


class RegisteredMultiplier(wiring.Component):
    """``p = a * b`` two cycles after ``a`` and ``b``: the operands are registered, then
    their product (``latency`` 2; loads every cycle, no reset).

    On an ECP5 (an Amaranth Lattice platform of family ``ecp5``) with operands that fit
    18-bit signed ports, both registers are the multiplier block's own (a MULT18X18D with
    its input and output registers on): no fabric path runs through the multiplier, whose
    18 x 18 product takes about 3.9 ns at speed grade 6 (nextpnr's timing data), and the
    place-and-route tools time the block's ports as registers. Elsewhere (simulation,
    other families) the same registers are described in Amaranth and synthesis infers the
    multiplier; both forms compute the same values in the same cycles.

    Parameters
    ----------
    a_shape, b_shape : Shape
        Operand shapes (signed or unsigned).

    Attributes
    ----------
    a, b : In
        Operands.
    p : Out(signed)
        Their product, wide enough for every product.
    """

    latency = 2

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = (s if hasattr(s, "signed") else unsigned(s) for s in (a_shape, b_shape))
        self._a_shape, self._b_shape = a_shape, b_shape
        super().__init__({
            "a": In(a_shape),
            "b": In(b_shape),
            "p": Out(signed(_signed_bits(a_shape) + _signed_bits(b_shape))),
        })

    def _fits_ecp5(self):
        return max(_signed_bits(self._a_shape),
                   _signed_bits(self._b_shape)) <= ECP5_OPERAND_BITS

    def elaborate(self, platform):
        m = Module()
        if getattr(platform, "family", None) == "ecp5" and self._fits_ecp5():
            width = ECP5_OPERAND_BITS
            a = Signal(signed(width))
            b = Signal(signed(width))
            product = Signal(signed(2 * width))
            # Operands extended to the block's 18 signed bits (an unsigned operand
            # zero-extended), so the signed 18 x 18 product is the product.
            m.d.comb += [a.eq(self.a), b.eq(self.b), self.p.eq(product)]
            ports = {f"i_{port}{i}": value[i] for port, value in (("A", a), ("B", b))
                     for i in range(width)}
            ports.update({f"i_C{i}": Const(0) for i in range(width)})
            ports.update({f"o_P{i}": product[i] for i in range(2 * width)})
            for i in range(1, 4):   # unused clock / enable / reset selections
                ports.update({f"i_CLK{i}": Const(0), f"i_CE{i}": Const(0),
                              f"i_RST{i}": Const(0)})
            m.submodules.block = Instance(
                "MULT18X18D",
                p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
                p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
                p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
                p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
                p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED",
                p_CLK3_DIV="ENABLED", p_HIGHSPEED_CLK="NONE", p_GSR="DISABLED",
                p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
                p_RESETMODE="SYNC",
                i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0),
                i_SOURCEB=Const(0), i_CLK0=ClockSignal("sync"), i_CE0=Const(1),
                i_RST0=Const(0), **ports)
        else:
            # Operand registers are replicas: multipliers sharing an operand keep
            # registers of their own, placed beside each (see :mod:`.replica`).
            a = replica_signal(self._a_shape, name="a", reset_less=True)
            b = replica_signal(self._b_shape, name="b", reset_less=True)
            product = Signal.like(self.p, reset_less=True)
            m.d.sync += [a.eq(self.a), b.eq(self.b), product.eq(a * b)]
            m.d.comb += self.p.eq(product)
        return m
