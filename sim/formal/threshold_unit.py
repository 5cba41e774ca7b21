"""Formal properties of :class:`~sparqforge.hw.threshold_unit.ThresholdUnit`: the stream
rules of a queued pipeline (:class:`~sparqforge.sim.formal.properties.PipelineHarness`), with
``last`` carried in order and thresholds written at any time."""

__all__ = ["PARAMETERS", "ReadyIgnoresQueue", "ThresholdUnitHarness", "threshold_unit"]

from ...hw.pipeline import QUEUE_LATENCY
from ...hw.threshold_unit import ThresholdUnit
from .properties import PipelineHarness, check

#: Two lanes of 6-bit accumulators, 2-bit codes, two threshold groups.
PARAMETERS = dict(lanes=2, acc_bits=6, code_bits=2, groups=2)


def threshold_unit(cls=ThresholdUnit):
    return cls(**PARAMETERS)


class ReadyIgnoresQueue(ThresholdUnit):
    """Broken: ``i`` is always ready, so a stalled ``o`` overflows the output queue."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.i.ready.eq(1)
        return m


class ThresholdUnitHarness(PipelineHarness):
    """The pipeline properties on ``dut`` (a :class:`ThresholdUnit`): it holds at most its
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
    """The harness of a job: ``"pass"``, ``"ready"`` (the broken block) or a fault."""
    if what == "pass":
        return ThresholdUnitHarness(threshold_unit())
    if what == "ready":
        return ThresholdUnitHarness(threshold_unit(ReadyIgnoresQueue))
    return ThresholdUnitHarness(threshold_unit(), fault=what)
