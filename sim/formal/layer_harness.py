"""What the feeder's and the writeback's harnesses share: a small RUN descriptor, held
constant, and one ``start`` pulse at a time the environment chooses."""

__all__ = ["LIMITS", "drive_layer", "max_beats"]

from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Signal

from .properties import check

#: Largest descriptor fields the proofs allow: loop bounds minus one (``k_last``,
#: ``m_last``, ``n_last``: up to 3 x 2 x 2 beats per layer, enough for every loop to wrap)
#: and bases and strides below 16 (4-bit: the solver's adders stay short).
LIMITS = {"k_last": 2, "m_last": 1, "n_last": 1, "a_base": 15, "a_stride": 15,
          "w_base": 15, "out_base": 15, "out_stride": 15, "group_base": 15}


def max_beats(limits=LIMITS):
    """Most beats (or rows, per bank) of a layer within ``limits``."""
    return (limits["k_last"] + 1) * (limits["m_last"] + 1) * (limits["n_last"] + 1)


def drive_layer(m, dut, limits=LIMITS):
    """Drive ``dut.desc`` with an arbitrary constant descriptor inside ``limits`` and
    ``dut.start`` with a single pulse; returns ``(start, started)`` (``started``: the pulse
    has happened, as of the next cycle)."""
    desc = Signal(dut.desc.shape(), name="desc_any")
    m.d.comb += [desc.eq(AnyConst(dut.desc.shape().size)), dut.desc.eq(desc)]
    for name, limit in limits.items():
        check(m, f"desc_{name}", getattr(desc, name) <= limit, kind="assume")
    start, started = Signal(name="start_any"), Signal(name="started")
    m.d.comb += [start.eq(AnySeq(1)), dut.start.eq(start)]
    check(m, "one_start", ~(start & started), kind="assume")
    with m.If(start):
        m.d.sync += started.eq(1)
    return start, started
