"""Formal properties of the stream blocks, checked with SymbiYosys and an SMT solver.

One module per hardware module (:mod:`.mac_array`, :mod:`.requantizer`,
:mod:`.threshold_unit`, :mod:`.host_link`, :mod:`.feeder`, :mod:`.writeback`), each with a
harness (an Elaboratable whose inputs are free, constrained only by the stream rules, and
whose ``Assert`` statements are the properties) and deliberately broken variants of the
block; :mod:`.properties` holds what they share and :mod:`.sby` runs a harness through SBY.
``docs/formal.md`` says what is proven, to which depth, and what is not.
"""

__all__ = ["FormalResult", "FormalToolError", "run_sby"]

from .sby import FormalResult, FormalToolError, run_sby
