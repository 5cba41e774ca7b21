"""A memory stored as side-by-side slices, each as wide as one block RAM at its depth."""

__all__ = ["block_ram_bits", "SlicedMemory"]

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


def block_ram_bits(depth):
    """The widest data port of one ECP5 block RAM (DP16KD) at ``depth`` words: 36 bits up
    to 512 words, 18 up to 1024, 9 up to 2048, then 4, 2, 1.

    >>> [block_ram_bits(d) for d in (256, 1024, 2048, 16384)]
    [36, 18, 9, 1]
    """
    for limit, bits in ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2)):
        if depth <= limit:
            return bits
    return 1


class SlicedMemory(wiring.Component):
    """``depth`` words of ``width`` bits with one synchronous read port and one write port,
    stored as separate memories of at most ``slice_bits`` bits side by side.

    Why: synthesis may build a wide memory from block RAMs in a deeper, narrower
    configuration and select between them with a multiplexer after the read data, a logic
    level after the block RAMs' slow clock-to-output. Slices no wider than one block RAM at
    this depth (:func:`block_ram_bits`) need no such multiplexer.

    Parameters
    ----------
    width, depth : int
        Word width (bits) and count.
    slice_bits : int
        Widest slice; slices start at multiples of it.
    domain : str
        Clock domain of both ports.

    Attributes
    ----------
    read : In(addr, data)
        ``data`` is the word at ``addr`` one cycle after it (read every cycle).
    write : In(addr, data, en)
        Writes ``data`` at ``addr`` when ``en``.
    """

    def __init__(self, *, width, depth, slice_bits, domain="sync"):
        if not isinstance(slice_bits, int) or slice_bits < 1:
            raise TypeError(f"Slice width must be a positive integer, not {slice_bits!r}")
        self._width, self._depth = width, depth
        self._slice_bits = slice_bits
        self._domain = domain
        super().__init__({
            "read": In(wiring.Signature({"addr": Out(range(depth)), "data": In(width)})),
            "write": In(wiring.Signature({"addr": Out(range(depth)), "data": Out(width),
                                          "en": Out(1)})),
        })

    def elaborate(self, platform):
        m = Module()
        for low in range(0, self._width, self._slice_bits):
            high = min(low + self._slice_bits, self._width)
            piece = Memory(shape=high - low, depth=self._depth, init=[],
                           attrs={"no_rw_check": 1})
            m.submodules[f"slice_{low // self._slice_bits}"] = piece
            # An asynchronous read port and a register behind it: yosys merges the two
            # into the block RAM's synchronous port, and only when it merges them does it
            # honour ``no_rw_check`` (a read of the word being written in the same cycle
            # may return anything). A synchronous port from the start gets logic that
            # returns the old word instead: a register and a multiplexer after the block
            # RAM per bit, on its slowest path. Nothing here reads a word in the cycle it
            # is written (see docs/protocol.md, RUN); simulation returns the old word.
            read = piece.read_port(domain="comb")
            write = piece.write_port(domain=self._domain)
            data = Signal(high - low, name=f"data_{low // self._slice_bits}", reset_less=True)
            m.d[self._domain] += data.eq(read.data)
            m.d.comb += [self.read.data[low:high].eq(data),
                         read.addr.eq(self.read.addr), write.addr.eq(self.write.addr),
                         write.data.eq(self.write.data[low:high]), write.en.eq(self.write.en)]
        return m
