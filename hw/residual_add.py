"""The residual add stage: each accumulator through a two-input lookup table and a sum
(``Mode.ADD``, :class:`~sparqforge.protocol.RunDescriptor`), between the MAC array and the
requantizer of an accelerator with ``depthwise``."""

__all__ = ["ResidualAdd"]

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..protocol import ADD_TABLES, CODE_BITS
from .replica import replica

#: Bits of one accumulator that index the tables: a byte per input.
_CODE_BITS = 2 * CODE_BITS


class ResidualAdd(wiring.Component):
    """With ``add`` set, replaces each of a row's ``lanes`` accumulators ``acc`` by the
    32-bit two's complement sum ``T[table][0][acc & 0xFF] + T[table][1][(acc >> 8) & 0xFF]``
    (``acc`` sign-extended first); with ``add`` clear, passes rows through unchanged
    (sign-extended to 32 bits), combinationally: no latency, one row per cycle.

    The tables are one memory of ``ADD_TABLES * 512`` signed 32-bit entries shared by every
    lane (entry ``table << 9 | input << 8 | code``; 2048 x 32 bits, four ECP5 DP16KD): its
    two ports give two lookups per cycle, so an ADD row takes ``lanes`` cycles, one lane
    after another. Port A is both the first input's read port and the write port (a block
    RAM's two ports are all there is): write the tables through ``cfg`` only while no row
    is in flight, i.e. between layers.

    ``add`` and ``table`` must stay constant while rows are in flight.

    Parameters
    ----------
    lanes : int
        Accumulators per row (the array's columns).
    acc_bits : int
        Width of the incoming signed accumulators, 2..32.
    tag_bits : int
        Width of the tag that travels with each row.

    Attributes
    ----------
    i : In(stream)
        ``data`` (``lanes`` x ``signed(acc_bits)``), ``tag``, ``last``.
    o : Out(stream)
        ``data`` (``lanes`` x ``signed(32)``), ``tag`` and ``last`` of the input row.
    add : In(1)
        Rows through the tables (else passed through).
    table : In(range(ADD_TABLES))
        The table the lookups use.
    cfg : In(stream)
        Always ready: ``code``, ``input``, ``table`` (the entry's address, low bits first)
        and ``value`` (signed 32 bits). A write reaches the memory two cycles after it is
        offered.

    With ``add``: latency :attr:`latency` cycles from accepting a row to offering it (when
    ``o`` is ready); one row every ``max(lanes, (lanes + 5) / 2)`` cycles while ``o`` is
    ready (a row's lookups overlap its predecessor's last lookups and move to the output).
    The sum wraps (two's complement, 32 bits); nothing saturates. The lookups never stall:
    a row is only accepted while the stage has room for every row accepted and not yet
    taken (two: one being assembled, one on ``o``).
    """

    #: The lookup pipeline after the address: the memory's read register, the read words
    #: registered, the sum shifted into the row being assembled.
    lookup_stages = 3

    def __init__(self, *, lanes, acc_bits, tag_bits=0):
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise TypeError(f"Lane count must be a positive integer, not {lanes!r}")
        if not isinstance(acc_bits, int) or isinstance(acc_bits, bool) \
                or not 2 <= acc_bits <= 32:
            raise TypeError(f"Accumulator width must be an integer in 2..32, not {acc_bits!r}")
        if not isinstance(tag_bits, int) or isinstance(tag_bits, bool) or tag_bits < 0:
            raise TypeError(f"Tag width must be a non-negative integer, not {tag_bits!r}")
        self._lanes = lanes
        self._acc_bits = acc_bits
        self._tag_bits = tag_bits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(acc_bits), lanes),
                "tag": unsigned(tag_bits),
                "last": unsigned(1),
            }))),
            "o": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(32), lanes),
                "tag": unsigned(tag_bits),
                "last": unsigned(1),
            }))),
            "add": In(1),
            "table": In(range(ADD_TABLES)),
            "cfg": In(stream.Signature(self.cfg_layout())),
        })

    lanes = property(lambda self: self._lanes)
    acc_bits = property(lambda self: self._acc_bits)
    tag_bits = property(lambda self: self._tag_bits)

    @staticmethod
    def cfg_layout():
        """One table entry as written through ``cfg``: its address fields (those of
        ``Space.ADD_TABLE``, low bits first) and value."""
        return data.StructLayout({"code": unsigned(CODE_BITS), "input": unsigned(1),
                                  "table": unsigned((ADD_TABLES - 1).bit_length()),
                                  "value": signed(32)})

    @property
    def depth(self):
        """Entries of the table memory."""
        return ADD_TABLES << (CODE_BITS + 1)

    @property
    def latency(self):
        """Cycles from accepting a row with ``add`` to offering its sums (0 without)."""
        # Loaded into the code registers, a cycle per lane of lookups, the lookup pipeline,
        # the move to the output register.
        return 1 + self._lanes + (self.lookup_stages - 1) + 1

    def elaborate(self, platform):
        m = Module()
        lanes, tag_bits = self._lanes, self._tag_bits
        add = self.add

        # Writes are registered: the executor's decode reaches the memory from a register.
        cfg = Signal(self.cfg_layout(), reset_less=True)
        write = Signal()
        m.d.sync += [cfg.eq(self.cfg.payload), write.eq(self.cfg.valid)]
        m.d.comb += self.cfg.ready.eq(1)

        # Asynchronous read ports, each with a register behind it (``word_a``, ``word_b``):
        # yosys merges the two into a block RAM's synchronous port and then honours
        # ``no_rw_check`` (see :class:`~.sliced_memory.SlicedMemory`): a lookup never reads
        # an entry in the cycle it is written, since writes come between layers. A
        # synchronous port that must return the old word while the other port writes it
        # would cost a second copy of the memory (eight DP16KD), or collision logic after
        # the block RAM. This way: four DP16KD of 2048 x 9 bits, no logic after them.
        memory = Memory(shape=signed(32), depth=self.depth, init=[],
                        attrs={"no_rw_check": 1})
        m.submodules.tables = memory
        port_a = memory.write_port()
        read_a = memory.read_port(domain="comb")
        read_b = memory.read_port(domain="comb")

        # -- the row being looked up: its lanes' low 16 bits, shifted down a lane per cycle
        codes = [Signal(_CODE_BITS, name=f"code_{c}", reset_less=True) for c in range(lanes)]
        row_tag = Signal(tag_bits, reset_less=True)
        row_last = Signal(reset_less=True)
        left = Signal(range(lanes + 1))       # lanes not yet looked up
        held = Signal(range(3))               # rows accepted and not yet taken at ``o``
        add_ready = Signal()
        taken = Signal()
        # Ready from registers only: the lookups have room (the last lane goes this cycle)
        # and so has the output side, for every row held.
        m.d.comb += add_ready.eq((left <= 1) & (held < 2))
        accept = self.i.valid & add & add_ready
        looking = left != 0
        m.d.sync += held.eq(held + accept - taken)
        with m.If(accept):
            # (Assignment sign-extends a narrower accumulator: ``acc >> 8`` takes its sign.)
            m.d.sync += [codes[c].eq(self.i.payload.data[c]) for c in range(lanes)]
            m.d.sync += [row_tag.eq(self.i.payload.tag), row_last.eq(self.i.payload.last),
                         left.eq(lanes)]
        with m.Elif(looking):
            m.d.sync += [codes[c].eq(codes[c + 1]) for c in range(lanes - 1)]
            m.d.sync += left.eq(left - 1)

        # Port A: a table write between layers, else input 0's lookup; port B: input 1's.
        # The addresses are registers but for port A's write multiplexer.
        table = self.table
        lookup_a = Cat(codes[0][:CODE_BITS], Const(0, 1), table)
        lookup_b = Cat(codes[0][CODE_BITS:], Const(1, 1), table)
        addr_a = Signal(range(self.depth))
        m.d.comb += [addr_a.eq(Mux(write, Cat(cfg.code, cfg.input, cfg.table), lookup_a)),
                     port_a.addr.eq(addr_a), port_a.data.eq(cfg.value), port_a.en.eq(write),
                     read_a.addr.eq(addr_a), read_b.addr.eq(lookup_b)]

        # -- the lookup pipeline: never stalls (see ``held``). Each stage's control bits:
        # whether it holds a lane, whether that is the row's last lane, and the row's tag
        # and ``last``.
        control = data.StructLayout({"valid": 1, "final": 1, "tag": unsigned(tag_bits),
                                     "last": 1})
        issued = Signal(control)
        m.d.comb += [issued.valid.eq(looking), issued.final.eq(left == 1),
                     issued.tag.eq(row_tag), issued.last.eq(row_last)]
        read = Signal(control)        # the memory's read registers hold the entries
        fetched = Signal(control)     # the entries, registered again
        m.d.sync += [read.eq(issued), fetched.eq(read)]
        word_a = Signal(signed(32), reset_less=True)
        word_b = Signal(signed(32), reset_less=True)
        entry_a = Signal(signed(32), reset_less=True)
        entry_b = Signal(signed(32), reset_less=True)
        m.d.sync += [word_a.eq(read_a.data), word_b.eq(read_b.data),
                     entry_a.eq(word_a), entry_b.eq(word_b)]

        # -- the row being assembled: each sum shifts in at the top, lane 0 ends at the bottom
        sums = [Signal(signed(32), name=f"sum_{c}", reset_less=True) for c in range(lanes)]
        sums_tag = Signal(tag_bits, reset_less=True)
        sums_last = Signal(reset_less=True)
        complete = Signal()
        with m.If(fetched.valid):
            # (The one adder of the stage; the 33rd bit is dropped: the sum wraps.)
            m.d.sync += [sums[c].eq(sums[c + 1]) for c in range(lanes - 1)]
            m.d.sync += sums[lanes - 1].eq(entry_a + entry_b)

        # -- the output register: the assembled row moves here when it is free. A row is
        # only accepted while at most one other is held, so a row's first sum arrives after
        # the row before it has left ``sums``.
        out = [Signal(signed(32), name=f"out_{c}", reset_less=True) for c in range(lanes)]
        out_tag = Signal(tag_bits, reset_less=True)
        out_last = Signal(reset_less=True)
        out_valid = Signal()
        m.d.comb += taken.eq(out_valid & self.o.ready & add)
        move = complete & (~out_valid | self.o.ready)
        with m.If(move):
            m.d.sync += [out[c].eq(sums[c]) for c in range(lanes)]
            m.d.sync += [out_tag.eq(sums_tag), out_last.eq(sums_last), out_valid.eq(1),
                         complete.eq(0)]
        with m.Elif(taken):
            m.d.sync += out_valid.eq(0)
        with m.If(fetched.valid & fetched.final):
            m.d.sync += [complete.eq(1), sums_tag.eq(fetched.tag), sums_last.eq(fetched.last)]

        # -- the two paths. The output multiplexers take ``add`` from a copy per lane (it
        # changes only between layers, when no row is in flight).
        m.d.comb += [
            self.i.ready.eq(Mux(add, add_ready, self.o.ready)),
            self.o.valid.eq(Mux(add, out_valid, self.i.valid)),
            self.o.payload.tag.eq(Mux(add, out_tag, self.i.payload.tag)),
            self.o.payload.last.eq(Mux(add, out_last, self.i.payload.last)),
        ]
        for c in range(lanes):
            add_c = replica(m, add, f"add_{c}", reset_less=True)
            m.d.comb += self.o.payload.data[c].eq(Mux(add_c, out[c], self.i.payload.data[c]))
        return m
