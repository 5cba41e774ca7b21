"""Handshakes for fixed-length stream pipelines: ones that stall as a whole, and ones that
never stall and queue their output."""

__all__ = ["stall_pipeline", "queued_pipeline", "QUEUE_LATENCY"]

from amaranth.hdl import Cat, Shape, Signal
from amaranth.lib.fifo import SyncFIFOBuffered


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


#: Cycles a beat spends in :func:`queued_pipeline`'s output queue when ``o`` is ready.
QUEUE_LATENCY = 2


def queued_pipeline(m, i, o, stages, *, name="queue"):
    """Drive the handshake of a ``stages``-deep pipeline that never stalls, from stream ``i``
    to stream ``o`` through an output queue.

    The stage registers load every cycle, bubbles included, so no enable reaches them: on a
    wide block a stall enable fans out to thousands of flip-flops and is the slowest net of
    the design. Beats leave the last stage into a queue that ``o`` reads; ``i`` is ready
    while the queue has room for every beat accepted and not yet read, so a stalled ``o``
    only stops new beats entering. ``i.ready`` depends on a register only, never on
    ``o.ready``.

    Returns ``(valid, payload)``: ``valid[s]`` tells whether stage ``s + 1`` holds a beat;
    the caller drives ``payload`` (laid out like ``o.payload``) from its last stage. A beat
    accepted in cycle ``t`` is on ``o`` from cycle ``t + stages + QUEUE_LATENCY`` and the
    pipeline takes one beat per cycle while ``o`` is ready.
    """
    # The queue holds every beat in flight at full rate (the latency plus the cycle in
    # which the occupancy count sees a read), so a ready ``o`` never throttles ``i``.
    depth = stages + QUEUE_LATENCY + 2
    layout = o.payload.shape()
    payload = Signal(layout)
    queue = SyncFIFOBuffered(width=Shape.cast(layout).width, depth=depth)
    m.submodules[name] = queue
    valid = Signal(stages)
    occupancy = Signal(range(depth + 1))
    accept = i.valid & i.ready
    taken = o.valid & o.ready
    m.d.comb += [
        i.ready.eq(occupancy != depth),
        queue.w_en.eq(valid[-1]),
        queue.w_data.eq(payload),
        o.valid.eq(queue.r_rdy),
        o.payload.eq(queue.r_data),
        queue.r_en.eq(o.ready),
    ]
    m.d.sync += [valid.eq(Cat(accept, valid[:-1])),
                 occupancy.eq(occupancy + accept - taken)]
    return valid, payload
