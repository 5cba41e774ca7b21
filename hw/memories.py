"""The accelerator's memories: activation banks and the weight memory, shared between the
command executor (host reads and writes) and the layer datapath (feeder and writeback)."""

__all__ = ["Memories"]

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .replica import replica
from .sliced_memory import SlicedMemory, block_ram_bits


class Memories(wiring.Component):
    """``rows`` activation banks of ``act_depth`` words of ``cols`` bytes and a weight memory
    of ``w_depth`` words of ``weight_bits``, each stored in block-RAM-wide slices
    (:class:`~sparqforge.hw.sliced_memory.SlicedMemory`).

    Every bank reads one address each cycle: the layer's (its own ``act_addr``) or, while
    ``host_reading``, the executor's (``host_read_addr``). A bank writes either the
    writeback's row (while ``layer_writing``) or the executor's word. Addresses, write data
    and enables pass a register of their own per memory (the memories sit far apart and far
    from their users), and read data passes a register before it leaves: a word read at
    ``act_addr`` in cycle ``t`` is on ``act_data`` in ``t + 3`` (address register, block RAM,
    data register); a write takes effect a cycle after it is offered.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    act_addr : In(ArrayLayout(depth_bits, rows))
        Each bank's layer address.
    host_read_addr : In(depth_bits)
    host_reading : In(1)
        Select ``host_read_addr`` (a register, so that the select does not ripple into every
        bank's address).
    act_data : Out(ArrayLayout(ArrayLayout(8, cols), rows))
        Every bank's word.
    weight_addr : In(16), weight_data : Out(weight_bits)
    layer_writing : In(1)
        The writeback owns the banks' write ports.
    layer_write : In(addr, data, en)
        ``en`` has one bit per bank.
    host_write : In(addr, data, en)
        One word: ``en`` has one bit per bank.
    weight_write : In(addr, data, en)
    """

    def __init__(self, config):
        self._config = config
        depth_bits = config.act_depth_bits
        word = data.ArrayLayout(8, config.cols)

        def write(addr_bits, layout, enables):
            return In(wiring.Signature({"addr": Out(addr_bits), "data": Out(layout),
                                        "en": Out(enables)}))
        super().__init__({
            "act_addr": In(data.ArrayLayout(depth_bits, config.rows)),
            "host_read_addr": In(depth_bits),
            "host_reading": In(1),
            "act_data": Out(data.ArrayLayout(word, config.rows)),
            "weight_addr": In(16),
            "weight_data": Out(config.weight_bits),
            "layer_writing": In(1),
            "layer_write": write(depth_bits, word, config.rows),
            "host_write": write(depth_bits, word, config.rows),
            "weight_write": write(16, config.weight_bits, 1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config

        # Each memory is stored in whole-byte slices no wider than one block RAM at its
        # depth, so no multiplexer follows the block RAMs' read data.
        def sliced(width, depth):
            return SlicedMemory(width=width, depth=depth,
                                slice_bits=max(8, block_ram_bits(depth) // 8 * 8))

        def write_port(port, name, addr, value, en):
            m.d.comb += [port.addr.eq(replica(m, addr, f"{name}_waddr", reset_less=True)),
                         port.data.eq(replica(m, value, f"{name}_wdata", reset_less=True)),
                         port.en.eq(replica(m, en, f"{name}_wen"))]

        layer, host = self.layer_write, self.host_write
        for r in range(config.rows):
            m.submodules[f"act_bank_{r}"] = bank = sliced(config.cols * 8, config.act_depth)
            # The banks are read every cycle; a read enable would be one more net from the
            # feeder's issue decision to every block RAM.
            m.d.comb += bank.read.addr.eq(replica(
                m, Mux(self.host_reading, self.host_read_addr, self.act_addr[r]),
                f"bank_addr_{r}", reset_less=True))
            # A block RAM's output goes through no logic before a register.
            word = Signal.like(self.act_data[r], name=f"bank_q_{r}", reset_less=True)
            m.d.sync += word.eq(bank.read.data)
            m.d.comb += self.act_data[r].eq(word)
            write_port(bank.write, f"bank_{r}",
                       Mux(self.layer_writing, layer.addr, host.addr),
                       Mux(self.layer_writing, layer.data, host.data),
                       Mux(self.layer_writing, layer.en[r], host.en[r]))

        m.submodules.weights = weights = sliced(config.weight_bits, config.w_depth)
        m.d.comb += weights.read.addr.eq(replica(m, self.weight_addr, "weight_addr",
                                                 reset_less=True))
        word = Signal(config.weight_bits, name="weight_q", reset_less=True)
        m.d.sync += word.eq(weights.read.data)
        m.d.comb += self.weight_data.eq(word)
        write_port(weights.write, "weight", self.weight_write.addr, self.weight_write.data,
                   self.weight_write.en)
        return m
