"""Framed byte link to the host: SLIP framing and a CRC-32 on every frame.

The protocol is defined in :mod:`sparqforge.protocol` (``docs/protocol.md``). Frames are
delimited by ``END`` (0xC0); ``END`` and ``ESC`` (0xDB) inside a frame are escaped, so a lost,
corrupted or duplicated byte damages at most the frames around it and the next ``END``
resynchronises.
"""

__all__ = ["crc32_update", "frame_signature", "FrameReceiver", "FrameTransmitter",
           "ReplyQueue"]

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..protocol import CRC_INIT, CRC_POLY, CRC_REGISTER_RESIDUE, END, ESC, ESC_END, ESC_ESC
from .sliced_memory import SlicedMemory


def crc32_update(crc, byte):
    """The CRC-32 register after one more byte (bitwise, LSB first; zlib's CRC is the
    complement of the register). Written as eight word-wide steps, which synthesis turns
    into the usual XOR network and a simulator runs as a few word operations."""
    value = crc ^ byte
    for _ in range(8):
        value = (value >> 1) ^ Mux(value[0], CRC_POLY, 0)
    return value[:32]


def frame_signature(size, header_bytes):
    """What a :class:`FrameReceiver` offers the executor, seen from the receiver: the held
    frame (``header``, ``done``, ``length``, ``ok``, ``overflow``), a synchronous read port of
    its buffer (``addr`` in, ``rdata`` a cycle later) and ``release`` (in)."""
    return wiring.Signature({
        "header": Out(data.ArrayLayout(8, header_bytes)),
        "done": Out(1),
        "length": Out(range(size + 1)),
        "ok": Out(1),
        "overflow": Out(1),
        "addr": In(range(size)),
        "rdata": Out(8),
        "release": In(1),
    })


class FrameReceiver(wiring.Component):
    """Decodes SLIP frames from ``rx`` into a frame buffer and checks their CRC-32.

    A completed non-empty frame raises ``frame.done`` with its ``length`` (bytes, CRC
    included), ``ok`` (its CRC-32 residue matched) and ``overflow`` (longer than the buffer;
    the excess was dropped), and ``rx`` stalls until ``frame.release`` is pulsed, so the
    executor reads a frame that can no longer change. Empty frames (back-to-back ``END``)
    are skipped.

    Parameters
    ----------
    size : int
        Frame buffer bytes.
    header_bytes : int
        Leading bytes of every frame also kept in registers (``header``).

    Attributes
    ----------
    rx : In(stream(8))
        Bytes from the host.
    frame : Out(frame_signature(size, header_bytes))
        ``addr``, ``rdata``: synchronous read port of the frame buffer (``rdata`` one cycle
        after ``addr``). ``header``: the frame's first ``header_bytes`` bytes, complete with
        ``done``: no buffer reads before a command can be decoded; bytes past a shorter
        frame's end hold what an earlier frame left there, exactly as the buffer does.
        ``done``, ``length``, ``ok``, ``overflow``: the held frame. ``release`` (in): frees the
        buffer for the next frame.
    """

    def __init__(self, size, header_bytes=1):
        if not isinstance(header_bytes, int) or not 1 <= header_bytes <= size:
            raise TypeError(f"Header bytes must be an integer in 1..{size}, not "
                            f"{header_bytes!r}")
        self._size = size
        self._header_bytes = header_bytes
        super().__init__({
            "rx": In(stream.Signature(8)),
            "frame": Out(frame_signature(size, header_bytes)),
        })

    size = property(lambda self: self._size)

    def elaborate(self, platform):
        m = Module()
        frame = self.frame
        # (A SlicedMemory for its read port: no collision logic after the block RAM.)
        m.submodules.buffer = buffer = SlicedMemory(width=8, depth=self._size, slice_bits=8)
        crc = Signal(32, init=CRC_INIT)
        write, read = buffer.write, buffer.read
        m.d.comb += [read.addr.eq(frame.addr), frame.rdata.eq(read.data)]

        # Bytes pass an input register (``held``) before they are decoded: the escape state
        # and the byte's class are then registers, not the FIFO handshake in front of the
        # receiver. One byte every two cycles is far above any UART's rate.
        held = Signal()
        byte = Signal(8, reset_less=True)
        is_end, is_esc = Signal(reset_less=True), Signal(reset_less=True)
        m.d.comb += self.rx.ready.eq(~frame.done & ~held)
        m.d.sync += held.eq(self.rx.valid & self.rx.ready)
        with m.If(self.rx.ready):
            m.d.sync += [byte.eq(self.rx.payload), is_end.eq(self.rx.payload == END),
                         is_esc.eq(self.rx.payload == ESC)]

        escape = Signal()
        decoded = Signal(8)
        store = Signal()
        m.d.comb += [
            decoded.eq(Mux(escape, Mux(byte == ESC_END, END, Mux(byte == ESC_ESC, ESC, byte)),
                           byte)),
            store.eq(held & (escape | (~is_end & ~is_esc))),
            write.addr.eq(frame.length),
            write.data.eq(decoded),
            write.en.eq(store & (frame.length < self._size)),
        ]
        # The header registers are written a cycle after the byte is stored, from a
        # registered byte and one registered enable per header byte (so the 8-bit registers'
        # enables come straight from flip-flops). ``done`` comes at least two cycles after
        # the last stored byte, when the header is complete.
        header = Signal.like(frame.header, reset_less=True)
        header_byte = Signal(8, reset_less=True)
        header_write = Signal(self._header_bytes)
        m.d.comb += frame.header.eq(header)
        m.d.sync += header_byte.eq(decoded)
        for i in range(self._header_bytes):
            m.d.sync += header_write[i].eq(store & (frame.length == i))
            with m.If(header_write[i]):
                m.d.sync += header[i].eq(header_byte)
        with m.If(frame.release):
            m.d.sync += [frame.done.eq(0), frame.length.eq(0), frame.overflow.eq(0),
                         escape.eq(0), crc.eq(CRC_INIT)]
        with m.Elif(held):
            with m.If(store):
                m.d.sync += escape.eq(0)
                with m.If(frame.length < self._size):
                    m.d.sync += [frame.length.eq(frame.length + 1),
                                 crc.eq(crc32_update(crc, decoded))]
                with m.Else():
                    m.d.sync += frame.overflow.eq(1)
            with m.Elif(is_esc):
                m.d.sync += escape.eq(1)
            with m.Else():  # END
                m.d.sync += escape.eq(0)
                with m.If((frame.length != 0) | frame.overflow):
                    m.d.sync += [frame.done.eq(1), frame.ok.eq(crc == CRC_REGISTER_RESIDUE)]
        return m


class FrameTransmitter(wiring.Component):
    """Appends a CRC-32 to the bytes of ``i`` (a frame ends at the beat with ``last``) and
    sends the frame SLIP-encoded, ``END`` before and after, on ``tx``.

    Attributes
    ----------
    i : In(stream)
        ``data`` (a byte), ``last``.
    tx : Out(stream(8))
        Bytes to the host.
    """

    i: In(stream.Signature(data.StructLayout({"data": 8, "last": 1})))
    tx: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        crc = Signal(32, init=CRC_INIT)
        # ``byte`` is the frame byte being sent; ``second`` the escape code still owed.
        byte = Signal(8)
        crc_index = Signal(range(4))
        crc_value = Signal(32)
        second = Signal(8)
        special = (byte == END) | (byte == ESC)
        code = Mux(byte == END, ESC_END, ESC_ESC)
        taken = self.tx.valid & self.tx.ready
        # The CRC takes in a byte the cycle after FETCH registered it (every send state
        # lasts at least a cycle), so the sender's byte multiplexer and the CRC's XOR tree
        # are never in one path.
        fresh = Signal()
        with m.If(fresh):
            m.d.sync += [crc.eq(crc32_update(crc, byte)), fresh.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.tx.payload.eq(END), self.tx.valid.eq(self.i.valid)]
                with m.If(taken):
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [byte.eq(self.i.payload.data), fresh.eq(1)]
                    with m.If(self.i.payload.last):
                        m.next = "SEND_DATA_LAST"
                    with m.Else():
                        m.next = "SEND_DATA"
            for state, after in (("SEND_DATA", "FETCH"), ("SEND_DATA_LAST", "CRC"),
                                 ("SEND_CRC", "CRC")):
                with m.State(state):
                    m.d.comb += [self.tx.payload.eq(Mux(special, ESC, byte)),
                                 self.tx.valid.eq(1)]
                    with m.If(taken):
                        with m.If(special):
                            m.d.sync += second.eq(code)
                            m.next = f"{state}_ESC"
                        with m.Else():
                            m.next = after
                with m.State(f"{state}_ESC"):
                    m.d.comb += [self.tx.payload.eq(second), self.tx.valid.eq(1)]
                    with m.If(taken):
                        m.next = after
            with m.State("CRC"):
                # The CRC register holds the whole frame once its last byte went in; zlib's
                # CRC is its complement.
                with m.If(crc_index == 0):
                    m.d.sync += [crc_value.eq(~crc >> 8), byte.eq(~crc[:8])]
                with m.Else():
                    m.d.sync += [crc_value.eq(crc_value >> 8), byte.eq(crc_value[:8])]
                m.d.sync += crc_index.eq(crc_index + 1)
                m.next = "SEND_CRC"
                with m.If(crc_index == 3):
                    m.next = "SEND_CRC_FINAL"
            with m.State("SEND_CRC_FINAL"):
                m.d.comb += [self.tx.payload.eq(Mux(special, ESC, byte)), self.tx.valid.eq(1)]
                with m.If(taken):
                    with m.If(special):
                        m.d.sync += second.eq(code)
                        m.next = "SEND_CRC_FINAL_ESC"
                    with m.Else():
                        m.next = "CLOSE"
            with m.State("SEND_CRC_FINAL_ESC"):
                m.d.comb += [self.tx.payload.eq(second), self.tx.valid.eq(1)]
                with m.If(taken):
                    m.next = "CLOSE"
            with m.State("CLOSE"):
                m.d.comb += [self.tx.payload.eq(END), self.tx.valid.eq(1)]
                with m.If(taken):
                    m.d.sync += [crc_index.eq(0), crc.eq(CRC_INIT)]
                    m.next = "IDLE"
        return m


class ReplyQueue(wiring.Component):
    """The reply bytes' way to the :class:`FrameTransmitter`: a register, then a small FIFO.

    The executor's byte multiplexers and the transmitter's state machine are then never in
    one path, and ``i.ready`` is a register: it is decided a cycle early, counting the byte in
    the register and one taken in that cycle.

    Attributes
    ----------
    i : In(stream)
        ``data`` (a byte), ``last`` (the frame's last byte).
    o : Out(stream)
        The same beats.
    empty : Out(1)
        No byte is held.
    """

    i: In(stream.Signature(data.StructLayout({"data": 8, "last": 1})))
    o: Out(stream.Signature(data.StructLayout({"data": 8, "last": 1})))
    empty: Out(1)

    #: Beats the FIFO holds.
    depth = 4

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=9, depth=self.depth)
        staged = Signal()
        stage = Signal(9, reset_less=True)
        push = self.i.valid & self.i.ready
        m.d.sync += [staged.eq(push), stage.eq(Cat(self.i.payload.data, self.i.payload.last)),
                     self.i.ready.eq(fifo.level + staged + push < fifo.depth)]
        m.d.comb += [fifo.w_data.eq(stage), fifo.w_en.eq(staged),
                     self.o.payload.data.eq(fifo.r_data[:8]),
                     self.o.payload.last.eq(fifo.r_data[8]),
                     self.o.valid.eq(fifo.r_rdy), fifo.r_en.eq(self.o.ready),
                     self.empty.eq(~staged & (fifo.level == 0))]
        return m
