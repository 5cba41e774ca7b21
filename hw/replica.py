"""Register replicas: copies of one register that synthesis must keep apart.

A register that feeds logic spread across the device (an operand broadcast to a row of
multipliers, a control bit that enables every accumulator) is copied so that each copy
drives a few nearby loads. yosys merges flip-flops with identical inputs, which would undo
the copies; every replica carries :data:`REPLICA_ATTR`, and the board flow marks the
flip-flops behind such wires ``keep`` before synthesis (:data:`KEEP_REPLICAS`). Simulation
ignores the attribute."""

__all__ = ["REPLICA_ATTR", "KEEP_REPLICAS", "replica_signal", "replica"]

from amaranth.hdl import Signal, Value

#: Wire attribute naming a replica register.
REPLICA_ATTR = "sparqforge_replica"

#: yosys command (run after reading the design) that keeps every replica flip-flop.
KEEP_REPLICAS = f"setattr -set keep 1 a:{REPLICA_ATTR} %ci1:+$dff[Q] c:* %i"


def replica_signal(shape, *, name, **kwargs):
    """A signal marked as a replica; drive it from ``m.d.sync`` like any register."""
    return Signal(shape, name=name, attrs={REPLICA_ATTR: 1}, **kwargs)


def replica(m, value, name, *, reset_less=False, domain="sync"):
    """A replica register copy of ``value`` (a value, a view, or a tuple / list of them),
    loaded every cycle of ``domain``. Data copies pass ``reset_less=True`` (as for a
    ``Signal``): a reset would only add a load to the reset net."""
    if isinstance(value, (tuple, list)):
        return type(value)(replica(m, v, f"{name}_{i}", reset_less=reset_less, domain=domain)
                           for i, v in enumerate(value))
    shape = value.shape() if hasattr(value, "shape") else Value.cast(value).shape()
    copy = replica_signal(shape, name=name, reset_less=reset_less)
    m.d[domain] += copy.eq(value)
    return copy
