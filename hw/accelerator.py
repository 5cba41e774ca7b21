"""The accelerator top: host link, command executor, memories, layer controller and the
array core. The same top serves Verilator and the boards."""

__all__ = ["Accelerator", "PROTOCOL_VERSION"]

from amaranth.hdl import Array, Cat, Const, DomainRenamer, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..sw.runtime.protocol import WEIGHT_TABLE_ALL_BIT, Command, DeviceInfo, Space, Status
from .array_core import ArrayCore
from .host_link import FrameReceiver, FrameTransmitter
from .replica import replica, replica_signal
from .sliced_memory import SlicedMemory, block_ram_bits

PROTOCOL_VERSION = 1
_HEADER = 22          # seq, command, and at most a 20-byte RUN descriptor
_REQUANT_BYTES = 10
_FIFO_DEPTH = 8
_SETTLE = 32          # idle cycles after which the core's registers no longer change


def _positive(name, value, low=1, high=1 << 16):
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TypeError(f"{name} must be an integer in {low}..{high}, not {value!r}")


class Accelerator(wiring.Component):
    """A complete inference accelerator behind a framed byte link.

    The host sends SLIP frames with a CRC-32 (``docs/protocol.md``); each verified frame is
    one command: INFO (report the configuration), WRITE (fill a memory or table), READ
    (return activation words) or RUN (execute one layer, tiled over the array). Every frame
    gets exactly one reply, after the command has completed; a damaged frame gets a CRC or
    LENGTH reply and changes nothing.

    Memories: ``rows`` activation banks of ``act_depth`` words of ``cols`` bytes (row ``m``
    of a matrix lives in bank ``m % rows``), a weight memory of ``w_depth`` beats, and the
    tables of the :class:`~sparqforge.hw.array_core.ArrayCore` (requantization parameters
    for ``groups`` channel groups; with ``tables`` also the operand tables and thresholds).
    Activations are unsigned ``a_bits`` operands, weights signed ``w_bits`` operands; with
    ``tables`` both are stored as 8-bit codes that the tables map to those operands.

    RUN streams one weight word and one word from every bank per cycle through two small
    FIFOs into the core (``rows * cols`` MACs per cycle, times ``m / n`` in N:M sparse mode)
    and writes each output row back into its bank; it replies with the cycle count.

    Parameters
    ----------
    rows, cols, a_bits, w_bits, max_depth, groups, sparsity :
        The array (see :class:`~sparqforge.hw.mac_array.MacArray`); accumulators must fit
        31 bits so that thresholds fit 32.
    tables : bool
        Include the power-exponent units (operand tables, threshold unit).
    threshold_bits : int
        Threshold unit code width (with ``tables``).
    act_depth, w_depth : int
        Words per activation bank (a power of two) and weight words.
    frame_bytes : int
        Receive buffer; the largest frame the host may send.
    product_stages : int
        Pipeline stages of each MAC product (see
        :class:`~sparqforge.hw.mac_array.MacArray`); 2 for multipliers built from LUTs.
    gated : bool
        Put the command executor with the memories, and the feeder with the array core and
        writeback, into clock domains ``exec`` and ``core`` of their own (the same clock as
        ``sync`` in hardware). A simulation top stops each while its ``active`` bit is low,
        which skips idle work without changing any result: a domain is only reported idle
        after ``_SETTLE`` cycles without work, by which time none of its registers changes.

    Attributes
    ----------
    rx : In(stream(8)), tx : Out(stream(8))
        The host link.
    idle : Out(1)
        No frame is being received, executed or answered.
    active : Out(exec, core)
        The ``exec`` / ``core`` domain has work or has not yet settled since its last work.
    """

    def __init__(self, *, rows=8, cols=8, a_bits=8, w_bits=8, sparsity=None, tables=False,
                 threshold_bits=4, act_depth=1024, w_depth=2048, groups=16, max_depth=4096,
                 frame_bytes=1088, product_stages=1, gated=False):
        _positive("Activation depth", act_depth, 2, 1 << 16)
        if act_depth & (act_depth - 1):
            raise TypeError(f"Activation depth must be a power of two, not {act_depth}")
        _positive("Weight depth", w_depth, 1, (1 << 16) - 1)
        _positive("Group count", groups, 1, 1 << 12)
        _positive("Frame size", frame_bytes, 64, 1 << 15)
        if tables and (a_bits != 8 or w_bits != 8):
            raise TypeError(f"Tables map 8-bit codes to 8-bit operands; use a_bits=w_bits=8, "
                            f"not {a_bits} and {w_bits}")
        self._core = ArrayCore(
            rows=rows, cols=cols, a_bits=a_bits, a_signed=False, w_bits=w_bits, w_signed=True,
            max_depth=max_depth, groups=groups, sparsity=sparsity, tables=tables,
            requant=True, threshold_bits=threshold_bits if tables else None,
            out_bits=a_bits, out_signed=False, product_stages=product_stages)
        if self._core.acc_bits > 31:
            raise ValueError(f"Maximum reduction depth {max_depth} needs a "
                             f"{self._core.acc_bits}-bit accumulator; the accelerator "
                             f"allows 31 bits")
        self._rows, self._cols = rows, cols
        self._a_bits, self._w_bits = a_bits, w_bits
        self._sparsity = sparsity
        self._tables = tables
        self._threshold_bits = threshold_bits if tables else 0
        self._act_depth, self._w_depth = act_depth, w_depth
        self._groups = groups
        self._max_depth = max_depth
        self._frame_bytes = frame_bytes
        self._product_stages = product_stages
        self._gated = gated
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "idle": Out(1),
            "active": Out(data.StructLayout({"exec": 1, "core": 1})),
        })

    core = property(lambda self: self._core)
    gated = property(lambda self: self._gated)

    @property
    def code_bits(self):
        """Stored weight code width."""
        return 8 if self._tables else self._w_bits

    @property
    def weight_bits(self):
        """Bits of one weight word (one beat's weights: codes and indices)."""
        n = 1 if self._sparsity is None else self._sparsity[0]
        index = 0 if self._sparsity is None else self._core.array.index_bits
        return self._cols * n * (self.code_bits + index)

    @property
    def info(self):
        """What INFO reports (a :class:`~sparqforge.sw.runtime.protocol.DeviceInfo`)."""
        n, m = self._sparsity or (0, 0)
        return DeviceInfo(
            version=PROTOCOL_VERSION, rows=self._rows, cols=self._cols, a_bits=self._a_bits,
            w_bits=self._w_bits, n=n, m=m, tables=int(self._tables),
            threshold_bits=self._threshold_bits, act_depth_bits=ceil_log2(self._act_depth),
            w_depth=self._w_depth, weight_bytes=-(-self.weight_bits // 8), groups=self._groups,
            max_payload=self._frame_bytes - 16, acc_bits=self._core.acc_bits)

    @property
    def params(self):
        return {"rows": self._rows, "cols": self._cols, "a_bits": self._a_bits,
                "w_bits": self._w_bits, "sparsity": self._sparsity, "tables": self._tables,
                "threshold_bits": self._threshold_bits, "act_depth": self._act_depth,
                "w_depth": self._w_depth, "groups": self._groups, "max_depth": self._max_depth,
                "frame_bytes": self._frame_bytes, "product_stages": self._product_stages}

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        info = self.info
        sparse_array = self._sparsity is not None
        a_elems = self._sparsity[1] if sparse_array else 1
        lane_bits = ceil_log2(cols)
        depth_bits = info.act_depth_bits

        # The link always ticks; with ``gated`` the executor and the core get clock domains
        # of their own that a simulation may stop while they are settled (see ``active``).
        exec_domain = "exec" if self._gated else "sync"
        core_domain = "core" if self._gated else "sync"
        m.submodules.receiver = rx = FrameReceiver(self._frame_bytes, header_bytes=_HEADER)
        m.submodules.transmitter = tx = FrameTransmitter()
        core = self._core
        m.submodules.core = (core if core_domain == "sync"
                             else DomainRenamer({"sync": core_domain})(core))
        wiring.connect(m, wiring.flipped(self.rx), rx.rx)
        wiring.connect(m, tx.tx, wiring.flipped(self.tx))
        # Reply bytes pass through a small FIFO: the executor's byte multiplexer and the
        # transmitter's state machine are then never in one path, and the executor sees a
        # ready that comes from a register.
        m.submodules.tx_fifo = tx_fifo = SyncFIFOBuffered(width=9, depth=4)
        m.d.comb += [tx.i.payload.data.eq(tx_fifo.r_data[:8]),
                     tx.i.payload.last.eq(tx_fifo.r_data[8]),
                     tx.i.valid.eq(tx_fifo.r_rdy), tx_fifo.r_en.eq(tx.i.ready)]

        # ---- memories --------------------------------------------------------------------
        # Each memory is stored in whole-byte slices no wider than one block RAM at its
        # depth, so no multiplexer follows the block RAMs' read data.
        def sliced(width, depth):
            return SlicedMemory(width=width, depth=depth, domain=exec_domain,
                                slice_bits=max(8, block_ram_bits(depth) // 8 * 8))
        banks = []
        for r in range(rows):
            m.submodules[f"act_bank_{r}"] = bank = sliced(cols * 8, self._act_depth)
            banks.append((bank.read, bank.write))
        m.submodules.weights = weights = sliced(self.weight_bits, self._w_depth)
        w_read, w_write = weights.read, weights.write

        # ---- RUN descriptor and controller state --------------------------------------
        desc = {name: Signal(16, name=f"run_{name}") for name in (
            "m_tiles", "n_tiles", "k_steps", "a_base", "a_stride", "w_base", "out_base",
            "out_stride", "group_base")}
        w_words = Signal(32)   # n_tiles * k_steps, accumulated in RUN_SIZE
        mul_a, mul_b = Signal(32), Signal(16)
        # The loop bounds minus one, registered in RUN_SIZE: the feeder's loop tests become
        # equality compares instead of a subtraction and a compare each.
        k_last, m_last, n_last = Signal(16), Signal(16), Signal(16)
        checks = Signal(6)     # the RUN command's checks, registered in RUN_CHECK
        run_ok = Signal()      # every check passed, registered in RUN_VERDICT
        step = Signal(8)
        mode = Signal(8)
        # Pulse: begin the layer in ``desc``. Registered, one copy for the feeder and one
        # for the writeback (each drives a few hundred counter bits far from the executor).
        start_feed = replica_signal(1, name="start_feed")
        start_write = replica_signal(1, name="start_write")
        m.d[exec_domain] += [start_feed.eq(0), start_write.eq(0)]
        running = Signal()
        finished = Signal()  # pulse: the cycle after the last output row was written
        m.d[exec_domain] += finished.eq(0)
        cycles = Signal(32)

        # ---- feeder: memories -> FIFOs -> core ------------------------------------------
        a_width = rows * a_elems * 8
        def in_core(fifo):
            return fifo if core_domain == "sync" else DomainRenamer({"sync": core_domain})(fifo)
        a_fifo = SyncFIFOBuffered(width=a_width, depth=_FIFO_DEPTH)
        m.submodules.a_fifo = in_core(a_fifo)
        # Weight words and their tag / last bits travel in two FIFOs pushed and popped
        # together, so the (often 64-bit) word FIFO is not widened past a machine word.
        w_fifo = SyncFIFOBuffered(width=self.weight_bits, depth=_FIFO_DEPTH)
        m.submodules.w_fifo = in_core(w_fifo)
        side_layout = data.StructLayout({"tag": core.tag_bits, "last": 1})
        side_fifo = SyncFIFOBuffered(width=side_layout.size, depth=_FIFO_DEPTH)
        m.submodules.side_fifo = in_core(side_fifo)

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
        # A beat issued in cycle t has its addresses in each memory's own address register
        # in t + 1 (``issued``; the banks sit far apart and far from the counters), its
        # words land in t + 2 and are registered (``bank_q``, ``w_q``; stage ``landed``)
        # before anything else sees them: an ECP5 block RAM without its output register
        # takes most of a 100 MHz cycle from clock to data. Each bank's lanes are selected
        # and registered (``selected``) beside the bank, and the beat registered once more
        # (``fed``) before the FIFOs take it in t + 5.
        beat_layout = data.StructLayout({"valid": 1, "lane": range(cols + 1),
                                         "tag": core.tag_bits, "last": 1})
        issued, pending, landed, selected, fed = (Signal(beat_layout, name=name) for name in (
            "issued", "pending", "landed", "selected", "fed"))
        in_flight = (issued.valid + pending.valid + landed.valid + selected.valid
                     + fed.valid)
        # Whether the FIFOs have room for one more beat, registered so that ``issue`` is
        # the AND of two registers: it fans out to every feeder counter. It is decided a
        # cycle early with one place to spare, for the beat issued in that cycle: beats in
        # flight plus in the FIFO grow by at most one per cycle.
        room = Signal()
        m.d[core_domain] += room.eq((a_fifo.level + in_flight < _FIFO_DEPTH - 1)
                                    & (w_fifo.level + in_flight < _FIFO_DEPTH - 1))
        issue = issuing & room

        exec_bank_addr = Signal(depth_bits)
        exec_reading = Signal()   # registered: high exactly in READ_ISSUE
        m.d[exec_domain] += exec_reading.eq(0)
        # The memories are read every cycle; only an issued beat is kept (``fed``). Their
        # read enables would otherwise be one more net from the issue decision to every
        # block RAM.
        for r, (read, _) in enumerate(banks):
            m.d.comb += read.addr.eq(replica(
                m, Mux(exec_reading, exec_bank_addr, a_word), f"bank_addr_{r}",
                reset_less=True, domain=exec_domain))
        m.d.comb += w_read.addr.eq(replica(m, w_addr, "weight_addr", reset_less=True,
                                           domain=exec_domain))
        m.d[core_domain] += [issued.valid.eq(issue), issued.lane.eq(lane_off),
                             issued.tag.eq(desc["group_base"] + nt), issued.last.eq(s_last),
                             pending.eq(issued), landed.eq(pending), selected.eq(landed),
                             fed.eq(selected)]
        bank_q = [Signal(data.ArrayLayout(8, cols), name=f"bank_q_{r}", reset_less=True)
                  for r in range(rows)]
        w_q = Signal(self.weight_bits, reset_less=True)
        m.d[exec_domain] += [q.eq(read.data) for q, (read, _) in zip(bank_q, banks)]
        m.d[exec_domain] += w_q.eq(w_read.data)

        # Activation beat: lanes lane_off .. lane_off + step - 1 of every bank's word.
        a_beat = Signal(data.ArrayLayout(data.ArrayLayout(8, a_elems), rows))
        for r, word in enumerate(bank_q):
            lanes = Array(word[c] for c in range(cols))
            # Each bank's multiplexer has its own copy of ``landed.lane``.
            landed_lane = replica(m, pending.lane, f"landed_lane_{r}", reset_less=True,
                                  domain=core_domain)
            for e in range(a_elems):
                index = landed_lane + e
                m.d.comb += a_beat[r][e].eq(Mux(e < step, lanes[index[:max(1, lane_bits)]]
                                               if cols > 1 else word[0], 0))
        a_selected = Signal.like(a_beat, reset_less=True)
        w_selected = Signal.like(w_q, reset_less=True)
        a_fed = Signal.like(a_beat, reset_less=True)
        w_fed = Signal.like(w_q, reset_less=True)
        m.d[core_domain] += [a_selected.eq(a_beat), w_selected.eq(w_q),
                             a_fed.eq(a_selected), w_fed.eq(w_selected)]
        side_entry = Signal(side_layout)
        m.d.comb += [side_entry.tag.eq(fed.tag), side_entry.last.eq(fed.last),
                     a_fifo.w_data.eq(a_fed), a_fifo.w_en.eq(fed.valid),
                     w_fifo.w_data.eq(w_fed), w_fifo.w_en.eq(fed.valid),
                     side_fifo.w_data.eq(side_entry), side_fifo.w_en.eq(fed.valid)]

        with m.If(start_feed):
            m.d[core_domain] += [issuing.eq(1), nt.eq(0), mt.eq(0), s.eq(0), lane_off.eq(0),
                                 a_word.eq(desc["a_base"]), a_row.eq(desc["a_base"]),
                                 w_addr.eq(desc["w_base"]), w_tile.eq(desc["w_base"]),
                                 s_last.eq(k_last == 0), mt_last.eq(m_last == 0),
                                 nt_last.eq(n_last == 0), lane_wrap.eq(step == cols)]
        with m.Elif(issue):
            with m.If(s_last):
                m.d[core_domain] += [s.eq(0), lane_off.eq(0), s_last.eq(k_last == 0),
                                     lane_wrap.eq(step == cols)]
                with m.If(mt_last):
                    m.d[core_domain] += [mt.eq(0), a_row.eq(desc["a_base"]),
                                         a_word.eq(desc["a_base"]), nt.eq(nt + 1),
                                         w_tile.eq(w_tile + desc["k_steps"]),
                                         w_addr.eq(w_tile + desc["k_steps"]),
                                         mt_last.eq(m_last == 0), nt_last.eq(nt + 1 == n_last)]
                    with m.If(nt_last):
                        m.d[core_domain] += issuing.eq(0)
                with m.Else():
                    m.d[core_domain] += [mt.eq(mt + 1), a_row.eq(a_row + desc["a_stride"]),
                                         a_word.eq(a_row + desc["a_stride"]), w_addr.eq(w_tile),
                                         mt_last.eq(mt + 1 == m_last)]
            with m.Else():
                m.d[core_domain] += [s.eq(s + 1), w_addr.eq(w_addr + 1),
                                     s_last.eq(s + 1 == k_last)]
                with m.If(lane_wrap):
                    m.d[core_domain] += [lane_off.eq(0), a_word.eq(a_word + 1),
                                         lane_wrap.eq(step == cols)]
                with m.Else():
                    m.d[core_domain] += [lane_off.eq(lane_off + step),
                                         lane_wrap.eq(lane_off + (step << 1) == cols)]

        # FIFO heads -> core streams.
        a_head = data.View(a_beat.shape(), a_fifo.r_data)
        side_head = data.View(side_layout, side_fifo.r_data)
        m.d.comb += [core.a.valid.eq(a_fifo.r_rdy), a_fifo.r_en.eq(core.a.ready),
                     core.w.valid.eq(w_fifo.r_rdy), w_fifo.r_en.eq(core.w.ready),
                     side_fifo.r_en.eq(core.w.ready), core.mode.eq(mode[1])]
        for r in range(rows):
            for e in range(a_elems):
                target = core.a.payload.data[r][e] if sparse_array else core.a.payload.data[r]
                m.d.comb += target.eq(a_head[r][e])
        m.d.comb += [core.w.payload.data.eq(w_fifo.r_data),
                     core.w.payload.tag.eq(side_head.tag), core.w.payload.last.eq(side_head.last)]
        if sparse_array:
            m.d.comb += core.w.payload.dense.eq(~mode[0])
        if self._tables:
            m.d.comb += [core.a.payload.bypass.eq(~mode[2]), core.w.payload.bypass.eq(~mode[3])]

        # ---- writeback: output rows -> banks --------------------------------------------
        out_r = Signal(range(rows))
        out_mt, out_nt = Signal(16), Signal(16)
        # The writeback's loop tests, registered with their counters (as in the feeder).
        out_r_last, out_mt_last, out_nt_last = Signal(), Signal(), Signal()
        # ``out_col`` is out_base + out_nt; ``out_word`` the current output row's word. Each
        # is updated by one addition.
        out_col, out_word = Signal(16), Signal(16)
        m.d.comb += core.o.ready.eq(1)
        wb_addr = Signal(depth_bits)
        wb_data = Signal(data.ArrayLayout(8, cols))
        wb_en = Signal(rows)
        # Output codes narrower than a byte are stored zero-extended.
        m.d.comb += [wb_addr.eq(out_word),
                     wb_data.eq(Cat(*(lane.as_unsigned() if core.out_bits == 8 else
                                      Cat(lane, Const(0, 8 - core.out_bits))
                                      for lane in core.o.payload.data)))]
        with m.If(core.o.valid):
            m.d.comb += wb_en.eq(1 << out_r)
        with m.If(start_write):
            m.d[core_domain] += [out_r.eq(0), out_mt.eq(0), out_nt.eq(0),
                                 out_r_last.eq(rows == 1), out_mt_last.eq(m_last == 0),
                                 out_nt_last.eq(n_last == 0),
                                 out_col.eq(desc["out_base"]), out_word.eq(desc["out_base"])]
            m.d[exec_domain] += [running.eq(1), cycles.eq(0)]
        with m.Elif(running):
            m.d[exec_domain] += cycles.eq(cycles + 1)
        with m.If(core.o.valid):
            with m.If(out_r_last):
                m.d[core_domain] += [out_r.eq(0), out_r_last.eq(rows == 1)]
                with m.If(out_mt_last):
                    m.d[core_domain] += [out_mt.eq(0), out_nt.eq(out_nt + 1),
                                         out_col.eq(out_col + 1), out_word.eq(out_col + 1),
                                         out_mt_last.eq(m_last == 0),
                                         out_nt_last.eq(out_nt + 1 == n_last)]
                    with m.If(out_nt_last):
                        m.d[exec_domain] += running.eq(0)
                        m.d[exec_domain] += finished.eq(1)
                with m.Else():
                    m.d[core_domain] += [out_mt.eq(out_mt + 1),
                                         out_word.eq(out_word + desc["out_stride"]),
                                         out_mt_last.eq(out_mt + 1 == m_last)]
            with m.Else():
                m.d[core_domain] += [out_r.eq(out_r + 1), out_r_last.eq(out_r + 1 == rows - 1)]

        # The core domain only has work while a layer runs or a table is written; after it
        # has been idle long enough for every pipeline register to settle (the deepest holds
        # a value for at most ``_SETTLE`` cycles) it may stop ticking without any visible
        # difference. Simulation uses ``core_active`` to gate the core clock.
        settle = Signal(range(_SETTLE + 1), init=_SETTLE)
        busy = Signal()
        with m.If(busy):
            m.d[exec_domain] += settle.eq(0)
        with m.Elif(settle != _SETTLE):
            m.d[exec_domain] += settle.eq(settle + 1)
        exec_settle = Signal(range(_SETTLE + 1), init=_SETTLE)
        working = Signal()
        with m.If(working):
            m.d[exec_domain] += exec_settle.eq(0)
        with m.Elif(exec_settle != _SETTLE):
            m.d[exec_domain] += exec_settle.eq(exec_settle + 1)
        m.d.comb += [
            self.active.core.eq(busy | (settle != _SETTLE)),
            # A frame waiting for the executor wakes it; it then runs until settled.
            self.active.exec.eq(rx.done | working | (exec_settle != _SETTLE)
                                | self.active.core),
        ]

        # ---- command executor ---------------------------------------------------------
        # The receiver keeps the frame's first bytes in registers (no buffer reads).
        header = rx.header
        ptr = Signal(range(self._frame_bytes + 1))
        seq, command = header[0], header[1]
        space = header[2]
        addr = Signal(32)
        m.d.comb += addr.eq(Cat(header[3], header[4], header[5], header[6]))
        count = Cat(header[7], header[8])
        status = Signal(8)
        word = Signal(max(cols * 8, self.weight_bits, _REQUANT_BYTES * 8, 32))
        byte_index = Signal(range(max(cols, -(-self.weight_bits // 8), _REQUANT_BYTES) + 1))
        target = Signal(32)
        word_bytes = Signal(range(max(cols, -(-self.weight_bits // 8), _REQUANT_BYTES) + 1))
        data_end = Signal.like(ptr)
        body_index = Signal(range(1 << 16))
        body_count = Signal(range(1 << 16))
        read_word = Signal(data.ArrayLayout(8, cols))
        m.d.comb += exec_bank_addr.eq(target[:depth_bits])
        bank = target[depth_bits:depth_bits + max(2, ceil_log2(rows))]
        bank_groups = [bank_q[i:i + 4] for i in range(0, rows, 4)]
        picked = [Signal(data.ArrayLayout(8, cols), name=f"read_picked_{g}", reset_less=True)
                  for g in range(len(bank_groups))]

        info_bytes = Array(Const(b, 8) for b in info.pack())
        cycle_bytes = Array(cycles.word_select(i, 8) for i in range(4))

        # Reply bytes pass a register before the FIFO (the byte multiplexers of the reply
        # states are a path of their own). ``tx_ready`` is registered too: it is decided a
        # cycle early, counting the byte in the register and one pushed in that cycle.
        tx_byte, tx_last, tx_valid = Signal(8), Signal(), Signal()
        tx_ready = Signal()
        tx_staged = Signal()
        tx_stage = Signal(9, reset_less=True)
        tx_push = tx_valid & tx_ready
        m.d[exec_domain] += [tx_staged.eq(tx_push), tx_stage.eq(Cat(tx_byte, tx_last)),
                             tx_ready.eq(tx_fifo.level + tx_staged + tx_push
                                         < tx_fifo.depth)]
        m.d.comb += [tx_fifo.w_data.eq(tx_stage), tx_fifo.w_en.eq(tx_staged)]
        m.d.comb += rx.addr.eq(ptr)
        rdata_q = Signal(8, reset_less=True)
        m.d[exec_domain] += rdata_q.eq(rx.rdata)

        # Word commits to each space (the executor only runs while no layer does).
        lane = target[:lane_bits] if lane_bits else Const(0, 1)
        group = target[lane_bits:]
        commit = Signal()
        # Every memory's write port takes its address, data and enable from registers of
        # its own (the memories sit far apart and far from the executor): a word is written
        # a cycle after it is committed, long before anything reads it.
        def write_port(port, name, addr, data, en):
            m.d.comb += [
                port.addr.eq(replica(m, addr, f"{name}_waddr", reset_less=True,
                                     domain=exec_domain)),
                port.data.eq(replica(m, data, f"{name}_wdata", reset_less=True,
                                     domain=exec_domain)),
                port.en.eq(replica(m, en, f"{name}_wen", domain=exec_domain))]
        write_port(w_write, "weight", target, word[:self.weight_bits],
                   commit & (space == Space.WEIGHT))
        for r, (_, write) in enumerate(banks):
            host_bank = (commit & (space == Space.ACT) & (target[depth_bits:] == r))
            write_port(write, f"bank_{r}", Mux(running, wb_addr, target[:depth_bits]),
                       Mux(running, wb_data, word[:cols * 8]),
                       Mux(running, wb_en[r], host_bank))
        cfg = core.cfg_requant
        m.d.comb += [cfg.valid.eq(commit & (space == Space.REQUANT)),
                     cfg.payload.lane.eq(lane), cfg.payload.group.eq(group),
                     cfg.payload.param.eq(word)]
        limits = {Space.ACT: rows << depth_bits, Space.WEIGHT: self._w_depth,
                  Space.REQUANT: self._groups << lane_bits}
        if self._tables:
            act_cfg, w_cfg, t_cfg = core.cfg_act, core.cfg_weight, core.cfg_threshold
            m.d.comb += [
                act_cfg.valid.eq(commit & (space == Space.ACT_TABLE)),
                act_cfg.payload.all.eq(1), act_cfg.payload.code.eq(target[:8]),
                act_cfg.payload.value.eq(word[:8]),
                w_cfg.valid.eq(commit & (space == Space.WEIGHT_TABLE)),
                w_cfg.payload.lane.eq(target[8:8 + lane_bits] if lane_bits else 0),
                w_cfg.payload.all.eq(target[WEIGHT_TABLE_ALL_BIT]),
                w_cfg.payload.code.eq(target[:8]),
                w_cfg.payload.value.eq(word[:8]),
                t_cfg.valid.eq(commit & (space == Space.THRESHOLD)),
                t_cfg.payload.index.eq(target[:8]),
                t_cfg.payload.lane.eq(target[8:8 + lane_bits] if lane_bits else 0),
                t_cfg.payload.group.eq(target[8 + lane_bits:]),
                t_cfg.payload.value.eq(word[:32].as_signed()),
            ]
            limits.update({Space.ACT_TABLE: 256,
                           Space.WEIGHT_TABLE: (1 << WEIGHT_TABLE_ALL_BIT) + 256,
                           Space.THRESHOLD: self._groups << (8 + lane_bits)})
        sizes = {Space.ACT: cols, Space.WEIGHT: -(-self.weight_bits // 8),
                 Space.REQUANT: _REQUANT_BYTES, Space.ACT_TABLE: 1, Space.WEIGHT_TABLE: 1,
                 Space.THRESHOLD: 4}
        known_space = Signal()
        limit = Signal(32)
        index_ok = Signal()
        with m.Switch(space):
            for key, value in limits.items():
                with m.Case(key):
                    m.d.comb += [known_space.eq(1), limit.eq(value),
                                 word_bytes.eq(sizes[key])]
        # Lane and threshold-index fields must name a real lane / threshold.
        lane_ok = Signal(init=1)
        m.d.comb += lane_ok.eq(1)
        if lane_bits and (1 << lane_bits) != cols:
            with m.Switch(space):
                with m.Case(Space.REQUANT):
                    m.d.comb += lane_ok.eq(target[:lane_bits] < cols)
                with m.Case(Space.WEIGHT_TABLE):
                    m.d.comb += lane_ok.eq((target[8:8 + lane_bits] < cols)
                                           & (target[8 + lane_bits:WEIGHT_TABLE_ALL_BIT] == 0))
                with m.Case(Space.THRESHOLD):
                    m.d.comb += lane_ok.eq(target[8:8 + lane_bits] < cols)
        m.d.comb += index_ok.eq(lane_ok)
        if self._tables:
            with m.If(space == Space.THRESHOLD):
                m.d.comb += index_ok.eq(lane_ok & (target[:8] < (1 << self._threshold_bits) - 1))

        # A READ's range check in two registered steps from the header, which is complete
        # from the cycle IDLE sees ``done``: the end address in HEADER_DONE, the verdict in
        # DECODE.
        read_end = Signal(33)
        read_range_bad = Signal()
        m.d[exec_domain] += [read_end.eq(addr + count),
                             read_range_bad.eq((count * cols > info.max_payload)
                                               | (read_end > (rows << depth_bits))
                                               | (count == 0))]
        # Whether ``target`` may be written, registered: it changes only in WRITE_COMMIT and
        # DECODE, each at least two cycles before the next WRITE_COMMIT reads this.
        target_ok = Signal()
        m.d[exec_domain] += target_ok.eq((target < limit) & index_ok)

        # The frame checks DECODE branches on, registered: the frame is complete and no
        # longer changes from the cycle IDLE sees ``done``, one cycle before HEADER_DONE.
        frame_bad, write_short, read_length_bad, run_length_bad, space_unknown = (
            Signal(name=name) for name in ("frame_bad", "write_short", "read_length_bad",
                                           "run_length_bad", "space_unknown"))
        is_command = {c: Signal(name=f"is_{c.name.lower()}") for c in (
            Command.INFO, Command.WRITE, Command.READ, Command.RUN)}
        m.d[exec_domain] += [frame_bad.eq(~rx.ok | rx.overflow | (rx.length < 6)),
                             write_short.eq(rx.length < 11),
                             read_length_bad.eq(rx.length != 13),
                             run_length_bad.eq(rx.length != 6 + 20),
                             space_unknown.eq(~known_space)]
        m.d[exec_domain] += [flag.eq(command == c) for c, flag in is_command.items()]

        # A RUN's weight words n_tiles * k_steps, by shift and add, one bit of k_steps per
        # cycle (at most 16) from HEADER_DONE on, for every frame; RUN_SIZE waits for the
        # last bit. A multiplier would take a DSP block (the iCE40UP5K's eight are all in
        # the datapath) and, in one cycle with the checks after it, be the slowest path of
        # the whole system. The registers load on a registered pulse, not on a state.
        # The RUN checks' sums, registered every cycle: the descriptor is loaded in HEADER_DONE
        # and ``w_words`` is complete when RUN_SIZE leaves, a cycle before RUN_CHECK.
        group_end, w_end = Signal(17), Signal(33)
        m.d[exec_domain] += [group_end.eq(desc["group_base"] + desc["n_tiles"]),
                             w_end.eq(desc["w_base"] + w_words)]
        # The descriptor is loaded from the header of every frame on a pulse of its own
        # (only a RUN uses it, and no frame is taken while a layer runs), so that its
        # registers' enable is one flip-flop, not the executor's state and frame checks.
        load_mul = Signal()
        load_desc = replica_signal(1, name="load_desc")
        m.d[exec_domain] += [load_mul.eq(0), load_desc.eq(0)]
        with m.If(load_mul):
            m.d[exec_domain] += [mul_a.eq(Cat(header[4], header[5])),
                                 mul_b.eq(Cat(header[6], header[7])), w_words.eq(0)]
        with m.If(load_desc):
            fields = ["m_tiles", "n_tiles", "k_steps", "a_base", "a_stride"]
            for i, name in enumerate(fields):
                m.d[exec_domain] += desc[name].eq(Cat(header[2 + 2 * i], header[3 + 2 * i]))
            m.d[exec_domain] += [step.eq(header[12]), mode.eq(header[13])]
            for i, name in enumerate(["w_base", "out_base", "out_stride", "group_base"]):
                m.d[exec_domain] += desc[name].eq(Cat(header[14 + 2 * i], header[15 + 2 * i]))
        with m.Else():
            m.d[exec_domain] += [mul_a.eq(mul_a << 1), mul_b.eq(mul_b >> 1)]
            with m.If(mul_b[0]):
                m.d[exec_domain] += w_words.eq(w_words + mul_a)

        m.d.comb += working.eq(1)  # every state but IDLE (which overrides it)
        with m.FSM(name="executor", domain=exec_domain):
            with m.State("IDLE"):
                m.d.comb += [self.idle.eq(~rx.done & ~tx_staged & (tx_fifo.level == 0)
                                          & ~tx.tx.valid),
                             working.eq(0)]
                m.d[exec_domain] += [ptr.eq(0), body_count.eq(0)]
                with m.If(rx.done):
                    m.d[exec_domain] += [load_mul.eq(1), load_desc.eq(1)]
                    m.next = "HEADER_DONE"
            with m.State("HEADER_DONE"):
                # The header is complete; the frame checks are registered from it here.
                m.next = "DECODE"
            with m.State("DECODE"):
                with m.If(frame_bad):
                    # Damaged or cut frames are retried by the host; too long ones are not.
                    m.d[exec_domain] += status.eq(Mux(rx.overflow, Status.LENGTH, Status.CRC))
                    m.next = "REPLY_SEQ"
                with m.Elif(is_command[Command.INFO]):
                    m.d[exec_domain] += [status.eq(Status.OK), body_count.eq(len(info_bytes)),
                                 body_index.eq(0)]
                    m.next = "REPLY_SEQ"
                with m.Elif(is_command[Command.WRITE]):
                    m.d[exec_domain] += [target.eq(addr), byte_index.eq(0), ptr.eq(7),
                                 data_end.eq(rx.length - 4), status.eq(Status.OK)]
                    with m.If(write_short):
                        m.d[exec_domain] += status.eq(Status.LENGTH)
                        m.next = "REPLY_SEQ"
                    with m.Elif(space_unknown):
                        m.d[exec_domain] += status.eq(Status.SPACE)
                        m.next = "REPLY_SEQ"
                    with m.Else():
                        m.next = "WRITE_FETCH"
                with m.Elif(is_command[Command.READ]):
                    m.d[exec_domain] += [target.eq(addr), body_count.eq(count), body_index.eq(0),
                                 status.eq(Status.OK)]
                    with m.If(read_length_bad):
                        m.d[exec_domain] += status.eq(Status.LENGTH)
                    with m.Elif(space != Space.ACT):
                        m.d[exec_domain] += status.eq(Status.SPACE)
                    with m.Elif(read_range_bad):
                        m.d[exec_domain] += status.eq(Status.RANGE)
                    m.next = "REPLY_SEQ"
                with m.Elif(is_command[Command.RUN]):
                    with m.If(run_length_bad):
                        m.d[exec_domain] += status.eq(Status.LENGTH)
                        m.next = "REPLY_SEQ"
                    with m.Else():
                        # The descriptor was loaded with ``load_desc``.
                        m.next = "RUN_SIZE"
                with m.Else():
                    m.d[exec_domain] += status.eq(Status.COMMAND)
                    m.next = "REPLY_SEQ"
            with m.State("RUN_SIZE"):
                # Waits for the weight word count (``w_words``, see ``load_mul``).
                m.d.comb += busy.eq(1)
                m.d[exec_domain] += [k_last.eq(desc["k_steps"] - 1),
                                     m_last.eq(desc["m_tiles"] - 1),
                                     n_last.eq(desc["n_tiles"] - 1)]
                with m.If(mul_b == 0):
                    m.next = "RUN_CHECK"
            with m.State("RUN_CHECK"):
                m.d.comb += busy.eq(1)
                allowed_steps = [1] if not sparse_array else sorted(set(self._sparsity))
                step_ok = 0
                for value in allowed_steps:
                    step_ok = step_ok | (step == value)
                sparse_ok = ~mode[0] | (step == (self._sparsity[1] if sparse_array else 0))
                tables_ok = (mode[1:4] == 0) if not self._tables else 1
                zero = ((desc["m_tiles"] == 0) | (desc["n_tiles"] == 0)
                        | (desc["k_steps"] == 0))
                # Each check registered here, their AND in RUN_VERDICT (the range checks
                # are carry chains of up to 33 bits).
                m.d[exec_domain] += [checks.eq(Cat(step_ok, sparse_ok, tables_ok, ~zero,
                                                   group_end <= self._groups,
                                                   w_end <= self._w_depth))]
                m.next = "RUN_VERDICT"
            with m.State("RUN_VERDICT"):
                m.d.comb += busy.eq(1)
                ok = checks.all()
                m.d[exec_domain] += [run_ok.eq(ok), start_feed.eq(ok), start_write.eq(ok)]
                m.next = "RUN_GO"
            with m.State("RUN_GO"):
                # The checks' verdict, registered; ``start_*`` pulse in this cycle when it
                # is OK and reset the whole controller.
                m.d.comb += busy.eq(1)
                with m.If(run_ok):
                    m.d[exec_domain] += status.eq(Status.OK)
                    m.next = "RUN_WAIT"
                with m.Else():
                    m.d[exec_domain] += status.eq(Status.RANGE)
                    m.next = "REPLY_SEQ"
            with m.State("RUN_WAIT"):
                m.d.comb += busy.eq(1)
                with m.If(finished):
                    m.d[exec_domain] += [body_count.eq(4), body_index.eq(0)]
                    m.next = "REPLY_SEQ"
            with m.State("WRITE_FETCH"):
                with m.If(ptr == data_end):
                    with m.If(byte_index != 0):
                        m.d[exec_domain] += status.eq(Status.LENGTH)
                    m.next = "REPLY_SEQ"
                with m.Else():
                    m.d[exec_domain] += ptr.eq(ptr + 1)
                    m.next = "WRITE_WAIT"
            with m.State("WRITE_WAIT"):
                # The buffer's byte lands and is registered (``rdata_q``): a block RAM's
                # output goes through no logic before a register.
                m.next = "WRITE_BYTE"
            with m.State("WRITE_BYTE"):
                m.d[exec_domain] += word.word_select(byte_index, 8).eq(rdata_q)
                with m.If(byte_index == word_bytes - 1):
                    m.d[exec_domain] += byte_index.eq(0)
                    m.next = "WRITE_COMMIT"
                with m.Else():
                    m.d[exec_domain] += byte_index.eq(byte_index + 1)
                    m.next = "WRITE_FETCH"
            with m.State("WRITE_COMMIT"):
                # Only tables inside the core need its clock; memories are the executor's.
                m.d.comb += busy.eq((space != Space.ACT) & (space != Space.WEIGHT))
                with m.If(target_ok):
                    m.d.comb += commit.eq(1)
                    m.d[exec_domain] += target.eq(target + 1)
                    m.next = "WRITE_FETCH"
                with m.Else():
                    m.d[exec_domain] += status.eq(Status.RANGE)
                    m.next = "REPLY_SEQ"
            with m.State("REPLY_SEQ"):
                m.d.comb += [tx_byte.eq(seq), tx_valid.eq(1)]
                with m.If(tx_ready):
                    m.next = "REPLY_STATUS"
            with m.State("REPLY_STATUS"):
                no_body = (status != Status.OK) | (body_count == 0)
                m.d.comb += [tx_byte.eq(status), tx_valid.eq(1), tx_last.eq(no_body)]
                with m.If(tx_ready):
                    with m.If(no_body):
                        m.next = "DONE"
                    with m.Elif(is_command[Command.READ]):
                        m.d[exec_domain] += [byte_index.eq(0), exec_reading.eq(1)]
                        m.next = "READ_ISSUE"
                    with m.Else():
                        m.next = "REPLY_BODY"
            with m.State("REPLY_BODY"):
                last_byte = body_index == body_count - 1
                m.d.comb += [tx_byte.eq(Mux(command == Command.INFO, info_bytes[body_index],
                                            cycle_bytes[body_index[:2]])),
                             tx_valid.eq(1), tx_last.eq(last_byte)]
                with m.If(tx_ready):
                    m.d[exec_domain] += body_index.eq(body_index + 1)
                    with m.If(last_byte):
                        m.next = "DONE"
            with m.State("READ_ISSUE"):
                # ``exec_reading`` is set (a register: it selects every bank's address).
                m.next = "READ_ADDRESS"
            with m.State("READ_ADDRESS"):
                # The banks' address registers hold ``target``.
                m.next = "READ_WAIT"
            with m.State("READ_WAIT"):
                # The word lands in ``bank_q`` (see the feeder).
                m.next = "READ_LATCH"
            with m.State("READ_LATCH"):
                # The bank's word, chosen in two steps (the banks sit far apart): one of
                # every four banks here, then one of those in READ_PICK.
                for g, group in enumerate(bank_groups):
                    m.d[exec_domain] += picked[g].eq(
                        Array(q.as_value() for q in group)[bank[:2]] if len(group) > 1
                        else group[0])
                m.next = "READ_PICK"
            with m.State("READ_PICK"):
                m.d[exec_domain] += [read_word.eq(Array(picked)[bank[2:]] if len(picked) > 1
                                                  else picked[0]),
                                     byte_index.eq(0)]
                m.next = "READ_SEND"
            with m.State("READ_SEND"):
                last_word = body_index == body_count - 1
                last_byte = byte_index == cols - 1
                m.d.comb += [tx_byte.eq(read_word.as_value().word_select(byte_index, 8)),
                             tx_valid.eq(1),
                             tx_last.eq(last_word & last_byte)]
                with m.If(tx_ready):
                    m.d[exec_domain] += byte_index.eq(byte_index + 1)
                    with m.If(last_byte):
                        m.d[exec_domain] += [body_index.eq(body_index + 1), target.eq(target + 1)]
                        m.next = "READ_NEXT"
            with m.State("READ_NEXT"):
                with m.If(body_index == body_count):
                    m.next = "DONE"
                with m.Else():
                    m.d[exec_domain] += exec_reading.eq(1)
                    m.next = "READ_ISSUE"
            with m.State("DONE"):
                m.d.comb += rx.release.eq(1)
                m.next = "IDLE"
        return m
