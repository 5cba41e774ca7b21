"""Formal properties of :class:`~sparqforge.hw.threshold_unit.ThresholdUnit`: those of a
queued pipeline (:mod:`.queued_pipeline`), with thresholds written at any time."""

__all__ = ["PARAMETERS", "make"]

from ...hw.threshold_unit import ThresholdUnit
from . import queued_pipeline

#: Two lanes of 6-bit accumulators, 2-bit codes, two threshold groups.
PARAMETERS = dict(lanes=2, acc_bits=6, code_bits=2, groups=2)


def make(what):
    """The harness of a job: ``"pass"``, ``"ready"`` (the broken block) or a fault."""
    return queued_pipeline.make(ThresholdUnit, PARAMETERS, what)
