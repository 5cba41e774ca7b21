"""Formal properties of :class:`~sparqforge.hw.requantizer.Requantizer`: the stream rules of
a queued pipeline (:class:`~sparqforge.sim.formal.properties.PipelineHarness`), with
``last`` and the parameter group carried in order, and a configuration stream written at
any time."""

__all__ = ["PARAMETERS", "ReadyIgnoresQueue", "RequantizerHarness", "requantizer"]

from ...hw.pipeline import QUEUE_LATENCY
from ...hw.requantizer import Requantizer
from .properties import PipelineHarness, check

#: One lane of 8-bit accumulators, 4-bit codes, two parameter groups.
PARAMETERS = dict(lanes=1, acc_bits=8, out_bits=4, out_signed=True, groups=2)


def requantizer(cls=Requantizer):
    return cls(**PARAMETERS)


class ReadyIgnoresQueue(Requantizer):
    """Broken: ``i`` is always ready, so a stalled ``o`` overflows the output queue."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.i.ready.eq(1)
        return m


class RequantizerHarness(PipelineHarness):
    """The pipeline properties on ``dut`` (a :class:`Requantizer`): it holds at most its
    queue's depth, and a beat is out within its latency."""

    def __init__(self, dut, *, fault=None):
        # The queue holds every beat in flight at full rate (hw.pipeline.queued_pipeline).
        capacity = dut.stages + QUEUE_LATENCY + 2
        super().__init__(dut, capacity=capacity, drain=max(dut.latency, capacity) + 1,
                         carried=lambda payload: payload.last,
                         fault=fault, others=("cfg",))

    def extra(self, m, dut, beats_in, beats_out):
        # Lemma: the queue's occupancy count is the number of beats inside.
        check(m, "lemma_occupancy", self.internal("occupancy") == beats_in - beats_out)


def make(what):
    if what == "pass":
        return RequantizerHarness(requantizer())
    if what == "ready":
        return RequantizerHarness(requantizer(ReadyIgnoresQueue))
    return RequantizerHarness(requantizer(), fault=what)
