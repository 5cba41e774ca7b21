"""Handshake for fixed-length stream pipelines that stall as a whole."""

__all__ = ["stall_pipeline"]

from amaranth.hdl import Cat, Signal


def stall_pipeline(m, i, o, stages):
    """Drive the handshake of a ``stages``-deep pipeline from stream ``i`` to stream ``o``.

    Returns ``(en, valid)``: every stage register (and synchronous memory read port) must
    update only while ``en`` is high; ``valid[s]`` tells whether stage ``s + 1`` holds a beat.
    The pipeline advances when its last stage is empty or being taken, so it runs one beat
    per cycle and a stalled output freezes all stages, holding ``o.payload``.
    """
    en = Signal()
    valid = Signal(stages)
    m.d.comb += [
        en.eq(~o.valid | o.ready),
        i.ready.eq(en),
        o.valid.eq(valid[-1]),
    ]
    with m.If(en):
        m.d.sync += valid.eq(Cat(i.valid, valid[:-1]))
    return en, valid
