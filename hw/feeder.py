"""The feeder: a layer's activation and weight beats from the memories into the array core."""

__all__ = ["Feeder"]

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..protocol import ADD_TABLES, Mode
from .replica import replica

#: Beats each of the feeder's FIFOs holds.
FIFO_DEPTH = 8


def descriptor_layout():
    """What the feeder and the writeback take from a RUN descriptor: its fields (see
    :class:`~sparqforge.protocol.RunDescriptor`), the loop bounds minus one (``k_last``,
    ``m_last``, ``n_last``) and the window walk's (``out_w_last``, ``kw_last``)."""
    fields = {name: 16 for name in ("m_tiles", "n_tiles", "k_steps", "a_base", "a_stride",
                                    "w_base", "out_base", "out_stride", "group_base",
                                    "in_h", "in_w", "in_c", "out_w", "origin", "x_step",
                                    "row_step", "tap_row", "k_last", "m_last", "n_last",
                                    "out_w_last")}
    narrow = {name: 8 for name in ("step", "mode", "kh", "kw", "sh", "sw", "ph", "pw",
                                   "pad_code", "table", "kw_last")}
    return data.StructLayout({**fields, **narrow})


class Feeder(wiring.Component):
    """Reads a layer's beats out of the memories and streams them into the array core.

    On ``start`` it walks the descriptor's tiles: for each channel tile ``nt``, each row
    tile ``mt`` and each step ``s``, one activation word from every bank (``a_base + mt *
    a_stride`` on, ``step`` lanes per beat) and one weight word (``w_base + nt * k_steps + s``);
    the last step of a tile carries ``last`` and the tile's parameter group
    (``group_base + nt``) as its tag. Beats go through two FIFOs to the core; a beat is only
    issued while the FIFOs have room for every beat in flight, so the feeder never drops
    one and issues one beat per cycle while the core takes them.

    In ``Mode.CONV`` (on accelerators with ``conv``) a :class:`~.conv_walk.ConvWalk` gives
    each bank its own word (the row's window) and says which rows are padding: their beats
    carry ``pad_code`` in every lane. The walk holds a tile's last beat until the next
    tile's pixels are ready (a wait only when tiles have fewer than ``rows`` beats) and the
    first beat until the first tile's are (``rows + 2`` cycles after ``start``).

    On accelerators with ``depthwise`` every row's beat is a whole word, a lane per column
    (the array's lane operands): the selected lane in every lane, or in ``Mode.DEPTHWISE``
    the walk's word itself (channel tile ``nt``'s lanes), so each column gets its own
    channel.

    Latency: a beat issued in cycle ``t`` has its address in the memories' address registers
    in ``t + 1``, its words in the memories' data registers in ``t + 3``; its lanes are
    selected beside each bank in ``t + 4`` and it enters the FIFOs in ``t + 5``, padding
    substituted on the way (every stage registered: the banks sit far apart and far from
    the counters). In ``Mode.CONV`` every step is a cycle later: the walk's addresses are
    registered in ``t + 1``.

    Parameters
    ----------
    config : AcceleratorConfig
    a_signature, w_signature : stream.Signature
        The array core's ``a`` and ``w`` streams.

    Attributes
    ----------
    start : In(1)
        Pulse: begin the layer in ``desc`` (held from then until the layer ends).
    desc : In(descriptor_layout())
    act_addr : Out(ArrayLayout(16, rows)), weight_addr : Out(16)
        Memory addresses (each bank's, the weight memory's) of the beat being issued.
    act_data : In(ArrayLayout(ArrayLayout(8, cols), rows)), weight_data : In(weight_bits)
        The memories' registered read data, three cycles after the addresses.
    a, w : Out(stream)
        Beats for the array core; ``mode`` bits of the descriptor become the beats'
        ``dense`` and ``bypass`` flags.
    mode : Out(1)
        Threshold output (the core's output selection).
    add : Out(1), add_table : Out(range(ADD_TABLES))
        On accelerators with ``depthwise``: ``Mode.ADD`` and the descriptor's ``table``
        (the core's add stage), registered on ``start``, so that they change only when a
        layer starts (the descriptor's registers take every frame's header).
    """

    def __init__(self, config, *, a_signature, w_signature, tag_bits):
        self._config = config
        self._tag_bits = tag_bits
        self._a_elems = config.m if config.sparse else config.cols if config.depthwise else 1
        add = ({"add": Out(1), "add_table": Out(range(ADD_TABLES))} if config.depthwise
               else {})
        super().__init__({
            "start": In(1),
            "desc": In(descriptor_layout()),
            "act_addr": Out(data.ArrayLayout(16, config.rows)),
            "weight_addr": Out(16),
            "act_data": In(data.ArrayLayout(data.ArrayLayout(8, config.cols), config.rows)),
            "weight_data": In(config.weight_bits),
            "a": Out(a_signature),
            "w": Out(w_signature),
            "mode": Out(1),
            **add,
        })

    #: Cycles from issuing a beat to its entering the FIFOs (one less outside ``Mode.CONV``).
    latency = 6

    def elaborate(self, platform):
        m = Module()
        config, desc = self._config, self.desc
        rows, cols = config.rows, config.cols
        a_elems = self._a_elems
        lane_bits = config.lane_bits
        # ``Mode.CONV`` beats spend a cycle more in flight (the walk's address stage): one
        # more place in the FIFOs keeps them at one beat per cycle.
        conv = desc.mode[Mode.CONV.bit] if config.conv else Const(0)
        depth = FIFO_DEPTH + 1 if config.conv else FIFO_DEPTH

        a_beat = Signal(data.ArrayLayout(data.ArrayLayout(8, a_elems), rows))
        m.submodules.a_fifo = a_fifo = SyncFIFOBuffered(width=a_beat.shape().size,
                                                        depth=depth)
        # Weight words and their tag / last bits travel in two FIFOs pushed and popped
        # together, so the (often 64-bit) word FIFO is not widened past a machine word.
        m.submodules.w_fifo = w_fifo = SyncFIFOBuffered(width=config.weight_bits, depth=depth)
        side_layout = data.StructLayout({"tag": self._tag_bits, "last": 1})
        m.submodules.side_fifo = side_fifo = SyncFIFOBuffered(width=side_layout.size,
                                                              depth=depth)

        issuing = Signal()
        nt, mt, s = Signal(16), Signal(16), Signal(16)
        a_word, a_row = Signal(16), Signal(16)
        lane_off = Signal(range(cols + 1))
        w_addr, w_tile = Signal(16), Signal(16)
        # The loop tests, registered beside their counters (each is updated with the
        # counter it tests), so that a beat's issue and the counters' enables depend on
        # flags, not on 16-bit comparisons.
        s_last, mt_last, nt_last = Signal(), Signal(), Signal()   # s == k_last, ...
        lane_wrap = Signal()                                        # lane_off + step == cols
        # The beat's flags through the stages of its words (see the class docstring):
        # ``walked`` (``Mode.CONV`` only: the walk's addresses registered), ``issued``
        # (addresses registered), ``pending`` (in the block RAMs), ``landed`` (words
        # registered), ``selected`` (lanes selected), ``fed`` (into the FIFOs).
        beat_layout = data.StructLayout({"valid": 1, "lane": range(cols + 1),
                                         "tag": self._tag_bits, "last": 1})
        walked, issued, pending, landed, selected, fed = (
            Signal(beat_layout, name=name)
            for name in ("walked", "issued", "pending", "landed", "selected", "fed"))
        # Whether the FIFOs have room for one more beat (``room``; ``room_next`` is its next
        # value, for ``issue_next`` below). It is decided a cycle early with one place to
        # spare, for the beat issued in that cycle: beats in
        # flight plus in the FIFO grow by at most one per cycle. They are counted in
        # a counter per stream (issued, not yet popped: the stages' beats plus the FIFO's
        # level; the side FIFO moves with the weight FIFO) beside ``room``, rather than a sum
        # of the stages' flags and the FIFO levels, which spanned the feeder.
        a_credits = Signal(range(depth + 8), name="a_credits")
        w_credits = Signal(range(depth + 8), name="w_credits")
        room, room_next = Signal(), Signal()
        limit = Signal(range(depth + 1))
        m.d.comb += room_next.eq((a_credits < limit) & (w_credits < limit))
        m.d.sync += [limit.eq(Mux(conv, depth - 1, FIFO_DEPTH - 1)), room.eq(room_next)]

        if config.conv:
            # (Imported here: the walk's ports use this module's descriptor layout.)
            from .conv_walk import ConvWalk
            m.submodules.walk = walk = ConvWalk(config)
            m.d.comb += [walk.start.eq(self.start), walk.desc.eq(desc)]
            ready_next, lane_now = walk.ready_next, Mux(conv, walk.lane, lane_off)
        else:
            ready_next, lane_now = Const(1), lane_off
        # ``issue`` (``issuing & room & (~s_last | ready)``, cycle for cycle) enables every
        # counter of the feeder and the walk: it is decided a cycle early from the next
        # values of those registers (the walk's ``ready_next``), into copies of a register
        # that each drive one group of counters, so that no gate and no wide fan-out sit
        # between the flags and those enables.
        issuing_next, s_last_next = Signal(), Signal()
        issue_next = issuing_next & room_next & (~s_last_next | ready_next)
        issue = replica(m, issue_next, "issue")                # the beat's flags, the credits
        issue_count = replica(m, issue_next, "issue_count")    # the loop counters
        m.d.sync += [a_credits.eq(a_credits + issue - (a_fifo.r_en & a_fifo.r_rdy)),
                     w_credits.eq(w_credits + issue - (w_fifo.r_en & w_fifo.r_rdy))]
        now = Signal(beat_layout)
        m.d.comb += [now.valid.eq(issue), now.lane.eq(lane_now),
                     now.tag.eq(desc.group_base + nt), now.last.eq(s_last)]
        m.d.sync += [walked.eq(now), walked.valid.eq(issue & conv),
                     issued.eq(Mux(conv, walked.as_value(), now.as_value())),
                     pending.eq(issued), landed.eq(pending), selected.eq(landed),
                     fed.eq(selected)]
        # Each row's padding flag, beside the beat's flags from ``issued`` to ``pending``.
        pad_issued, pad_pending = Signal(rows), Signal(rows)
        if config.conv:
            m.d.comb += walk.issue.eq(replica(m, issue_next, "issue_walk")), walk.last.eq(s_last)
            m.d.sync += [pad_issued.eq(Mux(conv, ~walk.inside, 0)), pad_pending.eq(pad_issued)]
            # The walk's words are a cycle later than the counters': so is the weight word.
            w_walked = Signal(16)
            m.d.sync += w_walked.eq(w_addr)
            m.d.comb += self.weight_addr.eq(Mux(conv, w_walked, w_addr))
            for r in range(rows):
                m.d.comb += self.act_addr[r].eq(Mux(conv, walk.addr[r], a_word))
        else:
            m.d.comb += self.weight_addr.eq(w_addr)
            m.d.comb += [self.act_addr[r].eq(a_word) for r in range(rows)]

        # Activation beat: lanes lane_off .. lane_off + step - 1 of every bank's word, or
        # ``pad_code`` in each of them for a padding row. The lanes are selected beside each
        # bank, by multiplexers whose selects are registers of their own, so that only they
        # sit between the bank's data register and ``a_selected``; padding and the lanes
        # past ``step`` are substituted on the way to the FIFO (``a_fed``).
        a_pad = Signal(rows)
        for r in range(rows):
            word = self.act_data[r]
            lanes = Array(word[c] for c in range(cols))
            if config.depthwise:
                # Each bank's multiplexer has its own copy of ``landed.lane`` and of the mode
                # (constant while a layer runs).
                landed_lane = replica(m, pending.lane, f"landed_lane_{r}", reset_less=True)
                depthwise = replica(m, desc.mode[Mode.DEPTHWISE.bit], f"depthwise_{r}",
                                    reset_less=True)
                picked = lanes[landed_lane[:max(1, lane_bits)]] if cols > 1 else word[0]
            for e in range(a_elems):
                if config.depthwise:
                    lane = Mux(depthwise, word[e], picked)
                elif cols > 1:
                    # Each lane's multiplexer has its own copy of its index, ``landed.lane +
                    # e`` (no adder after the register).
                    lane = lanes[replica(m, (pending.lane + e)[:lane_bits],
                                         f"landed_index_{r}_{e}", reset_less=True)]
                else:
                    lane = word[0]
                m.d.comb += a_beat[r][e].eq(lane)
            if config.conv:
                landed_pad = replica(m, pad_pending[r], f"landed_pad_{r}", reset_less=True)
                m.d.comb += a_pad[r].eq(replica(m, landed_pad, f"selected_pad_{r}",
                                                reset_less=True))
        a_selected = Signal.like(a_beat, reset_less=True)
        w_selected = Signal.like(self.weight_data, reset_less=True)
        a_fed = Signal.like(a_beat, reset_less=True)
        w_fed = Signal.like(self.weight_data, reset_less=True)
        m.d.sync += [a_selected.eq(a_beat), w_selected.eq(self.weight_data),
                     w_fed.eq(w_selected)]
        for r in range(rows):
            for e in range(a_elems):
                lane = Mux(a_pad[r], desc.pad_code, a_selected[r][e])
                m.d.sync += a_fed[r][e].eq(lane if config.depthwise
                                           else Mux(e < desc.step, lane, 0))
        side_entry = Signal(side_layout)
        m.d.comb += [side_entry.tag.eq(fed.tag), side_entry.last.eq(fed.last),
                     a_fifo.w_data.eq(a_fed), a_fifo.w_en.eq(fed.valid),
                     w_fifo.w_data.eq(w_fed), w_fifo.w_en.eq(fed.valid),
                     side_fifo.w_data.eq(side_entry), side_fifo.w_en.eq(fed.valid)]

        step, k_steps = desc.step, desc.k_steps
        # ``issuing`` and ``s_last`` as of the next cycle, for ``issue_next``; ``s_next_last``
        # (``s + 1 == k_last``) keeps the 16-bit comparison off that path, and ``k_zero``
        # (``k_last == 0``, from ``start`` on) too, but for the cycle of ``start`` itself.
        s_next_last, k_zero = Signal(), Signal()
        m.d.comb += [issuing_next.eq(issuing), s_last_next.eq(s_last)]
        m.d.sync += [issuing.eq(issuing_next), s_last.eq(s_last_next)]
        with m.If(self.start):
            # A ``Mode.CONV`` layer issues once the walk has its first tile (``go``).
            m.d.comb += [issuing_next.eq(~conv), s_last_next.eq(desc.k_last == 0)]
            m.d.sync += [nt.eq(0), mt.eq(0), s.eq(0), lane_off.eq(0),
                         a_word.eq(desc.a_base), a_row.eq(desc.a_base),
                         w_addr.eq(desc.w_base), w_tile.eq(desc.w_base),
                         s_next_last.eq(desc.k_last == 1), k_zero.eq(desc.k_last == 0),
                         mt_last.eq(desc.m_last == 0), nt_last.eq(desc.n_last == 0),
                         lane_wrap.eq(step == cols)]
        with m.Elif(issue_count):
            with m.If(s_last):
                m.d.comb += s_last_next.eq(k_zero)
                m.d.sync += [s.eq(0), lane_off.eq(0), s_next_last.eq(desc.k_last == 1),
                             lane_wrap.eq(step == cols)]
                with m.If(mt_last):
                    m.d.sync += [mt.eq(0), a_row.eq(desc.a_base), a_word.eq(desc.a_base),
                                 nt.eq(nt + 1), w_tile.eq(w_tile + k_steps),
                                 w_addr.eq(w_tile + k_steps), mt_last.eq(desc.m_last == 0),
                                 nt_last.eq(nt + 1 == desc.n_last)]
                    with m.If(nt_last):
                        m.d.comb += issuing_next.eq(0)
                with m.Else():
                    m.d.sync += [mt.eq(mt + 1), a_row.eq(a_row + desc.a_stride),
                                 a_word.eq(a_row + desc.a_stride), w_addr.eq(w_tile),
                                 mt_last.eq(mt + 1 == desc.m_last)]
            with m.Else():
                m.d.comb += s_last_next.eq(s_next_last)
                m.d.sync += [s.eq(s + 1), w_addr.eq(w_addr + 1),
                             s_next_last.eq(s + 2 == desc.k_last)]
                with m.If(lane_wrap):
                    m.d.sync += [lane_off.eq(0), a_word.eq(a_word + 1),
                                 lane_wrap.eq(step == cols)]
                with m.Else():
                    m.d.sync += [lane_off.eq(lane_off + step),
                                 lane_wrap.eq(lane_off + (step << 1) == cols)]
        if config.conv:
            with m.Elif(walk.go):
                m.d.comb += issuing_next.eq(1)

        # FIFO heads -> core streams.
        nested = config.sparse or config.depthwise
        a_head = data.View(a_beat.shape(), a_fifo.r_data)
        side_head = data.View(side_layout, side_fifo.r_data)
        mode = desc.mode
        m.d.comb += [self.a.valid.eq(a_fifo.r_rdy), a_fifo.r_en.eq(self.a.ready),
                     self.w.valid.eq(w_fifo.r_rdy), w_fifo.r_en.eq(self.w.ready),
                     side_fifo.r_en.eq(self.w.ready), self.mode.eq(mode[Mode.THRESHOLD.bit])]
        for r in range(rows):
            for e in range(a_elems):
                lane = self.a.payload.data[r][e] if nested else self.a.payload.data[r]
                m.d.comb += lane.eq(a_head[r][e])
        m.d.comb += [self.w.payload.data.eq(w_fifo.r_data),
                     self.w.payload.tag.eq(side_head.tag), self.w.payload.last.eq(side_head.last)]
        if config.sparse:
            m.d.comb += self.w.payload.dense.eq(~mode[Mode.SPARSE.bit])
        if config.tables:
            m.d.comb += [self.a.payload.bypass.eq(~mode[Mode.ACT_TABLE.bit]),
                         self.w.payload.bypass.eq(~mode[Mode.WEIGHT_TABLE.bit])]
        if config.depthwise:
            # (The executor has checked ``table`` when ``Mode.ADD`` is set.)
            with m.If(self.start):
                m.d.sync += [self.add.eq(mode[Mode.ADD.bit]), self.add_table.eq(desc.table)]
        return m
