"""The accelerator top: the host link, the command executor, the memories, the feeder, the
array core and the writeback, wired together. The same top serves Verilator and the boards."""

__all__ = ["Accelerator"]

from amaranth.hdl import DomainRenamer, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig
from ..protocol import HEADER_BYTES, DeviceInfo
from .array_core import ArrayCore
from .executor import Executor
from .feeder import Feeder
from .host_link import FrameReceiver, FrameTransmitter, ReplyQueue
from .memories import Memories
from .writeback import Writeback

#: Cycles an idle clock domain keeps ticking beyond the array core's latency before it is
#: reported settled: the tables' registered write ports (two stages), their read registers
#: and the feeder's beat stages.
SETTLE_MARGIN = 8


class Accelerator(wiring.Component):
    """A complete inference accelerator behind a framed byte link.

    The host sends SLIP frames with a CRC-32 (:mod:`sparqforge.protocol`,
    ``docs/protocol.md``); each verified frame is one command: INFO (report the
    configuration), WRITE (fill a memory or table), READ (return activation words) or RUN
    (execute one layer, tiled over the array). Every frame gets exactly one reply, after the
    command has completed; a damaged frame gets a CRC or LENGTH reply and changes nothing.

    Data flow (``docs/architecture.md``): :class:`~.host_link.FrameReceiver` ->
    :class:`~.executor.Executor` (writes :class:`~.memories.Memories` and the core's tables,
    starts layers) -> :class:`~.feeder.Feeder` -> :class:`~.array_core.ArrayCore` ->
    :class:`~.writeback.Writeback` -> memories; replies leave through
    :class:`~.host_link.ReplyQueue` and :class:`~.host_link.FrameTransmitter`.

    Memories: ``rows`` activation banks of ``act_depth`` words of ``cols`` bytes (row ``m``
    of a matrix lives in bank ``m % rows``), a weight memory of ``w_depth`` words, and the
    tables of the :class:`~sparqforge.hw.array_core.ArrayCore` (requantization parameters
    for ``groups`` channel groups; with ``tables`` also the operand tables and thresholds;
    with ``depthwise`` the residual add tables).
    Activations are unsigned ``a_bits`` operands, weights signed ``w_bits`` operands; with
    ``tables`` both are stored as 8-bit codes that the tables map to those operands.

    RUN streams one weight word and one word from every bank per cycle through two small
    FIFOs into the core (``rows * cols`` MACs per cycle, times ``m / n`` in N:M sparse mode)
    and writes each output row back into its bank; it replies with the cycle count.

    Parameters
    ----------
    config : AcceleratorConfig
    gated : bool
        Put the command executor with the memories, and the feeder with the array core and
        writeback, into clock domains ``exec`` and ``core`` of their own (the same clock as
        ``sync`` in hardware). A simulation top stops each while its ``active`` bit is low,
        which skips idle work without changing any result: a domain is only reported idle
        after :attr:`settle` cycles without work, by which time none of its registers
        changes.

    Attributes
    ----------
    rx : In(stream(8)), tx : Out(stream(8))
        The host link.
    idle : Out(1)
        No frame is being received, executed or answered.
    active : Out(exec, core)
        The ``exec`` / ``core`` domain has work or has not yet settled since its last work.
    """

    def __init__(self, config=AcceleratorConfig(), *, gated=False):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"Accelerator takes an AcceleratorConfig, not {config!r}")
        self._config = config
        self._core = ArrayCore(
            rows=config.rows, cols=config.cols, a_bits=config.a_bits, a_signed=False,
            w_bits=config.w_bits, w_signed=True, max_depth=config.max_depth,
            groups=config.groups, sparsity=config.sparsity, tables=config.tables,
            requant=True, threshold_bits=config.threshold_bits if config.tables else None,
            out_bits=config.a_bits, out_signed=False, product_stages=config.product_stages,
            packed_products=config.packed_products, lane_operands=config.depthwise)
        # The widths the host derives from the configuration are the hardware's, and so
        # are the spaces and modes (the add tables come with the depthwise walk).
        assert self._core.acc_bits == config.acc_bits
        assert self._core.residual_add == config.depthwise
        self._gated = gated
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "idle": Out(1),
            "active": Out(data.StructLayout({"exec": 1, "core": 1})),
        })

    config = property(lambda self: self._config)
    core = property(lambda self: self._core)
    gated = property(lambda self: self._gated)

    @property
    def info(self):
        """What INFO reports (a :class:`~sparqforge.protocol.DeviceInfo`)."""
        return DeviceInfo.of(self._config)

    @property
    def settle(self):
        """Cycles without work after which a gated domain's registers no longer change: the
        core's pipeline (tables are read continuously, so a table write ripples through
        every stage after it) plus :data:`SETTLE_MARGIN`; with ``conv``, plus the ``rows``
        cycles in which the window walk fills its slots after a layer's last beat."""
        walk = self._config.rows if self._config.conv else 0
        return self._core.latency + Feeder.latency + SETTLE_MARGIN + walk

    def elaborate(self, platform):
        m = Module()
        config, core = self._config, self._core
        # The link always ticks; with ``gated`` the executor and the memories, and the
        # feeder, core and writeback, get clock domains of their own that a simulation may
        # stop while they are settled (see ``active``).
        exec_domain = "exec" if self._gated else "sync"
        core_domain = "core" if self._gated else "sync"

        def domain(component, name):
            return component if name == "sync" else DomainRenamer({"sync": name})(component)

        m.submodules.receiver = receiver = FrameReceiver(config.frame_bytes,
                                                         header_bytes=HEADER_BYTES)
        m.submodules.transmitter = transmitter = FrameTransmitter()
        # (The reply queue ticks with the link: it must drain whatever the executor's domain
        # does; its input only moves while the executor works.)
        m.submodules.reply_queue = reply_queue = ReplyQueue()
        executor = Executor(config, core_signature=core.signature)
        m.submodules.executor = domain(executor, exec_domain)
        memories = Memories(config)
        m.submodules.memories = domain(memories, exec_domain)
        # (The signature of an ``In`` member is seen from the core; its source sees it flipped.)
        feeder = Feeder(config, a_signature=core.signature.members["a"].signature.flip(),
                        w_signature=core.signature.members["w"].signature.flip(),
                        tag_bits=core.tag_bits)
        m.submodules.feeder = domain(feeder, core_domain)
        m.submodules.core = domain(core, core_domain)
        writeback = Writeback(config, o_signature=core.signature.members["o"].signature,
                              out_bits=core.out_bits)
        m.submodules.writeback = domain(writeback, core_domain)

        wiring.connect(m, wiring.flipped(self.rx), receiver.rx)
        wiring.connect(m, receiver.frame, executor.frame)
        wiring.connect(m, executor.reply, reply_queue.i)
        wiring.connect(m, reply_queue.o, transmitter.i)
        wiring.connect(m, transmitter.tx, wiring.flipped(self.tx))

        # Host side of the memories and the core's tables.
        m.d.comb += [memories.host_read_addr.eq(executor.host_read_addr),
                     memories.host_reading.eq(executor.host_reading),
                     executor.act_data.eq(memories.act_data)]
        wiring.connect(m, executor.host_write, memories.host_write)
        wiring.connect(m, executor.weight_write, memories.weight_write)
        for name in core.signature.members:
            if name.startswith("cfg_"):
                wiring.connect(m, getattr(executor, name), getattr(core, name))

        # The layer datapath.
        m.d.comb += [feeder.desc.eq(executor.desc), writeback.desc.eq(executor.desc),
                     feeder.start.eq(executor.start_feed),
                     writeback.start.eq(executor.start_write),
                     memories.weight_addr.eq(feeder.weight_addr),
                     feeder.act_data.eq(memories.act_data),
                     feeder.weight_data.eq(memories.weight_data),
                     core.mode.eq(feeder.mode),
                     memories.layer_writing.eq(writeback.running),
                     executor.running.eq(writeback.running),
                     executor.finished.eq(writeback.finished),
                     executor.cycles.eq(writeback.cycles)]
        if core.residual_add:
            m.d.comb += [core.add.eq(feeder.add), core.add_table.eq(feeder.add_table)]
        m.d.comb += [memories.act_addr[r].eq(feeder.act_addr[r]) for r in range(config.rows)]
        wiring.connect(m, feeder.a, core.a)
        wiring.connect(m, feeder.w, core.w)
        wiring.connect(m, core.o, writeback.o)
        wiring.connect(m, writeback.write, memories.layer_write)

        m.d.comb += self.idle.eq(executor.idle & reply_queue.empty & ~transmitter.tx.valid)

        # The core domain only has work while a layer runs or a table is written; after it
        # has been idle long enough for every pipeline register to settle it may stop
        # ticking without any visible difference. Simulation uses ``active`` to gate the
        # clocks.
        settle = self.settle
        core_settle = Signal(range(settle + 1), init=settle)
        with m.If(executor.busy):
            m.d[exec_domain] += core_settle.eq(0)
        with m.Elif(core_settle != settle):
            m.d[exec_domain] += core_settle.eq(core_settle + 1)
        exec_settle = Signal(range(settle + 1), init=settle)
        with m.If(executor.working):
            m.d[exec_domain] += exec_settle.eq(0)
        with m.Elif(exec_settle != settle):
            m.d[exec_domain] += exec_settle.eq(exec_settle + 1)
        m.d.comb += [
            self.active.core.eq(executor.busy | (core_settle != settle)),
            # A frame waiting for the executor wakes it; it then runs until settled.
            self.active.exec.eq(receiver.frame.done | executor.working
                                | (exec_settle != settle) | self.active.core),
        ]
        return m
