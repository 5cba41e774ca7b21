"""The formal tool chain works (YoWASP's SBY and Yosys, an SMT solver from PyPI): one small
proof by k-induction passes and its broken variant fails with a counterexample. The full
proofs are in ``test_properties.py`` (slow)."""

import pytest
from sparqforge.sim.formal.host_link import make
from sparqforge.sim.formal.sby import run_sby, tool_paths


def test_tools_are_installed():
    assert set(tool_paths()) == {"SBY", "YOSYS", "SMTBMC", "WITNESS"}


def test_receiver_idle_proof_and_its_broken_variant():
    proof = run_sby(make("receiver_idle"), name="smoke", mode="prove", depth=8)
    assert proof.passed, proof.log
    broken = run_sby(make("receiver_idle:keeps_length"), name="smoke_broken", mode="prove",
                     depth=8)
    assert (broken.status, broken.failed) == ("FAIL", ("idle_after_release",)), broken.log


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Mode must be"):
        run_sby(make("receiver_idle"), name="bad", mode="live")
    with pytest.raises(ValueError, match="Depth must be"):
        run_sby(make("receiver_idle"), name="bad", depth=0)
    with pytest.raises(ValueError, match="Solver must be one of"):
        run_sby(make("receiver_idle"), name="bad", solver="boolector")
