"""A top for simulating a byte-link design: clock and reset ports with a reset synchronizer."""

__all__ = ["LinkTop"]

from amaranth.hdl import ClockDomain, Module
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out


class LinkTop(wiring.Component):
    """Wraps a component with ``rx``, ``tx``, ``idle`` and ``active`` (such as
    :class:`~sparqforge.hw.accelerator.Accelerator`) in its own ``sync`` domain clocked by
    ``clk`` and, when it is ``gated``, its ``exec`` and ``core`` domains clocked by
    ``exec_clk`` and ``core_clk``; ``rst`` passes through a
    :class:`~amaranth.lib.cdc.ResetSynchronizer` per domain, as on the boards.

    Registering the reset keeps it out of every register's next-state logic as seen from
    the ports, so Verilator no longer re-evaluates that logic whenever an input changes;
    this doubled the Verilated accelerator's speed. The simulation harness ticks
    ``exec_clk`` / ``core_clk`` together with ``clk`` while ``exec_active`` / ``core_active``
    is high and holds them otherwise.
    """

    clk: In(1)
    exec_clk: In(1)
    core_clk: In(1)
    rst: In(1)
    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))
    idle: Out(1)
    exec_active: Out(1)
    core_active: Out(1)

    def __init__(self, inner):
        self._inner = inner
        super().__init__()

    inner = property(lambda self: self._inner)
    info = property(lambda self: self._inner.info)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = domain = ClockDomain(local=True)
        m.d.comb += domain.clk.eq(self.clk)
        m.submodules.reset_sync = cdc.ResetSynchronizer(self.rst, domain="sync")
        if getattr(self._inner, "gated", False):
            for name, clk in (("exec", self.exec_clk), ("core", self.core_clk)):
                domain = ClockDomain(name, local=True)
                m.domains += domain
                m.d.comb += domain.clk.eq(clk)
                m.submodules[f"{name}_reset_sync"] = cdc.ResetSynchronizer(self.rst,
                                                                           domain=name)
        m.submodules.inner = inner = self._inner
        wiring.connect(m, wiring.flipped(self.rx), inner.rx)
        wiring.connect(m, inner.tx, wiring.flipped(self.tx))
        m.d.comb += [self.idle.eq(inner.idle), self.exec_active.eq(inner.active.exec),
                     self.core_active.eq(inner.active.core)]
        return m
