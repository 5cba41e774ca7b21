"""Formal properties of :class:`~sparqforge.hw.requantizer.Requantizer`: those of a queued
pipeline (:mod:`.queued_pipeline`), with the parameter group carried in order."""

__all__ = ["PARAMETERS", "make"]

from ...hw.requantizer import Requantizer
from . import queued_pipeline

#: One lane of 8-bit accumulators, 4-bit codes, two parameter groups.
PARAMETERS = dict(lanes=1, acc_bits=8, out_bits=4, out_signed=True, groups=2)


def make(what):
    """The harness of a job: ``"pass"``, ``"ready"`` (the broken block) or a fault."""
    return queued_pipeline.make(Requantizer, PARAMETERS, what)
