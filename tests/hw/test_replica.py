"""Replica registers (hw/replica.py) stay separate flip-flops through synthesis."""

import json

import pytest
from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparqforge.boards.synth import ECP5_GROUPS, count_cells, run_yosys
from sparqforge.hw.emit import to_rtlil
from sparqforge.hw.mac_array import MacArray
from sparqforge.hw.replica import KEEP_REPLICAS, REPLICA_ATTR, replica

COPIES = 4


class _Fanout(wiring.Component):
    i: In(8)
    o: Out(8 * COPIES)

    def elaborate(self, platform):
        m = Module()
        copies = [replica(m, self.i, f"copy_{k}", reset_less=True) for k in range(COPIES)]
        m.d.comb += self.o.eq(Cat(*copies))
        return m


def _flip_flops(keep):
    script = ("read_rtlil t.il; " + (f"{KEEP_REPLICAS}; " if keep else "")
              + "synth_ecp5 -noiopad -top t; tee -q -o stat.json stat -json")
    out = run_yosys(script, {"t.il": to_rtlil(_Fanout(), "t")})
    return count_cells(json.loads(out["stat.json"]), ECP5_GROUPS)["ff"]


@pytest.mark.parametrize("keep", [False, True])
def test_keep_replicas_stops_yosys_merging_copies(keep):
    # Without the command yosys merges the identical registers into one: the check below
    # would catch a flow that lost it.
    assert _flip_flops(keep) == (8 * COPIES if keep else 8)


def _marked_wires(component):
    lines = to_rtlil(component, "t").splitlines()
    return [lines[n + 1].split()[-1] for n, line in enumerate(lines[:-1])
            if REPLICA_ATTR in line and lines[n + 1].lstrip().startswith("wire")]


def test_mac_array_operand_copies_are_replicas():
    marked = set(_marked_wires(MacArray(rows=2, cols=2, requant=False)))
    for r in range(2):
        for c in range(2):
            assert {f"\\a_op_{r}_{c}", f"\\w_op_{r}_{c}", f"\\valid_2_{r}_{c}"} <= marked
