"""Formal properties shared by the blocks built as a queued pipeline
(:func:`sparqforge.hw.pipeline.queued_pipeline`: the requantizer and the threshold unit): the
stream rules (:class:`~sparqforge.sim.formal.properties.PipelineHarness`) with ``last``
carried in order, a configuration stream written at any time, at most the queue's depth
inside, and a beat out within the latency."""

__all__ = ["QueuedPipelineHarness", "ready_ignores_queue", "make"]

from ...hw.pipeline import QUEUE_LATENCY
from .properties import PipelineHarness, check


def ready_ignores_queue(cls):
    """Broken ``cls``: ``i`` is always ready, so a stalled ``o`` overflows the output
    queue."""

    class ReadyIgnoresQueue(cls):
        def elaborate(self, platform):
            m = super().elaborate(platform)
            m.d.comb += self.i.ready.eq(1)
            return m

    ReadyIgnoresQueue.__qualname__ = f"{cls.__name__}ReadyIgnoresQueue"
    return ReadyIgnoresQueue


class QueuedPipelineHarness(PipelineHarness):
    """The pipeline properties on ``dut``: it holds at most its queue's depth, and a beat is
    out within its latency."""

    def __init__(self, dut, *, fault=None):
        # The queue holds every beat in flight at full rate (hw.pipeline.queued_pipeline).
        capacity = dut.stages + QUEUE_LATENCY + 2
        super().__init__(dut, capacity=capacity, drain=max(dut.latency, capacity) + 1,
                         carried=lambda payload: payload.last,
                         fault=fault, others=("cfg",))

    def extra(self, m, dut, beats_in, beats_out):
        # Lemma: the queue's occupancy count is the number of beats inside.
        check(m, "lemma_occupancy", self.internal("occupancy") == beats_in - beats_out)


def make(cls, parameters, what):
    """The harness of a job on ``cls(**parameters)``: ``"pass"``, ``"ready"`` (the broken
    block) or a fault of :class:`~sparqforge.sim.formal.properties.StreamFault`."""
    if what == "ready":
        cls = ready_ignores_queue(cls)
    return QueuedPipelineHarness(cls(**parameters),
                                 fault=None if what in ("pass", "ready") else what)
