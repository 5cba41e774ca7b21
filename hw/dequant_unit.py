"""Table lookup from stored low-bit codes to the integers the MAC array multiplies."""

__all__ = ["DequantUnit"]

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..sw.golden import check_operand
from .pipeline import stall_pipeline


def _count(name, value, low=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise TypeError(f"{name} must be an integer >= {low}, not {value!r}")


class DequantUnit(wiring.Component):
    """Replaces every ``code_bits``-bit code of a beat by an entry of a table loaded at run
    time, so that values are stored at low width and reach the MAC array as fixed-point
    integers (a power-exponent code's level, or the identity for uniform codes).

    A beat carries ``lanes`` x ``elems`` codes; lane ``l`` reads its own table, addressed by
    the beat's ``tag`` and the code's bit pattern (signed and unsigned codes alike). Writing
    the same table to every lane (``cfg`` with ``all`` set) gives one table per layer;
    writing different tables per lane and tag gives one per output channel. A beat with
    ``bypass`` set skips the tables: each code is read as a ``code_bits``-bit integer of the
    output's signedness and extended to the output width, so uniform layers need no identity
    table. ``side`` is
    carried through unchanged (indices, mode and ``last`` bits of the stream it sits in).

    Parameters
    ----------
    lanes, elems : int
        Table lanes per beat and codes per lane.
    code_bits : int
        Stored code width, 2..8 (table depth ``2**code_bits`` per group).
    out_bits, out_signed :
        Table entry type (the MAC operand type).
    groups : int
        Tables per lane, selected by ``tag``.
    side_bits : int
        Width of the pass-through ``side`` field.

    Attributes
    ----------
    i : In(stream)
        ``codes`` (``lanes`` x ``elems``), ``tag``, ``side``, ``bypass``.
    o : Out(stream)
        ``values`` (``lanes`` x ``elems``), ``tag``, ``side``.
    cfg : In(stream)
        Always ready: ``lane``, ``all`` (write every lane), ``group``, ``code``, ``value``.
        Write tables while no beat is in flight.

    Latency :attr:`latency` cycle, one beat per cycle, stalls as a whole.
    """

    latency = 1

    def __init__(self, *, lanes, elems=1, code_bits=8, out_bits=8, out_signed=True, groups=1,
                 side_bits=0):
        _count("Lane count", lanes)
        _count("Codes per lane", elems)
        check_operand("Code", code_bits, True)
        check_operand("Table entry", out_bits, out_signed)
        _count("Group count", groups)
        _count("Side width", side_bits, 0)
        self._lanes, self._elems = lanes, elems
        self._code_bits = code_bits
        self._out_bits, self._out_signed = out_bits, out_signed
        self._groups = groups
        self._side_bits = side_bits
        value = signed(out_bits) if out_signed else unsigned(out_bits)
        tag = unsigned(self.tag_bits)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "codes": data.ArrayLayout(data.ArrayLayout(unsigned(code_bits), elems), lanes),
                "tag": tag, "side": unsigned(side_bits), "bypass": unsigned(1)}))),
            "o": Out(stream.Signature(data.StructLayout({
                "values": data.ArrayLayout(data.ArrayLayout(value, elems), lanes),
                "tag": tag, "side": unsigned(side_bits)}))),
            "cfg": In(stream.Signature(data.StructLayout({
                "lane": unsigned(ceil_log2(lanes)), "all": unsigned(1), "group": tag,
                "code": unsigned(code_bits), "value": value}))),
        })

    lanes = property(lambda self: self._lanes)
    elems = property(lambda self: self._elems)
    code_bits = property(lambda self: self._code_bits)
    out_bits = property(lambda self: self._out_bits)
    out_signed = property(lambda self: self._out_signed)
    groups = property(lambda self: self._groups)
    side_bits = property(lambda self: self._side_bits)

    @property
    def tag_bits(self):
        return ceil_log2(self._groups)

    @property
    def params(self):
        return {"lanes": self._lanes, "elems": self._elems, "code_bits": self._code_bits,
                "out_bits": self._out_bits, "out_signed": self._out_signed,
                "groups": self._groups, "side_bits": self._side_bits}

    def elaborate(self, platform):
        m = Module()
        en, _ = stall_pipeline(m, self.i, self.o, self.latency)
        m.d.comb += self.cfg.ready.eq(1)
        bypass = Signal()
        with m.If(en):
            m.d.sync += [self.o.payload.tag.eq(self.i.payload.tag),
                         self.o.payload.side.eq(self.i.payload.side),
                         bypass.eq(self.i.payload.bypass)]
        cfg = self.cfg.payload
        for lane in range(self._lanes):
            depth = self._groups << self._code_bits
            table = Memory(shape=self.o.payload.values[lane][0].shape(), depth=depth, init=[])
            m.submodules[f"table_{lane}"] = table
            write = table.write_port()
            m.d.comb += [
                write.addr.eq(Cat(cfg.code, cfg.group)),
                write.data.eq(cfg.value),
                write.en.eq(self.cfg.valid & (cfg.all | (cfg.lane == lane))),
            ]
            for elem in range(self._elems):
                read = table.read_port()
                code = self.i.payload.codes[lane][elem]
                raw = Signal(self._code_bits, name=f"raw_{lane}_{elem}")
                value = self.o.payload.values[lane][elem]
                with m.If(en):
                    m.d.sync += raw.eq(code)
                m.d.comb += [
                    read.en.eq(en),
                    read.addr.eq(Cat(code, self.i.payload.tag)),
                    value.eq(Mux(bypass, raw.as_signed() if self._out_signed else raw,
                                 read.data)),
                ]
        return m

