"""The convolution window walk: every row's activation word and padding flag for each beat of
a ``Mode.CONV`` layer (:class:`~sparqforge.protocol.RunDescriptor`)."""

__all__ = ["ConvWalk"]

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..protocol import Mode
from .feeder import descriptor_layout
from .replica import replica

#: Window coordinates: signed, from ``-255`` (the most padding) to past ``2 ** 16`` (see
#: ``_saturated``), so that no image row or column is ever reached by wrapping around.
COORD = signed(18)


def _saturated(value):
    """Whether a coordinate has passed ``2 ** 16``: beyond every image (``in_h`` and ``in_w``
    are 16-bit), so it stops growing and stays outside."""
    return value[16] & ~value[-1]


class ConvWalk(wiring.Component):
    """Walks the windows of a ``Mode.CONV`` layer for the feeder.

    For each beat the feeder issues, row ``r`` of row tile ``mt`` (output pixel ``m = mt *
    rows + r``) reads word ``pb(m) + ky * tap_row + kx * a_stride + c // cols`` of its bank,
    lanes from ``c % cols`` on, where the beat's window element ``e = s * step`` is tap
    ``(ky, kx)``, channel ``c``; it is padding unless ``0 <= iy + ky < in_h`` and ``0 <= ix +
    kx < in_w`` (``RunDescriptor``'s docstring gives ``pb``, ``iy``, ``ix``). In
    ``Mode.DEPTHWISE`` (on accelerators with ``depthwise``; ``in_c`` 1, one tap per beat) the
    word of channel tile ``nt`` is ``nt`` further on.

    Two parts. The tap counters (``c``, ``kx``, ``ky`` as a lane, a word offset and the
    window bounds ``-ky <= iy < in_h - ky``, ``-kx <= ix < in_w - kx``) are shared by every
    row and advance with each issued beat, restarting with each tile. A pixel generator
    steps through the output pixels one per cycle (``ox``, ``ix += sw``, ``pb += x_step``;
    at the end of an output row ``ix = -pw``, ``iy += sh``, ``pb += row_step``; after
    ``m_tiles * rows`` pixels it starts again for the next channel tile, from ``origin + nt``
    in ``Mode.DEPTHWISE``) and writes them into ``rows`` slots, a tile ahead; when a tile's
    last beat issues, each row's registers take their slot's pixel and the generator fills
    the slots again.

    Latency: the addresses and flags of the beat issued in cycle ``t`` are on ``addr`` and
    ``inside`` in ``t + 1`` (one adder and four comparisons per row, registered). ``go``
    comes ``rows + 1`` cycles after ``start`` (the first tile's pixels are in the slots) and
    the first beat may issue in the next; a tile's last beat only once the next tile's pixels
    will be in the slots (``ready``), which costs nothing when tiles have at least ``rows``
    beats.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    start : In(1)
        Pulse: begin the layer in ``desc``.
    desc : In(descriptor_layout())
    issue : In(1)
        The feeder issues a beat in this cycle.
    last : In(1)
        That beat is its tile's last.
    go : Out(1)
        A ``Mode.CONV`` layer's first tile is ready: its beats may issue from the next cycle.
    ready : Out(1)
        A tile's last beat may issue in this cycle (high outside ``Mode.CONV``).
    ready_next : Out(1)
        ``ready`` as of the next cycle, given this cycle's ``start``, ``issue`` and ``last``
        (for a feeder that registers its decision to issue a cycle early).
    lane : Out(range(cols + 1))
        The first lane of the beat issued in this cycle.
    addr : Out(ArrayLayout(16, rows)), inside : Out(rows)
        Each row's word and whether it lies inside the image (else the beat is padding), for
        the beat issued in the previous cycle.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "start": In(1),
            "desc": In(descriptor_layout()),
            "issue": In(1),
            "last": In(1),
            "go": Out(1),
            "ready": Out(1),
            "ready_next": Out(1),
            "lane": Out(range(config.cols + 1)),
            "addr": Out(data.ArrayLayout(16, config.rows)),
            "inside": Out(config.rows),
        })

    def elaborate(self, platform):
        m = Module()
        rows = self._config.rows
        tap_off, lo_y, hi_y, lo_x, hi_x = self._taps(m)
        slots, load = self._pixels(m)

        # Each row: its tile's pixel (the slot's while the tile's first beat is issued, as
        # the row registers load only then), plus the shared tap offset, and the bounds.
        for r in range(rows):
            pixel = {name: Signal(shape, name=f"{name}_{r}")
                     for name, shape in (("pb", 16), ("iy", COORD), ("ix", COORD))}
            with m.If(load[r]):
                m.d.sync += [pixel[name].eq(slots[name][r]) for name in pixel]
            pb, iy, ix = (Mux(load[r], slots[name][r], pixel[name]) for name in pixel)
            m.d.sync += [self.addr[r].eq(pb + tap_off),
                         self.inside[r].eq((iy >= lo_y) & (iy < hi_y) & (ix >= lo_x)
                                           & (ix < hi_x))]
        return m

    def _taps(self, m):
        """The tap counters, shared by every row, for the beat issued in this cycle; returns
        the beat's word offset and window bounds."""
        desc, step, cols = self.desc, self.desc.step, self._config.cols
        lane, lane_wrap = self.lane, Signal()      # lane_wrap: lane + step == cols
        c, c_wrap = Signal(16), Signal()           # c_wrap: c + step == in_c (the tap's end)
        kx, kx_wrap = Signal(8), Signal()          # kx_wrap: kx == kw - 1
        # ky * tap_row, that + kx * a_stride, that + c // cols: the beat's word offset.
        row_off, tap_base, tap_off = Signal(16), Signal(16), Signal(16)
        lo_x, hi_x, lo_y, hi_y = (Signal(COORD, name=name)
                                  for name in ("lo_x", "hi_x", "lo_y", "hi_y"))
        # ``ky`` has no bound of its own (``kh`` is informative): once ``in_h - ky`` is below
        # every ``iy`` (at least -255) the bounds stop, so that they never wrap around.
        y_floor = Signal()

        with m.If(self.start | (self.issue & self.last)):
            m.d.sync += [lane.eq(0), lane_wrap.eq(step == cols), c.eq(0),
                         c_wrap.eq(step == desc.in_c), kx.eq(0), kx_wrap.eq(desc.kw_last == 0),
                         row_off.eq(0), tap_base.eq(0), tap_off.eq(0), lo_x.eq(0),
                         hi_x.eq(desc.in_w), lo_y.eq(0), hi_y.eq(desc.in_h), y_floor.eq(0)]
        with m.Elif(self.issue):
            with m.If(c_wrap):
                # The next tap starts at channel 0, lane 0 of its own word.
                m.d.sync += [lane.eq(0), lane_wrap.eq(step == cols), c.eq(0),
                             c_wrap.eq(step == desc.in_c)]
                with m.If(kx_wrap):
                    m.d.sync += [kx.eq(0), kx_wrap.eq(desc.kw_last == 0),
                                 row_off.eq(row_off + desc.tap_row),
                                 tap_base.eq(row_off + desc.tap_row),
                                 tap_off.eq(row_off + desc.tap_row),
                                 lo_x.eq(0), hi_x.eq(desc.in_w)]
                    with m.If(~y_floor):
                        m.d.sync += [lo_y.eq(lo_y - 1), hi_y.eq(hi_y - 1),
                                     y_floor.eq(hi_y == -255)]
                with m.Else():
                    m.d.sync += [kx.eq(kx + 1), kx_wrap.eq(kx + 1 == desc.kw_last),
                                 tap_base.eq(tap_base + desc.a_stride),
                                 tap_off.eq(tap_base + desc.a_stride),
                                 lo_x.eq(lo_x - 1), hi_x.eq(hi_x - 1)]
            with m.Elif(lane_wrap):
                m.d.sync += [lane.eq(0), lane_wrap.eq(step == cols), tap_off.eq(tap_off + 1),
                             c.eq(c + step), c_wrap.eq(c + (step << 1) == desc.in_c)]
            with m.Else():
                m.d.sync += [lane.eq(lane + step), lane_wrap.eq(lane + (step << 1) == cols),
                             c.eq(c + step), c_wrap.eq(c + (step << 1) == desc.in_c)]
        return tap_off, lo_y, hi_y, lo_x, hi_x

    def _pixels(self, m):
        """The pixel generator and its slots; returns the slots and each row's ``load``
        (registered: this cycle's beat is the first of the tile in the slots)."""
        desc, rows = self.desc, self._config.rows
        conv = desc.mode[Mode.CONV.bit]
        slots = {name: [Signal(shape, name=f"slot_{name}_{r}") for r in range(rows)]
                 for name, shape in (("pb", 16), ("iy", COORD), ("ix", COORD))}
        g_pb, g_iy, g_ix = Signal(16), Signal(COORD), Signal(COORD)
        g_ox, g_ox_last = Signal(16), Signal()     # g_ox_last: g_ox == out_w - 1
        g_mt, g_mt_last = Signal(16), Signal()     # g_mt_last: g_mt == m_tiles - 1
        slot = Signal(rows, init=1)                # one-hot: the slot written next
        count = Signal(range(rows + 1))            # slots written for the next tile
        full, almost = Signal(), Signal()          # count == rows, count >= rows - 1
        almost_next = Signal()
        running, priming = Signal(), Signal()
        # ``load`` fans out to every row's registers: a copy per row, and one for the
        # generator. The beat issued with ``issue & last`` is followed by the first of the
        # tile in the slots (``go`` for the layer's first).
        load_next = (conv & self.issue & self.last) | self.go
        load = replica(m, [load_next] * rows, "walk_load")
        load_gen = replica(m, load_next, "walk_load_gen")
        shift = running & (~full | load_gen)
        m.d.comb += self.go.eq(priming & full)
        # The next tile is in the slots in the next cycle (``rows == 1``: always, as the
        # generator then writes the only slot in every cycle it is not full).
        m.d.comb += [self.ready.eq(1 if rows == 1 else almost & ~load_gen),
                     self.ready_next.eq(1 if rows == 1 else almost_next & ~load_next)]
        m.d.comb += almost_next.eq(almost)
        m.d.sync += almost.eq(almost_next)

        # The pixel address the next channel tile starts from: in ``Mode.DEPTHWISE`` its
        # word offset ``nt`` is added here, once per channel tile, rather than to every
        # row's address or to the tap counters (both on the path of each beat).
        depthwise = desc.mode[Mode.DEPTHWISE.bit] if self._config.depthwise else 0
        g_origin = Signal(16)                      # origin + nt + 1 (Mode.DEPTHWISE)

        def restart(origin):
            return [g_pb.eq(origin), g_origin.eq(origin + depthwise), g_iy.eq(-desc.ph),
                    g_ix.eq(-desc.pw), g_ox.eq(0), g_ox_last.eq(desc.out_w_last == 0),
                    g_mt.eq(0), g_mt_last.eq(desc.m_last == 0), slot.eq(1)]

        with m.If(self.start):
            m.d.comb += almost_next.eq(~conv)
            m.d.sync += [running.eq(conv), priming.eq(conv), count.eq(0), full.eq(0),
                         *restart(desc.origin)]
        with m.Elif(shift):
            for r in range(rows):
                with m.If(slot[r]):
                    m.d.sync += [slots["pb"][r].eq(g_pb), slots["iy"][r].eq(g_iy),
                                 slots["ix"][r].eq(g_ix)]
            m.d.sync += slot.eq(slot.rotate_left(1))
            with m.If(slot[rows - 1] & g_mt_last):
                # Every row tile's pixels are out: the next channel tile walks them again.
                m.d.sync += restart(g_origin)
            with m.Else():
                with m.If(slot[rows - 1]):
                    m.d.sync += [g_mt.eq(g_mt + 1), g_mt_last.eq(g_mt + 1 == desc.m_last)]
                with m.If(g_ox_last):
                    m.d.sync += [g_ox.eq(0), g_ox_last.eq(desc.out_w_last == 0),
                                 g_ix.eq(-desc.pw), g_pb.eq(g_pb + desc.row_step)]
                    with m.If(~_saturated(g_iy)):
                        m.d.sync += g_iy.eq(g_iy + desc.sh)
                with m.Else():
                    m.d.sync += [g_ox.eq(g_ox + 1), g_ox_last.eq(g_ox + 1 == desc.out_w_last),
                                 g_pb.eq(g_pb + desc.x_step)]
                    with m.If(~_saturated(g_ix)):
                        m.d.sync += g_ix.eq(g_ix + desc.sw)
            with m.If(load_gen):
                # The rows take the slots as the generator writes the first of the next.
                m.d.comb += almost_next.eq(rows <= 2)
                m.d.sync += [count.eq(1), full.eq(rows == 1)]
            with m.Else():
                m.d.comb += almost_next.eq(count + 2 >= rows)
                m.d.sync += [count.eq(count + 1), full.eq(count + 1 == rows)]
        with m.If(self.go):
            m.d.sync += priming.eq(0)
        return slots, load
