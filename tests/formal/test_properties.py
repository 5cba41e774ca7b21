"""The formal proofs (``docs/formal.md``): every block's properties hold to the stated depth
(or by k-induction), and every broken variant is caught by a property meant to catch it.
Slow: run with ``-m slow`` or ``SLOW=1``."""

import pytest
from sparqforge.sim.formal.sby import run_sby

from .jobs import BROKEN, PROOFS


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROOFS))
def test_properties_hold(name):
    make, mode, depth = PROOFS[name]
    result = run_sby(make(), name=name, mode=mode, depth=depth)
    print(result.summary())
    assert result.passed, f"{result.summary()}\n{result.log}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_variant_is_caught(name):
    make, mode, depth, expected = BROKEN[name]
    result = run_sby(make(), name=name, mode=mode, depth=depth)
    print(result.summary())
    assert result.status == "FAIL", f"{result.summary()}\n{result.log}"
    assert set(result.failed) & expected, f"{result.summary()}\n{result.log}"
