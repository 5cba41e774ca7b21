"""Run a :class:`~sparqforge.sim.mac_array.schedule.Schedule` on a simulator backend."""

__all__ = ["pack_schedule", "run_schedule"]

import numpy as np

from .ports import pack, unpack
from .pysim import run_streams


def pack_schedule(schedule, desc):
    """Packed payload words of every input stream of ``schedule``."""
    return {name: pack(desc["ports"][name], fields, schedule.counts[name])
            for name, fields in schedule.inputs.items()}


def run_schedule(schedule, desc, *, dut=None, harness=None, stall=0.3, seed=1,
                 max_cycles=None, stats=None):
    """Run ``schedule`` on Amaranth's simulator (``dut``) or a compiled
    :class:`~sparqforge.sim.harness.StreamHarness` (``harness``).

    Returns ``(result, cycles)``: the assembled output matrix and the cycle count. With a
    harness, ``stats`` (a dict, when given) receives the harness's own report, including
    ``sim_ns``, the wall time of its simulation loop.
    """
    groups = desc["params"].get("groups", 1)
    tags = schedule.inputs.get("w", {}).get("tag")
    if tags is not None and len(tags) and int(np.max(tags)) >= groups:
        raise ValueError(f"The schedule uses {int(np.max(tags)) + 1} parameter groups but the "
                         f"array holds {groups}; generate it with groups >= "
                         f"{int(np.max(tags)) + 1}")
    words = pack_schedule(schedule, desc)
    expect = {schedule.out_port: schedule.out_beats}
    if harness is not None:
        outputs, result = harness.run(words, expect, stall=stall, phases=schedule.phases,
                                      seed=seed, max_cycles=max_cycles)
        if result["status"] != "ok":
            raise TimeoutError(f"Simulation timed out after {result['cycles']} cycles")
        cycles = result["cycles"]
        if stats is not None:
            stats.update(result)
    else:
        kw = {} if max_cycles is None else {"max_cycles": max_cycles}
        outputs, cycles = run_streams(dut, desc, words, expect, stall=stall,
                                      phases=schedule.phases, seed=seed, **kw)
    fields = unpack(desc["ports"][schedule.out_port], outputs[schedule.out_port])
    return schedule.assemble(fields), cycles
